//! OCI mount entries: option parsing and mounting one entry inside a rootfs.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use crate::cgroup_mount;
use crate::paths::{secure_join, PathError};
use crate::syscall::{Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {destination}: unknown option {option:?}")]
    UnknownOption { destination: String, option: String },
    #[error("mount {0}: destination must be absolute")]
    RelativeDestination(String),
    #[error("mount {destination}: {source}")]
    Path {
        destination: String,
        #[source]
        source: PathError,
    },
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

/// A mount entry's options, split the way mount(2) wants them.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for the mount itself.
    pub flags: MsFlags,
    /// Propagation changes applied after the mount (MS_SHARED, MS_SLAVE...).
    pub propagation: MsFlags,
    /// Filesystem-specific options (`mode=755`, `size=65536k`, ...).
    pub data: Vec<String>,
    /// `MOUNT_ATTR_*` bits to set and clear on the mount and all below it
    /// (`rro`, `rnosuid`...), applied with mount_setattr(2).
    pub recursive_set: u64,
    pub recursive_clear: u64,
}

/// (option, clears the flag, flag)
const FLAG_OPTIONS: &[(&str, bool, MsFlags)] = &[
    ("defaults", false, MsFlags::empty()),
    ("ro", false, MsFlags::MS_RDONLY),
    ("rw", true, MsFlags::MS_RDONLY),
    ("suid", true, MsFlags::MS_NOSUID),
    ("nosuid", false, MsFlags::MS_NOSUID),
    ("dev", true, MsFlags::MS_NODEV),
    ("nodev", false, MsFlags::MS_NODEV),
    ("exec", true, MsFlags::MS_NOEXEC),
    ("noexec", false, MsFlags::MS_NOEXEC),
    ("sync", false, MsFlags::MS_SYNCHRONOUS),
    ("async", true, MsFlags::MS_SYNCHRONOUS),
    ("dirsync", false, MsFlags::MS_DIRSYNC),
    ("remount", false, MsFlags::MS_REMOUNT),
    ("mand", false, MsFlags::MS_MANDLOCK),
    ("nomand", true, MsFlags::MS_MANDLOCK),
    ("atime", true, MsFlags::MS_NOATIME),
    ("noatime", false, MsFlags::MS_NOATIME),
    ("diratime", true, MsFlags::MS_NODIRATIME),
    ("nodiratime", false, MsFlags::MS_NODIRATIME),
    ("bind", false, MsFlags::MS_BIND),
    ("rbind", false, MsFlags::MS_BIND.union(MsFlags::MS_REC)),
    ("relatime", false, MsFlags::MS_RELATIME),
    ("norelatime", true, MsFlags::MS_RELATIME),
    ("strictatime", false, MsFlags::MS_STRICTATIME),
    ("nostrictatime", true, MsFlags::MS_STRICTATIME),
    ("silent", false, MsFlags::MS_SILENT),
    ("loud", true, MsFlags::MS_SILENT),
];

/// Recursive options: (name, whether it clears, MOUNT_ATTR_* bits).
const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, 0x1),
    ("rrw", true, 0x1),
    ("rnosuid", false, 0x2),
    ("rsuid", true, 0x2),
    ("rnodev", false, 0x4),
    ("rdev", true, 0x4),
    ("rnoexec", false, 0x8),
    ("rexec", true, 0x8),
    ("rnodiratime", false, 0x80),
    ("rdiratime", true, 0x80),
];

const PROPAGATION_OPTIONS: &[(&str, MsFlags)] = &[
    ("private", MsFlags::MS_PRIVATE),
    ("rprivate", MsFlags::MS_PRIVATE.union(MsFlags::MS_REC)),
    ("shared", MsFlags::MS_SHARED),
    ("rshared", MsFlags::MS_SHARED.union(MsFlags::MS_REC)),
    ("slave", MsFlags::MS_SLAVE),
    ("rslave", MsFlags::MS_SLAVE.union(MsFlags::MS_REC)),
    ("unbindable", MsFlags::MS_UNBINDABLE),
    ("runbindable", MsFlags::MS_UNBINDABLE.union(MsFlags::MS_REC)),
];

/// Splits OCI mount options. Options that are neither flags nor propagation
/// are passed to the filesystem as data, as runc does.
/// Every mount option name [`parse_options`] turns into flags.
pub fn known_options() -> impl Iterator<Item = &'static str> {
    FLAG_OPTIONS
        .iter()
        .map(|(name, _, _)| *name)
        .chain(RECURSIVE_OPTIONS.iter().map(|(name, _, _)| *name))
        .chain(PROPAGATION_OPTIONS.iter().map(|(name, _)| *name))
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
        recursive_set: 0,
        recursive_clear: 0,
    };
    for opt in options {
        if let Some((_, clear, flag)) = FLAG_OPTIONS.iter().find(|(name, _, _)| name == opt) {
            if *clear {
                out.flags.remove(*flag);
            } else {
                out.flags.insert(*flag);
            }
        } else if let Some((_, clear, bits)) = RECURSIVE_OPTIONS.iter().find(|(n, _, _)| n == opt) {
            if *clear {
                out.recursive_clear |= bits;
                out.recursive_set &= !bits;
            } else {
                out.recursive_set |= bits;
                out.recursive_clear &= !bits;
            }
        } else if let Some((_, flag)) = PROPAGATION_OPTIONS.iter().find(|(name, _)| name == opt) {
            out.propagation.insert(*flag);
        } else {
            out.data.push(opt.clone());
        }
    }
    out
}

