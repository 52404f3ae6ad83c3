//! One warm lambda instance: its process, its Runtime API server, its log
//! pipes and its cgroup, and the two things the invoker does with it — wait
//! for a cold start's init, and run one invocation.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::HeaderValue;
use mayfly_core::Timestamp;
use tokio::sync::watch;

use super::api::{ApiEvent, PendingEvent, RuntimeApiServer};
use crate::child::{ChildProcess, SpawnRequest};
use crate::definition::{FunctionDefinition, Invocation, Outcome};
use crate::environment::{function_arn, instance_environment};
use crate::error::SpawnError;
use crate::logs::LogCapture;
use crate::memory::{InstanceCgroup, MemoryEnforcement};

/// A started instance of a lambda function.
pub(crate) struct LambdaInstance {
    /// The definition it was started from; a changed definition needs a new instance.
    pub definition: FunctionDefinition,
    /// When it last finished an invocation, by the invoker's clock.
    pub last_used: Timestamp,
    child: ChildProcess,
    cgroup: Option<InstanceCgroup>,
    server: RuntimeApiServer,
    logs: Arc<LogCapture>,
    log_readers: Vec<tokio::task::JoinHandle<()>>,
}

/// What one invocation on an instance produced, and whether the instance may be reused.
pub(crate) struct LambdaRun {
    pub outcome: Outcome,
    pub response: Option<Vec<u8>>,
    pub duration: Duration,
    pub peak_memory: Option<u64>,
    pub logs: Vec<u8>,
    pub reusable: bool,
}

