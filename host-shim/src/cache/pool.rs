//! The hull-cache service: keeps `cache.pool_size` VMs booted, hands one
//! to each shim that asks for its shape, and boots a replacement.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{self, SockFlag, SockType, UnixAddr};
use tokio::sync::Notify;

use super::wire::{self, WireError};
use super::{describe_shape, shape, KeeperReport, PoolStatus, Reply, Request, VmInfo};
use super::{keeper, HOTPLUG_SLOTS};
use crate::config::HullConfig;
use crate::host_dir::HostDir;
use crate::share::Share;
use crate::vm::VmPaths;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another hull-cache holds {0}")]
    AlreadyRunning(String),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// How long a shim may take to send its request.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);
/// Keepers still running at shutdown get this long to end their VMs.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);
/// After a failed boot, the next waits this long, doubling to the cap, so
/// a VM that cannot boot does not make the service spin.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(60);

/// A booted VM waiting for a sandbox.
struct Waiting {
    info: VmInfo,
    /// The shape it was booted with.
    shape: String,
    /// The service's end of the keeper's socket: handed over with the VM.
    socket: OwnedFd,
    pidfds: Vec<OwnedFd>,
}

/// Where a keeper's VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Booting,
    Waiting,
    /// A shim has it: the keeper lives on with the pod.
    Taken,
    /// Let go by the service (of an older shape, or at shutdown).
    Ending,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Waiting>,
    /// Every keeper not yet exited, by VM name.
    keepers: HashMap<String, Phase>,
    taken: u64,
    replaced: u64,
    stopping: bool,
}

impl State {
    fn count(&self, phase: Phase) -> u32 {
        self.keepers.values().filter(|p| **p == phase).count() as u32
    }
}

struct Pool {
    cfg: HullConfig,
    state: Mutex<State>,
    refill: Notify,
    keepers_changed: Notify,
    log: slog::Logger,
    exe: PathBuf,
}

impl Pool {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> PoolStatus {
        let st = self.state();
        PoolStatus {
            pool_size: self.cfg.cache.pool_size,
            waiting: st.waiting.len() as u32,
            booting: st.count(Phase::Booting),
            shape: describe_shape(&self.cfg),
            taken: st.taken,
            replaced: st.replaced,
        }
    }
}

