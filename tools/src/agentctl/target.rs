//! Where the agent is: behind a sandbox VM's hybrid vsock socket, or in a
//! directory of Unix sockets (an agent running on this host).

use std::path::PathBuf;
use std::time::Duration;

use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health_ttrpc::HealthClient;
use tokio::net::UnixStream;

use crate::{io_err, CtlError};

/// Where the guest sees the host's shared directory (CopyFile's domain
/// and the containers' roots).
pub const GUEST_SHARED_DIR: &str = "/run/hull/shared";

pub enum Target {
    /// The VM's `vsock.sock` (hybrid vsock: `CONNECT <port>`).
    Vm(PathBuf),
    /// `agent.sock` and `stdio.sock` in a directory.
    Unix(PathBuf),
}

#[derive(Clone)]
pub struct Agent {
    pub agent: AgentServiceClient,
    pub health: HealthClient,
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

impl Target {
    /// A connection to one of the agent's ports.
    pub async fn connect(&self, port: u32) -> Result<UnixStream, CtlError> {
        match self {
            Target::Vm(uds) => hull_shim::vsock::connect(uds, port)
                .await
                .map_err(|e| CtlError::Failed(format!("{}: port {port}: {e}", uds.display()))),
            Target::Unix(dir) => {
                let name = if port == protocols::STDIO_PORT {
                    "stdio.sock"
                } else {
                    "agent.sock"
                };
                let path = dir.join(name);
                UnixStream::connect(&path)
                    .await
                    .map_err(io_err(path.display().to_string()))
            }
        }
    }

    pub async fn client(&self) -> Result<Agent, CtlError> {
        let stream = self.connect(protocols::AGENT_PORT).await?;
        let client = ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream));
        Ok(Agent {
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client),
        })
    }
}
