//! Byte-exact fake peers for the integration tests: a distribution listener that reads a
//! probe's `send_name` and answers with scripted bytes, and an EPMD that answers
//! `NAMES_REQ` with scripted bytes; and the planners and event recorder the scan tests share.
//!
//! The frames are built here by hand, not with the crate's encoders, so that a test compares
//! the crate against the protocol rather than against itself. Every fake ends by itself: each
//! wait is bounded by [`BOUND`], so a broken client can fail a test but never hang it.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tinycluster_nif::probe::{FirstFlight, Outcome};
use tinycluster_nif::scan::{
    self, CandidateReport, Event, HostListing, HostSpec, Listed, Planner, ScanReport, ScanSpec,
    Target,
};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The longest any fake waits for anything: far above every timeout the tests use.
pub const BOUND: Duration = Duration::from_secs(20);

/// `DFLAG_PUBLISHED`, restated from the protocol document.
pub const PUBLISHED: u64 = 0x1;

/// A status frame: `len:2 | 's' | text`.
pub fn status_frame(text: &str) -> Vec<u8> {
    let mut frame = ((1 + text.len()) as u16).to_be_bytes().to_vec();
    frame.push(b's');
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// A version 6 challenge frame: `len:2 | 'N' | flags:8 | challenge:4 | creation:4 | nlen:2 | name`.
pub fn challenge_frame(flags: u64, name: &str) -> Vec<u8> {
    let mut payload = vec![b'N'];
    payload.extend_from_slice(&flags.to_be_bytes());
    payload.extend_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
    payload.extend_from_slice(&0x0000_0007u32.to_be_bytes());
    payload.extend_from_slice(&(name.len() as u16).to_be_bytes());
    payload.extend_from_slice(name.as_bytes());
    let mut frame = (payload.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// `ok` followed by a challenge naming `name`, visible or hidden.
pub fn ok_and_challenge(name: &str, hidden: bool) -> Vec<u8> {
    let flags = if hidden {
        0x0000_0004_0707_0F94
    } else {
        0x0000_0004_0707_0F95
    };
    let mut bytes = status_frame("ok");
    bytes.extend_from_slice(&challenge_frame(flags, name));
    bytes
}

/// What a fake distribution peer does after it has read the whole `send_name`.
#[derive(Debug, Clone)]
pub enum Script {
    /// Write these bytes, then read until the probe closes (bounded by [`BOUND`]).
    Answer(Vec<u8>),
    /// Write these bytes, then close at once.
    AnswerAndClose(Vec<u8>),
    /// Write nothing; read until the probe closes (bounded by [`BOUND`]).
    Silent,
    /// Wait this long, then write these bytes and read until the probe closes: a node slow to
    /// answer, or far away.
    AnswerAfter(Duration, Vec<u8>),
}

/// What a fake distribution peer saw.
#[derive(Debug)]
pub struct Seen {
    /// The whole `send_name` frame, length header included.
    pub send_name: Vec<u8>,
    /// What the probe sent after our answer before it closed: `Some(bytes)` when the peer saw
    /// a clean end of stream, `None` when it did not wait for one (`AnswerAndClose`).
    pub after: Option<Vec<u8>>,
}

/// A fake distribution listener for exactly one connection.
pub struct FakePeer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<Seen>,
}

impl FakePeer {
    /// Binds `127.0.0.1:0` and serves one connection with `script`.
    pub async fn start(script: Script) -> FakePeer {
        FakePeer::start_on("127.0.0.1", script).await
    }

    /// Binds loopback address `ip`, port 0, and serves one connection with `script`.
    pub async fn start_on(ip: &str, script: Script) -> FakePeer {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = tokio::time::timeout(BOUND, listener.accept())
                .await
                .expect("the probe never connected")
                .expect("accept");
            let send_name = tokio::time::timeout(BOUND, read_frame(&mut stream))
                .await
                .expect("send_name never arrived")
                .expect("reading send_name");
            let after = match script {
                Script::Answer(bytes) => {
                    write_ignoring_close(&mut stream, &bytes).await;
                    Some(read_until_eof(&mut stream).await)
                }
                Script::AnswerAndClose(bytes) => {
                    write_ignoring_close(&mut stream, &bytes).await;
                    None
                }
                Script::Silent => Some(read_until_eof(&mut stream).await),
                Script::AnswerAfter(delay, bytes) => {
                    tokio::time::sleep(delay).await;
                    write_ignoring_close(&mut stream, &bytes).await;
                    Some(read_until_eof(&mut stream).await)
                }
            };
            Seen { send_name, after }
        });
        FakePeer { addr, task }
    }

    /// Waits for the peer to finish and returns what it saw.
    pub async fn seen(self) -> Seen {
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the fake peer did not finish")
            .expect("the fake peer panicked")
    }
}

