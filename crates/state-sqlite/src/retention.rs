//! Retention in SQLite: each call deletes at most `limit` of the oldest
//! records past their cutoff in one transaction, so a pass over a large
//! ledger never holds the write lock for long. Cascades (`ON DELETE
//! CASCADE`) take a run's items, attempts and workers, and an invocation's
//! logs, with it. The access log's delete trigger (migration 9) refuses any
//! record younger than `ACCESS_LOG_RETENTION`, whatever client asks.

use mayfly_core::Timestamp;
use mayfly_state::Result;
use rusqlite::{Transaction, params};

use crate::errors::SqliteResultExt;
use crate::limit_to_sql;

fn deleted(count: usize) -> u64 {
    count as u64
}

pub(crate) fn expire_messages(
    transaction: &Transaction<'_>,
    queue_id: i64,
    sent_before: Timestamp,
    limit: usize,
) -> Result<u64> {
    let count = transaction
        .execute(
            "DELETE FROM messages WHERE message_id IN \
             (SELECT message_id FROM messages WHERE queue_id = ?1 AND sent_at < ?2 ORDER BY message_id LIMIT ?3)",
            params![queue_id, sent_before.as_millis(), limit_to_sql(limit)],
        )
        .context("delete expired messages")?;
    Ok(deleted(count))
}

/// Deletes the oldest rows of an append-ordered table (`id` grows with
/// time) up to the first one not past the cutoff: the prefix of the id order
/// that is old enough. It reads at most `limit` rows however large the table
/// is, and needs no index on the time column (which every insert would pay
/// for); a row recorded out of time order waits for the rows before it.
fn prune_prefix(
    transaction: &Transaction<'_>,
    table: &str,
    id_column: &str,
    time_column: &str,
    also: &str,
    before: Timestamp,
    limit: usize,
) -> Result<u64> {
    let what = format!("delete old rows of {table}");
    let ids: Vec<(i64, i64)> = transaction
        .prepare_cached(&format!("SELECT {id_column}, {time_column} FROM {table} {also} ORDER BY {id_column} LIMIT ?1"))
        .and_then(|mut statement| {
            statement
                .query_map(params![limit_to_sql(limit)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context(&what)?;
    let Some(last) = ids.iter().take_while(|(_, at)| *at < before.as_millis()).map(|(id, _)| *id).last() else {
        return Ok(0);
    };
    let count =
        transaction.execute(&format!("DELETE FROM {table} WHERE {id_column} <= ?1"), params![last]).context(&what)?;
    Ok(deleted(count))
}

pub(crate) fn prune_invocations(transaction: &Transaction<'_>, started_before: Timestamp, limit: usize) -> Result<u64> {
    prune_prefix(transaction, "invocations", "id", "started_at", "", started_before, limit)
}

pub(crate) fn prune_finished_runs(
    transaction: &Transaction<'_>,
    finished_before: Timestamp,
    limit: usize,
) -> Result<u64> {
    let count = transaction
        .execute(
            "DELETE FROM runs WHERE run_seq IN \
             (SELECT run_seq FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1 ORDER BY run_seq LIMIT ?2)",
            params![finished_before.as_millis(), limit_to_sql(limit)],
        )
        .context("delete old finished runs")?;
    Ok(deleted(count))
}

/// Never past the lowest consumer cursor: an event a consumer (the router)
/// has not read yet stays, however old, so no trigger misses it.
pub(crate) fn prune_object_events(transaction: &Transaction<'_>, before: Timestamp, limit: usize) -> Result<u64> {
    let unread = "WHERE sequence <= (SELECT coalesce(min(sequence), 0) FROM consumer_cursors)";
    prune_prefix(transaction, "object_events", "sequence", "at", unread, before, limit)
}

/// The file's trigger refuses a record younger than the access log's floor.
pub(crate) fn prune_access_records(transaction: &Transaction<'_>, before: Timestamp, limit: usize) -> Result<u64> {
    prune_prefix(transaction, "access_log", "id", "at", "", before, limit)
}

#[cfg(test)]
mod tests {
    /// The trigger of migration 9 spells the access log's floor in milliseconds.
    #[test]
    fn the_access_log_trigger_uses_the_contracts_retention() {
        let millis = mayfly_state::ACCESS_LOG_RETENTION.as_millis().to_string();
        assert!(
            crate::schema::MIGRATIONS.iter().any(|migration| migration.contains(&format!("- {millis}"))),
            "{millis}"
        );
    }
}
