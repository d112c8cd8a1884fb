//! `inflight::in_turn` against one fake peer that counts the handshakes open at once: probes
//! under one name take turns, probes under different names do not wait for each other.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ok_and_challenge;
use tinycluster_nif::inflight;
use tinycluster_nif::probe::{self, FirstFlight, Outcome, ProbeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

/// How long the peer holds each handshake before it answers, so that overlapping probes
/// would be seen overlapping.
const HOLD: Duration = Duration::from_millis(100);

/// Serves `connections` handshakes, each answered `HOLD` after its `send_name`; returns the
/// instants at which the `send_name`s arrived, in order.
async fn holding_peer(connections: usize) -> (SocketAddr, JoinHandle<Vec<Instant>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut served = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await.unwrap();
            served.push(tokio::spawn(async move {
                let mut header = [0u8; 2];
                stream.read_exact(&mut header).await.unwrap();
                let mut send_name = vec![0u8; u16::from_be_bytes(header) as usize];
                stream.read_exact(&mut send_name).await.unwrap();
                let arrived = Instant::now();
                tokio::time::sleep(HOLD).await;
                stream
                    .write_all(&ok_and_challenge("app@vm1", false))
                    .await
                    .unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                arrived
            }));
        }
        let mut arrivals = Vec::new();
        for s in served {
            arrivals.push(s.await.unwrap());
        }
        arrivals.sort();
        arrivals
    });
    (addr, task)
}

async fn three_probes(addr: SocketAddr, names: [&str; 3]) -> Vec<Outcome> {
    let probes = names.map(|probe_name| async move {
        let req = ProbeRequest {
            addr,
            probe_name,
            creation: 1,
            timeout: Duration::from_secs(5),
            first_flight: FirstFlight::SendName,
        };
        inflight::in_turn(&req, probe::probe(&req)).await.outcome
    });
    let [a, b, c] = probes;
    let (a, b, c) = tokio::join!(a, b, c);
    vec![a, b, c]
}

#[tokio::test]
async fn probes_under_one_name_take_turns() {
    let (addr, peer) = holding_peer(3).await;
    let live = Outcome::Live {
        name: "app@vm1".into(),
        hidden: false,
        creation: 7,
    };
    let outcomes = three_probes(addr, ["p@h", "p@h", "p@h"]).await;
    assert_eq!(outcomes, vec![live.clone(), live.clone(), live]);
    // Each waits for the one before to end, which takes the peer's hold at least.
    let arrivals = peer.await.unwrap();
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= HOLD,
            "two handshakes under one name overlapped"
        );
    }
}

/// Serves `connections` handshakes and answers none until all of their `send_name`s have
/// arrived: probes that waited for one another would never all arrive, and time out.
async fn gathering_peer(connections: usize) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let barrier = Arc::new(Barrier::new(connections));
        let mut served = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await.unwrap();
            let barrier = barrier.clone();
            served.push(tokio::spawn(async move {
                let mut header = [0u8; 2];
                stream.read_exact(&mut header).await.unwrap();
                let mut send_name = vec![0u8; u16::from_be_bytes(header) as usize];
                stream.read_exact(&mut send_name).await.unwrap();
                barrier.wait().await;
                let _ = stream.write_all(&ok_and_challenge("app@vm1", false)).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            }));
        }
        for s in served {
            s.await.unwrap();
        }
    });
    (addr, task)
}

#[tokio::test]
async fn probes_under_other_names_do_not_wait() {
    let (addr, peer) = gathering_peer(3).await;
    // Each is answered only once all three are in flight together.
    let outcomes = three_probes(addr, ["p1@h", "p2@h", "p3@h"]).await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Live { .. })),
        "probes under other names waited: {outcomes:?}"
    );
    peer.await.unwrap();
}
