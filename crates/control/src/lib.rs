//! The control plane of one project (`mayfly up`): it makes the architecture
//! file's triggers live.
//!
//! - the **router** reads the bucket event log with a durable cursor and sends
//!   each event that matches a `[[routes]]` entry to its queue (as an S3
//!   notification) or to its function's asynchronous-invocation queue;
//! - a **queue poller** per queue trigger leases batches and invokes the
//!   function with an SQS event, deleting what succeeded (honouring
//!   `batchItemFailures`) and backing off what failed; the queue's own
//!   `max_receives` and dead-letter queue bound the retries;
//! - the **scheduler** fires `cron(...)`/`rate(...)` triggers, keeping the last
//!   firing in a durable cursor, and enqueues an EventBridge-shaped event;
//! - an **async invoker** per function drains its internal queue
//!   (`mayfly-async-<function>`): each message is one asynchronous invocation,
//!   retried with exponential backoff and jitter up to `retries.max_attempts`,
//!   then sent to the function's `on_failure` queue (or `mayfly-failed`).
//!
//! On several hosts sharing one project (state on PostgreSQL), every
//! `mayfly up` runs the queue pollers and async invokers, and only the one
//! holding the control plane lease (see [`leadership`]) runs the singleton
//! duties: the router, the scheduler and the jobs supervisor. Their writes
//! are fenced by the lease's term (`mayfly_state::FencedWrites`): a leader
//! paused past its lease writes nothing once another host took it over, and
//! on the refusal (`StateError::Fenced`) it stops its duties at once and
//! stands by ([`Announcement::LostLease`]).
//!
//! Every invocation is recorded in the ledger with its logs. All work is
//! leased from durable queues, so the control plane may be killed at any
//! moment: whatever it had not acknowledged is delivered again (at least once).
//!
//! The control plane follows the recorded deployments without a restart.
//! The router decides when a newer deployment takes over (at the first
//! event committed after it was recorded, or once every earlier event is
//! routed); the loops of the deployment held so far (queue pollers, async
//! invokers, the scheduler, the jobs supervisor with its alarms) are told to
//! stop taking work, and those of the new one start, all at once. A standby
//! host, which runs no router, follows the deployment the leader's router
//! holds, read from its durable cursor. Invocations
//! in flight finish under the definition they started with. `deployments`
//! parses recorded deployments and watches for new ones, for the router and
//! for the HTTPS API (which serves the latest).

mod alarms;
mod async_invoker;
pub mod deployments;
mod functions;
mod invoke;
pub mod jobs;
pub mod leadership;
mod ledger;
mod queue_poller;
pub mod retention;
mod router;
mod scheduler;
pub mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::{Clock, Name};
use mayfly_runtime::Invoker;
use mayfly_spec::{Architecture, TriggerSpec};
use mayfly_state::{Fence, StateError, StateStore};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use async_invoker::new_request_id;
pub use deployments::{DEPLOYMENT_POLL, DeploymentWatch, ParsedDeployment, parse_deployment};
pub use functions::{
    AsyncEnvelope, FAILED_QUEUE, async_queue_name, estimate_cost, function_definition, function_network_name,
    internal_queues,
};
pub use invoke::{InvokeContext, InvokeError, invoke_and_record};
pub use leadership::{LeaderLease, Role};
pub use ledger::{describe_failure, record_invocation};

/// What the control plane runs against.
#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// The deployed architecture (parsed from the recorded deployment, not the file on disk).
    /// [`run`] replaces it with the deployment that governs the router's next
    /// event, and follows newer ones; it is only used as is when no
    /// deployment is recorded.
    pub architecture: Arc<Architecture>,
    pub deployment_version: Option<u64>,
    /// The project directory: functions' working directory and `MAYFLY_PROJECT`.
    pub project_root: PathBuf,
    /// The `mayfly` executable functions may call (`MAYFLY_BIN`).
    pub mayfly_bin: PathBuf,
    pub state: Arc<dyn StateStore>,
    pub invoker: Invoker,
    pub clock: Arc<dyn Clock>,
    /// How long an idle loop sleeps before looking for work again.
    pub poll_interval: Duration,
    /// Batch jobs: how coordinators are started; `None` leaves runs alone.
    pub jobs: Option<JobsConfig>,
    /// How this control plane campaigns for the lease under which the
    /// singleton duties run (see [`leadership`]).
    pub leader: LeaderLease,
}

