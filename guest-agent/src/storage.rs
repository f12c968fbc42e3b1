//! Storage the host hands to the guest (Kata's `Storage` message): shared
//! filesystems and volumes mounted in the guest before containers use them.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use protocols::agent::Storage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage driver {0:?} is not supported (supported: virtio-fs, 9p, ephemeral, local)")]
    UnknownDriver(String),
    #[error("storage mount_point {0:?} must be an absolute path without '..'")]
    BadMountPoint(String),
    #[error("mount {driver} {source_name} on {mount_point}: {error}")]
    Mount {
        driver: String,
        source_name: String,
        mount_point: String,
        error: nix::Error,
    },
    #[error("mkdir {path}: {error}")]
    Mkdir { path: String, error: std::io::Error },
}

fn check_mount_point(p: &str) -> Result<PathBuf, StorageError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(StorageError::BadMountPoint(p.to_string()));
    }
    Ok(path.to_path_buf())
}

/// Mounts one storage; returns its mount point.
pub fn mount(s: &Storage) -> Result<PathBuf, StorageError> {
    let target = check_mount_point(&s.mount_point)?;
    let (fstype, source, mut data): (&str, &str, Vec<String>) = match s.driver.as_str() {
        "virtio-fs" => ("virtiofs", s.source.as_str(), Vec::new()),
        "9p" => (
            "9p",
            s.source.as_str(),
            vec![
                "trans=virtio".into(),
                "version=9p2000.L".into(),
                "msize=512000".into(),
            ],
        ),
        "ephemeral" => ("tmpfs", "tmpfs", Vec::new()),
        "local" => ("tmpfs", "local", vec!["mode=1777".into()]),
        other => return Err(StorageError::UnknownDriver(other.to_string())),
    };
    let opts = rustjail::mounts::parse_options(&s.options);
    data.extend(opts.data);
    std::fs::create_dir_all(&target).map_err(|error| StorageError::Mkdir {
        path: target.display().to_string(),
        error,
    })?;
    let data = (!data.is_empty()).then(|| data.join(","));
    nix::mount::mount(
        Some(source),
        &target,
        Some(fstype),
        opts.flags,
        data.as_deref(),
    )
    .map_err(|error| StorageError::Mount {
        driver: s.driver.clone(),
        source_name: s.source.clone(),
        mount_point: s.mount_point.clone(),
        error,
    })?;
    Ok(target)
}

/// Lazily unmounts; a mount that is already gone is fine.
pub fn unmount(path: &Path) {
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_driver_and_bad_mount_point_are_refused() {
        let s = Storage {
            driver: "nbd".into(),
            mount_point: "/run/x".into(),
            ..Default::default()
        };
        assert!(matches!(mount(&s), Err(StorageError::UnknownDriver(_))));
        let s = Storage {
            driver: "ephemeral".into(),
            mount_point: "/run/../etc".into(),
            ..Default::default()
        };
        assert!(matches!(mount(&s), Err(StorageError::BadMountPoint(_))));
    }
}
