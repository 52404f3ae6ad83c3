//! Batch-job commands: `run` (start a run and watch it), `runs`,
//! `run-report`, `results`, `reconcile`, `ps` (live Mayfly processes by tag),
//! and the hidden `coordinator` and `worker` commands that the provisioner
//! starts as processes of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mayfly_core::run::{RunReport, RunStatus, new_run_id};
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_fleet::{LocalProvisioner, TAG_PROJECT, TAG_ROLE, TAG_RUN, TAG_WORKER, TagFilter};
use mayfly_host::coordinator::{
    BrokerEndpoint, CoordinatorAddressSettings, CoordinatorSettings, group_commit_config, seal_own_output,
};
use mayfly_runtime::InvokerConfig;
use mayfly_spec::{Architecture, JobSource};
use mayfly_state::{NewRun, NewRunItem, RunRecord, StateStore};
use serde::Serialize;

use crate::exit_code::{CompletedWithFailures, NotFound, Refused};
use crate::output::{Output, json_millis, json_time, table};
use crate::project::{OpenProject, Project};
use mayfly_host::deployment::deployed_architecture;
use mayfly_host::jobs::{coordinator_launch, fleet_inventory, fleet_provisioners};

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    mayfly_core::parse_duration(text).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job.
    pub job: Name,
    /// Start the run and return at once, without watching it.
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this job's runs.
    #[arg(long)]
    pub job: Option<Name>,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RunReportArgs {
    pub run: String,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    pub job: Name,
    /// Only results written by this run.
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    pub job: Name,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Stop processes of runs that are finished or unknown (orphans).
    #[arg(long)]
    pub reap: bool,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[arg(long)]
    pub run: String,
    /// The broker's socket, for a coordinator in a container: it starts,
    /// watches and stops the run's worker containers (`mayfly broker`).
    #[arg(long, requires = "gateway")]
    pub broker: Option<PathBuf>,
    /// The gateway of the job's network, for a coordinator in a container:
    /// its own address on that network is the one that reaches the gateway.
    #[arg(long, requires = "broker")]
    pub gateway: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The coordinator's `https://` URL.
    #[arg(long)]
    pub coordinator: String,
    /// The coordinator's enrollment `https://` URL: the worker makes its own
    /// key and gets its certificate there with its one-time token.
    #[arg(long)]
    pub enroll: String,
    /// The one-time enrollment token its coordinator issued it (from the environment, never the command line).
    #[arg(long, env = "MAYFLY_ENROLLMENT_TOKEN", hide_env_values = true, hide = true)]
    pub enrollment_token: String,
    /// The run authority's certificate (PEM), the only one trusted.
    #[arg(long, env = "MAYFLY_RUN_AUTHORITY", hide_env_values = true, hide = true)]
    pub run_authority: String,
    #[arg(long)]
    pub run: String,
    #[arg(long)]
    pub worker: String,
    #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
    pub heartbeat_interval: Duration,
    /// Send this process's stdout and stderr to the coordinator (its
    /// provisioner cannot capture them: a Slurm or swarm node); the
    /// coordinator says so.
    #[arg(long)]
    pub forward_output: bool,
}

/// This executable, which starts the coordinators of the runs it starts.
fn mayfly_bin() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the mayfly executable")
}

