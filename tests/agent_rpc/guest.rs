//! Guest-wide RPCs: details, CPU/memory onlining, clock, random seed,
//! CopyFile (confined), metrics, sandbox hostname and DNS.

use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use protocols::agent;
use ttrpc::Code;

use crate::fixture::{assert_code, ctx, Agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_details_and_onlining() {
    let a = Agent::start().await;
    let req = agent::GuestDetailsRequest {
        mem_block_size: true,
        mem_hotplug_probe: true,
        ..Default::default()
    };
    let d = a
        .agent
        .get_guest_details(ctx(), &req)
        .await
        .expect("GetGuestDetails");
    let details = d.agent_details.as_ref().expect("agent_details");
    assert_eq!(details.version, env!("CARGO_PKG_VERSION"));
    assert!(!details.init_daemon, "an agent on a host is not PID 1");
    for driver in ["virtio-fs", "9p", "blk", "overlayfs", "bind", "ephemeral"] {
        assert!(
            details.storage_handlers.iter().any(|h| h == driver),
            "{driver} missing: {details:?}"
        );
    }
    assert!(details.supports_seccomp);
    let block = std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
        .map(|t| u64::from_str_radix(t.trim(), 16).expect("hex"))
        .unwrap_or(0);
    assert_eq!(d.mem_block_size_bytes, block);

    // Every CPU of this host is online: asking for all of them succeeds.
    let cpus = std::thread::available_parallelism().expect("cpus").get() as u32;
    let req = agent::OnlineCPUMemRequest {
        wait: true,
        nb_cpus: cpus,
        cpu_only: false,
        ..Default::default()
    };
    a.agent
        .online_cpu_mem(ctx(), &req)
        .await
        .expect("OnlineCPUMem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_and_random_seed() {
    let a = Agent::start().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time");
    let req = agent::SetGuestDateTimeRequest {
        Sec: now.as_secs() as i64,
        Usec: now.subsec_micros() as i64,
        ..Default::default()
    };
    a.agent
        .set_guest_date_time(ctx(), &req)
        .await
        .expect("SetGuestDateTime");
    let bad = agent::SetGuestDateTimeRequest {
        Usec: 2_000_000,
        ..req
    };
    assert_code(
        a.agent.set_guest_date_time(ctx(), &bad).await.map(drop),
        Code::INVALID_ARGUMENT,
        "Usec",
    );

    let seed = agent::ReseedRandomDevRequest {
        data: vec![7; 64],
        ..Default::default()
    };
    a.agent
        .reseed_random_dev(ctx(), &seed)
        .await
        .expect("ReseedRandomDev");
    let empty = agent::ReseedRandomDevRequest::default();
    assert_code(
        a.agent.reseed_random_dev(ctx(), &empty).await.map(drop),
        Code::INVALID_ARGUMENT,
        "data",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_file_in_chunks_and_confined() {
    let a = Agent::start().await;
    let shared = a.dir.path().join("shared");
    let target = shared.join("sandbox/etc/hosts");
    let chunk = |offset: i64, data: &[u8]| agent::CopyFileRequest {
        path: target.display().to_string(),
        file_size: 11,
        file_mode: 0o100644,
        dir_mode: 0o755,
        uid: 0,
        gid: 0,
        offset,
        data: data.to_vec(),
        ..Default::default()
    };
    a.agent
        .copy_file(ctx(), &chunk(0, b"127.0."))
        .await
        .expect("chunk 1");
    assert!(!target.exists(), "visible before complete");
    a.agent
        .copy_file(ctx(), &chunk(6, b"0.1 x"))
        .await
        .expect("chunk 2");
    assert_eq!(std::fs::read(&target).expect("read"), b"127.0.0.1 x");

    for path in [
        "/etc/hull-escape".to_string(),
        format!("{}/../escape", shared.display()),
    ] {
        let req = agent::CopyFileRequest {
            path: path.clone(),
            ..chunk(0, b"x")
        };
        assert_code(
            a.agent.copy_file(ctx(), &req).await.map(drop),
            Code::INVALID_ARGUMENT,
            "path",
        );
    }
    assert!(!std::path::Path::new("/etc/hull-escape").exists());
    std::os::unix::fs::symlink("/etc", shared.join("link")).expect("symlink");
    let req = agent::CopyFileRequest {
        path: shared.join("link/hull-escape").display().to_string(),
        ..chunk(0, b"x")
    };
    assert_code(
        a.agent.copy_file(ctx(), &req).await.map(drop),
        Code::INVALID_ARGUMENT,
        "symlink",
    );
    let overrun = agent::CopyFileRequest {
        data: vec![0; 20],
        ..chunk(0, b"")
    };
    assert_code(
        a.agent.copy_file(ctx(), &overrun).await.map(drop),
        Code::INVALID_ARGUMENT,
        "data",
    );
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let a = Agent::start().await;
    a.run("m", &["sleep", "100"]).await;
    let m = a
        .agent
        .get_metrics(ctx(), &Default::default())
        .await
        .expect("GetMetrics")
        .metrics;
    assert_eq!(metric(&m, "hull_agent_containers"), 1.0);
    let rss = metric(&m, "hull_agent_resident_memory_bytes");
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid())).expect("status");
    let vm_rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    // Same process, a moment apart.
    assert!(
        (rss / 1024.0 - vm_rss_kb).abs() < vm_rss_kb * 0.5,
        "{rss} vs {vm_rss_kb} kB"
    );
    assert!(metric(&m, "hull_agent_threads") >= 2.0);
    assert!(m.contains("# TYPE hull_guest_cpu_seconds_total counter"));
    assert!(m.contains("hull_guest_memory_bytes{item=\"MemTotal\"}"));
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_hostname_and_dns() {
    let a = Agent::start().await;
    let req = agent::CreateSandboxRequest {
        hostname: "hull-pod".into(),
        dns: vec!["nameserver 10.0.0.53".into(), "search hull.test".into()],
        sandbox_id: "sb".into(),
        ..Default::default()
    };
    a.agent
        .create_sandbox(ctx(), &req)
        .await
        .expect("CreateSandbox");
    let resolv =
        std::fs::read_to_string(a.dir.path().join("etc/resolv.conf")).expect("resolv.conf");
    assert_eq!(resolv, "nameserver 10.0.0.53\nsearch hull.test\n");
    // The agent's UTS namespace has the sandbox's name; a container without
    // its own UTS namespace sees it.
    let mut spec = a.spec("h", &["hostname"]);
    crate::fixture::share_agent_namespace(&mut spec, oci_spec::runtime::LinuxNamespaceType::Uts);
    spec.set_hostname(None);
    a.create("h", &spec).await.expect("create");
    a.start_container("h").await.expect("start");
    assert_eq!(
        a.read_all("h", "", protocols::stream::StreamKind::Stdout)
            .await,
        b"hull-pod\n"
    );
    assert_eq!(a.wait("h", "").await.expect("wait"), 0);
    let bad = agent::CreateSandboxRequest {
        dns: vec!["a\nb".into()],
        ..Default::default()
    };
    assert_code(
        a.agent.create_sandbox(ctx(), &bad).await.map(drop),
        Code::INVALID_ARGUMENT,
        "dns",
    );
}

/// `spec` joining the pod `pod`'s namespace of type `t` by the agent's
/// container-namespace path (how the shim rewrites a pod container's).
fn join_pod_namespace(spec: &mut Spec, pod: &str, t: LinuxNamespaceType, name: &str) {
    let mut linux = spec.linux().clone().expect("linux");
    let mut ns: Vec<_> = linux.namespaces().clone().unwrap_or_default();
    ns.retain(|n| n.typ() != t);
    ns.push(
        LinuxNamespaceBuilder::default()
            .typ(t)
            .path(format!("{}{pod}/ns/{name}", protocols::CONTAINER_NS_PREFIX))
            .build()
            .expect("namespace"),
    );
    linux.set_namespaces(Some(ns));
    spec.set_linux(Some(linux));
}

/// A sandbox without a sandbox container (containerd's sandbox API):
/// with `sandbox_pidns` the agent holds the pod's IPC, UTS (with the pod's
/// hostname) and PID namespaces, two containers that name the sandbox
/// share them, the VM's own hostname is untouched, and DestroySandbox
/// ends the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_namespaces_are_held_without_a_sandbox_container() {
    let a = Agent::start().await;
    let own_hostname = nix::unistd::gethostname().expect("hostname");
    let req = agent::CreateSandboxRequest {
        hostname: "hull-api-pod".into(),
        sandbox_id: "pod".into(),
        sandbox_pidns: true,
        ..Default::default()
    };
    a.agent
        .create_sandbox(ctx(), &req)
        .await
        .expect("CreateSandbox");
    let script = "hostname; echo $$; for n in ipc pid uts; do readlink /proc/self/ns/$n; done";
    let mut outputs = Vec::new();
    for id in ["one", "two"] {
        let mut spec = a.spec(id, &["sh", "-c", script]);
        spec.set_hostname(None);
        for (t, name) in [
            (LinuxNamespaceType::Ipc, "ipc"),
            (LinuxNamespaceType::Uts, "uts"),
            (LinuxNamespaceType::Pid, "pid"),
        ] {
            join_pod_namespace(&mut spec, "pod", t, name);
        }
        a.create(id, &spec).await.expect("create");
        a.start_container(id).await.expect("start");
        let out = a
            .read_all(id, "", protocols::stream::StreamKind::Stdout)
            .await;
        let code = a.wait(id, "").await.expect("wait");
        assert_eq!(code, 0, "{}\n{}", String::from_utf8_lossy(&out), a.log());
        outputs.push(String::from_utf8_lossy(&out).to_string());
    }
    for out in &outputs {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"hull-api-pod"), "{out}");
        let pid: i32 = lines[1].parse().expect("pid");
        assert!(pid > 1, "the pod's PID namespace has its own init: {out}");
    }
    let namespaces = |o: &str| o.lines().skip(2).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(namespaces(&outputs[0]), namespaces(&outputs[1]));
    let agent_ipc = std::fs::read_link(format!("/proc/{}/ns/ipc", a.pid())).expect("agent ipc");
    assert_ne!(namespaces(&outputs[0])[0], agent_ipc.display().to_string());
    assert_eq!(nix::unistd::gethostname().expect("hostname"), own_hostname);
    let holders = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.get(1..3) == Some(&[b"pod-namespaces".as_slice(), b"hull-api-pod"][..])
            })
            .count()
    };
    assert_eq!(holders(), 2, "the holder and its PID namespace's init");
    a.agent
        .destroy_sandbox(ctx(), &Default::default())
        .await
        .expect("DestroySandbox");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while holders() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(holders(), 0, "DestroySandbox left the pod's namespaces");
}
