//! One warm lambda instance: its process (and cgroup) or its container, its
//! Runtime API server, its logs, and the two things the invoker does with it — wait
//! for a cold start's init, and run one invocation.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::HeaderValue;
use mayfly_core::Timestamp;
use tokio::sync::watch;

use super::api::{ApiEvent, PendingEvent, RuntimeApiServer};
use crate::child::{ChildProcess, SpawnRequest};
use crate::container::{ContainerEngine, exit_status_of};
use crate::definition::{ContainerIsolation, FunctionDefinition, Invocation, Outcome};
use crate::environment::{function_arn, instance_environment};
use crate::error::SpawnError;
use crate::gateway::{ContainerCredentials, GatewayRelay};
use crate::logs::LogCapture;
use crate::memory::{InstanceCgroup, MemoryEnforcement};
use crate::peers::AllowedPeer;

/// How long a container's output must be quiet after its answer before the
/// request's logs are taken, and the longest wait for that.
const CONTAINER_LOG_QUIET: Duration = Duration::from_millis(20);
const CONTAINER_LOG_SETTLE_LIMIT: Duration = Duration::from_millis(200);

/// A started instance of a lambda function.
pub(crate) struct LambdaInstance {
    /// The definition it was started from; a changed definition needs a new instance.
    pub definition: FunctionDefinition,
    /// When it last finished an invocation, by the invoker's clock.
    pub last_used: Timestamp,
    /// When the AWS credentials in its environment expire, if it has any.
    pub credentials_expire_at: Option<Timestamp>,
    body: InstanceBody,
    server: RuntimeApiServer,
    /// A container instance's way to its AWS endpoint, if it has credentials.
    _relay: Option<GatewayRelay>,
    logs: Arc<LogCapture>,
    log_readers: Vec<tokio::task::JoinHandle<()>>,
}

/// What an instance runs in.
enum InstanceBody {
    /// A local process group, in its memory cgroup if there is one.
    Process { child: ChildProcess, cgroup: Option<InstanceCgroup> },
    /// A Docker container.
    Container(ContainerBody),
}

