//! What the shim watches for the life of a sandbox: each process's exit
//! (or the VM's death), and the guest's OOM kills.

use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use protobuf::MessageField;
use protocols::agent;

use super::{HullShim, VM_DIED_STATUS};
use crate::guest_log::RateLimit;
use crate::sandbox::Sandbox;
use crate::task::{Proc, Task};

/// TaskOOM events published at most this many a second on average...
const OOM_RATE: f64 = 10.0;
/// ...in bursts of at most this many.
const OOM_BURST: f64 = 20.0;

/// Which OOM kills the guest reports become TaskOOM: only those of a task
/// this shim created, and no more than [`OOM_RATE`] a second. The guest
/// decides what it reports; the host decides what it believes.
struct OomGate {
    publish: RateLimit,
    /// Log lines about refused events, so refusing cannot flood the log.
    warn: RateLimit,
}

impl OomGate {
    fn new() -> Self {
        OomGate {
            publish: RateLimit::new(OOM_RATE, OOM_BURST),
            warn: RateLimit::new(1.0, 5.0),
        }
    }

    /// Whether to publish an event for a container that `owned` says is
    /// (or is not) a task of this shim; and whether to log a refusal.
    fn admit(&mut self, owned: bool, now: Instant) -> (bool, bool) {
        if owned && self.publish.allow(now) {
            return (true, false);
        }
        (false, self.warn.allow(now))
    }
}

impl HullShim {
    /// Publishes TaskOOM for every OOM kill the agent reports, for the
    /// sandbox's life.
    pub(super) async fn forward_oom_events(self, sandbox: Arc<Sandbox>) {
        let a = &sandbox.agent;
        let req = agent::GetOOMEventRequest::new();
        let mut gate = OomGate::new();
        loop {
            let next = tokio::select! {
                r = a.agent.get_oom_event(a.long_poll(), &req) => r,
                _ = sandbox.ended() => return,
            };
            match next {
                Ok(event) => {
                    let owned = self.tasks().contains_key(&event.container_id);
                    let (publish, warn) = gate.admit(owned, Instant::now());
                    if !publish {
                        if warn {
                            slog::warn!(self.0.log, "OOM event from the guest refused";
                                "container" => &event.container_id, "ours" => owned);
                        }
                        continue;
                    }
                    slog::warn!(self.0.log, "OOM kill in the guest"; "container" => &event.container_id);
                    self.publish(TaskOOM {
                        container_id: event.container_id,
                        ..Default::default()
                    });
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
        // Output written before the exit is still on its way; the guest
        // decides when the streams end, so the wait for them is bounded.
        // After a VM death the streams are gone: a short wait.
        let bound = if status == VM_DIED_STATUS {
            Duration::from_secs(1)
        } else {
            sandbox.exit_output
        };
        let exited = Instant::now();
        if !finish_outputs(outputs, bound).await {
            slog::warn!(self.0.log, "output still open after the exit; cut";
                "container" => &task.id, "exec" => &proc.id, "waited" => ?bound);
        }
        let _order = proc.lifecycle.lock().await;
        let exit = proc.set_exit(status);
        slog::info!(self.0.log, "process exited"; "container" => &task.id, "exec" => &proc.id,
            "status" => exit.status, "output_wait_us" => exited.elapsed().as_micros());
        self.publish(TaskExit {
            container_id: task.id.clone(),
            id: proc.id.clone(),
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        });
    }
}

/// Waits up to `bound` for the output copies to end; the ones still
/// running then are ended (containerd's FIFOs see EOF). Whether all ended
/// by themselves.
async fn finish_outputs(handles: Vec<tokio::task::JoinHandle<()>>, bound: Duration) -> bool {
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    let all = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let ended = tokio::time::timeout(bound, all).await.is_ok();
    for a in aborts {
        a.abort();
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_events_are_believed_for_own_tasks_only_and_at_a_bounded_rate() {
        let mut gate = OomGate::new();
        let t0 = Instant::now();
        assert_eq!(gate.admit(false, t0), (false, true), "a stranger's id");
        let published = (0..1000).filter(|_| gate.admit(true, t0).0).count();
        assert_eq!(published, OOM_BURST as usize, "a flood is cut to the burst");
        let later = t0 + Duration::from_secs(1);
        let published = (0..1000).filter(|_| gate.admit(true, later).0).count();
        assert_eq!(published, OOM_RATE as usize);
        let refusals_logged = (0..1000).filter(|_| gate.admit(false, later).1).count();
        assert!(
            refusals_logged <= 5,
            "{refusals_logged} log lines for refusals"
        );
    }

    /// A guest that keeps a stream open after the exit: the wait ends at
    /// its bound, and the copy is ended with it.
    #[tokio::test]
    async fn output_held_open_after_the_exit_is_cut_at_the_bound() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let forever = tokio::spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        let done = tokio::spawn(async {});
        let start = Instant::now();
        assert!(!finish_outputs(vec![done, forever], Duration::from_millis(300)).await);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(rx.await.is_err(), "the held copy was ended");
        let done = tokio::spawn(async {});
        assert!(finish_outputs(vec![done], Duration::from_secs(5)).await);
    }
}