pub async fn run(args: RunArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    let run = mayfly_host::jobs::start_run(&opened, &coordinator_launch(&located, mayfly_bin()?)?, &args.job, "manual")
        .await?;
    if args.detach {
        #[derive(Serialize)]
        struct Started<'a> {
            run: &'a str,
            job: &'a Name,
            status: RunStatus,
            created_at: String,
        }
        let started =
            Started { run: &run.id, job: &run.job, status: run.status, created_at: json_time(run.created_at) };
        return output.emit(&started, || format!("started run {}", run.id));
    }
    if !output.json {
        eprintln!("run {} of job `{}` started", run.id, args.job);
    }
    let (_, architecture) = deployed_architecture(&opened)?;
    let provisioners = fleet_provisioners(&architecture).await?;
    // With no `mayfly up` watching, a coordinator that dies would leave the
    // run `running` for ever: the watcher resumes it the way `mayfly up` does.
    let supervisor = RunSupervisor {
        jobs: mayfly_control::JobsConfig {
            provisioner: Arc::new(LocalProvisioner::new()),
            fleet: provisioners.clone(),
            launch: coordinator_launch(&located, mayfly_bin()?)?,
        },
        architecture: &architecture,
    };
    let draw = !output.json && crate::terminal::escapes_allowed(crate::terminal::Stream::Stderr);
    let record = watch_run(opened.state.as_ref(), &run.id, draw, &supervisor).await?;
    // The coordinator writes the report, then exits: wait until no process or container of the run is left.
    let filter = TagFilter::new().with(TAG_RUN, &run.id);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fleet_inventory(&provisioners, &filter).await?.is_empty() {
        if Instant::now() > deadline {
            tracing::warn!(run = %run.id, "processes of the finished run are still running; `mayfly ps --reap` stops them");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report: Option<RunReport> = record.report.as_deref().and_then(|r| serde_json::from_str(r).ok());
    #[derive(Serialize)]
    struct Ended<'a> {
        run: &'a str,
        status: RunStatus,
        error: Option<&'a str>,
        report: Option<RunReportView>,
    }
    let ended = Ended {
        run: &record.id,
        status: record.status,
        error: record.error.as_deref(),
        report: report.as_ref().map(RunReportView::from),
    };
    output.emit(&ended, || match &report {
        // Nothing to show in a report: say so rather than print a table of no workers.
        Some(report) if report.items_expected == 0 && record.status == RunStatus::Succeeded => {
            format!("run {} had no items: the source of job `{}` listed nothing", record.id, report.job)
        }
        Some(report) => render_report(report),
        None => format!("run {} ended: {}", record.id, record.status.as_str()),
    })?;
    let ended = format!(
        "run {} ended {}{}",
        record.id,
        record.status.as_str(),
        record.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    );
    match record.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::CompletedWithFailures => Err(CompletedWithFailures(ended).into()),
        _ => Err(Refused(ended).into()),
    }
}

/// What a foreground `mayfly run` needs to resume its run when its coordinator dies.
struct RunSupervisor<'a> {
    jobs: mayfly_control::JobsConfig,
    architecture: &'a Architecture,
}

