//! Hosts without EPMD: a host's fixed distribution port is probed directly, and the name
//! its node's challenge gives is what the host lists. One connection per scan: the plan's
//! target of that name reads the listing probe's answer.

mod common;

use std::net::SocketAddr;

use common::{closed_port, names, ok_and_challenge, outcome, Recorder, ServingPeer};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::Outcome;
use tinycluster_nif::scan::{self, HostSpec, ScanSpec};

const PROBE_NAME: &str = "tinycluster_probe_1@127.0.0.1";

/// A host of address `addr`'s IP whose nodes listen on `addr`'s port, without EPMD.
fn direct_host(label: &str, addr: SocketAddr) -> HostSpec {
    HostSpec {
        label: label.into(),
        address: addr.ip().to_string(),
        // No EPMD is asked: a port where nothing listens shows it.
        epmd_port: 1,
        node_host: None,
        dist_port: Some(addr.port()),
        dist_port_last: None,
    }
}

fn spec(hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        local_name: "me@127.0.0.1".into(),
        ..common::spec(hosts, PROBE_NAME)
    }
}

/// `spec` under a probe name of its own: parked probes are process-wide, by probe name and
/// address, and the ranges' tests bind ports another test of this file may have used.
fn spec_as(probe_alive: &str, hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        probe_name: format!("{probe_alive}@127.0.0.1"),
        ..spec(hosts)
    }
}

#[tokio::test]
async fn a_node_on_a_fixed_port_is_listed_by_its_challenge_with_one_connection() {
    let peer = ServingPeer::start_on("127.0.0.1", ok_and_challenge("app@127.0.0.1", false)).await;
    let recorder = Recorder::new();
    let report = common::scan_all(spec(vec![direct_host("h", peer.addr)]), &recorder).await;

    let (_, _, listing) = recorder.listed("h");
    assert_eq!(
        names(&listing),
        vec![(
            "app".to_owned(),
            peer.addr.port(),
            "app@127.0.0.1".to_owned()
        )]
    );
    assert_eq!(report.candidates.len(), 1);
    assert!(matches!(
        outcome(&report.candidates[0]),
        Outcome::Live { name, .. } if name == "app@127.0.0.1"
    ));
    assert_eq!(
        peer.accepted(),
        1,
        "the target read the listing probe's answer"
    );
    // The probe stayed a probe: `send_name`, then closed before the challenge reply.
    let seen = peer.served(1).await;
    assert_eq!(seen[0].after.as_deref(), Some(&[][..]));
}

#[tokio::test]
async fn a_closed_port_is_a_host_with_no_node_yet_not_an_error() {
    let closed = closed_port().await;
    let recorder = Recorder::new();
    let report = common::scan_all(spec(vec![direct_host("h", closed)]), &recorder).await;
    let (_, _, listing) = recorder.listed("h");
    assert!(matches!(&listing.result, Ok((names, _)) if names.is_empty()));
    assert!(report.candidates.is_empty());
}

#[tokio::test]
async fn a_name_whose_host_part_leads_elsewhere_is_claimed_not_live() {
    // It answers on 127.0.0.1 as a node of 127.0.0.2: connecting that name would reach
    // another address, or nothing.
    let peer = ServingPeer::start_on("127.0.0.1", ok_and_challenge("app@127.0.0.2", false)).await;
    let recorder = Recorder::new();
    let report = common::scan_all(spec(vec![direct_host("h", peer.addr)]), &recorder).await;
    assert_eq!(report.candidates.len(), 1);
    assert_eq!(
        outcome(&report.candidates[0]),
        &Outcome::NameMismatch {
            claimed: "app@127.0.0.2".into()
        }
    );
    assert_eq!(peer.accepted(), 1);
}

#[tokio::test]
async fn a_silent_port_fails_the_host_within_the_epmd_timeout() {
    let connections = common::Connections::default();
    let silent = common::silent_listener_on("127.0.0.1", connections).await;
    let spec = ScanSpec {
        epmd_timeout: std::time::Duration::from_millis(300),
        ..spec(vec![direct_host("h", silent)])
    };
    let report = scan::run(
        spec,
        scan::Local::default(),
        common::probe_all(),
        Recorder::new().sink(),
    )
    .await;
    assert!(matches!(report.hosts[0].result, Err(Error::Timeout)));
}

/// A host whose nodes listen on the ports of `block`, each on a free one (`Tinycluster.EPMD`).
fn range_host(label: &str, block: &[std::net::TcpListener], node_host: Option<&str>) -> HostSpec {
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    HostSpec {
        node_host: node_host.map(Into::into),
        dist_port_last: Some(port(&block[block.len() - 1])),
        ..direct_host(label, block[0].local_addr().unwrap())
    }
}

