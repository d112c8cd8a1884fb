//! `probe::probe` against fake distribution peers on 127.0.0.1: the bytes it sends, the
//! outcome of every status and of every cut of the peer's answer, and its deadline.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    challenge_frame, closed_port, ok_and_challenge, status_frame, FakePeer, Script, PUBLISHED,
};
use tinycluster_nif::error::Error;
use tinycluster_nif::handshake::{Status, PROBE_FLAGS};
use tinycluster_nif::probe::{expect, probe, FirstFlight, Outcome, Probe, ProbeRequest, TlsSeen};

const PROBE_NAME: &str = "tinycluster_probe_1@127.0.0.1";
const CREATION: u32 = 0x0102_0304;
/// Far longer than any answered probe takes, so that a test which expects an answer fails on
/// the outcome, not on the clock.
const LONG: Duration = Duration::from_secs(10);

fn request(addr: SocketAddr) -> ProbeRequest<'static> {
    ProbeRequest {
        addr,
        probe_name: PROBE_NAME,
        creation: CREATION,
        timeout: LONG,
        first_flight: FirstFlight::SendName,
    }
}

/// Probes a fake peer that answers `answer` and waits for the close; returns the probe and
/// what the peer received after its answer.
async fn probe_answering(answer: Vec<u8>) -> (Probe, Vec<u8>) {
    let peer = FakePeer::start(Script::Answer(answer)).await;
    let result = probe(&request(peer.addr)).await;
    let seen = peer.seen().await;
    assert_send_name(&seen.send_name);
    (result, seen.after.expect("the peer waited for the close"))
}

/// The `send_name` a probe must send, built from the protocol document field by field.
fn assert_send_name(frame: &[u8]) {
    let name = PROBE_NAME.as_bytes();
    let mut expected = ((1 + 8 + 4 + 2 + name.len()) as u16).to_be_bytes().to_vec();
    expected.push(b'N');
    expected.extend_from_slice(&PROBE_FLAGS.to_be_bytes());
    expected.extend_from_slice(&CREATION.to_be_bytes());
    expected.extend_from_slice(&(name.len() as u16).to_be_bytes());
    expected.extend_from_slice(name);
    assert_eq!(frame, expected.as_slice(), "send_name bytes");
    // The fields a peer checks, read back from the wire rather than from the constants.
    let flags = u64::from_be_bytes(frame[3..11].try_into().unwrap());
    let creation = u32::from_be_bytes(frame[11..15].try_into().unwrap());
    assert_eq!(flags & PUBLISHED, 0, "a probe never claims to be published");
    assert_ne!(creation, 0, "JInterface closes on a zero creation");
}

#[tokio::test]
async fn published_challenge_is_a_live_visible_node_and_nothing_follows_it() {
    let (result, after) = probe_answering(ok_and_challenge("app@vm1", false)).await;
    assert_eq!(
        result.outcome,
        Outcome::Live {
            name: "app@vm1".into(),
            hidden: false,
            // The creation tests/common's challenge carries.
            creation: 7,
        }
    );
    assert!(
        after.is_empty(),
        "the probe answered the challenge: {after:?}"
    );
    assert!(result.latency < LONG);
}

#[tokio::test]
async fn challenge_without_published_is_a_hidden_node() {
    let (result, after) = probe_answering(ok_and_challenge("app@vm1", true)).await;
    assert_eq!(
        result.outcome,
        Outcome::Live {
            name: "app@vm1".into(),
            hidden: true,
            creation: 7,
        }
    );
    assert!(
        after.is_empty(),
        "the probe answered the challenge: {after:?}"
    );
}

#[tokio::test]
async fn ok_simultaneous_goes_on_to_the_challenge() {
    let mut answer = status_frame("ok_simultaneous");
    answer.extend_from_slice(&challenge_frame(PUBLISHED, "app@vm1"));
    let (result, after) = probe_answering(answer).await;
    assert_eq!(
        result.outcome,
        Outcome::Live {
            name: "app@vm1".into(),
            hidden: false,
            creation: 7,
        }
    );
    assert!(
        after.is_empty(),
        "the probe answered the challenge: {after:?}"
    );
}

#[tokio::test]
async fn nok_and_alive_are_busy() {
    for (text, status) in [("nok", Status::Nok), ("alive", Status::Alive)] {
        let (result, after) = probe_answering(status_frame(text)).await;
        assert_eq!(result.outcome, Outcome::Busy(status), "status {text}");
        assert!(after.is_empty(), "status {text}: the probe sent {after:?}");
    }
}

#[tokio::test]
async fn not_allowed_is_reported() {
    let (result, after) = probe_answering(status_frame("not_allowed")).await;
    assert_eq!(result.outcome, Outcome::NotAllowed);
    assert!(after.is_empty(), "the probe sent {after:?}");
}

#[tokio::test]
async fn unknown_status_is_a_bad_reply() {
    let (result, _) = probe_answering(status_frame("maybe")).await;
    assert_eq!(
        result.outcome,
        Outcome::BadReply(Error::UnknownStatus("maybe".into()))
    );
}

