//! Queue → function triggers, the SQS event source mapping model.
//!
//! Workers (as many as the function's concurrency, at most 16) each lease a
//! batch of up to `batch_size` messages (waiting up to `batch_window` to fill
//! it), invoke the function once with an SQS event, delete the messages that
//! succeeded — all of them, or all but those the function named in
//! `batchItemFailures` — and put the failed ones back after a backoff. The
//! queue's `max_receives` and dead-letter queue bound the retries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_core::retry::backoff_delay;
use mayfly_core::{Name, TraceContext};
use mayfly_runtime::Invocation;
use mayfly_state::{DeleteOutcome, ReceiveRequest, ReceivedMessage};

use crate::functions::function_definition;
use crate::telemetry::InvocationTrace;
use crate::{ControlError, ControlPlaneConfig, Shutdown, ledger};

#[derive(Debug, Clone)]
pub struct QueueTrigger {
    pub queue: Name,
    pub function: Name,
    pub batch_size: usize,
    pub batch_window: Option<Duration>,
}

/// Most batches of one trigger in flight at once when the function sets no concurrency.
const DEFAULT_PARALLEL_BATCHES: u32 = 4;
const MAX_PARALLEL_BATCHES: u32 = 16;

pub async fn run(
    config: Arc<ControlPlaneConfig>,
    trigger: QueueTrigger,
    shutdown: Shutdown,
) -> Result<(), ControlError> {
    let Some(spec) = config.architecture.functions.get(&trigger.function) else { return Ok(()) };
    let parallel = spec.concurrency.unwrap_or(DEFAULT_PARALLEL_BATCHES).clamp(1, MAX_PARALLEL_BATCHES);
    let trigger = Arc::new(trigger);
    let (woken, wakes) = tokio::sync::watch::channel(());
    let queue = trigger.queue.to_string();
    // Held until every worker ended: the store tells of sends while it lives.
    let watch = config.state.watch_messages(Arc::new(move |sent_to: &str| {
        if sent_to == queue {
            woken.send_replace(());
        }
    }))?;
    // A watch that hears only this process (the embedded store) wakes the
    // workers at once for this process's sends; `mayfly send` from another
    // process is still found by the poll, so it keeps its pace.
    let every_process = watch.as_ref().is_some_and(mayfly_state::MessageWatch::hears_other_processes);
    let idle = Idle { poll: idle_poll(config.poll_interval, every_process), wakes: watch.is_some().then_some(wakes) };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        workers.spawn(worker(config.clone(), trigger.clone(), idle.clone(), shutdown.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|error| ControlError::Task(error.to_string()))??;
    }
    drop(watch);
    Ok(())
}

/// How long an idle worker waits before it looks at its queue again when
/// the store wakes it on every process's sends: sends need no poll then, only messages that
/// become visible by time (a delay, a lapsed lease), so it looks at most once
/// a second (or at the poll interval, if longer) rather than hammering a
/// shared database from every host.
const WATCHED_IDLE_POLL: Duration = Duration::from_secs(1);

fn idle_poll(poll_interval: Duration, watched: bool) -> Duration {
    if watched { poll_interval.max(WATCHED_IDLE_POLL) } else { poll_interval }
}

/// How an idle worker waits for work.
#[derive(Clone)]
struct Idle {
    poll: Duration,
    /// Changed when the store says messages were sent to the queue.
    wakes: Option<tokio::sync::watch::Receiver<()>>,
}

impl Idle {
    /// Wait for a send, the poll interval or a stop; true if stopping.
    async fn wait(&mut self, shutdown: &mut Shutdown) -> bool {
        let woken = async {
            let sent = match &mut self.wakes {
                Some(wakes) => wakes.changed().await.is_ok(),
                None => false,
            };
            if !sent {
                // No wake-ups (or their sender is gone): the poll alone.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            stopping = shutdown.sleep_or_stop(self.poll) => stopping,
            () = woken => shutdown.is_triggered(),
        }
    }
}

async fn worker(
    config: Arc<ControlPlaneConfig>,
    trigger: Arc<QueueTrigger>,
    mut idle: Idle,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let batch = lease_batch(&config, &trigger, &mut shutdown).await?;
        if batch.is_empty() {
            if idle.wait(&mut shutdown).await {
                return Ok(());
            }
            continue;
        }
        process_batch(&config, &trigger, batch).await?;
    }
}

