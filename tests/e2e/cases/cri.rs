//! A Kubernetes pod through containerd's CRI plugin with runtime handler
//! `hull`: the kubelet's calls, made by a real CRI client.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use k8s_cri::v1::NamespaceMode;

use crate::cri::{container_config, pod_config, Cri};

/// A sandbox and two containers in one VM: they share the pod's network
/// (talk over localhost) and hostname, one also the pod's PID namespace;
/// the pod's CNI address is the VM's, and a runc pod reaches it there;
/// ExecSync returns both streams and the exit code; container logs reach
/// the CRI log file; stop and remove leave nothing behind.
pub(super) fn cri_pod_runs_in_one_vm(env: &Env) -> Result<(), String> {
    pod_case(env, "cri-pod", "hull", SandboxKind::PauseContainer)
}

/// The pod case in a new pod of runtime handler `handler`; the pod goes
/// whatever happened, so a failure does not leak its VM.
fn pod_case(env: &Env, prefix: &str, handler: &str, kind: SandboxKind) -> Result<(), String> {
    let mut cri = Cri::connect(&env.sock)?;
    let name = env.unique(prefix);
    let pod = pod_config(&name, &env.path(&format!("pods/{name}")));
    let pod_id = cri.run_pod(pod.clone(), handler)?;
    let result = pod_body(env, &mut cri, &pod_id, &pod, &name, kind);
    let removed = cri.stop_pod(&pod_id).and_then(|()| cri.remove_pod(&pod_id));
    result?;
    removed?;
    env.check_no_leaks()
}

/// A hostNetwork pod (network NamespaceMode NODE) with handler `hull` is
/// refused with an error naming the reason, and leaves nothing behind.
pub(super) fn cri_host_network_pod_is_refused(env: &Env) -> Result<(), String> {
    let mut cri = Cri::connect(&env.sock)?;
    let name = env.unique("cri-hostnet");
    let mut pod = pod_config(&name, &env.path(&format!("pods/{name}")));
    if let Some(ns) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|c| c.namespace_options.as_mut())
    {
        ns.network = NamespaceMode::Node as i32;
    }
    match cri.run_pod(pod, "hull") {
        Ok(id) => {
            let _ = cri.stop_pod(&id).and_then(|()| cri.remove_pod(&id));
            Err("a hostNetwork pod was started in a VM".into())
        }
        Err(e) if e.contains("hostNetwork") => env.check_no_leaks(),
        Err(e) => Err(format!("refused, but without saying why: {e}")),
    }
}

/// containerd 2.x's sandbox API (handler `hull-sandbox`, `sandboxer =
/// "shim"`): the pod's VM is made at RunPodSandbox with no pause container;
/// the same pod as above behaves the same, its PID namespace's init is the
/// agent's namespace holder, not a pause process, and containerd has no
/// task for the sandbox.
pub(super) fn cri_sandbox_api_pod_has_no_pause_container(env: &Env) -> Result<(), String> {
    pod_case(env, "cri-sbapi", "hull-sandbox", SandboxKind::SandboxApi)
}

/// Makes a bridge, shows it up, and removes it again.
const BRIDGE_SCRIPT: &str = "brctl addbr hullbr0 && ip link set hullbr0 up && \
    ip -o link show hullbr0 && ip link set hullbr0 down && brctl delbr hullbr0";

/// A privileged CRI container that makes a bridge, brings it up and
/// removes it: runc's does, in the same containerd, and so does Hull's
/// (the guest has the bridge module).
pub(super) fn cri_privileged_container_manages_a_bridge(env: &Env) -> Result<(), String> {
    let mut cri = Cri::connect(&env.sock)?;
    for handler in ["runc", "hull"] {
        let name = env.unique(&format!("bridge-{handler}"));
        let mut pod = pod_config(&name, &env.path(&format!("pods/{name}")));
        if let Some(ctx) = pod.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            ctx.privileged = true;
        }
        let pod_id = cri.run_pod(pod.clone(), handler)?;
        let made = (|| {
            let mut c = container_config("br", NamespaceMode::Container, &["sleep", "1000"]);
            if let Some(ctx) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                ctx.privileged = true;
            }
            let id = cri.create_container(&pod_id, &pod, c)?;
            cri.start_container(&id)?;
            let out = cri.exec_sync(&id, &["sh", "-c", BRIDGE_SCRIPT])?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.exit_code != 0 || !text.contains("hullbr0") {
                return Err(format!("{handler}: exit {}: {text}", out.exit_code));
            }
            println!("    {handler}: {}", text.lines().next().unwrap_or_default());
            Ok(())
        })();
        let removed = cri.stop_pod(&pod_id).and_then(|()| cri.remove_pod(&pod_id));
        made?;
        removed?;
    }
    env.check_no_leaks()
}

