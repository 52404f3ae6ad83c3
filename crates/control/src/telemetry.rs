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

use std::borrow::Cow;
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
            .with_attributes([
                KeyValue::new("mayfly.bucket", event.bucket.to_string()),
                KeyValue::new("mayfly.object.key", event.key.clone()),
                KeyValue::new("mayfly.object.size", event.size as i64),
                KeyValue::new("mayfly.event.name", mayfly_events::s3_event_name(event)),
                KeyValue::new("mayfly.event.sequence", event.sequence as i64),
            ])
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
