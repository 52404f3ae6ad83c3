//! The access log, newest first, for admins.

use axum::Json;
use axum::extract::State;
use mayfly_state::StoredAccessRecord;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{page_limit, rfc3339};
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::LazyQuery;

/// One access to the API.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    pub id: u64,
    /// RFC 3339.
    pub at: String,
    /// The token, when the request named one the store knows.
    pub token_id: Option<String>,
    pub client: String,
    pub method: String,
    pub path: String,
    pub resource: String,
    pub status: u16,
    pub outcome: String,
}

impl From<StoredAccessRecord> for AccessView {
    fn from(stored: StoredAccessRecord) -> AccessView {
        let record = stored.record;
        AccessView {
            id: stored.id,
            at: rfc3339(record.at),
            token_id: record.token_id,
            client: record.client,
            method: record.method,
            path: record.path,
            resource: record.resource,
            status: record.status,
            outcome: record.outcome,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessLogPage {
    /// Newest first.
    pub records: Vec<AccessView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessLogQuery {
    /// Only records older than this id.
    pub before: Option<u64>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<usize>,
}

/// Read the access log, newest first (needs `admin`).
#[utoipa::path(get, path = "/v1/access-log", tag = "admin", operation_id = "read_access_log", params(AccessLogQuery),
    responses((status = 200, description = "A page of access records", body = AccessLogPage)))]
pub async fn read_access_log(
    State(api): State<ApiState>,
    caller: Caller,
    query: LazyQuery,
) -> Result<Json<AccessLogPage>, ApiError> {
    api.authorize_caller(&caller, Scope::Admin, Resource::Unlimited, "access-log")?;
    let query: AccessLogQuery = query.parse()?;
    let limit = page_limit(query.limit, 100, 1_000)?;
    let mut records = api.config().state.access_records(query.before, limit + 1)?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next_before = more.then(|| records.last().map(|record| record.id)).flatten();
    Ok(Json(AccessLogPage { records: records.into_iter().map(AccessView::from).collect(), next_before }))
}
