//! The state store contract: everything Mayfly keeps durably — applied
//! deployments, the registry of buckets and queues, the bucket event log and
//! its consumers' cursors, queue messages, the invocation ledger, and the
//! durable ledger of batch-job runs (runs, their items, results, workers),
//! the latest audits' findings, the HTTPS API's tokens and access log
//! ([`access`]), the leases that control planes on several hosts
//! campaign for ([`lease`]), which fence their holders' writes
//! ([`FencedWrites`]), and recorded experiments ([`experiments`]) —
//! behind one trait,
//! [`StateStore`], that every backend implements and the shared
//! conformance suite (`conformance`, compiled only for tests) checks.
//!
//! The trait is synchronous: backends are embedded databases or blocking
//! clients, and async callers run it on a blocking thread. Every method that
//! changes state commits before it returns: a returned `Ok` is durable, and a
//! returned `Err` has changed nothing.

pub mod access;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod copy;
pub mod experiments;
pub mod keys;
pub mod lease;
pub mod sealing;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::event::NewObjectEvent;
use mayfly_core::queue::{QueueConfig, QueueRuleError, QueueStats, ReceiptHandle};
use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{Name, ObjectEvent, Timestamp};
use serde::{Deserialize, Serialize};

pub use crate::access::{AccessRecord, ApiTokenRecord, NewApiToken, StoredAccessRecord};
pub use crate::experiments::{
    Experiment, ExperimentComparison, ExperimentDetails, ExperimentOutcome, ExperimentRatio, ExperimentRecord,
    ExperimentRun,
};
pub use crate::keys::{KeyIdentity, KeyMaintenance, KeyringHolder, keys_to_record};
pub use crate::lease::{Fence, Lease, check_fence, grant_lease};

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// What can go wrong in a state store. Variants say what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{kind} `{name}` does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} `{name}` already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Rule(#[from] QueueRuleError),
    #[error(
        "receipt {receipt} no longer holds a lease on its message (the lease lapsed, or the message was deleted or received again)"
    )]
    LeaseLost { receipt: ReceiptHandle },
    #[error("the disk holding the state store is full; nothing was written. Free space and retry")]
    DiskFull,
    /// Writes fenced by a lease ([`Fence`]) whose stored holder or term is no
    /// longer the writer's: another took the lease over. Nothing was written;
    /// the writer has lost the lease and must stop writing under it.
    #[error(
        "lease `{lease}` has passed from `{holder}` (term {term}) to {} (term {stored_term}); nothing was written under term {term}",
        stored_holder.as_deref().map_or_else(|| "nobody".to_owned(), |holder| format!("`{holder}`"))
    )]
    Fenced {
        lease: String,
        /// The writer and the term its fence carried.
        holder: String,
        term: u64,
        /// The lease as stored (0 and `None`: never taken).
        stored_holder: Option<String>,
        stored_term: u64,
    },
    #[error(
        "state store at {path} was written by a newer Mayfly (schema {found}, this build knows up to {known}); upgrade Mayfly"
    )]
    SchemaTooNew { path: String, found: i64, known: i64 },
    #[error("state store backend error: {0}")]
    Backend(String),
    /// A stored record failed its integrity check (an encrypted payload was
    /// altered, truncated, moved to another record, or its key is missing):
    /// nothing of it was returned, and nothing else is affected.
    #[error("the state store's {what} cannot be read: it failed its integrity check and no byte of it was returned")]
    Damaged {
        /// Which record, e.g. "body of message 12".
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The keyring a store was opened with lacks keys that sealed its data
    /// (recorded by id and fingerprint, never the material): nothing was
    /// read or written with it.
    #[error(
        "state store at {path} holds data sealed by key(s) {} which this keyring does not hold (or holds with other material)",
        missing.join(", ")
    )]
    KeyringLacksKeys {
        path: String,
        /// The ids of the recorded keys the keyring lacks.
        missing: Vec<String>,
    },
}

impl StateError {
    pub fn not_found(kind: &'static str, name: impl ToString) -> StateError {
        StateError::NotFound { kind, name: name.to_string() }
    }
}

/// One applied version of the architecture file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// 1, 2, 3, … in the order applied.
    pub version: u64,
    /// Hex SHA-256 of `source`.
    pub content_hash: String,
    pub applied_at: Timestamp,
    /// The architecture file exactly as applied.
    pub source: String,
    /// Whether changes that lose data were forced through.
    pub forced: bool,
    /// The bucket event log's head (the highest sequence number ever
    /// appended, 0 for none) when this deployment was recorded, read in the
    /// same transaction. Events after it were committed under this deployment
    /// (or a later one): the router routes event `S` by the newest deployment
    /// whose head is below `S` (see [`deployment_governing`]). Deployments
    /// recorded before Mayfly kept this say 0.
    #[serde(default)]
    pub event_log_head: u64,
}

/// The deployment that routes the bucket event numbered `sequence`: the
/// newest of `deployments` (in any order) recorded before the event was
/// committed, i.e. whose [`Deployment::event_log_head`] is below `sequence`.
/// `None` when the event predates every deployment.
pub fn deployment_governing(deployments: &[Deployment], sequence: u64) -> Option<&Deployment> {
    deployments
        .iter()
        .filter(|deployment| deployment.event_log_head < sequence)
        .max_by_key(|deployment| deployment.version)
}

/// How the dead-letter reason of a message that failed its integrity check starts.
pub const INTEGRITY_REASON_PREFIX: &str = "integrity: ";

/// A message set aside because its stored payload failed its integrity check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedMessage {
    /// Where it is now: the dead-letter queue, or its own queue without one.
    pub queue: Name,
    pub message_id: u64,
    /// The queue it was received from.
    pub source_queue: String,
    /// `integrity: …`, saying what failed.
    pub reason: String,
    pub set_aside_at: Timestamp,
}

/// A deployment before the store has numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub content_hash: String,
    pub source: String,
    pub forced: bool,
}

/// A bucket Mayfly has created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: Name,
    pub created_at: Timestamp,
    /// Tags as key/value pairs, sorted by key.
    pub tags: Vec<(String, String)>,
}

/// A queue Mayfly has created, with its current settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub name: Name,
    pub created_at: Timestamp,
    pub config: QueueConfig,
    pub tags: Vec<(String, String)>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    pub body: Vec<u8>,
    /// String attributes, as SQS message attributes.
    pub attributes: Vec<(String, String)>,
    /// Overrides the queue's delay for this message.
    pub delay: Option<Duration>,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<Vec<u8>>) -> OutgoingMessage {
        OutgoingMessage { body: body.into(), ..OutgoingMessage::default() }
    }

    /// The size counted against the queue's limit: body plus attribute names and values.
    pub fn size(&self) -> u64 {
        let attributes: usize = self.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.body.len() + attributes) as u64
    }
}

