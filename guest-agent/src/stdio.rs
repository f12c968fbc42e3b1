//! Process stdio and Hull's raw stream path: each of a process's streams is
//! its own connection (see `protocols::stream`), copied with no per-chunk RPC.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use protocols::stream::{StreamHeader, StreamKind, MAX_HEADER_LEN};
use rustjail::container::InitStdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;

use crate::container::{Process, Registry};
use crate::direct_stream::DirectOutputs;
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
    /// The streams as Kata's per-chunk RPCs use them.
    pub rpc: crate::stdio_rpc::RpcStdio,
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), AgentError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| AgentError::sys("pipe")(e.into()))
}

/// Output pipe capacity: fewer, larger reads and stream writes, which is
/// what throughput depends on where every guest exit is costly.
const OUTPUT_PIPE_SIZE: libc::c_int = 1 << 20;

/// Best effort: the default 64 KiB still works, only slower.
fn enlarge(fd: &OwnedFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE));
}

/// Bytes moved per read and stream write.
const COPY_BUF: usize = 256 * 1024;

fn dup(fd: &OwnedFd) -> Result<OwnedFd, AgentError> {
    fd.try_clone().map_err(AgentError::sys("dup"))
}

impl ProcessIo {
    fn new(
        stdin: OwnedFd,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
        tty: Option<OwnedFd>,
    ) -> Self {
        ProcessIo {
            stdin: Mutex::new(Some(stdin)),
            stdout: Mutex::new(stdout),
            stderr: Mutex::new(stderr),
            tty,
            stdin_closed: AtomicBool::new(false),
            close_stdin: Notify::new(),
            rpc: Default::default(),
        }
    }

    /// A pipe for stdin, and for each output the direct stream announced
    /// for it or else a pipe, enlarged so each read takes more at once.
    /// Also returns duplicates of the direct streams, to end them with.
    pub fn pipes(direct: DirectOutputs) -> Result<(Self, InitStdio, Vec<OwnedFd>), AgentError> {
        let (in_r, in_w) = pipe_pair()?;
        let mut ends = Vec::new();
        let mut output = |socket: Option<OwnedFd>| match socket {
            Some(s) => {
                ends.push(dup(&s)?);
                Ok::<_, AgentError>((None, s))
            }
            None => {
                let (r, w) = pipe_pair()?;
                enlarge(&r);
                Ok((Some(r), w))
            }
        };
        let (out_r, out_w) = output(direct.stdout)?;
        let (err_r, err_w) = output(direct.stderr)?;
        Ok((
            ProcessIo::new(in_w, out_r, err_r, None),
            InitStdio {
                stdin: in_r,
                stdout: out_w,
                stderr: err_w,
            },
            ends,
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
            Some(dup(&master)?),
            None,
            Some(master),
        ))
    }

    pub fn take(&self, kind: StreamKind) -> Option<OwnedFd> {
        let slot = match kind {
            StreamKind::Stdin => &self.stdin,
            StreamKind::Stdout => &self.stdout,
            StreamKind::Stderr => &self.stderr,
        };
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// True if output nobody has attached to is waiting in its pipe.
    pub fn unattached_output_waiting(&self) -> bool {
        [&self.stdout, &self.stderr].into_iter().any(|slot| {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref().is_some_and(|fd| {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int through the pointer, which
                // is valid for the call; the fd is an open pipe we own.
                let rc = unsafe {
                    libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::FIONREAD, &mut n)
                };
                rc == 0 && n > 0
            })
        })
    }

    /// Closes the process's stdin, whether or not a stream is attached.
    pub async fn close_stdin(&self) {
        self.stdin_closed.store(true, Ordering::SeqCst);
        drop(self.take(StreamKind::Stdin));
        self.close_stdin.notify_waiters();
        self.rpc.close_stdin().await;
    }

    pub fn stdin_closed(&self) -> bool {
        self.stdin_closed.load(Ordering::SeqCst)
    }

