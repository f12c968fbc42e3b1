//! The operations behind the container, process and sandbox RPCs: what
//! takes more than a call (validation, rustjail, mounts, cleanup).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use protocols::agent;
use protocols::stream::StreamKind;
use rustjail::config::{ExecConfig, InitConfig};
use rustjail::container::{Created, InitCommand, InitStdio};

use crate::container::{Container, Process};
use crate::direct_stream::{end_after_exit, DirectOutputs};
use crate::errors::AgentError;
use crate::pod_ns::PodNamespaces;
use crate::stdio::ProcessIo;
use crate::storage;

use super::{blocking, Service};

/// How long a container's creation waits for the modules the boot
/// deferred; they take well under a second even under TCG.
const DEFERRED_MODULES_LIMIT: Duration = Duration::from_secs(10);

fn check_id(field: &'static str, id: &str) -> Result<(), AgentError> {
    if protocols::stream::valid_id(id) {
        Ok(())
    } else {
        Err(AgentError::invalid(
            field,
            format!("{id:?} is not a valid identifier"),
        ))
    }
}

/// Whether the container gets a PID namespace of its own (one with no path).
fn has_own_pid_namespace(spec: &Spec) -> bool {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
    namespaces
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none())
}

/// A container sharing a PID namespace does not take its processes with it
/// when its init exits, and one left holding its stdout would keep the
/// container's exit from ever being reported. They are killed, as runc's
/// shim does.
async fn kill_remnants_after_init(c: Arc<Container>, log: slog::Logger) {
    c.init.wait().await;
    let pids: Vec<i32> = c.pids().into_iter().map(|p| p as i32).collect();
    if pids.is_empty() {
        return;
    }
    slog::info!(log, "killing what the container's init left"; "container" => &c.id, "processes" => pids.len());
    if let Err(e) = send_signal(&c, &pids, Signal::SIGKILL) {
        slog::warn!(log, "could not kill what the container's init left"; "container" => &c.id, "error" => %e);
    }
}

/// Sends `sig` to `pids` of container `c` (those already gone are skipped).
/// A paused container must still die on SIGKILL (as with runc): the signal
/// is pending in its frozen processes until it is thawed.
fn send_signal(c: &Container, pids: &[i32], sig: Signal) -> Result<(), AgentError> {
    for &pid in pids {
        match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::Error::ESRCH) => {}
            Err(e) => return Err(AgentError::sys(format!("kill {pid}"))(e.into())),
        }
    }
    if sig == Signal::SIGKILL {
        let cg = c.cgroup();
        if cg.is_frozen() {
            cg.thaw().map_err(|e| AgentError::Container(e.into()))?;
        }
    }
    Ok(())
}

/// Hull's complete runtime-spec JSON when the request has it, else Kata's
/// protobuf `OCI` spec (what a Kata runtime sends).
fn parse_spec(req: &agent::CreateContainerRequest) -> Result<Spec, AgentError> {
    if !req.hull_oci_spec_json.is_empty() {
        return serde_json::from_str(&req.hull_oci_spec_json)
            .map_err(|e| AgentError::invalid("hull_oci_spec_json", e.to_string()));
    }
    let spec = req
        .OCI
        .as_ref()
        .ok_or_else(|| AgentError::invalid("OCI", "missing (and no hull_oci_spec_json either)"))?;
    protocols::spec::from_proto(spec).map_err(|e| AgentError::invalid("OCI", e.to_string()))
}

fn parse_process(
    req: &agent::ExecProcessRequest,
) -> Result<oci_spec::runtime::Process, AgentError> {
    if !req.hull_oci_process_json.is_empty() {
        return serde_json::from_str(&req.hull_oci_process_json)
            .map_err(|e| AgentError::invalid("hull_oci_process_json", e.to_string()));
    }
    let process = req
        .process
        .as_ref()
        .ok_or_else(|| AgentError::invalid("process", "missing"))?;
    protocols::process::from_proto(process)
        .map_err(|e| AgentError::invalid("process", e.to_string()))
}

