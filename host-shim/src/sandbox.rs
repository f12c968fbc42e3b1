//! A sandbox: one VM, its agent connection, and the containers' shared
//! root filesystems. Boot and teardown live here; the task service only
//! calls them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::Spec;
use protocols::agent;

use crate::agent::AgentClient;
use crate::config::{HullConfig, MetricsFormat, SharedFs};
use crate::errors::ShimError;
use crate::hypervisor::SHARED_TAG;
use crate::network::PodNetwork;
use crate::rootfs;
use crate::share::Share;
use crate::vm::{HandedVm, Vm, VmPaths, GUEST_SHARED_DIR};

pub struct Sandbox {
    pub id: String,
    pub agent: AgentClient,
    pub vm: Vm,
    pub paths: VmPaths,
    pub died: tokio::sync::watch::Receiver<Option<String>>,
    /// How the shim reaches the guest's vsock ports.
    pub vsock: std::sync::Arc<dyn crate::vsock::VsockTransport>,
    /// The pod's host network namespace, wired to the VM's NICs.
    pub network: Option<PodNetwork>,
    /// How Task Stats reports this sandbox's containers.
    pub metrics: MetricsFormat,
    /// How long a process's output may be copied after its exit.
    pub exit_output: Duration,
    /// Set when shutdown begins, so long polls on the agent stop.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// What `teardown` must undo for a container, known before the VM exists.
pub struct HostMounts {
    pub bundle: PathBuf,
    /// The sandbox the container's share is in.
    pub vm: VmPaths,
    pub container_id: String,
}

impl HostMounts {
    pub fn undo(&self) {
        if let Ok(share) = Share::open(&self.vm) {
            share.remove_container(&self.container_id);
        }
        rootfs::unmount_bundle_rootfs(&self.bundle);
    }
}

fn shared_storage(kind: SharedFs) -> agent::Storage {
    let (driver, fstype) = match kind {
        SharedFs::VirtioFs => ("virtio-fs", "virtiofs"),
        SharedFs::NineP => ("9p", "9p"),
    };
    agent::Storage {
        driver: driver.into(),
        source: SHARED_TAG.into(),
        fstype: fstype.into(),
        mount_point: GUEST_SHARED_DIR.into(),
        ..Default::default()
    }
}

impl Sandbox {
    /// Boots the VM (or takes over `taken`, booted by hull-cache) and waits
    /// for its agent. On failure, everything started is stopped again
    /// before the error is returned.
    pub async fn boot(
        cfg: &HullConfig,
        id: &str,
        log: &slog::Logger,
        network: Option<PodNetwork>,
        pod: Option<&crate::pod::PodIdentity>,
        taken: Option<HandedVm>,
    ) -> Result<Sandbox, ShimError> {
        let started = Instant::now();
        let from_cache = taken.is_some();
        // On any error below, dropping `network` removes its tc rules.
        let mut vm = match taken {
            Some(handed) => Vm::adopt(cfg, handed, log)?,
            None => Vm::start(cfg, id, log, network.as_ref()).await?,
        };
        let agent = match vm.connect_agent(cfg).await {
            Ok(a) => {
                vm.follow_guest_log(log);
                a
            }
            Err(e) => {
                vm.stop(Duration::from_secs(2)).await;
                return Err(e.into());
            }
        };
        if from_cache {
            if let Err(e) = settle_taken_vm(&vm, &agent, network.as_ref()).await {
                vm.stop(Duration::from_secs(2)).await;
                return Err(e);
            }
        }
        slog::info!(log, "vm ready"; "boot_ms" => started.elapsed().as_millis() as u64,
            "from_cache" => from_cache, "guest_uptime_ms" => guest_uptime_ms(&vm.paths.dir));
        let req = agent::CreateSandboxRequest {
            sandbox_id: id.into(),
            storages: vec![shared_storage(cfg.shared_fs.kind)],
            // The agent holds the pod's namespaces (under the sandbox id)
            // when no sandbox container will.
            sandbox_pidns: pod.is_some(),
            hostname: pod.map(|p| p.hostname.clone()).unwrap_or_default(),
            dns: pod.map(|p| p.dns.clone()).unwrap_or_default(),
            ..Default::default()
        };
        let sandbox = Sandbox {
            id: id.into(),
            agent,
            paths: vm.paths.clone(),
            died: vm.died.clone(),
            vsock: vm.vsock.clone(),
            metrics: cfg.metrics,
            exit_output: Duration::from_secs(cfg.timeouts.exit_output_secs),
            network,
            vm,
            stopping: tokio::sync::watch::channel(false).0,
        };
        if let Err(e) = sandbox
            .agent
            .agent
            .create_sandbox(sandbox.agent.ctx(), &req)
            .await
        {
            sandbox.shutdown().await;
            return Err(ShimError::agent("CreateSandbox")(e));
        }
        if let Err(e) = sandbox.configure_network(log).await {
            sandbox.shutdown().await;
            return Err(e);
        }
        Ok(sandbox)
    }

