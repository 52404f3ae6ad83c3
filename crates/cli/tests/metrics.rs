//! Prometheus metrics at `/metrics` on the API's port, through the real
//! binary: token-protected (`metrics:read`; 401 without a token, 403 without
//! the scope), the figures read from the state store (queue depths, the
//! invocation ledger), and a real Prometheus server (Debian's `prometheus`,
//! which scripts/test.sh installs) scraping a running `mayfly serve` over
//! TLS with a bearer token, its HTTP API answering a query for a series; and
//! a running job's metrics (its items by status, live workers, coordinator
//! lease) and a queue's oldest message's age, scraped while the job's
//! function is held at a gate, with the values the test set up; and the
//! job's counter of completed items, kept across runs and restarts.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::Value;
use support::{Project, Served};

const SPEC: &str = r#"version = 1
name = "NAME"
[queues.work]
[functions.ok]
command = ["sh", "-c", "cat >/dev/null; echo '{}'"]
[functions.broken]
command = ["sh", "-c", "echo 'it broke' >&2; exit 3"]
[api]
"#;

fn project() -> Project {
    let project = Project::with_spec(&SPEC.replace("NAME", &support::unique_name("metrics")));
    project.ok(&["deploy"]);
    for body in ["a", "b", "c"] {
        project.ok(&["send", "work", body]);
    }
    let event = project.path("event.json");
    std::fs::write(&event, "{}").unwrap();
    let event = event.display().to_string();
    project.ok(&["invoke", "ok", "--event", &event]);
    project.ok(&["invoke", "ok", "--event", &event]);
    let _ = project.run(&["invoke", "broken", "--event", &event]);
    project
}

