//! The router and its handlers: each reads the state store on a blocking
//! thread, builds view models, and renders a page, a fragment or JSON.
//! Every response carries a strict content security policy (scripts, styles
//! and everything else only from this origin) and `Cache-Control: no-store`
//! (pages show protected data), except the two static assets.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use mayfly_core::run::ItemStatus;
use mayfly_state::{StateError, StateStore, WorkerRecord};
use serde::{Deserialize, Serialize};

use crate::DashboardState;
use crate::auth::{self, Principal};
use crate::chart;
use crate::live_logs::{self, Cursor};
use crate::model::{FunctionRow, QueueRow, RunSummary};
use crate::views::{self, Chrome, LedgerPage, LogLine, LogTail, RunDetail};

/// Items per page of a run's ledger.
pub const LEDGER_PAGE: usize = 50;
/// Runs on the runs page.
pub const RUNS_SHOWN: usize = 100;
/// Attempts drawn on a run's timeline (the latest ones).
pub const TIMELINE_ATTEMPTS: usize = 2_000;

const STYLESHEET: &str = include_str!("../assets/dashboard.css");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What can go wrong while answering.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot read the live logs of run {run}: {source}")]
    Logs { run: String, source: std::io::Error },
    #[error("the architecture deployed last does not read: {0}")]
    Deployment(String),
    #[error("a dashboard task stopped before it answered: {0}")]
    Task(String),
}

