//! The container's cgroup (v1 or v2, through cgroups-rs): created by the
//! parent, which moves the container's init into it before setup goes on.

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
}

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

    /// Removes the cgroup; it must be empty.
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
