//! The TLS probe against fake TLS listeners on 127.0.0.1: the exact ClientHello on the wire,
//! the outcome of a ServerHello, of an alert, of a plain distribution node and of garbage,
//! and that a scan sends the ClientHello to the targets its plan opens with it, and only
//! to those.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{names_reply, ok_and_challenge, EpmdScript, FakeEpmd, FakePeer, Script, BOUND};
use tinycluster_nif::error::Error;
use tinycluster_nif::probe::{probe, FirstFlight, Outcome, ProbeRequest, TlsSeen};
use tinycluster_nif::scan::{self, CandidateReport, Event, Planner, ScanSpec, Target};
use tinycluster_nif::tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const PROBE_NAME: &str = "tinycluster_probe_1@127.0.0.1";
const LONG: Duration = Duration::from_secs(10);

/// A TLS 1.2 server's first flight as OTP sends it: a ServerHello record (90 bytes of
/// handshake) and a Certificate record after it, which the probe must not wait for.
fn server_flight() -> Vec<u8> {
    let mut flight = vec![
        0x16, 0x03, 0x03, 0x00, 0x5A, 0x02, 0x00, 0x00, 0x56, 0x03, 0x03,
    ];
    flight.resize(5 + 0x5A, 0xAB);
    flight.extend_from_slice(&[0x16, 0x03, 0x03, 0x04, 0x00, 0x0B]);
    flight.resize(flight.len() + 0x3FF, 0xCD);
    flight
}

/// What a fake TLS listener saw: the probe's first bytes, and whether it then sent anything
/// more before it closed (a second flight or an alert would be logged by a real server).
struct TlsSeenByPeer {
    hello: Vec<u8>,
    more: Vec<u8>,
}

/// A fake TLS listener for one connection: reads as many bytes as the ClientHello has,
/// writes `answer`, then reads until the probe closes (a reset counts as a close: the probe
/// leaves the rest of the flight unread).
async fn tls_peer(answer: Vec<u8>) -> (SocketAddr, JoinHandle<TlsSeenByPeer>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut stream, _) = tokio::time::timeout(BOUND, listener.accept())
            .await
            .expect("never connected")
            .expect("accept");
        let mut hello = vec![0u8; tls::client_hello().len()];
        tokio::time::timeout(BOUND, stream.read_exact(&mut hello))
            .await
            .expect("no ClientHello")
            .expect("reading the ClientHello");
        let _ = stream.write_all(&answer).await;
        let mut more = Vec::new();
        let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut more))
            .await
            .expect("the probe never closed");
        TlsSeenByPeer { hello, more }
    });
    (addr, task)
}

fn request(addr: SocketAddr, timeout: Duration) -> ProbeRequest<'static> {
    ProbeRequest {
        addr,
        probe_name: PROBE_NAME,
        creation: 1,
        timeout,
        first_flight: FirstFlight::ClientHello,
    }
}

/// The hello as a TLS record restated from RFC 8446: a handshake record whose length covers
/// a ClientHello message whose own length covers the rest.
fn assert_client_hello(bytes: &[u8]) {
    assert_eq!(bytes, tls::client_hello());
    assert_eq!(&bytes[..3], &[0x16, 0x03, 0x01]);
    assert_eq!(
        u16::from_be_bytes([bytes[3], bytes[4]]) as usize,
        bytes.len() - 5
    );
    assert_eq!(bytes[5], 0x01);
    // A plain distribution node's frame: 2 bytes of length, then exactly that many bytes.
    assert_eq!(
        bytes.len(),
        2 + u16::from_be_bytes([bytes[0], bytes[1]]) as usize
    );
    let body = u32::from_be_bytes([0, bytes[6], bytes[7], bytes[8]]) as usize;
    assert_eq!(body, bytes.len() - 9);
}

#[tokio::test]
async fn a_server_hello_is_a_tls_listener_and_the_probe_sends_nothing_after_it() {
    let (addr, peer) = tls_peer(server_flight()).await;
    let started = Instant::now();
    let result = probe(&request(addr, LONG)).await;
    assert_eq!(result.outcome, Outcome::Tls(TlsSeen::ServerHello));
    assert!(started.elapsed() < LONG / 4, "took {:?}", started.elapsed());
    let seen = peer.await.unwrap();
    assert_client_hello(&seen.hello);
    // No alert, no second flight: only the close.
    assert!(
        seen.more.is_empty(),
        "sent after the hello: {:?}",
        seen.more
    );
}

#[tokio::test]
async fn an_alert_is_a_bad_reply_with_its_description() {
    let (addr, peer) = tls_peer(vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]).await;
    let result = probe(&request(addr, LONG)).await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::TlsAlert(70)));
    assert!(peer.await.unwrap().more.is_empty());
}

