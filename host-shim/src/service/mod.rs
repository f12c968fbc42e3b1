//! containerd's shim v2 entry points and task service. Thin: each RPC
//! checks its request, calls the sandbox or task, publishes its event, and
//! maps errors to the right ttrpc code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::TaskStart;
use protobuf::MessageField;
use protocols::agent;

use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::events::Publisher;
use crate::io::StdioPaths;
use crate::pod::Role;
use crate::rootfs;
use crate::sandbox::Sandbox;
use crate::share::Share;
use crate::task::Task;
use crate::vm::VmPaths;

mod claims;
mod control;
mod exec;
mod lifecycle;
mod pod_api;
mod sandbox_api;
mod task_api;
mod watch;

pub use sandbox_api::services as sandbox_services;

/// The exit status reported when the VM (or a helper) died under the task.
pub const VM_DIED_STATUS: u32 = 255;

struct Inner {
    id: String,
    namespace: String,
    log: slog::Logger,
    exit: ExitSignal,
    publisher: Publisher,
    /// Set by the first task RPC: a daemon nobody calls exits by itself.
    called: AtomicBool,
    sandbox: tokio::sync::Mutex<Option<Arc<Sandbox>>>,
    /// Creates and the VM boot under way.
    claims: claims::Claims,
    /// A pod made through containerd's sandbox API.
    api_pod: Mutex<Option<pod_api::ApiPod>>,
    /// The tasks of this shim: one, or the containers of a pod.
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

#[derive(Clone)]
pub struct HullShim(Arc<Inner>);

fn state_dir_for_cleanup(bundle: &Path) -> PathBuf {
    HullConfig::load(&crate::options::recorded_config_path(bundle))
        .map(|c| c.state_dir)
        .unwrap_or_else(|_| PathBuf::from("/run/hull"))
}

/// Cleans up after a shim that died: unmounts and removes the task's
/// state. Idempotent; containerd runs it on every teardown.
pub fn cleanup_dead_shim(id: &str, bundle: &Path) {
    let spec = crate::pod::bundle_spec(bundle);
    let role = spec.as_ref().map_or(Role::Standalone, Role::of_spec);
    // A pod container's mounts live in its pod's VM directory, which
    // stays for the pod's other containers.
    let vm_id = role.grouping(id);
    let paths = VmPaths::new(&state_dir_for_cleanup(bundle), &vm_id);
    let share = Share::open(&paths).ok();
    if let Some(share) = &share {
        share.remove_container(id);
    }
    rootfs::unmount_bundle_rootfs(bundle);
    // The shim that wired the pod's interfaces may have died with its
    // rules in place (kill -9).
    let netns = spec.as_ref().and_then(|s| role.host_netns(s));
    if let Some(netns) = netns.filter(|p| p.exists()) {
        if let Err(e) = crate::network::unwire_namespace(&netns) {
            eprintln!("pod network {}: {e}", netns.display());
        }
    }
    if let (Some(share), false) = (share, matches!(role, Role::Member { .. })) {
        let _ = share.remove();
    }
}

impl HullShim {
    pub fn new(id: &str, namespace: &str, log: slog::Logger, publisher: Publisher) -> Self {
        HullShim(Arc::new(Inner {
            id: id.into(),
            namespace: namespace.into(),
            log,
            exit: ExitSignal::default(),
            publisher,
            called: AtomicBool::new(false),
            sandbox: tokio::sync::Mutex::new(None),
            claims: claims::Claims::default(),
            api_pod: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
        }))
    }

    /// Resolves when containerd's Shutdown has ended the shim.
    pub async fn shut_down(&self) {
        self.0.exit.wait().await;
    }

