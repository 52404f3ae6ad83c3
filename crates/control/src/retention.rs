//! Retention: deleting what has outlived the time it is kept. The
//! architecture file declares it for what users put in — a bucket's
//! `retention` (objects), `[policy].log_retention` (sealed run logs in a
//! job's logs bucket) and a queue's `retention` (messages) — and
//! [`LedgerRetention`] sets it for Mayfly's own ledgers. `mayfly up` runs a
//! pass at start and then every [`RETENTION_INTERVAL`]; `mayfly prune` runs
//! one by hand.
//!
//! An expired object is deleted through the buckets like any delete, so its
//! `deleted` event carries the reason ([`DeletionReason`]) and routes see it
//! (`LifecycleExpiration:Delete` in the S3 event). Every deletion is in
//! bounded batches of [`BATCH`], so a pass never holds the state store's
//! write lock for long.

use std::time::Duration;

use futures::TryStreamExt;
use mayfly_buckets::{BucketError, Buckets};
use mayfly_core::{DeletionReason, Name, Timestamp};
use mayfly_spec::Architecture;
use mayfly_state::{ACCESS_LOG_RETENTION, StateError, StateStore};
use serde::Serialize;

/// How often `mayfly up` runs a retention pass.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Records deleted per state-store call.
const BATCH: usize = 1_000;

/// The folder of a job's logs bucket that holds its sealed run logs.
pub const SEALED_LOGS_PREFIX: &str = "runs/";

/// How long Mayfly keeps its own ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRetention {
    /// The invocation ledger and its captured logs.
    pub invocations: Duration,
    /// Finished runs with their items, attempts and workers (results stay).
    pub finished_runs: Duration,
    /// The bucket event log, once every consumer has read it.
    pub events: Duration,
    /// The API's access log (the state store refuses anything younger than
    /// [`ACCESS_LOG_RETENTION`]).
    pub access_log: Duration,
}

