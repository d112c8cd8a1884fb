//! The per-scan probe budget: how many candidates one scan may probe, and which go first.
//!
//! The probes in flight are capped ([`crate::scan::MAX_PROBES_IN_FLIGHT`]), but that alone
//! does not bound a scan: 12 hosts listing 1,024 names each at one silent port kept a scan
//! running for over a minute, the poller's next scans piling up behind it. So a scan probes
//! at most its [`ProbeBudget::limit`] candidates; the others are reported deferred, not
//! probed. The owner names those first in its next request ([`ProbeBudget::first`]), the
//! longest-deferred first, so that every candidate is reached in turn.
//!
//! Hosts answer in any order, so a candidate named first has its place kept for it whether
//! its host answers first or last; the others take what is left, as their hosts answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The most candidates one scan probes by default: four rounds of the probes in flight, so
/// that even a scan of silent listeners ends within a few probe timeouts. A healthy
/// cluster probes far fewer: its connected nodes are skipped.
pub const MAX_PROBES_PER_SCAN: usize = 1024;

/// What the owner asks of a scan's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeBudget {
    /// The most candidates the scan probes.
    pub limit: usize,
    /// Candidates as `(host label, alive)` to probe before any other, in this order; past
    /// `limit`, the rest of them are deferred again.
    pub first: Vec<(String, String)>,
}

impl Default for ProbeBudget {
    fn default() -> Self {
        ProbeBudget {
            limit: MAX_PROBES_PER_SCAN,
            first: Vec::new(),
        }
    }
}

/// One scan's budget as it is spent, shared by its hosts' tasks.
#[derive(Debug)]
pub struct Spending {
    /// For each candidate named first, whether it fits within the limit.
    first: HashMap<(String, String), bool>,
    /// What is left for the candidates not named first.
    left: AtomicUsize,
}

impl Spending {
    /// The budget of a scan that has probed nothing yet.
    pub fn new(budget: &ProbeBudget) -> Spending {
        let mut first = HashMap::with_capacity(budget.first.len().min(budget.limit));
        let mut kept = 0;
        for key in &budget.first {
            if !first.contains_key(key) {
                let fits = kept < budget.limit;
                kept += usize::from(fits);
                first.insert(key.clone(), fits);
            }
        }
        Spending {
            first,
            left: AtomicUsize::new(budget.limit - kept),
        }
    }

    /// Whether the candidate `alive` of host `label` may be probed in this scan: a place kept
    /// for it, or one of those left. Each call for a candidate not named first spends one.
    pub fn take(&self, label: &str, alive: &str) -> bool {
        if !self.first.is_empty() {
            if let Some(fits) = self.first.get(&(label.to_owned(), alive.to_owned())) {
                return *fits;
            }
        }
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(label: &str, alive: &str) -> (String, String) {
        (label.to_owned(), alive.to_owned())
    }

    #[test]
    fn without_first_the_limit_goes_to_whoever_comes_first() {
        let spending = Spending::new(&ProbeBudget {
            limit: 2,
            first: Vec::new(),
        });
        assert!(spending.take("h", "a"));
        assert!(spending.take("h", "b"));
        assert!(!spending.take("h", "c"));
        assert!(!spending.take("g", "a"));
    }

    #[test]
    fn those_named_first_keep_their_place_however_late_their_host_answers() {
        let spending = Spending::new(&ProbeBudget {
            limit: 3,
            first: vec![key("late", "x"), key("late", "y")],
        });
        assert!(spending.take("early", "a"));
        assert!(
            !spending.take("early", "b"),
            "one place left, and it is not for b"
        );
        assert!(spending.take("late", "y"));
        assert!(spending.take("late", "x"));
    }

    #[test]
    fn named_first_past_the_limit_are_deferred_again_in_their_order() {
        let spending = Spending::new(&ProbeBudget {
            limit: 2,
            first: vec![key("h", "c"), key("h", "c"), key("h", "a"), key("h", "b")],
        });
        assert!(spending.take("h", "c"));
        assert!(spending.take("h", "a"));
        assert!(!spending.take("h", "b"));
        assert!(!spending.take("h", "new"));
    }
}
