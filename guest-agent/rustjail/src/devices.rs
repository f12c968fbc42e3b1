//! Device nodes and the standard /dev symlinks of a container.

use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::paths::{secure_join, PathError};
use crate::syscall::{Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {path}: type {typ:?} cannot be created")]
    BadType { path: String, typ: String },
    #[error("device {path}: {source}")]
    Path {
        path: String,
        #[source]
        source: PathError,
    },
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (the OCI "default devices").
pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

impl TryFrom<&LinuxDevice> for DeviceNode {
    type Error = DeviceError;

    fn try_from(d: &LinuxDevice) -> Result<Self, DeviceError> {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            other => {
                return Err(DeviceError::BadType {
                    path: d.path().display().to_string(),
                    typ: format!("{other:?}"),
                })
            }
        };
        Ok(DeviceNode {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        })
    }
}

/// Creates `devices` under `rootfs` (replacing what is there). With
/// `bind_from_host`, each is the host's node of the same path bind-mounted
/// over an empty file: the way to get devices in a user namespace, where
/// mknod is not allowed.
pub fn create_devices(
    sys: &dyn Syscall,
    rootfs: &Path,
    devices: &[DeviceNode],
    bind_from_host: bool,
) -> Result<(), DeviceError> {
    for d in devices {
        let path = secure_join(rootfs, &d.path).map_err(|source| DeviceError::Path {
            path: d.path.display().to_string(),
            source,
        })?;
        if let Some(parent) = path.parent() {
            sys.create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&path);
        if bind_from_host {
            sys.create_file(&path)?;
            sys.mount(
                Some(&d.path),
                &path,
                None,
                nix::mount::MsFlags::MS_BIND,
                None,
            )?;
            continue;
        }
        sys.mknod(
            &path,
            d.kind,
            Mode::from_bits_truncate(d.mode),
            makedev(d.major, d.minor),
        )?;
        sys.chown(&path, d.uid, d.gid)?;
    }
    Ok(())
}

/// The symlinks a Linux /dev is expected to have.
pub fn create_dev_symlinks(sys: &dyn Syscall, rootfs: &Path) -> Result<(), DeviceError> {
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    for (target, name) in links {
        let link = rootfs.join("dev").join(name);
        if name == "ptmx" {
            let _ = std::fs::remove_file(&link);
        }
        sys.symlink(Path::new(target), &link)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::recording::RecordingSyscall;

    #[test]
    fn default_devices_are_the_oci_set() {
        let names: Vec<_> = default_devices()
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
    }

    #[test]
    fn devices_are_created_with_mode_and_owner() {
        let root = tempfile::tempdir().unwrap();
        let sys = RecordingSyscall::default();
        let dev = DeviceNode {
            path: "/dev/fuse".into(),
            kind: SFlag::S_IFCHR,
            major: 10,
            minor: 229,
            mode: 0o640,
            uid: 5,
            gid: 6,
        };
        create_devices(&sys, root.path(), &[dev], false).unwrap();
        let calls = sys.calls.borrow();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("mknod") && c.contains("dev/fuse 640")),
            "{calls:?}"
        );
        assert!(
            calls.iter().any(|c| c.ends_with("dev/fuse 5:6")),
            "{calls:?}"
        );
    }
}
