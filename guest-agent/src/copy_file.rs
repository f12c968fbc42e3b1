//! CopyFile: the host writes a file (or directory, or symlink) into the
//! guest in chunks, confined to one directory. The path is walked component
//! by component from that directory without following symlinks, and a file
//! becomes visible only when complete (written to a temporary name, then
//! renamed), so a reader never sees half a file.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{mkdirat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, Gid, Uid};
use protocols::agent::CopyFileRequest;
use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum CopyFileError {
    #[error("path: {path:?} is not below {allowed} (absolute, no '.' or '..')")]
    Outside { path: String, allowed: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("path: {path}: a component is a symlink or not a directory")]
    NotADirectory { path: String },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: String,
        #[source]
        source: Errno,
    },
}

impl CopyFileError {
    pub fn code(&self) -> Code {
        match self {
            CopyFileError::Outside { .. }
            | CopyFileError::Invalid { .. }
            | CopyFileError::NotADirectory { .. } => Code::INVALID_ARGUMENT,
            CopyFileError::Sys { .. } => Code::INTERNAL,
        }
    }
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> CopyFileError + 'a {
    move |source| CopyFileError::Sys {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The path's components below `allowed`, each a plain name.
fn relative_names(allowed: &Path, path: &str) -> Result<Vec<PathBuf>, CopyFileError> {
    let outside = || CopyFileError::Outside {
        path: path.to_string(),
        allowed: allowed.display().to_string(),
    };
    let rel = Path::new(path)
        .strip_prefix(allowed)
        .map_err(|_| outside())?;
    // `Path::components` silently drops `.`; a literal one is refused too.
    if !Path::new(path).is_absolute() || path.split('/').any(|c| c == "." || c == "..") {
        return Err(outside());
    }
    let names: Vec<PathBuf> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(PathBuf::from(n)),
            _ => Err(outside()),
        })
        .collect::<Result<_, _>>()?;
    if names.is_empty() {
        return Err(outside());
    }
    Ok(names)
}

const DIR_FLAGS: OFlag = OFlag::O_DIRECTORY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_RDONLY);

/// Opens (creating as needed, with `mode`) each directory in `names` below
/// `allowed`, refusing symlinks; returns the last one.
fn open_dirs(allowed: &Path, names: &[PathBuf], mode: Mode) -> Result<OwnedFd, CopyFileError> {
    std::fs::create_dir_all(allowed).map_err(|e| CopyFileError::Sys {
        op: "mkdir",
        path: allowed.display().to_string(),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let mut dir =
        openat(AT_FDCWD, allowed, DIR_FLAGS, Mode::empty()).map_err(sys("open", allowed))?;
    let mut walked = allowed.to_path_buf();
    for name in names {
        walked.push(name);
        dir = open_child_dir(&dir, name, mode, &walked)?;
    }
    Ok(dir)
}

/// Creates (with `mode`) or opens directory `name` in `dir`, refusing a
/// symlink or a non-directory there; `walked` is its full path, for errors.
fn open_child_dir(
    dir: &OwnedFd,
    name: &Path,
    mode: Mode,
    walked: &Path,
) -> Result<OwnedFd, CopyFileError> {
    match mkdirat(dir.as_fd(), name, mode) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys("mkdir", walked)(e)),
    }
    openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => CopyFileError::NotADirectory {
            path: walked.display().to_string(),
        },
        e => sys("open", walked)(e),
    })
}

fn owner(uid: i32, gid: i32) -> (Option<Uid>, Option<Gid>) {
    (
        (uid >= 0).then(|| Uid::from_raw(uid as u32)),
        (gid >= 0).then(|| Gid::from_raw(gid as u32)),
    )
}

fn check_sizes(req: &CopyFileRequest) -> Result<(), CopyFileError> {
    let invalid = |field, reason: String| Err(CopyFileError::Invalid { field, reason });
    if req.file_size < 0 {
        return invalid("file_size", format!("{} is negative", req.file_size));
    }
    if req.offset < 0 || req.offset > req.file_size {
        return invalid(
            "offset",
            format!(
                "{} is outside the file's {} bytes",
                req.offset, req.file_size
            ),
        );
    }
    if req.offset + req.data.len() as i64 > req.file_size {
        return invalid(
            "data",
            format!(
                "{} bytes at offset {} overrun file_size {}",
                req.data.len(),
                req.offset,
                req.file_size
            ),
        );
    }
    Ok(())
}

