//! A container's record on disk, for a runtime whose commands run as
//! separate processes (`hull-jail create`, then `start`, `kill`...): one
//! directory per container under the runtime's root, as runc keeps.

use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{ContainerState, Spec};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container id {0:?} is invalid: use letters, digits, '_', '-', '.' and '+'")]
    BadId(String),
    #[error("state {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What the runtime remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// The container's init in the runtime's pid namespace.
    pub pid: i32,
    /// Its start time (clock ticks after boot): tells it from a later
    /// process that reuses the pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    pub cgroup_path: String,
    pub owner: String,
    /// The spec the container was created with (hooks, seccomp, annotations).
    pub spec: Spec,
}

/// The runtime's state directory (`--root`).
pub struct StateRoot {
    root: PathBuf,
}

const RECORD: &str = "state.json";
const EXEC_FIFO: &str = "exec.fifo";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn check_id(id: &str) -> Result<(), StateError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.+".contains(c);
    if id.is_empty() || id == "." || id == ".." || !id.chars().all(ok_char) {
        return Err(StateError::BadId(id.to_string()));
    }
    Ok(())
}

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateRoot { root: root.into() }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn exec_fifo(&self, id: &str) -> PathBuf {
        self.dir(id).join(EXEC_FIFO)
    }

    /// Makes the container's directory; fails if the id is taken.
    pub fn claim(&self, id: &str) -> Result<PathBuf, StateError> {
        check_id(id)?;
        std::fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        let dir = self.dir(id);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_string()))
            }
            r => r.map_err(io_err(&dir)).map(|_| dir),
        }
    }

    /// Writes the record atomically (a reader never sees half of it).
    pub fn save(&self, record: &Record) -> Result<(), StateError> {
        let dir = self.dir(&record.id);
        let tmp = dir.join(".state.json.tmp");
        let body = serde_json::to_vec(record).map_err(|source| StateError::Decode {
            path: tmp.display().to_string(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&body).map_err(io_err(&tmp))?;
        let path = dir.join(RECORD);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        check_id(id)?;
        let path = self.dir(id).join(RECORD);
        let body = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            r => r.map_err(io_err(&path))?,
        };
        serde_json::from_slice(&body).map_err(|source| StateError::Decode {
            path: path.display().to_string(),
            source,
        })
    }

    /// Every container with a record, by id.
    pub fn list(&self) -> Result<Vec<Record>, StateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r.map_err(io_err(&self.root))?,
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            match self.load(&id) {
                Ok(r) => out.push(r),
                // A directory without a record is a create in progress.
                Err(StateError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(io_err(&dir)),
        }
    }
}

/// The fields of a /proc/PID/stat text from field 3 (state) on: field N
/// is at index N - 3. The command name may hold spaces and parentheses, so
/// the fields start after the last ')'.
pub fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 2..].split_whitespace().collect())
}

/// The start time of `pid` (field 22 of /proc/PID/stat), and whether it
/// is a zombie; `None` if there is no such process.
pub fn process_start(proc_root: &Path, pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let fields = stat_fields(&stat)?;
    let zombie = fields.first() == Some(&"Z") || fields.first() == Some(&"X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// The record's process is still the container's init and has not exited.
pub fn init_alive(proc_root: &Path, record: &Record) -> bool {
    matches!(process_start(proc_root, record.pid), Some((start, false)) if start == record.pid_start)
}

/// A container's status as runc reports it: the OCI states plus `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

impl From<Status> for ContainerState {
    /// The OCI state (hooks' input), where a paused container is running.
    fn from(s: Status) -> ContainerState {
        match s {
            Status::Created => ContainerState::Created,
            Status::Running | Status::Paused => ContainerState::Running,
            Status::Stopped => ContainerState::Stopped,
        }
    }
}

/// The container's status.
pub fn status(
    proc_root: &Path,
    state_root: &StateRoot,
    record: &Record,
    frozen: impl FnOnce() -> bool,
) -> Status {
    if !init_alive(proc_root, record) {
        Status::Stopped
    } else if state_root.exec_fifo(&record.id).exists() {
        Status::Created
    } else if frozen() {
        Status::Paused
    } else {
        Status::Running
    }
}

/// `now` as RFC 3339 in UTC with nanoseconds, as runc writes `created`.
pub fn rfc3339(now: std::time::SystemTime) -> String {
    let d = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "c-1_2.3+x"] {
            check_id(good).unwrap();
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(rfc3339(t(0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(t(951_782_400)), "2000-02-29T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(t(1_795_392_000 + 3661)),
            "2026-11-23T01:01:01.000000000Z"
        );
    }

    #[test]
    fn records_round_trip_and_ids_are_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().join("root"));
        root.claim("c1").unwrap();
        assert!(matches!(root.claim("c1"), Err(StateError::Exists(_))));
        assert!(matches!(root.load("c1"), Err(StateError::NotFound(_))));
        assert!(
            root.list().unwrap().is_empty(),
            "a claim without a record is not listed"
        );
        let me = std::process::id() as i32;
        let (start, zombie) = process_start(Path::new("/proc"), me).unwrap();
        assert!(!zombie);
        let record = Record {
            id: "c1".into(),
            pid: me,
            pid_start: start,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339(std::time::SystemTime::now()),
            cgroup_path: "hull/c1".into(),
            owner: "root".into(),
            spec: Spec::default(),
        };
        root.save(&record).unwrap();
        assert_eq!(root.list().unwrap()[0].pid, me);
        assert!(init_alive(Path::new("/proc"), &record));
        let st = status(Path::new("/proc"), &root, &record, || false);
        assert_eq!(st, Status::Running);
        let reused = Record {
            pid_start: start + 1,
            ..record
        };
        let st = status(Path::new("/proc"), &root, &reused, || false);
        assert_eq!(st, Status::Stopped, "a reused pid is not the container");
        root.remove("c1").unwrap();
        assert!(matches!(root.load("c1"), Err(StateError::NotFound(_))));
    }
}
