//! A parked probe's end, in real time (about 65 s), through whole scans: against a listener
//! that accepts every connection and never answers (a frozen node's kernel), the first scan's
//! probe parks; the scans of the next minute open no second connection and report the node
//! unreachable; the probe closes its socket once [`park::PARK_FOR`] has passed, not before;
//! and then a scan opens a new connection.
//!
//! A test binary of its own, with one test: parked probes are process-wide, and the caps
//! test fills the park to its cap, which would keep this probe from parking at all.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{names_reply, EpmdScript, FakeEpmd};
use tinycluster_nif::error::Error;
use tinycluster_nif::park::PARK_FOR;
use tinycluster_nif::probe::Outcome;
use tinycluster_nif::scan::{self, ScanSpec};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// How late past [`PARK_FOR`] the parked probe may close: far more than any timer is late,
/// since the machine is small and shared; the test is of the bound, not of its precision.
const MARGIN: Duration = Duration::from_secs(30);

/// How much earlier than [`PARK_FOR`] after its scan started the close may be seen: the
/// probe's own clock starts after the scan's, so this is only for a timer's rounding.
const EARLY: Duration = Duration::from_millis(500);

/// How often the node is scanned while its probe is parked: a poller scans every interval.
const SCAN_EVERY: Duration = Duration::from_secs(5);

/// When each connection the listener accepted was opened, and when its client closed it
/// (`None` while open).
type Connections = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// Accepts every connection, reads until the client closes it, and answers nothing. Each
/// read is bounded, past the longest the test waits, so that the listener ends by itself.
async fn silent_listener() -> (SocketAddr, Connections) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections: Connections = Arc::default();
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push((Instant::now(), None));
                seen.len() - 1
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let bound = PARK_FOR + MARGIN * 2;
                let _ = tokio::time::timeout(bound, stream.read_to_end(&mut sink)).await;
                seen.lock().unwrap()[index].1 = Some(Instant::now());
            });
        }
    });
    (addr, connections)
}

/// One scan (which parks a silent probe, as every scan does) of a host whose EPMD lists the
/// one node `app` at `peer`'s port; returns what the scan reports of it.
async fn scan_node(peer: SocketAddr) -> Outcome {
    let line = format!("name app at port {}\n", peer.port());
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&line))).await;
    let spec = ScanSpec {
        // Longer than a loaded machine takes to connect on loopback, so that the first
        // probe reaches the listener and parks rather than failing to connect.
        probe_timeout: Duration::from_secs(2),
        ..common::spec(
            vec![common::host("local", epmd.addr, Some("h"))],
            "tinycluster_probe_expiry@127.0.0.1",
        )
    };
    let report = scan::run(
        spec,
        scan::Local::default(),
        common::probe_all(),
        Arc::new(|_| {}),
    )
    .await;
    epmd.seen().await;
    assert_eq!(report.candidates.len(), 1, "{:?}", report.candidates);
    let candidate = &report.candidates[0];
    candidate.probe.outcome.clone()
}

fn accepted(connections: &Connections) -> usize {
    connections.lock().unwrap().len()
}

fn first_closed(connections: &Connections) -> Option<Instant> {
    connections.lock().unwrap()[0].1
}

#[tokio::test]
async fn a_parked_probe_closes_after_park_for_and_the_next_connection_is_a_new_one() {
    let (peer, connections) = silent_listener().await;
    let silent = Outcome::Unreachable(Error::Timeout);

    // The first scan: the probe meets silence by its deadline and parks, socket open.
    let started = Instant::now();
    assert_eq!(scan_node(peer).await, silent);
    assert_eq!(accepted(&connections), 1);

    // Within the minute, safely before it ends: every scan reports the node unreachable and
    // opens nothing, and the parked probe's connection stays open.
    let quiet_until = started + PARK_FOR - SCAN_EVERY;
    let mut scans = 1;
    while Instant::now() + SCAN_EVERY < quiet_until {
        tokio::time::sleep(SCAN_EVERY).await;
        assert_eq!(scan_node(peer).await, silent);
        scans += 1;
        assert_eq!(
            accepted(&connections),
            1,
            "scan {scans} opened a connection"
        );
        assert!(
            first_closed(&connections).is_none(),
            "the parked probe closed by scan {scans}, {:?} after the first",
            started.elapsed()
        );
    }
    assert!(scans >= 5, "only {scans} scans within the minute");

    // Then the probe closes its socket by itself (the listener reads EOF): not before
    // PARK_FOR, and within a generous margin after it.
    let closed = loop {
        if let Some(closed) = first_closed(&connections) {
            break closed;
        }
        assert!(
            started.elapsed() < PARK_FOR + MARGIN,
            "the parked probe was still open {:?} after its scan started",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let parked_for = closed - started;
    assert!(
        parked_for + EARLY >= PARK_FOR,
        "closed after {parked_for:?}, before {PARK_FOR:?}"
    );
    assert!(
        parked_for < PARK_FOR + MARGIN,
        "closed after {parked_for:?}"
    );
    assert_eq!(accepted(&connections), 1);

    // After it, the next scan opens a new connection (an expired probe's silence is not
    // reported in its place); a second allows for the expired probe's task not having
    // finished yet when the listener saw EOF.
    let mut after = 0;
    while accepted(&connections) == 1 {
        assert!(
            after < 2,
            "no new connection in {after} scans after the close"
        );
        assert_eq!(scan_node(peer).await, silent);
        after += 1;
    }
    assert_eq!(accepted(&connections), 2, "one new connection, not more");
}
