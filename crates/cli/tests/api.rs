//! The HTTPS API end to end through the real binary: `mayfly serve` on a
//! free loopback port over TLS, tokens made with `mayfly tokens create`,
//! requests from a real TLS client that trusts only the project's generated
//! certificate. The route table of the refusal test is read from the served
//! OpenAPI document, so a new endpoint cannot be left out of it.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use support::{Project, Served};

const HTTP_FUNCTION: &str = r#"import json, sys
event = json.load(sys.stdin)
body = {"id": event.get("pathParameters", {}).get("id"), "path": event["rawPath"],
        "query": event.get("queryStringParameters", {}), "saw_authorization": "authorization" in event["headers"]}
json.dump({"statusCode": 201, "headers": {"x-route": event["routeKey"]}, "body": json.dumps(body)}, sys.stdout)
"#;

/// A function for job items that writes a log line and answers with its event.
const ITEM_FUNCTION: &str = "#!/bin/sh\nevent=$(cat)\necho \"item-log $event\" >&2\nprintf '%s' \"$event\"\n";

fn api_project() -> Project {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("api-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[buckets.inbox]
[buckets.other]
[buckets.logs]
[queues.work]
max_receives = 3
dead_letter = "work-dlq"
[queues.work-dlq]
[functions.echo]
command = ["cat"]
[functions.item]
command = ["sh", "functions/item.sh"]
[functions.http]
command = ["python3", "functions/http.py"]
[jobs.nightly]
source = {{ bucket = "inbox", prefix = "in/" }}
function = "item"
logs = "logs"
[jobs.weekly]
source = {{ bucket = "other", prefix = "in/" }}
function = "item"
logs = "logs"
[api]
[[api.routes]]
method = "GET"
path = "/charts/{{id}}"
function = "http"
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/http.py"), HTTP_FUNCTION).unwrap();
    std::fs::write(project.path("functions/item.sh"), ITEM_FUNCTION).unwrap();
    project.ok(&["deploy"]);
    project
}

/// A TLS client that trusts the project's generated certificate and nothing else.
fn trusting_only_the_project(project: &Project) -> reqwest::blocking::ClientBuilder {
    let cert = std::fs::read(project.path(".mayfly/tls/cert.pem")).expect("serve generated the certificate");
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
}

/// A running `mayfly serve` and a client trusting only its certificate.
struct Server {
    served: Served,
    address: SocketAddr,
    client: Client,
}

impl Server {
    fn start(project: &Project) -> Server {
        let served = Served::start(project);
        assert!(
            served.announcement.iter().any(|line| line.contains("SHA-256 fingerprint")),
            "the certificate's fingerprint is printed at start: {:?}",
            served.announcement
        );
        let client = trusting_only_the_project(project).timeout(Duration::from_secs(60)).build().unwrap();
        Server { address: served.address, served, client }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.address.port())
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method.parse().unwrap(), self.url(path));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn get_json(&self, path: &str, token: &str) -> Value {
        let response = self.request("GET", path, Some(token)).send().unwrap();
        let status = response.status();
        let body: Value = response.json().unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        let status = self.served.stop();
        assert!(status.success(), "mayfly serve exited {status:?} after SIGTERM");
    }
}

fn create_token(project: &Project, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["tokens", "create", "--name", name];
    args.extend_from_slice(extra);
    let created = project.json(&args);
    created["token"].as_str().unwrap().to_owned()
}

const SCOPES: [&str; 9] = [
    "objects:read",
    "objects:write",
    "messages:write",
    "queues:read",
    "functions:invoke",
    "runs:read",
    "runs:write",
    "results:read",
    "logs:read",
];

/// The request for one documented operation, its path parameters filled with
/// names that exist where that matters and otherwise do not (so an allowed
/// request changes little).
fn sample_request(server: &Server, method: &str, template: &str, token: Option<&str>) -> RequestBuilder {
    let path = template
        .replace("{bucket}", "inbox")
        .replace("{key}", "sample.txt")
        .replace("{queue}", "work")
        .replace("{function}", "echo")
        .replace("{job}", "no-such-job")
        .replace("{run}", "run-none")
        .replace("{item}", "no-such-item")
        .replace("{id}", "17");
    let request = server.request(method, &path, token);
    match (method, template) {
        ("PUT", _) => request.header("content-type", "application/octet-stream").body("sample"),
        ("POST", "/v1/queues/{queue}/messages") => request.json(&json!({"messages": [{"body": "sample"}]})),
        ("POST", _) => request.json(&json!({})),
        _ => request,
    }
}

