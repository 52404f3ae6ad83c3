//! Runs of batch jobs: start one (as `mayfly run --detach` does, through the
//! control plane), list, inspect, cancel, and follow a run's worker logs live
//! as server-sent events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use mayfly_control::jobs::Deployed;
use mayfly_core::run::RunReport;
use mayfly_state::{RunItemCounts, RunRecord, WorkerRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::{page_limit, parse_name, rfc3339};
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::{Caller, Principal};
use crate::error::ApiError;
use crate::extract::{ApiPath, LazyQuery};

/// How often a live log stream looks for new lines.
const LOG_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A run and its item counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub job: String,
    /// `requested`, `running`, `finishing`, `succeeded` (every item done), `completed_with_failures`
    /// (every item settled, some dead-lettered), `failed`, `cancelled`, `deadline_exceeded`, `budget_exceeded`.
    pub status: String,
    /// `manual`, `api`, `alarm:<name>`, `schedule:<expr>`, `reconcile`.
    pub trigger: String,
    pub deployment_version: Option<u64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub deadline: String,
    pub error: Option<String>,
    pub items: ItemCountsView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemCountsView {
    pub total: u64,
    pub pending: u64,
    pub leased: u64,
    pub done: u64,
    pub dead_lettered: u64,
    /// Every attempt (lease) so far.
    pub attempts: u64,
}

impl From<RunItemCounts> for ItemCountsView {
    fn from(counts: RunItemCounts) -> ItemCountsView {
        ItemCountsView {
            total: counts.total,
            pending: counts.pending,
            leased: counts.leased,
            done: counts.done,
            dead_lettered: counts.dead_lettered,
            attempts: counts.attempts,
        }
    }
}

/// A worker of a run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub worker: String,
    pub started_at: String,
    pub stopped_at: Option<String>,
    /// `stopped`, `lost`, `killed`, `failed_to_start`; absent while it lives.
    pub end: Option<String>,
    pub items_done: u64,
    pub items_failed: u64,
    pub busy_seconds: f64,
    /// Its sealed log's key in the job's logs bucket.
    pub log_object: Option<String>,
}

impl From<WorkerRecord> for WorkerView {
    fn from(worker: WorkerRecord) -> WorkerView {
        WorkerView {
            worker: worker.worker,
            started_at: rfc3339(worker.started_at),
            stopped_at: worker.stopped_at.map(rfc3339),
            end: worker.end,
            items_done: worker.items_done,
            items_failed: worker.items_failed,
            busy_seconds: worker.busy.as_secs_f64(),
            log_object: worker.log_object,
        }
    }
}

/// A run with its workers and, once it has ended, its report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunView,
    pub workers: Vec<WorkerView>,
    /// The run report (items, retries, makespan, cost), once written.
    pub report: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only this job's runs.
    pub job: Option<String>,
    /// At most this many (1–1000, default 20).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunLogsQuery {
    /// Only this worker's log.
    pub worker: Option<String>,
}

fn run_view(api: &ApiState, run: RunRecord) -> Result<RunView, ApiError> {
    let counts = api.config().state.run_item_counts(&run.id)?;
    Ok(RunView {
        id: run.id,
        job: run.job.to_string(),
        status: run.status.as_str().to_owned(),
        trigger: run.trigger,
        deployment_version: run.deployment_version,
        created_at: rfc3339(run.created_at),
        started_at: run.started_at.map(rfc3339),
        finished_at: run.finished_at.map(rfc3339),
        deadline: rfc3339(run.deadline),
        error: run.error,
        items: counts.into(),
    })
}

/// Authorize `scope` for a run: the token first (so nothing about runs leaks
/// to a caller without the scope), then the run's job against the token's limits.
fn authorize_run(
    api: &ApiState,
    caller: &Caller,
    scope: Scope,
    run: &str,
    what: &str,
) -> Result<(Principal, RunRecord), ApiError> {
    let principal = api.authorize_caller(caller, scope, Resource::Unlimited, format!("run/{run}{what}"))?;
    let record = api.config().state.run(run)?;
    if let Err(error) = principal.permits(scope, Resource::Job(record.job.as_str())) {
        caller.note.set_outcome(error.outcome());
        return Err(error.into());
    }
    caller.note.set_resource(format!("job/{}/run/{run}{what}", record.job));
    Ok((principal, record))
}

/// Start a run of a job: record it and start its coordinator, then answer at once.
#[utoipa::path(post, path = "/v1/jobs/{job}/runs", tag = "runs", operation_id = "start_run",
    params(("job" = String, Path, description = "The job")),
    responses((status = 201, description = "Started", body = RunView)))]
