//! Results of a job, one per item (a re-execution replaces, never
//! duplicates): paged by item with a cursor, filterable by run and by item
//! status; and the result of one item.

use axum::Json;
use axum::extract::State;
use mayfly_core::run::ItemStatus;
use mayfly_state::{ResultRecord, RunItem};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{json_or_text, page_limit, parse_name, rfc3339};
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, LazyQuery};

/// One item's outcome: its result when done, its error when dead-lettered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultView {
    pub item: String,
    /// The run that produced it (or, for other statuses, holds the item).
    pub run: String,
    /// `done`, `dead_lettered`, `pending`, `leased`, `returned` (back in its queue).
    pub status: String,
    pub attempt: u32,
    pub worker: Option<String>,
    /// When the result was recorded (done items), RFC 3339.
    pub recorded_at: Option<String>,
    /// The function's result: its JSON, or its text as a string.
    pub result: Option<serde_json::Value>,
    /// The last error (items that are not done).
    pub error: Option<String>,
}

impl From<ResultRecord> for ResultView {
    fn from(record: ResultRecord) -> ResultView {
        ResultView {
            result: Some(json_or_text(&record.result)),
            item: record.item,
            run: record.run_id,
            status: ItemStatus::Done.as_str().to_owned(),
            attempt: record.attempt,
            worker: Some(record.worker),
            recorded_at: Some(rfc3339(record.recorded_at)),
            error: None,
        }
    }
}

impl From<RunItem> for ResultView {
    fn from(item: RunItem) -> ResultView {
        ResultView {
            item: item.item,
            run: item.run_id,
            status: item.status.as_str().to_owned(),
            attempt: item.attempts,
            worker: item.worker,
            recorded_at: None,
            result: None,
            error: item.last_error,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultPage {
    /// By item id.
    pub results: Vec<ResultView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// Only items of this run.
    pub run: Option<String>,
    /// `done` (the default: the job's results), or `dead_lettered`, `pending`, `leased`, `returned` (these need `run`).
    pub status: Option<String>,
    /// Only items whose id sorts after this (the previous page's `next_after`).
    pub after: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<usize>,
}

/// A job's results (or a run's items in another status), a page at a time.
#[utoipa::path(get, path = "/v1/jobs/{job}/results", tag = "results", operation_id = "list_results",
    params(("job" = String, Path, description = "The job"), ResultsQuery),
    responses((status = 200, description = "A page of results", body = ResultPage)))]
pub async fn list_results(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(job): ApiPath<String>,
    query: LazyQuery,
) -> Result<Json<ResultPage>, ApiError> {
    api.authorize_caller(&caller, Scope::ResultsRead, Resource::Job(&job), format!("job/{job}/results"))?;
    let query: ResultsQuery = query.parse()?;
    let name = parse_name("job", &job)?;
    let limit = page_limit(query.limit, 100, 1_000)?;
    let status = match query.status.as_deref() {
        None => ItemStatus::Done,
        Some(text) => text.parse::<ItemStatus>().map_err(|_| {
            ApiError::bad_request(format!(
                "`status` must be one of {}, not `{text}`",
                ItemStatus::ALL.map(ItemStatus::as_str).join(", ")
            ))
        })?,
    };
    let state = &api.config().state;
    // One more than asked tells whether there is a next page.
    let mut results: Vec<ResultView> = if status == ItemStatus::Done {
        state
            .results(&name, query.run.as_deref(), query.after.as_deref(), limit + 1)?
            .into_iter()
            .map(Into::into)
            .collect()
    } else {
        let Some(run) = query.run.as_deref() else {
            return Err(ApiError::bad_request(format!(
                "`status={}` lists a run's items: give `run` too",
                status.as_str()
            )));
        };
        let record = state.run(run)?;
        if record.job != name {
            return Err(ApiError::not_found(format!("run `{run}` is a run of job `{}`, not of `{job}`", record.job)));
        }
        state.run_items(run, Some(status), query.after.as_deref(), limit + 1)?.into_iter().map(Into::into).collect()
    };
    let more = results.len() > limit;
    results.truncate(limit);
    let next_after = more.then(|| results.last().map(|result| result.item.clone())).flatten();
    Ok(Json(ResultPage { results, next_after }))
}

/// The result of one item of a job.
#[utoipa::path(get, path = "/v1/jobs/{job}/results/{item}", tag = "results", operation_id = "get_result",
    params(("job" = String, Path, description = "The job"),
           ("item" = String, Path, description = "The item id, percent-encoded as one segment")),
    responses((status = 200, description = "The item's result", body = ResultView)))]
pub async fn get_result(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath((job, item)): ApiPath<(String, String)>,
) -> Result<Json<ResultView>, ApiError> {
    api.authorize_caller(&caller, Scope::ResultsRead, Resource::Job(&job), format!("job/{job}/result/{item}"))?;
    let name = parse_name("job", &job)?;
    Ok(Json(api.config().state.result(&name, &item)?.into()))
}
