//! The authenticated HTTPS API of one project, versioned under `/v1`.
//!
//! - [`router`] builds every `/v1` route (objects, messages, queue stats,
//!   invocations, runs, results, live run logs as server-sent events, the
//!   access log, the project's own `[[api.routes]]` under `/v1/routes`) and
//!   serves the OpenAPI document generated from the handlers at
//!   `/v1/openapi.json`. It leaves `/` and every path outside `/v1` free, so
//!   another router (the dashboard) can be merged next to it.
//! - [`following_router`] ([`follow`]) serves the same routes for whichever
//!   deployment was recorded last, switching within about a second of a
//!   deploy; every `/v1` response names its deployment (`mayfly-deployment`).
//! - [`serve::serve`] serves any router over TLS only ([`tls`]).
//! - Every request under `/v1` is checked against a bearer token
//!   ([`access`]: scopes and limits, pure; [`auth`]: the store) and lands in
//!   the append-only access log ([`access_log`]) before it is answered,
//!   refused requests too.
//!
//! Only this crate knows HTTP and the API's JSON.

pub mod access;
pub mod access_log;
pub mod auth;
pub mod error;
mod extract;
pub mod follow;
pub mod metrics;
mod openapi;
mod routes;
pub mod serve;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::Keyring;
use mayfly_control::jobs::CoordinatorLaunch;
use mayfly_core::Clock;
use mayfly_runtime::Invoker;
use mayfly_spec::Architecture;
use mayfly_state::{AccessRecord, StateStore};

pub use crate::access::{Grant, Resource, Scope};
pub use crate::access_log::{AccessLog, AccessLogError};
pub use crate::auth::{AuthError, Principal};
pub use crate::error::{ApiError, ErrorBody};
pub use crate::follow::{DEPLOYMENT_HEADER, FleetForDeployment, FleetUnavailable, following_router};
pub use crate::openapi::openapi_document;

/// Every route of the API starts with this.
pub const API_PREFIX: &str = "/v1";
/// The project's `[[api.routes]]` are served under this prefix.
pub const USER_ROUTES_PREFIX: &str = "/v1/routes";

/// Limits on what a request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// The largest object a PUT may store, in bytes.
    pub max_object_size: u64,
    /// The largest JSON body (messages, invocation events), in bytes.
    pub max_json_body: usize,
    /// The largest body sent to a `[[api.routes]]` function (API Gateway's is 10 MB; Lambda's payload 6 MB).
    pub max_route_body: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits { max_object_size: 5 << 30, max_json_body: 1 << 20, max_route_body: 6 << 20 }
    }
}

/// Everything the API runs against.
#[derive(Clone)]
pub struct ApiConfig {
    /// The deployed architecture (from the recorded deployment). [`router`]
    /// serves this one; [`following_router`] starts with it and replaces it
    /// with each deployment recorded later.
    pub architecture: Arc<Architecture>,
    pub deployment_version: Option<u64>,
    pub state: Arc<dyn StateStore>,
    pub buckets: Buckets,
    /// Runs functions for the invoke endpoint and `[[api.routes]]`; instances stay warm between requests.
    pub invoker: Invoker,
    /// Starts the coordinators of runs (local processes).
    pub provisioner: Arc<dyn mayfly_fleet::Provisioner>,
    /// Every provisioner a run may hold resources in (local processes, Docker
    /// containers): cancelling a run stops what it has in each. Derived from
    /// `architecture`; [`following_router`] derives it anew for each deployment.
    pub fleet: Vec<Arc<dyn mayfly_fleet::Provisioner>>,
    /// Derives `fleet` from a new deployment's architecture.
    pub fleet_for_deployment: Arc<dyn FleetForDeployment>,
    pub coordinator_launch: CoordinatorLaunch,
    /// The project directory: functions' working directory.
    pub project_root: PathBuf,
    /// `.mayfly/`: live run logs are under `runs/<run>/`.
    pub data_dir: PathBuf,
    /// The `mayfly` executable functions may call.
    pub mayfly_bin: PathBuf,
    /// Decrypts live run logs; `None` for a project without encryption.
    pub keyring: Option<Arc<Keyring>>,
    pub clock: Arc<dyn Clock>,
    pub limits: ApiLimits,
}

/// The API's shared state: its configuration and the access log's writer. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<ApiInner>,
}

struct ApiInner {
    config: ApiConfig,
    access_log: AccessLog,
    requests: metrics::RequestMetrics,
}

impl ApiState {
    /// The API's state; `access_log` appends every access (give it a store
    /// handle of its own, see [`AccessLog::start`]).
    pub fn new(config: ApiConfig, access_log: AccessLog) -> ApiState {
        ApiState { inner: Arc::new(ApiInner { config, access_log, requests: metrics::RequestMetrics::default() }) }
    }

