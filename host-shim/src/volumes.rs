//! The spec's bind-mount volumes, shared into the guest: each source is
//! bound (read-only where the spec says so) at `shared/<container>/volumes/<n>`
//! on the host, and the guest spec mounts it from there. Nothing else of
//! the host becomes visible to the guest.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{Mount, Spec};

use crate::errors::ShimError;
use crate::vm::GUEST_SHARED_DIR;

/// `shared/<container>/volumes`, on the host.
pub fn volumes_dir(shared: &Path, container_id: &str) -> PathBuf {
    shared.join(container_id).join("volumes")
}

fn is_bind(m: &Mount) -> bool {
    let opts = m.options().as_deref().unwrap_or_default();
    m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind")
}

fn has_option(m: &Mount, name: &str) -> bool {
    m.options()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o == name)
}

/// Checks every bind source before anything is mounted, naming the first
/// that cannot be shared.
pub fn check_sources(spec: &Spec) -> Result<(), ShimError> {
    for m in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| is_bind(m))
    {
        let source = m.source().as_deref().unwrap_or(Path::new(""));
        let bad = |reason: String| ShimError::Invalid {
            what: "mounts",
            reason: format!("bind mount {:?} on {:?}: {reason}", source, m.destination()),
        };
        if !source.is_absolute() {
            return Err(bad("the source must be an absolute host path".into()));
        }
        std::fs::metadata(source).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Binds each volume's source into the shared directory and points the
/// guest spec's mount at it. Returns the host mount points, for undo.
pub fn share(
    spec: &mut Spec,
    shared: &Path,
    container_id: &str,
) -> Result<Vec<PathBuf>, ShimError> {
    let dir = volumes_dir(shared, container_id);
    let guest_dir = Path::new(GUEST_SHARED_DIR)
        .join(container_id)
        .join("volumes");
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let mut shared_points = Vec::new();
    for (n, m) in mounts.iter_mut().enumerate().filter(|(_, m)| is_bind(m)) {
        let source = m.source().clone().unwrap_or_default();
        let target = dir.join(n.to_string());
        bind_volume(
            &source,
            &target,
            has_option(m, "rbind"),
            has_option(m, "ro"),
        )?;
        shared_points.push(target);
        m.set_source(Some(guest_dir.join(n.to_string())));
    }
    spec.set_mounts(Some(mounts));
    Ok(shared_points)
}

fn bind_volume(
    source: &Path,
    target: &Path,
    recursive: bool,
    read_only: bool,
) -> Result<(), ShimError> {
    let io = |what: &str| ShimError::io(format!("{what} {}", target.display()));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io("mkdir"))?;
    }
    // The mount point must be of the source's kind: a file for a file.
    if source.is_dir() {
        std::fs::create_dir_all(target).map_err(io("mkdir"))?;
    } else {
        std::fs::write(target, b"").map_err(io("create"))?;
    }
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    let mount = |flags| {
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(|e| {
            ShimError::Io {
                op: format!("bind {} on {}", source.display(), target.display()),
                source: e.into(),
            }
        })
    };
    mount(flags)?;
    if read_only {
        // A bind ignores MS_RDONLY until remounted: the guest must not be
        // able to write through virtio-fs either.
        mount(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// Unmounts every shared volume of the container. Idempotent.
pub fn unshare_all(shared: &Path, container_id: &str) {
    let dir = volumes_dir(shared, container_id);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        crate::rootfs::unmount_all(&entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: &str) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(serde_json::from_str(mounts).unwrap()));
        spec
    }

    #[test]
    fn a_missing_or_relative_source_is_named() {
        let spec = spec_with(
            r#"[{"destination":"/data","type":"bind","source":"/no/such/dir","options":["rbind"]}]"#,
        );
        let err = check_sources(&spec).unwrap_err().to_string();
        assert!(
            err.contains("/no/such/dir") && err.contains("/data"),
            "{err}"
        );
        let spec = spec_with(r#"[{"destination":"/d","source":"rel","options":["bind"]}]"#);
        assert!(check_sources(&spec)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
    }

    /// Real bind mounts (root): a read-only volume cannot be written on the
    /// host side of the share either, and undo leaves nothing mounted.
    #[test]
    fn volumes_are_bound_read_only_where_asked_and_undone() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (mounts)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("hello"), "hi").unwrap();
        let shared = tmp.path().join("shared");
        let mut spec = spec_with(&format!(
            r#"[{{"destination":"/proc","type":"proc","source":"proc"}},
               {{"destination":"/data","type":"bind","source":"{}","options":["rbind","ro"]}}]"#,
            src.display()
        ));
        check_sources(&spec).unwrap();
        let points = share(&mut spec, &shared, "c1").unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/hull/shared/c1/volumes/1"))
        );
        assert_eq!(
            std::fs::read_to_string(points[0].join("hello")).unwrap(),
            "hi"
        );
        let write = std::fs::write(points[0].join("new"), "x");
        assert!(write.is_err(), "a read-only volume was writable");
        unshare_all(&shared, "c1");
        assert!(
            !points[0].join("hello").exists(),
            "still mounted after undo"
        );
    }
}
