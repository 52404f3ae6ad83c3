//! The provisioning broker: a [`Provisioner`] handed to a process that must
//! not hold it itself, over a Unix socket, confined to one set of tags.
//!
//! A Docker job's coordinator runs in a container. Starting its workers
//! needs the Docker engine, and the engine's socket inside a container is
//! root on the host for whatever runs there. So a small host process, the
//! broker, keeps the engine to itself and serves the coordinator exactly
//! what a coordinator does with its provisioner — start, watch, stop and
//! find *its own run's workers* — and nothing else:
//!
//! - every resource it starts must carry the [`Confinement`]'s tags (the
//!   run's id, the role `worker`), may mount only under the confinement's
//!   mount root (the run's TLS folder) and only read-only, and runs as the
//!   image's user, on the broker's placement (image and network);
//! - it signals or observes only resources carrying those tags;
//! - every inventory is narrowed to those tags.
//!
//! The wire protocol is one JSON request line and one JSON answer line per
//! connection ([`BrokerRequest`], [`BrokerAnswer`]). The socket is created
//! owner-only in a folder only the project's owner can enter; whoever can
//! connect to it can do no more than the coordinator of that run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::{ByteSize, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::error::FleetError;
use crate::provisioner::{BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState};
use crate::tags::{TagFilter, Tags};

/// The longest request or answer line the broker reads (a spec with its environment, an inventory).
const MAX_LINE: usize = 4 * 1024 * 1024;

/// What a broker lets its client do.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// Tags every resource the client starts, observes or stops must carry
    /// (for a coordinator: its run and the role `worker`).
    pub required_tags: Tags,
    /// The only folder under which the client may bind paths into what it
    /// starts, read-only (for a coordinator: the run's TLS folder).
    pub mount_root: PathBuf,
}

impl Confinement {
    fn filter(&self) -> TagFilter {
        self.required_tags.iter().collect()
    }

    /// Why `spec` is outside the confinement, if it is.
    fn refusal(&self, spec: &ProcessSpec) -> Option<String> {
        if let Some((key, wanted)) = self.required_tags.iter().find(|(key, wanted)| spec.tags.get(key) != Some(*wanted))
        {
            return Some(format!("a resource it starts must carry the tag {key}={wanted}"));
        }
        if !spec.read_write_mounts.is_empty() {
            return Some("it may not bind anything read-write".to_owned());
        }
        if spec.user.is_some() {
            return Some("it may not choose the user a resource runs as".to_owned());
        }
        spec.read_only_mounts
            .iter()
            .find(|path| !is_strictly_under(path, &self.mount_root))
            .map(|path| format!("it may bind only paths under {}, not {}", self.mount_root.display(), path.display()))
    }
}

/// `path` lies under `root` with no `..` or `.` to climb out of it.
fn is_strictly_under(path: &Path, root: &Path) -> bool {
    path.is_absolute()
        && path.starts_with(root)
        && path != root
        && path
            .components()
            .all(|component| matches!(component, std::path::Component::Normal(_) | std::path::Component::RootDir))
}

/// One request on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BrokerRequest {
    Start { spec: Box<WireSpec> },
    State { id: String },
    Wait { id: String, timeout_ms: u64 },
    Stop { id: String, grace_ms: u64 },
    Kill { id: String },
    Inventory { filter: BTreeMap<String, String> },
}

/// One answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BrokerAnswer {
    Started { id: String },
    State { state: WireState },
    Done,
    Inventory { resources: Vec<WireResource> },
    Failed { error: WireError },
}

/// A [`ProcessSpec`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireSpec {
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    working_dir: PathBuf,
    tags: Tags,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    memory_bytes: Option<u64>,
    cpus: Option<f64>,
    read_only_mounts: Vec<PathBuf>,
    read_write_mounts: Vec<PathBuf>,
    user: Option<String>,
}

impl From<ProcessSpec> for WireSpec {
    fn from(spec: ProcessSpec) -> WireSpec {
        WireSpec {
            program: spec.program,
            args: spec.args,
            env: spec.env,
            working_dir: spec.working_dir,
            tags: spec.tags,
            stdout: spec.stdout,
            stderr: spec.stderr,
            memory_bytes: spec.memory.map(ByteSize::bytes),
            cpus: spec.cpus,
            read_only_mounts: spec.read_only_mounts,
            read_write_mounts: spec.read_write_mounts,
            user: spec.user,
        }
    }
}

