//! [`RunStore`] on PostgreSQL: `runs` (with the coordinator's lease),
//! `run_items`, `results` (one per job and item), `run_workers`,
//! `run_item_attempts` (one row per lease of an item) and
//! `run_item_messages` (the queue message each item of a queue-fed run was).
//!
//! Every trait method is one transaction. A method that changes a run takes
//! its row `FOR UPDATE`, so coordinators on several hosts see each other's
//! claims; leasing items takes them `FOR UPDATE SKIP LOCKED`, so two lessees
//! never get one item and never wait for each other. The rules (what a
//! status means, when to retry) come from [`mayfly_core::run`]; this file
//! only stores what they decide. Payloads, results, errors, reports and item
//! ids are sealed as the embedded store seals them.

use std::collections::BTreeMap;
use std::time::Duration;

use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{Name, Timestamp};
use mayfly_state::sealing::{Record, Sealer, StoredItemId};
use mayfly_state::{
    AttemptOutcome, CompletedItemCounts, GroupedCompletion, GroupedCompletionOutcome, ItemAttempt, ItemCompletion,
    NewRun, NewRunItem, Result, ResultRecord, RunItem, RunItemCounts, RunRecord, RunStore, StateError,
    WorkerAttemptCounts, WorkerRecord,
};
use postgres::Transaction;

use crate::errors::PgResultExt;
use crate::queues::{require_queue, visible_messages};
use crate::{PostgresStore, from_sql_integer, limit_to_sql, name_from_column, to_sql_integer};

// --- conversions --------------------------------------------------------------------

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn run_status(text: &str) -> Result<RunStatus> {
    text.parse().map_err(|error| StateError::Backend(format!("the state store holds an unknown run status: {error}")))
}

fn item_status(text: &str) -> Result<ItemStatus> {
    text.parse().map_err(|error| StateError::Backend(format!("the state store holds an unknown item status: {error}")))
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn check_budget(run: &NewRun) -> Result<()> {
    match run.budget {
        Some(budget) if !budget.is_finite() => Err(StateError::Backend(format!(
            "run `{}` has a budget of {budget}, which is not a finite number; nothing was recorded",
            run.id
        ))),
        _ => Ok(()),
    }
}

// --- runs -----------------------------------------------------------------------------

const RUN_COLUMNS: &str = "id, job, deployment_version, trigger_source, status, created_at, started_at, finished_at, \
                           deadline, budget, lease_owner, lease_until, coordinator_attempts, error, report";

/// A run as stored: its error and report still sealed.
fn run_from_row(row: &postgres::Row) -> Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0),
        job: name_from_column(row.get(1))?,
        deployment_version: row.get::<_, Option<i64>>(2).map(from_sql_integer),
        trigger: row.get(3),
        status: run_status(row.get(4))?,
        created_at: Timestamp(row.get(5)),
        started_at: row.get::<_, Option<i64>>(6).map(Timestamp),
        finished_at: row.get::<_, Option<i64>>(7).map(Timestamp),
        deadline: Timestamp(row.get(8)),
        budget: row.get(9),
        lease_owner: row.get(10),
        lease_until: row.get::<_, Option<i64>>(11).map(Timestamp),
        coordinator_attempts: count(row.get(12)),
        error: row.get(13),
        report: row.get(14),
    })
}

/// The run and its number; `FOR UPDATE` when the caller changes it.
fn require_run(transaction: &mut Transaction<'_>, id: &str, for_update: bool) -> Result<(i64, RunRecord)> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {RUN_COLUMNS}, run_seq FROM runs WHERE id = $1{lock}");
    let row = transaction.query_opt(&sql, &[&id]).with_context(|| format!("look up run `{id}`"))?;
    let row = row.ok_or_else(|| StateError::not_found("run", id))?;
    Ok((row.get(15), run_from_row(&row)?))
}

/// What the item methods need to know about a run.
struct RunKey {
    run_seq: i64,
    job: Name,
    status: RunStatus,
}

fn require_run_key(transaction: &mut Transaction<'_>, id: &str) -> Result<RunKey> {
    let row = transaction
        .query_opt("SELECT run_seq, job, status FROM runs WHERE id = $1", &[&id])
        .with_context(|| format!("look up run `{id}`"))?
        .ok_or_else(|| StateError::not_found("run", id))?;
    Ok(RunKey { run_seq: row.get(0), job: name_from_column(row.get(1))?, status: run_status(row.get(2))? })
}

fn require_unfinished_run_key(transaction: &mut Transaction<'_>, id: &str, doing: &str) -> Result<RunKey> {
    let key = require_run_key(transaction, id)?;
    if key.status.is_finished() {
        return Err(StateError::Conflict(format!(
            "run `{id}` is already {}; cannot {doing}. Start a new run",
            key.status
        )));
    }
    Ok(key)
}

/// Whether `owner` holds the run's lease at `now`; if not, why.
fn check_holds_lease(run: &RunRecord, owner: &str, now: Timestamp) -> Result<()> {
    let refuse = |why: String| {
        Err(StateError::Conflict(format!("coordinator `{owner}` does not hold the lease of run `{}`: {why}", run.id)))
    };
    if run.status.is_finished() {
        return refuse(format!("the run is already {}", run.status));
    }
    match (&run.lease_owner, run.lease_until) {
        (Some(holder), _) if holder != owner => refuse(format!("coordinator `{holder}` holds it")),
        (Some(_), Some(until)) if until > now => Ok(()),
        (Some(_), _) => refuse("the lease lapsed; claim the run again".to_owned()),
        (None, _) => refuse("nobody has claimed the run".to_owned()),
    }
}

// --- items -------------------------------------------------------------------------------

const ITEM_COLUMNS: &str = "item, payload, status, attempts, worker, not_before, last_error, updated_at, item_sealed";