/// A message as handed to a receiver, with the receipt for its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: u64,
    pub receipt: ReceiptHandle,
    pub body: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub sent_at: Timestamp,
    /// Counts this receive: 1 on the first delivery.
    pub receive_count: u32,
    pub lease_until: Timestamp,
}

/// A stored message as inspection sees it, without leasing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: u64,
    pub body: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub sent_at: Timestamp,
    pub visible_at: Timestamp,
    pub receive_count: u32,
    /// For a message in a dead-letter queue: the queue it came from and why.
    pub dead_letter: Option<DeadLetterInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    pub source_queue: Name,
    pub reason: String,
    pub at: Timestamp,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveRequest {
    /// At most this many messages (at least 1).
    pub max_messages: usize,
    /// Overrides the queue's visibility timeout for these leases.
    pub visibility_timeout: Option<Duration>,
}

impl ReceiveRequest {
    pub fn up_to(max_messages: usize) -> ReceiveRequest {
        ReceiveRequest { max_messages, visibility_timeout: None }
    }
}

/// The outcome of deleting one receipt in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// The receipt's lease had lapsed or the message is gone; nothing changed for it.
    LeaseLost,
}

/// One finished invocation of a function, as the ledger records it.
///
/// Durations are kept to the microsecond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// The id the function saw; every attempt of one invocation shares it.
    pub request_id: String,
    pub function: Name,
    /// The deployment whose code ran, if any was applied.
    pub deployment_version: Option<u64>,
    /// What invoked it: `invoke`, `bucket:<bucket>`, `queue:<queue>`, `schedule:<rule>`, `api`.
    pub trigger: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    pub started_at: Timestamp,
    pub duration: Duration,
    /// Present when this invocation started a new instance (a cold start).
    pub init_duration: Option<Duration>,
    /// [`InvocationRecord::SUCCESS`], or a failure: `error`, `timeout`,
    /// `out_of_memory`, `crashed`, `invalid_response`, `payload_too_large`.
    pub outcome: String,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// Peak resident memory of the instance in bytes, if measured.
    pub peak_memory: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The cost under the project's `[pricing]`, in its currency units. Must be finite.
    pub estimated_cost: f64,
}

impl InvocationRecord {
    /// The outcome of an invocation that succeeded; every other outcome counts as an error.
    pub const SUCCESS: &str = "success";
}

/// An invocation as stored, with its place in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredInvocation {
    /// The ledger sequence: 1, 2, 3, … in the order recorded, never reused.
    pub id: u64,
    pub record: InvocationRecord,
}

/// Which invocations to list: those with an id greater than `after_id` that
/// match every filter given, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvocationFilter {
    pub function: Option<Name>,
    /// 0 lists from the start; the last id of a page gives the next page.
    pub after_id: u64,
    pub limit: usize,
    /// An exact outcome, e.g. `timeout`.
    pub outcome: Option<String>,
}

/// A summary of one function's recorded invocations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FunctionStats {
    pub invocations: u64,
    /// Invocations whose outcome is not [`InvocationRecord::SUCCESS`].
    pub errors: u64,
    /// Invocations with an init duration.
    pub cold_starts: u64,
    /// The median duration by the nearest-rank method ([`nearest_rank_index`]); `None` without invocations.
    pub p50_duration: Option<Duration>,
    /// The 95th percentile duration by the nearest-rank method; `None` without invocations.
    pub p95_duration: Option<Duration>,
    /// The latest `started_at`.
    pub last_invoked: Option<Timestamp>,
    /// The sum of every invocation's duration (with [`FunctionStats::invocations`]
    /// and [`FunctionStats::durations_at_most`], a Prometheus histogram).
    pub duration_sum: Duration,
    /// For each bound of [`DURATION_BUCKETS_MICROS`], in order, the invocations
    /// that took at most that long (cumulative, as Prometheus' `le` buckets).
    pub durations_at_most: [u64; DURATION_BUCKETS_MICROS.len()],
}

/// The upper bounds, in microseconds, of the duration histogram every backend
/// counts in [`FunctionStats`]: 1 ms to an hour, since a function here may run
/// far longer than Lambda's 15 minutes. Fixed, so every backend and every
/// scrape agree and Prometheus can add histograms across hosts.
pub const DURATION_BUCKETS_MICROS: [i64; 18] = [
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// Where the `percentile`th percentile (1–100) of `count` values, sorted
/// ascending, sits (0-based) by the nearest-rank method: the smallest value
/// that at least `percentile`% of the values are less than or equal to. Always
/// one of the values, never an interpolation. `None` when `count` is 0.
///
/// Every backend computes [`FunctionStats`] percentiles with it, so they agree exactly.
pub fn nearest_rank_index(count: u64, percentile: u32) -> Option<u64> {
    if count == 0 {
        return None;
    }
    let percentile = u64::from(percentile.clamp(1, 100));
    // ceil(percentile / 100 * count), in integers.
    let rank = (percentile * count).div_ceil(100);
    Some(rank.max(1) - 1)
}

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Unique; see [`mayfly_core::run::new_run_id`].
    pub id: String,
    pub job: Name,
    /// The deployment whose job definition the run follows, if any was applied.
    pub deployment_version: Option<u64>,
    /// What started it: `manual`, `alarm:<name>`, `schedule:<expr>`.
    pub trigger: String,
    pub deadline: Timestamp,
    /// The most the run may cost, in the project's currency units.
    pub budget: Option<f64>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub job: Name,
    pub deployment_version: Option<u64>,
    pub trigger: String,
    pub status: RunStatus,
    pub created_at: Timestamp,
    /// When a coordinator first claimed it.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub deadline: Timestamp,
    pub budget: Option<f64>,
    /// The coordinator that holds (or last held) the run's lease; cleared when it finishes.
    pub lease_owner: Option<String>,
    /// The lease is live while `now < lease_until`.
    pub lease_until: Option<Timestamp>,
    /// How many different coordinators have claimed it (1 for a run that never lost its coordinator).
    pub coordinator_attempts: u32,
    pub error: Option<String>,
    /// The [`mayfly_core::run::RunReport`] as JSON.
    pub report: Option<String>,
}

/// An item to add to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRunItem {
    /// Unique within the run, e.g. an object key or a message id.
    pub item: String,
    pub payload: Vec<u8>,
}

