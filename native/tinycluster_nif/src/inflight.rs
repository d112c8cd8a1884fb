//! One probe at a time per probe name and listener, across every scan of the process.
//!
//! A node that sees two handshakes from one name at once takes the second for a simultaneous
//! connection attempt: one of them is answered `nok` or `alive`, or loses its socket. Scans
//! can overlap (concurrent `scan/1` calls under one name, a scan the poller gave up on while
//! its probes still run, one listener reached through two host entries), so probes take
//! turns per `(probe name, address)` here instead of relying on their callers.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use once_cell::sync::Lazy;

use crate::probe::{Probe, ProbeRequest};

type Key = (String, SocketAddr);
type Turn = Arc<tokio::sync::Mutex<()>>;

/// The turn of every listener that has a probe in flight or waiting. An entry leaves with
/// the last probe that holds it, so the map stays as small as the probes in flight.
static TURNS: Lazy<Mutex<HashMap<Key, Turn>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Runs `probing` (a probe of `req`, made but not yet polled) after any probe in flight
/// under the same name to the same address has ended. The wait is bounded by the request's
/// timeout; a probe that still has no turn then runs anyway, since a probe's own deadline
/// ends the one it waits for.
pub async fn in_turn(req: &ProbeRequest<'_>, probing: impl Future<Output = Probe>) -> Probe {
    let key = (req.probe_name.to_owned(), req.addr);
    let turn = TURNS
        .lock()
        .ok()
        .map(|mut turns| turns.entry(key.clone()).or_default().clone());
    // A poisoned map only means a panic elsewhere; probing unordered is still correct for
    // every caller that does not overlap.
    let Some(turn) = turn else {
        return probing.await;
    };
    let held = tokio::time::timeout(req.timeout, turn.lock()).await.ok();
    let result = probing.await;
    drop(held);
    if let Ok(mut turns) = TURNS.lock() {
        // Two references: the map's and this probe's. Anyone else still waits for a turn.
        if Arc::strong_count(&turn) == 2 {
            turns.remove(&key);
        }
    }
    result
}
