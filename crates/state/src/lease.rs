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
//!
//! A lease also *fences* its holder's writes: a [`Fence`] names the lease,
//! the holder and the term it was granted, and a write made under it
//! ([`crate::FencedWrites`]) commits only if the stored lease still has that
//! holder and term, checked in the write's own transaction ([`check_fence`]
//! is the rule). A holder paused past its lease (a stopped VM, a long stall,
//! a clock jump) whose lease another took over writes nothing when it
//! resumes: it gets [`crate::StateError::Fenced`].

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
    /// another holder; a renewal keeps it. Writes are fenced by it ([`Fence`]).
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

/// What a holder's writes carry to prove it still holds lease `lease`
/// under `term` (see [`check_fence`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub term: u64,
}

impl Fence {
    /// The fence of a granted lease.
    pub fn of(lease: &Lease) -> Fence {
        Fence { lease: lease.name.clone(), holder: lease.holder.clone(), term: lease.term }
    }
}

/// Whether writes fenced by `fence` may commit, given the lease as stored
/// (`None`: never taken): only while the stored lease has the fence's holder
/// and term. Its expiry does not matter: a lease that lapsed but that nobody
/// took over still fences out nobody, and a takeover changes the term. So a
/// write serialised before the takeover commits, one after it is refused
/// with [`StateError::Fenced`](crate::StateError::Fenced).
pub fn check_fence(stored: Option<&Lease>, fence: &Fence) -> Result<(), crate::StateError> {
    match stored {
        Some(stored) if stored.holder == fence.holder && stored.term == fence.term => Ok(()),
        _ => Err(crate::StateError::Fenced {
            lease: fence.lease.clone(),
            holder: fence.holder.clone(),
            term: fence.term,
            stored_holder: stored.map(|stored| stored.holder.clone()),
            stored_term: stored.map_or(0, |stored| stored.term),
        }),
    }
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

    #[test]
    fn a_fence_holds_only_while_the_stored_lease_has_its_holder_and_term() {
        let fence = Fence { lease: "l".into(), holder: "a".into(), term: 3 };
        assert!(check_fence(Some(&held("a", 3, 5_000)), &fence).is_ok());
        assert!(check_fence(Some(&held("a", 3, 0)), &fence).is_ok(), "lapsed, but nobody took over");
        for stored in [held("b", 4, 5_000), held("a", 5, 5_000)] {
            match check_fence(Some(&stored), &fence) {
                Err(crate::StateError::Fenced { lease, holder, term, stored_holder, stored_term }) => {
                    assert_eq!((lease.as_str(), holder.as_str(), term), ("l", "a", 3));
                    assert_eq!((stored_holder, stored_term), (Some(stored.holder.clone()), stored.term));
                }
                other => panic!("expected Fenced, got {other:?}"),
            }
        }
        assert!(matches!(
            check_fence(None, &fence),
            Err(crate::StateError::Fenced { stored_holder: None, stored_term: 0, .. })
        ));
    }
}