pub async fn start_run(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(job): ApiPath<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let principal = api.authorize_caller(&caller, Scope::RunsWrite, Resource::Job(&job), format!("job/{job}/runs"))?;
    let name = parse_name("job", &job)?;
    let config = api.config();
    let run = mayfly_control::jobs::start_run(
        config.state.as_ref(),
        config.provisioner.as_ref(),
        &config.coordinator_launch,
        Deployed { architecture: &config.architecture, version: config.deployment_version },
        &name,
        &format!("api:{}", principal.token_id),
        config.clock.as_ref(),
    )
    .await?;
    caller.note.set_resource(format!("job/{job}/run/{}", run.id));
    Ok((StatusCode::CREATED, Json(run_view(&api, run)?)))
}

/// List runs, newest first (only of the jobs the token may see).
#[utoipa::path(get, path = "/v1/runs", tag = "runs", operation_id = "list_runs", params(ListRunsQuery),
    responses((status = 200, description = "Runs, newest first", body = RunList)))]
pub async fn list_runs(
    State(api): State<ApiState>,
    caller: Caller,
    query: LazyQuery,
) -> Result<Json<RunList>, ApiError> {
    let principal = api.authorize_caller(&caller, Scope::RunsRead, Resource::Unlimited, "runs")?;
    let query: ListRunsQuery = query.parse()?;
    if let Some(job) = &query.job {
        caller.note.set_resource(format!("job/{job}/runs"));
        if let Err(error) = principal.permits(Scope::RunsRead, Resource::Job(job)) {
            caller.note.set_outcome(error.outcome());
            return Err(error.into());
        }
    }
    let limit = page_limit(query.limit, 20, 1_000)?;
    let job = query.job.as_deref().map(|job| parse_name("job", job)).transpose()?;
    // A token limited to some jobs sees only theirs: ask for more and keep those.
    let wanted = if principal.grant.jobs.is_empty() || job.is_some() { limit } else { limit.saturating_mul(20) };
    let runs = api.config().state.runs(job.as_ref(), wanted)?;
    let runs = runs
        .into_iter()
        .filter(|run| principal.grant.allows_job(run.job.as_str()))
        .take(limit)
        .map(|run| run_view(&api, run))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(RunList { runs }))
}

/// A run: its status and counts, its workers, and its report once it has ended.
#[utoipa::path(get, path = "/v1/runs/{run}", tag = "runs", operation_id = "get_run",
    params(("run" = String, Path, description = "The run id")),
    responses((status = 200, description = "The run", body = RunDetail)))]
pub async fn get_run(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let (_, record) = authorize_run(&api, &caller, Scope::RunsRead, &run, "")?;
    let workers = api.config().state.run_workers(&run)?.into_iter().map(WorkerView::from).collect();
    let report = record
        .report
        .as_deref()
        .and_then(|report| serde_json::from_str::<RunReport>(report).ok())
        .and_then(|report| serde_json::to_value(report).ok());
    Ok(Json(RunDetail { run: run_view(&api, record)?, workers, report }))
}

/// Cancel a run that is still going: it ends `cancelled` and its processes are stopped.
#[utoipa::path(post, path = "/v1/runs/{run}/cancel", tag = "runs", operation_id = "cancel_run",
    params(("run" = String, Path, description = "The run id")),
    responses((status = 200, description = "Cancelled", body = RunView)))]
pub async fn cancel_run(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
) -> Result<Json<RunView>, ApiError> {
    let (principal, _) = authorize_run(&api, &caller, Scope::RunsWrite, &run, "/cancel")?;
    let reason = format!("cancelled through the API by token {} ({})", principal.token_id, principal.name);
    let (cancelled, _) =
        mayfly_control::jobs::cancel_run(api.config().state.as_ref(), &api.config().fleet, &run, &reason).await?;
    Ok(Json(run_view(&api, cancelled)?))
}

/// One line of a worker's log, as a server-sent event's data.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub worker: String,
    pub line: String,
}

/// Follow a run's worker logs as server-sent events: `log` events (data: a
/// `LogLine`) as lines arrive, then one `end` event (data: the run's final
/// status) when the run has ended and its sealed logs were sent.
#[utoipa::path(get, path = "/v1/runs/{run}/logs", tag = "runs", operation_id = "stream_run_logs",
    params(("run" = String, Path, description = "The run id"), RunLogsQuery),
    responses((status = 200, description = "A text/event-stream of `log` events, then `end`", content_type = "text/event-stream", body = String)))]