/// An item as stored (its id the lookup key, payload and error sealed) and its sealed id.
fn item_from_row(run: &str, row: &postgres::Row) -> Result<(RunItem, Option<String>)> {
    let item = RunItem {
        run_id: run.to_owned(),
        item: row.get(0),
        payload: row.get(1),
        status: item_status(row.get(2))?,
        attempts: count(row.get(3)),
        worker: row.get(4),
        not_before: Timestamp(row.get(5)),
        last_error: row.get(6),
        updated_at: Timestamp(row.get(7)),
    };
    Ok((item, row.get(8)))
}

/// Items added by one statement at most (a manifest of 20,000 lines is 20
/// round trips, not 20,000).
const ITEMS_PER_INSERT: usize = 1_000;

/// Add items, pending, in the order given (their numbers follow it); an id
/// the run already has, or one repeated in the batch, is ignored. Returns
/// how many were added.
fn insert_pending_items(
    transaction: &mut Transaction<'_>,
    run_seq: i64,
    ids: &[String],
    sealed_ids: &[Option<String>],
    payloads: &[Vec<u8>],
    now: Timestamp,
) -> Result<u64> {
    transaction
        .execute(
            "INSERT INTO run_items (run_seq, item, item_sealed, payload, status, attempts, not_before, updated_at) \
             SELECT $1, batch.item, batch.item_sealed, batch.payload, 'pending', 0, $5, $5 \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BYTEA[]) WITH ORDINALITY AS batch (item, item_sealed, payload, position) \
             ORDER BY batch.position ON CONFLICT (run_seq, item) DO NOTHING",
            &[&run_seq, &ids, &sealed_ids, &payloads, &now.as_millis()],
        )
        .with_context(|| format!("add {} item(s)", ids.len()))
}

/// Add a message's item, pending; an item of that id the run returned to its
/// queue earlier is pending again, its attempts kept. Returns the item's
/// number, or `None` when the run already has that id as an item it has not returned.
fn insert_message_item(
    transaction: &mut Transaction<'_>,
    run_seq: i64,
    item: &StoredItemId,
    payload: &[u8],
    now: Timestamp,
) -> Result<Option<i64>> {
    let row = transaction
        .query_opt(
            "INSERT INTO run_items (run_seq, item, item_sealed, payload, status, attempts, not_before, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) ON CONFLICT (run_seq, item) DO UPDATE SET \
             status = 'pending', payload = excluded.payload, worker = NULL, not_before = excluded.not_before, \
             updated_at = excluded.updated_at WHERE run_items.status = 'returned' RETURNING item_seq",
            &[&run_seq, &item.key, &item.sealed, &payload, &now.as_millis()],
        )
        .with_context(|| format!("add item `{}`", item.key))?;
    Ok(row.map(|row| row.get(0)))
}

/// Lease up to `max` due pending items (see `RunStore::lease_run_items`).
/// Items come back with their ids opened; payloads and errors still as stored.
fn lease_items(
    transaction: &mut Transaction<'_>,
    run: &str,
    worker: &str,
    max: usize,
    now: Timestamp,
    sealer: &Sealer,
) -> Result<Vec<RunItem>> {
    let key = require_run_key(transaction, run)?;
    let candidates = transaction
        .query(
            "SELECT item_seq, item, payload, attempts, not_before, last_error, item_sealed FROM run_items \
             WHERE run_seq = $1 AND status = 'pending' AND not_before <= $2 ORDER BY not_before, item_seq LIMIT $3 \
             FOR UPDATE SKIP LOCKED",
            &[&key.run_seq, &now.as_millis(), &limit_to_sql(max)],
        )
        .with_context(|| format!("find pending items of run `{run}`"))?;
    let mut leased = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let item_seq: i64 = candidate.get(0);
        let item: String = candidate.get(1);
        let attempts = count(candidate.get(3)).saturating_add(1);
        transaction
            .execute(
                "UPDATE run_items SET status = 'leased', worker = $2, attempts = attempts + 1, updated_at = $3 \
                 WHERE item_seq = $1",
                &[&item_seq, &worker, &now.as_millis()],
            )
            .with_context(|| format!("lease item `{item}` of run `{run}`"))?;
        transaction
            .execute(
                "INSERT INTO run_item_attempts (item_seq, attempt, run_seq, worker, started_at, outcome) \
                 VALUES ($1, $2, $3, $4, $5, 'running')",
                &[&item_seq, &i64::from(attempts), &key.run_seq, &worker, &now.as_millis()],
            )
            .with_context(|| format!("record the attempt at item `{item}` of run `{run}`"))?;
        leased.push(RunItem {
            run_id: run.to_owned(),
            item: sealer.open_run_item_id(run, item, candidate.get(6))?,
            payload: candidate.get(2),
            status: ItemStatus::Leased,
            attempts,
            worker: Some(worker.to_owned()),
            not_before: Timestamp(candidate.get(4)),
            last_error: candidate.get(5),
            updated_at: now,
        });
    }
    Ok(leased)
}

