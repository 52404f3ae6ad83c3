//! The ledger of batch-job runs in SQL: `runs` (with the coordinator's lease),
//! `run_items` (each item's status, attempts and holder), `results` (one per
//! job and item), `run_workers` (bookkeeping for the report),
//! `run_item_attempts` (one row per lease of an item, for the timeline) and
//! `run_item_messages` (the queue message each item of a queue-sourced run
//! was, until it is done or goes back to its queue).
//!
//! Every function runs inside the transaction the caller opened, so each
//! trait method is one commit. The rules (what a status means, when to retry)
//! come from [`mayfly_core::run`]; this file only stores what they decide.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{Name, Timestamp};
use mayfly_state::{
    AttemptOutcome, CompletedItemCounts, ItemAttempt, ItemCompletion, NewRun, NewRunItem, Result, ResultRecord,
    RunItem, RunItemCounts, RunRecord, StateError, WorkerRecord,
};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{
    duration_from_millis, from_sql_integer, limit_to_sql, millis, require_queue, to_sql_integer, visible_messages_after,
};
use mayfly_state::sealing::{Record, Sealer, StoredItemId};

// --- conversions --------------------------------------------------------------------

fn conversion_error(column: usize, error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(error))
}

fn name_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Name> {
    Name::new(row.get::<_, String>(column)?).map_err(|error| conversion_error(column, error))
}

fn run_status_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<RunStatus> {
    row.get::<_, String>(column)?.parse().map_err(|error| conversion_error(column, error))
}

fn item_status_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<ItemStatus> {
    row.get::<_, String>(column)?.parse().map_err(|error| conversion_error(column, error))
}

fn count_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<u32> {
    Ok(u32::try_from(row.get::<_, i64>(column)?).unwrap_or(u32::MAX))
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

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0)?,
        job: name_at(row, 1)?,
        deployment_version: row.get::<_, Option<i64>>(2)?.map(from_sql_integer),
        trigger: row.get(3)?,
        status: run_status_at(row, 4)?,
        created_at: Timestamp(row.get(5)?),
        started_at: row.get::<_, Option<i64>>(6)?.map(Timestamp),
        finished_at: row.get::<_, Option<i64>>(7)?.map(Timestamp),
        deadline: Timestamp(row.get(8)?),
        budget: row.get(9)?,
        lease_owner: row.get(10)?,
        lease_until: row.get::<_, Option<i64>>(11)?.map(Timestamp),
        coordinator_attempts: count_at(row, 12)?,
        error: row.get(13)?,
        report: row.get(14)?,
    })
}

fn find_run(transaction: &Transaction<'_>, id: &str) -> Result<Option<(i64, RunRecord)>> {
    // `run_seq` last, so `run_from_row` reads the record's columns from 0.
    let sql = format!("SELECT {RUN_COLUMNS}, run_seq FROM runs WHERE id = ?1");
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row([id], |row| Ok((row.get(15)?, run_from_row(row)?))).optional())
        .with_context(|| format!("look up run `{id}`"))
}

fn require_run(transaction: &Transaction<'_>, id: &str) -> Result<(i64, RunRecord)> {
    find_run(transaction, id)?.ok_or_else(|| StateError::not_found("run", id))
}

/// What the item methods need to know about a run.
struct RunKey {
    run_seq: i64,
    job: Name,
    status: RunStatus,
}

fn require_run_key(transaction: &Transaction<'_>, id: &str) -> Result<RunKey> {
    transaction
        .prepare_cached("SELECT run_seq, job, status FROM runs WHERE id = ?1")
        .and_then(|mut statement| {
            statement
                .query_row([id], |row| {
                    Ok(RunKey { run_seq: row.get(0)?, job: name_at(row, 1)?, status: run_status_at(row, 2)? })
                })
                .optional()
        })
        .with_context(|| format!("look up run `{id}`"))?
        .ok_or_else(|| StateError::not_found("run", id))
}

fn require_unfinished_run_key(transaction: &Transaction<'_>, id: &str, doing: &str) -> Result<RunKey> {
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

pub fn create_run(transaction: &Transaction<'_>, run: NewRun, now: Timestamp) -> Result<RunRecord> {
    check_budget(&run)?;
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO runs (id, job, deployment_version, trigger_source, status, created_at, deadline, budget, \
             coordinator_attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0) ON CONFLICT DO NOTHING",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                run.id,
                run.job.as_str(),
                run.deployment_version.map(to_sql_integer),
                run.trigger,
                RunStatus::Requested.as_str(),
                now.as_millis(),
                run.deadline.as_millis(),
                run.budget,
            ])
        })
        .with_context(|| format!("insert run `{}`", run.id))?;
    if inserted == 0 {
        return Err(StateError::AlreadyExists { kind: "run", name: run.id });
    }
    Ok(require_run(transaction, &run.id)?.1)
}

pub fn run(transaction: &Transaction<'_>, id: &str) -> Result<RunRecord> {
    Ok(require_run(transaction, id)?.1)
}

pub fn runs(transaction: &Transaction<'_>, job: Option<&Name>, limit: usize) -> Result<Vec<RunRecord>> {
    // Two statements rather than `?1 IS NULL OR job = ?1`, so each walks its own index backwards.
    let rows = match job {
        Some(job) => {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE job = ?1 ORDER BY run_seq DESC LIMIT ?2");
            transaction.prepare_cached(&sql).and_then(|mut statement| {
                statement
                    .query_map(params![job.as_str(), limit_to_sql(limit)], run_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
        }
        None => {
            let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY run_seq DESC LIMIT ?1");
            transaction.prepare_cached(&sql).and_then(|mut statement| {
                statement.query_map(params![limit_to_sql(limit)], run_from_row)?.collect::<rusqlite::Result<Vec<_>>>()
            })
        }
    };
    rows.context("list runs")
}

pub fn claim_run(transaction: &Transaction<'_>, id: &str, owner: &str, ttl: Duration, now: Timestamp) -> Result<bool> {
    let (run_seq, run) = require_run(transaction, id)?;
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
        .prepare_cached(
            "UPDATE runs SET lease_owner = ?2, lease_until = ?3, started_at = COALESCE(started_at, ?4), \
             status = CASE status WHEN 'requested' THEN 'running' ELSE status END, \
             coordinator_attempts = coordinator_attempts + ?5 WHERE run_seq = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                run_seq,
                owner,
                now.saturating_add(ttl).as_millis(),
                now.as_millis(),
                i64::from(new_owner)
            ])
        })
        .with_context(|| format!("claim run `{id}`"))?;
    Ok(true)
}

