//! Batch jobs end to end: `mayfly run` starts a coordinator process that
//! provisions local worker processes; the tests check results, sealed logs,
//! reports and that nothing is left running — including under chaos (workers
//! and the coordinator SIGKILLed mid-run).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

/// A function that reads its event, sleeps `$SLEEP` seconds and answers with the item.
const SLEEPER: &str = r#"#!/bin/sh
event=$(cat)
echo "working on $event" >&2
sleep "${SLEEP:-0}"
printf '{"done": true}'
"#;

fn job_project(items: usize, workers: u32, extra_function: &str, extra_job: &str) -> Project {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // A name of its own, so `mayfly ps` sees only this test's processes.
    let name = format!("jobs-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
{extra_function}
[jobs.scan]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
workers = {{ max = {workers} }}
max_attempts = 3
logs = "logs"
{extra_job}
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    let lines: String = (0..items).map(|i| format!("{i:05}\n")).collect();
    // One object per item, sent through stdin lines would be one message; put them one by one.
    for line in lines.lines() {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{line}")], line.as_bytes());
        support::assert_success(&output, &["put"]);
    }
    project
}

fn live_processes(project: &Project) -> Vec<Value> {
    project.json(&["ps"]).as_array().unwrap().clone()
}

fn result_items(project: &Project, job: &str) -> Vec<String> {
    project
        .json(&["results", job, "--limit", "100000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["item"].as_str().unwrap().to_owned())
        .collect()
}

fn kill_group(resource_id: &str) {
    let pgid: i32 = resource_id.split(':').nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group; the group belongs to this test's run.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[test]
fn a_run_processes_every_item_once_seals_logs_and_leaves_nothing_running() {
    let project = job_project(40, 3, "env = { SLEEP = \"0.05\" }", "");
    let outcome = project.json(&["run", "scan"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let report = &outcome["report"];
    assert_eq!(report["items_expected"], 40);
    assert_eq!(report["items_done"], 40);
    assert_eq!(report["items_dead_lettered"], 0);
    let run = outcome["run"].as_str().unwrap();

    let items = result_items(&project, "scan");
    assert_eq!(items.len(), 40);
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), 40, "one result per item");
    assert!(live_processes(&project).is_empty(), "no worker or coordinator remains");

    let workers = report["workers"].as_array().unwrap();
    assert!(!workers.is_empty() && workers.len() <= 3, "{report}");
    for worker in workers {
        assert_eq!(worker["end"], "stopped", "{worker}");
        let name = worker["worker"].as_str().unwrap();
        let log = project.ok(&["logs", run, "--worker", name]);
        assert!(log.contains(&format!("worker {name} of run {run} started")), "{log}");
        assert!(log.contains("stopping after"), "{log}");
        assert!(log.contains("working on"), "function output is in the worker's log: {log}");
    }
    let listing = project.json(&["ls", &format!("logs/runs/{run}/")]);
    assert_eq!(listing.as_array().unwrap().len(), workers.len() * 2, "a .zst and a .sha256 per worker: {listing}");
    let runs = project.json(&["runs"]);
    assert_eq!(runs[0]["status"], "succeeded");
}

#[test]
fn an_item_may_outlast_the_function_timeout_within_the_item_timeout() {
    let project = job_project(2, 1, "env = { SLEEP = \"2\" }\ntimeout = \"1s\"", "item_timeout = \"10s\"");
    let outcome = project.json(&["run", "scan"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["report"]["items_done"], 2);
    assert_eq!(outcome["report"]["retries"], 0);
}

#[test]
fn failing_items_are_retried_then_dead_lettered_and_the_run_says_so() {
    let project = job_project(3, 1, "env = { SLEEP = \"0\" }\nretries = { max_attempts = 1, backoff = \"50ms\" }", "");
    std::fs::write(
        project.path("functions/sleeper.sh"),
        "#!/bin/sh\ncat >/dev/null\necho 'cannot read this scan' >&2\nexit 2\n",
    )
    .unwrap();
    let output = project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(5), "a run whose every item was dead-lettered failed");
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert!(outcome["error"].as_str().unwrap().contains("every item (3) was dead-lettered"), "{outcome}");
    let report = &outcome["report"];
    assert_eq!(report["status"], "failed");
    assert_eq!(report["items_dead_lettered"], 3, "{outcome}");
    assert_eq!(report["items_done"], 0);
    assert_eq!(report["items_failed_attempts"], 9, "3 attempts each: {report}");
    assert!(result_items(&project, "scan").is_empty());
    assert_eq!(project.json(&["runs"])[0]["status"], "failed");
}

#[test]
fn a_run_with_some_items_dead_lettered_completes_with_failures_and_exits_11() {
    let project = job_project(4, 2, "retries = { max_attempts = 1, backoff = \"50ms\" }", "");
    std::fs::write(
        project.path("functions/sleeper.sh"),
        "#!/bin/sh\nevent=$(cat)\ncase \"$event\" in *in/00002*) echo 'unreadable scan' >&2; exit 2;; esac\nprintf '{\"done\": true}'\n",
    )
    .unwrap();
    let output = project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(11), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "completed_with_failures", "{outcome}");
    assert_eq!(outcome["error"], "1 of 4 items were dead-lettered; 3 are done", "{outcome}");
    let run = outcome["run"].as_str().unwrap();
    let report = project.json(&["run-report", run]);
    assert_eq!(report["status"], "completed_with_failures", "{report}");
    assert_eq!((report["items_done"].as_u64(), report["items_dead_lettered"].as_u64()), (Some(3), Some(1)));
    assert_eq!(report["items_failed_attempts"], 3, "the job's 3 attempts at the bad item: {report}");
    let text = project.ok(&["run-report", run]);
    assert!(text.contains(": completed_with_failures"), "{text}");
    let runs = project.json(&["runs"]);
    assert_eq!(runs[0]["status"], "completed_with_failures", "{runs}");
    assert_eq!(runs[0]["dead_lettered"], 1);
    let stderr = String::from_utf8_lossy(&project.run(&["run", "scan"]).stderr).into_owned();
    assert!(stderr.contains("ended completed_with_failures: 1 of 4 items were dead-lettered"), "{stderr}");
}

#[test]
fn a_worker_that_cannot_start_fails_the_run_with_a_clear_error_and_tears_everything_down() {
    let project = job_project(5, 2, "", "");
    let spec = std::fs::read_to_string(project.path("mayfly.toml"))
        .unwrap()
        .replace("[\"sh\", \"functions/sleeper.sh\"]", "[\"functions/no-such-binary\"]");
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let output = project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed");
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("failed to start") && error.contains("no-such-binary"), "{error}");
    assert!(live_processes(&project).is_empty());
}

#[test]
fn chaos_workers_and_the_coordinator_killed_mid_run_lose_nothing() {
    const ITEMS: usize = 2000;
    let project = job_project(ITEMS, 8, "env = { SLEEP = \"0.1\" }", "");
    let up = project.spawn_up();
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();

    let began = Instant::now();
    let mut worker_kills = 0;
    let mut coordinator_killed = false;
    while worker_kills < 10 || !coordinator_killed {
        std::thread::sleep(Duration::from_millis(1500));
        let status = project.json(&["runs"])[0]["status"].as_str().unwrap().to_owned();
        assert!(
            status != "succeeded" && status != "failed",
            "the run ended ({status}) before the chaos did: make it longer"
        );
        let live = live_processes(&project);
        if worker_kills >= 10 {
            if let Some(coordinator) = live.iter().find(|p| p["role"] == "coordinator") {
                kill_group(coordinator["id"].as_str().unwrap());
                coordinator_killed = true;
            }
            continue;
        }
        let workers: Vec<&Value> = live.iter().filter(|p| p["role"] == "worker").collect();
        if let Some(victim) = workers.get(worker_kills % workers.len().max(1)) {
            kill_group(victim["id"].as_str().unwrap());
            worker_kills += 1;
        }
        assert!(began.elapsed() < Duration::from_secs(120), "chaos took too long");
    }

    let deadline = Instant::now() + Duration::from_secs(240);
    let finished = loop {
        let runs = project.json(&["runs"]);
        let status = runs[0]["status"].as_str().unwrap().to_owned();
        if status == "succeeded" || status == "failed" {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline, "the run did not finish: {runs}");
        std::thread::sleep(Duration::from_millis(500));
    };
    up.stop();

    assert_eq!(finished["status"], "succeeded", "{finished}");
    let items = result_items(&project, "scan");
    assert_eq!(items.len(), ITEMS, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), ITEMS);

    let report = project.json(&["run-report", &run]);
    assert_eq!(report["items_done"], ITEMS as u64);
    assert!(report["retries"].as_u64().unwrap() > 0, "killed workers' items were re-executed: {report}");
    let workers = report["workers"].as_array().unwrap();
    let normal: Vec<&Value> = workers.iter().filter(|w| w["end"] == "stopped").collect();
    assert!(!normal.is_empty(), "{report}");
    for worker in normal {
        let name = worker["worker"].as_str().unwrap();
        let log = project.ok(&["logs", &run, "--worker", name]);
        assert!(log.contains("stopping after"), "{name}: {log}");
    }
    assert!(live_processes(&project).is_empty(), "no worker or coordinator remains: {:?}", live_processes(&project));
    eprintln!(
        "chaos: {worker_kills} workers and 1 coordinator killed; {ITEMS} items, {} retries, {} workers in the report",
        report["retries"],
        workers.len()
    );
}

#[test]
fn an_alarm_on_a_queue_backlog_starts_a_run_that_drains_the_queue() {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("alarm-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let spec = format!(
        r#"version = 1
name = "{name}"
[buckets.logs]
[queues.work]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
[alarms.backlog]
metric = "queue.work.visible"
when = ">= 5 for 1s"
[jobs.drain]
source = {{ queue = "work", batch = 10 }}
function = "work"
workers = {{ max = 2 }}
logs = "logs"
triggers = [{{ alarm = "backlog" }}]
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    let up = project.spawn_up();
    for message in ["a", "b", "c", "d"] {
        project.ok(&["send", "work", message]);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(project.json(&["runs"]).as_array().unwrap().is_empty(), "4 messages are below the threshold");
    project.ok(&["send", "work", "e"]);
    let runs = project.wait_for(&["runs"], Duration::from_secs(60), |runs| {
        runs.as_array().unwrap().first().is_some_and(|run| run["status"] == "succeeded")
    });
    up.stop();
    assert_eq!(runs[0]["trigger"], "alarm:backlog", "{runs}");
    assert_eq!(runs[0]["done"], 5, "{runs}");
    assert_eq!(result_items(&project, "drain").len(), 5);
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 0);
    // The coordinator marks the run succeeded, then audits it and exits.
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
}

#[test]
fn a_run_past_its_deadline_ends_the_same_orderly_way_with_unfinished_items_pending() {
    let project = job_project(20, 1, "env = { SLEEP = \"0.5\" }", "deadline = \"2s\"");
    let output = project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(5));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "deadline_exceeded", "{outcome}");
    let report = &outcome["report"];
    let done = report["items_done"].as_u64().unwrap();
    assert!(done > 0 && done < 20, "{report}");
    assert_eq!(result_items(&project, "scan").len() as u64, done);
    assert!(report["workers"][0]["log_object"].is_string(), "logs sealed even so: {report}");
    assert!(live_processes(&project).is_empty());
}