/// Runs the service until SIGTERM or SIGINT; then every waiting VM is
/// ended, and VMs already taken are left to their shims.
pub async fn serve(cfg: HullConfig, log: slog::Logger) -> Result<(), PoolError> {
    let _lock = prepare_dirs(&cfg, &log)?;
    let listener = listen(&cfg.cache.socket)?;
    let exe = std::env::current_exe().map_err(|source| PoolError::Io {
        op: "find",
        path: "/proc/self/exe".into(),
        source,
    })?;
    let pool = Arc::new(Pool {
        cfg,
        state: Mutex::new(State::default()),
        refill: Notify::new(),
        keepers_changed: Notify::new(),
        log,
        exe,
    });
    slog::info!(pool.log, "hull-cache serving"; "socket" => %pool.cfg.cache.socket.display(),
        "pool_size" => pool.cfg.cache.pool_size, "shape" => describe_shape(&pool.cfg));
    let refill = tokio::spawn(refill_loop(pool.clone()));
    let accept = tokio::spawn(accept_loop(pool.clone(), listener));
    wait_for_stop_signal().await;
    slog::info!(pool.log, "hull-cache stopping: ending the waiting VMs");
    accept.abort();
    refill.abort();
    let _ = std::fs::remove_file(&pool.cfg.cache.socket);
    shut_down(&pool).await;
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Drops the waiting VMs (their keepers end them) and waits for the
/// keepers of waiting and booting VMs to exit; those of taken VMs live on
/// with their pods.
async fn shut_down(pool: &Pool) {
    let waiting: Vec<Waiting> = {
        let mut st = pool.state();
        st.stopping = true;
        st.waiting.drain(..).collect()
    };
    let ended = waiting.len();
    drop(waiting);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    loop {
        let changed = pool.keepers_changed.notified();
        let own = {
            let st = pool.state();
            st.count(Phase::Booting) + st.count(Phase::Waiting) + st.count(Phase::Ending)
        };
        if own == 0 || tokio::time::timeout_at(deadline, changed).await.is_err() {
            slog::info!(pool.log, "hull-cache stopped"; "waiting_vms_ended" => ended,
                "keepers_left" => own);
            return;
        }
    }
}

/// Creates the pool directory, takes the service's lock, and removes what
/// a service that died left (its keepers ended their VMs when its sockets
/// closed; directories may remain).
fn prepare_dirs(
    cfg: &HullConfig,
    log: &slog::Logger,
) -> Result<nix::fcntl::Flock<std::fs::File>, PoolError> {
    let pool_dir = &cfg.cache.pool_dir;
    let io = |op: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| PoolError::Io { op, path, source }
    };
    let dir = HostDir::create(pool_dir).map_err(|e| PoolError::Io {
        op: "create",
        path: pool_dir.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    if let Some(parent) = cfg.cache.socket.parent() {
        HostDir::create(parent).map_err(|e| PoolError::Io {
            op: "create",
            path: parent.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let lock_path = pool_dir.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    // Held as long as the returned guard lives: the service's whole run.
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| PoolError::AlreadyRunning(lock_path.display().to_string()))?;
    for name in dir.entries(Path::new("")) {
        let paths = VmPaths::in_dir(pool_dir.join(&name));
        match Share::remove_at(&paths) {
            Ok(()) => slog::info!(log, "removed a VM directory a previous hull-cache left";
                "dir" => %paths.dir.display()),
            Err(e) => slog::warn!(log, "left VM directory not removed";
                "dir" => %paths.dir.display(), "error" => %e),
        }
    }
    Ok(lock)
}

/// The service's socket: SOCK_SEQPACKET, mode 0600 (root only).
fn listen(path: &Path) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, PoolError> {
    let err = |op: &'static str| {
        let path = path.display().to_string();
        move |e: nix::Error| PoolError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let _ = std::fs::remove_file(path);
    let sock = socket::socket(
        socket::AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err("socket"))?;
    let addr = UnixAddr::new(path).map_err(err("address"))?;
    // Created 0600 from the start: no moment when others could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = socket::bind(sock.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(err("bind"))?;
    socket::listen(&sock, socket::Backlog::new(64).map_err(err("listen"))?)
        .map_err(err("listen"))?;
    Ok(wire::register(sock)?)
}

async fn accept_loop(pool: Arc<Pool>, listener: tokio::io::unix::AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut guard) = listener.readable().await else {
            return;
        };
        let accepted = guard.try_io(|l| {
            socket::accept4(l.get_ref().as_raw_fd(), SockFlag::SOCK_CLOEXEC)
                .map_err(std::io::Error::from)
        });
        let fd = match accepted {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                slog::warn!(pool.log, "accept failed"; "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_would_block) => continue,
        };
        // SAFETY: accept4 returned a new descriptor nothing else owns.
        let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        tokio::spawn(answer(pool.clone(), conn));
    }
}

/// Answers one connection: root only, one request within REQUEST_WITHIN.
async fn answer(pool: Arc<Pool>, conn: OwnedFd) {
    let uid = socket::getsockopt(&conn, socket::sockopt::PeerCredentials).map(|c| c.uid());
    if uid != Ok(0) {
        slog::warn!(pool.log, "refused a connection not from root"; "uid" => ?uid);
        return;
    }
    let conn = match wire::register(conn) {
        Ok(c) => c,
        Err(e) => return slog::warn!(pool.log, "connection"; "error" => %e),
    };
    let req = match tokio::time::timeout(REQUEST_WITHIN, wire::recv_async::<Request>(&conn)).await {
        Ok(Ok(Some((req, _)))) => req,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return slog::warn!(pool.log, "bad request"; "error" => %e),
        Err(_) => {
            return slog::warn!(pool.log, "no request within the limit"; "limit" => ?REQUEST_WITHIN)
        }
    };
    let sock = conn.get_ref().as_fd();
    let sent = match req {
        Request::Status => wire::send(sock, &Reply::Status(pool.status()), &[]),
        Request::Take { shape, nics } => hand_over(&pool, sock, &shape, nics),
    };
    if let Err(e) = sent {
        slog::warn!(pool.log, "reply not sent"; "error" => %e);
    }
}

/// Sends the oldest waiting VM of the asked shape (or why there is none).
fn hand_over(pool: &Pool, sock: BorrowedFd, asked: &str, nics: u32) -> Result<(), WireError> {
    let no_vm = |reason: String| wire::send(sock, &Reply::NoVm { reason }, &[]);
    if asked != shape(&pool.cfg) {
        return no_vm(format!(
            "the sandbox's VM differs from the pool's ({})",
            describe_shape(&pool.cfg)
        ));
    }
    if nics > HOTPLUG_SLOTS {
        return no_vm(format!(
            "{nics} NICs; a pool VM has slots for {HOTPLUG_SLOTS}"
        ));
    }
    let Some(vm) = take_live(pool, asked) else {
        let booting = pool.state().count(Phase::Booting);
        return no_vm(format!("the pool is empty ({booting} booting)"));
    };
    let mut fds: Vec<BorrowedFd> = vec![vm.socket.as_fd()];
    fds.extend(vm.pidfds.iter().map(|f| f.as_fd()));
    let sent = wire::send(sock, &Reply::Vm(vm.info.clone()), &fds);
    if sent.is_ok() {
        let mut st = pool.state();
        st.taken += 1;
        st.keepers.insert(vm.info.name.clone(), Phase::Taken);
        drop(st);
        slog::info!(pool.log, "pool VM taken"; "vm" => &vm.info.name);
    }
    // Sent or not, the service lets go: a VM is never handed out twice.
    drop(vm);
    pool.refill.notify_one();
    sent
}

/// The oldest waiting VM of `shape` whose processes all live. VMs of an
/// older shape (booted before the guest image or QEMU was installed anew)
/// are ended and replaced, never handed out.
fn take_live(pool: &Pool, shape: &str) -> Option<Waiting> {
    let mut st = pool.state();
    let (current, stale): (Vec<Waiting>, Vec<Waiting>) =
        st.waiting.drain(..).partition(|w| w.shape == shape);
    st.waiting.extend(current);
    for vm in &stale {
        slog::info!(pool.log, "ending a pool VM of an older shape"; "vm" => &vm.info.name);
        st.keepers.insert(vm.info.name.clone(), Phase::Ending);
    }
    drop(stale);
    while let Some(vm) = st.waiting.pop_front() {
        if vm.pidfds.iter().all(crate::pidfd::is_alive) {
            return Some(vm);
        }
    }
    None
}

/// Boots VMs one at a time while the pool is short.
async fn refill_loop(pool: Arc<Pool>) {
    let mut retry = RETRY_FIRST;
    let mut n: u64 = 0;
    loop {
        let notified = pool.refill.notified();
        let short = {
            let st = pool.state();
            let have = st.count(Phase::Waiting) + st.count(Phase::Booting);
            !st.stopping && have < pool.cfg.cache.pool_size
        };
        if !short {
            notified.await;
            continue;
        }
        n += 1;
        let name = format!("vm-{}-{n}", std::process::id());
        let booted = boot_one(&pool, &name).await;
        match booted {
            Ok(()) => retry = RETRY_FIRST,
            Err(reason) => {
                slog::warn!(pool.log, "pool VM not booted"; "vm" => &name, "reason" => &reason,
                    "retry_in" => ?retry);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_CAP);
            }
        }
    }
}

/// Starts a keeper for `name` and waits for its report.
async fn boot_one(pool: &Arc<Pool>, name: &str) -> Result<(), String> {
    let started = std::time::Instant::now();
    let booted_shape = shape(&pool.cfg);
    let (ours, theirs) = wire::pair().map_err(|e| e.to_string())?;
    spawn_keeper(pool, name, theirs)?;
    let sock = wire::register(ours).map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(pool.cfg.timeouts.boot_secs + 10);
    let report = tokio::time::timeout(limit, wire::recv_async::<KeeperReport>(&sock)).await;
    let (info, pidfds) = match report {
        Ok(Ok(Some((KeeperReport::Ready(info), fds)))) => (info, fds),
        Ok(Ok(Some((KeeperReport::Died { reason }, _)))) => return Err(reason),
        Ok(Ok(None)) => return Err("its keeper exited without a report".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no report within {limit:?}")),
    };
    if pidfds.len() != info.processes.len() || info.name != name {
        return Err(format!("a report that does not match the VM: {info:?}"));
    }
    let socket = sock.into_inner();
    slog::info!(pool.log, "pool VM ready"; "vm" => name,
        "boot_ms" => started.elapsed().as_millis() as u64);
    let mut st = pool.state();
    // Its keeper may have exited already (the VM died at once).
    if let Some(phase) = st.keepers.get_mut(name) {
        *phase = Phase::Waiting;
        st.waiting.push_back(Waiting {
            info,
            shape: booted_shape,
            socket,
            pidfds,
        });
    }
    Ok(())
}

/// Starts `hull-cache keeper <name>` with `socket` as its descriptor 3, and
/// a task that reaps it. A keeper does not die with the service: one whose
/// VM was taken lives on with its pod.
fn spawn_keeper(pool: &Arc<Pool>, name: &str, socket: OwnedFd) -> Result<(), String> {
    // Above the target number, so dup2 below always clears close-on-exec.
    let high = nix::fcntl::fcntl(&socket, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|e| format!("dup: {e}"))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor nothing else owns.
    let high = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
    drop(socket);
    let raw = high.as_raw_fd();
    let mut cmd = std::process::Command::new(&pool.exe);
    // The VM's directory on the command line: an operator (or a leak
    // check) finds a keeper by it, as by its QEMU's.
    cmd.arg("keeper")
        .arg(pool.cfg.cache.pool_dir.join(name))
        .env("HULL_CONFIG", &pool.cfg.source);
    // SAFETY: dup2 is async-signal-safe and touches no shared memory.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, keeper::SOCKET_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| format!("start {}: {e}", pool.exe.display()))?;
    drop(high);
    pool.state()
        .keepers
        .insert(name.to_string(), Phase::Booting);
    let pool = pool.clone();
    let name = name.to_string();
    tokio::spawn(async move {
        let status = child.wait().await;
        let mut st = pool.state();
        let phase = st.keepers.remove(&name);
        if phase == Some(Phase::Waiting) {
            st.waiting.retain(|w| w.info.name != name);
            if !st.stopping {
                st.replaced += 1;
                slog::warn!(pool.log, "pool VM died while waiting; replacing it"; "vm" => &name,
                    "keeper" => ?status);
            }
        }
        drop(st);
        pool.refill.notify_one();
        pool.keepers_changed.notify_waiters();
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_service_is_refused_while_the_first_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = HullConfig::parse(
            include_str!("../../../config/configuration.toml"),
            Path::new("c.toml"),
        )
        .unwrap();
        cfg.cache.pool_dir = tmp.path().join("pool");
        cfg.cache.socket = tmp.path().join("sock/cache.sock");
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let first = prepare_dirs(&cfg, &log).unwrap();
        let err = prepare_dirs(&cfg, &log).unwrap_err();
        assert!(
            matches!(err, PoolError::AlreadyRunning(ref p) if p.ends_with("pool.lock")),
            "{err}"
        );
        drop(first);
        prepare_dirs(&cfg, &log).expect("the lock goes with the first service");
    }
}
