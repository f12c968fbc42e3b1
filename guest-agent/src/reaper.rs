//! Child reaping. The agent is PID 1 (or a subreaper), so every orphan in
//! the guest ends up as its child; exit statuses go to whoever waits for
//! that pid, and a status that arrives before its waiter registered is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Exit statuses not claimed yet are kept up to this many.
const MAX_UNCLAIMED: usize = 4096;

/// The exit status of a process, as a shell reports it: the exit code, or
/// 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, watch::Sender<Option<i32>>>,
    unclaimed: HashMap<i32, i32>,
}

#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD.
    pub fn start(log: slog::Logger) -> std::io::Result<Self> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all(&log);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    fn reap_all(&self, log: &slog::Logger) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let (Some(pid), Some(code)) = (status.pid(), exit_code(status)) else {
                        continue;
                    };
                    slog::debug!(log, "reaped"; "pid" => pid.as_raw(), "status" => code);
                    self.deliver(pid.as_raw(), code);
                }
            }
        }
    }

    fn deliver(&self, pid: i32, code: i32) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = t.waiting.remove(&pid) {
            let _ = tx.send(Some(code));
        } else {
            if t.unclaimed.len() >= MAX_UNCLAIMED {
                t.unclaimed.clear();
            }
            t.unclaimed.insert(pid, code);
        }
    }

    /// A receiver that yields `pid`'s exit status once it is reaped.
    pub fn watch(&self, pid: i32) -> watch::Receiver<Option<i32>> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(code) = t.unclaimed.remove(&pid) {
            return watch::channel(Some(code)).1;
        }
        let (tx, rx) = watch::channel(None);
        t.waiting.insert(pid, tx);
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_status_is_kept_for_the_late_waiter() {
        let r = Reaper::default();
        r.deliver(42, 7);
        assert_eq!(*r.watch(42).borrow(), Some(7));
    }

    #[test]
    fn registered_waiter_gets_status() {
        let r = Reaper::default();
        let rx = r.watch(43);
        assert_eq!(*rx.borrow(), None);
        r.deliver(43, 137);
        assert_eq!(*rx.borrow(), Some(137));
    }

    #[test]
    fn signal_maps_to_128_plus() {
        let s = WaitStatus::Signaled(Pid::from_raw(1), nix::sys::signal::Signal::SIGKILL, false);
        assert_eq!(exit_code(s), Some(137));
    }
}
