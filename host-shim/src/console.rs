//! The guest's serial console on the host. QEMU connects the serial port
//! to a Unix socket the shim listens on, and the shim keeps what arrives in
//! `console.log`: at most [`CONSOLE_CAP`] bytes, the full file rotated to
//! `console.log.1`. A guest that writes without end costs the host twice
//! the cap on disk and one copy buffer in memory; the shim only ever reads
//! the last [`TAIL_BYTES`] of it.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::host_dir::HostDir;

/// The most `console.log` holds before it is rotated.
pub const CONSOLE_CAP: u64 = 1 << 20;
/// The most of the console the shim reads back (for errors and the boot
/// time).
pub const TAIL_BYTES: u64 = 64 << 10;

const LOG: &str = "console.log";
const ROTATED: &str = "console.log.1";

/// The console file of the VM directory `dir`, capped and rotated.
struct CappedLog {
    dir: HostDir,
    file: std::fs::File,
    written: u64,
}

impl CappedLog {
    fn create(dir: HostDir) -> std::io::Result<CappedLog> {
        let file = dir
            .create_file(Path::new(LOG))
            .map_err(std::io::Error::other)?;
        Ok(CappedLog {
            dir,
            file,
            written: 0,
        })
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.written >= CONSOLE_CAP {
                self.dir
                    .rename(Path::new(LOG), Path::new(ROTATED))
                    .map_err(std::io::Error::other)?;
                self.file = self
                    .dir
                    .create_file(Path::new(LOG))
                    .map_err(std::io::Error::other)?;
                self.written = 0;
            }
            let room = (CONSOLE_CAP - self.written).min(data.len() as u64) as usize;
            self.file.write_all(&data[..room])?;
            self.written += room as u64;
            data = &data[room..];
        }
        Ok(())
    }
}

/// Copies what QEMU sends on `listener` into the VM directory's
/// `console.log` until QEMU goes away.
pub fn follow(listener: UnixListener, vm_dir: &Path, log: slog::Logger) -> JoinHandle<()> {
    let vm_dir = vm_dir.to_path_buf();
    tokio::spawn(async move {
        let opened = HostDir::open(&vm_dir)
            .map_err(std::io::Error::other)
            .and_then(CappedLog::create);
        let mut out = match opened {
            Ok(o) => o,
            Err(e) => return slog::warn!(log, "no console log"; "error" => %e),
        };
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Err(e) = out.write(&buf[..n]) {
                        return slog::warn!(log, "console log stopped"; "error" => %e);
                    }
                }
            }
        }
    })
}

/// The last `lines` lines of the console (from at most the last
/// [`TAIL_BYTES`] of it), or why there are none.
pub fn tail(vm_dir: &Path, lines: usize) -> String {
    let text = match last_bytes(vm_dir, TAIL_BYTES) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!("({}: {e})", vm_dir.join(LOG).display()),
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `max` bytes of the console: of `console.log`, preceded by the
/// end of `console.log.1` when the current file is shorter.
pub fn last_bytes(vm_dir: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let dir = HostDir::open(vm_dir).map_err(std::io::Error::other)?;
    let current = dir.read_tail(Path::new(LOG), max)?;
    let missing = max.saturating_sub(current.len() as u64);
    let mut out = if missing > 0 {
        dir.read_tail(Path::new(ROTATED), missing)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    out.extend(current);
    Ok(out)
}

/// The socket QEMU's serial port connects to, in the VM directory.
pub fn socket_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("console.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest writing 1 GiB to its console, through the socket QEMU
    /// would use: the files stay at their cap and the shim's memory does
    /// not grow with the flood.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gigabyte_of_console_stays_within_the_cap() {
        use tokio::io::AsyncWriteExt;
        let tmp = tempfile::tempdir().unwrap();
        let socket = socket_path(tmp.path());
        let listener = UnixListener::bind(&socket).unwrap();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let before = crate::test_util::peak_rss_kib();
        let follower = follow(listener, tmp.path(), log);
        let mut qemu = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..1024 {
            qemu.write_all(&block).await.unwrap();
        }
        drop(qemu);
        follower.await.unwrap();
        let size = |n: &str| std::fs::metadata(tmp.path().join(n)).unwrap().len();
        assert_eq!(size(LOG), CONSOLE_CAP, "1 GiB is a whole number of caps");
        assert_eq!(size(ROTATED), CONSOLE_CAP);
        let grown = crate::test_util::peak_rss_kib().saturating_sub(before);
        assert!(grown < 64 << 10, "peak RSS grew by {grown} KiB");
    }

    #[test]
    fn the_log_rotates_at_its_cap_and_the_tail_spans_both_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = CappedLog::create(HostDir::open(tmp.path()).unwrap()).unwrap();
        let line = b"0123456789abcdef\n";
        let total = 3 * CONSOLE_CAP + 5;
        let mut written = 0;
        while written < total {
            log.write(line).unwrap();
            written += line.len() as u64;
        }
        let size = |n: &str| std::fs::metadata(tmp.path().join(n)).unwrap().len();
        assert!(size(LOG) <= CONSOLE_CAP && size(ROTATED) == CONSOLE_CAP);
        let end = last_bytes(tmp.path(), TAIL_BYTES).unwrap();
        assert_eq!(end.len() as u64, TAIL_BYTES);
        assert!(end.ends_with(line));
        assert_eq!(
            tail(tmp.path(), 2),
            "0123456789abcdef\n0123456789abcdef".to_string()
        );
    }
}
