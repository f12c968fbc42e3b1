//! The sandbox VM: QEMU and the helper processes it needs (vhost-device-vsock,
//! virtiofsd), started, supervised and ended by the shim. No helper outlives
//! its VM: each is killed on stop, and by the kernel if the shim dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use sha2::Digest;
use tokio::process::Command;
use tokio::sync::watch;

use std::sync::Arc;

use crate::accel::{self, Choice};
use crate::config::{ConfigError, HullConfig, SharedFs, VsockTransportKind};
use crate::helper_limits::{HelperLimits, HelperLimitsError};
use crate::hypervisor::{Hypervisor, Nic, Qemu, SharedDevice, VmSpec, VsockDevice};
use crate::network::PodNetwork;
use crate::vsock::{HybridVsock, KernelVsock, VsockTransport};

mod handover;
pub use handover::{HandedProcess, HandedVm};

/// Where the guest mounts the shared directory.
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Accel(#[from] accel::AccelError),
    #[error(transparent)]
    HelperLimits(#[from] HelperLimitsError),
    #[error(transparent)]
    GuestRoot(#[from] crate::guest_root::GuestRootError),
    #[error("start {helper} ({path}): {source}")]
    Spawn {
        helper: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{helper} exited during start-up ({status}); its log: {log}")]
    DiedEarly {
        helper: &'static str,
        status: String,
        log: String,
    },
    #[error("{helper} did not create {path} within {secs}s")]
    NoSocket {
        helper: &'static str,
        path: String,
        secs: u64,
    },
    #[error("the pod has {0} network interfaces; at most 16 are supported")]
    TooManyInterfaces(usize),
    #[error("VM handed over by hull-cache: {0}")]
    Handover(String),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Files of one sandbox under the state directory.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub vhost_vsock: PathBuf,
    /// Hybrid vsock socket: connect here to reach guest ports.
    pub vsock: PathBuf,
    /// Where the agent's readiness announcement arrives.
    pub ready: PathBuf,
    pub virtiofs: PathBuf,
    pub console: PathBuf,
    /// Shared with the guest at GUEST_SHARED_DIR.
    pub shared: PathBuf,
    /// QEMU's monitor (QMP), for a VM that gets its NICs hot-plugged.
    pub qmp: PathBuf,
}

impl VmPaths {
    pub fn new(state_dir: &Path, sandbox_id: &str) -> Self {
        Self::in_dir(state_dir.join(vm_dir_name(state_dir, sandbox_id)))
    }

    /// The files of a VM whose directory is `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        VmPaths {
            qmp: dir.join("qmp.sock"),
            vhost_vsock: dir.join("vhost-vsock.sock"),
            vsock: dir.join("vsock.sock"),
            // vhost-device-vsock forwards a guest's connection to port P
            // to the Unix socket "<uds-path>_P".
            ready: dir.join(format!("vsock.sock_{}", protocols::READY_PORT)),
            virtiofs: dir.join("virtiofs.sock"),
            console: crate::console::socket_path(&dir),
            shared: dir.join("shared"),
            dir,
        }
    }

    pub fn helper_log(&self, helper: &str) -> PathBuf {
        self.dir.join(helper_log_name(helper))
    }
}

/// A helper's log file, in the VM directory.
fn helper_log_name(helper: &str) -> String {
    format!("{helper}.log")
}

/// The longest socket file name in a VM directory.
const LONGEST_SOCKET_NAME: usize = "vhost-vsock.sock".len();
/// `sun_path` holds 108 bytes with the terminating NUL.
const SOCKET_PATH_MAX: usize = 107;

/// The VM directory is named by the sandbox id, so an operator finds it,
/// unless its sockets' paths would then not fit a Unix socket address (CRI
/// ids are 64 characters): then by a digest of the id, the same every time.
fn vm_dir_name(state_dir: &Path, sandbox_id: &str) -> String {
    let longest = state_dir.as_os_str().len() + sandbox_id.len() + LONGEST_SOCKET_NAME + 2;
    if longest <= SOCKET_PATH_MAX {
        return sandbox_id.to_string();
    }
    let digest = sha2::Sha256::digest(sandbox_id.as_bytes());
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// A running helper or QEMU: its pid, and a receiver that turns into
/// `Some(status)` when it exits.
struct Supervised {
    name: &'static str,
    pid: i32,
    exited: watch::Receiver<Option<String>>,
    /// For a process the shim did not start (a VM taken from hull-cache):
    /// signals go through it, so a reused pid is never signalled.
    pidfd: Option<Arc<OwnedFd>>,
}

impl Supervised {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = match &self.pidfd {
            Some(fd) => crate::pidfd::send_signal(fd, sig),
            None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig)
                .map_err(std::io::Error::from),
        };
    }
}