pub(super) fn parse_resources(
    req: &agent::UpdateContainerRequest,
) -> Result<oci_spec::runtime::LinuxResources, AgentError> {
    if !req.hull_oci_resources_json.is_empty() {
        return serde_json::from_str(&req.hull_oci_resources_json)
            .map_err(|e| AgentError::invalid("hull_oci_resources_json", e.to_string()));
    }
    let resources = req
        .resources
        .as_ref()
        .ok_or_else(|| AgentError::invalid("resources", "missing"))?;
    protocols::resources::from_proto(resources)
        .map_err(|e| AgentError::invalid("resources", e.to_string()))
}

/// The agent re-executes itself as the container's (or exec's) init.
fn init_command() -> InitCommand {
    InitCommand {
        binary: PathBuf::from("/proc/self/exe"),
        args: vec!["init".into()],
    }
}

/// A process's stdio and the host's direct streams in it, to end them
/// after its exit.
struct NewStdio {
    pipes: Option<ProcessIo>,
    init: InitStdio,
    direct: Vec<OwnedFd>,
}

/// Pipes (or the direct streams announced for it) for a process without a
/// terminal; with one, the init's stdio is /dev/null until it makes its
/// console (see [`process_io`]).
fn process_stdio(
    process: &oci_spec::runtime::Process,
    direct: DirectOutputs,
) -> Result<NewStdio, AgentError> {
    if process.terminal().unwrap_or(false) {
        return Ok(NewStdio {
            pipes: None,
            init: ProcessIo::null_stdio()?,
            direct: Vec::new(),
        });
    }
    let (io, init, direct) = ProcessIo::pipes(direct)?;
    Ok(NewStdio {
        pipes: Some(io),
        init,
        direct,
    })
}

/// The process's stdio: its pipes, or else the console its init made.
fn process_io(pipes: Option<ProcessIo>, created: &mut Created) -> Result<ProcessIo, AgentError> {
    if let Some(io) = pipes {
        return Ok(io);
    }
    let master = created.console.take().ok_or_else(|| {
        AgentError::sys("container console")(std::io::Error::other("the init sent no console"))
    })?;
    ProcessIo::console(master)
}

impl Service {
    pub(super) async fn read_stream(
        &self,
        req: agent::ReadStreamRequest,
        kind: StreamKind,
    ) -> Result<agent::ReadStreamResponse, AgentError> {
        let p = self.0.registry.process(&req.container_id, &req.exec_id)?;
        let read = crate::stdio_rpc::read(&req.container_id, &p, kind, req.len).await;
        if matches!(read, Err(AgentError::EndOfStream { .. })) {
            self.forget_exec_if_done(&req.container_id, &p);
        }
        Ok(agent::ReadStreamResponse {
            data: read?,
            ..Default::default()
        })
    }

    /// Forgets an exec whose exit was collected once nothing is left to
    /// read from it (output nobody reads goes with its container).
    pub(super) fn forget_exec_if_done(&self, container_id: &str, p: &Process) {
        if !p.collected() || p.io.rpc.output_pending() || p.io.unattached_output_waiting() {
            return;
        }
        if let Ok(c) = self.0.registry.get(container_id) {
            if p.exec_id != c.init.exec_id {
                c.remove_exec(&p.exec_id);
            }
        }
    }