/// Parses a rootfsPropagation value (`rslave`, `private`, ...).
pub fn parse_propagation(value: &str) -> Option<MsFlags> {
    PROPAGATION_OPTIONS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, f)| *f)
}

/// Bind-mounts `source` on `dest` with `flags`. A bind mount ignores every
/// flag but MS_BIND/MS_REC on the first call; the rest take effect through a
/// remount, and if that fails the bind is undone.
pub fn bind(
    sys: &dyn Syscall,
    source: Option<&Path>,
    dest: &Path,
    flags: MsFlags,
) -> Result<(), SyscallError> {
    let first = (flags | MsFlags::MS_BIND) & (MsFlags::MS_BIND | MsFlags::MS_REC);
    sys.mount(source, dest, None, first, None)?;
    let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !rest.is_empty() {
        let remount = rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
        if let Err(e) = sys.mount(None, dest, None, remount, None) {
            let _ = sys.umount2(dest, nix::mount::MntFlags::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(())
}

/// Mounts one spec entry under `rootfs`. The destination is resolved inside
/// the rootfs, so a symlink in the image cannot redirect it outside.
pub fn mount_entry(sys: &dyn Syscall, rootfs: &Path, m: &Mount) -> Result<PathBuf, MountError> {
    let dest_name = m.destination().display().to_string();
    if !m.destination().is_absolute() {
        return Err(MountError::RelativeDestination(dest_name));
    }
    let dest = secure_join(rootfs, m.destination()).map_err(|source| MountError::Path {
        destination: dest_name.clone(),
        source,
    })?;
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let is_bind = opts.flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let source = m.source().as_deref();

    if is_bind && source.map(|s| s.is_file()).unwrap_or(false) {
        sys.create_file(&dest)?;
    } else {
        sys.create_dir_all(&dest)?;
    }

    let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
    if is_bind {
        bind(sys, source, &dest, opts.flags)?;
    } else if typ == "cgroup" || typ == "cgroup2" {
        // The spec names the kind the host had; the container gets what
        // this system has (runc does the same).
        let layout = sys.cgroup_layout()?;
        cgroup_mount::mount_cgroups(sys, &dest, opts.flags, &layout)?;
    } else {
        let src = source.unwrap_or_else(|| Path::new(typ));
        sys.mount(Some(src), &dest, Some(typ), opts.flags, data.as_deref())?;
    }
    if !opts.propagation.is_empty() {
        sys.mount(None, &dest, None, opts.propagation, None)?;
    }
    if opts.recursive_set != 0 || opts.recursive_clear != 0 {
        sys.mount_setattr_recursive(&dest, opts.recursive_set, opts.recursive_clear)?;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::recording::RecordingSyscall;
    use oci_spec::runtime::MountBuilder;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&strings(&[
            "nosuid",
            "noexec",
            "rslave",
            "mode=755",
            "size=65536k",
            "rw",
        ]));
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(o.data, strings(&["mode=755", "size=65536k"]));
    }

    #[test]
    fn recursive_options_become_mount_attributes_applied_last() {
        let o = parse_options(&strings(&["rbind", "rro", "rnosuid", "rexec", "rro"]));
        assert_eq!(o.recursive_set, 0x1 | 0x2);
        assert_eq!(o.recursive_clear, 0x8);
        assert!(
            o.data.is_empty(),
            "recursive options are not filesystem data"
        );
        let sys = RecordingSyscall::default();
        let m = MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/src")
            .options(strings(&["rbind", "rro"]))
            .build()
            .unwrap();
        let root = tempfile::tempdir().unwrap();
        mount_entry(&sys, root.path(), &m).unwrap();
        let calls = sys.calls.borrow();
        let last = calls.last().unwrap();
        assert!(
            last.starts_with("mount_setattr -R ") && last.ends_with("/data +0x1 -0x0"),
            "{calls:?}"
        );
    }

    #[test]
    fn clearing_option_removes_flag() {
        let o = parse_options(&strings(&["ro", "rw"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn read_only_bind_is_remounted() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let m = MountBuilder::default()
            .destination("/data")
            .source(src.path())
            .typ("bind")
            .options(strings(&["rbind", "ro", "nosuid"]))
            .build()
            .unwrap();
        let sys = RecordingSyscall::default();
        mount_entry(&sys, root.path(), &m).unwrap();
        let calls = sys.calls.borrow();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls[1].contains("MS_BIND | MS_REC"), "{calls:?}");
        assert!(
            calls[2].contains("MS_RDONLY") && calls[2].contains("MS_REMOUNT"),
            "{calls:?}"
        );
    }

    #[test]
    fn proc_over_escaping_symlink_lands_inside_rootfs() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/../../../etc", root.path().join("proc")).unwrap();
        let m = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let sys = RecordingSyscall::default();
        let dest = mount_entry(&sys, root.path(), &m).unwrap();
        assert_eq!(dest, root.path().join("etc"));
    }

    #[test]
    fn relative_destination_is_rejected() {
        let m = MountBuilder::default()
            .destination("proc")
            .typ("proc")
            .build()
            .unwrap();
        let sys = RecordingSyscall::default();
        assert!(matches!(
            mount_entry(&sys, Path::new("/tmp"), &m),
            Err(MountError::RelativeDestination(_))
        ));
    }
}
