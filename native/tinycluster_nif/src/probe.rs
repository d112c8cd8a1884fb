//! One candidate's probe: connect, send the first flight, read the answer, close.
//!
//! The first flight is the plain distribution `send_name` (then the status and the challenge
//! are read), or for a TLS distribution listener the TLS ClientHello of [`crate::tls`] (then
//! the first record of the answer). Either way the probe stops before anything the peer would
//! check, so it needs no cookie or certificate and the peer sees only a connection that
//! closed during the handshake: no log line, no nodeup, no nodedown. One deadline covers the
//! whole exchange, so a frozen node (which still accepts TCP) costs at most `timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::handshake::{self, Status, MAX_CHALLENGE_LEN, MAX_STATUS_LEN};
use crate::tls::{self, Answer, RECORD_HEADER_LEN};

/// What a probe sends first, which decides the protocol of the whole exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FirstFlight {
    /// The plain distribution `send_name`.
    #[default]
    SendName,
    /// The TLS ClientHello, for a TLS distribution listener: a plain `send_name` would make
    /// its `ssl` log a notice.
    ClientHello,
}

/// How a probe learned that a port speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSeen {
    /// It answered the plain `send_name` with a TLS alert (and its `ssl` logged a notice).
    Alert,
    /// It answered the ClientHello with a ServerHello (and logged nothing).
    ServerHello,
}

/// What to probe and as whom.
#[derive(Debug, Clone)]
pub struct ProbeRequest<'a> {
    /// The candidate's distribution listener.
    pub addr: SocketAddr,
    /// The name the probe claims in `send_name`: fixed per poller, never a real node's.
    pub probe_name: &'a str,
    /// The creation sent in `send_name`: nonzero.
    pub creation: u32,
    /// The deadline for the whole exchange.
    pub timeout: Duration,
    /// The first flight: `send_name`, or the ClientHello for a known TLS listener.
    pub first_flight: FirstFlight,
}

/// What a probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A live node; `name` is its full name, as its challenge gives it, and `creation` the
    /// one its challenge carries: new at every start of a node of that name, so it tells a
    /// restarted node from the one before at the same port.
    Live {
        name: String,
        hidden: bool,
        creation: u32,
    },
    /// A live listener whose challenge names another node.
    NameMismatch { claimed: String },
    /// A live node whose name is of the other naming mode (`-name` against `-sname`), which
    /// the local node cannot connect to. A probe never decides this itself: a scan that
    /// knows the local node's mode turns a [`Outcome::Live`] into it.
    OtherNaming { claimed: String },
    /// A live node whose allow list refuses us (`not_allowed`).
    NotAllowed,
    /// A live node that answered `nok` or `alive`: it is busy with a connection from or to
    /// us; the next scan asks again.
    Busy(Status),
    /// A TLS distribution listener. No challenge comes from TLS, so nothing confirms its
    /// name: what is proven is that EPMD lists it and that a TLS server listens on its port.
    /// Whether the local node can connect it (it runs TLS distribution too) is its owner's
    /// to say.
    Tls(TlsSeen),
    /// No status arrived: nothing listens, the node is frozen, or it closed at once.
    Unreachable(Error),
    /// The peer answered, but not in the protocol: a frame too large, cut short, unknown.
    BadReply(Error),
}

/// A probe's outcome and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What was learned.
    pub outcome: Outcome,
    /// From the start of the connect to the decision.
    pub latency: Duration,
}

/// Probes one candidate. Never fails: every failure is an [`Outcome`].
pub async fn probe(req: &ProbeRequest<'_>) -> Probe {
    probe_watched(req, &AtomicBool::new(false)).await
}

/// Probes one candidate like [`probe`], and sets `answered` as soon as the first byte of an
/// answer arrives: a caller that stops waiting before the deadline (see [`crate::park`])
/// tells from it a silent peer from one that stalled in the middle of its answer.
pub async fn probe_watched(req: &ProbeRequest<'_>, answered: &AtomicBool) -> Probe {
    let start = Instant::now();
    let result = tokio::time::timeout(req.timeout, exchange(req, answered)).await;
    let answered = answered.load(Ordering::Relaxed);
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => unreachable_or_bad(answered, e),
        Err(_elapsed) => unreachable_or_bad(answered, Error::Timeout),
    };
    Probe {
        outcome,
        latency: start.elapsed(),
    }
}

/// Before any byte of an answer, a failure means nobody is there to talk; after it, the peer
/// answered badly.
fn unreachable_or_bad(answered: bool, e: Error) -> Outcome {
    match (answered, &e) {
        (false, Error::Timeout | Error::Refused | Error::Closed | Error::Io(_)) => {
            Outcome::Unreachable(e)
        }
        _ => Outcome::BadReply(e),
    }
}

