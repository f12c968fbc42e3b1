//! One task (container) of the shim: its state, its exit, its stdio.

use std::sync::Mutex;

use containerd_shim::api::Status;
use protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

use crate::io::{ProcessStdio, StdioPaths};

#[derive(Debug, Clone)]
pub struct ExitInfo {
    pub status: u32,
    pub at: Timestamp,
}

pub struct Task {
    pub id: String,
    pub bundle: String,
    /// The pid containerd sees for the task: its VM's QEMU.
    pub pid: u32,
    pub stdio_paths: StdioPaths,
    /// CREATED or RUNNING; STOPPED is derived from the exit.
    status: Mutex<Status>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    pub stdio: tokio::sync::Mutex<Option<ProcessStdio>>,
    /// Held by Start until TaskStart is published and taken before TaskExit
    /// is, so containerd always sees them in that order.
    pub lifecycle: tokio::sync::Mutex<()>,
}

impl Task {
    pub fn new(
        id: String,
        bundle: String,
        pid: u32,
        stdio_paths: StdioPaths,
        stdio: ProcessStdio,
    ) -> Self {
        Task {
            id,
            bundle,
            pid,
            stdio_paths,
            status: Mutex::new(Status::CREATED),
            exit_tx: watch::channel(None).0,
            stdio: tokio::sync::Mutex::new(Some(stdio)),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// STOPPED exactly when an exit is recorded, so whoever learns of the
    /// exit (Wait) can never then see the task still running.
    pub fn status(&self) -> Status {
        if self.exit_tx.borrow().is_some() {
            return Status::STOPPED;
        }
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// CREATED -> RUNNING; a task that already stopped stays stopped.
    pub fn mark_running(&self) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s == Status::CREATED {
            *s = Status::RUNNING;
        }
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.exit_tx.borrow().clone()
    }

    /// Records the exit once; later calls keep the first.
    pub fn set_exit(&self, status: u32) -> ExitInfo {
        let info = ExitInfo { status, at: now() };
        self.exit_tx.send_if_modified(|e| {
            if e.is_some() {
                return false;
            }
            *e = Some(info.clone());
            true
        });
        self.exit().unwrap_or(info)
    }

    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit_tx.subscribe();
        loop {
            if let Some(e) = rx.borrow_and_update().clone() {
                return e;
            }
            if rx.changed().await.is_err() {
                return ExitInfo {
                    status: 255,
                    at: now(),
                };
            }
        }
    }
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_never_sees_a_running_task_after_the_exit() {
        let stdio = crate::io::ProcessStdio::detached();
        let t = std::sync::Arc::new(Task::new(
            "t".into(),
            "/b".into(),
            1,
            StdioPaths::default(),
            stdio,
        ));
        t.mark_running();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move {
                let e = t.wait().await;
                (e.status, t.status())
            })
        };
        t.set_exit(137);
        let (code, status) = waiter.await.unwrap();
        assert_eq!((code, status), (137, Status::STOPPED));
        t.mark_running();
        assert_eq!(t.status(), Status::STOPPED, "a stopped task stays stopped");
    }
}
