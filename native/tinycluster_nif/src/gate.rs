//! The gates that wait for a scan's owner to say which names of a host to probe.
//!
//! A gated scan sends each host's names to its owner and waits here, per (scan id, host
//! index), for the owner's answer through the `admit` NIF. An entry leaves when it is
//! answered, and every entry of a scan leaves when the scan ends, answered or not, so the
//! registry holds only what some scan still waits for. Knows nothing of Erlang terms.

use std::collections::HashMap;
use std::sync::Mutex;

use once_cell::sync::Lazy;
use tokio::sync::oneshot;

type Waiting = HashMap<(u64, usize), oneshot::Sender<Vec<String>>>;

static WAITING: Lazy<Mutex<Waiting>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Registers host `index` of scan `scan` as waiting; the receiver yields the owner's answer.
pub fn wait(scan: u64, index: usize) -> oneshot::Receiver<Vec<String>> {
    let (tx, rx) = oneshot::channel();
    if let Ok(mut waiting) = WAITING.lock() {
        waiting.insert((scan, index), tx);
    }
    rx
}

/// Hands the owner's answer to the waiting host: false when nothing waits for it (the scan
/// ended, timed out or was cancelled).
pub fn answer(scan: u64, index: usize, names: Vec<String>) -> bool {
    let waiting = WAITING
        .lock()
        .ok()
        .and_then(|mut w| w.remove(&(scan, index)));
    waiting.is_some_and(|tx| tx.send(names).is_ok())
}

/// Forgets every gate of scan `scan`: called when it ends, however it ends.
pub fn forget(scan: u64) {
    if let Ok(mut waiting) = WAITING.lock() {
        waiting.retain(|(id, _), _| *id != scan);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_gate_once_and_an_ended_scan_leaves_nothing() {
        let rx = wait(u64::MAX, 0);
        let _other = wait(u64::MAX, 1);
        assert!(answer(u64::MAX, 0, vec!["a@h".into()]));
        assert_eq!(rx.await.unwrap(), vec!["a@h".to_owned()]);
        assert!(!answer(u64::MAX, 0, vec![]), "answered twice");
        forget(u64::MAX);
        assert!(!answer(u64::MAX, 1, vec![]), "a forgotten gate");
    }
}
