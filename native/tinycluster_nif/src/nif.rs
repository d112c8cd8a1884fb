//! The NIF entry points and the process-wide runtime they spawn scans on.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_cell::sync::Lazy;
use rustler::{
    Atom, Decoder, Encoder, Env, LocalPid, NifMap, NifResult, OwnedEnv, ResourceArc, Term,
};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use crate::batch::{Batcher, Delivery};
use crate::error::Error;
use crate::naming::Naming;
use crate::pending::Pending;
use crate::resolve::Family;
use crate::{encode, handshake, runtime, scan};

mod atoms {
    rustler::atoms! {
        ok,
        error,
        tinycluster_scan,
        host,
        candidates,
        done,
        listed,
        badarg,
        family,
        inet,
        inet6,
        nil,
        unknown_scan,
        tls,
        all,
        hold,
        park,
        last_listings,
        delay_ms,
        started,
        false_ = "false",
    }
}

/// The runtime every scan runs on, built at the first scan (see [`crate::runtime`]).
static RUNTIME: Lazy<Result<Runtime, String>> =
    Lazy::new(|| runtime::build().map_err(|e| e.to_string()));

static NEXT_SCAN_ID: AtomicU64 = AtomicU64::new(1);

/// Gates waiting for their owner's answer, by scan id and host index. Entries leave when
/// answered, and all of a scan's leave when it ends, answered or not.
type GateMap = HashMap<(u64, usize), oneshot::Sender<Vec<String>>>;
static GATES: Lazy<Mutex<GateMap>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// A host as the Elixir side describes it.
#[derive(NifMap)]
struct HostOpts {
    label: String,
    address: String,
    epmd_port: u16,
    node_host: Option<String>,
}

/// One scan's options as the Elixir side passes them.
#[derive(NifMap)]
struct ScanOpts {
    hosts: Vec<HostOpts>,
    probe_name: String,
    creation: u32,
    local_name: String,
    skip: Vec<String>,
    probe_timeout_ms: u64,
    epmd_timeout_ms: u64,
    gate: bool,
}

/// A scan request: the options every caller gives, and some a caller may leave out: `family`
/// (`:inet`, `:inet6` or nil), the local node's distribution family; `tls`: `:all` (the
/// local node runs TLS distribution) or a list of `{host_label, alive, port}` to probe with
/// the TLS ClientHello; `hold`: such a list not to probe now; `park`: `false` to close
/// silent probes at their deadline rather than park them; `last_listings`: a list of
/// `{host_label, digest}` (see [`crate::unchanged`]); `delay_ms`: how long the scan waits
/// for its start (see [`crate::pending`]).
struct Request {
    opts: ScanOpts,
    family: Option<Family>,
    tls: scan::TlsProbes,
    hold: HashSet<(String, String, u16)>,
    park: bool,
    last_listings: HashMap<String, u64>,
    delay_ms: u64,
}

impl<'a> Decoder<'a> for Request {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let family = match term.map_get(atoms::family()) {
            Err(_) => None,
            Ok(value) if atoms::inet() == value => Some(Family::Inet),
            Ok(value) if atoms::inet6() == value => Some(Family::Inet6),
            Ok(value) if atoms::nil() == value => None,
            Ok(_) => return Err(rustler::Error::RaiseAtom("badarg")),
        };
        let tls = match term.map_get(atoms::tls()) {
            Err(_) => scan::TlsProbes::None,
            Ok(value) if atoms::all() == value => scan::TlsProbes::All,
            Ok(value) if atoms::nil() == value => scan::TlsProbes::None,
            Ok(value) => scan::TlsProbes::Listed(listed(value)?),
        };
        let hold = match term.map_get(atoms::hold()) {
            Err(_) => HashSet::new(),
            Ok(value) => listed(value)?,
        };
        // `park: false` closes silent probes at their deadline (see park.rs); default true.
        let park = match term.map_get(atoms::park()) {
            Ok(value) => atoms::false_() != value,
            Err(_) => true,
        };
        // `last_listings`: `[{host_label, digest}]`, the hosts' last listings (unchanged.rs).
        let last_listings = match term.map_get(atoms::last_listings()) {
            Err(_) => HashMap::new(),
            Ok(value) => {
                let pairs: Vec<(String, u64)> = value.decode()?;
                if pairs.len() > MAX_LISTED {
                    return Err(rustler::Error::RaiseAtom("badarg"));
                }
                pairs.into_iter().collect()
            }
        };
        // `delay_ms`: start the scan that much later (see pending.rs); default 0, at once.
        let delay_ms = match term.map_get(atoms::delay_ms()) {
            Err(_) => 0,
            Ok(value) => value.decode()?,
        };
        if delay_ms > MAX_DELAY_MS {
            return Err(rustler::Error::RaiseAtom("badarg"));
        }
        Ok(Request {
            delay_ms,
            opts: term.decode()?,
            family,
            tls,
            hold,
            park,
            last_listings,
        })
    }
}

