//! What the CLI prints, as a person or a script sees it: ANSI escapes only on
//! a terminal without `NO_COLOR` (a pseudo-terminal from util-linux `script`,
//! as in progress.rs), a failed invoke's error once, `mayfly ps`'s WORKER
//! column, `mayfly run`'s spinner and its word for a run with no items, one
//! JSON shape across commands (README, "JSON output"), and a duplicate
//! `--attribute` refused.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::Project;

const ESCAPE: &str = "\u{1b}[";

/// Answers after `$SLEEP` seconds (default 0); fails, saying why on stderr, for an event with `"fail"`.
const FUNCTION: &str = r#"#!/bin/sh
event=$(cat)
echo "working on $event" >&2
case "$event" in
  *fail*) echo "chart is unreadable" >&2; exit 3 ;;
esac
sleep "${SLEEP:-0}"
printf '{"done": true}'
"#;

/// A deployed project with a bucket, a queue with a dead-letter queue, a
/// function and a job over `scans/in/` holding `items` objects.
fn project(items: usize, sleep: &str) -> Project {
    let name = support::unique_name("output");
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[buckets.scans]
[buckets.logs]
[queues.work]
dead_letter = "work-dlq"
max_receives = 3
[queues.work-dlq]
[functions.work]
command = ["sh", "functions/work.sh"]
env = {{ SLEEP = "{sleep}" }}
[jobs.scan]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
workers = {{ max = 2 }}
logs = "logs"
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/work.sh"), FUNCTION).unwrap();
    project.ok(&["deploy"]);
    for item in 0..items {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{item:03}")], b"chart");
        support::assert_success(&output, &["put"]);
    }
    project
}

/// Runs `mayfly ARGS` with a pseudo-terminal as stdin, stdout and stderr,
/// with extra environment `env`; returns whether it succeeded and the transcript.
fn in_a_terminal(project: &Project, args: &str, env: &[(&str, &str)]) -> (bool, String) {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_mayfly"));
    let mut script = Command::new("script");
    script
        .args(["--quiet", "--return", "--flush", "--command", &command, "/dev/null"])
        .current_dir(&project.root)
        .env_remove("MAYFLY_PROJECT")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    for (name, value) in env {
        script.env(name, value);
    }
    let output = script.output().expect("util-linux `script` runs");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn ansi_escapes_reach_a_terminal_only_and_never_with_no_color() {
    let project = project(4, "0.3");
    // Logs (colours by level; at debug `mayfly run` always logs how it looked for a
    // Docker engine) and the progress bar (redrawn in place), on a terminal.
    let (succeeded, transcript) = in_a_terminal(&project, "run scan", &[("MAYFLY_LOG", "debug")]);
    assert!(succeeded, "{transcript}");
    assert!(transcript.contains(ESCAPE), "a terminal gets escapes: {transcript:?}");

    let (succeeded, transcript) = in_a_terminal(&project, "run scan", &[("MAYFLY_LOG", "debug"), ("NO_COLOR", "1")]);
    assert!(succeeded, "{transcript}");
    assert!(!transcript.contains(ESCAPE), "NO_COLOR: no escapes, even on a terminal: {transcript:?}");
    assert!(transcript.contains("4 done"), "the report is still there: {transcript}");

    let piped = project.command(&["run", "scan"]).env("MAYFLY_LOG", "debug").env_remove("NO_COLOR").output().unwrap();
    support::assert_success(&piped, &["run", "scan"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&piped.stdout), String::from_utf8_lossy(&piped.stderr));
    assert!(stderr.contains("DEBUG"), "the logs are there: {stderr}");
    assert!(!stderr.contains(ESCAPE) && !stdout.contains(ESCAPE), "no escapes into a pipe: {stderr:?} {stdout:?}");

    let usage = project.command(&["no-such-command"]).env_remove("NO_COLOR").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&usage.stderr).contains(ESCAPE), "usage errors into a pipe are plain too");
}