/// Reads one `len:2 | payload` frame and returns it whole.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await?;
    let mut frame = header.to_vec();
    frame.resize(2 + u16::from_be_bytes(header) as usize, 0);
    stream.read_exact(&mut frame[2..]).await?;
    Ok(frame)
}

/// Writes `bytes`; a probe that already gave up may have closed, which is not the fake's
/// failure to report.
async fn write_ignoring_close(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
}

/// Reads until a clean end of stream and returns what arrived; panics on a reset (the probe
/// must close, not abort) and on a probe that never closes within [`BOUND`].
async fn read_until_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut rest))
        .await
        .expect("the probe never closed")
        .expect("the probe's close was not a clean end of stream");
    rest
}

/// The address of a port where nothing listens: bound, then released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// What a fake EPMD does after it has read the 3-byte request.
#[derive(Debug, Clone)]
pub enum EpmdScript {
    /// Write these bytes and close.
    Reply(Vec<u8>),
    /// Write the port, then `name ... at port ...` lines without end until the client
    /// closes, at most [`ENDLESS_CAP`] bytes and [`BOUND`] of time.
    Endless,
    /// Write nothing; wait for the client to close (bounded by [`BOUND`]).
    Silent,
    /// Wait this long, then write these bytes and close: an EPMD far away.
    ReplyAfter(Duration, Vec<u8>),
}

/// The most bytes an endless EPMD writes before it gives up on the client closing.
pub const ENDLESS_CAP: usize = 64 * 1024 * 1024;

/// What a fake EPMD saw.
#[derive(Debug)]
pub struct EpmdSeen {
    /// The request bytes (3 of them, when the client sent a whole request).
    pub request: Vec<u8>,
    /// How many reply bytes were written before the client closed or the script ended.
    pub written: usize,
    /// Whether the client closed the connection while the fake was still writing or waiting.
    pub client_closed: bool,
}

/// A fake EPMD for exactly one connection.
pub struct FakeEpmd {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<EpmdSeen>,
}

impl FakeEpmd {
    /// Binds `127.0.0.1:0` and serves one connection with `script`.
    pub async fn start(script: EpmdScript) -> FakeEpmd {
        FakeEpmd::start_on("127.0.0.1", script).await
    }

    /// Binds loopback address `ip`, port 0, and serves one connection with `script`.
    pub async fn start_on(ip: &str, script: EpmdScript) -> FakeEpmd {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = tokio::time::timeout(BOUND, listener.accept())
                .await
                .expect("the scan never asked EPMD")
                .expect("accept");
            let mut request = vec![0u8; 3];
            tokio::time::timeout(BOUND, stream.read_exact(&mut request))
                .await
                .expect("the request never arrived")
                .expect("reading the request");
            match script {
                EpmdScript::Reply(bytes) => {
                    stream.write_all(&bytes).await.expect("writing the reply");
                    EpmdSeen {
                        request,
                        written: bytes.len(),
                        client_closed: false,
                    }
                }
                EpmdScript::ReplyAfter(delay, bytes) => {
                    tokio::time::sleep(delay).await;
                    stream.write_all(&bytes).await.expect("writing the reply");
                    EpmdSeen {
                        request,
                        written: bytes.len(),
                        client_closed: false,
                    }
                }
                EpmdScript::Endless => endless(stream, request).await,
                EpmdScript::Silent => {
                    let mut rest = Vec::new();
                    let closed = tokio::time::timeout(BOUND, stream.read_to_end(&mut rest))
                        .await
                        .is_ok();
                    EpmdSeen {
                        request,
                        written: 0,
                        client_closed: closed,
                    }
                }
            }
        });
        FakeEpmd { addr, task }
    }

    /// Waits for the fake to finish and returns what it saw.
    pub async fn seen(self) -> EpmdSeen {
        tokio::time::timeout(BOUND, self.task)
            .await
            .expect("the fake EPMD did not finish")
            .expect("the fake EPMD panicked")
    }
}

