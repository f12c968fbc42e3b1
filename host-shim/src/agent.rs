//! The host's client of the guest agent, over hybrid vsock.

use std::path::Path;
use std::time::{Duration, Instant};

use protocols::{agent_ttrpc::AgentServiceClient, health, health_ttrpc::HealthClient};
use tokio::sync::watch;

use crate::vsock::VsockTransport;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `console` is the end of the guest's console log: the state
    /// directory holding the log is removed when the create fails.
    #[error("the guest agent did not answer within {secs}s (last error: {last}); the guest console ended with:\n{console}")]
    Timeout {
        secs: u64,
        last: String,
        console: String,
    },
    /// `console` as for `Timeout`: why the guest stopped is usually its
    /// last words there (a kernel panic, the agent's boot error).
    #[error(
        "the VM died before its agent answered: {why}; the guest console ended with:\n{console}"
    )]
    VmDied { why: String, console: String },
}

/// A dead VM's last console lines may still be on their way to the log.
const CONSOLE_SETTLE: Duration = Duration::from_millis(200);

async fn died_error(why: String, vm_dir: &Path) -> ConnectError {
    tokio::time::sleep(CONSOLE_SETTLE).await;
    ConnectError::VmDied {
        why,
        console: crate::console::tail(vm_dir, CONSOLE_TAIL_LINES),
    }
}

const CONSOLE_TAIL_LINES: usize = 20;

/// Accepts connections on the readiness socket until one carries the
/// agent's `READY` line (anything else is ignored). Without one (kernel
/// vsock), connecting is simply retried.
async fn wait_ready(ready: Option<&tokio::net::UnixListener>) {
    use tokio::io::AsyncReadExt;
    let Some(ready) = ready else { return };
    loop {
        let Ok((mut conn, _)) = ready.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut line = [0u8; protocols::READY_LINE.len()];
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read_exact(&mut line)).await;
        if matches!(read, Ok(Ok(_))) && line == protocols::READY_LINE.as_bytes() {
            return;
        }
    }
}

/// How long one connection attempt (handshake and health check) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct AgentClient {
    pub agent: AgentServiceClient,
    pub health: HealthClient,
    rpc_timeout: Duration,
}

impl AgentClient {
    /// Waits for the agent to announce it is serving on `ready` (when the
    /// transport has one), then
    /// connects, retrying until it answers a health check, the VM dies, or
    /// `deadline` passes.
    pub async fn connect(
        vsock: &dyn VsockTransport,
        ready: Option<tokio::net::UnixListener>,
        vm_dir: &Path,
        deadline: Duration,
        rpc_timeout: Duration,
        died: &watch::Receiver<Option<String>>,
    ) -> Result<Self, ConnectError> {
        let start = Instant::now();
        let mut vm_died = died.clone();
        let dead_at_boot = tokio::select! {
            r = tokio::time::timeout(deadline, wait_ready(ready.as_ref())) => if r.is_err() {
                return Err(ConnectError::Timeout {
                    secs: deadline.as_secs(),
                    last: "the agent never announced that it was serving".into(),
                    console: crate::console::tail(vm_dir, CONSOLE_TAIL_LINES),
                });
            } else {
                None
            },
            why = vm_died.wait_for(|d| d.is_some()) => {
                Some(why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default())
            }
        };
        if let Some(why) = dead_at_boot {
            return Err(died_error(why, vm_dir).await);
        }
        let mut last = String::from("not tried");
        loop {
            let dead = died.borrow().clone();
            if let Some(why) = dead {
                return Err(died_error(why, vm_dir).await);
            }
            if start.elapsed() > deadline {
                return Err(ConnectError::Timeout {
                    secs: deadline.as_secs(),
                    last,
                    console: crate::console::tail(vm_dir, CONSOLE_TAIL_LINES),
                });
            }
            // Each attempt is bounded: a vsock device that never answers the
            // handshake must not hold Create past the boot deadline.
            match tokio::time::timeout(ATTEMPT_TIMEOUT, Self::try_connect(vsock, rpc_timeout)).await
            {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {ATTEMPT_TIMEOUT:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn try_connect(
        vsock: &dyn VsockTransport,
        rpc_timeout: Duration,
    ) -> Result<Self, String> {
        let stream = vsock
            .connect(protocols::AGENT_PORT)
            .await
            .map_err(|e| e.to_string())?;
        let client = ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream));
        let c = AgentClient {
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client),
            rpc_timeout,
        };
        let ctx = ttrpc::context::with_timeout(Duration::from_secs(2).as_nanos() as i64);
        c.health
            .check(ctx, &health::CheckRequest::new())
            .await
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    /// Context for an ordinary RPC: bounded by the configured timeout.
    pub fn ctx(&self) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(self.rpc_timeout.as_nanos() as i64)
    }

    /// The configured bound of an ordinary RPC.
    pub fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// Context for a long poll (WaitProcess): no deadline.
    pub fn long_poll(&self) -> ttrpc::context::Context {
        ttrpc::context::Context::default()
    }
}