#[tokio::test]
async fn status_frame_without_s_is_malformed() {
    let (result, _) = probe_answering(vec![0, 3, b'x', b'o', b'k']).await;
    assert!(
        matches!(result.outcome, Outcome::BadReply(Error::Malformed(_))),
        "{:?}",
        result.outcome
    );
}

#[tokio::test]
async fn huge_status_length_is_refused_at_once() {
    let peer = FakePeer::start(Script::Answer(vec![0xFF, 0xFF])).await;
    let started = Instant::now();
    let result = probe(&request(peer.addr)).await;
    let elapsed = started.elapsed();
    assert_eq!(
        result.outcome,
        Outcome::BadReply(Error::FrameTooLarge(65535))
    );
    // The length alone decides: the 65535 bytes it announces are never awaited.
    assert!(elapsed < LONG / 4, "took {elapsed:?}");
    let after = peer.seen().await.after.unwrap();
    assert!(after.is_empty(), "the probe sent {after:?}");
}

#[tokio::test]
async fn huge_challenge_length_is_refused_at_once() {
    let mut answer = status_frame("ok");
    answer.extend_from_slice(&[0xFF, 0xFF]);
    let started = Instant::now();
    let (result, _) = probe_answering(answer).await;
    assert_eq!(
        result.outcome,
        Outcome::BadReply(Error::FrameTooLarge(65535))
    );
    assert!(started.elapsed() < LONG / 4, "took {:?}", started.elapsed());
}

/// A challenge frame of exactly `len` payload bytes naming `name`: the bytes past the name
/// are the fields a later release may append, which a probe reads and ignores.
fn challenge_of_len(name: &str, len: usize) -> Vec<u8> {
    let mut payload = challenge_frame(PUBLISHED, name)[2..].to_vec();
    payload.resize(len, 0);
    let mut frame = (len as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// The README's caps, at their exact limits: a status of 512 bytes and a challenge of 530
/// are read whole; one byte more is refused on the length alone, before any of it is read.
#[tokio::test]
async fn frames_are_read_up_to_their_caps_and_refused_one_byte_past() {
    // 512: `s` and 511 bytes of a status no node sends, read to its end.
    let (result, _) = probe_answering(status_frame(&"x".repeat(511))).await;
    assert_eq!(
        result.outcome,
        Outcome::BadReply(Error::UnknownStatus("x".repeat(64)))
    );
    let (result, _) = probe_answering(513u16.to_be_bytes().to_vec()).await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::FrameTooLarge(513)));

    let mut answer = status_frame("ok");
    answer.extend_from_slice(&challenge_of_len("app@vm1", 530));
    let (result, after) = probe_answering(answer).await;
    assert_eq!(
        result.outcome,
        Outcome::Live {
            name: "app@vm1".into(),
            hidden: false,
            creation: 7,
        }
    );
    assert!(after.is_empty(), "the probe sent {after:?}");
    let mut answer = status_frame("ok");
    answer.extend_from_slice(&531u16.to_be_bytes());
    let (result, _) = probe_answering(answer).await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::FrameTooLarge(531)));
}

#[tokio::test]
async fn a_tls_alert_is_told_apart_from_an_oversized_frame() {
    // What a TLS distribution listener answers to plain text: an alert record, whose first
    // two bytes would otherwise read as a 5379-byte status frame.
    let alert = vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let peer = FakePeer::start(Script::AnswerAndClose(alert)).await;
    let started = Instant::now();
    let result = probe(&request(peer.addr)).await;
    assert_eq!(result.outcome, Outcome::Tls(TlsSeen::Alert));
    assert!(started.elapsed() < LONG / 4, "took {:?}", started.elapsed());
    assert_send_name(&peer.seen().await.send_name);
}

#[tokio::test]
async fn version_5_challenge_is_a_bad_reply() {
    let mut answer = status_frame("ok");
    let mut v5 = challenge_frame(PUBLISHED, "app@vm1");
    v5[2] = b'n';
    answer.extend_from_slice(&v5);
    let (result, _) = probe_answering(answer).await;
    assert!(
        matches!(result.outcome, Outcome::BadReply(Error::Malformed(_))),
        "{:?}",
        result.outcome
    );
}

