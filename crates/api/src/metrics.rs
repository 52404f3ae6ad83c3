//! Prometheus metrics at `/metrics`, token-protected (scope `metrics:read`).
//!
//! Everything but the API's own request counters is read from the state
//! store at scrape time, so the figures are the same whichever process
//! recorded them (the control plane, a coordinator, a `mayfly invoke`) and
//! whichever API server is scraped: queue depths and ages, each function's
//! invocations, errors, cold starts and duration histogram from the ledger,
//! each unfinished run's items, workers and coordinator lease, and each
//! job's completed items over every run (a counter, for items per second). The
//! request counters and the throttle counts are this server's, since it
//! started.
//!
//! Encoded with `prometheus-client` (the Prometheus project's Rust client) in
//! the OpenMetrics text format, which Prometheus scrapes natively.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mayfly_core::run::RunStatus;
use mayfly_state::{DURATION_BUCKETS_MICROS, FunctionStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;

/// The path Prometheus scrapes by default.
pub const METRICS_PATH: &str = "/metrics";

/// The most unfinished runs described, newest first.
const RUNS_DESCRIBED: usize = 100;

/// Label pairs, in order.
type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The API's own request counters, kept for the life of the server (shared
/// by every deployment it serves).
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> RequestMetrics {
        RequestMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
        }
    }
}

impl RequestMetrics {
    /// Count one answered request. `route` is the matched route's template
    /// (never a path with names in it), so the label set stays small.
    pub(crate) fn observe(&self, method: &str, route: &str, status: StatusCode, seconds: f64) {
        let labels =
            vec![("method", method.to_owned()), ("route", route.to_owned()), ("status", status.as_u16().to_string())];
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&vec![("method", method.to_owned()), ("route", route.to_owned())])
            .observe(seconds);
    }
}