/// An item of a run as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    pub run_id: String,
    pub item: String,
    pub payload: Vec<u8>,
    pub status: ItemStatus,
    /// How many times it was leased: the current (or last) attempt's number.
    pub attempts: u32,
    /// The worker holding it (leased), or the one that finished it (done, dead-lettered).
    pub worker: Option<String>,
    /// A pending item is not leased before this instant.
    pub not_before: Timestamp,
    pub last_error: Option<String>,
    pub updated_at: Timestamp,
}

/// How one attempt at an item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemCompletion {
    Done {
        result: Vec<u8>,
    },
    /// `retry_at` from [`mayfly_core::run::after_item_failure`]: `None` dead-letters the item.
    Failed {
        error: String,
        retry_at: Option<Timestamp>,
    },
}

/// One completion of a group recorded in one commit
/// ([`RunStore::complete_run_items_together`]): what
/// [`RunStore::complete_and_lease_run_items`] takes, for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedCompletion {
    pub item: String,
    pub worker: String,
    pub attempt: u32,
    pub completion: ItemCompletion,
    /// Lease up to this many next items to `worker` in the same commit (0: none).
    pub lease_next: usize,
}

/// How one completion of a group was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupedCompletionOutcome {
    /// False for a stale completion, which changed nothing (see [`RunStore::complete_run_item`]).
    pub accepted: bool,
    /// The next items leased to its worker.
    pub leased: Vec<RunItem>,
}

/// How many items of a run are where, exact at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunItemCounts {
    pub total: u64,
    pub pending: u64,
    pub leased: u64,
    pub done: u64,
    pub dead_lettered: u64,
    /// Unfinished items whose queue messages went back to their queues
    /// (see [`RunStore::return_unfinished_items_to_queues`]).
    pub returned: u64,
    /// The sum of every item's attempts (leases).
    pub attempts: u64,
}

/// How many items of one job's runs have ended, over every run the store
/// holds (see [`RunStore::completed_item_counts_by_job`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompletedItemCounts {
    pub done: u64,
    pub dead_lettered: u64,
}

/// The stored result of one item of a job: one per (job, item), whichever run produced it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRecord {
    pub job: Name,
    pub item: String,
    pub run_id: String,
    pub attempt: u32,
    pub worker: String,
    pub result: Vec<u8>,
    pub recorded_at: Timestamp,
}

/// A worker of a run, as bookkeeping for the report. Durations are kept to the millisecond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub run_id: String,
    pub worker: String,
    /// What the provisioner knows it by, e.g. a process id.
    pub resource: String,
    pub started_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// How it ended: `stopped`, `lost`, `killed`, `failed_to_start`.
    pub end: Option<String>,
    pub items_done: u64,
    pub items_failed: u64,
    pub busy: Duration,
    /// The key of its sealed logs in the logs bucket.
    pub log_object: Option<String>,
    pub log_sha256: Option<String>,
}

/// What one worker's attempts at a run's items came to, read from the
/// attempts ledger (so exact whichever coordinator served the worker, and
/// after any of them died).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkerAttemptCounts {
    /// Attempts that ended `done`.
    pub done: u64,
    /// Attempts that ended `failed` or `dead_lettered`.
    pub failed: u64,
}

/// How much an audit finding matters. Ordered from the most serious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSeverity {
    /// The policy is broken: `mayfly audit` exits non-zero.
    Violation,
    /// Something to look at that the policy does not forbid outright
    /// (a run the coordinator stopped at its deadline, a worker outside any network boundary).
    Warning,
    /// For the record (e.g. an unencrypted bucket that the policy allows).
    Notice,
}

impl AuditSeverity {
    pub const ALL: [AuditSeverity; 3] = [AuditSeverity::Violation, AuditSeverity::Warning, AuditSeverity::Notice];

    /// The snake_case spelling, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditSeverity::Violation => "violation",
            AuditSeverity::Warning => "warning",
            AuditSeverity::Notice => "notice",
        }
    }
}

impl std::fmt::Display for AuditSeverity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AuditSeverity {
    type Err = StateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AuditSeverity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == text)
            .ok_or_else(|| StateError::Backend(format!("`{text}` is not an audit severity")))
    }
}

/// One thing an audit found: which rule, how serious, about which resource,
/// what is wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    /// The rule's stable name, e.g. `required-tags`.
    pub rule: String,
    pub severity: AuditSeverity,
    /// `bucket`, `queue`, `function`, `job`, `run`, `process`, `container`, `network`, `api`, `state-store`, `object`.
    pub resource_kind: String,
    /// The resource's name or id within its kind.
    pub resource: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub remedy: String,
}

/// An audit to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// What ran it: `manual`, `deploy`, `run:<run id>`.
    pub trigger: String,
    /// How many resources the inventory held.
    pub resources_checked: u64,
    pub findings: Vec<AuditFinding>,
}

/// A recorded audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, … in the order recorded, never reused.
    pub id: u64,
    pub at: Timestamp,
    pub trigger: String,
    pub resources_checked: u64,
    /// In the order the audit produced them.
    pub findings: Vec<AuditFinding>,
}

impl AuditRecord {
    /// How many findings have `severity`.
    pub fn count(&self, severity: AuditSeverity) -> usize {
        self.findings.iter().filter(|finding| finding.severity == severity).count()
    }
}

/// How many audits a store keeps: recording one more forgets the oldest.
pub const AUDITS_KEPT: usize = 100;

/// How one attempt at an item ended, as its timeline shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Leased and not finished yet.
    Running,
    /// Its result is stored.
    Done,
    /// Failed; the item was retried.
    Failed,
    /// Failed its last allowed attempt.
    DeadLettered,
    /// Its worker died or its coordinator restarted; the item went back to pending.
    Released,
}

impl AttemptOutcome {
    pub const ALL: [AttemptOutcome; 5] = [
        AttemptOutcome::Running,
        AttemptOutcome::Done,
        AttemptOutcome::Failed,
        AttemptOutcome::DeadLettered,
        AttemptOutcome::Released,
    ];

    /// The snake_case spelling, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Done => "done",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::DeadLettered => "dead_lettered",
            AttemptOutcome::Released => "released",
        }
    }

    /// The spelling [`AttemptOutcome::as_str`] gives, back; `None` for anything else.
    pub fn parse(text: &str) -> Option<AttemptOutcome> {
        AttemptOutcome::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }
}

/// One attempt at one item of a run: which worker held it, from when to when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemAttempt {
    pub item: String,
    /// 1 for the first lease of the item, 2 for the next, …
    pub attempt: u32,
    pub worker: String,
    /// When it was leased.
    pub started_at: Timestamp,
    /// When it was completed or released; `None` while running.
    pub ended_at: Option<Timestamp>,
    pub outcome: AttemptOutcome,
}

