//! Container isolation: instances of a function with
//! [`Isolation::Container`](crate::Isolation::Container) run in Docker
//! containers started through `mayfly-fleet`'s Docker provisioner (which
//! owns the engine API, the hardening and the labels), under the same limits
//! as local instances:
//!
//! - the timeout kills and removes the container;
//! - the memory limit is the container's (no swap beyond it); the engine's
//!   `OOMKilled` makes the outcome out-of-memory;
//! - concurrency and payload limits are the invoker's, as for processes.
//!
//! A process-runtime instance has no network (`none`) unless it has AWS
//! credentials; its event is written to the container's attached stdin, its
//! result read from stdout, its logs from stderr. A lambda instance joins the
//! function's internal Mayfly network and reaches its own Runtime API server
//! on the network's gateway (see `lambda::instance`). An instance with AWS
//! credentials (either runtime) is on that network and reaches their
//! endpoint through a relay on the gateway (see `gateway.rs`).
//!
//! Every container is labelled with the function's tags, the role
//! `function`, the function and its owner (this process), and removed when
//! its instance ends; containers of owners that died are reaped when an
//! invoker first connects to the engine, and by `mayfly ps --reap` and
//! `mayfly up`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mayfly_fleet::{
    ContainerExit, ContainerOutput, DockerProvisioner, FleetError, FunctionContainer, FunctionContainerSpec,
    NetworkRequest, TAG_FUNCTION, TAG_OWNER, TAG_ROLE, TagFilter, owner_of_this_process,
};
use tokio::io::AsyncWriteExt;

use crate::child::{ChildExit, ExitStatus};
use crate::definition::{ContainerIsolation, FunctionDefinition, Invocation, Outcome};
use crate::environment::instance_environment;
use crate::gateway::ContainerCredentials;
use crate::logs::LogBuffer;
use crate::peers::AllowedPeer;
use crate::process::{ProcessRun, classify};

/// How long creating and starting a container may take before the instance counts as crashed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The value of the role tag of function containers.
pub(crate) const FUNCTION_ROLE: &str = "function";

/// The Docker engine, as the invoker's container instances use it.
#[derive(Debug)]
pub(crate) struct ContainerEngine {
    pub docker: DockerProvisioner,
    /// This process as the owner of the containers it starts.
    owner: String,
    /// The function networks this invoker ensured, removed at its shutdown when no container uses them.
    networks: std::sync::Mutex<BTreeSet<String>>,
    /// Held while a network is ensured: the engine lets two concurrent
    /// creations make two networks of one name, which no container can join then.
    ensuring: tokio::sync::Mutex<()>,
}

impl ContainerEngine {
    /// Connects to the engine and removes function containers whose owner
    /// died (a Mayfly killed before it could remove them).
    pub(crate) async fn connect() -> Result<ContainerEngine, String> {
        let docker = DockerProvisioner::connect()
            .await
            .map_err(|error| format!("the function runs in a container (isolation = \"container\"), but {error}"))?;
        let filter = TagFilter::new().with(TAG_ROLE, FUNCTION_ROLE);
        match mayfly_fleet::reap_orphans(&docker, &filter, &BTreeSet::new(), Duration::from_secs(1)).await {
            Ok(reaped) if !reaped.is_empty() => {
                tracing::warn!(reaped = reaped.len(), "removed function containers left by a Mayfly that died")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "cannot reap function containers of dead owners"),
        }
        Ok(ContainerEngine {
            docker,
            owner: owner_of_this_process(),
            networks: Default::default(),
            ensuring: tokio::sync::Mutex::new(()),
        })
    }

    /// The container spec of one instance of `function`.
    pub(crate) fn spec(
        &self,
        function: &FunctionDefinition,
        isolation: &ContainerIsolation,
        environment: std::collections::BTreeMap<String, String>,
        network: Option<NetworkRequest>,
        with_stdin: bool,
    ) -> FunctionContainerSpec {
        let tags = isolation
            .tags
            .clone()
            .with(TAG_ROLE, FUNCTION_ROLE)
            .with(TAG_FUNCTION, function.name.as_str())
            .with(TAG_OWNER, self.owner.as_str());
        FunctionContainerSpec {
            image: isolation.image.clone(),
            command: function.command.clone(),
            env: environment,
            working_dir: function.working_dir.clone(),
            memory: function.memory,
            network,
            tags,
            with_stdin,
        }
    }

