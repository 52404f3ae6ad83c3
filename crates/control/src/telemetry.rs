//! The OpenTelemetry spans of an object event's journey, recorded through
//! the global tracer provider (which the host installs when `[telemetry]`
//! names a collector; without one the tracer is OpenTelemetry's no-op and
//! nothing here records or carries anything).
//!
//! The trace crosses processes and hosts with the message: the router's
//! `send` span is written into the message's reserved
//! [`TRACE_HEADER_ATTRIBUTE`] (sealed with the message, like its other
//! attributes), and whoever receives the message — any host's queue poller
//! or async invoker — starts the `invoke` span as its child, then hands the
//! function a context whose parent is that span.
//!
//! Spans: `created BUCKET` (start: the event's own time) → `route route-N`
//! → `send QUEUE` → `invoke FUNCTION` (its outcome, duration and error flag).
//! A job's coordinator records `run JOB` and, for each attempt at an item,
//! `item JOB` ([`RunTrace`], [`ItemTrace`]): the child of the context its
//! queue message carried, or of the run's span; the worker's function is
//! handed the item span's context.
//!
//! Object keys and item ids may be health data (`patient-1234.pdf`): spans
//! carry them as this process was told ([`show_keys_in_spans`]; by default
//! a keyed hash), never as they are unless `[telemetry] object_keys = "plain"`.

use std::borrow::Cow;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use mayfly_core::{ObjectEvent, TRACE_HEADER_ATTRIBUTE, Timestamp, TraceContext};
use mayfly_runtime::{InvocationResult, Outcome};
use opentelemetry::global::{self, BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Link, Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

/// The instrumentation scope of every span Mayfly records.
const SCOPE: &str = "mayfly";

fn tracer() -> BoxedTracer {
    global::tracer(SCOPE)
}

/// What the state store derives the key of hashed object keys for
/// ([`mayfly_state::StateStore::derived_key`]): the same on every host that
/// opens the store with its keyring, so equal keys hash equally across hosts.
pub const KEYS_IN_SPANS_KEY_PURPOSE: &str = "telemetry-object-keys";

/// How spans show object keys and job item ids in this process.
pub enum KeysInSpans {
    /// Hex HMAC-SHA256 under this key, in `…_hmac` attributes: a collector
    /// can match equal keys but cannot guess one back from a dictionary.
    Hashed([u8; 32]),
    /// As they are.
    Plain,
    /// Left out.
    Omitted,
}

static KEYS_IN_SPANS: OnceLock<KeysShown> = OnceLock::new();

enum KeysShown {
    Hashed(ring::hmac::Key),
    Plain,
    Omitted,
}

/// Decide, once per process (before spans are made; a second call changes
/// nothing), how spans show object keys and item ids. A process that never
/// decides leaves them out.
pub fn show_keys_in_spans(keys: KeysInSpans) {
    let shown = match keys {
        KeysInSpans::Hashed(key) => KeysShown::Hashed(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)),
        KeysInSpans::Plain => KeysShown::Plain,
        KeysInSpans::Omitted => KeysShown::Omitted,
    };
    let _ = KEYS_IN_SPANS.set(shown);
}

/// `key` as the attribute `plain_name` (plain), `hashed_name` (hashed), or nothing.
fn key_attribute(plain_name: &'static str, hashed_name: &'static str, key: &str) -> Option<KeyValue> {
    key_attribute_as(KEYS_IN_SPANS.get().unwrap_or(&KeysShown::Omitted), plain_name, hashed_name, key)
}

fn key_attribute_as(
    shown: &KeysShown,
    plain_name: &'static str,
    hashed_name: &'static str,
    key: &str,
) -> Option<KeyValue> {
    match shown {
        KeysShown::Hashed(hmac) => {
            Some(KeyValue::new(hashed_name, hex::encode(ring::hmac::sign(hmac, key.as_bytes()).as_ref())))
        }
        KeysShown::Plain => Some(KeyValue::new(plain_name, key.to_owned())),
        KeysShown::Omitted => None,
    }
}

fn system_time(at: Timestamp) -> SystemTime {
    let millis = u64::try_from(at.as_millis()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis)
}

/// The carried form of a recording span's context; `None` for the no-op
/// tracer's spans (no provider installed), so nothing is carried.
fn carried(span: &BoxedSpan) -> Option<TraceContext> {
    let context = span.span_context();
    if !context.is_valid() || !context.is_sampled() {
        return None;
    }
    TraceContext::new(&context.trace_id().to_string(), &context.span_id().to_string())
}

