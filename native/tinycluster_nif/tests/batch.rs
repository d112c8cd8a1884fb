//! `batch::Batcher`: candidates whose probes finish within a window are delivered together,
//! hosts at once, and nothing waits for a candidate that has not finished beyond the window;
//! a batch closes as soon as its scan is quiet, without waiting for the window.
//!
//! Timing assertions are orderings and generous upper bounds: the tests share a small, busy
//! machine.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{names_reply, ok_and_challenge, EpmdScript, FakeEpmd, ServingPeer};
use tinycluster_nif::batch::{self, Batcher, Delivery};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::{FirstFlight, Outcome, Probe};
use tinycluster_nif::scan::{self, CandidateReport, Event, HostListing, Planner, Target};
use tokio::sync::{oneshot, Notify};

fn candidate(alive: &str) -> CandidateReport {
    CandidateReport {
        host: "local".into(),
        alive: alive.into(),
        name: format!("{alive}@127.0.0.1"),
        address: "127.0.0.1".into(),
        port: 4370,
        probe: Probe {
            outcome: Outcome::Unreachable(Error::Refused),
            latency: Duration::ZERO,
        },
    }
}

fn host(label: &str) -> HostListing {
    HostListing {
        index: 0,
        label: label.into(),
        address: "127.0.0.1".into(),
        epmd_port: 4369,
        dist_port: None,
        dist_port_last: None,
        result: Ok((Vec::new(), Vec::new())),
        latency: Duration::ZERO,
        probe_timeout: Some(Duration::from_millis(300)),
    }
}

