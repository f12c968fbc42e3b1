//! The container's cgroup (v1 or v2, through cgroups-rs): created by the
//! parent, which moves the container's init into it before setup goes on.

use std::time::Duration;

use cgroups_rs::freezer::{FreezerController, FreezerState};
use cgroups_rs::CgroupPid;
use cgroups_rs::{hierarchies, Cgroup, MaxValue, Resources};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

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
    #[error(transparent)]
    DeviceFilter(#[from] crate::device_filter::DeviceFilterError),
    #[error("cgroup {0}: its processes did not all freeze within 5s")]
    FreezeTimeout(String),
    #[error("cgroup {0}: linux.resources.unified needs cgroup v2; this host has v1")]
    UnifiedOnV1(String),
    #[error("linux.resources.unified: {0:?} is not a cgroup file name")]
    UnifiedKey(String),
    #[error("cgroup file {file}: {source}")]
    File {
        file: String,
        #[source]
        source: std::io::Error,
    },
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
        let cgroup = ContainerCgroup {
            path: path.to_string(),
            cgroup: Cgroup::new(hierarchies::auto(), path).map_err(err)?,
        };
        if let Some(r) = resources {
            cgroup.update(r)?;
            // v2 has no devices files: the rules become an eBPF program,
            // attached once, when the container is made.
            if let (Some(dir), Some(rules)) = (cgroup.v2_dir(), device_rules(r)) {
                crate::device_filter::attach(&dir, &rules)?;
            }
        }
        Ok(cgroup)
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
            })?;
        if let Some(cpu) = resources.cpu() {
            self.set_realtime(cpu.realtime_period(), cpu.realtime_runtime())?;
        }
        write_unified(self, &resources.unified().clone().unwrap_or_default())
    }

    /// cgroup v1's real-time budget (cgroups-rs leaves it out). The period
    /// goes first: the runtime must fit in it.
    fn set_realtime(&self, period: Option<u64>, runtime: Option<i64>) -> Result<(), CgroupError> {
        if period.is_none() && runtime.is_none() {
            return Ok(());
        }
        let cpu: &cgroups_rs::cpu::CpuController =
            self.cgroup
                .controller_of()
                .ok_or_else(|| CgroupError::NoController {
                    path: self.path.clone(),
                    controller: "cpu (for realtimeRuntime/realtimePeriod)",
                })?;
        let dir = cgroups_rs::Controller::path(cpu).to_path_buf();
        let files = [
            ("cpu.rt_period_us", period.map(|p| p.to_string())),
            ("cpu.rt_runtime_us", runtime.map(|r| r.to_string())),
        ];
        for (file, value) in files {
            if let Some(v) = value {
                std::fs::write(dir.join(file), v).map_err(|source| CgroupError::File {
                    file: file.to_string(),
                    source,
                })?;
            }
        }
        Ok(())
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

/// OCI resources in cgroups-rs's terms. Device rules end with runc's
/// default allow list (the standard nodes, ptys, and mknod of anything),
/// which containerd's specs rely on after their "deny all".
fn to_resources(r: &LinuxResources) -> Resources {
    let mut out = Resources::default();
    if let Some(m) = r.memory() {
        out.memory.memory_hard_limit = m.limit();
        out.memory.memory_soft_limit = m.reservation();
        out.memory.memory_swap_limit = m.swap();
        out.memory.kernel_memory_limit = m.kernel();
        out.memory.kernel_tcp_memory_limit = m.kernel_tcp();
        out.memory.swappiness = m.swappiness();
    }
    if let Some(c) = r.cpu() {
        out.cpu.shares = c.shares();
        out.cpu.quota = c.quota();
        out.cpu.period = c.period();
        out.cpu.cpus = c.cpus().clone();
        out.cpu.mems = c.mems().clone();
        out.cpu.realtime_runtime = c.realtime_runtime();
        out.cpu.realtime_period = c.realtime_period();
    }
    if let Some(p) = r.pids() {
        out.pid.maximum_number_of_processes = Some(if p.limit() > 0 {
            MaxValue::Value(p.limit())
        } else {
            MaxValue::Max
        });
    }
    if let Some(b) = r.block_io() {
        out.blkio = blkio(b);
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.hugepages.limits.push(cgroups_rs::HugePageResource {
            size: h.page_size().clone(),
            limit: h.limit() as u64,
        });
    }
    if let Some(n) = r.network() {
        out.network.class_id = n.class_id().map(u64::from);
        out.network.priorities = n
            .priorities()
            .iter()
            .flatten()
            .map(|p| cgroups_rs::NetworkPriority {
                name: p.name().clone(),
                priority: u64::from(p.priority()),
            })
            .collect();
    }
    if let Some(rules) = device_rules(r) {
        out.devices.devices = rules.iter().map(device_rule).collect();
    }
    out
}

fn blkio(b: &oci_spec::runtime::LinuxBlockIo) -> cgroups_rs::BlkIoResources {
    use cgroups_rs::{BlkIoDeviceResource, BlkIoDeviceThrottleResource};
    let throttle = |list: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>| {
        list.iter()
            .flatten()
            .map(|t| BlkIoDeviceThrottleResource {
                major: t.major() as u64,
                minor: t.minor() as u64,
                rate: t.rate(),
            })
            .collect()
    };
    cgroups_rs::BlkIoResources {
        weight: b.weight(),
        leaf_weight: b.leaf_weight(),
        weight_device: b
            .weight_device()
            .iter()
            .flatten()
            .map(|w| BlkIoDeviceResource {
                major: w.major() as u64,
                minor: w.minor() as u64,
                weight: w.weight(),
                leaf_weight: w.leaf_weight(),
            })
            .collect(),
        throttle_read_bps_device: throttle(b.throttle_read_bps_device()),
        throttle_read_iops_device: throttle(b.throttle_read_iops_device()),
        throttle_write_bps_device: throttle(b.throttle_write_bps_device()),
        throttle_write_iops_device: throttle(b.throttle_write_iops_device()),
        ..Default::default()
    }
}

fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> cgroups_rs::DeviceResource {
    use cgroups_rs::devices::{DevicePermissions as P, DeviceType as T};
    use oci_spec::runtime::LinuxDeviceType as D;
    let access = d.access().as_deref().unwrap_or("rwm");
    cgroups_rs::DeviceResource {
        allow: d.allow(),
        devtype: match d.typ() {
            Some(D::C) | Some(D::U) => T::Char,
            Some(D::B) => T::Block,
            _ => T::All,
        },
        major: d.major().unwrap_or(-1),
        minor: d.minor().unwrap_or(-1),
        access: [('r', P::Read), ('w', P::Write), ('m', P::MkNod)]
            .into_iter()
            .filter(|(c, _)| access.contains(*c))
            .map(|(_, p)| p)
            .collect(),
    }
}

/// A rule allowing `access` to devices `typ` `major`:`minor` (-1: any).
pub fn allow_rule(
    typ: oci_spec::runtime::LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(true);
    d.set_typ(Some(typ));
    d.set_major((major >= 0).then_some(major));
    d.set_minor((minor >= 0).then_some(minor));
    d.set_access(Some(access.to_string()));
    d
}

/// The spec's device rules followed by runc's allowed devices: mknod of
/// any node, the standard nodes, ptys. None when the spec has no rules.
fn device_rules(r: &LinuxResources) -> Option<Vec<LinuxDeviceCgroup>> {
    let mut rules = r.devices().clone()?;
    use oci_spec::runtime::LinuxDeviceType::{B, C};
    rules.extend([
        allow_rule(C, -1, -1, "m"),
        allow_rule(B, -1, -1, "m"),
        allow_rule(C, 1, 3, "rwm"),    // null
        allow_rule(C, 1, 5, "rwm"),    // zero
        allow_rule(C, 1, 7, "rwm"),    // full
        allow_rule(C, 1, 8, "rwm"),    // random
        allow_rule(C, 1, 9, "rwm"),    // urandom
        allow_rule(C, 5, 0, "rwm"),    // tty
        allow_rule(C, 5, 1, "rwm"),    // console
        allow_rule(C, 5, 2, "rwm"),    // ptmx
        allow_rule(C, 136, -1, "rwm"), // pts
    ]);
    Some(rules)
}

/// `linux.resources.unified`: files written as named in a v2 cgroup.
fn write_unified(
    cgroup: &ContainerCgroup,
    unified: &std::collections::HashMap<String, String>,
) -> Result<(), CgroupError> {
    if unified.is_empty() {
        return Ok(());
    }
    let dir = cgroup
        .v2_dir()
        .ok_or_else(|| CgroupError::UnifiedOnV1(cgroup.path.clone()))?;
    for (key, value) in unified {
        if key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::UnifiedKey(key.clone()));
        }
        std::fs::write(dir.join(key), value).map_err(|source| CgroupError::File {
            file: format!("{key} (linux.resources.unified)"),
            source,
        })?;
    }
    Ok(())
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
    fn device_rules_end_with_runc_default_allows() {
        let r: LinuxResources = serde_json::from_str(
            r#"{"devices": [{"allow": false, "access": "rwm"},
                            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]}"#,
        )
        .unwrap();
        let out = to_resources(&r).devices.devices;
        assert!(!out[0].allow && out[0].major == -1 && out[0].access.len() == 3);
        assert!(
            out[1].allow && (out[1].major, out[1].minor) == (10, 200) && out[1].access.len() == 2
        );
        let null = out.iter().any(|d| d.allow && (d.major, d.minor) == (1, 3));
        assert!(null, "/dev/null stays usable after a deny-all");
        let none: LinuxResources = serde_json::from_str("{}").unwrap();
        assert!(
            to_resources(&none).devices.devices.is_empty(),
            "no rules, no default allows"
        );
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
