//! How scan reports become Erlang terms: maps with atom keys, strings as binaries.
//!
//! Names travel as binaries, never atoms: the Elixir side makes an atom only of a name the
//! probe proved live, since atoms are never freed.

use rustler::{Atom, Encoder, Env, Term};

use crate::naming::Naming;
use crate::probe::Outcome;
use crate::scan::{CandidateReport, HostListing, ScanReport};

mod atoms {
    rustler::atoms! {
        nil,
        ok,
        error,
        live,
        hidden,
        name_mismatch,
        not_allowed,
        busy,
        unreachable,
        bad_reply,
        nok,
        alive,
        claimed,
        long_name,
        short_name,
        tls,
        alert,
        server_hello,
        // Map keys, made once at load rather than looked up in the atom table per key per
        // report (an idle poll's report holds a map per candidate).
        index,
        label,
        address,
        epmd_port,
        dist_port,
        dist_port_last,
        status,
        names,
        malformed,
        latency_us,
        probe_timeout_ms,
        host,
        name,
        port,
        state,
        reason,
        duration_us,
        candidates,
        plan_timeouts,
        creation,
    }
}

fn map<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> Term<'a> {
    let keys: Vec<Term<'a>> = pairs.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}

/// Encodes a host's listing as `%{index, label, address, epmd_port, dist_port,
/// dist_port_last, status, names, malformed, latency_us, probe_timeout_ms}` (`dist_port` nil
/// for a host asked through EPMD, `dist_port_last` nil but for a range of ports); `status` is `:ok` or `{:error, reason}`,
/// `names` a list of `{alive, port, name}` (the name its node has until its probe says
/// otherwise), `malformed` a list of `{sample, reason}`, `latency_us` its EPMD's round trip,
/// `probe_timeout_ms` the probe timeout in force for its candidates (nil when its EPMD did
/// not answer).
pub fn listing<'a>(env: Env<'a>, listing: &HostListing) -> Term<'a> {
    let (status, names, malformed) = match &listing.result {
        Ok((names, malformed)) => (
            atoms::ok().encode(env),
            names
                .iter()
                .map(|l| (l.alive.as_str(), l.port, l.name.as_str()))
                .collect::<Vec<_>>()
                .encode(env),
            malformed
                .iter()
                .map(|m| (m.sample.as_str(), m.reason))
                .collect::<Vec<_>>()
                .encode(env),
        ),
        Err(e) => (
            (atoms::error(), e).encode(env),
            Vec::<u8>::new().encode(env),
            Vec::<u8>::new().encode(env),
        ),
    };
    map(
        env,
        &[
            (atoms::index(), listing.index.encode(env)),
            (atoms::label(), listing.label.encode(env)),
            (atoms::address(), listing.address.encode(env)),
            (atoms::epmd_port(), listing.epmd_port.encode(env)),
            (atoms::dist_port(), listing.dist_port.encode(env)),
            (atoms::dist_port_last(), listing.dist_port_last.encode(env)),
            (atoms::status(), status),
            (atoms::names(), names),
            (atoms::malformed(), malformed),
            (
                atoms::latency_us(),
                (listing.latency.as_micros() as u64).encode(env),
            ),
            (
                atoms::probe_timeout_ms(),
                listing
                    .probe_timeout
                    .map(|t| t.as_millis() as u64)
                    .encode(env),
            ),
        ],
    )
}

/// Encodes a probed candidate as `%{host, alive, name, address, port, state, reason,
/// latency_us, creation}`; `creation` is the one a live node's challenge carried, nil for any
/// other. A TLS listener is `state: :tls`, reason `:alert` or `:server_hello` (how it was
/// told).
pub fn candidate<'a>(env: Env<'a>, c: &CandidateReport) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let creation = match c.probe.outcome {
        Outcome::Live { creation, .. } => creation.encode(env),
        _ => nil,
    };
    let (state, reason) = match &c.probe.outcome {
        Outcome::Live { hidden: false, .. } => (atoms::live(), nil),
        Outcome::Live { hidden: true, .. } => (atoms::hidden(), nil),
        Outcome::NameMismatch { claimed } => (
            atoms::name_mismatch(),
            (atoms::claimed(), claimed).encode(env),
        ),
        Outcome::OtherNaming { claimed } => (atoms::name_mismatch(), other_naming(env, claimed)),
        Outcome::NotAllowed => (atoms::not_allowed(), nil),
        Outcome::Busy(crate::handshake::Status::Alive) => {
            (atoms::busy(), atoms::alive().encode(env))
        }
        Outcome::Busy(_) => (atoms::busy(), atoms::nok().encode(env)),
        Outcome::Tls(crate::probe::TlsSeen::Alert) => (atoms::tls(), atoms::alert().encode(env)),
        Outcome::Tls(crate::probe::TlsSeen::ServerHello) => {
            (atoms::tls(), atoms::server_hello().encode(env))
        }
        Outcome::Unreachable(e) => (atoms::unreachable(), e.encode(env)),
        Outcome::BadReply(e) => (atoms::bad_reply(), e.encode(env)),
    };
    map(
        env,
        &[
            (atoms::host(), c.host.encode(env)),
            (atoms::alive(), c.alive.encode(env)),
            (atoms::name(), c.name.encode(env)),
            (atoms::address(), c.address.encode(env)),
            (atoms::port(), c.port.encode(env)),
            (atoms::state(), state.encode(env)),
            (atoms::reason(), reason),
            (
                atoms::latency_us(),
                (c.probe.latency.as_micros() as u64).encode(env),
            ),
            (atoms::creation(), creation),
        ],
    )
}

/// `{:long_name, name}` for a node named in long form (so the local node runs short names),
/// `{:short_name, name}` otherwise.
fn other_naming<'a>(env: Env<'a>, claimed: &str) -> Term<'a> {
    let host = claimed.split_once('@').map_or("", |(_, h)| h);
    let form = if Naming::Long.accepts(host) {
        atoms::long_name()
    } else {
        atoms::short_name()
    };
    (form, claimed).encode(env)
}

/// Encodes the end of the pass as `%{duration_us, candidates, plan_timeouts}`: every
/// candidate probed (the hosts came in their `:listed` messages), and the indexes of the
/// hosts whose plan did not come in time, which probed nothing.
pub fn report<'a>(env: Env<'a>, r: &ScanReport) -> Term<'a> {
    let candidates: Vec<Term<'a>> = r.candidates.iter().map(|c| candidate(env, c)).collect();
    let late: Vec<usize> = r
        .hosts
        .iter()
        .filter(|h| matches!(h.result, Err(crate::error::Error::PlanTimeout)))
        .map(|h| h.index)
        .collect();
    map(
        env,
        &[
            (
                atoms::duration_us(),
                (r.duration.as_micros() as u64).encode(env),
            ),
            (atoms::candidates(), candidates.encode(env)),
            (atoms::plan_timeouts(), late.encode(env)),
        ],
    )
}
