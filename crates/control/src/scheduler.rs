//! The scheduler: `cron(...)` and `rate(...)` triggers.
//!
//! Each schedule keeps the time it last fired in a durable cursor. When the
//! next firing after that is due, it enqueues one asynchronous invocation with
//! an EventBridge "Scheduled Event" and records the firing, in one commit
//! fenced by the leader's term: a period fires once, even when a leader
//! paused past its lease resumes after the new leader fired it. Firings missed
//! while the control plane was down are not replayed one by one: the schedule
//! fires once and carries on (as EventBridge does after an outage).

use std::sync::Arc;
use std::time::Duration;

use mayfly_core::{Schedule, Timestamp};
use mayfly_spec::TriggerSpec;
use mayfly_state::{Fence, FencedWrite, OutgoingMessage};

use crate::functions::{AsyncEnvelope, async_queue_name};
use crate::{ControlError, ControlPlaneConfig, Shutdown};

const TICK: Duration = Duration::from_millis(250);

fn cursor_name(function: &mayfly_core::Name, schedule: &Schedule) -> String {
    format!("schedule:{function}:{schedule}")
}

/// Fire the schedules until `shutdown`, every write under the leader's `fence`.
pub async fn run(config: Arc<ControlPlaneConfig>, fence: Fence, mut shutdown: Shutdown) -> Result<(), ControlError> {
    let schedules: Vec<_> = config
        .architecture
        .triggers
        .iter()
        .filter_map(|trigger| match trigger {
            TriggerSpec::Schedule { schedule, function } => Some((schedule.clone(), function.clone())),
            TriggerSpec::Queue { .. } => None,
        })
        .collect();
    if schedules.is_empty() {
        return Ok(());
    }
    loop {
        for (schedule, function) in &schedules {
            fire_if_due(&config, &fence, schedule, function)?;
        }
        if shutdown.sleep_or_stop(TICK).await {
            return Ok(());
        }
    }
}

fn fire_if_due(
    config: &ControlPlaneConfig,
    fence: &Fence,
    schedule: &Schedule,
    function: &mayfly_core::Name,
) -> Result<(), ControlError> {
    let state = config.state.as_ref();
    let cursor = cursor_name(function, schedule);
    let now = config.clock.now();
    let last = state.consumer_cursor(&cursor)?;
    if last == 0 {
        // First sight of this schedule: start counting from now.
        let start = FencedWrite::SetConsumerCursor { consumer: cursor, sequence: now.as_millis().max(1) as u64 };
        state.commit_fenced(Some(fence), vec![start])?;
        return Ok(());
    }
    let Some(due) = schedule.next_after(Timestamp::from_millis(last as i64)) else { return Ok(()) };
    if due > now {
        return Ok(());
    }
    let rule = format!("{function}-{}", schedule.to_string().replace(['(', ')', ' ', '*', '/', ','], "_"));
    let id = format!("{}-{}", function, due.as_millis());
    let envelope = AsyncEnvelope {
        trigger: format!("schedule:{schedule}"),
        event: mayfly_events::scheduled_event(&rule, due, &id),
    };
    let body = serde_json::to_vec(&envelope).expect("envelopes serialise"); // plain data
    // Skip firings missed while down: the next one is computed from the later of due and now.
    let fired_at = if schedule.next_after(due).is_some_and(|next| next <= now) { now } else { due };
    // Enqueue and record the firing in one commit: it fires once, never twice or zero times.
    let writes = vec![
        FencedWrite::SendMessages { queue: async_queue_name(function), messages: vec![OutgoingMessage::new(body)] },
        FencedWrite::SetConsumerCursor { consumer: cursor, sequence: fired_at.as_millis() as u64 },
    ];
    state.commit_fenced(Some(fence), writes)?;
    tracing::info!(function = %function, schedule = %schedule, at = %due, "schedule fired");
    Ok(())
}
