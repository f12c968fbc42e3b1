//! Linux namespaces of a container: which to create, which to join.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    #[error("user namespace: write {file}: {source}")]
    IdMap {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("time namespace: write timens_offsets: {0}")]
    TimeOffsets(#[source] std::io::Error),
}

/// One `uid_map`/`gid_map` file's text: `container host size` per line.
pub fn id_map_text(mappings: &[oci_spec::runtime::LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the user namespace mappings of process `pid`. Done by the
/// runtime, which holds CAP_SETUID/CAP_SETGID in the parent namespace: the
/// process in the new namespace could map only its own id.
pub fn write_id_mappings(
    proc_root: &Path,
    pid: i32,
    uids: &[oci_spec::runtime::LinuxIdMapping],
    gids: &[oci_spec::runtime::LinuxIdMapping],
) -> Result<(), NamespaceError> {
    for (name, maps) in [("uid_map", uids), ("gid_map", gids)] {
        if maps.is_empty() {
            continue;
        }
        let file = proc_root.join(pid.to_string()).join(name);
        std::fs::write(&file, id_map_text(maps)).map_err(|source| NamespaceError::IdMap {
            file: file.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Sets the clock offsets of a time namespace this process just created
/// (allowed only before any process has entered it).
pub fn write_time_offsets(
    offsets: &std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>,
) -> Result<(), NamespaceError> {
    let text: String = offsets
        .iter()
        .map(|(clock, o)| {
            format!(
                "{clock} {} {}\n",
                o.secs().unwrap_or(0),
                o.nanosecs().unwrap_or(0)
            )
        })
        .collect();
    if text.is_empty() {
        return Ok(());
    }
    std::fs::write("/proc/self/timens_offsets", text).map_err(NamespaceError::TimeOffsets)
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

    /// Whether the process gets a namespace of type `t` of its own,
    /// created or joined by path (not the runtime's).
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.creates(t) || self.join.iter().any(|(j, _)| *j == t)
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

/// The order in which an exec joins a container's namespaces: user first,
/// so the others are joined with the capabilities it grants; pid applies
/// to children only; mount changes what `/proc` paths mean, but every
/// namespace is opened before any is joined.
const EXEC_JOIN_ORDER: [(LinuxNamespaceType, &str); 8] = [
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
    (LinuxNamespaceType::Time, "time"),
    (LinuxNamespaceType::Mount, "mnt"),
];

/// The plan for a process joining the namespaces of the running process
/// `pid`: every namespace of it that differs from ours (setns into one's
/// own user namespace is an error). `proc_root` is normally `/proc`.
pub fn plan_to_join(proc_root: &Path, pid: i32) -> Result<NamespacePlan, NamespaceError> {
    let mut join = Vec::new();
    for (typ, name) in EXEC_JOIN_ORDER {
        let theirs = proc_root.join(pid.to_string()).join("ns").join(name);
        let ours = proc_root.join("self/ns").join(name);
        let stat = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let their_id = match stat(&theirs) {
            Ok(id) => id,
            // A kernel without this namespace type (time before 5.6).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && typ == LinuxNamespaceType::Time =>
            {
                continue
            }
            Err(source) => {
                return Err(NamespaceError::Open {
                    typ: name,
                    path: theirs.display().to_string(),
                    source,
                })
            }
        };
        if stat(&ours).ok() != Some(their_id) {
            join.push((typ, theirs));
        }
    }
    Ok(NamespacePlan {
        unshare: CloneFlags::empty(),
        new_cgroup: false,
        join,
    })
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
    fn exec_joins_only_the_namespaces_that_differ_in_order() {
        let proc = tempfile::tempdir().unwrap();
        let theirs = proc.path().join("42/ns");
        let ours = proc.path().join("self/ns");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        for name in ["user", "ipc", "uts", "net", "pid", "cgroup", "mnt"] {
            std::fs::write(theirs.join(name), name).unwrap();
            // Same namespace: the same inode.
            if matches!(name, "user" | "cgroup") {
                std::fs::hard_link(theirs.join(name), ours.join(name)).unwrap();
            } else {
                std::fs::write(ours.join(name), name).unwrap();
            }
        }
        // No time namespace on this kernel: skipped, not an error.
        let plan = plan_to_join(proc.path(), 42).unwrap();
        let types: Vec<_> = plan.join.iter().map(|(t, _)| type_name(*t)).collect();
        assert_eq!(types, ["ipc", "uts", "network", "pid", "mount"]);
        assert!(plan.unshare.is_empty() && !plan.new_cgroup);
        assert_eq!(plan.join[4].1, theirs.join("mnt"));
    }

    #[test]
    fn exec_into_a_missing_process_names_the_path() {
        let proc = tempfile::tempdir().unwrap();
        let err = plan_to_join(proc.path(), 7).unwrap_err().to_string();
        assert!(err.contains("7/ns/user"), "{err}");
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