fn assert_error_body(response: reqwest::blocking::Response, expected: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), expected, "{what}");
    if expected == StatusCode::UNAUTHORIZED {
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"), "{what}");
    }
    let body: Value = response.json().unwrap_or_else(|error| panic!("{what}: the body is not JSON: {error}"));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["error", "status"], "{what}: an error body and nothing else: {body}");
    assert_eq!(body["status"], expected.as_u16(), "{what}");
    body
}

#[test]
fn every_endpoint_refuses_missing_wrong_revoked_expired_and_under_scoped_tokens() {
    let project = api_project();
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let revoked = create_token(&project, "revoked", &["--scope", "admin"]);
    let revoked_id = &revoked[3..19];
    project.ok(&["tokens", "revoke", revoked_id]);
    let expired = create_token(&project, "expired", &["--scope", "admin", "--expires", "1ms"]);
    let mut wrong_secret = admin.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    let single_scope: Vec<(&str, String)> = SCOPES
        .iter()
        .map(|scope| (*scope, create_token(&project, &format!("only-{scope}"), &["--scope", scope])))
        .collect();
    let server = Server::start(&project);

    let document: Value = server.client.get(server.url("/v1/openapi.json")).send().unwrap().json().unwrap();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path != "/v1/openapi.json" {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 16, "the document lists the API's operations: {operations:?}");
    assert!(
        operations.contains(&("GET".to_owned(), "/v1/routes/charts/{id}".to_owned())),
        "user routes are documented"
    );

    let bad_tokens: [(&str, Option<&str>); 5] = [
        ("missing", None),
        ("malformed", Some("not-a-token")),
        ("wrong secret", Some(&wrong_secret)),
        ("revoked", Some(&revoked)),
        ("expired", Some(&expired)),
    ];
    for (method, path) in &operations {
        for (kind, token) in bad_tokens {
            let response = sample_request(&server, method, path, token).send().unwrap();
            assert_error_body(response, StatusCode::UNAUTHORIZED, &format!("{method} {path} with a {kind} token"));
        }
        let mut allowed = Vec::new();
        for (scope, token) in &single_scope {
            let response = sample_request(&server, method, path, Some(token)).send().unwrap();
            match response.status() {
                StatusCode::FORBIDDEN => {
                    assert_error_body(response, StatusCode::FORBIDDEN, &format!("{method} {path} with only {scope}"));
                }
                StatusCode::UNAUTHORIZED => panic!("{method} {path}: a valid {scope} token got 401"),
                _ => allowed.push(*scope),
            }
        }
        let admin_only = ["/v1/access-log", "/v1/audit"];
        let expected_allowed = if admin_only.contains(&path.as_str()) { 0 } else { 1 };
        assert_eq!(allowed.len(), expected_allowed, "{method} {path} is open to exactly one scope, not {allowed:?}");
        let status = sample_request(&server, method, path, Some(&admin)).send().unwrap().status();
        assert!(
            status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            "{method} {path}: admin got {status}"
        );
    }

    // Every one of those accesses, refused ones too, is in the access log.
    let log = project.json(&["access-log", "--limit", "100000"]);
    let records = log.as_array().unwrap();
    let refused = records.iter().filter(|record| record["status"] == 401).count();
    assert!(refused >= operations.len() * bad_tokens.len(), "{refused} refusals logged");
    assert!(
        records.iter().any(|record| record["token_id"] == revoked_id && record["outcome"] == "refused: revoked token"),
        "a revoked token's attempts are logged under its id"
    );
    server.stop();
}

#[test]
fn plain_http_to_the_tls_port_is_refused_with_no_data() {
    let project = api_project();
    let server = Server::start(&project);
    let mut stream = TcpStream::connect(server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("HTTP/"), "no HTTP answer over plain TCP: {text:?}");
    assert!(!text.contains("openapi"), "no data: {text:?}");
    // What comes back, if anything, is a TLS alert record (content type 21), never application data.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    // The server is still fine for TLS clients.
    assert_eq!(server.client.get(server.url("/v1/openapi.json")).send().unwrap().status(), StatusCode::OK);
    server.stop();
}