    pub(super) async fn create_container(
        &self,
        req: agent::CreateContainerRequest,
    ) -> Result<(), AgentError> {
        check_id("container_id", &req.container_id)?;
        let spec = self.resolve_container_namespaces(parse_spec(&req)?)?;
        let rootfs = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .filter(|p| p.is_absolute())
            .ok_or_else(|| {
                AgentError::invalid("OCI root.path", "must be an absolute guest path")
            })?;
        let reservation = self.0.registry.reserve(&req.container_id)?;
        // Overlay storages and a privileged container's bridge need the
        // modules the boot left for later.
        if !blocking("wait for modules", || {
            crate::modules::wait_for_deferred(DEFERRED_MODULES_LIMIT)
        })
        .await?
        {
            slog::warn!(self.0.log, "deferred modules still loading; creating the container anyway";
                "container" => &req.container_id);
        }
        let mut undo = scopeguard::guard(Vec::<PathBuf>::new(), |m| {
            m.iter().rev().for_each(|p| storage::unmount(p))
        });
        for s in &req.storages {
            undo.push(self.mount_storage(s.clone()).await?);
        }
        let exec_id = if req.exec_id.is_empty() {
            req.container_id.clone()
        } else {
            req.exec_id.clone()
        };
        let direct = self.0.registry.direct.take(&req.container_id, &exec_id)?;
        let NewStdio {
            pipes,
            init: stdio,
            direct,
        } = process_stdio(&spec.process().clone().unwrap_or_default(), direct)?;
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let own_pid_ns = has_own_pid_namespace(&spec);
        let config = InitConfig {
            container_id: req.container_id.clone(),
            spec,
            bundle: rootfs.parent().map(PathBuf::from).unwrap_or_default(),
            rootfs,
            loopback_up: true,
            exec_fifo: None,
            deny_vsock: self.0.deny_vsock,
        };
        let cmd = init_command();
        let since = self.0.reaper.mark();
        let mut created = blocking("create task", move || {
            rustjail::container::create(&cmd, config, stdio)
        })
        .await??;
        let io = match process_io(pipes, &mut created) {
            Ok(io) => io,
            Err(e) => {
                // The init waits for its start in its cgroup: both go.
                let _ = nix::sys::signal::kill(created.pid, Signal::SIGKILL);
                let cg = created.cgroup;
                if let Ok(Err(left)) = blocking("remove cgroup", move || cg.discard()).await {
                    slog::warn!(self.0.log, "container cgroup left behind";
                        "container" => &req.container_id, "error" => %left);
                }
                return Err(e);
            }
        };
        let pid = created.pid.as_raw();
        let cgroup_path = created.cgroup.path().to_string();
        let init = Arc::new(Process::new(
            exec_id,
            pid,
            self.0.reaper.watch(pid, since),
            io,
        ));
        let mounts = scopeguard::ScopeGuard::into_inner(undo);
        let container = Arc::new(Container::new(
            req.container_id.clone(),
            init,
            created,
            mounts,
            seccomp,
        ));
        self.watch_oom(&container);
        tokio::spawn(end_after_exit(container.init.clone(), direct, cgroup_path));
        if !own_pid_ns {
            tokio::spawn(kill_remnants_after_init(
                container.clone(),
                self.0.log.clone(),
            ));
        }
        self.0.registry.insert(reservation, container);
        slog::info!(self.0.log, "container created"; "container" => &req.container_id, "pid" => pid);
        Ok(())
    }

    /// Namespace paths that name another container
    /// (`protocols::CONTAINER_NS_PREFIX`) become that container's init's
    /// namespaces: how a pod's containers share its sandbox's.
    pub(super) fn resolve_container_namespaces(&self, mut spec: Spec) -> Result<Spec, AgentError> {
        const NAMES: [&str; 8] = ["net", "ipc", "uts", "pid", "mnt", "user", "cgroup", "time"];
        let Some(mut linux) = spec.linux().clone() else {
            return Ok(spec);
        };
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for ns in namespaces.iter_mut() {
            let Some(rest) = ns
                .path()
                .as_ref()
                .and_then(|p| p.to_str())
                .and_then(|p| p.strip_prefix(protocols::CONTAINER_NS_PREFIX))
                .map(str::to_string)
            else {
                continue;
            };
            let (id, name) = rest
                .split_once("/ns/")
                .filter(|(_, name)| NAMES.contains(name))
                .ok_or_else(|| {
                    AgentError::invalid(
                        "linux.namespaces",
                        format!("{rest:?} is not <container>/ns/<namespace>"),
                    )
                })?;
            if let Some(pod) = self.pod_namespaces().filter(|p| p.sandbox_id == id) {
                ns.set_path(Some(pod.path(name)?));
                continue;
            }
            let owner = self.0.registry.get(id)?;
            owner.require_alive("share its namespaces")?;
            ns.set_path(Some(PathBuf::from(format!(
                "/proc/{}/ns/{name}",
                owner.init.pid
            ))));
        }
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        Ok(spec)
    }

