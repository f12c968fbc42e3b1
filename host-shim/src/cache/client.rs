//! The shim's side of hull-cache: take a booted VM for a sandbox, or learn
//! that there is none (and boot one as without the cache).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{self, SockFlag, SockType, UnixAddr};

use super::wire::{self, WireError};
use super::{Reply, Request, VmInfo};
use crate::accel::{Accel, Choice};
use crate::config::HullConfig;
use crate::host_dir::HostDir;
use crate::vm::{HandedProcess, HandedVm, VmPaths};

/// How long the service may take to answer: it answers from memory.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("hull-cache at {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hull-cache: {0}")]
    Wire(#[from] WireError),
    #[error("hull-cache closed the connection without an answer")]
    NoAnswer,
    #[error("hull-cache answered {0}")]
    Unexpected(String),
    #[error("the VM hull-cache handed over is not usable: {0}")]
    BadVm(String),
}

/// Asks the service at `socket` and returns its reply and descriptors.
fn ask(socket: &Path, req: &Request) -> Result<(Reply, Vec<OwnedFd>), CacheError> {
    let connect_err = |e: nix::Error| CacheError::Connect {
        path: socket.display().to_string(),
        source: e.into(),
    };
    let sock = socket::socket(
        socket::AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(connect_err)?;
    let addr = UnixAddr::new(socket).map_err(connect_err)?;
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).map_err(connect_err)?;
    wire::send(sock.as_fd(), req, &[])?;
    wire::recv_within(sock.as_fd(), ANSWER_WITHIN)?.ok_or(CacheError::NoAnswer)
}

/// The pool's state, for hull-check and `hull-cache status`.
pub fn status(socket: &Path) -> Result<super::PoolStatus, CacheError> {
    match ask(socket, &Request::Status)? {
        (Reply::Status(s), _) => Ok(s),
        (other, _) => Err(CacheError::Unexpected(format!("{other:?}"))),
    }
}

/// What taking a VM came to.
pub enum Taken {
    /// A booted VM, its directory now the sandbox's.
    Vm(Box<HandedVm>),
    /// None (no service, another shape, an empty pool): boot one.
    Boot(String),
}

/// Takes a VM of the sandbox's shape from hull-cache, if one waits, and
/// moves its directory to the sandbox's (`VmPaths::new(state_dir, id)`).
/// Blocking: call it off the runtime's workers.
pub fn take(cfg: &HullConfig, sandbox_id: &str, nics: usize) -> Result<Taken, CacheError> {
    let socket = &cfg.cache.socket;
    if !socket.exists() {
        return Ok(Taken::Boot(format!(
            "no hull-cache at {}",
            socket.display()
        )));
    }
    let req = Request::Take {
        shape: super::shape(cfg),
        nics: u32::try_from(nics).unwrap_or(u32::MAX),
    };
    let (info, fds) = match ask(socket, &req)? {
        (Reply::Vm(info), fds) => (info, fds),
        (Reply::NoVm { reason }, _) => return Ok(Taken::Boot(reason)),
        (other, _) => return Err(CacheError::Unexpected(format!("{other:?}"))),
    };
    // From here on, dropping the descriptors ends the VM: its keeper sees
    // its socket close.
    let (keeper, pidfds) = split_fds(&info, fds)?;
    let paths = VmPaths::new(&cfg.state_dir, sandbox_id);
    move_vm_dir(&cfg.cache.pool_dir, &info.name, &paths.dir)?;
    let processes = info
        .processes
        .iter()
        .zip(pidfds)
        .map(|((name, pid), pidfd)| HandedProcess {
            name: name.clone(),
            pid: *pid,
            pidfd,
        })
        .collect();
    Ok(Taken::Vm(Box::new(HandedVm {
        paths,
        accel: accel_choice(&info)?,
        vsock_cid: info.vsock_cid,
        processes,
        keeper,
    })))
}

/// The keeper's socket and one live pidfd per process, or an error.
fn split_fds(info: &VmInfo, fds: Vec<OwnedFd>) -> Result<(OwnedFd, Vec<OwnedFd>), CacheError> {
    if fds.len() != info.processes.len() + 1 {
        return Err(CacheError::BadVm(format!(
            "{} descriptors for {} processes",
            fds.len(),
            info.processes.len()
        )));
    }
    let mut fds = fds.into_iter();
    let keeper = fds
        .next()
        .ok_or_else(|| CacheError::BadVm("no keeper".into()))?;
    let pidfds: Vec<OwnedFd> = fds.collect();
    if let Some(((name, _), _)) = info
        .processes
        .iter()
        .zip(&pidfds)
        .find(|(_, fd)| !crate::pidfd::is_alive(fd))
    {
        return Err(CacheError::BadVm(format!("{name} is not a live process")));
    }
    Ok((keeper, pidfds))
}

/// Moves `pool_dir/<name>` to `dest`, which must not exist. `name` comes
/// from the service, and is checked to be one plain name all the same.
fn move_vm_dir(pool_dir: &Path, name: &str, dest: &Path) -> Result<(), CacheError> {
    let bad = |why: String| CacheError::BadVm(why);
    let (Some(parent), Some(dest_name)) = (dest.parent(), dest.file_name()) else {
        return Err(bad(format!("sandbox directory {}", dest.display())));
    };
    let pool = HostDir::open(pool_dir).map_err(|e| bad(e.to_string()))?;
    let state = HostDir::create(parent).map_err(|e| bad(e.to_string()))?;
    pool.move_into(Path::new(name), &state, &PathBuf::from(dest_name))
        .map_err(|e| bad(e.to_string()))
}

fn accel_choice(info: &VmInfo) -> Result<Choice, CacheError> {
    let accel = match info.accel.as_str() {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => return Err(CacheError::BadVm(format!("accelerator {other:?}"))),
    };
    Ok(Choice {
        accel,
        reason: format!("{} (chosen by hull-cache)", info.accel_reason),
    })
}
