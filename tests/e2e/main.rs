//! End-to-end: `ctr` against a private containerd with Hull installed, real
//! QEMU VMs under the machine's accelerator. Needs root; fails (never skips)
//! without it. Run with `make e2e` (which installs the current build first).

mod cases;
mod cri;
mod env;
mod shim;

use std::time::{Duration, Instant};

/// Each command has its own deadline; this bounds the whole suite too, so
/// CI always ends with a verdict. HULL_E2E_LIMIT_MINUTES changes it (0: no
/// bound, for `make soak`, whose length is set by its sizes).
const SUITE_LIMIT: Duration = Duration::from_secs(40 * 60);

fn suite_limit() -> Option<Duration> {
    match std::env::var("HULL_E2E_LIMIT_MINUTES").map(|v| v.parse::<u64>()) {
        Ok(Ok(0)) => None,
        Ok(Ok(minutes)) => Some(Duration::from_secs(minutes * 60)),
        _ => Some(SUITE_LIMIT),
    }
}

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        println!("e2e: the suite ran longer than {limit:?}; stopping");
        println!("0 passed, 1 failed");
        std::process::exit(1);
    });
}

fn main() {
    if let Some(limit) = suite_limit() {
        watchdog(limit);
    }
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    // HULL_E2E_CONTAINERD=1.6 (or 2.3) runs against that one only.
    let only = std::env::var("HULL_E2E_CONTAINERD").ok();
    for containerd in env::Containerd::ALL {
        if only
            .as_ref()
            .is_some_and(|v| !containerd.name().ends_with(v.as_str()))
        {
            continue;
        }
        let env = match env::Env::start(containerd) {
            Ok(e) => e,
            Err(e) => {
                println!("e2e: set-up of {} failed: {e}", containerd.name());
                failed += 1;
                continue;
            }
        };
        for (name, case, scope) in cases::ALL {
            let first = containerd == env::Containerd::ALL[0];
            let runs_here = match scope {
                cases::Scope::Every => true,
                cases::Scope::First => first,
                cases::Scope::SandboxApi => containerd.has_sandbox_api(),
            };
            if filter.as_deref().is_some_and(|f| !name.contains(f)) || !runs_here {
                continue;
            }
            let start = Instant::now();
            let result = case(&env).and_then(|()| env.check_no_leaks());
            let secs = start.elapsed().as_secs_f64();
            let label = format!("{name} [{}]", containerd.name());
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("test {label} ... ok ({secs:.1}s)");
                }
                Err(e) => {
                    failed += 1;
                    println!("test {label} ... FAILED ({secs:.1}s)\n    {e}");
                    env.force_cleanup();
                }
            }
        }
        env.stop();
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