    /// The same server with another configuration (a new deployment's):
    /// the access log and the request counters are shared.
    pub fn with_config(&self, config: ApiConfig) -> ApiState {
        let (access_log, requests) = (self.inner.access_log.clone(), self.inner.requests.clone());
        ApiState { inner: Arc::new(ApiInner { config, access_log, requests }) }
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    pub fn access_log(&self) -> &AccessLog {
        &self.inner.access_log
    }

    /// This server's request counters ([`metrics`]).
    pub fn request_metrics(&self) -> &metrics::RequestMetrics {
        &self.inner.requests
    }

    /// Check `token` (the part after `Bearer `) for `scope` on `resource`
    /// WITHOUT recording anything: for callers that record the access
    /// themselves (the `/v1` routes do, in their middleware).
    pub fn check(&self, token: Option<&str>, scope: Scope, resource: Resource<'_>) -> Result<Principal, AuthError> {
        let principal = auth::check_token(self.config().state.as_ref(), self.config().clock.now(), token)?;
        principal.permits(scope, resource)?;
        Ok(principal)
    }

    /// Check `token` for `scope` on `resource` and record the access — allowed
    /// or refused — in the access log, blocking until the record is committed.
    /// `path` is what was asked for (e.g. the dashboard page). For code
    /// outside `/v1`, e.g. the dashboard; a refusal is recorded with the
    /// status it would answer (401/403).
    pub fn authorize(
        &self,
        token: &str,
        scope: Scope,
        resource: Resource<'_>,
        path: &str,
    ) -> Result<Principal, AuthError> {
        let checked = self.check(Some(token).filter(|token| !token.is_empty()), scope, resource);
        let (token_id, status, outcome) = match &checked {
            Ok(principal) => (Some(principal.token_id.clone()), 200, "ok".to_owned()),
            Err(error) => (error.token_id().map(str::to_owned), error.status().as_u16(), error.outcome()),
        };
        let record = AccessRecord {
            at: self.config().clock.now(),
            token_id,
            client: "dashboard".to_owned(),
            method: "GET".to_owned(),
            path: path.to_owned(),
            resource: describe_resource(scope, resource),
            status,
            outcome,
        };
        self.access_log().append_blocking(record).map_err(|error| {
            AuthError::Store(mayfly_state::StateError::Backend(format!("the access cannot be recorded: {error}")))
        })?;
        checked
    }

    /// Check the caller of a `/v1` request and note who it is and what it
    /// asked for (`label`) in its access record. Errors are the 401/403 to answer.
    pub(crate) fn authorize_caller(
        &self,
        caller: &auth::Caller,
        scope: Scope,
        resource: Resource<'_>,
        label: impl Into<String>,
    ) -> Result<Principal, ApiError> {
        caller.note.set_resource(label);
        match self.check(caller.token.as_deref(), scope, resource) {
            Ok(principal) => {
                caller.note.set_token(Some(&principal.token_id));
                Ok(principal)
            }
            Err(error) => {
                caller.note.set_token(error.token_id());
                caller.note.set_outcome(error.outcome());
                Err(ApiError::from(error))
            }
        }
    }
}

fn describe_resource(scope: Scope, resource: Resource<'_>) -> String {
    match resource {
        Resource::Job(job) => format!("{scope} job/{job}"),
        Resource::Bucket(bucket) => format!("{scope} bucket/{bucket}"),
        Resource::Unlimited => scope.to_string(),
    }
}

/// The `/v1` router with its state, ready to merge with other routers and
/// serve with [`serve::serve`]. Every route but `/v1/openapi.json` needs a token.
pub fn router(state: ApiState) -> Router {
    let (router, document) = routes::api_router(&state.config().architecture).split_for_parts();
    let document = openapi::finish(document, &state.config().architecture);
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .route(metrics::METRICS_PATH, axum::routing::get(metrics::scrape))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), record_access))
        .with_state(state)
}

/// Middleware on every `/v1` request: give the handler an [`auth::AccessNote`],
/// and after it answered, append the access record and wait for its commit
/// before the response leaves. If the record cannot be written the response
/// is withheld and replaced by a 500.
async fn record_access(State(api): State<ApiState>, mut request: Request, next: Next) -> Response {
    let note = auth::AccessNote::default();
    request.extensions_mut().insert(note.clone());
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| path.clone(), |matched| matched.as_str().to_owned());
    let began = std::time::Instant::now();
    let client = request
        .extensions()
        .get::<serve::ClientAddr>()
        .map_or_else(|| "unknown".to_owned(), |client| client.0.to_string());
    let response = next.run(request).await;
    let status = response.status();
    api.request_metrics().observe(&method, &route, status, began.elapsed().as_secs_f64());
    let fields = note.fields();
    let outcome = fields.outcome.unwrap_or_else(|| match response.extensions().get::<error::ErrorOutcome>() {
        Some(error::ErrorOutcome(message)) => format!("error: {message}"),
        None if status.is_success() => "ok".to_owned(),
        None => format!("error: {status}"),
    });
    let record = AccessRecord {
        at: api.config().clock.now(),
        token_id: fields.token_id,
        client,
        method,
        path: path.clone(),
        resource: fields.resource.unwrap_or_else(|| path.clone()),
        status: status.as_u16(),
        outcome,
    };
    match api.access_log().append(record).await {
        Ok(()) => response,
        Err(error) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{error}; the response was withheld (every access must be recorded first)"),
        )
        .into_response(),
    }
}
