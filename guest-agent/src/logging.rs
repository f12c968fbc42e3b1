//! slog JSON logging to stderr (the serial console when the agent is PID 1).
//! Synchronous, so a line written just before power-off is not lost.

use slog::Drain;

use crate::config::AgentConfig;

pub fn init(cfg: &AgentConfig) -> slog::Logger {
    let json = slog_json::Json::new(std::io::stderr())
        .add_default_keys()
        .build();
    let drain = std::sync::Mutex::new(json).fuse();
    let drain = drain.filter_level(cfg.log_level).fuse();
    slog::Logger::root(drain, slog::o!("source" => "hull-agent"))
}
