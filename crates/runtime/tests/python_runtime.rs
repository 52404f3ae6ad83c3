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
