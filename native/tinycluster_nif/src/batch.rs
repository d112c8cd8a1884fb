//! Candidates whose probes finish together leave in one delivery.
//!
//! A scan's events go through an unbounded channel to one forwarder task. When a candidate
//! arrives, the forwarder first yields once, so that every probe the runtime woke with it
//! (answers read in the same poll of the sockets) finishes too, then takes everything already
//! queued: those candidates are handed over together. Nothing is waited for beyond that
//! yield, so a probe that has not finished (a frozen node) holds no other back. On the
//! Elixir side one message becomes one batch of `Node.connect/1` calls (issue 13: connects
//! that trickle in make `global` sync a newcomer once per connection instead of once).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::scan::{CandidateReport, Event, HostReport};

/// What the forwarder hands to its `deliver` function, in the order the events came.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A host's EPMD answered or failed.
    Host(HostReport),
    /// Candidates whose probes finished together, never empty.
    Candidates(Vec<CandidateReport>),
}

/// The sending half: a sink for [`crate::scan::run_as`], and [`Batcher::finish`] to flush.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Option<Event>>,
    forwarder: JoinHandle<()>,
}

impl Batcher {
    /// Spawns the forwarder on the current tokio runtime; it calls `deliver` for each
    /// delivery, on the runtime's threads.
    pub fn spawn<F>(mut deliver: F) -> Batcher
    where
        F: FnMut(Delivery) + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<Event>>();
        let forwarder = tokio::spawn(async move {
            let mut batch = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                if matches!(next, Some(Some(Event::Candidate(_)))) {
                    // Let the probes woken with this one send theirs before we look.
                    tokio::task::yield_now().await;
                }
                // Everything already queued, in order; a host flushes the batch before it.
                while let Some(item) = next.take() {
                    match item {
                        Some(Event::Candidate(c)) => batch.push(c),
                        Some(Event::Host(h)) => {
                            flush(&mut batch, &mut deliver);
                            deliver(Delivery::Host(h));
                        }
                        None => {
                            flush(&mut batch, &mut deliver);
                            return;
                        }
                    }
                    next = rx.try_recv().ok();
                }
                flush(&mut batch, &mut deliver);
            }
            flush(&mut batch, &mut deliver);
        });
        Batcher { tx, forwarder }
    }

    /// The sink a scan reports its events to.
    pub fn sink(&self) -> Arc<dyn Fn(Event) + Send + Sync> {
        let tx = self.tx.clone();
        // A send fails only once the forwarder ended; nobody is left to tell.
        Arc::new(move |event| {
            let _ = tx.send(Some(event));
        })
    }

    /// Delivers what is still queued and waits for the forwarder to end: after it, nothing
    /// more is delivered, so the caller's last message (the scan's report) comes last.
    pub async fn finish(self) {
        let _ = self.tx.send(None);
        let _ = self.forwarder.await;
    }
}

fn flush<F: FnMut(Delivery)>(batch: &mut Vec<CandidateReport>, deliver: &mut F) {
    if !batch.is_empty() {
        deliver(Delivery::Candidates(std::mem::take(batch)));
    }
}