/// The durable state of one Mayfly project: every concern's store at once.
///
/// Each concern is a trait of its own ([`DeploymentStore`], [`BucketRegistry`],
/// [`EventLog`], [`QueueStore`], [`InvocationLedger`], [`RunStore`],
/// [`AuditStore`], [`AccessStore`], [`RetentionStore`], [`LeaseStore`],
/// [`FencedWrites`], [`ExperimentStore`]) so that a backend is
/// built and tested one concern at a time and a caller can take only what it
/// uses. Anything that implements them all is a `StateStore`. Bring their
/// methods into scope with `use mayfly_state::prelude::*`.
///
/// Time comes from the [`mayfly_core::Clock`] the backend was opened with.
pub trait StateStore:
    DeploymentStore
    + BucketRegistry
    + EventLog
    + QueueStore
    + InvocationLedger
    + RunStore
    + AuditStore
    + AccessStore
    + RetentionStore
    + LeaseStore
    + FencedWrites
    + ExperimentStore
{
}

impl<T> StateStore for T where
    T: DeploymentStore
        + BucketRegistry
        + EventLog
        + QueueStore
        + InvocationLedger
        + RunStore
        + AuditStore
        + AccessStore
        + RetentionStore
        + LeaseStore
        + FencedWrites
        + ExperimentStore
        + ?Sized
{
}

/// The traits of [`StateStore`], to bring their methods into scope.
pub mod prelude {
    pub use crate::{
        AccessStore, AuditStore, BucketRegistry, DeploymentStore, EventLog, ExperimentStore, FencedWrites,
        InvocationLedger, LeaseStore, QueueStore, RetentionStore, RunStore, StateStore,
    };
}

/// The deployments: every applied version of the architecture file.
pub trait DeploymentStore: Send + Sync {
    /// Record an applied architecture file; returns it with its version number.
    fn record_deployment(&self, deployment: NewDeployment) -> Result<Deployment>;
    /// All deployments, oldest first.
    fn deployments(&self) -> Result<Vec<Deployment>>;
    /// The newest deployment, if any.
    fn latest_deployment(&self) -> Result<Option<Deployment>>;
}

/// The registry of buckets (their objects are the bucket backend's business).
pub trait BucketRegistry: Send + Sync {
    /// Register a bucket; `AlreadyExists` if it is registered.
    fn create_bucket(&self, name: &Name, tags: &[(String, String)]) -> Result<BucketRecord>;
    /// Forget a bucket (its objects are the bucket backend's business).
    fn delete_bucket(&self, name: &Name) -> Result<()>;
    fn bucket(&self, name: &Name) -> Result<BucketRecord>;
    /// All buckets, by name.
    fn buckets(&self) -> Result<Vec<BucketRecord>>;
}

/// The bucket event log: every put and delete, in commit order, and the cursors of its consumers.
pub trait EventLog: Send + Sync {
    /// Append one event; returns it with its sequence number.
    fn append_object_event(&self, event: NewObjectEvent) -> Result<ObjectEvent>;
    /// Events with a sequence number greater than `after`, in order, at most `limit`.
    fn object_events_after(&self, after: u64, limit: usize) -> Result<Vec<ObjectEvent>>;
    /// The last sequence number a named consumer has processed (0 if none).
    fn consumer_cursor(&self, consumer: &str) -> Result<u64>;
    /// Record that a consumer has processed everything up to `sequence`.
    /// A cursor only moves forward: a lower `sequence` than the stored one
    /// changes nothing, so a late write from a control plane that lost its
    /// lease while cut off (its request delivered when it came back) cannot
    /// send the new leader's router back over events it already routed.
    fn set_consumer_cursor(&self, consumer: &str, sequence: u64) -> Result<()>;
}