#[tokio::test]
async fn a_plain_status_or_other_bytes_are_a_bad_reply() {
    for answer in [
        vec![0x00, 0x03, b's', b'o', b'k', 0x00, 0x00],
        b"HTTP/1.1 400 Bad Request\r\n".to_vec(),
        vec![0x16, 0x03, 0x03, 0x00, 0x04, 0x0B, 0x00, 0x00, 0x00],
    ] {
        let (addr, peer) = tls_peer(answer.clone()).await;
        let result = probe(&request(addr, LONG)).await;
        assert!(
            matches!(result.outcome, Outcome::BadReply(Error::Malformed(_))),
            "{answer:?}: {:?}",
            result.outcome
        );
        peer.await.unwrap();
    }
}

#[tokio::test]
async fn a_record_cut_short_is_a_bad_reply_and_a_silent_port_unreachable() {
    let (addr, peer) = tls_peer(vec![0x16, 0x03]).await;
    let result = probe(&request(addr, Duration::from_millis(400))).await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::Timeout));
    peer.await.unwrap();

    // A node that reads the hello as something else and waits for more is silent until the
    // deadline.
    let plain = FakePeer::start(Script::Silent).await;
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let result = probe(&request(plain.addr, timeout)).await;
    assert_eq!(result.outcome, Outcome::Unreachable(Error::Timeout));
    assert!(started.elapsed() < timeout * 5);
}

#[tokio::test]
async fn a_peer_that_closes_on_the_hello_is_not_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = vec![0u8; tls::client_hello().len()];
        stream.read_exact(&mut hello).await.unwrap();
    });
    let result = probe(&request(addr, LONG)).await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::NotTls));
    closer.await.unwrap();
}

fn spec(epmd: SocketAddr) -> ScanSpec {
    ScanSpec {
        local_name: "me@vm".into(),
        probe_timeout: LONG,
        epmd_timeout: LONG,
        ..common::spec(vec![common::host("h", epmd, Some("vm"))], PROBE_NAME)
    }
}

async fn run(spec: ScanSpec, planner: Planner) -> Vec<CandidateReport> {
    let found = Arc::new(Mutex::new(Vec::new()));
    let sink = found.clone();
    scan::run(
        spec,
        scan::Local::default(),
        planner,
        Arc::new(move |e| {
            if let Event::Candidate(c) = e {
                sink.lock().unwrap().push(c);
            }
        }),
    )
    .await;
    let mut found = found.lock().unwrap().clone();
    found.sort_by(|a, b| a.alive.cmp(&b.alive));
    found
}

#[tokio::test]
async fn a_scan_sends_the_hello_only_to_the_targets_planned_with_it() {
    let (tls_addr, tls_peer_task) = tls_peer(server_flight()).await;
    let plain = FakePeer::start(Script::Answer(ok_and_challenge("plain@vm", false))).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name secure at port {}\nname plain at port {}\n",
        tls_addr.port(),
        plain.addr.port()
    ))))
    .await;
    // The plan opens `secure` with the ClientHello, `plain` with send_name.
    let planner = Planner::with(|listing| {
        common::every_name(listing, FirstFlight::SendName)
            .into_iter()
            .map(|t| Target {
                first_flight: if t.alive == "secure" {
                    FirstFlight::ClientHello
                } else {
                    FirstFlight::SendName
                },
                ..t
            })
            .collect()
    });
    let found = run(spec(epmd.addr), planner).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].alive, "plain");
    assert!(matches!(found[0].probe.outcome, Outcome::Live { .. }));
    assert_eq!(found[1].name, "secure@vm");
    assert_eq!(found[1].probe.outcome, Outcome::Tls(TlsSeen::ServerHello));
    assert_client_hello(&tls_peer_task.await.unwrap().hello);
    // The plain node got a send_name, whole (the fake read it as one frame).
    assert_eq!(&plain.seen().await.send_name[17..], PROBE_NAME.as_bytes());
}

#[tokio::test]
async fn a_server_hello_is_a_tls_listener_under_the_listed_name() {
    // Every name opened with the ClientHello, as for a local node that runs TLS: what the
    // ServerHello means is the owner's to say.
    let (tls_addr, tls_peer_task) = tls_peer(server_flight()).await;
    let epmd = FakeEpmd::start(EpmdScript::Reply(names_reply(&format!(
        "name secure at port {}\n",
        tls_addr.port()
    ))))
    .await;
    let found = run(
        spec(epmd.addr),
        common::probe_all_with(FirstFlight::ClientHello),
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].name, "secure@vm");
    assert_eq!(found[0].probe.outcome, Outcome::Tls(TlsSeen::ServerHello));
    let seen = tls_peer_task.await.unwrap();
    assert_client_hello(&seen.hello);
    assert!(
        seen.more.is_empty(),
        "sent after the hello: {:?}",
        seen.more
    );
}