async fn lease_batch(
    config: &ControlPlaneConfig,
    trigger: &QueueTrigger,
    shutdown: &mut Shutdown,
) -> Result<Vec<ReceivedMessage>, ControlError> {
    let mut batch = config.state.receive_messages(&trigger.queue, ReceiveRequest::up_to(trigger.batch_size))?;
    let Some(window) = trigger.batch_window else { return Ok(batch) };
    if batch.is_empty() {
        return Ok(batch);
    }
    let started = Instant::now();
    while batch.len() < trigger.batch_size && started.elapsed() < window {
        let wait = (window - started.elapsed()).min(config.poll_interval);
        if shutdown.sleep_or_stop(wait).await {
            break;
        }
        let more =
            config.state.receive_messages(&trigger.queue, ReceiveRequest::up_to(trigger.batch_size - batch.len()))?;
        batch.extend(more);
    }
    Ok(batch)
}

async fn process_batch(
    config: &ControlPlaneConfig,
    trigger: &QueueTrigger,
    batch: Vec<ReceivedMessage>,
) -> Result<(), ControlError> {
    let Some(spec) = config.architecture.functions.get(&trigger.function) else { return Ok(()) };
    let definition = function_definition(
        &config.architecture,
        &trigger.function,
        spec,
        config.deployment_version,
        &config.project_root,
        &config.mayfly_bin,
    );
    let event = mayfly_events::sqs_event(&trigger.queue, &batch);
    let request_id = crate::async_invoker::new_request_id();
    let trace = InvocationTrace::start(
        trigger.function.as_str(),
        &format!("queue:{}", trigger.queue),
        &request_id,
        batch.iter().map(|message| message.attributes.as_slice()),
    );
    let handed = trace.handed_to_function();
    let invocation = Invocation {
        request_id,
        payload: serde_json::to_vec(&event).expect("JSON values serialise"), // plain JSON
        trace_id: handed.as_ref().map(TraceContext::xray_header),
        traceparent: handed.as_ref().map(TraceContext::traceparent),
    };
    let result = config.invoker.invoke(&definition, invocation).await;
    trace.finish(&result);
    let attempt = batch.iter().map(|m| m.receive_count).max().unwrap_or(1);
    ledger::record_invocation(
        config.state.as_ref(),
        &config.architecture,
        config.deployment_version,
        &trigger.function,
        &format!("queue:{}", trigger.queue),
        attempt,
        &result,
    )?;

    // Which messages failed: all on a failed invocation, or those the function names.
    let failed_ids: Vec<String> = if result.outcome.is_success() {
        match mayfly_events::parse_batch_item_failures(result.response.as_deref().unwrap_or(b"null")) {
            Ok(Some(ids)) => ids,
            Ok(None) => Vec::new(),
            Err(error) => {
                tracing::warn!(function = %trigger.function, error = %error, "unreadable batchItemFailures; retrying the whole batch");
                batch.iter().map(|m| m.message_id.to_string()).collect()
            }
        }
    } else {
        batch.iter().map(|m| m.message_id.to_string()).collect()
    };

    let (failed, succeeded): (Vec<&ReceivedMessage>, Vec<&ReceivedMessage>) =
        batch.iter().partition(|m| failed_ids.contains(&m.message_id.to_string()));
    let receipts: Vec<_> = succeeded.iter().map(|m| m.receipt).collect();
    let outcomes = config.state.delete_messages(&trigger.queue, &receipts)?;
    let lost = outcomes.iter().filter(|o| **o == DeleteOutcome::LeaseLost).count();
    if lost > 0 {
        tracing::warn!(queue = %trigger.queue, lost, "leases lapsed before the batch finished; those messages will be delivered again (raise visibility_timeout)");
    }
    for message in failed {
        let delay = backoff_delay(spec.retries.backoff, message.receive_count, rand::random::<f64>());
        match config.state.change_visibility(&trigger.queue, message.receipt, delay) {
            Ok(()) | Err(mayfly_state::StateError::LeaseLost { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