impl DashboardError {
    fn status(&self) -> StatusCode {
        match self {
            DashboardError::State(StateError::NotFound { .. }) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The dashboard, to mount at `/` (its links are absolute).
pub fn router(state: DashboardState) -> Router {
    let state = Arc::new(state);
    let signed_in = Router::new()
        .route("/", get(runs_page))
        .route("/runs.json", get(runs_progress))
        .route("/runs/{run}", get(run_page))
        .route("/runs/{run}/progress.json", get(run_progress))
        .route("/runs/{run}/timeline.svg", get(run_timeline))
        .route("/runs/{run}/workers.html", get(run_workers))
        .route("/runs/{run}/logs", get(logs_page))
        .route("/runs/{run}/logs.json", get(logs_since))
        .route("/queues", get(queues_page))
        .route("/functions", get(functions_page))
        .route("/experiments", get(experiments_page))
        .route("/experiments/{experiment}", get(experiment_page))
        .route("/audit", get(audit_page))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route(auth::SIGN_IN_PATH, get(auth::sign_in_page).post(auth::sign_in))
        .route("/sign-out", post(auth::sign_out))
        .route("/assets/dashboard.css", get(|| async { asset("text/css; charset=utf-8", STYLESHEET) }))
        .route("/assets/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .merge(signed_in)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Run `work` on a blocking thread (state store calls block).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, DashboardError> + Send + 'static,
) -> Result<T, DashboardError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| DashboardError::Task(error.to_string()))?
}

/// A rendered page, or an error page with the error's status.
async fn respond_page(
    state: Arc<DashboardState>,
    principal: Principal,
    render: impl FnOnce(&DashboardState, &Chrome<'_>) -> Result<Markup, DashboardError> + Send + 'static,
) -> Response {
    let answer = blocking(move || {
        let chrome = Chrome { project: &state.project, principal: &principal.0, now: state.clock.now() };
        match render(&state, &chrome) {
            Ok(markup) => Ok((StatusCode::OK, markup)),
            Err(error) => {
                log_failure(&error);
                let status = error.status();
                Ok((status, views::error_page(&chrome, status.as_u16(), &error.to_string())))
            }
        }
    })
    .await;
    match answer {
        Ok((status, markup)) => (status, Html(markup.into_string())).into_response(),
        Err(error) => failure(error),
    }
}

/// JSON, a fragment, or a JSON error with the error's status.
async fn respond_data<T: IntoResponse + Send + 'static>(
    state: Arc<DashboardState>,
    produce: impl FnOnce(&DashboardState) -> Result<T, DashboardError> + Send + 'static,
) -> Response {
    match blocking(move || produce(&state)).await {
        Ok(body) => body.into_response(),
        Err(error) => failure(error),
    }
}

fn failure(error: DashboardError) -> Response {
    log_failure(&error);
    (error.status(), axum::Json(serde_json::json!({ "error": error.to_string() }))).into_response()
}

fn log_failure(error: &DashboardError) {
    if error.status().is_server_error() {
        tracing::error!(error = %error, "dashboard request failed");
    } else {
        tracing::debug!(error = %error, "dashboard request refused");
    }
}

fn summary(store: &dyn StateStore, run: &str, now: mayfly_core::Timestamp) -> Result<RunSummary, DashboardError> {
    let record = store.run(run)?;
    let counts = store.run_item_counts(run)?;
    Ok(RunSummary::new(&record, counts, now))
}

async fn runs_page(State(state): State<Arc<DashboardState>>, Extension(principal): Extension<Principal>) -> Response {
    respond_page(state, principal, |state, chrome| Ok(views::runs(chrome, &latest_runs(state, chrome.now)?))).await
}

fn latest_runs(state: &DashboardState, now: mayfly_core::Timestamp) -> Result<Vec<RunSummary>, DashboardError> {
    state
        .store
        .runs(None, RUNS_SHOWN)?
        .iter()
        .map(|record| Ok(RunSummary::new(record, state.store.run_item_counts(&record.id)?, now)))
        .collect()
}

/// The progress of every run the runs page shows, by id: one poll for the whole list.
#[derive(Debug, Serialize)]
struct RunsProgress {
    runs: std::collections::BTreeMap<String, crate::model::Progress>,
}

async fn runs_progress(State(state): State<Arc<DashboardState>>) -> Response {
    respond_data(state, |state| {
        let runs = latest_runs(state, state.clock.now())?;
        Ok(axum::Json(RunsProgress { runs: runs.iter().map(|run| (run.id.clone(), run.progress())).collect() }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct LedgerQuery {
    status: Option<String>,
    after: Option<String>,
}

fn parse_item_status(status: Option<&str>) -> Result<Option<ItemStatus>, DashboardError> {
    match status.filter(|status| !status.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            DashboardError::BadRequest(format!(
                "status `{text}` is not an item status; use pending, leased, done or dead_lettered"
            ))
        }),
    }
}

fn timeline_of(
    state: &DashboardState,
    run: &RunSummary,
    now: mayfly_core::Timestamp,
) -> Result<chart::Timeline, DashboardError> {
    let workers: Vec<String> = state.store.run_workers(&run.id)?.into_iter().map(|worker| worker.worker).collect();
    let attempts = state.store.run_item_attempts(&run.id, TIMELINE_ATTEMPTS)?;
    let start = run.started_at.unwrap_or(run.created_at);
    Ok(chart::timeline(&workers, &attempts, start, run.finished_at.unwrap_or(now)))
}

async fn run_page(
    State(state): State<Arc<DashboardState>>,
    Extension(principal): Extension<Principal>,
    Path(run): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Response {
    respond_page(state, principal, move |state, chrome| {
        let status = parse_item_status(query.status.as_deref())?;
        let summary = summary(state.store.as_ref(), &run, chrome.now)?;
        let timeline = timeline_of(state, &summary, chrome.now)?;
        let workers = workers_with_live_counts(state.store.as_ref(), &run)?;
        let after = query.after.as_deref().filter(|after| !after.is_empty());
        let mut items = state.store.run_items(&run, status, after, LEDGER_PAGE + 1)?;
        let has_more = items.len() > LEDGER_PAGE;
        items.truncate(LEDGER_PAGE);
        let ledger = LedgerPage { items: &items, status, after, has_more };
        Ok(views::run(chrome, &RunDetail { run: &summary, timeline: &timeline, workers: &workers, ledger: &ledger }))
    })
    .await
}

async fn run_progress(State(state): State<Arc<DashboardState>>, Path(run): Path<String>) -> Response {
    respond_data(state, move |state| Ok(axum::Json(summary(state.store.as_ref(), &run, state.clock.now())?.progress())))
        .await
}

async fn run_timeline(State(state): State<Arc<DashboardState>>, Path(run): Path<String>) -> Response {
    respond_data(state, move |state| {
        let now = state.clock.now();
        let summary = summary(state.store.as_ref(), &run, now)?;
        let svg = chart::timeline_svg(&timeline_of(state, &summary, now)?).into_string();
        Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg))
    })
    .await
}

async fn run_workers(State(state): State<Arc<DashboardState>>, Path(run): Path<String>) -> Response {
    respond_data(state, move |state| {
        state.store.run(&run)?;
        Ok(Html(views::workers_table(&workers_with_live_counts(state.store.as_ref(), &run)?).into_string()))
    })
    .await
}

/// The run's workers with their items done and failed counted from the
/// attempts ledger: a worker's own record has its tallies only once it has
/// stopped, and a live run's table must show them as they grow.
fn workers_with_live_counts(store: &dyn StateStore, run: &str) -> Result<Vec<WorkerRecord>, DashboardError> {
    let counts = store.run_attempt_counts_by_worker(run)?;
    let mut workers = store.run_workers(run)?;
    for worker in &mut workers {
        let count = counts.get(&worker.worker).copied().unwrap_or_default();
        worker.items_done = count.done;
        worker.items_failed = count.failed;
    }
    Ok(workers)
}

fn run_dir(state: &DashboardState, run: &str) -> std::path::PathBuf {
    mayfly_control::jobs::run_dir(&state.data_dir, run)
}

async fn logs_page(
    State(state): State<Arc<DashboardState>>,
    Extension(principal): Extension<Principal>,
    Path(run): Path<String>,
) -> Response {
    respond_page(state, principal, move |state, chrome| {
        let summary = summary(state.store.as_ref(), &run, chrome.now)?;
        let workers = state.store.run_workers(&run)?;
        let (lines, cursor) = if summary.is_finished() {
            (Vec::new(), Cursor::default())
        } else {
            live_logs::read_since(&run_dir(state, &run), &run, state.keyring.as_deref(), &Cursor::default(), false)
                .map_err(|source| DashboardError::Logs { run: run.clone(), source })?
        };
        let (lines, skipped) = live_logs::tail(lines, live_logs::TAIL_LINES);
        let cursor = cursor.render();
        Ok(views::log_tail(
            chrome,
            &LogTail { run: &summary, lines: &lines, cursor: &cursor, skipped, workers: &workers },
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    cursor: Option<String>,
}

/// New lines of a run's live logs, as `logs.json` serves them.
#[derive(Debug, Serialize)]
struct NewLogLines {
    lines: Vec<LogLine>,
    /// Send it back to get the lines after these.
    cursor: String,
    /// The run has ended: no more lines will come (its logs are sealed).
    finished: bool,
}

async fn logs_since(
    State(state): State<Arc<DashboardState>>,
    Path(run): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Response {
    respond_data(state, move |state| {
        let cursor = Cursor::parse(query.cursor.as_deref().unwrap_or(""))
            .map_err(|error| DashboardError::BadRequest(error.to_string()))?;
        let finished = state.store.run(&run)?.status.is_finished();
        let (lines, cursor) =
            live_logs::read_since(&run_dir(state, &run), &run, state.keyring.as_deref(), &cursor, finished)
                .map_err(|source| DashboardError::Logs { run: run.clone(), source })?;
        Ok(axum::Json(NewLogLines { lines, cursor: cursor.render(), finished }))
    })
    .await
}

async fn queues_page(State(state): State<Arc<DashboardState>>, Extension(principal): Extension<Principal>) -> Response {
    respond_page(state, principal, |state, chrome| {
        let queues = state.store.queues()?;
        let mut rows = Vec::with_capacity(queues.len());
        for queue in &queues {
            let stats = state.store.queue_stats(&queue.name)?;
            let dead_letter = match &queue.config.dead_letter {
                None => None,
                Some(name) => match state.store.queue_stats(name) {
                    Ok(stats) => Some((name.to_string(), stats.visible + stats.in_flight + stats.delayed)),
                    // Declared but not created yet: show the name, depth 0.
                    Err(StateError::NotFound { .. }) => Some((name.to_string(), 0)),
                    Err(error) => return Err(error.into()),
                },
            };
            let is_dead_letter_queue =
                queues.iter().any(|other| other.config.dead_letter.as_ref() == Some(&queue.name));
            rows.push(QueueRow { name: queue.name.to_string(), stats, dead_letter, is_dead_letter_queue });
        }
        Ok(views::queues(chrome, &rows))
    })
    .await
}

async fn functions_page(
    State(state): State<Arc<DashboardState>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    respond_page(state, principal, |state, chrome| {
        let Some(deployment) = state.store.latest_deployment()? else {
            return Ok(views::functions(chrome, &[], false));
        };
        let architecture = mayfly_spec::parse("mayfly.toml", &deployment.source)
            .map_err(|diagnostics| DashboardError::Deployment(diagnostics.to_string()))?;
        let mut rows = Vec::with_capacity(architecture.functions.len());
        for (name, function) in &architecture.functions {
            let runtime = serde_json::to_value(function.runtime)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default();
            rows.push(FunctionRow { name: name.to_string(), runtime, stats: state.store.function_stats(name)? });
        }
        Ok(views::functions(chrome, &rows, true))
    })
    .await
}

/// Experiments on the experiments page (the newest).
pub const EXPERIMENTS_SHOWN: usize = 100;

async fn experiments_page(
    State(state): State<Arc<DashboardState>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    respond_page(state, principal, |state, chrome| {
        Ok(views::experiments(chrome, &state.store.experiments(EXPERIMENTS_SHOWN)?))
    })
    .await
}

async fn experiment_page(
    State(state): State<Arc<DashboardState>>,
    Extension(principal): Extension<Principal>,
    Path(experiment): Path<String>,
) -> Response {
    respond_page(state, principal, move |state, chrome| {
        let id: u64 = experiment.parse().map_err(|_| {
            DashboardError::BadRequest(format!("experiment `{experiment}` is not an experiment id (a number)"))
        })?;
        Ok(views::experiment(chrome, &state.store.experiment(id)?))
    })
    .await
}

async fn audit_page(State(state): State<Arc<DashboardState>>, Extension(principal): Extension<Principal>) -> Response {
    respond_page(state, principal, |state, chrome| Ok(views::audit(chrome, state.store.latest_audit()?.as_ref()))).await
}