#[tokio::test]
async fn every_port_of_a_range_is_probed_and_each_node_is_one_name() {
    use tokio::net::TcpListener;
    // Ports: a node, nothing, a silent listener, the local node itself, another node.
    let mut block = common::port_block(5);
    let ports: Vec<u16> = block
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let host = range_host("h", &block, None);
    let serve = |l: std::net::TcpListener| TcpListener::from_std(l).unwrap();
    let last = block.pop().unwrap();
    let me = block.pop().unwrap();
    let silent = block.pop().unwrap();
    drop(block.pop());
    let first = block.pop().unwrap();
    let a = ServingPeer::serve(serve(first), ok_and_challenge("a@127.0.0.1", false));
    let b = ServingPeer::serve(serve(last), ok_and_challenge("b@127.0.0.1", false));
    let me = ServingPeer::serve(serve(me), ok_and_challenge("me@127.0.0.1", false));
    common::silent_listener(serve(silent), common::Connections::default());
    let spec = ScanSpec {
        epmd_timeout: std::time::Duration::from_millis(1_000),
        ..spec_as("range_probe_1", vec![host])
    };

    let recorder = Recorder::new();
    let report = common::scan_all(spec, &recorder).await;

    // The silent port fails alone: the host lists its nodes, in the order of their ports.
    let (_, _, listing) = recorder.listed("h");
    assert_eq!(
        names(&listing),
        vec![
            ("a".to_owned(), ports[0], "a@127.0.0.1".to_owned()),
            ("me".to_owned(), ports[3], "me@127.0.0.1".to_owned()),
            ("b".to_owned(), ports[4], "b@127.0.0.1".to_owned()),
        ]
    );
    assert_eq!(listing.dist_port_last, Some(ports[4]));
    // The local node itself is never a candidate; each node cost one connection.
    let mut live: Vec<_> = report
        .candidates
        .iter()
        .map(|c| (c.name.clone(), c.port, outcome(c).clone()))
        .filter(|(_, _, o)| matches!(o, Outcome::Live { .. }))
        .map(|(name, port, _)| (name, port))
        .collect();
    live.sort();
    assert_eq!(
        live,
        vec![
            ("a@127.0.0.1".to_owned(), ports[0]),
            ("b@127.0.0.1".to_owned(), ports[4])
        ]
    );
    assert_eq!(report.candidates.len(), 2);
    assert_eq!((a.accepted(), b.accepted(), me.accepted()), (1, 1, 1));
}

#[tokio::test]
async fn a_range_where_every_port_refuses_lists_nothing_and_one_silent_port_fails() {
    let block = common::port_block(3);
    let host = range_host("h", &block, None);
    drop(block);
    let report = scan::run(
        spec_as("range_probe_2", vec![host]),
        scan::Local::default(),
        common::probe_all(),
        Recorder::new().sink(),
    )
    .await;
    assert!(matches!(&report.hosts[0].result, Ok((names, _)) if names.is_empty()));

    // With no node to list, a port that fails fails the host, as a fixed port does.
    let mut block = common::port_block(2);
    let host = range_host("h", &block, None);
    let silent = tokio::net::TcpListener::from_std(block.pop().unwrap()).unwrap();
    common::silent_listener(silent, common::Connections::default());
    let spec = ScanSpec {
        epmd_timeout: std::time::Duration::from_millis(300),
        ..spec_as("range_probe_3", vec![host])
    };
    let report = scan::run(
        spec,
        scan::Local::default(),
        common::probe_all(),
        Recorder::new().sink(),
    )
    .await;
    assert!(matches!(report.hosts[0].result, Err(Error::Timeout)));
}

#[tokio::test]
async fn the_local_hosts_nodes_answer_on_loopback_under_its_own_host_part() {
    // The local host is probed on loopback, which the nodes' names never resolve to; their
    // host part, the local node's own, is what makes them the local host's.
    let mut block = common::port_block(1);
    let host = range_host("local", &block, Some("10.9.9.9"));
    let listener = tokio::net::TcpListener::from_std(block.pop().unwrap()).unwrap();
    let _peer = ServingPeer::serve(listener, ok_and_challenge("sib@10.9.9.9", false));
    let report = scan::run(
        spec_as("range_probe_4", vec![host]),
        scan::Local::default(),
        common::probe_all(),
        Recorder::new().sink(),
    )
    .await;
    assert_eq!(report.candidates.len(), 1);
    assert!(matches!(
        outcome(&report.candidates[0]),
        Outcome::Live { name, .. } if name == "sib@10.9.9.9"
    ));
}
