//! One synchronous invocation of a deployed function, recorded in the
//! ledger: what `mayfly invoke`, the HTTPS API's invoke endpoint and its
//! `[[api.routes]]` all do.

use std::path::Path;

use mayfly_core::Name;
use mayfly_runtime::{Invocation, InvocationResult, Invoker};
use mayfly_state::StateStore;

use crate::jobs::Deployed;

/// Where the function runs: the project directory and the `mayfly` binary it may call.
#[derive(Debug, Clone, Copy)]
pub struct InvokeContext<'a> {
    pub project_root: &'a Path,
    pub mayfly_bin: &'a Path,
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("function `{function}` is not deployed; deployed functions: {known}")]
    UnknownFunction { function: Name, known: String },
    #[error("the invocation of `{function}` ran but could not be recorded in the ledger: {source}")]
    Record { function: Name, source: mayfly_state::StateError },
}

/// Invoke `function` of the deployed architecture once with `payload`, wait
/// for it, and record it in the ledger under `trigger` (`invoke`, `api`, …).
/// The function's own failure is in the result's outcome, not an error.
pub async fn invoke_and_record(
    state: &dyn StateStore,
    invoker: &Invoker,
    deployed: Deployed<'_>,
    context: InvokeContext<'_>,
    function: &Name,
    trigger: &str,
    payload: Vec<u8>,
) -> Result<InvocationResult, InvokeError> {
    let spec = deployed.architecture.functions.get(function).ok_or_else(|| InvokeError::UnknownFunction {
        function: function.clone(),
        known: if deployed.architecture.functions.is_empty() {
            "none".into()
        } else {
            deployed.architecture.functions.keys().map(Name::to_string).collect::<Vec<_>>().join(", ")
        },
    })?;
    let definition = crate::function_definition(
        deployed.architecture,
        function,
        spec,
        deployed.version,
        context.project_root,
        context.mayfly_bin,
    );
    let request_id = crate::new_request_id();
    // A direct invocation starts a trace of its own (when traces are exported).
    let no_messages: [&[(String, String)]; 0] = [];
    let trace = crate::telemetry::InvocationTrace::start(function.as_str(), trigger, &request_id, no_messages);
    let handed = trace.handed_to_function();
    let invocation = Invocation {
        request_id,
        payload,
        trace_id: handed.as_ref().map(mayfly_core::TraceContext::xray_header),
        traceparent: handed.as_ref().map(mayfly_core::TraceContext::traceparent),
    };
    let result = invoker.invoke(&definition, invocation).await;
    trace.finish(&result);
    crate::record_invocation(state, deployed.architecture, deployed.version, function, trigger, 1, &result)
        .map_err(|source| InvokeError::Record { function: function.clone(), source })?;
    Ok(result)
}
