//! Named leases that several hosts campaign for (the control plane's
//! `control-plane` lease, see `mayfly_control::leadership`): at most one
//! holder at a time, for a time to live that the holder renews.
//!
//! Time is the caller's: every call passes `now` from its own clock, and a
//! lease is expired when its `expires_at` is at or before that `now`. Hosts
//! sharing a store must therefore keep their clocks in agreement (NTP) well
//! within the time to live, or a host whose clock runs ahead takes a lease
//! its holder still believes it holds.
//!
//! [`grant_lease`] is the rule, a plain function; a backend that reads the
//! lease and writes the outcome in one serialised transaction uses it, and a
//! backend that decides in one SQL statement must agree with it (the
//! conformance suite checks both).

use std::time::Duration;

use mayfly_core::Timestamp;
use serde::{Deserialize, Serialize};

/// The lease the control plane's leader holds (see `mayfly_control::leadership`).
pub const CONTROL_PLANE_LEASE: &str = "control-plane";

/// A lease as stored: who holds it, until when, and under which term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// 1 for the first holder, one more every time the lease passes to
    /// another holder; a renewal keeps it. A later step fences writes by it.
    pub term: u64,
    /// When the lease lapses unless renewed before.
    pub expires_at: Timestamp,
}

impl Lease {
    /// Whether the lease has lapsed at `now` (expired or released).
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// The lease `holder` gets when it asks for `name` at `now` for `ttl`, given
/// the lease as stored (`None`: never taken): granted when it is free, has
/// lapsed, or is already `holder`'s (a renewal, keeping its term); a takeover
/// from another holder increments the term. `None`: refused, another holder's
/// lease is live.
pub fn grant_lease(stored: Option<&Lease>, name: &str, holder: &str, ttl: Duration, now: Timestamp) -> Option<Lease> {
    let term = match stored {
        None => 1,
        Some(stored) if stored.holder == holder => stored.term,
        Some(stored) if stored.is_expired_at(now) => stored.term + 1,
        Some(_) => return None,
    };
    Some(Lease { name: name.to_owned(), holder: holder.to_owned(), term, expires_at: now.saturating_add(ttl) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(15);

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    fn held(holder: &str, term: u64, expires_at: i64) -> Lease {
        Lease { name: "l".into(), holder: holder.into(), term, expires_at: at(expires_at) }
    }

    #[test]
    fn a_lease_never_taken_is_granted_with_term_one() {
        assert_eq!(grant_lease(None, "l", "a", TTL, at(1_000)), Some(held("a", 1, 16_000)));
    }

    #[test]
    fn the_holder_renews_keeping_its_term_even_after_expiry() {
        assert_eq!(grant_lease(Some(&held("a", 3, 5_000)), "l", "a", TTL, at(4_000)), Some(held("a", 3, 19_000)));
        assert_eq!(grant_lease(Some(&held("a", 3, 5_000)), "l", "a", TTL, at(9_000)), Some(held("a", 3, 24_000)));
    }

    #[test]
    fn another_holder_is_refused_until_expiry_then_takes_over_with_the_next_term() {
        let stored = held("a", 3, 5_000);
        assert_eq!(grant_lease(Some(&stored), "l", "b", TTL, at(4_999)), None);
        assert_eq!(grant_lease(Some(&stored), "l", "b", TTL, at(5_000)), Some(held("b", 4, 20_000)));
    }
}