impl From<WireSpec> for ProcessSpec {
    fn from(spec: WireSpec) -> ProcessSpec {
        ProcessSpec {
            program: spec.program,
            args: spec.args,
            env: spec.env,
            working_dir: spec.working_dir,
            tags: spec.tags,
            stdout: spec.stdout,
            stderr: spec.stderr,
            memory: spec.memory_bytes.map(ByteSize),
            cpus: spec.cpus,
            read_only_mounts: spec.read_only_mounts,
            read_write_mounts: spec.read_write_mounts,
            user: spec.user,
        }
    }
}

/// A [`ResourceState`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WireState {
    Running,
    Exited { code: Option<i32>, signal: Option<i32> },
    Gone,
}

impl From<ResourceState> for WireState {
    fn from(state: ResourceState) -> WireState {
        match state {
            ResourceState::Running => WireState::Running,
            ResourceState::Exited { code, signal } => WireState::Exited { code, signal },
            ResourceState::Gone => WireState::Gone,
        }
    }
}

impl From<WireState> for ResourceState {
    fn from(state: WireState) -> ResourceState {
        match state {
            WireState::Running => ResourceState::Running,
            WireState::Exited { code, signal } => ResourceState::Exited { code, signal },
            WireState::Gone => ResourceState::Gone,
        }
    }
}

/// A [`LiveResource`] on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireResource {
    id: String,
    kind: String,
    tags: Tags,
    started_at_ms: Option<i64>,
    address: Option<String>,
}

/// A [`FleetError`] on the wire: the variants a caller acts on keep their kind.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    kind: WireErrorKind,
    program: Option<PathBuf>,
    message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireErrorKind {
    CannotStart,
    InvalidSpec,
    Other,
}

impl From<&FleetError> for WireError {
    fn from(error: &FleetError) -> WireError {
        match error {
            FleetError::CannotStart { program, reason } => {
                WireError { kind: WireErrorKind::CannotStart, program: Some(program.clone()), message: reason.clone() }
            }
            FleetError::InvalidSpec { program, reason } => {
                WireError { kind: WireErrorKind::InvalidSpec, program: Some(program.clone()), message: reason.clone() }
            }
            other => WireError { kind: WireErrorKind::Other, program: None, message: other.to_string() },
        }
    }
}

impl From<WireError> for FleetError {
    fn from(error: WireError) -> FleetError {
        let program = error.program.unwrap_or_default();
        match error.kind {
            WireErrorKind::CannotStart => FleetError::CannotStart { program, reason: error.message },
            WireErrorKind::InvalidSpec => FleetError::InvalidSpec { program, reason: error.message },
            WireErrorKind::Other => FleetError::Broker { reason: error.message },
        }
    }
}

/// The server side: serves `provisioner`, within `confinement`, to whoever
/// connects to its socket.
pub struct ProvisionerBroker {
    provisioner: Arc<dyn Provisioner>,
    confinement: Confinement,
    /// Resources known to carry the confinement's tags (started here or
    /// found by an inventory narrowed to them), so that watching a worker
    /// every second costs no inventory.
    confined: Mutex<BTreeSet<ResourceId>>,
}

impl ProvisionerBroker {
    pub fn new(provisioner: Arc<dyn Provisioner>, confinement: Confinement) -> Arc<ProvisionerBroker> {
        Arc::new(ProvisionerBroker { provisioner, confinement, confined: Mutex::new(BTreeSet::new()) })
    }

    /// Creates the socket at `path` (replacing a stale one), readable and
    /// writable by its owner only.
    pub fn bind(path: &Path) -> Result<UnixListener, FleetError> {
        let failed = |error: std::io::Error| FleetError::Broker {
            reason: format!("cannot listen on {}: {error}", path.display()),
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(failed(error)),
        }
        let listener = UnixListener::bind(path).map_err(failed)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(failed)?;
        Ok(listener)
    }

