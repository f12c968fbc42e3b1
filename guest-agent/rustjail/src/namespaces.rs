//! Linux namespaces of a container: which to create, which to join.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace {typ}: open {path}: {source}")]
    Open {
        typ: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace {typ}: setns {path}: {source}")]
    Join {
        typ: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("unshare {flags:?}: {source}")]
    Unshare {
        flags: CloneFlags,
        #[source]
        source: nix::Error,
    },
    #[error("namespace {0} listed twice")]
    Duplicate(&'static str),
}

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        // CLONE_NEWTIME has no constant in nix; its value is 0x80.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

pub fn type_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    }
}

/// The spec's namespaces, split into the ones to create and the ones to join.
#[derive(Debug)]
pub struct NamespacePlan {
    /// Created by unshare(2), except cgroup (see `new_cgroup`).
    pub unshare: CloneFlags,
    /// Whether to create a cgroup namespace, which must happen after the
    /// process has joined its cgroup.
    pub new_cgroup: bool,
    /// (type, path) to join with setns(2), in spec order.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl NamespacePlan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Self, NamespaceError> {
        let mut plan = NamespacePlan {
            unshare: CloneFlags::empty(),
            new_cgroup: false,
            join: Vec::new(),
        };
        let mut seen = CloneFlags::empty();
        for ns in namespaces {
            let flag = clone_flag(ns.typ());
            if seen.contains(flag) {
                return Err(NamespaceError::Duplicate(type_name(ns.typ())));
            }
            seen.insert(flag);
            match ns.path() {
                Some(path) => plan.join.push((ns.typ(), path.clone())),
                None if ns.typ() == LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                None => plan.unshare.insert(flag),
            }
        }
        Ok(plan)
    }

    pub fn creates(&self, t: LinuxNamespaceType) -> bool {
        if t == LinuxNamespaceType::Cgroup {
            return self.new_cgroup;
        }
        self.unshare.contains(clone_flag(t))
    }

    /// Opens every namespace to join. Done before any is joined, because
    /// joining the mount namespace changes what the paths point at.
    pub fn open_joins(
        &self,
    ) -> Result<Vec<(LinuxNamespaceType, PathBuf, OwnedFd)>, NamespaceError> {
        self.join
            .iter()
            .map(|(t, path)| {
                std::fs::File::open(path)
                    .map(|f| (*t, path.clone(), OwnedFd::from(f)))
                    .map_err(|source| NamespaceError::Open {
                        typ: type_name(*t),
                        path: path.display().to_string(),
                        source,
                    })
            })
            .collect()
    }
}

/// Joins opened namespaces, then creates the new ones.
pub fn enter(plan: &NamespacePlan) -> Result<(), NamespaceError> {
    for (t, path, fd) in plan.open_joins()? {
        nix::sched::setns(fd, clone_flag(t)).map_err(|source| NamespaceError::Join {
            typ: type_name(t),
            path: path.display().to_string(),
            source,
        })?;
    }
    if !plan.unshare.is_empty() {
        nix::sched::unshare(plan.unshare).map_err(|source| NamespaceError::Unshare {
            flags: plan.unshare,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(t: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().unwrap()
    }

    #[test]
    fn plan_splits_create_join_and_cgroup() {
        let plan = NamespacePlan::from_spec(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, Some("/proc/1/ns/net")),
            ns(LinuxNamespaceType::Cgroup, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .unwrap();
        assert_eq!(
            plan.unshare,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
        );
        assert!(plan.new_cgroup);
        assert_eq!(plan.join.len(), 1);
        assert!(plan.creates(LinuxNamespaceType::Pid));
        assert!(!plan.creates(LinuxNamespaceType::Network));
    }

    #[test]
    fn duplicate_namespace_is_rejected() {
        let err = NamespacePlan::from_spec(&[
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Uts, None),
        ]);
        assert!(matches!(err, Err(NamespaceError::Duplicate("uts"))));
    }
}
