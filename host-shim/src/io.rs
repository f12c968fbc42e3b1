//! A process's stdio between containerd's FIFOs and the agent's raw
//! streams: one hybrid vsock connection per stream, plain byte copies.

use std::path::PathBuf;
use std::sync::Arc;

use protocols::stream::{StreamHeader, StreamKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::errors::ShimError;
use crate::vsock::{self, GuestStream, VsockTransport};

/// containerd's FIFO paths for a process; empty means none.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A containerd FIFO held by an `O_PATH` descriptor: it can be opened (and
/// a pending open released) through `/proc/self/fd` even after containerd
/// has unlinked it.
struct Fifo {
    handle: std::os::fd::OwnedFd,
}

impl Fifo {
    fn hold(path: &str) -> Result<Option<Arc<Fifo>>, ShimError> {
        use std::os::unix::fs::OpenOptionsExt;
        if path.is_empty() {
            return Ok(None);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(ShimError::io(format!("open FIFO {path}")))?;
        Ok(Some(Arc::new(Fifo {
            handle: file.into(),
        })))
    }

    fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.handle.as_raw_fd()))
    }

    /// Lets a blocked open of the other end complete.
    fn release(&self, read: bool) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .read(read)
            .write(!read)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.proc_path());
    }
}

/// The copies of one process's streams.
pub struct ProcessStdio {
    outputs: Vec<JoinHandle<()>>,
    close_stdin: Arc<Notify>,
    fifos: [Option<Arc<Fifo>>; 3],
}

/// Connects to the agent's stdio port, within [`STREAM_TIMEOUT`].
async fn connect_stream(vsock: &dyn VsockTransport) -> Result<GuestStream, ShimError> {
    tokio::time::timeout(STREAM_TIMEOUT, vsock.connect(protocols::STDIO_PORT))
        .await
        .map_err(|_| {
            ShimError::FailedPrecondition(format!(
                "stdio stream: no connection to the guest within {STREAM_TIMEOUT:?}"
            ))
        })?
        .map_err(ShimError::from)
}

/// Names the process and stream a connected stream is for, and reads the
/// agent's answer, within [`STREAM_TIMEOUT`].
async fn announce(mut s: GuestStream, header: StreamHeader) -> Result<GuestStream, ShimError> {
    let kind = header.kind.as_str();
    let exchange = async {
        s.write_all(header.encode().as_bytes())
            .await
            .map_err(ShimError::io("send stream header"))?;
        vsock::read_line(&mut s, protocols::stream::MAX_HEADER_LEN)
            .await
            .map_err(ShimError::io("read stream reply"))
    };
    let reply = tokio::time::timeout(STREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            ShimError::FailedPrecondition(format!(
                "{kind} stream: no answer from the guest within {STREAM_TIMEOUT:?}"
            ))
        })??;
    if reply != "OK" {
        return Err(ShimError::FailedPrecondition(format!(
            "agent refused {kind} stream: {reply}"
        )));
    }
    Ok(s)
}

/// How long connecting one stdio stream may take, and its header exchange.
const STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A process's output streams announced `direct` before it exists (see
/// `protocols::stream`): the process then writes into them itself, with no
/// copy in the agent. None for a terminal, whose output is the pty's.
pub struct OutputsAhead(Option<(GuestStream, GuestStream)>);

impl OutputsAhead {
    pub async fn announce(
        vsock: &dyn VsockTransport,
        container_id: &str,
        exec_id: &str,
        terminal: bool,
    ) -> Result<Self, ShimError> {
        if terminal {
            return Ok(OutputsAhead(None));
        }
        let header = |kind| StreamHeader {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            kind,
            direct: true,
        };
        let stream =
            |kind| async move { announce(connect_stream(vsock).await?, header(kind)).await };
        let (stdout, stderr) =
            tokio::try_join!(stream(StreamKind::Stdout), stream(StreamKind::Stderr))?;
        Ok(OutputsAhead(Some((stdout, stderr))))
    }
}

/// A process's streams, connected to the agent's stdio port: the ones not
/// announced ahead do not name the process yet (they connect while the
/// agent starts it).
pub struct ConnectedStreams {
    stdin: GuestStream,
    stdout: GuestStream,
    stderr: Option<GuestStream>,
    /// stdout and stderr were announced ahead.
    outputs_named: bool,
}

impl ConnectedStreams {
    /// Connects the streams a process needs that `ahead` does not hold (no
    /// stderr with a terminal), at once.
    pub async fn connect(
        vsock: &dyn VsockTransport,
        ahead: OutputsAhead,
    ) -> Result<Self, ShimError> {
        let (stdin, stdout, stderr, outputs_named) = match ahead.0 {
            Some((stdout, stderr)) => (connect_stream(vsock).await?, stdout, Some(stderr), true),
            None => {
                let (stdin, stdout) =
                    tokio::try_join!(connect_stream(vsock), connect_stream(vsock))?;
                (stdin, stdout, None, false)
            }
        };
        Ok(ConnectedStreams {
            stdin,
            stdout,
            stderr,
            outputs_named,
        })
    }
}

/// Opens a FIFO in blocking mode (as containerd's own shims do: the open
/// waits for the other end), off the async threads.
async fn open_fifo_blocking(path: PathBuf, write: bool) -> std::io::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn open_fifo_writer(path: PathBuf) -> std::io::Result<pipe::Sender> {
    pipe::Sender::from_file(open_fifo_blocking(path, true).await?)
}

async fn open_fifo_reader(path: PathBuf) -> std::io::Result<pipe::Receiver> {
    pipe::Receiver::from_file(open_fifo_blocking(path, false).await?)
}