    /// Answers every connection on `listener` until the future is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let broker = self.clone();
                    tokio::spawn(async move {
                        if let Err(error) = broker.answer(stream).await {
                            tracing::debug!(error = %error, "a broker connection failed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(error = %error, "the broker cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn answer(&self, stream: UnixStream) -> std::io::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let line = read_line(reader).await?;
        let answer = match serde_json::from_str::<BrokerRequest>(&line) {
            Ok(request) => self.handle(request).await,
            Err(error) => BrokerAnswer::Failed {
                error: WireError::from(&FleetError::Broker { reason: format!("malformed request: {error}") }),
            },
        };
        let mut line = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
        line.push(b'\n');
        writer.write_all(&line).await?;
        writer.shutdown().await
    }

    async fn handle(&self, request: BrokerRequest) -> BrokerAnswer {
        let answered = async {
            match request {
                BrokerRequest::Start { spec } => {
                    self.start((*spec).into()).await.map(|id| BrokerAnswer::Started { id: id.0 })
                }
                BrokerRequest::State { id } => match self.confined_id(id).await? {
                    Some(id) => {
                        self.provisioner.state(&id).await.map(|state| BrokerAnswer::State { state: state.into() })
                    }
                    None => Ok(BrokerAnswer::State { state: WireState::Gone }),
                },
                BrokerRequest::Wait { id, timeout_ms } => match self.confined_id(id).await? {
                    Some(id) => self
                        .provisioner
                        .wait(&id, Duration::from_millis(timeout_ms))
                        .await
                        .map(|state| BrokerAnswer::State { state: state.into() }),
                    None => Ok(BrokerAnswer::State { state: WireState::Gone }),
                },
                BrokerRequest::Stop { id, grace_ms } => match self.confined_id(id.clone()).await? {
                    Some(id) => {
                        self.provisioner.stop(&id, Duration::from_millis(grace_ms)).await.map(|()| BrokerAnswer::Done)
                    }
                    None => Err(outside(&id)),
                },
                BrokerRequest::Kill { id } => match self.confined_id(id.clone()).await? {
                    Some(id) => self.provisioner.kill(&id).await.map(|()| BrokerAnswer::Done),
                    None => Err(outside(&id)),
                },
                BrokerRequest::Inventory { filter } => {
                    self.inventory(filter).await.map(|resources| BrokerAnswer::Inventory {
                        resources: resources
                            .into_iter()
                            .map(|resource| WireResource {
                                id: resource.id.0,
                                kind: resource.kind.to_owned(),
                                tags: resource.tags,
                                started_at_ms: resource.started_at.map(Timestamp::as_millis),
                                address: resource.address,
                            })
                            .collect(),
                    })
                }
            }
        }
        .await;
        answered.unwrap_or_else(|error| {
            tracing::debug!(error = %error, "broker request failed");
            BrokerAnswer::Failed { error: WireError::from(&error) }
        })
    }

    async fn start(&self, spec: ProcessSpec) -> Result<ResourceId, FleetError> {
        if let Some(refusal) = self.confinement.refusal(&spec) {
            tracing::warn!(program = %spec.program.display(), refusal = %refusal, "broker refused a start");
            return Err(FleetError::InvalidSpec {
                program: spec.program,
                reason: format!("refused by the broker: {refusal}"),
            });
        }
        let id = self.provisioner.start(spec).await?;
        self.confined.lock().await.insert(id.clone());
        Ok(id)
    }

    async fn inventory(&self, filter: BTreeMap<String, String>) -> Result<Vec<LiveResource>, FleetError> {
        // The confinement's tags replace the client's for the same key.
        let narrowed = self
            .confinement
            .required_tags
            .iter()
            .fold(filter.into_iter().collect::<TagFilter>(), |narrowed, (key, value)| narrowed.with(key, value));
        let live = self.provisioner.inventory(&narrowed).await?;
        self.confined.lock().await.extend(live.iter().map(|resource| resource.id.clone()));
        Ok(live)
    }

    /// `Some(id)` if `id` names a resource carrying the confinement's tags
    /// (started here, or found by an inventory narrowed to them); `None`
    /// for anything else, which the client may neither observe nor signal.
    async fn confined_id(&self, id: String) -> Result<Option<ResourceId>, FleetError> {
        let id = ResourceId(id);
        if self.confined.lock().await.contains(&id) {
            return Ok(Some(id));
        }
        let live = self.provisioner.inventory(&self.confinement.filter()).await?;
        let mut confined = self.confined.lock().await;
        confined.extend(live.into_iter().map(|resource| resource.id));
        Ok(confined.contains(&id).then_some(id))
    }
}

fn outside(id: &str) -> FleetError {
    tracing::warn!(id, "broker refused to act on a resource outside its confinement");
    FleetError::Broker { reason: format!("{id} is not a resource this broker may act on") }
}

async fn read_line(reader: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
    let mut line = String::new();
    let read = BufReader::new(reader.take(MAX_LINE as u64)).read_line(&mut line).await?;
    if read == 0 || !line.ends_with('\n') {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the line ended early or is too long"));
    }
    Ok(line)
}

/// The client side: a [`Provisioner`] whose every call is a request to a
/// broker's socket.
#[derive(Debug, Clone)]
pub struct BrokeredProvisioner {
    socket: PathBuf,
    kind: &'static str,
}

impl BrokeredProvisioner {
    /// A client of the broker listening on `socket`, serving resources of `kind` (`docker`).
    pub fn new(socket: impl Into<PathBuf>, kind: &'static str) -> BrokeredProvisioner {
        BrokeredProvisioner { socket: socket.into(), kind }
    }

    async fn call(&self, request: BrokerRequest) -> Result<BrokerAnswer, FleetError> {
        let unreachable = |error: std::io::Error| FleetError::Broker {
            reason: format!("cannot reach the broker at {}: {error}", self.socket.display()),
        };
        let stream = UnixStream::connect(&self.socket).await.map_err(unreachable)?;
        let (reader, mut writer) = stream.into_split();
        let mut line =
            serde_json::to_vec(&request).map_err(|error| FleetError::Broker { reason: error.to_string() })?;
        line.push(b'\n');
        writer.write_all(&line).await.map_err(unreachable)?;
        let answer = read_line(reader).await.map_err(unreachable)?;
        match serde_json::from_str(&answer) {
            Ok(BrokerAnswer::Failed { error }) => Err(error.into()),
            Ok(answer) => Ok(answer),
            Err(error) => Err(FleetError::Broker { reason: format!("malformed answer: {error}") }),
        }
    }

    async fn call_for_state(&self, request: BrokerRequest) -> Result<ResourceState, FleetError> {
        match self.call(request).await? {
            BrokerAnswer::State { state } => Ok(state.into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_for_done(&self, request: BrokerRequest) -> Result<(), FleetError> {
        match self.call(request).await? {
            BrokerAnswer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &BrokerAnswer) -> FleetError {
    FleetError::Broker { reason: format!("unexpected answer {answer:?}") }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Provisioner for BrokeredProvisioner {
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The broker runs on the coordinator's host and starts the kinds whose coordinator runs in a container there (docker), which it attaches to.
    fn output_reaches_this_host(&self) -> bool {
        true
    }

    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
        Box::pin(async move {
            match self.call(BrokerRequest::Start { spec: Box::new(spec.into()) }).await? {
                BrokerAnswer::Started { id } => Ok(ResourceId(id)),
                other => Err(unexpected(&other)),
            }
        })
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(self.call_for_state(BrokerRequest::State { id: id.0.clone() }))
    }

    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(self.call_for_state(BrokerRequest::Wait { id: id.0.clone(), timeout_ms: millis(timeout) }))
    }

    fn stop<'a>(&'a self, id: &'a ResourceId, grace: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.call_for_done(BrokerRequest::Stop { id: id.0.clone(), grace_ms: millis(grace) }))
    }

    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.call_for_done(BrokerRequest::Kill { id: id.0.clone() }))
    }

    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
        Box::pin(async move {
            let filter = filter.iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect();
            match self.call(BrokerRequest::Inventory { filter }).await? {
                BrokerAnswer::Inventory { resources } => Ok(resources
                    .into_iter()
                    .map(|resource| LiveResource {
                        id: ResourceId(resource.id),
                        kind: if resource.kind == "container" { "container" } else { "process" },
                        tags: resource.tags,
                        started_at: resource.started_at_ms.map(Timestamp::from_millis),
                        address: resource.address,
                    })
                    .collect()),
                other => Err(unexpected(&other)),
            }
        })
    }
}
