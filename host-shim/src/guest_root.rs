//! What a sandbox VM boots from (`[guest]` in the configuration): the whole
//! guest in one initrd, or the minimal rootfs image with its small initrd.
//! For an image, the root hash and the rest of its dm-verity parameters
//! come from `<image>.verity`, a root-owned file hull-image wrote next to
//! it, and reach the guest on the kernel command line: the guest checks
//! every block it reads against the host's root hash, so a modified image
//! does not boot.

use std::io::Read;
use std::path::{Path, PathBuf};

use protocols::root_image::{RootDevice, Verity, ROOT_PARAM, VERITY_PARAM, VERITY_SUFFIX};

use crate::config::{GuestRoot, HullConfig};

#[derive(Debug, thiserror::Error)]
pub enum GuestRootError {
    #[error("rootfs image {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rootfs image verity file {path}: {message} (rebuild it with hull-image)")]
    Verity { path: String, message: String },
    #[error("rootfs image {path}: {size} bytes, but its verity file puts the hash tree at byte {hash_start}")]
    TooSmall {
        path: String,
        size: u64,
        hash_start: u64,
    },
}

/// The image as a device of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootImageDisk {
    pub path: PathBuf,
    pub size: u64,
    pub device: RootDevice,
}

/// What the VM boots: its initrd, the kernel command-line words for the
/// guest's root, and the image device if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBoot {
    pub initrd: PathBuf,
    pub kernel_params: String,
    pub disk: Option<RootImageDisk>,
}

/// A verity file is a few lines of JSON.
const VERITY_FILE_LIMIT: u64 = 4096;

/// `<image>.verity`.
pub fn verity_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".");
    name.push(VERITY_SUFFIX);
    PathBuf::from(name)
}

/// Reads and checks `<image>.verity`.
pub fn read_verity(image: &Path) -> Result<Verity, GuestRootError> {
    let path = verity_path(image);
    let shown = path.display().to_string();
    let file = std::fs::File::open(&path).map_err(|source| GuestRootError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut text = String::new();
    file.take(VERITY_FILE_LIMIT)
        .read_to_string(&mut text)
        .map_err(|source| GuestRootError::Read {
            path: shown.clone(),
            source,
        })?;
    let bad = |message: String| GuestRootError::Verity {
        path: shown.clone(),
        message,
    };
    let verity: Verity = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    verity.check().map_err(|e| bad(e.to_string()))?;
    Ok(verity)
}

/// What the configuration boots.
pub fn guest_boot(cfg: &HullConfig) -> Result<GuestBoot, GuestRootError> {
    let g = &cfg.guest;
    if g.root == GuestRoot::Initrd {
        return Ok(GuestBoot {
            initrd: cfg.hypervisor.initrd.clone(),
            kernel_params: String::new(),
            disk: None,
        });
    }
    let image = g.image.display().to_string();
    let size = std::fs::metadata(&g.image)
        .map_err(|source| GuestRootError::Read {
            path: image.clone(),
            source,
        })?
        .len();
    let verity = if g.verity {
        let v = read_verity(&g.image)?;
        let hash_start = v.hash_start_block * protocols::root_image::BLOCK_SIZE;
        if hash_start >= size {
            return Err(GuestRootError::TooSmall {
                path: image,
                size,
                hash_start,
            });
        }
        v.to_param()
    } else {
        "off".to_string()
    };
    Ok(GuestBoot {
        initrd: g.boot_initrd.clone(),
        kernel_params: format!("{ROOT_PARAM}={} {VERITY_PARAM}={verity}", g.device.name()),
        disk: Some(RootImageDisk {
            path: g.image.clone(),
            size,
            device: g.device,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, verity: bool) -> HullConfig {
        let mut cfg = HullConfig::parse(
            include_str!("../../config/configuration.toml"),
            Path::new("c.toml"),
        )
        .unwrap();
        cfg.guest.root = GuestRoot::Image;
        cfg.guest.image = dir.join("rootfs.img");
        cfg.guest.verity = verity;
        cfg
    }

    fn write_image(dir: &Path, verity: &str) {
        std::fs::write(dir.join("rootfs.img"), vec![0u8; 16 * 4096]).unwrap();
        std::fs::write(dir.join("rootfs.img.verity"), verity).unwrap();
    }

    fn verity_json(hash_start: u64) -> String {
        format!(
            r#"{{"data_blocks":8,"hash_start_block":{hash_start},"root_hash":"{}","salt":"00ff"}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn an_image_boots_its_small_initrd_with_its_root_hash() {
        let dir = tempfile::tempdir().unwrap();
        write_image(dir.path(), &verity_json(8));
        let boot = guest_boot(&config(dir.path(), true)).unwrap();
        assert_eq!(
            boot.initrd,
            Path::new("/usr/local/share/hull/boot-initrd.img")
        );
        assert_eq!(
            boot.kernel_params,
            format!("hull.root=pmem hull.verity=8,8,{},00ff", "ab".repeat(32))
        );
        let disk = boot.disk.unwrap();
        assert_eq!((disk.size, disk.device), (16 * 4096, RootDevice::Pmem));
        let boot = guest_boot(&config(dir.path(), false)).unwrap();
        assert_eq!(boot.kernel_params, "hull.root=pmem hull.verity=off");
    }

    #[test]
    fn a_bad_or_missing_verity_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_image(dir.path(), r#"{"data_blocks":8}"#);
        let e = guest_boot(&config(dir.path(), true)).unwrap_err();
        assert!(e.to_string().contains("rootfs.img.verity"), "{e}");
        write_image(dir.path(), &verity_json(64));
        let e = guest_boot(&config(dir.path(), true)).unwrap_err();
        assert!(e.to_string().contains("hash tree at byte"), "{e}");
        std::fs::remove_file(dir.path().join("rootfs.img.verity")).unwrap();
        let e = guest_boot(&config(dir.path(), true)).unwrap_err();
        assert!(e.to_string().contains("rootfs.img.verity"), "{e}");
    }

    #[test]
    fn the_default_is_the_initrd() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), true);
        cfg.guest.root = GuestRoot::Initrd;
        let boot = guest_boot(&cfg).unwrap();
        assert_eq!((boot.disk, boot.kernel_params.as_str()), (None, ""));
        assert_eq!(boot.initrd, cfg.hypervisor.initrd);
    }
}
