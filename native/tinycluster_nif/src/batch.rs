//! Hosts that answer close together, and candidates whose probes finish close together,
//! leave in one delivery of each.
//!
//! A scan's events go through an unbounded channel to one forwarder task. An event opens a
//! batch; the batch closes as soon as the scan is quiet ([`Event::Quiet`]: every host has
//! listed and every probe started has ended), at the latest [`WINDOW`] later, or when the
//! scan ends, and everything that came meanwhile is handed over together: the hosts first,
//! then the candidates. Probes of live nodes answer within a few hundred microseconds of
//! each other, but rarely in the same poll of the sockets (each peer is its own OS
//! process), so closing on the first answer batched nothing: measured on 6 warm peers,
//! every candidate came alone. Waiting for the last one that can still answer batches them
//! all and waits no longer than they take. Only a probe that has not finished (a frozen
//! node, before its probe is parked) keeps a scan from being quiet: the window bounds what
//! it costs the others, who wait at most that long, never for its deadline.
//!
//! Each message wakes its owner's scheduler, which then spins a while for more work: one
//! message per host made a poller of 200 hosts asked every poll spend a third more CPU than
//! the same hosts told in one report (`bench/run --only hosts`). A host's plan waits for
//! its listing's delivery: for the other hosts to list, at most [`WINDOW`]. On the Elixir
//! side one candidates message becomes one batch of `Node.connect/1` calls: connects that
//! trickle in make `global` sync a newcomer once per connection instead of once (the same
//! 6 connects took 7.6-10 ms issued at once, 11.3-13.3 ms issued 1 ms apart, `bench/run
//! --only hung`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::scan::{CandidateReport, Event, HostListing};

/// How long a batch stays open after its first event, unless the scan is quiet or ends
/// first: what a probe that has not finished makes the others wait. A little more than the
/// spread of warm probes' answers on a busy 2-core host (1.6 ms seen), and small against
/// what trickling connects cost (about 1 ms per connection).
pub const WINDOW: Duration = Duration::from_millis(2);

/// What the forwarder hands to its `deliver` function.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Hosts whose EPMD answered or failed within one window, in the order they answered;
    /// never empty.
    Listed(Vec<HostListing>),
    /// Candidates whose probes finished within one window, in the order they finished;
    /// never empty.
    Candidates(Vec<CandidateReport>),
}

/// The sending half: a sink for [`crate::scan::run`], and [`Batcher::finish`] to flush.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Option<Event>>,
    forwarder: JoinHandle<()>,
}

impl Batcher {
    /// Spawns the forwarder on the current tokio runtime with the [`WINDOW`]; it calls
    /// `deliver` for each delivery, on the runtime's threads.
    pub fn spawn<F>(deliver: F) -> Batcher
    where
        F: FnMut(Delivery) + Send + 'static,
    {
        Batcher::with_window(WINDOW, deliver)
    }

    /// [`Batcher::spawn`] with another window (tests use long ones, to be independent of
    /// how busy the machine is).
    pub fn with_window<F>(window: Duration, mut deliver: F) -> Batcher
    where
        F: FnMut(Delivery) + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Option<Event>>();
        let forwarder = tokio::spawn(async move {
            let (mut listed, mut batch) = (Vec::new(), Vec::new());
            // `None` in the channel, or the channel closed: the scan ended.
            while let Some(Some(event)) = rx.recv().await {
                // A quiet scan with no batch open: nothing to close.
                if !file(event, &mut listed, &mut batch) {
                    continue;
                }
                let closes = Instant::now() + window;
                loop {
                    tokio::select! {
                        // What already came goes in before the window is looked at.
                        biased;
                        item = rx.recv() => match item {
                            Some(Some(event)) => {
                                if !file(event, &mut listed, &mut batch) {
                                    break;
                                }
                            }
                            Some(None) | None => {
                                flush(&mut listed, &mut batch, &mut deliver);
                                return;
                            }
                        },
                        () = tokio::time::sleep_until(closes) => break,
                    }
                }
                flush(&mut listed, &mut batch, &mut deliver);
            }
            flush(&mut listed, &mut batch, &mut deliver);
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

    /// Delivers what is still queued (closing an open batch at once) and waits for the
    /// forwarder to end: after it, nothing more is delivered, so the caller's last message
    /// (the scan's report) comes last.
    pub async fn finish(self) {
        let _ = self.tx.send(None);
        let _ = self.forwarder.await;
    }
}

/// Puts an event in the open batch; false for [`Event::Quiet`], which closes it.
fn file(event: Event, listed: &mut Vec<HostListing>, batch: &mut Vec<CandidateReport>) -> bool {
    match event {
        Event::Listed(h) => listed.push(h),
        Event::Candidate(c) => batch.push(c),
        Event::Quiet => return false,
    }
    true
}

/// Hands over what the window gathered: the hosts first (their plans are waited for), then
/// the candidates.
fn flush<F: FnMut(Delivery)>(
    listed: &mut Vec<HostListing>,
    batch: &mut Vec<CandidateReport>,
    deliver: &mut F,
) {
    if !listed.is_empty() {
        deliver(Delivery::Listed(std::mem::take(listed)));
    }
    if !batch.is_empty() {
        deliver(Delivery::Candidates(std::mem::take(batch)));
    }
}