#[tokio::test]
async fn silent_peer_times_out_as_unreachable() {
    let timeout = Duration::from_millis(500);
    let peer = FakePeer::start(Script::Silent).await;
    let started = Instant::now();
    let result = probe(&ProbeRequest {
        timeout,
        ..request(peer.addr)
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(result.outcome, Outcome::Unreachable(Error::Timeout));
    assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
    // One deadline for the whole exchange: not one per read, nor a multiple of it.
    assert!(elapsed < timeout * 3, "took {elapsed:?}");
    assert!(result.latency >= timeout && result.latency <= elapsed);
    // It sent its name, then closed cleanly on giving up.
    let seen = peer.seen().await;
    assert_send_name(&seen.send_name);
    assert!(seen.after.unwrap().is_empty());
}

#[tokio::test]
async fn peer_stalling_inside_the_status_is_a_bad_reply_at_the_deadline() {
    // One byte of the status header arrives: the peer is talking, then freezes.
    let timeout = Duration::from_millis(400);
    let peer = FakePeer::start(Script::Answer(vec![0])).await;
    let started = Instant::now();
    let result = probe(&ProbeRequest {
        timeout,
        ..request(peer.addr)
    })
    .await;
    assert_eq!(result.outcome, Outcome::BadReply(Error::Timeout));
    assert!(
        started.elapsed() < timeout * 5,
        "took {:?}",
        started.elapsed()
    );
    peer.seen().await;
}

#[tokio::test]
async fn closed_port_is_refused() {
    let addr = closed_port().await;
    let result = probe(&request(addr)).await;
    assert_eq!(result.outcome, Outcome::Unreachable(Error::Refused));
    assert!(result.latency < LONG / 4);
}

#[tokio::test]
async fn challenge_naming_another_node_is_a_mismatch() {
    for claimed in ["other@vm1", "apps@vm1", "ap@vm1"] {
        let (result, after) = probe_answering(ok_and_challenge(claimed, false)).await;
        // The probe takes the name the challenge gives; read for `app`, it claims another.
        assert_eq!(
            result.outcome,
            Outcome::Live {
                name: claimed.into(),
                hidden: false,
                creation: 7,
            },
            "claimed {claimed}"
        );
        assert_eq!(
            expect(result.outcome, "app"),
            Outcome::NameMismatch {
                claimed: claimed.into()
            },
            "claimed {claimed}"
        );
        assert!(
            after.is_empty(),
            "claimed {claimed}: the probe sent {after:?}"
        );
    }
    // Any host the challenge names is accepted: the scan checks the naming mode.
    let (result, _) = probe_answering(ok_and_challenge("app@elsewhere", true)).await;
    let live = Outcome::Live {
        name: "app@elsewhere".into(),
        hidden: true,
        creation: 7,
    };
    assert_eq!(result.outcome, live);
    assert_eq!(expect(result.outcome, "app"), live);
    // Only a live node's name is read against the alive part.
    for other in [
        Outcome::NotAllowed,
        Outcome::Busy(Status::Nok),
        Outcome::Unreachable(Error::Timeout),
        Outcome::Tls(TlsSeen::ServerHello),
    ] {
        assert_eq!(expect(other.clone(), "app"), other);
    }
}

#[tokio::test]
async fn every_cut_of_the_answer_has_its_documented_outcome() {
    let full = ok_and_challenge("app@vm1", false);
    for cut in 0..=full.len() {
        let peer = FakePeer::start(Script::AnswerAndClose(full[..cut].to_vec())).await;
        let result = probe(&request(peer.addr)).await;
        let seen = peer.seen().await;
        assert_send_name(&seen.send_name);
        let expected = if cut == 0 {
            Outcome::Unreachable(Error::Closed)
        } else if cut < full.len() {
            Outcome::BadReply(Error::Closed)
        } else {
            Outcome::Live {
                name: "app@vm1".into(),
                hidden: false,
                creation: 7,
            }
        };
        assert_eq!(result.outcome, expected, "cut after {cut} bytes");
        assert!(
            result.latency < LONG / 4,
            "cut after {cut} bytes: {:?}",
            result.latency
        );
    }
}

#[tokio::test]
async fn every_cut_of_a_busy_status_has_its_documented_outcome() {
    let full = status_frame("not_allowed");
    for cut in 0..full.len() {
        let peer = FakePeer::start(Script::AnswerAndClose(full[..cut].to_vec())).await;
        let result = probe(&request(peer.addr)).await;
        peer.seen().await;
        let expected = if cut == 0 {
            Outcome::Unreachable(Error::Closed)
        } else {
            Outcome::BadReply(Error::Closed)
        };
        assert_eq!(result.outcome, expected, "cut after {cut} bytes");
    }
}

#[tokio::test]
async fn a_challenge_with_bytes_after_the_name_is_a_live_node() {
    // A later release may append fields to the challenge; the protocol says to ignore them.
    let mut challenge = challenge_frame(PROBE_FLAGS | PUBLISHED, "app@vm1")[2..].to_vec();
    challenge.extend_from_slice(b"\x00\x01future");
    let mut answer = status_frame("ok");
    answer.extend_from_slice(&(challenge.len() as u16).to_be_bytes());
    answer.extend_from_slice(&challenge);
    let (result, after) = probe_answering(answer).await;
    assert_eq!(
        result.outcome,
        Outcome::Live {
            name: "app@vm1".into(),
            hidden: false,
            creation: 7,
        }
    );
    assert!(
        after.is_empty(),
        "the probe sent {after:?} after the challenge"
    );
}
