//! Batch jobs from the control plane's side: starting a run (a ledger entry
//! and a coordinator process), restarting the coordinator of a run whose
//! lease lapsed (after tearing its fleet down by tags), reaping orphans, and
//! the job triggers — schedules and alarms.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_core::run::new_run_id;
use mayfly_core::{Clock, Name};
use mayfly_fleet::{
    CoordinatorPlacement, ProcessSpec, Provisioner, ResourceId, TAG_PROJECT, TAG_ROLE, TAG_RUN, TagFilter, Tags,
};
use mayfly_spec::{Architecture, JobTrigger};
use mayfly_state::{Fence, FencedOutcome, FencedWrite, NewRun, RunRecord, StateStore};

use crate::{ControlError, ControlPlaneConfig, Shutdown};

/// How to start a coordinator process: `mayfly --project ROOT coordinator --run R`.
#[derive(Debug, Clone)]
pub struct CoordinatorLaunch {
    pub mayfly_bin: PathBuf,
    pub project_root: PathBuf,
    /// `.mayfly/`: runs keep their working files under `runs/<run>/`.
    pub data_dir: PathBuf,
    pub log_filter: String,
    /// Variables only the coordinator (or broker) gets, beyond the inherited
    /// ones: the keyring when it is given in `MAYFLY_KEYRING`, since the
    /// coordinator opens the project. Workers never get them: they open
    /// nothing and run customers' functions.
    pub secret_env: BTreeMap<String, String>,
}

/// A run's working directory under the project's data directory: `runs/<run>/`.
pub fn run_dir(data_dir: &std::path::Path, run: &str) -> PathBuf {
    data_dir.join("runs").join(run)
}

/// The project's tags on every process Mayfly starts for it.
pub fn project_tags(architecture: &Architecture) -> Tags {
    let mut tags = Tags::new().with(TAG_PROJECT, architecture.name.as_str());
    for (key, value) in &architecture.tags {
        tags = tags.with(key, value);
    }
    tags
}

/// The part of this process's environment that coordinators and workers need
/// (the provisioner passes nothing else): where programs are, the user, the
/// locale, the temporary directory, Python's version manager.
pub fn inherited_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(key, _)| {
            matches!(key.as_str(), "PATH" | "HOME" | "USER" | "LOGNAME" | "LANG" | "LC_ALL" | "TMPDIR" | "TZ")
                || key.starts_with("PYENV")
                // The Slurm cluster or Docker engine (a swarm manager) a coordinator
                // starts workers through, and the address it listens on and they dial it by.
                || matches!(
                    key.as_str(),
                    "SLURM_CONF" | "DOCKER_HOST" | "MAYFLY_COORDINATOR_ADDRESS" | "MAYFLY_COORDINATOR_ADVERTISE"
                )
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job `{job}` is not deployed; deployed jobs: {known}")]
    UnknownJob { job: Name, known: String },
    #[error(transparent)]
    State(#[from] mayfly_state::StateError),
    #[error("cannot start the coordinator of run {run}: {source}")]
    Launch { run: String, source: mayfly_fleet::FleetError },
    #[error("cannot stop the processes of run {run}: {source}")]
    TearDown { run: String, source: mayfly_fleet::FleetError },
    #[error("cannot create the working directory of run {run}: {source}")]
    RunDir { run: String, source: std::io::Error },
}

/// The role of the host process that starts a run: the coordinator itself
/// for local workers; for Docker workers, the broker that starts the
/// coordinator's container and starts workers for it.
pub const ROLE_BROKER: &str = "broker";

/// Start the coordinator of `run` (a run of `job`) as a process of its own,
/// tagged with the run and its role: `mayfly coordinator --run R`, or for a
/// job whose workers are Docker containers `mayfly broker --run R`, which
/// runs the coordinator in a container of the job's network.
pub async fn launch_coordinator(
    provisioner: &dyn Provisioner,
    launch: &CoordinatorLaunch,
    architecture: &Architecture,
    job: &Name,
    run: &str,
) -> Result<ResourceId, JobError> {
    let run_dir = run_dir(&launch.data_dir, run);
    std::fs::create_dir_all(&run_dir).map_err(|source| JobError::RunDir { run: run.to_owned(), source })?;
    let in_container = architecture
        .jobs
        .get(job)
        .is_some_and(|job| job.provisioner.kind.coordinator() == CoordinatorPlacement::ContainerThroughBroker);
    let (command, role, log) = if in_container {
        ("broker", ROLE_BROKER, run_dir.join("broker.log"))
    } else {
        ("coordinator", "coordinator", run_dir.join("coordinator.log"))
    };
    provisioner
        .start(ProcessSpec {
            program: launch.mayfly_bin.clone(),
            args: vec![
                "--project".into(),
                launch.project_root.display().to_string(),
                command.into(),
                "--run".into(),
                run.into(),
            ],
            env: {
                let mut env = inherited_env();
                env.insert("MAYFLY_LOG".to_owned(), launch.log_filter.clone());
                env.extend(launch.secret_env.clone());
                env
            },
            working_dir: launch.project_root.clone(),
            tags: project_tags(architecture).with(TAG_RUN, run).with(TAG_ROLE, role),
            stdout: Some(log.clone()),
            stderr: Some(log),
            memory: None,
            cpus: None,
            read_only_mounts: Vec::new(),
            read_write_mounts: Vec::new(),
            user: None,
        })
        .await
        .map_err(|source| JobError::Launch { run: run.to_owned(), source })
}

/// An architecture as deployed: the parsed file and its deployment version.
#[derive(Clone, Copy)]
pub struct Deployed<'a> {
    pub architecture: &'a Architecture,
    pub version: Option<u64>,
}

