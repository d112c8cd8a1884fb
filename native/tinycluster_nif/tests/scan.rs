//! `scan::run` against fake EPMDs and fake distribution peers on 127.0.0.1: what each kind of
//! EPMD reply becomes, the skip set and the local name, and that nothing slow delays the
//! events of what is fast.
//!
//! Timing assertions are orderings and generous upper bounds: the tests share a small, busy
//! machine.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    closed_port, host, names_reply, ok_and_challenge, EpmdScript, FakeEpmd, FakePeer, Script,
    ENDLESS_CAP,
};
use tinycluster_nif::epmd::{MAX_NAMES, MAX_REPLY_BYTES};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::Outcome;
use tinycluster_nif::scan::{self, CandidateReport, Event, HostReport, HostSpec, ScanSpec};
use tokio::net::TcpListener;

const PROBE_NAME: &str = "tinycluster_probe_1@127.0.0.1";
const CREATION: u32 = 0x0A0B_0C0D;

fn spec(hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        creation: CREATION,
        ..common::spec(hosts, PROBE_NAME)
    }
}

/// Every event a scan handed to its sink, with when it arrived.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    events: Arc<Mutex<Vec<(Duration, Event)>>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    fn sink(&self) -> Arc<dyn Fn(Event) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |event| {
            let at = me.start.elapsed();
            me.events.lock().unwrap().push((at, event));
        })
    }

    fn events(&self) -> Vec<(Duration, Event)> {
        self.events.lock().unwrap().clone()
    }

    fn host(&self, label: &str) -> (usize, Duration, HostReport) {
        let found: Vec<_> = self
            .events()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (at, e))| match e {
                Event::Host(h) if h.label == label => Some((i, at, h)),
                _ => None,
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "host {label} reported {} times",
            found.len()
        );
        found.into_iter().next().unwrap()
    }

    fn candidate(&self, alive: &str) -> (usize, Duration, CandidateReport) {
        let found: Vec<_> = self
            .events()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (at, e))| match e {
                Event::Candidate(c) if c.alive == alive => Some((i, at, c)),
                _ => None,
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "candidate {alive} reported {} times",
            found.len()
        );
        found.into_iter().next().unwrap()
    }

    fn candidates(&self) -> Vec<CandidateReport> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Candidate(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// A listener that no scan should ever connect to; [`assert_untouched`] checks it.
async fn untouched_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// Asserts that nobody connected: a connect made during the scan would be in the backlog.
async fn assert_untouched(listener: &TcpListener, what: &str) {
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "{what} was connected to");
}

fn outcome(c: &CandidateReport) -> &Outcome {
    &c.probe.as_ref().expect("a probed candidate").outcome
}

