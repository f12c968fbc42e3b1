//! slog JSON logging to stderr (the serial console when the agent is PID 1)
//! and to the host: the shim connects to vsock port 1026 once the agent
//! answers, receives the lines logged so far and then every new one, and
//! writes them into its own log. The host opens the connection (as for
//! stdio): guest-initiated connections raced the host's boot-time polling
//! in vhost-device-vsock.
//!
//! Logging never waits for the host: a line goes into a bounded queue
//! (the oldest dropped, and counted, when it is full) that the log port's
//! own thread writes out. A host that stops reading stalls that thread
//! only, never an RPC. A failing sink is dropped, never allowed to panic or
//! stop the agent.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use slog::Drain;

use crate::config::AgentConfig;

/// Lines kept for a host that has not connected yet, or reads slowly.
const QUEUE_LINES: usize = 1024;

#[derive(Default)]
struct Queue {
    partial: Vec<u8>,
    lines: VecDeque<Vec<u8>>,
    /// Lines dropped from a full queue since the host last got one.
    dropped: u64,
}

impl Queue {
    fn push(&mut self, line: Vec<u8>) {
        if self.lines.len() == QUEUE_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// The next line for the host, after a note of what was dropped.
    fn pop(&mut self) -> Option<Vec<u8>> {
        if self.dropped > 0 && !self.lines.is_empty() {
            let note = format!(
                "{{\"msg\":\"{} log lines dropped: the host did not read them in time\",\"level\":\"WARN\",\"source\":\"hull-agent\"}}\n",
                self.dropped
            );
            self.dropped = 0;
            return Some(note.into_bytes());
        }
        self.lines.pop_front()
    }
}

/// The host side of the agent's log: the queue and its writer's wake-up.
#[derive(Clone, Default)]
pub struct HostLog(Arc<(Mutex<Queue>, Condvar)>);

impl HostLog {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the log port: each connection from the host gets the queued
    /// lines and then the live ones, until it fails; then the next
    /// connection takes over.
    pub fn serve(&self) -> std::io::Result<()> {
        let listener =
            vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, protocols::LOG_PORT)?;
        let log = self.clone();
        std::thread::Builder::new()
            .name("host-log".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    log.write_to(conn);
                }
            })?;
        Ok(())
    }

    /// Writes queued lines to `host` as they come, without holding the
    /// queue's lock while writing, until a write fails (the line that
    /// failed goes back to the front of the queue).
    fn write_to(&self, mut host: impl Write) {
        loop {
            let line = {
                let mut q = self.queue();
                loop {
                    if let Some(line) = q.pop() {
                        break line;
                    }
                    q = self.0 .1.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            if host.write_all(&line).is_err() {
                self.queue().lines.push_front(line);
                return;
            }
        }
    }
}

impl Write for HostLog {
    /// slog_json writes a record in pieces; whole lines are queued.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut q = self.queue();
        q.partial.extend_from_slice(buf);
        let mut queued = false;
        while let Some(end) = q.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = q.partial.drain(..=end).collect();
            q.push(line);
            queued = true;
        }
        drop(q);
        if queued {
            self.0 .1.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init(cfg: &AgentConfig, host: &HostLog) -> slog::Logger {
    let console = slog_json::Json::new(std::io::stderr())
        .add_default_keys()
        .build();
    let to_host = slog_json::Json::new(host.clone())
        .add_default_keys()
        .build();
    let drain = slog::Duplicate::new(
        Mutex::new(console).ignore_res(),
        Mutex::new(to_host).ignore_res(),
    )
    .ignore_res();
    let drain = drain.filter_level(cfg.log_level).ignore_res();
    slog::Logger::root(drain, slog::o!("source" => "hull-agent"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn pieces_become_whole_lines_and_the_queue_is_bounded() {
        let mut log = HostLog::default();
        log.write_all(b"{\"a\":").unwrap();
        log.write_all(b"1}\n{\"b\":2}\n{\"c\"").unwrap();
        {
            let q = log.queue();
            assert_eq!(
                q.lines.iter().map(|l| l.as_slice()).collect::<Vec<_>>(),
                [&b"{\"a\":1}\n"[..], b"{\"b\":2}\n"]
            );
            assert_eq!(q.partial, b"{\"c\"");
        }
        for _ in 0..QUEUE_LINES + 10 {
            log.write_all(b"x\n").unwrap();
        }
        assert_eq!(log.queue().lines.len(), QUEUE_LINES);
        assert_eq!(log.queue().dropped, 12);
    }

    /// A host that stops reading: its socket's buffer fills and the log
    /// port's writer blocks, but logging goes on (the old sink wrote to
    /// the socket under the lock every logging call takes, and hung here).
    /// When the host reads again it gets a note of what was dropped, then
    /// the newest lines.
    #[test]
    fn a_host_that_stops_reading_never_blocks_logging() {
        let (ours, mut host) = std::os::unix::net::UnixStream::pair().unwrap();
        let log = HostLog::default();
        let writer = log.clone();
        std::thread::spawn(move || writer.write_to(ours));
        let (done, finished) = std::sync::mpsc::channel();
        let mut logger = log.clone();
        std::thread::spawn(move || {
            let line = [b'x'; 1023];
            for _ in 0..20_000 {
                logger.write_all(&line).unwrap();
                logger.write_all(b"\n").unwrap();
            }
            logger.write_all(b"last\n").unwrap();
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("logging blocked on a host that does not read");
        assert!(log.queue().dropped > 0 || log.queue().lines.len() == QUEUE_LINES);
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while !seen.ends_with(b"last\n") {
            let n = host.read(&mut buf).expect("the queued lines arrive");
            seen.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(text.contains("log lines dropped"), "no note of the drop");
        assert!(seen.len() < 20_000 * 1024, "everything was kept: unbounded");
    }
}
