//! A container cgroup's resource statistics, read the same way on cgroup
//! v2 (the guest) and v1 (a host running `hull-jail`).
//!
//! v2 is read from the cgroup's directory here rather than through
//! cgroups-rs, whose v2 memory statistics `unwrap()` a read that fails once
//! the cgroup is gone, which would take PID 1 down with it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Reported for a limit that is not set ("max").
pub const UNLIMITED: u64 = u64::MAX;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub memory_usage: u64,
    pub memory_max_usage: u64,
    pub memory_limit: u64,
    /// How often usage hit the limit.
    pub memory_failcnt: u64,
    pub swap_usage: u64,
    pub swap_limit: u64,
    /// `memory.stat` as the kernel reports it.
    pub memory_stat: BTreeMap<String, u64>,
    pub pids_current: u64,
    pub pids_limit: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup statistics {path}: {source}")]
pub struct StatsError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// "key value" lines (cpu.stat, memory.stat, memory.events).
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let key = words.next()?;
            let value = words.next()?.parse().ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// A single value file; "max" is [`UNLIMITED`]; a missing file is None.
fn read_value(dir: &Path, file: &str) -> Result<Option<u64>, StatsError> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(t) if t.trim() == "max" => Ok(Some(UNLIMITED)),
        Ok(t) => Ok(t.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StatsError {
            path: dir.join(file).display().to_string(),
            source,
        }),
    }
}

fn read_keyed(dir: &Path, file: &str) -> Result<BTreeMap<String, u64>, StatsError> {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(t) => Ok(parse_flat_keyed(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(StatsError {
            path: dir.join(file).display().to_string(),
            source,
        }),
    }
}

/// Statistics of the cgroup v2 directory `dir`. Files of controllers that
/// are not enabled are missing and read as zero; the cgroup itself must
/// exist.
pub fn read_v2(dir: &Path) -> Result<CgroupStats, StatsError> {
    if !dir.is_dir() {
        return Err(StatsError {
            path: dir.display().to_string(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let cpu = read_keyed(dir, "cpu.stat")?;
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0).saturating_mul(1000);
    let events = read_keyed(dir, "memory.events")?;
    let value = |f: &str| read_value(dir, f).map(Option::unwrap_or_default);
    Ok(CgroupStats {
        cpu_usage_ns: us("usage_usec"),
        cpu_user_ns: us("user_usec"),
        cpu_system_ns: us("system_usec"),
        cpu_periods: cpu.get("nr_periods").copied().unwrap_or(0),
        cpu_throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        cpu_throttled_ns: us("throttled_usec"),
        memory_usage: value("memory.current")?,
        memory_max_usage: value("memory.peak")?,
        memory_limit: read_value(dir, "memory.max")?.unwrap_or(UNLIMITED),
        memory_failcnt: events.get("max").copied().unwrap_or(0),
        swap_usage: value("memory.swap.current")?,
        swap_limit: read_value(dir, "memory.swap.max")?.unwrap_or(UNLIMITED),
        memory_stat: read_keyed(dir, "memory.stat")?,
        pids_current: value("pids.current")?,
        pids_limit: read_value(dir, "pids.max")?.unwrap_or(UNLIMITED),
    })
}

/// Statistics of a cgroup v1 cgroup, through cgroups-rs (whose v1 readers
/// do not panic).
pub fn read_v1(cgroup: &cgroups_rs::Cgroup) -> CgroupStats {
    use cgroups_rs::{cpu::CpuController, cpuacct::CpuAcctController};
    use cgroups_rs::{memory::MemController, pid::PidController, MaxValue};
    let mut s = CgroupStats::default();
    if let Some(acct) = cgroup.controller_of::<CpuAcctController>() {
        let a = acct.cpuacct();
        s.cpu_usage_ns = a.usage;
        s.cpu_user_ns = a.usage_user;
        s.cpu_system_ns = a.usage_sys;
    }
    if let Some(cpu) = cgroup.controller_of::<CpuController>() {
        let stat = parse_flat_keyed(&cpu.cpu().stat);
        s.cpu_periods = stat.get("nr_periods").copied().unwrap_or(0);
        s.cpu_throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
        s.cpu_throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);
    }
    if let Some(mem) = cgroup.controller_of::<MemController>() {
        let m = mem.memory_stat();
        s.memory_usage = m.usage_in_bytes;
        s.memory_max_usage = m.max_usage_in_bytes;
        s.memory_limit = u64::try_from(m.limit_in_bytes).unwrap_or(UNLIMITED);
        s.memory_failcnt = m.fail_cnt;
        s.memory_stat = m.stat.raw.into_iter().collect();
        let swap = mem.memswap();
        s.swap_usage = swap.usage_in_bytes;
        s.swap_limit = u64::try_from(swap.limit_in_bytes).unwrap_or(UNLIMITED);
    }
    if let Some(pids) = cgroup.controller_of::<PidController>() {
        s.pids_current = pids.get_pid_current().unwrap_or(0);
        s.pids_limit = match pids.get_pid_max() {
            Ok(MaxValue::Value(v)) => u64::try_from(v).unwrap_or(UNLIMITED),
            _ => UNLIMITED,
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files_map_to_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, t: &str| std::fs::write(dir.path().join(f), t).unwrap();
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n");
        w("memory.current", "4096\n");
        w("memory.peak", "8192\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.stat", "anon 100\nfile 200\n");
        w("pids.current", "2\n");
        w("pids.max", "64\n");
        let s = read_v2(dir.path()).unwrap();
        assert_eq!(
            (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!(
            (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns),
            (4, 1, 7000)
        );
        assert_eq!(
            (s.memory_usage, s.memory_max_usage, s.memory_limit),
            (4096, 8192, UNLIMITED)
        );
        assert_eq!(s.memory_failcnt, 3);
        assert_eq!(s.memory_stat.get("file"), Some(&200));
        assert_eq!((s.pids_current, s.pids_limit), (2, 64));
        // No swap controller files: zero usage, no limit.
        assert_eq!((s.swap_usage, s.swap_limit), (0, UNLIMITED));
    }

    #[test]
    fn a_removed_cgroup_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = read_v2(&gone).unwrap_err().to_string();
        assert!(err.contains("gone"), "{err}");
    }
}