/// The run of `job` that `trigger` starts now, to record: `UnknownJob` for
/// a job `deployed` does not declare.
pub fn new_run(deployed: Deployed<'_>, job: &Name, trigger: &str, clock: &dyn Clock) -> Result<NewRun, JobError> {
    let (architecture, deployment_version) = (deployed.architecture, deployed.version);
    let spec = architecture.jobs.get(job).ok_or_else(|| JobError::UnknownJob {
        job: job.clone(),
        known: if architecture.jobs.is_empty() {
            "none".into()
        } else {
            architecture.jobs.keys().map(Name::to_string).collect::<Vec<_>>().join(", ")
        },
    })?;
    let now = clock.now();
    Ok(NewRun {
        id: new_run_id(now, rand::random()),
        job: job.clone(),
        deployment_version,
        trigger: trigger.to_owned(),
        deadline: now.saturating_add(spec.deadline),
        budget: spec.budget.or(architecture.policy.max_run_cost),
    })
}

/// Record a new run of `job` and start its coordinator: what a user asks
/// for (`mayfly run`, the API), not fenced by any lease. The jobs
/// supervisor's triggered runs are recorded under the leader's fence.
pub async fn start_run(
    state: &dyn StateStore,
    provisioner: &dyn Provisioner,
    launch: &CoordinatorLaunch,
    deployed: Deployed<'_>,
    job: &Name,
    trigger: &str,
    clock: &dyn Clock,
) -> Result<RunRecord, JobError> {
    let run = state.create_run(new_run(deployed, job, trigger, clock)?)?;
    launch_coordinator(provisioner, launch, deployed.architecture, job, &run.id).await?;
    Ok(run)
}

/// Cancel a run that is still going: end it as `Cancelled` in the ledger
/// (so its coordinator can no longer renew or finish it, and no supervisor
/// restarts it), then stop every process and container of the run, found by
/// its tags through each of `provisioners`. Items in flight are abandoned
/// where they are; their results, if any arrive, are refused. `Conflict` (in
/// `JobError::State`) for a finished run.
pub async fn cancel_run(
    state: &dyn StateStore,
    provisioners: &[Arc<dyn Provisioner>],
    run: &str,
    reason: &str,
) -> Result<(RunRecord, usize), JobError> {
    let cancelled = state.cancel_run(run, reason)?;
    let stopped =
        tear_down_run(provisioners, run).await.map_err(|source| JobError::TearDown { run: run.to_owned(), source })?;
    tracing::info!(run, stopped, reason, "run cancelled");
    Ok((cancelled, stopped))
}

/// Stop every live process and container of `run` (found by its tags, not
/// from memory) through each of `provisioners`.
pub async fn tear_down_run(
    provisioners: &[Arc<dyn Provisioner>],
    run: &str,
) -> Result<usize, mayfly_fleet::FleetError> {
    let mut stopped = 0;
    for provisioner in provisioners {
        let live = provisioner.inventory(&TagFilter::new().with(TAG_RUN, run)).await?;
        for resource in &live {
            provisioner.stop(&resource.id, Duration::from_secs(2)).await?;
        }
        stopped += live.len();
    }
    Ok(stopped)
}

