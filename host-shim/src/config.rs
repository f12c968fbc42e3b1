//! Hull's configuration file, `/etc/hull/configuration.toml` by default
//! (`HULL_CONFIG` overrides). Every key is documented in
//! `config/configuration.toml`; errors name the file and the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_PATH: &str = "/etc/hull/configuration.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{what} {value} not found (config key {key} in {path})")]
    Missing {
        what: &'static str,
        value: String,
        key: &'static str,
        path: String,
    },
    #[error("config key {key} in {path}: {message}")]
    Invalid {
        key: &'static str,
        path: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SharedFs {
    #[serde(rename = "virtio-fs")]
    VirtioFs,
    #[serde(rename = "9p")]
    NineP,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorConfig {
    pub path: PathBuf,
    pub accelerator: Accelerator,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    #[serde(default)]
    pub kernel_params: String,
    /// The firmware QEMU starts before the kernel (`-bios`); none: QEMU's
    /// own (SeaBIOS).
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// A virtio-balloon device with free page reporting: the pages the
    /// guest frees go back to the host instead of staying with QEMU.
    #[serde(default = "default_true")]
    pub free_page_reporting: bool,
    /// Under TCG, the size of QEMU's translated-code buffer in MiB (0:
    /// QEMU's own, up to 1 GiB). Resident up to this size in every VM.
    #[serde(default = "default_tcg_code_cache")]
    pub tcg_code_cache_mib: u32,
}

/// Measured on a TCG boot (docs/guest-image.md): 32 MiB holds what a
/// booted guest runs; 16 MiB flushes so often that boot takes a second more.
fn default_tcg_code_cache() -> u32 {
    32
}

/// What the key accepts besides 0. 16 MiB already flushes often enough to
/// slow a boot by about a second, so a smaller value is taken for a
/// mistake; above 1024 MiB is more than QEMU's own default (1 GiB).
const TCG_CODE_CACHE_MIB: std::ops::RangeInclusive<u32> = 8..=1024;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFsConfig {
    pub kind: SharedFs,
    pub virtiofsd: PathBuf,
    /// Whether the guest may set the setuid and setgid bits on shared files
    /// (see helper_limits). Off: such calls fail with EPERM in the guest.
    #[serde(default)]
    pub allow_setuid_files: bool,
}

/// How the host reaches the guest's vsock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VsockTransportKind {
    /// vhost-user-vsock served by vhost-device-vsock: a Unix socket with the
    /// hybrid vsock handshake. Needs no kernel module on the host.
    #[default]
    Hybrid,
    /// The host kernel's vhost-vsock (`/dev/vhost-vsock`) and AF_VSOCK.
    Kernel,
}

/// The host's vhost-vsock device, needed by the kernel transport.
pub const VHOST_VSOCK_DEVICE: &str = "/dev/vhost-vsock";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    #[serde(default)]
    pub transport: VsockTransportKind,
    pub vhost_device_vsock: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// From QEMU start to the agent answering its health check.
    pub boot_secs: u64,
    /// Any agent RPC that is not a long poll.
    pub rpc_secs: u64,
    /// How often the shim checks that the agent answers (each check may
    /// take this long).
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
    /// Consecutive failed checks after which the VM is declared dead and
    /// stopped, so its tasks end instead of hanging.
    #[serde(default = "default_health_failures")]
    pub health_failures: u32,
    /// A shim daemon that no containerd has called within this time exits
    /// (a `start` whose caller went away must not leave it for good).
    #[serde(default = "default_unclaimed")]
    pub unclaimed_secs: u64,
    /// Once the agent reports a process's exit, how long its output may
    /// still be copied before TaskExit is published regardless.
    #[serde(default = "default_exit_output")]
    pub exit_output_secs: u64,
    /// How long QEMU and each helper get to exit after SIGKILL before the
    /// shim reports them and goes on.
    #[serde(default = "default_kill_wait")]
    pub kill_wait_secs: u64,
}

fn default_unclaimed() -> u64 {
    30
}

fn default_exit_output() -> u64 {
    10
}

fn default_kill_wait() -> u64 {
    5
}

fn default_health_interval() -> u64 {
    5
}

fn default_health_failures() -> u32 {
    3
}

/// Which of containerd's cgroup metrics types Task Stats answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1,
    /// `io.containerd.cgroups.v2.Metrics`: the guest's own cgroup v2 view.
    #[default]
    V2,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HullConfig {
    pub hypervisor: HypervisorConfig,
    pub shared_fs: SharedFsConfig,
    pub vsock: VsockConfig,
    pub timeouts: Timeouts,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where per-sandbox state (sockets, console log, shared dir) lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Configuration keys that a task's `io.hull.config.<key>` annotations
    /// may override (see `annotations`); empty: none.
    #[serde(default)]
    pub annotation_allowlist: Vec<String>,
    #[serde(default)]
    pub metrics: MetricsFormat,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub guest: GuestConfig,
    #[serde(skip)]
    pub source: PathBuf,
}