pub fn renew_run_lease(
    transaction: &Transaction<'_>,
    id: &str,
    owner: &str,
    ttl: Duration,
    now: Timestamp,
) -> Result<()> {
    let (run_seq, run) = require_run(transaction, id)?;
    check_holds_lease(&run, owner, now)?;
    transaction
        .prepare_cached("UPDATE runs SET lease_until = ?2 WHERE run_seq = ?1")
        .and_then(|mut statement| statement.execute(params![run_seq, now.saturating_add(ttl).as_millis()]))
        .with_context(|| format!("renew the lease of run `{id}`"))?;
    Ok(())
}

pub fn runs_needing_coordinator(
    transaction: &Transaction<'_>,
    grace: Duration,
    now: Timestamp,
) -> Result<Vec<RunRecord>> {
    let created_before = now.as_millis().saturating_sub(millis(grace));
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE finished_at IS NULL \
         AND ((lease_owner IS NOT NULL AND lease_until <= ?1) OR (lease_owner IS NULL AND created_at < ?2)) \
         ORDER BY created_at, run_seq"
    );
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![now.as_millis(), created_before], run_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("find runs without a live coordinator")
}

pub fn finish_run(
    transaction: &Transaction<'_>,
    id: &str,
    owner: &str,
    status: RunStatus,
    error: Option<&str>,
    report: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    if !status.is_finished() {
        return Err(StateError::Conflict(format!(
            "cannot finish run `{id}` as `{status}`: that status is not a finished one (use set_run_status)"
        )));
    }
    let (run_seq, run) = require_run(transaction, id)?;
    check_holds_lease(&run, owner, now)?;
    transaction
        .prepare_cached(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, report = ?5, lease_owner = NULL, \
             lease_until = NULL WHERE run_seq = ?1",
        )
        .and_then(|mut statement| statement.execute(params![run_seq, status.as_str(), now.as_millis(), error, report]))
        .with_context(|| format!("finish run `{id}`"))?;
    Ok(())
}

/// Cancel an unfinished run whoever holds it (see `RunStore::cancel_run`).
pub fn cancel_run(transaction: &Transaction<'_>, id: &str, reason: &str, now: Timestamp) -> Result<RunRecord> {
    let (run_seq, run) = require_run(transaction, id)?;
    if run.status.is_finished() {
        return Err(StateError::Conflict(format!(
            "run `{id}` has already finished ({}); only a run that is still going can be cancelled",
            run.status
        )));
    }
    transaction
        .prepare_cached(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = ?4, lease_owner = NULL, lease_until = NULL \
             WHERE run_seq = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![run_seq, RunStatus::Cancelled.as_str(), now.as_millis(), reason])
        })
        .with_context(|| format!("cancel run `{id}`"))?;
    Ok(require_run(transaction, id)?.1)
}

pub fn set_run_status(
    transaction: &Transaction<'_>,
    id: &str,
    owner: &str,
    status: RunStatus,
    now: Timestamp,
) -> Result<()> {
    if status.is_finished() {
        return Err(StateError::Conflict(format!(
            "cannot set run `{id}` to `{status}` with set_run_status: a finished status needs finish_run"
        )));
    }
    let (run_seq, run) = require_run(transaction, id)?;
    check_holds_lease(&run, owner, now)?;
    transaction
        .prepare_cached("UPDATE runs SET status = ?2 WHERE run_seq = ?1")
        .and_then(|mut statement| statement.execute(params![run_seq, status.as_str()]))
        .with_context(|| format!("set the status of run `{id}`"))?;
    Ok(())
}

// --- items -------------------------------------------------------------------------------

fn insert_pending_item(
    transaction: &Transaction<'_>,
    run_seq: i64,
    item: &StoredItemId,
    payload: &[u8],
    now: Timestamp,
) -> Result<bool> {
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO run_items (run_seq, item, item_sealed, payload, status, attempts, not_before, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) ON CONFLICT (run_seq, item) DO NOTHING",
        )
        .and_then(|mut statement| statement.execute(params![run_seq, item.key, item.sealed, payload, now.as_millis()]))
        .with_context(|| format!("add item `{}`", item.key))?;
    Ok(inserted > 0)
}

/// Items whose payloads are already sealed (`items`) go in under their stored ids.
pub fn add_run_items(
    transaction: &Transaction<'_>,
    run: &str,
    items: &[NewRunItem],
    now: Timestamp,
    sealer: &Sealer,
) -> Result<u64> {
    let key = require_unfinished_run_key(transaction, run, "add items to it")?;
    let mut added = 0;
    for item in items {
        let id = sealer.seal_run_item_id(run, &item.item);
        added += u64::from(insert_pending_item(transaction, key.run_seq, &id, &item.payload, now)?);
    }
    Ok(added)
}

