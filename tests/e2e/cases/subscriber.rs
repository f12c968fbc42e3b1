//! containerd's events as a client sees them, across containerd restarts.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::env::Env;

/// `ctr events`, started the moment containerd's socket appears and again
/// whenever it ends, until dropped; its lines collected.
pub(super) struct EventSubscriber {
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines already read and not yet matched.
    seen: std::cell::RefCell<Vec<String>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    child: std::sync::Arc<std::sync::Mutex<Option<std::process::Child>>>,
}

impl EventSubscriber {
    pub(super) fn start(env: &Env) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (tx, lines) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let child = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (flag, running, sock) = (stop.clone(), child.clone(), env.sock.clone());
        let mut cmd = env.ctr();
        cmd.arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if !sock.exists() {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let Ok(mut ctr) = cmd.spawn() else { return };
                let out = ctr.stdout.take();
                *running.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctr);
                // Dropped meanwhile: Drop set the flag before it took the child.
                if flag.load(Ordering::SeqCst) {
                    end_child(&running);
                    return;
                }
                for line in out.into_iter().flat_map(|o| {
                    std::io::BufRead::lines(std::io::BufReader::new(o)).map_while(Result::ok)
                }) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                end_child(&running);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        EventSubscriber {
            lines,
            seen: Default::default(),
            stop,
            child,
        }
    }

    /// Whether a line satisfying `is` arrived (or arrives within `limit`);
    /// a matched line is consumed.
    pub(super) fn wait_for(&self, is: impl Fn(&str) -> bool, limit: Duration) -> bool {
        let mut seen = self.seen.borrow_mut();
        if let Some(at) = seen.iter().position(|l| is(l)) {
            seen.remove(at);
            return true;
        }
        let deadline = Instant::now() + limit;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if is(&line) {
                return true;
            }
            seen.push(line);
        }
        false
    }

    /// Whether the TaskExit of task `id` arrived (or arrives within `limit`).
    pub(super) fn exit_of(&self, id: &str, limit: Duration) -> bool {
        self.wait_for(|l| l.contains("/tasks/exit") && l.contains(id), limit)
    }
}

impl Drop for EventSubscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        end_child(&self.child);
    }
}

/// Kills and reaps the running `ctr events`, if any.
fn end_child(child: &std::sync::Mutex<Option<std::process::Child>>) {
    if let Some(mut ctr) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = ctr.kill();
        let _ = ctr.wait();
    }
}
