//! Traces over OTLP end to end (issue 15): `mayfly up` with `[telemetry]`
//! exports one object's journey — `created` → `route` → `send` → `invoke`
//! — to an OTLP/HTTP receiver built on the protocol's own message types
//! (`opentelemetry-proto`), and the functions are handed contexts of that
//! trace: a Lambda handler under awslambdaric sees `_X_AMZN_TRACE_ID`, a
//! process function `TRACEPARENT`. A job's coordinator continues it: a
//! queue-fed item's span is the child of its message's `send`, a bucket
//! item's of its run's span, and the worker's function is handed the item
//! span's context. Object keys reach the collector only hashed by default.
//! A bad `[telemetry]` is refused with a located error. Under
//! `MAYFLY_TEST_STATE=postgres` / `MAYFLY_TEST_STORAGE=s3` every project
//! here keeps its state and objects there (see `support`).

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::Project;

const WAIT: Duration = Duration::from_secs(60);

/// An OTLP/HTTP trace receiver on a loopback port: every span of every
/// `ExportTraceServiceRequest` posted to `/v1/traces` (protobuf), with the
/// `service.name` of its resource.
struct Receiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap();
        let collected = spans.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let collected = collected.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| export(request, collected.clone()));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Receiver { address, spans, _runtime: runtime }
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }
}

