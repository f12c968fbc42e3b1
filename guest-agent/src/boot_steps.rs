//! The agent's own start-up steps, timed from the kernel's start
//! (CLOCK_BOOTTIME), for the boot timeline: the "agent ready" line carries
//! them ("init=2181 initramfs_left=2250 ...", milliseconds).

use std::sync::Mutex;

static STEPS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

/// Milliseconds since the kernel started.
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Records that `step` has just ended.
pub fn mark(step: &'static str) {
    let now = uptime_ms();
    if let Ok(mut steps) = STEPS.lock() {
        steps.push((step, now));
    }
}

/// The steps so far, in order: "step=ms step=ms".
pub fn summary() -> String {
    let Ok(steps) = STEPS.lock() else {
        return String::new();
    };
    format_steps(&steps)
}

fn format_steps(steps: &[(&str, u64)]) -> String {
    steps
        .iter()
        .map(|(name, ms)| format!("{name}={ms}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_as_name_equals_milliseconds() {
        assert_eq!(
            format_steps(&[("init", 2181), ("modules", 2400)]),
            "init=2181 modules=2400"
        );
    }

    #[test]
    fn uptime_advances() {
        let a = uptime_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(uptime_ms() >= a + 20);
    }
}
