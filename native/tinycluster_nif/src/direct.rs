//! Hosts without EPMD: nodes that listen on a fixed distribution port (`-start_epmd false
//! -erl_epmd_port P`, as Phoenix's clustering guide and `mix release` recipes set them up), or
//! each on a free port of a range (`Tinycluster.EPMD`). No name server lists them, but the
//! half handshake a probe makes already names the node: its challenge carries its full name.
//! So such a host is "listed" by probing its ports, and the names the challenges give are
//! the names it lists.
//!
//! Bytes and sockets are [`crate::probe`]'s; this module only says what a probe of a port
//! tells as a listing, and checks that the name it gives leads back to the address probed:
//! `Node.connect/1` reaches a node through its name's host part, never through the address
//! that answered.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Error;
use crate::probe::{Outcome, Probe, TlsSeen};
use crate::resolve::{self, Family};
use crate::scan::Listed;

/// What a host's ports say as a listing: each port's probe, or `None` for a port that did
/// not answer before the scan's deadline. Gives the nodes named, each at its port (in port
/// order), with the lowest round trip of a port that answered; or, when no port named a
/// node, the first error met. A port with nothing on it is no error: a host whose ports
/// all refuse lists nothing. A node named, but not under a name that leads back to the
/// address probed (`NameMismatch`), is listed under the name it claims, so that its
/// answer is told.
pub fn listing(
    mut answers: Vec<(u16, Option<Probe>)>,
    tls_alive: Option<&str>,
    name_host: &str,
) -> Result<(Vec<Listed>, Duration), Error> {
    answers.sort_by_key(|(port, _)| *port);
    let (mut listed, mut failed, mut rtt) = (Vec::new(), None, None::<Duration>);
    for (port, probe) in answers {
        let Some(probe) = probe else {
            failed.get_or_insert(Error::Timeout);
            continue;
        };
        let entry = match &probe.outcome {
            Outcome::NameMismatch { claimed } => {
                let alive = claimed.split('@').next().unwrap_or_default().to_owned();
                Ok(Some((alive, claimed.clone())))
            }
            outcome => named(outcome, tls_alive, name_host),
        };
        match entry {
            Ok(entry) => {
                rtt = Some(rtt.map_or(probe.latency, |r| r.min(probe.latency)));
                listed.extend(entry.map(|(alive, name)| Listed { alive, port, name }));
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) if listed.is_empty() => Err(e),
        _ => Ok((listed, rtt.unwrap_or_default())),
    }
}

/// What a probe of a host's fixed port says of its node: `Ok(Some((alive, name)))` for a
/// node, `Ok(None)` for a port with nothing on it yet (refused, or closed at once: a host
/// with no node is no error), or why the host could not be listed. A TLS listener gives no
/// name: when the local node runs TLS distribution, its node is taken to share this node's
/// alive part (`tls_alive`, the release's name), under `name_host`.
pub fn named(
    outcome: &Outcome,
    tls_alive: Option<&str>,
    name_host: &str,
) -> Result<Option<(String, String)>, Error> {
    match outcome {
        Outcome::Live { name, .. } => {
            let alive = name.split('@').next().unwrap_or_default().to_owned();
            Ok(Some((alive, name.clone())))
        }
        Outcome::Tls(TlsSeen::ServerHello) => {
            Ok(tls_alive.map(|alive| (alive.to_owned(), format!("{alive}@{name_host}"))))
        }
        Outcome::Unreachable(Error::Refused | Error::Closed) => Ok(None),
        Outcome::Unreachable(e) | Outcome::BadReply(e) => Err(e.clone()),
        // A node that answers, but not with its name (an allow list, a handshake in flight,
        // TLS for a plain node): no name to connect it under, this time.
        _ => Ok(None),
    }
}

/// Whether the host part of `name` resolves to `probed`'s address, as the local node would
/// resolve it to connect: an address must be that address; a host name must have it among
/// its addresses for `family`. A name of the local host (`local_host`, the local node's own
/// host part) leads back to it however it resolves: that host is probed on loopback.
pub async fn leads_back(
    name: &str,
    probed: SocketAddr,
    family: Option<Family>,
    local_host: Option<&str>,
) -> bool {
    let Some((_, host)) = name.split_once('@') else {
        return false;
    };
    if local_host == Some(host) {
        return true;
    }
    match resolve::resolve(host, probed.port(), family).await {
        Ok(addrs) => addrs.iter().any(|a| a.ip() == probed.ip()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_node_names_itself_a_closed_port_lists_nothing_silence_is_an_error() {
        let live = Outcome::Live {
            name: "app@10.0.0.2".into(),
            hidden: false,
            creation: 7,
        };
        assert_eq!(
            named(&live, None, "10.0.0.2"),
            Ok(Some(("app".into(), "app@10.0.0.2".into())))
        );
        let refused = Outcome::Unreachable(Error::Refused);
        assert_eq!(named(&refused, None, "h"), Ok(None));
        let silent = Outcome::Unreachable(Error::Timeout);
        assert_eq!(named(&silent, None, "h"), Err(Error::Timeout));
        let tls = Outcome::Tls(TlsSeen::ServerHello);
        assert_eq!(named(&tls, None, "h"), Ok(None));
        assert_eq!(
            named(&tls, Some("app"), "10.0.0.3"),
            Ok(Some(("app".into(), "app@10.0.0.3".into())))
        );
    }

    #[test]
    fn a_range_lists_the_nodes_its_ports_name_and_fails_only_when_none_does() {
        let probe = |outcome| {
            Some(Probe {
                outcome,
                latency: Duration::from_millis(3),
            })
        };
        let live = |name: &str| Outcome::Live {
            name: name.into(),
            hidden: false,
            creation: 1,
        };
        let answers = vec![
            (7102, probe(live("b@10.0.0.2"))),
            (7100, probe(live("a@10.0.0.2"))),
            (7101, None),
            (7103, probe(Outcome::Unreachable(Error::Refused))),
        ];
        let (listed, rtt) = listing(answers, None, "10.0.0.2").unwrap();
        let ports: Vec<_> = listed.iter().map(|l| (l.port, l.name.as_str())).collect();
        assert_eq!(ports, [(7100, "a@10.0.0.2"), (7102, "b@10.0.0.2")]);
        assert_eq!(rtt, Duration::from_millis(3));

        let refused = vec![(7100, probe(Outcome::Unreachable(Error::Refused)))];
        assert!(listing(refused, None, "h").unwrap().0.is_empty());
        let silent = vec![
            (7100, None),
            (7101, probe(Outcome::Unreachable(Error::Refused))),
        ];
        assert_eq!(listing(silent, None, "h").err(), Some(Error::Timeout));
    }

    #[tokio::test]
    async fn a_name_leads_back_only_to_the_address_its_host_part_gives() {
        let probed: SocketAddr = "127.0.0.1:6789".parse().unwrap();
        assert!(leads_back("app@127.0.0.1", probed, None, None).await);
        assert!(!leads_back("app@127.0.0.2", probed, None, None).await);
        assert!(!leads_back("app", probed, None, None).await);
        // The local host is probed on loopback: its own host part is enough.
        assert!(leads_back("app@10.9.9.9", probed, None, Some("10.9.9.9")).await);
        assert!(!leads_back("app@10.9.9.8", probed, None, Some("10.9.9.9")).await);
    }
}
