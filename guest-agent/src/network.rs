//! Guest networking over rtnetlink: the pod's interfaces, routes and ARP
//! neighbours, as the host found them in the pod's network namespace
//! (UpdateInterface, UpdateRoutes, AddARPNeighbors, List*). Interfaces are
//! found by MAC address, which the host gave the VM's NIC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use protocols::netlink::{address_of, format_mac, interface, link_mac, link_name};
use protocols::types;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no guest interface has {what}")]
    NoSuchLink { what: String },
    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("netlink connection: {0}")]
    Connect(#[source] std::io::Error),
    #[error("the driver of a hot-plugged NIC: {0}")]
    Driver(String),
}

impl NetError {
    pub fn code(&self) -> ttrpc::Code {
        match self {
            NetError::Invalid { .. } => ttrpc::Code::INVALID_ARGUMENT,
            NetError::NoSuchLink { .. } => ttrpc::Code::NOT_FOUND,
            NetError::Netlink { .. } | NetError::Connect(_) | NetError::Driver(_) => {
                ttrpc::Code::INTERNAL
            }
        }
    }
}

/// How long UpdateInterface waits for a hot-plugged NIC to appear.
const HOTPLUG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn invalid(field: &'static str, reason: impl Into<String>) -> NetError {
    NetError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

/// A netlink connection in the agent's network namespace (the pod's).
pub struct Network {
    handle: Handle,
}

impl Network {
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(conn);
        Ok(Network { handle })
    }

    /// Brings up the guest's `lo`.
    pub async fn loopback_up(&self) -> Result<(), NetError> {
        let lo = self.link_named("lo").await?;
        self.set_link(
            LinkUnspec::new_with_index(lo.header.index).up().build(),
            "set lo up",
        )
        .await
    }

    /// Gives the interface with `want.hwAddr` its name, MTU and addresses,
    /// and brings it up. Addresses it has that `want` lacks are kept.
    pub async fn update_interface(
        &self,
        want: &types::Interface,
    ) -> Result<types::Interface, NetError> {
        let mac = parse_mac(&want.hwAddr)?;
        // Everything is validated before the link is touched: a bad request
        // must not leave a working interface down.
        let addresses = want
            .IPAddresses
            .iter()
            .map(parse_address)
            .collect::<Result<Vec<_>, _>>()?;
        let link = self.wait_for_link(&mac).await?;
        let index = link.header.index;
        let mut set = LinkUnspec::new_with_index(index).down();
        if !want.name.is_empty() && want.name != link_name(&link) {
            self.free_name(&want.name, index).await?;
            set = set.name(want.name.clone());
        }
        if want.mtu > 0 {
            let mtu = u32::try_from(want.mtu).map_err(|_| invalid("interface.mtu", "too large"))?;
            set = set.mtu(mtu);
        }
        self.set_link(set.build(), "configure interface").await?;
        for (ip, prefix) in addresses {
            match self.handle.address().add(index, ip, prefix).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(netlink(format!("add address {ip}/{prefix}"))(e)),
            }
        }
        self.set_link(
            LinkUnspec::new_with_index(index).up().build(),
            "set interface up",
        )
        .await?;
        self.describe(&self.link_by_index(index).await?).await
    }

    /// Adds the routes, each on its named device; link-scope routes first so
    /// gateways are reachable when the routes through them are added.
    pub async fn update_routes(
        &self,
        routes: &[types::Route],
    ) -> Result<Vec<types::Route>, NetError> {
        let mut ordered: Vec<&types::Route> = routes.iter().collect();
        ordered.sort_by_key(|r| !r.gateway.is_empty());
        for r in ordered {
            let msg = self.route_message(r).await?;
            match self.handle.route().add(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(netlink(format!("add route to {:?}", r.dest))(e)),
            }
        }
        self.list_routes().await
    }

    pub async fn add_arp_neighbors(
        &self,
        neighbors: &[types::ARPNeighbor],
    ) -> Result<(), NetError> {
        for n in neighbors {
            let to = n
                .toIPAddress
                .as_ref()
                .ok_or_else(|| invalid("neighbor.toIPAddress", "missing"))?;
            let ip: IpAddr = to.address.parse().map_err(|_| {
                invalid(
                    "neighbor.toIPAddress",
                    format!("{:?} is not an IP", to.address),
                )
            })?;
            let mac = parse_mac(&n.lladdr)?;
            let link = self.link_named(&n.device).await?;
            self.handle
                .neighbours()
                .add(link.header.index, ip)
                .link_layer_address(&mac)
                .state(rtnetlink::packet_route::neighbour::NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(netlink(format!("add neighbour {ip}")))?;
        }
        Ok(())
    }

    pub async fn list_interfaces(&self) -> Result<Vec<types::Interface>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list links"))?;
        let mut out = Vec::new();
        for l in &links {
            out.push(self.describe(l).await?);
        }
        Ok(out)
    }

    pub async fn list_routes(&self) -> Result<Vec<types::Route>, NetError> {
        let mut out = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let routes: Vec<RouteMessage> = self
                .handle
                .route()
                .get(query)
                .execute()
                .try_collect()
                .await
                .map_err(netlink("list routes"))?;
            for r in routes.iter().filter(|r| r.header.table == 254) {
                out.push(self.route_of(r).await);
            }
        }
        Ok(out)
    }

    async fn set_link(&self, msg: LinkMessage, op: &str) -> Result<(), NetError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(netlink(op))
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkMessage, NetError> {
        let mut s = self.handle.link().get().match_index(index).execute();
        s.try_next()
            .await
            .map_err(netlink("get link"))?
            .ok_or(NetError::NoSuchLink {
                what: format!("index {index}"),
            })
    }

    /// Renames the link other than `index` that holds `name`, if any, out of
    /// its way: NICs the kernel named in another order (hot-plugged ones
    /// are probed in no fixed order) would otherwise collide, eth0 wanted
    /// by the NIC the kernel called eth1.
    async fn free_name(&self, name: &str, index: u32) -> Result<(), NetError> {
        let Ok(holder) = self.link_named(name).await else {
            return Ok(());
        };
        let other = holder.header.index;
        if other == index {
            return Ok(());
        }
        let aside = LinkUnspec::new_with_index(other)
            .down()
            .name(format!("hull{other}"))
            .build();
        self.set_link(aside, "rename a link out of the way").await
    }

    async fn link_named(&self, name: &str) -> Result<LinkMessage, NetError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(l)) => Ok(l),
            _ => Err(NetError::NoSuchLink {
                what: format!("the name {name:?}"),
            }),
        }
    }

    /// The link with `mac`. A NIC hot-plugged just before (a VM taken
    /// from hull-cache) may not be there yet, and its driver may not be
    /// loaded (the VM booted without a NIC): the driver is loaded and the
    /// link waited for, up to [`HOTPLUG_WAIT`].
    async fn wait_for_link(&self, mac: &[u8]) -> Result<LinkMessage, NetError> {
        let deadline = std::time::Instant::now() + HOTPLUG_WAIT;
        let mut driver_loaded = false;
        loop {
            match self.link_with_mac(mac).await {
                Err(NetError::NoSuchLink { .. }) if std::time::Instant::now() < deadline => {
                    if !driver_loaded {
                        driver_loaded = true;
                        tokio::task::spawn_blocking(|| crate::modules::load_group("virtio_net"))
                            .await
                            .map_err(|e| NetError::Driver(e.to_string()))?
                            .map_err(|e| NetError::Driver(e.to_string()))?;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                found => return found,
            }
        }
    }

    async fn link_with_mac(&self, mac: &[u8]) -> Result<LinkMessage, NetError> {
        let mut s = self.handle.link().get().execute();
        while let Some(l) = s.try_next().await.map_err(netlink("list links"))? {
            if link_mac(&l).as_deref() == Some(mac) {
                return Ok(l);
            }
        }
        Err(NetError::NoSuchLink {
            what: format!("the MAC address {}", format_mac(mac)),
        })
    }

    async fn describe(&self, l: &LinkMessage) -> Result<types::Interface, NetError> {
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(l.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink("list addresses"))?;
        Ok(interface(l, addrs.iter().filter_map(address_of).collect()))
    }

    async fn route_message(&self, r: &types::Route) -> Result<RouteMessage, NetError> {
        let index = if r.device.is_empty() {
            None
        } else {
            Some(self.link_named(&r.device).await?.header.index)
        };
        let dest = parse_cidr(&r.dest)?;
        let gateway: Option<IpAddr> =
            if r.gateway.is_empty() {
                None
            } else {
                Some(r.gateway.parse().map_err(|_| {
                    invalid("route.gateway", format!("{:?} is not an IP", r.gateway))
                })?)
            };
        let scope = RouteScope::from(r.scope as u8);
        let msg = match (dest, gateway) {
            (Some((IpAddr::V6(_), _)), _) | (None, Some(IpAddr::V6(_))) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new().scope(scope);
                if let Some((IpAddr::V6(d), len)) = dest {
                    b = b.destination_prefix(d, len);
                }
                if let Some(IpAddr::V6(g)) = gateway {
                    b = b.gateway(g);
                }
                if let Some(i) = index {
                    b = b.output_interface(i);
                }
                b.build()
            }
            _ => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new().scope(scope);
                if let Some((IpAddr::V4(d), len)) = dest {
                    b = b.destination_prefix(d, len);
                }
                if let Some(IpAddr::V4(g)) = gateway {
                    b = b.gateway(g);
                }
                if let Some(i) = index {
                    b = b.output_interface(i);
                }
                b.build()
            }
        };
        Ok(msg)
    }

    async fn route_of(&self, r: &RouteMessage) -> types::Route {
        let mut out = types::Route {
            scope: u8::from(r.header.scope) as u32,
            ..Default::default()
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(d) => {
                    if let Some(ip) = route_ip(d) {
                        out.dest = format!("{ip}/{}", r.header.destination_prefix_length);
                    }
                }
                RouteAttribute::Gateway(g) => {
                    out.gateway = route_ip(g).map(|ip| ip.to_string()).unwrap_or_default();
                }
                RouteAttribute::PrefSource(s) => {
                    out.source = route_ip(s).map(|ip| ip.to_string()).unwrap_or_default();
                }
                RouteAttribute::Oif(i) => {
                    out.device = match self.link_by_index(*i).await {
                        Ok(l) => link_name(&l),
                        Err(_) => String::new(),
                    };
                }
                _ => {}
            }
        }
        out
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Whether an interface is up.
#[cfg(test)]
fn is_up(i: &types::Interface) -> bool {
    use rtnetlink::packet_route::link::LinkFlags;
    LinkFlags::from_bits_retain(i.raw_flags).contains(LinkFlags::Up)
}

