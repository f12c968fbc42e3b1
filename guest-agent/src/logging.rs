//! slog JSON logging to stderr (the serial console when the agent is PID 1)
//! and to the host: the shim connects to vsock port 1026 once the agent
//! answers, receives the lines logged so far (a bounded backlog) and then
//! every new one, and writes them into its own log. The host opens the
//! connection (as for stdio): guest-initiated connections raced the host's
//! boot-time polling in vhost-device-vsock. Synchronous, so a line written
//! just before power-off is not lost; a failing sink is dropped, never
//! allowed to panic or stop the agent.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use slog::Drain;

use crate::config::AgentConfig;

/// Lines kept for a host that has not connected yet.
const BACKLOG_LINES: usize = 1024;

#[derive(Default)]
struct Sink {
    partial: Vec<u8>,
    backlog: VecDeque<Vec<u8>>,
    host: Option<vsock::VsockStream>,
}

impl Sink {
    fn send_line(&mut self, line: Vec<u8>) {
        if let Some(h) = self.host.as_mut() {
            if h.write_all(&line).is_ok() {
                return;
            }
            self.host = None;
        }
        if self.backlog.len() == BACKLOG_LINES {
            self.backlog.pop_front();
        }
        self.backlog.push_back(line);
    }

    fn attach(&mut self, mut host: vsock::VsockStream) {
        while let Some(line) = self.backlog.pop_front() {
            if host.write_all(&line).is_err() {
                return;
            }
        }
        self.host = Some(host);
    }
}

/// The host side of the agent's log: a backlog until the host connects.
#[derive(Clone, Default)]
pub struct HostLog(Arc<Mutex<Sink>>);

impl HostLog {
    /// Serves the log port: each connection from the host gets the backlog
    /// and then the live lines (a newer connection replaces an older one).
    pub fn serve(&self) -> std::io::Result<()> {
        let listener =
            vsock::VsockListener::bind_with_cid_port(vsock::VMADDR_CID_ANY, protocols::LOG_PORT)?;
        let log = self.clone();
        std::thread::Builder::new()
            .name("host-log".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    log.0.lock().unwrap_or_else(|e| e.into_inner()).attach(conn);
                }
            })?;
        Ok(())
    }
}

impl Write for HostLog {
    /// slog_json writes a record in pieces; whole lines go out at once.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sink.partial.extend_from_slice(buf);
        while let Some(end) = sink.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = sink.partial.drain(..=end).collect();
            sink.send_line(line);
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

    #[test]
    fn pieces_become_whole_lines_and_backlog_is_bounded() {
        let mut log = HostLog::default();
        log.write_all(b"{\"a\":").unwrap();
        log.write_all(b"1}\n{\"b\":2}\n{\"c\"").unwrap();
        {
            let sink = log.0.lock().unwrap();
            assert_eq!(
                sink.backlog
                    .iter()
                    .map(|l| l.as_slice())
                    .collect::<Vec<_>>(),
                [&b"{\"a\":1}\n"[..], b"{\"b\":2}\n"]
            );
            assert_eq!(sink.partial, b"{\"c\"");
        }
        for _ in 0..BACKLOG_LINES + 10 {
            log.write_all(b"x\n").unwrap();
        }
        assert_eq!(log.0.lock().unwrap().backlog.len(), BACKLOG_LINES);
    }
}
