//! A scan's probes in flight are shared between its hosts: one host whose EPMD lists more
//! silent listeners (frozen nodes, or a hostile EPMD) than the whole scan may have in flight
//! holds at most its share of them, and a live node of another host is probed at once, not
//! after the silent ones' timeout.
//!
//! A test binary of its own: its hundreds of silent probes fill a scan's permits and park
//! (parked probes are process-wide).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    names_reply, ok_and_challenge, outcome, silent_listener_on, Connections, EpmdScript, FakeEpmd,
    FakePeer, Recorder, Script, BOUND,
};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::{FirstFlight, Outcome};
use tinycluster_nif::scan::{self, Planner, ScanSpec};
use tokio::sync::oneshot;

/// How long each silent probe waits: far longer than a live node on loopback takes to
/// answer, however busy the machine.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the live host's plan waits after the silent host's probes reached their
/// listeners, for any more of them that would connect to have done so.
const SETTLE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_host_of_silent_listeners_does_not_delay_a_live_node_of_another() {
    // More silent listeners than the whole scan may probe at once, at one address.
    let silent_count = scan::MAX_PROBES_IN_FLIGHT + 3 * scan::MIN_HOST_PROBES_IN_FLIGHT;
    let connections: Connections = Arc::default();
    let mut lines = String::new();
    for i in 0..silent_count {
        let addr = silent_listener_on("127.0.0.2", connections.clone()).await;
        lines.push_str(&format!("name s{i} at port {}\n", addr.port()));
    }
    let silent_epmd = FakeEpmd::start_on("127.0.0.2", EpmdScript::Reply(names_reply(&lines))).await;
    // A live node on another host.
    let live = FakePeer::start_on(
        "127.0.0.3",
        Script::Answer(ok_and_challenge("live@h", false)),
    )
    .await;
    let live_epmd = FakeEpmd::start_on(
        "127.0.0.3",
        EpmdScript::Reply(names_reply(&format!(
            "name live at port {}\n",
            live.addr.port()
        ))),
    )
    .await;
    // Alone, the silent host would fill every permit of the scan; it has its share.
    assert!(silent_count > scan::MAX_PROBES_IN_FLIGHT);
    let share = scan::host_share(2);

    // Every name of both hosts is probed; the live host's plan comes only once the silent
    // host's probes are in flight, waiting on their listeners.
    let planned_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let planner = {
        let (connections, planned_at) = (connections.clone(), planned_at.clone());
        Planner(Arc::new(move |listing| {
            let (tx, rx) = oneshot::channel();
            let targets = common::every_name(listing, FirstFlight::SendName);
            if listing.label == "silent" {
                let _ = tx.send(targets);
                return rx;
            }
            let (connections, planned_at) = (connections.clone(), planned_at.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                while connections.lock().unwrap().len() < share && start.elapsed() < BOUND {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(SETTLE).await;
                *planned_at.lock().unwrap() = Some(Instant::now());
                let _ = tx.send(targets);
            });
            rx
        }))
    };
    let spec = ScanSpec {
        probe_timeout: PROBE_TIMEOUT,
        ..common::spec(
            vec![
                common::host("silent", silent_epmd.addr, Some("h")),
                common::host("live", live_epmd.addr, Some("h")),
            ],
            "tinycluster_probe_fair@127.0.0.1",
        )
    };
    let recorder = Recorder::new();
    let scan = tokio::spawn(scan::run(
        spec,
        scan::Local::default(),
        planner,
        recorder.sink(),
    ));

    // The live node's answer, as soon as it comes.
    let started = Instant::now();
    let (index, at, c) = loop {
        if recorder.candidates().iter().any(|c| c.alive == "live") {
            break recorder.candidate("live");
        }
        assert!(
            started.elapsed() < BOUND,
            "the live node was never reported"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let planned_at = planned_at
        .lock()
        .unwrap()
        .expect("the live host was planned");
    let waited = (recorder.start + at).saturating_duration_since(planned_at);
    let silent_now = connections.lock().unwrap().clone();
    assert!(
        matches!(outcome(&c), Outcome::Live { name, .. } if name == "live@h"),
        "{:?}",
        outcome(&c)
    );
    // Probed at once: it did not wait for a silent probe to give up.
    assert!(
        waited < PROBE_TIMEOUT / 3,
        "the live node was reported {waited:?} after its plan"
    );
    let before: Vec<_> = recorder.events()[..index]
        .iter()
        .filter_map(|(_, e)| match e {
            scan::Event::Candidate(c) => Some(c.alive.clone()),
            _ => None,
        })
        .collect();
    assert!(
        before.is_empty(),
        "reported before the live node: {before:?}"
    );
    // Meanwhile the silent host's probes were in flight, its share of them, still waiting.
    assert_eq!(silent_now.len(), share, "silent probes in flight");
    assert!(
        silent_now.iter().all(|(_, closed)| closed.is_none()),
        "a silent probe ended before its timeout"
    );

    // The silent host's probes all end in turn, each unreachable.
    let report = scan.await.unwrap();
    assert_eq!(report.candidates.len(), silent_count + 1);
    let unreachable = report
        .candidates
        .iter()
        .filter(|c| c.host == "silent" && *outcome(c) == Outcome::Unreachable(Error::Timeout))
        .count();
    assert_eq!(unreachable, silent_count);
    assert_eq!(connections.lock().unwrap().len(), silent_count);
    live.seen().await;
    silent_epmd.seen().await;
    live_epmd.seen().await;
}
