//! The latest audit (`mayfly audit`, run after every deploy and every run),
//! for admins: it names every resource that breaks the policy.

use axum::Json;
use axum::extract::State;
use mayfly_state::{AuditRecord, AuditSeverity};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rfc3339;
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;

/// One thing the audit found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    /// The rule's stable name, e.g. `required-tags`.
    pub rule: String,
    /// `violation`, `warning` or `notice`.
    pub severity: String,
    /// `bucket`, `queue`, `function`, `job`, `run`, `process`, `container`, `network`, …
    pub resource_kind: String,
    pub resource: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub remedy: String,
}

/// An audit and its findings, in the order the audit gave them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: u64,
    /// RFC 3339.
    pub at: String,
    /// What ran it: `manual`, `deploy`, `run:<run id>`.
    pub trigger: String,
    pub resources_checked: u64,
    pub violations: usize,
    pub warnings: usize,
    pub findings: Vec<FindingView>,
}

/// The latest audit, or none yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LatestAudit {
    /// Absent until the first audit is recorded.
    pub audit: Option<AuditView>,
}

impl From<AuditRecord> for AuditView {
    fn from(record: AuditRecord) -> AuditView {
        AuditView {
            id: record.id,
            at: rfc3339(record.at),
            violations: record.count(AuditSeverity::Violation),
            warnings: record.count(AuditSeverity::Warning),
            trigger: record.trigger,
            resources_checked: record.resources_checked,
            findings: record
                .findings
                .into_iter()
                .map(|finding| FindingView {
                    rule: finding.rule,
                    severity: finding.severity.as_str().to_owned(),
                    resource_kind: finding.resource_kind,
                    resource: finding.resource,
                    message: finding.message,
                    remedy: finding.remedy,
                })
                .collect(),
        }
    }
}

/// The latest audit's findings (needs `admin`).
#[utoipa::path(get, path = "/v1/audit", tag = "admin", operation_id = "latest_audit",
    responses((status = 200, description = "The latest audit, if any", body = LatestAudit)))]
pub async fn latest_audit(State(api): State<ApiState>, caller: Caller) -> Result<Json<LatestAudit>, ApiError> {
    api.authorize_caller(&caller, Scope::Admin, Resource::Unlimited, "audit")?;
    Ok(Json(LatestAudit { audit: api.config().state.latest_audit()?.map(AuditView::from) }))
}
