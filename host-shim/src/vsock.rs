//! How the host reaches the guest agent's vsock ports. Two transports:
//! - hybrid vsock: the host side of the guest's vsock is a Unix socket; a
//!   connection announces the port with `CONNECT <port>\n` and is answered
//!   `OK <host port>\n` (vhost-device-vsock here; Firecracker and Cloud
//!   Hypervisor use the same handshake);
//! - kernel vsock: AF_VSOCK to the guest's CID, through the host kernel's
//!   vhost-vsock (`/dev/vhost-vsock`), on hosts that have it.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// A connected byte stream to a guest port, whatever the transport.
pub trait GuestIo: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> GuestIo for T {}
pub type GuestStream = Box<dyn GuestIo>;

#[async_trait::async_trait]
pub trait VsockTransport: Send + Sync {
    /// Connects to guest `port`.
    async fn connect(&self, port: u32) -> Result<GuestStream, VsockError>;
    /// What the transport is, for logs and errors.
    fn describe(&self) -> String;
}

/// Hybrid vsock through the Unix socket at `uds`.
pub struct HybridVsock {
    pub uds: PathBuf,
}

#[async_trait::async_trait]
impl VsockTransport for HybridVsock {
    async fn connect(&self, port: u32) -> Result<GuestStream, VsockError> {
        Ok(Box::new(connect(&self.uds, port).await?))
    }

    fn describe(&self) -> String {
        format!("hybrid vsock at {}", self.uds.display())
    }
}

/// Kernel AF_VSOCK to the guest with context id `cid`.
pub struct KernelVsock {
    pub cid: u32,
}

#[async_trait::async_trait]
impl VsockTransport for KernelVsock {
    async fn connect(&self, port: u32) -> Result<GuestStream, VsockError> {
        let addr = tokio_vsock::VsockAddr::new(self.cid, port);
        let s = tokio_vsock::VsockStream::connect(addr)
            .await
            .map_err(|source| VsockError::Connect {
                path: format!("vsock cid {} port {port}", self.cid),
                source,
            })?;
        Ok(Box::new(s))
    }

    fn describe(&self) -> String {
        format!("kernel vsock to cid {}", self.cid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("connect {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock port {port}: handshake: {source}")]
    Handshake {
        port: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock port {port}: refused ({reply:?})")]
    Refused { port: u32, reply: String },
}

/// Reads one `\n`-terminated line a byte at a time, so nothing past it is
/// consumed.
pub async fn read_line(s: &mut (impl AsyncRead + Unpin), max: usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b);
        if line.len() > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
    }
}

/// Connects to guest `port` through the hybrid vsock socket at `uds`.
pub async fn connect(uds: &Path, port: u32) -> Result<UnixStream, VsockError> {
    let mut s = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.display().to_string(),
            source,
        })?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| VsockError::Handshake { port, source })?;
    let reply = read_line(&mut s, 64)
        .await
        .map_err(|source| VsockError::Handshake { port, source })?;
    if !reply.starts_with("OK ") {
        return Err(VsockError::Refused { port, reply });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_against_a_fake_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            assert_eq!(read_line(&mut s, 64).await.unwrap(), "CONNECT 1024");
            s.write_all(b"OK 1073741824\nhello").await.unwrap();
        });
        let mut s = connect(&path, 1024).await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello", "bytes after the reply belong to the stream");
    }

    #[tokio::test]
    async fn transports_connect_or_name_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            assert_eq!(read_line(&mut s, 64).await.unwrap(), "CONNECT 7");
            s.write_all(b"OK 1\nx").await.unwrap();
        });
        let hybrid = HybridVsock { uds: path };
        let mut s = hybrid.connect(7).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), b'x');
        // No VM has this CID: the kernel transport names it in the error.
        let kernel = KernelVsock { cid: 0x7fff_fff0 };
        let err = kernel.connect(1024).await.err().unwrap().to_string();
        assert!(err.contains("cid 2147483632 port 1024"), "{err}");
    }

    #[tokio::test]
    async fn refused_port_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = read_line(&mut s, 64).await;
            drop(s);
        });
        assert!(connect(&path, 9).await.is_err());
    }
}
