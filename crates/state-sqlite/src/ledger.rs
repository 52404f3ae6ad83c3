//! The invocation ledger in SQL: one row per finished invocation in
//! `invocations`, its captured logs beside it in `invocation_logs`.

use std::sync::LazyLock;
use std::time::Duration;

use mayfly_core::{Name, Timestamp};
use mayfly_state::{
    DURATION_BUCKETS_MICROS, FunctionStats, InvocationFilter, InvocationRecord, Result, StateError, StoredInvocation,
    nearest_rank_index,
};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{from_sql_integer, limit_to_sql, to_sql_integer};
use mayfly_state::sealing::{Record, Sealer};

const COLUMNS: &str = "id, request_id, function, deployment_version, trigger_source, attempt, started_at, duration_us, \
                       init_duration_us, outcome, error_type, error_message, peak_memory, bytes_in, bytes_out, \
                       estimated_cost";

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn duration_from_micros(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The invocation as stored: its error message still sealed.
fn stored_invocation_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredInvocation> {
    let function: String = row.get(2)?;
    let function = Name::new(function)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(error)))?;
    Ok(StoredInvocation {
        id: from_sql_integer(row.get(0)?),
        record: InvocationRecord {
            request_id: row.get(1)?,
            function,
            deployment_version: row.get::<_, Option<i64>>(3)?.map(from_sql_integer),
            trigger: row.get(4)?,
            attempt: u32::try_from(row.get::<_, i64>(5)?).unwrap_or(u32::MAX),
            started_at: Timestamp(row.get(6)?),
            duration: duration_from_micros(row.get(7)?),
            init_duration: row.get::<_, Option<i64>>(8)?.map(duration_from_micros),
            outcome: row.get(9)?,
            error_type: row.get(10)?,
            error_message: row.get(11)?,
            peak_memory: row.get::<_, Option<i64>>(12)?.map(from_sql_integer),
            bytes_in: from_sql_integer(row.get(13)?),
            bytes_out: from_sql_integer(row.get(14)?),
            estimated_cost: row.get(15)?,
        },
    })
}

pub fn record_invocation(
    transaction: &Transaction<'_>,
    record: &InvocationRecord,
    logs: &[u8],
    sealer: &Sealer,
) -> Result<u64> {
    if !record.estimated_cost.is_finite() {
        return Err(StateError::Backend(format!(
            "invocation {} of `{}` has an estimated cost of {}, which is not a finite number; nothing was recorded",
            record.request_id, record.function, record.estimated_cost
        )));
    }
    let id: i64 = transaction
        .prepare_cached(
            "INSERT INTO invocations (request_id, function, deployment_version, trigger_source, attempt, started_at, \
             duration_us, init_duration_us, outcome, error_type, error_message, peak_memory, bytes_in, bytes_out, \
             estimated_cost) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) RETURNING id",
        )
        .and_then(|mut statement| {
            statement.query_row(
                params![
                    record.request_id,
                    record.function.as_str(),
                    record.deployment_version.map(to_sql_integer),
                    record.trigger,
                    i64::from(record.attempt),
                    record.started_at.as_millis(),
                    micros(record.duration),
                    record.init_duration.map(micros),
                    record.outcome,
                    record.error_type,
                    // Sealed below, once the id it is bound to is known.
                    None::<String>,
                    record.peak_memory.map(to_sql_integer),
                    to_sql_integer(record.bytes_in),
                    to_sql_integer(record.bytes_out),
                    record.estimated_cost,
                ],
                |row| row.get(0),
            )
        })
        .with_context(|| format!("record invocation {} of `{}`", record.request_id, record.function))?;
    if let Some(message) = &record.error_message {
        // The same transaction: the row is never committed without its message.
        transaction
            .prepare_cached("UPDATE invocations SET error_message = ?2 WHERE id = ?1")
            .and_then(|mut statement| {
                statement.execute(params![id, sealer.seal_text(Record::InvocationError(id), message)])
            })
            .with_context(|| format!("record the error message of invocation {}", record.request_id))?;
    }
    if !logs.is_empty() {
        transaction
            .prepare_cached("INSERT INTO invocation_logs (invocation_id, logs) VALUES (?1, ?2)")
            .and_then(|mut statement| statement.execute(params![id, sealer.seal(Record::InvocationLogs(id), logs)]))
            .with_context(|| format!("record the logs of invocation {}", record.request_id))?;
    }
    Ok(from_sql_integer(id))
}