fn client(project: &Project) -> Client {
    let cert = std::fs::read(project.path(".mayfly/tls/cert.pem")).expect("serve generated the certificate");
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn token(project: &Project, name: &str, scope: &str) -> String {
    project.json(&["tokens", "create", "--name", name, "--scope", scope])["token"].as_str().unwrap().to_owned()
}

/// The value of the sample named `series` (name and labels exactly as
/// exposed) in an exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_need_their_scope_and_show_queues_and_the_ledger() {
    let project = project();
    let mut served = Served::start(&project);
    let client = client(&project);
    let url = format!("https://127.0.0.1:{}/metrics", served.address.port());

    let refused = client.get(&url).send().unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let reader = token(&project, "reader", "queues:read");
    let refused = client.get(&url).bearer_auth(&reader).send().unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "queues:read is not metrics:read");

    let scraper = token(&project, "scraper", "metrics:read");
    let response = client.get(&url).bearer_auth(&scraper).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.text().unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "an OpenMetrics exposition ends with # EOF:\n{text}");
    assert_eq!(sample(&text, r#"mayfly_queue_messages{queue="work",state="visible"}"#), Some(3.0), "{text}");
    assert_eq!(sample(&text, r#"mayfly_queue_messages{queue="work",state="in_flight"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, r#"mayfly_function_invocations_total{function="ok"}"#), Some(2.0), "{text}");
    assert_eq!(sample(&text, r#"mayfly_function_errors_total{function="ok"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, r#"mayfly_function_errors_total{function="broken"}"#), Some(1.0), "{text}");
    // The ledger's durations as a histogram: every invocation under +Inf, the
    // buckets cumulative, none above the count.
    let bucket =
        |le: &str| sample(&text, &format!(r#"mayfly_function_duration_seconds_bucket{{le="{le}",function="ok"}}"#));
    assert_eq!(bucket("+Inf"), Some(2.0), "{text}");
    assert_eq!(sample(&text, r#"mayfly_function_duration_seconds_count{function="ok"}"#), Some(2.0), "{text}");
    assert!(
        sample(&text, r#"mayfly_function_duration_seconds_sum{function="ok"}"#).is_some_and(|sum| sum > 0.0),
        "{text}"
    );
    let counts: Vec<f64> = ["0.001", "0.01", "0.1", "1.0", "10.0", "3600.0", "+Inf"]
        .iter()
        .map(|le| bucket(le).unwrap_or_else(|| panic!("no bucket le={le}:\n{text}")))
        .collect();
    assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]), "cumulative buckets: {counts:?}");
    assert_eq!(sample(&text, r#"mayfly_function_throttles_total{function="ok"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, "mayfly_deployment_version"), Some(1.0), "{text}");
    // The refused scrapes above were counted by route and status; the error
    // text of a function (user data) is never a label.
    assert!(
        sample(&text, r#"mayfly_api_requests_total{method="GET",route="/metrics",status="403"}"#) == Some(1.0),
        "{text}"
    );
    assert!(!text.contains("it broke"), "no user data in the metrics:\n{text}");

    // A message received is in flight at the next scrape.
    project.ok(&["receive", "work", "--max", "1"]);
    let text = client.get(&url).bearer_auth(&scraper).send().unwrap().text().unwrap();
    assert_eq!(sample(&text, r#"mayfly_queue_messages{queue="work",state="in_flight"}"#), Some(1.0), "{text}");

    // Every scrape is in the access log, the refused ones too.
    let log = project.json(&["access-log"]);
    let scrapes = log.as_array().unwrap().iter().filter(|record| record["path"] == "/metrics").count();
    assert_eq!(scrapes, 4, "{log}");
    assert!(served.stop().success());
}

/// A Prometheus server scraping `target` every second, with its own
/// storage under `dir`; killed when dropped.
struct Prometheus {
    child: Child,
    address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_prometheus(dir: &std::path::Path, target: &str, token: &str, ca_file: &std::path::Path) -> Prometheus {
    let found = Command::new("prometheus").arg("--version").output().map(|output| output.status.success());
    assert!(
        found.unwrap_or(false),
        "prometheus is missing: `apt-get install prometheus` (scripts/test.sh installs it)"
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mayfly\n    scheme: https\n    \
             metrics_path: /metrics\n    authorization:\n      credentials: {token}\n    tls_config:\n      \
             ca_file: {ca}\n    static_configs:\n      - targets: ['{target}']\n",
            ca = ca_file.display()
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={address}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    Prometheus { child, address }
}

#[test]
fn a_real_prometheus_server_scrapes_mayfly_over_tls_with_a_token() {
    let project = project();
    let served = Served::start(&project);
    let scraper = token(&project, "prometheus", "metrics:read");
    let dir = tempfile::tempdir().unwrap();
    // The certificate names localhost and 127.0.0.1.
    let target = format!("localhost:{}", served.address.port());
    let prometheus = start_prometheus(dir.path(), &target, &scraper, &project.path(".mayfly/tls/cert.pem"));

    let query = format!("http://{}/api/v1/query", prometheus.address);
    let plain = Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer: Option<Value> = plain
            .get(&query)
            .query(&[("query", r#"mayfly_queue_messages{queue="work",state="visible"}"#)])
            .send()
            .ok()
            .and_then(|response| response.json().ok());
        if let Some(answer) = &answer
            && answer["data"]["result"].as_array().is_some_and(|result| !result.is_empty())
        {
            break answer.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has no sample of the queue after 60 s: {answer:?}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["job"], "mayfly", "{answer}");
    assert_eq!(result["value"][1], "3", "{answer}");

    // The target is up: the scrape succeeded with the token over TLS.
    let up: Value = plain.get(&query).query(&[("query", "up")]).send().unwrap().json().unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    drop(prometheus);
    drop(served);
}

const JOB_SPEC: &str = r#"version = 1
name = "NAME"
[queues.waiting]
[buckets.inbox]
[functions.gated]
command = ["sh", "gated.sh"]
timeout = "2m"
[jobs.scan]
source = { bucket = "inbox", prefix = "in/" }
function = "gated"
workers = { max = 2 }
max_attempts = 1
[api]
"#;

/// Fails at once on the poisoned item (dead-lettered: one attempt); any
/// other item waits for a ticket (a file the test writes into `gate/open/`),
/// or passes once `gate/all` exists.
const GATED: &str = r#"event=$(cat)
case "$event" in *poison*) echo 'poisoned' >&2; exit 3;; esac
until [ -e gate/all ]; do
  for ticket in gate/open/*; do
    if mv "$ticket" gate/used/ 2>/dev/null; then break 2; fi
  done
  sleep 0.05
done
echo '{}'
"#;

/// Items of the job: one poisoned, the rest gated.
const ITEMS: usize = 10;

/// Opens the gate when dropped, so that no run is left waiting however the test ends.
struct OpenGateOnDrop(std::path::PathBuf);

impl Drop for OpenGateOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("all"), b"");
    }
}

/// Scrapes `url` until `ready` holds for the exposition text (or fails after 60 s, showing the last one).
fn scrape_until(client: &Client, url: &str, token: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = client.get(url).bearer_auth(token).send().unwrap().text().unwrap();
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out after 60 s waiting until {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_running_jobs_items_workers_and_lease_and_a_queues_age_are_scraped_with_their_values() {
    let project = Project::with_spec(&JOB_SPEC.replace("NAME", &support::unique_name("metrics-run")));
    std::fs::write(project.path("gated.sh"), GATED).unwrap();
    for folder in ["gate/open", "gate/used"] {
        std::fs::create_dir_all(project.path(folder)).unwrap();
    }
    let gate = OpenGateOnDrop(project.path("gate"));
    project.ok(&["deploy"]);
    std::fs::write(project.path("item.txt"), "an item").unwrap();
    project.ok(&["put", "inbox/in/0-poison.txt", "item.txt"]);
    for n in 1..ITEMS {
        project.ok(&["put", &format!("inbox/in/{n}.txt"), "item.txt"]);
    }
    let before_send = Instant::now();
    project.ok(&["send", "waiting", "not received by anyone"]);
    let after_send = Instant::now();
    // So that its age is more than a rounding error when it is scraped.
    std::thread::sleep(Duration::from_secs(1));

    let mut served = Served::start(&project);
    let client = client(&project);
    let url = format!("https://127.0.0.1:{}/metrics", served.address.port());
    let scraper = token(&project, "scraper", "metrics:read");

    // A real run: its coordinator and two worker processes. Two tickets let two items through.
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().expect("the run's id").to_owned();
    for ticket in 0..2 {
        std::fs::write(project.path(&format!("gate/open/{ticket}")), b"").unwrap();
    }
    let series = |name: &str, extra: &str| format!(r#"mayfly_{name}{{job="scan",run="{run}"{extra}}}"#);
    let items = |status: &str| series("run_items", &format!(r#",status="{status}""#));
    let text = scrape_until(&client, &url, &scraper, "an item has ended and both workers are live", |text| {
        let ended = sample(text, &items("done")).unwrap_or(0.0) + sample(text, &items("dead_lettered")).unwrap_or(0.0);
        ended >= 1.0 && sample(text, &series("run_workers", "")) == Some(2.0)
    });
    // Held at the gate: at most the two items let through are done and the
    // poisoned one dead-lettered (a finished item's completion may still be
    // on its way: a worker holds it up to its 50 ms spacing), the rest
    // pending or leased to the two workers, none returned.
    let count = |status: &str| sample(&text, &items(status)).unwrap_or_else(|| panic!("no {status} items:\n{text}"));
    let (done, dead_lettered, pending, leased) =
        (count("done"), count("dead_lettered"), count("pending"), count("leased"));
    assert!(done <= 2.0, "only two tickets were given out:\n{text}");
    assert!(dead_lettered <= 1.0, "only one item is poisoned:\n{text}");
    assert_eq!(count("returned"), 0.0, "{text}");
    assert_eq!(done + dead_lettered + pending + leased, ITEMS as f64, "every item counted once:\n{text}");
    assert!(leased >= 2.0, "each live worker holds the item its function waits on:\n{text}");
    // The job's counter of completed items is read from the same store.
    let completed = |text: &str, status: &str| {
        sample(text, &format!(r#"mayfly_run_items_completed_total{{job="scan",status="{status}"}}"#))
    };
    assert_eq!(completed(&text, "done"), Some(done), "{text}");
    assert_eq!(completed(&text, "dead_lettered"), Some(dead_lettered), "{text}");
    // The coordinator holds its lease (10 s, renewed every third of it).
    let lease = sample(&text, &series("run_coordinator_lease_remaining_seconds", "")).unwrap();
    assert!(lease > 0.0 && lease <= 10.0, "lease remaining {lease}:\n{text}");
    // The message sent before the run has aged as long as the test has waited since.
    let age = sample(&text, r#"mayfly_queue_oldest_message_age_seconds{queue="waiting"}"#).unwrap();
    let (at_least, at_most) = (after_send.elapsed().as_secs_f64(), before_send.elapsed().as_secs_f64());
    assert!(at_least >= 1.0, "the scrape came a second after the send or later ({at_least} s)");
    assert!(at_least - 0.01 <= age && age <= at_most + 0.01, "age {age} not within [{at_least}, {at_most}]:\n{text}");

    // Every item through: the run ends, and its gauges go with it.
    drop(gate);
    let text = scrape_until(&client, &url, &scraper, "the run ended", |text| sample(text, &items("done")).is_none());
    assert!(!text.contains(&format!(r#"run="{run}""#)), "a finished run has no series:\n{text}");
    let runs = project.json(&["runs"]);
    assert_eq!(runs[0]["status"], "completed_with_failures", "9 done, the poisoned one dead-lettered: {runs}");
    // The counter stays when the run ends: `rate()` of it is the items per second.
    assert_eq!(completed(&text, "done"), Some((ITEMS - 1) as f64), "{text}");
    assert_eq!(completed(&text, "dead_lettered"), Some(1.0), "{text}");

    // It keeps counting from run to run, and a restarted server reads it again from the store.
    let again = project.command(&["run", "scan", "--json"]).output().unwrap();
    assert_eq!(again.status.code(), Some(11), "a run with a dead-lettered item exits 11");
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["status"], "completed_with_failures", "{again}");
    assert!(served.stop().success());
    let mut served = Served::start(&project);
    let url = format!("https://127.0.0.1:{}/metrics", served.address.port());
    let text = client.get(&url).bearer_auth(&scraper).send().unwrap().text().unwrap();
    assert_eq!(completed(&text, "done"), Some(2.0 * (ITEMS - 1) as f64), "{text}");
    assert_eq!(completed(&text, "dead_lettered"), Some(2.0), "{text}");
    assert!(served.stop().success());
}