#[test]
fn reconcile_runs_the_objects_that_have_no_result() {
    let project = job_project(5, 2, "", "");
    assert_eq!(project.json(&["run", "scan"])["status"], "succeeded");
    let nothing = project.json(&["reconcile", "scan"]);
    assert_eq!(nothing["missing"].as_array().unwrap().len(), 0, "{nothing}");
    for late in ["00100", "00101"] {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{late}")], late.as_bytes());
        support::assert_success(&output, &["put"]);
    }
    let reconciled = project.json(&["reconcile", "scan"]);
    assert_eq!(reconciled["missing"], serde_json::json!(["in/00100", "in/00101"]), "{reconciled}");
    let run = reconciled["run"].as_str().unwrap().to_owned();
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| {
        runs.as_array().unwrap().iter().any(|r| r["run"] == run.as_str() && r["status"] == "succeeded")
    });
    assert_eq!(result_items(&project, "scan").len(), 7);
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
}

#[test]
fn a_manifest_source_runs_one_item_per_line() {
    let project = job_project(0, 2, "", "");
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap().replace(
        "source = { bucket = \"scans\", prefix = \"in/\" }",
        "source = { manifest = { bucket = \"scans\", key = \"manifest.txt\" } }",
    );
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let output = project.run_with_stdin(&["put", "scans/manifest.txt"], b"sample-a\nsample-b\n\nsample-c\n");
    support::assert_success(&output, &["put"]);
    let outcome = project.json(&["run", "scan"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    // Results list in the store's item order (ids are hashed at rest), so compare them sorted.
    let mut items = result_items(&project, "scan");
    items.sort();
    assert_eq!(items, ["sample-a", "sample-b", "sample-c"]);
}

#[test]
fn a_run_whose_manifest_is_missing_fails_at_once_naming_it_and_is_not_resumed() {
    let project = job_project(0, 2, "", "");
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap().replace(
        "source = { bucket = \"scans\", prefix = \"in/\" }",
        "source = { manifest = { bucket = \"scans\", key = \"missing.txt\" } }",
    );
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let began = Instant::now();
    let output = project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("object `missing.txt` does not exist in bucket `scans`"), "{error}");
    assert!(began.elapsed() < Duration::from_secs(60), "failed at once, not after coordinator restarts");
    let run = outcome["run"].as_str().unwrap();
    let report = project.json(&["runs"]);
    assert_eq!(report[0]["run"], run, "{report}");
    assert_eq!(report[0]["status"], "failed", "the run stays failed: {report}");
    assert!(live_processes(&project).is_empty());
}

#[test]
fn logs_follow_a_live_run_until_it_ends_then_read_the_sealed_archive() {
    let project = job_project(30, 2, "env = { SLEEP = \"0.1\" }", "");
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    // Follows the live worker logs and returns once the run has ended.
    let followed = project.ok(&["logs", &run, "--follow"]);
    assert!(followed.contains("] working on"), "live lines are prefixed with their worker: {followed}");
    assert!(followed.contains(&format!("run {run} ended")), "{followed}");
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
    let archived = project.ok(&["logs", &run]);
    assert!(archived.contains("--- worker w1-001"), "{archived}");
    assert_eq!(archived.matches("working on").count(), 30, "every item's function output, once: {archived}");
}

/// The worker arguments the coordinator started a live worker process with.
fn worker_arguments(resource_id: &str) -> std::collections::BTreeMap<String, String> {
    let pid: i32 = resource_id.split(':').nth(1).unwrap().parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let words: Vec<String> =
        cmdline.split(|b| *b == 0).map(|w| String::from_utf8_lossy(w).into_owned()).filter(|w| !w.is_empty()).collect();
    words.windows(2).filter(|pair| pair[0].starts_with("--")).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
}

/// Every file under `dir` whose text holds a PEM private key.
fn pem_private_keys(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            found.extend(pem_private_keys(&path));
        } else if kind.is_file() // not a worker's output FIFO: reading it would wait for the worker
            && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(11).any(|w| w == b"PRIVATE KEY"))
        {
            found.push(path);
        }
    }
    found
}