/// What was delivered, as `("host", [label...])` or `("candidates", [alive...])`, with when.
type Seen = Arc<Mutex<Vec<(Instant, &'static str, Vec<String>)>>>;

/// A batcher with `window` that records its deliveries.
fn recording(window: Duration) -> (Batcher, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let batcher = Batcher::with_window(window, move |delivery| {
        let entry = match delivery {
            Delivery::Listed(hs) => ("host", hs.into_iter().map(|h| h.label).collect()),
            Delivery::Candidates(cs) => ("candidates", cs.into_iter().map(|c| c.alive).collect()),
        };
        log.lock().unwrap().push((Instant::now(), entry.0, entry.1));
    });
    (batcher, seen)
}

fn shapes(seen: &Seen) -> Vec<(&'static str, Vec<String>)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, kind, names)| (*kind, names.clone()))
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until `count` deliveries were made: the event itself, not a guess at its time.
async fn delivered(seen: &Seen, count: usize) {
    let start = Instant::now();
    while seen.lock().unwrap().len() < count {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{count} deliveries never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// As in the NIF: a multi-thread runtime with one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn probes_that_end_in_one_window_are_one_delivery() {
    let (batcher, seen) = recording(Duration::from_secs(60));
    let answer = Arc::new(Notify::new());
    let mut probes = Vec::new();
    for alive in ["a", "b", "c", "d"] {
        let (sink, answer) = (batcher.sink(), answer.clone());
        let notified = answer.notified_owned();
        probes.push(tokio::spawn(async move {
            notified.await;
            sink(Event::Candidate(candidate(alive)));
        }));
    }
    // Every "probe" waits on the same answer; give them the time to start waiting.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Woken from the runtime's worker, as the I/O driver wakes probes whose answers came in
    // one poll of the sockets.
    tokio::spawn(async move { answer.notify_waiters() })
        .await
        .unwrap();
    for p in probes {
        p.await.unwrap();
    }
    batcher.finish().await;
    // One delivery, in the order the probes ran.
    let mut delivered = shapes(&seen);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    delivered[0].1.sort();
    assert_eq!(
        delivered,
        vec![("candidates", names(&["a", "b", "c", "d"]))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_later_candidate_holds_no_earlier_one_back() {
    let (batcher, seen) = recording(batch::WINDOW);
    let sink = batcher.sink();
    sink(Event::Candidate(candidate("fast")));
    // A frozen node's probe finishes (at its deadline) long after: the fast one is out
    // before it, at the end of its window.
    delivered(&seen, 1).await;
    sink(Event::Candidate(candidate("slow")));
    batcher.finish().await;
    assert_eq!(
        shapes(&seen),
        vec![
            ("candidates", names(&["fast"])),
            ("candidates", names(&["slow"]))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn candidates_apart_within_the_window_are_one_delivery() {
    let (batcher, seen) = recording(Duration::from_millis(500));
    let sink = batcher.sink();
    let start = Instant::now();
    for alive in ["a", "b", "c"] {
        sink(Event::Candidate(candidate(alive)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The scan still running (a frozen node's probe, say): the window closes the batch.
    delivered(&seen, 1).await;
    let delivered = seen.lock().unwrap().clone();
    assert_eq!(shapes(&seen), vec![("candidates", names(&["a", "b", "c"]))]);
    // The window closed it, not the end of the scan.
    let at = delivered[0].0 - start;
    assert!(at >= Duration::from_millis(450), "closed early: {at:?}");
    batcher.finish().await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_end_of_the_scan_closes_an_open_window_at_once() {
    let (batcher, seen) = recording(Duration::from_secs(60));
    let sink = batcher.sink();
    let start = Instant::now();
    sink(Event::Candidate(candidate("a")));
    batcher.finish().await;
    assert_eq!(shapes(&seen), vec![("candidates", names(&["a"]))]);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn hosts_of_one_window_leave_together_before_its_candidates() {
    let (batcher, seen) = recording(Duration::from_secs(60));
    let sink = batcher.sink();
    sink(Event::Candidate(candidate("a")));
    sink(Event::Listed(host("h1")));
    sink(Event::Candidate(candidate("b")));
    sink(Event::Listed(host("h2")));
    batcher.finish().await;
    assert_eq!(
        shapes(&seen),
        vec![
            ("host", names(&["h1", "h2"])),
            ("candidates", names(&["a", "b"]))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn finish_delivers_everything_sent_before_it_then_ends() {
    let (batcher, seen) = recording(batch::WINDOW);
    let sink = batcher.sink();
    for alive in ["a", "b"] {
        sink(Event::Candidate(candidate(alive)));
    }
    batcher.finish().await;
    let delivered = shapes(&seen);
    // Whatever is sent once the forwarder ended is dropped, not delivered after the report.
    sink(Event::Candidate(candidate("late")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(delivered, vec![("candidates", names(&["a", "b"]))]);
    assert_eq!(shapes(&seen), delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn nothing_sent_nothing_delivered() {
    let (batcher, seen) = recording(batch::WINDOW);
    batcher.finish().await;
    assert!(shapes(&seen).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn hosts_answering_within_a_window_are_one_delivery_and_wait_no_longer() {
    let window = Duration::from_millis(200);
    let (batcher, seen) = recording(window);
    let sink = batcher.sink();
    let start = Instant::now();
    for label in ["h1", "h2", "h3"] {
        sink(Event::Listed(host(label)));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    delivered(&seen, 1).await;
    // Delivered when the window closed, not at the end of the scan.
    assert!(start.elapsed() < Duration::from_secs(10));
    sink(Event::Listed(host("late")));
    batcher.finish().await;
    assert_eq!(
        shapes(&seen),
        vec![
            ("host", names(&["h1", "h2", "h3"])),
            ("host", names(&["late"]))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_quiet_scan_closes_the_batch_without_waiting_for_the_window() {
    let (batcher, seen) = recording(Duration::from_secs(60));
    let sink = batcher.sink();
    // Quiet with no batch open: nothing to deliver, and nothing opened.
    sink(Event::Quiet);
    sink(Event::Listed(host("h1")));
    sink(Event::Candidate(candidate("a")));
    sink(Event::Candidate(candidate("b")));
    sink(Event::Quiet);
    // Delivered on the quiet, not at the window (a minute) nor the end of the scan.
    delivered(&seen, 2).await;
    sink(Event::Candidate(candidate("c")));
    batcher.finish().await;
    assert_eq!(
        shapes(&seen),
        vec![
            ("host", names(&["h1"])),
            ("candidates", names(&["a", "b"])),
            ("candidates", names(&["c"]))
        ]
    );
}

/// Hosts waiting for their plan, as the NIF's registry holds them: a plan is answered only
/// once its listing was delivered.
type Waiting = Arc<Mutex<HashMap<usize, oneshot::Sender<Vec<Target>>>>>;

// A real scan through a batcher whose window is far longer than the test may take, planned
// as the NIF plans: after the listing's delivery. Every probe answers (one of them is this
// node itself, reported to no one), so each batch closes on the scan going quiet: the
// listing alone, then every candidate together, both before the scan's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_scan_whose_probes_all_answered_is_delivered_before_the_window() {
    let a = ServingPeer::start_on("127.0.0.1", ok_and_challenge("a@h", false)).await;
    let b = ServingPeer::start_on("127.0.0.1", ok_and_challenge("b@h", false)).await;
    let me = ServingPeer::start_on("127.0.0.1", ok_and_challenge("me@h", false)).await;
    let text = format!(
        "name a at port {}\nname b at port {}\nname me at port {}\n",
        a.addr.port(),
        b.addr.port(),
        me.addr.port()
    );
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&text))).await;

    let waiting: Waiting = Arc::default();
    let planner = {
        let waiting = waiting.clone();
        Planner(Arc::new(move |listing: &HostListing| {
            let (tx, rx) = oneshot::channel();
            waiting.lock().unwrap().insert(listing.index, tx);
            rx
        }))
    };
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let batcher = Batcher::with_window(Duration::from_secs(60), move |delivery| {
        let entry = match delivery {
            Delivery::Listed(hs) => {
                for h in &hs {
                    let tx = waiting.lock().unwrap().remove(&h.index);
                    let targets = common::every_name(h, FirstFlight::SendName);
                    let _ = tx.map(|tx| tx.send(targets));
                }
                ("host", hs.into_iter().map(|h| h.label).collect())
            }
            Delivery::Candidates(cs) => {
                let mut alive: Vec<String> = cs.into_iter().map(|c| c.alive).collect();
                alive.sort();
                ("candidates", alive)
            }
        };
        log.lock().unwrap().push((Instant::now(), entry.0, entry.1));
    });

    let spec = common::spec(vec![common::host("h", epmd.addr, Some("h"))], "probe@h");
    let scan = tokio::spawn(scan::run(
        spec,
        scan::Local::default(),
        planner,
        batcher.sink(),
    ));
    delivered(&seen, 2).await;
    let report = scan.await.unwrap();
    assert!(report.hosts[0].result.is_ok(), "{:?}", report.hosts[0]);
    assert_eq!(report.candidates.len(), 2);
    assert_eq!(
        shapes(&seen),
        vec![("host", names(&["h"])), ("candidates", names(&["a", "b"]))]
    );
    batcher.finish().await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}
