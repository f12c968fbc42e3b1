//! Output streams announced before their process exists (`direct` in the
//! stream header): the connection itself becomes the process's stdout or
//! stderr, so its output leaves the VM with no copy in the agent. The
//! agent keeps a duplicate only to end the stream: once the process has
//! exited and no process of its container still holds the socket, or
//! [`HELD_AFTER_EXIT`] after the exit if one does (Kata #4747: a
//! background child must not hang the exec).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use protocols::stream::StreamKind;
use rustjail::cgroups::ContainerCgroup;

use crate::container::Process;
use crate::errors::AgentError;

/// How long an announced stream waits for its process to be created.
const PENDING_FOR: Duration = Duration::from_secs(60);
/// Streams waiting for their processes at once, beyond which a new one is
/// refused (a host that announces and never creates).
const MAX_PENDING: usize = 256;
/// After the exit, how long a process the exited one left behind may keep
/// the stream open before it is ended under it.
const HELD_AFTER_EXIT: Duration = Duration::from_millis(200);
const HOLDER_POLL: Duration = Duration::from_millis(20);

type Key = (String, String, StreamKind);

struct Pending {
    socket: OwnedFd,
    since: Instant,
}

/// Announced streams, by container, exec id (the init's is the container
/// id) and kind.
#[derive(Default)]
pub struct DirectStreams {
    pending: Mutex<HashMap<Key, Pending>>,
}

/// The output sockets one new process gets.
pub struct DirectOutputs {
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

fn key(container_id: &str, exec_id: &str, kind: StreamKind) -> Key {
    let exec = if exec_id.is_empty() {
        container_id
    } else {
        exec_id
    };
    (container_id.to_string(), exec.to_string(), kind)
}

impl DirectStreams {
    /// Keeps `socket` for the process `container_id`/`exec_id` will be; a
    /// second announcement of the same stream replaces the first.
    pub fn hold(
        &self,
        container_id: &str,
        exec_id: &str,
        kind: StreamKind,
        socket: OwnedFd,
    ) -> Result<(), AgentError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.since.elapsed() < PENDING_FOR);
        if pending.len() >= MAX_PENDING {
            return Err(AgentError::invalid(
                "stream header",
                format!("{MAX_PENDING} direct streams already wait for their processes"),
            ));
        }
        pending.insert(
            key(container_id, exec_id, kind),
            Pending {
                socket,
                since: Instant::now(),
            },
        );
        Ok(())
    }

    /// The streams announced for a process being created, made blocking as
    /// a process expects its stdio; one the host has hung up on meanwhile
    /// is dropped (the process gets a pipe instead).
    pub fn take(&self, container_id: &str, exec_id: &str) -> Result<DirectOutputs, AgentError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut take = |kind| {
            pending
                .remove(&key(container_id, exec_id, kind))
                .map(|p| p.socket)
                .filter(|s| !hung_up(s))
        };
        let (stdout, stderr) = (take(StreamKind::Stdout), take(StreamKind::Stderr));
        drop(pending);
        for s in [&stdout, &stderr].into_iter().flatten() {
            crate::stdio::set_nonblocking_to(s, false)?;
        }
        Ok(DirectOutputs { stdout, stderr })
    }
}

fn hung_up(socket: &OwnedFd) -> bool {
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(socket), rdhup)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

/// `/proc/PID/fd` names a socket as `socket:[INODE]`.
fn socket_link(fd: &OwnedFd) -> Option<String> {
    let st = nix::sys::stat::fstat(fd).ok()?;
    Some(format!("socket:[{}]", st.st_ino))
}

/// Whether a process in the container's cgroup has any of `links` open.
fn held_in(cgroup_path: &str, links: &[String]) -> bool {
    ContainerCgroup::load(cgroup_path).pids().iter().any(|pid| {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        dir.flatten().any(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| links.iter().any(|want| l.as_os_str() == want.as_str()))
        })
    })
}

/// Ends `sockets` (duplicates of a process's direct streams) once the
/// process has exited: at once when nothing in its container holds them,
/// else after [`HELD_AFTER_EXIT`]. Everything the process wrote before its
/// exit is queued ahead of the shutdown, so none of it is lost.
pub async fn end_after_exit(
    process: std::sync::Arc<Process>,
    sockets: Vec<OwnedFd>,
    cgroup_path: String,
) {
    if sockets.is_empty() {
        return;
    }
    process.wait().await;
    let links: Vec<String> = sockets.iter().filter_map(socket_link).collect();
    let exited = Instant::now();
    while exited.elapsed() < HELD_AFTER_EXIT {
        let (path, links) = (cgroup_path.clone(), links.clone());
        let held = tokio::task::spawn_blocking(move || held_in(&path, &links))
            .await
            .unwrap_or(false);
        if !held {
            break;
        }
        tokio::time::sleep(HOLDER_POLL).await;
    }
    for s in &sockets {
        let _ = nix::sys::socket::shutdown(s.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}