/// The environment of a live worker process (readable by its user only).
fn worker_environment(resource_id: &str) -> std::collections::BTreeMap<String, String> {
    let pid: i32 = resource_id.split(':').nth(1).unwrap().parse().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    environ
        .split(|b| *b == 0)
        .filter_map(|pair| {
            let text = String::from_utf8_lossy(pair);
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[test]
fn workers_enroll_with_one_time_tokens_and_the_coordinator_serves_each_only_under_its_own_certificate() {
    let project = job_project(4, 2, "env = { SLEEP = \"2\" }", "");
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let live = project.wait_for(&["ps"], Duration::from_secs(30), |live| {
        live.as_array().unwrap().iter().filter(|p| p["role"] == "worker").count() == 2
    });
    let mut workers: Vec<_> = live
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "worker")
        .map(|p| {
            let id = p["id"].as_str().unwrap();
            (worker_arguments(id), worker_environment(id))
        })
        .collect();
    workers.sort_by(|a, b| a.0["--worker"].cmp(&b.0["--worker"]));
    let (a, a_env) = &workers[0];
    let url = a["--coordinator"].clone();
    let enroll_url = a["--enroll"].clone();
    assert!(url.starts_with("https://127.0.0.1:") && enroll_url.starts_with("https://127.0.0.1:"), "{a:?}");
    assert!(!a.contains_key("--tls-dir"), "no files are handed to a worker: {a:?}");
    let token = a_env["MAYFLY_ENROLLMENT_TOKEN"].clone();
    let authority = a_env["MAYFLY_RUN_AUTHORITY"].clone();
    assert!(!a.values().any(|value| value.contains(&token)), "the token is not on the command line");

    // Worker A has enrolled once its function's output reaches the live log.
    let a_name = a["--worker"].clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !project.ok(&["logs", &run]).lines().any(|line| line.contains(&a_name) && line.contains("working on")) {
        assert!(std::time::Instant::now() < deadline, "worker {a_name} never worked");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The workers' keys are in their memory only: none anywhere under the project.
    assert!(pem_private_keys(&project.path("")).is_empty(), "{:?}", pem_private_keys(&project.path("")));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let identity =
            |worker: &str| mayfly_jobs::protocol::WorkerIdentity { run: run.clone(), worker: worker.to_owned() };
        let ticket = |token: &str| mayfly_jobs::enrollment::EnrollmentTicket {
            url: enroll_url.clone(),
            token: token.to_owned(),
            authority_pem: authority.clone(),
        };
        // Worker A's token, used once already by worker A: refused.
        let reused =
            mayfly_jobs::enrollment::enroll(&ticket(&token), &identity(&a_name), Duration::from_secs(10)).await;
        let error = reused.expect_err("a used token is refused").to_string();
        assert!(error.contains("403") && error.contains("already used"), "{error}");
        // A token another run's coordinator issued: refused.
        let foreign = mayfly_jobs::enrollment::Enrollments::new("r-other", Duration::from_secs(60))
            .issue(&a_name, mayfly_core::Clock::now(&mayfly_core::SystemClock));
        let error = mayfly_jobs::enrollment::enroll(&ticket(&foreign), &identity(&a_name), Duration::from_secs(10))
            .await
            .expect_err("another run's token is refused")
            .to_string();
        assert!(error.contains("403"), "{error}");

        // A certificate for the same run and worker from another authority: no handshake, no items.
        let now = mayfly_core::Clock::now(&mayfly_core::SystemClock);
        let policy = mayfly_jobs::tls::CertificatePolicy::default();
        let deadline = now.saturating_add(Duration::from_secs(600));
        let other = mayfly_jobs::tls::RunAuthority::create(&run, policy.authority_validity(now, deadline)).unwrap();
        let key = mayfly_jobs::tls::WorkerKey::generate(&run, &a_name).unwrap();
        let (forged, _) = other
            .sign_worker_request(&a_name, &key.certificate_request().unwrap(), policy.worker_validity(now, deadline))
            .unwrap();
        // The forger trusts the real authority, so only its own certificate can fail.
        let as_forger =
            mayfly_jobs::worker::coordinator_client(&key.with_certificate(&authority, &forged).unwrap()).unwrap();
        let outcome = as_forger
            .post(format!("{url}/v1/lease"))
            .json(&serde_json::json!({"identity": identity(&a_name), "max": 10}))
            .send()
            .await;
        assert!(outcome.is_err(), "another authority's certificate was answered: {outcome:?}");

        // No client certificate at all, and plain HTTP: no answer either.
        let no_certificate = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(authority.as_bytes()).unwrap())
            .build()
            .unwrap();
        let outcome = no_certificate.post(format!("{url}/v1/lease")).body("{}").send().await;
        assert!(outcome.is_err(), "a client without a certificate was answered: {outcome:?}");
        let outcome = reqwest::Client::new()
            .post(format!("{}/v1/lease", url.replace("https://", "http://")))
            .json(&serde_json::json!({"identity": identity(&a_name), "max": 10}))
            .send()
            .await;
        assert!(outcome.is_err(), "plain HTTP was answered: {outcome:?}");
    });

    project.wait_for(&["runs"], Duration::from_secs(60), |runs| runs[0]["status"] == "succeeded");
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
    let items = result_items(&project, "scan");
    assert_eq!(items.len(), 4, "every item once, none lost to the refused callers: {items:?}");
    assert!(pem_private_keys(&project.path("")).is_empty(), "no private key is left on disk");
}