/// `GET /metrics`: every metric, read now.
pub(crate) async fn scrape(State(api): State<ApiState>, caller: Caller) -> Result<Response, ApiError> {
    api.authorize_caller(&caller, Scope::MetricsRead, Resource::Unlimited, "metrics")?;
    let body = tokio::task::spawn_blocking(move || render(&api))
        .await
        .map_err(|error| ApiError::internal(format!("the metrics could not be gathered: {error}")))??;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// The exposition text of every metric.
fn render(api: &ApiState) -> Result<String, ApiError> {
    let config = api.config();
    let state = config.state.as_ref();
    let mut registry = Registry::with_prefix("mayfly");

    let deployment = Gauge::<i64>::default();
    deployment.set(config.deployment_version.map_or(0, |version| i64::try_from(version).unwrap_or(i64::MAX)));
    registry.register("deployment_version", "The deployment this server serves (0: none)", deployment);

    let messages = Family::<Labels, Gauge>::default();
    let oldest = Family::<Labels, FloatGauge>::default();
    for queue in state.queues()? {
        let stats = state.queue_stats(&queue.name)?;
        let name = queue.name.to_string();
        for (kind, count) in [("visible", stats.visible), ("in_flight", stats.in_flight), ("delayed", stats.delayed)] {
            messages.get_or_create(&vec![("queue", name.clone()), ("state", kind.to_owned())]).set(gauge_value(count));
        }
        oldest.get_or_create(&vec![("queue", name)]).set(stats.oldest_age.map_or(0.0, |age| age.as_secs_f64()));
    }
    registry.register("queue_messages", "Messages in each queue, by state", messages);
    registry.register(
        "queue_oldest_message_age_seconds",
        "Age of each queue's oldest message, any state (0: empty)",
        oldest,
    );

    let invocations = Family::<Labels, Counter>::default();
    let errors = Family::<Labels, Counter>::default();
    let cold_starts = Family::<Labels, Counter>::default();
    let throttles = Family::<Labels, Counter>::default();
    let mut durations = LedgerDurations::default();
    for function in config.architecture.functions.keys() {
        let stats = state.function_stats(function)?;
        let labels = vec![("function", function.to_string())];
        invocations.get_or_create(&labels).inc_by(stats.invocations);
        errors.get_or_create(&labels).inc_by(stats.errors);
        cold_starts.get_or_create(&labels).inc_by(stats.cold_starts);
        throttles.get_or_create(&labels).inc_by(config.invoker.throttled_invocations(function));
        durations.functions.push((labels, stats));
    }
    registry.register("function_invocations", "Invocations in the ledger, per function", invocations);
    registry.register("function_errors", "Invocations in the ledger that did not succeed, per function", errors);
    registry.register("function_cold_starts", "Invocations in the ledger that started an instance", cold_starts);
    registry.register(
        "function_throttles",
        "Invocations that waited for a free instance of a function at its concurrency cap, in this server's process since it started",
        throttles,
    );
    registry.register_collector(Box::new(durations));

    let items = Family::<Labels, Gauge>::default();
    let workers = Family::<Labels, Gauge>::default();
    let lease = Family::<Labels, FloatGauge>::default();
    let now = config.clock.now();
    for run in state.runs(None, RUNS_DESCRIBED)?.into_iter().filter(|run| !run.status.is_finished()) {
        let counts = state.run_item_counts(&run.id)?;
        let base = || vec![("job", run.job.to_string()), ("run", run.id.clone())];
        for (status, count) in [
            ("pending", counts.pending),
            ("leased", counts.leased),
            ("done", counts.done),
            ("dead_lettered", counts.dead_lettered),
            ("returned", counts.returned),
        ] {
            let mut labels = base();
            labels.push(("status", status.to_owned()));
            items.get_or_create(&labels).set(gauge_value(count));
        }
        let live = state.run_workers(&run.id)?.iter().filter(|worker| worker.stopped_at.is_none()).count();
        workers.get_or_create(&base()).set(gauge_value(live as u64));
        let remaining = match (run.status, run.lease_until) {
            (RunStatus::Requested, _) | (_, None) => 0.0,
            (_, Some(until)) => until.0.saturating_sub(now.0).max(0) as f64 / 1000.0,
        };
        lease.get_or_create(&base()).set(remaining);
    }
    registry.register("run_items", "Items of each unfinished run, by status", items);
    // A counter over every run the store holds, so it keeps counting across
    // runs and restarts: `rate()` of it is the items per second.
    let completed = Family::<Labels, Counter>::default();
    for (job, counts) in state.completed_item_counts_by_job()? {
        for (status, count) in [("done", counts.done), ("dead_lettered", counts.dead_lettered)] {
            completed.get_or_create(&vec![("job", job.to_string()), ("status", status.to_owned())]).inc_by(count);
        }
    }
    registry.register(
        "run_items_completed",
        "Items of each job's runs that ended done or dead-lettered, over every run in the state store",
        completed,
    );
    registry.register("run_workers", "Workers of each unfinished run that have not stopped", workers);
    registry.register(
        "run_coordinator_lease_remaining_seconds",
        "Time left on each unfinished run's coordinator lease (0: unclaimed or lapsed)",
        lease,
    );

    let requests = api.request_metrics();
    registry.register("api_requests", "Requests this server answered since it started", requests.requests.clone());
    registry.register(
        "api_request_duration_seconds",
        "Time to answer requests, since this server started",
        requests.durations.clone(),
    );

    let mut text = String::new();
    encode(&mut text, &registry)
        .map_err(|error| ApiError::internal(format!("the metrics could not be encoded: {error}")))?;
    Ok(text)
}

/// Each function's invocation durations as a Prometheus histogram, counted by
/// the state store over the ledger (`FunctionStats::durations_at_most`), so
/// every server and host exposes the same buckets for the same ledger.
#[derive(Debug, Default)]
struct LedgerDurations {
    functions: Vec<(Labels, FunctionStats)>,
}

impl Collector for LedgerDurations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "function_duration_seconds",
            "Invocation durations in the ledger, per function.",
            None,
            MetricType::Histogram,
        )?;
        for (labels, stats) in &self.functions {
            // The encoder takes each bucket's own count and adds them up.
            let mut below = 0;
            let mut buckets: Vec<(f64, u64)> = DURATION_BUCKETS_MICROS
                .iter()
                .zip(stats.durations_at_most)
                .map(|(bound, at_most)| {
                    let own = at_most.saturating_sub(below);
                    below = at_most;
                    (*bound as f64 / 1e6, own)
                })
                .collect();
            buckets.push((f64::MAX, stats.invocations.saturating_sub(below)));
            family.encode_family(labels)?.encode_histogram::<NoLabelSet>(
                stats.duration_sum.as_secs_f64(),
                stats.invocations,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
