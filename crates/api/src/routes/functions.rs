//! Invoking a deployed function synchronously, as `mayfly invoke` does
//! (the same control-plane call, recorded in the ledger with trigger `api`).

use axum::Json;
use axum::extract::State;
use mayfly_control::jobs::Deployed;
use mayfly_control::{InvokeContext, InvokeError};
use mayfly_runtime::InvocationResult;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse_name;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, JsonBody};
use crate::{ApiConfig, ApiState};

/// What one invocation did. A function that failed still answers 200: its `outcome` says how it failed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InvocationReport {
    pub request_id: String,
    /// `success`, `error`, `timeout`, `out_of_memory`, `crashed`, `invalid_response`, `payload_too_large`.
    pub outcome: String,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    /// The function's result, when it gave one (JSON).
    pub response: Option<serde_json::Value>,
    /// What the function wrote to its logs during this invocation.
    pub logs: String,
    pub duration_ms: f64,
    /// Present on a cold start.
    pub init_duration_ms: Option<f64>,
    pub peak_memory: Option<u64>,
}

impl From<InvocationResult> for InvocationReport {
    fn from(result: InvocationResult) -> InvocationReport {
        let (error_type, error_message) = mayfly_control::describe_failure(&result.outcome);
        InvocationReport {
            request_id: result.request_id.clone(),
            outcome: result.outcome.kind().to_owned(),
            error_type,
            error_message,
            response: result.response.as_deref().and_then(|response| serde_json::from_slice(response).ok()),
            logs: String::from_utf8_lossy(&result.logs).into_owned(),
            duration_ms: result.duration.as_secs_f64() * 1000.0,
            init_duration_ms: result.init_duration.map(|duration| duration.as_secs_f64() * 1000.0),
            peak_memory: result.peak_memory,
        }
    }
}

/// Invoke a function once through the control plane's invoker and record it in the ledger.
pub(crate) async fn invoke(
    config: &ApiConfig,
    function: &mayfly_core::Name,
    trigger: &str,
    payload: Vec<u8>,
) -> Result<InvocationResult, ApiError> {
    mayfly_control::invoke_and_record(
        config.state.as_ref(),
        &config.invoker,
        Deployed { architecture: &config.architecture, version: config.deployment_version },
        InvokeContext { project_root: &config.project_root, mayfly_bin: &config.mayfly_bin },
        function,
        trigger,
        payload,
    )
    .await
    .map_err(|error| match error {
        InvokeError::UnknownFunction { .. } => ApiError::not_found(error.to_string()),
        InvokeError::Record { .. } => ApiError::internal(error.to_string()),
    })
}

/// Invoke a deployed function with the request body as its event and wait for its result.
#[utoipa::path(post, path = "/v1/functions/{function}/invocations", tag = "functions", operation_id = "invoke_function",
    params(("function" = String, Path, description = "The function")),
    request_body(content = Object, description = "The event (any JSON)"),
    responses((status = 200, description = "The invocation ran (see `outcome`)", body = InvocationReport)))]
pub async fn invoke_function(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(function): ApiPath<String>,
    body: JsonBody,
) -> Result<Json<InvocationReport>, ApiError> {
    api.authorize_caller(&caller, Scope::FunctionsInvoke, Resource::Unlimited, format!("function/{function}"))?;
    let name = parse_name("function", &function)?;
    let event: serde_json::Value = body.parse().await?;
    let payload = serde_json::to_vec(&event).map_err(|error| ApiError::internal(error.to_string()))?;
    let result = invoke(api.config(), &name, "api", payload).await?;
    Ok(Json(InvocationReport::from(result)))
}