/// Item ids (object keys) that a URL path would mangle: a space, `#`, `?`,
/// `%`, quotes, non-ASCII, and a key of the full 1 KiB a key may have.
fn awkward_keys() -> Vec<String> {
    let segment = "a".repeat(239);
    let longest = format!("in/{segment}/{segment}/{segment}/{segment}/{}.txt", "k".repeat(57));
    assert_eq!(longest.len(), 1024, "the longest key a bucket accepts");
    [
        "in/sp ace.txt",
        "in/hash#x.txt",
        "in/qm?x.txt",
        "in/pct%41%2F.txt",
        "in/quote\"d'.txt",
        "in/sjögren-é🙂.txt",
        "in/beta gamma",
        "in/b?c=d&e=1+2#f",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([longest])
    .collect()
}

/// A request id as `mayfly_runtime` makes them: opaque lowercase hex in the UUID layout.
fn is_opaque_request_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(at, c)| {
            if [8, 13, 18, 23].contains(&at) { c == '-' } else { c.is_ascii_hexdigit() && !c.is_ascii_uppercase() }
        })
}

#[test]
fn items_whose_ids_need_escaping_run_under_both_runtimes_with_opaque_request_ids() {
    support::ensure_awslambdaric();
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("awkward-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let job = |job: &str, function: &str| {
        format!(
            "[jobs.{job}]\nsource = {{ bucket = \"scans\", prefix = \"in/\" }}\nfunction = \"{function}\"\nworkers = {{ max = 2 }}\nmax_attempts = 1\n"
        )
    };
    let spec = [
        format!("version = 1\nname = \"{name}\"\n[buckets.scans]\n"),
        "[functions.by-process]\ncommand = [\"python3\", \"process_handler.py\"]\n".to_owned(),
        "[functions.by-lambda]\nruntime = \"lambda\"\ncommand = [\"python3\", \"-m\", \"awslambdaric\", \"handler.handler\"]\nhandler = \"handler.handler\"\n".to_owned(),
        job("process-run", "by-process"),
        job("lambda-run", "by-lambda"),
    ]
    .concat();
    let project = Project::with_spec(&spec);
    std::fs::write(
        project.path("process_handler.py"),
        "import json, os, sys\nevent = json.load(sys.stdin)\nprint(json.dumps({'item': event['item'], 'key': event['payload']['key'], 'request': os.environ['MAYFLY_REQUEST_ID']}))\n",
    )
    .unwrap();
    std::fs::write(
        project.path("handler.py"),
        "def handler(event, context):\n    return {'item': event['item'], 'key': event['payload']['key'], 'request': context.aws_request_id}\n",
    )
    .unwrap();
    project.ok(&["deploy"]);
    let keys = awkward_keys();
    for key in &keys {
        let output = project.run_with_stdin(&["put", &format!("scans/{key}")], b"scan");
        support::assert_success(&output, &["put", key]);
    }

    for job in ["process-run", "lambda-run"] {
        let outcome = project.json(&["run", job]);
        assert_eq!(outcome["status"], "succeeded", "{job}: {outcome}");
        assert_eq!(outcome["report"]["items_done"], keys.len(), "{job}: {outcome}");
        assert_eq!(outcome["report"]["items_dead_lettered"], 0, "{job}: {outcome}");
        let results = project.json(&["results", job, "--limit", "100"]);
        let results = results.as_array().unwrap();
        let items: BTreeSet<&str> = results.iter().map(|r| r["item"].as_str().unwrap()).collect();
        assert_eq!(items, keys.iter().map(String::as_str).collect::<BTreeSet<_>>(), "{job}");
        let mut request_ids = BTreeSet::new();
        for result in results {
            let (item, answer) = (&result["item"], &result["result"]);
            assert_eq!(&answer["item"], item, "{job}: the item id reaches the function intact in the event");
            assert_eq!(&answer["key"], item, "{job}");
            let request = answer["request"].as_str().unwrap();
            assert!(is_opaque_request_id(request), "{job}: request id {request:?} of item {item}");
            request_ids.insert(request.to_owned());
        }
        assert_eq!(request_ids.len(), keys.len(), "{job}: one request id per item");
    }
    assert!(live_processes(&project).is_empty());
}