/// One export: decode, keep the spans, answer an empty `ExportTraceServiceResponse`.
async fn export(
    request: Request<Incoming>,
    collected: Arc<Mutex<Vec<(String, Span)>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let wrong = request.uri().path() != "/v1/traces"
        || request.headers().get("content-type").is_none_or(|value| value != "application/x-protobuf");
    let body = request.into_body().collect().await.map(|body| body.to_bytes()).unwrap_or_default();
    let decoded = ExportTraceServiceRequest::decode(body);
    let (status, answer) = match decoded {
        Ok(decoded) if !wrong => {
            let mut spans = collected.lock().unwrap();
            for resource_spans in decoded.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|resource| &resource.attributes)
                    .find(|attribute| attribute.key == "service.name")
                    .and_then(|attribute| text(attribute.value.as_ref()?.value.as_ref()?))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
                }
            }
            (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
        }
        _ => (StatusCode::BAD_REQUEST, Vec::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(answer)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
    Ok(response)
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(text) => Some(text.clone()),
        AnyValue::IntValue(number) => Some(number.to_string()),
        AnyValue::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// A span's attributes as text.
fn attributes(span: &Span) -> BTreeMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|attribute| Some((attribute.key.clone(), text(attribute.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The lambda handler: what the runtime client set in `_X_AMZN_TRACE_ID`,
/// and the record's `AWSTraceHeader` system attribute, into a file.
const LAMBDA_HANDLER: &str = r#"import json, os

def handler(event, context):
    record = event["Records"][0]
    seen = {"xray": os.environ.get("_X_AMZN_TRACE_ID"), "message": record["attributes"].get("AWSTraceHeader"),
            "message_attributes": record["messageAttributes"]}
    with open(os.path.join(os.environ["MAYFLY_PROJECT"], "lambda-saw.json"), "w") as out:
        json.dump(seen, out)
    return {}
"#;

/// The process function: its `TRACEPARENT`, into a file.
const PROCESS_FUNCTION: &str = r#"import json, os, sys
sys.stdin.read()
with open(os.path.join(os.environ["MAYFLY_PROJECT"], "process-saw.txt"), "w") as out:
    out.write(os.environ.get("TRACEPARENT", "none"))
json.dump({}, sys.stdout)
"#;

/// bucket `inbox` → route-1 → queue `backlog` → trigger → lambda `code`,
/// and → route-2 → function `index` (a process, invoked asynchronously);
/// traces go to `otlp` if given.
fn journey_project(otlp: Option<&str>) -> Project {
    journey_project_with(otlp.map(|otlp| format!("[telemetry]\notlp = \"{otlp}\"\n")).unwrap_or_default())
}

/// The same project with `telemetry` as its `[telemetry]` section.
fn journey_project_with(telemetry: String) -> Project {
    let spec = format!(
        r#"version = 1
name = "traced"

{telemetry}
[buckets.inbox]
[queues.backlog]

[functions.code]
runtime = "lambda"
command = ["python3", "-m", "awslambdaric", "handler.handler"]
handler = "handler.handler"

[functions.index]
command = ["python3", "index.py"]

[[routes]]
from = {{ bucket = "inbox" }}
to = {{ queue = "backlog" }}

[[routes]]
from = {{ bucket = "inbox" }}
to = {{ function = "index" }}

[[triggers]]
queue = "backlog"
function = "code"
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::write(project.path("handler.py"), LAMBDA_HANDLER).unwrap();
    std::fs::write(project.path("index.py"), PROCESS_FUNCTION).unwrap();
    project.ok(&["deploy"]);
    project
}

/// A hex HMAC-SHA256.
fn assert_is_hmac(value: &str) {
    assert!(value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()), "not an HMAC: {value:?}");
}

/// No attribute of any span (nor any span's name) holds `text`.
fn assert_no_attribute_holds(spans: &[(String, Span)], text: &str) {
    for (_, span) in spans {
        assert!(!span.name.contains(text), "{span:?}");
        for (key, value) in attributes(span) {
            assert!(!value.contains(text), "span {} shows {text:?} in {key} = {value:?}", span.name);
        }
    }
}

/// The one span named `name`.
fn the_span<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().map(|(_, span)| span).filter(|span| span.name == name).collect();
    let names: Vec<&str> = spans.iter().map(|(_, span)| span.name.as_str()).collect();
    assert_eq!(found.len(), 1, "spans named {name:?} among {names:?}");
    found[0]
}

#[test]
fn one_objects_journey_is_one_trace_from_its_created_event_to_each_invocation_and_the_functions_join_it() {
    support::ensure_awslambdaric();
    let receiver = Receiver::start();
    let project = journey_project(Some(&format!("http://{}", receiver.address)));
    let up = project.spawn_up();
    let before_put = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    project.ok(&["put", "inbox/charts/17.txt", "mayfly.toml"]);
    project.wait_for(&["invocations", "--limit", "10"], WAIT, |v| v.as_array().unwrap().len() == 2);
    // The batch processor exports every few seconds; a clean stop flushes what is left.
    let stderr = up.stop();
    assert!(stderr.contains(&format!("exporting traces to http://{}/v1/traces", receiver.address)), "{stderr}");
    let started = Instant::now();
    while receiver.spans().len() < 7 && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().map(|(_, span)| span.name.as_str()).collect();
    assert_eq!(spans.len(), 7, "created, 2 routes, 2 sends, 2 invocations: {names:?}");
    assert!(spans.iter().all(|(service, _)| service == "mayfly"), "service.name");

    // One trace.
    let trace_id = spans[0].1.trace_id.clone();
    assert_eq!(trace_id.len(), 16);
    assert!(spans.iter().all(|(_, span)| span.trace_id == trace_id), "one trace id: {names:?}");

    // created → route → send → invoke, for each route.
    let created = the_span(&spans, "created inbox");
    assert!(created.parent_span_id.is_empty(), "the created span is the root");
    let created_attributes = attributes(created);
    assert_eq!(created_attributes["mayfly.bucket"], "inbox");
    assert_is_hmac(&created_attributes["mayfly.object.key_hmac"]);
    assert_no_attribute_holds(&spans, "17.txt");
    assert_eq!(created_attributes["mayfly.event.name"], "ObjectCreated:Put");
    assert!(
        created.start_time_unix_nano >= before_put - 1_000_000_000
            && created.start_time_unix_nano <= created.end_time_unix_nano,
        "the created span starts at the event's own time"
    );
    let by_route: Vec<(&str, &str, &str, &str)> = vec![
        ("route route-1", "queue:backlog", "send backlog", "invoke code"),
        ("route route-2", "function:index", "send mayfly-async-index", "invoke index"),
    ];
    for (route_name, target, send_name, invoke_name) in by_route {
        let route = the_span(&spans, route_name);
        assert_eq!(route.parent_span_id, created.span_id, "{route_name} is a child of created");
        assert_eq!(attributes(route)["mayfly.route.target"], target);
        let send = the_span(&spans, send_name);
        assert_eq!(send.parent_span_id, route.span_id, "{send_name} is a child of {route_name}");
        let invoke = the_span(&spans, invoke_name);
        assert_eq!(invoke.parent_span_id, send.span_id, "{invoke_name} is a child of {send_name}");
        let invoke_attributes = attributes(invoke);
        assert_eq!(invoke_attributes["mayfly.outcome"], "success");
        assert_eq!(invoke_attributes["mayfly.error"], "false");
        assert!(invoke_attributes["mayfly.duration_ms"].parse::<u64>().is_ok(), "{invoke_attributes:?}");
        assert!(invoke.start_time_unix_nano >= send.start_time_unix_nano);
    }
    assert_eq!(attributes(the_span(&spans, "invoke code"))["mayfly.trigger"], "queue:backlog");
    assert_eq!(attributes(the_span(&spans, "invoke index"))["mayfly.trigger"], "bucket:inbox");

    // What the functions saw belongs to that trace, with their invoke span as parent.
    let trace = hex(&trace_id);
    let xray_root = format!("Root=1-{}-{}", &trace[..8], &trace[8..]);
    let lambda_saw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path("lambda-saw.json")).unwrap()).unwrap();
    let invoke_code = hex(&the_span(&spans, "invoke code").span_id);
    assert_eq!(lambda_saw["xray"], format!("{xray_root};Parent={invoke_code};Sampled=1"), "{lambda_saw}");
    let send_backlog = hex(&the_span(&spans, "send backlog").span_id);
    assert_eq!(lambda_saw["message"], format!("{xray_root};Parent={send_backlog};Sampled=1"), "{lambda_saw}");
    assert_eq!(lambda_saw["message_attributes"], serde_json::json!({}), "the trace header is no message attribute");
    let invoke_index = hex(&the_span(&spans, "invoke index").span_id);
    let process_saw = std::fs::read_to_string(project.path("process-saw.txt")).unwrap();
    assert_eq!(process_saw, format!("00-{trace}-{invoke_index}-01"));
}

#[test]
fn without_telemetry_functions_get_no_trace_context() {
    support::ensure_awslambdaric();
    let project = journey_project(None);
    let up = project.spawn_up();
    project.ok(&["put", "inbox/charts/18.txt", "mayfly.toml"]);
    project.wait_for(&["invocations", "--limit", "10"], WAIT, |v| v.as_array().unwrap().len() == 2);
    let stderr = up.stop();
    assert!(!stderr.contains("exporting traces"), "{stderr}");
    let lambda_saw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path("lambda-saw.json")).unwrap()).unwrap();
    assert_eq!(lambda_saw["xray"], serde_json::Value::Null, "{lambda_saw}");
    assert_eq!(lambda_saw["message"], serde_json::Value::Null, "{lambda_saw}");
    assert_eq!(std::fs::read_to_string(project.path("process-saw.txt")).unwrap(), "none");
}