async fn exchange(req: &ProbeRequest<'_>, answered: &AtomicBool) -> Result<Outcome, Error> {
    let stream = TcpStream::connect(req.addr).await?;
    // The frames are tiny and each waits for an answer: Nagle would only add delay.
    stream.set_nodelay(true)?;
    match req.first_flight {
        FirstFlight::SendName => distribution(req, stream, answered).await,
        FirstFlight::ClientHello => client_hello(stream, answered).await,
    }
}

/// The plain distribution exchange: `send_name`, status, challenge.
async fn distribution(
    req: &ProbeRequest<'_>,
    mut stream: TcpStream,
    answered: &AtomicBool,
) -> Result<Outcome, Error> {
    let send_name =
        handshake::encode_send_name(req.probe_name, handshake::PROBE_FLAGS, req.creation);
    stream.write_all(&send_name).await?;

    let mut header = [0u8; 2];
    stream.read_exact(&mut header[..1]).await?;
    answered.store(true, Ordering::Relaxed);
    stream.read_exact(&mut header[1..]).await?;
    if handshake::is_tls_alert(header) {
        return Ok(Outcome::Tls(TlsSeen::Alert));
    }
    let status = read_payload(&mut stream, header, MAX_STATUS_LEN).await?;
    match handshake::decode_status(&status)? {
        Status::Ok | Status::OkSimultaneous => {}
        Status::NotAllowed => return Ok(Outcome::NotAllowed),
        busy @ (Status::Nok | Status::Alive) => return Ok(Outcome::Busy(busy)),
    }

    stream.read_exact(&mut header).await?;
    let payload = read_payload(&mut stream, header, MAX_CHALLENGE_LEN).await?;
    let challenge = handshake::decode_challenge(&payload)?;
    // Closing here, before the challenge reply, is what keeps the probe silent on the peer.
    drop(stream);

    // Whatever name it gives: a listener answers one probe for every name listed at it, and
    // each is read against that name's alive part ([`expect`]).
    Ok(Outcome::Live {
        hidden: challenge.hidden(),
        creation: challenge.creation,
        name: challenge.name,
    })
}

/// A probe's outcome read for a candidate listed as `alive`: a live node that names itself
/// with another alive part claims a name not its own ([`Outcome::NameMismatch`]: a stale
/// EPMD entry, a port reused, or a listener that lies). Any host part is the node's: a node
/// may call its host otherwise than its EPMD's host is named (`a@localhost`,
/// `a@host.example`); the scan checks the naming mode and uses this name.
pub fn expect(outcome: Outcome, alive: &str) -> Outcome {
    match outcome {
        Outcome::Live { name, .. } if name.split('@').next() != Some(alive) => {
            Outcome::NameMismatch { claimed: name }
        }
        other => other,
    }
}

/// The TLS exchange: the ClientHello, then the first record of the answer, as far as it tells
/// a ServerHello from an alert.
async fn client_hello(mut stream: TcpStream, answered: &AtomicBool) -> Result<Outcome, Error> {
    stream.write_all(tls::client_hello()).await?;
    let mut answer = [0u8; RECORD_HEADER_LEN + 2];
    // A TLS server answers every ClientHello, if only with an alert; a plain distribution
    // node closes on it at once (see `tls::CLIENT_HELLO_LEN`).
    if let Err(e) = stream.read_exact(&mut answer[..1]).await {
        return Err(match Error::from(e) {
            Error::Closed => Error::NotTls,
            other => other,
        });
    }
    answered.store(true, Ordering::Relaxed);
    stream.read_exact(&mut answer[1..RECORD_HEADER_LEN]).await?;
    let header = answer[..RECORD_HEADER_LEN].try_into().expect("5 bytes");
    let len = tls::answer_len(&header)?;
    stream
        .read_exact(&mut answer[RECORD_HEADER_LEN..len])
        .await?;
    let answer = tls::decode_answer(&answer[..len])?;
    // Closing here, with no alert and no second flight, is what keeps the probe silent: OTP
    // logs the alerts it sends or receives, not a peer gone in the middle of the handshake.
    // The rest of the server's flight is unread, so the close may be a reset; OTP logs that
    // no more than a clean close (both checked in test/tls_test.exs).
    drop(stream);
    match answer {
        Answer::ServerHello => Ok(Outcome::Tls(TlsSeen::ServerHello)),
        Answer::Alert { description, .. } => Err(Error::TlsAlert(description)),
    }
}

/// Reads one payload whose length header is already read, after checking it against `max`.
async fn read_payload(
    stream: &mut TcpStream,
    header: [u8; 2],
    max: usize,
) -> Result<Vec<u8>, Error> {
    let len = handshake::check_frame_len(header, max)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(payload)
}
