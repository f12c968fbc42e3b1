//! The container init process: the child side of the channel protocol.
//!
//! Runs in a freshly executed, single-threaded process (`hull-agent init`),
//! which is what makes the fork for a new PID namespace safe.

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::ForkResult;
use oci_spec::runtime::{ContainerState, LinuxNamespaceType, LinuxSeccomp, Spec};

use crate::caps::{CapPlan, CapsError};
use crate::channel::{Channel, ChannelError, FromInit, ToInit};
use crate::config::{ExecConfig, InitConfig};
use crate::hooks::HookKind;
use crate::namespaces::{self, NamespaceError, NamespacePlan};
use crate::process::{self, ProcessError};
use crate::rootfs::{self, RootfsError};
use crate::syscall::LinuxSyscall;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("expected {expected} from the runtime, got {got}")]
    Protocol { expected: &'static str, got: String },
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error("{0} is unsupported in this guest (no such LSM is enabled); remove it from the spec")]
    Unsupported(String),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Loopback(#[from] crate::loopback::LoopbackError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Attr(#[from] crate::process_attrs::AttrError),
    #[error("exec FIFO {path}: {source}")]
    Fifo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// The entry of the re-executed init (`PROGRAM init --sync-fd 3`): takes
/// the channel from the fd the runtime placed it at, then [`run`]s.
pub fn main(program: &str, args: &[String]) -> ! {
    let fd = match args {
        [flag, n] if flag == "--sync-fd" => n.parse::<i32>().ok(),
        _ => None,
    };
    let Some(fd) = fd.filter(|n| *n == crate::container::INIT_CHANNEL_FD) else {
        eprintln!("{program} init: usage: {program} init --sync-fd 3");
        std::process::exit(2);
    };
    // SAFETY: the runtime placed the channel socket at this fd number before
    // executing us, and nothing else in this fresh process owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    run(fd)
}

/// Runs the init protocol on `channel_fd` and never returns: it either
/// executes the user program or reports the failure and exits 1.
pub fn run(channel_fd: OwnedFd) -> ! {
    // The runtime learns that execve succeeded from this end closing, so it
    // must not survive into the user program (dup2 cleared the flag).
    let _ = nix::fcntl::fcntl(
        &channel_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut channel = Channel::from_fd(channel_fd);
    let mut stage = "receive config";
    let err = match init(&mut channel, &mut stage) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    // Every error type here shows its cause in its own message.
    let message = err.to_string();
    let told = channel.send(&FromInit::Failed {
        stage: stage.to_string(),
        message: message.clone(),
    });
    if told.is_err() || stage == STARTED {
        // A detached runtime is gone: the container's stderr is left.
        eprintln!("container init failed at {stage}: {message}");
    }
    std::process::exit(1)
}

fn expect(channel: &mut Channel, expected: &'static str) -> Result<ToInit, InitError> {
    match channel.recv::<ToInit>()? {
        Some(m) => Ok(m),
        None => Err(InitError::Protocol {
            expected,
            got: "end of channel".into(),
        }),
    }
}

/// Receives the next message and checks it is the one the protocol expects.
fn expect_exact(
    channel: &mut Channel,
    expected: &'static str,
    is: fn(&ToInit) -> bool,
) -> Result<(), InitError> {
    match expect(channel, expected)? {
        m if is(&m) => Ok(()),
        other => Err(InitError::Protocol {
            expected,
            got: format!("{other:?}"),
        }),
    }
}

/// The stage after a detached init was started through its FIFO.
const STARTED: &str = "start after exec FIFO";

fn init(channel: &mut Channel, stage: &mut &'static str) -> Result<Infallible, InitError> {
    *stage = "address randomization";
    crate::process_attrs::randomize_next_exec()?;
    *stage = "receive config";
    match expect(channel, "Config or Exec")? {
        ToInit::Config(c) => create(channel, *c, stage),
        ToInit::Exec(e) => exec(channel, *e, stage),
        other => Err(InitError::Protocol {
            expected: "Config or Exec",
            got: format!("{other:?}"),
        }),
    }
}

/// Builds a new container and becomes its first process.
fn create(
    channel: &mut Channel,
    config: InitConfig,
    stage: &mut &'static str,
) -> Result<Infallible, InitError> {
    let spec = &config.spec;
    let linux = spec.linux().clone().unwrap_or_default();
    // Device nodes and files get exactly the modes the spec gives; the
    // process gets its own umask later.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    *stage = "open exec FIFO";
    let fifo = config
        .exec_fifo
        .as_deref()
        .map(open_fifo_path)
        .transpose()?;
    *stage = "namespaces";
    let plan = NamespacePlan::from_spec(linux.namespaces().as_deref().unwrap_or_default())?;
    namespaces::enter(&plan)?;
    let new_time = plan.creates(LinuxNamespaceType::Time);
    if new_time {
        *stage = "time namespace offsets";
        namespaces::write_time_offsets(&linux.time_offsets().clone().unwrap_or_default())?;
    }
    // Joining a pid namespace, like creating one, applies to children; so
    // does a new time namespace.
    let joins_pid = plan.join.iter().any(|(t, _)| *t == LinuxNamespaceType::Pid);
    report_pid(
        channel,
        plan.creates(LinuxNamespaceType::Pid) || joins_pid || new_time,
        stage,
    )?;

    *stage = "wait for cgroup";
    let host_pid = expect_proceed(channel)?;
    let new_user = plan.creates(LinuxNamespaceType::User);
    if new_user {
        *stage = "become root of the user namespace";
        become_userns_root()?;
    }
    if plan.new_cgroup {
        *stage = "cgroup namespace";
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|source| InitError::Sys {
            op: "unshare cgroup namespace".into(),
            source,
        })?;
    }
    setsid()?;
    if config.loopback_up && plan.creates(LinuxNamespaceType::Network) {
        *stage = "loopback";
        crate::loopback::bring_up()?;
    }
    let sys = LinuxSyscall;
    // A mount namespace joined by path gets the rootfs set up in it too,
    // as runc does: the container's root is its bundle's, whichever
    // namespace it lives in.
    let new_mount = plan.has(LinuxNamespaceType::Mount);
    if new_mount {
        *stage = "rootfs";
        rootfs::prepare(&sys, spec, &config.rootfs, new_user)?;
    }
    let state = |status| {
        crate::hooks::state(
            spec,
            &config.container_id,
            status,
            Some(host_pid),
            &config.bundle,
        )
    };
    run_creation_hooks(channel, spec, &state(ContainerState::Creating), stage)?;
    if new_mount {
        *stage = "pivot_root";
        crate::syscall::Syscall::pivot_root(&sys, &config.rootfs).map_err(RootfsError::from)?;
    }
    // Before readonlyPaths makes /proc/sys read-only.
    *stage = "sysctl";
    write_sysctls(spec)?;
    if new_mount {
        *stage = "rootfs after pivot_root";
        rootfs::finish(&sys, spec)?;
    }
    if plan.creates(LinuxNamespaceType::Uts) {
        *stage = "hostname";
        set_names(spec)?;
    }
    if let Some(p) = linux.personality() {
        *stage = "personality";
        crate::process_attrs::set_personality(p)?;
    }
    let process = spec.process().clone().unwrap_or_default();
    let start = StartPlan {
        fifo,
        hooks: spec.hooks().clone(),
        state: state(ContainerState::Created),
    };
    let confine = Confinement {
        seccomp: linux.seccomp().as_ref(),
        deny_vsock: config.deny_vsock,
    };
    become_process(channel, &process, confine, stage, start)
}

/// The prestart and createRuntime hooks (by the runtime, asked over the
/// channel), then createContainer (here, in the container's namespaces).
fn run_creation_hooks(
    channel: &mut Channel,
    spec: &Spec,
    state: &oci_spec::runtime::State,
    stage: &mut &'static str,
) -> Result<(), InitError> {
    let hooks = spec.hooks().as_ref();
    if !HookKind::Prestart.of(hooks).is_empty() || !HookKind::CreateRuntime.of(hooks).is_empty() {
        *stage = "prestart and createRuntime hooks";
        channel.send(&FromInit::RuntimeHooks)?;
        expect_exact(channel, "HooksDone", |m| matches!(m, ToInit::HooksDone))?;
    }
    *stage = "createContainer hooks";
    crate::hooks::run(HookKind::CreateContainer, hooks, state)?;
    Ok(())
}

fn set_names(spec: &Spec) -> Result<(), InitError> {
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).map_err(|source| InitError::Sys {
            op: format!("sethostname {h}"),
            source,
        })?;
    }
    if let Some(d) = spec.domainname() {
        // SAFETY: the pointer and length describe `d`'s bytes, which the
        // kernel only reads during the call.
        let rc = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        if rc < 0 {
            return Err(InitError::Sys {
                op: format!("setdomainname {d}"),
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

fn expect_proceed(channel: &mut Channel) -> Result<i32, InitError> {
    match expect(channel, "Proceed")? {
        ToInit::Proceed { pid } => Ok(pid),
        other => Err(InitError::Protocol {
            expected: "Proceed",
            got: format!("{other:?}"),
        }),
    }
}

/// Maps a failed syscall to [`InitError::Sys`] naming the operation.
fn sys(op: &str) -> impl FnOnce(nix::Error) -> InitError {
    let op = op.to_string();
    move |source| InitError::Sys { op, source }
}

/// In a user namespace it created, the init's own ids are still the
/// host's (unmapped); files it creates would fail with EOVERFLOW. The
/// runtime has written the mappings, so become the namespace's root.
fn become_userns_root() -> Result<(), InitError> {
    let root_g = nix::unistd::Gid::from_raw(0);
    let root_u = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_g, root_g, root_g).map_err(sys("setresgid 0 in user namespace"))?;
    nix::unistd::setresuid(root_u, root_u, root_u).map_err(sys("setresuid 0 in user namespace"))?;
    Ok(())
}

/// An O_PATH handle on the exec FIFO, taken while its path is reachable.
fn open_fifo_path(path: &Path) -> Result<OwnedFd, InitError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| InitError::Fifo {
            path: path.display().to_string(),
            source,
        })
}

/// Blocks until `start` opens the FIFO for reading, then tells it we go.
fn wait_on_fifo(fifo: &OwnedFd) -> Result<(), InitError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    // Reopening through /proc gives a real (writable) open of the FIFO;
    // the O_PATH handle itself cannot be written.
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let fifo_err = |source| InitError::Fifo {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(fifo_err)?;
    f.write_all(b"0").map_err(fifo_err)
}

/// The user program starts with the default signal state: this init is a
/// Rust program, which ignores SIGPIPE, and a foreground runtime blocks the
/// signals it forwards; both would otherwise pass through execve. (Before
/// seccomp, whose profile may deny these calls.)
fn reset_signals() -> Result<(), InitError> {
    use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
    // SAFETY: SIG_DFL installs no handler code; nothing else in this
    // single-threaded process depends on SIGPIPE being ignored any more.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map_err(sys("reset SIGPIPE"))?;
    SigSet::empty()
        .thread_set_mask()
        .map_err(sys("unblock signals"))
}

/// What a created container waits for and runs on `start`.
struct StartPlan {
    fifo: Option<OwnedFd>,
    hooks: Option<oci_spec::runtime::Hooks>,
    state: oci_spec::runtime::State,
}

/// Joins a running container (all of its init's namespaces; the runtime
/// puts us in its cgroup) and becomes the requested process there.
fn exec(
    channel: &mut Channel,
    config: ExecConfig,
    stage: &mut &'static str,
) -> Result<Infallible, InitError> {
    *stage = "join the container's namespaces";
    let plan = namespaces::plan_to_join(Path::new("/proc"), config.init_pid)?;
    namespaces::enter(&plan)?;
    let joined_pid = plan.join.iter().any(|(t, _)| *t == LinuxNamespaceType::Pid);
    report_pid(channel, joined_pid, stage)?;
    *stage = "wait for cgroup";
    expect_proceed(channel)?;
    setsid()?;
    let start = StartPlan {
        fifo: None,
        hooks: None,
        state: oci_spec::runtime::State::default(),
    };
    let confine = Confinement {
        seccomp: config.seccomp.as_ref(),
        deny_vsock: config.deny_vsock,
    };
    become_process(channel, &config.process, confine, stage, start)
}

/// Tells the runtime the pid of the process that will exec the user
/// program. Entering a pid namespace (unshare or setns) applies to
/// children only, so then that process is a child, and we leave.
fn report_pid(
    channel: &mut Channel,
    fork: bool,
    stage: &mut &'static str,
) -> Result<(), InitError> {
    if !fork {
        channel.send(&FromInit::Forked {
            pid: nix::unistd::getpid().as_raw(),
        })?;
        return Ok(());
    }
    *stage = "fork into pid namespace";
    // SAFETY: this process is single-threaded (a fresh exec of the agent
    // that started no threads), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(|source| InitError::Sys {
        op: "fork".into(),
        source,
    })? {
        ForkResult::Parent { child } => {
            channel.send(&FromInit::Forked {
                pid: child.as_raw(),
            })?;
            std::process::exit(0)
        }
        ForkResult::Child => Ok(()),
    }
}