struct ContainerBody {
    engine: Arc<ContainerEngine>,
    id: String,
    /// `Some` once the container exited, with how.
    exit: watch::Receiver<Option<mayfly_fleet::ContainerExit>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl InstanceBody {
    /// Resolves when the instance's process (container) has exited.
    async fn exited(&self) {
        match self {
            InstanceBody::Process { child, .. } => child.exited().await,
            InstanceBody::Container(container) => {
                let mut exit = container.exit.clone();
                if exit.wait_for(Option::is_some).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
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
        credentials: &std::collections::BTreeMap<String, String>,
        credentials_expire_at: Option<Timestamp>,
    ) -> Result<LambdaInstance, SpawnError> {
        let max_body = usize::try_from(function.max_payload.bytes()).unwrap_or(usize::MAX);
        let loopback = std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST);
        let server = RuntimeApiServer::start(&function_arn(function), max_body, loopback, AllowedPeer::Anyone)
            .await
            .map_err(|source| SpawnError::RuntimeApi { address: loopback, source })?;
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
            environment: instance_environment(function, Some(&runtime_api), None, None, credentials),
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
        let body = InstanceBody::Process { child, cgroup };
        Ok(LambdaInstance {
            definition: function.clone(),
            last_used: now,
            credentials_expire_at,
            body,
            server,
            _relay: None,
            logs,
            log_readers,
        })
    }

    /// Starts an instance in a container on the function's Mayfly network,
    /// its Runtime API served on the network's gateway to that container
    /// only, and with `credentials`, a relay to their AWS endpoint beside it
    /// (see `gateway.rs`).
    pub(crate) async fn start_in_container(
        function: &FunctionDefinition,
        isolation: &ContainerIsolation,
        engine: Arc<ContainerEngine>,
        now: Timestamp,
        credentials: Option<ContainerCredentials>,
        credentials_expire_at: Option<Timestamp>,
    ) -> Result<LambdaInstance, SpawnError> {
        let container_error = |reason: String| SpawnError::Container { reason };
        let (network, gateway) = engine.ensure_network(isolation).await.map_err(container_error)?;
        let max_body = usize::try_from(function.max_payload.bytes()).unwrap_or(usize::MAX);
        let (container_address, allowed) = watch::channel(None);
        let server =
            RuntimeApiServer::start(&function_arn(function), max_body, gateway, AllowedPeer::Only(allowed.clone()))
                .await
                .map_err(|source| SpawnError::RuntimeApi { address: gateway, source })?;
        let runtime_api = server.address.to_string();
        let (relay, variables) = match &credentials {
            Some(credentials) => {
                let relay = credentials.listen(gateway, AllowedPeer::Only(allowed)).await.map_err(container_error)?;
                let variables = relay.container_variables(&credentials.variables);
                (Some(relay), variables)
            }
            None => (None, Default::default()),
        };
        let environment = instance_environment(function, Some(&runtime_api), None, None, &variables);
        let spec = engine.spec(function, isolation, environment, Some(network), false);
        let container = engine.start(spec).await.map_err(container_error)?;
        if container.address.is_none() {
            // Its Runtime API would wait for an address that never comes.
            engine.remove(&container.id).await;
            let reason = format!("the container has no address on Docker network `{}`", isolation.network);
            return Err(container_error(reason));
        }
        let _ = container_address.send(container.address);
        let mayfly_fleet::FunctionContainer { id, mut output, .. } = container;
        let logs = LogCapture::new(Vec::new());
        let capture = Arc::clone(&logs);
        let log_readers = vec![tokio::spawn(async move {
            while let Some(chunk) = futures::StreamExt::next(&mut output).await {
                match chunk {
                    mayfly_fleet::ContainerOutput::Stdout(bytes) | mayfly_fleet::ContainerOutput::Stderr(bytes) => {
                        capture.push(&bytes)
                    }
                }
            }
        })];
        let (exit_sender, exit) = watch::channel(None);
        let watcher = {
            let engine = Arc::clone(&engine);
            let id = id.clone();
            tokio::spawn(async move {
                let exit = engine
                    .docker
                    .wait_for_container_exit(&id)
                    .await
                    .unwrap_or(mayfly_fleet::ContainerExit { code: None, oom_killed: false });
                let _ = exit_sender.send(Some(exit));
            })
        };
        tracing::debug!(function = %function.name, container = %id, runtime_api, "lambda instance started in a container");
        let body = InstanceBody::Container(ContainerBody { engine, id, exit, watcher });
        Ok(LambdaInstance {
            definition: function.clone(),
            last_used: now,
            credentials_expire_at: credentials_expire_at.filter(|_| relay.is_some()),
            body,
            server,
            _relay: relay,
            logs,
            log_readers,
        })
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
        let body = &self.body;
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
                () = body.exited() => {
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
        if let InstanceBody::Process { cgroup: Some(cgroup), .. } = &mut self.body {
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
        if matches!(self.body, InstanceBody::Container(_)) {
            self.logs.settle(CONTAINER_LOG_QUIET, CONTAINER_LOG_SETTLE_LIMIT).await;
        }
        let logs = self.logs.take_request_logs();
        let peak_memory = match &mut self.body {
            InstanceBody::Process { cgroup, .. } => cgroup.as_mut().and_then(InstanceCgroup::peak_memory),
            InstanceBody::Container(_) => None,
        };
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
            let body = &self.body;
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else {
                        return (Outcome::Crashed { reason: "the runtime API stopped".into() }, None, false);
                    };
                    if let Some(completion) = completion_of(event, request_id, function) {
                        return completion;
                    }
                }
                () = body.exited() => {
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

    /// Why the process died: the cgroup's (container's) OOM killer, or its exit status.
    async fn outcome_of_unexpected_exit(&mut self, when: &str) -> Outcome {
        match &mut self.body {
            InstanceBody::Process { child, cgroup } => {
                let exit = child.wait().await;
                match cgroup {
                    Some(cgroup) if cgroup.oom_killed_since_begin() => Outcome::OutOfMemory { limit: cgroup.limit() },
                    _ => Outcome::Crashed { reason: format!("the instance exited {when} ({})", exit.status) },
                }
            }
            InstanceBody::Container(container) => {
                let exit =
                    (*container.exit.borrow()).unwrap_or(mayfly_fleet::ContainerExit { code: None, oom_killed: false });
                match self.definition.memory {
                    Some(limit) if exit.oom_killed => Outcome::OutOfMemory { limit },
                    _ => Outcome::Crashed {
                        reason: format!("the instance's container exited {when} ({})", exit_status_of(&exit)),
                    },
                }
            }
        }
    }

    /// Stops the instance: kills its process group (and cgroup), reaps it,
    /// stops its server and removes its cgroup; or kills and removes its container.
    pub(crate) async fn discard(self) {
        match self.body {
            InstanceBody::Process { mut child, cgroup } => {
                if let Some(cgroup) = &cgroup {
                    cgroup.kill_all();
                }
                child.kill_group_and_reap().await;
                if let Some(cgroup) = cgroup {
                    cgroup.remove().await;
                }
            }
            InstanceBody::Container(container) => {
                container.engine.remove(&container.id).await;
                container.watcher.abort();
            }
        }
        for reader in &self.log_readers {
            reader.abort();
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