/// The most `{host, alive, port}` a request may name in `tls` or `hold`: far more than any
/// host lists (EPMD replies are capped at 1024 names).
const MAX_LISTED: usize = 65_536;

/// Decodes a list of `{host_label, alive, port}`, at most [`MAX_LISTED`].
fn listed(term: Term<'_>) -> NifResult<HashSet<(String, String, u16)>> {
    let listed: Vec<(String, String, u16)> = term.decode()?;
    if listed.len() > MAX_LISTED {
        return Err(rustler::Error::RaiseAtom("badarg"));
    }
    Ok(listed.into_iter().collect())
}

/// The longest a scan may wait for its start: a day, far more than any poll interval.
const MAX_DELAY_MS: u64 = 86_400_000;

/// The longest a deadline may be, so that a scan always ends.
const MAX_TIMEOUT_MS: u64 = 60_000;

fn validate(opts: ScanOpts) -> Result<scan::ScanSpec, &'static str> {
    if !handshake::valid_node_name(opts.probe_name.as_bytes()) {
        return Err("probe_name is not a node name");
    }
    if opts.creation == 0 {
        return Err("creation must be nonzero");
    }
    for t in [opts.probe_timeout_ms, opts.epmd_timeout_ms] {
        if t == 0 || t > MAX_TIMEOUT_MS {
            return Err("timeouts must be between 1 and 60000 ms");
        }
    }
    Ok(scan::ScanSpec {
        hosts: opts
            .hosts
            .into_iter()
            .map(|h| scan::HostSpec {
                label: h.label,
                address: h.address,
                epmd_port: h.epmd_port,
                node_host: h.node_host,
            })
            .collect(),
        probe_name: opts.probe_name,
        creation: opts.creation,
        local_name: opts.local_name,
        skip: opts.skip.into_iter().collect(),
        probe_timeout: Duration::from_millis(opts.probe_timeout_ms),
        epmd_timeout: Duration::from_millis(opts.epmd_timeout_ms),
        gate: None,
        tls: scan::TlsProbes::None,
        hold: HashSet::new(),
        // A poller's scans come back for a parked probe every interval: see park.rs.
        park: true,
        last_listings: HashMap::new(),
    })
}

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