async fn copy_out(
    mut from: GuestStream,
    fifo: Option<Arc<Fifo>>,
    log: slog::Logger,
    kind: &'static str,
) {
    let result = match fifo {
        None => tokio::io::copy(&mut from, &mut tokio::io::sink())
            .await
            .map(drop),
        Some(fifo) => match open_fifo_writer(fifo.proc_path()).await {
            Ok(mut to) => copy_and_close(&mut from, &mut to).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        slog::warn!(log, "output copy ended with an error"; "stream" => kind, "error" => %e);
    }
}

async fn copy_and_close<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
) -> std::io::Result<()> {
    tokio::io::copy(from, to).await?;
    to.shutdown().await
}

async fn copy_in(
    mut to: GuestStream,
    fifo: Option<Arc<Fifo>>,
    closed: Arc<Notify>,
    log: slog::Logger,
) {
    if let Some(fifo) = fifo {
        if let Err(e) = copy_stdin(&mut to, &fifo, &closed).await {
            slog::warn!(log, "stdin copy ended with an error"; "error" => %e);
        }
    }
    // End of stdin for the process (also right away when there is none,
    // like runc's /dev/null).
    let _ = to.shutdown().await;
}

/// How long stdin is drained after CloseIO while no more data comes.
const STDIN_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies the stdin FIFO to the guest. CloseIO (`closed`) comes after the
/// client has written everything and closed its end, but the data may still
/// sit in the FIFO: so it stops the copy only once the FIFO is empty (EOF,
/// or no data for [`STDIN_DRAIN`]), never in the middle. Before any writer
/// opened the FIFO, it ends the wait for one.
async fn copy_stdin(to: &mut GuestStream, fifo: &Fifo, closed: &Notify) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let notified = closed.notified();
    tokio::pin!(notified);
    let mut from = tokio::select! {
        r = open_fifo_reader(fifo.proc_path()) => r?,
        _ = &mut notified => return Ok(()),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut closing = false;
    loop {
        let n = if closing {
            match tokio::time::timeout(STDIN_DRAIN, from.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
        } else {
            // A pipe read is cancel safe: nothing read is lost if CloseIO wins.
            tokio::select! {
                r = from.read(&mut buf) => r?,
                _ = &mut notified => {
                    closing = true;
                    continue;
                }
            }
        };
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

impl ProcessStdio {
    /// Connects every stream of the process before it starts, so no output
    /// can be written before its reader exists.
    pub async fn attach(
        vsock: &dyn VsockTransport,
        ahead: OutputsAhead,
        container_id: &str,
        exec_id: &str,
        paths: &StdioPaths,
        log: &slog::Logger,
    ) -> Result<Self, ShimError> {
        let streams = ConnectedStreams::connect(vsock, ahead).await?;
        Self::attach_connected(streams, container_id, exec_id, paths, log).await
    }

    /// Names the process on streams connected beforehand (all at once) and
    /// starts copying them.
    pub async fn attach_connected(
        streams: ConnectedStreams,
        container_id: &str,
        exec_id: &str,
        paths: &StdioPaths,
        log: &slog::Logger,
    ) -> Result<Self, ShimError> {
        let header = |kind| StreamHeader {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            kind,
            direct: false,
        };
        let named = streams.outputs_named;
        let output = |s: GuestStream, kind| async move {
            match named {
                true => Ok(s),
                false => announce(s, header(kind)).await,
            }
        };
        let stderr = async {
            match streams.stderr {
                Some(s) => output(s, StreamKind::Stderr).await.map(Some),
                None => Ok(None),
            }
        };
        let (stdin, stdout, stderr) = tokio::try_join!(
            announce(streams.stdin, header(StreamKind::Stdin)),
            output(streams.stdout, StreamKind::Stdout),
            stderr
        )?;
        let fifos = [
            Fifo::hold(&paths.stdin)?,
            Fifo::hold(&paths.stdout)?,
            Fifo::hold(&paths.stderr)?,
        ];
        let close_stdin = Arc::new(Notify::new());
        tokio::spawn(copy_in(
            stdin,
            fifos[0].clone(),
            close_stdin.clone(),
            log.clone(),
        ));
        let mut outputs = vec![tokio::spawn(copy_out(
            stdout,
            fifos[1].clone(),
            log.clone(),
            "stdout",
        ))];
        if let Some(s) = stderr {
            outputs.push(tokio::spawn(copy_out(
                s,
                fifos[2].clone(),
                log.clone(),
                "stderr",
            )));
        }
        Ok(ProcessStdio {
            outputs,
            close_stdin,
            fifos,
        })
    }

    /// Stdio with nothing attached (for tests of task state).
    #[cfg(test)]
    pub fn detached() -> Self {
        ProcessStdio {
            outputs: Vec::new(),
            close_stdin: Arc::new(Notify::new()),
            fifos: [None, None, None],
        }
    }

    /// The output copies, to wait on (without holding this struct) until
    /// all output has been delivered to containerd.
    pub fn take_outputs(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.outputs)
    }

    pub fn close_stdin(&self) {
        self.close_stdin.notify_one();
    }

    /// Ends every copy, including FIFO opens still waiting for containerd's
    /// side (a stdin nobody ever writes): opening the other end without
    /// blocking lets such an open complete, and the copy then sees EOF.
    pub fn release(&self) {
        self.close_stdin();
        let [stdin, stdout, stderr] = &self.fifos;
        if let Some(f) = stdin {
            f.release(false);
        }
        for f in [stdout, stderr].into_iter().flatten() {
            f.release(true);
        }
    }
}
