//! Guest-wide duties the host asks for: onlining hot-plugged CPUs and
//! memory, reporting what the guest supports, setting the clock and
//! reseeding the kernel's random generator. Filesystem roots are parameters
//! so the logic runs against a fake sysfs in tests.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unexpected content {content:?}")]
    Parse { path: String, content: String },
    #[error(
        "nb_cpus: asked for {wanted} online CPUs, {online} are online after waiting {waited_ms} ms"
    )]
    CpusMissing {
        wanted: u32,
        online: u32,
        waited_ms: u64,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

impl GuestError {
    pub fn code(&self) -> Code {
        match self {
            GuestError::Invalid { .. } => Code::INVALID_ARGUMENT,
            GuestError::CpusMissing { .. } => Code::DEADLINE_EXCEEDED,
            GuestError::Sys {
                source: nix::Error::EPERM,
                ..
            } => Code::PERMISSION_DENIED,
            _ => Code::INTERNAL,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GuestError + '_ {
    move |source| GuestError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The guest's sysfs, `/sys` unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    /// How long OnlineCPUMem waits for hot-plugged CPUs to appear.
    cpu_wait: Duration,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/sys")
    }
}

const CPU_WAIT: Duration = Duration::from_secs(5);
const CPU_POLL: Duration = Duration::from_millis(50);

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs {
            root: root.into(),
            cpu_wait: CPU_WAIT,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn system(&self, what: &str) -> PathBuf {
        self.root.join("devices/system").join(what)
    }

    /// Writes "1" to every offline CPU's `online` (`cpu/cpuN`) and "online"
    /// to every offline memory block's `state` (`memory/memoryN`); returns
    /// how many were onlined.
    fn online_entries(&self, kind: &str) -> Result<u32, GuestError> {
        let dir = self.system(kind);
        let (file, offline, online) = if kind == "cpu" {
            ("online", "0", "1")
        } else {
            ("state", "offline", "online")
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // No memory hotplug support in this kernel: nothing to online.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut count = 0;
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let is_entry = name
                .to_str()
                .and_then(|n| n.strip_prefix(kind))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_entry {
                continue;
            }
            let path = entry.path().join(file);
            // cpu0 usually has no `online` file: it cannot go offline.
            let Ok(state) = fs::read_to_string(&path) else {
                continue;
            };
            if state.trim() != offline {
                continue;
            }
            fs::write(&path, online).map_err(io_err(&path))?;
            count += 1;
        }
        Ok(count)
    }

    /// Online CPUs as the kernel counts them (`devices/system/cpu/online`,
    /// a list such as `0-3,6`).
    pub fn online_cpu_count(&self) -> Result<u32, GuestError> {
        let path = self.system("cpu/online");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        parse_cpu_list(text.trim()).ok_or(GuestError::Parse {
            path: path.display().to_string(),
            content: text,
        })
    }

    /// OnlineCPUMem: onlines every offline CPU (and memory block unless
    /// `cpu_only`), then, if `nb_cpus` is set, waits until at least that many
    /// CPUs are online (hot-plugged CPUs appear asynchronously).
    pub fn online_cpu_mem(&self, nb_cpus: u32, cpu_only: bool) -> Result<(u32, u32), GuestError> {
        let started = std::time::Instant::now();
        let mut cpus = self.online_entries("cpu")?;
        while nb_cpus > 0 && self.online_cpu_count()? < nb_cpus {
            if started.elapsed() >= self.cpu_wait {
                return Err(GuestError::CpusMissing {
                    wanted: nb_cpus,
                    online: self.online_cpu_count()?,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(CPU_POLL);
            cpus += self.online_entries("cpu")?;
        }
        let memory = if cpu_only {
            0
        } else {
            self.online_entries("memory")?
        };
        Ok((cpus, memory))
    }

    /// The memory hotplug block size (hexadecimal in sysfs); 0 when the
    /// kernel has no memory hotplug.
    pub fn mem_block_size(&self) -> Result<u64, GuestError> {
        let path = self.system("memory/block_size_bytes");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&path)(e)),
        };
        u64::from_str_radix(text.trim(), 16).map_err(|_| GuestError::Parse {
            path: path.display().to_string(),
            content: text,
        })
    }

    pub fn has_mem_hotplug_probe(&self) -> bool {
        self.system("memory/probe").exists()
    }
}

/// Counts the CPUs in a kernel cpu list (`0-3,6`); None if malformed.
fn parse_cpu_list(list: &str) -> Option<u32> {
    if list.is_empty() {
        return Some(0);
    }
    list.split(',').try_fold(0u32, |n, part| {
        let count = match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<u32>().ok()?;
                1
            }
        };
        Some(n + count)
    })
}

