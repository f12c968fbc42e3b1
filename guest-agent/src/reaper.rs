//! Child reaping. The agent is PID 1 (or a subreaper), so every orphan in
//! the guest ends up as its child; exit statuses go to whoever waits for
//! that pid.
//!
//! A status that arrives before its waiter registered is kept, numbered in
//! reaping order, for a short while. A pid is reused once its holder is
//! reaped, so a kept status may belong to an earlier process with the same
//! pid (a container init's forking step, which nobody waits for): a waiter
//! says from which reaping on a status can be its process's ([`Reaper::mark`],
//! taken before the process is started), and older ones are never handed
//! to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Exit statuses not claimed yet are kept up to this many (the oldest go
/// first) ...
const MAX_UNCLAIMED: usize = 4096;
/// ... and this long: a waiter registers within milliseconds of learning
/// its pid, so a status older than this belongs to a process nobody waits
/// for.
const UNCLAIMED_FOR: Duration = Duration::from_secs(30);

/// The exit status of a process, as a shell reports it: the exit code, or
/// 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The reaping count before a process was started: only statuses reaped
/// after it can be that process's.
#[derive(Clone, Copy, Debug)]
pub struct Mark(u64);

struct Unclaimed {
    /// Its number in reaping order.
    seq: u64,
    at: Instant,
    code: i32,
}

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, watch::Sender<Option<i32>>>,
    unclaimed: HashMap<i32, Vec<Unclaimed>>,
    reaped: u64,
}

impl Table {
    fn keep(&mut self, pid: i32, code: i32) {
        let now = Instant::now();
        self.unclaimed.retain(|_, kept| {
            kept.retain(|u| now.duration_since(u.at) < UNCLAIMED_FOR);
            !kept.is_empty()
        });
        let count: usize = self.unclaimed.values().map(Vec::len).sum();
        if count >= MAX_UNCLAIMED {
            let oldest = self
                .unclaimed
                .iter()
                .min_by_key(|(_, kept)| kept[0].seq)
                .map(|(pid, _)| *pid);
            if let Some(pid) = oldest {
                self.unclaimed.entry(pid).and_modify(|kept| {
                    kept.remove(0);
                });
            }
        }
        self.unclaimed.entry(pid).or_default().push(Unclaimed {
            seq: self.reaped,
            at: now,
            code,
        });
    }

    /// The first status kept for `pid` reaped after `since`; older ones
    /// (earlier processes with that pid) are dropped.
    fn claim(&mut self, pid: i32, since: Mark) -> Option<i32> {
        let kept = self.unclaimed.remove(&pid)?;
        let mut newer = kept.into_iter().filter(|u| u.seq > since.0);
        let mine = newer.next().map(|u| u.code);
        let rest: Vec<_> = newer.collect();
        if !rest.is_empty() {
            self.unclaimed.insert(pid, rest);
        }
        mine
    }
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
        t.reaped += 1;
        if let Some(tx) = t.waiting.remove(&pid) {
            let _ = tx.send(Some(code));
        } else {
            t.keep(pid, code);
        }
    }

    /// Taken before starting a process, and given to [`Reaper::watch`]
    /// with its pid.
    pub fn mark(&self) -> Mark {
        Mark(self.table.lock().unwrap_or_else(|e| e.into_inner()).reaped)
    }

    /// A receiver that yields the exit status of the process `pid`,
    /// started after `since`, once it is reaped.
    pub fn watch(&self, pid: i32, since: Mark) -> watch::Receiver<Option<i32>> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(code) = t.claim(pid, since) {
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
        let since = r.mark();
        r.deliver(42, 7);
        assert_eq!(*r.watch(42, since).borrow(), Some(7));
    }

    #[test]
    fn a_status_from_before_the_start_is_never_handed_over() {
        let r = Reaper::default();
        r.deliver(42, 0);
        let since = r.mark();
        let rx = r.watch(42, since);
        assert_eq!(*rx.borrow(), None, "an earlier process's status");
        r.deliver(42, 3);
        assert_eq!(*rx.borrow(), Some(3));
    }

    #[test]
    fn two_processes_with_one_pid_each_get_their_own() {
        let r = Reaper::default();
        let first = r.mark();
        r.deliver(42, 1);
        let second = r.mark();
        r.deliver(42, 2);
        assert_eq!(*r.watch(42, first).borrow(), Some(1));
        assert_eq!(*r.watch(42, second).borrow(), Some(2));
    }

    #[test]
    fn unclaimed_statuses_are_bounded() {
        let r = Reaper::default();
        for pid in 0..(MAX_UNCLAIMED as i32 + 10) {
            r.deliver(pid, 0);
        }
        let t = r.table.lock().unwrap();
        assert_eq!(
            t.unclaimed.values().map(Vec::len).sum::<usize>(),
            MAX_UNCLAIMED
        );
        assert!(!t.unclaimed.contains_key(&0), "the oldest went first");
    }

    #[test]
    fn registered_waiter_gets_status() {
        let r = Reaper::default();
        let rx = r.watch(43, r.mark());
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
