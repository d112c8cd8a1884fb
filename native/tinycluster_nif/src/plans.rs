//! Where a scan's hosts wait for their owner's plan.
//!
//! A scan sends each host's listing to its owner and waits here, per (scan id, host index),
//! for the targets the owner answers through the `plan` NIF. An entry leaves when it is
//! answered, and every entry of a scan leaves when the scan ends, answered or not, so the
//! registry holds only what some scan still waits for. Knows nothing of Erlang terms.

use std::collections::HashMap;
use std::sync::Mutex;

use once_cell::sync::Lazy;
use tokio::sync::oneshot;

use crate::scan::Target;

type Waiting = HashMap<(u64, usize), oneshot::Sender<Vec<Target>>>;

static WAITING: Lazy<Mutex<Waiting>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Registers host `index` of scan `scan` as waiting; the receiver yields the owner's plan.
pub fn wait(scan: u64, index: usize) -> oneshot::Receiver<Vec<Target>> {
    let (tx, rx) = oneshot::channel();
    if let Ok(mut waiting) = WAITING.lock() {
        waiting.insert((scan, index), tx);
    }
    rx
}

/// Hands the owner's plan to the waiting host: false when nothing waits for it (the scan
/// ended, timed out or was cancelled).
pub fn answer(scan: u64, index: usize, targets: Vec<Target>) -> bool {
    let waiting = WAITING
        .lock()
        .ok()
        .and_then(|mut w| w.remove(&(scan, index)));
    waiting.is_some_and(|tx| tx.send(targets).is_ok())
}

/// Forgets every plan scan `scan` waits for: called when it ends, however it ends.
pub fn forget(scan: u64) {
    if let Ok(mut waiting) = WAITING.lock() {
        waiting.retain(|(id, _), _| *id != scan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FirstFlight;

    #[tokio::test]
    async fn a_plan_reaches_its_host_once_and_an_ended_scan_leaves_nothing() {
        let rx = wait(u64::MAX, 0);
        let _other = wait(u64::MAX, 1);
        let target = Target {
            alive: "a".into(),
            port: 4000,
            first_flight: FirstFlight::SendName,
        };
        assert!(answer(u64::MAX, 0, vec![target.clone()]));
        assert_eq!(rx.await.unwrap(), vec![target]);
        assert!(!answer(u64::MAX, 0, vec![]), "answered twice");
        forget(u64::MAX);
        assert!(!answer(u64::MAX, 1, vec![]), "a forgotten plan");
    }
}
