//! Task Stats: the agent's container statistics as containerd's cgroup
//! metrics (`io.containerd.cgroups.v1.Metrics`, which ctr and the CRI
//! plugin decode on either host cgroup version).

use containerd_shim::protos::cgroups::metrics as v1;
use protocols::agent;

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
    }
}
