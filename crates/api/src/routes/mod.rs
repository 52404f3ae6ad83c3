//! The `/v1` handlers, one module per area, each documented for the OpenAPI
//! document by `#[utoipa::path]` and registered with `routes!`, so the router
//! and the document cannot drift apart.

mod access_log;
mod audit;
mod functions;
mod objects;
mod queues;
mod results;
mod runs;
mod user_routes;

use mayfly_core::{Name, Timestamp};
use mayfly_spec::Architecture;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::error::ApiError;

pub use user_routes::user_route_operations;

/// Every `/v1` route (but the OpenAPI document itself), with its documentation.
pub fn api_router(architecture: &Architecture) -> OpenApiRouter<ApiState> {
    let router = OpenApiRouter::new()
        .routes(routes!(objects::list_buckets))
        .routes(routes!(objects::list_objects))
        .routes(routes!(objects::get_object, objects::put_object))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::queue_stats))
        .routes(routes!(queues::send_messages))
        .routes(routes!(functions::invoke_function))
        .routes(routes!(runs::start_run))
        .routes(routes!(runs::list_runs))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::stream_run_logs))
        .routes(routes!(results::list_results))
        .routes(routes!(results::get_result))
        .routes(routes!(access_log::read_access_log))
        .routes(routes!(audit::latest_audit));
    user_routes::add_user_routes(router, architecture)
}

/// A resource name from a path: 400 naming it if it is not a valid name.
fn parse_name(kind: &str, text: &str) -> Result<Name, ApiError> {
    Name::new(text).map_err(|error| ApiError::bad_request(format!("`{text}` is not a valid {kind} name: {error}")))
}

fn rfc3339(time: Timestamp) -> String {
    time.to_rfc3339()
}

/// A page size from a query: 1 to `max`, `default` when absent.
fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit {
        None => Ok(default),
        Some(limit) if (1..=max).contains(&limit) => Ok(limit),
        Some(limit) => Err(ApiError::bad_request(format!("`limit` must be from 1 to {max}, not {limit}"))),
    }
}

/// JSON if the bytes are JSON, else the text (lossy) as a JSON string.
fn json_or_text(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
