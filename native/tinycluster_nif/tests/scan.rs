//! `scan::run` against fake EPMDs and fake distribution peers on loopback: what each kind of
//! EPMD reply becomes, that exactly the plan's targets are probed, one connection per
//! listener however many names it has, a plan that never comes, the naming rule and the
//! local name, and that nothing slow delays the events of what is fast.
//!
//! Timing assertions are orderings and generous upper bounds: the tests share a small, busy
//! machine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    closed_port, host, names, names_reply, ok_and_challenge, outcome, EpmdScript, FakeEpmd,
    FakePeer, Recorder, Script, ServingPeer, ENDLESS_CAP,
};
use tinycluster_nif::epmd::{MAX_NAMES, MAX_REPLY_BYTES};
use tinycluster_nif::error::Error;
use tinycluster_nif::naming::Naming;
use tinycluster_nif::probe::{FirstFlight, Outcome};
use tinycluster_nif::scan::{self, HostSpec, Listed, Planner, ScanSpec, Target};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const PROBE_NAME: &str = "tinycluster_probe_1@127.0.0.1";
const CREATION: u32 = 0x0A0B_0C0D;

fn spec(hosts: Vec<HostSpec>) -> ScanSpec {
    ScanSpec {
        creation: CREATION,
        ..common::spec(hosts, PROBE_NAME)
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

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().unwrap().port()
}

/// The `send_name` this file's probes send, as a fake peer saw it.
fn assert_our_send_name(send_name: &[u8]) {
    assert_eq!(&send_name[17..], PROBE_NAME.as_bytes());
    assert_eq!(&send_name[11..15], CREATION.to_be_bytes());
}

#[tokio::test]
async fn a_good_reply_leads_to_probes_of_its_nodes_and_only_those() {
    let visible = FakePeer::start(Script::Answer(ok_and_challenge("a@h", false))).await;
    let hidden = FakePeer::start(Script::Answer(ok_and_challenge("b@h", true))).await;
    let refused = closed_port().await;
    // This node itself, listed like any other: probed (the plan would have left it out),
    // and never reported once its challenge names it.
    let local = FakePeer::start(Script::Answer(ok_and_challenge("me@h", false))).await;
    let reply = names_reply(&format!(
        "name a at port {}\nname b at port {}\nname c at port {}\nname me at port {}\n",
        visible.addr.port(),
        hidden.addr.port(),
        refused.port(),
        local.addr.port(),
    ));
    let epmd = FakeEpmd::start(EpmdScript::Reply(reply)).await;
    let recorder = Recorder::new();
    let spec = spec(vec![host("local", epmd.addr, Some("h"))]);

    let report = common::scan_all(spec, &recorder).await;

    let epmd_port = epmd.addr.port();
    assert_eq!(epmd.seen().await.request, [0, 1, b'n'], "NAMES_REQ bytes");
    let (host_index, _, listing) = recorder.listed("local");
    assert_eq!(host_index, 0, "the host is reported before its candidates");
    assert_eq!(
        (listing.index, listing.address.as_str(), listing.epmd_port),
        (0, "127.0.0.1", epmd_port)
    );
    let expected = [
        ("a", visible.addr.port()),
        ("b", hidden.addr.port()),
        ("c", refused.port()),
        ("me", local.addr.port()),
    ]
    .map(|(alive, port)| (alive.to_owned(), port, format!("{alive}@h")));
    assert_eq!(names(&listing), expected, "the names as listed, in order");
    assert_eq!(listing.result.as_ref().unwrap().1, [], "nothing malformed");
    assert_eq!(report.hosts.len(), 1);
    assert_eq!(report.hosts[0].result, listing.result);

    let (_, _, a) = recorder.candidate("a");
    assert_eq!(
        *outcome(&a),
        Outcome::Live {
            name: "a@h".into(),
            hidden: false,
            creation: 7,
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
            creation: 7,
        }
    );
    let (_, _, c) = recorder.candidate("c");
    assert_eq!(*outcome(&c), Outcome::Unreachable(Error::Refused));
    assert_eq!(c.name, "c@h");
    // The local node is not a candidate at all: no event, nothing in the report.
    let mut alives: Vec<_> = recorder.candidates().into_iter().map(|c| c.alive).collect();
    alives.sort();
    assert_eq!(alives, ["a", "b", "c"]);
    let mut reported: Vec<_> = report.candidates.iter().map(|c| c.alive.clone()).collect();
    reported.sort();
    assert_eq!(reported, alives, "the report holds what the events said");

    for peer in [visible, hidden, local] {
        let seen = peer.seen().await;
        assert_our_send_name(&seen.send_name);
        assert_eq!(seen.after.unwrap(), b"", "the probe answered a challenge");
    }
}

#[tokio::test]
async fn without_a_node_host_names_use_the_host_as_given_and_any_host_is_accepted() {
    let live = FakePeer::start(Script::Answer(ok_and_challenge("a@far.example", false))).await;
    let local = FakePeer::start(Script::Answer(ok_and_challenge("me@127.0.0.1", false))).await;
    let reply = names_reply(&format!(
        "name a at port {}\nname me at port {}\n",
        live.addr.port(),
        local.addr.port(),
    ));
    let epmd = FakeEpmd::start(EpmdScript::Reply(reply)).await;
    let recorder = Recorder::new();
    // The label carries the EPMD port (the same host listed twice); names never do.
    let label = format!("127.0.0.1:{}", epmd.addr.port());
    let mut spec = spec(vec![host(&label, epmd.addr, None)]);
    spec.local_name = "me@127.0.0.1".into();

    common::scan_all(spec, &recorder).await;

    let (_, _, listing) = recorder.listed(&label);
    let listed: Vec<_> = names(&listing).into_iter().map(|(_, _, n)| n).collect();
    assert_eq!(listed, ["a@127.0.0.1", "me@127.0.0.1"]);
    let (_, _, a) = recorder.candidate("a");
    assert_eq!(
        *outcome(&a),
        Outcome::Live {
            name: "a@far.example".into(),
            hidden: false,
            creation: 7,
        }
    );
    assert_eq!(
        a.name, "a@far.example",
        "a live node is named by its challenge"
    );
    assert_eq!(
        recorder.candidates().len(),
        1,
        "me@127.0.0.1 is the local node"
    );
    live.seen().await;
    local.seen().await;
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

    let report = common::scan_all(spec(vec![host("local", epmd.addr, Some("h"))]), &recorder).await;

    let (_, _, h) = recorder.listed("local");
    let (listed, malformed) = h.result.expect("the reply is an EPMD reply");
    assert_eq!(
        listed,
        [Listed {
            alive: "good".into(),
            port: live.addr.port(),
            name: "good@h".into()
        }]
    );
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
            creation: 7,
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

    let report = common::scan_all(spec(hosts), &recorder).await;

    for label in ["http", "empty", "short", "port-zero", "port-too-big"] {
        let (_, _, h) = recorder.listed(label);
        assert!(
            matches!(h.result, Err(Error::Malformed(_))),
            "{label}: {:?}",
            h.result
        );
    }
    let (_, _, h) = recorder.listed("binary-body");
    let (listed, malformed) = h.result.expect("a valid port makes it an EPMD reply");
    assert!(listed.is_empty());
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
    let report = common::scan_all(spec(vec![host("gone", addr, None)]), &recorder).await;
    let (_, _, h) = recorder.listed("gone");
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

    let report = common::scan_all(spec, &recorder).await;

    let (_, _, h) = recorder.listed("endless");
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

    let report = common::scan_all(spec, &recorder).await;

    let elapsed = started.elapsed();
    let (_, _, h) = recorder.listed("silent");
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

    let report = common::scan_all(spec(hosts), &recorder).await;

    let (_, _, h) = recorder.listed("crowded");
    assert_eq!(h.result, Err(Error::TooManyNames(MAX_NAMES)));
    let (_, _, h) = recorder.listed("huge");
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

    let report = common::scan_all(spec, &recorder).await;

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
    // The hung node's probe is parked (park.rs), its socket open: no close to wait for.
    drop(hung);
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

    let report = common::scan_all(spec, &recorder).await;

    let (good_index, good_at, _) = recorder.listed("good");
    let (live_index, live_at, _) = recorder.candidate("live");
    let (silent_index, silent_at, silent_event) = recorder.listed("silent");
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
    common::scan_all(spec(vec![host("127.0.0.1", epmd.addr, None)]), &recorder).await;
    let (_, _, c) = recorder.candidate("b");
    assert_eq!(outcome(&c), &Outcome::BadReply(Error::NameTooLong(260)));
    assert!(c.name.len() <= 255, "{}", c.name);
    peer.seen().await;
}

#[tokio::test]
async fn the_plans_targets_are_probed_and_nothing_else() {
    let left_out = untouched_listener().await;
    let elsewhere = untouched_listener().await;
    let unlisted = untouched_listener().await;
    let live = FakePeer::start(Script::Answer(ok_and_challenge("b@vm", false))).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name a at port {}\nname b at port {}\n",
        port_of(&left_out),
        live.addr.port()
    ))))
    .await;
    let label = format!("127.0.0.1:{}", epmd.addr.port());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let (elsewhere_port, unlisted_port) = (port_of(&elsewhere), port_of(&unlisted));
    let target = |alive: &str, port| Target {
        alive: alive.into(),
        port,
        first_flight: FirstFlight::SendName,
    };
    let planner = Planner::with(move |listing| {
        seen.lock().unwrap().push(listing.clone());
        let b = names(listing)[1].1;
        vec![
            // `a` is left out; `b` is asked for twice, and probed once.
            target("b", b),
            // Neither was listed: a name at another name's port, a listed name elsewhere.
            target("zz", b),
            target("zz", unlisted_port),
            target("a", elsewhere_port),
            target("b", b),
        ]
    });
    let recorder = Recorder::new();
    let local = scan::Local {
        naming: Naming::Short,
        family: None,
    };

    let report = scan::run(
        spec(vec![host(&label, epmd.addr, None)]),
        local,
        planner,
        recorder.sink(),
    )
    .await;

    // The plan saw the listing the owner sees, names as the candidates will have them.
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].index, asked[0].label.as_str()),
        (0, label.as_str())
    );
    assert_eq!(
        names(&asked[0]),
        [
            ("a".into(), port_of(&left_out), "a@127.0.0.1".into()),
            ("b".into(), live.addr.port(), "b@127.0.0.1".into())
        ]
    );
    let (_, _, b) = recorder.candidate("b");
    assert_eq!(
        (b.name.as_str(), b.port, outcome(&b)),
        (
            "b@vm",
            live.addr.port(),
            &Outcome::Live {
                name: "b@vm".into(),
                hidden: false,
                creation: 7,
            }
        )
    );
    assert_eq!(
        recorder.candidates().len(),
        1,
        "{:?}",
        recorder.candidates()
    );
    assert_eq!(report.candidates.len(), 1);
    assert_untouched(&left_out, "the name the plan left out").await;
    assert_untouched(&elsewhere, "a listed name at a port it was not listed at").await;
    assert_untouched(&unlisted, "a name the host never listed").await;
    let seen = live.seen().await;
    assert_our_send_name(&seen.send_name);
}