    /// Starts a container from `spec`, at most [`START_TIMEOUT`]; the error says why not.
    pub(crate) async fn start(&self, spec: FunctionContainerSpec) -> Result<FunctionContainer, String> {
        let image = spec.image.clone();
        match tokio::time::timeout(START_TIMEOUT, self.docker.start_function_container(spec)).await {
            Ok(Ok(container)) => Ok(container),
            Ok(Err(error @ FleetError::Image { .. })) => Err(error.to_string()),
            Ok(Err(error)) => Err(format!("cannot start a container from image `{image}`: {error}")),
            Err(_) => Err(format!(
                "the Docker engine did not start a container from image `{image}` within {} s",
                START_TIMEOUT.as_secs()
            )),
        }
    }

    /// The network lambda instances of a function with `isolation` join (created when missing).
    pub(crate) async fn ensure_network(
        &self,
        isolation: &ContainerIsolation,
    ) -> Result<(NetworkRequest, IpAddr), String> {
        let request = NetworkRequest {
            name: isolation.network.clone(),
            subnet: None,
            gateway: None,
            tags: isolation.tags.clone(),
        };
        let ensuring = self.ensuring.lock().await;
        let network = self.docker.ensure_function_network(&request).await.map_err(|error| error.to_string())?;
        drop(ensuring);
        self.networks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(request.name.clone());
        let gateway = network.gateway.ok_or_else(|| {
            format!("Docker network `{}` has no gateway address to serve the Runtime API on", request.name)
        })?;
        Ok((request, gateway))
    }

    /// Removes the function networks this engine ensured that no container uses any more.
    pub(crate) async fn remove_unused_networks(&self) {
        let networks: Vec<String> =
            self.networks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
        for network in networks {
            if let Err(error) = self.docker.remove_network_if_unused(&network).await {
                tracing::warn!(network, error = %error, "cannot remove a function network; the reaper will");
            }
        }
    }

    /// Removes container `id`, logging (not failing) when it cannot.
    pub(crate) async fn remove(&self, id: &str) {
        if let Err(error) = self.docker.remove_container(id).await {
            tracing::warn!(container = id, error = %error, "cannot remove a function container; the reaper will");
        }
    }
}

/// `ExitStatus` of a container's exit code: `128 + n` is signal `n`, as the engine reports it.
pub(crate) fn exit_status_of(exit: &ContainerExit) -> ExitStatus {
    match exit.code {
        Some(code) if (129..=192).contains(&code) => ExitStatus::Signal((code - 128) as i32),
        Some(code) => ExitStatus::Code(i32::try_from(code).unwrap_or(i32::MAX)),
        None => ExitStatus::Signal(libc::SIGKILL),
    }
}

