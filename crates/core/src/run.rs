//! Batch-job runs as the domain sees them: the run and item state machines,
//! how many workers a backlog needs, what happens after an item's attempt
//! fails, run ids, and the report a finished run leaves behind.
//!
//! A run is *requested*, then *running* once a coordinator claims it, then
//! *finishing* while its workers' logs are sealed and the workers torn down,
//! and ends in one of the finished statuses. Each item of a run is *pending*
//! (possibly not before a retry time), *leased* to one worker, and finally
//! *done* or *dead-lettered* — or *returned*: an unfinished item that came
//! from a queue message and went back to its queue when the run was stopped
//! at its deadline or budget. Backends store these; the rules live here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::retry::{backoff_delay, may_retry};
use crate::{Name, Timestamp};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created; no coordinator has claimed it yet.
    Requested,
    /// A coordinator holds its lease and works through the items.
    Running,
    /// Nothing is left to do; logs are being sealed and workers torn down.
    Finishing,
    /// Every item is done.
    Succeeded,
    /// Every item settled and at least one is done, but some were
    /// dead-lettered: the results are there, with gaps to look at.
    CompletedWithFailures,
    /// The run could not do its work: its workers could not start, or every
    /// item was dead-lettered.
    Failed,
    Cancelled,
    DeadlineExceeded,
    BudgetExceeded,
}

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Requested,
        RunStatus::Running,
        RunStatus::Finishing,
        RunStatus::Succeeded,
        RunStatus::CompletedWithFailures,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::DeadlineExceeded,
        RunStatus::BudgetExceeded,
    ];

    /// Whether the run has ended: nothing will change it any more.
    pub fn is_finished(self) -> bool {
        match self {
            RunStatus::Requested | RunStatus::Running | RunStatus::Finishing => false,
            RunStatus::Succeeded
            | RunStatus::CompletedWithFailures
            | RunStatus::Failed
            | RunStatus::Cancelled
            | RunStatus::DeadlineExceeded
            | RunStatus::BudgetExceeded => true,
        }
    }

    /// The snake_case spelling, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Requested => "requested",
            RunStatus::Running => "running",
            RunStatus::Finishing => "finishing",
            RunStatus::Succeeded => "succeeded",
            RunStatus::CompletedWithFailures => "completed_with_failures",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::DeadlineExceeded => "deadline_exceeded",
            RunStatus::BudgetExceeded => "budget_exceeded",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus { kind: "run", found: s.to_owned() })
    }
}

/// Where one item of a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting for a worker (not before its `not_before` time).
    Pending,
    /// Handed to one worker; back to pending if that worker dies.
    Leased,
    /// Its result is stored.
    Done,
    /// Failed its last allowed attempt; the error is kept with it.
    DeadLettered,
    /// Unfinished when the run was stopped; it came from a queue message,
    /// which is back in its queue (same id, sent time, attributes and
    /// receive count). Neither pending nor done.
    Returned,
}

impl ItemStatus {
    pub const ALL: [ItemStatus; 5] =
        [ItemStatus::Pending, ItemStatus::Leased, ItemStatus::Done, ItemStatus::DeadLettered, ItemStatus::Returned];

    /// The snake_case spelling, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Leased => "leased",
            ItemStatus::Done => "done",
            ItemStatus::DeadLettered => "dead_lettered",
            ItemStatus::Returned => "returned",
        }
    }
}

