//! [`ExperimentStore`] on PostgreSQL: one `experiments` row each, what it
//! was in columns of their own (for listing) and its evidence
//! ([`ExperimentDetails`]) as JSON, sealed in a sealed store exactly as the
//! embedded store seals it (base64 text of its envelope, bound to
//! `experiment/<id>/details`), so a copied store opens on either backend.

use mayfly_core::Timestamp;
use mayfly_state::sealing::Record;
use mayfly_state::{
    Experiment, ExperimentDetails, ExperimentOutcome, ExperimentRecord, ExperimentStore, Result, StateError,
};

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer, limit_to_sql, to_sql_integer};

const COLUMNS: &str = "experiment_id, name, file_fingerprint, trigger_source, outcome, deployment_version, \
                       started_at, finished_at, baseline, variants, details";

impl ExperimentStore for PostgresStore {
    fn record_experiment(&self, experiment: &Experiment) -> Result<ExperimentRecord> {
        let now = self.now();
        let variants = serde_json::to_string(&experiment.variants).map_err(|error| not_encoded("variants", error))?;
        let details_json = serde_json::to_string(&experiment.details).map_err(|error| not_encoded("details", error))?;
        self.transact(&format!("record experiment `{}`", experiment.name), |transaction| {
            // The id first: the details are sealed bound to it.
            let id: i64 = transaction
                .query_one("SELECT nextval(pg_get_serial_sequence('experiments', 'experiment_id'))", &[])
                .context("number the experiment")?
                .get(0);
            let details = self.sealer.seal_text(Record::ExperimentDetails(id), &details_json);
            transaction
                .execute(
                    "INSERT INTO experiments (experiment_id, name, file_fingerprint, trigger_source, outcome, \
                     deployment_version, started_at, finished_at, baseline, variants, details) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    &[
                        &id,
                        &experiment.name,
                        &experiment.file_fingerprint,
                        &experiment.trigger,
                        &experiment.outcome.as_str(),
                        &experiment.deployment_version.map(to_sql_integer),
                        &experiment.started_at.as_millis(),
                        &now.as_millis(),
                        &experiment.baseline,
                        &variants,
                        &details,
                    ],
                )
                .context("record the experiment")?;
            Ok(ExperimentRecord { id: from_sql_integer(id), finished_at: now, experiment: experiment.clone() })
        })
    }

    fn experiments(&self, limit: usize) -> Result<Vec<ExperimentRecord>> {
        let rows = self.transact("list the experiments", |transaction| {
            transaction
                .query(
                    &format!("SELECT {COLUMNS} FROM experiments ORDER BY experiment_id DESC LIMIT $1"),
                    &[&limit_to_sql(limit)],
                )
                .context("list the experiments")
        })?;
        rows.iter().map(|row| self.open_row(row)).collect()
    }

    fn experiment(&self, id: u64) -> Result<ExperimentRecord> {
        let row = self.transact(&format!("read experiment {id}"), |transaction| {
            transaction
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM experiments WHERE experiment_id = $1"),
                    &[&to_sql_integer(id)],
                )
                .with_context(|| format!("read experiment {id}"))
        })?;
        let row = row.ok_or_else(|| StateError::not_found("experiment", id))?;
        self.open_row(&row)
    }
}

impl PostgresStore {
    fn open_row(&self, row: &postgres::Row) -> Result<ExperimentRecord> {
        let id: i64 = row.get(0);
        let record = Record::ExperimentDetails(id);
        let details_json = self.sealer.open_text(record, row.get(10))?;
        let details: ExperimentDetails = serde_json::from_str(&details_json)
            .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })?;
        let variants: Vec<String> = serde_json::from_str(row.get(9)).map_err(|error| {
            StateError::Backend(format!("the variants of experiment {id} are not a JSON list: {error}"))
        })?;
        let outcome_text: &str = row.get(4);
        let outcome = ExperimentOutcome::parse(outcome_text)
            .ok_or_else(|| StateError::Backend(format!("experiment {id} has an unknown outcome `{outcome_text}`")))?;
        Ok(ExperimentRecord {
            id: from_sql_integer(id),
            finished_at: Timestamp(row.get(7)),
            experiment: Experiment {
                name: row.get(1),
                file_fingerprint: row.get(2),
                trigger: row.get(3),
                outcome,
                deployment_version: row.get::<_, Option<i64>>(5).map(from_sql_integer),
                started_at: Timestamp(row.get(6)),
                baseline: row.get(8),
                variants,
                details,
            },
        })
    }
}

fn not_encoded(what: &str, error: serde_json::Error) -> StateError {
    StateError::Backend(format!("could not encode the {what} of an experiment: {error}"))
}