/// How a pod's VM was made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SandboxKind {
    /// containerd's podsandbox mode: a pause container boots it.
    PauseContainer,
    /// containerd's sandbox API: CreateSandbox and StartSandbox.
    SandboxApi,
}

/// The sandbox API as containerd's controller calls it: the pod is ready,
/// answers a ping, and SandboxMetrics reports its usage as cgroup v2
/// metrics under its id. (CRI's PodSandboxStats reads a host cgroup
/// instead, which a pod without `cgroup_parent` has not.)
fn pod_usage_is_reported(env: &Env, pod_id: &str) -> Result<(), String> {
    let (state, id, data) = crate::shim::sandbox_api_view(env, pod_id)?;
    println!("    sandbox API: {state}, SandboxMetrics for {id}: {data}");
    if state != "SANDBOX_READY"
        || id != pod_id
        || !data.ends_with("io.containerd.cgroups.v2.Metrics")
    {
        return Err(format!(
            "sandbox API: state {state}, metrics id {id}, data {data}"
        ));
    }
    Ok(())
}

/// containerd runs no task for a sandbox made through the sandbox API.
fn no_sandbox_task(env: &Env, pod_id: &str) -> Result<(), String> {
    let out = run(env.ctr_in("k8s.io").args(["tasks", "ls", "-q"]))?;
    let tasks = String::from_utf8_lossy(&out.stdout);
    if tasks.lines().any(|t| t.trim() == pod_id) {
        return Err(format!("containerd has a task for the sandbox: {tasks}"));
    }
    Ok(())
}

