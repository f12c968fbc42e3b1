//! Shim logging: slog, to containerd's shim log FIFO (`log` in the bundle
//! directory) when there is one, else to stderr.

use std::io::Write;

use slog::Drain;

pub fn init(level: &str) -> slog::Logger {
    let writer: Box<dyn Write + Send> = match std::fs::OpenOptions::new().write(true).open("log") {
        Ok(f) => Box::new(f),
        Err(_) => Box::new(std::io::stderr()),
    };
    to(writer, level)
}

/// A logger to `writer` at `level` (hull-cache's: stderr, the journal).
pub fn to(writer: Box<dyn Write + Send>, level: &str) -> slog::Logger {
    let level = parse_level(level).unwrap_or(slog::Level::Info);
    let decorator = slog_term::PlainSyncDecorator::new(writer);
    // Synchronous, so lines written just before the shim exits are kept.
    // A write error is ignored, never a panic: while containerd restarts
    // the FIFO has no reader (EPIPE), and the next containerd opens it
    // again.
    let drain = std::sync::Mutex::new(slog_term::FullFormat::new(decorator).build()).ignore_res();
    let drain = drain.filter_level(level).fuse();
    slog::Logger::root(drain, slog::o!("runtime" => crate::RUNTIME_ID))
}

/// The config's level names (`error`, `warn`, `info`, `debug`, `trace`).
pub fn parse_level(name: &str) -> Option<slog::Level> {
    Some(match name.to_ascii_lowercase().as_str() {
        "critical" => slog::Level::Critical,
        "error" => slog::Level::Error,
        "warn" | "warning" => slog::Level::Warning,
        "info" => slog::Level::Info,
        "debug" => slog::Level::Debug,
        "trace" => slog::Level::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_level_names_parse() {
        assert_eq!(super::parse_level("debug"), Some(slog::Level::Debug));
        assert_eq!(super::parse_level("WARN"), Some(slog::Level::Warning));
        assert_eq!(super::parse_level("loud"), None);
    }
}
