//! Storage the host hands to the guest (Kata's `Storage` message): shared
//! filesystems, block devices and volumes mounted in the guest before
//! containers use them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use protocols::agent::Storage;
use rustjail::syscall::LinuxSyscall;

/// The drivers `mount` knows, as GetGuestDetails reports them.
pub const DRIVERS: [&str; 8] = [
    "virtio-fs",
    "9p",
    "ephemeral",
    "local",
    "bind",
    "overlayfs",
    "blk",
    "mmioblk",
];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage driver {0:?} is not supported (supported: {list})", list = DRIVERS.join(", "))]
    UnknownDriver(String),
    #[error("storage mount_point {0:?} must be an absolute path without '..'")]
    BadMountPoint(String),
    #[error("storage {driver}: {field} {value:?}: {reason}")]
    BadField {
        driver: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("storage {driver}: no block device for {source_name:?} after {waited_ms} ms")]
    NoDevice {
        driver: String,
        source_name: String,
        waited_ms: u64,
    },
    #[error("mount {driver} {source_name} on {mount_point}: {error}")]
    Mount {
        driver: String,
        source_name: String,
        mount_point: String,
        error: nix::Error,
    },
    #[error("mkdir {path}: {error}")]
    Mkdir { path: String, error: std::io::Error },
}

impl StorageError {
    pub fn code(&self) -> ttrpc::Code {
        match self {
            StorageError::NoDevice { .. } => ttrpc::Code::DEADLINE_EXCEEDED,
            StorageError::Mkdir { .. } => ttrpc::Code::INTERNAL,
            // What to mount and how came from the host.
            _ => ttrpc::Code::INVALID_ARGUMENT,
        }
    }
}

fn check_mount_point(p: &str) -> Result<PathBuf, StorageError> {
    let path = Path::new(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(StorageError::BadMountPoint(p.to_string()));
    }
    Ok(path.to_path_buf())
}

fn mkdir(path: &Path) -> Result<(), StorageError> {
    std::fs::create_dir_all(path).map_err(|error| StorageError::Mkdir {
        path: path.display().to_string(),
        error,
    })
}

/// How long a block device may take to appear after it was hot-plugged.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// A mount to make: source, filesystem type, extra data and flags.
struct Plan {
    source: String,
    fstype: String,
    data: Vec<String>,
    flags: MsFlags,
}

fn bad(s: &Storage, field: &'static str, value: &str, reason: &'static str) -> StorageError {
    StorageError::BadField {
        driver: s.driver.clone(),
        field,
        value: value.to_string(),
        reason,
    }
}

/// What mounting `s` means for its driver. Block drivers wait for their
/// device in `sysfs`; overlay creates its upper and work directories.
fn plan(s: &Storage, sysfs: &Path) -> Result<Plan, StorageError> {
    let opts = rustjail::mounts::parse_options(&s.options);
    let (source, fstype, mut data): (String, &str, Vec<String>) = match s.driver.as_str() {
        "virtio-fs" => (s.source.clone(), "virtiofs", Vec::new()),
        "9p" => (
            s.source.clone(),
            "9p",
            vec![
                "trans=virtio".into(),
                "version=9p2000.L".into(),
                "msize=512000".into(),
            ],
        ),
        "ephemeral" => ("tmpfs".into(), "tmpfs", Vec::new()),
        "local" => ("local".into(), "tmpfs", vec!["mode=1777".into()]),
        "bind" => {
            if !Path::new(&s.source).is_absolute() {
                return Err(bad(
                    s,
                    "source",
                    &s.source,
                    "must be an absolute guest path",
                ));
            }
            let flags = opts.flags | MsFlags::MS_BIND | MsFlags::MS_REC;
            return Ok(Plan {
                source: s.source.clone(),
                fstype: String::new(),
                data: Vec::new(),
                flags,
            });
        }
        "overlayfs" => {
            for dir in opts.data.iter().filter_map(|d| {
                d.strip_prefix("upperdir=")
                    .or_else(|| d.strip_prefix("workdir="))
            }) {
                mkdir(Path::new(dir))?;
            }
            if !opts.data.iter().any(|d| d.starts_with("lowerdir=")) {
                return Err(bad(
                    s,
                    "options",
                    &s.options.join(","),
                    "overlay needs lowerdir=",
                ));
            }
            ("overlay".into(), "overlay", Vec::new())
        }
        "blk" | "mmioblk" => {
            if s.fstype.is_empty() {
                return Err(bad(
                    s,
                    "fstype",
                    "",
                    "a block device needs its filesystem type",
                ));
            }
            let dev = wait_for_block_device(s, sysfs)?;
            (dev.display().to_string(), s.fstype.as_str(), Vec::new())
        }
        other => return Err(StorageError::UnknownDriver(other.to_string())),
    };
    data.extend(opts.data);
    Ok(Plan {
        source,
        fstype: fstype.to_string(),
        data,
        flags: opts.flags,
    })
}

/// Mounts one storage; returns its mount point. Blocks while a device
/// appears: call it off the async workers.
pub fn mount(s: &Storage, sysfs: &Path) -> Result<PathBuf, StorageError> {
    let target = check_mount_point(&s.mount_point)?;
    let plan = plan(s, sysfs)?;
    mkdir(&target)?;
    let mount_err = |error| StorageError::Mount {
        driver: s.driver.clone(),
        source_name: s.source.clone(),
        mount_point: s.mount_point.clone(),
        error,
    };
    if plan.flags.contains(MsFlags::MS_BIND) {
        // rustjail's bind: the flags take effect through a remount.
        let source = Path::new(&plan.source);
        rustjail::mounts::bind(&LinuxSyscall, Some(source), &target, plan.flags).map_err(|e| {
            mount_err(nix::Error::from_raw(
                e.source.raw_os_error().unwrap_or(libc::EIO),
            ))
        })?;
        return Ok(target);
    }
    let data = (!plan.data.is_empty()).then(|| plan.data.join(","));
    let fstype = (!plan.fstype.is_empty()).then_some(plan.fstype.as_str());
    nix::mount::mount(
        Some(plan.source.as_str()),
        &target,
        fstype,
        plan.flags,
        data.as_deref(),
    )
    .map_err(mount_err)?;
    Ok(target)
}