#[tokio::test]
async fn a_good_reply_leads_to_probes_of_its_nodes_and_only_those() {
    let visible = FakePeer::start(Script::Answer(ok_and_challenge("a@h", false))).await;
    let hidden = FakePeer::start(Script::Answer(ok_and_challenge("b@h", true))).await;
    let refused = closed_port().await;
    let local = untouched_listener().await;
    let skipped = untouched_listener().await;
    let reply = names_reply(&format!(
        "name a at port {}\nname b at port {}\nname c at port {}\n\
         name me at port {}\nname sk at port {}\n",
        visible.addr.port(),
        hidden.addr.port(),
        refused.port(),
        local.local_addr().unwrap().port(),
        skipped.local_addr().unwrap().port(),
    ));
    let epmd = FakeEpmd::start(EpmdScript::Reply(reply)).await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![host("local", epmd.addr, Some("h"))]);
    spec.skip = HashSet::from(["sk@h".to_string()]);

    let report = scan::run(spec, recorder.sink()).await;

    let epmd_port = epmd.addr.port();
    assert_eq!(epmd.seen().await.request, [0, 1, b'n'], "NAMES_REQ bytes");
    let (host_index, _, host_event) = recorder.host("local");
    assert_eq!(host_index, 0, "the host is reported before its candidates");
    assert_eq!(host_event.address, "127.0.0.1");
    assert_eq!(host_event.epmd_port, epmd_port);
    assert_eq!(host_event.result, Ok((5, vec![])));
    assert_eq!(report.hosts.len(), 1);
    assert_eq!(report.hosts[0].result, host_event.result);

    let (_, _, a) = recorder.candidate("a");
    assert_eq!(
        *outcome(&a),
        Outcome::Live {
            name: "a@h".into(),
            hidden: false,
            creation: 7
        }
    );
    assert_eq!(
        (a.host.as_str(), a.name.as_str(), a.address.as_str(), a.port),
        ("local", "a@h", "127.0.0.1", visible.addr.port())
    );
    let (_, _, b) = recorder.candidate("b");
    assert_eq!(
        *outcome(&b),
        Outcome::Live {
            name: "b@h".into(),
            hidden: true,
            creation: 7
        }
    );
    let (_, _, c) = recorder.candidate("c");
    assert_eq!(*outcome(&c), Outcome::Unreachable(Error::Refused));
    assert_eq!(c.name, "c@h");
    let (_, _, sk) = recorder.candidate("sk");
    assert!(sk.probe.is_none(), "a skipped candidate is not probed");
    assert_eq!(sk.name, "sk@h");
    // The local node is not a candidate at all: no event, no probe.
    let mut alives: Vec<_> = recorder.candidates().into_iter().map(|c| c.alive).collect();
    alives.sort();
    assert_eq!(alives, ["a", "b", "c", "sk"]);
    let mut reported: Vec<_> = report.candidates.iter().map(|c| c.alive.clone()).collect();
    reported.sort();
    assert_eq!(reported, alives, "the report holds what the events said");
    assert_untouched(&local, "the local node").await;
    assert_untouched(&skipped, "a skipped node").await;

    for peer in [visible, hidden] {
        let seen = peer.seen().await;
        assert_eq!(&seen.send_name[17..], PROBE_NAME.as_bytes());
        assert_eq!(&seen.send_name[11..15], CREATION.to_be_bytes());
        assert_eq!(seen.after.unwrap(), b"", "the probe answered a challenge");
    }
}

#[tokio::test]
async fn without_a_node_host_names_use_the_host_as_given_and_any_host_is_accepted() {
    let live = FakePeer::start(Script::Answer(ok_and_challenge("a@far.example", false))).await;
    let local = untouched_listener().await;
    let skipped = untouched_listener().await;
    let reply = names_reply(&format!(
        "name a at port {}\nname me at port {}\nname sk at port {}\n",
        live.addr.port(),
        local.local_addr().unwrap().port(),
        skipped.local_addr().unwrap().port(),
    ));
    let epmd = FakeEpmd::start(EpmdScript::Reply(reply)).await;
    let recorder = Recorder::new();
    // The label carries the EPMD port (the same host listed twice); names never do.
    let label = format!("127.0.0.1:{}", epmd.addr.port());
    let mut spec = spec(vec![host(&label, epmd.addr, None)]);
    spec.local_name = "me@127.0.0.1".into();
    spec.skip = HashSet::from(["sk@127.0.0.1".to_string(), "a@h".to_string()]);

    scan::run(spec, recorder.sink()).await;

    let (_, _, a) = recorder.candidate("a");
    assert_eq!(
        *outcome(&a),
        Outcome::Live {
            name: "a@far.example".into(),
            hidden: false,
            creation: 7
        }
    );
    assert_eq!(
        a.name, "a@far.example",
        "a live node is named by its challenge"
    );
    let (_, _, sk) = recorder.candidate("sk");
    assert!(sk.probe.is_none());
    assert_eq!(sk.name, "sk@127.0.0.1");
    assert_eq!(
        recorder.candidates().len(),
        2,
        "me@127.0.0.1 is the local node"
    );
    assert_untouched(&local, "the local node").await;
    assert_untouched(&skipped, "a skipped node").await;
    live.seen().await;
    epmd.seen().await;
}

