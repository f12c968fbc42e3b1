//! What the container init is told to build.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};

/// The init process's instructions, sent as the first channel message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub container_id: String,
    pub spec: Spec,
    /// Absolute path of the root filesystem, already resolved against the bundle.
    pub rootfs: PathBuf,
    /// Bring up `lo` in a network namespace the container creates (a VM
    /// has no CNI loopback plugin to do it).
    #[serde(default)]
    pub loopback_up: bool,
    /// The bundle directory, for the state hooks receive.
    #[serde(default)]
    pub bundle: PathBuf,
    /// For a create and start in separate processes (`hull-jail create`):
    /// the FIFO the init opens for writing, which blocks it until `start`
    /// opens it for reading. Opened before pivot_root, while reachable.
    #[serde(default)]
    pub exec_fifo: Option<PathBuf>,
    /// Refuse AF_VSOCK sockets to every process of the container
    /// ([`crate::vsock_filter`]).
    #[serde(default)]
    pub deny_vsock: bool,
}

/// An additional process to start inside a running container: it joins
/// every namespace of the container's init and (by the runtime) its cgroup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    pub container_id: String,
    /// The container init's pid as the runtime sees it.
    pub init_pid: i32,
    pub process: Process,
    /// The container's seccomp profile, which applies to its execs too.
    pub seccomp: Option<LinuxSeccomp>,
    /// As [`InitConfig::deny_vsock`].
    #[serde(default)]
    pub deny_vsock: bool,
}
