//! The process-wide tokio runtime's configuration: one worker, a small blocking pool, and
//! threads that never preempt the thread that woke them.
//!
//! Measured (bench `idle`, and `cargo run --release --example epmd_floor`): one idle poll
//! costs the runtime's threads what one blocking EPMD request costs a plain thread, within
//! the noise. Nearly all of it is the kernel's loopback TCP (connect's handshake, the send,
//! the close), so no other flavour or configuration of the runtime has anything to win.

use tokio::runtime::{Builder, Runtime};

/// The name of the runtime's threads (`/proc/self/task/*/comm` starts with it).
pub const THREAD_NAME: &str = "tinycluster";

/// Builds the runtime. One worker thread is plenty: a scan is all waiting on sockets. The
/// blocking pool only serves host name resolution (`getaddrinfo`), so it stays small too.
pub fn build() -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name(THREAD_NAME)
        .on_thread_start(never_preempt_the_waker)
        .enable_io()
        .enable_time()
        .build()
}

/// Makes the calling runtime thread `SCHED_BATCH` (Linux only; elsewhere a no-op).
///
/// `start_scan` wakes the runtime's worker from a BEAM scheduler thread. On a busy host the
/// kernel may switch to the woken thread at once, on the waker's CPU, and the scheduler then
/// waits for its CPU back: the NIF call, microseconds of work, held the scheduler for
/// milliseconds (`erlang:system_monitor/2` reports it as a long schedule). A `SCHED_BATCH`
/// thread never preempts the thread that woke it, and keeps the normal share of the CPU, so
/// probes are not slowed down.
fn never_preempt_the_waker() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread, and `param` outlives the call. A failure only
        // leaves the thread's policy as it was.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        }
    }
}
