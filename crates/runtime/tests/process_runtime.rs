//! The process runtime with a real handler (`process-echo`): one process per
//! invocation, event on stdin, result on stdout, logs on stderr, and the
//! limits enforced on the whole process group.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mayfly_core::ByteSize;
use mayfly_runtime::{Invoker, InvokerConfig, MemoryEnforcement, Outcome};
use serde_json::json;

fn invoker() -> Invoker {
    Invoker::new(InvokerConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_returns_stdout_as_the_result_and_stderr_as_the_logs() {
    let function = process_echo("echo");
    let event = json!({ "chart": 17, "log": "coding chart 17" });
    let result = invoker().invoke(&function, invocation(event.clone())).await;
    assert_eq!(result.outcome, Outcome::Success, "logs: {}", logs_text(&result.logs));
    assert_eq!(response_json(&result.response), event);
    assert_eq!(logs_text(&result.logs), "coding chart 17\n");
    assert!(result.init_duration.is_some(), "every process invocation is a cold start");
    assert_eq!(result.bytes_in, serde_json::to_vec(&event).unwrap().len() as u64);
    assert_eq!(result.bytes_out, result.response.as_ref().unwrap().len() as u64);
    assert!(result.peak_memory.is_some_and(|peak| peak > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_functions_and_the_runtimes_variables() {
    let mut function = process_echo("env-check");
    function.env.insert("GREETING".into(), "hello".into());
    function.version = "7".into();
    function.memory = Some(ByteSize(128 * 1024 * 1024));
    let request = invocation(json!({ "mode": "env" }));
    let request_id = request.request_id.clone();
    let result = invoker().invoke(&function, request).await;
    assert_eq!(result.outcome, Outcome::Success);
    let env = &response_json(&result.response)["env"];
    assert_eq!(env["GREETING"], "hello");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "env-check");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "7");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(env["MAYFLY_REQUEST_ID"], request_id.as_str());
    assert!(env.get("AWS_LAMBDA_RUNTIME_API").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_a_function_error_with_the_status_and_the_last_stderr_lines() {
    let function = process_echo("fails");
    let result =
        invoker().invoke(&function, invocation(json!({ "mode": "error", "message": "chart 17 is empty" }))).await;
    let Outcome::FunctionError { error_type, message } = &result.outcome else {
        panic!("expected a function error, got {:?}", result.outcome);
    };
    assert_eq!(error_type, "ProcessExit");
    assert!(message.contains("exit status 1"), "{message}");
    assert!(message.contains("handler failed: chart 17 is empty"), "{message}");
    assert_eq!(result.response, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_that_is_not_json_is_an_invalid_response() {
    let function = process_echo("garbled");
    let result = invoker().invoke(&function, invocation(json!({ "mode": "invalid_json" }))).await;
    assert!(
        matches!(&result.outcome, Outcome::InvalidResponse { reason } if reason.starts_with("stdout is not JSON")),
        "{:?}",
        result.outcome
    );
    assert_eq!(result.outcome.kind(), "invalid_response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let mut function = process_echo("hangs");
    function.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let result = invoker().invoke(&function, invocation(json!({ "mode": "spawn_child_and_sleep" }))).await;
    assert_eq!(result.outcome, Outcome::TimedOut { after: Duration::from_secs(1) });
    assert_eq!(result.outcome.to_string(), "timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(5));
    let child = logged_child_pid(&result.logs);
    assert!(process_ends(child), "the handler's child {child} outlived the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_is_out_of_memory() {
    let invoker = invoker();
    let required_v2_parent = required_cgroup_v2_parent(&invoker);
    let mut function = process_echo("hungry");
    function.memory = Some(ByteSize(64 * 1024 * 1024));
    let result = invoker.invoke(&function, invocation(json!({ "mode": "allocate", "mb": 256 }))).await;
    if let Some(parent) = required_v2_parent {
        assert_no_instance_cgroup_is_left(&parent);
    }
    match invoker.memory_enforcement() {
        MemoryEnforcement::CgroupV1 { .. } | MemoryEnforcement::CgroupV2 { .. } => {
            assert_eq!(result.outcome, Outcome::OutOfMemory { limit: ByteSize(64 * 1024 * 1024) });
        }
        // Documented: under RLIMIT_AS the allocation fails and the handler aborts.
        MemoryEnforcement::AddressSpaceLimit => {
            assert!(matches!(result.outcome, Outcome::Crashed { .. }), "{:?}", result.outcome)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_memory_limit_the_peak_is_reported() {
    let invoker = invoker();
    let required_v2_parent = required_cgroup_v2_parent(&invoker);
    let mut function = process_echo("measured");
    function.memory = Some(ByteSize(256 * 1024 * 1024));
    let result = invoker.invoke(&function, invocation(json!({ "mode": "allocate", "mb": 32 }))).await;
    assert_eq!(result.outcome, Outcome::Success, "logs: {}", logs_text(&result.logs));
    let peak = result.peak_memory.unwrap();
    assert!((32 * 1024 * 1024..256 * 1024 * 1024).contains(&peak), "peak {peak}");
    if let Some(parent) = required_v2_parent {
        // The peak then comes from the instance's memory.peak (Linux ≥ 5.19),
        // which every non-root cgroup has, not from the process's rusage.
        assert!(parent.join("memory.peak").exists(), "the kernel offers no memory.peak");
        assert_no_instance_cgroup_is_left(&parent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_space_fallback_limits_memory_too() {
    let invoker = Invoker::new(InvokerConfig {
        memory_enforcement: mayfly_runtime::MemoryEnforcementMode::AddressSpaceLimit,
        ..InvokerConfig::default()
    });
    assert_eq!(invoker.memory_enforcement(), &MemoryEnforcement::AddressSpaceLimit);
    let mut function = process_echo("rlimited");
    function.memory = Some(ByteSize(64 * 1024 * 1024));
    let result = invoker.invoke(&function, invocation(json!({ "mode": "allocate", "mb": 256 }))).await;
    // Documented: without a cgroup, running out of memory shows as a crash.
    assert!(
        matches!(&result.outcome, Outcome::Crashed { reason } if reason.contains("SIGABRT")),
        "{:?}",
        result.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_by_signal_is_a_crash() {
    let function = process_echo("crashes");
    let result = invoker().invoke(&function, invocation(json!({ "mode": "crash" }))).await;
    assert_eq!(result.outcome, Outcome::Crashed { reason: "killed by signal 6 (SIGABRT)".into() });
    assert!(logs_text(&result.logs).contains("crashing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_limit_is_refused_without_starting_anything() {
    let mut function = process_echo("small");
    function.max_payload = ByteSize(1024);
    function.command = vec!["/nonexistent/would-fail-if-started".into()];
    let result = invoker().invoke(&function, invocation(json!({ "data": "x".repeat(2000) }))).await;
    assert!(
        matches!(result.outcome, Outcome::PayloadTooLarge { size, limit: ByteSize(1024) } if size > 2000),
        "{:?}",
        result.outcome
    );
    assert_eq!(result.init_duration, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_limit_is_payload_too_large() {
    let mut function = process_echo("verbose");
    function.max_payload = ByteSize(1024);
    let result = invoker().invoke(&function, invocation(json!({ "mode": "large", "bytes": 100_000 }))).await;
    assert!(matches!(result.outcome, Outcome::PayloadTooLarge { limit: ByteSize(1024), .. }), "{:?}", result.outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_a_crash_naming_it() {
    let mut function = process_echo("missing");
    function.command = vec!["/nonexistent/handler".into()];
    let result = invoker().invoke(&function, invocation(json!({}))).await;
    assert!(
        matches!(&result.outcome, Outcome::Crashed { reason } if reason.contains("/nonexistent/handler")),
        "{:?}",
        result.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_invocations_respect_the_concurrency_cap() {
    let probe_dir = tempfile::tempdir().unwrap();
    let mut function = process_echo("capped");
    function.concurrency = Some(2);
    let invoker = invoker();
    let event = json!({ "mode": "probe", "dir": probe_dir.path(), "ms": 300 });
    let calls = (0..6).map(|_| {
        let invoker = invoker.clone();
        let function = function.clone();
        let event = event.clone();
        tokio::spawn(async move { invoker.invoke(&function, invocation(event)).await })
    });
    let mut most = 0;
    for call in calls.collect::<Vec<_>>() {
        let result = call.await.unwrap();
        assert_eq!(result.outcome, Outcome::Success);
        most = most.max(response_json(&result.response)["concurrent"].as_u64().unwrap());
    }
    assert_eq!(most, 2, "at most 2 at once, and the cap was reached");
    // Defect 13 of issue 10: those that waited for a slot are counted as throttled
    // (four, unless a call started only after an earlier one ended).
    let throttled = invoker.throttled_invocations(&function.name);
    assert!((1..=4).contains(&throttled), "{throttled} throttled");
    let uncapped = process_echo("uncapped");
    assert_eq!(invoker.invoke(&uncapped, invocation(json!({}))).await.outcome, Outcome::Success);
    assert_eq!(invoker.throttled_invocations(&uncapped.name), 0, "no cap, no throttle");
}