/// How often the watcher checks that the run's coordinator still holds its lease.
const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Poll the ledger until the run finishes, drawing its progress on stderr
/// (a spinner while the coordinator lists the source, then a bar of the
/// items); resume the run (new coordinator, old fleet torn down) whenever its
/// coordinator's lease lapses, by the rule and the path `mayfly up` uses.
async fn watch_run(state: &dyn StateStore, run: &str, draw: bool, supervisor: &RunSupervisor<'_>) -> Result<RunRecord> {
    let mut progress = draw.then(RunProgress::start);
    let mut last_lease_check = Instant::now();
    loop {
        if last_lease_check.elapsed() >= LEASE_CHECK_INTERVAL {
            last_lease_check = Instant::now();
            if let Some(lapsed) = mayfly_control::jobs::run_needing_coordinator(state, run)? {
                let notice = format!(
                    "the coordinator of run {run} stopped renewing its lease (it died?); resuming the run here: its workers are torn down and a new coordinator takes over"
                );
                match &progress {
                    Some(progress) => progress.bar.println(&notice),
                    None => eprintln!("{notice}"),
                }
                mayfly_control::jobs::resume_run(&supervisor.jobs, supervisor.architecture, &lapsed)
                    .await
                    .with_context(|| format!("cannot resume run {run}; `mayfly up` resumes it too"))?;
            }
        }
        let record = state.run(run)?;
        let counts = state.run_item_counts(run)?;
        if let Some(progress) = &mut progress {
            let workers = state.run_workers(run)?;
            let live = workers.iter().filter(|w| w.stopped_at.is_none()).count();
            progress.show(&counts, live, record.status);
        }
        if record.status.is_finished() {
            if let Some(progress) = progress {
                progress.bar.finish_and_clear();
            }
            return Ok(record);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `mayfly run`'s progress on a terminal: a spinner until the run has items
/// (the coordinator lists its source first; a bar of 0/0 would say nothing),
/// then a bar of items settled out of the run's items.
struct RunProgress {
    bar: indicatif::ProgressBar,
    /// Whether the bar shows items (the run has some) rather than the spinner.
    counting: bool,
}

impl RunProgress {
    fn start() -> RunProgress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("a constant template parses"),
        );
        bar.set_message("listing source…");
        bar.enable_steady_tick(Duration::from_millis(200));
        RunProgress { bar, counting: false }
    }

    fn show(&mut self, counts: &mayfly_state::RunItemCounts, live_workers: usize, status: RunStatus) {
        if counts.total == 0 {
            // Still listing, or a source with nothing in it: the run's end says which.
            return;
        }
        if !self.counting {
            self.counting = true;
            self.bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} items  {per_sec}  eta {eta}  {msg}",
                )
                .expect("a constant template parses")
                .progress_chars("=> "),
            );
        }
        self.bar.set_length(counts.total);
        self.bar.set_position(counts.done + counts.dead_lettered);
        let failures = counts.attempts.saturating_sub(counts.done + counts.dead_lettered + counts.leased);
        self.bar.set_message(format!(
            "{live_workers} worker(s) live, {failures} failed attempt(s), {} dead-lettered, {}",
            counts.dead_lettered,
            status.as_str()
        ));
    }
}