pub fn move_queue_messages_into_run(
    transaction: &Transaction<'_>,
    run: &str,
    queue: &Name,
    max: usize,
    now: Timestamp,
    sealer: &Sealer,
) -> Result<u64> {
    let key = require_unfinished_run_key(transaction, run, &format!("move messages of queue `{queue}` into it"))?;
    let stored_queue = require_queue(transaction, queue)?;
    let messages = visible_messages_after(transaction, stored_queue.queue_id, now, (i64::MIN, i64::MIN), max)?;
    // What the message was, kept while its item is in the run, so it can go back as the same message.
    let mut remember = transaction
        .prepare_cached(
            "INSERT INTO run_item_messages (item_seq, queue_id, message_id, sent_at, receive_count, attributes) \
             SELECT ?1, queue_id, message_id, sent_at, receive_count, attributes FROM messages WHERE message_id = ?2",
        )
        .context("prepare to remember moved messages")?;
    let mut delete = transaction
        .prepare_cached("DELETE FROM messages WHERE message_id = ?1")
        .context("prepare to delete moved messages")?;
    for message in messages.iter() {
        let item = message.message_id.to_string();
        // The body moves from the message's context to the item's.
        let payload = sealer.reseal(
            Record::MessageBody(message.message_id),
            Record::RunItem { run, item: &item },
            message.body.clone(),
        )?;
        let stored_id = sealer.seal_run_item_id(run, &item);
        if let Some(item_seq) = insert_message_item(transaction, key.run_seq, &stored_id, &payload, now)? {
            remember
                .execute(params![item_seq, message.message_id])
                .with_context(|| format!("remember moved message {} of queue `{queue}`", message.message_id))?;
        }
        delete.execute([message.message_id]).with_context(|| format!("delete moved message {}", message.message_id))?;
    }
    Ok(messages.len() as u64)
}

/// The stored attributes of the messages that `items` of the run came from:
/// (item, message id, attributes as stored), for items that have them.
pub fn run_item_message_attributes(
    transaction: &Transaction<'_>,
    run: &str,
    items: &[String],
    sealer: &Sealer,
) -> Result<Vec<(String, i64, Vec<u8>)>> {
    let key = require_run_key(transaction, run)?;
    let mut statement = transaction
        .prepare_cached(
            "SELECT links.message_id, links.attributes FROM run_items AS items \
             JOIN run_item_messages AS links ON links.item_seq = items.item_seq \
             WHERE items.run_seq = ?1 AND items.item = ?2 AND links.attributes IS NOT NULL",
        )
        .context("prepare to read the attributes of items' messages")?;
    let mut found = Vec::new();
    for item in items {
        // Attributes are JSON text in a store that seals nothing, an envelope otherwise.
        let row: Option<(i64, Option<Vec<u8>>)> = statement
            .query_row(params![key.run_seq, sealer.lookup_key(item).as_ref()], |row| {
                Ok((row.get(0)?, crate::bytes_at(row, 1)?))
            })
            .optional()
            .with_context(|| format!("read the attributes of the message of item `{item}` of run `{run}`"))?;
        if let Some((message_id, Some(attributes))) = row {
            found.push((item.clone(), message_id, attributes));
        }
    }
    Ok(found)
}

/// Add a message's item, pending; an item of that id the run returned to
/// its queue earlier (the message came back into the same run) is pending
/// again, its attempts kept. Returns the item's number, or `None` when the
/// run already has that id as an item it has not returned (as
/// `add_run_items`, the repeat is ignored).
fn insert_message_item(
    transaction: &Transaction<'_>,
    run_seq: i64,
    item: &StoredItemId,
    payload: &[u8],
    now: Timestamp,
) -> Result<Option<i64>> {
    transaction
        .prepare_cached(
            "INSERT INTO run_items (run_seq, item, item_sealed, payload, status, attempts, not_before, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5) ON CONFLICT (run_seq, item) DO UPDATE SET \
             status = 'pending', payload = excluded.payload, worker = NULL, not_before = excluded.not_before, \
             updated_at = excluded.updated_at WHERE status = 'returned' RETURNING item_seq",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![run_seq, item.key, item.sealed, payload, now.as_millis()], |row| row.get(0))
                .optional()
        })
        .with_context(|| format!("add item `{}`", item.key))
}

/// An unfinished item on its way back to its queue.
struct ReturningItem {
    item_seq: i64,
    message_id: i64,
    payload: Vec<u8>,
    /// The name of the queue it goes back to.
    queue: Option<String>,
}