/// The live coordinator of the project's run, once it has done at least `done` items.
fn coordinator_after(project: &Project, done: u64) -> String {
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| {
        runs[0]["done"].as_u64().is_some_and(|finished| finished >= done)
    });
    let live = live_processes(project);
    let coordinator = live.iter().find(|p| p["role"] == "coordinator").unwrap_or_else(|| panic!("{live:?}"));
    coordinator["id"].as_str().unwrap().to_owned()
}

/// The report's per-worker counts add up to every item, across coordinators.
fn assert_report_accounts_for_every_item(report: &Value, items: u64) {
    assert_eq!(report["items_done"], items, "{report}");
    let workers = report["workers"].as_array().unwrap();
    let counted: u64 = workers.iter().map(|w| w["items_done"].as_u64().unwrap()).sum();
    assert_eq!(counted, items, "every item is counted for the worker that did it: {report}");
    let first_fleet: u64 = workers
        .iter()
        .filter(|w| w["worker"].as_str().unwrap().starts_with("w1-"))
        .map(|w| w["items_done"].as_u64().unwrap())
        .sum();
    assert!(first_fleet > 0, "the first coordinator's workers keep their counts: {report}");
    assert!(workers.iter().any(|w| w["worker"].as_str().unwrap().starts_with("w2-")), "{report}");
}

#[test]
fn the_report_counts_every_item_for_its_worker_after_the_coordinator_is_killed_and_resumed() {
    const ITEMS: u64 = 80;
    let project = job_project(ITEMS as usize, 2, "env = { SLEEP = \"0.1\" }", "");
    let up = project.spawn_up();
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    kill_group(&coordinator_after(&project, 15));
    let runs = project.wait_for(&["runs"], Duration::from_secs(90), |runs| {
        !["requested", "running", "finishing"].contains(&runs[0]["status"].as_str().unwrap())
    });
    up.stop();
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    assert_report_accounts_for_every_item(&project.json(&["run-report", &run]), ITEMS);
    assert_eq!(result_items(&project, "scan").len() as u64, ITEMS);
}

