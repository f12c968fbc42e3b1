//! The shim's one way to touch host paths below its state directory.
//!
//! A guest may write into anything it is shared (CVE-2020-2026 is Kata's
//! shim following a guest-planted symlink as host root). So every path
//! below a sandbox's directory is resolved by the kernel from an open
//! directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`: a symlink or `..` anywhere fails the operation
//! instead of leading out. Mounts are made onto a descriptor opened that
//! way (`open_tree` + `move_mount`), unmounts never follow a final symlink
//! (`UMOUNT_NOFOLLOW`), and removal never crosses into a mount.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};

#[derive(Debug, thiserror::Error)]
pub enum HostDirError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: String },
}

type Result<T> = std::result::Result<T, HostDirError>;

/// How every path below a [`HostDir`] is resolved.
const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Stacked mounts one unmount call peels off at most.
const MAX_STACKED_MOUNTS: usize = 16;

/// An open directory the shim owns, and its path (for messages only:
/// nothing below it is ever resolved through the path).
#[derive(Debug)]
pub struct HostDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// How a bind into a [`HostDir`] is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bind {
    /// The submounts of the source come along (`rbind`).
    pub recursive: bool,
    pub read_only: bool,
}

impl HostDir {
    /// Creates `path` (mode 0700, its parents as needed) and opens it.
    /// `path` comes from the host's configuration, never from a guest.
    pub fn create(path: &Path) -> Result<HostDir> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io("mkdir", path))?;
        let dir = HostDir::open(path)?;
        std::fs::set_permissions(dir.proc_path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod 0700", path))?;
        Ok(dir)
    }

    /// Opens the existing directory `path` (its last component must not
    /// be a symlink).
    pub fn open(path: &Path) -> Result<HostDir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io("open", path))?;
        Ok(HostDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as a path through this process's descriptor table, for
    /// programs and calls that take a path and must not re-resolve it.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    fn shown(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Opens `rel` below this directory with `flags`.
    fn resolve(&self, rel: &Path, flags: OFlags, extra: ResolveFlags) -> Result<OwnedFd> {
        self.open_beneath("open", rel, flags, Mode::empty(), extra)
    }

    /// Opens `rel` below this directory with `flags`, creating it (mode
    /// 0600) when it is absent.
    fn create_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
        let mode = Mode::from_raw_mode(0o600);
        self.open_beneath(
            "create",
            rel,
            flags | OFlags::CREATE,
            mode,
            ResolveFlags::empty(),
        )
    }

    fn open_beneath(
        &self,
        op: &'static str,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        extra: ResolveFlags,
    ) -> Result<OwnedFd> {
        check_relative(rel).map_err(|reason| HostDirError::Refused {
            path: self.shown(rel),
            reason,
        })?;
        rustix::fs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            BENEATH | extra,
        )
        .map_err(io(op, &self.shown(rel)))
    }

    /// The existing directory `rel` below this one.
    pub fn dir(&self, rel: &Path) -> Result<HostDir> {
        let fd = self.resolve(
            rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            ResolveFlags::empty(),
        )?;
        Ok(HostDir {
            fd,
            path: self.shown(rel),
        })
    }

    /// Creates every missing directory of `rel` (mode 0700) and opens the
    /// last. An existing component that is not a directory, or a symlink,
    /// fails it.
    pub fn mkdir_all(&self, rel: &Path) -> Result<HostDir> {
        let mut dir = self.dir(Path::new("."))?;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                return Err(HostDirError::Refused {
                    path: self.shown(rel),
                    reason: "not a plain relative path".into(),
                });
            };
            match rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io("mkdir", &dir.shown(Path::new(name)))(e)),
            }
            dir = dir.dir(Path::new(name))?;
        }
        Ok(dir)
    }

    /// Creates the empty regular file `name` here (mode 0600) unless it
    /// exists as one.
    fn make_file(&self, name: &Path) -> Result<()> {
        let fd = self.create_beneath(name, OFlags::WRONLY | OFlags::NOFOLLOW)?;
        let stat = rustix::fs::fstat(&fd).map_err(io("stat", &self.shown(name)))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(HostDirError::Refused {
                path: self.shown(name),
                reason: "exists and is not a regular file".into(),
            });
        }
        Ok(())
    }

    /// Creates (or truncates) the regular file `name` here, mode 0600,
    /// for writing.
    pub fn create_file(&self, name: &Path) -> Result<std::fs::File> {
        Ok(self
            .create_beneath(name, OFlags::WRONLY | OFlags::TRUNC)?
            .into())
    }

    /// Opens the regular file `name` here for reading.
    pub fn open_file(&self, name: &Path) -> Result<std::fs::File> {
        Ok(self
            .resolve(name, OFlags::RDONLY, ResolveFlags::empty())?
            .into())
    }

    /// The last `max` bytes of the regular file `name` here: never more,
    /// however large a guest or helper made it.
    pub fn read_tail(&self, name: &Path, max: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self.open_file(name).map_err(std::io::Error::other)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut out = Vec::new();
        f.take(max).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Renames `from` to `to`, both directly in this directory.
    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        for name in [from, to] {
            if name.components().count() != 1 {
                return Err(HostDirError::Refused {
                    path: self.shown(name),
                    reason: "not a name in this directory".into(),
                });
            }
        }
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(io("rename", &self.shown(from)))
    }

    /// Moves the entry `name` of this directory to `new_name` in `dest`,
    /// failing if `new_name` exists there. Both are names, not paths.
    pub fn move_into(&self, name: &Path, dest: &HostDir, new_name: &Path) -> Result<()> {
        for (dir, n) in [(self, name), (dest, new_name)] {
            if n.components().count() != 1
                || !matches!(n.components().next(), Some(Component::Normal(_)))
            {
                return Err(HostDirError::Refused {
                    path: dir.shown(n),
                    reason: "not a name in this directory".into(),
                });
            }
        }
        rustix::fs::renameat_with(
            &self.fd,
            name,
            &dest.fd,
            new_name,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(io("rename", &self.shown(name)))
    }

    /// Binds the host path `source` at `rel` below this directory, with
    /// `nosuid,nodev` (and `ro` when asked) on every mount of the bind:
    /// whatever the guest writes there cannot act as a setuid program or a
    /// device through it. The mount point is made of the source's kind.
    pub fn bind(&self, source: &Path, rel: &Path, how: Bind) -> Result<()> {
        let (parent, name) = split(rel).ok_or_else(|| HostDirError::Refused {
            path: self.shown(rel),
            reason: "no file name".into(),
        })?;
        let parent = self.mkdir_all(parent)?;
        let is_dir = std::fs::metadata(source)
            .map_err(io("stat", source))?
            .is_dir();
        if is_dir {
            parent.mkdir_all(name)?;
        } else {
            parent.make_file(name)?;
        }
        let target = parent.resolve(name, OFlags::PATH, ResolveFlags::NO_XDEV)?;
        let mut tree_flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        if how.recursive {
            tree_flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        let tree = rustix::mount::open_tree(rustix::fs::CWD, source, tree_flags)
            .map_err(io("open_tree", source))?;
        let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if how.read_only {
            set |= libc::MOUNT_ATTR_RDONLY;
        }
        set_mount_attrs(&tree, set).map_err(io("mount_setattr", source))?;
        rustix::mount::move_mount(
            &tree,
            "",
            &target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(io("move_mount", &self.shown(rel)))
    }

    /// Unmounts everything mounted at `rel` (lazily, so a busy mount still
    /// goes away). A symlink there is never followed: not a mount point,
    /// nothing happens. Absent is fine.
    pub fn unmount(&self, rel: &Path) {
        let Some((parent, name)) = split(rel) else {
            return;
        };
        let Ok(parent) = self.dir(parent) else {
            return;
        };
        let target = parent.proc_path().join(name);
        for _ in 0..MAX_STACKED_MOUNTS {
            if rustix::mount::unmount(&target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW)
                .is_err()
            {
                break;
            }
        }
    }

    /// The names in the directory `rel` (none when it is absent).
    pub fn entries(&self, rel: &Path) -> Vec<OsString> {
        let Ok(dir) = self.dir(rel) else {
            return Vec::new();
        };
        let Ok(read) = std::fs::read_dir(dir.proc_path()) else {
            return Vec::new();
        };
        read.flatten().map(|e| e.file_name()).collect()
    }

    /// Removes `rel` and everything below it, never leaving this directory
    /// and never entering a mount: something still mounted below it fails
    /// the removal (naming it) instead of having its files deleted.
    pub fn remove_tree(&self, rel: &Path) -> Result<()> {
        let Some((parent, name)) = split(rel) else {
            return Ok(());
        };
        let parent = match self.dir(parent) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        };
        parent.remove_entry(name)
    }

    /// Removes the entry `name` of this directory, recursively.
    fn remove_entry(&self, name: &Path) -> Result<()> {
        let stat = match rustix::fs::statat(&self.fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io("stat", &self.shown(name))(e)),
        };
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            // NO_XDEV: a mount point fails here (EXDEV) and is never entered.
            let child = self
                .resolve(
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY,
                    ResolveFlags::NO_XDEV,
                )
                .map(|fd| HostDir {
                    fd,
                    path: self.shown(name),
                })
                .map_err(|e| match e {
                    HostDirError::Io { source, .. }
                        if source.raw_os_error() == Some(libc::EXDEV) =>
                    {
                        HostDirError::Refused {
                            path: self.shown(name),
                            reason: "is still mounted".into(),
                        }
                    }
                    other => other,
                })?;
            for entry in child.entries(Path::new(".")) {
                child.remove_entry(Path::new(&entry))?;
            }
            rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::REMOVEDIR)
                .map_err(io("rmdir", &self.shown(name)))
        } else {
            rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty())
                .map_err(io("unlink", &self.shown(name)))
        }
    }
}