/// Reap orphans (resources of runs not in `live_runs`) through each of
/// `provisioners`, then the networks no container uses any more.
pub async fn reap_fleet_orphans(
    provisioners: &[Arc<dyn Provisioner>],
    filter: &TagFilter,
    live_runs: &BTreeSet<String>,
    grace: Duration,
) -> Result<(Vec<mayfly_fleet::LiveResource>, Vec<String>), mayfly_fleet::FleetError> {
    let mut reaped = Vec::new();
    let mut networks = Vec::new();
    for provisioner in provisioners {
        reaped.extend(mayfly_fleet::reap_orphans(provisioner.as_ref(), filter, live_runs, grace).await?);
        networks.extend(provisioner.remove_unused_networks(filter).await?);
    }
    Ok((reaped, networks))
}

/// How long a requested run may wait for its first coordinator before the supervisor starts one.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(15);

/// `run` if it needs a new coordinator now — its lease lapsed, or it was
/// never claimed within [`UNCLAIMED_GRACE`] — by the rule `mayfly up` uses.
pub fn run_needing_coordinator(state: &dyn StateStore, run: &str) -> Result<Option<RunRecord>, JobError> {
    Ok(state.runs_needing_coordinator(UNCLAIMED_GRACE)?.into_iter().find(|record| record.id == run))
}

/// Resume a run whose coordinator is gone (see [`run_needing_coordinator`]):
/// stop whatever is left of its fleet, found by the run's tags through every
/// provisioner (the old coordinator's workers must not work on beside the new
/// one's), then start a new coordinator, which claims the lapsed lease and
/// puts the items the old fleet held back in the pool. The one path for
/// `mayfly up` and for a foreground `mayfly run` that saw its coordinator go.
/// Returns how many resources of the old fleet were stopped.
pub async fn resume_run(
    jobs: &crate::JobsConfig,
    architecture: &Architecture,
    run: &RunRecord,
) -> Result<usize, JobError> {
    let stopped = tear_down_run(&jobs.fleet, &run.id)
        .await
        .map_err(|source| JobError::TearDown { run: run.id.clone(), source })?;
    tracing::warn!(run = %run.id, stopped, "run lease lapsed; fleet torn down, starting a new coordinator");
    launch_coordinator(jobs.provisioner.as_ref(), &jobs.launch, architecture, &run.job, &run.id).await?;
    Ok(stopped)
}
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
const REAP_EVERY: Duration = Duration::from_secs(30);

