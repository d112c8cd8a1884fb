//! Park slots are shared across hosts: one address's silent listeners (a hostile EPMD may
//! list a thousand) take at most [`park::MAX_PARKED_PER_ADDRESS`] of them, and a frozen node
//! of another host is still parked.
//!
//! A test binary of its own: parked probes are process-wide.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tinycluster_nif::error::Error;
use tinycluster_nif::park;
use tinycluster_nif::probe::{FirstFlight, Outcome, ProbeRequest};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Accepts every connection on `ip` (counted), reads until the client closes, answers
/// nothing.
async fn silent(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(common::BOUND, stream.read_to_end(&mut sink)).await;
            });
        }
    });
    (addr, accepted)
}

async fn probe(addr: SocketAddr) -> Outcome {
    let req = ProbeRequest {
        addr,
        probe_name: "tinycluster_probe_share@h",
        creation: 7,
        timeout: Duration::from_secs(1),
        first_flight: FirstFlight::SendName,
    };
    park::probe(&req).await.outcome
}

#[tokio::test]
async fn one_host_takes_at_most_its_share_and_a_frozen_node_elsewhere_is_still_parked() {
    // A hostile host: far more silent listeners than the whole cap, at one address.
    let mut probes = JoinSet::new();
    for _ in 0..park::MAX_PARKED * 2 {
        let (hostile, _) = silent("127.0.0.1").await;
        probes.spawn(probe(hostile));
    }
    while let Some(outcome) = probes.join_next().await {
        assert_eq!(outcome.unwrap(), Outcome::Unreachable(Error::Timeout));
    }
    assert_eq!(park::parked(), park::MAX_PARKED_PER_ADDRESS);

    // A frozen node of another host: parked, so asking again opens no new connection.
    let (frozen, accepted) = silent("127.0.0.2").await;
    for _ in 0..3 {
        let outcome = probe(frozen).await;
        assert_eq!(outcome, Outcome::Unreachable(Error::Timeout));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, parked");
    assert_eq!(park::parked(), park::MAX_PARKED_PER_ADDRESS + 1);
}
