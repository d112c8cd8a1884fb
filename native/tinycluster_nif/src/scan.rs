//! A whole discovery pass: every host's EPMD at once; each host's listing goes to the scan's
//! owner, whose plan names the targets to probe; the targets' probes run at once, shared
//! fairly between hosts, and each result is handed over as it comes.
//!
//! The engine decides nothing about candidates: which names to probe, hold back or skip, in
//! which order and with which hello is the owner's plan ([`Planner`]). What it keeps is I/O:
//! deadlines, the probes in flight and each host's share of them, one probe per listener
//! per scan, parked probes ([`crate::park`]) and turns per listener ([`crate::inflight`]).
//! A slow host or a frozen node never delays the report of the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, OnceCell, Semaphore};
use tokio::task::JoinSet;

use crate::direct;
use crate::epmd::{self, Malformed};
use crate::error::Error;
use crate::inflight;
use crate::naming::Naming;
use crate::park;
use crate::probe::{self, FirstFlight, Outcome, Probe, ProbeRequest};
use crate::resolve::{self, Family};

/// The most probes in flight at once across one scan, so that one scan of many hosts stays
/// well under the process's file descriptor limit.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;

/// The fewest probes in flight a host of a scan may have, however many hosts the scan asks:
/// each host gets an equal part of [`MAX_PROBES_IN_FLIGHT`], but no less than this, so that
/// one host's silent listeners cannot make another's live nodes wait their turn.
pub const MIN_HOST_PROBES_IN_FLIGHT: usize = 8;

/// How many of its EPMD round trips a host's probes may take, at least. A probe costs as
/// many round trips as the EPMD request before it (a connect, then one exchange), and a
/// live node answers it in about one EPMD round trip (measured through a delay line, from
/// 100 to 250 ms each way: 0.97 to 1.02 of it); the two more leave room for a node slower
/// to answer than its EPMD and for a lost segment's retransmission.
pub const RTT_FACTOR: u32 = 3;

/// The longest a host's distance makes its probe timeout: a frozen node on a host that far
/// costs no more than this (a `probe_timeout` above it is kept as it is).
pub const MAX_HOST_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The probe timeout of a host whose EPMD answered the scan's request in `rtt`:
/// `max(probe_timeout, min(RTT_FACTOR * rtt, MAX_HOST_PROBE_TIMEOUT))`. A near host (loopback,
/// a LAN) keeps `probe_timeout`; a far one waits as long as it is far, so that its live
/// nodes are not taken for frozen ones. The round trip is this scan's own, measured just
/// before the probes: one sample is never shorter than the path (noise only lengthens it,
/// which delays the verdict on a frozen node for one scan and never makes a live one
/// unreachable), so it is used as it is, without an estimate kept across scans.
pub fn host_probe_timeout(probe_timeout: Duration, rtt: Duration) -> Duration {
    probe_timeout.max(rtt.saturating_mul(RTT_FACTOR).min(MAX_HOST_PROBE_TIMEOUT))
}

/// How many probes in flight each host of a scan of `hosts` hosts may have.
pub fn host_share(hosts: usize) -> usize {
    (MAX_PROBES_IN_FLIGHT / hosts.max(1)).max(MIN_HOST_PROBES_IN_FLIGHT)
}

/// One host to ask.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// How the host is named in reports (`"local"`, or the host as the user wrote it).
    pub label: String,
    /// The name or address to connect to.
    pub address: String,
    /// Its EPMD's port.
    pub epmd_port: u16,
    /// Its nodes' fixed distribution port, when they run without EPMD: the port is then
    /// probed directly, and the name its challenge gives is what the host lists
    /// ([`crate::direct`]).
    pub dist_port: Option<u16>,
    /// The last port of its nodes' range, when each listens on a free port of
    /// `dist_port..=dist_port_last` (`Tinycluster.EPMD`): every port of the range is probed,
    /// at once, and each node that answers is one name of the listing. None: `dist_port`
    /// alone.
    pub dist_port_last: Option<u16>,
    /// The host part its nodes' names have before their probes, when known (the local
    /// node's own, for the local host); without it, the host as given, in the local node's
    /// [`Naming`]. On every host the probe then takes the host part a node's challenge
    /// names, in the form the local node's [`Naming`] allows.
    pub node_host: Option<String>,
}

