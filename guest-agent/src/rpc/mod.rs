//! The ttrpc services: a thin layer that validates requests, calls into the
//! container and storage modules, and maps errors to ttrpc codes. Serving
//! them is `server`'s job.
//!
//! This module holds the agent's state; `containers` the operations with
//! more than a call's worth of logic; `agent_service` and `health_service`
//! map each RPC onto them.

mod agent_service;
mod containers;
mod health_service;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::container::Registry;
use crate::errors::AgentError;
use crate::reaper::Reaper;

type RpcResult<T> = ttrpc::Result<T>;

pub struct AgentState {
    log: slog::Logger,
    registry: Arc<Registry>,
    reaper: Reaper,
    oom: Arc<crate::oom::OomWatcher>,
    sandbox_mounts: Mutex<Vec<PathBuf>>,
    /// The pod's namespaces, when the agent holds them (no sandbox
    /// container: `CreateSandbox` with `sandbox_pidns`).
    pod_namespaces: Mutex<Option<Arc<crate::pod_ns::PodNamespaces>>>,
    shutdown: Arc<Notify>,
    /// rtnetlink in the agent's network namespace, opened on first use.
    network: tokio::sync::OnceCell<crate::network::Network>,
    guest: GuestPaths,
    /// Container processes may not open AF_VSOCK unless configured.
    deny_vsock: bool,
}

impl AgentState {
    fn lock_pod_namespaces(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<Arc<crate::pod_ns::PodNamespaces>>> {
        self.pod_namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the guest-wide RPCs act: the real system in a VM, the agent's own
/// directory when it runs on a host.
struct GuestPaths {
    is_pid1: bool,
    sysfs: crate::guest::Sysfs,
    proc_root: PathBuf,
    copy_dir: PathBuf,
    etc_dir: PathBuf,
    pod_dir: PathBuf,
}

#[derive(Clone)]
pub struct Service(Arc<AgentState>);

impl Service {
    pub fn new(
        cfg: &crate::config::AgentConfig,
        log: slog::Logger,
        reaper: Reaper,
        oom: Arc<crate::oom::OomWatcher>,
    ) -> Self {
        Service(Arc::new(AgentState {
            guest: GuestPaths {
                is_pid1: cfg.is_pid1,
                sysfs: crate::guest::Sysfs::default(),
                proc_root: PathBuf::from("/proc"),
                copy_dir: cfg.copy_dir.clone(),
                etc_dir: cfg.etc_dir.clone(),
                pod_dir: cfg.pod_dir.clone(),
            },
            log,
            registry: Arc::new(Registry::default()),
            reaper,
            oom,
            sandbox_mounts: Mutex::new(Vec::new()),
            pod_namespaces: Mutex::new(None),
            shutdown: Arc::new(Notify::new()),
            network: tokio::sync::OnceCell::new(),
            deny_vsock: !cfg.container_vsock,
        }))
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.0.registry.clone()
    }

    /// Notified when DestroySandbox has done its work.
    pub fn shutdown_requested(&self) -> Arc<Notify> {
        self.0.shutdown.clone()
    }
}

/// Runs blocking work (rustjail, cgroup files) off the async workers.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AgentError::sys(what)(std::io::Error::other(e)))
}
