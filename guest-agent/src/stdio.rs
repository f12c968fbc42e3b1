//! Process stdio and Hull's raw stream path: each of a process's streams is
//! its own connection (see `protocols::stream`), copied with no per-chunk RPC.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use protocols::stream::{StreamHeader, StreamKind, MAX_HEADER_LEN};
use rustjail::container::InitStdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use crate::container::Registry;
use crate::errors::AgentError;
use crate::listener::{Conn, StreamListener};

/// The agent's ends of a process's stdio, each taken once by the stream
/// that attaches to it.
pub struct ProcessIo {
    stdin: Mutex<Option<OwnedFd>>,
    stdout: Mutex<Option<OwnedFd>>,
    stderr: Mutex<Option<OwnedFd>>,
    /// The pty master, for window resizes; None without a terminal.
    pub tty: Option<OwnedFd>,
    stdin_closed: AtomicBool,
    close_stdin: Notify,
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), AgentError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| AgentError::sys("pipe")(e.into()))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, AgentError> {
    fd.try_clone().map_err(AgentError::sys("dup"))
}

impl ProcessIo {
    fn new(stdin: OwnedFd, stdout: OwnedFd, stderr: Option<OwnedFd>, tty: Option<OwnedFd>) -> Self {
        ProcessIo {
            stdin: Mutex::new(Some(stdin)),
            stdout: Mutex::new(Some(stdout)),
            stderr: Mutex::new(stderr),
            tty,
            stdin_closed: AtomicBool::new(false),
            close_stdin: Notify::new(),
        }
    }

    /// Three pipes.
    pub fn pipes() -> Result<(Self, InitStdio), AgentError> {
        let (in_r, in_w) = pipe_pair()?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        Ok((
            ProcessIo::new(in_w, out_r, Some(err_r), None),
            InitStdio {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
            },
        ))
    }

    /// Stdio for an init that will make its own terminal: /dev/null until
    /// then (setup errors travel over the init channel, not stdio).
    pub fn null_stdio() -> Result<InitStdio, AgentError> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        let open = |_| null().map_err(AgentError::sys("open /dev/null"));
        Ok(InitStdio {
            stdin: open(0)?,
            stdout: open(1)?,
            stderr: open(2)?,
        })
    }

    /// A terminal process: stdin and stdout are the pty master the container
    /// made; there is no separate stderr.
    pub fn console(master: OwnedFd) -> Result<Self, AgentError> {
        Ok(ProcessIo::new(
            dup(&master)?,
            dup(&master)?,
            None,
            Some(master),
        ))
    }

    fn take(&self, kind: StreamKind) -> Option<OwnedFd> {
        let slot = match kind {
            StreamKind::Stdin => &self.stdin,
            StreamKind::Stdout => &self.stdout,
            StreamKind::Stderr => &self.stderr,
        };
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Closes the process's stdin, whether or not a stream is attached.
    pub fn close_stdin(&self) {
        self.stdin_closed.store(true, Ordering::SeqCst);
        drop(self.take(StreamKind::Stdin));
        self.close_stdin.notify_waiters();
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), AgentError> {
        let Some(tty) = &self.tty else {
            return Err(AgentError::invalid(
                "exec_id",
                "the process has no terminal",
            ));
        };
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which is valid
        // for the call; the fd is an open pty master we own.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(tty),
                libc::TIOCSWINSZ,
                &size,
            )
        };
        if rc < 0 {
            return Err(AgentError::sys("TIOCSWINSZ")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

/// Accepts stream connections forever.
pub async fn serve(listener: StreamListener, registry: Arc<Registry>, log: slog::Logger) {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let (registry, log) = (registry.clone(), log.clone());
                tokio::spawn(async move {
                    if let Err(e) = attach(conn, &registry, &log).await {
                        slog::warn!(log, "stdio stream failed"; "error" => %e);
                    }
                });
            }
            Err(e) => {
                slog::error!(log, "stdio accept failed"; "error" => %e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the header one byte at a time, so no stream byte after it is
/// consumed here.
async fn read_header(conn: &mut Box<dyn Conn>) -> Result<String, AgentError> {
    let mut line = Vec::with_capacity(96);
    loop {
        let b = conn
            .read_u8()
            .await
            .map_err(AgentError::sys("read stream header"))?;
        if b == b'\n' {
            break;
        }
        line.push(b);
        if line.len() >= MAX_HEADER_LEN {
            return Err(AgentError::invalid("stream header", "too long"));
        }
    }
    String::from_utf8(line).map_err(|_| AgentError::invalid("stream header", "not UTF-8"))
}

async fn attach(
    mut conn: Box<dyn Conn>,
    registry: &Registry,
    log: &slog::Logger,
) -> Result<(), AgentError> {
    let line = read_header(&mut conn).await?;
    let header = match StreamHeader::parse(&line) {
        Ok(h) => h,
        Err(e) => {
            let _ = conn.write_all(format!("ERR {e}\n").as_bytes()).await;
            return Err(AgentError::invalid("stream header", e.to_string()));
        }
    };
    let taken = registry
        .process(&header.container_id, &header.exec_id)
        .and_then(|p| {
            p.io.take(header.kind)
                .map(|fd| (p, fd))
                .ok_or(AgentError::StreamTaken {
                    container_id: header.container_id.clone(),
                    exec_id: header.exec_id.clone(),
                    stream: header.kind.as_str(),
                })
        });
    let (process, fd) = match taken {
        Ok(t) => t,
        Err(e) => {
            let _ = conn.write_all(format!("ERR {e}\n").as_bytes()).await;
            return Err(e);
        }
    };
    conn.write_all(b"OK\n")
        .await
        .map_err(AgentError::sys("write stream reply"))?;
    slog::debug!(log, "stream attached"; "container" => &header.container_id, "exec" => &header.exec_id, "stream" => header.kind.as_str());
    match header.kind {
        StreamKind::Stdin => copy_stdin(conn, fd, &process.io).await,
        StreamKind::Stdout | StreamKind::Stderr => copy_output(fd, conn).await,
    }
}

async fn copy_output(fd: OwnedFd, mut conn: Box<dyn Conn>) -> Result<(), AgentError> {
    let mut rx =
        pipe::Receiver::from_owned_fd_unchecked(fd).map_err(AgentError::sys("stdout pipe"))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // A pty master reads EIO once the last slave holder is gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => return Err(AgentError::sys("read process output")(e)),
        };
        conn.write_all(&buf[..n])
            .await
            .map_err(AgentError::sys("write output stream"))?;
    }
    conn.shutdown()
        .await
        .map_err(AgentError::sys("close output stream"))
}

async fn copy_stdin(
    mut conn: Box<dyn Conn>,
    fd: OwnedFd,
    io: &ProcessIo,
) -> Result<(), AgentError> {
    let mut tx =
        pipe::Sender::from_owned_fd_unchecked(fd).map_err(AgentError::sys("stdin pipe"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = io.close_stdin.notified();
    tokio::pin!(closed);
    loop {
        if io.stdin_closed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = tokio::select! {
            r = conn.read(&mut buf) => r.map_err(AgentError::sys("read stdin stream"))?,
            _ = &mut closed => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = tx.write_all(&buf[..n]).await {
            // The process closed its stdin or exited: the rest has nowhere to go.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(AgentError::sys("write process stdin")(e));
        }
    }
}
