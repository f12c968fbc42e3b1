//! hull-cache's messages: one JSON document per SOCK_SEQPACKET packet,
//! with the descriptors it hands over (SCM_RIGHTS). A packet is bounded in
//! size and in descriptors; one that is not (truncated, or with more fds
//! than room) is an error, never half-read.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{de::DeserializeOwned, Serialize};

/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("message truncated (data or descriptors over the limits)")]
    Truncated,
    #[error("message is not valid: {0}")]
    Invalid(String),
    #[error("no message within {0:?}")]
    Timeout(Duration),
}

fn io(op: &'static str) -> impl FnOnce(nix::Error) -> WireError {
    move |e| WireError::Io {
        op,
        source: e.into(),
    }
}

/// A connected pair of SOCK_SEQPACKET sockets (close-on-exec).
pub fn pair() -> Result<(OwnedFd, OwnedFd), WireError> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io("socketpair"))
}

/// Sends `msg` with `fds` as one packet.
pub fn send<T: Serialize>(sock: BorrowedFd, msg: &T, fds: &[BorrowedFd]) -> Result<(), WireError> {
    let data = serde_json::to_vec(msg).map_err(|e| WireError::Invalid(e.to_string()))?;
    if data.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(data.len()));
    }
    if fds.len() > MAX_FDS {
        return Err(WireError::Invalid(format!("{} descriptors", fds.len())));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs = if raw.is_empty() { &[][..] } else { &cmsgs[..] };
    let iov = [std::io::IoSlice::new(&data)];
    socket::sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io("sendmsg"))?;
    Ok(())
}

/// Receives one packet: `None` when the other end has closed. On a
/// non-blocking socket with nothing to read, `Io` with `WouldBlock`.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd) -> Result<Option<(T, Vec<OwnedFd>)>, WireError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, flags, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io("recvmsg"))?;
        // A truncated packet is refused before its descriptors are read
        // (nix cannot list the part that fit; only root can connect here).
        if msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
        {
            return Err(WireError::Truncated);
        }
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io("recvmsg"))? {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: the kernel installed these descriptors in this
                // process for this message; nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, msg.flags, fds)
    };
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(WireError::Truncated);
    }
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|e| WireError::Invalid(e.to_string()))?;
    Ok(Some((msg, fds)))
}

/// Waits at most `limit` for `sock` to be readable (a packet or the end).
pub fn wait_readable(sock: BorrowedFd, limit: Duration) -> Result<(), WireError> {
    let mut fds = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
    let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
        Ok(0) => Err(WireError::Timeout(limit)),
        Ok(_) => Ok(()),
        Err(e) => Err(io("poll")(e)),
    }
}

/// Receives one packet from a blocking socket within `limit`.
pub fn recv_within<T: DeserializeOwned>(
    sock: BorrowedFd,
    limit: Duration,
) -> Result<Option<(T, Vec<OwnedFd>)>, WireError> {
    wait_readable(sock, limit)?;
    recv(sock)
}

/// Receives one packet, waiting on the runtime.
pub async fn recv_async<T: DeserializeOwned>(
    sock: &tokio::io::unix::AsyncFd<OwnedFd>,
) -> Result<Option<(T, Vec<OwnedFd>)>, WireError> {
    loop {
        let mut guard = sock
            .readable()
            .await
            .map_err(|source| WireError::Io { op: "poll", source })?;
        match guard.try_io(|s| {
            recv(s.get_ref().as_fd()).map_err(|e| match e {
                WireError::Io { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })
        }) {
            Ok(r) => {
                return r.map_err(|source| WireError::Io {
                    op: "recvmsg",
                    source,
                })
            }
            Err(_would_block) => continue,
        }
    }
}

/// Registers a socket with the runtime (it is made non-blocking).
pub fn register(sock: OwnedFd) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, WireError> {
    let flags = nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_GETFL).map_err(io("fcntl"))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io("fcntl"))?;
    // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until
    // the AsyncFd that owns it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(sock) }.map_err(|e| WireError::Io {
        op: "register",
        source: e.into_parts().1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn a_message_carries_its_descriptors() {
        let (a, b) = pair().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"handed over").unwrap();
        send(a.as_fd(), &vec!["take".to_string()], &[file.as_fd()]).unwrap();
        let (msg, fds): (Vec<String>, _) = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(msg, ["take"]);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        got.rewind().unwrap();
        let mut text = String::new();
        got.read_to_string(&mut text).unwrap();
        assert_eq!(text, "handed over");
        drop(a);
        assert!(recv::<Vec<String>>(b.as_fd()).unwrap().is_none(), "end");
    }

    #[test]
    fn too_many_descriptors_or_bytes_are_refused_not_half_read() {
        let (a, b) = pair().unwrap();
        let files: Vec<_> = (0..MAX_FDS + 1)
            .map(|_| tempfile::tempfile().unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let iov = [std::io::IoSlice::new(b"{}")];
        socket::sendmsg::<()>(a.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None).unwrap();
        let got = recv::<serde_json::Value>(b.as_fd());
        assert!(matches!(got, Err(WireError::Truncated)), "{got:?}");
        let big = vec![b'x'; MAX_MESSAGE + 10];
        socket::send(a.as_raw_fd(), &big, MsgFlags::empty()).unwrap();
        assert!(matches!(
            recv::<serde_json::Value>(b.as_fd()),
            Err(WireError::Truncated)
        ));
        assert!(matches!(
            recv_within::<serde_json::Value>(b.as_fd(), Duration::from_millis(50)),
            Err(WireError::Timeout(_))
        ));
    }
}