#[tokio::test]
async fn bad_lines_are_skipped_and_reported_with_the_host() {
    let live = FakePeer::start(Script::Answer(ok_and_challenge("good@h", false))).await;
    let bad = [
        ("name bad.dot at port 1", "invalid node name"),
        ("name sp ace at port 2", "invalid node name"),
        ("name a@b at port 3", "invalid node name"),
        ("name  at port 4", "invalid node name"),
        ("name big at port 65536", "invalid port"),
        ("name huge at port 4294967297", "invalid port"),
        ("name neg at port -5", "invalid port"),
        ("name nan at port abc", "invalid port"),
        ("name zero at port 0", "invalid port"),
        ("name plus at port +80", "invalid port"),
        ("name trailing at port 80 ", "invalid port"),
        ("name empty at port ", "invalid port"),
        ("hello there", "line does not start with \"name \""),
        ("name noport", "line has no \" at port \""),
    ];
    let mut text = String::new();
    for (i, (line, _)) in bad.iter().enumerate() {
        if i == 3 {
            text.push_str(&format!("name good at port {}\n", live.addr.port()));
        }
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("name cut at port 5");
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&text))).await;
    let recorder = Recorder::new();

    let report = scan::run(
        spec(vec![host("local", epmd.addr, Some("h"))]),
        recorder.sink(),
    )
    .await;

    let (_, _, h) = recorder.host("local");
    let (count, malformed) = h.result.expect("the reply is an EPMD reply");
    assert_eq!(count, 1);
    let got: Vec<_> = malformed
        .iter()
        .map(|m| (m.sample.as_str(), m.reason))
        .collect();
    let mut expected = bad.to_vec();
    expected.push(("name cut at port 5", "line not terminated"));
    assert_eq!(got, expected);
    let candidates = recorder.candidates();
    assert_eq!(candidates.len(), 1, "only the good line is probed");
    assert_eq!(
        *outcome(&candidates[0]),
        Outcome::Live {
            name: "good@h".into(),
            hidden: false,
            creation: 7
        }
    );
    assert_eq!(report.candidates.len(), 1);
    live.seen().await;
    epmd.seen().await;
}

#[tokio::test]
async fn garbage_replies_are_malformed_and_probe_nothing() {
    let mut binary_body = vec![0, 0, 0x11, 0x11];
    binary_body.extend_from_slice(b"\x00\xff\xfe\x80\nname \xff at port 1\n");
    let scripts = [
        ("http", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ("empty", Vec::new()),
        ("short", vec![0, 0, 0x11]),
        ("port-zero", vec![0, 0, 0, 0]),
        ("port-too-big", vec![0, 1, 0, 0]),
        ("binary-body", binary_body),
    ];
    let mut epmds = Vec::new();
    let mut hosts = Vec::new();
    for (label, bytes) in scripts {
        let epmd = FakeEpmd::start(EpmdScript::Reply(bytes)).await;
        hosts.push(host(label, epmd.addr, Some("h")));
        epmds.push(epmd);
    }
    let recorder = Recorder::new();

    let report = scan::run(spec(hosts), recorder.sink()).await;

    for label in ["http", "empty", "short", "port-zero", "port-too-big"] {
        let (_, _, h) = recorder.host(label);
        assert!(
            matches!(h.result, Err(Error::Malformed(_))),
            "{label}: {:?}",
            h.result
        );
    }
    let (_, _, h) = recorder.host("binary-body");
    let (count, malformed) = h.result.expect("a valid port makes it an EPMD reply");
    assert_eq!(count, 0);
    let reasons: Vec<_> = malformed.iter().map(|m| m.reason).collect();
    assert_eq!(
        reasons,
        ["line does not start with \"name \"", "invalid node name"]
    );
    let labels: Vec<_> = report.hosts.iter().map(|h| h.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "http",
            "empty",
            "short",
            "port-zero",
            "port-too-big",
            "binary-body"
        ],
        "hosts are reported in the order given"
    );
    assert!(recorder.candidates().is_empty());
    for epmd in epmds {
        assert_eq!(epmd.seen().await.request, [0, 1, b'n']);
    }
}

#[tokio::test]
async fn a_closed_epmd_port_is_refused() {
    let addr = closed_port().await;
    let recorder = Recorder::new();
    let report = scan::run(spec(vec![host("gone", addr, None)]), recorder.sink()).await;
    let (_, _, h) = recorder.host("gone");
    assert_eq!(h.result, Err(Error::Refused));
    assert_eq!(h.address, "127.0.0.1");
    assert!(report.candidates.is_empty());
}

