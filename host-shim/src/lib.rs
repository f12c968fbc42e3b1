//! The Hull shim: containerd's task API on the host, a VM per task, the
//! container inside it run by the guest agent.

pub mod accel;
pub mod agent;
pub mod annotations;
pub mod config;
pub mod errors;
pub mod guest_log;
pub mod hypervisor;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod network;
pub mod options;
pub mod pod;
pub mod rootfs;
pub mod sandbox;
pub mod service;
pub mod task;
pub mod vm;
pub mod volumes;
pub mod vsock;

pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// The shim crate's own setup: Hull sets up logging itself, and supervises
/// its children with tokio (the crate's reaper would steal their statuses).
pub fn shim_config() -> containerd_shim::Config {
    containerd_shim::Config {
        no_setup_logger: true,
        default_log_level: "info".into(),
        no_reaper: true,
        no_sub_reaper: true,
    }
}

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::collections::HashMap;

    /// Annotations (or any string map) from pairs.
    pub fn string_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
