//! Asynchronous invocations with bounded retries.
//!
//! Routes and schedules put one message per invocation into the function's
//! internal queue. Workers lease them one at a time, invoke, and delete on
//! success. A failure is retried after an exponential backoff with jitter
//! until `retries.max_attempts`; then an AWS-shaped failure record (the
//! event, the error, the attempts) goes to the function's `on_failure` queue,
//! or to `mayfly-failed`, before the message is deleted. Should the control
//! plane die mid-invocation over and over, the internal queue's
//! `max_receives` moves the message to the same destination.
//!
//! A message is leased for the function's timeout plus a small margin
//! (`async_lease`), renewed every half lease while the invocation waits for a
//! concurrency slot or runs: a control plane killed mid-invocation leaves its
//! message to be delivered again about one lease later, and a long wait for a
//! slot never lets a live invocation's lease lapse.

use std::sync::Arc;

use mayfly_core::retry::{backoff_delay, may_retry};
use mayfly_core::{Name, TraceContext};
use mayfly_runtime::{Invocation, InvocationResult};
use mayfly_state::{OutgoingMessage, ReceiveRequest, ReceivedMessage};
use serde_json::json;

use crate::functions::{AsyncEnvelope, async_lease, async_queue_name, failed_queue_name, function_definition};
use crate::telemetry::InvocationTrace;
use crate::{ControlError, ControlPlaneConfig, Shutdown, ledger};

const DEFAULT_WORKERS: u32 = 4;
const MAX_WORKERS: u32 = 16;

/// A random request id in the UUID layout Lambda uses (opaque and URL-safe; see `mayfly_runtime::random_request_id`).
pub fn new_request_id() -> String {
    mayfly_runtime::random_request_id()
}

pub async fn run(config: Arc<ControlPlaneConfig>, function: Name, shutdown: Shutdown) -> Result<(), ControlError> {
    let Some(spec) = config.architecture.functions.get(&function) else { return Ok(()) };
    let workers = spec.concurrency.unwrap_or(DEFAULT_WORKERS).clamp(1, MAX_WORKERS);
    let function = Arc::new(function);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(worker(config.clone(), function.clone(), shutdown.clone()));
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|error| ControlError::Task(error.to_string()))??;
    }
    Ok(())
}

async fn worker(
    config: Arc<ControlPlaneConfig>,
    function: Arc<Name>,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    let queue = async_queue_name(&function);
    // The deployed function's lease, whatever the queue was created with.
    let lease = config.architecture.functions.get(&*function).map(async_lease);
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let request = ReceiveRequest { max_messages: 1, visibility_timeout: lease };
        let mut messages = config.state.receive_messages(&queue, request)?;
        let Some(message) = messages.pop() else {
            if shutdown.sleep_or_stop(config.poll_interval).await {
                return Ok(());
            }
            continue;
        };
        invoke_one(&config, &function, &queue, message).await?;
    }
}

