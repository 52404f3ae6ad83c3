//! Health data never reaches the disk in plaintext, end to end through the
//! real `mayfly` binary: one marker goes into object bodies, message bodies
//! and attributes, manifest lines (so item ids), function results, a failing
//! function's stderr and error message, and worker logs — for both runtimes
//! (a process and a Python `awslambdaric` lambda) and every source kind
//! (queue, manifest, bucket prefix) — then every byte under `.mayfly/` (the
//! state file, its WAL and shared memory, the run directories, the buckets
//! and so the logs bucket's objects as stored) is scanned: no marker. An
//! authorised user still reads it all back in plaintext.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::Project;

const MARKER: &str = "PHI-MARKER-7c1e-janedoe";

/// A process function: logs its event, fails on `fail` with the event in its
/// stderr, otherwise answers with the event.
const PROCESS_FUNCTION: &str = r#"#!/bin/sh
event=$(cat)
echo "handling $event" >&2
case "$event" in
  *fail*) echo "cannot read chart: $event" >&2; exit 3;;
esac
printf '{"seen": %s}' "$event"
"#;

/// The same as a Lambda handler run by Python's `awslambdaric`.
const LAMBDA_FUNCTION: &str = r#"import sys

def handler(event, context):
    payload = str(event.get('payload'))
    print('handling', payload)
    print('stderr of', payload, file=sys.stderr)
    if 'fail' in payload:
        raise ValueError('cannot read chart ' + payload)
    return {'seen': payload}
"#;

fn spec(name: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[buckets.logs]
[queues.intake-process]
[queues.intake-lambda]
[functions.work]
command = ["sh", "functions/work.sh"]
[functions.py]
runtime = "lambda"
command = ["python3", "-m", "awslambdaric", "handler.handler"]
handler = "handler.handler"
# Without a logs bucket the run directory (live logs, process output) stays.
[jobs.manifest-process]
source = {{ manifest = {{ bucket = "scans", key = "manifest-process.txt" }} }}
function = "work"
max_attempts = 1
[jobs.queue-process]
source = {{ queue = "intake-process", batch = 5 }}
function = "work"
max_attempts = 1
logs = "logs"
[jobs.bucket-process]
source = {{ bucket = "scans", prefix = "charts/" }}
function = "work"
max_attempts = 1
[jobs.manifest-lambda]
source = {{ manifest = {{ bucket = "scans", key = "manifest-lambda.txt" }} }}
function = "py"
max_attempts = 1
logs = "logs"
[jobs.queue-lambda]
source = {{ queue = "intake-lambda", batch = 5 }}
function = "py"
max_attempts = 1
"#
    )
}

fn every_file(folder: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { every_file(&path, files) } else { files.push(path) }
    }
}

/// Every file under `.mayfly/` holding the marker.
fn files_with_the_marker(project: &Project) -> (Vec<String>, Vec<PathBuf>) {
    let mut files = Vec::new();
    every_file(&project.root.join(".mayfly"), &mut files);
    let found = files
        .iter()
        .filter(|file| {
            // A FIFO or socket left by a live process has no bytes at rest.
            std::fs::metadata(file).is_ok_and(|metadata| metadata.is_file())
                && std::fs::read(file).unwrap().windows(MARKER.len()).any(|window| window == MARKER.as_bytes())
        })
        .map(|file| file.display().to_string())
        .collect();
    (found, files)
}

fn put(project: &Project, address: &str, body: &str) {
    let output = project.run_with_stdin(&["put", address, "-"], body.as_bytes());
    support::assert_success(&output, &["put", address]);
}

/// Run `job` to its end (dead-lettered items and all); its outcome.
fn run_job(project: &Project, job: &str) -> Value {
    let output = project.run(&["run", job, "--json"]);
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("mayfly run {job}: {error}; stderr: {}", String::from_utf8_lossy(&output.stderr))
    });
    assert_eq!(outcome["report"]["items_done"], 2, "{job}: {outcome}");
    assert_eq!(outcome["report"]["items_dead_lettered"], 1, "{job}: {outcome}");
    outcome
}

fn results(project: &Project, job: &str) -> Vec<Value> {
    project.json(&["results", job]).as_array().unwrap().clone()
}