    /// Starts a process in a running container (created and started at
    /// once, as Kata's ExecProcess does); its stdio waits for the host's
    /// streams like the init's.
    pub(super) async fn exec_process(
        &self,
        req: agent::ExecProcessRequest,
    ) -> Result<(), AgentError> {
        check_id("exec_id", &req.exec_id)?;
        let process = parse_process(&req)?;
        let c = self.0.registry.get(&req.container_id)?;
        // A frozen container cannot run the exec's setup: it would hang.
        if c.cgroup().is_frozen() {
            return Err(AgentError::WrongState {
                id: c.id.clone(),
                state: "paused",
                action: "exec into it",
            });
        }
        let slot = c.reserve_exec(&req.exec_id)?;
        let direct = self
            .0
            .registry
            .direct
            .take(&req.container_id, &req.exec_id)?;
        let NewStdio {
            pipes,
            init: stdio,
            direct,
        } = process_stdio(&process, direct)?;
        let config = ExecConfig {
            container_id: req.container_id.clone(),
            init_pid: c.init.pid,
            process,
            seccomp: c.seccomp.clone(),
            deny_vsock: self.0.deny_vsock,
        };
        let cgroup = c.cgroup_path.clone();
        let cgroup_path = cgroup.clone();
        let cmd = init_command();
        let since = self.0.reaper.mark();
        let began = std::time::Instant::now();
        let mut created = blocking("exec task", move || {
            rustjail::container::exec(&cmd, config, &cgroup, stdio)
        })
        .await??;
        let io = match process_io(pipes, &mut created) {
            Ok(io) => io,
            Err(e) => {
                // The process waits for its start; the container's cgroup,
                // which it shares, stays.
                let _ = nix::sys::signal::kill(created.pid, Signal::SIGKILL);
                return Err(e);
            }
        };
        let pid = created.pid.as_raw();
        let set_up = began.elapsed();
        // The reaper keeps an early exit until it is watched.
        blocking("start exec task", move || created.start()).await??;
        let p = Process::new(
            req.exec_id.clone(),
            pid,
            self.0.reaper.watch(pid, since),
            io,
        );
        let p = Arc::new(p);
        tokio::spawn(end_after_exit(p.clone(), direct, cgroup_path));
        slot.fill(p);
        slog::info!(self.0.log, "process started"; "container" => &req.container_id,
            "exec" => &req.exec_id, "pid" => pid, "setup_us" => set_up.as_micros(),
            "start_us" => (began.elapsed() - set_up).as_micros());
        Ok(())
    }

    /// The netlink connection, opened on first use; the namespace's `lo`
    /// (which the pod's containers share) is brought up then.
    pub(super) async fn network(&self) -> Result<&crate::network::Network, AgentError> {
        Ok(self
            .0
            .network
            .get_or_try_init(|| async {
                let net = crate::network::Network::connect()?;
                net.loopback_up().await?;
                Ok::<_, crate::network::NetError>(net)
            })
            .await?)
    }

    /// OOM kills are reported for containers in a cgroup v2 memory cgroup.
    pub(super) fn watch_oom(&self, c: &Container) {
        let cg = c.cgroup();
        let watched = match (cg.v2_dir(), cg.memory_v1_dir()) {
            (Some(dir), _) => self.0.oom.watch(&c.id, &dir).map_err(std::io::Error::from),
            (None, Some(dir)) => self.0.oom.watch_v1(&c.id, &dir),
            (None, None) => Ok(()),
        };
        if let Err(e) = watched {
            slog::warn!(self.0.log, "OOM events will not be reported"; "container" => &c.id, "error" => %e);
        }
    }

