//! The shim binary's entry. containerd runs it as `-v`, `-info`, `start`
//! (which starts the daemon and answers with its address) and `delete`
//! (clean-up after a dead shim); the daemon serves the task API.
//!
//! Hull runs these itself rather than through the shim crate's `run`, which
//! reads `start`'s stdin only as containerd 1.x's runtime options (fatal
//! under containerd 2.3's bootstrap protocol), left the daemon it had
//! spawned running when `start` failed, and ignored SIGTERM.

mod bootstrap;
mod cleanup;
mod daemon;
mod info;
mod start;

use std::ffi::OsString;
use std::io::Read;

pub use bootstrap::StartForm;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("command line: {0}")]
    Args(String),
    #[error("unknown action {0:?} (expected start or delete)")]
    UnknownAction(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    #[error("the shim daemon did not start: {0}")]
    DaemonFailed(String),
    #[error("ttrpc: {0}")]
    Ttrpc(#[from] containerd_shim::protos::ttrpc::Error),
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::Error),
    #[error(transparent)]
    Shim(#[from] containerd_shim::Error),
}

impl LaunchError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| LaunchError::Io { what, source }
    }
}

/// What containerd may write to a shim's stdin at most (its runtime
/// options or bootstrap parameters are a few hundred bytes).
const MAX_STDIN: u64 = 1 << 20;

/// Reads stdin to its end, refusing more than [`MAX_STDIN`].
fn read_stdin() -> Result<Vec<u8>, LaunchError> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut data)
        .map_err(LaunchError::io("read stdin"))?;
    if data.len() as u64 > MAX_STDIN {
        return Err(LaunchError::Args(format!(
            "more than {MAX_STDIN} bytes on stdin"
        )));
    }
    Ok(data)
}

/// Writes `bytes` (`what`, for the error) to stdout, where containerd
/// reads each invocation's answer.
fn answer(bytes: &[u8], what: &str) -> Result<(), LaunchError> {
    use std::io::Write;
    let mut out = std::io::stdout();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(LaunchError::io(format!("write {what}")))
}

/// Runs the invocation the command line names; the process's exit code.
pub async fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match containerd_shim::parse(&args) {
        Err(e) => Err(LaunchError::Args(e.to_string())),
        Ok(flags) if flags.version => info::print_version(),
        Ok(flags) if flags.info => info::write_runtime_info(),
        Ok(flags) => match flags.action.as_str() {
            "start" => start::run(&flags).await,
            "delete" => cleanup::run(&flags).await,
            "" => daemon::serve(&flags).await,
            other => Err(LaunchError::UnknownAction(other.into())),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e}", crate::RUNTIME_ID);
            1
        }
    }
}