/// Durable queues: messages, leases (receipts), delays, dead letters.
pub trait QueueStore: Send + Sync {
    /// Create a queue; `AlreadyExists` if it exists. A visibility timeout over 12 hours
    /// is refused with `Rule(VisibilityTimeoutTooLong)` (also by `update_queue`). The
    /// dead-letter queue may be created later.
    fn create_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord>;
    /// Change an existing queue's settings; messages are kept.
    fn update_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord>;
    /// Delete a queue and every message in it.
    fn delete_queue(&self, name: &Name) -> Result<()>;
    fn queue(&self, name: &Name) -> Result<QueueRecord>;
    /// All queues, by name.
    fn queues(&self) -> Result<Vec<QueueRecord>>;
    /// Send messages in one commit: all are stored or none is. Returns their ids in order.
    /// Fails with `NotFound` for an unknown queue and `Rule(MessageTooLarge)` if any
    /// message exceeds the queue's size limit.
    fn send_messages(&self, queue: &Name, messages: &[OutgoingMessage]) -> Result<Vec<u64>>;
    /// Lease up to `request.max_messages` visible messages, oldest first. Messages past
    /// `max_receives` go to the dead-letter queue instead of being returned.
    ///
    /// "Oldest first" means in the order messages became visible (after their delay,
    /// or when an earlier lease lapsed), ties broken by message id. A message moved to
    /// a dead-letter queue keeps its id and receive count there, visible at once, with
    /// [`StoredMessage::dead_letter`] recording the source queue and the reason. If the
    /// configured dead-letter queue does not exist, such a message stays where it is,
    /// is not returned, and the backend logs a warning: the rule is never bypassed.
    /// A visibility timeout over 12 hours is refused with `Rule(VisibilityTimeoutTooLong)`.
    fn receive_messages(&self, queue: &Name, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>>;
    /// Delete the messages these receipts lease, in one commit. A receipt whose lease
    /// has lapsed (even if nobody received the message since), whose message was
    /// received again, moved, deleted, or belongs to another queue gives `LeaseLost`
    /// and changes nothing; the others are deleted.
    fn delete_messages(&self, queue: &Name, receipts: &[ReceiptHandle]) -> Result<Vec<DeleteOutcome>>;
    /// Set the lease of a received message to end `timeout` from now (0 makes it visible
    /// at once). `LeaseLost` if the receipt no longer holds the lease.
    fn change_visibility(&self, queue: &Name, receipt: ReceiptHandle, timeout: Duration) -> Result<()>;
    /// Counts at this instant.
    fn queue_stats(&self, queue: &Name) -> Result<QueueStats>;
    /// Look at up to `limit` messages in id order without leasing them.
    fn peek_messages(&self, queue: &Name, limit: usize) -> Result<Vec<StoredMessage>>;
    /// Move every message of dead-letter queue `dead_letter` back to the queue it came
    /// from (or to `to`, if given), visible at once with its receive count reset.
    /// Returns how many moved.
    ///
    /// A redriven message gets a new message id: its receive count starts over, so a
    /// receipt handed out before it was dead-lettered (`<id>.<count>`) must never match
    /// it again. Messages in `dead_letter` that were sent there directly (no
    /// `dead_letter` info) move only when `to` is given. `NotFound` if a queue to move
    /// to does not exist, and then nothing moves.
    fn redrive_dead_letters(&self, dead_letter: &Name, to: Option<&Name>) -> Result<u64>;
    /// Messages a receive set aside because they failed their integrity check
    /// (dead-lettered, or kept in place without a dead-letter queue, with a
    /// reason starting [`INTEGRITY_REASON_PREFIX`]), oldest first, at most
    /// `limit`. Their payloads are not opened.
    fn damaged_messages(&self, limit: usize) -> Result<Vec<DamagedMessage>>;
    /// How many messages in dead-letter queue `dead_letter` were moved there
    /// from queue `source` (not counting those from other queues sharing it,
    /// or sent to it directly): `source`'s own dead-letter depth. `NotFound`
    /// if `dead_letter` does not exist.
    fn dead_letters_from(&self, dead_letter: &Name, source: &Name) -> Result<u64>;
    /// Delete every message of `queue` — visible, delayed and in flight — in
    /// one commit, as SQS's PurgeQueue does, and return how many were deleted.
    /// The queue and its settings stay; a receipt of a purged message gives
    /// `LeaseLost` afterwards. Messages a run has taken into its ledger are the
    /// run's, not the queue's, and stay. `NotFound` for an unknown queue.
    fn purge_queue(&self, queue: &Name) -> Result<u64>;
    /// Have `on_messages` called with a queue's name soon after a write
    /// made messages visible at once in that queue — a send, a lease released
    /// with visibility 0, a message moved to its dead-letter queue, a redrive,
    /// a run returning its unfinished items — so that receivers wake instead
    /// of sleeping out their poll interval. It is called after the write
    /// commits, on a thread of the store's or the writer's: it must be quick
    /// and must not call the store. Which writers it hears is the backend's
    /// to say (every process sharing a PostgreSQL store; the embedded store,
    /// only its own process). `None`: this backend cannot tell (the default;
    /// receivers poll). Best effort and never the only way to find work: a
    /// call may be missed (a lost connection, a writer in another process)
    /// or spurious, and messages also become visible by time (delays, lapsed
    /// leases), so receivers still poll. The watch lasts while the returned
    /// [`MessageWatch`] is held.
    fn watch_messages(&self, on_messages: OnMessages) -> Result<Option<MessageWatch>> {
        let _ = on_messages;
        Ok(None)
    }
}

/// Told the name of a queue that messages became visible in ([`QueueStore::watch_messages`]).
pub type OnMessages = Arc<dyn Fn(&str) + Send + Sync>;

/// A watch registered with [`QueueStore::watch_messages`]: dropped, it is removed.
pub struct MessageWatch {
    cancel: Option<Box<dyn FnOnce() + Send + Sync>>,
    other_processes: bool,
}

impl MessageWatch {
    /// A watch that hears writers in every process sharing the store, and
    /// that `cancel` removes.
    pub fn new(cancel: impl FnOnce() + Send + Sync + 'static) -> MessageWatch {
        MessageWatch { cancel: Some(Box::new(cancel)), other_processes: true }
    }

    /// A watch that hears only writers in this process, and that `cancel` removes.
    pub fn in_this_process(cancel: impl FnOnce() + Send + Sync + 'static) -> MessageWatch {
        MessageWatch { cancel: Some(Box::new(cancel)), other_processes: false }
    }

    /// Whether writers in other processes wake it too: if not, a receiver
    /// must keep polling at its usual pace for their messages, and the watch
    /// only makes it quicker for this process's.
    pub fn hears_other_processes(&self) -> bool {
        self.other_processes
    }
}

impl Drop for MessageWatch {
    fn drop(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            cancel();
        }
    }
}

impl std::fmt::Debug for MessageWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageWatch").field("other_processes", &self.other_processes).finish_non_exhaustive()
    }
}

/// The watchers ([`QueueStore::watch_messages`]) of one store within one
/// process, told directly by the writers of that process after they commit:
/// what a backend without a way to hear other processes (the embedded
/// store) offers, so that receivers in the writer's process wake at once.
#[derive(Default)]
pub struct LocalWatchers {
    inner: std::sync::Mutex<(u64, BTreeMap<u64, OnMessages>)>,
}

impl LocalWatchers {
    /// Register `on_messages` until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>, on_messages: OnMessages) -> MessageWatch {
        let id = {
            let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = inner.0;
            inner.0 += 1;
            inner.1.insert(id, on_messages);
            id
        };
        let watchers = Arc::downgrade(self);
        MessageWatch::in_this_process(move || {
            if let Some(watchers) = watchers.upgrade() {
                watchers.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.remove(&id);
            }
        })
    }

    /// Tell every watcher of each of `queues` (none: nothing), on this thread
    /// and without holding any lock while they run.
    pub fn tell<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let mut queues = queues.into_iter().peekable();
        if queues.peek().is_none() {
            return;
        }
        let current: Vec<OnMessages> =
            self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.values().cloned().collect();
        for queue in queues {
            for on_messages in &current {
                on_messages(queue);
            }
        }
    }
}

impl std::fmt::Debug for LocalWatchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWatchers").finish_non_exhaustive()
    }
}

/// The invocation ledger: one record per finished invocation, with its logs.
pub trait InvocationLedger: Send + Sync {
    /// Record one finished invocation (one attempt) and the logs it wrote
    /// (stdout and stderr as captured, possibly empty), both in one commit.
    /// Returns its ledger id, greater than every id before it. An
    /// `estimated_cost` that is not finite is refused with `Backend` and
    /// nothing is recorded.
    fn record_invocation(&self, record: &InvocationRecord, logs: &[u8]) -> Result<u64>;
    /// Recorded invocations matching `filter`, in ascending id order.
    fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<StoredInvocation>>;
    /// The logs of every attempt recorded under `request_id`, concatenated in
    /// the order the attempts were recorded. `NotFound` (kind `invocation`) if
    /// no invocation has that request id; empty if they wrote nothing.
    fn invocation_logs(&self, request_id: &str) -> Result<Vec<u8>>;
    /// A summary of `function`'s recorded invocations, exact at this instant; all
    /// zero and `None` for a function never invoked (the ledger does not know
    /// which functions exist).
    fn function_stats(&self, function: &Name) -> Result<FunctionStats>;
}

