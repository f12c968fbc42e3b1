//! The container's cgroup (v1 or v2, through cgroups-rs): created by the
//! parent, which moves the container's init into it before setup goes on.

use std::time::Duration;

use cgroups_rs::freezer::{FreezerController, FreezerState};
use cgroups_rs::CgroupPid;
use cgroups_rs::{hierarchies, Cgroup, MaxValue, Resources};
use oci_spec::runtime::LinuxResources;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {source}")]
    Cgroups {
        path: String,
        #[source]
        source: cgroups_rs::error::Error,
    },
    #[error("cgroupsPath {0:?} must not contain '..'")]
    BadPath(String),
    #[error("cgroup {path}: no {controller} controller")]
    NoController {
        path: String,
        controller: &'static str,
    },
    #[error("cgroup {0}: its processes did not all freeze within 5s")]
    FreezeTimeout(String),
}

const FREEZE_POLL: Duration = Duration::from_millis(10);
const FREEZE_POLLS: u32 = 500;

/// A container's cgroup.
pub struct ContainerCgroup {
    path: String,
    cgroup: Cgroup,
}

/// The cgroup path to use: the spec's `cgroupsPath`, or `/hull/<id>`.
pub fn cgroup_path(spec_path: Option<&std::path::Path>, id: &str) -> Result<String, CgroupError> {
    let path = match spec_path {
        Some(p) => p.display().to_string(),
        None => format!("/hull/{id}"),
    };
    if path.split('/').any(|c| c == "..") {
        return Err(CgroupError::BadPath(path));
    }
    Ok(path.trim_start_matches('/').to_string())
}

impl ContainerCgroup {
    /// Creates (or reuses) the cgroup and applies the spec's resources.
    pub fn create(path: &str, resources: Option<&LinuxResources>) -> Result<Self, CgroupError> {
        let err = |source| CgroupError::Cgroups {
            path: path.to_string(),
            source,
        };
        let cgroup = Cgroup::new(hierarchies::auto(), path).map_err(err)?;
        if let Some(r) = resources {
            cgroup.apply(&to_resources(r)).map_err(err)?;
        }
        Ok(ContainerCgroup {
            path: path.to_string(),
            cgroup,
        })
    }

    /// Loads an existing cgroup.
    pub fn load(path: &str) -> Self {
        ContainerCgroup {
            path: path.to_string(),
            cgroup: Cgroup::load(hierarchies::auto(), path),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn add_process(&self, pid: u32) -> Result<(), CgroupError> {
        self.cgroup
            .add_task_by_tgid(CgroupPid::from(pid as u64))
            .map_err(|source| CgroupError::Cgroups {
                path: self.path.clone(),
                source,
            })
    }

    /// Every process in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        self.cgroup
            .tasks()
            .into_iter()
            .map(|p| p.pid as u32)
            .collect()
    }

    fn freezer(&self) -> Result<&FreezerController, CgroupError> {
        self.cgroup
            .controller_of::<FreezerController>()
            .ok_or_else(|| CgroupError::NoController {
                path: self.path.clone(),
                controller: "freezer",
            })
    }

    /// Freezes every process of the cgroup (pause), and returns once the
    /// kernel reports them all frozen, which lags the request.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let freezer = self.freezer()?;
        freezer.freeze().map_err(|source| CgroupError::Cgroups {
            path: self.path.clone(),
            source,
        })?;
        for _ in 0..FREEZE_POLLS {
            if self.is_frozen() {
                return Ok(());
            }
            std::thread::sleep(FREEZE_POLL);
        }
        // Leave it as it was rather than half-frozen.
        let _ = freezer.thaw();
        Err(CgroupError::FreezeTimeout(self.path.clone()))
    }

