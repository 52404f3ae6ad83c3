//! The control plane (`mayfly up`) end to end: every trigger kind delivers
//! AWS-shaped events to real function processes, failures are retried exactly
//! as configured and then land in their destination queue, and a control
//! plane killed with SIGKILL loses nothing.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::Project;

const WAIT: Duration = Duration::from_secs(60);

/// Python functions the tests declare; each reads the event on stdin.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "record.py",
        r#"import json, sys
event = json.load(sys.stdin)
for record in event.get("Records", []):
    print("event", record.get("eventSource"), record.get("s3", {}).get("object", {}).get("key"), file=sys.stderr)
if event.get("detail-type"):
    print("event", event["detail-type"], event.get("source"), file=sys.stderr)
json.dump({"seen": len(event.get("Records", [])) or 1}, sys.stdout)
"#,
    ),
    ("fails.py", "import sys\nprint('about to fail', file=sys.stderr)\nsys.exit(3)\n"),
    ("sleeps.py", "import time\ntime.sleep(30)\n"),
    (
        "hogs.py",
        "import sys, time\nblocks = []\nfor _ in range(400):\n    blocks.append(bytearray(1024 * 1024))\n    for i in range(0, len(blocks[-1]), 4096):\n        blocks[-1][i] = 1\nprint('allocated 400 MiB', file=sys.stderr)\n",
    ),
    ("bad_json.py", "import sys\nsys.stdin.read()\nprint('this is not JSON')\n"),
    (
        "picky.py",
        r#"import json, sys
event = json.load(sys.stdin)
failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if "bad" in r["body"]]
print("batch of", len(event["Records"]), "failing", len(failures), file=sys.stderr)
json.dump({"batchItemFailures": failures}, sys.stdout)
"#,
    ),
    (
        "mark.py",
        r#"import json, os, sys
event = json.load(sys.stdin)
with open(os.path.join(os.environ["MAYFLY_PROJECT"], "marks.log"), "a") as marks:
    for record in event["Records"]:
        for s3 in json.loads(record["body"])["Records"]:
            marks.write(s3["s3"]["object"]["key"] + "\n")
json.dump({}, sys.stdout)
"#,
    ),
];

