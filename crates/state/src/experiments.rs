//! What the state store keeps of `mayfly experiment run` and of `mayfly
//! deploy --evaluate`: one record per experiment — what it was (name, the
//! fingerprint of the file it ran, when, which variants against which
//! baseline), how it ended, the deployment it evaluated, and its evidence
//! (every run's measurements, each metric's comparison and verdict).
//!
//! The evidence is plain numbers and words here; `mayfly-experiment` makes
//! them and the CLI copies them in, so this crate never knows statistics.
//! A backend keeps [`ExperimentDetails`] as one sealed record (context
//! `experiment/<id>/details`): its error text may quote user code.

use std::collections::BTreeMap;

use mayfly_core::Timestamp;
use serde::{Deserialize, Serialize};

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentOutcome {
    /// Every run finished and the variants were compared (`mayfly experiment run`).
    Completed,
    /// A run, a deploy or a setup failed; [`ExperimentDetails::error`] says which.
    Failed,
    /// An evaluation on deploy after which the new version was applied.
    Applied,
    /// An evaluation on deploy that found a regression, so the new version
    /// was not applied (`--require-no-regression`).
    Refused,
}

impl ExperimentOutcome {
    pub const ALL: [ExperimentOutcome; 4] = [
        ExperimentOutcome::Completed,
        ExperimentOutcome::Failed,
        ExperimentOutcome::Applied,
        ExperimentOutcome::Refused,
    ];

    /// The snake_case spelling, as serialized and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentOutcome::Completed => "completed",
            ExperimentOutcome::Failed => "failed",
            ExperimentOutcome::Applied => "applied",
            ExperimentOutcome::Refused => "refused",
        }
    }

    /// The spelling [`ExperimentOutcome::as_str`] gives, back; `None` for anything else.
    pub fn parse(text: &str) -> Option<ExperimentOutcome> {
        ExperimentOutcome::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }
}

/// An experiment to record (and, with its id, as recorded: [`ExperimentRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// What ran: the experiment file as given, or "evaluation of … against deployment N".
    pub name: String,
    /// Hex SHA-256 of the file the experiment ran (the experiment file, or
    /// the new `mayfly.toml` of an evaluation), so equal experiments are found.
    pub file_fingerprint: String,
    /// What started it: `experiment run` or `deploy --evaluate`.
    pub trigger: String,
    pub outcome: ExperimentOutcome,
    /// For an evaluation on deploy: the deployment version the new file was
    /// applied as (`None` when it was refused or failed).
    pub deployment_version: Option<u64>,
    pub started_at: Timestamp,
    /// The variant every other one is compared with.
    pub baseline: String,
    /// Variant names in the experiment's order (the baseline among them).
    pub variants: Vec<String>,
    /// The evidence, sealed as one record.
    pub details: ExperimentDetails,
}

/// An experiment's evidence: kept sealed, since its error text may quote user code.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ExperimentDetails {
    pub repetitions: u32,
    pub seed: u64,
    /// Metric names (`makespan`, `cost`, …) in the experiment's order.
    pub metrics: Vec<String>,
    /// One sentence per variant.
    pub summaries: Vec<String>,
    /// Every run, in the order it ran.
    pub runs: Vec<ExperimentRun>,
    pub comparisons: Vec<ExperimentComparison>,
    /// Why it failed, for [`ExperimentOutcome::Failed`]; what regressed, for
    /// [`ExperimentOutcome::Refused`].
    pub error: Option<String>,
}

/// What one run of one variant measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRun {
    pub variant: String,
    pub repetition: u32,
    /// Position in the experiment's order of runs, 1-based.
    pub order: u32,
    pub run_id: String,
    pub status: String,
    /// Metric name → value (seconds, cost, count). Finite numbers only.
    pub metrics: BTreeMap<String, f64>,
    /// Every item attempt's duration, in seconds.
    pub item_durations: Vec<f64>,
}

/// One metric of one variant against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentComparison {
    pub metric: String,
    pub variant: String,
    pub baseline: String,
    pub runs: usize,
    pub baseline_runs: usize,
    pub median: f64,
    pub baseline_median: f64,
    /// Ratio of medians with its 95% interval, when the baseline's median is not 0.
    pub ratio: Option<ExperimentRatio>,
    pub p_value: Option<f64>,
    pub differs: bool,
    pub verdict: String,
}

/// A ratio of medians, `candidate / baseline`, with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRatio {
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
}

/// A recorded experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// 1, 2, 3, … in the order recorded, never reused.
    pub id: u64,
    /// When it was recorded, by the store's clock.
    pub finished_at: Timestamp,
    pub experiment: Experiment,
}