/// Unmounts everything mounted at the host path `path` without following
/// a symlink in its last component (for mounts outside the state
/// directory: containerd's bundle rootfs).
pub fn unmount_path(path: &Path) {
    for _ in 0..MAX_STACKED_MOUNTS {
        if rustix::mount::unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).is_err() {
            break;
        }
    }
}

/// `rel` must be relative and free of `..` (resolution would refuse it
/// too; this names the problem before a syscall does).
fn check_relative(rel: &Path) -> std::result::Result<(), String> {
    if rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(())
    } else {
        Err("not a plain relative path".into())
    }
}

/// `rel` as its parent (`.` for none) and last component.
fn split(rel: &Path) -> Option<(&Path, &Path)> {
    let name = rel.file_name()?;
    let parent = rel.parent().filter(|p| !p.as_os_str().is_empty());
    Some((parent.unwrap_or(Path::new(".")), Path::new(name)))
}

fn io<E: Into<std::io::Error>>(op: &'static str, path: &Path) -> impl FnOnce(E) -> HostDirError {
    let path = path.to_path_buf();
    move |e| HostDirError::Io {
        op,
        path,
        source: e.into(),
    }
}

/// Sets `set` on every mount of the detached tree `tree`
/// (mount_setattr(2) with AT_RECURSIVE; rustix has no wrapper).
fn set_mount_attrs(tree: &impl AsFd, set: u64) -> std::result::Result<(), rustix::io::Errno> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<mount_attr>()` bytes from
    // `attr`, a live local of that size; the path is a NUL-terminated
    // static empty string; the descriptor is open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (mounts)"
        );
    }

    #[test]
    fn paths_that_leave_or_use_symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = HostDir::create(&tmp.path().join("vm")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("vm/link")).unwrap();
        for bad in ["link", "link/x", "../vm", "/etc"] {
            assert!(dir.mkdir_all(Path::new(bad)).is_err(), "{bad} was followed");
        }
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "something was created through the symlink"
        );
        let made = dir.mkdir_all(Path::new("a/b")).unwrap();
        assert_eq!(made.path(), tmp.path().join("vm/a/b"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("vm/a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    /// The shape of CVE-2020-2026: a symlink where the mount point of a
    /// file volume goes. Neither the file it names is truncated nor is
    /// anything mounted over it.
    #[test]
    fn a_planted_symlink_is_neither_written_nor_mounted_through() {
        root();
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, "keep").unwrap();
        let source = tmp.path().join("volume-file");
        std::fs::write(&source, "volume").unwrap();
        let dir = HostDir::create(&tmp.path().join("vm")).unwrap();
        dir.mkdir_all(Path::new("c1/volumes")).unwrap();
        std::os::unix::fs::symlink(&canary, tmp.path().join("vm/c1/volumes/0")).unwrap();
        let err = dir
            .bind(&source, Path::new("c1/volumes/0"), Bind::default())
            .unwrap_err();
        assert!(err.to_string().contains("c1/volumes/0"), "{err}");
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "keep");
        // The unmount of a symlink does not reach the mount it names.
        let mounted = tmp.path().join("mounted");
        std::fs::create_dir(&mounted).unwrap();
        dir.mkdir_all(Path::new("m")).unwrap();
        dir.bind(tmp.path(), Path::new("m/t"), Bind::default())
            .unwrap();
        std::os::unix::fs::symlink(tmp.path().join("vm/m/t"), tmp.path().join("vm/link")).unwrap();
        dir.unmount(Path::new("link"));
        assert!(
            tmp.path().join("vm/m/t/canary").exists(),
            "unmounting a symlink detached the mount it points to"
        );
        dir.unmount(Path::new("m/t"));
        assert!(!tmp.path().join("vm/m/t/canary").exists());
    }

    #[test]
    fn binds_are_nosuid_nodev_and_read_only_where_asked() {
        root();
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let dir = HostDir::create(&tmp.path().join("vm")).unwrap();
        let how = Bind {
            recursive: true,
            read_only: true,
        };
        dir.bind(&src, Path::new("c1/volumes/0"), how).unwrap();
        let target = tmp.path().join("vm/c1/volumes/0");
        let st = nix::sys::statvfs::statvfs(&target).unwrap();
        use nix::sys::statvfs::FsFlags;
        assert!(st.flags().contains(FsFlags::ST_NOSUID), "{:?}", st.flags());
        assert!(st.flags().contains(FsFlags::ST_NODEV), "{:?}", st.flags());
        assert!(st.flags().contains(FsFlags::ST_RDONLY), "{:?}", st.flags());
        let err = dir.remove_tree(Path::new("c1")).unwrap_err();
        assert!(err.to_string().contains("still mounted"), "{err}");
        assert!(src.exists(), "the source survived a refused removal");
        dir.unmount(Path::new("c1/volumes/0"));
        dir.remove_tree(Path::new("c1")).unwrap();
        assert!(!tmp.path().join("vm/c1").exists());
        assert!(src.exists());
    }
}
