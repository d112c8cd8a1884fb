//! A scan asked for ahead of time: it waits for its start on the runtime, and can be called
//! off until then.
//!
//! A poller that asks for its next scan when the last one ends, with the time still to wait,
//! is woken once per idle poll (by the report) instead of twice (by its timer, then by the
//! report): each wake-up of a BEAM scheduler costs more than the poll's own work (bench
//! `idle`). Whatever the request depends on may change meanwhile (a node connects, a
//! connection fails), so the poller calls the scan off and asks again; whether the call-off
//! or the start came first is decided once, here.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

const WAITING: u8 = 0;
const STARTED: u8 = 1;
const CALLED_OFF: u8 = 2;

/// The start of one scan, shared by the task that waits for it and whoever may call it off.
#[derive(Debug, Default)]
pub struct Pending {
    state: AtomicU8,
    called_off: Notify,
}

impl Pending {
    /// A scan that has neither started nor been called off.
    pub fn new() -> Pending {
        Pending::default()
    }

    /// Waits `delay`, then claims the start: `true` if the scan is to run, `false` if it was
    /// called off first (it then never runs). Returns at once when called off meanwhile.
    pub async fn wait(&self, delay: Duration) -> bool {
        let called_off = self.called_off.notified();
        tokio::pin!(called_off);
        // Registered before the state is read, so a call-off in between is not missed.
        called_off.as_mut().enable();
        if self.state.load(Ordering::Acquire) == WAITING {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = called_off => {}
            }
        }
        self.state
            .compare_exchange(WAITING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Calls the scan off: `true` if it never starts (called off by this call or before),
    /// `false` if it started.
    pub fn call_off(&self) -> bool {
        match self
            .state
            .compare_exchange(WAITING, CALLED_OFF, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.called_off.notify_waiters();
                true
            }
            Err(now) => now == CALLED_OFF,
        }
    }
}
