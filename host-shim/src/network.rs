//! Pod networking, in the "tcfilter" model Kata uses by default: for each
//! interface CNI put in the pod's network namespace, a tap device is made
//! in that namespace, tc mirrors every frame between the two (ingress
//! qdisc + mirred redirect, both ways), and the tap becomes the VM's
//! virtio-net NIC with the interface's MAC address. The guest then gets the
//! interface's addresses and the namespace's routes through the agent.
//!
//! The namespace is inspected and shaped with iproute2 (`ip`, `tc`) run
//! inside it; the tap is opened from a thread that entered it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use protocols::types;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod network namespace {path}: {source}")]
    Namespace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod network: `{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("pod network: tap {tap}: {op}: {source}")]
    Tap {
        tap: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pod network: unreadable `ip` output: {0}")]
    Parse(String),
}

/// One CNI interface and the tap that carries it into the VM.
#[derive(Debug)]
pub struct Endpoint {
    pub interface: types::Interface,
    pub tap: String,
    /// The open tap; QEMU gets a copy of it.
    pub tap_fd: OwnedFd,
}

/// The pod's network namespace on the host, wired to the VM.
#[derive(Debug)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub endpoints: Vec<Endpoint>,
    pub routes: Vec<types::Route>,
    /// Static (permanent) ARP entries CNI plugins may have set.
    pub neighbors: Vec<types::ARPNeighbor>,
    detached: AtomicBool,
}

/// However a pod network ends (torn down, or dropped on an error path while
/// being built or booted), its tc rules go.
impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.detach();
    }
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    mtu: u64,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct IpNeighbor {
    dst: String,
    dev: String,
    #[serde(default)]
    lladdr: Option<String>,
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    prefsrc: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

impl PodNetwork {
    /// Wires every non-loopback interface of `netns` to a new tap. Undone
    /// (tc rules removed, taps closed) if any step fails.
    pub fn attach(netns: &Path) -> Result<PodNetwork, NetworkError> {
        let links: Vec<IpLink> = parse(&run_in(netns, "ip", &["-j", "addr", "show"])?)?;
        let mut net = PodNetwork {
            netns: netns.to_path_buf(),
            endpoints: Vec::new(),
            routes: Vec::new(),
            neighbors: Vec::new(),
            detached: AtomicBool::new(false),
        };
        for link in links.iter().filter(|l| l.link_type == "ether") {
            let tap = format!("tap{}_hull", net.endpoints.len());
            let tap_fd = open_tap(netns, &tap)?;
            net.endpoints.push(Endpoint {
                interface: interface_of(link),
                tap: tap.clone(),
                tap_fd,
            });
            mirror(netns, &link.ifname, &tap, link.mtu)?;
        }
        for family in ["-4", "-6"] {
            let routes: Vec<IpRoute> =
                parse(&run_in(netns, "ip", &["-j", family, "route", "show"])?)?;
            net.routes.extend(routes.iter().filter_map(route_of));
        }
        let neighbors: Vec<IpNeighbor> = parse(&run_in(
            netns,
            "ip",
            &["-j", "neigh", "show", "nud", "permanent"],
        )?)?;
        net.neighbors = neighbors.iter().filter_map(neighbor_of).collect();
        Ok(net)
    }

    /// Removes the tc rules from the CNI interfaces (once); the taps go with
    /// their last open descriptor (QEMU's and this one).
    pub fn detach(&self) {
        if self.detached.swap(true, Ordering::SeqCst) {
            return;
        }
        for e in &self.endpoints {
            let _ = run_in(
                &self.netns,
                "tc",
                &["qdisc", "del", "dev", &e.interface.name, "ingress"],
            );
            let _ = run_in(
                &self.netns,
                "tc",
                &["qdisc", "del", "dev", &e.tap, "ingress"],
            );
        }
    }
}

/// Every frame arriving on `a` leaves through `b`, and the other way round.
fn mirror(netns: &Path, iface: &str, tap: &str, mtu: u64) -> Result<(), NetworkError> {
    let mtu = mtu.to_string();
    run_in(netns, "ip", &["link", "set", tap, "mtu", &mtu, "up"])?;
    for (from, to) in [(iface, tap), (tap, iface)] {
        run_in(netns, "tc", &["qdisc", "add", "dev", from, "ingress"])?;
        run_in(
            netns,
            "tc",
            &[
                "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        )?;
    }
    Ok(())
}

fn interface_of(link: &IpLink) -> types::Interface {
    let addresses = link
        .addr_info
        .iter()
        // Link-local IPv6 addresses are the guest kernel's own business.
        .filter(|a| a.scope != "link")
        .map(|a| types::IPAddress {
            family: if a.family == "inet6" {
                types::IPFamily::v6
            } else {
                types::IPFamily::v4
            }
            .into(),
            address: a.local.clone(),
            mask: a.prefixlen.to_string(),
            ..Default::default()
        })
        .collect();
    types::Interface {
        device: link.ifname.clone(),
        name: link.ifname.clone(),
        IPAddresses: addresses,
        mtu: link.mtu,
        hwAddr: link.address.clone(),
        ..Default::default()
    }
}

fn route_of(r: &IpRoute) -> Option<types::Route> {
    // fe80::/64 and multicast routes come with the guest's own addresses.
    if r.dst.starts_with("fe80:") || r.dst.starts_with("ff00:") || r.dst.starts_with("multicast") {
        return None;
    }
    Some(types::Route {
        dest: if r.dst == "default" {
            String::new()
        } else {
            r.dst.clone()
        },
        gateway: r.gateway.clone().unwrap_or_default(),
        device: r.dev.clone().unwrap_or_default(),
        source: r.prefsrc.clone().unwrap_or_default(),
        scope: match r.scope.as_deref() {
            Some("link") => 253,
            Some("host") => 254,
            _ => 0,
        },
        family: if r.dst.contains(':') || r.gateway.as_deref().unwrap_or("").contains(':') {
            types::IPFamily::v6
        } else {
            types::IPFamily::v4
        }
        .into(),
        ..Default::default()
    })
}

fn neighbor_of(n: &IpNeighbor) -> Option<types::ARPNeighbor> {
    Some(types::ARPNeighbor {
        toIPAddress: Some(types::IPAddress {
            family: if n.dst.contains(':') {
                types::IPFamily::v6
            } else {
                types::IPFamily::v4
            }
            .into(),
            address: n.dst.clone(),
            ..Default::default()
        })
        .into(),
        device: n.dev.clone(),
        lladdr: n.lladdr.clone()?,
        ..Default::default()
    })
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, NetworkError> {
    serde_json::from_str(json).map_err(|e| NetworkError::Parse(format!("{e}: {json}")))
}

/// Runs an iproute2 command inside the network namespace at `netns`.
fn run_in(netns: &Path, program: &str, args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .map_err(|source| NetworkError::Namespace {
            path: netns.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetworkError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates tap `name` inside `netns` and returns it open. A thread of its
/// own enters the namespace, so no other thread of the shim changes
/// namespace; the descriptor stays valid outside it.
fn open_tap(netns: &Path, name: &str) -> Result<OwnedFd, NetworkError> {
    let ns = File::open(netns).map_err(|source| NetworkError::Namespace {
        path: netns.display().to_string(),
        source,
    })?;
    let name = name.to_string();
    let tap_err = |op, source| NetworkError::Tap {
        tap: name.clone(),
        op,
        source,
    };
    let thread_name = name.clone();
    std::thread::spawn(move || -> Result<OwnedFd, (&'static str, std::io::Error)> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| ("enter the namespace", e.into()))?;
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| ("open /dev/net/tun", e))?;
        // SAFETY: ifreq is plain data for which all zero bytes is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req
            .ifr_name
            .iter_mut()
            .zip(thread_name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads `req`, which outlives the call, on an open
        // tun descriptor.
        let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &req) };
        if rc < 0 {
            return Err(("TUNSETIFF", std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from(tun))
    })
    .join()
    .map_err(|_| tap_err("open", std::io::Error::other("the opening thread panicked")))?
    .map_err(|(op, e)| tap_err(op, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_json_becomes_interfaces_and_routes() {
        let links: Vec<IpLink> = parse(
            r#"[{"ifname":"eth0","mtu":1450,"link_type":"ether","address":"0a:58:0a:f1:00:02",
                "addr_info":[{"family":"inet","local":"10.241.0.2","prefixlen":24,"scope":"global"},
                             {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#,
        )
        .unwrap();
        let i = interface_of(&links[0]);
        assert_eq!(
            (i.name.as_str(), i.mtu, i.hwAddr.as_str()),
            ("eth0", 1450, "0a:58:0a:f1:00:02")
        );
        assert_eq!(i.IPAddresses.len(), 1, "link-local left to the guest");
        assert_eq!(
            (
                i.IPAddresses[0].address.as_str(),
                i.IPAddresses[0].mask.as_str()
            ),
            ("10.241.0.2", "24")
        );
        let routes: Vec<IpRoute> = parse(
            r#"[{"dst":"default","gateway":"10.241.0.1","dev":"eth0"},
                {"dst":"10.241.0.0/24","dev":"eth0","scope":"link","prefsrc":"10.241.0.2"},
                {"dst":"fe80::/64","dev":"eth0"}]"#,
        )
        .unwrap();
        let r: Vec<_> = routes.iter().filter_map(route_of).collect();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].dest.as_str(), r[0].gateway.as_str()),
            ("", "10.241.0.1")
        );
        assert_eq!((r[1].dest.as_str(), r[1].scope), ("10.241.0.0/24", 253));
        let neighbors: Vec<IpNeighbor> = parse(
            r#"[{"dst":"10.241.0.1","dev":"eth0","lladdr":"02:00:00:00:00:01","state":["PERMANENT"]},
                {"dst":"10.241.0.9","dev":"eth0","state":["PERMANENT"]}]"#,
        )
        .unwrap();
        let n: Vec<_> = neighbors.iter().filter_map(neighbor_of).collect();
        assert_eq!(
            n.len(),
            1,
            "an entry without an address has nothing to carry"
        );
        assert_eq!(
            (n[0].device.as_str(), n[0].lladdr.as_str()),
            ("eth0", "02:00:00:00:00:01")
        );
    }

    /// A real namespace with a veth (root, as CI runs): attach makes the tap
    /// and both mirred rules; detach removes the rules, and the tap goes with
    /// its descriptor.
    #[test]
    fn attach_and_detach_shape_a_real_namespace() {
        let name = format!("hull-unit-{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        let _gone = scopeguard::guard((), |_| {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        });
        ip(&[
            "-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        ip(&["-n", &name, "addr", "add", "10.241.9.2/24", "dev", "eth0"]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        let netns = PathBuf::from("/var/run/netns").join(&name);
        let net = PodNetwork::attach(&netns).unwrap();
        assert_eq!(net.endpoints.len(), 2, "both veth ends are ether links");
        let eth0 = net
            .endpoints
            .iter()
            .find(|e| e.interface.name == "eth0")
            .unwrap();
        assert!(eth0
            .interface
            .IPAddresses
            .iter()
            .any(|a| a.address == "10.241.9.2"));
        assert!(net
            .routes
            .iter()
            .any(|r| r.dest == "10.241.9.0/24" && r.device == "eth0"));
        let filters = run_in(&netns, "tc", &["filter", "show", "dev", "eth0", "ingress"]).unwrap();
        assert!(
            filters.contains(&format!("Redirect to device {}", eth0.tap)),
            "{filters}"
        );
        drop(net);
        let qdiscs = run_in(&netns, "tc", &["qdisc", "show", "dev", "eth0"]).unwrap();
        assert!(!qdiscs.contains("ingress"), "{qdiscs}");
        let links = run_in(&netns, "ip", &["link", "show"]).unwrap();
        assert!(!links.contains("_hull"), "{links}");
    }
}
