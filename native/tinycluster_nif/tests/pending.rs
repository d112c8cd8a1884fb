//! `pending::Pending`: a scan asked for ahead of time starts after its delay, unless it is
//! called off first; then it never starts, and whoever waits for it hears so at once.
//!
//! Timing assertions are generous bounds: the tests share a small, busy machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tinycluster_nif::pending::Pending;

#[tokio::test]
async fn starts_after_its_delay() {
    let pending = Pending::new();
    let start = Instant::now();
    assert!(pending.wait(Duration::from_millis(200)).await);
    assert!(start.elapsed() >= Duration::from_millis(190));
    assert!(!pending.call_off(), "too late: it started");
}

#[tokio::test]
async fn called_off_while_waiting_it_never_starts() {
    let pending = Arc::new(Pending::new());
    let waiter = pending.clone();
    let start = Instant::now();
    let waiting = tokio::spawn(async move { waiter.wait(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pending.call_off());
    assert!(!waiting.await.unwrap(), "a called-off scan must not start");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the waiter heard at once"
    );
    assert!(pending.call_off(), "still called off");
}

#[tokio::test]
async fn called_off_before_anyone_waits() {
    let pending = Pending::new();
    assert!(pending.call_off());
    let start = Instant::now();
    assert!(!pending.wait(Duration::from_secs(60)).await);
    assert!(start.elapsed() < Duration::from_secs(10));
}
