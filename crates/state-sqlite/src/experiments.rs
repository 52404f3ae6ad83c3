//! Recorded experiments in SQL: one `experiments` row each, what it was in
//! columns of their own (for listing) and its evidence
//! ([`ExperimentDetails`]) as JSON, sealed in an encrypted store as the
//! base64 text of its envelope, bound to `experiment/<id>/details`.
//!
//! Every function runs inside the transaction the caller opened, so each
//! trait method is one commit.

use mayfly_core::Timestamp;
use mayfly_state::sealing::{Record, Sealer};
use mayfly_state::{Experiment, ExperimentDetails, ExperimentOutcome, ExperimentRecord, Result, StateError};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{from_sql_integer, limit_to_sql, to_sql_integer};

const COLUMNS: &str = "experiment_id, name, file_fingerprint, trigger_source, outcome, deployment_version, \
                       started_at, finished_at, baseline, variants, details";

/// Insert the experiment; its details are sealed once its id is known, in the same transaction.
pub(crate) fn record_experiment(
    transaction: &Transaction<'_>,
    sealer: &Sealer,
    experiment: &Experiment,
    now: Timestamp,
) -> Result<ExperimentRecord> {
    let variants = serde_json::to_string(&experiment.variants).map_err(|error| not_encoded("variants", error))?;
    transaction
        .prepare_cached(
            "INSERT INTO experiments (name, file_fingerprint, trigger_source, outcome, deployment_version, \
             started_at, finished_at, baseline, variants, details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '')",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                experiment.name,
                experiment.file_fingerprint,
                experiment.trigger,
                experiment.outcome.as_str(),
                experiment.deployment_version.map(to_sql_integer),
                experiment.started_at.as_millis(),
                now.as_millis(),
                experiment.baseline,
                variants,
            ])
        })
        .context("record the experiment")?;
    let id = transaction.last_insert_rowid();
    let details_json = serde_json::to_string(&experiment.details).map_err(|error| not_encoded("details", error))?;
    let details = sealer.seal_text(Record::ExperimentDetails(id), &details_json);
    transaction
        .prepare_cached("UPDATE experiments SET details = ?2 WHERE experiment_id = ?1")
        .and_then(|mut statement| statement.execute(params![id, details]))
        .with_context(|| format!("record the details of experiment {id}"))?;
    Ok(ExperimentRecord { id: from_sql_integer(id), finished_at: now, experiment: experiment.clone() })
}

/// The newest experiments first, at most `limit`.
pub(crate) fn experiments(
    transaction: &Transaction<'_>,
    sealer: &Sealer,
    limit: usize,
) -> Result<Vec<ExperimentRecord>> {
    let rows = transaction
        .prepare_cached(&format!("SELECT {COLUMNS} FROM experiments ORDER BY experiment_id DESC LIMIT ?1"))
        .and_then(|mut statement| {
            statement.query_map(params![limit_to_sql(limit)], stored_row)?.collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("list the experiments")?;
    rows.into_iter().map(|row| open_row(sealer, row)).collect()
}

/// One experiment; `NotFound` for an unknown id.
pub(crate) fn experiment(transaction: &Transaction<'_>, sealer: &Sealer, id: u64) -> Result<ExperimentRecord> {
    let row = transaction
        .prepare_cached(&format!("SELECT {COLUMNS} FROM experiments WHERE experiment_id = ?1"))
        .and_then(|mut statement| statement.query_row(params![to_sql_integer(id)], stored_row).optional())
        .with_context(|| format!("read experiment {id}"))?
        .ok_or_else(|| StateError::not_found("experiment", id))?;
    open_row(sealer, row)
}

/// A row as stored: every column, the details still sealed.
struct StoredRow {
    id: i64,
    name: String,
    file_fingerprint: String,
    trigger: String,
    outcome: String,
    deployment_version: Option<i64>,
    started_at: i64,
    finished_at: i64,
    baseline: String,
    variants: String,
    details: String,
}

fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        id: row.get(0)?,
        name: row.get(1)?,
        file_fingerprint: row.get(2)?,
        trigger: row.get(3)?,
        outcome: row.get(4)?,
        deployment_version: row.get(5)?,
        started_at: row.get(6)?,
        finished_at: row.get(7)?,
        baseline: row.get(8)?,
        variants: row.get(9)?,
        details: row.get(10)?,
    })
}

fn open_row(sealer: &Sealer, row: StoredRow) -> Result<ExperimentRecord> {
    let record = Record::ExperimentDetails(row.id);
    let details_json = sealer.open_text(record, row.details)?;
    let details: ExperimentDetails = serde_json::from_str(&details_json)
        .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })?;
    let variants: Vec<String> = serde_json::from_str(&row.variants).map_err(|error| {
        StateError::Backend(format!("the variants of experiment {} are not a JSON list: {error}", row.id))
    })?;
    let outcome = ExperimentOutcome::parse(&row.outcome).ok_or_else(|| {
        StateError::Backend(format!("experiment {} has an unknown outcome `{}`", row.id, row.outcome))
    })?;
    Ok(ExperimentRecord {
        id: from_sql_integer(row.id),
        finished_at: Timestamp::from_millis(row.finished_at),
        experiment: Experiment {
            name: row.name,
            file_fingerprint: row.file_fingerprint,
            trigger: row.trigger,
            outcome,
            deployment_version: row.deployment_version.map(from_sql_integer),
            started_at: Timestamp::from_millis(row.started_at),
            baseline: row.baseline,
            variants,
            details,
        },
    })
}

fn not_encoded(what: &str, error: serde_json::Error) -> StateError {
    StateError::Backend(format!("could not encode the {what} of an experiment: {error}"))
}