/// What the guest boots from: the whole guest in `hypervisor.initrd`, or
/// the minimal rootfs image mounted by a small initrd (see guest_root).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestRoot {
    #[default]
    Initrd,
    Image,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    #[serde(default)]
    pub root: GuestRoot,
    /// The rootfs image (erofs and its dm-verity tree), built by hull-image;
    /// its verity parameters are in `<image>.verity`.
    #[serde(default = "default_image")]
    pub image: PathBuf,
    /// The small initrd that checks and mounts the image.
    #[serde(default = "default_boot_initrd")]
    pub boot_initrd: PathBuf,
    /// How the image reaches the guest.
    #[serde(default = "default_image_device")]
    pub device: protocols::root_image::RootDevice,
    /// dm-verity check of every block the guest reads against the root hash.
    /// Off only for DAX on pmem (dm-verity cannot pass DAX through).
    #[serde(default = "default_true")]
    pub verity: bool,
}

impl Default for GuestConfig {
    fn default() -> Self {
        GuestConfig {
            root: GuestRoot::default(),
            image: default_image(),
            boot_initrd: default_boot_initrd(),
            device: default_image_device(),
            verity: true,
        }
    }
}

fn default_image() -> PathBuf {
    PathBuf::from("/usr/local/share/hull/rootfs.img")
}

fn default_boot_initrd() -> PathBuf {
    PathBuf::from("/usr/local/share/hull/boot-initrd.img")
}

fn default_image_device() -> protocols::root_image::RootDevice {
    protocols::root_image::RootDevice::Pmem
}

fn default_true() -> bool {
    true
}

/// hull-cache: VMs booted ahead, each taken by one sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many booted VMs hull-cache keeps waiting; 0: none.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// hull-cache's socket (root only); a shim that finds none boots.
    #[serde(default = "default_cache_socket")]
    pub socket: PathBuf,
    /// Where the waiting VMs' directories are: on state_dir's filesystem,
    /// since a taken VM's directory is moved into state_dir.
    #[serde(default = "default_pool_dir")]
    pub pool_dir: PathBuf,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            pool_size: default_pool_size(),
            socket: default_cache_socket(),
            pool_dir: default_pool_dir(),
        }
    }
}

fn default_pool_size() -> u32 {
    1
}

fn default_cache_socket() -> PathBuf {
    PathBuf::from("/run/hull-cache/cache.sock")
}

fn default_pool_dir() -> PathBuf {
    PathBuf::from("/run/hull-cache/pool")
}

fn default_log_level() -> String {
    "info".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/hull")
}

