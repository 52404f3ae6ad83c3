//! The provisioner contract: what a run's coordinator and workers are started
//! from ([`ProcessSpec`]), how they are named ([`ResourceId`]), observed
//! ([`ResourceState`]) and found again ([`LiveResource`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use mayfly_core::{ByteSize, Timestamp};

use crate::error::FleetError;
use crate::tags::{TagFilter, Tags};

/// The future every [`Provisioner`] method returns; boxed so that the trait is
/// object safe and `Arc<dyn Provisioner>` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// An absolute path, a path relative to `working_dir`, or a bare name
    /// looked up on `PATH`.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment of the resource (nothing is inherited from the
    /// caller) plus the tag variables the provisioner adds.
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    pub tags: Tags,
    /// File to append standard output to; `None` discards it.
    pub stdout: Option<PathBuf>,
    /// File to append standard error to; `None` discards it.
    pub stderr: Option<PathBuf>,
    /// Memory limit; advisory for local processes, enforced by containers.
    pub memory: Option<ByteSize>,
    /// CPU limit; advisory for local processes, enforced by containers.
    pub cpus: Option<f64>,
    /// Absolute host paths the resource needs to read (Mayfly's own workers
    /// need none: they enroll over the network): local processes see the whole file system anyway;
    /// containers get exactly these, bound read-only at the same path.
    pub read_only_mounts: Vec<PathBuf>,
    /// Absolute host paths the resource writes (a containerised
    /// coordinator's project directory): containers get them bound
    /// read-write at the same path; local processes see them anyway.
    pub read_write_mounts: Vec<PathBuf>,
    /// `uid:gid` to run as, for containers (a coordinator runs as the owner
    /// of the project's files); `None` runs as the image's user. Local
    /// processes always run as their starter.
    pub user: Option<String>,
}

impl ProcessSpec {
    /// A spec for `program` with `args` in `working_dir`, with no environment,
    /// no tags, output discarded and no limits.
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<String>>) -> ProcessSpec {
        ProcessSpec {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            working_dir: PathBuf::from("/"),
            tags: Tags::new(),
            stdout: None,
            stderr: None,
            memory: None,
            cpus: None,
            read_only_mounts: Vec::new(),
            read_write_mounts: Vec::new(),
            user: None,
        }
    }
}

/// A resource's id, unique for the provisioner's kind over time. Local
/// processes: `pid:<pid>:<start time in clock ticks since boot>`, so that a
/// recycled pid is never mistaken for the process it once named.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(pub String);

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A live resource found by an inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveResource {
    pub id: ResourceId,
    /// `process` or `container`.
    pub kind: &'static str,
    pub tags: Tags,
    pub started_at: Option<Timestamp>,
    /// Where it can be reached, for backends that give resources addresses.
    pub address: Option<String>,
}

/// What a resource is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    /// At least one of its processes is alive.
    Running,
    /// It ended and its exit is known: an exit code, or the signal that killed it.
    Exited { code: Option<i32>, signal: Option<i32> },
    /// Nothing of it remains and its exit is not known (it was not started by
    /// this provisioner, or the id names nothing that exists).
    Gone,
}

impl ResourceState {
    pub fn is_running(self) -> bool {
        self == ResourceState::Running
    }
}

/// Starts, watches, stops and finds the resources of one kind.
///
/// Every method is safe to call on resources this instance did not start
/// (for example after a control plane restart): ids are self-describing and
/// the inventory reads the system, not memory.
pub trait Provisioner: Send + Sync {
    /// Its kind's name in the registry (`local`, `docker`): [`crate::ProvisionerKind::name`].
    fn kind(&self) -> &'static str;

    /// Whether the files a [`ProcessSpec`] names as `stdout` and `stderr`
    /// are written on the host of the caller (the coordinator), so that a
    /// FIFO there reaches the resource: local processes and attached
    /// containers, yes; processes on other machines (Slurm nodes, swarm
    /// nodes), no: a FIFO's data never crosses hosts, not even on a shared
    /// file system. A coordinator gives a worker it cannot capture no output
    /// file, and the worker sends its output over its own channel instead.
    fn output_reaches_this_host(&self) -> bool;

    /// Starts a resource from `spec`, tagged with `spec.tags`.
    /// [`FleetError::CannotStart`] names the program and the OS error.
    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>>;

    /// Starts one resource per spec, in one submission where the backend has
    /// one (a Slurm job array); returns their ids in the specs' order. All
    /// start or none does: on an error, those already started are stopped.
    /// By default, [`start`](Self::start) for each spec in turn.
    fn start_many(&self, specs: Vec<ProcessSpec>) -> BoxFuture<'_, Result<Vec<ResourceId>, FleetError>> {
        Box::pin(async move {
            let mut started = Vec::with_capacity(specs.len());
            for spec in specs {
                match self.start(spec).await {
                    Ok(id) => started.push(id),
                    Err(error) => {
                        for id in &started {
                            self.kill(id).await.ok();
                        }
                        return Err(error);
                    }
                }
            }
            Ok(started)
        })
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>>;

    /// Waits until the resource is no longer running (or `timeout`, then
    /// returns [`ResourceState::Running`]); returns its final state.
    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>>;

    /// Asks the resource to stop (SIGTERM to the whole process group), waits
    /// `grace`, then kills it (SIGKILL); `Ok` once verified gone. Stopping a
    /// resource that is already gone is `Ok`.
    fn stop<'a>(&'a self, id: &'a ResourceId, grace: Duration) -> BoxFuture<'a, Result<(), FleetError>>;

    /// Kills the resource at once (SIGKILL to the whole group); `Ok` once verified gone.
    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>>;

    /// Why a resource that is no longer running ended, when its engine knows
    /// more than an exit status (a swarm task its node rejected: `No such
    /// image: …`, with the node's name); `None` when it has nothing to add.
    /// The coordinator asks this of a worker that ended before calling in,
    /// so that the run's error says what went wrong and where.
    fn end_reason<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<Option<String>, FleetError>> {
        let _ = id;
        Box::pin(async { Ok(None) })
    }

    /// Every live resource of this provisioner's kind whose tags match
    /// `filter`, found from the system itself (not from memory).
    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>>;

    /// Removes what this provisioner shares between runs (Docker networks)
    /// once nothing uses it any more, among what matches `filter`; returns
    /// what was removed. Most provisioners share nothing.
    fn remove_unused_networks<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<String>, FleetError>> {
        let _ = filter;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Asks `observe` for a resource's state every `poll` until it no longer
/// runs or `timeout` has passed, and returns the last state seen (so
/// [`ResourceState::Running`] on a timeout): [`Provisioner::wait`] for
/// provisioners that learn a resource's end only by asking its engine.
pub(crate) async fn poll_until_ended<F, Fut>(
    timeout: Duration,
    poll: Duration,
    mut observe: F,
) -> Result<ResourceState, FleetError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ResourceState, FleetError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = observe().await?;
        let now = tokio::time::Instant::now();
        if !state.is_running() || now >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
