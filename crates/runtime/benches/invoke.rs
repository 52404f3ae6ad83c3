//! Invocation benchmark (not a test): `cargo bench -p mayfly-runtime --bench invoke`.
//!
//! Prints, for a no-op handler:
//! - warm lambda-runtime invocations per second (several concurrent callers,
//!   concurrency cap 2) and the p50/p99 wall time of `invoke()` with one
//!   caller — the round trip through Mayfly's Runtime API, the `lambda-echo`
//!   handler (the real `lambda_runtime` crate) included;
//! - cold process-runtime invocations per second beside a baseline measured
//!   in the same run: the same `process-echo` binary spawned directly in a
//!   loop (std::process::Command, write stdin, read stdout, wait), and the ratio.
//!
//! The handler binaries are built in release mode into this bench's target
//! directory first (see `tests/common/mod.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mayfly_runtime::{Invoker, InvokerConfig, Outcome};
use serde_json::json;

const WARM_SECONDS: u64 = 3;
const WARM_CALLERS: usize = 4;
const LATENCY_SAMPLES: usize = 20_000;
const COLD_ROUNDS: usize = 5;
const COLD_PER_ROUND: usize = 60;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!(
            "mayfly-runtime invoke benchmark ({} CPUs)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        warm_lambda().await;
        cold_process().await;
    });
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

async fn warm_lambda() {
    let invoker = Invoker::new(InvokerConfig::default());
    let mut function = common::lambda_echo("bench-lambda");
    function.concurrency = Some(2);
    let payload = serde_json::to_vec(&json!({})).unwrap();
    let invocation = |n: usize| mayfly_runtime::Invocation {
        request_id: format!("bench-{n}"),
        payload: payload.clone(),
        trace_id: None,
        traceparent: None,
    };
    // Warm two instances and the code paths.
    let warmups: Vec<_> = (0..2)
        .map(|caller| {
            let (invoker, function, invocation) = (invoker.clone(), function.clone(), invocation(caller));
            tokio::spawn(async move { invoker.invoke(&function, invocation).await })
        })
        .collect();
    for warmup in warmups {
        assert_eq!(warmup.await.unwrap().outcome, Outcome::Success);
    }
    for n in 0..2000 {
        assert_eq!(invoker.invoke(&function, invocation(n)).await.outcome, Outcome::Success);
    }

    // Latency: one caller, sequential.
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        let result = invoker.invoke(&function, invocation(n)).await;
        latencies.push(started.elapsed());
        assert_eq!(result.outcome, Outcome::Success);
    }
    latencies.sort();

    // Throughput: several callers for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(WARM_SECONDS);
    let started = Instant::now();
    let callers: Vec<_> = (0..WARM_CALLERS)
        .map(|caller| {
            let (invoker, function, payload) = (invoker.clone(), function.clone(), payload.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let invocation = mayfly_runtime::Invocation {
                        request_id: format!("tp-{caller}-{done}"),
                        payload: payload.clone(),
                        trace_id: None,
                        traceparent: None,
                    };
                    let result = invoker.invoke(&function, invocation).await;
                    assert_eq!(result.outcome, Outcome::Success);
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "warm lambda (lambda-echo, concurrency 2, {WARM_CALLERS} callers): {:.0} invocations/s ({total} in {:.2} s)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "warm lambda invoke() wall time, 1 caller, {LATENCY_SAMPLES} samples: p50 {:.0} µs, p99 {:.0} µs",
        percentile(&latencies, 0.50).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6
    );
    invoker.shutdown().await;
}

async fn cold_process() {
    let invoker = Invoker::new(InvokerConfig::default());
    let function = common::process_echo("bench-process");
    let binary = common::handler("process-echo");
    let payload = serde_json::to_vec(&json!({})).unwrap();
    let (mut mayfly_time, mut direct_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..COLD_ROUNDS {
        // Alternate which goes first so neither always runs on a warmer machine.
        for first in [round % 2 == 0, round % 2 == 1] {
            if first {
                let started = Instant::now();
                for n in 0..COLD_PER_ROUND {
                    let invocation = mayfly_runtime::Invocation {
                        request_id: format!("cold-{round}-{n}"),
                        payload: payload.clone(),
                        trace_id: None,
                        traceparent: None,
                    };
                    let result = invoker.invoke(&function, invocation).await;
                    assert_eq!(result.outcome, Outcome::Success);
                }
                mayfly_time += started.elapsed();
            } else {
                let started = Instant::now();
                for _ in 0..COLD_PER_ROUND {
                    spawn_directly(&binary, &payload);
                }
                direct_time += started.elapsed();
            }
        }
    }
    let count = (COLD_ROUNDS * COLD_PER_ROUND) as f64;
    let mayfly_rate = count / mayfly_time.as_secs_f64();
    let direct_rate = count / direct_time.as_secs_f64();
    println!("cold process (process-echo) via Mayfly: {mayfly_rate:.0} invocations/s");
    println!("cold process baseline, direct spawn in a loop: {direct_rate:.0} spawns/s");
    println!("cold process time ratio Mayfly / direct: {:.2}x (target ≤ 1.5x)", direct_rate / mayfly_rate);
    invoker.shutdown().await;
}

fn spawn_directly(binary: &str, payload: &[u8]) {
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("process-echo starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(payload).unwrap();
    drop(stdin);
    let mut output = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut output).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!output.is_empty());
}
