//! The chart-coding pipeline (examples/chart-coding, the main demo) end to
//! end through the real binary: the example's own `mayfly.toml` deployed
//! with its handler and coder, held-out charts put into bucket `charts`,
//! `mayfly up` routing their events to queue `backlog` and its alarm
//! starting job `code-charts` (no `mayfly run`), workers coding each chart
//! with the Python handler under awslambdaric, the results read over
//! `GET /v1/jobs/code-charts/results` and scored against the gold codes by
//! the example's score.py, and the audit clean afterwards. Needs python3 with
//! awslambdaric and simple-icd-10-cm 1.5.0 (`scripts/test.sh` installs both).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

const CHARTS: usize = 20;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/chart-coding")
}

fn python(args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut child = Command::new("python3")
        .args(args)
        .current_dir(example())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python3 {args:?} exited {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn ensure_code_set() {
    let found = Command::new("python3")
        .args(["-c", "import importlib.metadata as m; assert m.version('simple-icd-10-cm') == '1.5.0'"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "simple-icd-10-cm 1.5.0 is missing: `python3 -m pip install simple-icd-10-cm==1.5.0` (scripts/test.sh installs it)"
    );
}

/// The example as a project: its mayfly.toml (under a name of this test's
/// own, the API on free ports), handler.py and coder/.
fn example_project() -> Project {
    let spec = std::fs::read_to_string(example().join("mayfly.toml")).unwrap();
    let spec = spec
        .replace("name = \"chart-coding\"", &format!("name = \"{}\"", support::unique_name("charts")))
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8444", "127.0.0.1:0");
    assert!(spec.contains("127.0.0.1:0\"\naws_listen = \"127.0.0.1:0\""), "the example declares [api]: {spec}");
    let project = Project::with_spec(&spec);
    std::fs::copy(example().join("handler.py"), project.path("handler.py")).unwrap();
    std::fs::create_dir_all(project.path("coder")).unwrap();
    for entry in std::fs::read_dir(example().join("coder")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "py") {
            std::fs::copy(&path, project.path("coder").join(path.file_name().unwrap())).unwrap();
        }
    }
    project
}

/// `mayfly up` with the API the architecture declares; killed if the test fails.
struct Up {
    child: Child,
    api: std::net::SocketAddr,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Up {
    fn start(project: &Project) -> Up {
        let mut child = project
            .command(&["up", "--poll-interval", "10ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mayfly up");
        let (send, stderr) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let started = Instant::now();
        let mut seen = Vec::new();
        let api = loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(30).saturating_sub(started.elapsed()))
                .unwrap_or_else(|_| panic!("mayfly up announced no API within 30 s: {seen:?}"));
            if let Some(rest) = line.split("API listening on ").nth(1) {
                let address = rest.split("(address ").nth(1).and_then(|rest| rest.split(')').next());
                break address.unwrap_or_else(|| panic!("no address in {line:?}")).parse().unwrap();
            }
            seen.push(line);
        };
        Up { child, api, stderr }
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "mayfly up exited {status:?}: {rest:?}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every page of `GET /v1/jobs/code-charts/results?run=RUN`, as one list.
fn results_over_the_api(project: &Project, api: std::net::SocketAddr, run: &str) -> Vec<Value> {
    let token = project.json(&[
        "tokens",
        "create",
        "--name",
        "results",
        "--scope",
        "results:read",
        "--job",
        "code-charts",
    ])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cert = std::fs::read(project.path(".mayfly/tls/cert.pem")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("https://127.0.0.1:{}/v1/jobs/code-charts/results?run={run}&limit=7", api.port());
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let response = client.get(&url).bearer_auth(&token).send().unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "GET {url}");
        let page: Value = response.json().unwrap();
        records.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return records,
        }
    }
}

#[test]
fn charts_landing_in_the_bucket_are_coded_by_the_run_the_backlog_alarm_starts() {
    support::ensure_awslambdaric();
    ensure_code_set();
    let started = Instant::now();
    let project = example_project();
    project.ok(&["validate"]);
    project.ok(&["deploy"]);

    let corpus = python(&["corpus.py", "--split", "heldout", "--count", &CHARTS.to_string()], None);
    let charts: Vec<Value> = corpus.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(charts.len(), CHARTS);
    for chart in &charts {
        let key = format!("charts/in/{}.txt", chart["id"].as_str().unwrap());
        let output = project.run_with_stdin(&["put", &key, "-"], chart["text"].as_str().unwrap().as_bytes());
        support::assert_success(&output, &["put", &key]);
    }
    assert!(project.json(&["runs"]).as_array().unwrap().is_empty(), "nothing runs before the control plane");

    let up = Up::start(&project);
    let runs = project.wait_for(&["runs"], Duration::from_secs(45), |runs| {
        runs.as_array().unwrap().first().is_some_and(|run| {
            !["requested", "running", "finishing"].contains(&run["status"].as_str().unwrap())
                && run["finished_at"].is_string()
        })
    });
    let run = &runs[0];
    assert_eq!(runs.as_array().unwrap().len(), 1, "one run for the whole backlog: {runs}");
    assert_eq!(run["trigger"], "alarm:backlog", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["done"], CHARTS, "{run}");
    let run_id = run["run"].as_str().unwrap().to_owned();

    let records = results_over_the_api(&project, up.api, &run_id);
    assert_eq!(records.len(), CHARTS, "one result per chart");
    let first = &records[0]["result"];
    assert_eq!(first["bucket"], "charts", "{first}");
    assert!(first["code_set"].as_str().unwrap().contains("simple-icd-10-cm 1.5.0"), "{first}");
    up.stop();

    let scored = python(
        &["score.py", "--split", "heldout", "--count", &CHARTS.to_string(), "--json"],
        Some(serde_json::to_string(&records).unwrap().as_bytes()),
    );
    let figures: Value = serde_json::from_str(&scored).unwrap();
    assert_eq!(figures["with_result"], CHARTS, "{figures}");
    let f1 = figures["f1"].as_f64().unwrap();
    assert!(f1 >= 0.9, "F1 {f1} on the held-out charts: {figures}");
    assert!(figures["negated_coded_rate"].as_f64().unwrap() < 0.02, "{figures}");

    let report = project.json(&["run-report", &run_id]);
    assert_eq!(report["items_done"], CHARTS, "{report}");
    assert!(report["estimated_cost"].as_f64().unwrap() > 0.0, "[pricing] prices the run: {report}");
    for worker in report["workers"].as_array().unwrap() {
        assert!(worker["log_object"].is_string(), "every worker's log is sealed: {report}");
    }
    let audit = project.json(&["audit"]);
    assert!(audit["findings"].as_array().unwrap().is_empty(), "the audit is clean after the run: {audit}");
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
    eprintln!("chart coding: {CHARTS} charts, F1 {f1:.3}, in {:.1} s", started.elapsed().as_secs_f64());
}
