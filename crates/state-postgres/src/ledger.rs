//! [`InvocationLedger`] on PostgreSQL: one row per finished invocation in
//! `invocations`, its captured logs beside it in `invocation_logs`.
//!
//! Ids are the ledger sequence that readers page by, so they are numbered
//! by the `invocations` counter under its row lock: in commit order, with no
//! gap, where a sequence could let a reader page past an id that commits later.

use std::sync::LazyLock;
use std::time::Duration;

use mayfly_core::{Name, Timestamp};
use mayfly_state::sealing::Record;
use mayfly_state::{
    DURATION_BUCKETS_MICROS, FunctionStats, InvocationFilter, InvocationLedger, InvocationRecord, Result, StateError,
    StoredInvocation, nearest_rank_index,
};

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer, limit_to_sql, name_from_column, next_counter, to_sql_integer};

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
fn stored_invocation_from_row(row: &postgres::Row) -> Result<StoredInvocation> {
    Ok(StoredInvocation {
        id: from_sql_integer(row.get(0)),
        record: InvocationRecord {
            request_id: row.get(1),
            function: name_from_column(row.get(2))?,
            deployment_version: row.get::<_, Option<i64>>(3).map(from_sql_integer),
            trigger: row.get(4),
            attempt: u32::try_from(row.get::<_, i64>(5)).unwrap_or(u32::MAX),
            started_at: Timestamp(row.get(6)),
            duration: duration_from_micros(row.get(7)),
            init_duration: row.get::<_, Option<i64>>(8).map(duration_from_micros),
            outcome: row.get(9),
            error_type: row.get(10),
            error_message: row.get(11),
            peak_memory: row.get::<_, Option<i64>>(12).map(from_sql_integer),
            bytes_in: from_sql_integer(row.get(13)),
            bytes_out: from_sql_integer(row.get(14)),
            estimated_cost: row.get(15),
        },
    })
}

/// The histogram's columns: one `COUNT(*) FILTER (WHERE duration_us <= bound)`
/// per bound, after the count, errors, cold starts, latest start and duration
/// sum (`bigint`: `SUM` of a `bigint` is a `numeric`).
static FUNCTION_STATS_SQL: LazyLock<String> = LazyLock::new(|| {
    let buckets: Vec<String> = DURATION_BUCKETS_MICROS
        .iter()
        .map(|bound| format!(", COUNT(*) FILTER (WHERE duration_us <= {bound})"))
        .collect();
    format!(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE outcome <> $2), \
         COUNT(*) FILTER (WHERE init_duration_us IS NOT NULL), MAX(started_at), \
         SUM(duration_us)::bigint{} FROM invocations WHERE function = $1",
        buckets.concat()
    )
});

