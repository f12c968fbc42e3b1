//! One task (container) of the shim: its state, its exit, its stdio.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use containerd_shim::api::Status;
use protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

use crate::errors::ShimError;
use crate::io::{ProcessStdio, StdioPaths};
use crate::sandbox::HostMounts;

#[derive(Debug, Clone)]
pub struct ExitInfo {
    pub status: u32,
    pub at: Timestamp,
}

/// One process of a task, its init or an exec: state, exit and stdio.
pub struct Proc {
    /// The task id for the init, else the exec id.
    pub id: String,
    pub stdio_paths: StdioPaths,
    /// CREATED or RUNNING; STOPPED is derived from the exit.
    status: Mutex<Status>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    pub stdio: tokio::sync::Mutex<Option<ProcessStdio>>,
    /// Held by Start until its start event is published and taken before
    /// TaskExit is, so containerd always sees them in that order.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// An exec's process spec, until Start hands it to the agent.
    pub spec: Mutex<Option<oci_spec::runtime::Process>>,
}

impl Proc {
    pub fn new(id: String, stdio_paths: StdioPaths, stdio: Option<ProcessStdio>) -> Self {
        Proc {
            id,
            stdio_paths,
            status: Mutex::new(Status::CREATED),
            exit_tx: watch::channel(None).0,
            stdio: tokio::sync::Mutex::new(stdio),
            lifecycle: tokio::sync::Mutex::new(()),
            spec: Mutex::new(None),
        }
    }

    /// STOPPED exactly when an exit is recorded, so whoever learns of the
    /// exit (Wait) can never then see the process still running.
    pub fn status(&self) -> Status {
        if self.exit_tx.borrow().is_some() {
            return Status::STOPPED;
        }
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// CREATED -> RUNNING; a process that already stopped stays stopped.
    pub fn mark_running(&self) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if *s == Status::CREATED {
            *s = Status::RUNNING;
        }
    }

    /// RUNNING <-> PAUSED; anything else is left as it is and reported.
    pub fn set_paused(&self, paused: bool) -> Result<(), Status> {
        let (from, to) = if paused {
            (Status::RUNNING, Status::PAUSED)
        } else {
            (Status::PAUSED, Status::RUNNING)
        };
        let current = self.status();
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if current != from {
            return Err(current);
        }
        *s = to;
        Ok(())
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

/// A task (container): its init and the processes exec'd into it.
pub struct Task {
    pub id: String,
    pub bundle: String,
    /// The pid containerd sees for the task and its execs: its VM's QEMU.
    pub pid: u32,
    pub init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    /// Its rootfs and volumes on the host, undone at delete.
    mounts: Mutex<Option<HostMounts>>,
}

impl Task {
    pub fn new(id: String, bundle: String, pid: u32, init: Proc) -> Self {
        Task {
            id,
            bundle,
            pid,
            init: Arc::new(init),
            execs: Mutex::new(HashMap::new()),
            mounts: Mutex::new(None),
        }
    }

    pub fn set_mounts(&self, m: HostMounts) {
        *self.mounts.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
    }

    /// Unmounts the task's rootfs and volumes on the host. Idempotent.
    pub fn undo_mounts(&self) {
        if let Some(m) = self.mounts.lock().unwrap_or_else(|e| e.into_inner()).take() {
            m.undo();
        }
    }

    /// Releases the stdio copies of the init and every exec.
    pub async fn release_stdio(&self) {
        for proc in std::iter::once(self.init.clone()).chain(self.execs()) {
            if let Some(stdio) = proc.stdio.lock().await.take() {
                stdio.release();
            }
        }
    }

    fn exec_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The init for an empty exec id, else that exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>, ShimError> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.exec_map()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("exec {exec_id:?} in task {:?}", self.id)))
    }

    pub fn add_exec(&self, p: Proc) -> Result<Arc<Proc>, ShimError> {
        let mut map = self.exec_map();
        if p.id == self.id || map.contains_key(&p.id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {:?} in task {:?}",
                p.id, self.id
            )));
        }
        let p = Arc::new(p);
        map.insert(p.id.clone(), p.clone());
        Ok(p)
    }

    pub fn remove_exec(&self, exec_id: &str) {
        self.exec_map().remove(exec_id);
    }

    pub fn execs(&self) -> Vec<Arc<Proc>> {
        self.exec_map().values().cloned().collect()
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
        let t = Arc::new(Proc::new(
            "t".into(),
            StdioPaths::default(),
            Some(crate::io::ProcessStdio::detached()),
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

    #[test]
    fn only_a_running_process_pauses_and_only_a_paused_one_resumes() {
        let p = Proc::new("c".into(), StdioPaths::default(), None);
        assert_eq!(p.set_paused(true), Err(Status::CREATED));
        p.mark_running();
        assert_eq!(p.set_paused(false), Err(Status::RUNNING));
        p.set_paused(true).unwrap();
        assert_eq!(p.status(), Status::PAUSED);
        p.set_paused(false).unwrap();
        assert_eq!(p.status(), Status::RUNNING);
        p.set_paused(true).unwrap();
        p.set_exit(137);
        assert_eq!(p.set_paused(false), Err(Status::STOPPED));
    }

    #[test]
    fn exec_ids_are_unique_and_lookups_name_what_is_missing() {
        let init = Proc::new("c".into(), StdioPaths::default(), None);
        let task = Task::new("c".into(), "/b".into(), 1, init);
        task.add_exec(Proc::new("e1".into(), StdioPaths::default(), None))
            .unwrap();
        let dup = task.add_exec(Proc::new("e1".into(), StdioPaths::default(), None));
        assert!(matches!(dup, Err(ShimError::AlreadyExists(_))));
        let clash = task.add_exec(Proc::new("c".into(), StdioPaths::default(), None));
        assert!(matches!(clash, Err(ShimError::AlreadyExists(_))));
        assert_eq!(task.process("").unwrap().id, "c");
        assert_eq!(task.process("e1").unwrap().id, "e1");
        task.remove_exec("e1");
        let err = task.process("e1").err().unwrap().to_string();
        assert!(err.contains("e1") && err.contains("\"c\""), "{err}");
    }
}
