//! The container's root filesystem on the host: containerd's mounts on
//! `bundle/rootfs` (which [`crate::share::Share`] binds into the guest's
//! view).

use std::path::{Path, PathBuf};

use containerd_shim::api::CreateTaskRequest;

use crate::errors::ShimError;

/// Mounts containerd's rootfs mounts (if any) on `bundle/rootfs`, with
/// `nosuid,nodev` added: the guest writes into it, and nothing it writes
/// may act as a setuid program or a device on the host.
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
        let mut m = m.clone();
        m.options
            .extend(["nosuid".to_string(), "nodev".to_string()]);
        let m = &m;
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

/// Unmounts the bundle's rootfs (every mount stacked there, lazily);
/// absent is fine, and a symlink there is not followed.
pub fn unmount_bundle_rootfs(bundle: &Path) {
    crate::host_dir::unmount_path(&bundle.join("rootfs"));
}
