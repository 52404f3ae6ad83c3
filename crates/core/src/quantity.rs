//! Durations (`"30s"`, `"2m"`, `"90d"`) and byte sizes (`"512MiB"`, `"256KB"`)
//! as the architecture file and the CLI write them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("`{input}` is not a duration; write a whole number and a unit: ms, s, m, h or d (e.g. \"30s\", \"5m\")")]
    BadDuration { input: String },
    #[error(
        "`{input}` is not a size; write a whole number and a unit: B, KB, MB, GB, KiB, MiB or GiB (e.g. \"512MiB\")"
    )]
    BadSize { input: String },
    #[error("`{input}` is too large")]
    Overflow { input: String },
}

/// Split `"512MiB"` into (512, "MiB"); whitespace between is allowed.
fn split_number_and_unit(input: &str) -> Option<(u64, &str)> {
    let trimmed = input.trim();
    let digits_end = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    if digits_end == 0 {
        return None;
    }
    let number = trimmed[..digits_end].parse().ok()?;
    Some((number, trimmed[digits_end..].trim()))
}

/// Parse a duration written as a whole number and one unit: `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(input: &str) -> Result<Duration, QuantityError> {
    let bad = || QuantityError::BadDuration { input: input.to_owned() };
    let (number, unit) = split_number_and_unit(input).ok_or_else(bad)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let millis =
        number.checked_mul(millis_per_unit).ok_or_else(|| QuantityError::Overflow { input: input.to_owned() })?;
    Ok(Duration::from_millis(millis))
}

/// Render a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(input: &str) -> Result<ByteSize, QuantityError> {
        let bad = || QuantityError::BadSize { input: input.to_owned() };
        let (number, unit) = split_number_and_unit(input).ok_or_else(bad)?;
        let multiplier: u64 = match unit {
            "B" | "" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => Self::KIB,
            "MiB" => Self::MIB,
            "GiB" => Self::GIB,
            _ => return Err(bad()),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| QuantityError::Overflow { input: input.to_owned() })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, size) in [("GiB", Self::GIB), ("MiB", Self::MIB), ("KiB", Self::KIB)] {
            if bytes >= size && bytes.is_multiple_of(size) {
                return write!(f, "{}{unit}", bytes / size);
            }
        }
        write!(f, "{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5 h "), Ok(Duration::from_secs(5 * 3600)));
        for bad in ["", "s", "5", "5 minutes", "-5s", "1.5s", "5x"] {
            assert!(matches!(parse_duration(bad), Err(QuantityError::BadDuration { .. })), "{bad}");
        }
        assert!(matches!(parse_duration("99999999999999999d"), Err(QuantityError::Overflow { .. })));
    }

    #[test]
    fn durations_round_trip_through_format() {
        for text in ["30s", "2m", "90d", "250ms", "3h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512MiB"), Ok(ByteSize(512 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("256KB"), Ok(ByteSize(256_000)));
        assert_eq!(ByteSize::parse("10"), Ok(ByteSize(10)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5 TB").is_err());
        assert_eq!(ByteSize(256 * 1024).to_string(), "256KiB");
    }
}