async fn invoke_one(
    config: &ControlPlaneConfig,
    function: &Name,
    queue: &Name,
    message: ReceivedMessage,
) -> Result<(), ControlError> {
    let Some(spec) = config.architecture.functions.get(function) else { return Ok(()) };
    let destination = spec.on_failure.clone().unwrap_or_else(failed_queue_name);
    let envelope: AsyncEnvelope = match serde_json::from_slice(&message.body) {
        Ok(envelope) => envelope,
        Err(error) => {
            // Not something Mayfly wrote: park it where a person will see it.
            let record = json!({"condition": "UnreadableInvocation", "error": error.to_string(), "body": String::from_utf8_lossy(&message.body)});
            config.state.send_messages(&destination, &[OutgoingMessage::new(record.to_string())])?;
            config.state.delete_messages(queue, &[message.receipt])?;
            return Ok(());
        }
    };
    let definition = function_definition(
        &config.architecture,
        function,
        spec,
        config.deployment_version,
        &config.project_root,
        &config.mayfly_bin,
    );
    let request_id = new_request_id();
    let trace =
        InvocationTrace::start(function.as_str(), &envelope.trigger, &request_id, [message.attributes.as_slice()]);
    let handed = trace.handed_to_function();
    let invocation = Invocation {
        request_id: request_id.clone(),
        payload: serde_json::to_vec(&envelope.event).expect("JSON values serialise"), // plain JSON
        trace_id: handed.as_ref().map(TraceContext::xray_header),
        traceparent: handed.as_ref().map(TraceContext::traceparent),
    };
    let invocation = config.invoker.invoke(&definition, invocation);
    let result = invoke_renewing_lease(config, queue, &message, async_lease(spec), invocation).await;
    trace.finish(&result);
    let attempt = message.receive_count;
    ledger::record_invocation(
        config.state.as_ref(),
        &config.architecture,
        config.deployment_version,
        function,
        &envelope.trigger,
        attempt,
        &result,
    )?;
    if result.outcome.is_success() {
        config.state.delete_messages(queue, &[message.receipt])?;
        return Ok(());
    }
    if may_retry(attempt, spec.retries.max_attempts) {
        let delay = backoff_delay(spec.retries.backoff, attempt, rand::random::<f64>());
        tracing::info!(function = %function, attempt, retry_in_ms = delay.as_millis() as u64, outcome = result.outcome.kind(), "invocation failed; will retry");
        match config.state.change_visibility(queue, message.receipt, delay) {
            Ok(()) | Err(mayfly_state::StateError::LeaseLost { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        return Ok(());
    }
    tracing::warn!(function = %function, attempt, destination = %destination, "retries exhausted; sending to the failure destination");
    let record = failure_record(function, &envelope, &result, attempt);
    // Send, then delete: a crash in between leaves a duplicate record, never none.
    config.state.send_messages(&destination, &[OutgoingMessage::new(record.to_string())])?;
    config.state.delete_messages(queue, &[message.receipt])?;
    Ok(())
}

/// Await `invocation`, renewing `message`'s lease to `lease` every half lease
/// until it ends. A renewal that fails is logged and given up: the message
/// may then be delivered again while this invocation runs (at least once).
async fn invoke_renewing_lease(
    config: &ControlPlaneConfig,
    queue: &Name,
    message: &ReceivedMessage,
    lease: std::time::Duration,
    invocation: impl std::future::Future<Output = InvocationResult>,
) -> InvocationResult {
    let mut renewals = tokio::time::interval(lease / 2);
    renewals.tick().await; // the first tick is immediate, and the lease was just taken
    tokio::pin!(invocation);
    let mut renewing = true;
    loop {
        tokio::select! {
            result = &mut invocation => return result,
            _ = renewals.tick(), if renewing => {
                if let Err(error) = config.state.change_visibility(queue, message.receipt, lease) {
                    tracing::warn!(queue = %queue, message = message.message_id, error = %error, "cannot renew the lease of an asynchronous invocation; it may be delivered again");
                    renewing = false;
                }
            }
        }
    }
}

/// The record an on-failure destination receives, in the shape of AWS Lambda's
/// asynchronous invocation destinations.
fn failure_record(
    function: &Name,
    envelope: &AsyncEnvelope,
    result: &InvocationResult,
    attempts: u32,
) -> serde_json::Value {
    let (error_type, error_message) = ledger::describe_failure(&result.outcome);
    json!({
        "version": "1.0",
        "timestamp": result.started_at.to_rfc3339(),
        "requestContext": {
            "requestId": result.request_id,
            "functionArn": format!("arn:aws:lambda:local:000000000000:function:{function}"),
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": envelope.event,
        "responseContext": {"statusCode": 200, "functionError": "Unhandled", "outcome": result.outcome.kind()},
        "responsePayload": {"errorType": error_type, "errorMessage": error_message},
        "trigger": envelope.trigger,
    })
}