fn pod_body(
    env: &Env,
    cri: &mut Cri,
    pod_id: &str,
    pod: &k8s_cri::v1::PodSandboxConfig,
    name: &str,
    kind: SandboxKind,
) -> Result<(), String> {
    let vms = pod_vms(env, pod_id);
    if vms != 1 {
        return Err(format!("{vms} QEMU processes for the pod's sandbox"));
    }
    let server = cri.create_container(
        pod_id,
        pod,
        container_config(
            "server",
            NamespaceMode::Pod,
            &[
                "sh",
                "-c",
                "echo listening; nc -l -p 7777 > /tmp/got; echo got $(cat /tmp/got); \
                 nc -l -p 7778 > /tmp/got2; echo got2 $(cat /tmp/got2); sleep 1000",
            ],
        ),
    )?;
    cri.start_container(&server)?;
    let client = cri.create_container(
        pod_id,
        pod,
        container_config(
            "client",
            NamespaceMode::Container,
            &[
                "sh",
                "-c",
                "until echo ping | nc 127.0.0.1 7777; do sleep 0.2; done; sleep 1000",
            ],
        ),
    )?;
    cri.start_container(&client)?;
    if pod_vms(env, pod_id) != 1 {
        return Err("the pod's containers started VMs of their own".into());
    }

    let log = wait_for_log(
        &env.path(&format!("pods/{name}/server.log")),
        "stdout F got ping",
    )?;
    if !log.contains("stdout F listening") {
        return Err(format!("server log lacks its first line:\n{log}"));
    }
    if kind == SandboxKind::SandboxApi {
        no_sandbox_task(env, pod_id)?;
        pod_usage_is_reported(env, pod_id)?;
    }
    let ip = cri
        .pod_status(pod_id)?
        .network
        .map(|n| n.ip)
        .unwrap_or_default();
    let seen = cri.exec_sync(&server, &["ip", "addr", "show", "eth0"])?;
    if ip.is_empty() || !String::from_utf8_lossy(&seen.stdout).contains(&format!("inet {ip}/")) {
        return Err(format!("pod IP {ip:?}; inside the VM: {seen:?}"));
    }
    reach_from_a_runc_pod(env, cri, &ip, name)?;
    wait_for_log(
        &env.path(&format!("pods/{name}/server.log")),
        "stdout F got2 ping-from-runc",
    )?;
    let out = cri.exec_sync(&client, &["sh", "-c", "echo out; echo err >&2; exit 3"])?;
    if (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code) != (b"out\n", b"err\n", 3) {
        return Err(format!("ExecSync returned {out:?}"));
    }
    let ps = cri.exec_sync(&server, &["ps", "-o", "pid,args"])?;
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    let has_pause = ps.contains("sleep 2147483647");
    let held_by_agent = ps
        .lines()
        .any(|l| l.trim().starts_with("1 ") && l.contains("pod-namespaces"));
    match kind {
        SandboxKind::PauseContainer if !has_pause => {
            return Err(format!(
                "the pod's PID namespace does not show its pause process:\n{ps}"
            ))
        }
        SandboxKind::SandboxApi if has_pause || !held_by_agent => {
            return Err(format!(
                "the pod's PID namespace should have the agent's holder as init and no pause:\n{ps}"
            ))
        }
        _ => {}
    }
    let resolv = cri.exec_sync(&client, &["cat", "/etc/resolv.conf"])?;
    let hosts = cri.exec_sync(&client, &["cat", "/etc/hosts"])?;
    // containerd's CRI writes resolv.conf from the DNS config and copies
    // the host's /etc/hosts (the kubelet would mount its own).
    let dns = format!(
        "{}{}",
        String::from_utf8_lossy(&resolv.stdout),
        String::from_utf8_lossy(&hosts.stdout)
    );
    if !dns.contains("nameserver 10.240.77.53")
        || !dns.contains("search pods.hull.test")
        || !dns.contains("localhost")
    {
        return Err(format!("the pod's DNS and hosts files in the VM: {dns}"));
    }
    let host = cri.exec_sync(&server, &["hostname"])?;
    if String::from_utf8_lossy(&host.stdout).trim() != name {
        return Err(format!("hostname in the pod: {host:?}, want {name}"));
    }

    // The client's sh is PID 1 of its own namespace and ignores SIGTERM, so
    // the stop timeout ends in SIGKILL; the server's sh shares the pod's
    // and dies of SIGTERM, leaving its `sleep` to be killed with it.
    for (id, want) in [(&server, 143), (&client, 137)] {
        cri.stop_container(id, 2)?;
        let status = cri.container_status(id)?;
        if status.exit_code != want {
            return Err(format!(
                "container {id} stopped with {}, want {want}",
                status.exit_code
            ));
        }
        cri.remove_container(id)?;
    }
    let state = cri.pod_status(pod_id)?.state;
    if state != k8s_cri::v1::PodSandboxState::SandboxReady as i32 {
        return Err(format!(
            "removing the containers left the pod in state {state}"
        ));
    }
    Ok(())
}

/// A runc pod on the same CNI bridge sends `ping-from-runc` to the Hull
/// pod's IP, port 7778; the runc pod is removed again either way.
fn reach_from_a_runc_pod(env: &Env, cri: &mut Cri, ip: &str, name: &str) -> Result<(), String> {
    let other = format!("{name}-runc");
    let config = pod_config(&other, &env.path(&format!("pods/{other}")));
    let pod_id = cri.run_pod(config.clone(), "runc")?;
    let script =
        format!("until echo ping-from-runc | nc {ip} 7778; do sleep 0.2; done; sleep 1000");
    let started = cri
        .create_container(
            &pod_id,
            &config,
            container_config("client", NamespaceMode::Container, &["sh", "-c", &script]),
        )
        .and_then(|id| cri.start_container(&id));
    let sent = started.and_then(|()| {
        wait_for_log(
            &env.path(&format!("pods/{name}/server.log")),
            "stdout F got2 ping-from-runc",
        )
        .map(drop)
    });
    let removed = cri.stop_pod(&pod_id).and_then(|()| cri.remove_pod(&pod_id));
    sent.and(removed)
}

