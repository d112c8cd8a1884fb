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
    }
}

fn spec(hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        local_name: "me@127.0.0.1".into(),
        ..common::spec(hosts, PROBE_NAME)
    }
}

#[tokio::test]
async fn a_node_on_a_fixed_port_is_listed_by_its_challenge_with_one_connection() {
    let peer = ServingPeer::start_on("127.0.0.1", ok_and_challenge("app@127.0.0.1", false)).await;
    let recorder = Recorder::new();
    let report = scan::run(
        spec(vec![direct_host("h", peer.addr)]),
        scan::Local::default(),
        common::probe_all(),
        recorder.sink(),
    )
    .await;

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
    let report = scan::run(
        spec(vec![direct_host("h", closed)]),
        scan::Local::default(),
        common::probe_all(),
        recorder.sink(),
    )
    .await;
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
    let report = scan::run(
        spec(vec![direct_host("h", peer.addr)]),
        scan::Local::default(),
        common::probe_all(),
        recorder.sink(),
    )
    .await;
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
