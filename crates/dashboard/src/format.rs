//! Numbers, durations, costs and instants as the dashboard prints them. Pure
//! functions: what a person reads first (the largest unit that matters),
//! never more digits than help.

use std::time::Duration;

use mayfly_core::Timestamp;

/// A count with thousands separated by commas: `12,345`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A duration in the two largest units that matter: `850 ms`, `4.2 s`,
/// `3 min 05 s`, `2 h 07 min`, `3 d 04 h`.
pub fn duration(value: Duration) -> String {
    let millis = value.as_millis();
    if millis < 1_000 {
        return format!("{millis} ms");
    }
    if millis < 10_000 {
        return format!("{:.1} s", value.as_secs_f64());
    }
    let seconds = value.as_secs();
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3_600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        3_600..86_400 => format!("{} h {:02} min", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{} d {:02} h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// A duration in milliseconds with a precision that suits it: `0.42 ms`, `12.5 ms`, `1,204 ms`.
pub fn millis(value: Duration) -> String {
    let millis = value.as_secs_f64() * 1_000.0;
    if millis < 1.0 {
        format!("{millis:.2} ms")
    } else if millis < 100.0 {
        format!("{millis:.1} ms")
    } else {
        format!("{} ms", count(millis.round() as u64))
    }
}

/// An estimated cost in the project's currency units, with four significant
/// decimals for small amounts: `0.0123`, `1.25`, `1,204.50`.
pub fn cost(value: f64) -> String {
    if !value.is_finite() {
        return "—".to_owned();
    }
    if value == 0.0 {
        return "0.00".to_owned();
    }
    if value.abs() < 1.0 {
        let decimals = (-value.abs().log10()).floor() as usize + 3;
        return format!("{value:.decimals$}", decimals = decimals.min(8));
    }
    let whole = value.trunc() as u64;
    let cents = ((value - value.trunc()) * 100.0).round() as u64;
    let (whole, cents) = if cents == 100 { (whole + 1, 0) } else { (whole, cents) };
    format!("{}.{cents:02}", count(whole))
}

/// An instant in UTC to the second: `2026-12-01 21:03:05 UTC`.
pub fn instant(value: Timestamp) -> String {
    let rendered = value.to_rfc3339();
    let trimmed = rendered.split('.').next().unwrap_or(&rendered);
    format!("{} UTC", trimmed.replace('T', " ").trim_end_matches('Z'))
}

/// How long ago `then` was at `now`: `just now`, `42 s ago`, `3 min 05 s ago`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let elapsed = now.duration_since(then);
    if elapsed < Duration::from_secs(1) { "just now".to_owned() } else { format!("{} ago", duration(elapsed)) }
}

/// What fraction `part` is of `whole`, in percent (0–100); 0 for an empty whole.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { (part as f64 * 100.0 / whole as f64).clamp(0.0, 100.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        for (value, expected) in
            [(0, "0"), (7, "7"), (999, "999"), (1_000, "1,000"), (12_345, "12,345"), (1_234_567, "1,234,567")]
        {
            assert_eq!(count(value), expected);
        }
    }

    #[test]
    fn durations_use_the_two_largest_units() {
        let cases = [
            (Duration::from_millis(0), "0 ms"),
            (Duration::from_millis(850), "850 ms"),
            (Duration::from_millis(4_249), "4.2 s"),
            (Duration::from_secs(42), "42 s"),
            (Duration::from_secs(185), "3 min 05 s"),
            (Duration::from_secs(2 * 3_600 + 7 * 60 + 59), "2 h 07 min"),
            (Duration::from_secs(3 * 86_400 + 4 * 3_600), "3 d 04 h"),
        ];
        for (value, expected) in cases {
            assert_eq!(duration(value), expected, "{value:?}");
        }
    }

    #[test]
    fn millis_keep_a_precision_that_suits_them() {
        assert_eq!(millis(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(millis(Duration::from_micros(12_500)), "12.5 ms");
        assert_eq!(millis(Duration::from_micros(1_204_400)), "1,204 ms");
    }

    #[test]
    fn costs_keep_significant_decimals() {
        assert_eq!(cost(0.0), "0.00");
        assert_eq!(cost(0.012_345), "0.0123");
        assert_eq!(cost(0.25), "0.250");
        assert_eq!(cost(1.25), "1.25");
        assert_eq!(cost(1_204.499), "1,204.50");
        assert_eq!(cost(2.999), "3.00");
        assert_eq!(cost(f64::NAN), "—");
    }

    #[test]
    fn instants_are_utc_to_the_second_and_ages_are_relative() {
        let then = Timestamp::from_millis(1_764_622_985_123);
        assert_eq!(instant(then), "2025-12-01 21:03:05 UTC");
        assert_eq!(ago(then, then.saturating_add(Duration::from_millis(300))), "just now");
        assert_eq!(ago(then, then.saturating_add(Duration::from_secs(185))), "3 min 05 s ago");
    }

    #[test]
    fn percents_are_clamped_and_safe_for_an_empty_whole() {
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(9, 4), 100.0);
    }
}
