//! Hybrid vsock: the host side of a guest vsock port is a Unix socket; a
//! connection announces the port with `CONNECT <port>\n` and is answered
//! `OK <host port>\n` (vhost-device-vsock, Firecracker, Cloud Hypervisor).

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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
pub async fn read_line(s: &mut UnixStream, max: usize) -> std::io::Result<String> {
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
