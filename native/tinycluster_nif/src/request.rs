//! A scan request as the Elixir side sends it: decoding, bounds and validation, before
//! anything is spawned. A request that passes becomes a [`scan::ScanSpec`] and a
//! [`scan::Local`]; one that does not is `{:error, {:badarg, why}}` or raises `badarg`, and
//! no scan starts.
//!
//! A request names hosts and the facts of the local node, never a candidate: which names
//! to probe is the owner's plan for each host's listing ([`crate::plans`]).

use std::time::Duration;

use rustler::{Decoder, NifMap, NifResult, Term};

use crate::handshake;
use crate::limits::{MAX_DIST_PORTS, MAX_TIMEOUT_MS};
use crate::naming::Naming;
use crate::resolve::Family;
use crate::scan;

mod atoms {
    rustler::atoms! {
        family,
        inet,
        inet6,
        nil,
    }
}

/// A host as the Elixir side describes it.
#[derive(NifMap)]
struct HostOpts {
    label: String,
    address: String,
    epmd_port: u16,
    node_host: Option<String>,
    dist_port: Option<u16>,
    dist_port_last: Option<u16>,
}

/// The options every request carries.
#[derive(NifMap)]
struct ScanOpts {
    hosts: Vec<HostOpts>,
    probe_name: String,
    creation: u32,
    local_name: String,
    probe_timeout_ms: u64,
    epmd_timeout_ms: u64,
    tls: bool,
}

/// A decoded request: the options every caller gives, and `family` (`:inet`, `:inet6` or
/// nil, which a caller may leave out), the local node's distribution family.
pub struct Request {
    opts: ScanOpts,
    family: Option<Family>,
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
        Ok(Request {
            opts: term.decode()?,
            family,
        })
    }
}

impl Request {
    /// Checks the request and makes the pass's spec and the local node's view, or says what
    /// is wrong.
    pub fn into_spec(self) -> Result<(scan::ScanSpec, scan::Local), String> {
        let opts = self.opts;
        if !handshake::valid_node_name(opts.probe_name.as_bytes()) {
            return Err("probe_name is not a node name".into());
        }
        if opts.creation == 0 {
            return Err("creation must be nonzero".into());
        }
        for t in [opts.probe_timeout_ms, opts.epmd_timeout_ms] {
            if t == 0 || t > MAX_TIMEOUT_MS {
                return Err(format!(
                    "timeouts must be between 1 and {MAX_TIMEOUT_MS} ms"
                ));
            }
        }
        for h in &opts.hosts {
            if let (Some(first), Some(last)) = (h.dist_port, h.dist_port_last) {
                if last < first || usize::from(last - first) >= MAX_DIST_PORTS {
                    return Err(format!(
                        "a host's distribution ports must be a range of 1 to {MAX_DIST_PORTS} ports"
                    ));
                }
            }
        }
        // The local node's own name tells its naming mode, as net_kernel reads it.
        let local = scan::Local {
            naming: Naming::of_node(&opts.local_name),
            family: self.family,
        };
        let spec = scan::ScanSpec {
            hosts: opts
                .hosts
                .into_iter()
                .map(|h| scan::HostSpec {
                    label: h.label,
                    address: h.address,
                    epmd_port: h.epmd_port,
                    node_host: h.node_host,
                    dist_port: h.dist_port,
                    dist_port_last: h.dist_port_last,
                })
                .collect(),
            probe_name: opts.probe_name,
            creation: opts.creation,
            local_name: opts.local_name,
            probe_timeout: Duration::from_millis(opts.probe_timeout_ms),
            epmd_timeout: Duration::from_millis(opts.epmd_timeout_ms),
            tls: opts.tls,
        };
        Ok((spec, local))
    }
}
