//! Parked probes: the probe of a silent node is kept open, not replaced every scan.
//!
//! A frozen node (SIGSTOP, or a VM too busy to accept) still has its kernel accept
//! connections: each probe that gives up and closes leaves one more in its accept queue, all
//! of which it works through when it resumes. So a probe that met only silence by its
//! deadline is parked instead: its task goes on waiting, with its socket open, for up to
//! [`PARK_FOR`]. Until then the scans of that candidate open no new connection; they report
//! it unreachable again, or, once the node has answered the parked probe, that answer. A
//! frozen node thus holds one queued connection per [`PARK_FOR`], and a node that thaws is
//! seen live by the first scan after it answered. A parked probe that ends unanswered (its
//! node stopped) is forgotten: its port may belong to another listener by then.
//!
//! Parked probes are process-wide (one map for every scan and poller), at most
//! [`MAX_PARKED`], and at most [`MAX_PARKED_PER_ADDRESS`] of them to one address; past either
//! cap a probe closes at its deadline, as it always did. A peer that started an answer and
//! stalled is not parked: it is talking, badly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_cell::sync::Lazy;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::probe::{self, FirstFlight, Outcome, Probe, ProbeRequest};

/// The longest a parked probe waits for its answer. Long enough that a frozen node collects
/// about one connection a minute; past it the probe closes, and the next scan that asks
/// opens another.
pub const PARK_FOR: Duration = Duration::from_secs(60);

/// The most probes parked at once, process-wide: a bound on the sockets they hold open.
pub const MAX_PARKED: usize = 64;

/// The most probes parked at once to one address: a quarter of [`MAX_PARKED`], so that one
/// host's silent listeners (its EPMD may list a thousand) cannot take every slot and leave
/// a frozen node of another host unparked.
pub const MAX_PARKED_PER_ADDRESS: usize = MAX_PARKED / 4;

/// What makes two probes the same: same poller (its probe name), same listener and first
/// flight, so that a parked answer is read as that probe would have. A listener is one
/// node, whatever names its EPMD lists for it: one parked probe serves them all.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Key {
    probe_name: String,
    addr: SocketAddr,
    first_flight: FirstFlight,
}

static PARKED: Lazy<Mutex<HashMap<Key, JoinHandle<Probe>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// How many probes are parked now (finished ones not yet collected included): what the cap
/// [`MAX_PARKED`] bounds, for tests of it.
pub fn parked() -> usize {
    PARKED.lock().map_or(0, |p| p.len())
}

/// Probes one candidate like [`probe::probe`], parking the probe if it meets only silence.
pub async fn probe(req: &ProbeRequest<'_>) -> Probe {
    let key = Key {
        probe_name: req.probe_name.to_owned(),
        addr: req.addr,
        first_flight: req.first_flight,
    };
    let waiting = PARKED.lock().ok().and_then(|mut p| p.remove(&key));
    if let Some(handle) = waiting {
        if !handle.is_finished() {
            if let Ok(mut p) = PARKED.lock() {
                p.insert(key, handle);
            }
            return silent(req.timeout);
        }
        let ended = joined(handle.await);
        // A probe that ended without an answer teaches nothing this scan's own would not:
        // silent to its end, or closed by a node that stopped, whose port may since belong
        // to a restarted node or another program. The listener is asked afresh.
        if !matches!(ended.outcome, Outcome::Unreachable(_)) {
            return ended;
        }
    }

    let answered = Arc::new(AtomicBool::new(false));
    let (owned, creation, flag) = (key.clone(), req.creation, answered.clone());
    let mut handle = tokio::spawn(async move {
        let req = ProbeRequest {
            addr: owned.addr,
            probe_name: &owned.probe_name,
            creation,
            timeout: PARK_FOR,
            first_flight: owned.first_flight,
        };
        probe::probe_watched(&req, &flag).await
    });
    match tokio::time::timeout(req.timeout, &mut handle).await {
        Ok(result) => joined(result),
        Err(_) if answered.load(Ordering::Relaxed) => {
            // Aborting drops the task's socket: the probe closes, as it would have.
            handle.abort();
            Probe {
                outcome: Outcome::BadReply(Error::Timeout),
                latency: req.timeout,
            }
        }
        Err(_) => {
            let mut parked = PARKED.lock().ok();
            match parked.as_mut() {
                Some(p) => {
                    // Finished probes hold no socket, only an answer their next scan takes;
                    // those nobody came back for (the candidate left EPMD) make room.
                    if p.len() >= MAX_PARKED {
                        p.retain(|_, h| !h.is_finished());
                    }
                    let ip = key.addr.ip();
                    let here = p.keys().filter(|k| k.addr.ip() == ip).count();
                    if p.len() < MAX_PARKED && here < MAX_PARKED_PER_ADDRESS {
                        p.insert(key, handle);
                    } else {
                        handle.abort();
                    }
                }
                None => handle.abort(),
            }
            silent(req.timeout)
        }
    }
}

fn silent(timeout: Duration) -> Probe {
    Probe {
        outcome: Outcome::Unreachable(Error::Timeout),
        latency: timeout,
    }
}

fn joined(result: Result<Probe, tokio::task::JoinError>) -> Probe {
    result.unwrap_or_else(|e| Probe {
        outcome: Outcome::Unreachable(Error::Internal(e.to_string())),
        latency: Duration::ZERO,
    })
}