/// What the control plane needs to supervise batch runs.
#[derive(Clone)]
pub struct JobsConfig {
    /// Starts coordinators (local processes).
    pub provisioner: Arc<dyn mayfly_fleet::Provisioner>,
    /// Every provisioner a run's resources may live in (local processes, and
    /// Docker containers when a job uses them): fleets are torn down and
    /// orphans reaped through all of them.
    pub fleet: Vec<Arc<dyn mayfly_fleet::Provisioner>>,
    pub launch: jobs::CoordinatorLaunch,
}

/// The deployment the control plane runs, and the first event it routes.
#[derive(Clone, Debug)]
pub struct DeploymentInForce {
    /// `None` only for an architecture that was never recorded as a deployment.
    pub version: Option<u64>,
    pub architecture: Arc<Architecture>,
    /// The first bucket event (sequence number) this deployment routes.
    pub from_event: u64,
}

/// Tells the loops to stop taking new work; in-flight invocations finish.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
    /// The loops of one deployment also stop when a newer one takes over.
    superseded: Option<watch::Receiver<bool>>,
}

/// The sending half of [`Shutdown`].
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl ShutdownTrigger {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { receiver, superseded: None })
    }

    pub fn trigger(&self) {
        // `send_replace`: the value changes even when no loop is listening at this moment.
        self.sender.send_replace(true);
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow() || self.superseded.as_ref().is_some_and(|superseded| *superseded.borrow())
    }

    /// Sleep for `duration`, returning early (with `true`) if shutdown is triggered.
    pub async fn sleep_or_stop(&mut self, duration: Duration) -> bool {
        if self.is_triggered() {
            return true;
        }
        let superseded = async {
            match &mut self.superseded {
                Some(superseded) => superseded.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.receiver.changed() => {}
            _ = superseded => {}
        }
        self.is_triggered()
    }

    /// This shutdown, or `superseded`'s trigger, whichever comes first.
    fn or_superseded(&self, superseded: &ShutdownTrigger) -> Shutdown {
        Shutdown { receiver: self.receiver.clone(), superseded: Some(superseded.sender.subscribe()) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    State(#[from] mayfly_state::StateError),
    #[error("a control plane task failed: {0}")]
    Task(String),
    #[error("the recorded deployment {version} no longer parses: {reason}")]
    Deployment { version: u64, reason: String },
}

/// What [`run_announcing`] tells its caller as it goes.
#[derive(Clone, Debug)]
pub enum Announcement {
    /// The deployment in force: at the start, and every later switch.
    Deployment(DeploymentInForce),
    /// This control plane became the leader, or a standby.
    Role(Role),
    /// A write of the singleton duties under `led_under` was refused: the
    /// lease passed to `taken_under` (held by `taken_by`) while this host
    /// was not looking (paused, or cut off). Its duties stopped at once; a
    /// [`Role::Standby`] follows unless it was already announced.
    LostLease { led_under: u64, taken_under: u64, taken_by: Option<String> },
}

impl Announcement {
    /// The announcement a refused fenced write makes, if `error` is one.
    fn lost_lease(error: &ControlError) -> Option<Announcement> {
        match error {
            ControlError::State(StateError::Fenced { term, stored_holder, stored_term, .. }) => {
                Some(Announcement::LostLease {
                    led_under: *term,
                    taken_under: *stored_term,
                    taken_by: stored_holder.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Run every loop until `shutdown` is triggered, then wait for in-flight
/// invocations to finish and stop the warm function instances.
pub async fn run(config: ControlPlaneConfig, shutdown: Shutdown) -> Result<(), ControlError> {
    run_announcing(config, shutdown, |_| {}).await
}

/// [`run`], calling `announce` with the deployment in force at the start,
/// with every deployment that takes over later, and with every change of
/// role (leader or standby, see [`leadership`]).
///
/// Every host runs the queue pollers and async invokers of the deployment in
/// force. Only while it holds the [`leadership::CONTROL_PLANE_LEASE`] does
/// it run the singleton duties: the router (which decides when a deployment
/// takes over), the scheduler and the jobs supervisor. A standby computes
/// the deployment in force as a new leader would at its start — from the
/// router's durable cursor ([`router::Router::start`]) — about once a second,
/// so its loops follow the leader's switches.
pub async fn run_announcing(
    config: ControlPlaneConfig,
    shutdown: Shutdown,
    announce: impl Fn(Announcement) + Send,
) -> Result<(), ControlError> {
    let mut in_force = router::Router::start(&config)?.held().clone();
    let base = Arc::new(config);
    let (switch_sender, mut switches) = watch::channel(in_force.clone());
    let (role_sender, mut roles) = watch::channel(Role::Standby { leader: None });
    let mut tasks = JoinSet::new();
    tasks.spawn(leadership::campaign(
        base.state.clone(),
        base.clock.clone(),
        base.leader.clone(),
        role_sender,
        shutdown.clone(),
    ));
    let mut everywhere = Generation::everywhere(&base, &in_force, &shutdown, &mut tasks);
    let mut duties = Duties::standby(&base, &switch_sender, &shutdown, &mut tasks);
    announce(Announcement::Deployment(in_force.clone()));

    let mut running = true;
    let mut first_error = None;
    // The last term whose loss a refused write announced (each is announced once).
    let mut lost_term = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let outcome = match joined {
                    Ok(result) => result,
                    Err(error) if error.is_cancelled() => Ok(()),
                    Err(error) => Err(ControlError::Task(error.to_string())),
                };
                if let Err(error) = &outcome
                    && let Some(lost @ Announcement::LostLease { led_under, .. }) = Announcement::lost_lease(error)
                {
                    // Not a failure: another host leads now. Stop writing at once and stand by.
                    if duties.is_leading_under(led_under) {
                        duties.stop();
                        duties = Duties::standby(&base, &switch_sender, &shutdown, &mut tasks);
                        tracing::warn!(error = %error, "lost the control plane lease; standing by");
                        announce(lost);
                        let leader = leadership::current_lease(&base.state).await;
                        announce(Announcement::Role(Role::Standby { leader }));
                    } else if lost_term != Some(led_under) {
                        announce(lost);
                    }
                    lost_term = Some(led_under);
                    continue;
                }
                if let Err(error) = outcome {
                    tracing::error!(error = %error, "control plane loop failed; stopping");
                    first_error.get_or_insert(error);
                    // One loop failing stops the others: a half-running control plane hides problems.
                    tasks.abort_all();
                    running = false;
                }
            }
            changed = switches.changed(), if running => {
                if changed.is_err() {
                    continue; // cannot happen: this function holds the sender
                }
                let switched = switches.borrow_and_update().clone();
                if switched.version == in_force.version {
                    continue;
                }
                in_force = switched;
                everywhere.supersede();
                everywhere = Generation::everywhere(&base, &in_force, &shutdown, &mut tasks);
                duties.follow_switch(&base, &in_force, &shutdown, &mut tasks);
                announce(Announcement::Deployment(in_force.clone()));
            }
            changed = roles.changed(), if running => {
                if changed.is_err() {
                    continue; // the campaign stopped: the control plane is stopping
                }
                let role = roles.borrow_and_update().clone();
                match (&role, duties.is_leading()) {
                    (Role::Leader { term }, _) => {
                        duties.stop();
                        let router = router::Router::start(&base)?;
                        if router.held().version != in_force.version {
                            // The cursor moved on since this host last looked: follow it first.
                            in_force = router.held().clone();
                            everywhere.supersede();
                            everywhere = Generation::everywhere(&base, &in_force, &shutdown, &mut tasks);
                            switch_sender.send_replace(in_force.clone());
                            switches.borrow_and_update();
                            announce(Announcement::Deployment(in_force.clone()));
                        }
                        let fence = Fence {
                            lease: leadership::CONTROL_PLANE_LEASE.to_owned(),
                            holder: base.leader.holder.clone(),
                            term: *term,
                        };
                        duties = Duties::leading(&base, router, fence, &in_force, &switch_sender, &shutdown, &mut tasks);
                    }
                    (Role::Standby { .. }, true) => {
                        duties.stop();
                        duties = Duties::standby(&base, &switch_sender, &shutdown, &mut tasks);
                    }
                    (Role::Standby { .. }, false) => {}
                }
                announce(Announcement::Role(role));
            }
        }
    }
    let was_leading = duties.is_leading();
    drop(duties);
    drop(everywhere);
    if was_leading {
        leadership::release(&base.state, &base.leader).await;
    }
    base.invoker.shutdown().await;
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What this host does beyond the loops every host runs.
enum Duties {
    /// The router, the scheduler and the jobs supervisor, writing under `fence`.
    Leading { router: ShutdownTrigger, singletons: Generation, fence: Fence },
    /// Following the deployment in force from the router's durable cursor.
    Standby { follower: ShutdownTrigger },
}

impl Duties {
    fn leading(
        base: &Arc<ControlPlaneConfig>,
        router: router::Router,
        fence: Fence,
        in_force: &DeploymentInForce,
        switches: &watch::Sender<DeploymentInForce>,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<Result<(), ControlError>>,
    ) -> Duties {
        let (stop_router, _) = ShutdownTrigger::new();
        let router = router.fenced_by(fence.clone());
        tasks.spawn(router::run(base.clone(), router, switches.clone(), shutdown.or_superseded(&stop_router)));
        let singletons = Generation::singletons(base, in_force, &fence, shutdown, tasks);
        Duties::Leading { router: stop_router, singletons, fence }
    }

    fn standby(
        base: &Arc<ControlPlaneConfig>,
        switches: &watch::Sender<DeploymentInForce>,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<Result<(), ControlError>>,
    ) -> Duties {
        let (stop_follower, _) = ShutdownTrigger::new();
        tasks.spawn(router::follow(base.clone(), switches.clone(), shutdown.or_superseded(&stop_follower)));
        Duties::Standby { follower: stop_follower }
    }

    fn is_leading(&self) -> bool {
        matches!(self, Duties::Leading { .. })
    }

    fn is_leading_under(&self, term: u64) -> bool {
        matches!(self, Duties::Leading { fence, .. } if fence.term == term)
    }

    /// The singletons of a leader move to the deployment that took over.
    fn follow_switch(
        &mut self,
        base: &ControlPlaneConfig,
        in_force: &DeploymentInForce,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<Result<(), ControlError>>,
    ) {
        if let Duties::Leading { singletons, fence, .. } = self {
            singletons.supersede();
            *singletons = Generation::singletons(base, in_force, fence, shutdown, tasks);
        }
    }

    /// Stop taking work at once; what is in flight finishes.
    fn stop(&self) {
        match self {
            Duties::Leading { router, singletons, .. } => {
                router.trigger();
                singletons.supersede();
            }
            Duties::Standby { follower } => follower.trigger(),
        }
    }
}

impl Drop for Duties {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The loops of one deployment: they stop taking work when it is superseded.
struct Generation {
    superseded: ShutdownTrigger,
}

impl Generation {
    fn config_of(base: &ControlPlaneConfig, in_force: &DeploymentInForce) -> Arc<ControlPlaneConfig> {
        Arc::new(ControlPlaneConfig {
            architecture: in_force.architecture.clone(),
            deployment_version: in_force.version,
            ..base.clone()
        })
    }

    /// The loops every host runs: a queue poller per queue trigger and an
    /// async invoker per function.
    fn everywhere(
        base: &ControlPlaneConfig,
        in_force: &DeploymentInForce,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<Result<(), ControlError>>,
    ) -> Generation {
        let config = Generation::config_of(base, in_force);
        let (superseded, _) = ShutdownTrigger::new();
        let shutdown = shutdown.or_superseded(&superseded);
        for trigger in &config.architecture.triggers {
            if let TriggerSpec::Queue { queue, function, batch_size, batch_window } = trigger {
                let poller = queue_poller::QueueTrigger {
                    queue: queue.clone(),
                    function: function.clone(),
                    batch_size: *batch_size as usize,
                    batch_window: *batch_window,
                };
                tasks.spawn(queue_poller::run(config.clone(), poller, shutdown.clone()));
            }
        }
        for function in config.architecture.functions.keys() {
            tasks.spawn(async_invoker::run(config.clone(), function.clone(), shutdown.clone()));
        }
        tracing::info!(
            deployment = ?in_force.version,
            from_event = in_force.from_event,
            functions = config.architecture.functions.len(),
            triggers = config.architecture.triggers.len(),
            routes = config.architecture.routes.len(),
            "control plane running"
        );
        Generation { superseded }
    }

    /// The singleton loops only the leader runs besides the router: the
    /// scheduler and the jobs supervisor, writing under `fence`.
    fn singletons(
        base: &ControlPlaneConfig,
        in_force: &DeploymentInForce,
        fence: &Fence,
        shutdown: &Shutdown,
        tasks: &mut JoinSet<Result<(), ControlError>>,
    ) -> Generation {
        let config = Generation::config_of(base, in_force);
        let (superseded, _) = ShutdownTrigger::new();
        let shutdown = shutdown.or_superseded(&superseded);
        tasks.spawn(scheduler::run(config.clone(), fence.clone(), shutdown.clone()));
        tasks.spawn(jobs::supervise(config, fence.clone(), shutdown));
        Generation { superseded }
    }

    /// Stop taking work under this deployment; what is in flight finishes.
    fn supersede(&self) {
        self.superseded.trigger();
    }
}

/// The names of the functions whose triggers or routes need the control plane.
pub fn active_functions(architecture: &Architecture) -> Vec<Name> {
    let mut names: Vec<Name> = architecture.triggers.iter().map(|t| t.function().clone()).collect();
    for route in &architecture.routes {
        if let mayfly_spec::RouteTarget::Function(function) = &route.to {
            names.push(function.clone());
        }
    }
    names.sort();
    names.dedup();
    names
}
