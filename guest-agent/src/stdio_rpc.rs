//! Kata's per-chunk stdio RPCs (WriteStdin, ReadStdout, ReadStderr) for
//! clients that do not use Hull's raw streams. A stream is taken by one path
//! or the other, never both: the first to attach owns it.

use protocols::stream::StreamKind;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

use crate::container::Process;
use crate::errors::AgentError;
use crate::stdio::{input_pipe, output_pipe, read_output};

/// Largest chunk one ReadStdout/ReadStderr returns, whatever `len` asks:
/// a ttrpc message is bounded (4 MiB), and the reply carries framing too.
pub const MAX_READ_CHUNK: usize = 1024 * 1024;

#[derive(Default)]
enum RpcOutput {
    #[default]
    NotTaken,
    Open(pipe::Receiver),
    Ended,
}

#[derive(Default)]
enum RpcInput {
    #[default]
    NotTaken,
    Open(pipe::Sender),
    Closed,
}

/// A process's streams as the RPCs hold them. Each lock is per stream, so a
/// long-polling ReadStdout never blocks ReadStderr or WriteStdin.
#[derive(Default)]
pub struct RpcStdio {
    stdout: Mutex<RpcOutput>,
    stderr: Mutex<RpcOutput>,
    stdin: Mutex<RpcInput>,
}

impl RpcStdio {
    /// True while an output stream taken by the RPCs has not reached its
    /// end: the process must stay known until the client has read it all.
    pub fn output_pending(&self) -> bool {
        [&self.stdout, &self.stderr]
            .into_iter()
            .any(|m| match m.try_lock() {
                Ok(g) => matches!(*g, RpcOutput::Open(_)),
                Err(_) => true, // a read is in progress
            })
    }

    pub async fn close_stdin(&self) {
        *self.stdin.lock().await = RpcInput::Closed;
    }
}

fn stream_ended(p: &Process, kind: StreamKind) -> AgentError {
    AgentError::EndOfStream {
        exec_id: p.exec_id.clone(),
        stream: kind.as_str(),
    }
}

/// ReadStdout/ReadStderr: up to `len` bytes, waiting for at least one. The
/// end of the stream is OUT_OF_RANGE (Kata's clients take any error as EOF).
pub async fn read(
    container_id: &str,
    p: &Process,
    kind: StreamKind,
    len: u32,
) -> Result<Vec<u8>, AgentError> {
    if len == 0 {
        return Err(AgentError::invalid("len", "must be at least 1"));
    }
    let slot = match kind {
        StreamKind::Stdout => &p.io.rpc.stdout,
        StreamKind::Stderr => &p.io.rpc.stderr,
        StreamKind::Stdin => return Err(AgentError::invalid("stream", "stdin is not readable")),
    };
    let mut out = slot.lock().await;
    if matches!(*out, RpcOutput::NotTaken) {
        let fd = p.take_stream(container_id, kind)?;
        *out = RpcOutput::Open(output_pipe(fd)?);
    }
    let RpcOutput::Open(rx) = &mut *out else {
        return Err(stream_ended(p, kind));
    };
    let mut buf = vec![0u8; (len as usize).min(MAX_READ_CHUNK)];
    let n = read_output(rx, &mut buf, p)
        .await
        .map_err(AgentError::sys(format!("read {}", kind.as_str())))?;
    if n == 0 {
        *out = RpcOutput::Ended;
        return Err(stream_ended(p, kind));
    }
    buf.truncate(n);
    Ok(buf)
}

/// WriteStdin: writes all of `data` (or fails), returning its length.
pub async fn write(container_id: &str, p: &Process, data: &[u8]) -> Result<u32, AgentError> {
    let closed = || AgentError::WrongState {
        id: format!("{container_id}/{}", p.exec_id),
        state: "closed for input",
        action: "write stdin",
    };
    let mut input = p.io.rpc.stdin.lock().await;
    if matches!(*input, RpcInput::NotTaken) {
        if p.io.stdin_closed() {
            return Err(closed());
        }
        let fd = p.take_stream(container_id, StreamKind::Stdin)?;
        *input = RpcInput::Open(input_pipe(fd)?);
    }
    let RpcInput::Open(tx) = &mut *input else {
        return Err(closed());
    };
    let written = tokio::select! {
        r = tx.write_all(data) => r,
        _ = p.io.stdin_close_requested() => return Err(closed()),
    };
    match written {
        Ok(()) => Ok(data.len() as u32),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            *input = RpcInput::Closed;
            Err(closed())
        }
        Err(e) => Err(AgentError::sys("write stdin")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_pending_only_while_a_taken_stream_is_open() {
        let io = RpcStdio::default();
        assert!(!io.output_pending());
        let (rx, _tx) = {
            let (r, w) = nix::unistd::pipe().expect("pipe");
            (output_pipe(r).unwrap(), w)
        };
        *io.stdout.lock().await = RpcOutput::Open(rx);
        assert!(io.output_pending());
        *io.stdout.lock().await = RpcOutput::Ended;
        assert!(!io.output_pending());
    }
}
