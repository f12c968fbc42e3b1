//! containerd's shim v2 entry points and task service. Thin: each RPC
//! checks its request, calls the sandbox or task, publishes its event, and
//! maps errors to the right ttrpc code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskStart};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Flags, StartOpts};
use protobuf::MessageField;
use protocols::agent;

use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::io::{ProcessStdio, StdioPaths};
use crate::rootfs;
use crate::sandbox::{HostMounts, Sandbox};
use crate::task::{Proc, Task};
use crate::vm::VmPaths;

mod control;
mod exec;
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
    task: Mutex<Option<Arc<Task>>>,
    mounts: Mutex<Option<HostMounts>>,
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
            task: Mutex::new(None),
            mounts: Mutex::new(None),
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
        let grouping = opts.id.clone();
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
        let paths = VmPaths::new(&state_dir_for_cleanup(&bundle), &self.0.id);
        rootfs::unmount_all(&rootfs::shared_rootfs(&paths.shared, &self.0.id));
        rootfs::unmount_all(&bundle.join("rootfs"));
        let _ = crate::vm::remove_state_dir(&paths.dir);
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

    fn task(&self, id: &str) -> Result<Arc<Task>, ShimError> {
        let t = self
            .0
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        t.filter(|t| t.id == id)
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

    async fn create(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse, ShimError> {
        if self
            .0
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Err(ShimError::AlreadyExists(format!("task {:?}", req.id)));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented("restoring from a checkpoint"));
        }
        let mut cfg =
            crate::options::config_for_task(req.options.as_ref(), Path::new(&req.bundle))?;
        let mut guest_spec = oci_spec::runtime::Spec::load(
            Path::new(&req.bundle).join("config.json"),
        )
        .map_err(|e| ShimError::Invalid {
            what: "bundle config.json",
            reason: e.to_string(),
        })?;
        // Refused before anything is mounted or started.
        let annotations = guest_spec.annotations().clone().unwrap_or_default();
        for change in crate::annotations::apply(&mut cfg, &annotations)? {
            slog::info!(self.0.log, "configuration changed by annotation"; "change" => change);
        }
        for dropped in crate::sandbox::prepare_guest_spec(&mut guest_spec, &req.id)? {
            slog::warn!(self.0.log, "not applied in the guest, which runs no host LSM policy"; "label" => dropped);
        }

        let paths = VmPaths::new(&cfg.state_dir, &self.0.id);
        let bundle_rootfs = rootfs::mount_bundle_rootfs(&req).await?;
        let mounts = HostMounts {
            bundle_rootfs: bundle_rootfs.clone(),
            shared_rootfs: rootfs::shared_rootfs(&paths.shared, &req.id),
            shared: paths.shared.clone(),
            container_id: req.id.clone(),
        };
        let result = self
            .boot_and_create(&cfg, &req, &bundle_rootfs, guest_spec)
            .await;
        match result {
            Ok((sandbox, stdio)) => {
                let pid = sandbox.vm.lock().await.qemu_pid();
                let stdio_paths = stdio_paths(&req);
                *self.0.mounts.lock().unwrap_or_else(|e| e.into_inner()) = Some(mounts);
                let sandbox = Arc::new(sandbox);
                *self.0.sandbox.lock().await = Some(sandbox.clone());
                let task = Arc::new(Task::new(
                    req.id.clone(),
                    req.bundle.clone(),
                    pid,
                    Proc::new(req.id.clone(), stdio_paths, Some(stdio)),
                ));
                *self.0.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.clone());
                // Watched from creation: a created task can be killed too.
                tokio::spawn(self.clone().forward_oom_events(sandbox.clone()));
                tokio::spawn(sandbox.clone().monitor_health(
                    Duration::from_secs(cfg.timeouts.health_interval_secs.max(1)),
                    cfg.timeouts.health_failures.max(1),
                    self.0.log.clone(),
                ));
                tokio::spawn(
                    self.clone()
                        .watch_exit(task.clone(), task.init.clone(), sandbox),
                );
                self.publish(TaskCreate {
                    container_id: req.id.clone(),
                    bundle: req.bundle.clone(),
                    rootfs: req.rootfs.clone(),
                    io: MessageField::some(containerd_shim::protos::events::task::TaskIO {
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        terminal: req.terminal,
                        ..Default::default()
                    }),
                    pid,
                    ..Default::default()
                })
                .await;
                Ok(api::CreateTaskResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(e) => {
                slog::error!(self.0.log, "create failed"; "error" => %e);
                mounts.undo();
                let _ = crate::vm::remove_state_dir(&paths.dir);
                Err(e)
            }
        }
    }

    async fn boot_and_create(
        &self,
        cfg: &HullConfig,
        req: &api::CreateTaskRequest,
        bundle_rootfs: &Path,
        mut guest_spec: oci_spec::runtime::Spec,
    ) -> Result<(Sandbox, ProcessStdio), ShimError> {
        let paths = VmPaths::new(&cfg.state_dir, &self.0.id);
        rootfs::share(bundle_rootfs, &paths.shared, &req.id)?;
        crate::volumes::share(&mut guest_spec, &paths.shared, &req.id)?;
        let sandbox = Sandbox::boot(cfg, &self.0.id, &self.0.log).await?;
        let created = async {
            sandbox.create_container(&req.id, guest_spec).await?;
            ProcessStdio::attach(
                &sandbox.paths.vsock,
                &req.id,
                &req.id,
                &stdio_paths(req),
                &self.0.log,
            )
            .await
        }
        .await;
        match created {
            Ok(stdio) => Ok((sandbox, stdio)),
            Err(e) => {
                sandbox.shutdown().await;
                Err(e)
            }
        }
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

    async fn delete(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse, ShimError> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(req).await;
        }
        let task = self.task(&req.id)?;
        if matches!(task.init.status(), Status::RUNNING | Status::PAUSED) {
            return Err(ShimError::FailedPrecondition(format!(
                "task {:?} is {:?}; kill it first",
                req.id,
                task.init.status()
            )));
        }
        self.teardown(&task).await;
        let exit = task.init.exit().unwrap_or_else(|| task.init.set_exit(137));
        *self.0.task.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        })
        .await;
        Ok(api::DeleteResponse {
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    /// Ends the task's VM and removes everything it had on the host, in an
    /// order where nothing can reach into a still-mounted rootfs: container,
    /// VM and helpers, stdio, mounts, and last the state directory.
    async fn teardown(&self, task: &Task) {
        let sandbox = self.0.sandbox.lock().await.take();
        if let Some(sandbox) = &sandbox {
            if task.init.status() == Status::CREATED && sandbox.died.borrow().is_none() {
                let rm = agent::RemoveContainerRequest {
                    container_id: task.id.clone(),
                    timeout: 10,
                    ..Default::default()
                };
                if let Err(e) = sandbox
                    .agent
                    .agent
                    .remove_container(sandbox.agent.ctx(), &rm)
                    .await
                {
                    slog::warn!(self.0.log, "RemoveContainer failed"; "error" => %e);
                }
            }
            sandbox.shutdown().await;
        }
        for proc in std::iter::once(task.init.clone()).chain(task.execs()) {
            if let Some(stdio) = proc.stdio.lock().await.take() {
                stdio.release();
            }
        }
        if let Some(m) = self
            .0
            .mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            m.undo();
        }
        if let Some(sandbox) = &sandbox {
            if let Err(e) = crate::vm::remove_state_dir(&sandbox.paths.dir) {
                slog::error!(self.0.log, "state directory left behind"; "error" => %e);
            }
        }
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