pub async fn stream_run_logs(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(run): ApiPath<String>,
    query: LazyQuery,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (_, record) = authorize_run(&api, &caller, Scope::LogsRead, &run, "/logs")?;
    let query: RunLogsQuery = query.parse()?;
    let (sender, receiver) = mpsc::channel::<Event>(64);
    tokio::spawn(follow_logs(api, record, query.worker, sender));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Send a run's log lines to `sender` until the run ends (then its sealed
/// logs' remainder and an `end` event), or until the client goes away.
async fn follow_logs(api: ApiState, record: RunRecord, worker: Option<String>, sender: mpsc::Sender<Event>) {
    let config = api.config();
    let run = record.id.clone();
    let run_dir = mayfly_control::jobs::run_dir(&config.data_dir, &run);
    // Plaintext bytes already sent, per worker.
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    let mut status = record.status;
    while !status.is_finished() {
        let mut workers: Vec<String> = std::fs::read_dir(run_dir.join("workers"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|entry| {
                        entry.file_name().to_str().and_then(|n| n.strip_suffix(".log")).map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        workers.retain(|name| worker.as_deref().is_none_or(|wanted| wanted == name));
        workers.sort();
        for name in workers {
            // The run may end (and its files go) between listing and reading.
            let Ok(plain) = mayfly_jobs::logs::read_live(&run_dir, &run, &name, config.keyring.as_deref()) else {
                continue;
            };
            if !send_new_lines(&sender, &name, &plain, sent.entry(name.clone()).or_insert(0)).await {
                return;
            }
        }
        tokio::time::sleep(LOG_POLL_INTERVAL).await;
        status = match config.state.run(&run) {
            Ok(record) => record.status,
            Err(error) => {
                tracing::error!(run, error = %error, "cannot follow the run's logs");
                return;
            }
        };
    }
    send_sealed_remainder(&api, &record, worker.as_deref(), &mut sent, &sender).await;
    let end = serde_json::json!({"run": run, "status": status.as_str()});
    let _ = sender.send(Event::default().event("end").data(end.to_string())).await;
}

/// Send the lines of `plain` past `*sent` bytes (whole lines only while the log grows); false if the client left.
async fn send_new_lines(sender: &mpsc::Sender<Event>, worker: &str, plain: &[u8], sent: &mut usize) -> bool {
    if plain.len() <= *sent {
        return true;
    }
    let fresh = &plain[*sent..];
    let complete = fresh.iter().rposition(|byte| *byte == b'\n').map_or(0, |last| last + 1);
    for line in String::from_utf8_lossy(&fresh[..complete]).lines() {
        let data = LogLine { worker: worker.to_owned(), line: line.to_owned() };
        let Ok(data) = serde_json::to_string(&data) else { continue };
        if sender.send(Event::default().event("log").data(data)).await.is_err() {
            return false;
        }
    }
    *sent += complete;
    true
}

/// After a run ended: what its sealed logs hold beyond what was sent live.
async fn send_sealed_remainder(
    api: &ApiState,
    record: &RunRecord,
    worker: Option<&str>,
    sent: &mut BTreeMap<String, usize>,
    sender: &mpsc::Sender<Event>,
) {
    let config = api.config();
    let Some(bucket) = config.architecture.jobs.get(&record.job).and_then(|job| job.logs.clone()) else { return };
    let Ok(workers) = config.state.run_workers(&record.id) else { return };
    for stored in workers.iter().filter(|w| worker.is_none_or(|name| w.worker == name)) {
        let Some(key) = &stored.log_object else { continue };
        let plain = match config.buckets.get_bytes(&bucket, key).await {
            Ok((_, compressed)) => mayfly_jobs::logs::unseal(&compressed, stored.log_sha256.as_deref()),
            Err(error) => Err(error.to_string()),
        };
        match plain {
            Ok(mut plain) => {
                if !plain.ends_with(b"\n") {
                    plain.push(b'\n');
                }
                if !send_new_lines(sender, &stored.worker, &plain, sent.entry(stored.worker.clone()).or_insert(0)).await
                {
                    return;
                }
            }
            Err(error) => {
                tracing::error!(run = %record.id, worker = %stored.worker, error = %error, "a sealed log cannot be read");
                let data = serde_json::json!({"worker": stored.worker, "error": format!("the sealed log {bucket}/{key} cannot be read: {error}")});
                let _ = sender.send(Event::default().event("error").data(data.to_string())).await;
            }
        }
    }
}