/// Volumes with mount propagation (Kubernetes HostToContainer and
/// Bidirectional): runc runs them, and a host mount made after the start
/// shows in its container; Hull cannot carry propagation across the VM, so
/// it refuses them when the container's task is created (CRI's
/// StartContainer) naming the mode, rather than run a container that
/// silently does not propagate.
pub(super) fn cri_propagating_volumes_are_refused_by_name(env: &Env) -> Result<(), String> {
    use k8s_cri::v1::MountPropagation;
    let source = env.path("propagation-src");
    std::fs::create_dir_all(source.join("later")).map_err(|e| e.to_string())?;
    // containerd wants a propagating volume's source on a shared mount (as
    // a Kubernetes node's / is; this machine's is private).
    let path = source.display().to_string();
    for args in [vec!["--bind", &path, &path], vec!["--make-rshared", &path]] {
        let ok = Command::new("mount")
            .args(&args)
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err(format!("mount {args:?}"));
        }
    }
    let mut cri = Cri::connect(&env.sock)?;
    let with_volume = |propagation: MountPropagation| {
        let mut c = container_config(
            "prop",
            NamespaceMode::Container,
            &["sh", "-c", "sleep 1000"],
        );
        c.mounts.push(k8s_cri::v1::Mount {
            container_path: "/vol".into(),
            host_path: source.display().to_string(),
            propagation: propagation as i32,
            ..Default::default()
        });
        c
    };
    let modes = [
        (
            MountPropagation::PropagationHostToContainer,
            "HostToContainer",
        ),
        (MountPropagation::PropagationBidirectional, "Bidirectional"),
    ];
    let result = (|| {
        // runc, in this same containerd: the HostToContainer case works.
        let name = env.unique("prop-runc");
        let pod = pod_config(&name, &env.path(&format!("pods/{name}")));
        let runc_pod = cri.run_pod(pod.clone(), "runc")?;
        let shown = (|| {
            let c = cri.create_container(&runc_pod, &pod, with_volume(modes[0].0))?;
            cri.start_container(&c)?;
            let later = source.join("later");
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&later)
                .status()
                .map_err(|e| e.to_string())?;
            if !mounted.success() {
                return Err("mount tmpfs on the volume".to_string());
            }
            std::fs::write(later.join("seen"), "yes").map_err(|e| e.to_string())?;
            let r = cri.exec_sync(&c, &["cat", "/vol/later/seen"]);
            let _ = Command::new("umount").arg(&later).status();
            let r = r?;
            if r.stdout != b"yes" {
                return Err(format!("runc did not propagate: {:?}", r.stdout));
            }
            Ok(())
        })();
        let _ = cri
            .stop_pod(&runc_pod)
            .and_then(|()| cri.remove_pod(&runc_pod));
        shown?;
        for (mode, name) in modes {
            let pod_name = env.unique("prop-hull");
            let pod = pod_config(&pod_name, &env.path(&format!("pods/{pod_name}")));
            let pod_id = cri.run_pod(pod.clone(), "hull")?;
            // CRI's CreateContainer only records the container; the shim
            // creates its task at StartContainer, and refuses it there.
            let started = cri
                .create_container(&pod_id, &pod, with_volume(mode))
                .and_then(|c| cri.start_container(&c));
            let _ = cri.stop_pod(&pod_id).and_then(|()| cri.remove_pod(&pod_id));
            match started {
                Ok(_) => return Err(format!("a {name} volume was accepted")),
                Err(e) if e.contains(name) && e.contains("/vol") => {
                    println!(
                        "    {name}: refused: {}",
                        e.lines().next().unwrap_or_default()
                    );
                }
                Err(e) => return Err(format!("{name}: refused without naming it: {e}")),
            }
        }
        Ok(())
    })();
    let _ = Command::new("umount").arg(source.join("later")).status();
    let _ = Command::new("umount").arg(&source).status();
    result?;
    env.check_no_leaks()
}

/// QEMU processes belonging to the pod's sandbox (QEMU is named after it).
/// The pod's QEMUs: named after it, or taken from hull-cache (named after
/// their pool VM) and serving a sandbox in the state directory.
fn pod_vms(env: &Env, pod_id: &str) -> usize {
    let state = env.state_dir.display().to_string();
    Env::vm_processes_under(&env.state_dir)
        .iter()
        .filter(|p| p.contains("qemu-system"))
        .filter(|p| p.contains(&format!("hull-{pod_id}")) || !p.contains(&state))
        .count()
}

/// Waits until the CRI log file has a line containing `want`.
fn wait_for_log(path: &std::path::Path, want: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(want) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(format!("{} never showed {want:?}:\n{text}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