/// The node that runs a scan, as far as its peers' names and addresses go. The default
/// applies no rule: any host part, addresses in the resolver's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Local {
    /// The local node's naming mode. A node of a host without a `node_host` is named in this
    /// mode's form before its probe, and one whose challenge names a host part of the other
    /// mode, on any host, is reported [`Outcome::OtherNaming`] rather than live.
    pub naming: Naming,
    /// The local node's distribution family: which of a host name's addresses are asked, and
    /// in which order.
    pub family: Option<Family>,
}

/// Everything one pass needs besides its planner.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    /// The hosts to ask.
    pub hosts: Vec<HostSpec>,
    /// The name the probes claim.
    pub probe_name: String,
    /// The creation the probes send: nonzero.
    pub creation: u32,
    /// The local node's full name: a listener that answers under it is this node itself,
    /// listed under another name, and is never reported.
    pub local_name: String,
    /// The deadline of one probe on a near host; a far host's probes get longer
    /// ([`host_probe_timeout`]).
    pub probe_timeout: Duration,
    /// The deadline of one EPMD query, resolution included; the plan's answer has as long.
    pub epmd_timeout: Duration,
    /// Whether the local node runs TLS distribution: a host without EPMD is then probed
    /// with the TLS ClientHello.
    pub tls: bool,
}

/// A name a host's EPMD listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its alive part.
    pub alive: String,
    /// Its distribution port.
    pub port: u16,
    /// The full name its node has until its probe says otherwise ([`node_name`]).
    pub name: String,
}

/// What one host's EPMD said, as the owner plans it.
#[derive(Debug, Clone)]
pub struct HostListing {
    /// The host's place in [`ScanSpec::hosts`].
    pub index: usize,
    /// The host's label.
    pub label: String,
    /// The address that answered, or the one asked when none did.
    pub address: String,
    /// The EPMD port asked.
    pub epmd_port: u16,
    /// The distribution port probed instead, for a host without EPMD.
    pub dist_port: Option<u16>,
    /// The last port of the range probed, for a host whose nodes listen on a range.
    pub dist_port_last: Option<u16>,
    /// The names it listed and the lines it skipped; or why it could not be asked.
    pub result: Result<(Vec<Listed>, Vec<Malformed>), Error>,
    /// When its EPMD answered, the round trip of the request (connect, `NAMES_REQ`, the whole
    /// reply), without name resolution; otherwise how long it took to fail.
    pub latency: Duration,
    /// The probe timeout in force for its candidates ([`host_probe_timeout`]), when its EPMD
    /// answered.
    pub probe_timeout: Option<Duration>,
}

/// One probe the owner asks for: a name its host listed, and the first flight to open with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The alive part, as listed.
    pub alive: String,
    /// The port, as listed.
    pub port: u16,
    /// `send_name`, or the TLS ClientHello.
    pub first_flight: FirstFlight,
}

/// Asks the scan's owner what to probe of a host's listing: the receiver yields the targets,
/// in the order to probe them. Without an answer within the EPMD timeout the host probes
/// nothing.
#[derive(Clone)]
pub struct Planner(pub Arc<PlannerFn>);

/// The planner's function.
pub type PlannerFn = dyn Fn(&HostListing) -> oneshot::Receiver<Vec<Target>> + Send + Sync;

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Planner")
    }
}

impl Planner {
    /// A planner that answers at once with `plan` of each listing.
    pub fn with(plan: impl Fn(&HostListing) -> Vec<Target> + Send + Sync + 'static) -> Planner {
        Planner(Arc::new(move |listing| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(plan(listing));
            rx
        }))
    }
}