/// The remote parent a carried context names.
fn remote_parent(carried: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(carried.trace_id()).ok()?;
    let span_id = SpanId::from_hex(carried.parent_span_id()).ok()?;
    Some(SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, true, TraceState::default()))
}

/// The router's spans for one event: its `created` span, and a `route` and
/// a `send` span for each route it matched. End them once the messages are
/// committed ([`EventJourney::end`]); dropped, they end where they are.
pub struct EventJourney {
    event: Context,
    routes: Vec<(BoxedSpan, BoxedSpan)>,
}

impl EventJourney {
    /// Start the event's span, which began at the event's own time.
    pub fn start(event: &ObjectEvent) -> EventJourney {
        let tracer = tracer();
        let span = tracer
            .span_builder(format!("{} {}", event.kind.as_str(), event.bucket))
            .with_kind(SpanKind::Producer)
            .with_start_time(system_time(event.at))
            .with_attributes(
                [
                    Some(KeyValue::new("mayfly.bucket", event.bucket.to_string())),
                    key_attribute("mayfly.object.key", "mayfly.object.key_hmac", &event.key),
                    Some(KeyValue::new("mayfly.object.size", event.size as i64)),
                    Some(KeyValue::new("mayfly.event.name", mayfly_events::s3_event_name(event))),
                    Some(KeyValue::new("mayfly.event.sequence", event.sequence as i64)),
                ]
                .into_iter()
                .flatten(),
            )
            .start_with_context(&tracer, &Context::new());
        EventJourney { event: Context::new().with_span(span), routes: Vec::new() }
    }

    /// Record routing the event by `route` (`route-N`) to `target`
    /// (`queue:Q` or `function:F`) with a message sent to `queue`; returns
    /// the trace header the message carries, if this journey is recorded.
    pub fn route(&mut self, route: &str, target: &str, queue: &str) -> Option<(String, String)> {
        let tracer = tracer();
        let route_span = tracer
            .span_builder(format!("route {route}"))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("mayfly.route", route.to_owned()),
                KeyValue::new("mayfly.route.target", target.to_owned()),
            ])
            .start_with_context(&tracer, &self.event);
        let route_span_context = route_span.span_context().clone();
        let send_span = tracer
            .span_builder(format!("send {queue}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "mayfly"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", queue.to_owned()),
            ])
            .start_with_context(&tracer, &Context::new().with_remote_span_context(route_span_context));
        let header = carried(&send_span).map(|context| (TRACE_HEADER_ATTRIBUTE.to_owned(), context.xray_header()));
        self.routes.push((route_span, send_span));
        header
    }

    /// End every span: the messages are sent.
    pub fn end(mut self) {
        for (mut route, mut send) in self.routes.drain(..) {
            send.end();
            route.end();
        }
        self.event.span().end();
    }
}

/// The `invoke` span of one invocation of a function by a trigger, the
/// child of the (first) message's carried context; the other messages of a
/// batch are its links.
pub struct InvocationTrace {
    span: BoxedSpan,
}

impl InvocationTrace {
    /// Start the span of invoking `function` by `trigger` (`queue:Q`,
    /// `bucket:B`, …) for messages with the given attributes.
    pub fn start<'a>(
        function: &str,
        trigger: &str,
        request_id: &str,
        messages: impl IntoIterator<Item = &'a [(String, String)]>,
    ) -> InvocationTrace {
        let mut parents = messages.into_iter().filter_map(|attributes| {
            let header = attributes.iter().find(|(name, _)| name == TRACE_HEADER_ATTRIBUTE)?;
            remote_parent(&TraceContext::from_xray_header(&header.1)?)
        });
        let parent = match parents.next() {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let links: Vec<Link> = parents.map(Link::with_context).collect();
        let tracer = tracer();
        let mut attributes = vec![
            KeyValue::new("faas.name", function.to_owned()),
            KeyValue::new("faas.invocation_id", request_id.to_owned()),
            KeyValue::new("mayfly.trigger", trigger.to_owned()),
        ];
        if let Some(queue) = trigger.strip_prefix("queue:") {
            attributes.push(KeyValue::new("faas.trigger", "pubsub"));
            attributes.push(KeyValue::new("messaging.destination.name", queue.to_owned()));
        }
        let span = tracer
            .span_builder(format!("invoke {function}"))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .with_links(links)
            .start_with_context(&tracer, &parent);
        InvocationTrace { span }
    }

    /// The context handed to the function, whose parent is this span.
    pub fn handed_to_function(&self) -> Option<TraceContext> {
        carried(&self.span)
    }

    /// Record the result and end the span. The error's text (user data) is
    /// not recorded: only its outcome and type.
    pub fn finish(mut self, result: &InvocationResult) {
        let failed = !result.outcome.is_success();
        self.span.set_attribute(KeyValue::new("mayfly.outcome", result.outcome.kind()));
        self.span.set_attribute(KeyValue::new("mayfly.duration_ms", result.duration.as_millis() as i64));
        self.span.set_attribute(KeyValue::new("mayfly.error", failed));
        if let Some(init) = result.init_duration {
            self.span.set_attribute(KeyValue::new("mayfly.init_duration_ms", init.as_millis() as i64));
        }
        if failed {
            let description: Cow<'static, str> = match &result.outcome {
                Outcome::FunctionError { error_type, .. } => format!("function error: {error_type}").into(),
                other => other.kind().into(),
            };
            self.span.set_status(Status::error(description));
        } else {
            self.span.set_status(Status::Ok);
        }
        self.span.end();
    }
}

