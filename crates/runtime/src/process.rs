//! The process runtime: one process per invocation. The event goes to
//! stdin, the result comes from stdout (it must be JSON), logs from stderr,
//! and the exit status decides success.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::{ChildExit, ChildProcess, ExitStatus, SpawnRequest};
use crate::definition::{FunctionDefinition, Invocation, Outcome};
use crate::environment::instance_environment;
use crate::logs::{LogBuffer, PipeState, drain_pipe};
use crate::memory::{InstanceCgroup, MemoryEnforcement};

/// Lines of stderr quoted in a non-zero exit's message.
const ERROR_TAIL_LINES: usize = 10;

/// What the invoker gets back from one process invocation.
pub(crate) struct ProcessRun {
    pub outcome: Outcome,
    pub response: Option<Vec<u8>>,
    pub spawn_duration: Duration,
    pub duration: Duration,
    pub peak_memory: Option<u64>,
    pub logs: Vec<u8>,
}

impl ProcessRun {
    /// An invocation whose instance never started.
    pub(crate) fn failed_to_start(reason: String) -> ProcessRun {
        ProcessRun {
            outcome: Outcome::Crashed { reason },
            response: None,
            spawn_duration: Duration::ZERO,
            duration: Duration::ZERO,
            peak_memory: None,
            logs: Vec::new(),
        }
    }
}

