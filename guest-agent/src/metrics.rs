//! GetMetrics: the agent's and the guest's figures in the Prometheus text
//! exposition format (version 0.0.4), read from a proc root given as a
//! parameter.

use std::fmt::Write;
use std::path::Path;

/// Builds an exposition: families of samples, each family once.
#[derive(Default)]
struct Exposition {
    text: String,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// `Key: value kB` lines (/proc/meminfo, /proc/self/status) as bytes or
/// plain numbers.
fn keyed_values(text: &str) -> Vec<(&str, f64)> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut words = rest.split_whitespace();
            let n: f64 = words.next()?.parse().ok()?;
            let scale = if words.next() == Some("kB") {
                1024.0
            } else {
                1.0
            };
            Some((key, n * scale))
        })
        .collect()
}

fn lookup(values: &[(&str, f64)], key: &str) -> Option<f64> {
    values.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// User and system CPU seconds of a process, from fields 14 and 15 of
/// `stat` (after the parenthesised command name, which may hold spaces).
fn process_cpu_seconds(stat: &str, ticks_per_sec: f64) -> Option<f64> {
    // Fields 14 and 15.
    let fields = rustjail::state::stat_fields(stat)?;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec)
}

fn ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

fn agent_metrics(e: &mut Exposition, proc_root: &Path) {
    let read = |p: &str| std::fs::read_to_string(proc_root.join(p)).unwrap_or_default();
    let status = read("self/status");
    let status = keyed_values(&status);
    let gauges = [
        (
            "VmRSS",
            "hull_agent_resident_memory_bytes",
            "Resident memory of the agent.",
        ),
        (
            "VmHWM",
            "hull_agent_resident_memory_peak_bytes",
            "Peak resident memory of the agent.",
        ),
        (
            "VmSize",
            "hull_agent_virtual_memory_bytes",
            "Virtual memory of the agent.",
        ),
        ("Threads", "hull_agent_threads", "Threads of the agent."),
    ];
    for (key, name, help) in gauges {
        if let Some(v) = lookup(&status, key) {
            e.single(name, "gauge", help, v);
        }
    }
    if let Some(cpu) = process_cpu_seconds(&read("self/stat"), ticks_per_sec()) {
        e.single(
            "hull_agent_cpu_seconds_total",
            "counter",
            "User and system CPU time of the agent.",
            cpu,
        );
    }
    if let Ok(fds) = std::fs::read_dir(proc_root.join("self/fd")) {
        let n = fds.count() as f64;
        e.single(
            "hull_agent_open_fds",
            "gauge",
            "Open file descriptors of the agent.",
            n,
        );
    }
}

fn guest_metrics(e: &mut Exposition, proc_root: &Path) {
    let read = |p: &str| std::fs::read_to_string(proc_root.join(p)).unwrap_or_default();
    let meminfo = read("meminfo");
    let meminfo = keyed_values(&meminfo);
    e.family(
        "hull_guest_memory_bytes",
        "gauge",
        "Guest memory from /proc/meminfo.",
    );
    for key in [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "Shmem",
        "SwapTotal",
        "SwapFree",
    ] {
        if let Some(v) = lookup(&meminfo, key) {
            e.sample("hull_guest_memory_bytes", &[("item", key)], v);
        }
    }
    let loadavg = read("loadavg");
    let loads: Vec<f64> = loadavg
        .split_whitespace()
        .take(3)
        .filter_map(|w| w.parse().ok())
        .collect();
    if let [l1, l5, l15] = loads[..] {
        e.family("hull_guest_load", "gauge", "Guest load average.");
        for (period, v) in [("1m", l1), ("5m", l5), ("15m", l15)] {
            e.sample("hull_guest_load", &[("period", period)], v);
        }
    }
    if let Some(up) = read("uptime")
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
    {
        e.single(
            "hull_guest_uptime_seconds",
            "gauge",
            "Time since the guest kernel started.",
            up,
        );
    }
    let stat = read("stat");
    if let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) {
        let modes = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let ticks = ticks_per_sec();
        e.family(
            "hull_guest_cpu_seconds_total",
            "counter",
            "Guest CPU time by mode, all CPUs.",
        );
        for (mode, v) in modes.iter().zip(cpu.split_whitespace().skip(1)) {
            if let Ok(v) = v.parse::<f64>() {
                e.sample("hull_guest_cpu_seconds_total", &[("mode", mode)], v / ticks);
            }
        }
    }
}

/// The whole exposition. `containers` is how many containers the agent holds.
pub fn gather(proc_root: &Path, containers: usize) -> String {
    let mut e = Exposition::default();
    e.single(
        "hull_agent_containers",
        "gauge",
        "Containers the agent holds.",
        containers as f64,
    );
    agent_metrics(&mut e, proc_root);
    guest_metrics(&mut e, proc_root);
    e.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_from_a_fake_proc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::create_dir_all(p.join("self/fd")).expect("mkdir");
        std::fs::write(p.join("self/fd/0"), "").expect("fd");
        std::fs::write(
            p.join("self/status"),
            "Name:\thull-agent\nVmRSS:\t    2048 kB\nThreads:\t3\n",
        )
        .expect("status");
        // comm with a space and a parenthesis; utime 50, stime 25 ticks.
        let stat = "1 (hull (x) agent) S 0 1 1 0 -1 4194560 1 0 0 0 50 25 0 0 20 0 3 0";
        std::fs::write(p.join("self/stat"), stat).expect("stat");
        std::fs::write(p.join("meminfo"), "MemTotal:  4 kB\nMemFree: 1 kB\n").expect("meminfo");
        std::fs::write(p.join("loadavg"), "0.50 0.25 0.10 1/80 99\n").expect("loadavg");
        let text = gather(p, 2);
        assert!(text.contains("hull_agent_containers 2\n"), "{text}");
        assert!(
            text.contains("hull_agent_resident_memory_bytes 2097152\n"),
            "{text}"
        );
        assert!(text.contains("hull_agent_threads 3\n"), "{text}");
        assert!(text.contains("hull_agent_open_fds 1\n"), "{text}");
        let cpu = 75.0 / ticks_per_sec();
        assert!(
            text.contains(&format!("hull_agent_cpu_seconds_total {cpu}\n")),
            "{text}"
        );
        assert!(
            text.contains("hull_guest_memory_bytes{item=\"MemTotal\"} 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("hull_guest_load{period=\"5m\"} 0.25\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hull_agent_cpu_seconds_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