pub fn invocations(
    transaction: &Transaction<'_>,
    filter: &InvocationFilter,
    sealer: &Sealer,
) -> Result<Vec<StoredInvocation>> {
    // NULL filters match everything; SQLite's planner still uses
    // `invocations_by_function` when a function is given.
    let sql = format!(
        "SELECT {COLUMNS} FROM invocations WHERE id > ?1 AND (?2 IS NULL OR function = ?2) \
         AND (?3 IS NULL OR outcome = ?3) ORDER BY id LIMIT ?4"
    );
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![
                        to_sql_integer(filter.after_id),
                        filter.function.as_ref().map(Name::as_str),
                        filter.outcome,
                        limit_to_sql(filter.limit)
                    ],
                    stored_invocation_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("list invocations")?
        .into_iter()
        .map(|mut invocation| {
            let record = Record::InvocationError(to_sql_integer(invocation.id));
            invocation.record.error_message =
                sealer.open_optional_text(record, invocation.record.error_message.take())?;
            Ok(invocation)
        })
        .collect()
}

pub fn invocation_logs(transaction: &Transaction<'_>, request_id: &str, sealer: &Sealer) -> Result<Vec<u8>> {
    let attempts: Vec<(i64, Option<Vec<u8>>)> = transaction
        .prepare_cached(
            "SELECT invocations.id, invocation_logs.logs FROM invocations \
             LEFT JOIN invocation_logs ON invocation_logs.invocation_id = invocations.id \
             WHERE invocations.request_id = ?1 ORDER BY invocations.id",
        )
        .and_then(|mut statement| {
            statement
                .query_map([request_id], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .with_context(|| format!("read the logs of request {request_id}"))?;
    if attempts.is_empty() {
        return Err(StateError::not_found("invocation", request_id));
    }
    let mut logs = Vec::new();
    for (id, stored) in attempts {
        if let Some(stored) = stored {
            logs.extend_from_slice(&sealer.open(Record::InvocationLogs(id), stored)?);
        }
    }
    Ok(logs)
}

/// The histogram's columns: one `SUM(duration_us <= bound)` per bound, after
/// the count, errors, cold starts, latest start and duration sum.
static FUNCTION_STATS_SQL: LazyLock<String> = LazyLock::new(|| {
    let buckets: Vec<String> =
        DURATION_BUCKETS_MICROS.iter().map(|bound| format!(", SUM(duration_us <= {bound})")).collect();
    format!(
        "SELECT COUNT(*), SUM(outcome != ?2), SUM(init_duration_us IS NOT NULL), MAX(started_at), \
         SUM(duration_us){} FROM invocations WHERE function = ?1",
        buckets.concat()
    )
});

pub fn function_stats(transaction: &Transaction<'_>, function: &Name) -> Result<FunctionStats> {
    let what = || format!("summarize the invocations of `{function}`");
    type Row = (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>, [u64; DURATION_BUCKETS_MICROS.len()]);
    let (invocations, errors, cold_starts, last_invoked, duration_sum, durations_at_most): Row = transaction
        .prepare_cached(&FUNCTION_STATS_SQL)
        .and_then(|mut statement| {
            statement.query_row(params![function.as_str(), InvocationRecord::SUCCESS], |row| {
                let mut at_most = [0; DURATION_BUCKETS_MICROS.len()];
                for (index, count) in at_most.iter_mut().enumerate() {
                    *count = row.get::<_, Option<i64>>(5 + index)?.map_or(0, from_sql_integer);
                }
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, at_most))
            })
        })
        .with_context(what)?;
    let invocations = from_sql_integer(invocations);
    // The n-th shortest duration, walked along `invocations_by_function_and_duration`.
    let duration_at_percentile = |percentile: u32| -> Result<Option<Duration>> {
        let Some(index) = nearest_rank_index(invocations, percentile) else { return Ok(None) };
        let micros: Option<i64> = transaction
            .prepare_cached(
                "SELECT duration_us FROM invocations WHERE function = ?1 ORDER BY duration_us LIMIT 1 OFFSET ?2",
            )
            .and_then(|mut statement| {
                statement.query_row(params![function.as_str(), to_sql_integer(index)], |row| row.get(0)).optional()
            })
            .with_context(what)?;
        Ok(micros.map(duration_from_micros))
    };
    Ok(FunctionStats {
        invocations,
        errors: errors.map_or(0, from_sql_integer),
        cold_starts: cold_starts.map_or(0, from_sql_integer),
        p50_duration: duration_at_percentile(50)?,
        p95_duration: duration_at_percentile(95)?,
        last_invoked: last_invoked.map(Timestamp),
        duration_sum: duration_sum.map_or(Duration::ZERO, duration_from_micros),
        durations_at_most,
    })
}
