//! What a sandbox shares with its guest, laid out so the guest cannot
//! redirect anything the shim does (Kata's design after CVE-2020-2026):
//!
//! - `mounts/` holds every mount the shim makes for the guest (each
//!   container's rootfs, its volumes). The guest never sees it.
//! - `shared/` is what virtio-fs or 9p serves: a read-only bind of
//!   `mounts/` that receives each mount made there (slave propagation).
//!   The guest can create, rename or replace nothing in it; a rootfs or a
//!   read-write volume inside keeps its own read-write flag.
//!
//! Every path below the sandbox's directory goes through [`HostDir`].

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{Mount, Spec};

use crate::errors::ShimError;
use crate::host_dir::{Bind, HostDir, HostDirError};
use crate::vm::{VmPaths, GUEST_SHARED_DIR};

const MOUNTS: &str = "mounts";
const SHARED: &str = "shared";

impl From<HostDirError> for ShimError {
    fn from(e: HostDirError) -> Self {
        ShimError::Io {
            op: "host state".into(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

/// A sandbox's directory, open.
pub struct Share {
    dir: HostDir,
}

/// `mounts/<container>`: where a container's mounts are made.
fn container_dir(container_id: &str) -> Result<PathBuf, ShimError> {
    let name = Path::new(container_id);
    if container_id.is_empty()
        || container_id.contains('/')
        || matches!(container_id, "." | "..")
        || name.components().count() != 1
    {
        return Err(ShimError::Invalid {
            what: "container id",
            reason: format!("{container_id:?} cannot name a directory"),
        });
    }
    Ok(Path::new(MOUNTS).join(name))
}

impl Share {
    /// Creates the sandbox's directory (0700) with `mounts/` and the
    /// guest's read-only view of it in `shared/`, before any guest exists.
    pub fn create(paths: &VmPaths) -> Result<Share, ShimError> {
        let dir = HostDir::create(&paths.dir)?;
        let mounts = dir.mkdir_all(Path::new(MOUNTS))?;
        let shared = dir.mkdir_all(Path::new(SHARED))?;
        let share = Share { dir };
        share
            .export(mounts.path(), shared.path())
            .inspect_err(|_| share.unexport())?;
        Ok(share)
    }

    /// The directory of a sandbox that exists.
    pub fn open(paths: &VmPaths) -> Result<Share, ShimError> {
        Ok(Share {
            dir: HostDir::open(&paths.dir)?,
        })
    }

    /// `mounts` becomes a shared mount of its own, and `shared` a
    /// read-only slave of it. Both were just created by this shim in a
    /// directory no guest has seen, so their paths are safe to use.
    fn export(&self, mounts: &Path, shared: &Path) -> Result<(), ShimError> {
        let mount = |src: Option<&Path>, target: &Path, flags: MsFlags| {
            nix::mount::mount(src, target, None::<&str>, flags, None::<&str>).map_err(|e| {
                ShimError::Io {
                    op: format!("mount {flags:?} on {}", target.display()),
                    source: e.into(),
                }
            })
        };
        mount(Some(mounts), mounts, MsFlags::MS_BIND)?;
        mount(None, mounts, MsFlags::MS_SHARED)?;
        mount(Some(mounts), shared, MsFlags::MS_BIND | MsFlags::MS_REC)?;
        mount(None, shared, MsFlags::MS_SLAVE)?;
        let read_only = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV;
        mount(None, shared, read_only)
    }

    fn unexport(&self) {
        self.dir.unmount(Path::new(SHARED));
        self.dir.unmount(Path::new(MOUNTS));
    }

    /// Binds the container's rootfs where the guest finds it
    /// (`<GUEST_SHARED_DIR>/<container>/rootfs`).
    pub fn add_rootfs(&self, rootfs: &Path, container_id: &str) -> Result<(), ShimError> {
        let target = container_dir(container_id)?.join("rootfs");
        let how = Bind {
            recursive: true,
            read_only: false,
        };
        Ok(self.dir.bind(rootfs, &target, how)?)
    }

    /// Binds each bind-mount volume of the spec at `volumes/<n>` of the
    /// container (read-only where the spec says so) and points the guest
    /// spec's mount at it.
    pub fn add_volumes(&self, spec: &mut Spec, container_id: &str) -> Result<(), ShimError> {
        let dir = container_dir(container_id)?.join("volumes");
        let guest_dir = Path::new(GUEST_SHARED_DIR)
            .join(container_id)
            .join("volumes");
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (n, m) in mounts.iter_mut().enumerate().filter(|(_, m)| is_bind(m)) {
            let source = m.source().clone().unwrap_or_default();
            let how = Bind {
                recursive: has_option(m, "rbind"),
                read_only: has_option(m, "ro"),
            };
            self.dir
                .bind(&source, &dir.join(n.to_string()), how)
                .map_err(|e| ShimError::Invalid {
                    what: "mounts",
                    reason: format!("bind mount {source:?} on {:?}: {e}", m.destination()),
                })?;
            m.set_source(Some(guest_dir.join(n.to_string())));
        }
        spec.set_mounts(Some(mounts));
        Ok(())
    }

    /// Unmounts the container's volumes and rootfs and removes its
    /// directory. Idempotent; never follows what the guest may have made.
    pub fn remove_container(&self, container_id: &str) {
        let Ok(dir) = container_dir(container_id) else {
            return;
        };
        let volumes = dir.join("volumes");
        for n in self.dir.entries(&volumes) {
            self.dir.unmount(&volumes.join(n));
        }
        self.dir.unmount(&dir.join("rootfs"));
        let _ = self.dir.remove_tree(&dir);
    }

    /// Ends the share of the sandbox at `paths` and removes its directory.
    pub fn remove_at(paths: &VmPaths) -> Result<(), ShimError> {
        Share::open(paths)?.remove()
    }

    /// Ends the share and removes the sandbox's directory. Refuses (naming
    /// it) while anything is still mounted below it.
    pub fn remove(self) -> Result<(), ShimError> {
        self.unexport();
        let path = self.dir.path().to_path_buf();
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        Ok(HostDir::open(&parent)?.remove_tree(&name)?)
    }
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || has_option(m, "bind") || has_option(m, "rbind")
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
        if let Some(reason) = propagation_refused(m) {
            return Err(bad(reason.into()));
        }
        std::fs::metadata(source).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Mount propagation cannot cross the VM: the guest sees a volume through
/// virtio-fs or 9p, so a mount made on the host after the container
/// started never appears in it, and one made in the guest never reaches
/// the host. A volume asking for either is refused rather than silently
/// left unpropagated (private propagation, Kubernetes' default, is fine).
fn propagation_refused(m: &Mount) -> Option<&'static str> {
    let options = m.options().as_deref().unwrap_or_default();
    if options.iter().any(|o| o == "shared" || o == "rshared") {
        return Some(
            "propagation rshared (Kubernetes Bidirectional) cannot cross the VM: \
             mounts made in the container would never appear on the host",
        );
    }
    if options.iter().any(|o| o == "slave" || o == "rslave") {
        return Some(
            "propagation rslave (Kubernetes HostToContainer) cannot cross the VM: \
             mounts made on the host later would never appear in the container",
        );
    }
    None
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

    #[test]
    fn propagation_that_cannot_cross_the_vm_is_refused_by_name() {
        for (option, names) in [("rshared", "Bidirectional"), ("rslave", "HostToContainer")] {
            let spec = spec_with(&format!(
                r#"[{{"destination":"/data","type":"bind","source":"/tmp","options":["rbind","{option}"]}}]"#
            ));
            let err = check_sources(&spec).unwrap_err().to_string();
            assert!(
                err.contains(option) && err.contains(names) && err.contains("/data"),
                "{err}"
            );
        }
        let private = spec_with(
            r#"[{"destination":"/data","type":"bind","source":"/tmp","options":["rbind","rprivate"]}]"#,
        );
        check_sources(&private).unwrap();
    }

    #[test]
    fn container_ids_that_are_not_one_name_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(container_dir(bad).is_err(), "{bad:?}");
        }
        assert_eq!(container_dir("c1").unwrap(), Path::new("mounts/c1"));
    }

    /// Real mounts (root): the guest's view is read-only at the top and
    /// sees each container's rootfs read-write; a read-only volume is
    /// read-only on both sides; removal leaves nothing mounted.
    #[test]
    fn the_guest_view_is_read_only_but_rootfs_and_volumes_keep_their_flags() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (mounts)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let paths = VmPaths::new(tmp.path(), "sb");
        let rootfs = tmp.path().join("rootfs");
        let volume = tmp.path().join("vol");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("hello"), "hi").unwrap();
        let share = Share::create(&paths).unwrap();
        share.add_rootfs(&rootfs, "c1").unwrap();
        let mut spec = spec_with(&format!(
            r#"[{{"destination":"/proc","type":"proc","source":"proc"}},
               {{"destination":"/data","type":"bind","source":"{}","options":["rbind","ro"]}}]"#,
            volume.display()
        ));
        share.add_volumes(&mut spec, "c1").unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/hull/shared/c1/volumes/1"))
        );
        let guest = paths.shared.clone();
        assert!(
            std::fs::create_dir(guest.join("planted")).is_err(),
            "the guest's view must be read-only"
        );
        std::fs::write(guest.join("c1/rootfs/new"), "x").expect("the rootfs stays writable");
        assert_eq!(std::fs::read_to_string(rootfs.join("new")).unwrap(), "x");
        assert_eq!(
            std::fs::read_to_string(guest.join("c1/volumes/1/hello")).unwrap(),
            "hi"
        );
        assert!(std::fs::write(guest.join("c1/volumes/1/new"), "x").is_err());
        share.remove_container("c1");
        assert!(!guest.join("c1").exists());
        share.remove().unwrap();
        assert!(!paths.dir.exists());
        assert!(volume.join("hello").exists() && rootfs.join("new").exists());
    }
}
