//! A far host's probes wait as long as the host is far: `scan::run` against a fake EPMD that
//! takes its time to answer (as one far away does) and fake nodes that answer late or never.
//! Each host's probe timeout comes from its EPMD's round trip in the same scan, before any
//! probe; a near host keeps `probe_timeout`.
//!
//! Timing assertions are orderings and generous bounds: the tests share a small, busy machine.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{names_reply, ok_and_challenge, EpmdScript, FakeEpmd, FakePeer, Script};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::Outcome;
use tinycluster_nif::scan::{
    self, host_probe_timeout, CandidateReport, Event, HostListing, HostSpec, ScanSpec,
    MAX_HOST_PROBE_TIMEOUT, RTT_FACTOR,
};

/// The probe timeout the tests give: short, so that the far host's must be longer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the far EPMD takes to answer: its round trip, the scan's measure of distance.
const FAR: Duration = Duration::from_millis(300);
/// How long the slow node takes to answer its probe: past `PROBE_TIMEOUT`, well within
/// `RTT_FACTOR * FAR`.
const SLOW: Duration = Duration::from_millis(500);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_near_host_keeps_the_probe_timeout_and_a_far_one_waits_its_round_trips_up_to_a_cap() {
    let base = ms(300);
    // Loopback, a LAN, a nearby region: the probe timeout as given.
    for rtt in [ms(0), ms(1), ms(40), ms(100)] {
        assert_eq!(host_probe_timeout(base, rtt), base, "rtt {rtt:?}");
    }
    assert_eq!(RTT_FACTOR, 3);
    assert_eq!(host_probe_timeout(base, ms(101)), ms(303));
    assert_eq!(host_probe_timeout(base, ms(400)), ms(1_200));
    assert_eq!(host_probe_timeout(base, ms(1_000)), ms(3_000));
    // Capped: a host that far, or an EPMD that took a long while, costs at most the cap.
    assert_eq!(MAX_HOST_PROBE_TIMEOUT, ms(10_000));
    assert_eq!(host_probe_timeout(base, ms(5_000)), MAX_HOST_PROBE_TIMEOUT);
    assert_eq!(
        host_probe_timeout(base, Duration::MAX),
        MAX_HOST_PROBE_TIMEOUT
    );
    // A probe timeout above the cap is the user's: kept.
    assert_eq!(host_probe_timeout(ms(20_000), ms(5_000)), ms(20_000));
}

fn host(label: &str, epmd: SocketAddr) -> HostSpec {
    common::host(label, epmd, Some("h"))
}

fn spec(hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        creation: 7,
        probe_timeout: PROBE_TIMEOUT,
        ..common::spec(hosts, "tinycluster_probe_1@127.0.0.1")
    }
}

/// Runs one scan; returns its host reports and each candidate with when it was reported.
async fn scan(spec: ScanSpec) -> (Vec<HostListing>, Vec<(Duration, CandidateReport)>) {
    let start = Instant::now();
    let seen: Arc<Mutex<Vec<(Duration, CandidateReport)>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |event| {
            if let Event::Candidate(c) = event {
                seen.lock().unwrap().push((start.elapsed(), c));
            }
        })
    };
    let report = scan::run(spec, scan::Local::default(), common::probe_all(), sink).await;
    let candidates = seen.lock().unwrap().clone();
    (report.hosts, candidates)
}

fn find<'a>(
    found: &'a [(Duration, CandidateReport)],
    alive: &str,
) -> &'a (Duration, CandidateReport) {
    found
        .iter()
        .find(|(_, c)| c.alive == alive)
        .unwrap_or_else(|| panic!("{alive} was not reported"))
}

fn outcome(c: &CandidateReport) -> &Outcome {
    &c.probe.outcome
}

/// A host's EPMD (answering after `epmd_delay`) listing a node that answers after `SLOW`
/// and a frozen one; returns the fakes to wait for.
async fn host_with_slow_and_frozen(epmd_delay: Duration) -> (FakeEpmd, FakePeer, FakePeer) {
    let slow = FakePeer::start(Script::AnswerAfter(SLOW, ok_and_challenge("slow@h", false))).await;
    let frozen = FakePeer::start(Script::Silent).await;
    let reply = names_reply(&format!(
        "name slow at port {}\nname frozen at port {}\n",
        slow.addr.port(),
        frozen.addr.port()
    ));
    let epmd = FakeEpmd::start(EpmdScript::ReplyAfter(epmd_delay, reply)).await;
    (epmd, slow, frozen)
}

