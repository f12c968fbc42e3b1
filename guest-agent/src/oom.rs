//! OOM kills in container cgroups, for GetOOMEvent. On cgroup v2 one
//! inotify instance watches every container's `memory.events`, and a rise of
//! its `oom_kill` count queues the container's id. On cgroup v1 each
//! container's `memory.oom_control` is armed with an eventfd
//! (`cgroup.event_control`) that a thread waits on until the cgroup goes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::sync::mpsc;

struct Watched {
    container_id: String,
    events_file: PathBuf,
    oom_kills: u64,
}

pub struct OomWatcher {
    inotify: Inotify,
    watches: Mutex<HashMap<WatchDescriptor, Watched>>,
    tx: mpsc::UnboundedSender<String>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    log: slog::Logger,
}

/// The `oom_kill` count in a `memory.events` file (0 when unreadable).
pub fn oom_kills(events_file: &Path) -> u64 {
    let text = std::fs::read_to_string(events_file).unwrap_or_default();
    rustjail::stats::parse_flat_keyed(&text)
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

impl OomWatcher {
    /// Starts the watcher's thread (inotify reads block).
    pub fn start(log: slog::Logger) -> std::io::Result<Arc<Self>> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Arc::new(OomWatcher {
            inotify,
            watches: Mutex::new(HashMap::new()),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            log,
        });
        let w = watcher.clone();
        std::thread::Builder::new()
            .name("oom-watch".into())
            .spawn(move || w.run())?;
        Ok(watcher)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<WatchDescriptor, Watched>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            let events = match self.inotify.read_events() {
                Ok(e) => e,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    slog::error!(self.log, "OOM watch stopped"; "error" => %e);
                    return;
                }
            };
            for event in events {
                let mut map = self.map();
                let Some(w) = map.get_mut(&event.wd) else {
                    continue;
                };
                let now = oom_kills(&w.events_file);
                if now > w.oom_kills {
                    w.oom_kills = now;
                    slog::warn!(self.log, "OOM kill in container"; "container" => &w.container_id, "oom_kills" => now);
                    let _ = self.tx.send(w.container_id.clone());
                }
            }
        }
    }

    /// Watches a container's cgroup v2 directory. Without `memory.events`
    /// (cgroup v1, memory controller off) there is nothing to watch.
    pub fn watch(&self, container_id: &str, cgroup_dir: &Path) -> nix::Result<()> {
        let events_file = cgroup_dir.join("memory.events");
        let wd = self
            .inotify
            .add_watch(&events_file, AddWatchFlags::IN_MODIFY)?;
        let oom_kills = oom_kills(&events_file);
        self.map().insert(
            wd,
            Watched {
                container_id: container_id.to_string(),
                events_file,
                oom_kills,
            },
        );
        Ok(())
    }

    /// Watches a container's cgroup v1 memory directory: the kernel
    /// signals the eventfd on every OOM in the cgroup and when the cgroup is
    /// removed, which ends the watch.
    pub fn watch_v1(&self, container_id: &str, memory_dir: &Path) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let efd = nix::sys::eventfd::EventFd::from_flags(nix::sys::eventfd::EfdFlags::EFD_CLOEXEC)?;
        let control_file = memory_dir.join("memory.oom_control");
        let control = std::fs::File::open(&control_file)?;
        std::fs::write(
            memory_dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )?;
        let (id, tx, log) = (container_id.to_string(), self.tx.clone(), self.log.clone());
        let dir = memory_dir.to_path_buf();
        std::thread::Builder::new()
            .name("oom-watch-v1".into())
            .spawn(move || {
                let _control = control;
                // The kernel signals when the cgroup goes OOM, before its
                // victim is killed (so `oom_kill` may not have risen yet),
                // and when the cgroup is removed, which ends the watch.
                while efd.read().is_ok() && dir.exists() {
                    slog::warn!(log, "OOM in container"; "container" => &id);
                    let _ = tx.send(id.clone());
                }
            })?;
        Ok(())
    }

    pub fn unwatch(&self, container_id: &str) {
        let mut map = self.map();
        let wds: Vec<_> = map
            .iter()
            .filter(|(_, w)| w.container_id == container_id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in wds {
            map.remove(&wd);
            // The watch is gone already when its cgroup was removed.
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// The next container with an OOM kill; waits as long as it takes.
    pub async fn next(&self) -> Option<String> {
        self.rx.lock().await.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_count_is_read_from_memory_events() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(&f), 1);
        assert_eq!(oom_kills(&dir.path().join("missing")), 0);
    }

    #[tokio::test]
    async fn a_rising_oom_kill_count_queues_the_container() {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let w = OomWatcher::start(log).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.events");
        std::fs::write(&f, "oom 0\noom_kill 0\n").unwrap();
        w.watch("c1", dir.path()).unwrap();
        // A change that is not a kill queues nothing.
        std::fs::write(&f, "oom 1\noom_kill 0\n").unwrap();
        std::fs::write(&f, "oom 1\noom_kill 1\n").unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), w.next()).await;
        assert_eq!(got.unwrap().as_deref(), Some("c1"));
        let none = tokio::time::timeout(std::time::Duration::from_millis(200), w.next()).await;
        assert!(none.is_err(), "one kill, one event");
        w.unwatch("c1");
    }
}