pub struct Vm {
    pub paths: VmPaths,
    pub accel: Choice,
    /// How the shim reaches the guest's vsock ports.
    pub vsock: Arc<dyn VsockTransport>,
    children: Vec<Supervised>,
    /// Fires with a description when QEMU or any helper exits on its own.
    pub died: watch::Receiver<Option<String>>,
    died_tx: watch::Sender<Option<String>>,
    /// Forwards the agent's log lines into the shim's log.
    guest_log: Option<tokio::task::JoinHandle<()>>,
    /// Keeps the serial console in `console.log`, capped.
    console: Option<tokio::task::JoinHandle<()>>,
    /// How long a process gets to die after SIGKILL before stop goes on.
    kill_wait: Duration,
    /// What QEMU and the helpers may not do to host files.
    limits: Arc<HelperLimits>,
    log: slog::Logger,
    /// The listener for the agent's readiness announcement, until taken.
    pub ready: Option<tokio::net::UnixListener>,
    /// A VM taken from hull-cache: the line to the process that started it
    /// (its keeper). The keeper ends the VM when this closes, so the VM
    /// dies with its shim as a VM the shim started does.
    _keeper: Option<OwnedFd>,
}

/// How to start a VM: its name (a sandbox id, or a pool VM's), its files,
/// its NICs, and the free slots it keeps for NICs hot-plugged later.
pub struct BootPlan<'a> {
    pub name: &'a str,
    pub paths: VmPaths,
    pub network: Option<&'a PodNetwork>,
    pub hotplug_slots: u32,
}

/// The guest kernel's command line before Hull's own words and the
/// configuration's. `cryptomgr.notests` skips the crypto self-tests, about
/// 400 ms of a TCG boot (see `make boot-timeline`); the guest's crypto is
/// the distribution kernel's, tested where it was built.
/// `swiotlb=noforce`: the guest's devices are virtio without an IOMMU, so
/// nothing needs bounce buffers; without it, a guest whose address space
/// reaches past 4 GiB (virtio-pmem's hot-plug area) zeroes a 64 MiB
/// swiotlb pool, 64 MiB more host memory per VM.
const BASE_KERNEL_PARAMS: &str = "console=ttyS0 panic=-1 quiet cryptomgr.notests swiotlb=noforce";

/// Under TCG (no TSC-deadline timer) the guest calibrates its local APIC
/// timer against the PIT, about 100 ms of every boot; a one-vCPU guest
/// takes its tick from the HPET instead (2,063 -> 1,970 ms from kernel
/// start to agent ready, idle CPU unchanged). With more vCPUs the tick
/// would be broadcast by IPI: 67 ms of QEMU CPU per idle second against 4,
/// so they keep the APIC timer, as KVM guests (TSC deadline) always do.
fn timer_params(accel: accel::Accel, vcpus: u32) -> &'static str {
    match (accel, vcpus) {
        (accel::Accel::Tcg, 1) => " nolapic_timer",
        _ => "",
    }
}