/// The span of one coordinator's part in a run, `run JOB` (a coordinator
/// that resumes a run records a span of its own): items that came with no
/// trace context are its children. It starts a trace of its own.
pub struct RunTrace {
    span: Mutex<BoxedSpan>,
    context: SpanContext,
}

/// Where an attempt at an item starts.
pub struct ItemSpanStart<'a> {
    pub job: &'a str,
    pub run: &'a str,
    pub item: &'a str,
    pub attempt: u32,
    pub worker: &'a str,
    /// The queue a queue-fed run takes its items from.
    pub queue: Option<&'a str>,
    /// The X-Ray trace header the item's message carried, if any.
    pub message_trace_header: Option<&'a str>,
}

/// How an attempt at an item ended, as its span records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemSpanEnd {
    /// The result is committed.
    Done { duration_ms: u64 },
    /// The function failed (its error text is never recorded); the item is
    /// retried later, or dead-lettered.
    Failed { duration_ms: u64, dead_lettered: bool },
    /// The worker no longer held it when it reported (it was given to another).
    Stale,
    /// Taken back from its worker, which was lost or stopped, or left
    /// unfinished when the run ended.
    Released,
}

impl ItemSpanEnd {
    fn outcome(self) -> &'static str {
        match self {
            ItemSpanEnd::Done { .. } => "done",
            ItemSpanEnd::Failed { dead_lettered: false, .. } => "failed",
            ItemSpanEnd::Failed { dead_lettered: true, .. } => "dead_lettered",
            ItemSpanEnd::Stale => "stale",
            ItemSpanEnd::Released => "released",
        }
    }
}

impl RunTrace {
    /// Start the span of running `job`'s run `run`, started by `trigger`.
    pub fn start(job: &str, run: &str, trigger: &str) -> RunTrace {
        let tracer = tracer();
        let span = tracer
            .span_builder(format!("run {job}"))
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("mayfly.job", job.to_owned()),
                KeyValue::new("mayfly.run", run.to_owned()),
                KeyValue::new("mayfly.trigger", trigger.to_owned()),
            ])
            .start_with_context(&tracer, &Context::new());
        let context = span.span_context().clone();
        RunTrace { span: Mutex::new(span), context }
    }

    /// Whether spans are recorded at all (a collector is named): without
    /// one, nothing needs looking up for them.
    pub fn is_recording(&self) -> bool {
        self.context.is_valid() && self.context.is_sampled()
    }

    /// Start the span of one attempt at an item: the child of its message's
    /// context if it carried one, else of this run's span.
    pub fn item(&self, start: ItemSpanStart<'_>) -> ItemTrace {
        let parent = start
            .message_trace_header
            .and_then(TraceContext::from_xray_header)
            .and_then(|carried| remote_parent(&carried))
            .unwrap_or_else(|| self.context.clone());
        let tracer = tracer();
        let mut attributes = vec![
            KeyValue::new("mayfly.job", start.job.to_owned()),
            KeyValue::new("mayfly.run", start.run.to_owned()),
            KeyValue::new("mayfly.item.attempt", i64::from(start.attempt)),
            KeyValue::new("mayfly.worker", start.worker.to_owned()),
        ];
        attributes.extend(key_attribute("mayfly.item", "mayfly.item_hmac", start.item));
        let kind = match start.queue {
            Some(queue) => {
                attributes.push(KeyValue::new("messaging.system", "mayfly"));
                attributes.push(KeyValue::new("messaging.operation.type", "process"));
                attributes.push(KeyValue::new("messaging.destination.name", queue.to_owned()));
                SpanKind::Consumer
            }
            None => SpanKind::Internal,
        };
        let span = tracer
            .span_builder(format!("item {}", start.job))
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&tracer, &Context::new().with_remote_span_context(parent));
        ItemTrace { span }
    }

    /// Record how the run ended (`succeeded`, `failed`, …) and end the span.
    pub fn finish(&self, status: &str, succeeded: bool) {
        let mut span = self.span.lock().unwrap_or_else(PoisonError::into_inner);
        span.set_attribute(KeyValue::new("mayfly.run.status", status.to_owned()));
        span.set_status(if succeeded { Status::Ok } else { Status::error(status.to_owned()) });
        span.end();
    }
}

