//! Pod networking, in the "tcfilter" model Kata uses by default: for each
//! interface CNI put in the pod's network namespace, a tap device is made
//! in that namespace, tc mirrors every frame between the two (ingress
//! qdisc + mirred redirect, both ways), and the tap becomes the VM's
//! virtio-net NIC with the interface's MAC address. The guest then gets the
//! interface's addresses and the namespace's routes through the agent.
//!
//! All of it is done over rtnetlink from a thread of its own that entered
//! the namespace (no other thread of the shim changes namespace); the taps
//! it opens stay valid outside it.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::TryStreamExt;
use protocols::netlink::{address_of, format_mac, interface, link_name};
use protocols::types;
use rtnetlink::packet_route::link::{LinkLayerType, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("pod network namespace {path}: {source}")]
    Namespace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod network: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("pod network: tap {tap}: {op}: {source}")]
    Tap {
        tap: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
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
/// being booted), its tc rules go.
impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.detach();
    }
}

fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let op = op.into();
    move |source| NetworkError::Netlink { op, source }
}

/// How the names of Hull's taps end.
const TAP_SUFFIX: &str = "_hull";

impl PodNetwork {
    /// Wires every non-loopback interface of `netns` to a new tap. Undone
    /// (tc rules removed, taps closed) if any step fails.
    pub fn attach(netns: &Path) -> Result<PodNetwork, NetworkError> {
        let net = in_namespace(netns, |h| async move {
            // Listed once, before any tap exists: the taps carry no routes
            // or neighbours, so the names map needs only these.
            let links = list_links(&h).await?;
            let names: HashMap<u32, String> = links
                .iter()
                .map(|l| (l.header.index, link_name(l)))
                .collect();
            let mut endpoints = Vec::new();
            for link in &ether_interfaces(&h, &links).await? {
                let tap = format!("tap{}{TAP_SUFFIX}", endpoints.len());
                match wire(&h, link, &tap).await {
                    Ok(endpoint) => endpoints.push(endpoint),
                    Err(e) => {
                        unwire(&h, &endpoints).await;
                        return Err(e);
                    }
                }
            }
            let routes = routes(&h, &names).await?;
            let neighbors = neighbors(&h, &names).await?;
            Ok((endpoints, routes, neighbors))
        })?;
        Ok(PodNetwork {
            netns: netns.to_path_buf(),
            endpoints: net.0,
            routes: net.1,
            neighbors: net.2,
            detached: AtomicBool::new(false),
        })
    }

    /// Removes the tc rules from the CNI interfaces (once); the taps go with
    /// their last open descriptor (QEMU's and this one).
    pub fn detach(&self) {
        if self.detached.swap(true, Ordering::SeqCst) {
            return;
        }
        let wired: Vec<(String, String)> = self
            .endpoints
            .iter()
            .map(|e| (e.interface.name.clone(), e.tap.clone()))
            .collect();
        let _ = in_namespace(&self.netns, |h| async move {
            for (iface, tap) in wired {
                for name in [iface, tap] {
                    if let Ok(index) = link_index(&h, &name).await {
                        let _ = del_ingress(&h, index).await;
                    }
                }
            }
            Ok(())
        });
    }
}

/// Removes what a shim that died left in the pod namespace `netns`: the
/// ingress rules on its interfaces (the shim wires every one) and any tap
/// of Hull's still there.
pub fn unwire_namespace(netns: &Path) -> Result<(), NetworkError> {
    in_namespace(netns, |h| async move {
        let links = list_links(&h).await?;
        for link in &links {
            if link_name(link).ends_with(TAP_SUFFIX) {
                let _ = h.link().del(link.header.index).execute().await;
            } else if link.header.link_layer_type == LinkLayerType::Ether {
                let _ = del_ingress(&h, link.header.index).await;
            }
        }
        Ok(())
    })
}

/// Every link of the handle's namespace.
async fn list_links(h: &Handle) -> Result<Vec<LinkMessage>, NetworkError> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list links"))
}

/// Runs `work` with an rtnetlink handle inside the network namespace at
/// `netns`, on a thread of its own (with its own small runtime, so it can
/// be called from a blocking task or from `Drop` alike).
fn in_namespace<T, F, Fut>(netns: &Path, work: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let path = netns.display().to_string();
    let ns = File::open(netns).map_err(namespace_error(&path))?;
    let thread_path = path.clone();
    std::thread::spawn(move || -> Result<T, NetworkError> {
        let ns_err = namespace_error(&thread_path);
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| ns_err(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(&ns_err)?;
        runtime.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(&ns_err)?;
            tokio::spawn(conn);
            work(handle).await
        })
    })
    .join()
    .map_err(|_| namespace_error(&path)(std::io::Error::other("its thread panicked")))?
}

fn namespace_error(path: &str) -> impl Fn(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Namespace {
        path: path.to_string(),
        source,
    }
}

