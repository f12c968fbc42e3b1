//! A VM booted by hull-cache, handed to the shim that takes it: its
//! processes as pidfds (watched and signalled through them, never by pid),
//! and the keeper's socket, whose closing ends the VM.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Supervised, Vm, VmError, VmPaths};
use crate::accel::Choice;
use crate::config::{HullConfig, VsockTransportKind};
use crate::vsock::{HybridVsock, KernelVsock, VsockTransport};

/// A process of a VM started elsewhere (hull-cache), handed over as a
/// pidfd.
pub struct HandedProcess {
    pub name: String,
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// A VM started and booted by hull-cache, as the shim takes it over.
pub struct HandedVm {
    pub paths: VmPaths,
    pub accel: Choice,
    pub vsock_cid: Option<u32>,
    pub processes: Vec<HandedProcess>,
    pub keeper: OwnedFd,
}

/// The names of the processes a VM may have (Supervised keeps them as
/// static strings).
const PROCESS_NAMES: [&str; 3] = ["qemu", "vhost-device-vsock", "virtiofsd"];

impl Vm {
    /// Watches a process handed over with a taken VM through its pidfd.
    /// Its exit status is its parent's to collect: only the exit is known.
    fn supervise_pidfd(&mut self, name: &'static str, pid: i32, pidfd: OwnedFd) {
        let (tx, rx) = watch::channel(None);
        let died = self.died_tx.clone();
        let watched = pidfd.try_clone();
        tokio::spawn(async move {
            let status = match watched {
                Ok(fd) => match crate::pidfd::exited(fd).await {
                    Ok(()) => "exited; its status is hull-cache's".to_string(),
                    Err(e) => format!("cannot be watched: {e}"),
                },
                Err(e) => format!("cannot be watched: {e}"),
            };
            let _ = died.send(Some(format!("{name} {status}")));
            let _ = tx.send(Some(status));
        });
        self.children.push(Supervised {
            name,
            pid,
            exited: rx,
            pidfd: Some(Arc::new(pidfd)),
        });
    }

    /// Takes over a VM hull-cache booted: its processes are watched and
    /// signalled through their pidfds, so `stop`, `declare_dead` and the
    /// death watch work as for a VM this shim started. Its console stays
    /// with its keeper, which goes on writing `console.log`, capped.
    pub fn adopt(cfg: &HullConfig, handed: HandedVm, log: &slog::Logger) -> Result<Vm, VmError> {
        let vsock: Arc<dyn VsockTransport> = match (cfg.vsock.transport, handed.vsock_cid) {
            (VsockTransportKind::Hybrid, _) => Arc::new(HybridVsock {
                uds: handed.paths.vsock.clone(),
            }),
            (VsockTransportKind::Kernel, Some(cid)) => Arc::new(KernelVsock { cid }),
            (VsockTransportKind::Kernel, None) => {
                return Err(VmError::Handover(
                    "a kernel-vsock VM without its CID".into(),
                ))
            }
        };
        let mut vm = Vm::unstarted(
            cfg,
            handed.paths,
            handed.accel,
            vsock,
            Some(handed.keeper),
            log,
        )?;
        if !handed.processes.iter().any(|p| p.name == "qemu") {
            return Err(VmError::Handover("no qemu among the processes".into()));
        }
        for p in handed.processes {
            let Some(name) = PROCESS_NAMES.iter().find(|n| **n == p.name) else {
                return Err(VmError::Handover(format!("unknown process {:?}", p.name)));
            };
            vm.supervise_pidfd(name, p.pid, p.pidfd);
        }
        slog::info!(log, "vm taken from hull-cache"; "qemu_pid" => vm.qemu_pid(),
            "vsock" => vm.vsock.describe(), "state_dir" => %vm.paths.dir.display());
        Ok(vm)
    }

    /// pidfds of the VM's processes, to hand the VM over. Each is opened
    /// while the process is this one's child and alive, so it names that
    /// process.
    pub fn handover_processes(&self) -> Result<Vec<HandedProcess>, VmError> {
        self.children
            .iter()
            .map(|c| {
                let pidfd = crate::pidfd::open(c.pid).map_err(|e| {
                    VmError::Handover(format!("pidfd of {} ({}): {e}", c.name, c.pid))
                })?;
                if c.exited.borrow().is_some() {
                    return Err(VmError::Handover(format!("{} has exited", c.name)));
                }
                Ok(HandedProcess {
                    name: c.name.to_string(),
                    pid: c.pid,
                    pidfd,
                })
            })
            .collect()
    }
}
