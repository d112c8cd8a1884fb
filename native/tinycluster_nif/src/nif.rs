//! The NIF entry points and the process-wide runtime they spawn scans on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use once_cell::sync::Lazy;
use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::batch::{Batcher, Delivery};
use crate::error::Error;
use crate::limits::{Limits, LIMITS};
use crate::probe::FirstFlight;
use crate::request::Request;
use crate::{encode, plans, runtime, scan};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        tinycluster_scan,
        candidates,
        client_hello,
        done,
        listed,
        badarg,
        unknown_scan,
    }
}

/// The runtime every scan runs on, built at the first scan (see [`crate::runtime`]).
static RUNTIME: Lazy<Result<Runtime, String>> =
    Lazy::new(|| runtime::build().map_err(|e| e.to_string()));

static NEXT_SCAN_ID: AtomicU64 = AtomicU64::new(1);

/// Sends `{:tinycluster_scan, id, {tag, payload}}` to `pid`. Called only on the runtime's
/// threads: `send_and_clear` panics on a scheduler thread.
fn send<F>(pid: &LocalPid, id: u64, tag: Atom, payload: F)
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
{
    let mut env = OwnedEnv::new();
    // A send fails only when the process is gone; then nobody wants the result.
    let _ = env.send_and_clear(pid, |env| {
        (atoms::tinycluster_scan(), id, (tag, payload(env))).encode(env)
    });
}

/// Starts one scan and returns `{:ok, scan_id, handle}` at once, or `{:error, reason}` for
/// bad options. The caller then receives the hosts as they answer, `{:tinycluster_scan,
/// scan_id, {:listed, [map]}}` (each one's EPMD answer and the names it lists; the hosts
/// that answer together in one message), which it answers with [`plan`]; then
/// `{:tinycluster_scan, scan_id, {:candidates, [map]}}` as the probes of the targets it
/// planned end (those that end together in one message, see [`crate::batch`]), and last
/// `{:tinycluster_scan, scan_id, {:done, map}}`. `handle` cancels the scan: see [`cancel`].
#[rustler::nif]
fn start_scan<'a>(env: Env<'a>, request: Request) -> Term<'a> {
    let runtime = match RUNTIME.as_ref() {
        Ok(rt) => rt,
        Err(e) => return (atoms::error(), Error::Internal(e.clone())).encode(env),
    };
    let (spec, local) = match request.into_spec() {
        Ok(parts) => parts,
        Err(why) => return (atoms::error(), (atoms::badarg(), why)).encode(env),
    };
    let pid = env.pid();
    let id = NEXT_SCAN_ID.fetch_add(1, Ordering::Relaxed);
    let planner = scan::Planner(Arc::new(move |listing| plans::wait(id, listing.index)));
    let task = runtime.spawn(async move {
        // Whatever ends the scan, its waiting plans go: dropped with the task when it is
        // cancelled.
        let _plans = ForgetPlans(id);
        let batcher = Batcher::spawn(move |delivery| match delivery {
            Delivery::Listed(hs) => send(&pid, id, atoms::listed(), |env| {
                hs.iter()
                    .map(|h| encode::listing(env, h))
                    .collect::<Vec<_>>()
                    .encode(env)
            }),
            Delivery::Candidates(cs) => send(&pid, id, atoms::candidates(), |env| {
                cs.iter()
                    .map(|c| encode::candidate(env, c))
                    .collect::<Vec<_>>()
                    .encode(env)
            }),
        });
        let report = scan::run(spec, local, planner, batcher.sink()).await;
        batcher.finish().await;
        send(&pid, id, atoms::done(), |env| encode::report(env, &report));
    });
    let handle = ResourceArc::new(ScanHandle(task.abort_handle()));
    (atoms::ok(), id, handle).encode(env)
}

/// Forgets a scan's waiting plans when dropped: at its end, or when its task is cancelled.
struct ForgetPlans(u64);

impl Drop for ForgetPlans {
    fn drop(&mut self) {
        plans::forget(self.0);
    }
}

/// The handle of a running scan. Cancelling it, with [`cancel`] or by dropping the handle
/// (its owner died and the handle was collected), ends the scan's task at its next await:
/// its probes' and EPMD queries' sockets close and no `:done` follows (a message already on
/// its way may still arrive; owners match on the scan id). No scan runs on for an owner
/// that gave up on it or is gone.
struct ScanHandle(AbortHandle);

#[rustler::resource_impl]
impl rustler::Resource for ScanHandle {}

impl Drop for ScanHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Cancels a scan (see [`ScanHandle`]); `:ok` whether or not it had ended.
#[rustler::nif]
fn cancel(handle: ResourceArc<ScanHandle>) -> Atom {
    handle.0.abort();
    atoms::ok()
}

/// Answers a scan's `{:listed, [map]}` message with the targets to probe on each host, as
/// `[{index, [{alive, port, hello}]}]` in order, `hello` being `:send_name` or
/// `:client_hello`. Only names a host listed are probed. Returns `:ok`, or `{:error,
/// :unknown_scan}` when the scan no longer waits for one of them (it timed out, ended or
/// was cancelled).
#[rustler::nif]
fn plan<'a>(env: Env<'a>, scan_id: u64, plans: Vec<(usize, Vec<Target>)>) -> Term<'a> {
    let mut all = true;
    for (index, targets) in plans {
        let targets = targets
            .into_iter()
            .map(|(alive, port, hello)| scan::Target {
                alive,
                port,
                first_flight: if hello == atoms::client_hello() {
                    FirstFlight::ClientHello
                } else {
                    FirstFlight::SendName
                },
            })
            .collect();
        all &= plans::answer(scan_id, index, targets);
    }
    if all {
        atoms::ok().encode(env)
    } else {
        (atoms::error(), atoms::unknown_scan()).encode(env)
    }
}

/// A target as the owner names it: `{alive, port, hello}`.
type Target = (String, u16, Atom);

/// Every bound the engine enforces ([`crate::limits`]), as a map: the owner reads them here
/// rather than restating them.
#[rustler::nif]
fn limits() -> Limits {
    LIMITS
}

rustler::init!("Elixir.Tinycluster.Native");
