//! Kernel rtnetlink messages as the agent API's types: one reading of a
//! link and its addresses for both sides (the shim reads the pod's
//! namespace on the host, the agent reads the guest).

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use crate::types;

pub fn link_name(l: &LinkMessage) -> String {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub fn link_mac(l: &LinkMessage) -> Option<Vec<u8>> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.clone()),
        _ => None,
    })
}

pub fn link_mtu(l: &LinkMessage) -> u32 {
    l.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(0)
}

pub fn format_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn ip_address(ip: IpAddr, prefix: u8) -> types::IPAddress {
    types::IPAddress {
        family: if ip.is_ipv4() {
            types::IPFamily::v4
        } else {
            types::IPFamily::v6
        }
        .into(),
        address: ip.to_string(),
        mask: prefix.to_string(),
        ..Default::default()
    }
}

/// The interface's own address: IFA_LOCAL where the kernel gives one (a
/// point-to-point IPv4 link's IFA_ADDRESS is its peer), else IFA_ADDRESS.
pub fn address_of(a: &AddressMessage) -> Option<types::IPAddress> {
    let find = |local: bool| {
        a.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(ip) if local => Some(*ip),
            AddressAttribute::Address(ip) if !local => Some(*ip),
            _ => None,
        })
    };
    let ip = find(true).or_else(|| find(false))?;
    Some(ip_address(ip, a.header.prefix_len))
}

/// A link and its addresses as an agent API interface.
pub fn interface(l: &LinkMessage, addresses: Vec<types::IPAddress>) -> types::Interface {
    types::Interface {
        device: link_name(l),
        name: link_name(l),
        IPAddresses: addresses,
        mtu: u64::from(link_mtu(l)),
        hwAddr: link_mac(l).map(|m| format_mac(&m)).unwrap_or_default(),
        raw_flags: l.header.flags.bits(),
        ..Default::default()
    }
}