/// Batch-job runs: their leases, items, results, workers and item attempts.
///
/// A coordinator "holds" a run's lease while it is the recorded owner and
/// the lease has not lapsed (`now < lease_until`). Unknown runs are
/// `NotFound` (kind `run`) in every method that names one.
///
/// Every lease of an item starts an attempt; completing it (done, failed,
/// dead-lettered) or releasing it (its worker died, a new coordinator
/// resumed) ends it, in the same commit as the item's change.
pub trait RunStore: Send + Sync {
    /// Create a run, status `Requested`, created now. `AlreadyExists` (kind `run`) on a duplicate id.
    fn create_run(&self, run: NewRun) -> Result<RunRecord>;
    fn run(&self, id: &str) -> Result<RunRecord>;
    /// Runs (of `job`, if given), newest first (by creation), at most `limit`.
    fn runs(&self, job: Option<&Name>, limit: usize) -> Result<Vec<RunRecord>>;
    /// Take the run's lease for `ttl` if it is unowned, lapsed, or already
    /// `owner`'s (then it is extended). Sets status `Running` (from
    /// `Requested`) and `started_at` once; increments `coordinator_attempts`
    /// when the owner changes (so the first claim makes it 1). `Ok(false)`,
    /// changing nothing, if someone else holds a live lease or the run is finished.
    fn claim_run(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool>;
    /// Extend `owner`'s lease to `ttl` from now. `Conflict` if `owner` does not
    /// hold it (another owner, a lapsed lease — claim it again —, a finished run).
    fn renew_run_lease(&self, id: &str, owner: &str, ttl: Duration) -> Result<()>;
    /// Runs not finished whose lease lapsed, or that were never claimed and
    /// were created more than `grace` ago, oldest first: the control plane
    /// restarts their coordinator.
    fn runs_needing_coordinator(&self, grace: Duration) -> Result<Vec<RunRecord>>;
    /// End the run with a finished `status` (see [`RunStatus::is_finished`]),
    /// its error and report JSON; sets `finished_at` and clears the lease.
    /// `Conflict` if `owner` does not hold the lease or `status` is not a finished one.
    fn finish_run(
        &self,
        id: &str,
        owner: &str,
        status: RunStatus,
        error: Option<&str>,
        report: Option<&str>,
    ) -> Result<()>;
    /// Change the status of a run `owner` holds to an unfinished one (e.g.
    /// `Finishing`). `Conflict` if `owner` does not hold the lease or
    /// `status` is finished (use `finish_run`).
    fn set_run_status(&self, id: &str, owner: &str, status: RunStatus) -> Result<()>;
    /// Add items, pending at once, in one commit; items whose id the run already
    /// has are ignored (as are repeats within `items`). Returns how many were new.
    /// `Conflict` if the run is finished.
    fn add_run_items(&self, run: &str, items: &[NewRunItem]) -> Result<u64>;
    /// Move up to `max` visible messages of `queue` (oldest first, as
    /// `receive_messages` orders them) into the run as pending items, in ONE
    /// commit: item id = the message id in decimal, payload = the body; the
    /// messages are deleted from the queue. Delayed and in-flight messages
    /// stay; `max_receives` does not apply (the job's attempts do). The store
    /// remembers which queue and message each item came from (id, sent time,
    /// attributes, receive count) for
    /// [`RunStore::return_unfinished_items_to_queues`]. A message whose id
    /// the run already has as a `Returned` item makes that item pending again.
    /// Returns how many messages moved. `NotFound` for an unknown queue;
    /// `Conflict` if the run is finished.
    fn move_queue_messages_into_run(&self, run: &str, queue: &Name, max: usize) -> Result<u64>;
    /// Put every unfinished (pending or leased) item of the run that came from
    /// a queue message back into that queue as the same message — its id,
    /// sent time, attributes and receive count kept, visible at once — and
    /// mark the item `Returned`, in ONE commit. Done and dead-lettered items,
    /// items that did not come from a queue, and items whose queue was
    /// deleted since stay as they are. Idempotent: a second call returns 0
    /// and changes nothing. Meant for a run being stopped (deadline, budget)
    /// whose workers are gone: a completion of a returned item is stale.
    /// Returns how many messages went back. `NotFound` for an unknown run.
    fn return_unfinished_items_to_queues(&self, run: &str) -> Result<u64>;
    /// Lease up to `max` pending items whose `not_before` has come to `worker`:
    /// status `Leased`, attempts + 1. Oldest first: in the order they became
    /// available (`not_before`), ties by insertion — so items never retried
    /// come in insertion order, and a released item keeps its place.
    fn lease_run_items(&self, run: &str, worker: &str, max: usize) -> Result<Vec<RunItem>>;
    /// The attributes of the queue messages that `items` of a queue-fed run
    /// came from, as sent (the reserved trace header among them), by item id,
    /// while the item is in the run. Items that came from no message, whose
    /// message had no attributes, or that the run does not have, are absent.
    /// `NotFound` for an unknown run.
    fn run_item_message_attributes(
        &self,
        run: &str,
        items: &[String],
    ) -> Result<BTreeMap<String, Vec<(String, String)>>>;
    /// Record how attempt `attempt` of `item` ended. `Done`: stores the result
    /// keyed by (job, item) — replacing any earlier result of that item of that
    /// job, from any run — and marks the item `Done`. `Failed`: `Pending` with
    /// `not_before = retry_at`, or `DeadLettered` when `retry_at` is `None`;
    /// `last_error` set either way. `Ok(false)`, changing nothing, unless the
    /// item is `Leased` by `worker` with that attempt number (a stale
    /// completion after the item was released and leased again). `NotFound`
    /// (kind `item`) for an item the run does not have.
    fn complete_run_item(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
    ) -> Result<bool>;
    /// [`RunStore::complete_run_item`], then [`RunStore::lease_run_items`]
    /// of up to `lease_max` items to the same worker (none when 0): a worker's
    /// completion usually asks for its next item. Backends should do both in
    /// one commit; the default makes two.
    fn complete_and_lease_run_items(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
        lease_max: usize,
    ) -> Result<(bool, Vec<RunItem>)> {
        let accepted = self.complete_run_item(run, item, worker, attempt, completion)?;
        let items = if lease_max > 0 { self.lease_run_items(run, worker, lease_max)? } else { Vec::new() };
        Ok((accepted, items))
    }
    /// Group commit: each completion recorded as
    /// [`RunStore::complete_and_lease_run_items`] records it, in order, all
    /// in ONE commit, so many workers' completions share one durable write.
    /// Each has its own answer: a completion refused on its own (`NotFound`
    /// for an item the run does not have, `Damaged` for a next item that
    /// cannot be opened) changes nothing and the others are still recorded;
    /// the per-item rules hold within the group (a second completion of an
    /// item already done in it is stale). `Err` for the whole group (the
    /// commit failed, e.g. `DiskFull`) means none was recorded. Backends
    /// should make one commit; the default makes one per completion and
    /// answers each with its own error.
    fn complete_run_items_together(
        &self,
        run: &str,
        completions: Vec<GroupedCompletion>,
    ) -> Result<Vec<Result<GroupedCompletionOutcome>>> {
        Ok(completions
            .into_iter()
            .map(|grouped| {
                self.complete_and_lease_run_items(
                    run,
                    &grouped.item,
                    &grouped.worker,
                    grouped.attempt,
                    grouped.completion,
                    grouped.lease_next,
                )
                .map(|(accepted, leased)| GroupedCompletionOutcome { accepted, leased })
            })
            .collect())
    }
    /// Return `worker`'s leased items to `Pending` at once (it died), keeping
    /// their attempts and place. Returns how many.
    fn release_worker_items(&self, run: &str, worker: &str) -> Result<u64>;
    /// Return every leased item to `Pending` (a new coordinator resumes). Returns how many.
    fn release_all_leased_items(&self, run: &str) -> Result<u64>;
    fn run_item_counts(&self, run: &str) -> Result<RunItemCounts>;
    /// Items `Done` and `DeadLettered`, by job, over every run the store
    /// holds, finished or not: a count that only grows while runs work and
    /// stays when they end, falling only when retention prunes finished runs
    /// ([`RetentionStore::prune_finished_runs`]). Jobs with no such item are
    /// absent. Backends should count in one query; the default sums
    /// [`RunStore::run_item_counts`] over every run.
    fn completed_item_counts_by_job(&self) -> Result<BTreeMap<Name, CompletedItemCounts>> {
        completed_item_counts_run_by_run(self)
    }
    /// Items (with `status`, if given) after `after_item` in the store's item
    /// order, at most `limit`. That order is by item id, or by a keyed hash
    /// of it where the store keeps ids sealed (an encrypted SQLite store):
    /// stable, so paging by the last item seen lists every item once.
    fn run_items(
        &self,
        run: &str,
        status: Option<ItemStatus>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunItem>>;
    /// Results of `job` (produced last by run `run`, if given) after
    /// `after_item` in the store's item order (see [`RunStore::run_items`]),
    /// at most `limit`.
    fn results(
        &self,
        job: &Name,
        run: Option<&str>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResultRecord>>;
    /// `NotFound` (kind `result`, named `<job>/<item>`) if there is none.
    fn result(&self, job: &Name, item: &str) -> Result<ResultRecord>;
    /// Insert or replace the record of worker `worker.worker` of run `worker.run_id`.
    fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()>;
    /// The run's workers, by start time then name.
    fn run_workers(&self, run: &str) -> Result<Vec<WorkerRecord>>;
    /// The `limit` most recently started attempts of the run's items, in the
    /// order they started (ties by item insertion, then attempt).
    fn run_item_attempts(&self, run: &str, limit: usize) -> Result<Vec<ItemAttempt>>;
    /// Every worker that ended an attempt at the run's items done, failed or
    /// dead-lettered, with how many of each, by worker name. Released and
    /// running attempts count for nobody.
    fn run_attempt_counts_by_worker(&self, run: &str) -> Result<BTreeMap<String, WorkerAttemptCounts>>;
    /// End an unfinished run as `Cancelled` whoever holds its lease: sets
    /// `finished_at`, records `reason` as its error and clears the lease (so
    /// its coordinator can no longer renew, finish or change it). Returns the
    /// run as it now is. `Conflict` if the run has already finished.
    fn cancel_run(&self, id: &str, reason: &str) -> Result<RunRecord>;
}

/// [`RunStore::completed_item_counts_by_job`] the slow, plain way: one
/// [`RunStore::run_item_counts`] per run. The trait's default, and what the
/// conformance suite checks a backend's own query against.
pub fn completed_item_counts_run_by_run<S: RunStore + ?Sized>(
    store: &S,
) -> Result<BTreeMap<Name, CompletedItemCounts>> {
    let mut by_job = BTreeMap::<Name, CompletedItemCounts>::new();
    for run in store.runs(None, usize::MAX)? {
        let counts = store.run_item_counts(&run.id)?;
        if counts.done + counts.dead_lettered > 0 {
            let completed = by_job.entry(run.job).or_default();
            completed.done += counts.done;
            completed.dead_lettered += counts.dead_lettered;
        }
    }
    Ok(by_job)
}

/// The findings of `mayfly audit` (run by hand, after every deploy and after
/// every run), kept so the API and the dashboard can show the latest.
pub trait AuditStore: Send + Sync {
    /// Record an audit, at now, with its findings in order; forgets the oldest
    /// audits beyond [`AUDITS_KEPT`] in the same commit. Returns it with its id,
    /// greater than every id before it.
    fn record_audit(&self, audit: &NewAudit) -> Result<AuditRecord>;
    /// The most recently recorded audit, if any.
    fn latest_audit(&self) -> Result<Option<AuditRecord>>;
}

/// API tokens and the access log.
///
/// Tokens are stored only as hashes of their secret. The access log is
/// append-only: nothing changes or removes a record once appended.
pub trait AccessStore: Send + Sync {
    /// Store a token, created now. `AlreadyExists` (kind `token`) if its id is
    /// taken or a token not revoked has its name.
    fn create_api_token(&self, token: NewApiToken) -> Result<ApiTokenRecord>;
    /// `NotFound` (kind `token`) for an unknown id.
    fn api_token(&self, id: &str) -> Result<ApiTokenRecord>;
    /// Every token, revoked ones too, oldest first.
    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Revoke a token now; revoking it again keeps the first `revoked_at`.
    /// Returns it as it now is; `NotFound` (kind `token`) for an unknown id.
    fn revoke_api_token(&self, id: &str) -> Result<ApiTokenRecord>;
    /// The secret access key of a token's AWS credentials, opened; `None`
    /// if it has none. `NotFound` (kind `token`) for an unknown id.
    fn api_token_aws_secret(&self, id: &str) -> Result<Option<String>>;
    /// A 32-byte secret key for `purpose` (e.g. `aws-sessions`), the same on
    /// every host that opens this store with its keyring, kept only sealed
    /// (derived from a random key the store keeps sealed), and changed only
    /// when the keyring is lost and replaced. `Backend` error for a store
    /// that seals nothing, which has no secret to derive from.
    fn derived_key(&self, purpose: &str) -> Result<[u8; 32]>;
    /// Append records to the access log in one commit, in order.
    fn append_access_records(&self, records: &[AccessRecord]) -> Result<()>;
    /// Access records with an id below `before_id` (all, if `None`), newest
    /// first, at most `limit`.
    fn access_records(&self, before_id: Option<u64>, limit: usize) -> Result<Vec<StoredAccessRecord>>;
}

/// Deleting what has outlived its retention, in bounded batches: each call
/// deletes at most `limit` records, the oldest first, in one commit, and
/// returns how many it deleted (fewer than `limit`: nothing older is left).
pub trait RetentionStore: Send + Sync {
    /// Messages of `queue` sent before `sent_before` (a queue's `retention`),
    /// whatever their state: visible, delayed, in flight or dead-lettered.
    fn expire_messages(&self, queue: &Name, sent_before: Timestamp, limit: usize) -> Result<u64>;
    /// Invocations (with their logs) started before `started_before`.
    fn prune_invocations(&self, started_before: Timestamp, limit: usize) -> Result<u64>;
    /// Runs that finished before `finished_before`, with their items, item
    /// attempts and workers. Results stay: they are keyed by (job, item), not
    /// by run, and are the job's output.
    fn prune_finished_runs(&self, finished_before: Timestamp, limit: usize) -> Result<u64>;
    /// The oldest events of the event log appended before `before`, but never
    /// one that a consumer has not read yet (past the lowest consumer cursor).
    fn prune_object_events(&self, before: Timestamp, limit: usize) -> Result<u64>;
    /// Access records before `before`. A backend may refuse to delete records
    /// younger than its own floor ([`ACCESS_LOG_RETENTION`]) whatever it is asked.
    fn prune_access_records(&self, before: Timestamp, limit: usize) -> Result<u64>;
}

/// Named leases that hosts sharing the store campaign for (see [`lease`]):
/// the control plane's singleton duties run under one. `now` is the
/// caller's clock (hosts must agree on the time well within a lease's time
/// to live); each call is atomic, so of several acquirers at once at most
/// one is granted a lease another does not hold.
pub trait LeaseStore: Send + Sync {
    /// Take or renew lease `name` for `holder` until `now + ttl`, by
    /// [`grant_lease`]: granted when free, lapsed or already `holder`'s (a
    /// renewal keeps the term; a takeover from another holder increments
    /// it). `None` when another holder's lease is live; nothing changes then.
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration, now: Timestamp) -> Result<Option<Lease>>;
    /// Give lease `name` up, if `holder` holds it (else nothing changes):
    /// another may take it at once, with the next term. Returns whether it did.
    fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;
    /// The lease as stored (live, lapsed or released); `None` if never taken.
    fn lease(&self, name: &str) -> Result<Option<Lease>>;
}

/// Writes that the holder of a lease makes under it, fenced by its term: the
/// control plane's singleton duties (the router's sends and cursor, the
/// scheduler's firings, the runs the jobs supervisor starts) commit through
/// here, so a leader that lost its lease while paused cannot write once more
/// after a new leader started (see [`lease`]).
pub trait FencedWrites: Send + Sync {
    /// Make `writes` in one commit, in order, each as its own method would
    /// ([`FencedWrite`]), and return their outcomes in the same order. With
    /// a `fence`, first check in the same transaction that the stored lease
    /// still has the fence's holder and term ([`check_fence`]), serialised
    /// with any takeover of the lease: `Fenced`, changing nothing, if not.
    /// `None` for a caller that holds no lease (a CLI command, a test): the
    /// writes are only made together. Any write failing changes nothing.
    fn commit_fenced(&self, fence: Option<&Fence>, writes: Vec<FencedWrite>) -> Result<Vec<FencedOutcome>>;
}

/// One write of [`FencedWrites::commit_fenced`].
#[derive(Debug, Clone, PartialEq)]
pub enum FencedWrite {
    /// As [`QueueStore::send_messages`].
    SendMessages { queue: Name, messages: Vec<OutgoingMessage> },
    /// As [`EventLog::set_consumer_cursor`].
    SetConsumerCursor { consumer: String, sequence: u64 },
    /// As [`RunStore::create_run`].
    CreateRun(NewRun),
}

/// What one [`FencedWrite`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum FencedOutcome {
    /// The ids of the messages sent, in order.
    Sent(Vec<u64>),
    CursorSet,
    RunCreated(Box<RunRecord>),
}

/// Recorded experiments (`mayfly experiment run`, `mayfly deploy
/// --evaluate`), see [`experiments`]. A backend seals each one's
/// [`ExperimentDetails`] as one record.
pub trait ExperimentStore: Send + Sync {
    /// Record a finished experiment, at now (its `finished_at`). Returns it
    /// with its id, greater than every id before it.
    fn record_experiment(&self, experiment: &Experiment) -> Result<ExperimentRecord>;
    /// The newest experiments first, at most `limit`.
    fn experiments(&self, limit: usize) -> Result<Vec<ExperimentRecord>>;
    /// One experiment; `NotFound` (kind `experiment`) for an unknown id.
    fn experiment(&self, id: u64) -> Result<ExperimentRecord>;
}

/// How long the access log is kept at the least: six years, the retention
/// HIPAA sets for documentation of access to health information. The SQLite
/// backend refuses, in the file itself, to delete a younger record.
pub const ACCESS_LOG_RETENTION: Duration = Duration::from_secs(6 * 365 * 86_400);

#[cfg(test)]
mod tests {
    use super::nearest_rank_index;

    #[test]
    fn nearest_rank_index_picks_a_value_that_covers_the_percentile() {
        assert_eq!(nearest_rank_index(0, 50), None);
        assert_eq!(nearest_rank_index(1, 50), Some(0));
        assert_eq!(nearest_rank_index(1, 95), Some(0));
        assert_eq!(nearest_rank_index(2, 50), Some(0));
        assert_eq!(nearest_rank_index(4, 50), Some(1));
        assert_eq!(nearest_rank_index(5, 50), Some(2));
        assert_eq!(nearest_rank_index(20, 50), Some(9));
        assert_eq!(nearest_rank_index(20, 95), Some(18));
        assert_eq!(nearest_rank_index(21, 95), Some(19));
        assert_eq!(nearest_rank_index(100, 100), Some(99));
        assert_eq!(nearest_rank_index(10, 0), Some(0), "percentiles are clamped to 1–100");
    }
}