/// virtiofsd's `--modcaps` value taking away `caps`: "-mknod:-setfcap".
fn modcaps(caps: &[capctl::Cap]) -> String {
    caps.iter()
        .map(|c| {
            format!(
                "-{}",
                c.to_string().to_lowercase().trim_start_matches("cap_")
            )
        })
        .collect::<Vec<_>>()
        .join(":")
}

/// Starts a helper or the hypervisor under `limits`. `fds[i]` is open in
/// the child as descriptor `FIRST_PASSED_FD + i`.
fn spawn(
    name: &'static str,
    path: &Path,
    args: &[String],
    log_file: &Path,
    fds: &[RawFd],
    limits: &Arc<HelperLimits>,
) -> Result<(tokio::process::Child, i32), VmError> {
    let err = |source| VmError::Spawn {
        helper: name,
        path: path.display().to_string(),
        source,
    };
    let log = std::fs::File::create(log_file).map_err(err)?;
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(err)?)
        .stderr(log)
        .kill_on_drop(true);
    let fds = fds.to_vec();
    let limits = Arc::clone(limits);
    // SAFETY: prctl, fcntl and dup2 are async-signal-safe and touch no
    // shared memory (so is `apply_to_self`, which allocates nothing); the
    // descriptors are open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // The helper dies with the shim, so none can outlive it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // First out of the way of the target numbers, then into place
            // (dup2 clears close-on-exec).
            let mut high = [0 as RawFd; MAX_PASSED_FDS];
            for (i, fd) in fds.iter().enumerate().take(MAX_PASSED_FDS) {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, h) in high.iter().take(fds.len()).enumerate() {
                if libc::dup2(*h, FIRST_PASSED_FD + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            limits.apply_to_self()
        });
    }
    let child = cmd.spawn().map_err(err)?;
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    Ok((child, pid))
}

impl Vm {
    /// A VM with no process yet: `boot` starts them, `adopt` takes them over.
    fn unstarted(
        cfg: &HullConfig,
        paths: VmPaths,
        accel: Choice,
        vsock: Arc<dyn VsockTransport>,
        keeper: Option<OwnedFd>,
        log: &slog::Logger,
    ) -> Result<Vm, VmError> {
        let (died_tx, died) = watch::channel(None);
        Ok(Vm {
            paths,
            accel,
            vsock,
            children: Vec::new(),
            died,
            died_tx,
            guest_log: None,
            console: None,
            kill_wait: Duration::from_secs(cfg.timeouts.kill_wait_secs),
            limits: Arc::new(HelperLimits::new(cfg.shared_fs.allow_setuid_files)?),
            log: log.clone(),
            ready: None,
            _keeper: keeper,
        })
    }

    /// Waits (within `timeouts.boot_secs`) for the agent to announce itself
    /// and answer, and connects to it.
    pub async fn connect_agent(
        &mut self,
        cfg: &HullConfig,
    ) -> Result<crate::agent::AgentClient, crate::agent::ConnectError> {
        let ready = self.ready.take();
        crate::agent::AgentClient::connect(
            self.vsock.as_ref(),
            ready,
            &self.paths.dir,
            Duration::from_secs(cfg.timeouts.boot_secs),
            Duration::from_secs(cfg.timeouts.rpc_secs),
            &self.died,
        )
        .await
    }

