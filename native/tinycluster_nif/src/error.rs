//! The one error type of the crate and how it reaches Erlang.
//!
//! Every failure a scan can meet, at EPMD or at a candidate, is one variant here. Each
//! encodes to an atom or a small tuple so that Elixir can pattern-match on it; none of
//! them ever becomes a panic.

/// A failure while talking to an EPMD or to a candidate node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The deadline passed before the exchange finished (`:timeout`).
    #[error("timed out")]
    Timeout,
    /// Nothing listens at the address (`:econnrefused`).
    #[error("connection refused")]
    Refused,
    /// The peer closed the connection before a whole frame arrived (`:closed`).
    #[error("closed by the peer")]
    Closed,
    /// Any other socket error (`{:io, kind}`), kept as text so it is never lost.
    #[error("i/o error: {0}")]
    Io(String),
    /// The host name did not resolve (`{:resolve, text}`).
    #[error("could not resolve host: {0}")]
    Resolve(String),
    /// A frame announced more bytes than that frame may ever hold (`{:frame_too_large, n}`).
    #[error("frame of {0} bytes is larger than allowed")]
    FrameTooLarge(usize),
    /// Bytes that are not what the protocol says (`{:malformed, what}`).
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// A node name longer than an atom may be, by its length in bytes (`{:name_too_long, n}`):
    /// Erlang could never connect it, and making an atom of it would raise.
    #[error("node name of {0} bytes is longer than {max}", max = crate::naming::MAX_NAME_BYTES)]
    NameTooLong(usize),
    /// A status frame with a text the protocol does not define (`{:unknown_status, text}`).
    #[error("unknown handshake status {0:?}")]
    UnknownStatus(String),
    /// An EPMD reply longer than the byte cap (`{:reply_too_large, bytes}`).
    #[error("EPMD reply exceeds {0} bytes")]
    ReplyTooLarge(usize),
    /// An EPMD listing more names than the per-host cap (`{:too_many_names, n}`).
    #[error("EPMD lists more than {0} names")]
    TooManyNames(usize),
    /// A TLS listener answered the ClientHello with an alert, by its description number
    /// (`{:tls_alert, name}` for the alerts RFC 8446 names, `{:tls_alert, n}` otherwise).
    #[error("TLS alert {0}")]
    TlsAlert(u8),
    /// The port closed on the TLS ClientHello without a word, as a plain distribution node
    /// does (`:not_tls`).
    #[error("closed on the TLS hello: not a TLS listener")]
    NotTls,
    /// The scan's owner did not say in time which names to probe (`:plan_timeout`).
    #[error("no plan from the owner in time")]
    PlanTimeout,
    /// The runtime could not be started or a task failed (`{:internal, text}`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => Error::Refused,
            UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => Error::Closed,
            TimedOut => Error::Timeout,
            _ => Error::Io(e.to_string()),
        }
    }
}

impl From<tokio::time::error::Elapsed> for Error {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Error::Timeout
    }
}

#[cfg(feature = "nif")]
mod atoms {
    rustler::atoms! {
        timeout,
        econnrefused,
        closed,
        io,
        resolve,
        frame_too_large,
        malformed,
        name_too_long,
        unknown_status,
        reply_too_large,
        too_many_names,
        plan_timeout,
        tls_alert,
        not_tls,
        internal,
    }
}

#[cfg(feature = "nif")]
impl rustler::Encoder for Error {
    fn encode<'a>(&self, env: rustler::Env<'a>) -> rustler::Term<'a> {
        match self {
            Error::Timeout => atoms::timeout().encode(env),
            Error::Refused => atoms::econnrefused().encode(env),
            Error::Closed => atoms::closed().encode(env),
            Error::Io(text) => (atoms::io(), text).encode(env),
            Error::Resolve(text) => (atoms::resolve(), text).encode(env),
            Error::FrameTooLarge(n) => (atoms::frame_too_large(), *n).encode(env),
            Error::Malformed(what) => (atoms::malformed(), *what).encode(env),
            Error::NameTooLong(n) => (atoms::name_too_long(), *n).encode(env),
            Error::UnknownStatus(text) => (atoms::unknown_status(), text).encode(env),
            Error::ReplyTooLarge(n) => (atoms::reply_too_large(), *n).encode(env),
            Error::TooManyNames(n) => (atoms::too_many_names(), *n).encode(env),
            Error::TlsAlert(n) => {
                // Atoms only from the fixed table of alert names, never from the wire.
                let what = crate::tls::alert_name(*n)
                    .and_then(|name| rustler::Atom::from_str(env, name).ok())
                    .map_or_else(|| n.encode(env), |atom| atom.encode(env));
                (atoms::tls_alert(), what).encode(env)
            }
            Error::NotTls => atoms::not_tls().encode(env),
            Error::PlanTimeout => atoms::plan_timeout().encode(env),
            Error::Internal(text) => (atoms::internal(), text).encode(env),
        }
    }
}
