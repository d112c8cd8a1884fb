//! Erlang's two naming modes, and which node names a node of each mode can connect to.
//!
//! A node runs with short names (`-sname a`, `a@host`) or long names (`-name a@host.example`,
//! `a@192.0.2.7`), and `net_kernel` refuses to connect to a node of the other mode: with short
//! names a host part may not contain a dot; with long names it must contain one or be an IP
//! address. This module restates that rule so that a scan never reports as live a node the
//! local node could not connect to. It knows nothing of sockets.

use std::net::IpAddr;

use crate::error::Error;

/// The longest node name, in bytes, that a scan reports as a node: an atom holds at most 255
/// characters, and the names that pass [`crate::epmd::valid_alive`] and
/// [`crate::epmd::valid_host`] are ASCII, so no node Erlang can connect has a longer name,
/// and the owner's atom of a longer one would raise `system_limit`.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks that a full node name fits [`MAX_NAME_BYTES`]: every name a scan reports, as EPMD
/// implies it or as a challenge confirms it, passes here first.
pub fn check_length(name: &str) -> Result<(), Error> {
    if name.len() > MAX_NAME_BYTES {
        Err(Error::NameTooLong(name.len()))
    } else {
        Ok(())
    }
}

/// The naming mode whose rule a scan applies to the names the nodes of a remote host confirm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Naming {
    /// No rule: any host part is accepted, and names use the host as given.
    #[default]
    Any,
    /// `-sname`: host parts without a dot.
    Short,
    /// `-name`: host parts with a dot, or IP addresses.
    Long,
}

impl Naming {
    /// The mode of the node named `name` (`alive@host`), by the form of its host part: the
    /// same rule `net_kernel` applies, so a node's own name always tells its mode.
    pub fn of_node(name: &str) -> Naming {
        match name.split_once('@') {
            Some((_, host)) if is_long(host) => Naming::Long,
            Some(_) => Naming::Short,
            None => Naming::Any,
        }
    }

    /// Whether a node of this mode can connect to a node whose host part is `host`.
    pub fn accepts(self, host: &str) -> bool {
        match self {
            Naming::Any => true,
            Naming::Short => !host.contains('.'),
            Naming::Long => is_long(host),
        }
    }

    /// The host part the nodes of `host` (a name or an address, as the user gave it) are
    /// expected to have before a probe tells their real name: with short names, a host name's
    /// first label, as `-sname` takes it; otherwise `host` itself.
    pub fn name_host(self, host: &str) -> &str {
        match self {
            Naming::Short if host.parse::<IpAddr>().is_err() => {
                host.split('.').next().unwrap_or(host)
            }
            _ => host,
        }
    }
}

/// A long name's host part: it has a dot or is an IP address.
fn is_long(host: &str) -> bool {
    host.contains('.') || host.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_own_name_tells_its_mode() {
        assert_eq!(Naming::of_node("a@host"), Naming::Short);
        assert_eq!(Naming::of_node("a@localhost"), Naming::Short);
        assert_eq!(Naming::of_node("a@host.example"), Naming::Long);
        assert_eq!(Naming::of_node("a@198.18.0.1"), Naming::Long);
        assert_eq!(Naming::of_node("a@2001:2::1"), Naming::Long);
        assert_eq!(Naming::of_node("nohost"), Naming::Any);
    }

    #[test]
    fn each_mode_accepts_the_host_parts_net_kernel_accepts() {
        for host in ["b", "b-2", "localhost"] {
            assert!(Naming::Short.accepts(host), "{host}");
            assert!(!Naming::Long.accepts(host), "{host}");
        }
        for host in ["b.example", "198.18.0.2"] {
            assert!(!Naming::Short.accepts(host), "{host}");
            assert!(Naming::Long.accepts(host), "{host}");
        }
        assert!(Naming::Long.accepts("2001:2::2"));
        for host in ["b", "b.example", "198.18.0.2"] {
            assert!(Naming::Any.accepts(host), "{host}");
        }
    }

    #[test]
    fn short_names_take_a_host_names_first_label_and_leave_addresses_alone() {
        assert_eq!(Naming::Short.name_host("b.example.com"), "b");
        assert_eq!(Naming::Short.name_host("b"), "b");
        assert_eq!(Naming::Short.name_host("198.18.0.2"), "198.18.0.2");
        assert_eq!(Naming::Short.name_host("2001:2::2"), "2001:2::2");
        assert_eq!(Naming::Long.name_host("b.example.com"), "b.example.com");
        assert_eq!(Naming::Any.name_host("b.example.com"), "b.example.com");
    }
}
