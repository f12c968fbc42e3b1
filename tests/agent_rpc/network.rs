//! Networking RPCs in the agent's own network namespace: a veth made there
//! is found by MAC and configured, routes and neighbours added and listed,
//! and a container sharing the namespace reports the interface's counters.

use std::process::Command;

use protocols::{agent, types};
use ttrpc::Code;

use crate::fixture::{assert_code, ctx, Agent};

const MAC: &str = "02:00:00:00:42:01";

fn in_agent_netns(a: &Agent, args: &[&str]) {
    let pid = a.pid().to_string();
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip"])
        .args(args)
        .output()
        .expect("nsenter ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interfaces_routes_neighbours_and_counters() {
    let a = Agent::start().await;
    in_agent_netns(
        &a,
        &[
            "link", "add", "veth0", "address", MAC, "type", "veth", "peer", "name", "veth1",
        ],
    );
    // The peer must be up for eth0 to have a carrier and count traffic.
    in_agent_netns(&a, &["link", "set", "veth1", "up"]);
    let iface = types::Interface {
        name: "eth0".into(),
        hwAddr: MAC.into(),
        mtu: 1400,
        IPAddresses: vec![types::IPAddress {
            address: "10.99.0.2".into(),
            mask: "24".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = agent::UpdateInterfaceRequest {
        interface: Some(iface.clone()).into(),
        ..Default::default()
    };
    let got = a
        .agent
        .update_interface(ctx(), &req)
        .await
        .expect("UpdateInterface");
    assert_eq!(
        (got.name.as_str(), got.mtu, got.hwAddr.as_str()),
        ("eth0", 1400, MAC)
    );

    let routes = agent::Routes {
        Routes: vec![types::Route {
            gateway: "10.99.0.1".into(),
            device: "eth0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let req = agent::UpdateRoutesRequest {
        routes: Some(routes).into(),
        ..Default::default()
    };
    a.agent
        .update_routes(ctx(), &req)
        .await
        .expect("UpdateRoutes");
    let listed = a
        .agent
        .list_routes(ctx(), &Default::default())
        .await
        .expect("ListRoutes");
    assert!(
        listed
            .Routes
            .iter()
            .any(|r| r.dest.is_empty() && r.gateway == "10.99.0.1" && r.device == "eth0"),
        "{listed:?}"
    );
    let ifaces = a
        .agent
        .list_interfaces(ctx(), &Default::default())
        .await
        .expect("ListInterfaces");
    let eth0 = ifaces
        .Interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0 listed");
    assert!(
        eth0.IPAddresses
            .iter()
            .any(|ip| ip.address == "10.99.0.2" && ip.mask == "24"),
        "{eth0:?}"
    );

    let neigh = types::ARPNeighbor {
        toIPAddress: Some(types::IPAddress {
            address: "10.99.0.77".into(),
            ..Default::default()
        })
        .into(),
        device: "eth0".into(),
        lladdr: "02:00:00:00:00:77".into(),
        ..Default::default()
    };
    let req = agent::AddARPNeighborsRequest {
        neighbors: Some(agent::ARPNeighbors {
            ARPNeighbors: vec![neigh],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    a.agent
        .add_arp_neighbors(ctx(), &req)
        .await
        .expect("AddARPNeighbors");

    // Errors: an unknown MAC, a malformed address.
    let ghost = types::Interface {
        hwAddr: "02:00:00:00:42:99".into(),
        ..iface.clone()
    };
    let req = agent::UpdateInterfaceRequest {
        interface: Some(ghost).into(),
        ..Default::default()
    };
    assert_code(
        a.agent.update_interface(ctx(), &req).await.map(drop),
        Code::NOT_FOUND,
        "02:00:00:00:42:99",
    );
    let bad = types::Interface {
        IPAddresses: vec![types::IPAddress {
            address: "10.99.0.300".into(),
            mask: "24".into(),
            ..Default::default()
        }],
        ..iface
    };
    let req = agent::UpdateInterfaceRequest {
        interface: Some(bad).into(),
        ..Default::default()
    };
    assert_code(
        a.agent.update_interface(ctx(), &req).await.map(drop),
        Code::INVALID_ARGUMENT,
        "10.99.0.300",
    );

    // A container in the agent's network namespace: its traffic (ARP for
    // an absent host) shows in StatsContainer's network counters.
    let mut spec = a.spec("n", &["sh", "-c", "ping -c 2 -W 1 10.99.0.9; sleep 100"]);
    crate::fixture::share_agent_namespace(
        &mut spec,
        oci_spec::runtime::LinuxNamespaceType::Network,
    );
    a.create("n", &spec).await.expect("create");
    a.start_container("n").await.expect("start");
    let stats_req = agent::StatsContainerRequest {
        container_id: "n".into(),
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = a
            .agent
            .stats_container(ctx(), &stats_req)
            .await
            .expect("stats");
        let eth0 = stats.network_stats.iter().find(|s| s.name == "eth0");
        if eth0.is_some_and(|s| s.tx_packets > 0) {
            assert!(stats.network_stats.iter().all(|s| s.name != "lo"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no eth0 traffic counted: {stats:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
