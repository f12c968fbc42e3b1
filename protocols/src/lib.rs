//! The Hull agent API, shared by the host shim and the guest agent.
//!
//! `agent`, `health` and `oci` are generated from `protos/` into `OUT_DIR`;
//! their ttrpc stubs are `agent_ttrpc` and `health_ttrpc`. [`stream`] is the
//! handshake of the raw stdio connections (Hull's fast stdio path).

macro_rules! generated {
    ($($name:ident),*) => {$(
        #[allow(clippy::all, clippy::undocumented_unsafe_blocks, clippy::unwrap_used, unknown_lints, dead_code,
            missing_docs, non_camel_case_types, non_snake_case, non_upper_case_globals,
            trivial_casts, unused_imports, unused_results, unused_mut, unsafe_code)]
        pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        }
    )*};
}
generated!(agent, agent_ttrpc, health, health_ttrpc, oci, types);

pub mod modules_dep;
#[cfg(feature = "netlink")]
pub mod netlink;
pub mod process;
pub mod resources;
pub mod root_image;
pub mod spec;
pub mod stream;

/// vsock port of the agent's ttrpc server.
pub const AGENT_PORT: u32 = 1024;
/// vsock port of the agent's raw stdio stream listener.
pub const STDIO_PORT: u32 = 1025;
/// vsock port on the host that receives the agent's log lines.
pub const LOG_PORT: u32 = 1026;
/// vsock port on the host that the agent connects to once, to say it is
/// serving (`READY\n`). Waiting for this instead of polling the agent keeps
/// connection attempts away from a guest whose vsock driver is not up yet,
/// which can wedge vhost-device-vsock.
pub const READY_PORT: u32 = 1027;
/// vsock port of the agent's debug console (a shell in the guest), served
/// only with `hull.debug_console=on`.
pub const DEBUG_CONSOLE_PORT: u32 = 1028;
/// The line the agent sends on [`READY_PORT`].
pub const READY_LINE: &str = "READY\n";
/// Where the agent writes a pod's `hosts`, `hostname` and `resolv.conf`
/// when it holds the pod's namespaces (no sandbox container); the shim
/// binds them into the pod's containers.
pub const POD_FILES_DIR: &str = "/run/hull/pod";
/// Namespace paths under this prefix name another container's namespaces
/// in the guest: `<prefix><container id>/ns/<net|ipc|uts|pid|...>`. The
/// agent resolves them to that container's init, which is how the
/// containers of a pod share the sandbox container's namespaces.
pub const CONTAINER_NS_PREFIX: &str = "/run/hull/containers/";
