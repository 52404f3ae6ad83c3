//! The latest audits in SQL: `audits` (one row per audit: when, what ran it,
//! how many resources it saw) and `audit_findings` (its findings in order).
//!
//! Every function runs inside the transaction the caller opened, so each
//! trait method is one commit. Findings name resources and say what is wrong;
//! they hold no customer payload, so they are stored as they are.

use mayfly_core::Timestamp;
use mayfly_state::{AUDITS_KEPT, AuditFinding, AuditRecord, NewAudit, Result};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{from_sql_integer, limit_to_sql, to_sql_integer};

/// Insert the audit and its findings, then forget the audits older than the newest [`AUDITS_KEPT`].
pub(crate) fn record_audit(transaction: &Transaction<'_>, audit: &NewAudit, now: Timestamp) -> Result<AuditRecord> {
    transaction
        .prepare_cached("INSERT INTO audits (at, trigger_source, resources_checked) VALUES (?1, ?2, ?3)")
        .and_then(|mut statement| {
            statement.execute(params![now.as_millis(), audit.trigger, to_sql_integer(audit.resources_checked)])
        })
        .context("record the audit")?;
    let id = transaction.last_insert_rowid();
    {
        let mut insert = transaction
            .prepare_cached(
                "INSERT INTO audit_findings (audit_id, position, rule, severity, resource_kind, resource, message, remedy) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .context("prepare to record the audit's findings")?;
        for (position, finding) in audit.findings.iter().enumerate() {
            insert
                .execute(params![
                    id,
                    limit_to_sql(position),
                    finding.rule,
                    finding.severity.as_str(),
                    finding.resource_kind,
                    finding.resource,
                    finding.message,
                    finding.remedy,
                ])
                .with_context(|| format!("record finding {position} of the audit"))?;
        }
    }
    // Findings go with their audit (ON DELETE CASCADE).
    transaction
        .prepare_cached(
            "DELETE FROM audits WHERE audit_id NOT IN (SELECT audit_id FROM audits ORDER BY audit_id DESC LIMIT ?1)",
        )
        .and_then(|mut statement| statement.execute(params![limit_to_sql(AUDITS_KEPT)]))
        .context("forget the oldest audits")?;
    Ok(AuditRecord {
        id: from_sql_integer(id),
        at: now,
        trigger: audit.trigger.clone(),
        resources_checked: audit.resources_checked,
        findings: audit.findings.clone(),
    })
}

/// The newest audit with its findings in order, if any.
pub(crate) fn latest_audit(transaction: &Transaction<'_>) -> Result<Option<AuditRecord>> {
    let header = transaction
        .prepare_cached(
            "SELECT audit_id, at, trigger_source, resources_checked FROM audits ORDER BY audit_id DESC LIMIT 1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        Timestamp::from_millis(row.get(1)?),
                        row.get::<_, String>(2)?,
                        from_sql_integer(row.get(3)?),
                    ))
                })
                .optional()
        })
        .context("read the latest audit")?;
    let Some((id, at, trigger, resources_checked)) = header else { return Ok(None) };
    let rows = transaction
        .prepare_cached(
            "SELECT rule, severity, resource_kind, resource, message, remedy FROM audit_findings \
             WHERE audit_id = ?1 ORDER BY position",
        )
        .and_then(|mut statement| {
            statement
                .query_map(params![id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        })
        .with_context(|| format!("read the findings of audit {id}"))?;
    let findings = rows
        .into_iter()
        .map(|(rule, severity, resource_kind, resource, message, remedy)| {
            Ok(AuditFinding { rule, severity: severity.parse()?, resource_kind, resource, message, remedy })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(AuditRecord { id: from_sql_integer(id), at, trigger, resources_checked, findings }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mayfly_state::AuditSeverity;
    use mayfly_state::prelude::*;

    use super::*;
    use crate::SqliteStore;

    /// Pruning is invisible through the trait (only the latest is read):
    /// count the rows, findings included, after recording more than are kept.
    #[test]
    fn recording_past_the_limit_forgets_the_oldest_audits_and_their_findings() {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&directory.path().join("state.db"), Arc::new(mayfly_core::SystemClock)).unwrap();
        let finding = AuditFinding {
            rule: "orphaned-resource".into(),
            severity: AuditSeverity::Violation,
            resource_kind: "process".into(),
            resource: "pid:1:2".into(),
            message: "m".into(),
            remedy: "r".into(),
        };
        for index in 0..AUDITS_KEPT + 3 {
            let audit =
                NewAudit { trigger: format!("t{index}"), resources_checked: 1, findings: vec![finding.clone(); 2] };
            store.record_audit(&audit).unwrap();
        }
        let connection = store.lock_connection();
        let count = |sql: &str| connection.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM audits"), AUDITS_KEPT as i64);
        assert_eq!(count("SELECT COUNT(*) FROM audit_findings"), 2 * AUDITS_KEPT as i64);
        assert_eq!(count("SELECT MIN(audit_id) FROM audits"), 4, "the three oldest are gone");
    }

    /// A file written before audits existed (schema 4) opens, keeps its data and gains them.
    #[test]
    fn a_schema_4_file_is_migrated_to_audits_keeping_its_data() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.db");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            for migration in &crate::schema::MIGRATIONS[..4] {
                connection.execute_batch(migration).unwrap();
            }
            connection.execute_batch("PRAGMA user_version = 4").unwrap();
            connection
                .execute(
                    "INSERT INTO deployments (content_hash, applied_at, source, forced) VALUES ('h', 5, 'src', 0)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path, Arc::new(mayfly_core::SystemClock)).unwrap();
        assert_eq!(store.deployments().unwrap().len(), 1);
        assert_eq!(store.latest_audit().unwrap(), None);
        let recorded =
            store.record_audit(&NewAudit { trigger: "deploy".into(), resources_checked: 3, findings: vec![] });
        assert_eq!(store.latest_audit().unwrap(), Some(recorded.unwrap()));
    }
}