/// Every unfinished item of the run that came from a queue message goes
/// back to its queue as that message (see `RunStore::return_unfinished_items_to_queues`).
/// Returns how many, and the names of the queues they went back to.
pub fn return_unfinished_items_to_queues(
    transaction: &Transaction<'_>,
    run: &str,
    now: Timestamp,
    sealer: &Sealer,
) -> Result<(u64, BTreeSet<String>)> {
    let key = require_run_key(transaction, run)?;
    let returning: Vec<ReturningItem> = transaction
        .prepare_cached(
            "SELECT items.item_seq, links.message_id, items.payload, queues.name FROM run_items AS items \
             JOIN run_item_messages AS links ON links.item_seq = items.item_seq \
             LEFT JOIN queues ON queues.queue_id = links.queue_id \
             WHERE items.run_seq = ?1 AND items.status IN ('pending', 'leased') ORDER BY links.message_id",
        )
        .and_then(|mut statement| {
            statement
                .query_map([key.run_seq], |row| {
                    Ok(ReturningItem {
                        item_seq: row.get(0)?,
                        message_id: row.get(1)?,
                        payload: row.get(2)?,
                        queue: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("find the unfinished items of run `{run}` that came from queue messages"))?;
    let mut end_attempt = transaction
        .prepare_cached(
            "UPDATE run_item_attempts SET ended_at = ?2, outcome = 'released' WHERE (item_seq, attempt) IN \
             (SELECT item_seq, attempts FROM run_items WHERE item_seq = ?1 AND status = 'leased')",
        )
        .context("prepare to end the attempts of returned items")?;
    // The message as it was: id, queue, sent time, receive count and
    // attributes (sealed bound to the id, which is kept), visible at once.
    let mut put_back = transaction
        .prepare_cached(
            "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, attributes) \
             SELECT message_id, queue_id, ?2, receive_count, sent_at, ?3, attributes FROM run_item_messages \
             WHERE item_seq = ?1",
        )
        .context("prepare to put messages back")?;
    let mut forget = transaction
        .prepare_cached("DELETE FROM run_item_messages WHERE item_seq = ?1")
        .context("prepare to forget returned messages")?;
    let mut mark_returned = transaction
        .prepare_cached("UPDATE run_items SET status = 'returned', worker = NULL, updated_at = ?2 WHERE item_seq = ?1")
        .context("prepare to mark items returned")?;
    for item in &returning {
        let item_id = item.message_id.to_string();
        // The body moves from the item's context back to the message's.
        let body = sealer.reseal(
            Record::RunItem { run, item: &item_id },
            Record::MessageBody(item.message_id),
            item.payload.clone(),
        )?;
        let what = || format!("return item `{item_id}` of run `{run}` to its queue");
        end_attempt.execute(params![item.item_seq, now.as_millis()]).with_context(what)?;
        put_back.execute(params![item.item_seq, now.as_millis(), body]).with_context(what)?;
        forget.execute([item.item_seq]).with_context(what)?;
        mark_returned.execute(params![item.item_seq, now.as_millis()]).with_context(what)?;
    }
    let queues = returning.iter().filter_map(|item| item.queue.clone()).collect();
    Ok((returning.len() as u64, queues))
}

/// A pending item about to be leased.
struct LeaseCandidate {
    item_seq: i64,
    /// The lookup key.
    item: String,
    item_sealed: Option<String>,
    payload: Vec<u8>,
    attempts: u32,
    not_before: Timestamp,
    last_error: Option<String>,
}

/// The pending, due items of a run in the order they became available.
const LEASE_CANDIDATES_SQL: &str = "SELECT item_seq, item, payload, attempts, not_before, last_error, item_sealed \
     FROM run_items \
     WHERE run_seq = ?1 AND status = 'pending' AND not_before <= ?2 ORDER BY not_before, item_seq LIMIT ?3";

/// Items come back with their ids opened; payloads and errors are still as stored.
pub fn lease_run_items(
    transaction: &Transaction<'_>,
    run: &str,
    worker: &str,
    max: usize,
    now: Timestamp,
    sealer: &Sealer,
) -> Result<Vec<RunItem>> {
    let key = require_run_key(transaction, run)?;
    // Walks `run_items_to_lease`: no sort, however large the backlog.
    let candidates: Vec<LeaseCandidate> = transaction
        .prepare_cached(LEASE_CANDIDATES_SQL)
        .and_then(|mut statement| {
            statement
                .query_map(params![key.run_seq, now.as_millis(), limit_to_sql(max)], |row| {
                    Ok(LeaseCandidate {
                        item_seq: row.get(0)?,
                        item: row.get(1)?,
                        payload: row.get(2)?,
                        attempts: count_at(row, 3)?,
                        not_before: Timestamp(row.get(4)?),
                        last_error: row.get(5)?,
                        item_sealed: row.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("find pending items of run `{run}`"))?;
    let mut lease = transaction
        .prepare_cached(
            "UPDATE run_items SET status = 'leased', worker = ?2, attempts = attempts + 1, updated_at = ?3 \
             WHERE item_seq = ?1",
        )
        .context("prepare to lease items")?;
    let mut start_attempt = transaction
        .prepare_cached(
            "INSERT INTO run_item_attempts (item_seq, attempt, run_seq, worker, started_at, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
        )
        .context("prepare to record attempts")?;
    let mut leased = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        lease
            .execute(params![candidate.item_seq, worker, now.as_millis()])
            .with_context(|| format!("lease item `{}` of run `{run}`", candidate.item))?;
        start_attempt
            .execute(params![
                candidate.item_seq,
                i64::from(candidate.attempts.saturating_add(1)),
                key.run_seq,
                worker,
                now.as_millis()
            ])
            .with_context(|| format!("record the attempt at item `{}` of run `{run}`", candidate.item))?;
        leased.push(RunItem {
            run_id: run.to_owned(),
            item: sealer.open_run_item_id(run, candidate.item, candidate.item_sealed)?,
            payload: candidate.payload,
            status: ItemStatus::Leased,
            attempts: candidate.attempts.saturating_add(1),
            worker: Some(worker.to_owned()),
            not_before: candidate.not_before,
            last_error: candidate.last_error,
            updated_at: now,
        });
    }
    Ok(leased)
}

#[allow(clippy::too_many_arguments)] // the trait method's arguments, plus the transaction, clock and sealer
pub fn complete_run_item(
    transaction: &Transaction<'_>,
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
    let (item_seq, status, holder, attempts): (i64, ItemStatus, Option<String>, u32) = transaction
        .prepare_cached("SELECT item_seq, status, worker, attempts FROM run_items WHERE run_seq = ?1 AND item = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![key.run_seq, item_key], |row| {
                    Ok((row.get(0)?, item_status_at(row, 1)?, row.get(2)?, count_at(row, 3)?))
                })
                .optional()
        })
        .with_context(|| format!("look up item `{item}` of run `{run}`"))?
        .ok_or_else(|| StateError::not_found("item", format!("{run}/{item}")))?;
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
        .prepare_cached("UPDATE run_item_attempts SET ended_at = ?3, outcome = ?4 WHERE item_seq = ?1 AND attempt = ?2")
        .and_then(|mut statement| {
            statement.execute(params![item_seq, i64::from(attempt), now.as_millis(), outcome.as_str()])
        })
        .with_context(|| format!("end attempt {attempt} at item `{item}` of run `{run}`"))?;
    match completion {
        ItemCompletion::Done { result } => {
            let result_id = sealer.seal_result_item_id(key.job.as_str(), item);
            transaction
                .prepare_cached(
                    "INSERT INTO results (job, item, item_sealed, run_id, attempt, worker, result, recorded_at) \
                     VALUES (?1, ?2, ?8, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (job, item) DO UPDATE SET \
                     run_id = excluded.run_id, attempt = excluded.attempt, worker = excluded.worker, \
                     result = excluded.result, recorded_at = excluded.recorded_at, item_sealed = excluded.item_sealed",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        key.job.as_str(),
                        result_id.key,
                        run,
                        i64::from(attempt),
                        worker,
                        sealer.seal(Record::Result { job: key.job.as_str(), item }, &result),
                        now.as_millis(),
                        result_id.sealed,
                    ])
                })
                .with_context(|| format!("store the result of item `{item}` of run `{run}`"))?;
            transaction
                .prepare_cached("UPDATE run_items SET status = 'done', updated_at = ?2 WHERE item_seq = ?1")
                .and_then(|mut statement| statement.execute(params![item_seq, now.as_millis()]))
                .with_context(|| format!("mark item `{item}` of run `{run}` done"))?;
        }
        ItemCompletion::Failed { error, retry_at: Some(retry_at) } => {
            transaction
                .prepare_cached(
                    "UPDATE run_items SET status = 'pending', worker = NULL, not_before = ?2, last_error = ?3, \
                     updated_at = ?4 WHERE item_seq = ?1",
                )
                .and_then(|mut statement| {
                    let error = sealer.seal_text(Record::ItemError { run, item }, &error);
                    statement.execute(params![item_seq, retry_at.as_millis(), error, now.as_millis()])
                })
                .with_context(|| format!("schedule a retry of item `{item}` of run `{run}`"))?;
        }
        ItemCompletion::Failed { error, retry_at: None } => {
            transaction
                .prepare_cached(
                    "UPDATE run_items SET status = 'dead_lettered', last_error = ?2, updated_at = ?3 \
                     WHERE item_seq = ?1",
                )
                .and_then(|mut statement| {
                    let error = sealer.seal_text(Record::ItemError { run, item }, &error);
                    statement.execute(params![item_seq, error, now.as_millis()])
                })
                .with_context(|| format!("dead-letter item `{item}` of run `{run}`"))?;
        }
    }
    Ok(true)
}

pub fn release_leased_items(
    transaction: &Transaction<'_>,
    run: &str,
    worker: Option<&str>,
    now: Timestamp,
) -> Result<u64> {
    let key = require_run_key(transaction, run)?;
    // `?2 IS NULL` releases every worker's items. `not_before` is kept, so a
    // released item goes back to its place at the front. Their attempts end first.
    transaction
        .prepare_cached(
            "UPDATE run_item_attempts SET ended_at = ?3, outcome = 'released' \
             WHERE (item_seq, attempt) IN (SELECT item_seq, attempts FROM run_items \
             WHERE run_seq = ?1 AND status = 'leased' AND (?2 IS NULL OR worker = ?2))",
        )
        .and_then(|mut statement| statement.execute(params![key.run_seq, worker, now.as_millis()]))
        .with_context(|| format!("end the attempts of the leased items of run `{run}`"))?;
    let released = transaction
        .prepare_cached(
            "UPDATE run_items SET status = 'pending', worker = NULL, updated_at = ?3 \
             WHERE run_seq = ?1 AND status = 'leased' AND (?2 IS NULL OR worker = ?2)",
        )
        .and_then(|mut statement| statement.execute(params![key.run_seq, worker, now.as_millis()]))
        .with_context(|| format!("release the leased items of run `{run}`"))?;
    Ok(released as u64)
}

pub fn run_item_counts(transaction: &Transaction<'_>, run: &str) -> Result<RunItemCounts> {
    let key = require_run_key(transaction, run)?;
    transaction
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'leased'), 0), \
             COALESCE(SUM(status = 'done'), 0), COALESCE(SUM(status = 'dead_lettered'), 0), \
             COALESCE(SUM(status = 'returned'), 0), COALESCE(SUM(attempts), 0) FROM run_items WHERE run_seq = ?1",
        )
        .and_then(|mut statement| {
            statement.query_row([key.run_seq], |row| {
                Ok(RunItemCounts {
                    total: from_sql_integer(row.get(0)?),
                    pending: from_sql_integer(row.get(1)?),
                    leased: from_sql_integer(row.get(2)?),
                    done: from_sql_integer(row.get(3)?),
                    dead_lettered: from_sql_integer(row.get(4)?),
                    returned: from_sql_integer(row.get(5)?),
                    attempts: from_sql_integer(row.get(6)?),
                })
            })
        })
        .with_context(|| format!("count the items of run `{run}`"))
}

