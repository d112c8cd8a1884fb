//! tinycluster's native core: find the nodes EPMD lists and prove each one is a live node.
//!
//! Modules, from the wire up:
//! - [`epmd`]: the `NAMES_REQ` request and the parser of its reply (bytes only).
//! - [`handshake`]: the distribution handshake frames a probe sends and reads (bytes only).
//! - [`tls`]: the TLS ClientHello a probe of a TLS listener sends, and its answer (bytes only).
//! - [`naming`]: Erlang's short and long node names, and which names a node can connect to.
//! - [`resolve`]: host name resolution off the runtime's workers, one lookup per name.
//! - [`probe`]: one candidate: connect, `send_name` (or the ClientHello), answer, close; one
//!   deadline.
//! - [`park`]: the probe of a silent (frozen) node kept open rather than replaced each scan.
//! - [`inflight`]: one probe at a time per probe name and listener, across all scans.
//! - [`scan`]: a whole pass over many hosts, concurrently: each host's listing goes to the
//!   owner, whose plan names the targets; their probes share the scan fairly between hosts,
//!   one per listener, each host's waiting as long as its EPMD's round trip says it is far.
//! - [`direct`]: hosts without EPMD, whose fixed distribution port is probed directly and
//!   whose node's challenge names it.
//! - [`plans`]: where a scan's hosts wait for their owner's plan.
//! - [`batch`]: a pass's candidates whose probes finish together, handed over together.
//! - [`limits`]: every bound above, in the one table the owner reads instead of restating.
//! - [`runtime`]: the process-wide tokio runtime's configuration.
//! - [`error`]: the one error type and its Erlang encoding.
//! - [`encode`]: reports as Erlang terms (feature `nif`).
//! - [`request`]: a scan request from Erlang terms: decoding, bounds, validation (feature
//!   `nif`).
//! - `nif`: the NIF entry points: start a scan, cancel it, answer its plans, tell the limits
//!   (feature `nif`).
//!
//! The NIF entry point, `start_scan/1`, only validates its argument and spawns the pass on a
//! process-wide tokio runtime, then returns `{:ok, scan_id, handle}` at once: no scheduler ever
//! waits on the network. Results reach the calling process as messages
//! `{:tinycluster_scan, scan_id, event}`, sent from the runtime's threads.

pub mod batch;
pub mod direct;
#[cfg(feature = "nif")]
pub mod encode;
pub mod epmd;
pub mod error;
pub mod handshake;
pub mod inflight;
pub mod limits;
pub mod naming;
pub mod park;
pub mod plans;
pub mod probe;
#[cfg(feature = "nif")]
pub mod request;
pub mod resolve;
pub mod runtime;
pub mod scan;
pub mod tls;

#[cfg(feature = "nif")]
mod nif;