async fn endless(mut stream: TcpStream, request: Vec<u8>) -> EpmdSeen {
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut written = 0;
    let mut chunk = vec![0, 0, 0x11, 0x11];
    let mut i = 0u64;
    let mut client_closed = false;
    while written < ENDLESS_CAP && tokio::time::Instant::now() < deadline {
        while chunk.len() < 16 * 1024 {
            chunk.extend_from_slice(format!("name n{i} at port {}\n", 1 + i % 65535).as_bytes());
            i += 1;
        }
        match tokio::time::timeout_at(deadline, stream.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(_)) => {
                client_closed = true;
                break;
            }
            Err(_) => break,
        }
        chunk.clear();
    }
    EpmdSeen {
        request,
        written,
        client_closed,
    }
}

/// A `NAMES_REQ` reply: EPMD's port 4369 and the given text.
pub fn names_reply(text: &str) -> Vec<u8> {
    let mut reply = vec![0, 0, 0x11, 0x11];
    reply.extend_from_slice(text.as_bytes());
    reply
}

/// A host whose EPMD is the fake at `epmd`; with `node_host`, its nodes are named
/// `<alive>@<node_host>`, else after the host as given.
pub fn host(label: &str, epmd: SocketAddr, node_host: Option<&str>) -> HostSpec {
    HostSpec {
        label: label.into(),
        address: epmd.ip().to_string(),
        epmd_port: epmd.port(),
        node_host: node_host.map(Into::into),
        dist_port: None,
        dist_port_last: None,
    }
}

/// A scan of `hosts` under `probe_name`, as the local node `me@h`, with 10 s timeouts.
/// Tests change what they test with struct update syntax.
pub fn spec(hosts: Vec<HostSpec>, probe_name: &str) -> ScanSpec {
    ScanSpec {
        hosts,
        probe_name: probe_name.into(),
        creation: 1,
        local_name: "me@h".into(),
        probe_timeout: Duration::from_secs(10),
        epmd_timeout: Duration::from_secs(10),
        tls: false,
    }
}

/// Every name a listing holds, as a target opening with `first_flight`, in the listing's
/// order (none when its EPMD failed).
pub fn every_name(listing: &HostListing, first_flight: FirstFlight) -> Vec<Target> {
    match &listing.result {
        Ok((names, _)) => names
            .iter()
            .map(|l| Target {
                alive: l.alive.clone(),
                port: l.port,
                first_flight,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The plan of a scan that tests no plan: every name each host lists, with `send_name`.
pub fn probe_all() -> Planner {
    probe_all_with(FirstFlight::SendName)
}

/// Runs a scan of `spec` as a local node with no facts of its own, probing every name each
/// host lists, with `recorder` seeing its events: what most scan tests need.
pub async fn scan_all(spec: ScanSpec, recorder: &Recorder) -> ScanReport {
    scan::run(spec, scan::Local::default(), probe_all(), recorder.sink()).await
}

/// Every name each host lists, opening with `first_flight`.
pub fn probe_all_with(first_flight: FirstFlight) -> Planner {
    Planner::with(move |listing| every_name(listing, first_flight))
}

/// `(alive, port, name)` of each name a listing holds; panics if its EPMD failed.
pub fn names(listing: &HostListing) -> Vec<(String, u16, String)> {
    let (names, _) = listing.result.as_ref().expect("a listing");
    names
        .iter()
        .map(|Listed { alive, port, name }| (alive.clone(), *port, name.clone()))
        .collect()
}

/// A candidate's outcome.
pub fn outcome(c: &CandidateReport) -> &Outcome {
    &c.probe.outcome
}

/// Every event a scan handed to its sink, with when it arrived.
#[derive(Clone)]
pub struct Recorder {
    pub start: Instant,
    events: Arc<Mutex<Vec<(Duration, Event)>>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            events: Arc::default(),
        }
    }

    pub fn sink(&self) -> Arc<dyn Fn(Event) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |event| {
            let at = me.start.elapsed();
            me.events.lock().unwrap().push((at, event));
        })
    }

    pub fn events(&self) -> Vec<(Duration, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// The one listing of host `label`: its place among the events, when it came, and it.
    pub fn listed(&self, label: &str) -> (usize, Duration, HostListing) {
        let found: Vec<_> = self
            .events()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (at, e))| match e {
                Event::Listed(h) if h.label == label => Some((i, at, h)),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "host {label} listed {} times", found.len());
        found.into_iter().next().unwrap()
    }

    /// The one candidate `alive` (of any host): its place among the events, when it came,
    /// and it.
    pub fn candidate(&self, alive: &str) -> (usize, Duration, CandidateReport) {
        let found: Vec<_> = self
            .events()
            .into_iter()
            .enumerate()
            .filter_map(|(i, (at, e))| match e {
                Event::Candidate(c) if c.alive == alive => Some((i, at, c)),
                _ => None,
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "candidate {alive} reported {} times",
            found.len()
        );
        found.into_iter().next().unwrap()
    }

    pub fn candidates(&self) -> Vec<CandidateReport> {
        self.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Candidate(c) => Some(c),
                _ => None,
            })
            .collect()
    }
}

