//! Every bound the engine enforces, in one table its owner reads through the `limits/0` NIF,
//! so that the Elixir side restates none of these numbers: a bound changed here changes
//! there too.
//!
//! Each bound is defined where it is enforced ([`crate::scan`], [`crate::park`],
//! [`crate::naming`], [`crate::epmd`], [`crate::handshake`]). The ones that bound the owner's
//! request are defined here, since the request's decoder is only built with the NIF.

use crate::{epmd, handshake, naming, park, scan};

/// The longest a request's timeouts may be, in milliseconds, so that a scan always ends.
/// `Tinycluster.Options` refuses a longer one with a clear error before any request.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// The most distribution ports a host of a request may have probed (`Tinycluster.EPMD`'s
/// range), so that a scan's sockets stay bounded: OTP takes a range's ports from its first
/// up, so a host's nodes are on its first ports.
pub const MAX_DIST_PORTS: usize = 64;

/// The engine's bounds, as the owner reads them: a map with these keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "nif", derive(rustler::NifMap))]
pub struct Limits {
    /// [`MAX_TIMEOUT_MS`].
    pub max_timeout_ms: u64,
    /// [`MAX_DIST_PORTS`]: the most distribution ports probed on one host.
    pub max_dist_ports: usize,
    /// [`scan::MAX_PROBES_IN_FLIGHT`]: the most probes in flight at once in one scan.
    pub max_probes_in_flight: usize,
    /// [`scan::MIN_HOST_PROBES_IN_FLIGHT`]: the fewest in flight a host of a scan may have.
    pub min_host_probes_in_flight: usize,
    /// [`scan::RTT_FACTOR`]: how many of its EPMD round trips a far host's probes may take.
    pub rtt_factor: u32,
    /// [`scan::MAX_HOST_PROBE_TIMEOUT`], in milliseconds: the most a host's distance
    /// lengthens its probes.
    pub max_host_probe_timeout_ms: u64,
    /// [`naming::MAX_NAME_BYTES`]: the longest node name, in bytes, reported as a node.
    pub max_name_bytes: usize,
    /// [`park::MAX_PARKED`]: the most probes parked at once, process-wide.
    pub max_parked: usize,
    /// [`park::MAX_PARKED_PER_ADDRESS`]: the most probes parked at once to one address.
    pub max_parked_per_address: usize,
    /// [`park::PARK_FOR`], in milliseconds: the longest a parked probe waits.
    pub park_for_ms: u64,
    /// [`epmd::MAX_REPLY_BYTES`]: the most bytes read from one EPMD.
    pub max_reply_bytes: usize,
    /// [`epmd::MAX_NAMES`]: the most names taken from one EPMD.
    pub max_names: usize,
    /// [`handshake::MAX_STATUS_LEN`]: the largest status payload a probe reads.
    pub max_status_len: usize,
    /// [`handshake::MAX_CHALLENGE_LEN`]: the largest challenge payload a probe reads.
    pub max_challenge_len: usize,
}

/// The bounds in force.
pub const LIMITS: Limits = Limits {
    max_timeout_ms: MAX_TIMEOUT_MS,
    max_dist_ports: MAX_DIST_PORTS,
    max_probes_in_flight: scan::MAX_PROBES_IN_FLIGHT,
    min_host_probes_in_flight: scan::MIN_HOST_PROBES_IN_FLIGHT,
    rtt_factor: scan::RTT_FACTOR,
    max_host_probe_timeout_ms: scan::MAX_HOST_PROBE_TIMEOUT.as_millis() as u64,
    max_name_bytes: naming::MAX_NAME_BYTES,
    max_parked: park::MAX_PARKED,
    max_parked_per_address: park::MAX_PARKED_PER_ADDRESS,
    park_for_ms: park::PARK_FOR.as_millis() as u64,
    max_reply_bytes: epmd::MAX_REPLY_BYTES,
    max_names: epmd::MAX_NAMES,
    max_status_len: handshake::MAX_STATUS_LEN,
    max_challenge_len: handshake::MAX_CHALLENGE_LEN,
};
