//! The OCI lifecycle for a runtime whose commands are separate processes
//! (runc's command line, `hull-jail`): create, start, kill, delete,
//! pause, resume, exec, over a [`StateRoot`].
//!
//! A detached create leaves the container init blocked on the opening of
//! an exec FIFO in the container's state directory; `start` opens it for
//! reading, which lets the init go on to the user program (as runc does).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::cgroups::{self, CgroupError, ContainerCgroup};
use crate::config::{ExecConfig, InitConfig};
use crate::container::{self, ContainerError, Created, InitCommand, InitStdio};
use crate::hooks::{self, HookKind};
use crate::state::{self, Record, StateError, StateRoot, Status};

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{path}: {message}")]
    Spec { path: String, message: String },
    #[error("container {id} is {status}: cannot {op}")]
    Status {
        id: String,
        status: Status,
        op: &'static str,
    },
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error("process.terminal is set but no --console-socket was given: a detached container needs one to hand its terminal to")]
    NoConsoleSocket,
    #[error("container init {0} exited before it was started")]
    InitGone(i32),
}

fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let op = op.into();
    move |source| JailError::Io { op, source }
}

/// Where a container's standard streams and terminal go.
pub struct Attach {
    pub stdio: InitStdio,
    /// The Unix socket the terminal's master is sent to (runc's
    /// `--console-socket`); without it the caller gets the master.
    pub console_socket: Option<PathBuf>,
}

/// A runtime over one state root.
pub struct Jail {
    pub root: StateRoot,
    pub init: InitCommand,
    proc_root: PathBuf,
}

