//! hull-cache: VMs booted ahead of the sandboxes that take them.
//!
//! The service ([`pool`]) keeps `cache.pool_size` VMs booted to the point
//! where their agent answers. Each is started and owned by a keeper
//! process ([`keeper`]), the parent of its QEMU and helpers, which die
//! with it. A keeper ends its VM when the one socket to it closes: held by
//! the service while the VM waits, handed with the VM to the shim that
//! takes it. So a VM dies with whoever owns it (the service while it
//! waits, its shim after), and never outlives both.
//!
//! A shim takes a VM over the service's root-only socket ([`client`]):
//! the VM's directory moves into the shim's state directory, and the shim
//! watches and signals its processes through pidfds. What differs per pod
//! (the share's mounts, NICs, hostname, DNS, clock, entropy) arrives
//! after it is taken. A VM serves one sandbox and is never reused.

pub mod client;
pub mod keeper;
pub mod pool;
pub mod wire;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::HullConfig;

/// Free PCIe slots a pool VM keeps for the pod's NICs (hot-plugged); a
/// pod with more NICs boots its own VM.
pub const HOTPLUG_SLOTS: u32 = 2;

/// A shim's request.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// A VM of `shape` with room for `nics` NICs.
    Take { shape: String, nics: u32 },
    /// How the pool is.
    Status,
}

/// The service's answer. With `Vm`, the descriptors are the keeper's
/// socket, then one pidfd per process, in `processes` order.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Vm(VmInfo),
    NoVm { reason: String },
    Status(PoolStatus),
}

/// A booted VM, as its keeper reports it and the service hands it over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmInfo {
    /// Its directory's name in `cache.pool_dir`.
    pub name: String,
    pub accel: String,
    pub accel_reason: String,
    pub vsock_cid: Option<u32>,
    /// (name, pid) of QEMU and each helper.
    pub processes: Vec<(String, i32)>,
}

/// What a keeper tells the service.
#[derive(Debug, Serialize, Deserialize)]
pub enum KeeperReport {
    /// The agent answers; the descriptors are the processes' pidfds.
    Ready(VmInfo),
    /// The VM did not boot, or died.
    Died { reason: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool_size: u32,
    pub waiting: u32,
    pub booting: u32,
    /// The VM shape it boots, for people ("1 vCPU, 512 MiB, virtio-fs").
    pub shape: String,
    pub taken: u64,
    /// Waiting VMs that died and were replaced.
    pub replaced: u64,
}

/// What a VM is booted with: everything of the configuration the VM's
/// command line, devices or helpers depend on, and the files it boots and
/// runs as they are now (size and modification time: a guest image or QEMU
/// installed anew changes the shape). A sandbox takes a pool VM only when
/// its shape (after its annotations) is the one the VM was booted with.
pub fn shape(cfg: &HullConfig) -> String {
    let h = &cfg.hypervisor;
    let verity = crate::guest_root::verity_path(&cfg.guest.image);
    let mut files = vec![&h.path, &h.kernel, &h.initrd];
    files.extend(h.firmware.as_ref());
    if cfg.guest.root == crate::config::GuestRoot::Image {
        files.extend([&cfg.guest.image, &cfg.guest.boot_initrd, &verity]);
    }
    files.push(&cfg.shared_fs.virtiofsd);
    files.push(&cfg.vsock.vhost_device_vsock);
    let versions: Vec<(u64, i64, i64)> = files.iter().map(|f| file_version(f)).collect();
    let fields = (
        &cfg.hypervisor,
        &cfg.shared_fs,
        &cfg.vsock,
        &cfg.guest,
        &cfg.log_level,
        HOTPLUG_SLOTS,
        versions,
    );
    let json = serde_json::to_vec(&fields).unwrap_or_default();
    sha2::Sha256::digest(&json)
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file's size and modification time (zeros for a missing file).
fn file_version(path: &std::path::Path) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default()
}

/// The shape for people.
pub fn describe_shape(cfg: &HullConfig) -> String {
    let h = &cfg.hypervisor;
    let fs = match cfg.shared_fs.kind {
        crate::config::SharedFs::VirtioFs => "virtio-fs",
        crate::config::SharedFs::NineP => "9p",
    };
    let params = if h.kernel_params.is_empty() {
        String::new()
    } else {
        format!(", kernel_params {:?}", h.kernel_params)
    };
    let root = match cfg.guest.root {
        crate::config::GuestRoot::Initrd => String::new(),
        crate::config::GuestRoot::Image => format!(
            ", rootfs image on {}{}",
            cfg.guest.device.name(),
            if cfg.guest.verity { " with verity" } else { "" }
        ),
    };
    format!("{} vCPU, {} MiB, {fs}{root}{params}", h.vcpus, h.memory_mib)
}

/// hull-cache's command line; its exit code.
pub fn main(args: Vec<String>) -> i32 {
    let cfg_path = HullConfig::path();
    let cfg = match HullConfig::load(&cfg_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hull-cache: {e}");
            return 2;
        }
    };
    let log = crate::logging::to(Box::new(std::io::stderr()), &cfg.log_level);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["serve"] => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build();
            let served = rt.map_err(|e| e.to_string()).and_then(|rt| {
                rt.block_on(pool::serve(cfg, log))
                    .map_err(|e| e.to_string())
            });
            match served {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hull-cache: {e}");
                    1
                }
            }
        }
        ["status"] => match client::status(&cfg.cache.socket) {
            Ok(s) => {
                println!(
                    "hull-cache runs: {}/{} VMs waiting, {} booting ({}); {} taken, {} replaced",
                    s.waiting, s.pool_size, s.booting, s.shape, s.taken, s.replaced
                );
                0
            }
            Err(e) => {
                println!("hull-cache does not run: {e}");
                1
            }
        },
        ["keeper", dir] => {
            let Some(name) = keeper::name_in_pool(&cfg, std::path::Path::new(dir)) else {
                eprintln!("hull-cache keeper: {dir} is not a directory name in cache.pool_dir");
                return 2;
            };
            // One thread: QEMU and the helpers get PDEATHSIG from the
            // thread that starts them, which must live as long as they do.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => rt.block_on(keeper::run(cfg, name.to_string(), log)),
                Err(e) => {
                    eprintln!("hull-cache keeper: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("usage: hull-cache [serve | status | keeper NAME]");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HullConfig {
        HullConfig::parse(
            include_str!("../../../config/configuration.toml"),
            std::path::Path::new("c.toml"),
        )
        .unwrap()
    }

    #[test]
    fn the_shape_follows_what_the_vm_boots_with_and_nothing_else() {
        let base = cfg();
        let mut bigger = cfg();
        bigger.hypervisor.memory_mib += 256;
        let mut params = cfg();
        params.hypervisor.kernel_params = "hull.debug_console=on".into();
        let mut timeouts = cfg();
        timeouts.timeouts.rpc_secs += 1;
        assert_eq!(shape(&base), shape(&cfg()), "stable");
        assert_ne!(shape(&base), shape(&bigger));
        assert_ne!(shape(&base), shape(&params));
        assert_eq!(shape(&base), shape(&timeouts), "not a VM property");
        assert_eq!(describe_shape(&base), "1 vCPU, 512 MiB, virtio-fs");
    }

    #[test]
    fn a_guest_image_installed_anew_changes_the_shape() {
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, "old").unwrap();
        let mut c = cfg();
        c.hypervisor.initrd = initrd.clone();
        let before = shape(&c);
        std::fs::write(&initrd, "new image").unwrap();
        assert_ne!(shape(&c), before);
    }
}
