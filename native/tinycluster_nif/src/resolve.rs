//! Host name resolution: off the runtime's workers, one lookup per name at a time, and the
//! addresses ordered for the local node's address family.
//!
//! `getaddrinfo` blocks and cannot be cancelled, so it runs on tokio's blocking pool and a
//! caller's timeout only stops the waiting. With a resolver that hangs (a DNS server gone),
//! every poll would queue one more lookup of the same name behind the stuck ones, and answers
//! would lag further behind with each poll even after the server is back. So a name has at
//! most one lookup in flight: a scan that needs it while one runs waits for that one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};

use once_cell::sync::Lazy;
use tokio::sync::watch;

use crate::error::Error;

/// The address family of the local node's distribution (`inet_tcp` or `inet6_tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only: an `inet_tcp` node neither resolves nor reaches IPv6 addresses, so asking
    /// an EPMD over IPv6 would find nodes it cannot connect to (a dual-stack EPMD answers on
    /// both families, while an `inet_tcp` node listens on IPv4 only).
    Inet,
    /// IPv6 first, then IPv4: an `inet6_tcp` node resolves IPv6 first, and reaches IPv4
    /// peers through mapped addresses.
    Inet6,
}

/// A lookup's answer: `None` until it comes.
type Answer = Option<Result<Vec<IpAddr>, Error>>;

/// The lookups in flight, by name. An entry leaves when its lookup answers.
static IN_FLIGHT: Lazy<Mutex<HashMap<String, watch::Receiver<Answer>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// The addresses of `host` (a name or an IP address) with `port`, in the order to try them
/// for `family`; `None` keeps the resolver's order. An IP address is never looked up.
pub async fn resolve(
    host: &str,
    port: u16,
    family: Option<Family>,
) -> Result<Vec<SocketAddr>, Error> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => lookup(host).await?,
    };
    let ordered = order(ips, family);
    if ordered.is_empty() {
        return Err(Error::Resolve(format!(
            "{host} has no IPv4 address, and this node's distribution is IPv4 (inet_tcp)"
        )));
    }
    Ok(ordered
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// `ips` in the order to try them for `family`: IPv4 only for `Inet`, IPv6 first for `Inet6`.
pub fn order(ips: Vec<IpAddr>, family: Option<Family>) -> Vec<IpAddr> {
    match family {
        None => ips,
        Some(Family::Inet) => ips.into_iter().filter(IpAddr::is_ipv4).collect(),
        Some(Family::Inet6) => {
            let (mut v6, v4): (Vec<_>, Vec<_>) = ips.into_iter().partition(IpAddr::is_ipv6);
            v6.extend(v4);
            v6
        }
    }
}

/// Looks `name` up on the blocking pool, or waits for the lookup of it already in flight.
async fn lookup(name: &str) -> Result<Vec<IpAddr>, Error> {
    let mut answer = {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner);
        match in_flight.get(name) {
            Some(waiting) => waiting.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                in_flight.insert(name.to_owned(), rx.clone());
                let name = name.to_owned();
                tokio::task::spawn_blocking(move || {
                    let forget = Forget(name);
                    let result = getaddrinfo(&forget.0);
                    // Leave the map before answering, so that a lookup asked for after this
                    // answer starts afresh rather than reading a stale one.
                    drop(forget);
                    // Fails only when every waiter gave up; then nobody wants the answer.
                    let _ = tx.send(Some(result));
                });
                rx
            }
        }
    };
    let answer = match answer.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    };
    answer.unwrap_or_else(|| Err(Error::Internal("a lookup ended without an answer".into())))
}

/// Removes a name from [`IN_FLIGHT`] when dropped, so that even a lookup that panicked does
/// not leave its name waiting forever.
struct Forget(String);

impl Drop for Forget {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

fn getaddrinfo(name: &str) -> Result<Vec<IpAddr>, Error> {
    let ips: Vec<IpAddr> = (name, 0)
        .to_socket_addrs()
        .map_err(|e| Error::Resolve(e.to_string()))?
        .map(|addr| addr.ip())
        .collect();
    if ips.is_empty() {
        return Err(Error::Resolve(format!("{name} has no addresses")));
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn inet_keeps_ipv4_only_and_inet6_puts_ipv6_first() {
        let resolved = ips(&["2001:2::2", "198.18.0.2", "2001:2::3", "198.18.0.3"]);
        assert_eq!(
            order(resolved.clone(), Some(Family::Inet)),
            ips(&["198.18.0.2", "198.18.0.3"])
        );
        assert_eq!(
            order(resolved.clone(), Some(Family::Inet6)),
            ips(&["2001:2::2", "2001:2::3", "198.18.0.2", "198.18.0.3"])
        );
        assert_eq!(order(resolved.clone(), None), resolved);
    }

    #[tokio::test]
    async fn addresses_are_not_looked_up() {
        let addrs = resolve("2001:2::2", 4369, Some(Family::Inet6))
            .await
            .unwrap();
        assert_eq!(addrs, vec!["[2001:2::2]:4369".parse().unwrap()]);
        let err = resolve("2001:2::2", 4369, Some(Family::Inet)).await;
        assert!(matches!(err, Err(Error::Resolve(_))), "{err:?}");
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_answer() {
        let (a, b) = tokio::join!(resolve("localhost", 1, None), resolve("localhost", 2, None));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(!a.is_empty());
        let ips = |v: &[SocketAddr]| v.iter().map(SocketAddr::ip).collect::<Vec<_>>();
        assert_eq!(ips(&a), ips(&b));
        assert!(a.iter().all(|s| s.port() == 1) && b.iter().all(|s| s.port() == 2));
        assert!(IN_FLIGHT.lock().unwrap().get("localhost").is_none());
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_resolve_error() {
        let err = resolve("no-such-host.invalid", 4369, None).await;
        assert!(matches!(err, Err(Error::Resolve(_))), "{err:?}");
    }
}