#[tokio::test]
async fn a_reply_that_never_ends_is_cut_at_the_byte_cap() {
    let epmd = FakeEpmd::start(EpmdScript::Endless).await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![host("endless", epmd.addr, Some("h"))]);
    spec.epmd_timeout = Duration::from_secs(8);

    let report = scan::run(spec, recorder.sink()).await;

    let (_, _, h) = recorder.host("endless");
    // The byte cap stops it, not the clock: a Timeout here would mean the read is unbounded.
    assert_eq!(h.result, Err(Error::ReplyTooLarge(MAX_REPLY_BYTES)));
    assert!(h.latency < Duration::from_secs(8), "took {:?}", h.latency);
    assert!(report.candidates.is_empty());
    let seen = epmd.seen().await;
    assert!(seen.client_closed, "the scan kept the connection open");
    assert!(
        seen.written < ENDLESS_CAP,
        "the scan read {} bytes",
        seen.written
    );
}

#[tokio::test]
async fn a_silent_epmd_times_out_at_the_epmd_timeout() {
    let timeout = Duration::from_millis(500);
    let epmd = FakeEpmd::start(EpmdScript::Silent).await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![host("silent", epmd.addr, Some("h"))]);
    spec.epmd_timeout = timeout;
    let started = Instant::now();

    let report = scan::run(spec, recorder.sink()).await;

    let elapsed = started.elapsed();
    let (_, _, h) = recorder.host("silent");
    assert_eq!(h.result, Err(Error::Timeout));
    assert!(h.latency >= timeout, "gave up early: {:?}", h.latency);
    assert!(elapsed < timeout * 3, "took {elapsed:?}");
    assert!(report.duration <= elapsed);
    assert!(epmd.seen().await.client_closed, "the scan left EPMD open");
}

/// `count` lines of distinct three-letter names.
fn many_names(count: usize) -> String {
    let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').collect();
    let mut text = String::new();
    for i in 0..count {
        let n: String = [i / 1296, (i / 36) % 36, i % 36]
            .iter()
            .map(|d| alphabet[*d % 36])
            .collect();
        text.push_str(&format!("name {n} at port 1\n"));
    }
    text
}

#[tokio::test]
async fn too_many_names_are_refused_without_a_probe() {
    // Three-letter names keep 13 000 lines under the byte cap, so the name cap decides.
    let crowded = names_reply(&many_names(13_000));
    assert!(
        crowded.len() <= MAX_REPLY_BYTES,
        "the premise: under the byte cap"
    );
    // Past about 13 800 such lines the byte cap is met first: refused all the same.
    let huge = names_reply(&many_names(40_000));
    assert!(huge.len() > MAX_REPLY_BYTES);
    let crowded = FakeEpmd::start(EpmdScript::Reply(crowded)).await;
    let huge = FakeEpmd::start(EpmdScript::Reply(huge)).await;
    let recorder = Recorder::new();
    let hosts = vec![
        host("crowded", crowded.addr, Some("h")),
        host("huge", huge.addr, Some("h")),
    ];

    let report = scan::run(spec(hosts), recorder.sink()).await;

    let (_, _, h) = recorder.host("crowded");
    assert_eq!(h.result, Err(Error::TooManyNames(MAX_NAMES)));
    let (_, _, h) = recorder.host("huge");
    assert_eq!(h.result, Err(Error::ReplyTooLarge(MAX_REPLY_BYTES)));
    assert!(report.candidates.is_empty() && recorder.candidates().is_empty());
    crowded.seen().await;
    huge.seen().await;
}

#[tokio::test]
async fn a_hung_candidate_does_not_delay_a_live_one() {
    let probe_timeout = Duration::from_secs(3);
    let hung = FakePeer::start(Script::Silent).await;
    let live = FakePeer::start(Script::Answer(ok_and_challenge("live@h", false))).await;
    // The hung node is listed first, so a sequential scan would meet it first.
    let reply = names_reply(&format!(
        "name hung at port {}\nname live at port {}\n",
        hung.addr.port(),
        live.addr.port()
    ));
    let epmd = FakeEpmd::start(EpmdScript::Reply(reply)).await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![host("local", epmd.addr, Some("h"))]);
    spec.probe_timeout = probe_timeout;

    let report = scan::run(spec, recorder.sink()).await;

    let (live_index, live_at, live_event) = recorder.candidate("live");
    let (hung_index, hung_at, hung_event) = recorder.candidate("hung");
    assert!(matches!(outcome(&live_event), Outcome::Live { .. }));
    assert_eq!(*outcome(&hung_event), Outcome::Unreachable(Error::Timeout));
    assert!(
        live_index < hung_index,
        "the live node waited for the hung one"
    );
    assert!(
        live_at < probe_timeout / 2,
        "the live node was reported after {live_at:?}"
    );
    assert!(hung_at >= probe_timeout, "the hung node gave up early");
    assert!(
        report.duration < probe_timeout * 3,
        "took {:?}",
        report.duration
    );
    hung.seen().await;
    live.seen().await;
    epmd.seen().await;
}

