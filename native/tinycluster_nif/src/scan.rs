//! A whole discovery pass: every host's EPMD at once, then every candidate's probe at once.
//!
//! Results are handed to a callback as they happen (a host as soon as its EPMD answered, a
//! candidate as soon as its probe finished), so that a slow host or a frozen node never
//! delays the report of the others. The pass ends with a [`ScanReport`] of everything.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::budget::{ProbeBudget, Spending};
use crate::epmd::{self, Malformed, Names};
use crate::error::Error;
use crate::inflight;
use crate::naming::{self, Naming};
use crate::park;
use crate::probe::{FirstFlight, Outcome, Probe, ProbeRequest, TlsSeen};
use crate::resolve::{self, Family};
use crate::unchanged;

/// The most probes in flight at once across one scan, so that one scan of many hosts stays
/// well under the process's file descriptor limit.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;

/// How many of its EPMD round trips a host's probes may take, at least. A probe costs as
/// many round trips as the EPMD request before it (a connect, then one exchange), and a
/// live node answers it in about one EPMD round trip (measured through a delay line, from
/// 100 to 250 ms each way: 0.97 to 1.02 of it); the two more leave room for a node slower
/// to answer than its EPMD and for a lost segment's retransmission. `Discovery.deadline/1`
/// on the Elixir side counts on this factor, read through [`crate::limits`].
pub const RTT_FACTOR: u32 = 3;

/// The longest a host's distance makes its probe timeout: a frozen node on a host that far
/// costs no more than this (a `probe_timeout` above it is kept as it is).
/// `Discovery.deadline/1` on the Elixir side counts on this cap, read through
/// [`crate::limits`].
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

/// One host to ask.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// How the host is named in reports (`"local"`, or the host as the user wrote it).
    pub label: String,
    /// The name or address to connect to.
    pub address: String,
    /// Its EPMD's port.
    pub epmd_port: u16,
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

/// Asks the scan's owner which of a host's listed names to probe, so that names the owner
/// filters out are never even probed. Called with the host's index, its label and the full
/// names of the nodes EPMD listed, as the candidates will be named before their probes; the
/// receiver yields the names to probe.
#[derive(Clone)]
pub struct Gate(pub Arc<GateFn>);

/// The gate's function: `(host index, host label, listed full names) -> names to probe`.
pub type GateFn = dyn Fn(usize, &str, Vec<String>) -> oneshot::Receiver<Vec<String>> + Send + Sync;

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

/// Which candidates a scan probes with the TLS ClientHello rather than `send_name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsProbes {
    /// None: the local node runs plain distribution and knows no TLS listener.
    #[default]
    None,
    /// These `(host label, alive, port)`: listeners that answered TLS before. Per port, so a
    /// node that restarts on a new port is asked in plain distribution again.
    Listed(HashSet<(String, String, u16)>),
    /// Every candidate: the local node runs TLS distribution, so a live TLS listener is a node
    /// it can connect ([`Outcome::TlsLive`]).
    All,
}

impl TlsProbes {
    /// The first flight for a candidate of host `label`.
    pub fn first_flight(&self, label: &str, alive: &str, port: u16) -> FirstFlight {
        let tls = match self {
            TlsProbes::None => false,
            TlsProbes::Listed(set) => set.contains(&(label.to_owned(), alive.to_owned(), port)),
            TlsProbes::All => true,
        };
        if tls {
            FirstFlight::ClientHello
        } else {
            FirstFlight::SendName
        }
    }
}