/// One pass over the items' status index, joined to their runs' jobs.
pub fn completed_item_counts_by_job(transaction: &Transaction<'_>) -> Result<BTreeMap<Name, CompletedItemCounts>> {
    let what = "count the completed items of every job";
    let rows: Vec<(Name, i64, i64)> = transaction
        .prepare_cached(
            "SELECT runs.job, COALESCE(SUM(run_items.status = 'done'), 0), \
             COALESCE(SUM(run_items.status = 'dead_lettered'), 0) FROM run_items \
             JOIN runs ON runs.run_seq = run_items.run_seq \
             WHERE run_items.status IN ('done', 'dead_lettered') GROUP BY runs.job",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((name_at(row, 0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .with_context(|| what.to_owned())?;
    Ok(rows
        .into_iter()
        .map(|(job, done, dead_lettered)| {
            (job, CompletedItemCounts { done: from_sql_integer(done), dead_lettered: from_sql_integer(dead_lettered) })
        })
        .collect())
}

/// Items come back with their ids opened; payloads and errors are still as stored.
pub fn run_items(
    transaction: &Transaction<'_>,
    run: &str,
    status: Option<ItemStatus>,
    after_item: Option<&str>,
    limit: usize,
    sealer: &Sealer,
) -> Result<Vec<RunItem>> {
    let key = require_run_key(transaction, run)?;
    let after_item = after_item.map(|item| sealer.lookup_key(item));
    // A page starts inside the `(run_seq, item)` index rather than filtering from its start.
    let after = if after_item.is_some() { "AND item > ?3" } else { "AND ?3 IS NULL" };
    let sql = format!(
        "SELECT item, payload, status, attempts, worker, not_before, last_error, updated_at, item_sealed FROM run_items \
         WHERE run_seq = ?1 AND (?2 IS NULL OR status = ?2) {after} ORDER BY item LIMIT ?4"
    );
    let rows: Vec<(RunItem, Option<String>)> = transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![key.run_seq, status.map(ItemStatus::as_str), after_item, limit_to_sql(limit)],
                    |row| {
                        let item = RunItem {
                            run_id: run.to_owned(),
                            item: row.get(0)?,
                            payload: row.get(1)?,
                            status: item_status_at(row, 2)?,
                            attempts: count_at(row, 3)?,
                            worker: row.get(4)?,
                            not_before: Timestamp(row.get(5)?),
                            last_error: row.get(6)?,
                            updated_at: Timestamp(row.get(7)?),
                        };
                        Ok((item, row.get(8)?))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("list the items of run `{run}`"))?;
    rows.into_iter()
        .map(|(mut item, sealed)| {
            item.item = sealer.open_run_item_id(run, std::mem::take(&mut item.item), sealed)?;
            Ok(item)
        })
        .collect()
}

// --- results ---------------------------------------------------------------------------

const RESULT_COLUMNS: &str = "job, item, run_id, attempt, worker, result, recorded_at, item_sealed";

/// A result as stored (its item the lookup key) and its sealed item id.
fn result_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ResultRecord, Option<String>)> {
    let record = ResultRecord {
        job: name_at(row, 0)?,
        item: row.get(1)?,
        run_id: row.get(2)?,
        attempt: count_at(row, 3)?,
        worker: row.get(4)?,
        result: row.get(5)?,
        recorded_at: Timestamp(row.get(6)?),
    };
    Ok((record, row.get(7)?))
}

/// The result with its item id opened; the result itself is still as stored.
fn open_result_id(sealer: &Sealer, (mut record, sealed): (ResultRecord, Option<String>)) -> Result<ResultRecord> {
    record.item = sealer.open_result_item_id(record.job.as_str(), std::mem::take(&mut record.item), sealed)?;
    Ok(record)
}

pub fn results(
    transaction: &Transaction<'_>,
    job: &Name,
    run: Option<&str>,
    after_item: Option<&str>,
    limit: usize,
    sealer: &Sealer,
) -> Result<Vec<ResultRecord>> {
    let after_item = after_item.map(|item| sealer.lookup_key(item));
    // Fixed statements per filter shape, so each walks `results_by_run` or
    // the `(job, item)` index from the page's first item.
    let by_run = if run.is_some() { "AND run_id = ?2" } else { "AND ?2 IS NULL" };
    let after = if after_item.is_some() { "AND item > ?3" } else { "AND ?3 IS NULL" };
    let sql = format!("SELECT {RESULT_COLUMNS} FROM results WHERE job = ?1 {by_run} {after} ORDER BY item LIMIT ?4");
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(params![job.as_str(), run, after_item, limit_to_sql(limit)], result_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("list the results of job `{job}`"))?
        .into_iter()
        .map(|row| open_result_id(sealer, row))
        .collect()
}

pub fn result(transaction: &Transaction<'_>, job: &Name, item: &str, sealer: &Sealer) -> Result<ResultRecord> {
    let sql = format!("SELECT {RESULT_COLUMNS} FROM results WHERE job = ?1 AND item = ?2");
    let row = transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement.query_row(params![job.as_str(), sealer.lookup_key(item)], result_from_row).optional()
        })
        .with_context(|| format!("look up the result of item `{item}` of job `{job}`"))?
        .ok_or_else(|| StateError::not_found("result", format!("{job}/{item}")))?;
    open_result_id(sealer, row)
}

// --- workers ----------------------------------------------------------------------------

pub fn upsert_worker(transaction: &Transaction<'_>, worker: &WorkerRecord) -> Result<()> {
    let key = require_run_key(transaction, &worker.run_id)?;
    transaction
        .prepare_cached(
            "INSERT INTO run_workers (run_seq, worker, resource, started_at, stopped_at, end_reason, items_done, \
             items_failed, busy_ms, log_object, log_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (run_seq, worker) DO UPDATE SET resource = excluded.resource, \
             started_at = excluded.started_at, stopped_at = excluded.stopped_at, end_reason = excluded.end_reason, \
             items_done = excluded.items_done, items_failed = excluded.items_failed, busy_ms = excluded.busy_ms, \
             log_object = excluded.log_object, log_sha256 = excluded.log_sha256",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                key.run_seq,
                worker.worker,
                worker.resource,
                worker.started_at.as_millis(),
                worker.stopped_at.map(Timestamp::as_millis),
                worker.end,
                to_sql_integer(worker.items_done),
                to_sql_integer(worker.items_failed),
                millis(worker.busy),
                worker.log_object,
                worker.log_sha256,
            ])
        })
        .with_context(|| format!("record worker `{}` of run `{}`", worker.worker, worker.run_id))?;
    Ok(())
}