#[test]
fn a_token_reads_and_writes_objects_messages_runs_results_logs_and_user_routes() {
    let project = api_project();
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let nightly_only = create_token(
        &project,
        "nightly-reader",
        &["--scope", "results:read", "--scope", "runs:read", "--scope", "logs:read", "--job", "nightly"],
    );
    let inbox_writer = create_token(
        &project,
        "inbox-writer",
        &["--scope", "objects:write", "--scope", "objects:read", "--bucket", "inbox"],
    );
    let listed = project.ok(&["tokens", "list", "--json"]);
    assert!(!listed.contains(&admin[20..]), "no secret in the token list");
    let server = Server::start(&project);

    // Objects: a put through the API lands (and is readable by the CLI), keys with slashes as one encoded segment.
    for n in 0..3 {
        let response = server
            .request("PUT", &format!("/v1/buckets/inbox/objects/in%2F{n}.json"), Some(&inbox_writer))
            .body(format!("{{\"n\": {n}}}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(project.ok(&["get", "inbox/in/1.json"]), "{\"n\": 1}");
    let body = server.request("GET", "/v1/buckets/inbox/objects/in%2F2.json", Some(&inbox_writer)).send().unwrap();
    assert_eq!(body.text().unwrap(), "{\"n\": 2}");
    let page = server.get_json("/v1/buckets/inbox/objects?prefix=in/&limit=2", &inbox_writer);
    assert_eq!(page["objects"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_after"], "in/1.json");
    let denied = server.request("PUT", "/v1/buckets/other/objects/x", Some(&inbox_writer)).body("x").send().unwrap();
    assert_error_body(denied, StatusCode::FORBIDDEN, "a bucket-limited token writing elsewhere");
    let buckets = server.get_json("/v1/buckets", &inbox_writer);
    assert_eq!(buckets["buckets"].as_array().unwrap().len(), 1, "a bucket-limited token sees only its bucket");

    // Messages and queue stats.
    let sent = server
        .request("POST", "/v1/queues/work/messages", Some(&admin))
        .json(&json!({"messages": [{"body": "a"}, {"body": "b", "attributes": {"source": "api"}}]}))
        .send()
        .unwrap();
    assert_eq!(sent.status(), StatusCode::CREATED);
    let queue = server.get_json("/v1/queues/work", &admin);
    assert_eq!((queue["visible"].as_u64(), queue["dead_letter_queue"].as_str()), (Some(2), Some("work-dlq")));
    let too_long = server
        .request("POST", "/v1/queues/work/messages", Some(&admin))
        .json(&json!({"messages": [{"body": "x", "delay_seconds": 901}]}))
        .send()
        .unwrap();
    assert!(
        assert_error_body(too_long, StatusCode::BAD_REQUEST, "delay too long")["error"]
            .as_str()
            .unwrap()
            .contains("messages[0].delay_seconds")
    );
    let reserved = server
        .request("POST", "/v1/queues/work/messages", Some(&admin))
        .json(&json!({"messages": [{"body": "x", "attributes": {"AWSTraceHeader": "Root=1-00000000"}}]}))
        .send()
        .unwrap();
    assert!(
        assert_error_body(reserved, StatusCode::BAD_REQUEST, "the trace header is no user attribute")["error"]
            .as_str()
            .unwrap()
            .contains("names `AWSTraceHeader`, which is reserved")
    );
    assert_eq!(server.get_json("/v1/queues/work", &admin)["visible"], 2, "nothing was sent");

    // Invoke: the same ledger as `mayfly invoke`.
    let invoked = server
        .request("POST", "/v1/functions/echo/invocations", Some(&admin))
        .json(&json!({"hello": "api"}))
        .send()
        .unwrap();
    let report: Value = invoked.json().unwrap();
    assert_eq!((report["outcome"].as_str(), &report["response"]), (Some("success"), &json!({"hello": "api"})));
    let ledger = project.json(&["invocations", "--function", "echo"]);
    assert_eq!(ledger.as_array().unwrap().len(), 1, "{ledger}");

    // A run started through the API, followed to its end, its results and logs read back.
    let started = server.request("POST", "/v1/jobs/nightly/runs", Some(&admin)).send().unwrap();
    assert_eq!(started.status(), StatusCode::CREATED);
    let run: Value = started.json().unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let detail = loop {
        let detail = server.get_json(&format!("/v1/runs/{run_id}"), &nightly_only);
        if detail["run"]["status"] != "requested"
            && detail["run"]["status"] != "running"
            && detail["run"]["status"] != "finishing"
        {
            break detail;
        }
        assert!(Instant::now() < deadline, "the run did not end: {detail}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(detail["run"]["status"], "succeeded", "{detail}");
    assert_eq!(detail["run"]["items"]["done"], 3);
    assert!(detail["report"].is_object());
    let results = server.get_json(&format!("/v1/jobs/nightly/results?run={run_id}&limit=2"), &nightly_only);
    assert_eq!(results["results"].as_array().unwrap().len(), 2);
    let next = results["next_after"].as_str().unwrap();
    let rest = server.get_json(&format!("/v1/jobs/nightly/results?after={next}"), &nightly_only);
    assert_eq!(rest["next_after"], Value::Null);
    // Pages follow the store's item order (item ids are hashed at rest): every item once.
    let mut items: Vec<&str> = [&results, &rest]
        .iter()
        .flat_map(|page| page["results"].as_array().unwrap())
        .map(|result| result["item"].as_str().unwrap())
        .collect();
    items.sort();
    assert_eq!(items, ["in/0.json", "in/1.json", "in/2.json"]);
    let one = server.get_json("/v1/jobs/nightly/results/in%2F0.json", &nightly_only);
    assert_eq!(one["status"], "done");
    assert!(one["result"].to_string().contains("in/0.json"), "the function's answer, as JSON: {one}");
    let none = server.get_json(&format!("/v1/jobs/nightly/results?run={run_id}&status=dead_lettered"), &nightly_only);
    assert_eq!(none["results"], json!([]));
    let other_job = server.request("GET", "/v1/jobs/weekly/results", Some(&nightly_only)).send().unwrap();
    assert_error_body(other_job, StatusCode::FORBIDDEN, "a job-limited token reading another job");
    let runs = server.get_json("/v1/runs", &nightly_only);
    assert!(runs["runs"].as_array().unwrap().iter().all(|run| run["job"] == "nightly"));

    let logs = server.request("GET", &format!("/v1/runs/{run_id}/logs"), Some(&nightly_only)).send().unwrap();
    assert_eq!(logs.headers()["content-type"], "text/event-stream");
    let stream = logs.text().unwrap();
    assert!(stream.contains("event: log"), "{stream}");
    assert_eq!(stream.matches("item-log").count(), 3, "each item's log line once, from the sealed logs:\n{stream}");
    assert!(stream.contains("event: end") && stream.contains("succeeded"), "{stream}");

    let cancel = server.request("POST", &format!("/v1/runs/{run_id}/cancel"), Some(&admin)).send().unwrap();
    assert_error_body(cancel, StatusCode::CONFLICT, "cancelling a finished run");

    // A user route: an API Gateway v2 event in, the function's response out, the bearer token withheld.
    let routed = server.request("GET", "/v1/routes/charts/42?page=2", Some(&admin)).send().unwrap();
    assert_eq!(routed.status(), StatusCode::CREATED);
    assert_eq!(routed.headers()["x-route"], "GET /charts/{id}");
    let routed: Value = routed.json().unwrap();
    assert_eq!(routed, json!({"id": "42", "path": "/charts/42", "query": {"page": "2"}, "saw_authorization": false}));

    // The access log (admin only) names who read what.
    let log = server.get_json("/v1/access-log?limit=1000", &admin);
    let records = log["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["resource"] == "job/nightly/result/in/0.json" && r["status"] == 200));
    assert!(records.iter().any(|r| r["resource"] == "job/weekly/results"
        && r["status"] == 403
        && r["outcome"].as_str().unwrap().contains("limited to other jobs")));
    let forbidden = server.request("GET", "/v1/access-log", Some(&nightly_only)).send().unwrap();
    assert_error_body(forbidden, StatusCode::FORBIDDEN, "the access log needs admin");
    server.stop();
}

#[test]
fn a_running_run_is_cancelled_and_its_processes_stopped() {
    let project = api_project();
    std::fs::write(project.path("functions/item.sh"), "#!/bin/sh\ncat >/dev/null\nsleep 30\n").unwrap();
    for n in 0..2 {
        support::assert_success(&project.run_with_stdin(&["put", &format!("inbox/in/{n}")], b"x"), &["put"]);
    }
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let server = Server::start(&project);
    let run: Value = server.request("POST", "/v1/jobs/nightly/runs", Some(&admin)).send().unwrap().json().unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get_json(&format!("/v1/runs/{run_id}"), &admin)["run"]["items"]["leased"] == 0 {
        assert!(Instant::now() < deadline, "no item was leased");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancelled = server.request("POST", &format!("/v1/runs/{run_id}/cancel"), Some(&admin)).send().unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["error"].as_str().unwrap().contains("cancelled through the API"));
    let processes = project.json(&["ps"]);
    assert!(
        processes.as_array().unwrap().iter().all(|p| p["run"] != run_id.as_str()),
        "every process of the run is stopped: {processes}"
    );
    server.stop();
}

/// Schemathesis (from PyPI) against the running server with an admin token:
/// no server errors and no responses that break the document.
#[test]
fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let status = std::process::Command::new("python3").args(["-m", "schemathesis.cli", "--version"]).output();
    let installed = status.as_ref().is_ok_and(|output| output.status.success());
    if !installed {
        let pip = std::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--break-system-packages", "schemathesis"])
            .status()
            .expect("run pip");
        assert!(pip.success(), "pip install schemathesis failed (scripts/test.sh installs it)");
    }
    let project = api_project();
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let server = Server::start(&project);
    let output = std::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "run", &server.url("/v1/openapi.json")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "15", "--tls-verify"])
        .arg(project.path(".mayfly/tls/cert.pem"))
        .arg("--header")
        .arg(format!("Authorization: Bearer {admin}"))
        .output()
        .expect("run schemathesis");
    let report = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    eprintln!("{report}");
    server.stop();
}

#[test]
fn the_dashboard_is_served_beside_the_api_and_checks_the_same_tokens() {
    let project = api_project();
    let server = Server::start(&project);
    let viewer = create_token(&project, "viewer", &["--scope", "runs:read"]);
    let nightly_only = create_token(&project, "nightly-viewer", &["--scope", "runs:read", "--job", "nightly"]);
    let browser = trusting_only_the_project(&project).redirect(reqwest::redirect::Policy::none()).build().unwrap();

    // Signed out: a page sends the browser to sign in; the API's routes are still the API's.
    let page = browser.get(server.url("/")).send().unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert!(page.headers()["location"].to_str().unwrap().starts_with("/sign-in"));
    let api = server.request("GET", "/v1/runs", None).send().unwrap();
    assert_error_body(api, StatusCode::UNAUTHORIZED, "the API beside the dashboard");

    let sign_in = |token: &str| {
        let answer = browser
            .post(server.url("/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .unwrap();
        let cookie = answer.headers().get("set-cookie").map(|value| value.to_str().unwrap().to_owned());
        (answer.status(), cookie)
    };
    // A token that is not one of the project's is refused at sign-in.
    let (status, cookie) =
        sign_in("mf_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000");
    assert!(cookie.is_none() && status.is_client_error(), "an unknown token signs nobody in: {status}");

    let (status, cookie) = sign_in(&viewer);
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("signing in sets the session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let runs = browser.get(server.url("/")).header("cookie", &session).send().unwrap();
    assert_eq!(runs.status(), StatusCode::OK);
    let page = runs.text().unwrap();
    assert!(page.contains(&format!("api-{}-", std::process::id())), "the runs page names the project: {page}");
    // runs:read does not read the audit (admin).
    let audit = browser.get(server.url("/audit")).header("cookie", &session).send().unwrap();
    assert_eq!(audit.status(), StatusCode::FORBIDDEN);

    // A token limited to one job would see every job's runs here: refused.
    let limited = format!("mayfly_dashboard={nightly_only}");
    let refused = browser.get(server.url("/runs.json")).header("cookie", &limited).send().unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The latest audit (deploy ran one) is in the API too, for admins.
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let audit = server.get_json("/v1/audit", &admin);
    assert_eq!(audit["audit"]["trigger"], "deploy", "{audit}");
    assert!(
        audit["audit"]["findings"].is_array() && audit["audit"]["resources_checked"].as_u64().unwrap() > 0,
        "{audit}"
    );

    // The dashboard's accesses are in the API's access log.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let records = log.as_array().unwrap();
    assert!(
        records.iter().any(|r| r["client"] == "dashboard" && r["path"] == "/" && r["status"] == 200),
        "the signed-in page view is logged: {log}"
    );
    assert!(records.iter().any(|r| r["client"] == "dashboard" && r["path"] == "/audit" && r["status"] == 403));
    server.stop();
}

/// The logs endpoint streams a running run's worker logs live, as server-sent
/// events, while the run is still going, then ends with `end`.
#[test]
fn logs_stream_live_as_server_sent_events_while_the_run_is_going() {
    let project = api_project();
    std::fs::write(
        project.path("functions/item.sh"),
        "#!/bin/sh\nevent=$(cat)\necho \"item-log live\" >&2\nsleep 1\nprintf '{}'\n",
    )
    .unwrap();
    for n in 0..4 {
        support::assert_success(&project.run_with_stdin(&["put", &format!("inbox/in/{n}")], b"x"), &["put"]);
    }
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let server = Server::start(&project);
    let run: Value = server.request("POST", "/v1/jobs/nightly/runs", Some(&admin)).send().unwrap().json().unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();

    let response = server.request("GET", &format!("/v1/runs/{run_id}/logs"), Some(&admin)).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut lines = BufReader::new(response).lines();
    let mut seen = String::new();
    loop {
        let line = lines.next().unwrap_or_else(|| panic!("the stream ended before a log line:\n{seen}")).unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("data:") && line.contains("item-log live") {
            break;
        }
    }
    let status = server.get_json(&format!("/v1/runs/{run_id}"), &admin)["run"]["status"].clone();
    assert_eq!(status, "running", "the first log line arrived while the run was going:\n{seen}");
    assert!(seen.contains("event: log"), "{seen}");
    for line in lines {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(seen.contains("event: end"), "the stream ends with `end` when the run has ended:\n{seen}");
    assert_eq!(seen.matches("item-log live").count(), 4, "each item's line once, live then sealed:\n{seen}");
    server.stop();
}

/// ARCHITECTURE.md "The token before the input": an oversized JSON body gets
/// the caller's 401/403 first; only a caller allowed to send gets the 413,
/// and the access log names the token in every case it could tell.
#[test]
fn an_oversized_json_body_meets_the_token_check_before_the_size_limit() {
    let project = api_project();
    let server = Server::start(&project);
    let writer = create_token(&project, "writer", &["--scope", "messages:write"]);
    let reader = create_token(&project, "reader", &["--scope", "queues:read"]);
    let token_id = |token: &str| token.split('_').nth(1).unwrap().to_owned();
    let mut wrong_secret = writer.clone();
    let last = wrong_secret.pop().unwrap();
    wrong_secret.push(if last == '0' { '1' } else { '0' });
    let oversized = json!({"messages": [{"body": "x".repeat((1 << 20) + 1)}]});
    let path = "/v1/queues/work/messages";
    for (token, expected) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("mf_0123456789abcdef_not-a-token"), StatusCode::UNAUTHORIZED),
        (Some(wrong_secret.as_str()), StatusCode::UNAUTHORIZED),
        (Some(reader.as_str()), StatusCode::FORBIDDEN),
        (Some(writer.as_str()), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let response = server.request("POST", path, token).json(&oversized).send().unwrap();
        assert_error_body(response, expected, &format!("an oversized body with {token:?}"));
    }
    let log = project.json(&["access-log", "--limit", "1000"]);
    let records: Vec<&Value> =
        log.as_array().unwrap().iter().filter(|record| record["path"].as_str() == Some(path)).collect();
    let statuses: Vec<(Option<&str>, u64)> =
        records.iter().map(|record| (record["token_id"].as_str(), record["status"].as_u64().unwrap())).collect();
    let (writer_id, reader_id) = (token_id(&writer), token_id(&reader));
    assert!(statuses.contains(&(Some(writer_id.as_str()), 401)), "the wrong secret is logged under its id: {log}");
    assert!(statuses.contains(&(Some(reader_id.as_str()), 403)), "{log}");
    assert!(statuses.contains(&(Some(writer_id.as_str()), 413)), "the 413 names its token: {log}");
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 0, "nothing was sent");
    server.stop();
}

/// The value of the `mayfly-deployment` header, which every `/v1` response carries.
fn served_by(response: &reqwest::blocking::Response) -> u64 {
    let header = response.headers().get("mayfly-deployment").expect("a /v1 response names its deployment");
    header.to_str().unwrap().parse().unwrap()
}

#[test]
fn a_running_server_follows_a_new_deployment_without_a_restart() {
    let project = api_project();
    let admin = create_token(&project, "admin", &["--scope", "admin"]);
    let first = project.json(&["deployments"]).as_array().unwrap().last().unwrap()["version"].as_u64().unwrap();
    let server = Server::start(&project);
    let send_to_later = || {
        server.request("POST", "/v1/queues/later/messages", Some(&admin)).json(&json!({"messages": [{"body": "hi"}]}))
    };

    let missing = send_to_later().send().unwrap();
    assert_eq!(served_by(&missing), first);
    assert_error_body(missing, StatusCode::NOT_FOUND, "a queue the running deployment does not have");
    let echo = server.request("POST", "/v1/functions/echo/invocations", Some(&admin)).json(&json!({})).send().unwrap();
    assert_eq!((echo.status(), served_by(&echo)), (StatusCode::OK, first), "echo is deployed at first");
    let unrouted = server.request("GET", "/v1/routes/reports/7", Some(&admin)).send().unwrap();
    assert_eq!((unrouted.status(), served_by(&unrouted)), (StatusCode::NOT_FOUND, first));

    // The next deployment adds a queue and a route and removes `echo`; the server is not restarted.
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap();
    let without_echo = spec.replace("[functions.echo]\ncommand = [\"cat\"]\n", "");
    assert_ne!(without_echo, spec, "the spec declared echo");
    let next_spec = format!(
        "{without_echo}[[api.routes]]\nmethod = \"GET\"\npath = \"/reports/{{id}}\"\nfunction = \"http\"\n\
         [queues.later]\n"
    );
    std::fs::write(project.path("mayfly.toml"), next_spec).unwrap();
    let second = project.json(&["deploy"])["version"].as_u64().unwrap();
    assert!(second > first);

    // Queues live in the store, which the deploy changed at once; the API's routes follow within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = server.request("GET", "/v1/queues/later", Some(&admin)).send().unwrap();
        if served_by(&response) == second {
            assert_eq!(response.status(), StatusCode::OK);
            break;
        }
        assert!(Instant::now() < deadline, "the server still serves deployment {} after 10 s", served_by(&response));
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = send_to_later().send().unwrap();
    assert_eq!((sent.status(), served_by(&sent)), (StatusCode::CREATED, second), "sent, by the new deployment");
    let received = project.json(&["receive", "later"]);
    assert_eq!(received.as_array().unwrap().len(), 1, "{received}");
    assert_eq!(received[0]["body"], "hi");

    let removed =
        server.request("POST", "/v1/functions/echo/invocations", Some(&admin)).json(&json!({})).send().unwrap();
    assert_eq!(served_by(&removed), second);
    assert_error_body(removed, StatusCode::NOT_FOUND, "a function the new deployment removed");
    let routed = server.request("GET", "/v1/routes/reports/7", Some(&admin)).send().unwrap();
    assert_eq!((routed.status(), served_by(&routed)), (StatusCode::CREATED, second), "the new route is served");
    let routed: Value = routed.json().unwrap();
    assert_eq!(routed["path"], "/reports/7");
    let document = server.get_json("/v1/openapi.json", &admin);
    assert!(document["paths"]["/v1/routes/reports/{id}"].is_object(), "the OpenAPI document follows too");
    server.stop();
}