#[test]
fn a_bad_telemetry_section_is_refused_with_its_location_and_nothing_starts() {
    for (otlp, problem) in [
        ("ftp://collector:4318", "is neither an http:// nor an https:// URL"),
        ("http://:4318", "names no host"),
        ("http://collector:99999", "has a port that is not a number"),
    ] {
        let project = Project::with_spec(&format!(
            "version = 1\nname = \"bad\"\n\n[telemetry]\notlp = \"{otlp}\"\n[buckets.inbox]\n"
        ));
        let deploy = project.fails(&["deploy"], 3);
        assert!(deploy.contains(&format!("`otlp` of `[telemetry]` {problem}")), "{deploy}");
        assert!(deploy.contains("mayfly.toml:5:8"), "located: {deploy}");
        let up = project.fails(&["up"], 3);
        assert!(up.contains(problem), "{up}");
    }
    let project =
        Project::with_spec("version = 1\nname = \"bad\"\n[telemetry]\nendpoint = \"http://collector:4318\"\n");
    let deploy = project.fails(&["deploy"], 3);
    assert!(deploy.contains("unknown key `endpoint` in `[telemetry]`"), "{deploy}");
    let project = Project::with_spec("version = 1\nname = \"bad\"\n[telemetry]\nobject_keys = \"hashed\"\n");
    for command in ["deploy", "up"] {
        let refused = project.fails(&[command], 3);
        assert!(refused.contains("`object_keys` of `[telemetry]` cannot be \"hashed\""), "{refused}");
        assert!(refused.contains("did you mean \"hash\"?"), "{refused}");
        assert!(refused.contains("mayfly.toml:4:15"), "located: {refused}");
    }
}

