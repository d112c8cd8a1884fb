//! The caps that bound what probes hold open, against listeners that accept every
//! connection and never answer (frozen nodes): at most [`park::MAX_PARKED`] probes parked
//! per process, and at most [`scan::MAX_PROBES_IN_FLIGHT`] probes in flight per scan.
//!
//! A test binary of its own: parked probes are process-wide, and the other tests park some.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{names_reply, silent_listener_on, Connections, EpmdScript, FakeEpmd, BOUND};
use tinycluster_nif::error::Error;
use tinycluster_nif::park;
use tinycluster_nif::probe::{FirstFlight, Outcome, ProbeRequest};
use tinycluster_nif::scan::{self, ScanSpec};
use tokio::task::JoinSet;

/// `count` silent listeners on loopback address `ip` (a frozen node each: a listener is
/// what a probe is parked for), recording their connections together.
async fn silent_host(ip: &str, count: usize) -> (Vec<SocketAddr>, Connections) {
    let connections: Connections = Arc::default();
    let mut listeners = Vec::new();
    for _ in 0..count {
        listeners.push(silent_listener_on(ip, connections.clone()).await);
    }
    (listeners, connections)
}

/// Probes the listener at `addr` through the park, as a poller's scan does.
async fn parked_probe(addr: SocketAddr) -> Outcome {
    let req = ProbeRequest {
        addr,
        probe_name: "tinycluster_probe_caps@h",
        creation: 7,
        timeout: Duration::from_secs(2),
        first_flight: FirstFlight::SendName,
    };
    park::probe(&req).await.outcome
}

/// One round of probes of every listener at once; every one meets silence.
async fn round(listeners: &[SocketAddr]) {
    let mut probes = JoinSet::new();
    for addr in listeners {
        probes.spawn(parked_probe(*addr));
    }
    while let Some(outcome) = probes.join_next().await {
        assert_eq!(outcome.unwrap(), Outcome::Unreachable(Error::Timeout));
    }
}

#[tokio::test]
async fn at_most_max_parked_probes_are_parked_and_the_rest_close_at_their_deadline() {
    // Hosts enough to fill the process-wide cap, each within its own share.
    let hosts = park::MAX_PARKED / park::MAX_PARKED_PER_ADDRESS;
    let mut full = Vec::new();
    for i in 1..=hosts {
        full.push(silent_host(&format!("127.0.0.{i}"), park::MAX_PARKED_PER_ADDRESS).await);
    }
    for (listeners, _) in &full {
        round(listeners).await;
    }
    assert_eq!(park::parked(), park::MAX_PARKED);

    // One more host: none of its probes finds a place.
    let (listeners, connections) = silent_host(&format!("127.0.0.{}", hosts + 1), 6).await;
    round(&listeners).await;
    assert_eq!(connections.lock().unwrap().len(), 6);
    assert_eq!(park::parked(), park::MAX_PARKED);

    // Asked again: the parked ones open nothing; the six past the cap open a connection each.
    for (listeners, _) in &full {
        round(listeners).await;
    }
    round(&listeners).await;
    for (_, connections) in &full {
        assert_eq!(
            connections.lock().unwrap().len(),
            park::MAX_PARKED_PER_ADDRESS
        );
    }
    assert_eq!(connections.lock().unwrap().len(), 12);
    assert_eq!(park::parked(), park::MAX_PARKED);
}

#[tokio::test]
async fn one_scan_holds_at_most_max_probes_in_flight() {
    // A node each, as EPMD lists them: probes to one listener under one name take turns.
    let connections: Connections = Arc::default();
    let count = scan::MAX_PROBES_IN_FLIGHT + 44;
    let mut lines = String::new();
    for i in 0..count {
        let peer = silent_listener_on("127.0.0.1", connections.clone()).await;
        lines.push_str(&format!("name n{i} at port {}\n", peer.port()));
    }
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&lines))).await;
    let spec = ScanSpec {
        // Far longer than the check below, which runs while the first wave waits.
        probe_timeout: Duration::from_secs(6),
        ..common::spec(
            vec![common::host("local", epmd.addr, Some("h"))],
            "tinycluster_probe_caps@127.0.0.1",
        )
    };

    let scan = tokio::spawn(scan::run(
        spec,
        scan::Local::default(),
        common::probe_all(),
        Arc::new(|_| {}),
    ));

    // The first wave: the cap's worth of probes connect, and wait out their timeout with the
    // listener silent. While they wait, no other probe connects.
    let started = Instant::now();
    while connections.lock().unwrap().len() < scan::MAX_PROBES_IN_FLIGHT {
        assert!(started.elapsed() < BOUND, "the first wave never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let connections = connections.lock().unwrap();
        assert_eq!(connections.len(), scan::MAX_PROBES_IN_FLIGHT);
        assert!(
            connections.iter().all(|(_, closed)| closed.is_none()),
            "a probe of the first wave ended before its timeout"
        );
    }

    // Then the rest, as the first wave gives up.
    let report = scan.await.unwrap();
    assert_eq!(report.candidates.len(), count);
    assert_eq!(connections.lock().unwrap().len(), count);
    epmd.seen().await;
}
