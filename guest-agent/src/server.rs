//! Serving the agent: the ttrpc server on vsock (or a Unix socket off the
//! VM), the raw stdio listener, the readiness announcement to the host,
//! and shutdown.

use std::sync::Arc;
use std::time::Duration;

use protocols::{agent_ttrpc, health_ttrpc};

use crate::config::{AgentConfig, Endpoint};
use crate::listener::StreamListener;
use crate::oom::OomWatcher;
use crate::reaper::Reaper;
use crate::rpc::Service;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {what}: {source}")]
    Listen {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ttrpc server: {0}")]
    Ttrpc(#[from] ttrpc::Error),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("OOM watcher: {0}")]
    Oom(std::io::Error),
}

/// Tells the host the agent is serving (see `protocols::READY_PORT`).
async fn announce_ready(log: slog::Logger) {
    use tokio::io::AsyncWriteExt;
    let host = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_HOST, protocols::READY_PORT);
    let sent = async {
        let mut s = tokio_vsock::VsockStream::connect(host).await?;
        s.write_all(protocols::READY_LINE.as_bytes()).await?;
        AsyncWriteExt::shutdown(&mut s).await
    };
    if let Err(e) = sent.await {
        slog::warn!(log, "could not announce readiness to the host"; "error" => %e);
    }
}

/// Serves the agent API and the stdio streams until DestroySandbox (or,
/// off PID 1, SIGTERM/SIGINT).
pub async fn serve(cfg: AgentConfig, log: slog::Logger) -> Result<(), ServeError> {
    if !cfg.is_pid1 {
        // Container inits are grandchildren; they must come back to us.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| ServeError::Listen {
            what: "subreaper".into(),
            source: e.into(),
        })?;
    }
    let reaper = Reaper::start(log.clone()).map_err(ServeError::Signals)?;
    let oom = OomWatcher::start(log.clone()).map_err(ServeError::Oom)?;
    let service = Service::new(&cfg, log.clone(), reaper, oom);
    let (ttrpc_addr, streams) = match &cfg.endpoint {
        Endpoint::Vsock {
            agent_port,
            stdio_port,
        } => {
            let l = StreamListener::vsock(*stdio_port).map_err(|source| ServeError::Listen {
                what: format!("vsock port {stdio_port}"),
                source,
            })?;
            (format!("vsock://-1:{agent_port}"), l)
        }
        Endpoint::Unix { dir } => {
            let path = dir.join("stdio.sock");
            let l = StreamListener::unix(&path).map_err(|source| ServeError::Listen {
                what: path.display().to_string(),
                source,
            })?;
            let agent = dir.join("agent.sock");
            let _ = std::fs::remove_file(&agent);
            (format!("unix://{}", agent.display()), l)
        }
    };
    tokio::spawn(crate::stdio::serve(
        streams,
        service.registry(),
        log.clone(),
    ));
    let shutdown = service.shutdown_requested();
    let mut server = ttrpc::r#async::Server::new()
        .bind(&ttrpc_addr)?
        .register_service(agent_ttrpc::create_agent_service(Arc::new(service.clone())))
        .register_service(health_ttrpc::create_health(Arc::new(service)));
    // Logged before accepting, so the line is on the console before any
    // client's first call succeeds.
    crate::boot_steps::mark("listening");
    slog::info!(log, "agent ready"; "address" => &ttrpc_addr, "uptime_ms" => crate::boot_steps::uptime_ms(),
        "boot_steps" => crate::boot_steps::summary());
    server.start().await?;
    if matches!(cfg.endpoint, Endpoint::Vsock { .. }) {
        tokio::spawn(announce_ready(log.clone()));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signals)?;
    tokio::select! {
        _ = shutdown.notified() => slog::info!(log, "sandbox destroyed, shutting down"),
        _ = term.recv() => slog::info!(log, "SIGTERM, shutting down"),
    }
    // Let the DestroySandbox reply go out before the server goes away.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = server.shutdown().await;
    Ok(())
}
