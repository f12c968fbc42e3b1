//! OCI conformance of `hull-jail` (rustjail), checked the same way against
//! Debian's runc and crun: each case runs a container whose checker script
//! verifies, from inside, the effect of one part of the spec (or drives
//! the lifecycle from outside). Every case runs against every runtime; a
//! case fails if any runtime fails it, except where a reference runtime's
//! version is known not to implement the field (`REFERENCE_GAPS`, each
//! with its reason; a listed gap that passes is itself a failure, so the
//! list cannot go stale). hull-jail has no such list.
//!
//! Needs root (namespaces, cgroups, mounts): it fails, never skips, without.

// A test program (harness = false, so not cfg(test)): a setup step that
// fails is a test failure, and says where.
#![allow(clippy::unwrap_used)]

mod bundle;
mod cases;
mod runtime;

use std::time::Instant;

use runtime::Runtime;

/// A case: drives `runtime` and says what was wrong.
pub type CaseFn = fn(&Runtime) -> Result<(), String>;

/// Fields the Debian reference runtimes here do not implement.
const REFERENCE_GAPS: &[(&str, &str, &str)] = &[
    ("runc", "hostname_and_domainname", "runc 1.1.5 does not set the domainname (runc 1.2 does)"),
    ("runc", "process_io_priority", "process.ioPriority arrived in runc 1.2; Debian has 1.1.5"),
    ("runc", "process_scheduler", "process.scheduler arrived in runc 1.2; Debian has 1.1.5"),
    ("runc", "linux_personality", "linux.personality arrived in runc 1.2; Debian has 1.1.5"),
    ("runc", "time_namespace_offsets", "the time namespace arrived in runc 1.2; Debian has 1.1.5"),
    ("crun", "time_namespace_offsets", "crun 1.8.1 fails to create a time namespace with offsets (\"write to sync socket: Broken pipe\")"),
    ("crun", "hooks_order_and_state", "crun 1.8.1 gives createContainer hooks pid 0 in the state"),
    ("crun", "spec_and_features", "crun 1.8.1 has no features command (crun 1.9 has)"),
    ("crun", "process_io_priority", "process.ioPriority arrived in crun 1.9; Debian has 1.8.1"),
    ("crun", "process_scheduler", "process.scheduler arrived in crun 1.9; Debian has 1.8.1"),
];

fn gap(runtime: &str, case: &str) -> Option<&'static str> {
    REFERENCE_GAPS
        .iter()
        .find(|(r, c, _)| *r == runtime && *c == case)
        .map(|(_, _, why)| *why)
}

fn main() {
    assert!(
        nix_is_root(),
        "the conformance suite needs root (namespaces, cgroups, mounts); run it as root"
    );
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtimes = runtime::all();
    let mut failed = Vec::new();
    let (mut passed, mut gaps) = (0, 0);
    for (name, case) in cases::ALL {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        for rt in &runtimes {
            let started = Instant::now();
            let result = case(rt);
            let ms = started.elapsed().as_millis();
            let expected_gap = gap(rt.name, name);
            let verdict = match (&result, expected_gap) {
                (Ok(()), None) => {
                    passed += 1;
                    "ok".to_string()
                }
                (Err(_), Some(why)) => {
                    gaps += 1;
                    format!("known gap of the reference runtime: {why}")
                }
                (Ok(()), Some(_)) => {
                    failed.push(format!("{name} [{}]: listed as a gap but passes", rt.name));
                    "FAILED (listed gap passes: update REFERENCE_GAPS)".to_string()
                }
                (Err(e), None) => {
                    failed.push(format!("{name} [{}]: {e}", rt.name));
                    "FAILED".to_string()
                }
            };
            println!("{name:<40} {:<10} {ms:>5} ms  {verdict}", rt.name);
            if let (Err(e), None) = (&result, expected_gap) {
                println!("    {}", e.replace('\n', "\n    "));
            }
        }
    }
    println!(
        "\n{passed} passed, {gaps} known gaps of a reference runtime (not passes), {} failed",
        failed.len()
    );
    for f in &failed {
        println!("FAILED: {}", f.lines().next().unwrap_or_default());
    }
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