/// A fake distribution listener that serves every connection alike, for as long as it
/// lives: reads the `send_name`, writes `answer`, reads until the probe closes. It counts
/// the connections, so a test can tell how many probes one listener cost.
pub struct ServingPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl ServingPeer {
    /// Binds loopback address `ip`, port 0, and answers every connection with `answer`.
    pub async fn start_on(ip: &str, answer: Vec<u8>) -> ServingPeer {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind");
        ServingPeer::serve(listener, answer)
    }

    /// Answers every connection to `listener` with `answer`.
    pub fn serve(listener: TcpListener, answer: Vec<u8>) -> ServingPeer {
        let addr = listener.local_addr().expect("local addr");
        let (accepted, seen) = (Arc::new(AtomicUsize::new(0)), Arc::default());
        let (count, log): (_, Arc<Mutex<Vec<Seen>>>) = (accepted.clone(), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(Ok(send_name)) =
                        tokio::time::timeout(BOUND, read_frame(&mut stream)).await
                    else {
                        return;
                    };
                    write_ignoring_close(&mut stream, &answer).await;
                    let after = Some(read_until_eof(&mut stream).await);
                    log.lock().unwrap().push(Seen { send_name, after });
                });
            }
        });
        ServingPeer {
            addr,
            accepted,
            seen,
            task,
        }
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `count` connections were served to their close (bounded by [`BOUND`]),
    /// and returns what each saw.
    pub async fn served(&self, count: usize) -> Vec<Seen> {
        let start = Instant::now();
        loop {
            if self.seen.lock().unwrap().len() >= count {
                break;
            }
            assert!(start.elapsed() < BOUND, "{count} connections never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for ServingPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When each connection a silent listener accepted was opened, and when its client closed
/// it (`None` while open).
pub type Connections = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// A listener on loopback address `ip` that accepts every connection, records it into
/// `connections`, reads until the client closes it (bounded by [`BOUND`]) and answers
/// nothing: a frozen node.
pub async fn silent_listener_on(ip: &str, connections: Connections) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    silent_listener(listener, connections)
}

/// [`silent_listener_on`] on a listener already bound.
pub fn silent_listener(listener: TcpListener, connections: Connections) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let index = {
                let mut seen = connections.lock().unwrap();
                seen.push((Instant::now(), None));
                seen.len() - 1
            };
            let seen = connections.clone();
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut sink)).await;
                seen.lock().unwrap()[index].1 = Some(Instant::now());
            });
        }
    });
    addr
}

/// `count` listeners on consecutive ports of 127.0.0.1, bound (not yet listening for
/// tokio): a host's range of distribution ports. A listener dropped leaves its port closed.
pub fn port_block(count: u16) -> Vec<std::net::TcpListener> {
    for attempt in 0..200u32 {
        // Below the usual ephemeral range, spread by the process id and the attempt.
        let base = 20_000 + ((std::process::id() * 7 + attempt * 97) % 10_000) as u16;
        let bound: Vec<_> = (base..base + count)
            .map_while(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if bound.len() == usize::from(count) {
            for listener in &bound {
                listener.set_nonblocking(true).expect("nonblocking");
            }
            return bound;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}
