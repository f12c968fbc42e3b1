//! Task Stats: the agent's container statistics as containerd's cgroup
//! metrics, `io.containerd.cgroups.v1.Metrics` or `...v2.Metrics` (ctr and
//! the CRI plugin decode either, on either host cgroup version).

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use protocols::agent;

use crate::config::MetricsFormat;

#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/cgroups_v2/mod.rs"));
}
pub use generated::cgroups_v2_metrics as v2;

/// The statistics as the configured metrics type, packed for Task Stats.
pub fn to_any(s: &agent::StatsContainerResponse, format: MetricsFormat) -> std::io::Result<Any> {
    let packed = match format {
        MetricsFormat::V1 => containerd_shim::util::convert_to_any(Box::new(to_v1(s))),
        MetricsFormat::V2 => containerd_shim::util::convert_to_any(Box::new(to_v2(s))),
    };
    packed.map_err(std::io::Error::other)
}

pub fn to_v2(s: &agent::StatsContainerResponse) -> v2::Metrics {
    let cg = s.cgroup_stats.as_ref().cloned().unwrap_or_default();
    let cpu = cg.cpu_stats.as_ref().cloned().unwrap_or_default();
    let usage = cpu.cpu_usage.as_ref().cloned().unwrap_or_default();
    let throttle = cpu.throttling_data.as_ref().cloned().unwrap_or_default();
    let pids = cg.pids_stats.as_ref().cloned().unwrap_or_default();
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: pids.current,
            limit: pids.limit,
            ..Default::default()
        })
        .into(),
        // The agent API counts nanoseconds; cgroup v2 microseconds.
        cpu: Some(v2::CPUStat {
            usage_usec: usage.total_usage / 1000,
            user_usec: usage.usage_in_usermode / 1000,
            system_usec: usage.usage_in_kernelmode / 1000,
            nr_periods: throttle.periods,
            nr_throttled: throttle.throttled_periods,
            throttled_usec: throttle.throttled_time / 1000,
            ..Default::default()
        })
        .into(),
        memory: Some(memory_v2(
            cg.memory_stats.as_ref().cloned().unwrap_or_default(),
        ))
        .into(),
        ..Default::default()
    }
}

/// A pod's usage: its containers' pids, CPU time and memory summed
/// (limits are per container and are left out).
pub fn pod_v2(all: &[agent::StatsContainerResponse]) -> v2::Metrics {
    let (mut pids, mut cpu, mut mem) = (
        v2::PidsStat::new(),
        v2::CPUStat::new(),
        v2::MemoryStat::new(),
    );
    for m in all.iter().map(to_v2) {
        let (p, c, s) = (
            m.pids.unwrap_or_default(),
            m.cpu.unwrap_or_default(),
            m.memory.unwrap_or_default(),
        );
        pids.current += p.current;
        cpu.usage_usec += c.usage_usec;
        cpu.user_usec += c.user_usec;
        cpu.system_usec += c.system_usec;
        mem.usage += s.usage;
        mem.anon += s.anon;
        mem.file += s.file;
    }
    v2::Metrics {
        pids: Some(pids).into(),
        cpu: Some(cpu).into(),
        memory: Some(mem).into(),
        ..Default::default()
    }
}

/// [`pod_v2`] packed for SandboxMetrics.
pub fn pod_to_any(all: &[agent::StatsContainerResponse]) -> std::io::Result<Any> {
    containerd_shim::util::convert_to_any(Box::new(pod_v2(all))).map_err(std::io::Error::other)
}

/// memory.current/max/peak and the memory.stat keys, by their v2 names.
fn memory_v2(mem: agent::MemoryStats) -> v2::MemoryStat {
    let stat = |k: &str| mem.stats.get(k).copied().unwrap_or(0);
    let usage = mem.usage.as_ref().cloned().unwrap_or_default();
    let swap = mem.swap_usage.as_ref().cloned().unwrap_or_default();
    v2::MemoryStat {
        anon: stat("anon"),
        file: stat("file"),
        kernel_stack: stat("kernel_stack"),
        slab: stat("slab"),
        sock: stat("sock"),
        shmem: stat("shmem"),
        file_mapped: stat("file_mapped"),
        file_dirty: stat("file_dirty"),
        file_writeback: stat("file_writeback"),
        anon_thp: stat("anon_thp"),
        inactive_anon: stat("inactive_anon"),
        active_anon: stat("active_anon"),
        inactive_file: stat("inactive_file"),
        active_file: stat("active_file"),
        unevictable: stat("unevictable"),
        slab_reclaimable: stat("slab_reclaimable"),
        slab_unreclaimable: stat("slab_unreclaimable"),
        pgfault: stat("pgfault"),
        pgmajfault: stat("pgmajfault"),
        workingset_refault: stat("workingset_refault"),
        workingset_activate: stat("workingset_activate"),
        workingset_nodereclaim: stat("workingset_nodereclaim"),
        pgrefill: stat("pgrefill"),
        pgscan: stat("pgscan"),
        pgsteal: stat("pgsteal"),
        pgactivate: stat("pgactivate"),
        pgdeactivate: stat("pgdeactivate"),
        pglazyfree: stat("pglazyfree"),
        pglazyfreed: stat("pglazyfreed"),
        thp_fault_alloc: stat("thp_fault_alloc"),
        thp_collapse_alloc: stat("thp_collapse_alloc"),
        usage: usage.usage,
        usage_limit: usage.limit,
        max_usage: usage.max_usage,
        swap_usage: swap.usage,
        swap_limit: swap.limit,
        ..Default::default()
    }
}