fn project(spec: &str) -> Project {
    let project = Project::with_spec(spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    for (file, source) in FUNCTIONS {
        std::fs::write(project.path("functions").join(file), source).unwrap();
    }
    project.ok(&["deploy"]);
    project
}

/// Stop `mayfly up` with SIGTERM and require a clean exit.
fn stop_gracefully(up: support::ControlPlane) {
    up.stop();
}

fn invocations_of(project: &Project, function: &str) -> Vec<Value> {
    project.json(&["invocations", "--function", function, "--limit", "1000"]).as_array().unwrap().clone()
}

#[test]
fn bucket_events_invoke_a_function_with_an_s3_event() {
    let project = project(
        r#"version = 1
name = "bucket-trigger"
[buckets.inbox]
[functions.record]
command = ["python3", "functions/record.py"]
[[routes]]
from = { bucket = "inbox", prefix = "charts/", suffix = ".txt" }
to = { function = "record" }
"#,
    );
    let up = project.spawn_up();
    project.ok(&["put", "inbox/charts/17.txt", "mayfly.toml"]);
    project.ok(&["put", "inbox/other/18.txt", "mayfly.toml"]); // outside the prefix: not routed
    let invocations =
        project.wait_for(&["invocations", "--function", "record"], WAIT, |v| v.as_array().unwrap().len() == 1);
    let record = &invocations[0];
    assert_eq!(record["outcome"], "success", "{record}");
    assert_eq!(record["trigger"], "bucket:inbox");
    assert_eq!(record["attempt"], 1);
    let logs = project.ok(&["logs", "--function", "record"]);
    assert!(logs.contains("event aws:s3 charts/17.txt"), "{logs}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(invocations_of(&project, "record").len(), 1, "the object outside the prefix was routed");
    stop_gracefully(up);
}

#[test]
fn failed_asynchronous_invocations_retry_as_configured_then_go_to_on_failure() {
    let spec = r#"version = 1
name = "failures"
[buckets.inbox]
[queues.failed]
[functions.fails]
command = ["python3", "functions/fails.py"]
retries = { max_attempts = 2, backoff = "100ms" }
on_failure = "failed"
[functions.sleeps]
command = ["python3", "functions/sleeps.py"]
timeout = "1s"
retries = { max_attempts = 2, backoff = "100ms" }
on_failure = "failed"
[functions.hogs]
command = ["python3", "functions/hogs.py"]
memory = "64MiB"
retries = { max_attempts = 2, backoff = "100ms" }
on_failure = "failed"
[functions.bad-json]
command = ["python3", "functions/bad_json.py"]
retries = { max_attempts = 3, backoff = "100ms" }
on_failure = "failed"
[[routes]]
from = { bucket = "inbox", prefix = "fails/" }
to = { function = "fails" }
[[routes]]
from = { bucket = "inbox", prefix = "sleeps/" }
to = { function = "sleeps" }
[[routes]]
from = { bucket = "inbox", prefix = "hogs/" }
to = { function = "hogs" }
[[routes]]
from = { bucket = "inbox", prefix = "bad-json/" }
to = { function = "bad-json" }
"#;
    let project = project(spec);
    let up = project.spawn_up();
    for prefix in ["fails", "sleeps", "hogs", "bad-json"] {
        project.ok(&["put", &format!("inbox/{prefix}/x.txt"), "mayfly.toml"]);
    }
    let failed = project.wait_for(&["peek", "failed", "--limit", "10"], WAIT, |v| v.as_array().unwrap().len() == 4);
    stop_gracefully(up);

    let expected = [
        ("fails", "error", 2),
        ("sleeps", "timeout", 2),
        ("hogs", "out_of_memory", 2),
        ("bad-json", "invalid_response", 3),
    ];
    for (function, outcome, attempts) in expected {
        let invocations = invocations_of(&project, function);
        let summary: Vec<(u64, String)> = invocations
            .iter()
            .map(|i| (i["attempt"].as_u64().unwrap(), i["outcome"].as_str().unwrap().to_owned()))
            .collect();
        let wanted: Vec<(u64, String)> = (1..=attempts).map(|a| (a, outcome.to_owned())).collect();
        assert_eq!(summary, wanted, "{function}: {invocations:?}");
    }
    let fails = invocations_of(&project, "fails");
    assert!(fails[0]["error_message"].as_str().unwrap().contains("3"), "exit status in the message: {}", fails[0]);
    let sleeps = invocations_of(&project, "sleeps");
    assert!(sleeps[0]["error_message"].as_str().unwrap().contains("timed out after 1"), "{}", sleeps[0]);

    let mut by_function = BTreeMap::new();
    for message in failed.as_array().unwrap() {
        let record: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        assert_eq!(record["requestContext"]["condition"], "RetriesExhausted", "{record}");
        assert_eq!(record["requestPayload"]["Records"][0]["eventSource"], "aws:s3");
        let arn = record["requestContext"]["functionArn"].as_str().unwrap().to_owned();
        by_function.insert(
            arn.rsplit(':').next().unwrap().to_owned(),
            record["requestContext"]["approximateInvokeCount"].clone(),
        );
    }
    assert_eq!(by_function.len(), 4, "{by_function:?}");
    assert_eq!(by_function["bad-json"], 3);
    assert_eq!(by_function["fails"], 2);
}

#[test]
fn queue_trigger_deletes_successes_and_retries_batch_item_failures_into_the_dead_letter_queue() {
    let project = project(
        r#"version = 1
name = "queue-trigger"
[queues.jobs]
visibility_timeout = "10s"
max_receives = 2
dead_letter = "jobs-dlq"
[queues.jobs-dlq]
[functions.picky]
command = ["python3", "functions/picky.py"]
retries = { max_attempts = 1, backoff = "100ms" }
# One batch in flight at a time: with several, pollers receiving at once may
# split the five messages between them (PostgreSQL's receives skip the rows
# another holds), and this test is about what one batch does.
concurrency = 1
[[triggers]]
queue = "jobs"
function = "picky"
batch_size = 10
batch_window = "200ms"
"#,
    );
    for body in ["good-1", "good-2", "bad-1", "good-3", "good-4"] {
        project.ok(&["send", "jobs", body]);
    }
    let up = project.spawn_up();
    let dead = project.wait_for(&["peek", "jobs-dlq"], WAIT, |v| v.as_array().unwrap().len() == 1);
    assert_eq!(dead[0]["body"], "bad-1");
    assert_eq!(dead[0]["dead_letter_source"], "jobs");
    let stats = project.wait_for(&["queues", "jobs"], WAIT, |v| v[0]["visible"] == 0 && v[0]["in_flight"] == 0);
    assert_eq!(stats[0]["delayed"], 0);
    stop_gracefully(up);
    let invocations = invocations_of(&project, "picky");
    assert!(invocations.iter().all(|i| i["outcome"] == "success" && i["trigger"] == "queue:jobs"), "{invocations:?}");
    // The first batch held everything; bad-1 was then delivered alone once more.
    assert_eq!(invocations.len(), 2, "{invocations:?}");
}

#[test]
fn schedules_invoke_a_function_with_a_scheduled_event() {
    let project = project(
        r#"version = 1
name = "schedule-trigger"
[functions.record]
command = ["python3", "functions/record.py"]
[[triggers]]
schedule = "rate(1 second)"
function = "record"
"#,
    );
    let up = project.spawn_up();
    let invocations =
        project.wait_for(&["invocations", "--function", "record"], WAIT, |v| v.as_array().unwrap().len() >= 2);
    stop_gracefully(up);
    assert!(
        invocations.as_array().unwrap().iter().all(|i| i["trigger"] == "schedule:rate(1 seconds)"),
        "{invocations}"
    );
    let logs = project.ok(&["logs", "--function", "record"]);
    assert!(logs.contains("event Scheduled Event aws.events"), "{logs}");
}

#[test]
fn a_control_plane_killed_during_a_burst_loses_no_event() {
    let project = project(
        r#"version = 1
name = "burst"
[buckets.inbox]
[queues.work]
visibility_timeout = "5s"
[functions.mark]
command = ["python3", "functions/mark.py"]
concurrency = 4
[[routes]]
from = { bucket = "inbox" }
to = { queue = "work" }
[[triggers]]
queue = "work"
function = "mark"
batch_size = 25
"#,
    );
    const OBJECTS: usize = 500;
    let mut up = project.spawn_up();
    for number in 0..OBJECTS {
        let output = project.run_with_stdin(&["put", &format!("inbox/burst/{number:04}")], b"x");
        support::assert_success(&output, &["put"]);
        if number == OBJECTS / 3 {
            up.sigkill(); // mid-burst
        }
        if number == OBJECTS / 2 {
            up = project.spawn_up();
        }
    }
    let marks = || std::fs::read_to_string(project.path("marks.log")).unwrap_or_default();
    let started = std::time::Instant::now();
    loop {
        let unique: std::collections::BTreeSet<String> = marks().lines().map(str::to_owned).collect();
        if unique.len() == OBJECTS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{} of {OBJECTS} processed", unique.len());
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_gracefully(up);
    let all = marks();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for key in all.lines() {
        *counts.entry(key).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "burst of {OBJECTS} objects with a SIGKILL: all processed, {duplicates} duplicate deliveries (at least once)"
    );
    assert_eq!(counts.len(), OBJECTS);
    assert!(counts.keys().all(|k| k.starts_with("burst/")));
}

/// Defect 3 of issue 10: a running `mayfly up` follows a new deployment, and
/// every event is routed by the deployment in force when it was committed —
/// objects put before the deploy by the old routes, after it by the new ones,
/// none lost — while the new queue trigger and schedule start without a restart.
#[test]
fn a_running_control_plane_follows_a_new_deployment_at_its_event_boundary() {
    let version_one = r#"version = 1
name = "follow"
[buckets.inbox]
[functions.first]
command = ["python3", "functions/record.py"]
[[routes]]
from = { bucket = "inbox" }
to = { function = "first" }
"#;
    let version_two = r#"version = 1
name = "follow"
[buckets.inbox]
[queues.work]
[functions.first]
command = ["python3", "functions/record.py"]
[functions.second]
command = ["python3", "functions/record.py"]
[functions.mark]
command = ["python3", "functions/mark.py"]
[functions.ticker]
command = ["python3", "functions/record.py"]
[[routes]]
from = { bucket = "inbox" }
to = { function = "second" }
[[routes]]
from = { bucket = "inbox" }
to = { queue = "work" }
[[triggers]]
queue = "work"
function = "mark"
[[triggers]]
schedule = "rate(1 second)"
function = "ticker"
"#;
    let project = project(version_one);
    let up = project.spawn_up();
    const EACH: usize = 3;
    for number in 0..EACH {
        project.run_with_stdin(&["put", &format!("inbox/before/{number}")], b"x");
    }
    // Deployed while `up` runs, with objects put right after: no pause for it to notice.
    std::fs::write(project.path("mayfly.toml"), version_two).unwrap();
    project.ok(&["deploy"]);
    for number in 0..EACH {
        project.run_with_stdin(&["put", &format!("inbox/after/{number}")], b"x");
    }

    let keys_seen_by = |function: &str| -> Vec<String> {
        let logs = project.ok(&["logs", "--function", function, "--tail", "100"]);
        let mut keys: Vec<String> =
            logs.lines().filter_map(|line| line.split("event aws:s3 ").nth(1)).map(str::to_owned).collect();
        keys.sort();
        keys
    };
    let marks = || {
        let mut keys: Vec<String> =
            std::fs::read_to_string(project.path("marks.log")).unwrap_or_default().lines().map(str::to_owned).collect();
        keys.sort();
        keys
    };
    project.wait_for(&["invocations", "--limit", "1000"], WAIT, |v| {
        let of = |function: &str| v.as_array().unwrap().iter().filter(|i| i["function"] == function).count();
        of("first") >= EACH && of("second") >= EACH && of("ticker") >= 1 && marks().len() >= EACH
    });
    std::thread::sleep(Duration::from_millis(300)); // anything routed by the wrong deployment would show by now
    let stderr = up.stop();

    let expected = |prefix: &str| (0..EACH).map(|n| format!("{prefix}/{n}")).collect::<Vec<_>>();
    assert_eq!(keys_seen_by("first"), expected("before"), "deployment 1 routes the objects put before the deploy");
    assert_eq!(keys_seen_by("second"), expected("after"), "deployment 2 routes the objects put after it");
    assert_eq!(marks(), expected("after"), "deployment 2's queue route and queue trigger");
    let boundary = EACH + 1;
    assert!(stderr.contains(&format!("deployment 2 in force from event {boundary}")), "{stderr}");
}

/// Defect 14 of issue 10: an asynchronous invocation leased by a `mayfly up`
/// killed mid-invocation is delivered again about the function's timeout
/// (plus a margin of seconds) later, not minutes later.
#[test]
fn an_invocation_leased_by_a_killed_control_plane_is_redelivered_after_about_its_timeout() {
    let project = project(
        r#"version = 1
name = "redelivery"
[buckets.inbox]
[functions.slow]
command = ["python3", "functions/slow.py"]
timeout = "4s"
[[routes]]
from = { bucket = "inbox" }
to = { function = "slow" }
"#,
    );
    std::fs::write(
        project.path("functions/slow.py"),
        "import os, sys, time\nsys.stdin.read()\nopen(os.path.join(os.environ['MAYFLY_PROJECT'], 'started.log'), 'a').write('started\\n')\ntime.sleep(3)\nprint('{}')\n",
    )
    .unwrap();
    let starts = || std::fs::read_to_string(project.path("started.log")).unwrap_or_default().lines().count();
    let wait_for_starts = |count: usize| {
        let started = std::time::Instant::now();
        while starts() < count {
            assert!(started.elapsed() < WAIT, "{count} start(s) of the function never came");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut up = project.spawn_up();
    project.run_with_stdin(&["put", "inbox/chart"], b"x");
    wait_for_starts(1);
    up.sigkill(); // mid-invocation: the message stays leased
    let killed_at = std::time::Instant::now();
    assert_eq!(invocations_of(&project, "slow"), Vec::<Value>::new(), "killed before the invocation ended");
    let up = project.spawn_up();
    wait_for_starts(2);
    let redelivered_after = killed_at.elapsed();
    stop_gracefully(up); // the redelivered invocation finishes first
    let invocations = invocations_of(&project, "slow");
    assert_eq!(invocations.len(), 1, "{invocations:?}");
    assert_eq!(invocations[0]["attempt"], 2, "{invocations:?}");
    // The lease is the timeout (4 s) plus a 5 s margin, counted from before the kill.
    assert!(
        redelivered_after < Duration::from_secs(12),
        "redelivered {redelivered_after:?} after the kill; expected within the 4 s timeout plus the 5 s margin"
    );
}