/// Everything one pass needs.
#[derive(Debug, Clone)]
pub struct ScanSpec {
    /// The hosts to ask.
    pub hosts: Vec<HostSpec>,
    /// The name the probes claim.
    pub probe_name: String,
    /// The creation the probes send: nonzero.
    pub creation: u32,
    /// The local node's full name: never a candidate.
    pub local_name: String,
    /// Full node names not to probe, reported as skipped (nodes already connected).
    pub skip: HashSet<String>,
    /// The deadline of one probe on a near host; a far host's probes get longer
    /// ([`host_probe_timeout`]).
    pub probe_timeout: Duration,
    /// The deadline of one EPMD query, resolution included; the gate's answer has as long.
    pub epmd_timeout: Duration,
    /// When set, each host's names pass through it before any is probed.
    pub gate: Option<Gate>,
    /// Which candidates get the TLS ClientHello.
    pub tls: TlsProbes,
    /// Candidates not to probe now, as `(host label, alive, port)`: held back after a
    /// failure, reported as held. Per port, so a node that restarts is probed at once.
    pub hold: HashSet<(String, String, u16)>,
    /// Per host label, the [`unchanged::digest`] of its last listing: a host that lists the
    /// same and has nothing to probe sends no candidate events.
    pub last_listings: HashMap<String, u64>,
    /// How many candidates the pass probes, and which first ([`crate::budget`]).
    pub budget: ProbeBudget,
}

/// What one host's EPMD said.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// The host's label.
    pub label: String,
    /// The address that answered, or the one asked when none did.
    pub address: String,
    /// The EPMD port asked.
    pub epmd_port: u16,
    /// How many names it listed that the owner's gate let through, and the lines it
    /// skipped; or why it could not be asked.
    pub result: Result<(usize, Vec<Malformed>), Error>,
    /// How many names it listed in all, before the gate (0 when it could not be asked).
    pub listed: usize,
    /// When its EPMD answered, the round trip of the request (connect, `NAMES_REQ`, the whole
    /// reply), without name resolution or the gate; otherwise how long it took to fail.
    pub latency: Duration,
    /// The probe timeout in force for its candidates ([`host_probe_timeout`]), when its EPMD
    /// answered.
    pub probe_timeout: Option<Duration>,
    /// The [`unchanged::digest`] of what it listed (the names admitted), when it answered.
    pub listing: Option<u64>,
    /// Whether the listing changed nothing ([`unchanged::unchanged`]): then no event came for
    /// its candidates.
    pub unchanged: bool,
}

/// One candidate and what its probe found; `probe` is `None` when it was skipped.
#[derive(Debug, Clone)]
pub struct CandidateReport {
    /// The label of the host that listed it.
    pub host: String,
    /// The alive part of its name, as EPMD listed it.
    pub alive: String,
    /// Its full name: as the challenge confirmed it for a live node, else as expected.
    pub name: String,
    /// The address probed.
    pub address: String,
    /// Its distribution port.
    pub port: u16,
    /// The probe, or `None` for a candidate in the skip set or held back.
    pub probe: Option<Probe>,
    /// Whether it was held back (in [`ScanSpec::hold`]) rather than probed.
    pub held: bool,
    /// Whether it was left for a later pass, past the pass's [`ScanSpec::budget`].
    pub deferred: bool,
}

/// What one scan hands to its callback, as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A host's EPMD answered or failed.
    Host(HostReport),
    /// A candidate was probed or skipped.
    Candidate(CandidateReport),
}

/// The whole pass.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// Every host, in the order given.
    pub hosts: Vec<HostReport>,
    /// Every candidate, in the order their probes finished.
    pub candidates: Vec<CandidateReport>,
    /// From the start of the pass to its last probe.
    pub duration: Duration,
}

type Sink = Arc<dyn Fn(Event) + Send + Sync>;

/// Runs one pass on behalf of `local` (`Local::default()` applies no naming or family rule)
/// and returns its report; `on_event` sees each host and candidate first.
pub async fn run(spec: ScanSpec, local: Local, on_event: Sink) -> ScanReport {
    let start = Instant::now();
    let spec = Arc::new(spec);
    let permits = Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT));
    let budget = Arc::new(Spending::new(&spec.budget));
    let mut hosts = JoinSet::new();
    for (index, host) in spec.hosts.iter().cloned().enumerate() {
        let (spec, sink) = (spec.clone(), on_event.clone());
        let (permits, budget) = (permits.clone(), budget.clone());
        hosts.spawn(async move {
            let report = scan_host(index, host, local, spec, sink, (permits, budget)).await;
            (index, report)
        });
    }
    let mut host_reports = Vec::with_capacity(spec.hosts.len());
    let mut candidates = Vec::new();
    while let Some(joined) = hosts.join_next().await {
        // A task only fails by panicking; its host is then missing from the report rather
        // than taking the whole scan down.
        if let Ok((index, (report, found))) = joined {
            host_reports.push((index, report));
            candidates.extend(found);
        }
    }
    host_reports.sort_by_key(|(index, _)| *index);
    ScanReport {
        hosts: host_reports.into_iter().map(|(_, r)| r).collect(),
        candidates,
        duration: start.elapsed(),
    }
}

