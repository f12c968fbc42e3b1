//! containerd's shim v2 entry points and task service. Thin: each RPC
//! checks its request, calls the sandbox or task, publishes its event, and
//! maps errors to the right ttrpc code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::TaskStart;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Flags, StartOpts};
use protobuf::MessageField;
use protocols::agent;

use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::io::StdioPaths;
use crate::pod::Role;
use crate::rootfs;
use crate::sandbox::Sandbox;
use crate::task::Task;
use crate::vm::VmPaths;

mod control;
mod exec;
mod lifecycle;
mod task_api;
mod watch;

/// The exit status reported when the VM (or a helper) died under the task.
pub const VM_DIED_STATUS: u32 = 255;

struct Inner {
    id: String,
    namespace: String,
    log: slog::Logger,
    exit: Arc<ExitSignal>,
    publisher: Option<RemotePublisher>,
    sandbox: tokio::sync::Mutex<Option<Arc<Sandbox>>>,
    /// The tasks of this shim: one, or the containers of a pod.
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

impl Inner {
    fn new(
        id: String,
        namespace: String,
        log: slog::Logger,
        exit: Arc<ExitSignal>,
        publisher: Option<RemotePublisher>,
    ) -> Self {
        Inner {
            id,
            namespace,
            log,
            exit,
            publisher,
            sandbox: tokio::sync::Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Clone)]
pub struct HullShim(Arc<Inner>);

fn state_dir_for_cleanup(bundle: &Path) -> PathBuf {
    HullConfig::load(&crate::options::recorded_config_path(bundle))
        .map(|c| c.state_dir)
        .unwrap_or_else(|_| PathBuf::from("/run/hull"))
}

#[async_trait]
impl Shim for HullShim {
    type T = HullShim;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut containerd_shim::Config) -> Self {
        let level = HullConfig::load(&HullConfig::path())
            .map(|c| c.log_level)
            .unwrap_or_else(|_| "info".into());
        let log = crate::logging::init(if args.debug { "debug" } else { &level });
        HullShim(Arc::new(Inner::new(
            args.id.clone(),
            args.namespace.clone(),
            log.new(slog::o!("id" => args.id.clone())),
            Arc::new(ExitSignal::default()),
            None,
        )))
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, containerd_shim::Error> {
        // A pod's containers share the sandbox container's shim (and VM):
        // for them `spawn` finds that shim's socket and answers with it.
        let bundle = std::env::current_dir().unwrap_or_default();
        let grouping = Role::of_bundle(&bundle).grouping(&opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // In the bundle, as runc's shim does: containerd 1.6 reads it to
        // reconnect to the shim after a restart, and the shim crate to
        // remove the socket when the shim exits.
        tokio::fs::write("address", &address).await.map_err(|err| {
            containerd_shim::Error::IoError {
                context: "write the shim address into the bundle".into(),
                err,
            }
        })?;
        Ok(address)
    }

    /// Cleans up after a shim that died: unmounts and removes the task's
    /// state. Idempotent; runs on every teardown.
    async fn delete_shim(&mut self) -> Result<api::DeleteResponse, containerd_shim::Error> {
        let bundle = std::env::current_dir().unwrap_or_default();
        let role = Role::of_bundle(&bundle);
        // A pod container's mounts live in its pod's VM directory, which
        // stays for the pod's other containers.
        let vm_id = role.grouping(&self.0.id);
        let paths = VmPaths::new(&state_dir_for_cleanup(&bundle), &vm_id);
        crate::volumes::unshare_all(&paths.shared, &self.0.id);
        rootfs::unmount_all(&rootfs::shared_rootfs(&paths.shared, &self.0.id));
        rootfs::unmount_all(&bundle.join("rootfs"));
        if !matches!(role, Role::Member { .. }) {
            let _ = crate::vm::remove_state_dir(&paths.dir);
        }
        Ok(api::DeleteResponse {
            exit_status: 137,
            exited_at: MessageField::some(crate::task::now()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.0.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let i = &self.0;
        HullShim(Arc::new(Inner::new(
            i.id.clone(),
            i.namespace.clone(),
            i.log.clone(),
            i.exit.clone(),
            Some(publisher),
        )))
    }
}

impl HullShim {
    async fn publish<E: Event + protobuf::MessageDyn>(&self, event: E) {
        let Some(p) = &self.0.publisher else { return };
        let topic = event.topic();
        if let Err(e) = p
            .publish(
                Default::default(),
                &topic,
                &self.0.namespace,
                Box::new(event),
            )
            .await
        {
            slog::warn!(self.0.log, "publish failed"; "topic" => topic, "error" => %e);
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
        })
        .await;
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
        sandbox
            .agent
            .agent
            .signal_process(sandbox.agent.ctx(), &sig)
            .await
            .map_err(ShimError::agent("SignalProcess"))?;
        Ok(())
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