#[tokio::test]
async fn a_silent_epmd_does_not_delay_another_host() {
    let epmd_timeout = Duration::from_secs(3);
    let silent = FakeEpmd::start(EpmdScript::Silent).await;
    let live = FakePeer::start(Script::Answer(ok_and_challenge("live@h", false))).await;
    let good = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name live at port {}\n",
        live.addr.port()
    ))))
    .await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![
        host("silent", silent.addr, Some("h")),
        host("good", good.addr, Some("h")),
    ]);
    spec.epmd_timeout = epmd_timeout;

    let report = scan::run(spec, recorder.sink()).await;

    let (good_index, good_at, _) = recorder.host("good");
    let (live_index, live_at, _) = recorder.candidate("live");
    let (silent_index, silent_at, silent_event) = recorder.host("silent");
    assert_eq!(silent_event.result, Err(Error::Timeout));
    assert!(good_index < live_index && live_index < silent_index);
    assert!(good_at < epmd_timeout / 2, "good host after {good_at:?}");
    assert!(
        live_at < epmd_timeout / 2,
        "its candidate after {live_at:?}"
    );
    assert!(silent_at >= epmd_timeout);
    let labels: Vec<_> = report.hosts.iter().map(|h| h.label.as_str()).collect();
    assert_eq!(labels, ["silent", "good"]);
    silent.seen().await;
    good.seen().await;
    live.seen().await;
}

#[tokio::test]
async fn held_candidates_are_reported_held_and_never_connected() {
    let held = untouched_listener().await;
    let live = FakePeer::start(Script::Answer(ok_and_challenge("b@vm", false))).await;
    let held_port = held.local_addr().unwrap().port();
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name a at port {held_port}\nname b at port {}\n",
        live.addr.port()
    ))))
    .await;
    let mut spec = spec(vec![host("h", epmd.addr, Some("vm"))]);
    // `b` is held at another port: the node restarted, so it is probed.
    spec.hold = [("h", "a", held_port), ("h", "b", 1)]
        .into_iter()
        .map(|(h, a, p)| (h.to_owned(), a.to_owned(), p))
        .collect();
    let recorder = Recorder::new();
    scan::run(spec, recorder.sink()).await;
    let (_, _, a) = recorder.candidate("a");
    assert!(a.held && a.probe.is_none(), "{a:?}");
    let (_, _, b) = recorder.candidate("b");
    assert!(!b.held && matches!(outcome(&b), Outcome::Live { .. }));
    assert_untouched(&held, "the held candidate").await;
    live.seen().await;
}

/// A listing of `names`, each at the port of an untouched listener (a probe would fail it).
async fn listing_of(names: &[&str]) -> (Vec<TcpListener>, String) {
    let mut listeners = Vec::new();
    let mut reply = String::new();
    for name in names {
        let l = untouched_listener().await;
        reply.push_str(&format!(
            "name {name} at port {}\n",
            l.local_addr().unwrap().port()
        ));
        listeners.push(l);
    }
    (listeners, reply)
}

async fn scan_with(reply: &str, last: Option<u64>, skip: &[&str]) -> (Recorder, scan::ScanReport) {
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(reply))).await;
    let recorder = Recorder::new();
    let mut spec = spec(vec![host("local", epmd.addr, Some("h"))]);
    spec.skip = skip.iter().map(|s| s.to_string()).collect();
    spec.hold = HashSet::from([("local".into(), "held".into(), 1)]);
    if let Some(digest) = last {
        spec.last_listings = HashMap::from([("local".to_string(), digest)]);
    }
    let report = scan::run(spec, recorder.sink()).await;
    (recorder, report)
}