#[tokio::test]
async fn names_listed_at_one_port_share_one_connection_and_each_reads_the_answer() {
    // One node; its EPMD (stale entries, or a listener that lies) lists three names at its
    // port.
    let node = ServingPeer::start_on("127.0.0.1", ok_and_challenge("b@h", false)).await;
    let port = node.addr.port();
    let reply = format!("name a at port {port}\nname b at port {port}\nname c at port {port}\n");

    for scans in 1..=2 {
        let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&reply))).await;
        let recorder = Recorder::new();
        common::scan_all(spec(vec![host("local", epmd.addr, Some("h"))]), &recorder).await;
        epmd.seen().await;

        // One connection per scan, whatever the names.
        assert_eq!(node.accepted(), scans, "connections after {scans} scans");
        let seen = node.served(1).await;
        assert_eq!(seen.len(), 1);
        assert_our_send_name(&seen[0].send_name);
        assert_eq!(seen[0].after.as_deref(), Some(&b""[..]));
        // Each name reads the one answer against its own alive part.
        let (_, _, b) = recorder.candidate("b");
        assert_eq!(
            (b.name.as_str(), outcome(&b)),
            (
                "b@h",
                &Outcome::Live {
                    name: "b@h".into(),
                    hidden: false,
                    creation: 7,
                }
            )
        );
        for alive in ["a", "c"] {
            let (_, _, c) = recorder.candidate(alive);
            assert_eq!(
                (c.name.as_str(), c.port, outcome(&c)),
                (
                    format!("{alive}@h").as_str(),
                    port,
                    &Outcome::NameMismatch {
                        claimed: "b@h".into()
                    }
                ),
                "{alive}"
            );
        }
        assert_eq!(recorder.candidates().len(), 3);
    }
}

