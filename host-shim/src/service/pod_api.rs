//! containerd's sandbox API (`sandboxer = "shim"`): the pod's VM is made at
//! RunPodSandbox with no sandbox container in it; the agent holds the
//! pod's namespaces and the pod's containers join them through the task
//! API, as they join a sandbox container's in the podsandbox mode.

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::Status;
use containerd_shim::protos::sandbox_api as api;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;
use tokio::sync::watch;

use super::{HullShim, VM_DIED_STATUS};
use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::pod::PodIdentity;
use crate::sandbox::Sandbox;
use crate::share::Share;
use crate::vm::VmPaths;

/// The exit status of a sandbox stopped by StopSandbox (SIGKILL's, as a
/// pause container killed at pod stop reports).
const STOPPED_STATUS: u32 = 137;

/// A pod sandbox made through the sandbox API, from CreateSandbox on.
pub(super) struct ApiPod {
    cfg: HullConfig,
    netns: Option<PathBuf>,
    guest: PodIdentity,
    created_at: Option<Timestamp>,
    /// The exit status and time, once the sandbox has ended.
    exit: watch::Sender<Option<(u32, Timestamp)>>,
    shut_down: bool,
}

impl HullShim {
    fn api_pod(&self) -> std::sync::MutexGuard<'_, Option<ApiPod>> {
        self.0.api_pod.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this shim holds a pod made through the sandbox API that has
    /// not been shut down (then the shim stays when its tasks are gone).
    pub(super) fn holds_api_pod(&self) -> bool {
        self.api_pod().as_ref().is_some_and(|p| !p.shut_down)
    }

    fn check_id(&self, id: &str) -> Result<(), ShimError> {
        if id == self.0.id {
            return Ok(());
        }
        Err(ShimError::NotFound(format!(
            "sandbox {id:?} (this shim serves {:?})",
            self.0.id
        )))
    }

    /// Checks and records the pod; the VM boots at StartSandbox.
    pub(super) fn create_sandbox(&self, req: &api::CreateSandboxRequest) -> Result<(), ShimError> {
        self.check_id(&req.sandbox_id)?;
        if self.api_pod().is_some() {
            return Err(ShimError::AlreadyExists(format!(
                "sandbox {:?}",
                req.sandbox_id
            )));
        }
        let bundle = PathBuf::from(&req.bundle_path);
        let cfg = crate::options::config_for_sandbox(&bundle)?;
        let identity = crate::pod::pod_identity(req.options.as_ref())?;
        let netns = Some(PathBuf::from(&req.netns_path)).filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = netns.as_ref().filter(|p| !p.exists()) {
            return Err(ShimError::Invalid {
                what: "netns_path",
                reason: format!("{} does not exist", path.display()),
            });
        }
        slog::info!(self.0.log, "sandbox created"; "hostname" => &identity.hostname,
            "netns" => ?netns);
        *self.api_pod() = Some(ApiPod {
            cfg,
            netns,
            guest: identity,
            created_at: None,
            exit: watch::channel(None).0,
            shut_down: false,
        });
        Ok(())
    }

    /// Boots the pod's VM; returns QEMU's pid and the start time.
    pub(super) async fn start_sandbox(
        &self,
        req: &api::StartSandboxRequest,
    ) -> Result<api::StartSandboxResponse, ShimError> {
        self.check_id(&req.sandbox_id)?;
        let (cfg, netns, guest) = {
            let pod = self.api_pod();
            let pod = pod
                .as_ref()
                .ok_or_else(|| ShimError::NotFound(format!("sandbox {:?}", req.sandbox_id)))?;
            if pod.created_at.is_some() || pod.exit.borrow().is_some() {
                return Err(ShimError::FailedPrecondition(format!(
                    "sandbox {:?} was started already",
                    req.sandbox_id
                )));
            }
            (pod.cfg.clone(), pod.netns.clone(), pod.guest.clone())
        };
        let _booting = self.0.claims.claim(super::claims::VM_BOOT).ok_or_else(|| {
            ShimError::FailedPrecondition(format!("sandbox {:?} is starting", req.sandbox_id))
        })?;
        let sandbox = self.boot_pod(&cfg, netns, &guest).await?;
        let created_at = Timestamp::now();
        if let Some(pod) = self.api_pod().as_mut() {
            pod.created_at = Some(created_at.clone());
        }
        *self.0.sandbox.lock().await = Some(sandbox.clone());
        self.watch_sandbox(&sandbox, &cfg);
        tokio::spawn(self.clone().watch_vm_death(sandbox.clone()));
        Ok(api::StartSandboxResponse {
            pid: sandbox.vm.qemu_pid(),
            created_at: MessageField::some(created_at),
            ..Default::default()
        })
    }