pub fn run_workers(transaction: &Transaction<'_>, run: &str) -> Result<Vec<WorkerRecord>> {
    let key = require_run_key(transaction, run)?;
    transaction
        .prepare_cached(
            "SELECT worker, resource, started_at, stopped_at, end_reason, items_done, items_failed, busy_ms, \
             log_object, log_sha256 FROM run_workers WHERE run_seq = ?1 ORDER BY started_at, worker",
        )
        .and_then(|mut statement| {
            statement
                .query_map([key.run_seq], |row| {
                    Ok(WorkerRecord {
                        run_id: run.to_owned(),
                        worker: row.get(0)?,
                        resource: row.get(1)?,
                        started_at: Timestamp(row.get(2)?),
                        stopped_at: row.get::<_, Option<i64>>(3)?.map(Timestamp),
                        end: row.get(4)?,
                        items_done: from_sql_integer(row.get(5)?),
                        items_failed: from_sql_integer(row.get(6)?),
                        busy: duration_from_millis(row.get(7)?),
                        log_object: row.get(8)?,
                        log_sha256: row.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("list the workers of run `{run}`"))
}

pub fn run_item_attempts(
    transaction: &Transaction<'_>,
    run: &str,
    limit: usize,
    sealer: &Sealer,
) -> Result<Vec<ItemAttempt>> {
    let key = require_run_key(transaction, run)?;
    let rows: Vec<(ItemAttempt, Option<String>)> = transaction
        .prepare_cached(
            "SELECT items.item, latest.attempt, latest.worker, latest.started_at, latest.ended_at, latest.outcome, \
             items.item_sealed \
             FROM (SELECT * FROM run_item_attempts WHERE run_seq = ?1 \
                   ORDER BY started_at DESC, item_seq DESC, attempt DESC LIMIT ?2) AS latest \
             JOIN run_items AS items ON items.item_seq = latest.item_seq \
             ORDER BY latest.started_at, latest.item_seq, latest.attempt",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![key.run_seq, limit_to_sql(limit)], |row| {
                    let outcome: String = row.get(5)?;
                    let attempt = ItemAttempt {
                        item: row.get(0)?,
                        attempt: count_at(row, 1)?,
                        worker: row.get(2)?,
                        started_at: Timestamp(row.get(3)?),
                        ended_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
                        outcome: AttemptOutcome::parse(&outcome).ok_or_else(|| {
                            conversion_error(5, StateError::Backend(format!("unknown attempt outcome `{outcome}`")))
                        })?,
                    };
                    Ok((attempt, row.get(6)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("list the attempts of run `{run}`"))?;
    rows.into_iter()
        .map(|(mut attempt, sealed)| {
            attempt.item = sealer.open_run_item_id(run, std::mem::take(&mut attempt.item), sealed)?;
            Ok(attempt)
        })
        .collect()
}

pub fn run_attempt_counts_by_worker(
    transaction: &Transaction<'_>,
    run: &str,
) -> Result<std::collections::BTreeMap<String, mayfly_state::WorkerAttemptCounts>> {
    let key = require_run_key(transaction, run)?;
    transaction
        .prepare_cached(
            "SELECT worker, SUM(outcome = 'done'), SUM(outcome IN ('failed', 'dead_lettered')) \
             FROM run_item_attempts WHERE run_seq = ?1 AND outcome IN ('done', 'failed', 'dead_lettered') \
             GROUP BY worker",
        )
        .and_then(|mut statement| {
            statement
                .query_map([key.run_seq], |row| {
                    let counts = mayfly_state::WorkerAttemptCounts {
                        done: from_sql_integer(row.get(1)?),
                        failed: from_sql_integer(row.get(2)?),
                    };
                    Ok((row.get::<_, String>(0)?, counts))
                })?
                .collect::<rusqlite::Result<_>>()
        })
        .with_context(|| format!("count the attempts of run `{run}` by worker"))
}

#[cfg(test)]
mod tests {
    use mayfly_state::prelude::*;
    use std::sync::Arc;

    use super::*;
    use crate::SqliteStore;

    fn query_plan(store: &SqliteStore, sql: &str) -> String {
        crate::tests::query_plan(&store.lock_connection(), sql)
    }

    /// The coordinator's hot paths read one index range and never sort, so
    /// their cost does not grow with the backlog or with other runs.
    #[test]
    fn run_queries_use_their_indexes() {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&directory.path().join("state.db"), Arc::new(mayfly_core::SystemClock)).unwrap();
        for (sql, index) in [
            (LEASE_CANDIDATES_SQL, "run_items_to_lease"),
            (
                "UPDATE run_items SET status = 'pending' WHERE run_seq = ?1 AND status = 'leased' \
                 AND (?2 IS NULL OR worker = ?2)",
                "run_items_to_lease",
            ),
            ("SELECT item_seq, status FROM run_items WHERE run_seq = ?1 AND item = ?2", "sqlite_autoindex_run_items_1"),
            (
                "SELECT item FROM run_items WHERE run_seq = ?1 AND (?2 IS NULL OR status = ?2) AND item > ?3 \
                 ORDER BY item LIMIT ?4",
                "sqlite_autoindex_run_items_1",
            ),
            ("SELECT COUNT(*), SUM(attempts) FROM run_items WHERE run_seq = ?1", "run_items_to_lease"),
            (
                "SELECT id FROM runs WHERE finished_at IS NULL AND ((lease_owner IS NOT NULL AND lease_until <= ?1) \
                 OR (lease_owner IS NULL AND created_at < ?2)) ORDER BY created_at, run_seq",
                "runs_unfinished",
            ),
            ("SELECT id FROM runs WHERE job = ?1 ORDER BY run_seq DESC LIMIT ?2", "runs_by_job"),
            (
                "SELECT item FROM results WHERE job = ?1 AND run_id = ?2 AND item > ?3 ORDER BY item LIMIT ?4",
                "results_by_run",
            ),
            (
                "SELECT item FROM results WHERE job = ?1 AND ?2 IS NULL AND item > ?3 ORDER BY item LIMIT ?4",
                "sqlite_autoindex_results_1",
            ),
            (
                "SELECT attempt FROM run_item_attempts WHERE run_seq = ?1 \
                 ORDER BY started_at DESC, item_seq DESC, attempt DESC LIMIT ?2",
                "run_item_attempts_by_start",
            ),
        ] {
            let plan = query_plan(&store, sql);
            let uses_index = plan
                .lines()
                .any(|line| line.contains(&format!("INDEX {index} ")) || line.ends_with(&format!("INDEX {index}")));
            assert!(uses_index, "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
            // A scan of the partial index `runs_unfinished` reads only unfinished runs.
            let table_scan = plan.lines().any(|line| line.starts_with("SCAN") && !line.contains("INDEX"));
            assert!(!table_scan, "{sql}\n{plan}");
        }
    }

    /// A schema-7 file (runs could not end `completed_with_failures`) opens:
    /// the runs table is rebuilt, and the rows that refer to it — items,
    /// attempts, workers — are all still there (dropping the old table must
    /// not cascade into them).
    #[test]
    fn a_schema_7_file_keeps_its_runs_items_and_workers_and_accepts_completed_with_failures() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.db");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection.pragma_update(None, "foreign_keys", "ON").unwrap();
            for migration in &crate::schema::MIGRATIONS[..7] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .execute_batch(
                    "PRAGMA user_version = 7;
                     INSERT INTO runs (id, job, trigger_source, status, created_at, started_at, deadline, lease_owner,
                         lease_until, coordinator_attempts)
                         VALUES ('run-1', 'thumbnails', 'manual', 'running', 1, 1, 999999, 'c-1', 999999, 1);
                     INSERT INTO run_items (run_seq, item, payload, status, attempts, worker, not_before, updated_at)
                         VALUES (1, 'a', x'7b7d', 'done', 1, 'w1-001', 1, 2),
                                (1, 'b', x'7b7d', 'dead_lettered', 1, 'w1-001', 1, 2);
                     INSERT INTO run_item_attempts (item_seq, attempt, run_seq, worker, started_at, ended_at, outcome)
                         VALUES (1, 1, 1, 'w1-001', 1, 2, 'done'), (2, 1, 1, 'w1-001', 1, 2, 'dead_lettered');
                     INSERT INTO run_workers (run_seq, worker, resource, started_at, items_done, items_failed, busy_ms)
                         VALUES (1, 'w1-001', 'pid:1:1', 1, 0, 0, 0);",
                )
                .unwrap();
        }
        let clock = mayfly_core::ManualClock::starting_at(Timestamp(1_000));
        let store = SqliteStore::open(&path, Arc::new(clock)).unwrap();
        let counts = store.run_item_counts("run-1").unwrap();
        assert_eq!((counts.total, counts.done, counts.dead_lettered), (2, 1, 1));
        assert_eq!(store.run_workers("run-1").unwrap().len(), 1);
        let by_worker = store.run_attempt_counts_by_worker("run-1").unwrap();
        assert_eq!(by_worker["w1-001"], mayfly_state::WorkerAttemptCounts { done: 1, failed: 1 });
        store.finish_run("run-1", "c-1", RunStatus::CompletedWithFailures, Some("1 of 2"), None).unwrap();
        assert_eq!(store.run("run-1").unwrap().status, RunStatus::CompletedWithFailures);
        let foreign_keys: bool =
            store.lock_connection().query_row("PRAGMA foreign_keys", [], |row| row.get(0)).unwrap();
        assert!(foreign_keys, "foreign keys are on again after the migration");
    }

    /// A schema-11 file (items could not be `returned`) opens: `run_items` is
    /// rebuilt keeping every item, its attempts and its number sequence, and
    /// an unfinished item of a queue message moved in after the upgrade goes
    /// back to its queue.
    #[test]
    fn a_schema_11_file_keeps_its_items_and_attempts_and_can_return_items_to_their_queue() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.db");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection.pragma_update(None, "foreign_keys", "ON").unwrap();
            for migration in &crate::schema::MIGRATIONS[..11] {
                connection.execute_batch(migration).unwrap();
            }
            connection
                .execute_batch(
                    "PRAGMA user_version = 11;
                     INSERT INTO runs (id, job, trigger_source, status, created_at, started_at, deadline, lease_owner,
                         lease_until, coordinator_attempts)
                         VALUES ('run-1', 'drain', 'manual', 'running', 1, 1, 999999, 'c-1', 999999, 1);
                     INSERT INTO run_items (run_seq, item, payload, status, attempts, worker, not_before, updated_at)
                         VALUES (1, 'a', x'7b7d', 'done', 1, 'w1-001', 1, 2),
                                (1, 'b', x'7b7d', 'leased', 1, 'w1-001', 1, 2),
                                (1, 'c', x'7b7d', 'pending', 0, NULL, 1, 2);
                     DELETE FROM run_items WHERE item = 'c';
                     INSERT INTO run_item_attempts (item_seq, attempt, run_seq, worker, started_at, ended_at, outcome)
                         VALUES (1, 1, 1, 'w1-001', 1, 2, 'done'), (2, 1, 1, 'w1-001', 1, NULL, 'running');",
                )
                .unwrap();
        }
        let clock = mayfly_core::ManualClock::starting_at(Timestamp(1_000));
        let store = SqliteStore::open(&path, Arc::new(clock)).unwrap();
        let counts = store.run_item_counts("run-1").unwrap();
        assert_eq!((counts.total, counts.done, counts.leased, counts.returned), (2, 1, 1, 0));
        assert_eq!(store.run_item_attempts("run-1", 10).unwrap().len(), 2, "attempts still refer to their items");
        let queue = Name::new("work").unwrap();
        store.create_queue(&queue, &mayfly_core::queue::QueueConfig::default(), &[]).unwrap();
        let ids = store.send_messages(&queue, &[mayfly_state::OutgoingMessage::new("m")]).unwrap();
        assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 1);
        let item_seq: i64 = store
            .lock_connection()
            .query_row("SELECT item_seq FROM run_items WHERE item = ?1", [ids[0].to_string()], |row| row.get(0))
            .unwrap();
        assert_eq!(item_seq, 4, "item numbers go on after the largest ever used, a deleted item's too");
        assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 1, "only the message's item");
        assert_eq!(store.run_item_counts("run-1").unwrap().returned, 1);
        assert_eq!(store.peek_messages(&queue, 10).unwrap()[0].message_id, ids[0]);
        let foreign_keys: bool =
            store.lock_connection().query_row("PRAGMA foreign_keys", [], |row| row.get(0)).unwrap();
        assert!(foreign_keys, "foreign keys are on again after the migration");
    }

    /// A file written before runs existed (schema 2) opens, keeps its data and gains the run ledger.
    #[test]
    fn a_schema_2_file_is_migrated_to_the_run_ledger_keeping_its_data() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.db");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection.execute_batch(crate::schema::MIGRATIONS[0]).unwrap();
            connection.execute_batch(crate::schema::MIGRATIONS[1]).unwrap();
            connection.execute_batch("PRAGMA user_version = 2").unwrap();
            connection
                .execute(
                    "INSERT INTO deployments (content_hash, applied_at, source, forced) VALUES ('h', 5, 'src', 0)",
                    [],
                )
                .unwrap();
        }
        let clock = mayfly_core::ManualClock::starting_at(Timestamp(1_000));
        let store = SqliteStore::open(&path, Arc::new(clock)).unwrap();
        assert_eq!(store.deployments().unwrap().len(), 1);
        let run = NewRun {
            id: "run-1".to_owned(),
            job: Name::new("thumbnails").unwrap(),
            deployment_version: Some(1),
            trigger: "manual".to_owned(),
            deadline: Timestamp(10_000),
            budget: None,
        };
        assert_eq!(store.create_run(run).unwrap().status, RunStatus::Requested);
        assert_eq!(crate::current_schema_version(), 15);
    }
}