fn parse_address(a: &types::IPAddress) -> Result<(IpAddr, u8), NetError> {
    let ip: IpAddr = a.address.parse().map_err(|_| {
        invalid(
            "interface.IPAddresses.address",
            format!("{:?} is not an IP", a.address),
        )
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = a.mask.parse().ok().filter(|p| *p <= max).ok_or_else(|| {
        invalid(
            "interface.IPAddresses.mask",
            format!("{:?} is not a prefix length", a.mask),
        )
    })?;
    Ok((ip, prefix))
}

/// `""` or `"default"`: no destination (the default route).
fn parse_cidr(dest: &str) -> Result<Option<(IpAddr, u8)>, NetError> {
    if dest.is_empty() || dest == "default" {
        return Ok(None);
    }
    let (ip, len) = dest.split_once('/').unwrap_or((dest, ""));
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| invalid("route.dest", format!("{dest:?} is not a CIDR")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| invalid("route.dest", format!("{dest:?} is not a CIDR")))?
    };
    Ok(Some((ip, len)))
}

fn parse_mac(s: &str) -> Result<Vec<u8>, NetError> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .filter(|b| b.len() == 6)
        .ok_or_else(|| invalid("hwAddr", format!("{s:?} is not a MAC address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_routes_and_macs_parse_or_name_the_field() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02").unwrap(),
            [2, 0x42, 0xac, 0x11, 0, 2]
        );
        assert!(parse_mac("02:42")
            .unwrap_err()
            .to_string()
            .contains("hwAddr"));
        assert_eq!(parse_cidr("").unwrap(), None);
        assert_eq!(
            parse_cidr("10.1.0.0/16").unwrap(),
            Some(("10.1.0.0".parse().unwrap(), 16))
        );
        assert!(parse_cidr("10.1.0.0/33")
            .unwrap_err()
            .to_string()
            .contains("route.dest"));
        let a = types::IPAddress {
            address: "10.1.2.3".into(),
            mask: "24".into(),
            ..Default::default()
        };
        assert_eq!(
            parse_address(&a).unwrap(),
            ("10.1.2.3".parse().unwrap(), 24)
        );
        assert_eq!(
            format_mac(&[2, 0x42, 0xac, 0x11, 0, 2]),
            "02:42:ac:11:00:02"
        );
    }

    /// Real netlink in a new network namespace (root, as CI runs): a veth
    /// link is found by MAC, addressed, brought up, and a route through it
    /// added. Runs on its own thread so the test process keeps its namespace.
    #[test]
    fn interface_and_routes_are_configured_in_a_real_namespace() {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let net = Network::connect().unwrap();
                net.loopback_up().await.unwrap();
                let mac = [2u8, 0, 0, 0, 0, 9];
                // veth: this host's kernel has no dummy module.
                let add = rtnetlink::LinkVeth::new("veth0", "veth1")
                    .address(mac.to_vec())
                    .build();
                net.handle.link().add(add).execute().await.unwrap();
                let want = types::Interface {
                    name: "eth7".into(),
                    hwAddr: format_mac(&mac),
                    mtu: 1400,
                    IPAddresses: vec![types::IPAddress {
                        address: "10.99.0.2".into(),
                        mask: "24".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                let got = net.update_interface(&want).await.unwrap();
                assert_eq!((got.name.as_str(), got.mtu), ("eth7", 1400));
                assert!(is_up(&got));
                assert!(got
                    .IPAddresses
                    .iter()
                    .any(|a| a.address == "10.99.0.2" && a.mask == "24"));
                let routes = net
                    .update_routes(&[types::Route {
                        gateway: "10.99.0.1".into(),
                        device: "eth7".into(),
                        ..Default::default()
                    }])
                    .await
                    .unwrap();
                assert!(
                    routes.iter().any(|r| r.dest.is_empty()
                        && r.gateway == "10.99.0.1"
                        && r.device == "eth7"),
                    "{routes:?}"
                );
                net.add_arp_neighbors(&[types::ARPNeighbor {
                    toIPAddress: Some(types::IPAddress {
                        address: "10.99.0.77".into(),
                        ..Default::default()
                    })
                    .into(),
                    device: "eth7".into(),
                    lladdr: "02:00:00:00:00:77".into(),
                    ..Default::default()
                }])
                .await
                .unwrap();
                // A child forked from this thread shares its namespace.
                let neigh = std::process::Command::new("ip")
                    .args(["neigh", "show", "dev", "eth7"])
                    .output()
                    .unwrap();
                let neigh = String::from_utf8_lossy(&neigh.stdout);
                assert!(
                    neigh.contains("10.99.0.77 lladdr 02:00:00:00:00:77 PERMANENT"),
                    "{neigh}"
                );
                let missing = types::Interface {
                    hwAddr: "02:00:00:00:00:0a".into(),
                    ..Default::default()
                };
                let err = net.update_interface(&missing).await.unwrap_err();
                assert!(matches!(err, NetError::NoSuchLink { .. }), "{err}");
            });
        })
        .join()
        .unwrap();
    }
}
