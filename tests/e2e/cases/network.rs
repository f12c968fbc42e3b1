//! Pod networking: a network namespace with a veth, as CNI would leave it,
//! carried into the VM; traffic both ways with another namespace on this
//! machine (private addresses, nothing leaves the host).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

/// Two namespaces joined by a veth: `pod` (10.241.1.2/24, default route
/// via the peer) and `peer` (10.241.1.1/24). Deleted on drop.
struct VethPair {
    pod: String,
    peer: String,
}

impl VethPair {
    fn create(env: &Env) -> Result<VethPair, String> {
        let pair = VethPair {
            pod: env.unique("hull-pod"),
            peer: env.unique("hull-peer"),
        };
        let (pod, peer) = (pair.pod.as_str(), pair.peer.as_str());
        for args in [
            vec!["netns", "add", pod],
            vec!["netns", "add", peer],
            vec![
                "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "veth0", "netns",
                peer,
            ],
            vec!["-n", pod, "addr", "add", "10.241.1.2/24", "dev", "eth0"],
            vec!["-n", pod, "link", "set", "eth0", "up"],
            vec!["-n", pod, "route", "add", "default", "via", "10.241.1.1"],
            vec!["-n", peer, "addr", "add", "10.241.1.1/24", "dev", "veth0"],
            vec!["-n", peer, "link", "set", "veth0", "up"],
            vec!["-n", peer, "link", "set", "lo", "up"],
        ] {
            expect_success(&run(Command::new("ip").args(&args))?)
                .map_err(|e| format!("ip {args:?}: {e}"))?;
        }
        Ok(pair)
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
/// its address, reaches a server in the peer namespace, and a client there
/// reaches a server in the container. Afterwards no tap or tc rule is left
/// in the namespace.
pub(super) fn pod_network_reaches_the_vm_both_ways(env: &Env) -> Result<(), String> {
    let pair = VethPair::create(env)?;
    let received = env.path("peer-received");
    let mut server = pair
        .in_peer(&format!("busybox nc -l -p 7001 > {}", received.display()))
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
                "ip addr show eth0; \
                 until echo hello-peer | nc 10.241.1.1 7001; do sleep 0.2; done; \
                 nc -l -p 7002",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let reached = connect_from_peer(&pair, "echo hello-pod | busybox nc 10.241.1.2 7002");
    let o = finish(container, CMD_TIMEOUT)?;
    let _ = server.kill();
    let _ = server.wait();
    reached?;
    expect_success(&o)?;
    let out = stdout(&o);
    if !out.contains("inet 10.241.1.2/24") || !out.contains("hello-pod") {
        return Err(format!("the container saw: {out}; {}", stderr(&o)));
    }
    let got = std::fs::read_to_string(&received).unwrap_or_default();
    if got.trim() != "hello-peer" {
        return Err(format!("the peer's server received {got:?}"));
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
