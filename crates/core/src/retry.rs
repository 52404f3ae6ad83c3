//! Bounded retries: exponential backoff with jitter, and the rule for when a
//! failed attempt is the last one. The randomness is passed in, so the rules
//! stay deterministic and testable.

use std::time::Duration;

/// The longest wait between two attempts, whatever the attempt number.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// How long to wait after failed attempt number `attempt` (1 = the first)
/// before the next: `base × 2^(attempt-1)`, capped at [`MAX_BACKOFF`], scaled
/// by a jitter factor between 0.5 and 1.0 taken from `unit_random` in [0, 1)
/// ("equal jitter"), so retries of many failures spread out instead of
/// arriving together.
pub fn backoff_delay(base: Duration, attempt: u32, unit_random: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let uncapped = base.saturating_mul(1u32 << exponent);
    let capped = uncapped.min(MAX_BACKOFF);
    let jitter = 0.5 + 0.5 * unit_random.clamp(0.0, 1.0);
    capped.mul_f64(jitter)
}

/// Whether another attempt may follow failed attempt number `attempt`.
pub fn may_retry(attempt: u32, max_attempts: u32) -> bool {
    attempt < max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_within_the_jitter_band() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff_delay(base, 1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff_delay(base, 1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff_delay(base, 3, 1.0), Duration::from_secs(40));
        assert_eq!(backoff_delay(base, 3, 0.0), Duration::from_secs(20));
    }

    #[test]
    fn never_exceeds_the_cap_even_for_huge_attempts() {
        assert_eq!(backoff_delay(Duration::from_secs(10), 1_000, 1.0), MAX_BACKOFF);
        assert_eq!(backoff_delay(Duration::MAX, 2, 1.0), MAX_BACKOFF);
    }

    #[test]
    fn retries_stop_at_the_maximum() {
        assert!(may_retry(1, 3));
        assert!(may_retry(2, 3));
        assert!(!may_retry(3, 3));
        assert!(!may_retry(1, 1));
    }
}
