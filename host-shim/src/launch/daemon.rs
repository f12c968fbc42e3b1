//! The shim daemon: serves containerd's task API on its socket until
//! containerd shuts it down, it is terminated, or no containerd ever calls.

use std::os::fd::IntoRawFd;
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::shim_async::create_task;
use containerd_shim::Flags;
use tokio::signal::unix::{signal, SignalKind};

use super::start::{remove_socket, socket_path};
use super::LaunchError;
use crate::config::HullConfig;
use crate::service::HullShim;

pub async fn serve(flags: &Flags) -> Result<(), LaunchError> {
    if flags.socket.is_empty() {
        return Err(LaunchError::Args("the daemon needs -socket".into()));
    }
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| LaunchError::MissingEnv("TTRPC_ADDRESS"))?;
    let cfg = HullConfig::load(&HullConfig::path()).ok();
    let level = match (&cfg, flags.debug) {
        (_, true) => "debug".to_string(),
        (Some(c), false) => c.log_level.clone(),
        (None, false) => "info".to_string(),
    };
    let unclaimed = Duration::from_secs(cfg.as_ref().map_or(30, |c| c.timeouts.unclaimed_secs));
    let log = crate::logging::init(&level).new(slog::o!("id" => flags.id.clone()));
    let publisher = crate::events::Publisher::start(&ttrpc_address, log.clone());
    let shim = HullShim::new(&flags.id, &flags.namespace, log.clone(), publisher);

    let socket = socket_path(&flags.socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(LaunchError::io(format!("mkdir {}", dir.display())))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(socket)
        .map_err(LaunchError::io(format!("listen on {}", socket.display())))?;
    let mut server = containerd_shim::protos::ttrpc::r#async::Server::new()
        .add_listener(listener.into_raw_fd())?
        .set_domain_unix()
        .register_service(create_task(Arc::new(shim.clone())))
        .register_service(crate::service::sandbox_services(shim.clone()));
    server.start().await?;
    signal_ready()?;

    let mut term = signal(SignalKind::terminate()).map_err(LaunchError::io("SIGTERM"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(LaunchError::io("SIGINT"))?;
    tokio::select! {
        _ = shim.shut_down() => {}
        _ = shim.unclaimed(unclaimed) => {
            slog::warn!(log, "no containerd called this shim; exiting"; "waited" => ?unclaimed);
        }
        _ = abandoned(&shim) => {
            slog::warn!(log, "the start that launched this shim died before containerd had its address; exiting");
        }
        _ = term.recv() => shim.terminate("SIGTERM").await,
        _ = int.recv() => shim.terminate("SIGINT").await,
    }
    // TaskExit and TaskDelete of the last task are often still queued.
    shim.flush_events(Duration::from_secs(5)).await;
    let _ = server.shutdown().await;
    remove_socket(socket);
    Ok(())
}

/// Resolves when the `start` that launched this daemon ended without
/// handing it to containerd (it was killed: its end of stdin closed before
/// [`super::start::HANDED_OFF`]) and no containerd has called. A daemon
/// started by hand (stdin a terminal or /dev/null) is never abandoned.
async fn abandoned(shim: &HullShim) {
    use tokio::io::AsyncReadExt;
    let is_pipe = nix::sys::stat::fstat(std::io::stdin())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    if is_pipe {
        let mut got = Vec::new();
        let read = tokio::io::stdin()
            .take(super::start::HANDED_OFF.len() as u64)
            .read_to_end(&mut got)
            .await;
        if read.is_ok() && got != super::start::HANDED_OFF && !shim.was_called() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// Tells `start` the daemon listens: closes the stdout pipe it waits on
/// (pointing stdout where stderr goes, /dev/null).
fn signal_ready() -> Result<(), LaunchError> {
    nix::unistd::dup2_stdout(std::io::stderr())
        .map_err(|e| LaunchError::io("signal readiness")(e.into()))
}