#[tokio::test]
async fn a_far_hosts_live_node_is_live_and_its_frozen_one_unreachable_within_its_timeout() {
    let (epmd, slow, frozen) = host_with_slow_and_frozen(FAR).await;

    let (hosts, found) = scan(spec(vec![host("far", epmd.addr)])).await;

    let h = &hosts[0];
    assert!(h.latency >= FAR, "the round trip was {:?}", h.latency);
    let timeout = h.probe_timeout.expect("a timeout for an answered host");
    assert_eq!(timeout, h.latency * RTT_FACTOR);
    assert!(timeout > SLOW, "{timeout:?}");

    // Slower than the probe timeout, within the far host's: live.
    let (_, c) = find(&found, "slow");
    assert!(
        matches!(outcome(c), Outcome::Live { name, .. } if name == "slow@h"),
        "{:?}",
        outcome(c)
    );
    assert!(c.probe.latency >= SLOW);

    // Frozen: unreachable once the host's timeout is over, and not much later.
    let (at, c) = find(&found, "frozen");
    assert_eq!(*outcome(c), Outcome::Unreachable(Error::Timeout));
    let waited = c.probe.latency;
    assert!(waited >= timeout, "gave up after {waited:?} of {timeout:?}");
    assert!(
        *at <= h.latency + timeout + PROBE_TIMEOUT + ms(1_000),
        "reported after {at:?} (round trip {:?}, timeout {timeout:?})",
        h.latency
    );

    epmd.seen().await;
    slow.seen().await;
    // The frozen node's probe is parked (park.rs), its socket open: no close to wait for.
    drop(frozen);
}

#[tokio::test]
async fn a_near_hosts_probes_keep_the_probe_timeout() {
    let (epmd, slow, frozen) = host_with_slow_and_frozen(Duration::ZERO).await;

    let (hosts, found) = scan(spec(vec![host("near", epmd.addr)])).await;

    assert_eq!(hosts[0].probe_timeout, Some(PROBE_TIMEOUT));
    for alive in ["slow", "frozen"] {
        let (at, c) = find(&found, alive);
        assert_eq!(*outcome(c), Outcome::Unreachable(Error::Timeout), "{alive}");
        assert!(*at < PROBE_TIMEOUT + ms(1_000), "{alive} after {at:?}");
    }
    epmd.seen().await;
    slow.seen().await;
    // The frozen node's probe is parked (park.rs), its socket open: no close to wait for.
    drop(frozen);
}

#[tokio::test]
async fn each_host_has_its_own_timeout_in_one_scan() {
    let (far_epmd, far_slow, far_frozen) = host_with_slow_and_frozen(FAR).await;
    let (near_epmd, near_slow, near_frozen) = host_with_slow_and_frozen(Duration::ZERO).await;
    let spec = spec(vec![
        host("far", far_epmd.addr),
        host("near", near_epmd.addr),
    ]);

    let (hosts, found) = scan(spec).await;

    assert!(hosts[0].probe_timeout.unwrap() > SLOW);
    assert_eq!(hosts[1].probe_timeout, Some(PROBE_TIMEOUT));
    let of = |label: &str| -> Vec<(&str, bool)> {
        let mut v: Vec<_> = found
            .iter()
            .filter(|(_, c)| c.host == label)
            .map(|(_, c)| (c.alive.as_str(), matches!(outcome(c), Outcome::Live { .. })))
            .collect();
        v.sort();
        v
    };
    assert_eq!(of("far"), [("frozen", false), ("slow", true)]);
    assert_eq!(of("near"), [("frozen", false), ("slow", false)]);
    // The near host's verdicts did not wait for the far host's.
    let near_frozen_at = found
        .iter()
        .find(|(_, c)| c.host == "near" && c.alive == "frozen")
        .unwrap()
        .0;
    assert!(near_frozen_at < FAR, "{near_frozen_at:?}");

    for epmd in [far_epmd, near_epmd] {
        epmd.seen().await;
    }
    for peer in [far_slow, near_slow] {
        peer.seen().await;
    }
    // The frozen nodes' probes are parked (park.rs), their sockets open: no close to wait for.
    drop((far_frozen, near_frozen));
}

#[tokio::test]
async fn a_host_whose_epmd_fails_has_no_probe_timeout() {
    let epmd = FakeEpmd::start(EpmdScript::Silent).await;
    let mut spec = spec(vec![host("silent", epmd.addr)]);
    spec.epmd_timeout = ms(300);

    let (hosts, found) = scan(spec).await;

    assert_eq!(hosts[0].result, Err(Error::Timeout));
    assert_eq!(hosts[0].probe_timeout, None);
    assert!(hosts[0].latency >= ms(300));
    assert!(found.is_empty());
    epmd.seen().await;
}
