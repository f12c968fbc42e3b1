//! Leaving the initramfs. The kernel's initramfs root cannot be the old
//! root of a pivot_root (it has no parent mount), so containers could only
//! be chroot'ed. PID 1 therefore makes a bind mount of the initramfs its
//! root: a mount with a parent, after which every container gets a real
//! pivot_root. Binding, not copying the files to a tmpfs as switch_root
//! does, saves moving the image's megabytes at every boot (about 80 ms
//! under TCG).

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

/// Where the bind is made before it moves to `/`; an empty directory of
/// the initramfs afterwards.
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

fn mount(
    source: &str,
    target: &Path,
    flags: MsFlags,
    op: &'static str,
) -> Result<(), SwitchRootError> {
    nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
        .map_err(|e| err(op, target)(e.into()))
}

/// Makes a bind mount of the initramfs `/`. `/proc` (already mounted)
/// moves along.
pub fn leave_initramfs() -> Result<(), SwitchRootError> {
    let new_root = Path::new(NEW_ROOT);
    std::fs::create_dir_all(new_root).map_err(err("mkdir", new_root))?;
    mount("/", new_root, MsFlags::MS_BIND, "bind /")?;
    mount(
        "/proc",
        &new_root.join("proc"),
        MsFlags::MS_MOVE,
        "move /proc",
    )?;
    nix::unistd::chdir(new_root).map_err(|e| err("chdir", new_root)(e.into()))?;
    mount(".", Path::new("/"), MsFlags::MS_MOVE, "move root")?;
    nix::unistd::chroot(".").map_err(|e| err("chroot", new_root)(e.into()))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir", Path::new("/"))(e.into()))
}