fn setsid() -> Result<(), InitError> {
    nix::unistd::setsid().map_err(|source| InitError::Sys {
        op: "setsid".into(),
        source,
    })?;
    Ok(())
}

/// The process part, common to create and exec: terminal, then everything
/// but execve before Ready (as in runc: a bad user, cwd or missing program
/// fails the create, not the start), then execve on Start.
/// The seccomp filters a process of the container runs under.
struct Confinement<'a> {
    /// The spec's profile.
    seccomp: Option<&'a LinuxSeccomp>,
    /// No AF_VSOCK sockets ([`crate::vsock_filter`]).
    deny_vsock: bool,
}

fn become_process(
    channel: &mut Channel,
    process: &oci_spec::runtime::Process,
    confine: Confinement,
    stage: &mut &'static str,
    start: StartPlan,
) -> Result<Infallible, InitError> {
    if process.terminal().unwrap_or(false) {
        *stage = "console";
        let master = crate::console::create(process.console_size().as_ref())?;
        channel.send(&FromInit::Console)?;
        channel.send_fd(std::os::fd::AsFd::as_fd(&master))?;
    }
    *stage = "process";
    let (exec, late_seccomp) = prepare_process(process, confine)?;
    channel.send(&FromInit::Ready)?;
    *stage = "wait for start";
    match (expect(channel, "Start or Detach")?, &start.fifo) {
        (ToInit::Start, _) => {}
        (ToInit::Detach, Some(fifo)) => {
            *stage = "wait on exec FIFO";
            wait_on_fifo(fifo)?;
            *stage = STARTED;
        }
        (other, _) => {
            return Err(InitError::Protocol {
                expected: "Start (or Detach with an exec FIFO)",
                got: format!("{other:?}"),
            })
        }
    }
    let mut state = start.state;
    state.set_status(ContainerState::Running);
    crate::hooks::run(HookKind::StartContainer, start.hooks.as_ref(), &state)?;
    *stage = "reset signals";
    reset_signals()?;
    if let Some(filters) = late_seccomp {
        *stage = "seccomp";
        filters.install()?;
    }
    *stage = "exec";
    Ok(exec.exec()?)
}

