//! The router: bucket events → queues and functions, by `[[routes]]`.
//!
//! It reads the event log after its durable cursor, sends every matching
//! event to its targets, and only then advances the cursor. A crash between
//! the two re-sends those events on restart: delivery is at least once,
//! never lost.

use std::collections::BTreeMap;
use std::sync::Arc;

use mayfly_core::{Name, ObjectEvent};
use mayfly_spec::RouteTarget;
use mayfly_state::OutgoingMessage;

use crate::functions::{AsyncEnvelope, async_queue_name};
use crate::{ControlError, ControlPlaneConfig, Shutdown};

/// The consumer name of the router's cursor in the event log.
pub const ROUTER_CURSOR: &str = "router";
const EVENTS_PER_PASS: usize = 1_000;

pub async fn run(config: Arc<ControlPlaneConfig>, mut shutdown: Shutdown) -> Result<(), ControlError> {
    if config.architecture.routes.is_empty() {
        return Ok(());
    }
    loop {
        let routed = route_once(&config)?;
        if routed == 0 && shutdown.sleep_or_stop(config.poll_interval).await {
            return Ok(());
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}

/// Route one page of events; returns how many events were read.
pub fn route_once(config: &ControlPlaneConfig) -> Result<usize, ControlError> {
    let state = config.state.as_ref();
    let cursor = state.consumer_cursor(ROUTER_CURSOR)?;
    let events = state.object_events_after(cursor, EVENTS_PER_PASS)?;
    let Some(last) = events.last() else { return Ok(0) };
    let last_sequence = last.sequence;

    let mut outgoing: BTreeMap<Name, Vec<OutgoingMessage>> = BTreeMap::new();
    for event in &events {
        for (index, route) in config.architecture.routes.iter().enumerate() {
            if !route.matches(event) {
                continue;
            }
            let (queue, body) = match &route.to {
                RouteTarget::Queue(queue) => (queue.clone(), s3_notification(event, index)),
                RouteTarget::Function(function) => {
                    let envelope = AsyncEnvelope {
                        trigger: format!("bucket:{}", event.bucket),
                        event: serde_json::from_slice(&s3_notification(event, index))
                            .expect("s3_notification serialises a JSON value"), // round trip of our own JSON
                    };
                    let body = serde_json::to_vec(&envelope).expect("envelopes serialise"); // plain data
                    (async_queue_name(function), body)
                }
            };
            outgoing.entry(queue).or_default().push(OutgoingMessage::new(body));
        }
    }
    for (queue, messages) in &outgoing {
        state.send_messages(queue, messages)?;
    }
    state.set_consumer_cursor(ROUTER_CURSOR, last_sequence)?;
    tracing::debug!(events = events.len(), up_to = last_sequence, "routed bucket events");
    Ok(events.len())
}

/// The S3 notification for one event; routes are named `route-N` in file order.
fn s3_notification(event: &ObjectEvent, route_index: usize) -> Vec<u8> {
    let value = mayfly_events::s3_event_for_route(&format!("route-{}", route_index + 1), std::slice::from_ref(event));
    serde_json::to_vec(&value).expect("JSON values serialise") // no non-string keys
}