async fn scan_host(
    index: usize,
    host: HostSpec,
    local: Local,
    spec: Arc<ScanSpec>,
    sink: Sink,
    (permits, budget): (Arc<Semaphore>, Arc<Spending>),
) -> (HostReport, Vec<CandidateReport>) {
    let start = Instant::now();
    let queried = tokio::time::timeout(spec.epmd_timeout, query_epmd(&host, local.family)).await;
    // Named after the host as given, not its label: a label may carry an EPMD port.
    let name_host = match &host.node_host {
        Some(node_host) => node_host.clone(),
        None => local.naming.name_host(&host.address).to_owned(),
    };
    let name_host = name_host.as_str();
    let (address, rtt, listed, names) = match queried {
        Ok(Ok((addr, rtt, names))) => (
            Some(addr),
            Some(rtt),
            names.entries.len(),
            admit(index, &host.label, name_host, &spec, names).await,
        ),
        Ok(Err(e)) => (None, None, 0, Err(e)),
        Err(_) => (None, None, 0, Err(Error::Timeout)),
    };
    // Taken here, before any probe: how far the host is decides how long they wait.
    let probe_timeout = rtt.map(|rtt| host_probe_timeout(spec.probe_timeout, rtt));
    // Nothing changed: the same listing as the last scan, and no name in it to probe.
    let listing = names.as_ref().ok().map(|n| unchanged::digest(&n.entries));
    let quiet = match (&names, listing) {
        (Ok(n), Some(digest)) => {
            let last = spec.last_listings.get(&host.label).copied();
            unchanged::unchanged(last, digest, &n.entries, |e| {
                let name = node_name(&e.alive, name_host);
                let key = (host.label.clone(), e.alive.clone(), e.port);
                name == spec.local_name || spec.skip.contains(&name) || spec.hold.contains(&key)
            })
        }
        _ => false,
    };
    let report = HostReport {
        label: host.label.clone(),
        address: address.map_or_else(|| host.address.clone(), |a| a.ip().to_string()),
        epmd_port: host.epmd_port,
        result: names
            .as_ref()
            .map(|n| (n.entries.len(), n.malformed.clone()))
            .map_err(Clone::clone),
        listed,
        latency: rtt.unwrap_or_else(|| start.elapsed()),
        probe_timeout,
        listing,
        unchanged: quiet,
    };
    // An unchanged host sends no event at all: the pass's report carries it, so that an idle
    // poll is one message to its owner (one wake-up of a scheduler) rather than two.
    if !quiet {
        sink(Event::Host(report.clone()));
    }
    let (Some(address), Some(probe_timeout), Ok(names)) = (address, probe_timeout, names) else {
        return (report, Vec::new());
    };

    let host = Arc::new(host);
    let mut probes = JoinSet::new();
    for entry in names.entries {
        let mut candidate = CandidateReport {
            host: host.label.clone(),
            name: node_name(&entry.alive, name_host),
            alive: entry.alive,
            address: address.ip().to_string(),
            port: entry.port,
            probe: None,
            held: false,
            deferred: false,
        };
        if candidate.name == spec.local_name {
            continue;
        }
        let key = (
            candidate.host.clone(),
            candidate.alive.clone(),
            candidate.port,
        );
        candidate.held = spec.hold.contains(&key);
        if candidate.held || spec.skip.contains(&candidate.name) {
            if !quiet {
                sink(Event::Candidate(candidate.clone()));
            }
            probes.spawn(async move { Some(candidate) });
            continue;
        }
        // A name no node can have (the owner could not even make an atom of it) is reported
        // as a bad reply at once, and never probed: the probe of a `not_allowed` node would
        // confirm nothing else, and its owner would connect it under this name.
        if let Err(e) = naming::check_length(&candidate.name) {
            candidate.probe = Some(Probe {
                outcome: Outcome::BadReply(e),
                latency: Duration::ZERO,
            });
            sink(Event::Candidate(candidate.clone()));
            probes.spawn(async move { Some(candidate) });
            continue;
        }
        // Past the budget: in the report (listed, so not gone), but no event, since it
        // teaches its owner nothing until a later pass probes it.
        if !budget.take(&candidate.host, &candidate.alive) {
            candidate.deferred = true;
            probes.spawn(async move { Some(candidate) });
            continue;
        }
        let (spec, sink, permits, host) =
            (spec.clone(), sink.clone(), permits.clone(), host.clone());
        probes.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await.ok();
            let request = ProbeRequest {
                addr: SocketAddr::new(address.ip(), candidate.port),
                alive: &candidate.alive,
                probe_name: &spec.probe_name,
                creation: spec.creation,
                timeout: probe_timeout,
                first_flight: spec
                    .tls
                    .first_flight(&host.label, &candidate.alive, candidate.port),
            };
            // A silent node's probe is parked rather than closed at the deadline: a poller's
            // scans come back for it every interval, and a frozen node then collects one
            // connection per park instead of one per scan (see park.rs). It waits for its
            // turn: never two handshakes under one name to one listener at once.
            let probing = park::probe(&request);
            let mut result = inflight::in_turn(&request, probing).await;
            if spec.tls == TlsProbes::All && result.outcome == Outcome::Tls(TlsSeen::ServerHello) {
                result.outcome = Outcome::TlsLive;
            }
            if let Outcome::Live { name, .. } = &result.outcome {
                let name = name.clone();
                let host_part = name.split_once('@').map_or("", |(_, h)| h);
                if !local.naming.accepts(host_part) {
                    result.outcome = Outcome::OtherNaming { claimed: name };
                } else if name == spec.local_name {
                    // This node itself, listed by an entry that names this host otherwise.
                    return None;
                } else {
                    candidate.name = name;
                    // Already connected under the name it confirmed, which the host's entry
                    // could not tell before the probe: reported as skipped, like the others.
                    if spec.skip.contains(&candidate.name) {
                        sink(Event::Candidate(candidate.clone()));
                        return Some(candidate);
                    }
                }
            }
            candidate.probe = Some(result);
            sink(Event::Candidate(candidate.clone()));
            Some(candidate)
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok(Some(candidate)) = joined {
            found.push(candidate);
        }
    }
    (report, found)
}

