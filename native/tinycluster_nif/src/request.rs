//! A scan request as the Elixir side sends it: decoding, bounds and validation, before
//! anything is spawned. A request that passes becomes a [`scan::ScanSpec`] and a
//! [`scan::Local`]; one that does not is `{:error, {:badarg, why}}` or raises `badarg`, and
//! no scan starts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rustler::{Decoder, NifMap, NifResult, Term};

use crate::budget::ProbeBudget;
use crate::handshake;
use crate::limits::{MAX_LISTED, MAX_TIMEOUT_MS};
use crate::naming::Naming;
use crate::resolve::Family;
use crate::scan;

mod atoms {
    rustler::atoms! {
        family,
        inet,
        inet6,
        nil,
        tls,
        all,
        hold,
        last_listings,
        first,
    }
}

/// A host as the Elixir side describes it.
#[derive(NifMap)]
struct HostOpts {
    label: String,
    address: String,
    epmd_port: u16,
    node_host: Option<String>,
}

/// The options every request carries.
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

/// A decoded request: the options every caller gives, and some a caller may leave out:
/// `family` (`:inet`, `:inet6` or nil), the local node's distribution family; `tls`: `:all`
/// (the local node runs TLS distribution) or a list of `{host_label, alive, port}` to probe
/// with the TLS ClientHello; `hold`: such a list not to probe now; `last_listings`: a list of
/// `{host_label, digest}` (see [`crate::unchanged`]); and `first`: a list of `{host_label,
/// alive}` to probe before any other (see [`crate::budget`]).
pub struct Request {
    opts: ScanOpts,
    family: Option<Family>,
    tls: scan::TlsProbes,
    hold: HashSet<(String, String, u16)>,
    last_listings: HashMap<String, u64>,
    budget: ProbeBudget,
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
        let mut budget = ProbeBudget::default();
        if let Ok(value) = term.map_get(atoms::first()) {
            if value.list_length()? > MAX_LISTED {
                return Err(rustler::Error::RaiseAtom("badarg"));
            }
            budget.first = value.decode()?;
        }
        Ok(Request {
            opts: term.decode()?,
            family,
            tls,
            hold,
            last_listings,
            budget,
        })
    }
}

/// Decodes a list of `{host_label, alive, port}`, at most [`MAX_LISTED`].
fn listed(term: Term<'_>) -> NifResult<HashSet<(String, String, u16)>> {
    // Counted before decoding: a list past the bound is refused without a copy of it.
    if term.list_length()? > MAX_LISTED {
        return Err(rustler::Error::RaiseAtom("badarg"));
    }
    let listed: Vec<(String, String, u16)> = term.decode()?;
    Ok(listed.into_iter().collect())
}

impl Request {
    /// Whether the owner asked to answer each host's names before they are probed.
    pub fn gated(&self) -> bool {
        self.opts.gate
    }

    /// Checks the request and makes the pass's spec (without a gate) and the local node's
    /// view, or says what is wrong.
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
                })
                .collect(),
            probe_name: opts.probe_name,
            creation: opts.creation,
            local_name: opts.local_name,
            skip: opts.skip.into_iter().collect(),
            probe_timeout: Duration::from_millis(opts.probe_timeout_ms),
            epmd_timeout: Duration::from_millis(opts.epmd_timeout_ms),
            gate: None,
            tls: self.tls,
            hold: self.hold,
            last_listings: self.last_listings,
            budget: self.budget,
        };
        Ok((spec, local))
    }
}