/// A run's report as `--json` prints it.
#[derive(Serialize)]
struct RunReportView {
    run_id: String,
    job: Name,
    status: RunStatus,
    items_expected: u64,
    items_done: u64,
    items_failed_attempts: u64,
    items_dead_lettered: u64,
    retries: u64,
    workers: Vec<WorkerReportView>,
    started_at: String,
    finished_at: String,
    makespan_ms: u64,
    estimated_cost: f64,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct WorkerReportView {
    worker: String,
    items_done: u64,
    items_failed: u64,
    busy_ms: u64,
    started_at: String,
    stopped_at: Option<String>,
    end: String,
    log_object: Option<String>,
    log_sha256: Option<String>,
}

impl From<&RunReport> for RunReportView {
    fn from(report: &RunReport) -> RunReportView {
        RunReportView {
            run_id: report.run_id.clone(),
            job: report.job.clone(),
            status: report.status,
            items_expected: report.items_expected,
            items_done: report.items_done,
            items_failed_attempts: report.items_failed_attempts,
            items_dead_lettered: report.items_dead_lettered,
            retries: report.retries,
            workers: report
                .workers
                .iter()
                .map(|w| WorkerReportView {
                    worker: w.worker.clone(),
                    items_done: w.items_done,
                    items_failed: w.items_failed,
                    busy_ms: json_millis(w.busy),
                    started_at: json_time(w.started_at),
                    stopped_at: w.stopped_at.map(json_time),
                    end: w.end.clone(),
                    log_object: w.log_object.clone(),
                    log_sha256: w.log_sha256.clone(),
                })
                .collect(),
            started_at: json_time(report.started_at),
            finished_at: json_time(report.finished_at),
            makespan_ms: json_millis(report.makespan),
            estimated_cost: report.estimated_cost,
            notes: report.notes.clone(),
        }
    }
}

fn render_report(report: &RunReport) -> String {
    let mut text = format!(
        "run {} of `{}`: {}\n  items {} expected, {} done, {} dead-lettered; {} retries\n  makespan {:.1} s, estimated cost {:.6}\n",
        report.run_id,
        report.job,
        report.status.as_str(),
        report.items_expected,
        report.items_done,
        report.items_dead_lettered,
        report.retries,
        report.makespan.as_secs_f64(),
        report.estimated_cost
    );
    text.push_str(&table(
        &["WORKER", "DONE", "FAILED", "BUSY", "END", "LOG"],
        &report
            .workers
            .iter()
            .map(|w| {
                vec![
                    w.worker.clone(),
                    w.items_done.to_string(),
                    w.items_failed.to_string(),
                    format!("{:.1} s", w.busy.as_secs_f64()),
                    w.end.clone(),
                    w.log_object.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    for note in &report.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    text
}

pub fn runs(args: RunsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let runs = opened.state.runs(args.job.as_ref(), args.limit)?;
    #[derive(Serialize)]
    struct Row {
        run: String,
        job: Name,
        status: RunStatus,
        trigger: String,
        created_at: String,
        finished_at: Option<String>,
        total: u64,
        done: u64,
        dead_lettered: u64,
        error: Option<String>,
    }
    let mut rows = Vec::new();
    for run in runs {
        let counts = opened.state.run_item_counts(&run.id)?;
        rows.push(Row {
            run: run.id,
            job: run.job,
            status: run.status,
            trigger: run.trigger,
            created_at: run.created_at.to_rfc3339(),
            finished_at: run.finished_at.map(|t| t.to_rfc3339()),
            total: counts.total,
            done: counts.done,
            dead_lettered: counts.dead_lettered,
            error: run.error,
        });
    }
    output.emit(&rows, || {
        if rows.is_empty() {
            return "no runs yet; start one with `mayfly run JOB`".into();
        }
        table(
            &["RUN", "JOB", "STATUS", "TRIGGER", "CREATED", "DONE/TOTAL", "DEAD"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.run.clone(),
                        r.job.to_string(),
                        r.status.as_str().to_owned(),
                        r.trigger.clone(),
                        r.created_at.clone(),
                        format!("{}/{}", r.done, r.total),
                        r.dead_lettered.to_string(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

pub fn run_report(args: RunReportArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let record = opened.state.run(&args.run)?;
    let Some(report) = record.report.as_deref() else {
        return Err(NotFound(format!("run {} has no report yet (it is {})", args.run, record.status.as_str())).into());
    };
    let report: RunReport = serde_json::from_str(report).context("the stored report does not parse")?;
    output.emit(&RunReportView::from(&report), || render_report(&report))
}

pub fn results(args: ResultsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let results = opened.state.results(&args.job, args.run.as_deref(), None, args.limit)?;
    #[derive(Serialize)]
    struct Row {
        item: String,
        run: String,
        attempt: u32,
        worker: String,
        recorded_at: String,
        result: serde_json::Value,
    }
    let rows: Vec<Row> = results
        .into_iter()
        .map(|r| Row {
            item: r.item,
            run: r.run_id,
            attempt: r.attempt,
            worker: r.worker,
            recorded_at: r.recorded_at.to_rfc3339(),
            result: serde_json::from_slice(&r.result)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&r.result).into_owned())),
        })
        .collect();
    output.emit(&rows, || {
        if rows.is_empty() {
            return format!("no results for job `{}`", args.job);
        }
        table(
            &["ITEM", "RUN", "ATTEMPT", "WORKER", "RESULT"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.item.clone(),
                        r.run.clone(),
                        r.attempt.to_string(),
                        r.worker.clone(),
                        r.result.to_string().chars().take(80).collect(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

/// Compare a bucket-prefix job's source with its results and dead letters; queue what is missing.
pub async fn reconcile(args: ReconcileArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    let (_, architecture) = deployed_architecture(&opened)?;
    let spec =
        architecture.jobs.get(&args.job).ok_or_else(|| NotFound(format!("job `{}` is not deployed", args.job)))?;
    let JobSource::Bucket { bucket, prefix } = &spec.source else {
        bail!("reconcile compares a bucket-prefix source with its results; job `{}` reads from elsewhere", args.job);
    };
    let objects = opened.buckets.list(bucket, prefix.as_deref()).await?;
    let mut missing = Vec::new();
    for object in &objects {
        match opened.state.result(&args.job, &object.key) {
            Ok(_) => {}
            Err(mayfly_state::StateError::NotFound { .. }) => missing.push(object.key.clone()),
            Err(error) => return Err(error.into()),
        }
    }
    let mut requeued_run = None;
    if !missing.is_empty() {
        let run = start_reconcile_run(&located, &opened, &architecture, &args.job, bucket, &missing).await?;
        requeued_run = Some(run);
    }
    #[derive(Serialize)]
    struct Reconciled {
        objects: usize,
        with_results: usize,
        missing: Vec<String>,
        run: Option<String>,
    }
    let report =
        Reconciled { objects: objects.len(), with_results: objects.len() - missing.len(), missing, run: requeued_run };
    output.emit(&report, || match &report.run {
        None => format!("all {} object(s) under the source have results", report.objects),
        Some(run) => format!(
            "{} of {} object(s) had no result; run {run} processes them (mayfly runs)",
            report.missing.len(),
            report.objects
        ),
    })
}

async fn start_reconcile_run(
    located: &Project,
    opened: &OpenProject,
    architecture: &Architecture,
    job: &Name,
    bucket: &Name,
    missing: &[String],
) -> Result<String> {
    let spec = &architecture.jobs[job];
    let now = SystemClock.now();
    let run = opened.state.create_run(NewRun {
        id: new_run_id(now, rand::random()),
        job: job.clone(),
        deployment_version: opened.state.latest_deployment()?.map(|d| d.version),
        trigger: "reconcile".into(),
        deadline: now.saturating_add(spec.deadline),
        budget: spec.budget.or(architecture.policy.max_run_cost),
    })?;
    let items: Vec<NewRunItem> = missing
        .iter()
        .map(|key| NewRunItem {
            item: key.clone(),
            payload: serde_json::json!({"bucket": bucket, "key": key}).to_string().into_bytes(),
        })
        .collect();
    opened.state.add_run_items(&run.id, &items)?;
    mayfly_control::jobs::launch_coordinator(
        &LocalProvisioner::new(),
        &coordinator_launch(located, mayfly_bin()?)?,
        architecture,
        &run.job,
        &run.id,
    )
    .await?;
    Ok(run.id)
}

pub async fn ps(args: PsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    let (_, architecture) = deployed_architecture(&opened)?;
    let provisioners = fleet_provisioners(&architecture).await?;
    let filter = TagFilter::new().with(TAG_PROJECT, architecture.name.as_str());
    let live = fleet_inventory(&provisioners, &filter).await?;
    let mut reaped = Vec::new();
    if args.reap {
        let live_runs =
            opened.state.runs(None, 10_000)?.into_iter().filter(|r| !r.status.is_finished()).map(|r| r.id).collect();
        let networks;
        (reaped, networks) =
            mayfly_control::jobs::reap_fleet_orphans(&provisioners, &filter, &live_runs, Duration::from_secs(5))
                .await?;
        for network in networks {
            tracing::info!(network = %network, "removed a network no container uses");
        }
    }
    #[derive(Serialize)]
    struct Row {
        id: String,
        kind: String,
        role: Option<String>,
        run: Option<String>,
        /// A worker's id within its run (its `mayfly.worker` tag).
        worker: Option<String>,
        /// A container's address on its network.
        address: Option<String>,
        tags: BTreeMap<String, String>,
        reaped: bool,
    }
    let rows: Vec<Row> = live
        .iter()
        .map(|resource| Row {
            id: resource.id.0.clone(),
            kind: resource.kind.to_owned(),
            role: resource.tags.get(TAG_ROLE).map(str::to_owned),
            run: resource.tags.get(TAG_RUN).map(str::to_owned),
            worker: resource.tags.get(TAG_WORKER).map(str::to_owned),
            address: resource.address.clone(),
            tags: resource.tags.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            reaped: reaped.iter().any(|r| r.id == resource.id),
        })
        .collect();
    // Which `mayfly up` leads (on one host or several): for people, not in the JSON rows.
    let leader = match opened.state.lease(mayfly_control::leadership::CONTROL_PLANE_LEASE)? {
        Some(lease) if !lease.is_expired_at(SystemClock.now()) => {
            format!("control plane leader: {} (term {}, lease until {})", lease.holder, lease.term, lease.expires_at)
        }
        _ => "control plane leader: none (no `mayfly up` holds the lease)".to_owned(),
    };
    output.emit(&rows, || {
        if rows.is_empty() {
            return format!("{leader}\nno live Mayfly processes or containers for this project");
        }
        let listed = table(
            &["RESOURCE", "KIND", "ROLE", "RUN", "WORKER", "REAPED"],
            &rows
                .iter()
                .map(|r| {
                    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
                    vec![
                        r.id.clone(),
                        r.kind.clone(),
                        or_dash(&r.role),
                        or_dash(&r.run),
                        or_dash(&r.worker),
                        if r.reaped { "yes".into() } else { "-".into() },
                    ]
                })
                .collect::<Vec<_>>(),
        );
        format!("{leader}\n{listed}")
    })
}

/// `mayfly coordinator --run R`: the ephemeral master of one run (started by the provisioner).
pub async fn coordinator(args: CoordinatorArgs, project: Option<&Path>) -> Result<()> {
    let located = Project::locate(project)?;
    let telemetry = located.telemetry_settings()?;
    let opened = located.open(false)?;
    seal_own_output(&opened, &args.run, "coordinator")?;
    let settings = CoordinatorSettings {
        mayfly_bin: mayfly_bin()?,
        broker: match (args.broker, args.gateway) {
            (Some(socket), Some(gateway)) => Some(BrokerEndpoint { socket, gateway }),
            _ => None,
        },
        address: CoordinatorAddressSettings::from_env(),
        group_commit: group_commit_config()?,
        telemetry,
    };
    let prepared = mayfly_host::coordinator::prepare(&located, &opened, &args.run, settings).await?;
    crate::output::announce_certificate(&prepared.certificate_made);
    prepared.run().await?;
    Ok(())
}

/// `mayfly worker …`: one worker of a run (started by its coordinator through
/// the provisioner). It needs no project: the coordinator hands it the
/// function, so it runs the same in a container.
pub async fn worker(args: WorkerArgs) -> Result<()> {
    // First, so that nothing this process writes is lost on its node.
    let forward_output = if args.forward_output {
        Some(
            mayfly_jobs::output_forwarding::OutputForwarding::install()
                .context("cannot collect this worker's output to send it to its coordinator")?,
        )
    } else {
        None
    };
    let config = mayfly_jobs::worker::WorkerConfig {
        coordinator: args.coordinator,
        enrollment: mayfly_jobs::enrollment::EnrollmentTicket {
            url: args.enroll,
            token: args.enrollment_token,
            authority_pem: args.run_authority,
        },
        identity: mayfly_jobs::protocol::WorkerIdentity { run: args.run, worker: args.worker },
        heartbeat_interval: args.heartbeat_interval,
        coordinator_timeout: Duration::from_secs(30),
        invoker: InvokerConfig::with_clock(Arc::new(SystemClock)),
        forward_output,
    };
    let started = Instant::now();
    let processed = mayfly_jobs::worker::run(config).await?;
    tracing::info!(processed, seconds = started.elapsed().as_secs_f64(), "worker done");
    Ok(())
}
