//! "Nothing changed on this host": told without one event per candidate.
//!
//! A poller whose nodes are all connected asks EPMD every interval and learns nothing new.
//! It passes, per host, the [`digest`] of the listing the host's last answer had; when the
//! new answer lists exactly the same names and ports and none of them is to be probed (all
//! connected or held back), the scan reports the host as `unchanged` in its report only: no
//! event for the host, none for its candidates (the report still lists them, for gone
//! detection), so an idle poll costs its owner one message. Anything else,
//! a new name, a new port, a name no longer connected, is reported candidate by candidate.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::epmd::Entry;

/// The listing's fingerprint: the sorted `(alive, port)` pairs, hashed. Same listing, same
/// digest, within one build of the library (the poller never keeps it longer).
pub fn digest(entries: &[Entry]) -> u64 {
    let mut pairs: Vec<(&str, u16)> = entries.iter().map(|e| (e.alive.as_str(), e.port)).collect();
    pairs.sort_unstable();
    let mut hasher = DefaultHasher::new();
    pairs.hash(&mut hasher);
    hasher.finish()
}

/// Whether a host's answer changes nothing: its digest is the one of the last scan, and every
/// candidate it lists is one that is not probed (`quiet(entry)`).
pub fn unchanged(
    last: Option<u64>,
    digest: u64,
    entries: &[Entry],
    quiet: impl Fn(&Entry) -> bool,
) -> bool {
    last == Some(digest) && entries.iter().all(quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(alive: &str, port: u16) -> Entry {
        Entry {
            alive: alive.into(),
            port,
        }
    }

    #[test]
    fn the_digest_ignores_order_and_tells_names_and_ports_apart() {
        let listing = [entry("a", 1), entry("b", 2)];
        assert_eq!(digest(&listing), digest(&[entry("b", 2), entry("a", 1)]));
        assert_ne!(digest(&listing), digest(&[entry("a", 1), entry("b", 3)]));
        assert_ne!(digest(&listing), digest(&[entry("a", 1), entry("c", 2)]));
        assert_ne!(digest(&listing), digest(&[entry("a", 1)]));
        assert_ne!(
            digest(&[entry("ab", 1)]),
            digest(&[entry("a", 1), entry("b", 1)])
        );
    }

    #[test]
    fn unchanged_needs_the_same_listing_and_nothing_to_probe() {
        let listing = [entry("a", 1), entry("b", 2)];
        let d = digest(&listing);
        assert!(unchanged(Some(d), d, &listing, |_| true));
        assert!(!unchanged(None, d, &listing, |_| true));
        assert!(!unchanged(Some(d ^ 1), d, &listing, |_| true));
        assert!(!unchanged(Some(d), d, &listing, |e| e.alive == "a"));
    }
}