/// One process-runtime invocation in a container of its own: with no
/// network, or, with `credentials`, on the function network with a relay to
/// their AWS endpoint on its gateway (see `gateway.rs`).
pub(crate) async fn run_container_process_invocation(
    engine: &ContainerEngine,
    function: &FunctionDefinition,
    isolation: &ContainerIsolation,
    invocation: &Invocation,
    credentials: Option<ContainerCredentials>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> ProcessRun {
    let spawn_started = Instant::now();
    let not_started = |reason: String| ProcessRun {
        outcome: Outcome::Crashed { reason },
        response: None,
        spawn_duration: spawn_started.elapsed(),
        duration: Duration::ZERO,
        peak_memory: None,
        logs: Vec::new(),
    };
    let (container_address, allowed) = tokio::sync::watch::channel(None);
    let (network, relay, variables) = match &credentials {
        None => (None, None, std::collections::BTreeMap::new()),
        Some(credentials) => {
            let (network, gateway) = match engine.ensure_network(isolation).await {
                Ok(ensured) => ensured,
                Err(reason) => return not_started(reason),
            };
            let relay = match credentials.listen(gateway, AllowedPeer::Only(allowed)).await {
                Ok(relay) => relay,
                Err(reason) => return not_started(reason),
            };
            let variables = relay.container_variables(&credentials.variables);
            (Some(network), Some(relay), variables)
        }
    };
    let environment = instance_environment(
        function,
        None,
        Some(&invocation.request_id),
        invocation.traceparent.as_deref(),
        &variables,
    );
    let spec = engine.spec(function, isolation, environment, network, true);
    let container = match engine.start(spec).await {
        Ok(container) => container,
        Err(reason) => return not_started(reason),
    };
    if relay.is_some() && container.address.is_none() {
        engine.remove(&container.id).await;
        return not_started(format!("the container has no address on Docker network `{}`", isolation.network));
    }
    let _ = container_address.send(container.address);
    let spawn_duration = spawn_started.elapsed();
    let started = Instant::now();
    let FunctionContainer { id, stdin, mut output, .. } = container;

    let limit = usize::try_from(function.max_payload.bytes()).unwrap_or(usize::MAX);
    let mut result = Vec::new();
    let mut logs = LogBuffer::default();
    let ending = {
        let payload = &invocation.payload;
        let write_event = async move {
            if let Some(mut stdin) = stdin {
                // A handler that does not read its event closes stdin early; that is its business.
                let _ = stdin.write_all(payload).await;
                let _ = stdin.shutdown().await;
            }
        };
        let result_buffer = &mut result;
        let log_buffer = &mut logs;
        let read_output = async move {
            while let Some(chunk) = output.next().await {
                match chunk {
                    ContainerOutput::Stdout(bytes) => {
                        result_buffer.extend_from_slice(&bytes);
                        if result_buffer.len() > limit {
                            // Too large already: stop here; the container is removed below.
                            return false;
                        }
                    }
                    ContainerOutput::Stderr(bytes) => log_buffer.push(&bytes),
                }
            }
            true
        };
        let io = async {
            let ((), complete) = tokio::join!(write_event, read_output);
            if complete { engine.docker.wait_for_container_exit(&id).await.ok() } else { None }
        };
        tokio::pin!(io);
        let deadline = tokio::time::sleep(function.timeout);
        tokio::pin!(deadline);
        tokio::select! {
            exit = &mut io => Ending::Exited(exit),
            () = &mut deadline => Ending::TimedOut,
            () = crate::invoker::shutdown_requested(shutdown) => Ending::ShutDown,
        }
    };
    let duration = started.elapsed();
    engine.remove(&id).await;
    drop(relay);
    let outcome = match ending {
        Ending::TimedOut => Outcome::TimedOut { after: function.timeout },
        Ending::ShutDown => Outcome::Crashed { reason: "the invoker shut down during the invocation".into() },
        Ending::Exited(None) if result.len() > limit => {
            Outcome::PayloadTooLarge { size: result.len() as u64, limit: function.max_payload }
        }
        Ending::Exited(None) => Outcome::Crashed { reason: "cannot learn how the container ended".into() },
        Ending::Exited(Some(exit)) => {
            let child_exit = ChildExit { status: exit_status_of(&exit), max_resident_bytes: 0 };
            classify(&child_exit, exit.oom_killed, function.memory, &result, function, &logs)
        }
    };
    let response = outcome.is_success().then_some(result);
    ProcessRun { outcome, response, spawn_duration, duration, peak_memory: None, logs: logs.take() }
}

enum Ending {
    Exited(Option<ContainerExit>),
    TimedOut,
    ShutDown,
}

/// The engine of an invoker, connected on first use (a failure is retried at the next use).
pub(crate) type SharedEngine = tokio::sync::OnceCell<Arc<ContainerEngine>>;

pub(crate) async fn shared_engine(cell: &SharedEngine) -> Result<Arc<ContainerEngine>, String> {
    cell.get_or_try_init(|| async { ContainerEngine::connect().await.map(Arc::new) }).await.cloned()
}
