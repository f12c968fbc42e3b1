//! StatsContainer: a container cgroup's statistics in the agent API's form.

use protocols::agent;
use rustjail::stats::CgroupStats;

pub fn to_proto(s: &CgroupStats) -> agent::CgroupStats {
    let memory = |usage, max_usage, failcnt, limit| agent::MemoryData {
        usage,
        max_usage,
        failcnt,
        limit,
        ..Default::default()
    };
    agent::CgroupStats {
        cpu_stats: Some(agent::CpuStats {
            cpu_usage: Some(agent::CpuUsage {
                total_usage: s.cpu_usage_ns,
                usage_in_kernelmode: s.cpu_system_ns,
                usage_in_usermode: s.cpu_user_ns,
                ..Default::default()
            })
            .into(),
            throttling_data: Some(agent::ThrottlingData {
                periods: s.cpu_periods,
                throttled_periods: s.cpu_throttled_periods,
                throttled_time: s.cpu_throttled_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory_stats: Some(agent::MemoryStats {
            // v2 calls the page cache "file", v1 "cache".
            cache: s
                .memory_stat
                .get("file")
                .or_else(|| s.memory_stat.get("cache"))
                .copied()
                .unwrap_or(0),
            usage: Some(memory(
                s.memory_usage,
                s.memory_max_usage,
                s.memory_failcnt,
                s.memory_limit,
            ))
            .into(),
            swap_usage: Some(memory(s.swap_usage, 0, 0, s.swap_limit)).into(),
            use_hierarchy: true,
            stats: s.memory_stat.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ..Default::default()
        })
        .into(),
        pids_stats: Some(agent::PidsStats {
            current: s.pids_current,
            limit: s.pids_limit,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// Per-interface counters from a network namespace's `/proc/<pid>/net/dev`
/// (the loopback left out, as Kata does).
pub fn network_from_proc(text: &str) -> Vec<agent::NetworkStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = counters
                .split_whitespace()
                .map(|w| w.parse().unwrap_or(0))
                .collect();
            if name == "lo" || v.len() < 12 {
                return None;
            }
            Some(agent::NetworkStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_per_interface() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n";
        let stats = network_from_proc(text);
        assert_eq!(stats.len(), 1);
        let eth0 = &stats[0];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (5000, 40, 1, 2)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (3000, 30, 3, 4)
        );
    }

    #[test]
    fn statistics_land_in_kata_fields() {
        let mut s = CgroupStats {
            cpu_usage_ns: 9,
            cpu_system_ns: 4,
            memory_usage: 100,
            memory_limit: 200,
            pids_current: 3,
            ..Default::default()
        };
        s.memory_stat.insert("file".into(), 50);
        let p = to_proto(&s);
        assert_eq!(p.cpu_stats.cpu_usage.total_usage, 9);
        assert_eq!(p.cpu_stats.cpu_usage.usage_in_kernelmode, 4);
        assert_eq!(p.memory_stats.usage.usage, 100);
        assert_eq!(p.memory_stats.usage.limit, 200);
        assert_eq!(p.memory_stats.cache, 50);
        assert_eq!(p.memory_stats.stats.get("file"), Some(&50));
        assert_eq!(p.pids_stats.current, 3);
    }
}