    fn supervise(&mut self, name: &'static str, mut child: tokio::process::Child, pid: i32) {
        let (tx, rx) = watch::channel(None);
        let died = self.died_tx.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = died.send(Some(format!("{name} exited ({status})")));
            let _ = tx.send(Some(status));
        });
        self.children.push(Supervised {
            name,
            pid,
            exited: rx,
            pidfd: None,
        });
    }

    async fn wait_for_socket(
        &self,
        name: &'static str,
        path: &Path,
        timeout: Duration,
    ) -> Result<(), VmError> {
        let start = Instant::now();
        while !path.exists() {
            if let Some(c) = self.children.iter().find(|c| c.name == name) {
                if let Some(status) = c.exited.borrow().clone() {
                    let log = crate::host_dir::HostDir::open(&self.paths.dir)
                        .ok()
                        .and_then(|d| d.read_tail(Path::new(&helper_log_name(name)), 2000).ok())
                        .unwrap_or_default();
                    return Err(VmError::DiedEarly {
                        helper: name,
                        status,
                        log: String::from_utf8_lossy(&log).trim().to_string(),
                    });
                }
            }
            if start.elapsed() > timeout {
                return Err(VmError::NoSocket {
                    helper: name,
                    path: path.display().to_string(),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Starts the helpers, then QEMU, for the sandbox `sandbox_id`. On
    /// error everything started is killed (the caller drops the Vm or
    /// calls `stop`).
    pub async fn start(
        cfg: &HullConfig,
        sandbox_id: &str,
        log: &slog::Logger,
        network: Option<&PodNetwork>,
    ) -> Result<Vm, VmError> {
        let plan = BootPlan {
            name: sandbox_id,
            paths: VmPaths::new(&cfg.state_dir, sandbox_id),
            network,
            hotplug_slots: 0,
        };
        Self::boot(cfg, plan, log).await
    }

    /// Starts the VM `plan` describes.
    pub async fn boot(
        cfg: &HullConfig,
        plan: BootPlan<'_>,
        log: &slog::Logger,
    ) -> Result<Vm, VmError> {
        let BootPlan {
            name: sandbox_id,
            paths,
            network,
            hotplug_slots,
        } = plan;
        cfg.check_files()?;
        let accel = accel::choose(
            cfg.hypervisor.accelerator,
            Path::new("/sys/module"),
            Path::new("/dev/kvm"),
        )?;
        slog::info!(log, "accelerator chosen"; "accel" => accel.accel.qemu_name(), "reason" => &accel.reason);
        let vsock: Arc<dyn VsockTransport> = match cfg.vsock.transport {
            VsockTransportKind::Hybrid => Arc::new(HybridVsock {
                uds: paths.vsock.clone(),
            }),
            VsockTransportKind::Kernel => Arc::new(KernelVsock {
                cid: guest_cid(sandbox_id),
            }),
        };
        let mut vm = Vm::unstarted(cfg, paths, accel, vsock, None, log)?;
        let vsock_device = match cfg.vsock.transport {
            VsockTransportKind::Hybrid => vm.start_vsock_helper(cfg).await?,
            VsockTransportKind::Kernel => VsockDevice::Kernel {
                cid: guest_cid(sandbox_id),
            },
        };
        let shared_device = match cfg.shared_fs.kind {
            SharedFs::VirtioFs => vm.start_virtiofsd(cfg).await?,
            SharedFs::NineP => SharedDevice::NineP {
                dir: vm.paths.shared.clone(),
            },
        };
        let hypervisor = Qemu {
            path: cfg.hypervisor.path.clone(),
        };
        let boot = crate::guest_root::guest_boot(cfg)?;
        let mut spec = vm_spec(
            cfg,
            &boot,
            &vm.paths,
            vm.accel.accel,
            sandbox_id,
            (vsock_device, shared_device),
        );
        if hotplug_slots > 0 {
            spec.qmp = Some(vm.paths.qmp.clone());
            spec.hotplug_slots = hotplug_slots;
        }
        let endpoints = network.map(|n| n.endpoints.as_slice()).unwrap_or_default();
        if endpoints.len() > MAX_PASSED_FDS {
            return Err(VmError::TooManyInterfaces(endpoints.len()));
        }
        let tap_fds: Vec<RawFd> = endpoints.iter().map(|e| e.tap_fd.as_raw_fd()).collect();
        spec.nics = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Nic {
                fd: FIRST_PASSED_FD + i as RawFd,
                mac: e.interface.hwAddr.clone(),
            })
            .collect();
        let console =
            tokio::net::UnixListener::bind(&spec.console).map_err(|source| VmError::StateDir {
                path: spec.console.display().to_string(),
                source,
            })?;
        vm.console = Some(crate::console::follow(
            console,
            &vm.paths.dir,
            log.new(slog::o!("source" => "console")),
        ));
        let (child, pid) = spawn(
            hypervisor.name(),
            hypervisor.binary(),
            &hypervisor.args(&spec),
            &vm.paths.helper_log(hypervisor.name()),
            &tap_fds,
            &vm.limits,
        )?;
        vm.supervise(hypervisor.name(), child, pid);
        slog::info!(log, "vm started"; "hypervisor" => hypervisor.name(), "pid" => pid,
            "vsock" => vm.vsock.describe(), "state_dir" => %vm.paths.dir.display());
        Ok(vm)
    }

    /// Hybrid vsock: listens for the agent's readiness announcement (before
    /// the guest exists, so it cannot come too early), then starts
    /// vhost-device-vsock and waits for its socket.
    async fn start_vsock_helper(&mut self, cfg: &HullConfig) -> Result<VsockDevice, VmError> {
        let ready = tokio::net::UnixListener::bind(&self.paths.ready).map_err(|source| {
            VmError::StateDir {
                path: self.paths.ready.display().to_string(),
                source,
            }
        })?;
        self.ready = Some(ready);
        let p = &self.paths;
        let args = vec![
            "--guest-cid=3".to_string(),
            format!("--socket={}", p.vhost_vsock.display()),
            format!("--uds-path={}", p.vsock.display()),
        ];
        let socket = p.vhost_vsock.clone();
        self.start_socket_helper(
            "vhost-device-vsock",
            &cfg.vsock.vhost_device_vsock,
            &args,
            &socket,
        )
        .await?;
        Ok(VsockDevice::VhostUser { socket })
    }

    /// virtio-fs: starts virtiofsd on the shared directory.
    async fn start_virtiofsd(&mut self, cfg: &HullConfig) -> Result<SharedDevice, VmError> {
        let p = &self.paths;
        let args = vec![
            format!("--socket-path={}", p.virtiofs.display()),
            format!("--shared-dir={}", p.shared.display()),
            "--cache=auto".to_string(),
            "--announce-submounts".to_string(),
            "--sandbox=chroot".to_string(),
            // File handles make virtiofsd find mounts by the shared
            // directory's path in mountinfo, taken at its start: a VM from
            // hull-cache has its directory moved after that (submounts then
            // fail with EIO). O_PATH descriptors need no path.
            "--inode-file-handles=never".to_string(),
            // It must not ask for what it was started without (see
            // helper_limits); it would fail to start.
            format!("--modcaps={}", modcaps(self.limits.dropped_capabilities())),
        ];
        let socket = p.virtiofs.clone();
        self.start_socket_helper("virtiofsd", &cfg.shared_fs.virtiofsd, &args, &socket)
            .await?;
        Ok(SharedDevice::VirtioFs { socket })
    }

    /// Starts helper `name` (supervised, under the helper limits) and waits
    /// for it to create `socket`.
    async fn start_socket_helper(
        &mut self,
        name: &'static str,
        binary: &Path,
        args: &[String],
        socket: &Path,
    ) -> Result<(), VmError> {
        let (child, pid) = spawn(
            name,
            binary,
            args,
            &self.paths.helper_log(name),
            &[],
            &self.limits,
        )?;
        self.supervise(name, child, pid);
        self.wait_for_socket(name, socket, HELPER_SOCKET_WAIT).await
    }

    /// Starts copying the agent's log into the shim's log (once the agent
    /// answers); stopped with the VM.
    pub fn follow_guest_log(&mut self, log: &slog::Logger) {
        let handle =
            crate::guest_log::follow(self.vsock.clone(), log.new(slog::o!("source" => "guest")));
        if let Some(old) = self.guest_log.replace(handle) {
            old.abort();
        }
    }

    pub fn qemu_pid(&self) -> u32 {
        self.children
            .iter()
            .find(|c| c.name == "qemu")
            .map(|c| c.pid as u32)
            .unwrap_or(0)
    }

    /// Ends a VM that is alive but useless (its agent stopped answering):
    /// records `reason` as its death, so every task waiting on it ends,
    /// and kills QEMU.
    pub fn declare_dead(&self, reason: String) {
        self.died_tx.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            *d = Some(reason);
            true
        });
        if let Some(qemu) = self.children.iter().find(|c| c.name == "qemu") {
            qemu.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// The reason the VM died, if it did.
    pub fn death(&self) -> Option<String> {
        self.died.borrow().clone()
    }

    /// Ends QEMU and the helpers: SIGTERM, `grace` to exit, then SIGKILL
    /// and `kill_wait` more. Returns within `grace + kill_wait` whatever
    /// they do; those still alive then (a QEMU stuck in the kernel) are
    /// logged by name. Their SIGKILL stays pending: they end when the
    /// kernel lets them.
    pub async fn stop(&self, grace: Duration) {
        self.stop_followers();
        let signal = |sig| {
            for c in self.children.iter().filter(|c| c.exited.borrow().is_none()) {
                c.signal(sig);
            }
        };
        // QEMU first: helpers exit on their own once it disconnects.
        signal(nix::sys::signal::Signal::SIGTERM);
        if !self.all_exited_within(grace).await {
            signal(nix::sys::signal::Signal::SIGKILL);
            self.all_exited_within(self.kill_wait).await;
        }
        let stuck: Vec<String> = self
            .children
            .iter()
            .filter(|c| c.exited.borrow().is_none())
            .map(|c| format!("{} (pid {})", c.name, c.pid))
            .collect();
        if !stuck.is_empty() {
            slog::error!(self.log, "still alive after SIGKILL; left to the kernel";
                "processes" => stuck.join(", "), "waited" => ?self.kill_wait);
        }
    }

    async fn all_exited_within(&self, limit: Duration) -> bool {
        let all = async {
            for c in &self.children {
                let _ = c.exited.clone().wait_for(|s| s.is_some()).await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    fn stop_followers(&self) {
        for h in [&self.guest_log, &self.console].into_iter().flatten() {
            h.abort();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop_followers();
    }
}

/// The first descriptor number a spawned process gets passed fds at.
const FIRST_PASSED_FD: RawFd = 3;
/// At most this many (one per pod interface).
const MAX_PASSED_FDS: usize = 16;

/// How long a helper may take to create its socket.
const HELPER_SOCKET_WAIT: Duration = Duration::from_secs(10);

/// The VM the configuration describes, with the devices already prepared.
fn vm_spec(
    cfg: &HullConfig,
    boot: &crate::guest_root::GuestBoot,
    p: &VmPaths,
    accel: accel::Accel,
    sandbox_id: &str,
    (vsock, shared): (VsockDevice, SharedDevice),
) -> VmSpec {
    let h = &cfg.hypervisor;
    let mut cmdline = format!(
        "{BASE_KERNEL_PARAMS}{} hull.log={}",
        timer_params(accel, h.vcpus),
        cfg.log_level
    );
    for params in [&boot.kernel_params, &h.kernel_params] {
        if !params.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(params);
        }
    }
    VmSpec {
        name: format!("hull-{sandbox_id}"),
        accel,
        vcpus: h.vcpus,
        memory_mib: h.memory_mib,
        kernel: h.kernel.clone(),
        initrd: boot.initrd.clone(),
        root_disk: boot.disk.clone(),
        firmware: h.firmware.clone(),
        free_page_reporting: h.free_page_reporting,
        tcg_code_cache_mib: (h.tcg_code_cache_mib != 0).then_some(h.tcg_code_cache_mib),
        cmdline,
        console: p.console.clone(),
        vsock,
        shared,
        nics: Vec::new(),
        qmp: None,
        hotplug_slots: 0,
    }
}

/// The guest CID of the VM `name` under kernel vsock (none under hybrid).
pub fn kernel_vsock_cid(cfg: &HullConfig, name: &str) -> Option<u32> {
    (cfg.vsock.transport == VsockTransportKind::Kernel).then(|| guest_cid(name))
}

/// A guest CID for kernel vsock, unique per sandbox id with high
/// probability (0-2 are reserved; QEMU refuses a CID already in use).
fn guest_cid(sandbox_id: &str) -> u32 {
    let digest = sha2::Sha256::digest(sandbox_id.as_bytes());
    let n = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    3 + n % (u32::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtiofsd_is_told_the_capabilities_it_starts_without() {
        use capctl::Cap;
        assert_eq!(
            modcaps(&[Cap::MKNOD, Cap::SETFCAP, Cap::FSETID]),
            "-mknod:-setfcap:-fsetid"
        );
    }

    #[test]
    fn vm_directory_keeps_every_socket_path_addressable() {
        let short = VmPaths::new(Path::new("/run/hull"), "demo");
        assert_eq!(short.dir, Path::new("/run/hull/demo"));
        let cri_id = "f4c5e8e3c31c656cba693aec5cc98cd6d339175396406026942cc1bdc575a7ff";
        let state = Path::new("/run/hull-e2e-1351/hull-state");
        let long = VmPaths::new(state, cri_id);
        assert_eq!(long.dir, VmPaths::new(state, cri_id).dir, "stable");
        assert_ne!(long.dir, VmPaths::new(state, &cri_id.replace('f', "e")).dir);
        for socket in [&long.vhost_vsock, &long.vsock, &long.ready, &long.virtiofs] {
            assert!(socket.as_os_str().len() <= SOCKET_PATH_MAX, "{socket:?}");
        }
    }

    #[test]
    fn configuration_becomes_the_vm_spec() {
        let mut cfg = HullConfig::parse(
            include_str!("../../../config/configuration.toml"),
            Path::new("c.toml"),
        )
        .unwrap();
        cfg.hypervisor.kernel_params = "hull.debug_console=on".into();
        let p = VmPaths::new(Path::new("/run/hull"), "sb");
        let vsock = VsockDevice::Kernel {
            cid: guest_cid("sb"),
        };
        let shared = SharedDevice::NineP {
            dir: p.shared.clone(),
        };
        let boot = crate::guest_root::guest_boot(&cfg).unwrap();
        let spec = vm_spec(&cfg, &boot, &p, accel::Accel::Tcg, "sb", (vsock, shared));
        assert_eq!(
            (spec.name.as_str(), spec.memory_mib, spec.vcpus),
            ("hull-sb", 512, 1)
        );
        assert!(
            spec.cmdline
                .ends_with("hull.log=info hull.debug_console=on"),
            "{}",
            spec.cmdline
        );
        assert_eq!(spec.console, Path::new("/run/hull/sb/console.sock"));
        assert!(spec.cmdline.contains(" nolapic_timer "), "{}", spec.cmdline);
    }

    #[test]
    fn only_a_one_vcpu_tcg_guest_gives_up_its_apic_timer() {
        assert_eq!(timer_params(accel::Accel::Tcg, 1), " nolapic_timer");
        assert_eq!(timer_params(accel::Accel::Tcg, 2), "");
        assert_eq!(timer_params(accel::Accel::Kvm, 1), "");
    }

    #[test]
    fn guest_cids_avoid_the_reserved_ones_and_differ_per_sandbox() {
        let cids: Vec<u32> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| guest_cid(id))
            .collect();
        assert!(cids.iter().all(|c| *c >= 3 && *c < u32::MAX), "{cids:?}");
        assert_eq!(guest_cid("a"), cids[0], "stable");
        let mut unique = cids.clone();
        unique.dedup();
        assert_eq!(unique.len(), cids.len());
    }
}