/// A planner that answers only the hosts `answered` names, at once with every name; the
/// others never hear back while the scan runs (their answers are kept, unsent), except
/// `dropped`, whose answer is dropped at once.
fn planner_answering(answered: &'static str, dropped: &'static str) -> Planner {
    let kept: Arc<Mutex<Vec<oneshot::Sender<Vec<Target>>>>> = Arc::default();
    Planner(Arc::new(move |listing| {
        let (tx, rx) = oneshot::channel();
        if listing.label == answered {
            let _ = tx.send(common::every_name(listing, FirstFlight::SendName));
        } else if listing.label != dropped {
            kept.lock().unwrap().push(tx);
        }
        rx
    }))
}

#[tokio::test]
async fn a_plan_that_never_comes_is_a_plan_timeout_and_the_scan_ends() {
    let epmd_timeout = Duration::from_millis(600);
    let waiting = untouched_listener().await;
    let dropped = untouched_listener().await;
    let live = FakePeer::start(Script::Answer(ok_and_challenge("live@h", false))).await;
    let line = |alive: &str, port: u16| names_reply(&format!("name {alive} at port {port}\n"));
    let waiting_epmd = FakeEpmd::start(EpmdScript::Reply(line("w", port_of(&waiting)))).await;
    let dropped_epmd = FakeEpmd::start(EpmdScript::Reply(line("d", port_of(&dropped)))).await;
    let good_epmd = FakeEpmd::start(EpmdScript::Reply(line("live", live.addr.port()))).await;
    let mut spec = spec(vec![
        host("waiting", waiting_epmd.addr, Some("h")),
        host("dropped", dropped_epmd.addr, Some("h")),
        host("good", good_epmd.addr, Some("h")),
    ]);
    spec.epmd_timeout = epmd_timeout;
    let recorder = Recorder::new();
    let started = Instant::now();

    let report = scan::run(
        spec,
        scan::Local::default(),
        planner_answering("good", "dropped"),
        recorder.sink(),
    )
    .await;

    let elapsed = started.elapsed();
    // The listing went out as EPMD gave it; the host is a plan timeout in the report.
    let (_, listed_at, listing) = recorder.listed("waiting");
    assert_eq!(names(&listing).len(), 1);
    let results: Vec<_> = report.hosts.iter().map(|h| h.result.clone()).collect();
    assert_eq!(results[0], Err(Error::PlanTimeout));
    assert_eq!(results[1], Err(Error::PlanTimeout), "an answer dropped");
    assert!(results[2].is_ok());
    // It waited its EPMD timeout for the plan, and not much longer; the scan then ended.
    assert!(
        elapsed >= listed_at + epmd_timeout,
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < epmd_timeout * 4, "took {elapsed:?}");
    // The host that was answered did not wait for the one that was not.
    let (_, live_at, c) = recorder.candidate("live");
    assert!(matches!(outcome(&c), Outcome::Live { .. }));
    assert!(live_at < listed_at + epmd_timeout, "after {live_at:?}");
    assert_eq!(report.candidates.len(), 1);
    assert_untouched(&waiting, "a name whose plan never came").await;
    assert_untouched(&dropped, "a name whose plan was dropped").await;
    live.seen().await;
}

