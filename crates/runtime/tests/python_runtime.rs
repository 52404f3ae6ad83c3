//! The lambda runtime with a Python handler run by the unmodified
//! `awslambdaric` from PyPI (`tests/python/handler.py`). The test installs
//! it with `python3 -m pip install --quiet awslambdaric` when it is missing.

mod common;

use std::path::PathBuf;

use common::*;
use mayfly_runtime::{Invoker, InvokerConfig, Outcome, RuntimeKind};
use serde_json::json;

/// Makes sure `awslambdaric` is importable, installing it from PyPI if not.
fn ensure_awslambdaric() {
    let importable = || {
        std::process::Command::new("python3")
            .args(["-c", "import awslambdaric"])
            .status()
            .is_ok_and(|status| status.success())
    };
    if importable() {
        return;
    }
    let status = std::process::Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "awslambdaric"])
        .status()
        .expect("python3 runs (install python3 and python3-pip)");
    assert!(status.success(), "pip install awslambdaric failed: {status}");
    assert!(importable(), "awslambdaric is installed but cannot be imported");
}

fn python_function(name: &str) -> mayfly_runtime::FunctionDefinition {
    ensure_awslambdaric();
    let mut function = function(
        name,
        RuntimeKind::Lambda,
        vec!["python3".into(), "-m".into(), "awslambdaric".into(), "handler.handler".into()],
    );
    function.working_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    function.handler = Some("handler.handler".into());
    function
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_succeeds_and_stays_warm() {
    let invoker = Invoker::new(InvokerConfig::default());
    let function = python_function("python-echo");
    let event = json!({ "chart": 17, "log": "coding chart 17" });
    let first = invoker.invoke(&function, invocation(event.clone())).await;
    assert_eq!(first.outcome, Outcome::Success, "logs: {}", logs_text(&first.logs));
    assert_eq!(response_json(&first.response), event);
    assert!(logs_text(&first.logs).contains("coding chart 17"), "{}", logs_text(&first.logs));
    assert!(first.init_duration.is_some());

    let request = invocation(json!({ "mode": "env" }));
    let request_id = request.request_id.clone();
    let second = invoker.invoke(&function, request).await;
    assert_eq!(second.outcome, Outcome::Success, "logs: {}", logs_text(&second.logs));
    assert_eq!(second.init_duration, None);
    let context = response_json(&second.response);
    assert_eq!(context["function_name"], "python-echo");
    assert_eq!(context["aws_request_id"], request_id.as_str());
    assert_eq!(context["invoked_function_arn"], "arn:aws:lambda:local:000000000000:function:python-echo");
    assert_eq!(context["remaining_ms_positive"], true);
    invoker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_exception_is_a_function_error() {
    let invoker = Invoker::new(InvokerConfig::default());
    let function = python_function("python-fails");
    let result =
        invoker.invoke(&function, invocation(json!({ "mode": "error", "message": "chart 17 is empty" }))).await;
    assert_eq!(
        result.outcome,
        Outcome::FunctionError { error_type: "ValueError".into(), message: "chart 17 is empty".into() },
        "logs: {}",
        logs_text(&result.logs)
    );
    let after = invoker.invoke(&function, invocation(json!({}))).await;
    assert_eq!(after.outcome, Outcome::Success);
    assert_eq!(after.init_duration, None, "the instance survived the exception");
    invoker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_id_reaches_the_handler_through_the_lambda_runtime_trace_id_header() {
    let invoker = Invoker::new(InvokerConfig::default());
    let function = python_function("python-trace");
    let trace_id = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let mut traced = invocation(json!({ "mode": "trace" }));
    traced.trace_id = Some(trace_id.to_owned());
    let result = invoker.invoke(&function, traced).await;
    assert_eq!(result.outcome, Outcome::Success, "logs: {}", logs_text(&result.logs));
    assert_eq!(response_json(&result.response), json!({ "trace_id": trace_id }));

    // The next invocation without a trace id must not inherit the previous one.
    let untraced = invoker.invoke(&function, invocation(json!({ "mode": "trace" }))).await;
    assert_eq!(untraced.outcome, Outcome::Success, "logs: {}", logs_text(&untraced.logs));
    assert_eq!(response_json(&untraced.response), json!({ "trace_id": null }));
    invoker.shutdown().await;
}

/// A handler module that raises while it is imported: awslambdaric posts to
/// `/runtime/init/error` and exits, and the invocation reports the init error
/// by its type and message (repeated: the post and the exit race).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_at_import_reports_its_init_error() {
    ensure_awslambdaric();
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("broken.py"), "raise RuntimeError('model file icd10.bin is missing')\n")
        .unwrap();
    let mut function = function(
        "python-broken",
        RuntimeKind::Lambda,
        vec!["python3".into(), "-m".into(), "awslambdaric".into(), "broken.handler".into()],
    );
    function.working_dir = directory.path().to_path_buf();
    function.handler = Some("broken.handler".into());
    let invoker = Invoker::new(InvokerConfig::default());
    for attempt in 1..=3 {
        let result = invoker.invoke(&function, invocation(json!({}))).await;
        match &result.outcome {
            Outcome::Crashed { reason } => assert!(
                reason.contains("init failed")
                    && reason.contains("RuntimeError")
                    && reason.contains("model file icd10.bin is missing"),
                "attempt {attempt}: the init error is reported by type and message, got: {reason}"
            ),
            other => panic!("attempt {attempt}: expected a crash at init, got {other:?}"),
        }
    }
    invoker.shutdown().await;
}
