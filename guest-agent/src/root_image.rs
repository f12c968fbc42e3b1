//! Booting from a rootfs image (`hull.root=pmem|blk` on the kernel command
//! line). The agent starts as `/init` of the small boot initrd: it loads the
//! device's modules, checks the image with dm-verity (`hull.verity=`, the
//! root hash the host gave), mounts its erofs read-only, empties the
//! initramfs (its memory is freed) and execs the image's `/sbin/init` as
//! PID 1 on the image root: the image's own agent (the minimal image), or
//! systemd, which starts the agent as a service (the distro image). With `hull.verity=off` on pmem, erofs is mounted with
//! DAX: the guest runs the image's pages straight from the host's page
//! cache, with no copy in guest memory.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use protocols::root_image::{RootDevice, Verity, ROOT_PARAM, VERITY_PARAM};

#[derive(Debug, thiserror::Error)]
pub enum ImageBootError {
    #[error("{ROOT_PARAM}={0:?}: expected pmem or blk")]
    Device(String),
    #[error("{VERITY_PARAM} is missing: the image is checked unless {VERITY_PARAM}=off")]
    NoVerity,
    #[error(transparent)]
    Params(#[from] protocols::root_image::RootImageError),
    #[error(transparent)]
    Modules(#[from] crate::modules::ModulesError),
    #[error("the image device {0} did not appear within {1:?}")]
    NoDevice(&'static str, Duration),
    #[error(transparent)]
    Dm(#[from] crate::dm::DmError),
    #[error("{op} {path}: {source}{verity}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
        /// What dm-verity says, when it found a corrupted block.
        verity: String,
    },
}

/// The image boot the command line asks for.
#[derive(Debug, PartialEq)]
pub struct RootImage {
    pub device: RootDevice,
    pub verity: Option<Verity>,
}

/// `Some` when the command line names a root image.
pub fn requested(cmdline: &str) -> Option<Result<RootImage, ImageBootError>> {
    let param = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let device = param(ROOT_PARAM)?;
    Some((|| {
        let device = RootDevice::parse(device).ok_or(ImageBootError::Device(device.into()))?;
        let verity = match param(VERITY_PARAM) {
            None => return Err(ImageBootError::NoVerity),
            Some("off") => None,
            Some(v) => Some(Verity::from_param(v)?),
        };
        Ok(RootImage { device, verity })
    })())
}

const NEW_ROOT: &str = "/.hull-image";
const DM_NAME: &str = "hull-root";
const VERIFIED_NODE: &str = "/dev/hull-root";
const IMAGE_INIT: &str = "/sbin/init";
const DEVICE_WAIT: Duration = Duration::from_secs(10);

fn device_node(device: RootDevice) -> &'static str {
    match device {
        RootDevice::Pmem => "/dev/pmem0",
        RootDevice::Blk => "/dev/vda",
    }
}

/// " (dm-verity: ...)" when the verified device has met a corrupted block.
fn verity_note() -> String {
    match crate::dm::status(DM_NAME) {
        Ok(s) if s.trim() == "C" => " (dm-verity refused a block of the rootfs image: \
             it does not match the root hash; the image was modified)"
            .into(),
        _ => String::new(),
    }
}

fn io(op: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> ImageBootError {
    let path = path.to_string();
    move |source| ImageBootError::Io {
        op,
        path,
        source,
        verity: verity_note(),
    }
}

fn nix_io(op: &'static str, path: &str) -> impl FnOnce(nix::Error) -> ImageBootError {
    let f = io(op, path);
    move |e| f(e.into())
}

/// Mounts the image and execs its init; returns only on failure.
pub fn boot(image: &RootImage, args: &[String]) -> ImageBootError {
    match mount_image(image).and_then(|()| switch_and_exec(args)) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn mount_image(image: &RootImage) -> Result<(), ImageBootError> {
    for (fstype, target) in [("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        nix::mount::mount(
            Some(fstype),
            target,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(nix_io("mount", target))?;
    }
    let list = std::fs::read_to_string(crate::modules::MODULE_LIST)
        .map_err(io("read", crate::modules::MODULE_LIST))?;
    crate::modules::load_needed(
        &list,
        crate::modules::virtio_device_types_now,
        crate::modules::finit,
    )?;
    let node = device_node(image.device);
    wait_for(node)?;
    let (source, data) = match &image.verity {
        Some(verity) => {
            let (major, minor) = crate::dm::create(
                DM_NAME,
                verity.sectors(),
                "verity",
                &verity_params(verity, node),
            )?;
            let dev = nix::sys::stat::makedev(major.into(), minor.into());
            nix::sys::stat::mknod(
                VERIFIED_NODE,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                dev,
            )
            .map_err(nix_io("mknod", VERIFIED_NODE))?;
            (VERIFIED_NODE, None)
        }
        None if image.device == RootDevice::Pmem => (node, Some("dax=always")),
        None => (node, None),
    };
    std::fs::create_dir_all(NEW_ROOT).map_err(io("mkdir", NEW_ROOT))?;
    nix::mount::mount(
        Some(source),
        NEW_ROOT,
        Some("erofs"),
        MsFlags::MS_RDONLY,
        data,
    )
    .map_err(nix_io("mount erofs from", source))?;
    crate::boot_steps::mark("image_mounted");
    Ok(())
}

/// The verity table's parameters (after the target name).
fn verity_params(verity: &Verity, node: &str) -> String {
    verity.table(node).trim_start_matches("verity ").to_string()
}

fn wait_for(node: &'static str) -> Result<(), ImageBootError> {
    let began = Instant::now();
    while !Path::new(node).exists() {
        if began.elapsed() > DEVICE_WAIT {
            return Err(ImageBootError::NoDevice(node, DEVICE_WAIT));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Empties the initramfs, makes the image `/` and execs its init.
fn switch_and_exec(args: &[String]) -> Result<std::convert::Infallible, ImageBootError> {
    let root_dev = std::fs::metadata("/").map_err(io("stat", "/"))?.dev();
    remove_initramfs(Path::new("/"), root_dev);
    for target in ["/dev", "/sys", "/proc"] {
        nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(nix_io("unmount", target))?;
    }
    nix::unistd::chdir(NEW_ROOT).map_err(nix_io("chdir", NEW_ROOT))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(nix_io("move to /", NEW_ROOT))?;
    nix::unistd::chroot(".").map_err(nix_io("chroot", NEW_ROOT))?;
    nix::unistd::chdir("/").map_err(nix_io("chdir", "/"))?;
    let argv: Vec<CString> = std::iter::once(IMAGE_INIT.to_string())
        .chain(args.iter().skip(1).cloned())
        .filter_map(|a| CString::new(a).ok())
        .collect();
    let program = CString::new(IMAGE_INIT).map_err(|e| io("exec", IMAGE_INIT)(e.into()))?;
    match nix::unistd::execv(&program, &argv) {
        Ok(never) => match never {},
        Err(e) => Err(nix_io("exec", IMAGE_INIT)(e)),
    }
}

/// Deletes what the initramfs holds (its files are memory), staying on its
/// filesystem: the image mount and the kernel's mounts are left alone. A
/// file that cannot go stays; it costs memory, not correctness.
fn remove_initramfs(dir: &Path, root_dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != root_dev || path == Path::new(NEW_ROOT) {
            continue;
        }
        if meta.is_dir() {
            remove_initramfs(&path, root_dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn no_root_param_means_no_image() {
        assert!(requested("console=ttyS0 hull.log=debug").is_none());
    }

    #[test]
    fn the_image_and_its_verity_come_from_the_command_line() {
        let line = format!("quiet hull.root=pmem hull.verity=8,8,{},00ff", hash());
        let image = requested(&line).unwrap().unwrap();
        assert_eq!(image.device, RootDevice::Pmem);
        let v = image.verity.unwrap();
        assert_eq!((v.data_blocks, v.salt.as_str()), (8, "00ff"));
        assert_eq!(
            verity_params(&v, "/dev/pmem0"),
            format!(
                "1 /dev/pmem0 /dev/pmem0 4096 4096 8 8 sha256 {} 00ff",
                hash()
            )
        );
        let image = requested("hull.root=blk hull.verity=off").unwrap().unwrap();
        assert_eq!((image.device, image.verity), (RootDevice::Blk, None));
    }

    #[test]
    fn a_missing_or_bad_parameter_is_named() {
        let e = requested("hull.root=pmem").unwrap().unwrap_err();
        assert!(e.to_string().contains("hull.verity is missing"), "{e}");
        let e = requested("hull.root=nvme hull.verity=off")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("nvme"), "{e}");
        let e = requested("hull.root=pmem hull.verity=1,2")
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("hull.verity"), "{e}");
    }
}