#[tokio::test]
async fn a_node_of_the_other_naming_mode_is_not_live() {
    let long = FakePeer::start(Script::Answer(ok_and_challenge("a@a.example", false))).await;
    let short = FakePeer::start(Script::Answer(ok_and_challenge("b@vm", false))).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name a at port {}\nname b at port {}\n",
        long.addr.port(),
        short.addr.port()
    ))))
    .await;
    let recorder = Recorder::new();
    let local = scan::Local {
        naming: Naming::Short,
        family: None,
    };
    scan::run(
        spec(vec![host("127.0.0.1", epmd.addr, None)]),
        local,
        common::probe_all(),
        recorder.sink(),
    )
    .await;
    let (_, _, a) = recorder.candidate("a");
    assert_eq!(
        outcome(&a),
        &Outcome::OtherNaming {
            claimed: "a@a.example".into()
        }
    );
    assert_eq!(a.name, "a@127.0.0.1", "named as listed, not as it claims");
    let (_, _, b) = recorder.candidate("b");
    assert_eq!(
        (b.name.as_str(), outcome(&b)),
        (
            "b@vm",
            &Outcome::Live {
                name: "b@vm".into(),
                hidden: false,
                creation: 7,
            }
        )
    );
    long.seen().await;
    short.seen().await;
}