#[tokio::test]
async fn the_same_listing_all_connected_sends_no_event_at_all() {
    let (listeners, reply) = listing_of(&["a", "b"]).await;
    let skip = ["a@h", "b@h"];
    let (first, _) = scan_with(&reply, None, &skip).await;
    let (_, _, host1) = first.host("local");
    let digest = host1.listing.expect("a listing digest");
    assert!(!host1.unchanged, "nothing to compare with yet");
    assert_eq!(first.candidates().len(), 2);

    let (second, report) = scan_with(&reply, Some(digest), &skip).await;
    assert!(
        second.events().is_empty(),
        "no event at all: {:?}",
        second.events()
    );
    let host2 = &report.hosts[0];
    assert_eq!((host2.listing, host2.unchanged), (Some(digest), true));
    assert_eq!(host2.result.as_ref().map(|r| r.0).ok(), Some(2));
    let mut reported: Vec<_> = report.candidates.iter().map(|c| c.alive.clone()).collect();
    reported.sort();
    assert_eq!(reported, ["a", "b"], "the report still lists them");
    for l in &listeners {
        assert_untouched(l, "a connected node").await;
    }
}

#[tokio::test]
async fn a_new_port_a_new_name_or_a_name_to_probe_is_told_candidate_by_candidate() {
    let (_listeners, reply) = listing_of(&["a", "b"]).await;
    let (first, _) = scan_with(&reply, None, &["a@h", "b@h"]).await;
    let digest = first.host("local").2.listing.unwrap();

    // b restarted: same name, another port.
    let (_moved, moved) = listing_of(&["a", "b"]).await;
    let (seen, _) = scan_with(&moved, Some(digest), &["a@h", "b@h"]).await;
    assert!(!seen.host("local").2.unchanged);
    assert_eq!(seen.candidates().len(), 2);

    // A new name.
    let (_more, more) = listing_of(&["c"]).await;
    let grown = format!("{reply}{more}");
    let (seen, _) = scan_with(&grown, Some(digest), &["a@h", "b@h", "c@h"]).await;
    assert!(!seen.host("local").2.unchanged);
    assert_eq!(seen.candidates().len(), 3);

    // Same listing, but b is no longer connected: it is probed and reported.
    let (seen, _) = scan_with(&reply, Some(digest), &["a@h"]).await;
    assert!(!seen.host("local").2.unchanged);
    seen.candidate("a");
    seen.candidate("b");
}

#[tokio::test]
async fn held_back_candidates_count_as_nothing_to_probe() {
    let reply = "name a at port 1\nname held at port 1\n".to_string();
    let (first, _) = scan_with(&reply, None, &["a@h"]).await;
    let (_, _, host1) = first.host("local");
    let (second, report) = scan_with(&reply, host1.listing, &["a@h"]).await;
    assert!(report.hosts[0].unchanged);
    assert!(second.events().is_empty(), "{:?}", second.events());
}

#[tokio::test]
async fn a_name_longer_than_an_atom_is_a_bad_reply_and_never_probed() {
    // 250 letters and `@127.0.0.1` make 260 bytes: EPMD accepts such an alive part, but no
    // node can have the name, and an atom of it raises in the owner.
    let alive = "a".repeat(250);
    let (listeners, reply) = listing_of(&[&alive]).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&reply))).await;
    let recorder = Recorder::new();
    scan::run(
        spec(vec![host("127.0.0.1", epmd.addr, None)]),
        recorder.sink(),
    )
    .await;
    let (_, _, c) = recorder.candidate(&alive);
    assert_eq!(c.name.len(), 260);
    assert_eq!(outcome(&c), &Outcome::BadReply(Error::NameTooLong(260)));
    assert_untouched(&listeners[0], "the over-long name").await;
}