impl HullConfig {
    /// The path to load: `HULL_CONFIG`, else the default.
    pub fn path() -> PathBuf {
        std::env::var_os("HULL_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let mut cfg: HullConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
        cfg.source = path.to_path_buf();
        if cfg.hypervisor.vcpus == 0 {
            return Err(ConfigError::Invalid {
                key: "hypervisor.vcpus",
                path: p,
                message: "must be at least 1".into(),
            });
        }
        if cfg.hypervisor.memory_mib < 64 {
            return Err(ConfigError::Invalid {
                key: "hypervisor.memory_mib",
                path: p,
                message: "must be at least 64".into(),
            });
        }
        let tb = cfg.hypervisor.tcg_code_cache_mib;
        if tb != 0 && !TCG_CODE_CACHE_MIB.contains(&tb) {
            return Err(ConfigError::Invalid {
                key: "hypervisor.tcg_code_cache_mib",
                path: p,
                message: format!(
                    "{tb} is out of range: 0 (QEMU's default) or {} to {}",
                    TCG_CODE_CACHE_MIB.start(),
                    TCG_CODE_CACHE_MIB.end()
                ),
            });
        }
        Ok(cfg)
    }

    fn must_exist(
        &self,
        what: &'static str,
        key: &'static str,
        value: &Path,
    ) -> Result<(), ConfigError> {
        if value.exists() {
            return Ok(());
        }
        Err(ConfigError::Missing {
            what,
            value: value.display().to_string(),
            key,
            path: self.source.display().to_string(),
        })
    }

    /// The files the configuration names that must exist: (what, key, path).
    pub fn required_files(&self) -> Vec<(&'static str, &'static str, &Path)> {
        let mut files = vec![
            (
                "hypervisor",
                "hypervisor.path",
                self.hypervisor.path.as_path(),
            ),
            ("guest kernel", "hypervisor.kernel", &self.hypervisor.kernel),
            (
                "guest image (initrd)",
                "hypervisor.initrd",
                &self.hypervisor.initrd,
            ),
        ];
        if let Some(firmware) = &self.hypervisor.firmware {
            files.push(("guest firmware", "hypervisor.firmware", firmware));
        }
        if self.guest.root == GuestRoot::Image {
            files.push(("rootfs image", "guest.image", &self.guest.image));
            files.push((
                "boot initrd of the image",
                "guest.boot_initrd",
                &self.guest.boot_initrd,
            ));
        }
        match self.vsock.transport {
            VsockTransportKind::Hybrid => files.push((
                "vsock helper",
                "vsock.vhost_device_vsock",
                &self.vsock.vhost_device_vsock,
            )),
            VsockTransportKind::Kernel => files.push((
                "host vhost-vsock device (modprobe vhost_vsock)",
                "vsock.transport",
                Path::new(VHOST_VSOCK_DEVICE),
            )),
        }
        if self.shared_fs.kind == SharedFs::VirtioFs {
            files.push((
                "virtio-fs daemon",
                "shared_fs.virtiofsd",
                &self.shared_fs.virtiofsd,
            ));
        }
        files
    }

    /// The first required file that is missing, named with its key.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        for (what, key, path) in self.required_files() {
            self.must_exist(what, key, path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = include_str!("../../config/configuration.toml");

    #[test]
    fn shipped_sample_parses() {
        let c = HullConfig::parse(SAMPLE, Path::new("sample.toml")).unwrap();
        assert_eq!(c.hypervisor.accelerator, Accelerator::Auto);
        assert_eq!(c.shared_fs.kind, SharedFs::VirtioFs);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let text = SAMPLE.replace("[hypervisor]", "[hypervisor]\nbogus_key = 1");
        let err = HullConfig::parse(&text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key") && err.contains("x.toml"), "{err}");
    }

    #[test]
    fn tcg_code_cache_out_of_range_is_named_and_zero_is_qemus_own() {
        let with = |v: &str| {
            SAMPLE.replace(
                "tcg_code_cache_mib = 32",
                &format!("tcg_code_cache_mib = {v}"),
            )
        };
        let c = HullConfig::parse(SAMPLE, Path::new("x.toml")).unwrap();
        assert_eq!(c.hypervisor.tcg_code_cache_mib, 32);
        assert!(c.hypervisor.free_page_reporting);
        let err = HullConfig::parse(&with("4"), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hypervisor.tcg_code_cache_mib") && err.contains("4 is out of range"),
            "{err}"
        );
        let c = HullConfig::parse(&with("0"), Path::new("x.toml")).unwrap();
        assert_eq!(c.hypervisor.tcg_code_cache_mib, 0);
    }

    #[test]
    fn missing_kernel_names_the_key() {
        let mut c = HullConfig::parse(SAMPLE, Path::new("/etc/hull/configuration.toml")).unwrap();
        c.hypervisor.path = PathBuf::from("/bin/sh");
        c.hypervisor.kernel = PathBuf::from("/nonexistent/vmlinux");
        let err = c.check_files().unwrap_err().to_string();
        assert!(
            err.contains("hypervisor.kernel") && err.contains("/nonexistent/vmlinux"),
            "{err}"
        );
    }

    #[test]
    fn a_named_firmware_is_required_and_none_means_qemus_own() {
        let mut c = HullConfig::parse(SAMPLE, Path::new("/etc/hull/configuration.toml")).unwrap();
        let keys = |c: &HullConfig| c.required_files().iter().map(|f| f.1).collect::<Vec<_>>();
        assert!(keys(&c).contains(&"hypervisor.firmware"));
        c.hypervisor.firmware = None;
        assert!(!keys(&c).contains(&"hypervisor.firmware"));
    }

    #[test]
    fn each_vsock_transport_requires_what_it_uses() {
        let mut c = HullConfig::parse(SAMPLE, Path::new("/etc/hull/configuration.toml")).unwrap();
        assert_eq!(c.vsock.transport, VsockTransportKind::Hybrid);
        let keys = |c: &HullConfig| c.required_files().iter().map(|f| f.1).collect::<Vec<_>>();
        assert!(keys(&c).contains(&"vsock.vhost_device_vsock"));
        c.vsock.transport = VsockTransportKind::Kernel;
        let files = c.required_files();
        assert!(files.iter().any(|f| f.2 == Path::new(VHOST_VSOCK_DEVICE)));
        assert!(!keys(&c).contains(&"vsock.vhost_device_vsock"));
    }
}
