//! The agent API suite: `hull-agent` runs as an ordinary root process on this
//! host (no VM) and every RPC is driven over its Unix socket, error paths and
//! concurrent use included. The same agent binary is PID 1 in the VMs of
//! the end-to-end suite.

mod fixture;
mod guest;
mod kata;
mod lifecycle;
mod network;
mod reaper;
mod stdio;
mod storage;