    /// Thaws the cgroup (resume).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.freezer()?
            .thaw()
            .map_err(|source| CgroupError::Cgroups {
                path: self.path.clone(),
                source,
            })
    }

    /// Whether every process is frozen: v2 reports it in `cgroup.events`
    /// (`cgroup.freeze` is only the request), v1 in `freezer.state`.
    pub fn is_frozen(&self) -> bool {
        if self.cgroup.v2() {
            let events = hierarchies::auto()
                .root()
                .join(&self.path)
                .join("cgroup.events");
            return std::fs::read_to_string(events)
                .map(|t| t.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false);
        }
        self.freezer()
            .and_then(|f| {
                f.state().map_err(|source| CgroupError::Cgroups {
                    path: self.path.clone(),
                    source,
                })
            })
            .is_ok_and(|s| matches!(s, FreezerState::Frozen))
    }

    /// Applies new limits to a running container (`update`).
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.cgroup
            .apply(&to_resources(resources))
            .map_err(|source| CgroupError::Cgroups {
                path: self.path.clone(),
                source,
            })
    }

    /// The cgroup's directory on a cgroup v2 host; None on v1.
    pub fn v2_dir(&self) -> Option<std::path::PathBuf> {
        self.cgroup
            .v2()
            .then(|| hierarchies::auto().root().join(&self.path))
    }

    /// The cgroup's directory in the v1 memory hierarchy; None on v2.
    pub fn memory_v1_dir(&self) -> Option<std::path::PathBuf> {
        (!self.cgroup.v2()).then(|| hierarchies::auto().root().join("memory").join(&self.path))
    }

    /// The cgroup's resource statistics.
    pub fn stats(&self) -> Result<crate::stats::CgroupStats, crate::stats::StatsError> {
        if let Some(dir) = self.v2_dir() {
            return crate::stats::read_v2(&dir);
        }
        Ok(crate::stats::read_v1(&self.cgroup))
    }

    /// Removes the cgroup; it must be empty.
    /// Kills whatever is in the cgroup and removes it, retrying while the
    /// kernel empties it (a killed process leaves a moment after dying).
    /// For a container whose creation failed: nothing of it stays behind.
    pub fn discard(&self) -> Result<(), CgroupError> {
        let mut last = Ok(());
        for _ in 0..50 {
            for pid in self.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            last = self.destroy();
            if last.is_ok() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        last
    }

    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.cgroup.delete().map_err(|source| CgroupError::Cgroups {
            path: self.path.clone(),
            source,
        })
    }
}

/// The subset of OCI resources the first container path applies.
fn to_resources(r: &LinuxResources) -> Resources {
    let mut out = Resources::default();
    if let Some(m) = r.memory() {
        out.memory.memory_hard_limit = m.limit();
        out.memory.memory_soft_limit = m.reservation();
        out.memory.memory_swap_limit = m.swap();
    }
    if let Some(c) = r.cpu() {
        out.cpu.shares = c.shares();
        out.cpu.quota = c.quota();
        out.cpu.period = c.period();
        out.cpu.cpus = c.cpus().clone();
        out.cpu.mems = c.mems().clone();
    }
    if let Some(p) = r.pids() {
        out.pid.maximum_number_of_processes = Some(if p.limit() > 0 {
            MaxValue::Value(p.limit())
        } else {
            MaxValue::Max
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real cgroups (v1 on this host, v2 in the guest through the e2e
    /// suite): a frozen writer stops writing, a thawed one goes on.
    #[test]
    fn freeze_stops_every_process_and_thaw_resumes_them() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (real cgroups)"
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ticks");
        let path = format!("hull-test/freeze-{}", std::process::id());
        let cg = ContainerCgroup::create(&path, None).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while :; do echo x >> {}; sleep 0.02; done",
                out.display()
            ))
            .spawn()
            .unwrap();
        cg.add_process(child.id()).unwrap();
        let size = || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let grew = |from: u64| {
            std::thread::sleep(Duration::from_millis(300));
            size() > from
        };
        assert!(grew(size()), "the writer never ran");
        let stats = cg.stats().unwrap();
        assert!(stats.pids_current >= 1, "{stats:?}");
        assert!(stats.cpu_usage_ns > 0, "{stats:?}");
        cg.freeze().unwrap();
        assert!(cg.is_frozen());
        assert!(!grew(size()), "a frozen writer wrote");
        cg.thaw().unwrap();
        assert!(!cg.is_frozen());
        assert!(grew(size()), "a thawed writer did not resume");
        child.kill().unwrap();
        child.wait().unwrap();
        for _ in 0..100 {
            if cg.destroy().is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The shared parent goes too when no other test still uses it.
        let _ = ContainerCgroup::load("hull-test").destroy();
    }

    #[test]
    fn path_defaults_and_rejects_dotdot() {
        assert_eq!(cgroup_path(None, "c1").unwrap(), "hull/c1");
        assert_eq!(
            cgroup_path(Some("/default/c1".as_ref()), "c1").unwrap(),
            "default/c1"
        );
        assert!(cgroup_path(Some("/a/../../etc".as_ref()), "c1").is_err());
    }
}
