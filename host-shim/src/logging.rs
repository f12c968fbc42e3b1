//! Shim logging: slog, to containerd's shim log FIFO (`log` in the bundle
//! directory) when there is one, else to stderr.

use std::io::Write;

use slog::Drain;

pub fn init(level: &str) -> slog::Logger {
    let level = level.parse::<slog::Level>().unwrap_or(slog::Level::Info);
    let writer: Box<dyn Write + Send> = match std::fs::OpenOptions::new().write(true).open("log") {
        Ok(f) => Box::new(f),
        Err(_) => Box::new(std::io::stderr()),
    };
    let decorator = slog_term::PlainSyncDecorator::new(writer);
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).chan_size(4096).build().fuse();
    let drain = drain.filter_level(level).fuse();
    slog::Logger::root(drain, slog::o!("runtime" => crate::RUNTIME_ID))
}