    pub(super) async fn start_container(&self, id: &str) -> Result<(), AgentError> {
        let c = self.0.registry.get(id)?;
        let created = c.take_pending_start().ok_or(AgentError::WrongState {
            id: id.to_string(),
            state: "already started",
            action: "start",
        })?;
        blocking("start task", move || created.start()).await??;
        slog::info!(self.0.log, "container started"; "container" => id);
        Ok(())
    }

    pub(super) fn signal(&self, req: &agent::SignalProcessRequest) -> Result<(), AgentError> {
        let sig = Signal::try_from(req.signal as i32).map_err(|_| {
            AgentError::invalid("signal", format!("{} is not a signal", req.signal))
        })?;
        let c = self.0.registry.get(&req.container_id)?;
        let pids: Vec<i32> = if req.exec_id.is_empty() {
            c.pids().into_iter().map(|p| p as i32).collect()
        } else {
            let p = self.0.registry.process(&req.container_id, &req.exec_id)?;
            if p.exit_code().is_some() {
                return Err(AgentError::ProcessNotFound {
                    container_id: req.container_id.clone(),
                    exec_id: format!("{} (already exited)", req.exec_id),
                });
            }
            vec![p.pid]
        };
        send_signal(&c, &pids, sig)
    }

    /// Freezes (`pause`) or thaws the container's cgroup: every process in
    /// it, execs included. Only a started, living container can be paused.
    pub(super) async fn set_paused(&self, id: &str, pause: bool) -> Result<(), AgentError> {
        let c = self.0.registry.get(id)?;
        let action = if pause { "pause" } else { "resume" };
        c.require_running(action)?;
        let cg = c.cgroup();
        blocking(action, move || if pause { cg.freeze() } else { cg.thaw() })
            .await?
            .map_err(|e| AgentError::Container(e.into()))?;
        slog::info!(self.0.log, "container {}d", action; "container" => id);
        Ok(())
    }

    /// Kills what is left of the container, waits for its init, removes its
    /// cgroup and mounts. `timeout` 0 waits forever.
    pub(super) async fn remove_container(&self, id: &str, timeout: u32) -> Result<(), AgentError> {
        let c = self.0.registry.get(id)?;
        drop(c.take_pending_start());
        for pid in c.pids() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Frozen processes die only once thawed.
        let _ = c.cgroup().thaw();
        let wait = c.init.wait();
        if timeout == 0 {
            wait.await;
        } else if tokio::time::timeout(Duration::from_secs(timeout.into()), wait)
            .await
            .is_err()
        {
            return Err(AgentError::Timeout {
                what: format!("container {id:?} to die"),
                secs: timeout,
            });
        }
        self.0.oom.unwatch(id);
        // The kernel empties a cgroup a little after its processes die;
        // `discard` waits for that (and kills any straggler).
        let cg = c.cgroup();
        if let Ok(Err(e)) = blocking("remove cgroup", move || cg.discard()).await {
            slog::warn!(self.0.log, "container cgroup left behind"; "container" => id, "error" => %e);
        }
        c.mounts.iter().rev().for_each(|p| storage::unmount(p));
        self.0.registry.remove(id);
        slog::info!(self.0.log, "container removed"; "container" => id);
        Ok(())
    }

    pub(super) async fn mount_storage(&self, s: agent::Storage) -> Result<PathBuf, AgentError> {
        let sysfs = self.0.guest.sysfs.root().to_path_buf();
        Ok(blocking("mount storage", move || storage::mount(&s, &sysfs)).await??)
    }

