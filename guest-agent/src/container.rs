//! The containers and processes the agent runs. The registry lock is held
//! only to look up, insert or remove; never across a blocking call.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use protocols::stream::StreamKind;
use rustjail::cgroups::ContainerCgroup;
use rustjail::container::Created;
use tokio::sync::watch;

use crate::errors::AgentError;
use crate::stdio::ProcessIo;

pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    exit: watch::Receiver<Option<i32>>,
    pub io: ProcessIo,
    /// Set once WaitProcess has returned the exit status.
    collected: AtomicBool,
}

impl Process {
    pub fn new(
        exec_id: String,
        pid: i32,
        exit: watch::Receiver<Option<i32>>,
        io: ProcessIo,
    ) -> Self {
        Process {
            exec_id,
            pid,
            exit,
            io,
            collected: AtomicBool::new(false),
        }
    }

    /// Claims one of the process's streams for the raw path or the RPCs:
    /// each has one owner, and a second claim is ALREADY_EXISTS.
    pub fn take_stream(&self, container_id: &str, kind: StreamKind) -> Result<OwnedFd, AgentError> {
        self.io.take(kind).ok_or_else(|| AgentError::StreamTaken {
            container_id: container_id.to_string(),
            exec_id: self.exec_id.clone(),
            stream: kind.as_str(),
        })
    }

    pub fn mark_collected(&self) {
        self.collected.store(true, Ordering::SeqCst);
    }

    pub fn collected(&self) -> bool {
        self.collected.load(Ordering::SeqCst)
    }

    /// Waits for the exit status (exit code, or 128 + signal).
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return code;
            }
            if rx.changed().await.is_err() {
                // The reaper is gone, which only happens at shutdown.
                return 255;
            }
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }
}

pub struct Container {
    pub id: String,
    pub init: Arc<Process>,
    pub cgroup_path: String,
    /// Guest mounts made for this container, unmounted on removal.
    pub mounts: Vec<PathBuf>,
    /// Its seccomp profile, applied to its execs too.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The created-but-not-started init; taken by StartContainer.
    pending_start: Mutex<Option<Created>>,
    /// Exec'd processes by exec id; `None` while one is being started, so
    /// two ExecProcess calls with one id cannot both win.
    execs: Mutex<HashMap<String, Option<Arc<Process>>>>,
}

/// Holds an exec id while its process is being started; released on drop
/// unless [`ExecSlot::fill`]ed.
pub struct ExecSlot {
    container: Arc<Container>,
    exec_id: String,
    filled: bool,
}

impl ExecSlot {
    pub fn fill(mut self, p: Arc<Process>) {
        self.container
            .exec_map()
            .insert(self.exec_id.clone(), Some(p));
        self.filled = true;
    }
}

impl Drop for ExecSlot {
    fn drop(&mut self) {
        if !self.filled {
            self.container.exec_map().remove(&self.exec_id);
        }
    }
}

impl Container {
    pub fn new(
        id: String,
        init: Arc<Process>,
        created: Created,
        mounts: Vec<PathBuf>,
        seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    ) -> Self {
        Container {
            id,
            init,
            cgroup_path: created.cgroup.path().to_string(),
            mounts,
            seccomp,
            pending_start: Mutex::new(Some(created)),
            execs: Mutex::new(HashMap::new()),
        }
    }

    fn exec_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Process>>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container's cgroup.
    pub fn cgroup(&self) -> ContainerCgroup {
        ContainerCgroup::load(&self.cgroup_path)
    }

    /// Refuses `action` once the container's init has exited.
    pub fn require_alive(&self, action: &'static str) -> Result<(), AgentError> {
        if self.init.exit_code().is_some() {
            return Err(AgentError::WrongState {
                id: self.id.clone(),
                state: "stopped",
                action,
            });
        }
        Ok(())
    }

    /// Refuses `action` unless the container is started and alive.
    pub fn require_running(&self, action: &'static str) -> Result<(), AgentError> {
        if self.is_pending_start() {
            return Err(AgentError::WrongState {
                id: self.id.clone(),
                state: "created but not started",
                action,
            });
        }
        self.require_alive(action)
    }

    /// Reserves `exec_id` for a new process in this running container.
    pub fn reserve_exec(self: &Arc<Self>, exec_id: &str) -> Result<ExecSlot, AgentError> {
        self.require_running("exec into it")?;
        let mut map = self.exec_map();
        if exec_id == self.init.exec_id || map.contains_key(exec_id) {
            return Err(AgentError::ExecExists {
                container_id: self.id.clone(),
                exec_id: exec_id.to_string(),
            });
        }
        map.insert(exec_id.to_string(), None);
        Ok(ExecSlot {
            container: self.clone(),
            exec_id: exec_id.to_string(),
            filled: false,
        })
    }

    pub fn exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.exec_map().get(exec_id).cloned().flatten()
    }

    /// Forgets an exec'd process (once its exit has been collected).
    pub fn remove_exec(&self, exec_id: &str) {
        self.exec_map().remove(exec_id);
    }

    fn is_pending_start(&self) -> bool {
        self.pending_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn take_pending_start(&self) -> Option<Created> {
        self.pending_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Every pid in the container's cgroup.
    pub fn pids(&self) -> Vec<u32> {
        self.cgroup().pids()
    }
}

#[derive(Default)]
pub struct Registry {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids being created, so two concurrent creates of one id cannot both win.
    reserved: Mutex<HashSet<String>>,
    /// Output streams announced for processes not created yet.
    pub direct: crate::direct_stream::DirectStreams,
}

/// Holds an id reservation; released on drop.
pub struct Reservation<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.registry
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, AgentError> {
        let exists = self.map().contains_key(id);
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if exists || !reserved.insert(id.to_string()) {
            return Err(AgentError::AlreadyExists(id.to_string()));
        }
        Ok(Reservation {
            registry: self,
            id: id.to_string(),
        })
    }

    pub fn insert(&self, _reservation: Reservation<'_>, c: Arc<Container>) {
        self.map().insert(c.id.clone(), c);
    }

    pub fn get(&self, id: &str) -> Result<Arc<Container>, AgentError> {
        self.map()
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::ContainerNotFound(id.to_string()))
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Container>> {
        self.map().remove(id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// A process by container and exec id; an empty exec id (or the init's
    /// own) names the container's init.
    pub fn process(&self, container_id: &str, exec_id: &str) -> Result<Arc<Process>, AgentError> {
        let c = self.get(container_id)?;
        if exec_id.is_empty() || exec_id == c.init.exec_id {
            return Ok(c.init.clone());
        }
        if let Some(p) = c.exec(exec_id) {
            return Ok(p);
        }
        Err(AgentError::ProcessNotFound {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
        })
    }
}
