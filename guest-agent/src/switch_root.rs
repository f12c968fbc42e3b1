//! Leaving the initramfs. The kernel's initramfs root cannot be the old
//! root of a pivot_root, so containers could only be chroot'ed. PID 1
//! therefore moves the initramfs contents to a tmpfs and makes that the root
//! (what switch_root does), after which every container gets a real
//! pivot_root.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::mount::MsFlags;

#[derive(Debug, thiserror::Error)]
#[error("switch root: {op} {path}: {source}")]
pub struct SwitchRootError {
    op: &'static str,
    path: String,
    #[source]
    source: std::io::Error,
}

fn err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SwitchRootError {
    let path = path.display().to_string();
    move |source| SwitchRootError { op, path, source }
}

const NEW_ROOT: &str = "/.hull-root";

/// Whether `/` is the kernel's initramfs (`rootfs` in /proc/mounts).
pub fn on_initramfs() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .next()
                .map(|l| l.starts_with("rootfs / "))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Moves everything from the initramfs to a tmpfs and makes it `/`.
/// `/proc` (already mounted) moves along.
pub fn leave_initramfs() -> Result<(), SwitchRootError> {
    let new_root = Path::new(NEW_ROOT);
    std::fs::create_dir_all(new_root).map_err(err("mkdir", new_root))?;
    nix::mount::mount(
        Some("tmpfs"),
        new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| err("mount tmpfs", new_root)(e.into()))?;
    move_tree(Path::new("/"), new_root, &[Path::new("/proc"), new_root])?;
    let proc = new_root.join("proc");
    std::fs::create_dir_all(&proc).map_err(err("mkdir", &proc))?;
    nix::mount::mount(
        Some("/proc"),
        &proc,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| err("move /proc", &proc)(e.into()))?;
    nix::unistd::chdir(new_root).map_err(|e| err("chdir", new_root)(e.into()))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| err("move root", new_root)(e.into()))?;
    nix::unistd::chroot(".").map_err(|e| err("chroot", new_root)(e.into()))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir", Path::new("/"))(e.into()))
}

/// Copies `from` into `to` and deletes the originals (freeing the
/// initramfs memory), skipping `skip`.
fn move_tree(from: &Path, to: &Path, skip: &[&Path]) -> Result<(), SwitchRootError> {
    for entry in std::fs::read_dir(from).map_err(err("read dir", from))? {
        let entry = entry.map_err(err("read dir", from))?;
        let src = entry.path();
        if skip.contains(&src.as_path()) {
            continue;
        }
        let dst = to.join(entry.file_name());
        let meta = src.symlink_metadata().map_err(err("stat", &src))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dst).map_err(err("mkdir", &dst))?;
            std::fs::set_permissions(&dst, meta.permissions()).map_err(err("chmod", &dst))?;
            move_tree(&src, &dst, skip)?;
            let _ = std::fs::remove_dir(&src);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(err("readlink", &src))?;
            std::os::unix::fs::symlink(target, &dst).map_err(err("symlink", &dst))?;
            let _ = std::fs::remove_file(&src);
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else {
                nix::sys::stat::SFlag::S_IFBLK
            };
            nix::sys::stat::mknod(
                &dst,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(meta.mode()),
                meta.rdev(),
            )
            .map_err(|e| err("mknod", &dst)(e.into()))?;
        } else {
            std::fs::copy(&src, &dst).map_err(err("copy", &src))?;
            let _ = std::fs::remove_file(&src);
        }
    }
    Ok(())
}