pub fn to_v1(s: &agent::StatsContainerResponse) -> v1::Metrics {
    let cg = s.cgroup_stats.as_ref().cloned().unwrap_or_default();
    let cpu = cg.cpu_stats.as_ref().cloned().unwrap_or_default();
    let usage = cpu.cpu_usage.as_ref().cloned().unwrap_or_default();
    let throttle = cpu.throttling_data.as_ref().cloned().unwrap_or_default();
    let mem = cg.memory_stats.as_ref().cloned().unwrap_or_default();
    let entry = |d: Option<&agent::MemoryData>| {
        let d = d.cloned().unwrap_or_default();
        v1::MemoryEntry {
            limit: d.limit,
            usage: d.usage,
            max: d.max_usage,
            failcnt: d.failcnt,
            ..Default::default()
        }
    };
    let stat = |k: &str| mem.stats.get(k).copied().unwrap_or(0);
    let pids = cg.pids_stats.as_ref().cloned().unwrap_or_default();
    v1::Metrics {
        pids: Some(v1::PidsStat {
            current: pids.current,
            limit: pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: usage.total_usage,
                kernel: usage.usage_in_kernelmode,
                user: usage.usage_in_usermode,
                per_cpu: usage.percpu_usage.clone(),
                ..Default::default()
            })
            .into(),
            throttling: Some(v1::Throttle {
                periods: throttle.periods,
                throttled_periods: throttle.throttled_periods,
                throttled_time: throttle.throttled_time,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(v1::MemoryStat {
            cache: mem.cache,
            // The guest runs cgroup v2: anonymous memory is "anon" there.
            rss: stat("anon").max(stat("rss")),
            mapped_file: stat("file_mapped").max(stat("mapped_file")),
            dirty: stat("file_dirty").max(stat("dirty")),
            writeback: stat("file_writeback").max(stat("writeback")),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            usage: Some(entry(mem.usage.as_ref())).into(),
            swap: Some(entry(mem.swap_usage.as_ref())).into(),
            kernel: Some(entry(mem.kernel_usage.as_ref())).into(),
            ..Default::default()
        })
        .into(),
        network: s
            .network_stats
            .iter()
            .map(|n| v1::NetworkStat {
                name: n.name.clone(),
                rx_bytes: n.rx_bytes,
                rx_packets: n.rx_packets,
                rx_errors: n.rx_errors,
                rx_dropped: n.rx_dropped,
                tx_bytes: n.tx_bytes,
                tx_packets: n.tx_packets,
                tx_errors: n.tx_errors,
                tx_dropped: n.tx_dropped,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_statistics_become_containerd_metrics() {
        let mut mem = agent::MemoryStats {
            cache: 7,
            usage: Some(agent::MemoryData {
                usage: 100,
                max_usage: 150,
                limit: 1000,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        mem.stats.insert("anon".into(), 60);
        mem.stats.insert("pgfault".into(), 5);
        let s = agent::StatsContainerResponse {
            cgroup_stats: Some(agent::CgroupStats {
                memory_stats: Some(mem).into(),
                pids_stats: Some(agent::PidsStats {
                    current: 2,
                    limit: 10,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let m = to_v1(&s);
        assert_eq!(m.memory.usage.usage, 100);
        assert_eq!(m.memory.usage.max, 150);
        assert_eq!(m.memory.usage.limit, 1000);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.pg_fault),
            (7, 60, 5)
        );
        assert_eq!((m.pids.current, m.pids.limit), (2, 10));
        assert_eq!(m.cpu.usage.total, 0);

        let m = to_v2(&s);
        assert_eq!(
            (m.memory.usage, m.memory.max_usage, m.memory.usage_limit),
            (100, 150, 1000)
        );
        assert_eq!((m.memory.anon, m.memory.pgfault), (60, 5));
        assert_eq!((m.pids.current, m.pids.limit), (2, 10));
        let any = to_any(&s, MetricsFormat::V2).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let any = to_any(&s, MetricsFormat::V1).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    }
}
