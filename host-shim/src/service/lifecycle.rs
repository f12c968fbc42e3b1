//! Create and Delete: a task's VM (or its place in its pod's VM), its
//! rootfs and volumes on the host, and their removal in a safe order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskIO};
use protobuf::MessageField;
use protocols::agent;

use super::{stdio_paths, HullShim};
use crate::config::HullConfig;
use crate::errors::ShimError;
use crate::io::{OutputsAhead, ProcessStdio};
use crate::network::PodNetwork;
use crate::pod::Role;
use crate::rootfs;
use crate::sandbox::{HostMounts, Sandbox};
use crate::share::Share;
use crate::task::{Proc, Task};
use crate::vm::VmPaths;

/// What Create has built so far, for the task's record.
struct Built {
    sandbox: Arc<Sandbox>,
    stdio: ProcessStdio,
    /// Whether this create booted the VM (then its watchers start too).
    booted: bool,
}

impl HullShim {
    pub(super) async fn create(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse, ShimError> {
        // Held until the task is recorded: a racing create of the same id
        // is refused here.
        let _claim = self.0.claims.claim(&req.id).ok_or_else(|| {
            ShimError::AlreadyExists(format!("task {:?} (its create is under way)", req.id))
        })?;
        if self.tasks().contains_key(&req.id) {
            return Err(ShimError::AlreadyExists(format!("task {:?}", req.id)));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented("restoring from a checkpoint"));
        }
        let (cfg, guest_spec, role, host_netns) = self.load_task(&req)?;
        let bundle_rootfs = rootfs::mount_bundle_rootfs(&req).await?;
        // A pod container's share lives in its pod's VM directory.
        let mounts = HostMounts {
            bundle: PathBuf::from(&req.bundle),
            vm: VmPaths::new(&cfg.state_dir, &self.0.id),
            container_id: req.id.clone(),
        };
        let built = match &role {
            Role::Member { sandbox_id } => {
                self.join_pod(&req, &bundle_rootfs, guest_spec, sandbox_id)
                    .await
            }
            _ => {
                self.boot_and_create(&cfg, &req, &bundle_rootfs, guest_spec, host_netns)
                    .await
            }
        };
        let built = match built {
            Ok(b) => b,
            Err(e) => {
                slog::error!(self.0.log, "create failed"; "error" => %e);
                mounts.undo();
                if !matches!(role, Role::Member { .. }) {
                    let _ = Share::remove_at(&mounts.vm);
                }
                return Err(e);
            }
        };
        let pid = built.sandbox.vm.qemu_pid();
        let task = Arc::new(Task::new(
            req.id.clone(),
            req.bundle.clone(),
            pid,
            Proc::new(req.id.clone(), stdio_paths(&req), Some(built.stdio)),
        ));
        task.set_mounts(mounts);
        self.tasks().insert(req.id.clone(), task.clone());
        if built.booted {
            self.watch_sandbox(&built.sandbox, &cfg);
        }
        // Watched from creation: a created task can be killed too.
        tokio::spawn(
            self.clone()
                .watch_exit(task.clone(), task.init.clone(), built.sandbox),
        );
        self.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        });
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// The task's configuration (with its annotations applied), its spec
    /// rewritten for the guest, and its place in a pod. Everything here is
    /// refused before anything is mounted or started.
    fn load_task(
        &self,
        req: &api::CreateTaskRequest,
    ) -> Result<(HullConfig, oci_spec::runtime::Spec, Role, Option<PathBuf>), ShimError> {
        let bundle = Path::new(&req.bundle);
        let mut cfg = crate::options::config_for_task(req.options.as_ref(), bundle)?;
        let mut spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            ShimError::Invalid {
                what: "bundle config.json",
                reason: e.to_string(),
            }
        })?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let role = Role::of(&annotations)?;
        for change in crate::annotations::apply(&mut cfg, &annotations)? {
            slog::info!(self.0.log, "configuration changed by annotation"; "change" => change);
        }
        let found = crate::sandbox::prepare_guest_spec(&mut spec, &req.id, &role)?;
        for note in found.notes {
            slog::warn!(self.0.log, "not carried into the guest"; "what" => note);
        }
        Ok((cfg, spec, role, found.host_netns))
    }

    async fn boot_and_create(
        &self,
        cfg: &HullConfig,
        req: &api::CreateTaskRequest,
        bundle_rootfs: &Path,
        mut guest_spec: oci_spec::runtime::Spec,
        host_netns: Option<PathBuf>,
    ) -> Result<Built, ShimError> {
        let booting = self.0.claims.claim(super::claims::VM_BOOT);
        if booting.is_none() || self.0.sandbox.lock().await.is_some() {
            return Err(ShimError::FailedPrecondition(format!(
                "shim {:?} already runs (or boots) a VM; {:?} is not a container of its pod",
                self.0.id, req.id
            )));
        }
        let network = attach_network(host_netns).await?;
        let nics = network.as_ref().map_or(0, |n| n.endpoints.len());
        let taken = crate::sandbox::take_or_prepare(cfg, &self.0.id, nics, &self.0.log).await?;
        // A taken VM is ended (its keeper's socket closed) if this fails.
        let share = Share::open(&VmPaths::new(&cfg.state_dir, &self.0.id))?;
        share.add_rootfs(bundle_rootfs, &req.id)?;
        share.add_volumes(&mut guest_spec, &req.id)?;
        let sandbox =
            Arc::new(Sandbox::boot(cfg, &self.0.id, &self.0.log, network, None, taken).await?);
        match self.create_in(&sandbox, req, guest_spec).await {
            Ok(stdio) => {
                *self.0.sandbox.lock().await = Some(sandbox.clone());
                Ok(Built {
                    sandbox,
                    stdio,
                    booted: true,
                })
            }
            Err(e) => {
                sandbox.shutdown().await;
                Err(e)
            }
        }
    }

    /// A pod container: into the VM its sandbox container booted.
    async fn join_pod(
        &self,
        req: &api::CreateTaskRequest,
        bundle_rootfs: &Path,
        mut guest_spec: oci_spec::runtime::Spec,
        sandbox_id: &str,
    ) -> Result<Built, ShimError> {
        let not_here = || {
            ShimError::FailedPrecondition(format!(
                "pod sandbox {sandbox_id:?} is not running in this shim ({:?})",
                self.0.id
            ))
        };
        if sandbox_id != self.0.id {
            return Err(not_here());
        }
        let sandbox = self.0.sandbox.lock().await.clone().ok_or_else(not_here)?;
        if let Some(why) = sandbox.died.borrow().clone() {
            return Err(ShimError::FailedPrecondition(format!(
                "pod sandbox {sandbox_id:?}: its VM died ({why})"
            )));
        }
        let share = Share::open(&sandbox.paths)?;
        share.add_rootfs(bundle_rootfs, &req.id)?;
        share.add_volumes(&mut guest_spec, &req.id)?;
        // Guest paths: added after the host volumes are carried in.
        if self.holds_api_pod() {
            crate::pod::bind_pod_files(&mut guest_spec)?;
        }
        let stdio = self.create_in(&sandbox, req, guest_spec).await?;
        Ok(Built {
            sandbox,
            stdio,
            booted: false,
        })
    }

    /// Starts what watches a newly booted VM: its OOM events and its
    /// agent's health.
    pub(super) fn watch_sandbox(&self, sandbox: &Arc<Sandbox>, cfg: &HullConfig) {
        tokio::spawn(self.clone().forward_oom_events(sandbox.clone()));
        tokio::spawn(sandbox.clone().monitor_health(
            Duration::from_secs(cfg.timeouts.health_interval_secs.max(1)),
            cfg.timeouts.health_failures.max(1),
            self.0.log.clone(),
        ));
    }

    /// Creates the container in the guest and connects its stdio; a
    /// container whose create failed (it may exist all the same, when the
    /// call timed out) or whose stdio cannot be connected is removed again,
    /// so a pod's VM keeps nothing of it.
    async fn create_in(
        &self,
        sandbox: &Sandbox,
        req: &api::CreateTaskRequest,
        guest_spec: oci_spec::runtime::Spec,
    ) -> Result<ProcessStdio, ShimError> {
        let paths = stdio_paths(req);
        let ahead =
            OutputsAhead::announce(sandbox.vsock.as_ref(), &req.id, &req.id, paths.terminal)
                .await?;
        if let Err(e) = sandbox.create_container(&req.id, guest_spec).await {
            remove_container(sandbox, &req.id, &self.0.log).await;
            return Err(e);
        }
        let stdio = ProcessStdio::attach(
            sandbox.vsock.as_ref(),
            ahead,
            &req.id,
            &req.id,
            &paths,
            &self.0.log,
        )
        .await;
        if stdio.is_err() {
            remove_container(sandbox, &req.id, &self.0.log).await;
        }
        stdio
    }

    pub(super) async fn delete(
        &self,
        req: api::DeleteRequest,
    ) -> Result<api::DeleteResponse, ShimError> {
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
        if task.id == self.0.id {
            // The VM's own task (alone, or a pod's sandbox container).
            self.teardown().await;
        } else {
            self.remove_pod_container(&task).await;
        }
        let exit = task.init.exit().unwrap_or_else(|| task.init.set_exit(137));
        self.tasks().remove(&req.id);
        self.publish(TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        });
        Ok(api::DeleteResponse {
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    /// One container of a pod: out of the guest and off the host; the VM
    /// stays for the others.
    async fn remove_pod_container(&self, task: &Task) {
        if let Some(sandbox) = self.0.sandbox.lock().await.clone() {
            if sandbox.died.borrow().is_none() {
                remove_container(&sandbox, &task.id, &self.0.log).await;
            }
        }
        task.release_stdio().await;
        task.undo_mounts();
    }

    /// Ends the VM and removes everything its tasks had on the host, in an
    /// order where nothing can reach into a still-mounted rootfs: VM and
    /// helpers, stdio, mounts, and last the state directory.
    pub(super) async fn teardown(&self) {
        let sandbox = self.0.sandbox.lock().await.take();
        if let Some(sandbox) = &sandbox {
            sandbox.shutdown().await;
        }
        let tasks: Vec<Arc<Task>> = self.tasks().values().cloned().collect();
        for task in tasks {
            task.release_stdio().await;
            task.undo_mounts();
        }
        if let Some(sandbox) = &sandbox {
            if let Err(e) = Share::remove_at(&sandbox.paths) {
                slog::error!(self.0.log, "state directory left behind"; "error" => %e);
            }
        }
    }
}

/// The pod's network namespace on the host wired to taps for the VM.
pub(super) async fn attach_network(
    host_netns: Option<PathBuf>,
) -> Result<Option<PodNetwork>, ShimError> {
    let Some(netns) = host_netns else {
        return Ok(None);
    };
    let attached = tokio::task::spawn_blocking(move || PodNetwork::attach(&netns))
        .await
        .map_err(|e| ShimError::io("pod network")(std::io::Error::other(e)))??;
    Ok(Some(attached))
}

async fn remove_container(sandbox: &Sandbox, id: &str, log: &slog::Logger) {
    let rm = agent::RemoveContainerRequest {
        container_id: id.into(),
        timeout: 10,
        ..Default::default()
    };
    let a = &sandbox.agent;
    match a.agent.remove_container(a.ctx(), &rm).await {
        Ok(_) => {}
        // Nothing of it in the guest: nothing to remove.
        Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::NOT_FOUND => {}
        Err(e) => slog::warn!(log, "RemoveContainer failed"; "container" => id, "error" => %e),
    }
}