    /// Resolves once CloseStdin is called (at once if it already was).
    pub async fn stdin_close_requested(&self) {
        let closed = self.close_stdin.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.stdin_closed() {
            return;
        }
        closed.await
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
    if header.direct {
        return hold_direct(conn, &header, registry, log).await;
    }
    let taken = registry
        .process(&header.container_id, &header.exec_id)
        .and_then(|p| {
            let fd = p.take_stream(&header.container_id, header.kind)?;
            Ok((p, fd))
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
        StreamKind::Stdout | StreamKind::Stderr => copy_output(fd, conn, &process).await,
    }
}

/// Keeps a stream announced before its process exists (see
/// `direct_stream`); `OK` once it is held, so a create that follows the
/// answer finds it.
async fn hold_direct(
    mut conn: Box<dyn Conn>,
    header: &StreamHeader,
    registry: &Registry,
    log: &slog::Logger,
) -> Result<(), AgentError> {
    let held = match registry.process(&header.container_id, &header.exec_id) {
        Ok(_) => Err(AgentError::invalid(
            "stream header",
            "direct names a process that already exists",
        )),
        Err(_) => conn
            .as_fd()
            .try_clone_to_owned()
            .map_err(AgentError::sys("dup"))
            .and_then(|socket| {
                registry
                    .direct
                    .hold(&header.container_id, &header.exec_id, header.kind, socket)
            }),
    };
    if let Err(e) = held {
        let _ = conn.write_all(format!("ERR {e}\n").as_bytes()).await;
        return Err(e);
    }
    slog::debug!(log, "direct stream held"; "container" => &header.container_id, "exec" => &header.exec_id, "stream" => header.kind.as_str());
    conn.write_all(b"OK\n")
        .await
        .map_err(AgentError::sys("write stream reply"))
}

/// How long output may stay quiet after its process exited before the stream
/// ends although a process the exited one left behind still holds it open
/// (Kata #4747: a background child must not hang the exec).
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Reads `process`'s output; 0 is the end of the stream. Everything written
/// before the process exited is read: a process's writes are in the pipe
/// before the reaper sees it exit.
pub async fn read_output(
    rx: &mut pipe::Receiver,
    buf: &mut [u8],
    process: &Process,
) -> std::io::Result<usize> {
    let read = loop {
        if process.exit_code().is_some() {
            match tokio::time::timeout(QUIET_AFTER_EXIT, rx.read(buf)).await {
                Ok(r) => break r,
                Err(_) => return Ok(0),
            }
        }
        tokio::select! {
            biased;
            r = rx.read(buf) => break r,
            _ = process.wait() => continue,
        }
    };
    match read {
        // A pty master reads EIO once the last slave holder is gone.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
        r => r,
    }
}

/// The runtime polls the fd; a blocking read on it would stall a worker.
fn set_nonblocking(fd: &OwnedFd) -> Result<(), AgentError> {
    set_nonblocking_to(fd, true)
}

/// Sets or clears `O_NONBLOCK` (shared by every duplicate of `fd`).
pub fn set_nonblocking_to(fd: &OwnedFd, on: bool) -> Result<(), AgentError> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| AgentError::sys("F_GETFL")(e.into()))?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| AgentError::sys("F_SETFL")(e.into()))?;
    Ok(())
}

/// A process's output (a pipe or a pty master) as an async reader.
pub fn output_pipe(fd: OwnedFd) -> Result<pipe::Receiver, AgentError> {
    set_nonblocking(&fd)?;
    pipe::Receiver::from_owned_fd_unchecked(fd).map_err(AgentError::sys("output pipe"))
}

/// A process's stdin (a pipe or a pty master) as an async writer.
pub fn input_pipe(fd: OwnedFd) -> Result<pipe::Sender, AgentError> {
    set_nonblocking(&fd)?;
    pipe::Sender::from_owned_fd_unchecked(fd).map_err(AgentError::sys("stdin pipe"))
}

async fn copy_output(
    fd: OwnedFd,
    mut conn: Box<dyn Conn>,
    process: &Process,
) -> Result<(), AgentError> {
    let mut rx = output_pipe(fd)?;
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match read_output(&mut rx, &mut buf, process).await {
            Ok(0) => break,
            Ok(n) => n,
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
    let mut tx = input_pipe(fd)?;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = io.stdin_close_requested();
    tokio::pin!(closed);
    loop {
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
