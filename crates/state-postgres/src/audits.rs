//! [`AuditStore`] on PostgreSQL: `audits` (one row per audit) and
//! `audit_findings` (its findings in order). Findings name resources and say
//! what is wrong; they hold no customer payload, so they are stored as they are.

use mayfly_core::Timestamp;
use mayfly_state::{AUDITS_KEPT, AuditFinding, AuditRecord, AuditStore, NewAudit, Result};

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer, limit_to_sql, to_sql_integer};

impl AuditStore for PostgresStore {
    fn record_audit(&self, audit: &NewAudit) -> Result<AuditRecord> {
        let now = self.now();
        self.transact("record an audit", |transaction| {
            let id: i64 = transaction
                .query_one(
                    "INSERT INTO audits (at, trigger_source, resources_checked) VALUES ($1, $2, $3) RETURNING audit_id",
                    &[&now.as_millis(), &audit.trigger, &to_sql_integer(audit.resources_checked)],
                )
                .context("record the audit")?
                .get(0);
            let insert = transaction
                .prepare(
                    "INSERT INTO audit_findings (audit_id, position, rule, severity, resource_kind, resource, message, \
                     remedy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .context("prepare to record the audit's findings")?;
            for (position, finding) in audit.findings.iter().enumerate() {
                transaction
                    .execute(
                        &insert,
                        &[
                            &id,
                            &limit_to_sql(position),
                            &finding.rule,
                            &finding.severity.as_str(),
                            &finding.resource_kind,
                            &finding.resource,
                            &finding.message,
                            &finding.remedy,
                        ],
                    )
                    .with_context(|| format!("record finding {position} of the audit"))?;
            }
            // Findings go with their audit (ON DELETE CASCADE).
            transaction
                .execute(
                    "DELETE FROM audits WHERE audit_id NOT IN \
                     (SELECT audit_id FROM audits ORDER BY audit_id DESC LIMIT $1)",
                    &[&limit_to_sql(AUDITS_KEPT)],
                )
                .context("forget the oldest audits")?;
            Ok(AuditRecord {
                id: from_sql_integer(id),
                at: now,
                trigger: audit.trigger.clone(),
                resources_checked: audit.resources_checked,
                findings: audit.findings.clone(),
            })
        })
    }

    fn latest_audit(&self) -> Result<Option<AuditRecord>> {
        self.transact("read the latest audit", |transaction| {
            let Some(header) = transaction
                .query_opt(
                    "SELECT audit_id, at, trigger_source, resources_checked FROM audits ORDER BY audit_id DESC LIMIT 1",
                    &[],
                )
                .context("read the latest audit")?
            else {
                return Ok(None);
            };
            let id: i64 = header.get(0);
            let rows = transaction
                .query(
                    "SELECT rule, severity, resource_kind, resource, message, remedy FROM audit_findings \
                     WHERE audit_id = $1 ORDER BY position",
                    &[&id],
                )
                .with_context(|| format!("read the findings of audit {id}"))?;
            let findings = rows
                .iter()
                .map(|row| {
                    Ok(AuditFinding {
                        rule: row.get(0),
                        severity: row.get::<_, &str>(1).parse()?,
                        resource_kind: row.get(2),
                        resource: row.get(3),
                        message: row.get(4),
                        remedy: row.get(5),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(AuditRecord {
                id: from_sql_integer(id),
                at: Timestamp(header.get(1)),
                trigger: header.get(2),
                resources_checked: from_sql_integer(header.get(3)),
                findings,
            }))
        })
    }
}