/// Reads and checks `bundle/config.json`.
pub fn load_spec(bundle: &Path) -> Result<Spec, JailError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| JailError::Spec {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf, JailError> {
    let root = spec.root().as_ref().ok_or_else(|| JailError::Spec {
        path: bundle.join("config.json").display().to_string(),
        message: "root.path is missing".into(),
    })?;
    let path = bundle.join(root.path());
    path.canonicalize().map_err(|e| JailError::Spec {
        path: bundle.join("config.json").display().to_string(),
        message: format!("root.path {}: {e}", path.display()),
    })
}

impl Jail {
    pub fn new(root: impl Into<PathBuf>, init: InitCommand) -> Self {
        Jail {
            root: StateRoot::new(root),
            init,
            proc_root: PathBuf::from("/proc"),
        }
    }

    pub fn status(&self, record: &Record) -> Status {
        state::status(&self.proc_root, &self.root, record, || {
            ContainerCgroup::load(&record.cgroup_path).is_frozen()
        })
    }

    /// The record of a container in one of `allowed` states.
    fn load_in(&self, id: &str, allowed: &[Status], op: &'static str) -> Result<Record, JailError> {
        let record = self.root.load(id)?;
        let status = self.status(&record);
        if !allowed.contains(&status) {
            return Err(JailError::Status {
                id: id.to_string(),
                status,
                op,
            });
        }
        Ok(record)
    }

    /// Creates container `id` from `bundle` and leaves its init waiting on
    /// the exec FIFO for [`Jail::start`]; returns the init's pid.
    pub fn create_detached(
        &self,
        id: &str,
        bundle: &Path,
        attach: Attach,
    ) -> Result<Pid, JailError> {
        Ok(self.create(id, bundle, attach, true)?.detach()?)
    }

    /// Creates container `id` from `bundle` for this process to start
    /// (with [`Created::start`]) and wait for, as `run` does.
    pub fn create_attached(
        &self,
        id: &str,
        bundle: &Path,
        attach: Attach,
    ) -> Result<Created, JailError> {
        self.create(id, bundle, attach, false)
    }

    fn create(
        &self,
        id: &str,
        bundle: &Path,
        attach: Attach,
        detach: bool,
    ) -> Result<Created, JailError> {
        let bundle = bundle
            .canonicalize()
            .map_err(io(format!("bundle {}", bundle.display())))?;
        let spec = load_spec(&bundle)?;
        let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
        if terminal && detach && attach.console_socket.is_none() {
            return Err(JailError::NoConsoleSocket);
        }
        let rootfs = rootfs_of(&bundle, &spec)?;
        let dir = self.root.claim(id)?;
        let made = self.create_claimed(id, &bundle, spec, rootfs, attach, detach);
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        made
    }

    fn create_claimed(
        &self,
        id: &str,
        bundle: &Path,
        spec: Spec,
        rootfs: PathBuf,
        attach: Attach,
        detach: bool,
    ) -> Result<Created, JailError> {
        let fifo = self.root.exec_fifo(id);
        if detach {
            make_exec_fifo(&fifo)?;
        }
        let linux = spec.linux().clone().unwrap_or_default();
        let cgroup_path = cgroups::cgroup_path(linux.cgroups_path().as_deref(), id)?;
        let config = InitConfig {
            container_id: id.to_string(),
            spec: spec.clone(),
            rootfs: rootfs.clone(),
            loopback_up: false,
            bundle: bundle.to_path_buf(),
            exec_fifo: detach.then(|| fifo.clone()),
            // A host runtime: vsock is the host's own business.
            deny_vsock: false,
        };
        let mut created = container::create(&self.init, config, attach.stdio)?;
        let record = Record {
            id: id.to_string(),
            pid: created.pid.as_raw(),
            pid_start: state::process_start(&self.proc_root, created.pid.as_raw())
                .map_or(0, |(s, _)| s),
            bundle: bundle.to_path_buf(),
            rootfs,
            created: state::rfc3339(std::time::SystemTime::now()),
            cgroup_path,
            owner: owner_name(),
            spec,
        };
        hand_over_console(&mut created, attach.console_socket.as_deref())?;
        self.root.save(&record)?;
        Ok(created)
    }

    /// Lets a created container run its user program; returns the
    /// poststart hook failures, which (as the spec says) only warn.
    pub fn start(&self, id: &str) -> Result<Vec<String>, JailError> {
        let record = self.load_in(id, &[Status::Created], "start it")?;
        let fifo = self.root.exec_fifo(id);
        self.open_fifo_and_wait(&record, &fifo)?;
        let _ = std::fs::remove_file(&fifo);
        Ok(self.poststart(&record))
    }

    /// The hooks after a start: failures are warnings.
    pub fn poststart(&self, record: &Record) -> Vec<String> {
        warning_hooks(HookKind::Poststart, record, Status::Running)
    }

    /// Opens the FIFO for reading (which unblocks the init's open for
    /// writing) and waits for its byte, watching that the init lives.
    fn open_fifo_and_wait(&self, record: &Record, fifo: &Path) -> Result<(), JailError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(fifo)
            .map_err(io(format!("open {}", fifo.display())))?;
        loop {
            let ready = {
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(50u16)).map_err(|source| JailError::Sys {
                    op: "poll exec FIFO".into(),
                    source,
                })?
            };
            if ready > 0 {
                let mut byte = [0u8; 1];
                match f.read(&mut byte) {
                    Ok(1) => return Ok(()),
                    Ok(_) => return Err(JailError::InitGone(record.pid)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(io("read exec FIFO")(e)),
                }
            }
            if !state::init_alive(&self.proc_root, record) {
                return Err(JailError::InitGone(record.pid));
            }
        }
    }

    /// Sends `signal` to the container's init, or with `all` to every
    /// process in its cgroup.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), JailError> {
        let live = [Status::Created, Status::Running, Status::Paused];
        let record = self.load_in(id, &live, "kill it")?;
        let pids = if all {
            self.pids(&record)
        } else {
            vec![record.pid]
        };
        for pid in pids {
            match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    return Err(JailError::Sys {
                        op: format!("kill {pid} {signal}"),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The pids in the container's cgroup (the init's alone if the cgroup
    /// is gone).
    pub fn pids(&self, record: &Record) -> Vec<i32> {
        let mut pids: Vec<i32> = ContainerCgroup::load(&record.cgroup_path)
            .pids()
            .into_iter()
            .map(|p| p as i32)
            .collect();
        if pids.is_empty() && state::init_alive(&self.proc_root, record) {
            pids.push(record.pid);
        }
        pids.sort_unstable();
        pids
    }

    /// Removes a stopped (or, with `force`, any) container: its processes,
    /// cgroup and record; then runs poststop hooks, whose failures are
    /// returned as warnings.
    pub fn delete(&self, id: &str, force: bool) -> Result<Vec<String>, JailError> {
        let record = self.root.load(id)?;
        let status = self.status(&record);
        let cgroup = ContainerCgroup::load(&record.cgroup_path);
        match status {
            Status::Stopped | Status::Created => {}
            _ if force => {}
            status => {
                return Err(JailError::Status {
                    id: id.to_string(),
                    status,
                    op: "delete it unless stopped (use --force)",
                })
            }
        }
        if status == Status::Paused {
            cgroup.thaw()?;
        }
        if status != Status::Stopped {
            let _ = nix::sys::signal::kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            self.wait_gone(&record);
        }
        // Kills whatever is left in the cgroup, then removes it.
        cgroup.discard()?;
        self.root.remove(id)?;
        Ok(warning_hooks(HookKind::Poststop, &record, Status::Stopped))
    }

    fn wait_gone(&self, record: &Record) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while state::init_alive(&self.proc_root, record) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn pause(&self, id: &str) -> Result<(), JailError> {
        let record = self.load_in(id, &[Status::Running], "pause it")?;
        Ok(ContainerCgroup::load(&record.cgroup_path).freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<(), JailError> {
        let record = self.load_in(id, &[Status::Paused], "resume it")?;
        Ok(ContainerCgroup::load(&record.cgroup_path).thaw()?)
    }

    /// Starts `process` inside a running container; the caller starts it
    /// with [`Created::start`].
    pub fn exec(&self, id: &str, process: Process, attach: Attach) -> Result<Created, JailError> {
        let live = [Status::Created, Status::Running];
        let record = self.load_in(id, &live, "exec in it")?;
        let config = ExecConfig {
            container_id: id.to_string(),
            init_pid: record.pid,
            process,
            seccomp: record
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone()),
            deny_vsock: false,
        };
        let mut created = container::exec(&self.init, config, &record.cgroup_path, attach.stdio)?;
        hand_over_console(&mut created, attach.console_socket.as_deref())?;
        Ok(created)
    }

    /// The container's root as seen from here (for resolving user names
    /// in its own /etc/passwd).
    pub fn container_root(&self, record: &Record) -> PathBuf {
        self.proc_root.join(record.pid.to_string()).join("root")
    }
}

/// Runs hooks whose failures the spec makes warnings (poststart,
/// poststop); returns them.
fn warning_hooks(kind: HookKind, record: &Record, status: Status) -> Vec<String> {
    let state = hooks::state(
        &record.spec,
        &record.id,
        status.into(),
        Some(record.pid),
        &record.bundle,
    );
    match hooks::run(kind, record.spec.hooks().as_ref(), &state) {
        Ok(()) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

/// Sends a created process's terminal to the console socket, if both exist.
fn hand_over_console(created: &mut Created, socket: Option<&Path>) -> Result<(), JailError> {
    if let (Some(socket), Some(master)) = (socket, created.console.take()) {
        crate::console::send_to_socket(socket, master.as_fd())
            .map_err(io(format!("send the terminal to {}", socket.display())))?;
    }
    Ok(())
}

fn owner_name() -> String {
    let uid = nix::unistd::geteuid().as_raw();
    crate::users::entry_by_uid(Path::new("/"), uid).map_or_else(|| uid.to_string(), |e| e.name)
}

/// Makes this process the reaper of its orphaned descendants, so that it
/// can wait for a container process that is its grandchild (the init forks
/// into a new pid namespace).
pub fn become_subreaper() -> Result<(), JailError> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(io("prctl PR_SET_CHILD_SUBREAPER")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The signals a foreground runtime passes on to its container process
/// (runc's set, less SIGCHLD, which is the runtime's own).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn forwarded_set() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    FORWARDED.iter().for_each(|s| set.add(*s));
    set
}

/// Blocks the forwarded signals in this thread (and threads it starts
/// later), so they wait for [`forward_signals`] instead of killing the
/// runtime. Call before starting any thread. Child processes start with an
/// empty mask, so the container is not affected.
pub fn block_forwarded_signals() -> Result<(), JailError> {
    forwarded_set()
        .thread_block()
        .map_err(|source| JailError::Sys {
            op: "block signals".into(),
            source,
        })
}

/// Passes every signal [`block_forwarded_signals`] held back on to `pid`,
/// for as long as this process lives (as `runc run` does).
pub fn forward_signals(pid: Pid) {
    std::thread::spawn(move || {
        let set = forwarded_set();
        while let Ok(sig) = set.wait() {
            // The process may be gone; then there is no one to tell.
            let _ = nix::sys::signal::kill(pid, sig);
        }
    });
}

/// Reaps children until `pid` exits; its exit code as a shell reports it
/// (128 + signal for a killed process).
pub fn wait_exit(pid: Pid) -> Result<i32, JailError> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return Ok(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(source) => {
                return Err(JailError::Sys {
                    op: format!("wait for {pid}"),
                    source,
                })
            }
        }
    }
}

/// The exec FIFO the created init writes to (and so blocks on) until
/// `start`. Writable by anyone (0622, as runc makes it), whatever the
/// umask: a container whose root maps to an unprivileged host uid writes
/// to it after switching to that uid.
fn make_exec_fifo(fifo: &Path) -> Result<(), JailError> {
    let sys = |op: &str| {
        let op = format!("{op} {}", fifo.display());
        move |source| JailError::Sys { op, source }
    };
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o622);
    nix::unistd::mkfifo(fifo, mode).map_err(sys("mkfifo"))?;
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        fifo,
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(sys("chmod"))
}