/// A job's function: the item it got and what the runtime client set in `_X_AMZN_TRACE_ID`.
const JOB_HANDLER: &str = r#"import os

def handler(event, context):
    return {"item": event["item"], "xray": os.environ.get("_X_AMZN_TRACE_ID")}
"#;

/// bucket `inbox` → route-1 → queue `work`, drained by job `drain`; job
/// `scan` over bucket `scans`; both run lambda `echo`; traces go to `otlp`.
fn job_project(otlp: &str) -> Project {
    let name = support::unique_name("traced-jobs");
    let spec = format!(
        r#"version = 1
name = "{name}"

[telemetry]
otlp = "{otlp}"

[buckets.inbox]
[buckets.scans]
[queues.work]

[functions.echo]
runtime = "lambda"
command = ["python3", "-m", "awslambdaric", "echo.handler"]
handler = "echo.handler"

[[routes]]
from = {{ bucket = "inbox" }}
to = {{ queue = "work" }}

[jobs.drain]
source = {{ queue = "work" }}
function = "echo"
workers = {{ max = 1 }}

[jobs.scan]
source = {{ bucket = "scans" }}
function = "echo"
workers = {{ max = 1 }}
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::write(project.path("echo.py"), JOB_HANDLER).unwrap();
    project.ok(&["deploy"]);
    project
}

/// The X-Ray header `job`'s function saw for its one item.
fn xray_seen_by(project: &Project, job: &str) -> String {
    let results = project.json(&["results", job]);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    results[0]["result"]["xray"].as_str().unwrap_or_else(|| panic!("no trace header: {results:?}")).to_owned()
}

#[test]
fn a_job_item_continues_its_messages_trace_and_its_function_is_handed_the_item_span() {
    support::ensure_awslambdaric();
    let receiver = Receiver::start();
    let project = job_project(&format!("http://{}", receiver.address));

    // The object's journey into the queue, as `mayfly up` routes it.
    let up = project.spawn_up();
    project.ok(&["put", "inbox/patient-1234.pdf", "mayfly.toml"]);
    project.wait_for(&["queues", "work"], WAIT, |queues| queues[0]["visible"] == 1);
    up.stop();
    // The trace header is the message's, not one of its user attributes.
    let peeked = project.json(&["peek", "work"]);
    assert_eq!(peeked[0]["attributes"], serde_json::json!({}), "{peeked}");
    let refused = project.fails(&["send", "work", "x", "--attribute", "AWSTraceHeader=Root=1-00000000"], 2);
    assert!(refused.contains("`AWSTraceHeader` is reserved"), "{refused}");

    // A queue-fed run, and a run over a bucket, each recorded by its coordinator.
    assert_eq!(project.json(&["run", "drain"])["status"], "succeeded");
    project.ok(&["put", "scans/patient-1234.pdf", "mayfly.toml"]);
    assert_eq!(project.json(&["run", "scan"])["status"], "succeeded");
    // created, route, send; run and item of each job. A coordinator flushes its spans as it exits.
    let started = Instant::now();
    while receiver.spans().len() < 7 && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(100));
    }
    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().map(|(_, span)| span.name.as_str()).collect();
    assert_eq!(spans.len(), 7, "{names:?}");

    let send = the_span(&spans, "send work");
    let run_drain = the_span(&spans, "run drain");
    let item_drain = the_span(&spans, "item drain");
    let item_attributes = attributes(item_drain);
    assert_eq!(item_attributes["mayfly.outcome"], "done", "{item_attributes:?}");
    assert_eq!(item_attributes["mayfly.item.attempt"], "1");
    assert_eq!(item_attributes["mayfly.error"], "false");
    assert_eq!(item_attributes["messaging.destination.name"], "work");
    assert!(item_attributes["mayfly.worker"].starts_with('w'), "{item_attributes:?}");
    assert_is_hmac(&item_attributes["mayfly.item_hmac"]);
    assert_eq!(attributes(run_drain)["mayfly.run.status"], "succeeded");
    assert_eq!(item_drain.parent_span_id, send.span_id, "the item continues its message's trace");
    assert_eq!(item_drain.trace_id, send.trace_id);
    let trace = hex(&item_drain.trace_id);
    assert_eq!(
        xray_seen_by(&project, "drain"),
        format!("Root=1-{}-{};Parent={};Sampled=1", &trace[..8], &trace[8..], hex(&item_drain.span_id)),
        "the function is handed the item span's context"
    );

    let run_scan = the_span(&spans, "run scan");
    assert!(run_scan.parent_span_id.is_empty(), "a run started by hand starts a trace");
    let item_scan = the_span(&spans, "item scan");
    assert_eq!(item_scan.parent_span_id, run_scan.span_id, "a bucket item is a child of its run");
    assert_eq!(item_scan.trace_id, run_scan.trace_id);
    let trace = hex(&item_scan.trace_id);
    assert_eq!(
        xray_seen_by(&project, "scan"),
        format!("Root=1-{}-{};Parent={};Sampled=1", &trace[..8], &trace[8..], hex(&item_scan.span_id))
    );
    assert_is_hmac(&attributes(item_scan)["mayfly.item_hmac"]);
    // Object keys and item ids reach the collector only hashed.
    assert_no_attribute_holds(&spans, "patient");
    // The same key, hashed by `mayfly up` and by a coordinator: the same value.
    assert_eq!(
        attributes(item_scan)["mayfly.item_hmac"],
        attributes(the_span(&spans, "created inbox"))["mayfly.object.key_hmac"]
    );
}

