//! Pause/resume, Update and Stats: requests about a running task that the
//! agent answers from the guest's cgroup.

use std::sync::Arc;

use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::protos::events::task::{TaskPaused, TaskResumed};
use protobuf::MessageField;
use protocols::agent;

use super::HullShim;
use crate::errors::ShimError;
use crate::sandbox::Sandbox;

impl HullShim {
    /// Pause (freeze) or resume the whole task in the guest, then publish
    /// TaskPaused / TaskResumed.
    pub(super) async fn set_paused(&self, id: &str, pause: bool) -> Result<(), ShimError> {
        let task = self.task(id)?;
        let wanted = if pause {
            Status::RUNNING
        } else {
            Status::PAUSED
        };
        if task.init.status() != wanted {
            return Err(ShimError::FailedPrecondition(format!(
                "task {id:?} is {:?}: cannot {}",
                task.init.status(),
                if pause { "pause" } else { "resume" }
            )));
        }
        let sandbox = self.sandbox().await?;
        let a = &sandbox.agent;
        if pause {
            let req = agent::PauseContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            a.agent
                .pause_container(a.ctx(), &req)
                .await
                .map_err(ShimError::agent("PauseContainer"))?;
        } else {
            let req = agent::ResumeContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            a.agent
                .resume_container(a.ctx(), &req)
                .await
                .map_err(ShimError::agent("ResumeContainer"))?;
        }
        task.init.set_paused(pause).map_err(|now| {
            ShimError::FailedPrecondition(format!("task {id:?} became {now:?} meanwhile"))
        })?;
        let container_id = id.to_string();
        if pause {
            self.publish(TaskPaused {
                container_id,
                ..Default::default()
            });
        } else {
            self.publish(TaskResumed {
                container_id,
                ..Default::default()
            });
        }
        Ok(())
    }

    /// New resource limits for a running task, applied to its guest cgroup.
    pub(super) async fn update(&self, req: &api::UpdateTaskRequest) -> Result<(), ShimError> {
        let task = self.task(&req.id)?;
        if task.init.status() == Status::STOPPED {
            return Err(ShimError::FailedPrecondition(format!(
                "task {:?} has stopped: nothing to update",
                req.id
            )));
        }
        let any = req.resources.as_ref().ok_or(ShimError::Invalid {
            what: "resources",
            reason: "missing".into(),
        })?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| ShimError::Invalid {
                what: "resources",
                reason: e.to_string(),
            })?;
        let json = serde_json::to_string(&resources)
            .map_err(|e| ShimError::io("encode resources")(std::io::Error::other(e)))?;
        let sandbox = self.sandbox().await?;
        let a = &sandbox.agent;
        let update = agent::UpdateContainerRequest {
            container_id: req.id.clone(),
            hull_oci_resources_json: json,
            ..Default::default()
        };
        a.agent
            .update_container(a.ctx(), &update)
            .await
            .map_err(ShimError::agent("UpdateContainer"))?;
        Ok(())
    }

    /// The container's processes, by their pids in the guest (the only
    /// pid namespace they have).
    pub(super) async fn pids(&self, id: &str) -> Result<api::PidsResponse, ShimError> {
        let (stats, _) = self.container_stats(id).await?;
        let processes = stats
            .hull_pids
            .iter()
            .map(|&pid| containerd_shim::protos::types::task::ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub(super) async fn stats(&self, id: &str) -> Result<api::StatsResponse, ShimError> {
        let (stats, sandbox) = self.container_stats(id).await?;
        let any = crate::metrics::to_any(&stats, sandbox.metrics)
            .map_err(ShimError::io("encode metrics"))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// The agent's statistics of a running task, and the sandbox it is in.
    pub(super) async fn container_stats(
        &self,
        id: &str,
    ) -> Result<(agent::StatsContainerResponse, Arc<Sandbox>), ShimError> {
        let task = self.task(id)?;
        if task.init.status() == Status::STOPPED {
            return Err(ShimError::FailedPrecondition(format!(
                "task {id:?} has stopped: no processes or statistics"
            )));
        }
        let sandbox = self.sandbox().await?;
        let req = agent::StatsContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let a = &sandbox.agent;
        let stats = a
            .agent
            .stats_container(a.ctx(), &req)
            .await
            .map_err(ShimError::agent("StatsContainer"))?;
        Ok((stats, sandbox))
    }
}
