//! The guest agent's log lines, read from the agent's vsock log port (the
//! host connects, once the agent answers) and written into the shim's log. A guest can write as much as it likes, so
//! lines are rate-limited here (token bucket) and cut to a maximum length;
//! what is dropped is counted and reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use crate::vsock::VsockTransport;

/// Longest guest line kept; the rest of a longer line is cut.
pub const MAX_LINE: usize = 4096;

/// A token bucket: `rate` lines a second on average, bursts up to `burst`.
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
            dropped: 0,
        }
    }

    /// Whether a line arriving at `now` may be written.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Lines dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

/// Follows the agent's log: connects to its log port through the hybrid
/// vsock socket and copies lines until the VM goes away or the handle is
/// aborted.
pub fn follow(vsock: Arc<dyn VsockTransport>, log: slog::Logger) -> JoinHandle<()> {
    tokio::spawn(async move {
        let connect = vsock.connect(protocols::LOG_PORT);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => copy_lines(conn, &log, &mut RateLimit::new(200.0, 1000.0)).await,
            Ok(Err(e)) => slog::warn!(log, "guest log not available"; "error" => %e),
            Err(_) => slog::warn!(log, "guest log not available: no answer"),
        }
    })
}

/// Copies the agent's log lines from `conn` into `log` until it ends.
pub async fn copy_lines(conn: impl AsyncRead + Unpin, log: &slog::Logger, limit: &mut RateLimit) {
    let mut reader = BufReader::new(conn);
    let mut buf = Vec::new();
    let mut last_report = Instant::now();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cut = buf.len() > MAX_LINE;
        if cut {
            buf.truncate(MAX_LINE);
            if skip_rest_of_line(&mut reader).await.is_err() {
                return;
            }
        }
        if limit.allow(Instant::now()) {
            let line = String::from_utf8_lossy(&buf);
            slog::info!(log, "guest"; "line" => line.trim_end(), "cut" => cut);
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            let dropped = limit.take_dropped();
            if dropped > 0 {
                slog::warn!(log, "guest log lines dropped by the rate limit"; "dropped" => dropped);
            }
        }
    }
}

/// Reads past the next newline, keeping nothing: a line without end costs
/// no memory.
async fn skip_rest_of_line(r: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 GiB without a newline from a hostile guest: one cut line is
    /// logged and the shim's memory does not grow with it.
    #[tokio::test]
    async fn a_gigabyte_without_newline_costs_no_memory() {
        let before = crate::test_util::peak_rss_kib();
        let flood = tokio::io::repeat(b'x').take(1 << 30);
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log = slog::Logger::root(
            slog::Fuse(ChannelDrain(std::sync::Mutex::new(tx))),
            slog::o!(),
        );
        copy_lines(
            flood.chain(&b"\nlast\n"[..]),
            &log,
            &mut RateLimit::new(200.0, 1000.0),
        )
        .await;
        let lines: Vec<String> = rx.try_iter().collect();
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert!(lines[0].ends_with(" true") && lines[0].len() <= MAX_LINE + 5);
        assert_eq!(lines[1], "last false");
        let grown = crate::test_util::peak_rss_kib().saturating_sub(before);
        assert!(grown < 64 << 10, "peak RSS grew by {grown} KiB");
    }

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut l = RateLimit::new(10.0, 5.0);
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| l.allow(t0)).count(), 5, "burst of 5");
        assert_eq!(l.take_dropped(), 5);
        // One second later: 10 more tokens, capped at the burst of 5.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| l.allow(t1)).count(), 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_are_forwarded_and_overlong_ones_cut() {
        // A fake hybrid vsock device whose guest port 1026 sends three lines.
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock.sock");
        let device = tokio::net::UnixListener::bind(&uds).unwrap();
        let long = "x".repeat(MAX_LINE * 2);
        tokio::spawn(async move {
            let (mut s, _) = device.accept().await.unwrap();
            assert_eq!(
                crate::vsock::read_line(&mut s, 64).await.unwrap(),
                "CONNECT 1026"
            );
            let reply = format!("OK 1\nfirst\n{long}\nthird\n");
            tokio::io::AsyncWriteExt::write_all(&mut s, reply.as_bytes())
                .await
                .unwrap();
        });
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log = slog::Logger::root(
            slog::Fuse(ChannelDrain(std::sync::Mutex::new(tx))),
            slog::o!(),
        );
        let handle = follow(Arc::new(crate::vsock::HybridVsock { uds }), log);
        let got: Vec<String> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        handle.abort();
        assert_eq!(got[0], "first false");
        assert!(
            got[1].ends_with(" true") && got[1].len() <= MAX_LINE + 5,
            "cut line"
        );
        assert_eq!(got[2], "third false");
    }

    /// Records "line cut" of each record.
    struct ChannelDrain(std::sync::Mutex<std::sync::mpsc::Sender<String>>);

    impl slog::Drain for ChannelDrain {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, kv: &slog::OwnedKVList) -> Result<(), slog::Never> {
            struct Collect(Vec<String>);
            impl slog::Serializer for Collect {
                fn emit_arguments(
                    &mut self,
                    _: slog::Key,
                    v: &std::fmt::Arguments,
                ) -> slog::Result {
                    self.0.push(v.to_string());
                    Ok(())
                }
            }
            let mut c = Collect(Vec::new());
            let _ = slog::KV::serialize(&r.kv(), r, &mut c);
            let _ = kv;
            c.0.reverse();
            let _ = self.0.lock().unwrap().send(c.0.join(" "));
            Ok(())
        }
    }
}
