//! The container's root filesystem on the host: containerd's mounts on
//! `bundle/rootfs`, bound into the sandbox's shared directory.

use std::path::{Path, PathBuf};

use containerd_shim::api::CreateTaskRequest;
use nix::mount::{MntFlags, MsFlags};

use crate::errors::ShimError;

/// `shared/<container>/rootfs`: what the guest sees at
/// `<GUEST_SHARED_DIR>/<container>/rootfs`.
pub fn shared_rootfs(shared: &Path, container_id: &str) -> PathBuf {
    shared.join(container_id).join("rootfs")
}

/// Mounts containerd's rootfs mounts (if any) on `bundle/rootfs`.
pub async fn mount_bundle_rootfs(req: &CreateTaskRequest) -> Result<PathBuf, ShimError> {
    let rootfs = Path::new(&req.bundle).join("rootfs");
    if req.rootfs.len() > 1 {
        return Err(ShimError::Invalid {
            what: "rootfs",
            reason: format!(
                "{} mounts given; Hull takes one (the snapshotter's)",
                req.rootfs.len()
            ),
        });
    }
    if let Some(m) = req.rootfs.first() {
        std::fs::create_dir_all(&rootfs)
            .map_err(ShimError::io(format!("mkdir {}", rootfs.display())))?;
        containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs)
            .await
            .map_err(|e| ShimError::Io {
                op: format!("mount {} rootfs on {}", m.type_, rootfs.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
    }
    Ok(rootfs)
}

/// Binds `rootfs` at the container's place in the shared directory.
pub fn share(rootfs: &Path, shared: &Path, container_id: &str) -> Result<PathBuf, ShimError> {
    let target = shared_rootfs(shared, container_id);
    std::fs::create_dir_all(&target)
        .map_err(ShimError::io(format!("mkdir {}", target.display())))?;
    nix::mount::mount(
        Some(rootfs),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ShimError::Io {
        op: format!("bind {} on {}", rootfs.display(), target.display()),
        source: e.into(),
    })?;
    Ok(target)
}

/// Unmounts everything at `path` (lazily, so a busy mount still goes away);
/// absent mounts are fine. Idempotent.
pub fn unmount_all(path: &Path) {
    for _ in 0..16 {
        if nix::mount::umount2(path, MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}