/// One candidate and what its probe found.
#[derive(Debug, Clone)]
pub struct CandidateReport {
    /// The label of the host that listed it.
    pub host: String,
    /// The alive part of its name, as EPMD listed it.
    pub alive: String,
    /// Its full name: as the challenge confirmed it for a live node, else as listed.
    pub name: String,
    /// The address probed.
    pub address: String,
    /// Its distribution port.
    pub port: u16,
    /// What its probe found.
    pub probe: Probe,
}

/// What one scan hands to its callback, as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A host's EPMD answered or failed.
    Listed(HostListing),
    /// A candidate's probe ended.
    Candidate(CandidateReport),
    /// Nothing the scan started can still answer, for now: every host has listed and every
    /// probe started has ended (a probe parked by an earlier scan ends at once, silent).
    /// What came before it is all there is until a plan starts more probes, so a batch
    /// need not wait ([`crate::batch`]). It may come more than once in a scan.
    Quiet,
}

/// The whole pass.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// Every host, in the order given; a host whose plan did not come in time is
    /// [`Error::PlanTimeout`].
    pub hosts: Vec<HostListing>,
    /// Every candidate probed, in the order their probes finished.
    pub candidates: Vec<CandidateReport>,
    /// From the start of the pass to its last probe.
    pub duration: Duration,
}

type Sink = Arc<dyn Fn(Event) + Send + Sync>;

/// One probe per listener and first flight per scan, however many names list it: a host
/// that lists a thousand names at one port costs one connection, and every name shares its
/// answer (each read against its own alive part: [`probe::expect`]).
#[derive(Default)]
struct Listeners(Mutex<HashMap<(SocketAddr, FirstFlight), Answer>>);

/// One listener's answer in a scan, once its probe ended.
type Answer = Arc<OnceCell<Probe>>;

impl Listeners {
    fn cell(&self, addr: SocketAddr, first_flight: FirstFlight) -> Answer {
        let mut cells = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cells.entry((addr, first_flight)).or_default().clone()
    }
}

/// What every host task of a scan shares.
struct Shared {
    spec: ScanSpec,
    local: Local,
    planner: Planner,
    sink: Sink,
    permits: Semaphore,
    share: usize,
    listeners: Listeners,
    /// Hosts not yet listed and probes started not yet ended: what can still answer.
    outstanding: AtomicUsize,
}

impl Shared {
    /// Counts `probes` more that will answer, before any of them starts.
    fn expect(&self, probes: usize) {
        self.outstanding.fetch_add(probes, Ordering::SeqCst);
    }

    /// One host listed or one probe ended, after its event (if any) went to the sink: the
    /// last of them tells the sink the scan is quiet, behind every event it waited for.
    fn answered(&self) {
        if self.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 {
            (self.sink)(Event::Quiet);
        }
    }
}

/// Runs one pass on behalf of `local` (`Local::default()` applies no naming or family rule)
/// and returns its report; `on_event` sees each host and candidate first, and `planner`
/// says what to probe of each host.
pub async fn run(spec: ScanSpec, local: Local, planner: Planner, on_event: Sink) -> ScanReport {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        share: host_share(spec.hosts.len()),
        outstanding: AtomicUsize::new(spec.hosts.len()),
        spec,
        local,
        planner,
        sink: on_event,
        permits: Semaphore::new(MAX_PROBES_IN_FLIGHT),
        listeners: Listeners::default(),
    });
    let mut hosts = JoinSet::new();
    for (index, host) in shared.spec.hosts.iter().cloned().enumerate() {
        let shared = shared.clone();
        hosts.spawn(async move { scan_host(index, host, shared).await });
    }
    let mut host_reports = Vec::with_capacity(shared.spec.hosts.len());
    let mut candidates = Vec::new();
    while let Some(joined) = hosts.join_next().await {
        // A task only fails by panicking; its host is then missing from the report rather
        // than taking the whole scan down.
        if let Ok((listing, found)) = joined {
            host_reports.push(listing);
            candidates.extend(found);
        }
    }
    host_reports.sort_by_key(|listing| listing.index);
    ScanReport {
        hosts: host_reports,
        candidates,
        duration: start.elapsed(),
    }
}

