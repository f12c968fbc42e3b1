//! Building a container's root filesystem: propagation, spec mounts,
//! devices, pivot_root, masked and read-only paths.

use std::path::Path;

use nix::mount::MsFlags;
use oci_spec::runtime::Spec;

use crate::devices::{self, DeviceError, DeviceNode};
use crate::mounts::{self, MountError};
use crate::syscall::{Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfsPropagation {0:?} is not a propagation mode")]
    BadPropagation(String),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

fn propagation(spec: &Spec) -> Result<MsFlags, RootfsError> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().clone())
    {
        None => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(p) => mounts::parse_propagation(&p).ok_or(RootfsError::BadPropagation(p)),
    }
}

/// Everything done before pivot_root, in a fresh mount namespace. In a
/// new user namespace (`in_userns`) device nodes cannot be made, so the
/// host's are bind-mounted, as runc does.
pub fn prepare(
    sys: &dyn Syscall,
    spec: &Spec,
    rootfs: &Path,
    in_userns: bool,
) -> Result<(), RootfsError> {
    // Mounts made for the container must not propagate back to the host
    // (or the guest's shared directory). A shared root would also make
    // pivot_root fail: the spec's propagation is applied after it.
    let before_pivot = match propagation(spec)? {
        p if p.contains(MsFlags::MS_PRIVATE) => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    sys.mount(None, Path::new("/"), None, before_pivot, None)?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(
        Some(rootfs),
        rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    for m in spec.mounts().as_deref().unwrap_or_default() {
        mounts::mount_entry(sys, rootfs, m)?;
    }
    let mut nodes = devices::default_devices();
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default()
    {
        nodes.push(DeviceNode::try_from(&d)?);
    }
    devices::create_devices(sys, rootfs, &nodes, in_userns)?;
    devices::create_dev_symlinks(sys, rootfs)?;
    Ok(())
}

/// Everything done after pivot_root, with `/` being the container's root.
pub fn finish(sys: &dyn Syscall, spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default()
    {
        mask_path(sys, Path::new(&p))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().clone())
        .unwrap_or_default()
    {
        readonly_path(sys, Path::new(&p))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        sys.mount(None, Path::new("/"), None, flags, None)?;
    }
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().clone()) {
        let flags = mounts::parse_propagation(&p).ok_or(RootfsError::BadPropagation(p))?;
        sys.mount(None, Path::new("/"), None, flags, None)?;
    }
    Ok(())
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a
/// directory. A path that does not exist needs no masking.
fn mask_path(sys: &dyn Syscall, path: &Path) -> Result<(), SyscallError> {
    match path.metadata() {
        Ok(m) if m.is_dir() => sys.mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        ),
        Ok(_) => sys.mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        ),
        Err(_) => Ok(()),
    }
}

fn readonly_path(sys: &dyn Syscall, path: &Path) -> Result<(), SyscallError> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    sys.mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
    sys.mount(None, path, None, flags, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::recording::RecordingSyscall;

    #[test]
    fn prepare_makes_root_slave_then_binds_rootfs_first() {
        let root = tempfile::tempdir().unwrap();
        let spec = Spec::default();
        let sys = RecordingSyscall::default();
        prepare(&sys, &spec, root.path(), false).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls[0].contains("MS_REC | MS_SLAVE"), "{calls:?}");
        assert!(calls[1].contains("MS_BIND | MS_REC"), "{calls:?}");
        // Default spec mounts proc, dev, devpts, shm, mqueue and sysfs.
        for fs in ["proc", "tmpfs", "devpts", "mqueue", "sysfs"] {
            assert!(
                calls.iter().any(|c| c.contains(&format!(" {fs} "))),
                "{fs} not mounted: {calls:?}"
            );
        }
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mknod") && c.contains("dev/null")));
    }

    #[test]
    fn bad_propagation_is_named() {
        let mut spec = Spec::default();
        if let Some(l) = spec.linux_mut() {
            l.set_rootfs_propagation(Some("sideways".into()));
        }
        let sys = RecordingSyscall::default();
        let err = prepare(&sys, &spec, Path::new("/tmp"), false).unwrap_err();
        assert!(err.to_string().contains("sideways"));
    }
}