#[test]
fn a_failed_invoke_prints_its_error_once_on_stderr_and_exits_8() {
    let project = project(0, "0");
    let output = project.run(&["invoke", "work", "--payload", r#"{"fail": true}"#]);
    assert_eq!(output.status.code(), Some(8));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(stderr.matches("error:").count(), 1, "one error on stderr: {stderr}");
    assert!(stderr.contains("function `work` failed") && stderr.contains("exit status 3"), "{stderr}");
    assert_eq!(stderr.matches("chart is unreadable").count(), 1, "the function's own words, once: {stderr}");
    assert!(!stdout.contains("error:"), "stdout has the logs and the REPORT line, not the error again: {stdout}");
    assert!(stdout.contains("REPORT RequestId:"), "{stdout}");

    let output = project.run(&["invoke", "work", "--payload", r#"{"fail": true}"#, "--json"]);
    assert_eq!(output.status.code(), Some(8));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["error_type"], "ProcessExit", "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

#[test]
fn ps_names_each_worker_in_text_and_json() {
    let project = project(6, "1");
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let live = project.wait_for(&["ps"], Duration::from_secs(30), |live| {
        live.as_array().unwrap().iter().any(|row| row["role"] == "worker")
    });
    let rows = live.as_array().unwrap();
    let worker = rows.iter().find(|row| row["role"] == "worker").unwrap();
    let worker_id = worker["worker"].as_str().expect("a worker row names its worker").to_owned();
    assert_eq!(worker["tags"]["mayfly.worker"], worker_id.as_str(), "{worker}");
    for row in rows {
        assert!(row.as_object().unwrap().contains_key("worker"), "every row has the field: {row}");
        if row["role"] == "coordinator" {
            assert!(row["worker"].is_null(), "a coordinator is no worker: {row}");
        }
    }

    let text = project.ok(&["ps"]);
    // The first line names the control plane's leader; the table follows.
    let header = text.lines().find(|line| line.starts_with("RESOURCE")).expect("the table's header");
    assert!(header.split_whitespace().any(|column| column == "WORKER"), "{text}");
    let worker_line = text.lines().find(|line| line.contains(&worker_id)).expect("the worker's row");
    assert!(worker_line.contains(&run), "{worker_line}");
    if let Some(coordinator) = text.lines().find(|line| line.contains("coordinator")) {
        let cells: Vec<&str> = coordinator.split_whitespace().collect();
        assert_eq!(cells[4], "-", "no worker: `-`: {coordinator}");
    }
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| runs[0]["status"] == "succeeded");
}

#[test]
fn a_run_shows_a_spinner_while_listing_and_says_when_it_had_no_items() {
    let project = project(0, "0");
    let (succeeded, transcript) = in_a_terminal(&project, "run scan", &[]);
    assert!(succeeded, "{transcript}");
    assert!(transcript.contains("listing source"), "a spinner until the count is known: {transcript}");
    assert!(!transcript.contains("0/0"), "never a 0/0 bar: {transcript}");
    assert!(transcript.contains("had no items"), "{transcript}");

    let piped = project.run(&["run", "scan"]);
    support::assert_success(&piped, &["run", "scan"]);
    let stdout = String::from_utf8_lossy(&piped.stdout);
    let run = project.json(&["runs"])[0]["run"].as_str().unwrap().to_owned();
    assert!(stdout.contains(&format!("run {run} had no items")), "{stdout}");
}

#[test]
fn duplicate_attributes_are_refused_naming_the_attribute() {
    let project = project(0, "0");
    let output = project.run(&["send", "work", "x", "--attribute", "source=ehr", "--attribute", "source=lab"]);
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--attribute `source`") && stderr.contains("more than once"), "{stderr}");
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 0, "nothing was sent");
}

/// Where a document breaks the JSON output rule, as `path: what`.
fn shape_violations(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if fields.contains_key("secs") && fields.contains_key("nanos") {
                found.push(format!("{path}: a duration as {{secs, nanos}}, not an integer `_ms` field"));
            }
            for (key, field) in fields {
                let at = format!("{path}.{key}");
                let is_time = key == "at"
                    || key.ends_with("_at")
                    || ["last_modified", "last_invoked", "lease_until", "deadline"].contains(&key.as_str());
                if is_time && !(field.is_null() || field.as_str().is_some_and(is_rfc3339)) {
                    found.push(format!("{at}: a time must be an RFC 3339 string or null, not {field}"));
                }
                if key.ends_with("_ms") && !(field.is_null() || field.is_u64()) {
                    found.push(format!("{at}: a duration must be integer milliseconds or null, not {field}"));
                }
                if (key == "tags" || key == "attributes" || key.ends_with("_tags"))
                    && !(field.is_object() || field.is_null())
                {
                    found.push(format!("{at}: tags and attributes are an object, not {field}"));
                }
                if field.as_str() == Some("") {
                    found.push(format!("{at}: an absent value is null, not \"\""));
                }
                shape_violations(field, &at, found);
            }
        }
        Value::Array(items) => {
            // Rows of one listing have the same fields: absent ones are null, never left out.
            let keys = |item: &Value| item.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            if let Some(first) = items.first().and_then(keys) {
                for (index, item) in items.iter().enumerate() {
                    if keys(item).is_some_and(|k| k != first) {
                        found.push(format!("{path}[{index}]: fields differ from the first row's"));
                    }
                }
            }
            for (index, item) in items.iter().enumerate() {
                shape_violations(item, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

/// `2026-11-25T06:38:22.123Z`, as Mayfly writes times.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && text.ends_with('Z')
}

#[test]
fn every_command_prints_json_of_one_shape() {
    let project = project(3, "0");
    std::fs::write(project.path("chart.txt"), "chart").unwrap();
    let sent = project.json(&["send", "work", "hello", "--attribute", "source=ehr"]);
    let received = project.json(&["receive", "work", "--max", "1"]);
    let receipt = received[0]["receipt"].as_str().unwrap().to_owned();
    project.ok(&["send", "work", "again"]);
    let leased = project.json(&["receive", "work"]);
    let second = leased[0]["receipt"].as_str().unwrap().to_owned();
    let run = project.json(&["run", "scan"]);
    let run_id = run["run"].as_str().unwrap().to_owned();
    let failed = project.run(&["invoke", "work", "--payload", r#"{"fail": true}"#, "--json"]);
    let failed: Value = serde_json::from_slice(&failed.stdout).unwrap();
    let request = failed["request_id"].as_str().unwrap().to_owned();

    // (command, whether it lists things)
    let documents: Vec<(String, Value, bool)> = vec![
        ("send".into(), sent, false),
        ("receive".into(), received, true),
        ("run".into(), run, false),
        ("invoke (failed)".into(), failed, false),
        ("run --detach".into(), project.json(&["run", "scan", "--detach"]), false),
        ("put".into(), project.json(&["put", "scans/other/a.txt", "chart.txt"]), false),
        ("get".into(), project.json(&["get", "scans/other/a.txt", "copy.txt"]), false),
        ("cp".into(), project.json(&["cp", "scans/other/a.txt", "scans/other/b.txt"]), false),
        ("mv".into(), project.json(&["mv", "scans/other/b.txt", "scans/other/c.txt"]), false),
        ("rm".into(), project.json(&["rm", "scans/other/c.txt"]), false),
        ("ls".into(), project.json(&["ls"]), true),
        ("ls scans".into(), project.json(&["ls", "scans"]), true),
        ("events".into(), project.json(&["events"]), true),
        ("ack".into(), project.json(&["ack", "work", &receipt]), false),
        ("extend".into(), project.json(&["extend", "work", &second, "--timeout", "0s"]), false),
        ("queues".into(), project.json(&["queues"]), true),
        ("peek".into(), project.json(&["peek", "work"]), true),
        ("dlq list".into(), project.json(&["dlq", "list", "work"]), true),
        ("invoke".into(), project.json(&["invoke", "work"]), false),
        ("invocations".into(), project.json(&["invocations"]), true),
        ("functions".into(), project.json(&["functions"]), true),
        ("logs".into(), project.json(&["logs", "--function", "work"]), true),
        ("logs --request".into(), project.json(&["logs", "--request", &request]), false),
        ("logs RUN".into(), project.json(&["logs", &run_id]), true),
        ("runs".into(), project.json(&["runs"]), true),
        ("run-report".into(), project.json(&["run-report", &run_id]), false),
        ("results".into(), project.json(&["results", "scan"]), true),
        ("ps".into(), project.json(&["ps"]), true),
        ("deployments".into(), project.json(&["deployments"]), true),
        ("deployments --show".into(), project.json(&["deployments", "--show", "1"]), false),
        ("validate".into(), project.json(&["validate"]), false),
        ("diff".into(), project.json(&["diff"]), false),
        ("deploy".into(), project.json(&["deploy"]), false),
        ("keys list".into(), project.json(&["keys", "list"]), true),
        ("tokens create".into(), project.json(&["tokens", "create", "--name", "ci", "--scope", "runs:read"]), false),
        ("tokens list".into(), project.json(&["tokens", "list"]), true),
        ("access-log".into(), project.json(&["access-log"]), true),
        ("prune".into(), project.json(&["prune"]), false),
        ("audit".into(), audit_json(&project), false),
    ];
    let mut found = Vec::new();
    for (command, document, listing) in &documents {
        match (listing, document) {
            (true, Value::Array(rows)) => {
                if let Some(row) = rows.iter().find(|row| !row.is_object()) {
                    found.push(format!("{command}: a listing's rows are objects, not {row}"));
                }
            }
            (false, Value::Object(_)) => {}
            (true, other) => found.push(format!("{command}: a listing is an array, not {other}")),
            (false, other) => found.push(format!("{command}: one thing is an object, not {other}")),
        }
        shape_violations(document, command, &mut found);
    }
    assert!(found.is_empty(), "JSON output breaks the rule:\n{}", found.join("\n"));
    // The rule's examples, concretely.
    let received = &documents[1].1;
    assert_eq!(received[0]["attributes"], serde_json::json!({"source": "ehr"}));
    let report = &documents[2].1["report"];
    assert!(report["makespan_ms"].is_u64(), "{report}");
    let logs = &documents.iter().find(|(command, ..)| command == "logs RUN").unwrap().1;
    // Whichever worker took the items logged them (another may have taken none).
    assert!(
        logs.as_array().unwrap().iter().any(|worker| worker["logs"].as_str().unwrap().contains("working on")),
        "{logs}"
    );
    let follow = project.run(&["logs", "--function", "work", "--follow", "--json"]);
    assert_eq!(follow.status.code(), Some(2), "--follow streams text; with --json it is a usage error");
    // The detached run ends before the project goes.
    project.wait_for(&["runs"], Duration::from_secs(60), |runs| {
        runs.as_array().unwrap().iter().all(|run| run["finished_at"].is_string())
    });
}

/// `mayfly audit --json` (exit 10 on violations still prints the document).
fn audit_json(project: &Project) -> Value {
    let output = project.run(&["audit", "--json"]);
    assert!(matches!(output.status.code(), Some(0 | 10)), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}
