//! The typed parent/child protocol between the runtime and the container
//! init process: length-prefixed JSON messages over a Unix socket pair.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{ExecConfig, InitConfig};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("channel: bad message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("channel: message of {0} bytes is too large")]
    TooLarge(usize),
    #[error("channel: no message from the container init within {0:?}")]
    Timeout(std::time::Duration),
}

/// Messages from the runtime to the container init.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// What to build. The first message of a create.
    Config(Box<InitConfig>),
    /// What to start in a running container. The first message of an exec.
    Exec(Box<ExecConfig>),
    /// The init is in its cgroup (and its user namespace is mapped): go on
    /// with setup. `pid` is its pid in the runtime's namespace, for the
    /// state hooks receive.
    Proceed { pid: i32 },
    /// The runtime ran the prestart and createRuntime hooks.
    HooksDone,
    /// The runtime is leaving: wait on the exec FIFO instead of `Start`.
    Detach,
    /// Execute the user program.
    Start,
}

/// Messages from the container init to the runtime.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// The container's init (or exec'd) process exists; its pid in the
    /// runtime's namespace.
    Forked { pid: i32 },
    /// The container's console (pty master) follows as one byte carrying
    /// the fd (SCM_RIGHTS); receive it with [`Channel::recv_fd`].
    Console,
    /// Mounts are made, pivot_root is next: run the prestart and
    /// createRuntime hooks, then answer `HooksDone`.
    RuntimeHooks,
    /// Setup is done; waiting for `Start`.
    Ready,
    /// Setup failed. `stage` says what was being done, `message` why,
    /// with the whole chain of causes.
    Failed { stage: String, message: String },
}

const MAX_MESSAGE: usize = 16 << 20;

/// One end of the channel.
pub struct Channel {
    stream: UnixStream,
    deadline: Option<std::time::Duration>,
}

impl Channel {
    /// A connected pair (both ends close-on-exec).
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel::from_stream(a), Channel::from_stream(b)))
    }

    pub fn from_fd(fd: OwnedFd) -> Self {
        Channel::from_stream(UnixStream::from(fd))
    }

    fn from_stream(stream: UnixStream) -> Self {
        Channel {
            stream,
            deadline: None,
        }
    }

    /// Bounds each wait for a message (and for each fd) to `within`; `None`
    /// waits as long as the other end lives.
    pub fn set_deadline(
        &mut self,
        within: Option<std::time::Duration>,
    ) -> Result<(), ChannelError> {
        self.stream.set_read_timeout(within)?;
        self.deadline = within;
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.stream
            .read_exact(buf)
            .map_err(|e| match (e.kind(), self.deadline) {
                (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Some(d)) => {
                    ChannelError::Timeout(d)
                }
                _ => ChannelError::Io(e),
            })
    }

    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ChannelError> {
        let body = serde_json::to_vec(msg)?;
        if body.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge(body.len()));
        }
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;
        Ok(())
    }

    /// The next message, or `None` when the other end closed the channel
    /// (for the runtime after `Start`: the user program was executed).
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ChannelError> {
        let mut len = [0u8; 4];
        match self.read_exact(&mut len) {
            Err(ChannelError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            r => r?,
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(ChannelError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)?;
        Ok(Some(serde_json::from_slice(&body)?))
    }
}

/// Sends `fd` over the Unix socket `socket` (SCM_RIGHTS) in one message
/// whose data is `data` (a message must carry at least one byte).
pub fn send_fd_with(
    socket: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    data: &[u8],
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(data)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

impl Channel {
    /// Sends `fd` as one byte of ancillary data.
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>) -> Result<(), ChannelError> {
        Ok(send_fd_with(self.stream.as_fd(), fd, b"F")?)
    }

    /// Receives an fd sent with [`Channel::send_fd`].
    pub fn recv_fd(&mut self) -> Result<OwnedFd, ChannelError> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::{AsRawFd, FromRawFd};
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| match (e, self.deadline) {
            (nix::errno::Errno::EAGAIN, Some(d)) => ChannelError::Timeout(d),
            (e, _) => ChannelError::Io(e.into()),
        })?;
        for cmsg in msg.cmsgs().map_err(|e| ChannelError::Io(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor in our
                    // table for us; nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                }
            }
        }
        Err(ChannelError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no fd in message",
        )))
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        OwnedFd::from(c.stream)
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&FromInit::Forked { pid: 42 }).unwrap();
        a.send(&FromInit::Failed {
            stage: "mount".into(),
            message: "EPERM".into(),
        })
        .unwrap();
        drop(a);
        assert!(matches!(
            b.recv::<FromInit>().unwrap(),
            Some(FromInit::Forked { pid: 42 })
        ));
        assert!(matches!(
            b.recv::<FromInit>().unwrap(),
            Some(FromInit::Failed { .. })
        ));
        assert!(b.recv::<FromInit>().unwrap().is_none());
    }

    #[test]
    fn a_silent_init_ends_the_wait_at_the_deadline() {
        let (_init, mut runtime) = Channel::pair().unwrap();
        runtime
            .set_deadline(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        let start = std::time::Instant::now();
        let err = runtime.recv::<FromInit>().unwrap_err();
        assert!(matches!(err, ChannelError::Timeout(_)), "{err}");
        assert!(err.to_string().contains("within 100ms"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        let err = runtime.recv_fd().unwrap_err();
        assert!(matches!(err, ChannelError::Timeout(_)), "{err}");
    }

    #[test]
    fn fd_passes_between_messages() {
        let (mut a, mut b) = Channel::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        a.send(&FromInit::Console).unwrap();
        a.send_fd(file.as_fd()).unwrap();
        a.send(&FromInit::Ready).unwrap();
        assert!(matches!(
            b.recv::<FromInit>().unwrap(),
            Some(FromInit::Console)
        ));
        let fd = b.recv_fd().unwrap();
        let same = nix::sys::stat::fstat(&fd).unwrap().st_ino
            == nix::sys::stat::fstat(&file).unwrap().st_ino;
        assert!(same, "received fd is the sent file");
        assert!(matches!(
            b.recv::<FromInit>().unwrap(),
            Some(FromInit::Ready)
        ));
    }
}