#[test]
fn no_marker_reaches_the_disk_in_plaintext_and_an_authorised_user_reads_it_all() {
    support::ensure_awslambdaric();
    let project = Project::with_spec(&spec(&format!("phi-{}", std::process::id())));
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/work.sh"), PROCESS_FUNCTION).unwrap();
    std::fs::write(project.path("handler.py"), LAMBDA_FUNCTION).unwrap();
    project.ok(&["deploy"]);
    // A control plane keeps the state file open throughout, so its WAL stays on disk to be scanned.
    let up = project.spawn_up();

    // Object bodies; manifest lines are item ids; messages with attributes.
    for (index, outcome) in ["ok", "ok", "fail"].iter().enumerate() {
        put(&project, &format!("scans/charts/{index}-{outcome}.txt"), &format!("chart {index} of {MARKER}\n"));
    }
    for runtime in ["process", "lambda"] {
        let manifest = format!("a-{MARKER}-ok\nb-{MARKER}-ok\nc-{MARKER}-fail\n");
        put(&project, &format!("scans/manifest-{runtime}.txt"), &manifest);
        for outcome in ["ok", "ok", "fail"] {
            let attribute = format!("patient={MARKER}");
            project.ok(&[
                "send",
                &format!("intake-{runtime}"),
                &format!("{MARKER}-{outcome}"),
                "--attribute",
                &attribute,
            ]);
        }
    }
    let peeked = project.json(&["peek", "intake-process"]);
    assert_eq!(peeked[0]["attributes"]["patient"], MARKER, "{peeked}");

    // Failing invocations outside jobs: the ledger's error message and logs.
    let failed = project.run(&["invoke", "work", "--payload", &format!(r#"{{"chart": "{MARKER}-fail"}}"#), "--json"]);
    assert_eq!(failed.status.code(), Some(8), "{}", String::from_utf8_lossy(&failed.stderr));
    let failed = project.run(&["invoke", "py", "--payload", &format!(r#"{{"payload": "{MARKER}-fail"}}"#), "--json"]);
    assert_eq!(failed.status.code(), Some(8), "{}", String::from_utf8_lossy(&failed.stderr));

    let mut runs = Vec::new();
    for job in ["manifest-process", "queue-process", "bucket-process", "manifest-lambda", "queue-lambda"] {
        runs.push((job, run_job(&project, job)["run"].as_str().unwrap().to_owned()));
    }
    // The bucket-prefix job fails the item whose object key says so, not by its body.
    let bucket_results = results(&project, "bucket-process");
    assert_eq!(bucket_results.len(), 2, "{bucket_results:?}");

    // Nothing under .mayfly holds the marker: state file, WAL, run directories, buckets.
    let (found, files) = files_with_the_marker(&project);
    assert!(files.iter().any(|file| file.ends_with("state.db-wal")), "the WAL was scanned: {files:?}");
    assert!(files.iter().any(|file| file.to_string_lossy().contains("/buckets/logs/")), "{files:?}");
    let manifest_process_run = &runs[0].1;
    let run_dir = project.root.join(".mayfly/runs").join(manifest_process_run);
    let coordinator_log = run_dir.join("coordinator.log");
    assert!(coordinator_log.is_file(), "a run without a logs bucket keeps its directory: {files:?}");
    assert!(files.iter().any(|file| file.extension().is_some_and(|e| e == "stderr")), "{files:?}");
    assert_eq!(found, Vec::<String>::new(), "the marker is in plaintext in these files");
    up.stop();

    // The coordinator's own output is sealed on disk, and plain to `mayfly logs --process`.
    let raw = std::fs::read(&coordinator_log).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("coordinator serving workers"), "sealed on disk");
    let output = project.ok(&["logs", manifest_process_run, "--process", "coordinator"]);
    assert!(output.contains("coordinator serving workers") && output.contains("run finished"), "{output}");
    // A worker's captured output opens too (it holds whatever the worker printed, maybe nothing).
    project.ok(&["logs", manifest_process_run, "--process", "w1-001"]);

    // An authorised user reads everything back.
    for (job, expected) in [("manifest-process", "-ok"), ("manifest-lambda", "-ok")] {
        let results = results(&project, job);
        let mut items: Vec<&str> = results.iter().map(|r| r["item"].as_str().unwrap()).collect();
        items.sort();
        assert_eq!(items, [format!("a-{MARKER}{expected}"), format!("b-{MARKER}{expected}")], "{job}");
        assert!(results.iter().all(|r| r["result"].to_string().contains(MARKER)), "{job}: {results:?}");
    }
    for job in ["queue-process", "queue-lambda"] {
        let results = results(&project, job);
        assert_eq!(results.len(), 2, "{job}: {results:?}");
        assert!(results.iter().all(|r| r["result"].to_string().contains(&format!("{MARKER}-ok"))), "{results:?}");
    }
    for function in ["work", "py"] {
        let ledger = project.json(&["invocations", "--function", function]);
        let message = ledger[0]["error_message"].as_str().unwrap_or_default();
        assert!(message.contains(MARKER), "{function}: the error message reads back: {ledger}");
        let request = ledger[0]["request_id"].as_str().unwrap();
        assert!(project.ok(&["logs", "--request", request]).contains(MARKER), "{function}");
    }
    for (job, run) in &runs {
        let report = project.json(&["run-report", run]);
        assert_eq!(report["items_dead_lettered"], 1, "{job}: {report}");
        if matches!(*job, "queue-process" | "manifest-lambda") {
            // Sealed into the logs bucket (compressed, then encrypted like every object).
            let logs = project.ok(&["logs", run]);
            assert!(logs.contains(MARKER), "{job}: the workers' logs read back: {logs}");
        }
    }
}