/// Carries out one CopyFile request below `allowed`.
pub fn copy(allowed: &Path, req: &CopyFileRequest) -> Result<(), CopyFileError> {
    let names = relative_names(allowed, &req.path)?;
    let (name, parents) = names.split_last().ok_or(CopyFileError::Outside {
        path: req.path.clone(),
        allowed: allowed.display().to_string(),
    })?;
    let dir_mode = Mode::from_bits_truncate(if req.dir_mode == 0 {
        0o755
    } else {
        req.dir_mode
    });
    let dir = open_dirs(allowed, parents, dir_mode)?;
    let full = Path::new(&req.path);
    let kind = SFlag::from_bits_truncate(req.file_mode) & SFlag::S_IFMT;
    let perms = Mode::from_bits_truncate(req.file_mode & 0o7777);
    let (uid, gid) = owner(req.uid, req.gid);
    let chown =
        |flags| fchownat(dir.as_fd(), name.as_path(), uid, gid, flags).map_err(sys("chown", full));
    if kind == SFlag::S_IFDIR {
        // The parents are open already: only the last one is made here.
        drop(open_child_dir(&dir, name, perms, full)?);
        return chown(nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    }
    if kind == SFlag::S_IFLNK {
        let target = std::str::from_utf8(&req.data).map_err(|_| CopyFileError::Invalid {
            field: "data",
            reason: "a symlink target must be UTF-8".into(),
        })?;
        match symlinkat(target, dir.as_fd(), name.as_path()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys("symlink", full)(e)),
        }
        return chown(nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    }
    check_sizes(req)?;
    write_chunk(&dir, name, req, perms, (uid, gid))
}

/// Writes one chunk into the temporary file; the last chunk gives it its
/// owner and mode and renames it into place.
fn write_chunk(
    dir: &OwnedFd,
    name: &Path,
    req: &CopyFileRequest,
    perms: Mode,
    (uid, gid): (Option<Uid>, Option<Gid>),
) -> Result<(), CopyFileError> {
    let full = Path::new(&req.path);
    let tmp = PathBuf::from(format!(".{}.hull-copy", name.display()));
    let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if req.offset == 0 {
        flags |= OFlag::O_TRUNC;
    }
    let fd = openat(
        dir.as_fd(),
        tmp.as_path(),
        flags,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(sys("open", full))?;
    let file = File::from(fd);
    file.write_all_at(&req.data, req.offset as u64)
        .map_err(|e| sys("write", full)(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    if req.offset + (req.data.len() as i64) < req.file_size {
        return Ok(());
    }
    nix::unistd::fchown(&file, uid, gid).map_err(sys("chown", full))?;
    nix::sys::stat::fchmod(&file, perms).map_err(sys("chmod", full))?;
    renameat(dir.as_fd(), tmp.as_path(), dir.as_fd(), name).map_err(sys("rename", full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn req(path: &Path, size: i64, offset: i64, data: &[u8], mode: u32) -> CopyFileRequest {
        CopyFileRequest {
            path: path.display().to_string(),
            file_size: size,
            offset,
            data: data.to_vec(),
            file_mode: mode,
            dir_mode: 0o750,
            uid: -1,
            gid: -1,
            ..Default::default()
        }
    }

    #[test]
    fn a_file_in_chunks_appears_only_when_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("a/b/hosts");
        copy(dir.path(), &req(&target, 10, 0, b"hello", 0o100644)).expect("chunk 1");
        assert!(!target.exists(), "visible before its last chunk");
        copy(dir.path(), &req(&target, 10, 5, b"world", 0o100644)).expect("chunk 2");
        assert_eq!(std::fs::read(&target).expect("read"), b"helloworld");
        let meta = std::fs::metadata(&target).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        let parent = std::fs::metadata(dir.path().join("a")).expect("meta");
        assert_eq!(parent.mode() & 0o777, 0o750);
    }

    #[test]
    fn directories_symlinks_and_empty_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        copy(dir.path(), &req(&dir.path().join("d"), 0, 0, b"", 0o040700)).expect("dir");
        assert!(dir.path().join("d").is_dir());
        copy(
            dir.path(),
            &req(&dir.path().join("l"), 0, 0, b"d", 0o120777),
        )
        .expect("link");
        assert_eq!(
            std::fs::read_link(dir.path().join("l")).expect("link"),
            Path::new("d")
        );
        copy(dir.path(), &req(&dir.path().join("e"), 0, 0, b"", 0o100600)).expect("empty");
        assert_eq!(std::fs::read(dir.path().join("e")).expect("read"), b"");
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        let allowed = dir.path();
        for path in [
            "/etc/passwd".to_string(),
            format!("{}/../x", allowed.display()),
            format!("{}/./x", allowed.display()),
            allowed.display().to_string(),
        ] {
            let r = CopyFileRequest {
                path: path.clone(),
                ..Default::default()
            };
            let e = copy(allowed, &r).expect_err(&path);
            assert!(matches!(e, CopyFileError::Outside { .. }), "{path}: {e}");
        }
        let through_link = req(&allowed.join("link/x"), 1, 0, b"x", 0o100644);
        let e = copy(allowed, &through_link).expect_err("symlink component");
        assert!(matches!(e, CopyFileError::NotADirectory { .. }), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
    }

    #[test]
    fn sizes_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path().join("f");
        let e = copy(dir.path(), &req(&t, 3, 0, b"toolong", 0o100644)).expect_err("overrun");
        assert!(e.to_string().starts_with("data:"), "{e}");
        let e = copy(dir.path(), &req(&t, 3, 9, b"", 0o100644)).expect_err("offset");
        assert!(e.to_string().starts_with("offset:"), "{e}");
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
    }
}
