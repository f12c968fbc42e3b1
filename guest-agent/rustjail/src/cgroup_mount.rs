//! The OCI `cgroup` mount entry: the container's view of its cgroups, as
//! the system has them (one cgroup2 tree, or v1 hierarchies on a tmpfs).

use std::path::Path;

use nix::mount::MsFlags;

use crate::syscall::{Result, Syscall};

/// How the cgroup filesystems are mounted under `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup2 at `/sys/fs/cgroup` itself.
    Unified,
    /// A tmpfs of per-controller hierarchies (v1, or hybrid with `unified`).
    Hierarchies(Vec<Hierarchy>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Directory name under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`).
    pub dir: String,
    /// `cgroup` or `cgroup2`.
    pub fstype: String,
    /// Mount data selecting the hierarchy (`cpu,cpuacct`, `name=systemd`).
    pub data: String,
}

/// Reads the layout from `/proc/self/mountinfo` text.
pub fn layout_from_mountinfo(mountinfo: &str) -> CgroupLayout {
    let mut hierarchies = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4).unwrap_or_default();
        let mut super_fields = right.split(' ');
        let fstype = super_fields.next().unwrap_or_default();
        let super_options = super_fields.nth(1).unwrap_or_default();
        if fstype == "cgroup2" && mount_point == "/sys/fs/cgroup" {
            return CgroupLayout::Unified;
        }
        let Some(dir) = mount_point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let data = super_options
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro"))
            .collect::<Vec<_>>()
            .join(",");
        hierarchies.push(Hierarchy {
            dir: dir.to_string(),
            fstype: fstype.to_string(),
            data,
        });
    }
    CgroupLayout::Hierarchies(hierarchies)
}

/// Mounts the cgroups at `dest` (already created). In a cgroup namespace
/// each hierarchy's root is the container's own cgroup.
pub fn mount_cgroups(
    sys: &dyn Syscall,
    dest: &Path,
    flags: MsFlags,
    layout: &CgroupLayout,
) -> Result<()> {
    let hierarchies = match layout {
        CgroupLayout::Unified => {
            return sys.mount(
                Some(Path::new("cgroup2")),
                dest,
                Some("cgroup2"),
                flags,
                None,
            )
        }
        CgroupLayout::Hierarchies(h) => h,
    };
    let tmpfs_flags = flags & !MsFlags::MS_RDONLY;
    sys.mount(
        Some(Path::new("tmpfs")),
        dest,
        Some("tmpfs"),
        tmpfs_flags,
        Some("mode=755"),
    )?;
    for h in hierarchies {
        let target = dest.join(&h.dir);
        sys.create_dir_all(&target)?;
        let data = (!h.data.is_empty()).then_some(h.data.as_str());
        sys.mount(
            Some(Path::new(&h.fstype)),
            &target,
            Some(&h.fstype),
            flags,
            data,
        )?;
        // `cpu` and `cpuacct` name the combined `cpu,cpuacct`, as on the host.
        if h.dir.contains(',') {
            for part in h.dir.split(',') {
                sys.symlink(Path::new(&h.dir), &dest.join(part))?;
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        sys.mount(
            None,
            dest,
            None,
            tmpfs_flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::recording::RecordingSyscall;

    const V1: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory
";

    #[test]
    fn unified_and_v1_layouts_are_read_from_mountinfo() {
        let v2 = "40 25 0:35 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(layout_from_mountinfo(v2), CgroupLayout::Unified);
        let CgroupLayout::Hierarchies(h) = layout_from_mountinfo(V1) else {
            panic!("v1 taken for unified");
        };
        let dirs: Vec<_> = h
            .iter()
            .map(|h| (h.dir.as_str(), h.data.as_str()))
            .collect();
        assert_eq!(
            dirs,
            [
                ("unified", "nsdelegate"),
                ("systemd", "xattr,name=systemd"),
                ("cpu,cpuacct", "cpu,cpuacct"),
                ("memory", "memory"),
            ]
        );
    }

    #[test]
    fn read_only_v1_mount_is_a_sealed_tmpfs_of_hierarchies() {
        let sys = RecordingSyscall::default();
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
        let layout = layout_from_mountinfo(V1);
        mount_cgroups(&sys, Path::new("/r/sys/fs/cgroup"), flags, &layout).unwrap();
        let calls = sys.calls.borrow();
        let tmpfs = format!(
            "mount tmpfs /r/sys/fs/cgroup tmpfs {:?} mode=755",
            MsFlags::MS_NOSUID
        );
        assert_eq!(calls[0], tmpfs);
        assert!(calls.contains(&format!(
            "mount cgroup /r/sys/fs/cgroup/cpu,cpuacct cgroup {:?} cpu,cpuacct",
            flags
        )));
        assert!(calls.contains(&"symlink /r/sys/fs/cgroup/cpu -> cpu,cpuacct".to_string()));
        let last = calls.last().unwrap();
        assert!(
            last.contains("MS_REMOUNT") && last.contains("MS_RDONLY"),
            "{last}"
        );
    }
}