fn write_sysctls(spec: &Spec) -> Result<(), InitError> {
    let sysctls = spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default();
    for (key, value) in sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| InitError::Sysctl {
            key: key.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Security labels name an LSM this guest does not run: refused, never
/// silently ignored.
fn check_labels(process: &oci_spec::runtime::Process) -> Result<(), InitError> {
    let set = |l: &Option<String>| l.as_deref().is_some_and(|l| !l.is_empty());
    if set(process.apparmor_profile()) {
        return Err(InitError::Unsupported(format!(
            "apparmor profile {:?}",
            process.apparmor_profile().as_deref().unwrap_or_default()
        )));
    }
    if set(process.selinux_label()) {
        return Err(InitError::Unsupported(format!(
            "selinux label {:?}",
            process.selinux_label().as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Everything but execve. Returns the exec plan and, with no_new_privs,
/// the seccomp filters to install just before execve (as late as possible,
/// so the profile constrains only the user program). Without
/// no_new_privs the filters need CAP_SYS_ADMIN, so they are installed here
/// before the user switch drops it, as runc does.
fn prepare_process(
    process: &oci_spec::runtime::Process,
    confine: Confinement,
) -> Result<(process::ExecPlan, Option<crate::seccomp::Compiled>), InitError> {
    check_labels(process)?;
    let filters = confine.seccomp.map(crate::seccomp::compile).transpose()?;
    if confine.deny_vsock {
        // Now, while CAP_SYS_ADMIN is held: it does not depend on no_new_privs.
        crate::vsock_filter::compiled().install()?;
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    let caps = CapPlan::from_spec(process.capabilities().as_ref())?;
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    // Both may need privileges the user switch drops (real-time classes).
    if let Some(s) = process.scheduler() {
        crate::process_attrs::set_scheduler(s)?;
    }
    if let Some(p) = process.io_priority() {
        crate::process_attrs::set_io_priority(p)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
            InitError::Sys {
                op: "oom_score_adj".into(),
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
            }
        })?;
    }
    caps.before_user_switch()?;
    if !nnp {
        if let Some(f) = &filters {
            f.install()?;
        }
    }
    process::set_user(process.user())?;
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).map_err(|source| InitError::Sys {
        op: format!("chdir {}", cwd.display()),
        source,
    })?;
    caps.after_user_switch()?;
    if nnp {
        capctl::prctl::set_no_new_privs().map_err(|source| CapsError::Sys {
            op: "no_new_privs",
            source,
        })?;
    }
    let mut process = process.clone();
    let mut env = process.env().clone().unwrap_or_default();
    if let Some(home) = crate::users::home_env(Path::new("/"), process.user().uid(), &env) {
        env.push(home);
        process.set_env(Some(env));
    }
    Ok((process::ExecPlan::new(&process)?, filters.filter(|_| nnp)))
}
