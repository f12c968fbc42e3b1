//! The Hull shim: containerd's task API on the host, a VM per task, the
//! container inside it run by the guest agent.

pub mod accel;
pub mod agent;
pub mod annotations;
pub mod cache;
pub mod config;
pub mod console;
pub mod errors;
pub mod events;
pub mod guest_log;
pub mod guest_root;
pub mod helper_limits;
pub mod host_dir;
pub mod hypervisor;
pub mod io;
pub mod launch;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod options;
pub mod pidfd;
pub mod pod;
pub mod qmp;
pub mod rootfs;
pub mod sandbox;
pub mod service;
pub mod share;
pub mod task;
pub mod vm;
pub mod vsock;

pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::collections::HashMap;

    /// The peak resident memory of this process, in KiB.
    pub fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap()
    }

    /// Annotations (or any string map) from pairs.
    pub fn string_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