/// SetGuestDateTime: sets CLOCK_REALTIME.
pub fn set_date_time(sec: i64, usec: i64) -> Result<(), GuestError> {
    if !(0..1_000_000).contains(&usec) {
        return Err(GuestError::Invalid {
            field: "Usec",
            reason: format!("{usec} is not within 0..1000000"),
        });
    }
    if sec < 0 {
        return Err(GuestError::Invalid {
            field: "Sec",
            reason: format!("{sec} is before the epoch"),
        });
    }
    let ts = nix::sys::time::TimeSpec::new(sec, usec * 1000);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts).map_err(|source| {
        GuestError::Sys {
            op: "clock_settime",
            source,
        }
    })
}

// RNDRESEEDCRNG, _IO('R', 0x07): reseed the CRNG from the input pool now.
nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// ReseedRandomDev: mixes `data` into the kernel's input pool (by writing it
/// to the random device) and reseeds the CRNG from it at once.
pub fn reseed_random(random_dev: &Path, data: &[u8]) -> Result<(), GuestError> {
    if data.is_empty() {
        return Err(GuestError::Invalid {
            field: "data",
            reason: "no seed data".into(),
        });
    }
    let mut dev = fs::OpenOptions::new()
        .write(true)
        .open(random_dev)
        .map_err(io_err(random_dev))?;
    dev.write_all(data).map_err(io_err(random_dev))?;
    // SAFETY: RNDRESEEDCRNG takes no argument; the fd is the open random
    // device, valid for the call.
    unsafe { rnd_reseed_crng(std::os::fd::AsRawFd::as_raw_fd(&dev)) }.map_err(|source| {
        GuestError::Sys {
            op: "RNDRESEEDCRNG",
            source,
        }
    })?;
    Ok(())
}

/// Whether the kernel filters system calls (the `Seccomp:` line exists in
/// /proc/self/status only with CONFIG_SECCOMP).
pub fn supports_seccomp(proc_root: &Path) -> bool {
    fs::read_to_string(proc_root.join("self/status"))
        .map(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path().join("devices/system");
        for (path, content) in [
            ("cpu/cpu0/x", ""),
            ("cpu/cpu1/online", "1\n"),
            ("cpu/cpu2/online", "0\n"),
            ("cpu/online", "0-1\n"),
            ("cpu/cpufreq/online", "0\n"),
            ("memory/memory0/state", "online\n"),
            ("memory/memory7/state", "offline\n"),
            ("memory/block_size_bytes", "8000000\n"),
        ] {
            let p = sys.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(&p, content).expect("write");
        }
        dir
    }

    fn read(dir: &Path, p: &str) -> String {
        fs::read_to_string(dir.join("devices/system").join(p)).expect("read")
    }

    #[test]
    fn offline_cpus_and_memory_are_onlined_and_nothing_else_is_touched() {
        let dir = fake_sysfs();
        let sys = Sysfs::new(dir.path());
        assert_eq!(sys.online_cpu_mem(0, false).expect("online"), (1, 1));
        assert_eq!(read(dir.path(), "cpu/cpu2/online"), "1");
        assert_eq!(read(dir.path(), "memory/memory7/state"), "online");
        assert_eq!(read(dir.path(), "cpu/cpufreq/online"), "0\n");
        assert_eq!(read(dir.path(), "memory/memory0/state"), "online\n");
    }

    #[test]
    fn cpu_only_leaves_memory_and_a_missing_cpu_is_reported() {
        let dir = fake_sysfs();
        let sys = Sysfs {
            cpu_wait: Duration::from_millis(200),
            ..Sysfs::new(dir.path())
        };
        assert_eq!(sys.online_cpu_mem(0, true).expect("online"), (1, 0));
        assert_eq!(read(dir.path(), "memory/memory7/state"), "offline\n");
        // The fake kernel never updates cpu/online to 3 CPUs.
        let err = sys
            .online_cpu_mem(3, true)
            .expect_err("3 CPUs never appear");
        assert!(err.to_string().contains("nb_cpus"), "{err}");
        assert_eq!(err.code(), Code::DEADLINE_EXCEEDED);
    }

    #[test]
    fn block_size_is_hex_and_missing_hotplug_is_zero() {
        let dir = fake_sysfs();
        assert_eq!(
            Sysfs::new(dir.path()).mem_block_size().expect("size"),
            128 << 20
        );
        assert!(!Sysfs::new(dir.path()).has_mem_hotplug_probe());
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(Sysfs::new(empty.path()).mem_block_size().expect("size"), 0);
        assert_eq!(
            Sysfs::new(empty.path())
                .online_cpu_mem(0, false)
                .expect("nothing to online"),
            (0, 0)
        );
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,6"), Some(5));
        assert_eq!(parse_cpu_list(""), Some(0));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn bad_times_and_empty_seeds_name_the_field() {
        let e = set_date_time(1, 1_000_000).expect_err("usec too big");
        assert!(e.to_string().starts_with("Usec"), "{e}");
        let e = set_date_time(-5, 0).expect_err("negative");
        assert!(e.to_string().starts_with("Sec"), "{e}");
        let e = reseed_random(Path::new("/dev/random"), &[]).expect_err("empty");
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
    }
}
