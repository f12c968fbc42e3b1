//! The syscalls container setup makes, behind a trait so that setup logic
//! can be unit-tested without root by recording the calls.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::cgroup_mount::{layout_from_mountinfo, CgroupLayout};

/// A failed syscall, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target}: {source}")]
pub struct SyscallError {
    pub op: &'static str,
    pub target: String,
    #[source]
    pub source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, SyscallError>;

fn err(op: &'static str, target: &Path, source: impl Into<std::io::Error>) -> SyscallError {
    SyscallError {
        op,
        target: target.display().to_string(),
        source: source.into(),
    }
}

/// Filesystem-shaping syscalls used while building a container's rootfs.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path) -> Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Creates an empty file (a bind-mount target) if nothing is at `path`.
    fn create_file(&self, path: &Path) -> Result<()>;
    /// How this system mounts its cgroups (for `cgroup` mount entries).
    fn cgroup_layout(&self) -> Result<CgroupLayout>;
    /// Sets and clears `MOUNT_ATTR_*` on the mount at `target` and every
    /// mount below it (mount_setattr(2) with AT_RECURSIVE).
    fn mount_setattr_recursive(&self, target: &Path, set: u64, clear: u64) -> Result<()>;
}

/// The real thing.
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| err("mount", target, e))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(|e| err("umount", target, e))
    }

    fn pivot_root(&self, new_root: &Path) -> Result<()> {
        // pivot_root(".", ".") stacks the old root under the new one; it is
        // then detached, so no directory for it is needed in the rootfs.
        nix::unistd::chdir(new_root).map_err(|e| err("chdir", new_root, e))?;
        nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root", new_root, e))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)
            .map_err(|e| err("umount old root", new_root, e))?;
        nix::unistd::chdir("/").map_err(|e| err("chdir", Path::new("/"), e))
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, perm, dev).map_err(|e| err("mknod", path, e))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| err("chown", path, e))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(err("symlink", link, e)),
            _ => Ok(()),
        }
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|e| err("mkdir", path, e))
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if path.symlink_metadata().is_ok() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| err("create", path, e))
    }

    fn cgroup_layout(&self) -> Result<CgroupLayout> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|e| err("read", path, e))?;
        Ok(layout_from_mountinfo(&text))
    }

    fn mount_setattr_recursive(&self, target: &Path, set: u64, clear: u64) -> Result<()> {
        /// `struct mount_attr` of mount_setattr(2).
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        const AT_RECURSIVE: libc::c_uint = 0x8000;
        let attr = MountAttr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        let path = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|e| err("mount_setattr", target, std::io::Error::other(e)))?;
        // SAFETY: `path` is a NUL-terminated string and `attr` a valid
        // mount_attr whose size is passed; the kernel only reads both.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                path.as_ptr(),
                AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(err(
                "mount_setattr",
                target,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod recording {
    //! A [`Syscall`] that records calls instead of making them.
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct RecordingSyscall {
        pub calls: RefCell<Vec<String>>,
    }

    impl RecordingSyscall {
        fn push(&self, s: String) -> Result<()> {
            self.calls.borrow_mut().push(s);
            Ok(())
        }
    }

    impl Syscall for RecordingSyscall {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<()> {
            self.push(format!(
                "mount {} {} {} {:?} {}",
                source.map(|p| p.display().to_string()).unwrap_or_default(),
                target.display(),
                fstype.unwrap_or(""),
                flags,
                data.unwrap_or("")
            ))
        }
        fn umount2(&self, target: &Path, _: MntFlags) -> Result<()> {
            self.push(format!("umount {}", target.display()))
        }
        fn pivot_root(&self, new_root: &Path) -> Result<()> {
            self.push(format!("pivot_root {}", new_root.display()))
        }
        fn mknod(&self, path: &Path, _: SFlag, perm: Mode, dev: u64) -> Result<()> {
            self.push(format!("mknod {} {:o} {dev}", path.display(), perm.bits()))
        }
        fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<()> {
            self.push(format!("chown {} {uid}:{gid}", path.display()))
        }
        fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
            self.push(format!(
                "symlink {} -> {}",
                link.display(),
                target.display()
            ))
        }
        fn create_dir_all(&self, path: &Path) -> Result<()> {
            self.push(format!("mkdir {}", path.display()))
        }
        fn create_file(&self, path: &Path) -> Result<()> {
            self.push(format!("touch {}", path.display()))
        }
        fn cgroup_layout(&self) -> Result<CgroupLayout> {
            Ok(CgroupLayout::Unified)
        }
        fn mount_setattr_recursive(&self, target: &Path, set: u64, clear: u64) -> Result<()> {
            self.push(format!(
                "mount_setattr -R {} +{set:#x} -{clear:#x}",
                target.display()
            ))
        }
    }
}
