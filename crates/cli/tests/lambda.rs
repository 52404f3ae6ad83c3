//! The `lambda` runtime end to end through the CLI: handlers built on real,
//! unmodified Lambda clients (the Rust `lambda_runtime` crate, Python's
//! `awslambdaric`) run under `mayfly invoke` and under every trigger of
//! `mayfly up`, stay warm, and fail the way the ledger says.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Project, handler};

const WAIT: Duration = Duration::from_secs(60);

fn invocations_of(project: &Project, function: &str) -> Vec<Value> {
    project.json(&["invocations", "--function", function, "--limit", "1000"]).as_array().unwrap().clone()
}

fn stop(up: support::ControlPlane) {
    up.stop();
}

#[test]
fn invoke_runs_a_lambda_runtime_crate_handler_and_prints_a_report() {
    let spec = format!(
        "version = 1\nname = \"invoke\"\n[functions.echo]\nruntime = \"lambda\"\ncommand = [\"{}\"]\nmemory = \"128MiB\"\n",
        handler("lambda-echo")
    );
    let project = Project::deployed_with(&spec);
    let report = project.json(&["invoke", "echo", "--payload", r#"{"chart": 17}"#]);
    assert_eq!(report["outcome"], "success", "{report}");
    assert_eq!(report["response"], serde_json::json!({"chart": 17}));
    assert!(report["init_duration_ms"].as_f64().is_some(), "a one-shot invoke is a cold start: {report}");

    let text = project.ok(&["invoke", "echo", "--payload", "{}"]);
    assert!(text.contains("REPORT RequestId:") && text.contains("Duration:"), "{text}");
}

#[test]
fn invoke_reports_a_failed_lambda_with_exit_code_8_and_the_ledger_records_it() {
    let spec = format!(
        "version = 1\nname = \"invoke-fail\"\n[functions.echo]\nruntime = \"lambda\"\ncommand = [\"{}\"]\n",
        handler("lambda-echo")
    );
    let project = Project::deployed_with(&spec);
    let output = project.run(&["invoke", "echo", "--payload", r#"{"mode": "error", "message": "chart 17 is empty"}"#]);
    assert_eq!(output.status.code(), Some(8));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("REPORT RequestId:"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("chart 17 is empty").count(), 1, "the function's error, once on stderr: {stderr}");
    let ledger = invocations_of(&project, "echo");
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["outcome"], "error");
    assert_eq!(ledger[0]["trigger"], "invoke");
}

#[test]
fn invoke_runs_a_python_handler_through_awslambdaric() {
    support::ensure_awslambdaric();
    let project = Project::with_spec(
        "version = 1\nname = \"python\"\n[functions.py]\nruntime = \"lambda\"\ncommand = [\"python3\", \"-m\", \"awslambdaric\", \"handler.handler\"]\nhandler = \"handler.handler\"\n",
    );
    std::fs::write(
        project.path("handler.py"),
        "def handler(event, context):\n    print('coding chart', event.get('chart'))\n    if event.get('fail'):\n        raise ValueError('chart is empty')\n    return {'chart': event.get('chart'), 'request': context.aws_request_id}\n",
    )
    .unwrap();
    project.ok(&["deploy"]);
    let report = project.json(&["invoke", "py", "--payload", r#"{"chart": 3}"#]);
    assert_eq!(report["outcome"], "success", "{report}");
    assert_eq!(report["response"]["chart"], 3);
    assert_eq!(report["response"]["request"], report["request_id"]);
    assert!(report["logs"].as_str().unwrap().contains("coding chart 3"), "{report}");

    let failed = project.run(&["invoke", "py", "--payload", r#"{"fail": true}"#, "--json"]);
    assert_eq!(failed.status.code(), Some(8));
    let report: Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(report["error_type"], "ValueError");
    assert_eq!(report["error_message"], "chart is empty");
}

#[test]
fn a_warm_lambda_serves_bucket_queue_and_schedule_triggers() {
    let spec = format!(
        r#"version = 1
name = "lambda-triggers"
[buckets.inbox]
[queues.jobs]
[functions.echo]
runtime = "lambda"
command = ["{}"]
concurrency = 1
[[routes]]
from = {{ bucket = "inbox" }}
to = {{ function = "echo" }}
[[triggers]]
queue = "jobs"
function = "echo"
batch_size = 5
[[triggers]]
schedule = "rate(1 second)"
function = "echo"
"#,
        handler("lambda-echo")
    );
    let project = Project::deployed_with(&spec);
    let up = project.spawn_up();
    project.ok(&["put", "inbox/a.txt", "mayfly.toml"]);
    project.ok(&["send", "jobs", "hello"]);
    let ledger = project.wait_for(&["invocations", "--function", "echo", "--limit", "100"], WAIT, |v| {
        let triggers: Vec<&str> = v.as_array().unwrap().iter().map(|i| i["trigger"].as_str().unwrap()).collect();
        triggers.contains(&"bucket:inbox")
            && triggers.contains(&"queue:jobs")
            && triggers.iter().any(|t| t.starts_with("schedule:"))
    });
    stop(up);
    let ledger = ledger.as_array().unwrap();
    assert!(ledger.iter().all(|i| i["outcome"] == "success"), "{ledger:?}");
    let cold = ledger.iter().filter(|i| i["init_duration_ms"].is_number()).count();
    assert_eq!(cold, 1, "one instance (concurrency 1) started once and stayed warm: {ledger:?}");
    assert_eq!(project.json(&["queues", "jobs"])[0]["visible"], 0);
}

#[test]
fn lambda_failures_end_in_the_ledger_and_in_the_on_failure_queue() {
    let echo = handler("lambda-echo");
    let function = |name: &str, extra: &str| {
        format!(
            "[functions.{name}]\nruntime = \"lambda\"\ncommand = [\"{echo}\"]\nretries = {{ max_attempts = 2, backoff = \"100ms\" }}\non_failure = \"failed\"\n{extra}\n[[routes]]\nfrom = {{ bucket = \"inbox\", prefix = \"{name}/\" }}\nto = {{ function = \"{name}\" }}\n"
        )
    };
    let spec = [
        "version = 1\nname = \"lambda-failures\"\n[buckets.inbox]\n[queues.failed]\n".to_owned(),
        function("errors", "env = { MAYFLY_TEST_MODE = \"error\" }"),
        function("never-responds", "env = { MAYFLY_TEST_MODE = \"sleep\" }\ntimeout = \"500ms\""),
        function("hogs", "env = { MAYFLY_TEST_MODE = \"allocate\" }\nmemory = \"32MiB\""),
        function("crashes", "env = { MAYFLY_TEST_MODE = \"crash\" }"),
    ]
    .concat();
    let project = Project::deployed_with(&spec);
    let up = project.spawn_up();
    for name in ["errors", "never-responds", "hogs", "crashes"] {
        project.ok(&["put", &format!("inbox/{name}/x"), "mayfly.toml"]);
    }
    let failed = project.wait_for(&["peek", "failed", "--limit", "10"], WAIT, |v| v.as_array().unwrap().len() == 4);
    stop(up);
    for (name, outcome) in
        [("errors", "error"), ("never-responds", "timeout"), ("hogs", "out_of_memory"), ("crashes", "crashed")]
    {
        let ledger = invocations_of(&project, name);
        let outcomes: Vec<(u64, &str)> =
            ledger.iter().map(|i| (i["attempt"].as_u64().unwrap(), i["outcome"].as_str().unwrap())).collect();
        assert_eq!(outcomes, [(1, outcome), (2, outcome)], "{name}: {ledger:?}");
    }
    for message in failed.as_array().unwrap() {
        let record: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
        assert_eq!(record["requestContext"]["approximateInvokeCount"], 2, "{record}");
    }
}