#[allow(clippy::too_many_arguments)] // the trait method's arguments, plus the transaction, clock and sealer
fn complete_item(
    transaction: &mut Transaction<'_>,
    run: &str,
    item: &str,
    worker: &str,
    attempt: u32,
    completion: ItemCompletion,
    now: Timestamp,
    sealer: &Sealer,
) -> Result<bool> {
    let key = require_run_key(transaction, run)?;
    let item_key = sealer.lookup_key(item);
    let row = transaction
        .query_opt(
            "SELECT item_seq, status, worker, attempts FROM run_items WHERE run_seq = $1 AND item = $2 FOR UPDATE",
            &[&key.run_seq, &item_key.as_ref()],
        )
        .with_context(|| format!("look up item `{item}` of run `{run}`"))?
        .ok_or_else(|| StateError::not_found("item", format!("{run}/{item}")))?;
    let item_seq: i64 = row.get(0);
    let status = item_status(row.get(1))?;
    let holder: Option<String> = row.get(2);
    let attempts = count(row.get(3));
    if status != ItemStatus::Leased || holder.as_deref() != Some(worker) || attempts != attempt {
        tracing::debug!(run, item, worker, attempt, current_attempt = attempts, status = %status, "stale item completion ignored");
        return Ok(false);
    }
    let outcome = match &completion {
        ItemCompletion::Done { .. } => AttemptOutcome::Done,
        ItemCompletion::Failed { retry_at: Some(_), .. } => AttemptOutcome::Failed,
        ItemCompletion::Failed { retry_at: None, .. } => AttemptOutcome::DeadLettered,
    };
    transaction
        .execute(
            "UPDATE run_item_attempts SET ended_at = $3, outcome = $4 WHERE item_seq = $1 AND attempt = $2",
            &[&item_seq, &i64::from(attempt), &now.as_millis(), &outcome.as_str()],
        )
        .with_context(|| format!("end attempt {attempt} at item `{item}` of run `{run}`"))?;
    match completion {
        ItemCompletion::Done { result } => {
            let result_id = sealer.seal_result_item_id(key.job.as_str(), item);
            let sealed = sealer.seal(Record::Result { job: key.job.as_str(), item }, &result);
            transaction
                .execute(
                    "INSERT INTO results (job, item, item_sealed, run_id, attempt, worker, result, recorded_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job, item) DO UPDATE SET \
                     run_id = excluded.run_id, attempt = excluded.attempt, worker = excluded.worker, \
                     result = excluded.result, recorded_at = excluded.recorded_at, item_sealed = excluded.item_sealed",
                    &[
                        &key.job.as_str(),
                        &result_id.key,
                        &result_id.sealed,
                        &run,
                        &i64::from(attempt),
                        &worker,
                        &sealed.as_ref(),
                        &now.as_millis(),
                    ],
                )
                .with_context(|| format!("store the result of item `{item}` of run `{run}`"))?;
            transaction
                .execute(
                    "UPDATE run_items SET status = 'done', updated_at = $2 WHERE item_seq = $1",
                    &[&item_seq, &now.as_millis()],
                )
                .with_context(|| format!("mark item `{item}` of run `{run}` done"))?;
        }
        ItemCompletion::Failed { error, retry_at: Some(retry_at) } => {
            let error = sealer.seal_text(Record::ItemError { run, item }, &error);
            transaction
                .execute(
                    "UPDATE run_items SET status = 'pending', worker = NULL, not_before = $2, last_error = $3, \
                     updated_at = $4 WHERE item_seq = $1",
                    &[&item_seq, &retry_at.as_millis(), &error, &now.as_millis()],
                )
                .with_context(|| format!("schedule a retry of item `{item}` of run `{run}`"))?;
        }
        ItemCompletion::Failed { error, retry_at: None } => {
            let error = sealer.seal_text(Record::ItemError { run, item }, &error);
            transaction
                .execute(
                    "UPDATE run_items SET status = 'dead_lettered', last_error = $2, updated_at = $3 \
                     WHERE item_seq = $1",
                    &[&item_seq, &error, &now.as_millis()],
                )
                .with_context(|| format!("dead-letter item `{item}` of run `{run}`"))?;
        }
    }
    Ok(true)
}

fn release_leased_items(
    transaction: &mut Transaction<'_>,
    run: &str,
    worker: Option<&str>,
    now: Timestamp,
) -> Result<u64> {
    let key = require_run_key(transaction, run)?;
    // `$2 IS NULL` releases every worker's items. `not_before` is kept, so a
    // released item goes back to its place at the front. Their attempts end first.
    transaction
        .execute(
            "UPDATE run_item_attempts SET ended_at = $3, outcome = 'released' \
             WHERE (item_seq, attempt) IN (SELECT item_seq, attempts FROM run_items \
             WHERE run_seq = $1 AND status = 'leased' AND ($2::TEXT IS NULL OR worker = $2))",
            &[&key.run_seq, &worker, &now.as_millis()],
        )
        .with_context(|| format!("end the attempts of the leased items of run `{run}`"))?;
    let released = transaction
        .execute(
            "UPDATE run_items SET status = 'pending', worker = NULL, updated_at = $3 \
             WHERE run_seq = $1 AND status = 'leased' AND ($2::TEXT IS NULL OR worker = $2)",
            &[&key.run_seq, &worker, &now.as_millis()],
        )
        .with_context(|| format!("release the leased items of run `{run}`"))?;
    Ok(released)
}

// --- results ---------------------------------------------------------------------------

const RESULT_COLUMNS: &str = "job, item, run_id, attempt, worker, result, recorded_at, item_sealed";

/// A result as stored (its item the lookup key, the result sealed) and its sealed item id.
fn result_from_row(row: &postgres::Row) -> Result<(ResultRecord, Option<String>)> {
    let record = ResultRecord {
        job: name_from_column(row.get(0))?,
        item: row.get(1),
        run_id: row.get(2),
        attempt: count(row.get(3)),
        worker: row.get(4),
        result: row.get(5),
        recorded_at: Timestamp(row.get(6)),
    };
    Ok((record, row.get(7)))
}