pub(crate) async fn run_process_invocation(
    function: &FunctionDefinition,
    invocation: &Invocation,
    enforcement: &MemoryEnforcement,
    instance_name: &str,
    credentials: &std::collections::BTreeMap<String, String>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> ProcessRun {
    let spawn_started = Instant::now();
    let failed_to_start = |reason: String, spawn_duration| ProcessRun {
        outcome: Outcome::Crashed { reason },
        response: None,
        spawn_duration,
        duration: Duration::ZERO,
        peak_memory: None,
        logs: Vec::new(),
    };
    let mut cgroup = match function.memory {
        Some(limit) => match InstanceCgroup::create(enforcement, instance_name, limit) {
            Ok(cgroup) => cgroup,
            Err(error) => return failed_to_start(error.to_string(), spawn_started.elapsed()),
        },
        None => None,
    };
    let address_space_limit = match (function.memory, &cgroup) {
        (Some(limit), None) => Some(limit.bytes()),
        _ => None,
    };
    let spawned = ChildProcess::spawn(SpawnRequest {
        command: &function.command,
        working_dir: &function.working_dir,
        environment: instance_environment(
            function,
            None,
            Some(&invocation.request_id),
            invocation.traceparent.as_deref(),
            credentials,
        ),
        cgroup_procs: cgroup.as_ref().map(InstanceCgroup::procs_file),
        address_space_limit,
        with_stdin: true,
        die_with_parent: false,
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            if let Some(cgroup) = cgroup {
                cgroup.remove().await;
            }
            return failed_to_start(error.to_string(), spawn_started.elapsed());
        }
    };
    let spawn_duration = spawn_started.elapsed();
    let started = Instant::now();
    if let Some(cgroup) = &mut cgroup {
        cgroup.begin_invocation();
    }

    let mut result = Vec::new();
    let mut logs = LogBuffer::default();
    let ending = {
        let limit = usize::try_from(function.max_payload.bytes()).unwrap_or(usize::MAX);
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let payload = &invocation.payload;
        let write_event = async move {
            if let Some(stdin) = &mut stdin {
                // A handler that does not read its event closes stdin early; that is its business.
                let _ = stdin.write_all(payload).await;
                let _ = stdin.shutdown().await;
            }
            drop(stdin);
        };
        let result_buffer = &mut result;
        let child_ref = &child;
        let read_result = async move {
            if let Some(stdout) = stdout {
                let mut limited = stdout.take(limit as u64 + 1);
                let _ = limited.read_to_end(result_buffer).await;
                if result_buffer.len() > limit {
                    // Too large already: stop the process rather than wait for it to block.
                    child_ref.kill_group();
                }
            }
        };
        let log_buffer = &mut logs;
        let read_logs = async move {
            if let Some(stderr) = stderr {
                loop {
                    if stderr.readable().await.is_err() || drain_pipe(&stderr, log_buffer) == PipeState::Closed {
                        break;
                    }
                }
            }
        };
        let exited = async move {
            child_ref.exited().await;
            // Whatever the leader left running in its group would hold the pipes open.
            child_ref.kill_group();
        };

        let deadline = tokio::time::sleep(function.timeout);
        tokio::pin!(deadline);
        let io = async { tokio::join!(write_event, read_result, read_logs, exited) };
        tokio::pin!(io);
        tokio::select! {
            _ = &mut io => Ending::Exited,
            () = &mut deadline => Ending::TimedOut,
            () = crate::invoker::shutdown_requested(shutdown) => Ending::ShutDown,
        }
    };
    let outcome = match ending {
        Ending::Exited => None,
        Ending::TimedOut => Some(Outcome::TimedOut { after: function.timeout }),
        Ending::ShutDown => Some(Outcome::Crashed { reason: "the invoker shut down during the invocation".into() }),
    };
    if let Some(outcome) = outcome {
        if let Some(cgroup) = &cgroup {
            cgroup.kill_all();
        }
        let exit = child.kill_group_and_reap().await;
        let duration = started.elapsed();
        let peak_memory = peak(&mut cgroup, &exit);
        if let Some(cgroup) = cgroup {
            cgroup.remove().await;
        }
        return ProcessRun { outcome, response: None, spawn_duration, duration, peak_memory, logs: logs.take() };
    }
    let exit = child.wait().await;
    let duration = started.elapsed();
    let peak_memory = peak(&mut cgroup, &exit);
    let oom_killed = cgroup.as_ref().is_some_and(InstanceCgroup::oom_killed_since_begin);
    let memory_limit = cgroup.as_ref().map(InstanceCgroup::limit);
    if let Some(cgroup) = cgroup {
        if oom_killed {
            cgroup.kill_all();
        }
        cgroup.remove().await;
    }
    let outcome = classify(&exit, oom_killed, memory_limit, &result, function, &logs);
    let response = outcome.is_success().then_some(result);
    ProcessRun { outcome, response, spawn_duration, duration, peak_memory, logs: logs.take() }
}

enum Ending {
    Exited,
    TimedOut,
    ShutDown,
}

fn peak(cgroup: &mut Option<InstanceCgroup>, exit: &ChildExit) -> Option<u64> {
    cgroup.as_mut().and_then(InstanceCgroup::peak_memory).or(Some(exit.max_resident_bytes))
}

pub(crate) fn classify(
    exit: &ChildExit,
    oom_killed: bool,
    memory_limit: Option<mayfly_core::ByteSize>,
    result: &[u8],
    function: &FunctionDefinition,
    logs: &LogBuffer,
) -> Outcome {
    if result.len() as u64 > function.max_payload.bytes() {
        return Outcome::PayloadTooLarge { size: result.len() as u64, limit: function.max_payload };
    }
    if let (true, Some(limit)) = (oom_killed, memory_limit) {
        return Outcome::OutOfMemory { limit };
    }
    match exit.status {
        ExitStatus::Signal(_) => Outcome::Crashed { reason: exit.status.to_string() },
        ExitStatus::Code(0) => match serde_json::from_slice::<serde::de::IgnoredAny>(result) {
            Ok(_) => Outcome::Success,
            Err(error) => Outcome::InvalidResponse { reason: format!("stdout is not JSON: {error}") },
        },
        ExitStatus::Code(_) => {
            let tail = logs.last_lines(ERROR_TAIL_LINES);
            let message = if tail.is_empty() {
                exit.status.to_string()
            } else {
                format!("{}; stderr ends with:\n{tail}", exit.status)
            };
            Outcome::FunctionError { error_type: "ProcessExit".into(), message }
        }
    }
}
