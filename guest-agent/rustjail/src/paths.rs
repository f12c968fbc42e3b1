//! Resolving paths inside a container root without leaving it.
//!
//! A container image controls its own symlinks; a mount destination such as
//! `/proc` that is a symlink to `/host/etc` must resolve inside the rootfs,
//! never outside it (the runc CVE-2019-16884 / CVE-2019-19921 classes).

use std::path::{Component, Path, PathBuf};

/// Why a path could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

const MAX_SYMLINKS: usize = 255;

/// Joins `unsafe_path` onto `root`, resolving every symlink as if `root` were
/// `/`: `..` stops at the root and absolute link targets restart from it.
/// Components that do not exist yet are appended as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, PathError> {
    let mut pending: Vec<PathBuf> = components_reversed(unsafe_path);
    let mut resolved = PathBuf::new(); // relative to root
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == Path::new("..") {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match full.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::SymlinkLoop(unsafe_path.display().to_string()));
                }
                let target = std::fs::read_link(&full).map_err(|source| PathError::Io {
                    path: full.display().to_string(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(components_reversed(&target));
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => resolved = candidate,
            Err(source) => {
                return Err(PathError::Io {
                    path: full.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(root.join(resolved))
}

fn components_reversed(path: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    parts.reverse();
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn dotdot_stops_at_root() {
        let root = tempfile::tempdir().unwrap();
        let got = secure_join(root.path(), Path::new("../../etc/passwd")).unwrap();
        assert_eq!(got, root.path().join("etc/passwd"));
    }

    #[test]
    fn absolute_symlink_stays_inside() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink("/etc", root.path().join("real/link")).unwrap();
        let got = secure_join(root.path(), Path::new("/real/link/shadow")).unwrap();
        assert_eq!(got, root.path().join("etc/shadow"));
    }

    #[test]
    fn relative_symlink_escape_is_clamped() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../host", root.path().join("proc")).unwrap();
        let got = secure_join(root.path(), Path::new("/proc")).unwrap();
        assert_eq!(got, root.path().join("host"));
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        assert!(matches!(
            secure_join(root.path(), Path::new("a")),
            Err(PathError::SymlinkLoop(_))
        ));
    }
}