/// The span of one attempt at one job item, `item JOB`, from its lease to
/// its outcome's commit.
pub struct ItemTrace {
    span: BoxedSpan,
}

impl ItemTrace {
    /// The context handed to the function that runs the item (on a worker,
    /// through its lease), whose parent is this span.
    pub fn handed_to_function(&self) -> Option<TraceContext> {
        carried(&self.span)
    }

    /// Record how the attempt ended and end the span.
    pub fn finish(mut self, end: ItemSpanEnd) {
        self.span.set_attribute(KeyValue::new("mayfly.outcome", end.outcome()));
        if let ItemSpanEnd::Done { duration_ms } | ItemSpanEnd::Failed { duration_ms, .. } = end {
            self.span.set_attribute(KeyValue::new("mayfly.duration_ms", duration_ms as i64));
        }
        let failed = !matches!(end, ItemSpanEnd::Done { .. });
        self.span.set_attribute(KeyValue::new("mayfly.error", failed));
        self.span.set_status(if failed { Status::error(end.outcome()) } else { Status::Ok });
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_an_item_names_its_outcome_and_never_an_error_text() {
        assert_eq!(ItemSpanEnd::Done { duration_ms: 3 }.outcome(), "done");
        assert_eq!(ItemSpanEnd::Failed { duration_ms: 3, dead_lettered: false }.outcome(), "failed");
        assert_eq!(ItemSpanEnd::Failed { duration_ms: 3, dead_lettered: true }.outcome(), "dead_lettered");
        assert_eq!(ItemSpanEnd::Released.outcome(), "released");
    }

    #[test]
    fn a_hashed_key_is_the_same_for_the_same_key_and_secret_and_never_the_key() {
        let hashed = |secret: u8, key: &str| {
            let shown = KeysShown::Hashed(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[secret; 32]));
            key_attribute_as(&shown, "mayfly.object.key", "mayfly.object.key_hmac", key).unwrap()
        };
        let first = hashed(1, "patient-1234.pdf");
        assert_eq!(first.key.as_str(), "mayfly.object.key_hmac");
        let value = first.value.as_str().into_owned();
        assert_eq!(value.len(), 64);
        assert!(!value.contains("patient"));
        assert_eq!(hashed(1, "patient-1234.pdf").value, first.value, "the same key and secret: the same value");
        assert_ne!(hashed(1, "patient-1235.pdf").value, first.value);
        assert_ne!(hashed(2, "patient-1234.pdf").value, first.value, "another store's secret: another value");
        let plain =
            key_attribute_as(&KeysShown::Plain, "mayfly.object.key", "mayfly.object.key_hmac", "a.pdf").unwrap();
        assert_eq!((plain.key.as_str(), plain.value.as_str().into_owned()), ("mayfly.object.key", "a.pdf".to_owned()));
        assert!(
            key_attribute_as(&KeysShown::Omitted, "mayfly.object.key", "mayfly.object.key_hmac", "a.pdf").is_none()
        );
    }

    #[test]
    fn without_a_provider_no_span_is_made_and_only_a_carried_context_passes_through() {
        let run = RunTrace::start("nightly", "run-1", "manual");
        assert!(!run.is_recording());
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let start = |message_trace_header| ItemSpanStart {
            job: "nightly",
            run: "run-1",
            item: "patient-1234.pdf",
            attempt: 1,
            worker: "w1-001",
            queue: None,
            message_trace_header,
        };
        let item = run.item(start(None));
        assert_eq!(item.handed_to_function(), None);
        item.finish(ItemSpanEnd::Done { duration_ms: 1 });
        // OpenTelemetry's no-op tracer hands on the parent it was given, unchanged.
        let item = run.item(start(Some(header)));
        assert_eq!(item.handed_to_function(), TraceContext::from_xray_header(header));
        item.finish(ItemSpanEnd::Released);
        run.finish("succeeded", true);
    }
}
