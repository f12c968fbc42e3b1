//! Pod networking: a network namespace with a veth, as CNI would leave it,
//! carried into the VM; traffic both ways with another namespace on this
//! machine (private addresses, nothing leaves the host).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

/// Two namespaces joined by two veths: `pod` has eth0 (10.241.1.2/24,
/// default route via the peer) and eth1 (10.241.2.2/24), and a permanent
/// ARP entry; `peer` has 10.241.1.1 and 10.241.2.1. Deleted on drop.
pub(super) struct VethPair {
    pub(super) pod: String,
    peer: String,
}

impl VethPair {
    pub(super) fn create(env: &Env) -> Result<VethPair, String> {
        let pair = VethPair {
            pod: env.unique("hull-pod"),
            peer: env.unique("hull-peer"),
        };
        let (pod, peer) = (pair.pod.as_str(), pair.peer.as_str());
        let mut commands = vec![
            format!("netns add {pod}"),
            format!("netns add {peer}"),
            format!("-n {peer} link set lo up"),
        ];
        for (i, subnet) in ["10.241.1", "10.241.2"].iter().enumerate() {
            commands.extend([
                format!("-n {pod} link add eth{i} type veth peer name veth{i} netns {peer}"),
                format!("-n {pod} link set eth{i} up"),
                format!("-n {pod} addr add {subnet}.2/24 dev eth{i}"),
                format!("-n {peer} addr add {subnet}.1/24 dev veth{i}"),
                format!("-n {peer} link set veth{i} up"),
            ]);
        }
        commands.extend([
            format!("-n {pod} route add default via 10.241.1.1"),
            format!(
                "-n {pod} neigh add 10.241.1.77 lladdr 02:00:00:00:00:77 dev eth0 nud permanent"
            ),
        ]);
        for args in &commands {
            expect_success(&run(Command::new("ip").args(args.split_whitespace()))?)
                .map_err(|e| format!("ip {args}: {e}"))?;
        }
        Ok(pair)
    }

    /// The pod namespace's qdiscs and filters, as `tc` shows them.
    pub(super) fn tc_rules(&self) -> Result<String, String> {
        let o = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.pod,
            "sh",
            "-c",
            "tc qdisc show; tc filter show dev eth0 ingress",
        ]))?;
        Ok(stdout(&o))
    }

    fn in_peer(&self, script: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.peer, "busybox", "sh", "-c", script])
            .process_group(0);
        c
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.pod, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A container given the namespace (`ctr run --with-ns network:PATH`) has
/// both interfaces' addresses and the static ARP entry, reaches a server
/// in the peer namespace through each interface, and a client there
/// reaches a server in the container. Afterwards no tap or tc rule is left
/// in the namespace.
pub(super) fn pod_network_reaches_the_vm_both_ways(env: &Env) -> Result<(), String> {
    let pair = VethPair::create(env)?;
    let received = env.path("peer-received");
    let received2 = env.path("peer-received-2");
    let mut server = pair
        .in_peer(&format!(
            "busybox nc -l -p 7001 > {} & busybox nc -l -p 7003 > {}; wait",
            received.display(),
            received2.display()
        ))
        .spawn()
        .map_err(|e| e.to_string())?;
    let netns = format!("network:/var/run/netns/{}", pair.pod);
    let container = env
        .run_with(
            &env.unique("podnet"),
            &["--with-ns", &netns],
            &[
                "sh",
                "-c",
                "ip addr show; cat /proc/net/arp; \
                 until echo hello-peer | nc 10.241.1.1 7001; do sleep 0.2; done; \
                 until echo second-link | nc 10.241.2.1 7003; do sleep 0.2; done; \
                 nc -l -p 7002",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let reached = connect_from_peer(&pair, "echo hello-pod | busybox nc 10.241.1.2 7002");
    let o = finish(container, CMD_TIMEOUT);
    // The peer's servers go whatever happened (they hold the suite's stdout).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = server.wait();
    reached?;
    let o = o?;
    expect_success(&o)?;
    let out = stdout(&o);
    let want = [
        "inet 10.241.1.2/24",
        "inet 10.241.2.2/24",
        "02:00:00:00:00:77",
        "hello-pod",
    ];
    if want.iter().any(|w| !out.contains(w)) {
        return Err(format!("the container saw: {out}; {}", stderr(&o)));
    }
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    let got2 = std::fs::read_to_string(&received2).unwrap_or_default();
    if got.trim() != "hello-peer" || got2.trim() != "second-link" {
        return Err(format!("the peer's servers received {got:?} and {got2:?}"));
    }
    env.check_no_leaks()?;
    let left = run(Command::new("ip").args([
        "netns",
        "exec",
        &pair.pod,
        "sh",
        "-c",
        "ip link; tc qdisc show",
    ]))?;
    if stdout(&left).contains("_hull") || stdout(&left).contains("ingress") {
        return Err(format!("left in the pod namespace: {}", stdout(&left)));
    }
    Ok(())
}

/// Retries `script` in the peer namespace until it succeeds (the server in
/// the VM may not be listening yet).
fn connect_from_peer(pair: &VethPair, script: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let o = run(&mut pair.in_peer(script))?;
        if o.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the peer never reached the container: {}",
                stderr(&o)
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
