//! Paths of the control plane that the trigger tests do not reach, end to
//! end through the real `mayfly` binary: a graceful stop while an invocation
//! runs, following a function's logs live, what the invocation ledger
//! records (deployment version, memory, bytes, cost), and alarms on a queue's
//! oldest message, a dead-letter queue's depth and a function's error rate.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Project, unique_name};

const WAIT: Duration = Duration::from_secs(60);

fn project_with_functions(spec: &str, functions: &[(&str, &str)]) -> Project {
    let project = Project::with_spec(spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    for (file, source) in functions {
        std::fs::write(project.path("functions").join(file), source).unwrap();
    }
    project.ok(&["deploy"]);
    project
}

/// Writes `started` when it begins and `finished` after two seconds, in the project.
const SLOW: &str = r#"import json, os, sys, time
event = json.load(sys.stdin)
marks = os.path.join(os.environ["MAYFLY_PROJECT"], "marks.log")
with open(marks, "a") as out:
    out.write("started\n")
time.sleep(2)
with open(marks, "a") as out:
    out.write("finished\n")
json.dump({"slept": 2}, sys.stdout)
"#;

#[test]
fn sigterm_while_an_invocation_runs_lets_it_finish_and_acknowledges_its_message() {
    let spec = format!(
        r#"version = 1
name = "{}"
[queues.work]
visibility_timeout = "5m"
[functions.slow]
command = ["python3", "functions/slow.py"]
timeout = "30s"
[[triggers]]
queue = "work"
function = "slow"
batch_size = 1
"#,
        unique_name("sigterm")
    );
    let project = project_with_functions(&spec, &[("slow.py", SLOW)]);
    let up = project.spawn_up();
    project.ok(&["send", "work", r#"{"chart": 1}"#]);
    let marks = project.path("marks.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&marks).unwrap_or_default().contains("started") {
        assert!(started.elapsed() < WAIT, "the function never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = up.stop();
    assert!(stderr.contains("in-flight invocations finish"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "started\nfinished\n",
        "the running invocation finished before `up` exited"
    );
    let invocations = project.json(&["invocations", "--function", "slow"]);
    assert_eq!(invocations.as_array().unwrap().len(), 1, "{invocations}");
    assert_eq!(invocations[0]["outcome"], "success", "{invocations}");
    let queue = &project.json(&["queues", "work"])[0];
    assert_eq!((queue["visible"].as_u64(), queue["in_flight"].as_u64()), (Some(0), Some(0)), "acknowledged: {queue}");
}

const SAYS: &str = r#"import json, sys
event = json.load(sys.stdin)
print("says", event["say"], file=sys.stderr)
json.dump({"said": event["say"]}, sys.stdout)
"#;

#[test]
fn logs_follow_prints_each_new_invocations_logs_as_it_is_recorded() {
    let spec = format!(
        "version = 1\nname = \"{}\"\n[functions.says]\ncommand = [\"python3\", \"functions/says.py\"]\n",
        unique_name("follow")
    );
    let project = project_with_functions(&spec, &[("says.py", SAYS)]);
    project.ok(&["invoke", "says", "--payload", r#"{"say": "before-follow"}"#]);
    let mut follower = project
        .command(&["logs", "--function", "says", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for_line = |needle: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => continue,
                Err(_) => panic!("`logs --follow` never printed `{needle}`"),
            }
        }
    };
    wait_for_line("says before-follow");
    for word in ["first-live", "second-live"] {
        project.ok(&["invoke", "says", "--payload", &format!(r#"{{"say": "{word}"}}"#)]);
        wait_for_line(&format!("says {word}"));
    }
    assert!(matches!(follower.try_wait(), Ok(None)), "--follow keeps running");
    follower.kill().unwrap();
    follower.wait().unwrap();
}

const ECHO: &str = r#"import json, sys
event = json.load(sys.stdin)
json.dump({"echo": event}, sys.stdout, separators=(",", ":"))
"#;

#[test]
fn the_ledger_records_the_deployment_version_memory_bytes_and_estimated_cost() {
    let name = unique_name("ledger");
    let spec = |greeting: &str| {
        format!(
            r#"version = 1
name = "{name}"
[pricing]
invocation = 0.5
cpu_second = 2.0
gb_second = 8.0
[functions.echo]
command = ["python3", "functions/echo.py"]
env = {{ GREETING = "{greeting}" }}
memory = "256MiB"
"#
        )
    };
    let project = project_with_functions(&spec("v1"), &[("echo.py", ECHO)]);
    std::fs::write(project.path("mayfly.toml"), spec("v2")).unwrap();
    project.ok(&["deploy"]);
    let payload = r#"{"chart":"0042"}"#;
    project.ok(&["invoke", "echo", "--payload", payload]);

    let invocation = &project.json(&["invocations", "--function", "echo"])[0];
    assert_eq!(invocation["deployment_version"], 2, "{invocation}");
    assert_eq!(invocation["bytes_in"].as_u64(), Some(payload.len() as u64), "{invocation}");
    let response = format!(r#"{{"echo":{payload}}}"#);
    assert_eq!(invocation["bytes_out"].as_u64(), Some(response.len() as u64), "{invocation}");
    let peak = invocation["peak_memory"].as_u64().expect("peak memory is measured (memory cgroup)");
    assert!(peak > 1 << 20 && peak <= 256 << 20, "peak {peak} within the 256 MiB limit: {invocation}");
    // invocation + cpu_second × seconds + gb_second × 0.25 GiB × seconds
    let seconds = invocation["duration_ms"].as_f64().unwrap() / 1000.0;
    let expected = 0.5 + 2.0 * seconds + 8.0 * 0.25 * seconds;
    let cost = invocation["estimated_cost"].as_f64().unwrap();
    // The ledger shows the duration in whole milliseconds; the cost used the exact one.
    let rounding = (2.0 + 8.0 * 0.25) * 1e-3;
    assert!((cost - expected).abs() <= rounding, "cost {cost}, expected {expected}: {invocation}");
}

const FAILS: &str = "import sys\nsys.stdin.read()\nprint('chart could not be parsed', file=sys.stderr)\nsys.exit(3)\n";
const NOOP: &str = "import json, sys\nsys.stdin.read()\njson.dump({}, sys.stdout)\n";

fn runs_started_by(project: &Project, trigger: &str) -> Vec<Value> {
    let runs = project.json(&["runs"]);
    runs.as_array().unwrap().iter().filter(|run| run["trigger"] == trigger).cloned().collect()
}

#[test]
fn alarms_on_oldest_age_dead_letter_depth_and_error_rate_each_start_their_job() {
    let spec = format!(
        r#"version = 1
name = "{}"
[queues.slow]
[queues.work]
max_receives = 1
dead_letter = "work-dlq"
[queues.work-dlq]
[queues.sink]
[functions.noop]
command = ["python3", "functions/noop.py"]
[functions.fails]
command = ["python3", "functions/fails.py"]
[alarms.stale]
metric = "queue.slow.oldest_age"
when = ">= 2s for 1s"
[alarms.poisoned]
metric = "queue.work.dlq_depth"
when = ">= 1 for 1s"
[alarms.failing]
metric = "function.fails.error_rate"
when = ">= 50% for 2s"
[jobs.on-stale]
source = {{ queue = "sink" }}
function = "noop"
triggers = [{{ alarm = "stale" }}]
[jobs.on-poisoned]
source = {{ queue = "sink" }}
function = "noop"
triggers = [{{ alarm = "poisoned" }}]
[jobs.on-failing]
source = {{ queue = "sink" }}
function = "noop"
triggers = [{{ alarm = "failing" }}]
"#,
        unique_name("alarms")
    );
    let project = project_with_functions(&spec, &[("noop.py", NOOP), ("fails.py", FAILS)]);
    let up = project.spawn_up();

    // Nothing has breached yet: no alarm fires on an idle project.
    std::thread::sleep(Duration::from_secs(2));
    assert!(project.json(&["runs"]).as_array().unwrap().is_empty(), "{}", project.json(&["runs"]));

    // oldest_age: a message nobody receives grows old.
    project.ok(&["send", "slow", "waiting"]);
    // dlq_depth: a message received once more than its queue allows is dead-lettered.
    project.ok(&["send", "work", "poison"]);
    project.ok(&["receive", "work", "--visibility-timeout", "1s"]);
    std::thread::sleep(Duration::from_millis(1100));
    project.ok(&["receive", "work"]);
    assert_eq!(project.json(&["queues", "work-dlq"])[0]["visible"], 1, "dead-lettered on its second receive");
    // error_rate: every invocation of `fails` fails, for longer than the alarm's period.
    let started = Instant::now();
    while runs_started_by(&project, "alarm:failing").is_empty() {
        assert!(started.elapsed() < WAIT, "the error-rate alarm never started its job");
        assert_eq!(project.run(&["invoke", "fails"]).status.code(), Some(8), "the invoked function failed");
        std::thread::sleep(Duration::from_millis(300));
    }
    for trigger in ["alarm:stale", "alarm:poisoned"] {
        project.wait_for(&["runs"], WAIT, |runs| runs.as_array().unwrap().iter().any(|run| run["trigger"] == trigger));
    }
    // The runs end (their source is empty) before `up` stops.
    project.wait_for(&["runs"], WAIT, |runs| runs.as_array().unwrap().iter().all(|run| run["status"] != "running"));
    up.stop();
    for (trigger, job) in
        [("alarm:stale", "on-stale"), ("alarm:poisoned", "on-poisoned"), ("alarm:failing", "on-failing")]
    {
        let runs = runs_started_by(&project, trigger);
        assert_eq!(runs.len(), 1, "{trigger} fired once while it held: {runs:?}");
        assert_eq!(runs[0]["job"], job, "{runs:?}");
    }
}

#[test]
fn a_job_schedule_starts_runs_from_up_that_process_the_source() {
    let spec = format!(
        r#"version = 1
name = "{}"
[buckets.charts]
[functions.noop]
command = ["python3", "functions/noop.py"]
[jobs.nightly]
source = {{ bucket = "charts", prefix = "in/" }}
function = "noop"
triggers = [{{ schedule = "rate(2 seconds)" }}]
"#,
        unique_name("job-schedule")
    );
    let project = project_with_functions(&spec, &[("noop.py", NOOP)]);
    let chart = project.path("chart.txt");
    std::fs::write(&chart, "chart").unwrap();
    for key in ["charts/in/1.txt", "charts/in/2.txt"] {
        project.ok(&["put", key, chart.to_str().unwrap()]);
    }
    let up = project.spawn_up();
    // A run the schedule just created is `requested`, not yet running: only
    // a finished run (one with `finished_at`) has processed its source.
    let runs = project.wait_for(&["runs"], WAIT, |runs| {
        runs.as_array().unwrap().iter().filter(|run| run["finished_at"].is_string()).count() >= 2
    });
    up.stop();
    let scheduled: Vec<&Value> =
        runs.as_array().unwrap().iter().filter(|run| run["trigger"] == "schedule:rate(2 seconds)").collect();
    assert!(scheduled.len() >= 2, "the schedule fired repeatedly: {runs}");
    assert!(scheduled.iter().all(|run| run["job"] == "nightly"), "{runs}");
    let finished = scheduled.iter().find(|run| run["finished_at"].is_string()).unwrap();
    assert_eq!(finished["done"], 2, "a scheduled run processes the whole prefix: {finished}");
}