#[test]
fn object_keys_plain_shows_the_key_and_omit_leaves_it_out() {
    support::ensure_awslambdaric();
    for (object_keys, shown) in [("plain", Some("charts/19.txt")), ("omit", None)] {
        let receiver = Receiver::start();
        let project = journey_project_with(format!(
            "[telemetry]\notlp = \"http://{}\"\nobject_keys = \"{object_keys}\"\n",
            receiver.address
        ));
        let up = project.spawn_up();
        project.ok(&["put", "inbox/charts/19.txt", "mayfly.toml"]);
        project.wait_for(&["invocations", "--limit", "10"], WAIT, |v| v.as_array().unwrap().len() == 2);
        up.stop();
        let started = Instant::now();
        while receiver.spans().len() < 7 && started.elapsed() < WAIT {
            std::thread::sleep(Duration::from_millis(100));
        }
        let spans = receiver.spans();
        let created = attributes(the_span(&spans, "created inbox"));
        assert_eq!(created.get("mayfly.object.key").map(String::as_str), shown, "{object_keys}: {created:?}");
        assert!(!created.contains_key("mayfly.object.key_hmac"), "{object_keys}: {created:?}");
        if shown.is_none() {
            assert_no_attribute_holds(&spans, "19.txt");
        }
    }
}