impl fmt::Display for ItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ItemStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus { kind: "item", found: s.to_owned() })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{found}` is not a {kind} status")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub found: String,
}

/// How many workers a run needs for `backlog` items: one per
/// `items_per_worker` items, rounded up (with no `items_per_worker`, or 0, as
/// many as allowed), at least 1 while anything is left, never more than
/// `max_workers`. An empty backlog needs none.
pub fn fleet_size(backlog: u64, items_per_worker: Option<u32>, max_workers: u32) -> u32 {
    if backlog == 0 || max_workers == 0 {
        return 0;
    }
    let wanted = match items_per_worker {
        Some(per_worker) if per_worker > 0 => backlog.div_ceil(u64::from(per_worker)),
        _ => u64::from(max_workers),
    };
    u32::try_from(wanted.clamp(1, u64::from(max_workers))).unwrap_or(max_workers)
}

/// How a run ends once every item has settled (none pending or leased, its
/// source drained), from how many items are `done` and `dead_lettered`:
/// succeeded when none was dead-lettered (an empty run too), failed when
/// every item was, completed with failures otherwise.
pub fn status_of_settled_run(done: u64, dead_lettered: u64) -> RunStatus {
    match (done, dead_lettered) {
        (_, 0) => RunStatus::Succeeded,
        (0, _) => RunStatus::Failed,
        _ => RunStatus::CompletedWithFailures,
    }
}

/// The error a settled run that did not succeed records: how many items were
/// dead-lettered, and where to look.
pub fn settled_run_error(done: u64, dead_lettered: u64) -> Option<String> {
    match status_of_settled_run(done, dead_lettered) {
        RunStatus::Succeeded => None,
        RunStatus::Failed => Some(format!(
            "every item ({dead_lettered}) was dead-lettered; each item's last error is on the run's page and in `mayfly logs`"
        )),
        _ => Some(format!(
            "{dead_lettered} of {} items were dead-lettered; {done} are done",
            done.saturating_add(dead_lettered)
        )),
    }
}

/// What happens to an item after one of its attempts failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Pending again, but not before this instant.
    RetryAt(Timestamp),
    /// No attempts left.
    DeadLetter,
}

/// After failed attempt number `attempt` (1 = the first) of an item that may
/// be tried `max_attempts` times: retry after [`backoff_delay`] (base
/// `backoff`, jitter from `unit_random` in [0, 1)), or dead-letter it when
/// that was the last allowed attempt.
pub fn after_item_failure(
    attempt: u32,
    max_attempts: u32,
    backoff: Duration,
    now: Timestamp,
    unit_random: f64,
) -> AfterFailure {
    if may_retry(attempt, max_attempts) {
        AfterFailure::RetryAt(now.saturating_add(backoff_delay(backoff, attempt, unit_random)))
    } else {
        AfterFailure::DeadLetter
    }
}

/// A new run id: `run-<yyyymmdd>t<hhmmss>-<6 hex digits>`, e.g.
/// `run-20261125t063822-00beef`, from the creation time (UTC) and the low 24
/// bits of `random`. Lowercase throughout, so an id is also a valid [`Name`]
/// (usable as a label value, a directory or an object key prefix); ids sort by
/// creation time to the second.
pub fn new_run_id(now: Timestamp, random: u32) -> String {
    // `to_rfc3339` is `yyyy-mm-ddThh:mm:ss.mmmZ`; keep the digits up to the seconds.
    let rendered = now.to_rfc3339();
    let (date, time) = rendered.split_once('T').unwrap_or((&rendered, ""));
    let date: String = date.chars().filter(char::is_ascii_digit).collect();
    let time: String = time.chars().take_while(|c| *c != '.').filter(char::is_ascii_digit).collect();
    format!("run-{date}t{time}-{:06x}", random & 0x00ff_ffff)
}

/// What a finished run leaves behind: the counts a person checks first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub job: Name,
    pub status: RunStatus,
    pub items_expected: u64,
    pub items_done: u64,
    /// Attempts that failed (an item retried twice and then done counts 2).
    pub items_failed_attempts: u64,
    pub items_dead_lettered: u64,
    /// Attempts beyond the first, for any reason (failures, lost workers).
    pub retries: u64,
    pub workers: Vec<WorkerReport>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub makespan: Duration,
    /// Under the project's `[pricing]`, in its currency units.
    pub estimated_cost: f64,
    pub notes: Vec<String>,
}

/// One worker's part in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: String,
    pub items_done: u64,
    pub items_failed: u64,
    /// Time spent running items.
    pub busy: Duration,
    pub started_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// How it ended: `stopped`, `lost`, `killed` or `failed_to_start`.
    pub end: String,
    /// The key of its sealed logs in the logs bucket.
    pub log_object: Option<String>,
    /// Hex SHA-256 of the sealed (compressed) log object.
    pub log_sha256: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        for status in ItemStatus::ALL {
            assert_eq!(status.as_str().parse::<ItemStatus>(), Ok(status));
        }
        assert_eq!(
            "done".parse::<RunStatus>().unwrap_err().to_string(),
            "`done` is not a run status",
            "an item status is not a run status"
        );
    }

    #[test]
    fn only_the_end_statuses_are_finished() {
        let finished: Vec<RunStatus> = RunStatus::ALL.into_iter().filter(|status| status.is_finished()).collect();
        assert_eq!(
            finished,
            [
                RunStatus::Succeeded,
                RunStatus::CompletedWithFailures,
                RunStatus::Failed,
                RunStatus::Cancelled,
                RunStatus::DeadlineExceeded,
                RunStatus::BudgetExceeded
            ]
        );
    }

    #[test]
    fn a_settled_run_succeeds_only_when_no_item_was_dead_lettered() {
        // (done, dead_lettered) -> status
        let cases = [
            (0, 0, RunStatus::Succeeded),
            (40, 0, RunStatus::Succeeded),
            (39, 1, RunStatus::CompletedWithFailures),
            (1, 39, RunStatus::CompletedWithFailures),
            (0, 3, RunStatus::Failed),
        ];
        for (done, dead_lettered, expected) in cases {
            assert_eq!(status_of_settled_run(done, dead_lettered), expected, "{done} done, {dead_lettered} dead");
            assert_eq!(settled_run_error(done, dead_lettered).is_none(), expected == RunStatus::Succeeded);
        }
        assert_eq!(settled_run_error(39, 1).unwrap(), "1 of 40 items were dead-lettered; 39 are done");
    }

    #[test]
    fn fleet_size_rounds_up_and_stays_within_one_and_the_maximum() {
        // (backlog, items_per_worker, max_workers) -> workers
        let cases: &[(u64, Option<u32>, u32, u32)] = &[
            (0, Some(10), 8, 0),
            (0, None, 8, 0),
            (1, Some(10), 8, 1),
            (10, Some(10), 8, 1),
            (11, Some(10), 8, 2),
            (2_000, Some(100), 8, 8),
            (5, None, 8, 8),
            (5, Some(0), 8, 8),
            (5, Some(1), 0, 0),
            (u64::MAX, Some(1), u32::MAX, u32::MAX),
        ];
        for &(backlog, items_per_worker, max_workers, expected) in cases {
            assert_eq!(
                fleet_size(backlog, items_per_worker, max_workers),
                expected,
                "backlog {backlog}, items_per_worker {items_per_worker:?}, max {max_workers}"
            );
        }
    }

    #[test]
    fn a_failed_attempt_is_retried_with_backoff_until_the_last() {
        let now = Timestamp(1_000_000);
        let backoff = Duration::from_secs(10);
        assert_eq!(after_item_failure(1, 3, backoff, now, 1.0), AfterFailure::RetryAt(Timestamp(1_010_000)));
        assert_eq!(after_item_failure(2, 3, backoff, now, 0.0), AfterFailure::RetryAt(Timestamp(1_010_000)));
        assert_eq!(after_item_failure(3, 3, backoff, now, 0.5), AfterFailure::DeadLetter);
        assert_eq!(after_item_failure(7, 3, backoff, now, 0.5), AfterFailure::DeadLetter);
        assert_eq!(after_item_failure(1, 1, backoff, now, 0.5), AfterFailure::DeadLetter);
    }

    #[test]
    fn run_ids_carry_the_time_and_six_hex_digits_and_are_names() {
        let at = Timestamp(1_795_588_702_123); // 2026-11-25T06:38:22.123Z
        assert_eq!(new_run_id(at, 0xbeef), "run-20261125t063822-00beef");
        assert_eq!(new_run_id(at, 0xffff_ffff), "run-20261125t063822-ffffff", "only the low 24 bits");
        assert_eq!(new_run_id(Timestamp(0), 1), "run-19700101t000000-000001");
        assert!(Name::new(new_run_id(at, 0x00ab_cdef)).is_ok());
        assert!(new_run_id(at, 1) < new_run_id(at.saturating_add(Duration::from_secs(1)), 0), "ids sort by time");
    }
}
