//! The minimal rootfs image: a directory tree staged with fixed modes, made
//! into a read-only erofs image by `mkfs.erofs` with every timestamp,
//! owner and the UUID fixed, so the same inputs give the same bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("stage {path}: {source}")]
    Stage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run mkfs.erofs (install erofs-utils): {0}")]
    NoMkfs(std::io::Error),
    #[error("mkfs.erofs failed: {0}")]
    Mkfs(String),
}

/// Whose owners and modes the image keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    Normalized,
    AsStaged,
}

/// A directory tree being staged for the image.
pub struct Tree {
    root: PathBuf,
}

fn stage_err(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.display().to_string();
    move |source| RootfsError::Stage { path, source }
}

impl Tree {
    /// Stages into `root`, which must not exist yet (or be empty).
    pub fn new(root: &Path) -> Result<Self, RootfsError> {
        std::fs::create_dir_all(root).map_err(stage_err(root))?;
        Ok(Tree { root: root.into() })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn parent(&self, rel: &str) -> Result<PathBuf, RootfsError> {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(stage_err(parent))?;
        }
        Ok(path)
    }

    pub fn dir(&self, rel: &str) -> Result<(), RootfsError> {
        let path = self.path(rel);
        std::fs::create_dir_all(&path).map_err(stage_err(&path))
    }

    pub fn file(&self, rel: &str, data: &[u8], mode: u32) -> Result<(), RootfsError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.parent(rel)?;
        std::fs::write(&path, data).map_err(stage_err(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(stage_err(&path))
    }

    /// A symlink where there may be a file or link already (a unit masked
    /// or a target changed in a bootstrapped root).
    pub fn replace_symlink(&self, rel: &str, target: &str) -> Result<(), RootfsError> {
        let path = self.parent(rel)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(stage_err(&path)(e)),
        }
        self.symlink(rel, target)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn symlink(&self, rel: &str, target: &str) -> Result<(), RootfsError> {
        let path = self.parent(rel)?;
        std::os::unix::fs::symlink(target, &path).map_err(stage_err(&path))
    }

    /// Directory modes follow the umask; every directory gets 0755.
    fn fix_dir_modes(dir: &Path) -> Result<(), RootfsError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(stage_err(dir))?;
        for entry in std::fs::read_dir(dir).map_err(stage_err(dir))? {
            let entry = entry.map_err(stage_err(dir))?;
            if entry.file_type().map_err(stage_err(dir))?.is_dir() {
                Self::fix_dir_modes(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Writes the erofs image of the tree to `out`: uncompressed (so the
    /// guest may map it with DAX), timestamps 0, no xattrs. `Normalized`:
    /// owner root and directories 0755; `AsStaged`: a bootstrapped root's
    /// own owners and modes.
    pub fn make_erofs(&self, out: &Path, owners: Owners) -> Result<(), RootfsError> {
        let mut args = vec!["--quiet", "-T0", "-x-1"];
        if owners == Owners::Normalized {
            Self::fix_dir_modes(&self.root)?;
            args.push("--all-root");
        }
        let output = Command::new("mkfs.erofs")
            .args(args)
            .arg("-U00000000-0000-0000-0000-000000000000")
            .arg(out)
            .arg(&self.root)
            .output()
            .map_err(RootfsError::NoMkfs)?;
        if !output.status.success() {
            return Err(RootfsError::Mkfs(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }
}