    pub(super) async fn create_sandbox(
        &self,
        req: agent::CreateSandboxRequest,
    ) -> Result<(), AgentError> {
        if req.sandbox_pidns {
            self.hold_pod_namespaces(&req).await?;
        } else if !req.hostname.is_empty() {
            nix::unistd::sethostname(&req.hostname)
                .map_err(|e| AgentError::sys("sethostname")(e.into()))?;
        }
        if !req.dns.is_empty() && !req.sandbox_pidns {
            write_resolv_conf(&self.0.guest.etc_dir, &req.dns)?;
        }
        for s in &req.storages {
            let path = self.mount_storage(s.clone()).await?;
            self.0
                .sandbox_mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path);
        }
        slog::info!(self.0.log, "sandbox created"; "sandbox" => &req.sandbox_id);
        Ok(())
    }

    pub(super) async fn destroy_sandbox(&self) -> Result<(), AgentError> {
        for id in self.0.registry.ids() {
            if let Err(e) = self.remove_container(&id, 10).await {
                slog::warn!(self.0.log, "remove on destroy failed"; "container" => &id, "error" => %e);
            }
        }
        let mounts = std::mem::take(
            &mut *self
                .0
                .sandbox_mounts
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        mounts.iter().rev().for_each(|p| storage::unmount(p));
        if let Some(pod) = self.0.lock_pod_namespaces().take() {
            pod.stop();
        }
        self.0.shutdown.notify_one();
        Ok(())
    }
}

/// A pod's own `hostname`, `hosts` and `resolv.conf` (the DNS lines), for
/// its containers when no sandbox container's are bound into them.
fn write_pod_files(
    dir: &std::path::Path,
    hostname: &str,
    dns: &[String],
) -> Result<(), AgentError> {
    if hostname.contains(['\n', ' ', '\t']) {
        return Err(AgentError::invalid(
            "hostname",
            format!("{hostname:?} is not a host name"),
        ));
    }
    write_resolv_conf(dir, dns)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}",
        if hostname.is_empty() {
            String::new()
        } else {
            format!("127.0.1.1\t{hostname}\n")
        }
    );
    for (name, text) in [("hosts", hosts), ("hostname", format!("{hostname}\n"))] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(AgentError::sys(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// The sandbox's DNS lines (`nameserver 10.0.0.1`, `search x`) as the
/// guest's resolv.conf, replaced atomically.
fn write_resolv_conf(etc_dir: &std::path::Path, lines: &[String]) -> Result<(), AgentError> {
    if let Some(bad) = lines.iter().find(|l| l.contains('\n')) {
        return Err(AgentError::invalid("dns", format!("{bad:?} spans lines")));
    }
    let path = etc_dir.join("resolv.conf");
    let tmp = etc_dir.join(".resolv.conf.hull");
    std::fs::create_dir_all(etc_dir)
        .and_then(|_| std::fs::write(&tmp, lines.join("\n") + "\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(AgentError::sys(format!("write {}", path.display())))
}

impl Service {
    /// The pod's namespaces held by the agent, if it holds them.
    fn pod_namespaces(&self) -> Option<Arc<PodNamespaces>> {
        self.0.lock_pod_namespaces().clone()
    }

    /// Starts the holder of the pod's shared namespaces (a sandbox without
    /// a sandbox container); the pod's hostname is set in its UTS
    /// namespace, not the VM's.
    async fn hold_pod_namespaces(
        &self,
        req: &agent::CreateSandboxRequest,
    ) -> Result<(), AgentError> {
        if self.pod_namespaces().is_some() {
            return Err(AgentError::invalid(
                "sandbox_pidns",
                "this VM's pod namespaces already exist".to_string(),
            ));
        }
        write_pod_files(&self.0.guest.pod_dir, &req.hostname, &req.dns)?;
        let (id, hostname) = (req.sandbox_id.clone(), req.hostname.clone());
        let pod = blocking("pod namespaces", move || {
            PodNamespaces::start(&id, &hostname)
        })
        .await??;
        slog::info!(self.0.log, "pod namespaces held by the agent"; "sandbox" => &req.sandbox_id);
        *self.0.lock_pod_namespaces() = Some(Arc::new(pod));
        Ok(())
    }
}
