//! Writing invocation results to the ledger, with the cost estimate and the
//! deployment version, so nothing in user code has to report anything.

use mayfly_core::Name;
use mayfly_runtime::{InvocationResult, Outcome};
use mayfly_spec::Architecture;
use mayfly_state::{InvocationRecord, StateStore};

use crate::functions::estimate_cost;

/// Record one finished invocation and its logs in one commit; returns its ledger id.
pub fn record_invocation(
    state: &dyn StateStore,
    architecture: &Architecture,
    deployment_version: Option<u64>,
    function: &Name,
    trigger: &str,
    attempt: u32,
    result: &InvocationResult,
) -> Result<u64, mayfly_state::StateError> {
    let memory = architecture.functions.get(function).and_then(|spec| spec.memory);
    let (error_type, error_message) = describe_failure(&result.outcome);
    let record = InvocationRecord {
        request_id: result.request_id.clone(),
        function: function.clone(),
        deployment_version,
        trigger: trigger.to_owned(),
        attempt,
        started_at: result.started_at,
        duration: result.duration,
        init_duration: result.init_duration,
        outcome: result.outcome.kind().to_owned(),
        error_type,
        error_message,
        peak_memory: result.peak_memory,
        bytes_in: result.bytes_in,
        bytes_out: result.bytes_out,
        estimated_cost: estimate_cost(&architecture.pricing, memory, result.duration),
    };
    state.record_invocation(&record, &result.logs)
}

/// `(error type, message)` of a failed outcome.
pub fn describe_failure(outcome: &Outcome) -> (Option<String>, Option<String>) {
    match outcome {
        Outcome::Success => (None, None),
        Outcome::FunctionError { error_type, message } => (Some(error_type.clone()), Some(message.clone())),
        Outcome::TimedOut { after } => {
            (Some("TimedOut".into()), Some(format!("timed out after {:.1} s", after.as_secs_f64())))
        }
        Outcome::OutOfMemory { limit } => {
            (Some("OutOfMemory".into()), Some(format!("exceeded its memory limit of {limit}")))
        }
        Outcome::Crashed { reason } => (Some("Crashed".into()), Some(reason.clone())),
        Outcome::InvalidResponse { reason } => (Some("InvalidResponse".into()), Some(reason.clone())),
        Outcome::PayloadTooLarge { size, limit } => {
            (Some("PayloadTooLarge".into()), Some(format!("payload of {size} bytes exceeds the {limit} limit")))
        }
    }
}