    /// Creates the container in the guest from the bundle's spec, already
    /// rewritten for the guest by [`prepare_guest_spec`].
    pub async fn create_container(&self, container_id: &str, spec: Spec) -> Result<(), ShimError> {
        let json = serde_json::to_string(&spec).map_err(|e| ShimError::Invalid {
            what: "OCI spec",
            reason: e.to_string(),
        })?;
        let req = agent::CreateContainerRequest {
            container_id: container_id.into(),
            exec_id: container_id.into(),
            hull_oci_spec_json: json,
            ..Default::default()
        };
        self.agent
            .agent
            .create_container(self.agent.ctx(), &req)
            .await
            .map_err(ShimError::agent("CreateContainer"))?;
        Ok(())
    }

    /// Checks the agent's health every `every` until the sandbox ends;
    /// after `allowed` failures in a row the VM is declared dead.
    pub async fn monitor_health(
        self: std::sync::Arc<Self>,
        every: Duration,
        allowed: u32,
        log: slog::Logger,
    ) {
        let mut failures = 0;
        let req = protocols::health::CheckRequest::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.ended() => return,
            }
            let ctx = ttrpc::context::with_timeout(every.as_nanos() as i64);
            let checked = tokio::select! {
                r = self.agent.health.check(ctx, &req) => r,
                _ = self.ended() => return,
            };
            match checked {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    slog::warn!(log, "agent health check failed"; "failures" => failures, "error" => %e);
                    if failures >= allowed {
                        let reason = format!(
                            "the agent failed {failures} health checks in a row (last: {e})"
                        );
                        slog::error!(log, "declaring the VM dead"; "reason" => &reason);
                        self.vm.declare_dead(reason);
                        return;
                    }
                }
            }
        }
    }

    /// Resolves once the sandbox is stopping or its VM has died: the end
    /// of every long poll on its agent.
    pub async fn ended(&self) {
        let mut stopping = self.stopping.subscribe();
        let mut died = self.died.clone();
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => {}
            _ = died.wait_for(|d| d.is_some()) => {}
        }
    }

    /// Stops the VM: asks the agent to shut down, then ends QEMU and helpers.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        if self.died.borrow().is_none() {
            let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
            let _ = self
                .agent
                .agent
                .destroy_sandbox(ctx, &agent::DestroySandboxRequest::new())
                .await;
        }
        self.vm.stop(Duration::from_secs(3)).await;
        if let Some(n) = &self.network {
            n.detach();
        }
    }

    /// Gives the guest the pod's interfaces (found by MAC) and routes.
    async fn configure_network(&self, log: &slog::Logger) -> Result<(), ShimError> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let a = &self.agent;
        for e in &net.endpoints {
            let req = agent::UpdateInterfaceRequest {
                interface: Some(e.interface.clone()).into(),
                ..Default::default()
            };
            a.agent
                .update_interface(a.ctx(), &req)
                .await
                .map_err(ShimError::agent("UpdateInterface"))?;
            slog::info!(log, "pod interface carried into the vm"; "name" => &e.interface.name,
                "mac" => &e.interface.hwAddr, "tap" => &e.tap);
        }
        let req = agent::UpdateRoutesRequest {
            routes: Some(agent::Routes {
                Routes: net.routes.clone(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        a.agent
            .update_routes(a.ctx(), &req)
            .await
            .map_err(ShimError::agent("UpdateRoutes"))?;
        if !net.neighbors.is_empty() {
            let req = agent::AddARPNeighborsRequest {
                neighbors: Some(agent::ARPNeighbors {
                    ARPNeighbors: net.neighbors.clone(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            };
            a.agent
                .add_arp_neighbors(a.ctx(), &req)
                .await
                .map_err(ShimError::agent("AddARPNeighbors"))?;
        }
        Ok(())
    }
}

/// Where a sandbox's VM comes from: one taken from hull-cache (its
/// directory, share included, is now the sandbox's), or one to boot (its
/// directory and share are made here). The cache is never required: any
/// failure to take a VM is logged and the VM is booted.
pub async fn take_or_prepare(
    cfg: &HullConfig,
    id: &str,
    nics: usize,
    log: &slog::Logger,
) -> Result<Option<HandedVm>, ShimError> {
    use crate::cache::client::{take, Taken};
    let (c, i) = (cfg.clone(), id.to_string());
    match tokio::task::spawn_blocking(move || take(&c, &i, nics)).await {
        Ok(Ok(Taken::Vm(vm))) => return Ok(Some(*vm)),
        Ok(Ok(Taken::Boot(why))) => slog::info!(log, "booting a VM"; "not_from_cache" => why),
        Ok(Err(e)) => slog::warn!(log, "no VM from hull-cache; booting one"; "error" => %e),
        Err(e) => slog::warn!(log, "no VM from hull-cache; booting one"; "error" => %e),
    }
    Share::create(&VmPaths::new(&cfg.state_dir, id))?;
    Ok(None)
}

/// A VM booted ahead gets what a fresh boot would have: the pod's NICs
/// (hot-plugged), the host's clock (it may have waited long), and new
/// entropy (VMs booted from one image share their early random state).
async fn settle_taken_vm(
    vm: &Vm,
    agent: &AgentClient,
    network: Option<&PodNetwork>,
) -> Result<(), ShimError> {
    if let Some(net) = network.filter(|n| !n.endpoints.is_empty()) {
        let taps = net
            .endpoints
            .iter()
            .map(|e| Ok((e.tap_fd.try_clone()?, e.interface.hwAddr.clone())))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| ShimError::Io {
                op: "dup tap".into(),
                source,
            })?;
        let socket = vm.paths.qmp.clone();
        let limit = agent.rpc_timeout();
        let plugged = tokio::task::spawn_blocking(move || {
            let nics: Vec<_> = taps
                .iter()
                .map(|(fd, mac)| crate::qmp::HotplugNic {
                    tap: std::os::fd::AsFd::as_fd(fd),
                    mac,
                })
                .collect();
            crate::qmp::hotplug_nics(&socket, &nics, limit)
        })
        .await;
        match plugged {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ShimError::Hotplug(e.to_string())),
            Err(e) => return Err(ShimError::Hotplug(e.to_string())),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let time = agent::SetGuestDateTimeRequest {
        Sec: now.as_secs() as i64,
        Usec: i64::from(now.subsec_micros()),
        ..Default::default()
    };
    agent
        .agent
        .set_guest_date_time(agent.ctx(), &time)
        .await
        .map_err(ShimError::agent("SetGuestDateTime"))?;
    let mut seed = vec![0u8; RESEED_BYTES];
    getrandom_fill(&mut seed)?;
    let reseed = agent::ReseedRandomDevRequest {
        data: seed,
        ..Default::default()
    };
    agent
        .agent
        .reseed_random_dev(agent.ctx(), &reseed)
        .await
        .map_err(ShimError::agent("ReseedRandomDev"))?;
    Ok(())
}

/// Entropy given to a VM taken from the cache.
const RESEED_BYTES: usize = 64;

fn getrandom_fill(buf: &mut [u8]) -> Result<(), ShimError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|source| ShimError::Io {
            op: "read /dev/urandom".into(),
            source,
        })
}

/// What preparing a spec for the guest found: host settings not carried
/// into the guest (for the log), and the pod's network namespace on the
/// host, whose interfaces the VM is to get.
#[derive(Debug, Default)]
pub struct GuestSpecFindings {
    pub notes: Vec<String>,
    pub host_netns: Option<PathBuf>,
}

/// Rewrites the bundle's spec for the guest: the rootfs in the shared
/// directory, host LSM labels dropped, and namespace paths (host paths,
/// which a VM cannot join) refused, or for a pod container turned into
/// the sandbox container's namespaces in the guest, or for the pod's
/// network namespace carried into the VM.
pub fn prepare_guest_spec(
    spec: &mut Spec,
    container_id: &str,
    role: &crate::pod::Role,
) -> Result<GuestSpecFindings, ShimError> {
    let mut notes = drop_host_lsm_labels(spec);
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(
        Path::new(GUEST_SHARED_DIR)
            .join(container_id)
            .join("rootfs"),
    );
    spec.set_root(Some(root));
    crate::share::check_sources(spec)?;
    refuse_hooks(spec)?;
    let mut host_netns = None;
    if let Some(mut linux) = spec.linux().clone() {
        let mut namespaces = Vec::new();
        for mut ns in linux.namespaces().clone().unwrap_or_default() {
            match guest_namespace(&mut ns, role)? {
                GuestNamespace::Keep => namespaces.push(ns),
                GuestNamespace::PodNetwork(path) => host_netns = Some(path),
            }
        }
        refuse_host_network(&namespaces, host_netns.is_some(), role)?;
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
    }
    if let Some(path) = &host_netns {
        notes.push(format!(
            "host network namespace {path:?}: its interfaces are carried into the VM"
        ));
    }
    Ok(GuestSpecFindings { notes, host_netns })
}

/// A pod sandbox without a network namespace of its own shares the host's
/// (Kubernetes hostNetwork), which a VM cannot do.
fn refuse_host_network(
    namespaces: &[oci_spec::runtime::LinuxNamespace],
    has_pod_network: bool,
    role: &crate::pod::Role,
) -> Result<(), ShimError> {
    let own_netns = namespaces
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network);
    if matches!(role, crate::pod::Role::Sandbox) && !own_netns && !has_pod_network {
        return Err(ShimError::Invalid {
            what: "linux.namespaces",
            reason: "the pod asks for the host's network namespace (hostNetwork, \
                     NamespaceMode NODE), which a VM cannot share; run it with another runtime"
                .into(),
        });
    }
    Ok(())
}

enum GuestNamespace {
    /// The (possibly rewritten) entry stays in the guest's spec.
    Keep,
    /// The pod's network namespace on the host: the entry goes (the
    /// container runs in the guest namespace that holds the VM's NICs),
    /// and the host namespace's interfaces are carried into the VM.
    PodNetwork(PathBuf),
}

/// OCI hooks are host programs run at points of the container's life;
/// Hull does not run them yet, and a spec that has them is refused, naming
/// them, rather than started without them.
fn refuse_hooks(spec: &Spec) -> Result<(), ShimError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    #[allow(deprecated)]
    let kinds = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    let present: Vec<String> = kinds
        .iter()
        .filter_map(|(kind, list)| {
            let list = list.as_deref().filter(|l| !l.is_empty())?;
            let paths: Vec<_> = list
                .iter()
                .map(|h| h.path().display().to_string())
                .collect();
            Some(format!("{kind}: {}", paths.join(", ")))
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    Err(ShimError::Invalid {
        what: "hooks",
        reason: format!(
            "OCI hooks are not run by Hull yet, so the container is not started without them ({})",
            present.join("; ")
        ),
    })
}

/// What a namespace with a host path becomes in the guest.
fn guest_namespace(
    ns: &mut oci_spec::runtime::LinuxNamespace,
    role: &crate::pod::Role,
) -> Result<GuestNamespace, ShimError> {
    use crate::pod::Role;
    use oci_spec::runtime::LinuxNamespaceType as T;
    let Some(path) = ns.path().clone() else {
        return Ok(GuestNamespace::Keep);
    };
    let shared_in_pod = matches!(ns.typ(), T::Network | T::Ipc | T::Uts | T::Pid);
    match role {
        Role::Member { sandbox_id } if shared_in_pod => {
            ns.set_path(Some(crate::pod::guest_ns_path(sandbox_id, ns.typ()).into()));
            Ok(GuestNamespace::Keep)
        }
        // The pod's network namespace on the host (CNI's, or one given to
        // ctr with --with-ns): its interfaces are mirrored into the VM.
        Role::Sandbox | Role::Standalone if ns.typ() == T::Network => {
            Ok(GuestNamespace::PodNetwork(path))
        }
        _ => Err(ShimError::Invalid {
            what: "linux.namespaces",
            reason: format!(
                "{:?} namespace path {path:?} is a host namespace, which a VM cannot join",
                ns.typ()
            ),
        }),
    }
}

/// AppArmor profiles and SELinux labels name policies loaded in the host's
/// kernel; the guest kernel runs none (the VM is the boundary). They are
/// dropped from the guest's spec, and what was dropped is returned so the
/// shim logs it, rather than letting every CRI pod fail on a host with
/// AppArmor.
fn drop_host_lsm_labels(spec: &mut Spec) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(mut process) = spec.process().clone() {
        if let Some(p) = process.apparmor_profile().clone().filter(|p| !p.is_empty()) {
            notes.push(format!("apparmor profile {p:?}"));
        }
        if let Some(l) = process.selinux_label().clone().filter(|l| !l.is_empty()) {
            notes.push(format!("selinux label {l:?}"));
        }
        process.set_apparmor_profile(None);
        process.set_selinux_label(None);
        spec.set_process(Some(process));
    }
    if let Some(mut linux) = spec.linux().clone() {
        if let Some(l) = linux.mount_label().clone().filter(|l| !l.is_empty()) {
            notes.push(format!("selinux mount label {l:?}"));
        }
        linux.set_mount_label(None);
        spec.set_linux(Some(linux));
    }
    notes
}

/// The guest's uptime when its agent said it was ready, from the end of
/// the console (the agent has just said it).
fn guest_uptime_ms(vm_dir: &Path) -> u64 {
    let end = crate::console::last_bytes(vm_dir, crate::console::TAIL_BYTES).unwrap_or_default();
    agent_ready_uptime_ms(&String::from_utf8_lossy(&end))
}

/// The uptime the agent's "agent ready" line in console text reports (0
/// when there is none).
pub fn agent_ready_uptime_ms(console: &str) -> u64 {
    console
        .lines()
        .filter(|l| l.contains("\"agent ready\""))
        .find_map(|l| {
            // Firmware output may precede the JSON on the same line.
            let json = &l[l.find('{')?..];
            let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
            v.get("uptime_ms")?.as_u64()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_read_behind_firmware_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("console.log"),
            "Booting from ROM..{\"msg\":\"agent ready\",\"uptime_ms\":2870}\r\n",
        )
        .unwrap();
        assert_eq!(guest_uptime_ms(dir.path()), 2870);
    }

    #[test]
    fn guest_spec_root_points_into_shared_dir() {
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![]));
        prepare_guest_spec(&mut spec, "c1", &crate::pod::Role::Standalone).unwrap();
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/run/hull/shared/c1/rootfs")
        );
    }

    #[test]
    fn host_lsm_labels_are_dropped_and_reported() {
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![]));
        if let Some(p) = spec.process_mut() {
            p.set_apparmor_profile(Some("cri-containerd.apparmor.d".into()));
        }
        let notes = prepare_guest_spec(&mut spec, "c1", &crate::pod::Role::Standalone)
            .unwrap()
            .notes;
        assert_eq!(notes, ["apparmor profile \"cri-containerd.apparmor.d\""]);
        assert_eq!(spec.process().as_ref().unwrap().apparmor_profile(), &None);
    }

    #[test]
    fn a_pod_container_joins_the_sandbox_namespaces_in_the_guest() {
        use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType as T};
        let ns = |t, path: Option<&str>| {
            let b = LinuxNamespaceBuilder::default().typ(t);
            match path {
                Some(p) => b.path(p).build().unwrap(),
                None => b.build().unwrap(),
            }
        };
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![]));
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(vec![
                ns(T::Network, Some("/proc/42/ns/net")),
                ns(T::Uts, Some("/proc/42/ns/uts")),
                ns(T::Mount, None),
            ]));
        }
        let role = crate::pod::Role::Member {
            sandbox_id: "pod1".into(),
        };
        prepare_guest_spec(&mut spec, "c1", &role).unwrap();
        let got: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.path().as_ref().map(|p| p.display().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                Some("/run/hull/containers/pod1/ns/net".to_string()),
                Some("/run/hull/containers/pod1/ns/uts".to_string()),
                None
            ]
        );
    }

    #[test]
    fn hooks_are_refused_by_kind_and_path() {
        let mut spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[],
            "hooks":{"poststop":[{"path":"/usr/bin/cleanup"}]}}"#,
        )
        .unwrap();
        let err = prepare_guest_spec(&mut spec, "c1", &crate::pod::Role::Standalone)
            .unwrap_err()
            .to_string();
        assert!(err.contains("poststop: /usr/bin/cleanup"), "{err}");
    }

    fn spec_with(namespaces: Vec<oci_spec::runtime::LinuxNamespace>) -> Spec {
        let mut spec = Spec::default();
        if let Some(l) = spec.linux_mut() {
            l.set_namespaces(Some(namespaces));
        }
        spec
    }

    fn host_ns(
        t: oci_spec::runtime::LinuxNamespaceType,
        path: &str,
    ) -> oci_spec::runtime::LinuxNamespace {
        oci_spec::runtime::LinuxNamespaceBuilder::default()
            .typ(t)
            .path(path)
            .build()
            .unwrap()
    }

    #[test]
    fn host_namespace_path_is_refused_with_its_name() {
        use oci_spec::runtime::LinuxNamespaceType as T;
        let mut spec = spec_with(vec![host_ns(T::Uts, "/proc/7/ns/uts")]);
        let err = prepare_guest_spec(&mut spec, "c1", &crate::pod::Role::Standalone)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/7/ns/uts"), "{err}");
    }

    #[test]
    fn pod_network_namespace_is_carried_and_host_network_refused() {
        use oci_spec::runtime::LinuxNamespaceType as T;
        let mut spec = spec_with(vec![host_ns(T::Network, "/var/run/netns/cni-1")]);
        let found = prepare_guest_spec(&mut spec, "c1", &crate::pod::Role::Sandbox).unwrap();
        assert_eq!(
            found.host_netns,
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        let left = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(
            left.is_empty(),
            "the guest container uses the NICs' namespace: {left:?}"
        );

        let mut host_network = spec_with(vec![]);
        let err = prepare_guest_spec(&mut host_network, "c1", &crate::pod::Role::Sandbox)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hostNetwork"), "{err}");
    }
}