/// The name a node listed as `alive` on a host whose nodes' names end in `@name_host` has
/// until its probe tells otherwise: the one place a candidate is named before its probe,
/// so that the owner's filters, the skip list and the report all see the same name.
fn node_name(alive: &str, name_host: &str) -> String {
    format!("{alive}@{name_host}")
}

/// Passes a host's names through the gate, if there is one, as the full names its
/// candidates will have ([`node_name`]). Without an answer in time the host is an error:
/// probing names the owner may have filtered out would be worse.
async fn admit(
    index: usize,
    label: &str,
    name_host: &str,
    spec: &ScanSpec,
    mut names: Names,
) -> Result<Names, Error> {
    let Some(Gate(gate)) = &spec.gate else {
        return Ok(names);
    };
    let listed = names
        .entries
        .iter()
        .map(|e| node_name(&e.alive, name_host))
        .collect();
    let answer = gate(index, label, listed);
    match tokio::time::timeout(spec.epmd_timeout, answer).await {
        Ok(Ok(admitted)) => {
            let admitted: HashSet<String> = admitted.into_iter().collect();
            names
                .entries
                .retain(|e| admitted.contains(&node_name(&e.alive, name_host)));
            Ok(names)
        }
        _ => Err(Error::FilterTimeout),
    }
}

/// Resolves the host for `family`, asks its EPMD for names and reads the reply until EPMD
/// closes, never more than [`epmd::MAX_REPLY_BYTES`]. The caller bounds the time. Returns the
/// address that answered, the round trip of the request to it (from its connect to the end
/// of the reply: the host's distance, which a slow resolver or an unreachable address tried
/// before it does not lengthen) and the names.
async fn query_epmd(
    host: &HostSpec,
    family: Option<Family>,
) -> Result<(SocketAddr, Duration, Names), Error> {
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
