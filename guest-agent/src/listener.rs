//! Accepting connections on vsock (in a VM) or a Unix socket (on a host).

use std::os::fd::AsFd;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};

pub trait Conn: AsyncRead + AsyncWrite + AsFd + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + AsFd + Send + Unpin> Conn for T {}

pub enum StreamListener {
    Vsock(tokio_vsock::VsockListener),
    Unix(tokio::net::UnixListener),
}

impl StreamListener {
    pub fn vsock(port: u32) -> std::io::Result<Self> {
        let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
        Ok(StreamListener::Vsock(tokio_vsock::VsockListener::bind(
            addr,
        )?))
    }

    pub fn unix(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(StreamListener::Unix(tokio::net::UnixListener::bind(path)?))
    }

    pub async fn accept(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(match self {
            StreamListener::Vsock(l) => Box::new(l.accept().await?.0),
            StreamListener::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}
