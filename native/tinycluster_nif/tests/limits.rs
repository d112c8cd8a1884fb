//! The bounds the README promises, pinned as literals: a bound changed in the code without
//! the README fails here (and in test/limits_test.exs, which reads them through the NIF).
//! The frame caps are also probed at their exact limits in tests/probe.rs.

use tinycluster_nif::limits::{Limits, LIMITS};

#[test]
fn the_bounds_are_the_ones_the_readme_states() {
    assert_eq!(
        LIMITS,
        Limits {
            // "at most 60000" for each timeout option.
            max_timeout_ms: 60_000,
            // "probes the first 64 ports of the range".
            max_dist_ports: 64,
            // "at most 256 probes are in flight at once".
            max_probes_in_flight: 256,
            // Not in the README: each host of a scan at least 8 of them, so that one host's
            // silent listeners cannot make another's live nodes wait (tests/fairness.rs).
            min_host_probes_in_flight: 8,
            // "up to 3 of its EPMD round trips, at most 10 s".
            rtt_factor: 3,
            max_host_probe_timeout_ms: 10_000,
            // "a name over 255 bytes is `:bad_reply`".
            max_name_bytes: 255,
            // "parked, at most 64 per VM and 16 per address for at most 60 s".
            max_parked: 64,
            max_parked_per_address: 16,
            park_for_ms: 60_000,
            // "more than 262,144 bytes or 1,024 names".
            max_reply_bytes: 262_144,
            max_names: 1_024,
            // "one status frame of 512 bytes and one challenge of 530".
            max_status_len: 512,
            max_challenge_len: 530,
        }
    );
}