/// The Ethernet links among `links` (the CNI interfaces), with their
/// addresses.
async fn ether_interfaces(
    h: &Handle,
    links: &[LinkMessage],
) -> Result<Vec<types::Interface>, NetworkError> {
    let addrs: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list addresses"))?;
    Ok(links
        .iter()
        .filter(|l| l.header.link_layer_type == LinkLayerType::Ether)
        .map(|l| {
            let own = addrs
                .iter()
                .filter(|a| a.header.index == l.header.index)
                // Link-local IPv6 addresses are the guest kernel's own business.
                .filter(|a| a.header.scope != rtnetlink::packet_route::address::AddressScope::Link)
                .filter_map(address_of)
                .collect();
            interface(l, own)
        })
        .collect())
}

/// Makes `tap`, brings it up with `iface`'s MTU and mirrors every frame
/// between the two, both ways.
async fn wire(h: &Handle, iface: &types::Interface, tap: &str) -> Result<Endpoint, NetworkError> {
    let tap_fd = open_tap(tap)?;
    let endpoint = Endpoint {
        interface: iface.clone(),
        tap: tap.to_string(),
        tap_fd,
    };
    let iface_index = link_index(h, &iface.name).await?;
    let tap_index = link_index(h, tap).await?;
    let mtu = u32::try_from(iface.mtu).unwrap_or(1500);
    h.link()
        .set(LinkUnspec::new_with_index(tap_index).mtu(mtu).up().build())
        .execute()
        .await
        .map_err(netlink(format!("set {tap} up")))?;
    for (from, to) in [(iface_index, tap_index), (tap_index, iface_index)] {
        let mirrored = mirror(h, from, to).await;
        if mirrored.is_err() {
            unwire(h, std::slice::from_ref(&endpoint)).await;
        }
        mirrored?;
    }
    Ok(endpoint)
}

/// `tc qdisc add dev FROM ingress` and a u32 match-all filter redirecting
/// to TO's egress.
async fn mirror(h: &Handle, from: u32, to: u32) -> Result<(), NetworkError> {
    let from_index = i32::try_from(from).unwrap_or(i32::MAX);
    h.qdisc()
        .add(from_index)
        .ingress()
        .execute()
        .await
        .map_err(netlink(format!("ingress qdisc on link {from}")))?;
    h.traffic_filter(from_index)
        .add()
        // The ingress qdisc's handle, `parent ffff:`.
        .parent(0xffff_0000)
        .protocol(u16::to_be(libc::ETH_P_ALL as u16))
        .redirect(to)
        .map_err(netlink("build the redirect"))?
        .execute()
        .await
        .map_err(netlink(format!("redirect filter from link {from} to {to}")))
}

/// Removes the ingress qdiscs (and so their filters) of endpoints.
async fn unwire(h: &Handle, endpoints: &[Endpoint]) {
    for e in endpoints {
        for name in [&e.interface.name, &e.tap] {
            if let Ok(index) = link_index(h, name).await {
                let _ = del_ingress(h, index).await;
            }
        }
    }
}

async fn del_ingress(h: &Handle, index: u32) -> Result<(), NetworkError> {
    let mut del = h.qdisc().del(i32::try_from(index).unwrap_or(i32::MAX));
    del.message_mut().header.parent = rtnetlink::packet_route::tc::TcHandle::INGRESS;
    del.execute()
        .await
        .map_err(netlink(format!("remove the ingress qdisc of link {index}")))
}

async fn link_index(h: &Handle, name: &str) -> Result<u32, NetworkError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(l.header.index),
        Ok(None) => Err(NetworkError::Netlink {
            op: format!("find link {name}"),
            source: rtnetlink::Error::RequestFailed,
        }),
        Err(e) => Err(netlink(format!("find link {name}"))(e)),
    }
}

/// The main table's unicast routes, both families, as `ip route` lists them.
async fn routes(
    h: &Handle,
    names: &HashMap<u32, String>,
) -> Result<Vec<types::Route>, NetworkError> {
    let mut all: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list IPv4 routes"))?;
    let v6: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list IPv6 routes"))?;
    all.extend(v6);
    Ok(all.iter().filter_map(|r| route_of(r, names)).collect())
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn route_of(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<types::Route> {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
        return None;
    }
    let (mut dest, mut gateway, mut device, mut source) = (None, None, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(i) => device = names.get(i).cloned(),
            RouteAttribute::PrefSource(s) => source = route_ip(s),
            _ => {}
        }
    }
    let v6 = r.header.address_family == AddressFamily::Inet6;
    let dest = dest.map(|d| format!("{d}/{}", r.header.destination_prefix_length));
    // fe80::/64 comes with the guest's own link-local addresses.
    if dest.as_deref().is_some_and(|d| d.starts_with("fe80:")) {
        return None;
    }
    Some(types::Route {
        dest: dest.unwrap_or_default(),
        gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: device.unwrap_or_default(),
        source: source.map(|s| s.to_string()).unwrap_or_default(),
        scope: match r.header.scope {
            RouteScope::Link => 253,
            RouteScope::Host => 254,
            _ => 0,
        },
        family: if v6 {
            types::IPFamily::v6
        } else {
            types::IPFamily::v4
        }
        .into(),
        ..Default::default()
    })
}

