//! rustjail builds OCI Linux containers. It is synchronous and owns no async
//! runtime, so it can run in the freshly re-executed container init process
//! (`hull-agent init`) as well as in a plain command-line front (`hull-jail`).
//!
//! The parent side ([`container`]) spawns the init binary with a
//! [`channel`] socket, and the child side ([`init`]) builds the container
//! from the [`config::InitConfig`] it receives: namespaces, cgroup join,
//! mounts and rootfs, devices, user, capabilities, and finally `execve`.

// PID 1 must never panic on a path the host can reach (tests may).
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::unwrap_used)
)]

pub mod caps;
pub mod cgroup_mount;
pub mod cgroups;
pub mod channel;
pub mod config;
pub mod console;
pub mod container;
pub mod device_filter;
pub mod devices;
pub mod features;
pub mod hooks;
pub mod init;
pub mod lifecycle;
pub mod loopback;
pub mod mounts;
pub mod namespaces;
pub mod paths;
pub mod process;
pub mod process_attrs;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod stats;
pub mod syscall;
pub mod unsupported;
pub mod users;
pub mod vsock_filter;
