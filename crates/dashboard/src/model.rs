//! View models: what each page shows, computed from the state store's
//! records and an instant, with no IO. The router reads the store and hands
//! the records here; [`crate::views`] renders the results.

use std::time::Duration;

use mayfly_core::Timestamp;
use mayfly_core::queue::QueueStats;
use mayfly_core::run::{RunReport, RunStatus};
use mayfly_state::{FunctionStats, RunItemCounts, RunRecord};
use serde::Serialize;

use crate::format;

/// A run as its row in the list and the header of its page show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub job: String,
    pub status: RunStatus,
    pub trigger: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub counts: RunItemCounts,
    /// The report's makespan once finished; the time since it started while it runs.
    pub makespan: Option<Duration>,
    /// The report's estimated cost; `None` until the run has a report.
    pub cost: Option<f64>,
    pub error: Option<String>,
    /// The run's report, when it has one that reads.
    pub report: Option<RunReport>,
    /// Why the stored report did not read, if it did not.
    pub report_error: Option<String>,
}

impl RunSummary {
    pub fn new(record: &RunRecord, counts: RunItemCounts, now: Timestamp) -> RunSummary {
        let (report, report_error) = match record.report.as_deref().map(serde_json::from_str::<RunReport>) {
            None => (None, None),
            Some(Ok(report)) => (Some(report), None),
            Some(Err(error)) => (None, Some(format!("the stored report is not a run report: {error}"))),
        };
        let makespan = match (&report, record.started_at) {
            (Some(report), _) => Some(report.makespan),
            (None, Some(started)) => Some(record.finished_at.unwrap_or(now).duration_since(started)),
            (None, None) => None,
        };
        RunSummary {
            id: record.id.clone(),
            job: record.job.to_string(),
            status: record.status,
            trigger: record.trigger.clone(),
            created_at: record.created_at,
            started_at: record.started_at,
            finished_at: record.finished_at,
            counts,
            makespan,
            cost: report.as_ref().map(|report| report.estimated_cost),
            error: record.error.clone(),
            report,
            report_error,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// The live numbers the pages poll for.
    pub fn progress(&self) -> Progress {
        let counts = self.counts;
        let finished_items = counts.done + counts.dead_lettered;
        let total = counts.total.max(1) as f64;
        let widths = [counts.done, counts.dead_lettered, counts.leased].map(|part| part as f64 * 100.0 / total);
        let segment = |index: usize| {
            let x: f64 = widths[..index].iter().sum();
            [round(x), round(widths[index])]
        };
        Progress {
            status: self.status.as_str(),
            status_label: status_label(self.status),
            tone: status_tone(self.status),
            finished: self.is_finished(),
            total: format::count(counts.total),
            done: format::count(counts.done),
            dead_lettered: format::count(counts.dead_lettered),
            leased: format::count(counts.leased),
            pending: format::count(counts.pending),
            attempts: format::count(counts.attempts),
            percent: format!("{:.0}%", format::percent(finished_items, counts.total).floor()),
            summary: format!("{} of {} items", format::count(finished_items), format::count(counts.total)),
            makespan_label: if self.is_finished() { "Makespan" } else { "Running for" },
            makespan: self.makespan.map(format::duration).unwrap_or_else(|| "—".to_owned()),
            cost: self.cost.map(format::cost).unwrap_or_else(|| "—".to_owned()),
            segments: ProgressSegments { done: segment(0), dead_lettered: segment(1), leased: segment(2) },
        }
    }
}

/// A run's live numbers, as `progress.json` serves them (already formatted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub status: &'static str,
    pub status_label: &'static str,
    /// The badge's color family: [`status_tone`].
    pub tone: &'static str,
    pub finished: bool,
    pub total: String,
    pub done: String,
    pub dead_lettered: String,
    pub leased: String,
    pub pending: String,
    /// Leases of items so far, retries included.
    pub attempts: String,
    /// Items done or dead-lettered, of all, rounded down: `42%`.
    pub percent: String,
    /// `42 of 100 items`.
    pub summary: String,
    /// `Running for` while it runs, `Makespan` once finished.
    pub makespan_label: &'static str,
    pub makespan: String,
    pub cost: String,
    pub segments: ProgressSegments,
}

/// Where each part of the progress bar sits, as `[x, width]` in percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressSegments {
    pub done: [f64; 2],
    pub dead_lettered: [f64; 2],
    pub leased: [f64; 2],
}

/// How a status reads on its badge.
pub fn status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Requested => "requested",
        RunStatus::Running => "running",
        RunStatus::Finishing => "finishing",
        RunStatus::Succeeded => "succeeded",
        RunStatus::CompletedWithFailures => "completed with failures",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
        RunStatus::DeadlineExceeded => "deadline exceeded",
        RunStatus::BudgetExceeded => "budget exceeded",
    }
}