    /// Resolves when `wait` has passed without a single task RPC.
    pub async fn unclaimed(&self, wait: Duration) {
        tokio::time::sleep(wait).await;
        if self.0.called.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    /// Ends everything the shim runs (asked by a signal): the VM and every
    /// task's host state, as Delete would.
    pub async fn terminate(&self, why: &str) {
        slog::warn!(self.0.log, "terminating: the VM is stopped and its state removed"; "signal" => why);
        self.teardown().await;
    }

    /// Whether containerd has called this shim.
    pub fn was_called(&self) -> bool {
        self.0.called.load(Ordering::SeqCst)
    }

    /// Records a task RPC from containerd (and logs it at debug).
    pub(crate) fn rpc(&self, name: &'static str) {
        self.0.called.store(true, Ordering::SeqCst);
        slog::debug!(self.0.log, "task rpc"; "rpc" => name);
    }

    /// Queues `event` for containerd (never waits on it: see [`Publisher`]).
    fn publish<E: Event + protobuf::MessageDyn>(&self, event: E) {
        let topic = event.topic();
        self.0
            .publisher
            .publish(&topic, &self.0.namespace, Box::new(event));
    }

    /// Gives queued events up to `within` to reach containerd before the
    /// shim exits.
    pub async fn flush_events(&self, within: Duration) {
        if !self.0.publisher.flush(within).await {
            slog::warn!(self.0.log, "events not delivered before exit";
                "queued" => self.0.publisher.queued());
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Task>>> {
        self.0.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn task(&self, id: &str) -> Result<Arc<Task>, ShimError> {
        self.tasks()
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("task {id:?}")))
    }

    async fn sandbox(&self) -> Result<Arc<Sandbox>, ShimError> {
        self.0
            .sandbox
            .lock()
            .await
            .clone()
            .ok_or_else(|| ShimError::NotFound("sandbox".into()))
    }

    async fn start(&self, req: api::StartRequest) -> Result<api::StartResponse, ShimError> {
        if !req.exec_id.is_empty() {
            return self.start_exec(req).await;
        }
        let task = self.task(&req.id)?;
        if task.init.status() != Status::CREATED {
            return Err(ShimError::FailedPrecondition(format!(
                "task {:?} is {:?}, not created",
                req.id,
                task.init.status()
            )));
        }
        let sandbox = self.sandbox().await?;
        let _order = task.init.lifecycle.lock().await;
        // Checked again in order: of two racing starts, one starts.
        if task.init.status() != Status::CREATED {
            return Err(ShimError::FailedPrecondition(format!(
                "task {:?} is {:?}, not created",
                req.id,
                task.init.status()
            )));
        }
        let start = agent::StartContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        sandbox
            .agent
            .agent
            .start_container(sandbox.agent.ctx(), &start)
            .await
            .map_err(ShimError::agent("StartContainer"))?;
        task.init.mark_running();
        self.publish(TaskStart {
            container_id: req.id.clone(),
            pid: task.pid,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid: task.pid,
            ..Default::default()
        })
    }

    async fn kill(&self, req: api::KillRequest) -> Result<(), ShimError> {
        let task = self.task(&req.id)?;
        let proc = task.process(&req.exec_id)?;
        if proc.exit().is_some() {
            return Err(ShimError::NotFound(format!(
                "process {:?} of task {:?}: already finished",
                proc.id, req.id
            )));
        }
        if proc.status() == Status::CREATED && !req.exec_id.is_empty() {
            return Err(ShimError::FailedPrecondition(format!(
                "exec {:?} of task {:?} is not started",
                proc.id, req.id
            )));
        }
        let sandbox = self.sandbox().await?;
        // `all` signals every process of the container (empty exec id).
        let exec_id = if req.all && req.exec_id.is_empty() {
            String::new()
        } else {
            proc.id.clone()
        };
        let sig = agent::SignalProcessRequest {
            container_id: req.id.clone(),
            exec_id,
            signal: req.signal,
            ..Default::default()
        };
        let sent = sandbox
            .agent
            .agent
            .signal_process(sandbox.agent.ctx(), &sig)
            .await;
        match sent {
            Ok(_) => Ok(()),
            // SIGKILL of the task the VM is for: a guest that does not carry
            // it out (a lying or broken agent) loses its VM, so the task
            // still ends and can be deleted.
            Err(e)
                if req.signal == libc::SIGKILL as u32
                    && req.exec_id.is_empty()
                    && req.id == sandbox.id =>
            {
                slog::warn!(self.0.log, "the guest failed SIGKILL of the VM's task; stopping the VM";
                    "task" => &req.id, "error" => %e);
                sandbox.vm.declare_dead(format!(
                    "the guest failed SIGKILL of task {:?}: {e}",
                    req.id
                ));
                Ok(())
            }
            Err(e) => Err(ShimError::agent("SignalProcess")(e)),
        }
    }

    fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse, ShimError> {
        let task = self.task(&req.id)?;
        let proc = task.process(&req.exec_id)?;
        let exit = proc.exit();
        let p = &proc.stdio_paths;
        Ok(api::StateResponse {
            id: proc.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid,
            status: proc.status().into(),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            terminal: p.terminal,
            exit_status: exit.as_ref().map(|e| e.status).unwrap_or(0),
            exited_at: MessageField::from_option(exit.map(|e| e.at)),
            ..Default::default()
        })
    }

    async fn resize_pty(&self, req: api::ResizePtyRequest) -> Result<(), ShimError> {
        let task = self.task(&req.id)?;
        let proc = task.process(&req.exec_id)?;
        if !proc.stdio_paths.terminal {
            return Err(ShimError::FailedPrecondition(format!(
                "process {:?} of task {:?} has no terminal",
                proc.id, req.id
            )));
        }
        if proc.status() != Status::RUNNING {
            return Err(ShimError::FailedPrecondition(format!(
                "process {:?} of task {:?} is {:?}",
                proc.id,
                req.id,
                proc.status()
            )));
        }
        let sandbox = self.sandbox().await?;
        let resize = agent::TtyWinResizeRequest {
            container_id: req.id.clone(),
            exec_id: proc.id.clone(),
            row: req.height,
            column: req.width,
            ..Default::default()
        };
        sandbox
            .agent
            .agent
            .tty_win_resize(sandbox.agent.ctx(), &resize)
            .await
            .map_err(ShimError::agent("TtyWinResize"))?;
        Ok(())
    }

    async fn close_io(&self, req: api::CloseIORequest) -> Result<(), ShimError> {
        let proc = self.task(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            if let Some(stdio) = proc.stdio.lock().await.as_ref() {
                stdio.close_stdin();
            }
        }
        Ok(())
    }
}

fn stdio_paths(req: &api::CreateTaskRequest) -> StdioPaths {
    StdioPaths {
        stdin: req.stdin.clone(),
        stdout: req.stdout.clone(),
        stderr: req.stderr.clone(),
        terminal: req.terminal,
    }
}