impl InvocationLedger for PostgresStore {
    fn record_invocation(&self, record: &InvocationRecord, logs: &[u8]) -> Result<u64> {
        if !record.estimated_cost.is_finite() {
            return Err(StateError::Backend(format!(
                "invocation {} of `{}` has an estimated cost of {}, which is not a finite number; nothing was recorded",
                record.request_id, record.function, record.estimated_cost
            )));
        }
        self.transact(&format!("record invocation {} of `{}`", record.request_id, record.function), |transaction| {
            let id = next_counter(transaction, "invocations")?;
            let error_message = record
                .error_message
                .as_deref()
                .map(|message| self.sealer.seal_text(Record::InvocationError(id), message));
            transaction
                .execute(
                    "INSERT INTO invocations (id, request_id, function, deployment_version, trigger_source, attempt, \
                     started_at, duration_us, init_duration_us, outcome, error_type, error_message, peak_memory, \
                     bytes_in, bytes_out, estimated_cost) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                    &[
                        &id,
                        &record.request_id,
                        &record.function.as_str(),
                        &record.deployment_version.map(to_sql_integer),
                        &record.trigger,
                        &i64::from(record.attempt),
                        &record.started_at.as_millis(),
                        &micros(record.duration),
                        &record.init_duration.map(micros),
                        &record.outcome,
                        &record.error_type,
                        &error_message,
                        &record.peak_memory.map(to_sql_integer),
                        &to_sql_integer(record.bytes_in),
                        &to_sql_integer(record.bytes_out),
                        &record.estimated_cost,
                    ],
                )
                .with_context(|| format!("record invocation {} of `{}`", record.request_id, record.function))?;
            if !logs.is_empty() {
                transaction
                    .execute(
                        "INSERT INTO invocation_logs (invocation_id, logs) VALUES ($1, $2)",
                        &[&id, &self.sealer.seal(Record::InvocationLogs(id), logs).as_ref()],
                    )
                    .with_context(|| format!("record the logs of invocation {}", record.request_id))?;
            }
            Ok(from_sql_integer(id))
        })
    }

    fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<StoredInvocation>> {
        self.transact("list invocations", |transaction| {
            let sql = format!(
                "SELECT {COLUMNS} FROM invocations WHERE id > $1 AND ($2::TEXT IS NULL OR function = $2) \
                 AND ($3::TEXT IS NULL OR outcome = $3) ORDER BY id LIMIT $4"
            );
            let rows = transaction
                .query(
                    &sql,
                    &[
                        &to_sql_integer(filter.after_id),
                        &filter.function.as_ref().map(Name::as_str),
                        &filter.outcome,
                        &limit_to_sql(filter.limit),
                    ],
                )
                .context("list invocations")?;
            rows.iter()
                .map(|row| {
                    let mut invocation = stored_invocation_from_row(row)?;
                    let record = Record::InvocationError(to_sql_integer(invocation.id));
                    invocation.record.error_message =
                        self.sealer.open_optional_text(record, invocation.record.error_message.take())?;
                    Ok(invocation)
                })
                .collect()
        })
    }

    fn invocation_logs(&self, request_id: &str) -> Result<Vec<u8>> {
        self.transact(&format!("read the logs of request {request_id}"), |transaction| {
            let rows = transaction
                .query(
                    "SELECT invocations.id, invocation_logs.logs FROM invocations \
                     LEFT JOIN invocation_logs ON invocation_logs.invocation_id = invocations.id \
                     WHERE invocations.request_id = $1 ORDER BY invocations.id",
                    &[&request_id],
                )
                .with_context(|| format!("read the logs of request {request_id}"))?;
            if rows.is_empty() {
                return Err(StateError::not_found("invocation", request_id));
            }
            let mut logs = Vec::new();
            for row in rows {
                if let Some(stored) = row.get::<_, Option<Vec<u8>>>(1) {
                    logs.extend_from_slice(&self.sealer.open(Record::InvocationLogs(row.get(0)), stored)?);
                }
            }
            Ok(logs)
        })
    }

    fn function_stats(&self, function: &Name) -> Result<FunctionStats> {
        let what = || format!("summarize the invocations of `{function}`");
        self.transact(&what(), |transaction| {
            let row = transaction
                .query_one(FUNCTION_STATS_SQL.as_str(), &[&function.as_str(), &InvocationRecord::SUCCESS])
                .with_context(what)?;
            let mut durations_at_most = [0; DURATION_BUCKETS_MICROS.len()];
            for (index, count) in durations_at_most.iter_mut().enumerate() {
                *count = from_sql_integer(row.get(5 + index));
            }
            let invocations = from_sql_integer(row.get(0));
            let mut duration_at_percentile = |percentile: u32| -> Result<Option<Duration>> {
                let Some(index) = nearest_rank_index(invocations, percentile) else { return Ok(None) };
                let micros = transaction
                    .query_opt(
                        "SELECT duration_us FROM invocations WHERE function = $1 ORDER BY duration_us LIMIT 1 OFFSET $2",
                        &[&function.as_str(), &to_sql_integer(index)],
                    )
                    .with_context(what)?
                    .map(|row| row.get::<_, i64>(0));
                Ok(micros.map(duration_from_micros))
            };
            let p50_duration = duration_at_percentile(50)?;
            let p95_duration = duration_at_percentile(95)?;
            Ok(FunctionStats {
                invocations,
                errors: from_sql_integer(row.get(1)),
                cold_starts: from_sql_integer(row.get(2)),
                p50_duration,
                p95_duration,
                last_invoked: row.get::<_, Option<i64>>(3).map(Timestamp),
                duration_sum: row.get::<_, Option<i64>>(4).map_or(Duration::ZERO, duration_from_micros),
                durations_at_most,
            })
        })
    }
}