impl LambdaInstance {
    pub(crate) async fn start(
        function: &FunctionDefinition,
        enforcement: &MemoryEnforcement,
        instance_name: &str,
        now: Timestamp,
    ) -> Result<LambdaInstance, SpawnError> {
        let max_body = usize::try_from(function.max_payload.bytes()).unwrap_or(usize::MAX);
        let server = RuntimeApiServer::start(&function_arn(function), max_body)
            .await
            .map_err(|source| SpawnError::RuntimeApi { source })?;
        let cgroup = match function.memory {
            Some(limit) => InstanceCgroup::create(enforcement, instance_name, limit)?,
            None => None,
        };
        let address_space_limit = match (function.memory, &cgroup) {
            (Some(limit), None) => Some(limit.bytes()),
            _ => None,
        };
        let runtime_api = server.address.to_string();
        let spawned = ChildProcess::spawn(SpawnRequest {
            command: &function.command,
            working_dir: &function.working_dir,
            environment: instance_environment(function, Some(&runtime_api), None),
            cgroup_procs: cgroup.as_ref().map(InstanceCgroup::procs_file),
            address_space_limit,
            with_stdin: false,
            die_with_parent: true,
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove().await;
                }
                return Err(error);
            }
        };
        let pipes = [child.stdout.take(), child.stderr.take()].into_iter().flatten().collect();
        let logs = LogCapture::new(pipes);
        let log_readers = logs.spawn_readers();
        tracing::debug!(function = %function.name, pid = child.pid(), runtime_api, "lambda instance started");
        Ok(LambdaInstance { definition: function.clone(), last_used: now, child, cgroup, server, logs, log_readers })
    }

    /// Waits for the instance's first `/next` (the end of init), at most `timeout`.
    /// On failure the outcome says why and the instance must be discarded.
    pub(crate) async fn wait_until_ready(
        &mut self,
        timeout: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Outcome> {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let events = &mut self.server.events;
        let child = &self.child;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(ApiEvent::Ready) => return Ok(()),
                    Some(ApiEvent::InitError { error_type, message }) => {
                        return Err(Outcome::Crashed { reason: format!("init failed: {error_type}: {message}") });
                    }
                    Some(_) => continue,
                    None => return Err(Outcome::Crashed { reason: "the runtime API stopped".into() }),
                },
                () = child.exited() => {
                    return Err(self.outcome_of_unexpected_exit("during init").await);
                }
                () = &mut deadline => return Err(Outcome::TimedOut { after: timeout }),
                () = crate::invoker::shutdown_requested(shutdown) => {
                    return Err(Outcome::Crashed { reason: "the invoker shut down during init".into() });
                }
            }
        }
    }

    /// Runs one invocation: hands the event to the instance's `/next` and
    /// waits for its `/response` or `/error`, its death, or the timeout.
    pub(crate) async fn invoke(
        &mut self,
        function: &FunctionDefinition,
        invocation: Invocation,
        request_id: HeaderValue,
        shutdown: &mut watch::Receiver<bool>,
    ) -> LambdaRun {
        if let Some(cgroup) = &mut self.cgroup {
            cgroup.begin_invocation();
        }
        let started = Instant::now();
        let deadline_ms = SystemTime::now()
            .checked_add(function.timeout)
            .and_then(|deadline| deadline.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |since_epoch| u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX));
        let trace_id = invocation.trace_id.as_deref().and_then(|trace_id| HeaderValue::from_str(trace_id).ok());
        let event = PendingEvent { request_id, payload: Bytes::from(invocation.payload), deadline_ms, trace_id };
        let (outcome, response, reusable) = match self.server.pending.try_send(event) {
            Ok(()) => self.await_completion(function, &invocation.request_id, shutdown).await,
            Err(_) => (Outcome::Crashed { reason: "the instance is not polling for events".into() }, None, false),
        };
        let duration = started.elapsed();
        let logs = self.logs.take_request_logs();
        let peak_memory = self.cgroup.as_mut().and_then(InstanceCgroup::peak_memory);
        LambdaRun { outcome, response, duration, peak_memory, logs, reusable }
    }

    async fn await_completion(
        &mut self,
        function: &FunctionDefinition,
        request_id: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (Outcome, Option<Vec<u8>>, bool) {
        let deadline = tokio::time::sleep(function.timeout);
        tokio::pin!(deadline);
        loop {
            let events = &mut self.server.events;
            let child = &self.child;
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        return (Outcome::Crashed { reason: "the runtime API stopped".into() }, None, false);
                    };
                    if let Some(completion) = completion_of(event, request_id, function) {
                        return completion;
                    }
                }
                () = child.exited() => {
                    // It may have answered just before dying.
                    while let Ok(event) = self.server.events.try_recv() {
                        if let Some((outcome, response, _)) = completion_of(event, request_id, function) {
                            return (outcome, response, false);
                        }
                    }
                    return (self.outcome_of_unexpected_exit("before responding").await, None, false);
                }
                () = &mut deadline => return (Outcome::TimedOut { after: function.timeout }, None, false),
                () = crate::invoker::shutdown_requested(shutdown) => {
                    let reason = "the invoker shut down during the invocation".into();
                    return (Outcome::Crashed { reason }, None, false);
                }
            }
        }
    }

    /// Why the process died: the cgroup's OOM killer, or its exit status.
    async fn outcome_of_unexpected_exit(&mut self, when: &str) -> Outcome {
        let exit = self.child.wait().await;
        match &self.cgroup {
            Some(cgroup) if cgroup.oom_killed_since_begin() => Outcome::OutOfMemory { limit: cgroup.limit() },
            _ => Outcome::Crashed { reason: format!("the instance exited {when} ({})", exit.status) },
        }
    }

    /// Stops the instance: kills its process group (and cgroup), reaps it,
    /// stops its server and removes its cgroup.
    pub(crate) async fn discard(mut self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
        self.child.kill_group_and_reap().await;
        for reader in &self.log_readers {
            reader.abort();
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove().await;
        }
    }
}

/// The completion `event` carries for `request_id`, if it is one.
fn completion_of(
    event: ApiEvent,
    request_id: &str,
    function: &FunctionDefinition,
) -> Option<(Outcome, Option<Vec<u8>>, bool)> {
    match event {
        ApiEvent::Response { request_id: id, body } if id == request_id => {
            Some((Outcome::Success, Some(Vec::from(body)), true))
        }
        ApiEvent::ResponseTooLarge { request_id: id, size } if id == request_id => {
            Some((Outcome::PayloadTooLarge { size, limit: function.max_payload }, None, true))
        }
        ApiEvent::Error { request_id: id, error_type, message } if id == request_id => {
            Some((Outcome::FunctionError { error_type, message }, None, true))
        }
        ApiEvent::InitError { error_type, message } => {
            Some((Outcome::Crashed { reason: format!("init failed: {error_type}: {message}") }, None, false))
        }
        _ => None,
    }
}

impl LambdaRun {
    /// A run that never reached the handler.
    pub(crate) fn failed(outcome: Outcome, logs: Vec<u8>) -> LambdaRun {
        LambdaRun { outcome, response: None, duration: Duration::ZERO, peak_memory: None, logs, reusable: false }
    }
}

impl LambdaInstance {
    /// What the instance printed since the last request took its logs.
    pub(crate) fn take_logs(&self) -> Vec<u8> {
        self.logs.take_request_logs()
    }
}