impl Default for LedgerRetention {
    fn default() -> LedgerRetention {
        const DAY: u64 = 86_400;
        LedgerRetention {
            invocations: Duration::from_secs(90 * DAY),
            finished_runs: Duration::from_secs(90 * DAY),
            events: Duration::from_secs(30 * DAY),
            access_log: ACCESS_LOG_RETENTION,
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub objects: u64,
    pub sealed_logs: u64,
    pub messages: u64,
    pub invocations: u64,
    pub runs: u64,
    pub events: u64,
    pub access_records: u64,
    /// Multipart uploads abandoned for [`mayfly_buckets::ABANDONED_AFTER`] (their parts removed).
    pub abandoned_uploads: u64,
}

impl RetentionReport {
    pub fn total(&self) -> u64 {
        self.objects
            + self.sealed_logs
            + self.messages
            + self.invocations
            + self.runs
            + self.events
            + self.access_records
            + self.abandoned_uploads
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("retention: {0}")]
    State(#[from] StateError),
    #[error("retention in bucket `{bucket}`: {source}")]
    Bucket { bucket: Name, source: BucketError },
    #[error("retention of abandoned multipart uploads: {0}")]
    AbandonedUploads(BucketError),
}

/// One pass over everything with a retention, as of `now`.
pub async fn enforce_retention(
    state: &dyn StateStore,
    buckets: &Buckets,
    architecture: &Architecture,
    ledgers: &LedgerRetention,
    now: Timestamp,
) -> Result<RetentionReport, RetentionError> {
    let before = |kept: Duration| Timestamp::from_millis(now.as_millis().saturating_sub(millis(kept)));
    let mut report = RetentionReport::default();

    for (bucket, spec) in &architecture.buckets {
        if let Some(retention) = spec.retention {
            report.objects += expire_objects(buckets, bucket, "", before(retention), DeletionReason::Retention).await?;
        }
    }
    if let Some(log_retention) = architecture.policy.log_retention {
        let logs_buckets: std::collections::BTreeSet<&Name> =
            architecture.jobs.values().filter_map(|job| job.logs.as_ref()).collect();
        for bucket in logs_buckets {
            report.sealed_logs += expire_objects(
                buckets,
                bucket,
                SEALED_LOGS_PREFIX,
                before(log_retention),
                DeletionReason::LogRetention,
            )
            .await?;
        }
    }
    // Every queue the store has, Mayfly's internal ones too, by its own retention.
    for queue in state.queues()? {
        let cutoff = before(queue.config.retention);
        report.messages += drain(|| state.expire_messages(&queue.name, cutoff, BATCH))?;
    }
    report.invocations += drain(|| state.prune_invocations(before(ledgers.invocations), BATCH))?;
    report.runs += drain(|| state.prune_finished_runs(before(ledgers.finished_runs), BATCH))?;
    report.events += drain(|| state.prune_object_events(before(ledgers.events), BATCH))?;
    report.access_records += drain(|| state.prune_access_records(before(ledgers.access_log), BATCH))?;
    report.abandoned_uploads += buckets
        .abort_abandoned_uploads(before(mayfly_buckets::ABANDONED_AFTER))
        .await
        .map_err(RetentionError::AbandonedUploads)?;
    if report.total() > 0 {
        tracing::info!(
            objects = report.objects,
            sealed_logs = report.sealed_logs,
            messages = report.messages,
            invocations = report.invocations,
            runs = report.runs,
            events = report.events,
            access_records = report.access_records,
            abandoned_uploads = report.abandoned_uploads,
            "retention deleted what outlived its retention"
        );
    }
    Ok(report)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Call a batched delete until a batch comes back short.
fn drain(mut batch: impl FnMut() -> Result<u64, StateError>) -> Result<u64, StateError> {
    let mut total = 0;
    loop {
        let deleted = batch()?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Delete the objects under `prefix` last modified before `cutoff`.
async fn expire_objects(
    buckets: &Buckets,
    bucket: &Name,
    prefix: &str,
    cutoff: Timestamp,
    reason: DeletionReason,
) -> Result<u64, RetentionError> {
    let failed = |source| RetentionError::Bucket { bucket: bucket.clone(), source };
    let prefix = (!prefix.is_empty()).then_some(prefix);
    let expired: Vec<String> = buckets
        .list_unordered(bucket, prefix)
        .await
        .map_err(failed)?
        .try_filter_map(|object| async move { Ok((object.last_modified < cutoff).then_some(object.key)) })
        .try_collect()
        .await
        .map_err(failed)?;
    let mut count = 0;
    for key in expired {
        match buckets.expire(bucket, &key, reason).await {
            Ok(()) => count += 1,
            // Deleted meanwhile by someone else: nothing left to expire.
            Err(BucketError::NoSuchKey { .. }) => {}
            Err(error) => return Err(failed(error)),
        }
    }
    Ok(count)
}

/// `mayfly up`'s retention loop: a pass now and then every
/// [`RETENTION_INTERVAL`] until shutdown, each under the deployment current
/// at that moment. A failed pass is logged and retried at the next one: the
/// rest of the control plane never stops for it.
pub async fn run(
    state: std::sync::Arc<dyn StateStore>,
    buckets: Buckets,
    clock: std::sync::Arc<dyn mayfly_core::Clock>,
    mut shutdown: crate::Shutdown,
) -> Result<(), crate::ControlError> {
    let ledgers = LedgerRetention::default();
    loop {
        match current_architecture(state.as_ref()) {
            Ok(Some(architecture)) => {
                if let Err(error) =
                    enforce_retention(state.as_ref(), &buckets, &architecture, &ledgers, clock.now()).await
                {
                    tracing::warn!(error = %error, "a retention pass failed; the next one tries again");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(error = %error, "retention cannot read the current deployment"),
        }
        if shutdown.sleep_or_stop(RETENTION_INTERVAL).await {
            return Ok(());
        }
    }
}

/// The architecture of the latest deployment, if there is one.
pub fn current_architecture(state: &dyn StateStore) -> Result<Option<Architecture>, String> {
    let Some(deployment) = state.latest_deployment().map_err(|error| error.to_string())? else {
        return Ok(None);
    };
    mayfly_spec::parse(&format!("deployment {}", deployment.version), &deployment.source).map(Some).map_err(
        |diagnostics| format!("the recorded deployment {} no longer parses: {diagnostics}", deployment.version),
    )
}
