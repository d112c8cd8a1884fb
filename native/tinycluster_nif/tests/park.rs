//! Parked probes against a fake node that "freezes" (reads the probe, answers nothing) and
//! then "thaws" (answers the very probe it held): repeated probes open one connection, and
//! the answer reaches the first probe after the thaw.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok_and_challenge, BOUND};
use tinycluster_nif::error::Error;
use tinycluster_nif::park;
use tinycluster_nif::probe::{FirstFlight, Outcome, ProbeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A probe that meets silence gives up after a second: longer than a loaded machine takes
/// to connect on loopback, so that the first probe reaches the node and is parked.
fn request(addr: SocketAddr, probe_name: &str) -> ProbeRequest<'_> {
    ProbeRequest {
        addr,
        probe_name,
        creation: 7,
        timeout: Duration::from_secs(1),
        first_flight: FirstFlight::SendName,
    }
}

/// Reads a probe's `send_name` frame, as a node does before it answers.
async fn read_send_name(stream: &mut TcpStream) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    let mut name = vec![0u8; u16::from_be_bytes(header) as usize];
    stream.read_exact(&mut name).await.unwrap();
}

/// A node that accepts connections (counted), reads each `send_name`, and answers only once
/// `thaw` fires, on the connection it holds.
async fn frozen_node() -> (SocketAddr, Arc<AtomicUsize>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (thaw, thawed) = oneshot::channel::<()>();
    let count = accepted.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        count.fetch_add(1, Ordering::SeqCst);
        // Later connections are counted and held open, never answered.
        let counter = count.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        read_send_name(&mut stream).await;
        let _ = tokio::time::timeout(BOUND, thawed).await;
        stream
            .write_all(&ok_and_challenge("app@vm", false))
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    (addr, accepted, thaw)
}

#[tokio::test]
async fn a_frozen_node_holds_one_probe_and_answers_it_when_it_thaws() {
    let (addr, accepted, thaw) = frozen_node().await;
    let name = "tinycluster_probe_park@h";
    for _ in 0..5 {
        let probe = park::probe(&request(addr, name)).await;
        assert_eq!(probe.outcome, Outcome::Unreachable(Error::Timeout));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, parked");
    thaw.send(()).unwrap();
    // Until the answer reaches the parked probe, asking again reports the node silent, at
    // once and without a new connection; then the answer.
    let thawed = Instant::now();
    let probe = loop {
        let probe = park::probe(&request(addr, name)).await;
        if probe.outcome != Outcome::Unreachable(Error::Timeout) {
            break probe;
        }
        assert!(
            thawed.elapsed() < BOUND,
            "the parked probe never got the answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(&probe.outcome, Outcome::Live { name, .. } if name == "app@vm"),
        "{:?}",
        probe.outcome
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Collected: the next probe is a fresh connection.
    let _ = park::probe(&request(addr, name)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn another_poller_parks_its_own_probe() {
    let (addr, accepted, _thaw) = frozen_node().await;
    park::probe(&request(addr, "tinycluster_probe_a@h")).await;
    park::probe(&request(addr, "tinycluster_probe_b@h")).await;
    park::probe(&request(addr, "tinycluster_probe_a@h")).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A listener that answers at once: reads the `send_name` and sends a live challenge.
async fn answering_node(listener: TcpListener) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            read_send_name(&mut stream).await;
            let _ = stream.write_all(&ok_and_challenge("app@vm", false)).await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
    }
}

/// A parked probe that ends without an answer (its node stopped, closing the connection)
/// says nothing about whatever listens at that port now: a node restarted at a fixed port,
/// or another program given the same ephemeral one. The next probe asks afresh.
#[tokio::test]
async fn a_parked_probe_closed_unanswered_is_not_the_answer_of_the_next_listener() {
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = first.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let node = tokio::spawn(async move {
        let (mut stream, _) = first.accept().await.unwrap();
        read_send_name(&mut stream).await;
        let _ = stopped.await;
        // The node stops: its listener and the connection it held close with it.
        drop(stream);
        drop(first);
    });
    let name = "tinycluster_probe_reused@h";
    let probe = park::probe(&request(addr, name)).await;
    assert_eq!(probe.outcome, Outcome::Unreachable(Error::Timeout));

    stop.send(()).unwrap();
    node.await.unwrap();
    tokio::spawn(answering_node(TcpListener::bind(addr).await.unwrap()));

    let restarted = Instant::now();
    let probe = loop {
        let probe = park::probe(&request(addr, name)).await;
        if probe.outcome != Outcome::Unreachable(Error::Timeout) {
            break probe;
        }
        assert!(restarted.elapsed() < BOUND, "never asked afresh");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(&probe.outcome, Outcome::Live { name, .. } if name == "app@vm"),
        "{:?}",
        probe.outcome
    );
}