async fn scan_host(
    index: usize,
    host: HostSpec,
    shared: Arc<Shared>,
) -> (HostListing, Vec<CandidateReport>) {
    let mut listing = list(index, &host, &shared).await;
    let ready = match (&listing.result, listing.probe_timeout) {
        (Ok(_), Some(timeout)) => listing
            .address
            .parse::<IpAddr>()
            .ok()
            .map(|address| (address, timeout)),
        _ => None,
    };
    // The plan is waited for before the listing leaves, so that no answer can come first.
    let answer = ready.map(|_| (shared.planner.0)(&listing));
    (shared.sink)(Event::Listed(listing.clone()));
    shared.answered();
    let (Some((address, timeout)), Some(answer)) = (ready, answer) else {
        return (listing, Vec::new());
    };
    match tokio::time::timeout(shared.spec.epmd_timeout, answer).await {
        Ok(Ok(targets)) => {
            let found = probe_targets(&shared, &listing, address, timeout, targets).await;
            (listing, found)
        }
        _ => {
            listing.result = Err(Error::PlanTimeout);
            (listing, Vec::new())
        }
    }
}

/// Probes a host's `targets` at `address`, each within `timeout`, and hands over each
/// candidate as its probe ends. Only what the host listed is probed, each name once: the
/// engine connects to the ports an EPMD gave, never to one a plan made up.
async fn probe_targets(
    shared: &Arc<Shared>,
    listing: &HostListing,
    address: IpAddr,
    timeout: Duration,
    targets: Vec<Target>,
) -> Vec<CandidateReport> {
    let Ok((names, _)) = &listing.result else {
        return Vec::new();
    };
    let mut listed: HashMap<(String, u16), &Listed> = names
        .iter()
        .map(|l| ((l.alive.clone(), l.port), l))
        .collect();
    // The host's own share of the probes in flight, taken here, in the plan's order: a
    // host waiting for the scan's permits holds none of them. Each candidate is handed over
    // by its own task as its probe ends. The semaphores are never closed, so acquiring only
    // waits.
    let host_permits = Arc::new(Semaphore::new(shared.share));
    let targets: Vec<(Target, Listed)> = targets
        .into_iter()
        .filter_map(|target| {
            let named = listed.remove(&(target.alive.clone(), target.port))?;
            Some((target, named.clone()))
        })
        .collect();
    // Counted before the first starts: those waiting for the host's share can still answer.
    shared.expect(targets.len());
    let mut probes = JoinSet::new();
    for (target, named) in targets {
        let host = listing.label.clone();
        let addr = SocketAddr::new(address, target.port);
        let turn = host_permits.clone().acquire_owned().await.ok();
        let shared = shared.clone();
        probes.spawn(async move {
            let cell = shared.listeners.cell(addr, target.first_flight);
            let probed = cell
                .get_or_init(|| probe_listener(&shared, addr, target, timeout))
                .await
                .clone();
            drop(turn);
            let candidate = confirm(&shared, host, named, address, probed);
            if let Some(candidate) = &candidate {
                (shared.sink)(Event::Candidate(candidate.clone()));
            }
            shared.answered();
            candidate
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok(Some(candidate)) = joined {
            found.push(candidate);
        }
    }
    found
}

/// Probes one listener, within the scan's probes in flight, parked if it meets only
/// silence, and in turn with any other probe of it.
async fn probe_listener(
    shared: &Shared,
    addr: SocketAddr,
    target: Target,
    timeout: Duration,
) -> Probe {
    let _scan = shared.permits.acquire().await.ok();
    let request = ProbeRequest {
        addr,
        probe_name: &shared.spec.probe_name,
        creation: shared.spec.creation,
        timeout,
        first_flight: target.first_flight,
    };
    inflight::in_turn(&request, park::probe(&request)).await
}

/// Reads a listener's answer for one of the names listed at it: a node that names itself
/// with another alive part claims that name ([`probe::expect`]), one of the other naming
/// mode cannot be connected, and this node itself is left out (`None`).
fn confirm(
    shared: &Shared,
    host: String,
    listed: Listed,
    address: IpAddr,
    mut probe: Probe,
) -> Option<CandidateReport> {
    probe.outcome = probe::expect(probe.outcome, &listed.alive);
    let mut name = listed.name;
    if let Outcome::Live {
        name: confirmed, ..
    } = &probe.outcome
    {
        let host_part = confirmed.split_once('@').map_or("", |(_, h)| h);
        if !shared.local.naming.accepts(host_part) {
            probe.outcome = Outcome::OtherNaming {
                claimed: confirmed.clone(),
            };
        } else if *confirmed == shared.spec.local_name {
            return None;
        } else {
            name = confirmed.clone();
        }
    }
    Some(CandidateReport {
        host,
        alive: listed.alive,
        name,
        address: address.to_string(),
        port: listed.port,
        probe,
    })
}

/// Asks a host's EPMD and names what it lists.
async fn list(index: usize, host: &HostSpec, shared: &Arc<Shared>) -> HostListing {
    let start = Instant::now();
    let (spec, local) = (&shared.spec, shared.local);
    // Named after the host as given, not its label: a label may carry an EPMD port.
    let name_host = match &host.node_host {
        Some(node_host) => node_host.clone(),
        None => local.naming.name_host(&host.address).to_owned(),
    };
    let queried = match host.dist_port {
        // Bounded by the EPMD timeout inside, port by port: a silent port of a range fails
        // alone.
        Some(first) => {
            let last = host.dist_port_last.unwrap_or(first).max(first);
            let deadline = tokio::time::Instant::now() + spec.epmd_timeout;
            Ok(list_direct(host, first..=last, &name_host, shared, deadline).await)
        }
        None => {
            let query = async {
                let (addr, rtt, names) = query_epmd(host, local.family).await?;
                let listed = names
                    .entries
                    .into_iter()
                    .map(|e| Listed {
                        name: node_name(&e.alive, &name_host),
                        alive: e.alive,
                        port: e.port,
                    })
                    .collect();
                Ok((addr, rtt, listed, names.malformed))
            };
            tokio::time::timeout(spec.epmd_timeout, query).await
        }
    };
    let (address, latency, result) = match queried {
        Ok(Ok((addr, rtt, listed, malformed))) => {
            (addr.ip().to_string(), Some(rtt), Ok((listed, malformed)))
        }
        Ok(Err(e)) => (host.address.clone(), None, Err(e)),
        Err(_) => (host.address.clone(), None, Err(Error::Timeout)),
    };
    HostListing {
        index,
        label: host.label.clone(),
        address,
        epmd_port: host.epmd_port,
        dist_port: host.dist_port,
        dist_port_last: host.dist_port_last,
        result,
        latency: latency.unwrap_or_else(|| start.elapsed()),
        // Taken here, before any probe: how far the host is decides how long they wait.
        probe_timeout: latency.map(|rtt| host_probe_timeout(spec.probe_timeout, rtt)),
    }
}

type DirectListing = Result<(SocketAddr, Duration, Vec<Listed>, Vec<Malformed>), Error>;

/// Lists a host without EPMD by probing each of its distribution `ports` at once, each
/// before `deadline` ([`crate::direct`]): each node, named by its challenge, is one name.
/// A port that refuses has no node; the host fails only when no port names a node and one
/// of them failed (a single fixed port that is silent, say). Each probe's answer is kept for
/// the plan's target of that name, which opens no second connection; a name whose host part
/// does not lead back to the address probed is a claimed one.
async fn list_direct(
    host: &HostSpec,
    ports: std::ops::RangeInclusive<u16>,
    name_host: &str,
    shared: &Arc<Shared>,
    deadline: tokio::time::Instant,
) -> DirectListing {
    let resolving = resolve::resolve(&host.address, *ports.start(), shared.local.family);
    let addrs = match tokio::time::timeout_at(deadline, resolving).await {
        Ok(resolved) => resolved?,
        Err(_) => return Err(Error::Timeout),
    };
    let ip = addrs[0].ip();
    // A TLS listener gives no name: the one node of a fixed port is taken to be the local
    // node's namesake, but the nodes of a range cannot be told apart.
    let tls_alive = (shared.spec.tls && ports.start() == ports.end()).then(|| {
        let local = &shared.spec.local_name;
        local.split('@').next().unwrap_or_default().to_owned()
    });
    let mut probes = JoinSet::new();
    for port in ports {
        let (shared, node_host) = (shared.clone(), host.node_host.clone());
        let addr = SocketAddr::new(ip, port);
        probes.spawn(async move {
            let probing = probe_port(&shared, addr, node_host.as_deref(), deadline);
            let probe = tokio::time::timeout_at(deadline, probing).await;
            (port, probe)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok((port, probe)) = joined {
            answers.push((port, probe.ok()));
        }
    }
    let (listed, rtt) = direct::listing(answers, tls_alive.as_deref(), name_host)?;
    let addr = SocketAddr::new(ip, host.dist_port.unwrap_or_default());
    Ok((addr, rtt, listed, Vec::new()))
}

/// Probes one distribution port of a host without EPMD, within the scan's probes in flight
/// and in turn with any other probe of it; the answer is the listener's for this scan. A
/// live node's name must lead back to the address probed, or name the local host
/// (`node_host`: the local host is probed on loopback, which no name leads to).
async fn probe_port(
    shared: &Shared,
    addr: SocketAddr,
    node_host: Option<&str>,
    deadline: tokio::time::Instant,
) -> Probe {
    let first_flight = if shared.spec.tls {
        FirstFlight::ClientHello
    } else {
        FirstFlight::SendName
    };
    let family = shared.local.family;
    let cell = shared.listeners.cell(addr, first_flight);
    cell.get_or_init(|| async {
        let _scan = shared.permits.acquire().await.ok();
        let request = ProbeRequest {
            addr,
            probe_name: &shared.spec.probe_name,
            creation: shared.spec.creation,
            timeout: deadline.saturating_duration_since(tokio::time::Instant::now()),
            first_flight,
        };
        let mut probe = inflight::in_turn(&request, park::probe(&request)).await;
        if let Outcome::Live { name, .. } = &probe.outcome {
            if !direct::leads_back(name, addr, family, node_host).await {
                probe.outcome = Outcome::NameMismatch {
                    claimed: name.clone(),
                };
            }
        }
        probe
    })
    .await
    .clone()
}

/// The name a node listed as `alive` on a host whose nodes' names end in `@name_host` has
/// until its probe tells otherwise: the one place a candidate is named before its probe,
/// so that the owner's filters, the skip list and the report all see the same name.
fn node_name(alive: &str, name_host: &str) -> String {
    format!("{alive}@{name_host}")
}

/// Resolves the host for `family`, asks its EPMD for names and reads the reply until EPMD
/// closes, never more than [`epmd::MAX_REPLY_BYTES`]. The caller bounds the time. Returns the
/// address that answered, the round trip of the request to it (from its connect to the end
/// of the reply: the host's distance, which a slow resolver or an unreachable address tried
/// before it does not lengthen) and the names.
async fn query_epmd(
    host: &HostSpec,
    family: Option<Family>,
) -> Result<(SocketAddr, Duration, epmd::Names), Error> {
    let addrs = resolve::resolve(&host.address, host.epmd_port, family).await?;
    let mut last = Error::Resolve("no addresses".into());
    for addr in addrs {
        let start = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(mut stream) => {
                stream.write_all(&epmd::NAMES_REQ).await?;
                let mut reply = Vec::new();
                let limit = epmd::MAX_REPLY_BYTES as u64 + 1;
                (&mut stream).take(limit).read_to_end(&mut reply).await?;
                let rtt = start.elapsed();
                return Ok((addr, rtt, epmd::parse_names(&reply)?));
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}
