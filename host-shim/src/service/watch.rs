//! What the shim watches for the life of a sandbox: each process's exit
//! (or the VM's death), and the guest's OOM kills.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use protobuf::MessageField;
use protocols::agent;

use super::{HullShim, VM_DIED_STATUS};
use crate::sandbox::Sandbox;
use crate::task::{Proc, Task};

impl HullShim {
    /// Publishes TaskOOM for every OOM kill the agent reports, for the
    /// sandbox's life.
    pub(super) async fn forward_oom_events(self, sandbox: Arc<Sandbox>) {
        let a = &sandbox.agent;
        let req = agent::GetOOMEventRequest::new();
        loop {
            let next = tokio::select! {
                r = a.agent.get_oom_event(a.long_poll(), &req) => r,
                _ = sandbox.ended() => return,
            };
            match next {
                Ok(event) => {
                    slog::warn!(self.0.log, "OOM kill in the guest"; "container" => &event.container_id);
                    self.publish(TaskOOM {
                        container_id: event.container_id,
                        ..Default::default()
                    })
                    .await;
                }
                Err(e) => {
                    slog::warn!(self.0.log, "GetOOMEvent failed"; "error" => %e);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = sandbox.ended() => return,
                    }
                }
            }
        }
    }

    /// Waits for a process's exit (or the VM's death), then for its output
    /// to be delivered, then records and publishes the exit.
    pub(super) async fn watch_exit(self, task: Arc<Task>, proc: Arc<Proc>, sandbox: Arc<Sandbox>) {
        let wait = agent::WaitProcessRequest {
            container_id: task.id.clone(),
            exec_id: proc.id.clone(),
            ..Default::default()
        };
        let mut died = sandbox.died.clone();
        let status = tokio::select! {
            r = sandbox.agent.agent.wait_process(sandbox.agent.long_poll(), &wait) => match r {
                Ok(resp) => resp.status as u32,
                Err(e) => {
                    slog::error!(self.0.log, "WaitProcess failed"; "error" => %e);
                    VM_DIED_STATUS
                }
            },
            reason = died.wait_for(|d| d.is_some()) => {
                let reason = reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
                slog::error!(self.0.log, "vm died under the task"; "reason" => reason);
                VM_DIED_STATUS
            }
        };
        let outputs = proc
            .stdio
            .lock()
            .await
            .as_mut()
            .map(|s| s.take_outputs())
            .unwrap_or_default();
        // After a VM death the streams are gone; don't wait on them long.
        let grace = if status == VM_DIED_STATUS {
            Duration::from_secs(1)
        } else {
            Duration::MAX
        };
        let _ = tokio::time::timeout(grace, futures_join(outputs)).await;
        let _order = proc.lifecycle.lock().await;
        let exit = proc.set_exit(status);
        self.publish(TaskExit {
            container_id: task.id.clone(),
            id: proc.id.clone(),
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
        .await;
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