impl PostgresStore {
    /// Items with their payloads and errors opened.
    fn open_items(&self, items: Vec<RunItem>) -> Result<Vec<RunItem>> {
        if !self.sealer.is_on() {
            return Ok(items);
        }
        items
            .into_iter()
            .map(|mut item| {
                let stored = std::mem::take(&mut item.payload);
                item.payload = self.sealer.open(Record::RunItem { run: &item.run_id, item: &item.item }, stored)?;
                let record = Record::ItemError { run: &item.run_id, item: &item.item };
                item.last_error = self.sealer.open_optional_text(record, item.last_error.take())?;
                Ok(item)
            })
            .collect()
    }

    /// A run with its error and report opened.
    fn open_run(&self, mut run: RunRecord) -> Result<RunRecord> {
        run.error = self.sealer.open_optional_text(Record::RunError(&run.id), run.error.take())?;
        run.report = self.sealer.open_optional_text(Record::RunReport(&run.id), run.report.take())?;
        Ok(run)
    }

    fn open_run_rows(&self, rows: &[postgres::Row]) -> Result<Vec<RunRecord>> {
        rows.iter().map(|row| self.open_run(run_from_row(row)?)).collect()
    }

    /// A result with its item id and the result itself opened.
    fn open_result(&self, (mut record, sealed): (ResultRecord, Option<String>)) -> Result<ResultRecord> {
        record.item = self.sealer.open_result_item_id(record.job.as_str(), std::mem::take(&mut record.item), sealed)?;
        let stored = std::mem::take(&mut record.result);
        record.result = self.sealer.open(Record::Result { job: record.job.as_str(), item: &record.item }, stored)?;
        Ok(record)
    }

    /// Create `run` within `transaction` (see [`RunStore::create_run`]).
    pub(crate) fn create_run_within(
        &self,
        transaction: &mut Transaction<'_>,
        run: NewRun,
        now: Timestamp,
    ) -> Result<RunRecord> {
        check_budget(&run)?;
        let inserted = transaction
            .execute(
                "INSERT INTO runs (id, job, deployment_version, trigger_source, status, created_at, deadline, \
             budget, coordinator_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0) ON CONFLICT DO NOTHING",
                &[
                    &run.id,
                    &run.job.as_str(),
                    &run.deployment_version.map(to_sql_integer),
                    &run.trigger,
                    &RunStatus::Requested.as_str(),
                    &now.as_millis(),
                    &run.deadline.as_millis(),
                    &run.budget,
                ],
            )
            .with_context(|| format!("insert run `{}`", run.id))?;
        if inserted == 0 {
            return Err(StateError::AlreadyExists { kind: "run", name: run.id.clone() });
        }
        self.open_run(require_run(transaction, &run.id, false)?.1)
    }

    /// Complete, then lease the next items to the same worker.
    #[allow(clippy::too_many_arguments)] // the trait method's arguments, plus the transaction and clock
    fn complete_and_lease(
        &self,
        transaction: &mut Transaction<'_>,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
        lease_max: usize,
        now: Timestamp,
    ) -> Result<(bool, Vec<RunItem>)> {
        let accepted = complete_item(transaction, run, item, worker, attempt, completion, now, &self.sealer)?;
        let items = if lease_max > 0 {
            self.open_items(lease_items(transaction, run, worker, lease_max, now, &self.sealer)?)?
        } else {
            Vec::new()
        };
        Ok((accepted, items))
    }
}

impl RunStore for PostgresStore {
    fn create_run(&self, run: NewRun) -> Result<RunRecord> {
        let now = self.now();
        self.transact(&format!("create run `{}`", run.id), |transaction| self.create_run_within(transaction, run, now))
    }

    fn run(&self, id: &str) -> Result<RunRecord> {
        self.transact(&format!("look up run `{id}`"), |transaction| {
            self.open_run(require_run(transaction, id, false)?.1)
        })
    }

    fn runs(&self, job: Option<&Name>, limit: usize) -> Result<Vec<RunRecord>> {
        self.transact("list runs", |transaction| {
            let rows = match job {
                Some(job) => transaction.query(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 ORDER BY run_seq DESC LIMIT $2"),
                    &[&job.as_str(), &limit_to_sql(limit)],
                ),
                None => transaction.query(
                    &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY run_seq DESC LIMIT $1"),
                    &[&limit_to_sql(limit)],
                ),
            }
            .context("list runs")?;
            self.open_run_rows(&rows)
        })
    }

    fn claim_run(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let now = self.now();
        self.transact(&format!("claim run `{id}`"), |transaction| {
            let (run_seq, run) = require_run(transaction, id, true)?;
            if run.status.is_finished() {
                return Ok(false);
            }
            let held_by_someone_else = run.lease_owner.as_deref().is_some_and(|holder| holder != owner)
                && run.lease_until.is_some_and(|until| until > now);
            if held_by_someone_else {
                return Ok(false);
            }
            let new_owner = run.lease_owner.as_deref() != Some(owner);
            transaction
                .execute(
                    "UPDATE runs SET lease_owner = $2, lease_until = $3, started_at = COALESCE(started_at, $4), \
                     status = CASE status WHEN 'requested' THEN 'running' ELSE status END, \
                     coordinator_attempts = coordinator_attempts + $5 WHERE run_seq = $1",
                    &[&run_seq, &owner, &now.saturating_add(ttl).as_millis(), &now.as_millis(), &i64::from(new_owner)],
                )
                .with_context(|| format!("claim run `{id}`"))?;
            Ok(true)
        })
    }

    fn renew_run_lease(&self, id: &str, owner: &str, ttl: Duration) -> Result<()> {
        let now = self.now();
        self.transact(&format!("renew the lease of run `{id}`"), |transaction| {
            let (run_seq, run) = require_run(transaction, id, true)?;
            check_holds_lease(&run, owner, now)?;
            transaction
                .execute(
                    "UPDATE runs SET lease_until = $2 WHERE run_seq = $1",
                    &[&run_seq, &now.saturating_add(ttl).as_millis()],
                )
                .with_context(|| format!("renew the lease of run `{id}`"))?;
            Ok(())
        })
    }

