//! Host memory per VM: what a workload frees in the guest goes back to the
//! host (free page reporting), and does not without it.

use std::time::{Duration, Instant};

use super::*;
use crate::env::{run, Env};

const MIB: u64 = 1024 * 1024;
/// What the workload fills and frees in the guest.
const FILL_MIB: u64 = 200;
/// Filling must grow QEMU's guest memory by at least this much (and, in
/// the run without reporting, leave it this much up).
const GROWN: u64 = (FILL_MIB - 20) * MIB;
/// "Back": within this much of the memory before the fill.
const BACK_WITHIN: u64 = 40 * MIB;

/// The QEMU process's resident guest memory (its memfd mapping), bytes.
fn guest_ram_resident(qemu_pid: &str) -> Result<u64, String> {
    let path = format!("/proc/{qemu_pid}/smaps");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut in_guest_ram = false;
    let mut kib = 0;
    for line in text.lines() {
        let header = line.split_whitespace().next().unwrap_or("");
        if header.contains('-') && header.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            in_guest_ram = line.contains("/memfd:memory-backend-memfd");
        } else if in_guest_ram {
            if let Some(v) = line.strip_prefix("Rss:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    if kib == 0 {
        return Err(format!("no guest memory mapping in {path}"));
    }
    Ok(kib * 1024)
}

/// Guest memory resident on the host before a container fills and frees
/// FILL_MIB of tmpfs, right after, and 30 s later (or as soon as it is back
/// within BACK_WITHIN of before).
fn fill_and_free(env: &Env) -> Result<[u64; 3], String> {
    let size = format!(
        "type=tmpfs,src=none,dst=/fill,options=size={}m",
        FILL_MIB + 50
    );
    let task = Detached::start_with(env, "fpr", &["--mount", &size], &["sleep", "600"])?;
    let qemu = vm_process(env, &task.id, "qemu-system")?;
    std::thread::sleep(Duration::from_secs(5));
    let before = guest_ram_resident(&qemu)?;
    let fill = format!("dd if=/dev/zero of=/fill/f bs=1M count={FILL_MIB} && sync && rm /fill/f");
    expect_success(&run(&mut task.exec("fill", &[], &["sh", "-c", &fill]))?)?;
    let after_fill = guest_ram_resident(&qemu)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = after_fill;
    while Instant::now() < deadline && later > before + BACK_WITHIN {
        std::thread::sleep(Duration::from_secs(1));
        later = guest_ram_resident(&qemu)?;
    }
    Ok([before, after_fill, later])
}

fn mib(v: [u64; 3]) -> String {
    format!("{} -> {} -> {} MiB", v[0] / MIB, v[1] / MIB, v[2] / MIB)
}

/// With free_page_reporting (the default), the 200 MiB a container filled
/// and freed leave QEMU within 30 s; with it off they stay, so the check
/// sees the device at work and not the workload's own behaviour.
pub(super) fn freed_guest_memory_returns_to_the_host(env: &Env) -> Result<(), String> {
    let with = fill_and_free(env)?;
    if with[1] < with[0] + GROWN {
        return Err(format!(
            "filling did not grow the guest's memory: {}",
            mib(with)
        ));
    }
    if with[2] > with[0] + BACK_WITHIN {
        return Err(format!(
            "with free page reporting the freed memory stayed: {}",
            mib(with)
        ));
    }
    let off = env
        .good_config()
        .replace("free_page_reporting = true", "free_page_reporting = false");
    let without = env.with_base_config(&off, || fill_and_free(env))?;
    if without[2] < without[0] + GROWN {
        return Err(format!(
            "without free page reporting the memory went back anyway: {}",
            mib(without)
        ));
    }
    println!("    with reporting {}; without {}", mib(with), mib(without));
    Ok(())
}
