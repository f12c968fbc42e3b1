//! The runtime side of container creation: spawns the init binary, drives
//! the channel protocol, and places the init in its cgroup.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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

/// A created container (or exec'd process): it waits for [`Created::start`].
pub struct Created {
    pub pid: Pid,
    pub cgroup: ContainerCgroup,
    /// The pty master, when the process has a terminal.
    pub console: Option<OwnedFd>,
    channel: Channel,
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
fn spawn_init(cmd: &InitCommand, stdio: InitStdio) -> Result<Channel, ContainerError> {
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
    // SAFETY: dup2 is async-signal-safe; the closure touches no memory
    // shared with other threads. dup2 also clears close-on-exec on fd 3.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, INIT_CHANNEL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|source| ContainerError::Spawn {
        binary: cmd.binary.display().to_string(),
        source,
    })?;
    Ok(parent)
}

/// The protocol after the first message: learn the pid, put it in its
/// cgroup (`join_cgroup`), and wait until the process is ready to execute
/// the user program, collecting its console and running the runtime's
/// hooks (`runtime_hooks`, given the pid) on the way.
fn drive_setup(
    mut parent: Channel,
    join_cgroup: impl FnOnce(Pid) -> Result<ContainerCgroup, ContainerError>,
    runtime_hooks: impl FnOnce(Pid) -> Result<(), ContainerError>,
) -> Result<Created, ContainerError> {
    let pid = match receive(&mut parent, "reporting its pid")? {
        FromInit::Forked { pid } => Pid::from_raw(pid),
        other => return Err(ContainerError::Protocol(format!("{other:?}"))),
    };
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
            FromInit::Ready => {
                return Ok(Created {
                    pid,
                    cgroup,
                    console,
                    channel: parent,
                })
            }
            other => return Err(ContainerError::Protocol(format!("{other:?}"))),
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
    let mut parent = spawn_init(cmd, stdio)?;
    parent.send(&ToInit::Config(Box::new(config)))?;
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
    let created = drive_setup(parent, join, hooks);
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
    let mut parent = spawn_init(cmd, stdio)?;
    parent.send(&ToInit::Exec(Box::new(config)))?;
    let join = |pid: Pid| {
        let cgroup = ContainerCgroup::load(cgroup_path);
        cgroup.add_process(pid.as_raw() as u32)?;
        Ok(cgroup)
    };
    drive_setup(parent, join, |_| {
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

    /// Lets the init execute the user program; returns once it has.
    pub fn start(mut self) -> Result<(), ContainerError> {
        self.channel.send(&ToInit::Start)?;
        match self.channel.recv::<FromInit>()? {
            // The channel is close-on-exec in the init: EOF means execve succeeded.
            None => Ok(()),
            Some(FromInit::Failed { stage, message }) => {
                Err(ContainerError::Init { stage, message })
            }
            Some(other) => Err(ContainerError::Protocol(format!("{other:?}"))),
        }
    }
}