/// The block device a storage names: a `/dev` path (`mmioblk`, or `blk` on
/// a host) or a Kata PCI path (`02/03`: slot on the root bus, then slot on
/// each bridge below) of a virtio-blk device.
fn wait_for_block_device(s: &Storage, sysfs: &Path) -> Result<PathBuf, StorageError> {
    let started = Instant::now();
    loop {
        let found = if s.source.starts_with("/dev/") {
            Path::new(&s.source)
                .exists()
                .then(|| PathBuf::from(&s.source))
        } else {
            let slots = parse_pci_path(&s.source)
                .ok_or_else(|| bad(s, "source", &s.source, "not a PCI path such as 02/03"))?;
            block_device_at(sysfs, &slots).map(|name| PathBuf::from("/dev").join(name))
        };
        if let Some(dev) = found {
            return Ok(dev);
        }
        if started.elapsed() >= DEVICE_WAIT {
            return Err(StorageError::NoDevice {
                driver: s.driver.clone(),
                source_name: s.source.clone(),
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `02/03` → [2, 3]; each slot is two hex digits below 0x20.
fn parse_pci_path(path: &str) -> Option<Vec<u8>> {
    path.split('/')
        .map(|slot| {
            let n = u8::from_str_radix(slot, 16).ok()?;
            (slot.len() == 2 && n < 0x20).then_some(n)
        })
        .collect()
}

/// Walks the PCI tree from the root bus through each slot (function 0) and
/// returns the block device name of the virtio device found there.
fn block_device_at(sysfs: &Path, slots: &[u8]) -> Option<String> {
    let mut dir = sysfs.join("devices/pci0000:00");
    let mut bus = "0000:00".to_string();
    for slot in slots {
        let wanted = format!("{bus}:{slot:02x}.0");
        dir = dir.join(&wanted);
        if !dir.is_dir() {
            return None;
        }
        // A bridge's secondary bus is the one its children sit on.
        bus = secondary_bus(&dir).unwrap_or(bus);
    }
    std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .find_map(|virtio| {
            std::fs::read_dir(virtio.path().join("block"))
                .ok()?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .next()
        })
}

/// The bus behind a PCI bridge, from its `pci_bus/` directory
/// (`pci_bus/0000:01`).
fn secondary_bus(bridge: &Path) -> Option<String> {
    std::fs::read_dir(bridge.join("pci_bus"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
}

/// Lazily unmounts; a mount that is already gone is fine.
pub fn unmount(path: &Path) {
    let _ = nix::mount::umount2(path, MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(driver: &str, source: &str, mount_point: &str) -> Storage {
        Storage {
            driver: driver.into(),
            source: source.into(),
            mount_point: mount_point.into(),
            ..Default::default()
        }
    }

    #[test]
    fn unknown_driver_and_bad_fields_are_refused() {
        let sys = Path::new("/nonexistent");
        let e = mount(&storage("nbd", "", "/run/x"), sys).expect_err("nbd");
        assert!(matches!(e, StorageError::UnknownDriver(_)));
        assert!(e.to_string().contains("overlayfs"), "{e}");
        let e = mount(&storage("ephemeral", "", "/run/../etc"), sys).expect_err("..");
        assert!(matches!(e, StorageError::BadMountPoint(_)));
        let e = mount(&storage("bind", "relative", "/run/x"), sys).expect_err("relative");
        assert!(e.to_string().contains("source"), "{e}");
        let e = mount(&storage("blk", "02", "/run/x"), sys).expect_err("no fstype");
        assert!(e.to_string().contains("fstype"), "{e}");
        let mut s = storage("blk", "zz/1", "/run/x");
        s.fstype = "ext4".into();
        let e = mount(&s, sys).expect_err("bad pci path");
        assert!(e.to_string().contains("PCI path"), "{e}");
        let e = mount(&storage("overlayfs", "overlay", "/run/x"), sys).expect_err("no lower");
        assert!(e.to_string().contains("lowerdir"), "{e}");
    }

    #[test]
    fn pci_paths_parse() {
        assert_eq!(parse_pci_path("02"), Some(vec![2]));
        assert_eq!(parse_pci_path("02/1f"), Some(vec![2, 0x1f]));
        assert_eq!(parse_pci_path("2"), None);
        assert_eq!(parse_pci_path("20"), None);
        assert_eq!(parse_pci_path(""), None);
    }

    #[test]
    fn block_device_found_through_a_bridge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("devices/pci0000:00");
        let direct = root.join("0000:00:05.0/virtio3/block/vdb");
        let bridge = root.join("0000:00:02.0");
        let behind = bridge.join("0000:01:03.0/virtio4/block/vdc");
        for d in [&direct, &bridge.join("pci_bus/0000:01"), &behind] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        assert_eq!(block_device_at(dir.path(), &[5]).as_deref(), Some("vdb"));
        assert_eq!(block_device_at(dir.path(), &[2, 3]).as_deref(), Some("vdc"));
        assert_eq!(block_device_at(dir.path(), &[6]), None);
    }
}