/// The supervisor loop of `mayfly up`: restart coordinators of runs whose
/// lease lapsed (tearing their fleet down first), reap orphans, and fire job
/// schedules and alarms, recording the runs they start (and a schedule's
/// firing with its run, in one commit) under the leader's `fence`.
pub async fn supervise(
    config: Arc<ControlPlaneConfig>,
    fence: Fence,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    let Some(jobs) = config.jobs.clone() else { return Ok(()) };
    let provisioner = jobs.provisioner.as_ref();
    let mut alarms = crate::alarms::AlarmState::default();
    let mut since_reap = REAP_EVERY;
    // When this supervisor last started a coordinator for a run: until that
    // one has had UNCLAIMED_GRACE to claim the run, the run's lease still
    // looks lapsed, and resuming it again would tear the starting
    // coordinator down and start another — every second, for ever, where a
    // coordinator takes longer than that to start (a container on a busy host).
    let mut resumed: HashMap<String, Instant> = HashMap::new();
    loop {
        let needing = config.state.runs_needing_coordinator(UNCLAIMED_GRACE)?;
        resumed.retain(|run, _| needing.iter().any(|record| &record.id == run));
        for run in needing {
            if resumed.get(&run.id).is_some_and(|at| at.elapsed() < UNCLAIMED_GRACE) {
                continue;
            }
            resumed.insert(run.id.clone(), Instant::now());
            if let Err(error) = resume_run(&jobs, &config.architecture, &run).await {
                tracing::error!(run = %run.id, error = %error, "cannot restart the coordinator");
            }
        }
        since_reap += SUPERVISE_EVERY;
        if since_reap >= REAP_EVERY {
            since_reap = Duration::ZERO;
            let live_runs: BTreeSet<String> = config
                .state
                .runs(None, 100_000)?
                .into_iter()
                .filter(|r| !r.status.is_finished())
                .map(|r| r.id)
                .collect();
            let filter = TagFilter::new().with(TAG_PROJECT, config.architecture.name.as_str());
            match reap_fleet_orphans(&jobs.fleet, &filter, &live_runs, Duration::from_secs(5)).await {
                Ok((reaped, networks)) if !reaped.is_empty() || !networks.is_empty() => {
                    tracing::warn!(reaped = reaped.len(), networks = ?networks, "reaped orphaned processes and containers")
                }
                Ok(_) => {}
                Err(error) => tracing::error!(error = %error, "orphan reaping failed"),
            }
        }
        for due in due_job_triggers(&config, &fence, &mut alarms)? {
            let DueTrigger { job, trigger, fired } = due;
            let busy = config.state.runs(Some(&job), 20)?.iter().any(|r| !r.status.is_finished());
            let deployed = Deployed { architecture: &config.architecture, version: config.deployment_version };
            let mut writes: Vec<FencedWrite> = fired.into_iter().collect();
            if busy {
                tracing::info!(job = %job, trigger = %trigger, "job trigger fired while a run is going; skipped");
            } else {
                match new_run(deployed, &job, &trigger, config.clock.as_ref()) {
                    Ok(run) => writes.push(FencedWrite::CreateRun(run)),
                    Err(error) => tracing::error!(job = %job, error = %error, "cannot start a triggered run"),
                }
            }
            if writes.is_empty() {
                continue;
            }
            let created = match config.state.commit_fenced(Some(&fence), writes) {
                Ok(outcomes) => outcomes.into_iter().find_map(|outcome| match outcome {
                    FencedOutcome::RunCreated(run) => Some(*run),
                    _ => None,
                }),
                Err(error @ mayfly_state::StateError::Fenced { .. }) => return Err(error.into()),
                Err(error) => {
                    tracing::error!(job = %job, error = %error, "cannot start a triggered run");
                    continue;
                }
            };
            let Some(run) = created else { continue };
            // Recorded: were the launch lost, the run is restarted once unclaimed past UNCLAIMED_GRACE.
            match launch_coordinator(provisioner, &jobs.launch, &config.architecture, &job, &run.id).await {
                Ok(_) => tracing::info!(job = %job, run = %run.id, trigger = %trigger, "run started"),
                Err(error) => {
                    tracing::error!(job = %job, run = %run.id, error = %error, "cannot start a triggered run")
                }
            }
        }
        if shutdown.sleep_or_stop(SUPERVISE_EVERY).await {
            return Ok(());
        }
    }
}

/// A job trigger that fired: the job, the trigger's name, and for a
/// schedule the write that records its firing (committed with the run it
/// starts, or alone when the job is busy).
struct DueTrigger {
    job: Name,
    trigger: String,
    fired: Option<FencedWrite>,
}

/// Jobs whose schedule or alarm fired since the last look.
fn due_job_triggers(
    config: &ControlPlaneConfig,
    fence: &Fence,
    alarms: &mut crate::alarms::AlarmState,
) -> Result<Vec<DueTrigger>, ControlError> {
    let fired_alarms = alarms.evaluate(config)?;
    let mut due = Vec::new();
    for (job, spec) in &config.architecture.jobs {
        for trigger in &spec.triggers {
            match trigger {
                JobTrigger::Alarm(alarm) if fired_alarms.contains(alarm) => {
                    due.push(DueTrigger { job: job.clone(), trigger: format!("alarm:{alarm}"), fired: None })
                }
                JobTrigger::Schedule(schedule) => {
                    let cursor = format!("job-schedule:{job}:{schedule}");
                    let now = config.clock.now();
                    let last = config.state.consumer_cursor(&cursor)?;
                    if last == 0 {
                        // First sight of this schedule: start counting from now.
                        let sequence = now.as_millis().max(1) as u64;
                        let start = FencedWrite::SetConsumerCursor { consumer: cursor, sequence };
                        config.state.commit_fenced(Some(fence), vec![start])?;
                        continue;
                    }
                    if let Some(next) = schedule.next_after(mayfly_core::Timestamp::from_millis(last as i64))
                        && next <= now
                    {
                        let sequence = now.as_millis() as u64;
                        due.push(DueTrigger {
                            job: job.clone(),
                            trigger: format!("schedule:{schedule}"),
                            fired: Some(FencedWrite::SetConsumerCursor { consumer: cursor, sequence }),
                        });
                    }
                }
                JobTrigger::Alarm(_) => {}
            }
        }
    }
    Ok(due)
}