/// Starts one scan and returns `{:ok, scan_id}` at once, or `{:error, reason}` for bad
/// options. The caller then receives `{:tinycluster_scan, scan_id, {:host, map}}` per host,
/// `{:tinycluster_scan, scan_id, {:candidates, [map]}}` as probes end (those that end
/// together in one message, see [`crate::batch`]), and
/// last `{:tinycluster_scan, scan_id, {:done, map}}`. With `delay_ms` above 0 the scan
/// starts that much later and the answer is `{:ok, scan_id, pending}`, a handle for
/// [`call_off`]. With `gate: true`, each host's names
/// first come as `{:tinycluster_scan, scan_id, {:listed, {index, label, names}}}`, and none
/// is probed until [`admit`] answers with the names to probe.
#[rustler::nif]
fn start_scan<'a>(env: Env<'a>, request: Request) -> Term<'a> {
    let Request {
        opts,
        family,
        tls,
        hold,
        park,
        last_listings,
        delay_ms,
    } = request;
    let runtime = match RUNTIME.as_ref() {
        Ok(rt) => rt,
        Err(e) => return (atoms::error(), Error::Internal(e.clone())).encode(env),
    };
    let gated = opts.gate;
    let mut spec = match validate(opts) {
        Ok(spec) => spec,
        Err(why) => return (atoms::error(), (atoms::badarg(), why)).encode(env),
    };
    spec.tls = tls;
    spec.hold = hold;
    spec.park = park;
    spec.last_listings = last_listings;
    // The local node's own name tells its naming mode, as net_kernel reads it.
    let local = scan::Local {
        naming: Naming::of_node(&spec.local_name),
        family,
    };
    let pid = env.pid();
    let id = NEXT_SCAN_ID.fetch_add(1, Ordering::Relaxed);
    if gated {
        spec.gate = Some(scan::Gate(Arc::new(move |index, label, names| {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut gates) = GATES.lock() {
                gates.insert((id, index), tx);
            }
            send(&pid, id, atoms::listed(), |env| {
                (index, label, names).encode(env)
            });
            rx
        })));
    }
    let pending = (delay_ms > 0).then(|| Arc::new(Pending::new()));
    let waiting = pending.clone();
    runtime.spawn(async move {
        if let Some(pending) = waiting {
            if !pending.wait(Duration::from_millis(delay_ms)).await {
                return;
            }
        }
        let batcher = Batcher::spawn(move |delivery| match delivery {
            Delivery::Host(h) => send(&pid, id, atoms::host(), |env| encode::host(env, &h)),
            Delivery::Candidates(cs) => send(&pid, id, atoms::candidates(), |env| {
                cs.iter()
                    .map(|c| encode::candidate(env, c))
                    .collect::<Vec<_>>()
                    .encode(env)
            }),
        });
        let report = scan::run_as(spec, local, batcher.sink()).await;
        batcher.finish().await;
        if let Ok(mut gates) = GATES.lock() {
            gates.retain(|(scan, _), _| *scan != id);
        }
        send(&pid, id, atoms::done(), |env| encode::report(env, &report));
    });
    match pending {
        None => (atoms::ok(), id).encode(env),
        Some(pending) => (atoms::ok(), id, ResourceArc::new(PendingScan(pending))).encode(env),
    }
}

/// The handle of a scan that waits for its start (`delay_ms`). Calling it off, with
/// [`call_off`] or by dropping the handle (its owner died and the handle was collected),
/// keeps the scan from ever starting: no scan runs for a poller that is gone.
struct PendingScan(Arc<Pending>);

#[rustler::resource_impl]
impl rustler::Resource for PendingScan {}

impl Drop for PendingScan {
    fn drop(&mut self) {
        self.0.call_off();
    }
}

/// Calls off a scan that waits for its start: `:ok` if it never starts (no message of it
/// ever comes), `{:error, :started}` if it has (it runs to its report as usual).
#[rustler::nif]
fn call_off(env: Env<'_>, pending: ResourceArc<PendingScan>) -> Term<'_> {
    if pending.0.call_off() {
        atoms::ok().encode(env)
    } else {
        (atoms::error(), atoms::started()).encode(env)
    }
}

/// Answers a scan's `{:listed, index, label, names}` message with the alive names to probe
/// on that host. Returns `:ok`, or `{:error, :unknown_scan}` when the scan no longer waits
/// (it timed out, or ended).
#[rustler::nif]
fn admit(env: Env<'_>, scan_id: u64, index: usize, names: Vec<String>) -> Term<'_> {
    let waiting = GATES
        .lock()
        .ok()
        .and_then(|mut g| g.remove(&(scan_id, index)));
    match waiting.map(|tx| tx.send(names)) {
        Some(Ok(())) => atoms::ok().encode(env),
        _ => (atoms::error(), atoms::unknown_scan()).encode(env),
    }
}

rustler::init!("Elixir.Tinycluster.Native");