/// The badge's color family for a status.
pub fn status_tone(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Requested => "neutral",
        RunStatus::Running | RunStatus::Finishing => "active",
        RunStatus::Succeeded => "good",
        RunStatus::Cancelled => "neutral",
        // Results with gaps are not a success: the badge says so as loudly as a failure.
        RunStatus::CompletedWithFailures
        | RunStatus::Failed
        | RunStatus::DeadlineExceeded
        | RunStatus::BudgetExceeded => "bad",
    }
}

/// A queue's row: its depth and age, and its dead-letter queue's depth.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub name: String,
    pub stats: QueueStats,
    pub dead_letter: Option<(String, u64)>,
    /// Whether other queues send their dead letters here.
    pub is_dead_letter_queue: bool,
}

impl QueueRow {
    pub fn depth(&self) -> u64 {
        self.stats.visible + self.stats.in_flight + self.stats.delayed
    }
}

/// A function's row: the ledger's summary of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionRow {
    pub name: String,
    pub runtime: String,
    pub stats: FunctionStats,
}

impl FunctionRow {
    /// Errors as a share of invocations, `0.0%` without invocations.
    pub fn error_rate(&self) -> String {
        format!("{:.1}%", format::percent(self.stats.errors, self.stats.invocations))
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::Name;

    fn record(status: RunStatus, started: Option<i64>, finished: Option<i64>, report: Option<String>) -> RunRecord {
        RunRecord {
            id: "run-1".to_owned(),
            job: Name::new("nightly").unwrap(),
            deployment_version: Some(1),
            trigger: "manual".to_owned(),
            status,
            created_at: Timestamp(0),
            started_at: started.map(Timestamp),
            finished_at: finished.map(Timestamp),
            deadline: Timestamp(3_600_000),
            budget: None,
            lease_owner: None,
            lease_until: None,
            coordinator_attempts: 1,
            error: None,
            report,
        }
    }

    #[test]
    fn a_running_run_shows_its_elapsed_time_and_no_cost_yet() {
        let counts =
            RunItemCounts { total: 8, pending: 3, leased: 1, done: 3, dead_lettered: 1, returned: 0, attempts: 7 };
        let summary = RunSummary::new(&record(RunStatus::Running, Some(1_000), None, None), counts, Timestamp(43_000));
        assert_eq!(summary.makespan, Some(Duration::from_secs(42)));
        let progress = summary.progress();
        assert_eq!((progress.percent.as_str(), progress.summary.as_str()), ("50%", "4 of 8 items"));
        assert_eq!((progress.makespan.as_str(), progress.cost.as_str()), ("42 s", "—"));
        assert_eq!(progress.attempts, "7");
        assert_eq!(progress.segments.done, [0.0, 37.5]);
        assert_eq!(progress.segments.dead_lettered, [37.5, 12.5]);
        assert_eq!(progress.segments.leased, [50.0, 12.5]);
        assert!(!progress.finished);
    }

    #[test]
    fn a_finished_run_shows_its_reports_makespan_and_cost() {
        let report = RunReport {
            run_id: "run-1".to_owned(),
            job: Name::new("nightly").unwrap(),
            status: RunStatus::Succeeded,
            items_expected: 2,
            items_done: 2,
            items_failed_attempts: 0,
            items_dead_lettered: 0,
            retries: 0,
            workers: vec![],
            started_at: Timestamp(1_000),
            finished_at: Timestamp(9_000),
            makespan: Duration::from_millis(8_000),
            estimated_cost: 0.0125,
            notes: vec![],
        };
        let json = serde_json::to_string(&report).unwrap();
        let counts = RunItemCounts { total: 2, done: 2, attempts: 2, ..RunItemCounts::default() };
        let summary = RunSummary::new(
            &record(RunStatus::Succeeded, Some(1_000), Some(9_500), Some(json)),
            counts,
            Timestamp(99_000),
        );
        let progress = summary.progress();
        assert_eq!((progress.makespan.as_str(), progress.cost.as_str()), ("8.0 s", "0.0125"));
        assert_eq!((progress.percent.as_str(), progress.finished), ("100%", true));
        assert_eq!(summary.report, Some(report));
    }

    #[test]
    fn an_unreadable_report_is_said_and_an_empty_run_is_zero_percent() {
        let summary = RunSummary::new(
            &record(RunStatus::Failed, None, Some(5), Some("{".to_owned())),
            RunItemCounts::default(),
            Timestamp(10),
        );
        assert!(
            summary.report_error.as_deref().unwrap_or_default().starts_with("the stored report is not a run report")
        );
        assert_eq!(summary.makespan, None);
        assert_eq!(summary.progress().percent, "0%");
    }
}