#[test]
fn a_foreground_run_resumes_its_run_when_the_coordinator_dies_with_no_control_plane() {
    const ITEMS: u64 = 80;
    let project = job_project(ITEMS as usize, 2, "env = { SLEEP = \"0.1\" }", "");
    // No `mayfly up`: only the foreground `mayfly run` watches the run.
    let mut foreground = project
        .command(&["run", "scan", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    kill_group(&coordinator_after(&project, 15));
    let killed_at = Instant::now();
    // The lease lasts 10 s: resumed within one lease period, then the rest of the items.
    let limit = Duration::from_secs(60);
    while foreground.try_wait().unwrap().is_none() {
        if killed_at.elapsed() > limit {
            foreground.kill().unwrap();
            let output = foreground.wait_with_output().unwrap();
            panic!("the run did not finish within {limit:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = foreground.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped renewing its lease") && stderr.contains("resuming the run here"), "{stderr}");
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_report_accounts_for_every_item(&outcome["report"], ITEMS);
    let items = result_items(&project, "scan");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len() as u64, ITEMS, "every item done once");
    assert!(live_processes(&project).is_empty(), "{:?}", live_processes(&project));
}

/// A project whose job `drain` takes the messages of queue `work` (one
/// worker unless `extra_job` says otherwise), with 20 messages `m0`…`m19` in
/// it, each with the attribute `n` = its body. Returns the project and the
/// messages' ids, each with its body.
fn queue_project(sleep: &str, extra_job: &str, extra_spec: &str) -> (Project, Vec<(u64, String)>) {
    let name = support::unique_name("qstop");
    let spec = format!(
        "version = 1\nname = \"{name}\"\n{extra_spec}\n[buckets.logs]\n[queues.work]\n[functions.work]\n\
         command = [\"sh\", \"functions/sleeper.sh\"]\nenv = {{ SLEEP = \"{sleep}\" }}\n\
         [jobs.drain]\nsource = {{ queue = \"work\", batch = 1 }}\nfunction = \"work\"\nlogs = \"logs\"\n{extra_job}\n"
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    for message in 0..20 {
        let body = format!("m{message}");
        project.ok(&["send", "work", &body, "--attribute", &format!("n={body}")]);
    }
    let sent = queued_messages(&project).into_iter().map(|m| (m.id, m.body)).collect();
    (project, sent)
}

/// A message in a queue, as `mayfly peek` shows it.
#[derive(Debug)]
struct QueuedMessage {
    id: u64,
    body: String,
    attributes: Value,
    receive_count: u64,
}

fn queued_messages(project: &Project) -> Vec<QueuedMessage> {
    project
        .json(&["peek", "work", "--limit", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| QueuedMessage {
            id: m["message_id"].as_u64().unwrap(),
            body: m["body"].as_str().unwrap().to_owned(),
            attributes: m["attributes"].clone(),
            receive_count: m["receive_count"].as_u64().unwrap(),
        })
        .collect()
}

/// After a run of `drain` stopped early that did `done` items: every message
/// sent is either a result or back in the queue, exactly once, as it was;
/// the report says how many went back.
fn assert_unfinished_messages_are_back_in_the_queue(project: &Project, report: &Value, sent: &[(u64, String)]) -> u64 {
    let done = report["items_done"].as_u64().unwrap();
    assert!(done < 20, "the run was stopped before the end: {report}");
    assert_eq!(report["items_expected"], 20, "every message moved into the run: {report}");
    let results = result_items(project, "drain");
    assert_eq!(results.len() as u64, done);
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 20 - done, "the unfinished messages are visible again");
    let queued = queued_messages(project);
    assert_eq!(queued.len() as u64, 20 - done, "{queued:?}");
    let queued_ids: Vec<u64> = queued.iter().map(|m| m.id).collect();
    assert_eq!(queued_ids.iter().collect::<BTreeSet<_>>().len(), queued.len(), "each message back once: {queued:?}");
    for message in &queued {
        let original = sent.iter().find(|(id, _)| *id == message.id);
        assert_eq!(original.map(|(_, body)| body), Some(&message.body), "the same message, by id and body");
        assert_eq!(message.attributes, serde_json::json!({"n": message.body}), "attributes kept");
        assert_eq!(message.receive_count, 0, "never received, so still 0");
        assert!(
            !results.contains(&message.id.to_string()),
            "message {} is both done and back in the queue",
            message.id
        );
    }
    let accounted: BTreeSet<String> = results.iter().cloned().chain(queued_ids.iter().map(u64::to_string)).collect();
    let every: BTreeSet<String> = sent.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(accounted, every, "every message is a result or back in the queue");
    let note = format!("{} unfinished item(s) went back to queue `work`", 20 - done);
    assert!(report["notes"].as_array().unwrap().iter().any(|n| n == note.as_str()), "{note}: {report}");
    done
}

#[test]
fn a_queue_run_stopped_at_its_deadline_puts_its_unfinished_messages_back_in_the_queue() {
    let (project, sent) = queue_project("0.5", "workers = { max = 1 }\ndeadline = \"2s\"", "");
    let output = project.run(&["run", "drain", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "deadline_exceeded", "{outcome}");
    let done = assert_unfinished_messages_are_back_in_the_queue(&project, &outcome["report"], &sent);
    assert!(done > 0, "{outcome}");
    let runs = project.json(&["runs"]);
    assert_eq!((runs[0]["total"].as_u64(), runs[0]["done"].as_u64()), (Some(20), Some(done)), "{runs}");
    assert!(live_processes(&project).is_empty());

    // The next run takes them up and finishes them.
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap().replace("deadline = \"2s\"", "");
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let outcome = project.json(&["run", "drain"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["report"]["items_done"], 20 - done, "{outcome}");
    assert_eq!(result_items(&project, "drain").len(), 20, "every message done once in all");
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 0);
}

#[test]
fn a_queue_run_stopped_at_its_budget_puts_its_unfinished_messages_back_in_the_queue() {
    // worker_hour = 3600: a worker costs 1 per second, so a budget of 2 lapses within about two seconds.
    let (project, sent) =
        queue_project("0.5", "workers = { max = 1 }\nbudget = 2.0", "[pricing]\nworker_hour = 3600\n");
    let output = project.run(&["run", "drain", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "budget_exceeded", "{outcome}");
    assert_unfinished_messages_are_back_in_the_queue(&project, &outcome["report"], &sent);
    assert!(live_processes(&project).is_empty());
}

#[test]
fn a_queue_run_whose_coordinator_is_killed_while_stopping_at_its_deadline_returns_each_message_once() {
    // Each item takes 2 s: when the deadline passes, the workers are in the
    // middle of items, and the coordinator waits for them while `finishing`.
    let (project, sent) = queue_project("2", "workers = { max = 2 }\ndeadline = \"5s\"", "");
    let up = project.spawn_up();
    let run = project.json(&["run", "drain", "--detach"])["run"].as_str().unwrap().to_owned();
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| runs[0]["status"] == "finishing");
    let live = live_processes(&project);
    let coordinator = live.iter().find(|p| p["role"] == "coordinator").unwrap_or_else(|| panic!("{live:?}"));
    kill_group(coordinator["id"].as_str().unwrap());
    let runs = project.wait_for(&["runs"], Duration::from_secs(90), |runs| {
        !["requested", "running", "finishing"].contains(&runs[0]["status"].as_str().unwrap())
    });
    let control_plane_log = up.stop();
    assert!(control_plane_log.contains("starting a new coordinator"), "the run was resumed: {control_plane_log}");
    assert_eq!(runs[0]["status"], "deadline_exceeded", "{runs}");
    let report = project.json(&["run-report", &run]);
    assert_unfinished_messages_are_back_in_the_queue(&project, &report, &sent);
    project.wait_for(&["ps"], Duration::from_secs(15), |live| live.as_array().unwrap().is_empty());
}

#[test]
fn a_queue_run_is_topped_up_to_a_watermark_at_once_and_not_drained_into_the_run_all_at_once() {
    const MESSAGES: u64 = 5_000;
    let name = support::unique_name("qfeed");
    let spec = format!(
        "version = 1\nname = \"{name}\"\n[buckets.logs]\n[queues.work]\n[functions.work]\n\
         command = [\"sh\", \"functions/sleeper.sh\"]\nenv = {{ SLEEP = \"0.5\" }}\n\
         [jobs.drain]\nsource = {{ queue = \"work\", batch = 1 }}\nfunction = \"work\"\nlogs = \"logs\"\n\
         workers = {{ max = 1 }}\ndeadline = \"10s\"\n"
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    let lines: String = (0..MESSAGES).map(|i| format!("m{i}\n")).collect();
    support::assert_success(&project.run_with_stdin(&["send", "work", "--lines"], lines.as_bytes()), &["send"]);
    let foreground = project
        .command(&["run", "drain", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| {
        runs.as_array().unwrap().first().is_some_and(|run| run["status"] == "running")
    });
    let running = Instant::now();
    // The old feed moved at most 100 messages every 200 ms (1,500 in 3 s): the feeder tops up to 2,000 at once.
    let runs = project.wait_for(&["runs"], Duration::from_secs(30), |runs| runs[0]["total"].as_u64() >= Some(2_000));
    assert!(running.elapsed() < Duration::from_secs(3), "{:?} to move 2,000 messages: {runs}", running.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    // A slow run holds a bounded backlog; the rest waits in the queue for it (or for another run).
    let total = project.json(&["runs"])[0]["total"].as_u64().unwrap();
    assert!(total <= 3_100, "the run took {total} messages for one slow worker");
    let visible = project.json(&["queues", "work"])[0]["visible"].as_u64().unwrap();
    assert_eq!(visible + total, MESSAGES, "every message is in the queue or in the run");

    let output = foreground.wait_with_output().unwrap();
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "deadline_exceeded", "{outcome}");
    let done = outcome["report"]["items_done"].as_u64().unwrap();
    let visible = project.json(&["queues", "work"])[0]["visible"].as_u64().unwrap();
    assert_eq!(visible + done, MESSAGES, "the unfinished messages went back to the queue: {outcome}");
    assert!(live_processes(&project).is_empty());
}

/// A project whose job `echo` runs the warm `lambda-echo` handler (sleeping
/// `ms` per item) on `items` manifest lines with up to `workers` workers.
fn echo_job_project(items: usize, workers: u32, ms: u64) -> Project {
    let spec = format!(
        r#"version = 1
name = "{name}"
[buckets.items]
[functions.work]
runtime = "lambda"
command = ["{handler}"]
env = {{ MAYFLY_TEST_MODE = "sleep", MAYFLY_TEST_MS = "{ms}" }}
[jobs.echo]
source = {{ manifest = {{ bucket = "items", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = {workers} }}
max_attempts = 3
"#,
        name = support::unique_name("batches"),
        handler = support::handler("lambda-echo"),
    );
    let project = Project::deployed_with(&spec);
    let manifest: String = (0..items).map(|i| format!("item-{i:05}\n")).collect();
    let output = project.run_with_stdin(&["put", "items/manifest.txt"], manifest.as_bytes());
    support::assert_success(&output, &["put"]);
    project
}

/// How many results of `run` share each commit time (one worker: the items of one call).
fn results_per_commit(project: &Project, run: &str) -> Vec<usize> {
    let results = project.json(&["results", "echo", "--run", run, "--limit", "100000"]);
    let mut per_time = std::collections::BTreeMap::<String, usize>::new();
    for result in results.as_array().unwrap() {
        *per_time.entry(result["recorded_at"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    per_time.into_values().collect()
}

#[test]
fn a_worker_completes_short_items_several_to_a_call_and_long_items_one_at_a_time() {
    // One worker has one completion on its way at a time, so results that
    // share a commit (its time) came in one call.
    let short = echo_job_project(400, 1, 0);
    let outcome = short.json(&["run", "echo"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let per_commit = results_per_commit(&short, outcome["run"].as_str().unwrap());
    assert_eq!(per_commit.iter().sum::<usize>(), 400, "one result per item");
    let largest = per_commit.iter().copied().max().unwrap_or(0);
    assert!(largest >= 3, "short items go several to a call: at most {largest} shared a commit ({per_commit:?})");

    // Items far longer than a round trip go one to a call.
    let long = echo_job_project(4, 1, 700);
    let outcome = long.json(&["run", "echo"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let per_commit = results_per_commit(&long, outcome["run"].as_str().unwrap());
    assert_eq!(per_commit, [1, 1, 1, 1], "long items go one to a call");
}

/// Seconds since midnight of an RFC 3339 time (`…THH:MM:SS.fffZ`).
fn seconds_of_day(time: &str) -> f64 {
    let clock = time.split_once('T').map_or(time, |(_, clock)| clock).trim_end_matches('Z');
    let clock = clock.split(['+', '-']).next().unwrap_or(clock);
    clock
        .split(':')
        .map(|part| part.parse::<f64>().unwrap_or_else(|_| panic!("not a time: {time}")))
        .fold(0.0, |total, part| total * 60.0 + part)
}

#[test]
fn a_short_items_result_is_not_held_back_while_a_long_item_runs_after_it() {
    // One worker leases the items in the manifest's order: two short items,
    // then one of 3 s. The short ones' results must not wait for the long
    // one: a result waits at most the worker's spacing (50 ms) for company.
    let project = job_project(0, 1, "", "");
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap().replace(
        "source = { bucket = \"scans\", prefix = \"in/\" }",
        "source = { manifest = { bucket = \"scans\", key = \"manifest.txt\" } }",
    );
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    std::fs::write(
        project.path("functions/sleeper.sh"),
        "#!/bin/sh\nevent=$(cat)\ncase \"$event\" in *slow*) sleep 3 ;; esac\nprintf '{\"done\": true}'\n",
    )
    .unwrap();
    project.ok(&["deploy"]);
    let output = project.run_with_stdin(&["put", "scans/manifest.txt"], b"quick-1\nquick-2\nslow\n");
    support::assert_success(&output, &["put"]);
    let outcome = project.json(&["run", "scan"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let results = project.json(&["results", "scan", "--limit", "100"]);
    let recorded = |item: &str| {
        let result = results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["item"] == item)
            .unwrap_or_else(|| panic!("no result for {item}: {results}"));
        seconds_of_day(result["recorded_at"].as_str().unwrap())
    };
    let slow = recorded("slow");
    for quick in ["quick-1", "quick-2"] {
        let ahead = (slow - recorded(quick)).rem_euclid(86_400.0);
        assert!(
            ahead >= 2.0,
            "{quick}'s result was recorded only {ahead:.2} s before the slow item's: it waited for it"
        );
    }
}

#[test]
fn a_worker_killed_holding_a_batch_of_short_items_loses_none_of_them() {
    const ITEMS: usize = 3_000;
    let project = echo_job_project(ITEMS, 1, 0);
    let run = project
        .command(&["run", "echo", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mayfly run");
    // Well into the run: the worker holds a batch (leased ahead, and run but not yet acknowledged).
    project
        .wait_for(&["runs"], Duration::from_secs(120), |runs| runs[0]["done"].as_u64().is_some_and(|done| done >= 200));
    let live = live_processes(&project);
    let worker = live.iter().find(|p| p["role"] == "worker").unwrap_or_else(|| panic!("no worker: {live:?}"));
    kill_group(worker["id"].as_str().unwrap());

    let output = run.wait_with_output().expect("mayfly run ends");
    let outcome: Value = serde_json::from_slice(&output.stdout).expect("mayfly run --json prints JSON");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let run = outcome["run"].as_str().unwrap();
    let report = project.json(&["run-report", run]);
    assert_eq!(report["items_done"], ITEMS as u64, "{report}");
    assert!(report["retries"].as_u64().unwrap() >= 1, "the killed worker's items ran again: {report}");
    assert!(
        report["workers"].as_array().unwrap().iter().any(|w| w["end"] == "lost"),
        "the killed worker is reported lost: {report}"
    );
    let items = result_items(&project, "echo");
    assert_eq!(items.len(), ITEMS, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), ITEMS);
    assert!(live_processes(&project).is_empty(), "no worker or coordinator remains");
    eprintln!("killed worker holding a batch: {} retries", report["retries"]);
}

#[test]
fn a_queue_run_that_fails_puts_every_message_it_took_back_in_the_queue() {
    let (project, sent) = queue_project("0", "workers = { max = 2 }", "");
    let spec = std::fs::read_to_string(project.path("mayfly.toml"))
        .unwrap()
        .replace("[\"sh\", \"functions/sleeper.sh\"]", "[\"functions/no-such-binary\"]");
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let output = project.run(&["run", "drain", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed", "{outcome}");
    let done = assert_unfinished_messages_are_back_in_the_queue(&project, &outcome["report"], &sent);
    assert_eq!(done, 0, "{outcome}");
    assert!(live_processes(&project).is_empty());
}