#[tokio::test]
async fn a_challenge_naming_more_than_an_atom_holds_is_a_bad_reply() {
    // EPMD lists a short alive part; the listener's challenge names a 260-byte node.
    let claimed = format!("{}@127.0.0.1", "b".repeat(250));
    let peer = FakePeer::start(Script::Answer(ok_and_challenge(&claimed, false))).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name b at port {}\n",
        peer.addr.port()
    ))))
    .await;
    let recorder = Recorder::new();
    scan::run(
        spec(vec![host("127.0.0.1", epmd.addr, None)]),
        recorder.sink(),
    )
    .await;
    let (_, _, c) = recorder.candidate("b");
    assert_eq!(outcome(&c), &Outcome::BadReply(Error::NameTooLong(260)));
    assert!(c.name.len() <= 255, "{}", c.name);
    peer.seen().await;
}

#[tokio::test]
async fn the_gate_sees_the_full_names_the_candidates_will_have_and_admits_by_them() {
    let (listeners, reply) = listing_of(&["a", "b"]).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&reply))).await;
    let label = format!("127.0.0.1:{}", epmd.addr.port());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let mut spec = spec(vec![host(&label, epmd.addr, None)]);
    spec.gate = Some(scan::Gate(Arc::new(move |index, label, names| {
        seen.lock().unwrap().push((index, label.to_owned(), names));
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Only `b`, by its full name.
        let _ = tx.send(vec!["b@127.0.0.1".to_owned()]);
        rx
    })));
    spec.probe_timeout = Duration::from_millis(200);
    let recorder = Recorder::new();
    let local = scan::Local {
        naming: tinycluster_nif::naming::Naming::Short,
        family: None,
    };
    scan::run_as(spec, local, recorder.sink()).await;
    let asked = asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![(
            0,
            label,
            vec!["a@127.0.0.1".to_owned(), "b@127.0.0.1".to_owned()]
        )]
    );
    let names: Vec<String> = recorder.candidates().into_iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["b@127.0.0.1".to_owned()]);
    assert_untouched(&listeners[0], "the node the gate kept out").await;
}

/// A listener per name, none of which accepts: whether a probe connected shows in its backlog.
async fn listeners(names: &[&str]) -> Vec<(String, TcpListener)> {
    let mut all = Vec::new();
    for name in names {
        all.push((name.to_string(), untouched_listener().await));
    }
    all
}

async fn listing(all: &[(String, TcpListener)]) -> FakeEpmd {
    let lines: String = all
        .iter()
        .map(|(name, l)| format!("name {name} at port {}\n", l.local_addr().unwrap().port()))
        .collect();
    FakeEpmd::start(EpmdScript::Reply(names_reply(&lines))).await
}

async fn touched(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(200), listener.accept())
        .await
        .is_ok()
}

#[tokio::test]
async fn past_its_budget_a_scan_defers_candidates_and_probes_those_named_first() {
    let one = listeners(&["a", "b", "c"]).await;
    let two = listeners(&["d", "e"]).await;
    let (epmd_one, epmd_two) = (listing(&one).await, listing(&two).await);
    let recorder = Recorder::new();
    let mut spec = spec(vec![
        host("one", epmd_one.addr, Some("h")),
        host("two", epmd_two.addr, Some("h")),
    ]);
    spec.probe_timeout = Duration::from_millis(300);
    spec.budget.limit = 3;
    spec.budget.first = vec![("two".into(), "e".into()), ("one".into(), "c".into())];

    let report = scan::run(spec, recorder.sink()).await;

    let deferred: Vec<_> = report.candidates.iter().filter(|c| c.deferred).collect();
    let probed: Vec<_> = report
        .candidates
        .iter()
        .filter(|c| c.probe.is_some())
        .collect();
    assert_eq!(
        (deferred.len(), probed.len()),
        (2, 3),
        "{:?}",
        report.candidates
    );
    assert!(deferred.iter().all(|c| c.probe.is_none() && !c.held));
    let probed_names: HashSet<_> = probed.iter().map(|c| c.alive.as_str()).collect();
    assert!(probed_names.contains("c") && probed_names.contains("e"));
    // A deferred candidate sends no event: its owner learns nothing of it yet.
    let told: HashSet<_> = recorder.candidates().into_iter().map(|c| c.alive).collect();
    assert_eq!(told, probed_names.iter().map(|s| s.to_string()).collect());
    // On the wire: exactly the probed ones were connected to.
    for (name, listener) in one.iter().chain(two.iter()) {
        let expected = probed_names.contains(name.as_str());
        assert_eq!(touched(listener).await, expected, "{name}");
    }
}