    fn runs_needing_coordinator(&self, grace: Duration) -> Result<Vec<RunRecord>> {
        let now = self.now();
        let created_before = now.as_millis().saturating_sub(millis(grace));
        self.transact("find runs without a live coordinator", |transaction| {
            let rows = transaction
                .query(
                    &format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE finished_at IS NULL \
                         AND ((lease_owner IS NOT NULL AND lease_until <= $1) \
                         OR (lease_owner IS NULL AND created_at < $2)) ORDER BY created_at, run_seq"
                    ),
                    &[&now.as_millis(), &created_before],
                )
                .context("find runs without a live coordinator")?;
            self.open_run_rows(&rows)
        })
    }

    fn finish_run(
        &self,
        id: &str,
        owner: &str,
        status: RunStatus,
        error: Option<&str>,
        report: Option<&str>,
    ) -> Result<()> {
        if !status.is_finished() {
            return Err(StateError::Conflict(format!(
                "cannot finish run `{id}` as `{status}`: that status is not a finished one (use set_run_status)"
            )));
        }
        let now = self.now();
        let error = self.sealer.seal_optional_text(Record::RunError(id), error);
        let report = self.sealer.seal_optional_text(Record::RunReport(id), report);
        self.transact(&format!("finish run `{id}`"), |transaction| {
            let (run_seq, run) = require_run(transaction, id, true)?;
            check_holds_lease(&run, owner, now)?;
            transaction
                .execute(
                    "UPDATE runs SET status = $2, finished_at = $3, error = $4, report = $5, lease_owner = NULL, \
                     lease_until = NULL WHERE run_seq = $1",
                    &[&run_seq, &status.as_str(), &now.as_millis(), &error, &report],
                )
                .with_context(|| format!("finish run `{id}`"))?;
            Ok(())
        })
    }

    fn set_run_status(&self, id: &str, owner: &str, status: RunStatus) -> Result<()> {
        if status.is_finished() {
            return Err(StateError::Conflict(format!(
                "cannot set run `{id}` to `{status}` with set_run_status: a finished status needs finish_run"
            )));
        }
        let now = self.now();
        self.transact(&format!("set the status of run `{id}`"), |transaction| {
            let (run_seq, run) = require_run(transaction, id, true)?;
            check_holds_lease(&run, owner, now)?;
            transaction
                .execute("UPDATE runs SET status = $2 WHERE run_seq = $1", &[&run_seq, &status.as_str()])
                .with_context(|| format!("set the status of run `{id}`"))?;
            Ok(())
        })
    }

    fn add_run_items(&self, run: &str, items: &[NewRunItem]) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("add items to run `{run}`"), |transaction| {
            let key = require_unfinished_run_key(transaction, run, "add items to it")?;
            let mut added = 0;
            for chunk in items.chunks(ITEMS_PER_INSERT) {
                let mut ids = Vec::with_capacity(chunk.len());
                let mut sealed_ids = Vec::with_capacity(chunk.len());
                let mut payloads = Vec::with_capacity(chunk.len());
                for item in chunk {
                    payloads
                        .push(self.sealer.seal(Record::RunItem { run, item: &item.item }, &item.payload).into_owned());
                    let id = self.sealer.seal_run_item_id(run, &item.item);
                    ids.push(id.key);
                    sealed_ids.push(id.sealed);
                }
                added += insert_pending_items(transaction, key.run_seq, &ids, &sealed_ids, &payloads, now)?;
            }
            Ok(added)
        })
    }

    fn move_queue_messages_into_run(&self, run: &str, queue: &Name, max: usize) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("move messages of queue `{queue}` into run `{run}`"), |transaction| {
            let key =
                require_unfinished_run_key(transaction, run, &format!("move messages of queue `{queue}` into it"))?;
            let stored_queue = require_queue(transaction, queue)?;
            let messages = visible_messages(transaction, stored_queue.queue_id, now, max)?;
            for message in &messages {
                let item = message.message_id.to_string();
                // The body moves from the message's context to the item's.
                let payload = self.sealer.reseal(
                    Record::MessageBody(message.message_id),
                    Record::RunItem { run, item: &item },
                    message.body.clone(),
                )?;
                let stored_id = self.sealer.seal_run_item_id(run, &item);
                if let Some(item_seq) = insert_message_item(transaction, key.run_seq, &stored_id, &payload, now)? {
                    // What the message was, kept while its item is in the run, so it can go back.
                    transaction
                        .execute(
                            "INSERT INTO run_item_messages (item_seq, queue_id, message_id, sent_at, receive_count, \
                             attributes) SELECT $1::BIGINT, queue_id, message_id, sent_at, receive_count, attributes \
                             FROM messages WHERE message_id = $2",
                            &[&item_seq, &message.message_id],
                        )
                        .with_context(|| format!("remember moved message {} of queue `{queue}`", message.message_id))?;
                }
                transaction
                    .execute("DELETE FROM messages WHERE message_id = $1", &[&message.message_id])
                    .with_context(|| format!("delete moved message {}", message.message_id))?;
            }
            Ok(messages.len() as u64)
        })
    }

    fn run_item_message_attributes(
        &self,
        run: &str,
        items: &[String],
    ) -> Result<BTreeMap<String, Vec<(String, String)>>> {
        let keys: Vec<String> = items.iter().map(|item| self.sealer.lookup_key(item).into_owned()).collect();
        let stored = self.transact(&format!("read the attributes of messages of run `{run}`"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let rows = transaction
                .query(
                    "SELECT items.item, links.message_id, links.attributes FROM run_items AS items \
                     JOIN run_item_messages AS links ON links.item_seq = items.item_seq \
                     WHERE items.run_seq = $1 AND items.item = ANY($2) AND links.attributes IS NOT NULL",
                    &[&key.run_seq, &keys],
                )
                .with_context(|| format!("read the attributes of the messages of items of run `{run}`"))?;
            Ok(rows
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, Vec<u8>>(2)))
                .collect::<Vec<_>>())
        })?;
        let mut found = BTreeMap::new();
        for (stored_key, message_id, attributes) in stored {
            // The asked id whose lookup key this row holds.
            let Some(index) = keys.iter().position(|key| *key == stored_key) else { continue };
            let json = self.sealer.open(Record::MessageAttributes(message_id), attributes)?;
            let opened: Vec<(String, String)> = serde_json::from_slice(&json).map_err(|error| {
                StateError::Backend(format!("the state store holds unreadable message attributes: {error}"))
            })?;
            found.insert(items[index].clone(), opened);
        }
        Ok(found)
    }

    fn return_unfinished_items_to_queues(&self, run: &str) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("return the unfinished items of run `{run}` to their queues"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let returning = transaction
                .query(
                    "SELECT items.item_seq, links.message_id, items.payload, queues.name FROM run_items AS items \
                     JOIN run_item_messages AS links ON links.item_seq = items.item_seq \
                     LEFT JOIN queues ON queues.queue_id = links.queue_id \
                     WHERE items.run_seq = $1 AND items.status IN ('pending', 'leased') \
                     ORDER BY links.message_id FOR UPDATE OF items",
                    &[&key.run_seq],
                )
                .with_context(|| format!("find the unfinished items of run `{run}` that came from queue messages"))?;
            for row in &returning {
                let item_seq: i64 = row.get(0);
                let message_id: i64 = row.get(1);
                let item_id = message_id.to_string();
                // The body moves from the item's context back to the message's.
                let body = self.sealer.reseal(
                    Record::RunItem { run, item: &item_id },
                    Record::MessageBody(message_id),
                    row.get(2),
                )?;
                let what = || format!("return item `{item_id}` of run `{run}` to its queue");
                transaction
                    .execute(
                        "UPDATE run_item_attempts SET ended_at = $2, outcome = 'released' WHERE (item_seq, attempt) IN \
                         (SELECT item_seq, attempts FROM run_items WHERE item_seq = $1 AND status = 'leased')",
                        &[&item_seq, &now.as_millis()],
                    )
                    .with_context(what)?;
                // The message as it was: id, queue, sent time, receive count and
                // attributes (sealed bound to the id, which is kept), visible at once.
                transaction
                    .execute(
                        "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, \
                         attributes) SELECT message_id, queue_id, $2::BIGINT, receive_count, sent_at, $3::BYTEA, \
                         attributes FROM run_item_messages WHERE item_seq = $1",
                        &[&item_seq, &now.as_millis(), &body],
                    )
                    .with_context(what)?;
                transaction
                    .execute("DELETE FROM run_item_messages WHERE item_seq = $1", &[&item_seq])
                    .with_context(what)?;
                transaction
                    .execute(
                        "UPDATE run_items SET status = 'returned', worker = NULL, updated_at = $2 WHERE item_seq = $1",
                        &[&item_seq, &now.as_millis()],
                    )
                    .with_context(what)?;
            }
            // Visible at once in their queues: wake those queues' receivers.
            crate::notify::notify_each(transaction, returning.iter().filter_map(|row| row.get::<_, Option<&str>>(3)))?;
            Ok(returning.len() as u64)
        })
    }

    fn lease_run_items(&self, run: &str, worker: &str, max: usize) -> Result<Vec<RunItem>> {
        let now = self.now();
        self.transact(&format!("lease items of run `{run}`"), |transaction| {
            // Opened before the commit: a damaged item fails the lease (rolled back).
            self.open_items(lease_items(transaction, run, worker, max, now, &self.sealer)?)
        })
    }

    fn complete_run_item(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
    ) -> Result<bool> {
        let now = self.now();
        self.transact(&format!("complete item `{item}` of run `{run}`"), |transaction| {
            complete_item(transaction, run, item, worker, attempt, completion, now, &self.sealer)
        })
    }

    fn complete_and_lease_run_items(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
        lease_max: usize,
    ) -> Result<(bool, Vec<RunItem>)> {
        let now = self.now();
        self.transact(&format!("complete item `{item}` of run `{run}` and lease the next"), |transaction| {
            self.complete_and_lease(transaction, run, item, worker, attempt, completion, lease_max, now)
        })
    }

    fn complete_run_items_together(
        &self,
        run: &str,
        completions: Vec<GroupedCompletion>,
    ) -> Result<Vec<Result<GroupedCompletionOutcome>>> {
        let now = self.now();
        let count = completions.len();
        self.transact(&format!("complete {count} item(s) of run `{run}` together"), |transaction| {
            let mut outcomes = Vec::with_capacity(count);
            for grouped in completions {
                // Each completion in a savepoint of its own: one refused alone is undone alone.
                let mut savepoint = transaction.transaction().context("start a grouped completion")?;
                let item = grouped.item.clone();
                let outcome = self
                    .complete_and_lease(
                        &mut savepoint,
                        run,
                        &grouped.item,
                        &grouped.worker,
                        grouped.attempt,
                        grouped.completion,
                        grouped.lease_next,
                        now,
                    )
                    .map(|(accepted, leased)| GroupedCompletionOutcome { accepted, leased });
                match outcome {
                    Ok(outcome) => {
                        savepoint
                            .commit()
                            .with_context(|| format!("record the completion of item `{item}` of run `{run}`"))?;
                        outcomes.push(Ok(outcome));
                    }
                    Err(error @ (StateError::NotFound { .. } | StateError::Damaged { .. })) => {
                        savepoint
                            .rollback()
                            .with_context(|| format!("undo the refused completion of item `{item}` of run `{run}`"))?;
                        outcomes.push(Err(error));
                    }
                    // Anything else fails the whole group: nothing is recorded.
                    Err(error) => return Err(error),
                }
            }
            Ok(outcomes)
        })
    }

    fn release_worker_items(&self, run: &str, worker: &str) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("release the items of worker `{worker}` of run `{run}`"), |transaction| {
            release_leased_items(transaction, run, Some(worker), now)
        })
    }

    fn release_all_leased_items(&self, run: &str) -> Result<u64> {
        let now = self.now();
        self.transact(&format!("release the leased items of run `{run}`"), |transaction| {
            release_leased_items(transaction, run, None, now)
        })
    }

    fn run_item_counts(&self, run: &str) -> Result<RunItemCounts> {
        self.transact(&format!("count the items of run `{run}`"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let row = transaction
                .query_one(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'pending'), \
                     COUNT(*) FILTER (WHERE status = 'leased'), COUNT(*) FILTER (WHERE status = 'done'), \
                     COUNT(*) FILTER (WHERE status = 'dead_lettered'), COUNT(*) FILTER (WHERE status = 'returned'), \
                     COALESCE(SUM(attempts), 0)::BIGINT FROM run_items WHERE run_seq = $1",
                    &[&key.run_seq],
                )
                .with_context(|| format!("count the items of run `{run}`"))?;
            Ok(RunItemCounts {
                total: from_sql_integer(row.get(0)),
                pending: from_sql_integer(row.get(1)),
                leased: from_sql_integer(row.get(2)),
                done: from_sql_integer(row.get(3)),
                dead_lettered: from_sql_integer(row.get(4)),
                returned: from_sql_integer(row.get(5)),
                attempts: from_sql_integer(row.get(6)),
            })
        })
    }

    fn completed_item_counts_by_job(&self) -> Result<BTreeMap<Name, CompletedItemCounts>> {
        let what = "count the completed items of every job";
        self.transact(what, |transaction| {
            let rows = transaction
                .query(
                    "SELECT runs.job, COUNT(*) FILTER (WHERE run_items.status = 'done'), \
                     COUNT(*) FILTER (WHERE run_items.status = 'dead_lettered') FROM run_items \
                     JOIN runs ON runs.run_seq = run_items.run_seq \
                     WHERE run_items.status IN ('done', 'dead_lettered') GROUP BY runs.job",
                    &[],
                )
                .with_context(|| what.to_owned())?;
            rows.iter()
                .map(|row| {
                    let counts = CompletedItemCounts {
                        done: from_sql_integer(row.get(1)),
                        dead_lettered: from_sql_integer(row.get(2)),
                    };
                    Ok((name_from_column(row.get(0))?, counts))
                })
                .collect()
        })
    }

    fn run_items(
        &self,
        run: &str,
        status: Option<ItemStatus>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunItem>> {
        self.transact(&format!("list the items of run `{run}`"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let after_item = after_item.map(|item| self.sealer.lookup_key(item).into_owned());
            let rows = transaction
                .query(
                    &format!(
                        "SELECT {ITEM_COLUMNS} FROM run_items WHERE run_seq = $1 AND ($2::TEXT IS NULL OR status = $2) \
                         AND ($3::TEXT IS NULL OR item > $3) ORDER BY item LIMIT $4"
                    ),
                    &[&key.run_seq, &status.map(ItemStatus::as_str), &after_item, &limit_to_sql(limit)],
                )
                .with_context(|| format!("list the items of run `{run}`"))?;
            let items = rows
                .iter()
                .map(|row| {
                    let (mut item, sealed) = item_from_row(run, row)?;
                    item.item = self.sealer.open_run_item_id(run, std::mem::take(&mut item.item), sealed)?;
                    Ok(item)
                })
                .collect::<Result<Vec<_>>>()?;
            self.open_items(items)
        })
    }

    fn results(
        &self,
        job: &Name,
        run: Option<&str>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResultRecord>> {
        self.transact(&format!("list the results of job `{job}`"), |transaction| {
            let after_item = after_item.map(|item| self.sealer.lookup_key(item).into_owned());
            let rows = transaction
                .query(
                    &format!(
                        "SELECT {RESULT_COLUMNS} FROM results WHERE job = $1 AND ($2::TEXT IS NULL OR run_id = $2) \
                         AND ($3::TEXT IS NULL OR item > $3) ORDER BY item LIMIT $4"
                    ),
                    &[&job.as_str(), &run, &after_item, &limit_to_sql(limit)],
                )
                .with_context(|| format!("list the results of job `{job}`"))?;
            rows.iter().map(|row| self.open_result(result_from_row(row)?)).collect()
        })
    }

    fn result(&self, job: &Name, item: &str) -> Result<ResultRecord> {
        self.transact(&format!("look up the result of item `{item}` of job `{job}`"), |transaction| {
            let row = transaction
                .query_opt(
                    &format!("SELECT {RESULT_COLUMNS} FROM results WHERE job = $1 AND item = $2"),
                    &[&job.as_str(), &self.sealer.lookup_key(item).as_ref()],
                )
                .with_context(|| format!("look up the result of item `{item}` of job `{job}`"))?
                .ok_or_else(|| StateError::not_found("result", format!("{job}/{item}")))?;
            self.open_result(result_from_row(&row)?)
        })
    }

    fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()> {
        self.transact(&format!("record worker `{}` of run `{}`", worker.worker, worker.run_id), |transaction| {
            let key = require_run_key(transaction, &worker.run_id)?;
            transaction
                .execute(
                    "INSERT INTO run_workers (run_seq, worker, resource, started_at, stopped_at, end_reason, \
                     items_done, items_failed, busy_ms, log_object, log_sha256) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (run_seq, worker) DO UPDATE SET resource = excluded.resource, \
                     started_at = excluded.started_at, stopped_at = excluded.stopped_at, \
                     end_reason = excluded.end_reason, items_done = excluded.items_done, \
                     items_failed = excluded.items_failed, busy_ms = excluded.busy_ms, \
                     log_object = excluded.log_object, log_sha256 = excluded.log_sha256",
                    &[
                        &key.run_seq,
                        &worker.worker,
                        &worker.resource,
                        &worker.started_at.as_millis(),
                        &worker.stopped_at.map(Timestamp::as_millis),
                        &worker.end,
                        &to_sql_integer(worker.items_done),
                        &to_sql_integer(worker.items_failed),
                        &millis(worker.busy),
                        &worker.log_object,
                        &worker.log_sha256,
                    ],
                )
                .with_context(|| format!("record worker `{}` of run `{}`", worker.worker, worker.run_id))?;
            Ok(())
        })
    }

    fn run_workers(&self, run: &str) -> Result<Vec<WorkerRecord>> {
        self.transact(&format!("list the workers of run `{run}`"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let rows = transaction
                .query(
                    "SELECT worker, resource, started_at, stopped_at, end_reason, items_done, items_failed, busy_ms, \
                     log_object, log_sha256 FROM run_workers WHERE run_seq = $1 ORDER BY started_at, worker",
                    &[&key.run_seq],
                )
                .with_context(|| format!("list the workers of run `{run}`"))?;
            Ok(rows
                .iter()
                .map(|row| WorkerRecord {
                    run_id: run.to_owned(),
                    worker: row.get(0),
                    resource: row.get(1),
                    started_at: Timestamp(row.get(2)),
                    stopped_at: row.get::<_, Option<i64>>(3).map(Timestamp),
                    end: row.get(4),
                    items_done: from_sql_integer(row.get(5)),
                    items_failed: from_sql_integer(row.get(6)),
                    busy: Duration::from_millis(from_sql_integer(row.get(7))),
                    log_object: row.get(8),
                    log_sha256: row.get(9),
                })
                .collect())
        })
    }

    fn run_item_attempts(&self, run: &str, limit: usize) -> Result<Vec<ItemAttempt>> {
        self.transact(&format!("list the attempts of run `{run}`"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let rows = transaction
                .query(
                    "SELECT items.item, latest.attempt, latest.worker, latest.started_at, latest.ended_at, \
                     latest.outcome, items.item_sealed \
                     FROM (SELECT * FROM run_item_attempts WHERE run_seq = $1 \
                           ORDER BY started_at DESC, item_seq DESC, attempt DESC LIMIT $2) AS latest \
                     JOIN run_items AS items ON items.item_seq = latest.item_seq \
                     ORDER BY latest.started_at, latest.item_seq, latest.attempt",
                    &[&key.run_seq, &limit_to_sql(limit)],
                )
                .with_context(|| format!("list the attempts of run `{run}`"))?;
            rows.iter()
                .map(|row| {
                    let outcome: &str = row.get(5);
                    Ok(ItemAttempt {
                        item: self.sealer.open_run_item_id(run, row.get(0), row.get(6))?,
                        attempt: count(row.get(1)),
                        worker: row.get(2),
                        started_at: Timestamp(row.get(3)),
                        ended_at: row.get::<_, Option<i64>>(4).map(Timestamp),
                        outcome: AttemptOutcome::parse(outcome)
                            .ok_or_else(|| StateError::Backend(format!("unknown attempt outcome `{outcome}`")))?,
                    })
                })
                .collect()
        })
    }

    fn run_attempt_counts_by_worker(&self, run: &str) -> Result<BTreeMap<String, WorkerAttemptCounts>> {
        self.transact(&format!("count the attempts of run `{run}` by worker"), |transaction| {
            let key = require_run_key(transaction, run)?;
            let rows = transaction
                .query(
                    "SELECT worker, COUNT(*) FILTER (WHERE outcome = 'done'), \
                     COUNT(*) FILTER (WHERE outcome IN ('failed', 'dead_lettered')) \
                     FROM run_item_attempts WHERE run_seq = $1 AND outcome IN ('done', 'failed', 'dead_lettered') \
                     GROUP BY worker",
                    &[&key.run_seq],
                )
                .with_context(|| format!("count the attempts of run `{run}` by worker"))?;
            Ok(rows
                .iter()
                .map(|row| {
                    let counts = WorkerAttemptCounts {
                        done: from_sql_integer(row.get(1)),
                        failed: from_sql_integer(row.get(2)),
                    };
                    (row.get::<_, String>(0), counts)
                })
                .collect())
        })
    }

    fn cancel_run(&self, id: &str, reason: &str) -> Result<RunRecord> {
        let now = self.now();
        let reason = self.sealer.seal_text(Record::RunError(id), reason);
        self.transact(&format!("cancel run `{id}`"), |transaction| {
            let (run_seq, run) = require_run(transaction, id, true)?;
            if run.status.is_finished() {
                return Err(StateError::Conflict(format!(
                    "run `{id}` has already finished ({}); only a run that is still going can be cancelled",
                    run.status
                )));
            }
            transaction
                .execute(
                    "UPDATE runs SET status = $2, finished_at = $3, error = $4, lease_owner = NULL, lease_until = NULL \
                     WHERE run_seq = $1",
                    &[&run_seq, &RunStatus::Cancelled.as_str(), &now.as_millis(), &reason],
                )
                .with_context(|| format!("cancel run `{id}`"))?;
            self.open_run(require_run(transaction, id, false)?.1)
        })
    }
}
