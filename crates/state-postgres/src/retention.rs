//! [`RetentionStore`] on PostgreSQL: each call deletes at most `limit` of the
//! oldest records past their cutoff in one transaction. Cascades (`ON DELETE
//! CASCADE`) take a run's items, attempts, workers and message links, and an
//! invocation's logs, with it. The access log's trigger (migration 5)
//! refuses any record younger than `ACCESS_LOG_RETENTION`, whatever client asks.

use mayfly_core::{Name, Timestamp};
use mayfly_state::{Result, RetentionStore};
use postgres::Transaction;

use crate::errors::PgResultExt;
use crate::queues::require_queue;
use crate::{PostgresStore, limit_to_sql};

/// Deletes the oldest rows of an append-ordered table (`id` grows with
/// time) up to the first one not past the cutoff: the prefix of the id order
/// that is old enough. It reads at most `limit` rows however large the table
/// is; a row recorded out of time order waits for the rows before it.
fn prune_prefix(
    transaction: &mut Transaction<'_>,
    table: &str,
    id_column: &str,
    time_column: &str,
    also: &str,
    before: Timestamp,
    limit: usize,
) -> Result<u64> {
    let what = format!("delete old rows of {table}");
    let rows = transaction
        .query(
            &format!("SELECT {id_column}, {time_column} FROM {table} {also} ORDER BY {id_column} LIMIT $1"),
            &[&limit_to_sql(limit)],
        )
        .context(&what)?;
    let Some(last) = rows
        .iter()
        .map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1)))
        .take_while(|(_, at)| *at < before.as_millis())
        .map(|(id, _)| id)
        .last()
    else {
        return Ok(0);
    };
    transaction.execute(&format!("DELETE FROM {table} WHERE {id_column} <= $1"), &[&last]).context(&what)
}

impl RetentionStore for PostgresStore {
    fn expire_messages(&self, queue: &Name, sent_before: Timestamp, limit: usize) -> Result<u64> {
        self.transact(&format!("expire old messages of queue `{queue}`"), |transaction| {
            let queue = require_queue(transaction, queue)?;
            transaction
                .execute(
                    "DELETE FROM messages WHERE message_id IN (SELECT message_id FROM messages \
                     WHERE queue_id = $1 AND sent_at < $2 ORDER BY message_id LIMIT $3)",
                    &[&queue.queue_id, &sent_before.as_millis(), &limit_to_sql(limit)],
                )
                .context("delete expired messages")
        })
    }

    fn prune_invocations(&self, started_before: Timestamp, limit: usize) -> Result<u64> {
        self.transact("prune old invocations", |transaction| {
            prune_prefix(transaction, "invocations", "id", "started_at", "", started_before, limit)
        })
    }

    fn prune_finished_runs(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.transact("prune old finished runs", |transaction| {
            transaction
                .execute(
                    "DELETE FROM runs WHERE run_seq IN (SELECT run_seq FROM runs \
                     WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY run_seq LIMIT $2)",
                    &[&finished_before.as_millis(), &limit_to_sql(limit)],
                )
                .context("delete old finished runs")
        })
    }

    /// Never past the lowest consumer cursor: an event a consumer (the router)
    /// has not read yet stays, however old, so no trigger misses it.
    fn prune_object_events(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.transact("prune old events", |transaction| {
            let unread = "WHERE sequence <= (SELECT COALESCE(MIN(sequence), 0) FROM consumer_cursors)";
            prune_prefix(transaction, "object_events", "sequence", "at", unread, before, limit)
        })
    }

    /// The database's trigger refuses a record younger than the access log's floor.
    fn prune_access_records(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.transact("prune old access records", |transaction| {
            prune_prefix(transaction, "access_log", "id", "at", "", before, limit)
        })
    }
}

#[cfg(test)]
mod tests {
    /// The access log's trigger spells the contract's retention in milliseconds.
    #[test]
    fn the_access_log_trigger_uses_the_contracts_retention() {
        let millis = mayfly_state::ACCESS_LOG_RETENTION.as_millis().to_string();
        assert!(
            crate::schema::MIGRATIONS.iter().any(|migration| migration.contains(&format!("- {millis}"))),
            "{millis}"
        );
    }
}
