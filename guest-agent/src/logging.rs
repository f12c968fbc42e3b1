//! slog JSON logging to stderr (the serial console when the agent is PID 1)
//! and, once the vsock driver is loaded, to the host's log port, where the
//! shim writes the lines into its own log. Synchronous, so a line written
//! just before power-off is not lost; a failing sink is dropped, never
//! allowed to panic or stop the agent.

use std::io::Write;
use std::sync::{Arc, Mutex};

use slog::Drain;

use crate::config::AgentConfig;

/// The host log connection; empty until [`HostLog::connect`] succeeds.
#[derive(Clone, Default)]
pub struct HostLog(Arc<Mutex<Option<vsock::VsockStream>>>);

impl HostLog {
    /// Connects to the host's log port. Without a listener, logs stay on
    /// the console only.
    pub fn connect(&self) -> std::io::Result<()> {
        let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_HOST, protocols::LOG_PORT);
        let stream = vsock::VsockStream::connect(&addr)?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
        Ok(())
    }
}

impl Write for HostLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slot.as_mut() {
            if s.write_all(buf).is_err() {
                *slot = None;
            }
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
