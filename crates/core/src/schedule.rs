//! Schedules for triggers: `cron(<5 fields>)` and `rate(<n> <unit>)`, the two
//! forms EventBridge uses.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "`{input}` is not a schedule; write `cron(MIN HOUR DAY MONTH WEEKDAY)` or `rate(N seconds|minutes|hours|days)`"
    )]
    UnknownForm { input: String },
    #[error("bad cron expression `{expression}`: {reason}")]
    BadCron { expression: String, reason: String },
    #[error(
        "bad rate `{input}`: write a positive whole number and second(s), minute(s), hour(s) or day(s), e.g. `rate(5 minutes)`"
    )]
    BadRate { input: String },
}

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Schedule {
    /// A five-field cron expression (minute hour day-of-month month day-of-week).
    Cron(String),
    /// Every `Duration`, starting when the schedule is first armed. Unlike
    /// EventBridge, rates may be given in seconds (`rate(10 seconds)`).
    Rate(Duration),
}

impl Schedule {
    pub fn parse(input: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = input.trim();
        if let Some(body) = trimmed.strip_prefix("cron(").and_then(|rest| rest.strip_suffix(')')) {
            let expression = body.trim();
            let fields = expression.split_whitespace().count();
            if fields != 5 {
                return Err(ScheduleError::BadCron {
                    expression: expression.to_owned(),
                    reason: format!("expected 5 fields (minute hour day month weekday), found {fields}"),
                });
            }
            expression.parse::<croner::Cron>().map_err(|error| ScheduleError::BadCron {
                expression: expression.to_owned(),
                reason: error.to_string(),
            })?;
            return Ok(Schedule::Cron(expression.to_owned()));
        }
        if let Some(body) = trimmed.strip_prefix("rate(").and_then(|rest| rest.strip_suffix(')')) {
            let bad = || ScheduleError::BadRate { input: input.to_owned() };
            let mut parts = body.split_whitespace();
            let count: u64 = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
            let unit_seconds = match parts.next().ok_or_else(bad)? {
                "second" | "seconds" => 1,
                "minute" | "minutes" => 60,
                "hour" | "hours" => 3_600,
                "day" | "days" => 86_400,
                _ => return Err(bad()),
            };
            if count == 0 || parts.next().is_some() {
                return Err(bad());
            }
            return Ok(Schedule::Rate(Duration::from_secs(count * unit_seconds)));
        }
        Err(ScheduleError::UnknownForm { input: input.to_owned() })
    }

    /// The first firing strictly after `after`, in milliseconds since the epoch (UTC).
    /// For a rate, `after` is the previous firing.
    pub fn next_after(&self, after: crate::Timestamp) -> Option<crate::Timestamp> {
        match self {
            Schedule::Rate(every) => Some(after.saturating_add(*every)),
            Schedule::Cron(expression) => {
                let cron = expression.parse::<croner::Cron>().ok()?;
                let secs = after.as_millis().div_euclid(1000);
                let start = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(crate::Timestamp(next.timestamp_millis()))
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(expression) => write!(f, "cron({expression})"),
            Schedule::Rate(every) => {
                let secs = every.as_secs();
                if secs % 86_400 == 0 {
                    write!(f, "rate({} days)", secs / 86_400)
                } else if secs % 3_600 == 0 {
                    write!(f, "rate({} hours)", secs / 3_600)
                } else if secs % 60 == 0 {
                    write!(f, "rate({} minutes)", secs / 60)
                } else {
                    write!(f, "rate({secs} seconds)")
                }
            }
        }
    }
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Schedule::parse(&value)
    }
}

impl From<Schedule> for String {
    fn from(value: Schedule) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    #[test]
    fn parses_cron_and_rate() {
        assert_eq!(Schedule::parse("cron(0 2 * * *)"), Ok(Schedule::Cron("0 2 * * *".into())));
        assert_eq!(Schedule::parse("rate(5 minutes)"), Ok(Schedule::Rate(Duration::from_secs(300))));
        assert_eq!(Schedule::parse("rate(1 day)"), Ok(Schedule::Rate(Duration::from_secs(86_400))));
        assert_eq!(Schedule::parse("rate(10 seconds)"), Ok(Schedule::Rate(Duration::from_secs(10))));
    }

    #[test]
    fn rejects_bad_schedules() {
        assert!(matches!(Schedule::parse("every day"), Err(ScheduleError::UnknownForm { .. })));
        assert!(matches!(Schedule::parse("cron(61 * * * *)"), Err(ScheduleError::BadCron { .. })));
        assert!(matches!(Schedule::parse("cron(* * *)"), Err(ScheduleError::BadCron { .. })));
        assert!(matches!(Schedule::parse("rate(0 minutes)"), Err(ScheduleError::BadRate { .. })));
        assert!(matches!(Schedule::parse("rate(5 fortnights)"), Err(ScheduleError::BadRate { .. })));
    }

    #[test]
    fn next_cron_firing() {
        let schedule = Schedule::parse("cron(0 2 * * *)").unwrap();
        // 2026-11-25T06:38:22Z → next 02:00 is 2026-11-26T02:00:00Z.
        let next = schedule.next_after(Timestamp(1_795_588_702_000)).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-26T02:00:00.000Z");
    }

    #[test]
    fn round_trips_through_display() {
        for text in ["cron(0 2 * * *)", "rate(5 minutes)", "rate(2 hours)", "rate(1 days)", "rate(90 seconds)"] {
            assert_eq!(Schedule::parse(text).unwrap().to_string(), text);
        }
    }
}