    async fn boot_pod(
        &self,
        cfg: &HullConfig,
        netns: Option<PathBuf>,
        guest: &PodIdentity,
    ) -> Result<Arc<Sandbox>, ShimError> {
        let paths = VmPaths::new(&cfg.state_dir, &self.0.id);
        let network = super::lifecycle::attach_network(netns).await?;
        let nics = network.as_ref().map_or(0, |n| n.endpoints.len());
        let taken = crate::sandbox::take_or_prepare(cfg, &self.0.id, nics, &self.0.log).await?;
        let booted = Sandbox::boot(cfg, &self.0.id, &self.0.log, network, Some(guest), taken).await;
        booted.map(Arc::new).inspect_err(|e| {
            slog::error!(self.0.log, "sandbox start failed"; "error" => %e);
            let _ = Share::remove_at(&paths);
        })
    }

    /// A VM that dies under the pod ends the sandbox.
    async fn watch_vm_death(self, sandbox: Arc<Sandbox>) {
        let mut died = sandbox.died.clone();
        if died.wait_for(|d| d.is_some()).await.is_ok() {
            self.record_sandbox_exit(VM_DIED_STATUS);
        }
    }

    fn record_sandbox_exit(&self, status: u32) {
        if let Some(pod) = self.api_pod().as_ref() {
            pod.exit.send_if_modified(|exit| {
                let first = exit.is_none();
                if first {
                    *exit = Some((status, Timestamp::now()));
                }
                first
            });
        }
    }

    /// Stops the VM and removes its host state; the pod's tasks end with
    /// it. Stopping a stopped sandbox does nothing.
    pub(super) async fn stop_sandbox(&self, id: &str) -> Result<(), ShimError> {
        self.check_id(id)?;
        if self.api_pod().is_none() {
            return Err(ShimError::NotFound(format!("sandbox {id:?}")));
        }
        self.teardown().await;
        self.record_sandbox_exit(STOPPED_STATUS);
        Ok(())
    }

    /// Waits until the sandbox has ended: its exit status and time.
    pub(super) async fn wait_sandbox(&self, id: &str) -> Result<(u32, Timestamp), ShimError> {
        self.check_id(id)?;
        let mut exit = self
            .api_pod()
            .as_ref()
            .map(|p| p.exit.subscribe())
            .ok_or_else(|| ShimError::NotFound(format!("sandbox {id:?}")))?;
        let ended = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ShimError::NotFound(format!("sandbox {id:?}: shut down")))?;
        Ok(ended.clone().unwrap_or_else(|| (0, Timestamp::now())))
    }

    pub(super) async fn sandbox_status(
        &self,
        req: &api::SandboxStatusRequest,
    ) -> Result<api::SandboxStatusResponse, ShimError> {
        self.check_id(&req.sandbox_id)?;
        let (created_at, exit) = self
            .api_pod()
            .as_ref()
            .map(|p| (p.created_at.clone(), p.exit.borrow().clone()))
            .ok_or_else(|| ShimError::NotFound(format!("sandbox {:?}", req.sandbox_id)))?;
        let running = self.0.sandbox.lock().await.clone();
        let ready = created_at.is_some() && exit.is_none() && running.is_some();
        Ok(api::SandboxStatusResponse {
            sandbox_id: req.sandbox_id.clone(),
            pid: running.map(|s| s.vm.qemu_pid()).unwrap_or(0),
            state: if ready {
                "SANDBOX_READY"
            } else {
                "SANDBOX_NOTREADY"
            }
            .into(),
            created_at: created_at.into(),
            exited_at: exit.map(|(_, at)| at).into(),
            ..Default::default()
        })
    }

    /// Whether the pod's agent answers (a health check within its RPC
    /// timeout).
    pub(super) async fn ping_sandbox(&self, id: &str) -> Result<(), ShimError> {
        self.check_id(id)?;
        let sandbox = self.sandbox().await?;
        let a = &sandbox.agent;
        a.health
            .check(a.ctx(), &protocols::health::CheckRequest::new())
            .await
            .map_err(ShimError::agent("Check"))?;
        Ok(())
    }

    /// Ends everything and lets the shim exit.
    pub(super) async fn shutdown_sandbox(&self, id: &str) -> Result<(), ShimError> {
        self.check_id(id)?;
        self.teardown().await;
        self.record_sandbox_exit(STOPPED_STATUS);
        if let Some(pod) = self.api_pod().as_mut() {
            pod.shut_down = true;
        }
        let running = self
            .tasks()
            .values()
            .any(|t| t.init.status() == Status::RUNNING);
        if running {
            slog::warn!(
                self.0.log,
                "sandbox shut down under running tasks: they ended with the VM"
            );
        }
        self.0.exit.signal();
        Ok(())
    }

    /// The pod's usage: its containers' statistics summed, as cgroup v2
    /// metrics.
    pub(super) async fn sandbox_metrics(
        &self,
        id: &str,
    ) -> Result<protobuf::well_known_types::any::Any, ShimError> {
        self.check_id(id)?;
        let ids: Vec<String> = self
            .tasks()
            .values()
            .filter(|t| t.init.status() == Status::RUNNING)
            .map(|t| t.id.clone())
            .collect();
        let mut all = Vec::new();
        for id in ids {
            if let Ok((stats, _)) = self.container_stats(&id).await {
                all.push(stats);
            }
        }
        crate::metrics::pod_to_any(&all).map_err(ShimError::io("encode metrics"))
    }
}
