//! The runtime side of container creation: spawns the init binary, drives
//! the channel protocol, and places the init in its cgroup.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::unistd::Pid;

use crate::cgroups::{self, CgroupError, ContainerCgroup};
use crate::channel::{Channel, ChannelError, FromInit, ToInit};
use crate::config::{ExecConfig, InitConfig};
use crate::hooks::HookKind;
use oci_spec::runtime::LinuxNamespaceType;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("spawn container init {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The init reported a failure; `message` carries its causes.
    #[error("container init failed at {stage}: {message}")]
    Init { stage: String, message: String },
    #[error("container init exited before {0}")]
    InitGone(&'static str),
    #[error("container init: unexpected message {0}")]
    Protocol(String),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Namespace(#[from] crate::namespaces::NamespaceError),
    #[error(transparent)]
    Unsupported(#[from] crate::unsupported::Unsupported),
}

/// The container process's standard streams.
pub struct InitStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How to start the container init.
pub struct InitCommand {
    /// The binary to execute (e.g. `/proc/self/exe`).
    pub binary: PathBuf,
    /// Its arguments, before the `--sync-fd N` this module appends.
    pub args: Vec<String>,
}

/// The fd number at which the init finds its channel.
pub const INIT_CHANNEL_FD: i32 = 3;

/// How long the runtime waits for the init's next message, beyond the
/// timeouts of the hooks the init runs itself: an init stuck in its set-up
/// (a hung mount, a wedged file system) must not pin the caller's thread.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// What a createContainer or startContainer hook without a timeout of its
/// own adds to [`SETUP_DEADLINE`].
pub const UNTIMED_HOOK_ALLOWANCE: Duration = Duration::from_secs(60);

/// The runtime's wait for each step of an init's set-up whose spec has
/// `hooks`: [`SETUP_DEADLINE`] plus the time the init's own hooks may take.
pub fn setup_deadline(hooks: Option<&oci_spec::runtime::Hooks>) -> Duration {
    let init_side = hooks.into_iter().flat_map(|h| {
        let create = h.create_container().iter().flatten();
        create.chain(h.start_container().iter().flatten())
    });
    init_side.fold(SETUP_DEADLINE, |total, hook| {
        total
            + hook
                .timeout()
                .and_then(|s| u64::try_from(s).ok())
                .map_or(UNTIMED_HOOK_ALLOWANCE, Duration::from_secs)
    })
}

/// A process this runtime started, held by pidfd so a signal can never
/// reach another process that reused its pid.
struct Pidfd(OwnedFd);

impl Pidfd {
    fn open(pid: i32) -> Option<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags; it returns a new
        // descriptor or -1 and touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        (fd >= 0).then(|| Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    fn kill(&self) {
        // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// A spawned init: its channel, and its first process (which forks the
/// container's process and exits).
struct Spawned {
    channel: Channel,
    /// For the tests to wait on.
    #[cfg(test)]
    pid: u32,
    process: Option<Pidfd>,
}

/// A created container (or exec'd process): it waits for [`Created::start`].
pub struct Created {
    pub pid: Pid,
    pub cgroup: ContainerCgroup,
    /// The pty master, when the process has a terminal.
    pub console: Option<OwnedFd>,
    channel: Channel,
    /// The container's process, killed if its start fails.
    process: Option<Pidfd>,
}

fn receive(channel: &mut Channel, waiting_for: &'static str) -> Result<FromInit, ContainerError> {
    match channel.recv::<FromInit>()? {
        Some(FromInit::Failed { stage, message }) => Err(ContainerError::Init { stage, message }),
        Some(m) => Ok(m),
        None => Err(ContainerError::InitGone(waiting_for)),
    }
}

/// Spawns the init binary with the child end of a channel on
/// [`INIT_CHANNEL_FD`]; returns the parent end.
///
/// The spawned process is not waited for here: whoever reaps children in
/// the caller (the agent's reaper, PID 1) collects it.
fn spawn_init(cmd: &InitCommand, stdio: InitStdio) -> Result<Spawned, ContainerError> {
    let (parent, child) = Channel::pair().map_err(ChannelError::from)?;
    let child_fd = OwnedFd::from(child);
    let raw = child_fd.as_raw_fd();
    let mut command = Command::new(&cmd.binary);
    command
        .args(&cmd.args)
        .args(["--sync-fd", &INIT_CHANNEL_FD.to_string()])
        .stdin(Stdio::from(stdio.stdin))
        .stdout(Stdio::from(stdio.stdout))
        .stderr(Stdio::from(stdio.stderr))
        .env_clear();
    // SAFETY: dup2 and personality are async-signal-safe; the closure
    // touches no memory shared with other threads. dup2 also clears
    // close-on-exec on fd 3.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, INIT_CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The init starts at the same addresses every time: QEMU's TCG
            // (7.2) keys translated code by virtual address, so a static-pie
            // binary placed anew is translated anew, about 20 ms of each
            // exec in a TCG guest. The init clears the flag at once
            // (process_attrs::randomize_next_exec), so the user's program
            // is placed at random.
            let current = libc::personality(crate::process_attrs::PERSONALITY_QUERY);
            if current >= 0 {
                libc::personality((current | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong);
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| ContainerError::Spawn {
        binary: cmd.binary.display().to_string(),
        source,
    })?;
    // Opened at once: the process waits for its first message, so its pid
    // is still its own.
    Ok(Spawned {
        channel: parent,
        #[cfg(test)]
        pid: child.id(),
        process: Pidfd::open(child.id() as i32),
    })
}

/// The protocol after the first message: learn the pid, put it in its
/// cgroup (`join_cgroup`), and wait until the process is ready to execute
/// the user program, collecting its console and running the runtime's
/// hooks (`runtime_hooks`, given the pid) on the way. Each wait ends after
/// `deadline`; on any failure the init's processes are killed.
fn drive_setup(
    spawned: Spawned,
    deadline: Duration,
    join_cgroup: impl FnOnce(Pid) -> Result<ContainerCgroup, ContainerError>,
    runtime_hooks: impl FnOnce(Pid) -> Result<(), ContainerError>,
) -> Result<Created, ContainerError> {
    let Spawned {
        channel: mut parent,
        process: first,
        ..
    } = spawned;
    let mut forked = None;
    let result = (|| {
        parent.set_deadline(Some(deadline))?;
        let pid = match receive(&mut parent, "reporting its pid")? {
            FromInit::Forked { pid } => Pid::from_raw(pid),
            other => return Err(ContainerError::Protocol(format!("{other:?}"))),
        };
        forked = Pidfd::open(pid.as_raw());
        let cgroup = join_cgroup(pid)?;
        parent.send(&ToInit::Proceed { pid: pid.as_raw() })?;
        let mut console = None;
        let mut runtime_hooks = Some(runtime_hooks);
        loop {
            match receive(&mut parent, "setup finished")? {
                FromInit::Console => console = Some(parent.recv_fd()?),
                FromInit::RuntimeHooks => {
                    let run = runtime_hooks
                        .take()
                        .ok_or_else(|| ContainerError::Protocol("RuntimeHooks twice".into()))?;
                    run(pid)?;
                    parent.send(&ToInit::HooksDone)?;
                }
                FromInit::Ready => return Ok((pid, cgroup, console)),
                other => return Err(ContainerError::Protocol(format!("{other:?}"))),
            }
        }
    })();
    match result {
        Ok((pid, cgroup, console)) => Ok(Created {
            pid,
            cgroup,
            console,
            channel: parent,
            process: forked,
        }),
        Err(e) => {
            first.iter().chain(forked.iter()).for_each(Pidfd::kill);
            Err(e)
        }
    }
}

/// Spawns the init, sends it `config`, creates the container's cgroup and
/// joins the init to it, and waits until it is ready to execute the user
/// program.
pub fn create(
    cmd: &InitCommand,
    config: InitConfig,
    stdio: InitStdio,
) -> Result<Created, ContainerError> {
    crate::unsupported::check(&config.spec)?;
    let linux = config.spec.linux().clone().unwrap_or_default();
    let cgroup_path = cgroups::cgroup_path(linux.cgroups_path().as_deref(), &config.container_id)?;
    let resources = linux
        .resources()
        .clone()
        .map(|r| allow_spec_devices(r, &linux));
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    let (spec, id, bundle) = (
        config.spec.clone(),
        config.container_id.clone(),
        config.bundle.clone(),
    );
    let deadline = setup_deadline(config.spec.hooks().as_ref());
    let mut spawned = spawn_init(cmd, stdio)?;
    spawned.channel.send(&ToInit::Config(Box::new(config)))?;
    let mut made_cgroup = false;
    let join = |pid: Pid| {
        if new_userns {
            crate::namespaces::write_id_mappings(
                std::path::Path::new("/proc"),
                pid.as_raw(),
                linux.uid_mappings().as_deref().unwrap_or_default(),
                linux.gid_mappings().as_deref().unwrap_or_default(),
            )?;
        }
        let cgroup = ContainerCgroup::create(&cgroup_path, resources.as_ref())?;
        made_cgroup = true;
        cgroup.add_process(pid.as_raw() as u32)?;
        Ok(cgroup)
    };
    let hooks = |pid: Pid| {
        let state = crate::hooks::state(
            &spec,
            &id,
            oci_spec::runtime::ContainerState::Creating,
            Some(pid.as_raw()),
            &bundle,
        );
        crate::hooks::run(HookKind::Prestart, spec.hooks().as_ref(), &state)?;
        crate::hooks::run(HookKind::CreateRuntime, spec.hooks().as_ref(), &state)?;
        Ok(())
    };
    let created = drive_setup(spawned, deadline, join, hooks);
    if created.is_err() && made_cgroup {
        // The failed init is exiting; its cgroup must not outlive it. The
        // creation error is what the caller needs, so a cleanup failure
        // only leaves the (empty) directory.
        let _ = ContainerCgroup::load(&cgroup_path).discard();
    }
    created
}

/// Device rules that deny end with allows for the spec's own devices
/// (as runc adds them): a container can use the nodes it was given.
fn allow_spec_devices(
    mut r: oci_spec::runtime::LinuxResources,
    linux: &oci_spec::runtime::Linux,
) -> oci_spec::runtime::LinuxResources {
    let Some(mut rules) = r.devices().clone() else {
        return r;
    };
    for d in linux.devices().iter().flatten() {
        rules.push(cgroups::allow_rule(d.typ(), d.major(), d.minor(), "rwm"));
    }
    r.set_devices(Some(rules));
    r
}

/// Starts a process inside a running container: it joins the namespaces
/// of the container's init and the container's cgroup `cgroup_path`, then
/// waits, like a created init, for [`Created::start`].
pub fn exec(
    cmd: &InitCommand,
    config: ExecConfig,
    cgroup_path: &str,
    stdio: InitStdio,
) -> Result<Created, ContainerError> {
    let mut spawned = spawn_init(cmd, stdio)?;
    spawned.channel.send(&ToInit::Exec(Box::new(config)))?;
    let join = |pid: Pid| {
        let cgroup = ContainerCgroup::load(cgroup_path);
        cgroup.add_process(pid.as_raw() as u32)?;
        Ok(cgroup)
    };
    drive_setup(spawned, SETUP_DEADLINE, join, |_| {
        Err(ContainerError::Protocol("RuntimeHooks in an exec".into()))
    })
}

impl Created {
    /// Leaves the init waiting on its exec FIFO (see
    /// [`InitConfig::exec_fifo`]) rather than on this channel, so that the
    /// runtime process can exit before `start`.
    pub fn detach(mut self) -> Result<Pid, ContainerError> {
        self.channel.send(&ToInit::Detach)?;
        Ok(self.pid)
    }

    /// Lets the init execute the user program; returns once it has (the
    /// wait bounded as the set-up's was). A start that fails kills it.
    pub fn start(mut self) -> Result<(), ContainerError> {
        let result = self
            .channel
            .send(&ToInit::Start)
            .map_err(ContainerError::from);
        let result = result.and_then(|()| match self.channel.recv::<FromInit>()? {
            // The channel is close-on-exec in the init: EOF means execve succeeded.
            None => Ok(()),
            Some(FromInit::Failed { stage, message }) => {
                Err(ContainerError::Init { stage, message })
            }
            Some(other) => Err(ContainerError::Protocol(format!("{other:?}"))),
        });
        if result.is_err() {
            self.process.iter().for_each(Pidfd::kill);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio() -> InitStdio {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        InitStdio {
            stdin: null(),
            stdout: null(),
            stderr: null(),
        }
    }

    /// An init that never answers (stuck before it forks): the wait ends
    /// at the deadline with an error naming it, and the init is killed.
    #[test]
    fn an_init_that_never_answers_is_given_up_and_killed() {
        let cmd = InitCommand {
            binary: "/bin/sh".into(),
            args: vec!["-c".into(), "exec sleep 1000".into(), "sh".into()],
        };
        let spawned = spawn_init(&cmd, stdio()).unwrap();
        let pid = spawned.pid;
        let start = std::time::Instant::now();
        let err = drive_setup(
            spawned,
            Duration::from_millis(300),
            |_| panic!("no pid was reported"),
            |_| Ok(()),
        )
        .err()
        .expect("a silent init fails the set-up");
        assert!(err.to_string().contains("within 300ms"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None).unwrap();
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)
            ),
            "{status:?}"
        );
    }

    #[test]
    fn the_deadline_grows_with_the_hooks_the_init_runs() {
        use oci_spec::runtime::{HookBuilder, HooksBuilder};
        let hook = |t: Option<i64>| {
            let b = HookBuilder::default().path("/bin/true");
            match t {
                Some(t) => b.timeout(t).build().unwrap(),
                None => b.build().unwrap(),
            }
        };
        let hooks = HooksBuilder::default()
            .create_container(vec![hook(Some(30))])
            .start_container(vec![hook(None)])
            .prestart(vec![hook(Some(1000))])
            .build()
            .unwrap();
        let want = SETUP_DEADLINE + Duration::from_secs(30) + UNTIMED_HOOK_ALLOWANCE;
        assert_eq!(setup_deadline(Some(&hooks)), want);
        assert_eq!(setup_deadline(None), SETUP_DEADLINE);
    }
}
