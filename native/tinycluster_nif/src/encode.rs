//! How scan reports become Erlang terms: maps with atom keys, strings as binaries.
//!
//! Names travel as binaries, never atoms: the Elixir side makes an atom only of a name the
//! probe proved live, since atoms are never freed.

use rustler::{Atom, Encoder, Env, Term};

use crate::naming::Naming;
use crate::probe::Outcome;
use crate::scan::{CandidateReport, HostReport, ScanReport};

mod atoms {
    rustler::atoms! {
        nil,
        ok,
        error,
        skipped,
        held,
        deferred,
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
        label,
        address,
        epmd_port,
        status,
        names,
        listed,
        malformed,
        latency_us,
        probe_timeout_ms,
        listing,
        unchanged,
        host,
        name,
        port,
        state,
        reason,
        duration_us,
        hosts,
        candidates,
        creation,
    }
}

fn map<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> Term<'a> {
    let keys: Vec<Term<'a>> = pairs.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}

/// Encodes a host as `%{label, address, epmd_port, status, names, listed, malformed, latency_us,
/// probe_timeout_ms, listing, unchanged}`; `status` is `:ok` or `{:error, reason}`,
/// `malformed` a list of `{sample, reason}`, `latency_us` its EPMD's round trip,
/// `probe_timeout_ms` the probe timeout in force for its candidates (nil when its EPMD did
/// not answer), `listing` the digest of what it listed or nil, `unchanged` whether that
/// changed nothing (no candidate events followed).
pub fn host<'a>(env: Env<'a>, report: &HostReport) -> Term<'a> {
    let (status, names, malformed) = match &report.result {
        Ok((names, malformed)) => (
            atoms::ok().encode(env),
            *names,
            malformed
                .iter()
                .map(|m| (m.sample.as_str(), m.reason))
                .collect::<Vec<_>>()
                .encode(env),
        ),
        Err(e) => (
            (atoms::error(), e).encode(env),
            0,
            Vec::<u8>::new().encode(env),
        ),
    };
    map(
        env,
        &[
            (atoms::label(), report.label.encode(env)),
            (atoms::address(), report.address.encode(env)),
            (atoms::epmd_port(), report.epmd_port.encode(env)),
            (atoms::status(), status),
            (atoms::names(), names.encode(env)),
            (atoms::listed(), report.listed.encode(env)),
            (atoms::malformed(), malformed),
            (
                atoms::latency_us(),
                (report.latency.as_micros() as u64).encode(env),
            ),
            (
                atoms::probe_timeout_ms(),
                report
                    .probe_timeout
                    .map(|t| t.as_millis() as u64)
                    .encode(env),
            ),
            (atoms::listing(), report.listing.encode(env)),
            (atoms::unchanged(), report.unchanged.encode(env)),
        ],
    )
}

/// Encodes a candidate as `%{host, alive, name, address, port, state, reason, latency_us,
/// creation}`; `creation` is the one a live node's challenge carried, nil for any other.
/// A held-back candidate is `state: :held`, one past the scan's budget `:deferred`, one in
/// the skip set `:skipped`.
/// A TLS listener is `state: :tls` (reason `:alert` or `:server_hello`: how it was told), or
/// `state: :live, reason: :tls` for a local node that runs TLS distribution.
pub fn candidate<'a>(env: Env<'a>, c: &CandidateReport) -> Term<'a> {
    let nil = atoms::nil().encode(env);
    let creation = match &c.probe {
        Some(p) => match p.outcome {
            Outcome::Live { creation, .. } => creation.encode(env),
            _ => nil,
        },
        None => nil,
    };
    let (state, reason, latency) = match &c.probe {
        None if c.held => (atoms::held(), nil, nil),
        None if c.deferred => (atoms::deferred(), nil, nil),
        None => (atoms::skipped(), nil, nil),
        Some(p) => {
            let (state, reason) = match &p.outcome {
                Outcome::Live { hidden: false, .. } => (atoms::live(), nil),
                Outcome::Live { hidden: true, .. } => (atoms::hidden(), nil),
                Outcome::NameMismatch { claimed } => (
                    atoms::name_mismatch(),
                    (atoms::claimed(), claimed).encode(env),
                ),
                Outcome::OtherNaming { claimed } => {
                    (atoms::name_mismatch(), other_naming(env, claimed))
                }
                Outcome::NotAllowed => (atoms::not_allowed(), nil),
                Outcome::Busy(crate::handshake::Status::Alive) => {
                    (atoms::busy(), atoms::alive().encode(env))
                }
                Outcome::Busy(_) => (atoms::busy(), atoms::nok().encode(env)),
                Outcome::Tls(crate::probe::TlsSeen::Alert) => {
                    (atoms::tls(), atoms::alert().encode(env))
                }
                Outcome::Tls(crate::probe::TlsSeen::ServerHello) => {
                    (atoms::tls(), atoms::server_hello().encode(env))
                }
                Outcome::TlsLive => (atoms::live(), atoms::tls().encode(env)),
                Outcome::Unreachable(e) => (atoms::unreachable(), e.encode(env)),
                Outcome::BadReply(e) => (atoms::bad_reply(), e.encode(env)),
            };
            (state, reason, (p.latency.as_micros() as u64).encode(env))
        }
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
            (atoms::latency_us(), latency),
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

/// Encodes the whole pass as `%{duration_us, hosts, candidates}`.
pub fn report<'a>(env: Env<'a>, r: &ScanReport) -> Term<'a> {
    let hosts: Vec<Term<'a>> = r.hosts.iter().map(|h| host(env, h)).collect();
    let candidates: Vec<Term<'a>> = r.candidates.iter().map(|c| candidate(env, c)).collect();
    map(
        env,
        &[
            (
                atoms::duration_us(),
                (r.duration.as_micros() as u64).encode(env),
            ),
            (atoms::hosts(), hosts.encode(env)),
            (atoms::candidates(), candidates.encode(env)),
        ],
    )
}