/// Static (permanent) neighbour entries.
async fn neighbors(
    h: &Handle,
    names: &HashMap<u32, String>,
) -> Result<Vec<types::ARPNeighbor>, NetworkError> {
    let all: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("list neighbours"))?;
    Ok(all
        .iter()
        .filter(|n| n.header.state == NeighbourState::Permanent)
        .filter_map(|n| neighbor_of(n, names))
        .collect())
}

fn neighbor_of(n: &NeighbourMessage, names: &HashMap<u32, String>) -> Option<types::ARPNeighbor> {
    let (mut ip, mut lladdr) = (None, None);
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(m) => lladdr = Some(format_mac(m)),
            _ => {}
        }
    }
    let ip = ip?;
    Some(types::ARPNeighbor {
        toIPAddress: Some(types::IPAddress {
            mask: String::new(),
            ..protocols::netlink::ip_address(ip, 0)
        })
        .into(),
        device: names.get(&n.header.ifindex).cloned().unwrap_or_default(),
        // An entry without a link-layer address has nothing to carry.
        lladdr: lladdr?,
        ..Default::default()
    })
}

/// Creates tap `name` in the calling thread's network namespace and
/// returns it open.
fn open_tap(name: &str) -> Result<OwnedFd, NetworkError> {
    let tap_err = |op, source| NetworkError::Tap {
        tap: name.to_string(),
        op,
        source,
    };
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| tap_err("open /dev/net/tun", e))?;
    // SAFETY: ifreq is plain data for which all zero bytes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads `req`, which outlives the call, on an open
    // tun descriptor.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &req) };
    if rc < 0 {
        return Err(tap_err("TUNSETIFF", std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(tun))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// iproute2, as an independent reading of what netlink did.
    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tc(ns: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "tc"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A real namespace with a veth (root, as CI runs): attach reads its
    /// interfaces, routes and static neighbours, makes the taps and both
    /// mirred rules; detach removes the rules, and the taps go with their
    /// descriptors.
    #[test]
    fn attach_and_detach_shape_a_real_namespace() {
        let name = format!("hull-unit-{}", std::process::id());
        ip(&["netns", "add", &name]);
        let _gone = scopeguard::guard((), |_| {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        });
        let n = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend(args);
            ip(&all)
        };
        n(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        n(&[
            "link",
            "set",
            "eth0",
            "mtu",
            "1450",
            "address",
            "0a:58:0a:f1:00:02",
        ]);
        n(&["addr", "add", "10.241.9.2/24", "dev", "eth0"]);
        n(&["link", "set", "eth0", "up"]);
        n(&["link", "set", "peer0", "up"]);
        n(&["route", "add", "default", "via", "10.241.9.1"]);
        n(&[
            "neigh",
            "add",
            "10.241.9.1",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        let netns = PathBuf::from("/var/run/netns").join(&name);
        let net = PodNetwork::attach(&netns).unwrap();
        assert_eq!(net.endpoints.len(), 2, "both veth ends are ether links");
        let eth0 = net
            .endpoints
            .iter()
            .find(|e| e.interface.name == "eth0")
            .unwrap();
        let i = &eth0.interface;
        assert_eq!((i.mtu, i.hwAddr.as_str()), (1450, "0a:58:0a:f1:00:02"));
        let addresses: Vec<_> = i
            .IPAddresses
            .iter()
            .map(|a| format!("{}/{}", a.address, a.mask))
            .collect();
        assert_eq!(addresses, ["10.241.9.2/24"], "link-local left to the guest");
        let routes: Vec<_> = net
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{} via {:?} dev {} scope {}",
                    r.dest, r.gateway, r.device, r.scope
                )
            })
            .collect();
        assert!(
            routes.contains(&"10.241.9.0/24 via \"\" dev eth0 scope 253".to_string()),
            "{routes:?}"
        );
        assert!(
            routes.contains(&" via \"10.241.9.1\" dev eth0 scope 0".to_string()),
            "{routes:?}"
        );
        assert!(!routes.iter().any(|r| r.starts_with("fe80:")), "{routes:?}");
        assert_eq!(net.neighbors.len(), 1, "{:?}", net.neighbors);
        assert_eq!(
            (
                net.neighbors[0].device.as_str(),
                net.neighbors[0].lladdr.as_str()
            ),
            ("eth0", "02:00:00:00:00:01")
        );
        let links = n(&["link", "show", &eth0.tap]);
        assert!(
            links.contains("mtu 1450") && links.contains(",UP"),
            "{links}"
        );
        for dev in ["eth0", eth0.tap.as_str()] {
            let filters = tc(&name, &["filter", "show", "dev", dev, "ingress"]);
            let to = if dev == "eth0" {
                eth0.tap.as_str()
            } else {
                "eth0"
            };
            assert!(filters.contains("protocol all"), "{dev}: {filters}");
            assert!(
                filters.contains(&format!("Redirect to device {to}")),
                "{dev}: {filters}"
            );
        }
        drop(net);
        let qdiscs = tc(&name, &["qdisc", "show", "dev", "eth0"]);
        assert!(!qdiscs.contains("ingress"), "{qdiscs}");
        let links = n(&["link", "show"]);
        assert!(!links.contains("_hull"), "{links}");
    }
}
