//! The Slurm provisioner: resources are Slurm batch jobs (or tasks of a job
//! array), driven through Slurm's own commands — `sbatch --parsable` to
//! submit, `squeue --json` to follow, `scancel` to stop — not slurmrestd,
//! whose Debian build (22.05) serves only API versions 0.0.36-0.0.38.
//!
//! Tags: a job's name is `mayfly-<role>` (readable in `squeue`) and its
//! comment holds the exact tags as JSON, `{"mayfly":{...tags}}`, or for a job
//! array `{"mayfly":{...shared tags},"tasks":[{...task 0's own tags},...]}`
//! (a comment belongs to the whole array, a worker's id to one task). An
//! inventory reads every job from `squeue --json` and keeps those whose
//! comment parses so, so a coordinator or reaper started after a restart
//! finds every Mayfly job again. `wckey` is left alone: it needs Slurm's
//! accounting database, which many clusters (and the tests' one) lack.
//!
//! A resource id is `slurm:<job id>` for a single job and
//! `slurm:<array job id>_<task index>` for a task of an array, the names
//! `scancel` accepts. Task ids stay valid while the task waits inside the
//! array's pending record and after the scheduler gives it a record (and a
//! job id) of its own.
//!
//! The program runs as a process on the node Slurm picks, so the program,
//! its working directory, the spool and any output file a spec names must
//! be on a file system the nodes share. Output files are opened on the node
//! ([`Provisioner::output_reaches_this_host`] is false: a FIFO of the
//! submitting host never reaches a task on another node, so Mayfly's
//! coordinator names none for its workers, whose output goes to
//! `/dev/null`; they send it over their own channel). The batch script ends in
//! `exec env -i VAR=value… program args…`: the job's environment is exactly
//! the spec's, nothing of the submitter's (`--export=NONE`).
//!
//! The environment stays out of the batch script: slurmctld keeps every
//! script in its state directory for the job's life, and a worker's
//! environment holds its one-time enrollment token (an array's script would
//! hold every task's). Each task's environment goes instead into a file of
//! its own in the spool ([`SlurmSettings::spool`], a directory of mode 0700
//! that every node sees; `<spool>/<worker>.<unique>.env`, mode 0600: the
//! submitting user only), which the task reads and removes before it execs
//! its program. Without a spool the file goes beside the spec's output
//! file, and with neither the environment is in the script. A task that
//! runs a second time (requeued by an administrator, or a duplicate) finds
//! no file and exits with status 3 before starting anything: it can never
//! come back as the worker it was.
//!
//! Jobs are submitted with `--no-requeue`: a job whose node is lost or which
//! is preempted ends (`NODE_FAIL`, `PREEMPTED`) instead of coming back later
//! as the same worker; the coordinator sees it gone, puts its items back and
//! starts a replacement.
//!
//! `squeue --json` of Slurm 22.05 ignores its filters (`-j`, `--name`) and
//! always returns every job the controller remembers, finished ones included
//! for `MinJobAge` (300 s by default); each call's snapshot is reused for
//! [`SNAPSHOT_MAX_AGE`] so that watching a fleet of hundreds costs one call,
//! not hundreds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::{ByteSize, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::FleetError;
use crate::provisioner::{BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState};
use crate::registry::{CoordinatorPlacement, ProvisionerKindEntry};
use crate::tags::{TAG_ROLE, TAG_WORKER, TagFilter, Tags, check_tag};

/// How long one `squeue --json` snapshot answers `state` and `inventory`.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_millis(500);
/// How long `scancel` may take to end a job before `stop` gives up.
const CANCEL_VERIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one Slurm command may take (they retry a busy controller themselves).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_POLL: Duration = Duration::from_millis(100);
const LONGEST_POLL: Duration = Duration::from_secs(1);
/// The prefix of every Mayfly job's name.
const JOB_NAME_PREFIX: &str = "mayfly-";

/// Where and how jobs are submitted: the `provisioner` table of a job with
/// `kind = "slurm"`, plus the cluster to use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmSettings {
    /// `--partition`; the cluster's default when `None`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`, rounded up to whole minutes.
    pub time_limit: Option<Duration>,
    /// Arguments added to every `sbatch` before the script (`--constraint=…`).
    pub extra_args: Vec<String>,
    /// `SLURM_CONF` for the commands; the caller's environment decides when `None`.
    pub slurm_conf: Option<PathBuf>,
    /// The directory each task's environment file is written to (made with
    /// mode 0700 if missing); it must be at the same path on every node.
    /// `None`: beside the spec's stdout file, or in the script without one.
    pub spool: Option<PathBuf>,
}

/// Runs resources as Slurm batch jobs. Cheap to clone; clones share their
/// `squeue` snapshot.
#[derive(Debug, Clone)]
pub struct SlurmProvisioner {
    settings: Arc<SlurmSettings>,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
}

/// The jobs of one `squeue --json` call and when it was made.
type Snapshot = (Instant, Arc<Vec<SlurmJob>>);

/// One job (or array task) as `squeue --json` of Slurm 22.05 (API v0.0.38)
/// reports it; only the fields Mayfly reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SlurmJob {
    pub job_id: u64,
    /// The array's job id for an array task, else 0.
    #[serde(default)]
    pub array_job_id: u64,
    /// The task's index for an array task, else `null`; `null` too for the
    /// array's still pending remainder.
    #[serde(default)]
    pub array_task_id: Option<u64>,
    /// The tasks still pending in an array's remainder record (`0-9%2`), else empty.
    #[serde(default)]
    pub array_task_string: String,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, `NODE_FAIL`, …
    pub job_state: String,
    pub name: String,
    #[serde(default)]
    pub comment: String,
    /// The batch script's wait status (`exit code << 8 | signal`).
    #[serde(default)]
    pub exit_code: i64,
    /// Seconds since the epoch; 0 while pending.
    #[serde(default)]
    pub start_time: i64,
    /// The node running the batch script; empty while pending.
    #[serde(default)]
    pub batch_host: String,
}

#[derive(Debug, Deserialize)]
struct SqueueOutput {
    #[serde(default)]
    errors: Vec<serde_json::Value>,
    jobs: Vec<SlurmJob>,
}

/// slurmctld refuses a job whose comment is longer (`_test_strlen(…,
/// "comment", 1024)` in 22.05's job manager: "Pathname … too long").
const MAX_COMMENT: usize = 1024;

/// A Mayfly job's comment: its tags, and for an array each task's own,
/// listed (`tasks`) or, for values numbered in order as a coordinator names
/// its workers, as ranges (`ranges`: task `i` has `prefix` then `first + i`
/// zero-padded to `width` digits), so that an array of hundreds of tasks
/// fits in [`MAX_COMMENT`].
#[derive(Debug, Serialize, Deserialize)]
struct JobComment {
    mayfly: Tags,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tasks: Vec<Tags>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    ranges: std::collections::BTreeMap<String, TaskRange>,
}

/// One tag's values across an array's tasks: `prefix` + (`first` + task), `width` digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TaskRange {
    prefix: String,
    first: u64,
    width: usize,
}

impl TaskRange {
    fn value(&self, task: u64) -> String {
        format!("{}{:0width$}", self.prefix, self.first + task, width = self.width)
    }

    /// The range `values` follow, if they do.
    fn of(values: &[&str]) -> Option<TaskRange> {
        let first = values.first()?;
        let digits = first.len() - first.bytes().rev().take_while(u8::is_ascii_digit).count();
        let (prefix, number) = first.split_at(digits);
        let range = TaskRange { prefix: prefix.to_owned(), first: number.parse().ok()?, width: number.len() };
        values.iter().enumerate().all(|(task, value)| *value == range.value(task as u64)).then_some(range)
    }
}

impl JobComment {
    /// The comment of an array whose tasks have `own` tags besides `shared`:
    /// as ranges when every own tag is numbered in order, else listed.
    fn for_array(shared: Tags, own: Vec<Tags>) -> JobComment {
        let keys: Vec<&str> = own.first().map(|tags| tags.iter().map(|(key, _)| key).collect()).unwrap_or_default();
        let same_keys = own.iter().all(|tags| tags.iter().map(|(key, _)| key).eq(keys.iter().copied()));
        let ranges: Option<std::collections::BTreeMap<String, TaskRange>> = same_keys
            .then(|| {
                keys.iter()
                    .map(|key| {
                        let values: Vec<&str> = own.iter().filter_map(|tags| tags.get(key)).collect();
                        TaskRange::of(&values).map(|range| ((*key).to_owned(), range))
                    })
                    .collect()
            })
            .flatten();
        match ranges {
            Some(ranges) if !ranges.is_empty() => JobComment { mayfly: shared, tasks: Vec::new(), ranges },
            _ => JobComment { mayfly: shared, tasks: own, ranges: Default::default() },
        }
    }

    fn is_array(&self) -> bool {
        !self.tasks.is_empty() || !self.ranges.is_empty()
    }
}

impl SlurmJob {
    /// Whether some process of the job may be alive (or is about to be).
    pub fn is_running(&self) -> bool {
        matches!(
            self.job_state.as_str(),
            "PENDING"
                | "CONFIGURING"
                | "RUNNING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_FED"
                | "REQUEUE_HOLD"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
                | "RESV_DEL_HOLD"
                | "SPECIAL_EXIT"
        )
    }

    /// The job as a resource state.
    pub fn resource_state(&self) -> ResourceState {
        if self.is_running() {
            return ResourceState::Running;
        }
        let status = self.exit_code;
        let signal = (status & 0x7f) as i32;
        if signal != 0 {
            ResourceState::Exited { code: None, signal: Some(signal) }
        } else {
            ResourceState::Exited { code: Some(((status >> 8) & 0xff) as i32), signal: None }
        }
    }

    /// The resources this record stands for: a job, an array task, or (for
    /// the pending remainder of an array) every task still waiting in it.
    pub fn resources(&self) -> Vec<JobRef> {
        match (self.array_job_id, self.array_task_id) {
            (0, _) => vec![JobRef::Job(self.job_id)],
            (array, Some(task)) => vec![JobRef::Task { array, task }],
            (array, None) => array_task_indices(&self.array_task_string)
                .into_iter()
                .map(|task| JobRef::Task { array, task })
                .collect(),
        }
    }

    /// Whether this record stands for `resource`.
    fn stands_for(&self, resource: JobRef) -> bool {
        match resource {
            JobRef::Job(job) => self.job_id == job,
            JobRef::Task { array, task } => {
                self.array_job_id == array
                    && match self.array_task_id {
                        Some(own) => own == task,
                        None => array_task_indices(&self.array_task_string).contains(&task),
                    }
            }
        }
    }

    /// The tags of `resource` (one of [`resources`](Self::resources)) if this
    /// is a Mayfly job: named so, with tags in its comment.
    pub fn tags_of(&self, resource: JobRef) -> Option<Tags> {
        if !self.name.starts_with(JOB_NAME_PREFIX) {
            return None;
        }
        let comment: JobComment = serde_json::from_str(&self.comment).ok()?;
        let mut tags = comment.mayfly.clone();
        match resource {
            JobRef::Task { task, .. } if !comment.ranges.is_empty() => {
                for (key, range) in &comment.ranges {
                    tags.insert(key.clone(), range.value(task));
                }
            }
            JobRef::Task { task, .. } => {
                for (key, value) in comment.tasks.get(usize::try_from(task).ok()?)?.iter() {
                    tags.insert(key, value);
                }
            }
            JobRef::Job(_) if comment.is_array() => return None,
            JobRef::Job(_) => {}
        }
        Some(tags)
    }
}

/// A job or a task of a job array, as a resource id names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    Job(u64),
    Task { array: u64, task: u64 },
}

impl JobRef {
    const FORMAT: &str = "slurm:<job id> or slurm:<array job id>_<task>";

    pub fn parse(id: &ResourceId) -> Result<JobRef, FleetError> {
        let invalid = || FleetError::InvalidResourceId { id: id.clone(), kind: "slurm", expected: JobRef::FORMAT };
        let rest = id.0.strip_prefix("slurm:").ok_or_else(invalid)?;
        let parsed = match rest.split_once('_') {
            Some((array, task)) => JobRef::Task {
                array: array.parse().map_err(|_| invalid())?,
                task: task.parse().map_err(|_| invalid())?,
            },
            None => JobRef::Job(rest.parse().map_err(|_| invalid())?),
        };
        match parsed {
            JobRef::Job(0) | JobRef::Task { array: 0, .. } => Err(invalid()),
            parsed => Ok(parsed),
        }
    }

    pub fn resource_id(self) -> ResourceId {
        ResourceId(format!("slurm:{self}"))
    }
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobRef::Job(job) => write!(f, "{job}"),
            JobRef::Task { array, task } => write!(f, "{array}_{task}"),
        }
    }
}

/// The indices in a pending array's task string: `0-9`, `1,3-5`, `0-99%4`, `0-10:2`.
fn array_task_indices(text: &str) -> Vec<u64> {
    let text = text.split('%').next().unwrap_or("");
    let mut indices = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        let (range, step) = part.split_once(':').map_or((part, 1), |(range, step)| (range, step.parse().unwrap_or(1)));
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(first), Ok(last)) = (first.parse::<u64>(), last.parse::<u64>()) {
            indices.extend((first..=last.min(first.saturating_add(1_000_000))).step_by(step.max(1)));
        }
    }
    indices
}

impl SlurmProvisioner {
    pub fn new(settings: SlurmSettings) -> SlurmProvisioner {
        SlurmProvisioner { settings: Arc::new(settings), snapshot: Arc::default() }
    }

    pub fn settings(&self) -> &SlurmSettings {
        &self.settings
    }

    /// Submits one job array, a task per spec, in one `sbatch --array`;
    /// returns the tasks' ids in the specs' order. Every spec must have the
    /// same working directory and limits (they are the array's); their
    /// programs, arguments, environments, outputs and tags may differ.
    pub async fn start_array(&self, specs: Vec<ProcessSpec>) -> Result<Vec<ResourceId>, FleetError> {
        let Some(first) = specs.first() else { return Ok(Vec::new()) };
        let program = first.program.clone();
        let invalid = |reason: String| FleetError::InvalidSpec { program: program.clone(), reason };
        for spec in &specs[1..] {
            if spec.working_dir != first.working_dir || spec.memory != first.memory || spec.cpus != first.cpus {
                return Err(invalid(
                    "the tasks of one Slurm job array need the same working directory, memory and cpus".into(),
                ));
            }
        }
        let shared = shared_tags(&specs);
        for spec in &specs {
            check_spec(spec)?;
        }
        let mut tasks = Vec::new();
        let mut env_files = EnvFiles::default();
        let mut script =
            String::from("#!/bin/sh\n# Submitted by Mayfly: one task per worker.\ncase \"$SLURM_ARRAY_TASK_ID\" in\n");
        for (index, spec) in specs.iter().enumerate() {
            let own: Tags = spec.tags.iter().filter(|(key, _)| shared.get(key).is_none()).collect();
            tasks.push(own);
            let _ =
                writeln!(script, "{index}) {} ;;", task_lines(spec, self.settings.spool.as_deref(), &mut env_files)?);
        }
        script.push_str("*) echo \"mayfly: no task $SLURM_ARRAY_TASK_ID in this array\" >&2; exit 2 ;;\nesac\n");
        let comment = JobComment::for_array(shared.clone(), tasks);
        let mut args = self.submit_args(first, &shared, &comment)?;
        args.push(format!("--array=0-{}", specs.len() - 1));
        // One output file per task: each spec names its own.
        args.push("--output=/dev/null".into());
        let array_job = self.sbatch(&args, &script).await?;
        env_files.keep();
        tracing::debug!(array = array_job, tasks = specs.len(), program = %program.display(), "submitted Slurm job array");
        Ok((0..specs.len()).map(|task| JobRef::Task { array: array_job, task: task as u64 }.resource_id()).collect())
    }

    async fn start_job(&self, spec: ProcessSpec) -> Result<ResourceId, FleetError> {
        check_spec(&spec)?;
        let comment = JobComment { mayfly: spec.tags.clone(), tasks: Vec::new(), ranges: Default::default() };
        let mut args = self.submit_args(&spec, &spec.tags, &comment)?;
        // The script's own redirections write the spec's files: slurmstepd
        // opening them itself would hang, past `scancel`, on a FIFO no one reads.
        args.push("--output=/dev/null".into());
        let mut env_files = EnvFiles::default();
        let script = format!(
            "#!/bin/sh\n# Submitted by Mayfly.\n{}\n",
            task_lines(&spec, self.settings.spool.as_deref(), &mut env_files)?
        );
        let job = self.sbatch(&args, &script).await?;
        env_files.keep();
        let id = JobRef::Job(job).resource_id();
        tracing::debug!(id = %id, program = %spec.program.display(), "submitted Slurm job");
        Ok(id)
    }

    /// `sbatch`'s arguments for a job (or array) started from `spec`.
    fn submit_args(&self, spec: &ProcessSpec, tags: &Tags, comment: &JobComment) -> Result<Vec<String>, FleetError> {
        let settings = &self.settings;
        let role = tags.get(TAG_ROLE).unwrap_or("resource");
        let comment = serde_json::to_string(comment).map_err(|error| FleetError::InvalidSpec {
            program: spec.program.clone(),
            reason: format!("cannot encode the tags: {error}"),
        })?;
        if comment.len() > MAX_COMMENT {
            return Err(FleetError::InvalidSpec {
                program: spec.program.clone(),
                reason: format!(
                    "the tags take {} characters in the job's comment, over Slurm's limit of {MAX_COMMENT} \
                     (an array's tasks' own tags fit when numbered in order, as workers are)",
                    comment.len()
                ),
            });
        }
        let mut args = vec![
            "--parsable".to_owned(),
            "--no-requeue".to_owned(),
            "--export=NONE".to_owned(),
            "--input=/dev/null".to_owned(),
            format!("--job-name={JOB_NAME_PREFIX}{role}"),
            format!("--comment={comment}"),
            format!("--chdir={}", spec.working_dir.display()),
            "--ntasks=1".to_owned(),
        ];
        if let Some(partition) = &settings.partition {
            args.push(format!("--partition={partition}"));
        }
        if let Some(account) = &settings.account {
            args.push(format!("--account={account}"));
        }
        if let Some(qos) = &settings.qos {
            args.push(format!("--qos={qos}"));
        }
        if let Some(limit) = settings.time_limit {
            args.push(format!("--time={}", limit.as_secs().div_ceil(60).max(1)));
        }
        if let Some(cpus) = spec.cpus {
            args.push(format!("--cpus-per-task={}", (cpus.ceil() as u64).max(1)));
        }
        if let Some(memory) = spec.memory {
            args.push(format!("--mem={}M", memory_megabytes(memory)));
        }
        args.extend(settings.extra_args.iter().cloned());
        Ok(args)
    }

    /// Submits `script` with `args`; returns the job id `--parsable` prints
    /// (`<job id>` or `<job id>;<cluster>`).
    async fn sbatch(&self, args: &[String], script: &str) -> Result<u64, FleetError> {
        let output = self.run_command("sbatch", args, Some(script)).await.map_err(|error| match error {
            FleetError::SlurmCommand { command, reason } => {
                FleetError::CannotStart { program: PathBuf::from(command), reason }
            }
            other => other,
        })?;
        let first = output.split([';', '\n']).next().unwrap_or("").trim();
        first.parse().map_err(|_| FleetError::CannotStart {
            program: PathBuf::from("sbatch"),
            reason: format!("`sbatch --parsable` printed `{}`, not a job id", output.trim()),
        })
    }

    /// Runs a Slurm command; its standard output, or an error naming the
    /// command with its exit status and standard error.
    async fn run_command(&self, command: &str, args: &[String], stdin: Option<&str>) -> Result<String, FleetError> {
        let mut process = tokio::process::Command::new(command);
        process.args(args).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        process.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(conf) = &self.settings.slurm_conf {
            process.env("SLURM_CONF", conf);
        }
        let described = || format!("{command} {}", args.join(" "));
        let mut child = process.spawn().map_err(|error| FleetError::SlurmCommand {
            command: described(),
            reason: format!("cannot run it: {error}"),
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(|error| FleetError::SlurmCommand {
                command: described(),
                reason: format!("cannot write its input: {error}"),
            })?;
            drop(pipe);
        }
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| FleetError::SlurmCommand {
                command: described(),
                reason: format!("no answer within {COMMAND_TIMEOUT:?} (is slurmctld up?)"),
            })?
            .map_err(|error| FleetError::SlurmCommand { command: described(), reason: error.to_string() })?;
        if !output.status.success() {
            return Err(FleetError::SlurmCommand {
                command: described(),
                reason: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
            });
        }
        String::from_utf8(output.stdout)
            .map_err(|_| FleetError::SlurmCommand { command: described(), reason: "its output is not UTF-8".into() })
    }

    /// Every job the controller knows, from a new `squeue --json`.
    async fn fresh_jobs(&self) -> Result<Arc<Vec<SlurmJob>>, FleetError> {
        let mut snapshot = self.snapshot.lock().await;
        let text = self.run_command("squeue", &["--json".into()], None).await?;
        let parsed: SqueueOutput = serde_json::from_str(&text).map_err(|error| FleetError::SlurmCommand {
            command: "squeue --json".into(),
            reason: format!("unexpected output (Slurm 22.05's shape expected): {error}"),
        })?;
        if !parsed.errors.is_empty() {
            return Err(FleetError::SlurmCommand {
                command: "squeue --json".into(),
                reason: format!("errors: {}", serde_json::Value::Array(parsed.errors)),
            });
        }
        let jobs = Arc::new(parsed.jobs);
        *snapshot = Some((Instant::now(), jobs.clone()));
        Ok(jobs)
    }

    /// Every job the controller knows, from a snapshot at most [`SNAPSHOT_MAX_AGE`] old.
    async fn jobs(&self) -> Result<Arc<Vec<SlurmJob>>, FleetError> {
        if let Some((taken, jobs)) = self.snapshot.lock().await.as_ref()
            && taken.elapsed() < SNAPSHOT_MAX_AGE
        {
            return Ok(jobs.clone());
        }
        self.fresh_jobs().await
    }

    async fn job_state(&self, job: JobRef, fresh: bool) -> Result<ResourceState, FleetError> {
        let jobs = if fresh { self.fresh_jobs().await? } else { self.jobs().await? };
        Ok(jobs
            .iter()
            .find(|candidate| candidate.stands_for(job))
            .map_or(ResourceState::Gone, SlurmJob::resource_state))
    }

    async fn wait_for_end(&self, job: JobRef, timeout: Duration) -> Result<ResourceState, FleetError> {
        let deadline = Instant::now() + timeout;
        let mut poll = FIRST_POLL;
        loop {
            let state = self.job_state(job, true).await?;
            let now = Instant::now();
            if !state.is_running() || now >= deadline {
                return Ok(state);
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
            poll = (poll * 2).min(LONGEST_POLL);
        }
    }

    async fn scancel(&self, job: JobRef, signal: Option<&str>) -> Result<(), FleetError> {
        let mut args = vec!["--quiet".to_owned()];
        if let Some(signal) = signal {
            args.extend(["--full".to_owned(), format!("--signal={signal}")]);
        }
        args.push(job.to_string());
        self.run_command("scancel", &args, None).await.map(drop)
    }

    async fn terminate(&self, id: &ResourceId, grace: Option<Duration>) -> Result<(), FleetError> {
        let job = JobRef::parse(id)?;
        let jobs = self.fresh_jobs().await?;
        let Some(record) = jobs.iter().find(|candidate| candidate.stands_for(job)) else { return Ok(()) };
        if !record.is_running() {
            return Ok(());
        }
        // A job that has not started has no process to signal, and Slurm 22.05's
        // `scancel --signal` retries on a pending array task for about 95 s.
        let started = record.job_state != "PENDING";
        drop(jobs);
        if let (Some(grace), true) = (grace, started) {
            self.scancel(job, Some("TERM")).await.ok();
            if !self.wait_for_end(job, grace).await?.is_running() {
                return Ok(());
            }
            tracing::info!(id = %id, ?grace, "Slurm job still running after SIGTERM and the grace period; cancelling it");
        }
        if started {
            self.scancel(job, Some("KILL")).await.ok();
        }
        // Ends the allocation (and a pending job); an error only if Slurm cannot.
        if let Err(error) = self.scancel(job, None).await
            && self.job_state(job, true).await?.is_running()
        {
            return Err(error);
        }
        if !self.wait_for_end(job, CANCEL_VERIFY_TIMEOUT).await?.is_running() {
            return Ok(());
        }
        Err(FleetError::StillRunning { id: id.clone(), waited: CANCEL_VERIFY_TIMEOUT })
    }

    async fn inventory_jobs(&self, filter: &TagFilter) -> Result<Vec<LiveResource>, FleetError> {
        let jobs = self.fresh_jobs().await?;
        Ok(jobs
            .iter()
            .filter(|job| job.is_running())
            .flat_map(|job| job.resources().into_iter().map(move |resource| (job, resource)))
            .filter_map(|(job, resource)| {
                let tags = job.tags_of(resource)?;
                tags.matches(filter).then(|| LiveResource {
                    id: resource.resource_id(),
                    kind: "slurm-job",
                    tags,
                    started_at: (job.start_time > 0)
                        .then(|| Timestamp::from_millis(job.start_time.saturating_mul(1000))),
                    address: (!job.batch_host.is_empty()).then(|| job.batch_host.clone()),
                })
            })
            .collect())
    }
}

/// Slurm in the provisioner registry: the coordinator is a process of its
/// own on the submit host, workers run as the submitting user.
pub(crate) const KIND: ProvisionerKindEntry = ProvisionerKindEntry {
    name: "slurm",
    summary: "Slurm batch jobs: processes on the cluster's nodes, the program and run directory on a shared file system.",
    options: &["partition", "account", "qos", "time_limit", "extra_args", "spool"],
    coordinator: CoordinatorPlacement::OwnProcess,
    workers_in_subnet: false,
    connect: connect_kind,
};

/// A provisioner for the cluster `SLURM_CONF` (or Slurm's defaults) names,
/// once `squeue --json` answers there.
fn connect_kind() -> BoxFuture<'static, Result<Arc<dyn Provisioner>, FleetError>> {
    Box::pin(async {
        let slurm = SlurmProvisioner::new(SlurmSettings::default());
        slurm.fresh_jobs().await?;
        Ok(Arc::new(slurm) as Arc<dyn Provisioner>)
    })
}

impl Provisioner for SlurmProvisioner {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    /// A task runs on whichever node Slurm picks: a FIFO of this host does not reach it.
    fn output_reaches_this_host(&self) -> bool {
        false
    }

    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
        Box::pin(self.start_job(spec))
    }

    /// One `sbatch --array` for them all (a single job for one spec).
    fn start_many(&self, specs: Vec<ProcessSpec>) -> BoxFuture<'_, Result<Vec<ResourceId>, FleetError>> {
        Box::pin(async move {
            match <[ProcessSpec; 1]>::try_from(specs) {
                Ok([spec]) => Ok(vec![self.start_job(spec).await?]),
                Err(specs) => self.start_array(specs).await,
            }
        })
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.job_state(JobRef::parse(id)?, false).await })
    }

    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.wait_for_end(JobRef::parse(id)?, timeout).await })
    }

    fn stop<'a>(&'a self, id: &'a ResourceId, grace: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, Some(grace)))
    }

    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, None))
    }

    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
        Box::pin(self.inventory_jobs(filter))
    }
}

/// The tags every spec carries with the same value.
fn shared_tags(specs: &[ProcessSpec]) -> Tags {
    let Some(first) = specs.first() else { return Tags::new() };
    first.tags.iter().filter(|(key, value)| specs.iter().all(|spec| spec.tags.get(key) == Some(value))).collect()
}

fn check_spec(spec: &ProcessSpec) -> Result<(), FleetError> {
    let invalid = |reason: String| FleetError::InvalidSpec { program: spec.program.clone(), reason };
    for (key, value) in spec.tags.iter() {
        check_tag(key, value).map_err(invalid)?;
    }
    if let Some(bad) = spec.env.keys().find(|key| {
        key.is_empty()
            || key.starts_with(|c: char| c.is_ascii_digit())
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) {
        return Err(invalid(format!("environment variable name `{bad}` cannot be passed through a batch script")));
    }
    if !spec.working_dir.is_absolute() {
        return Err(invalid(format!("working directory {} is not absolute", spec.working_dir.display())));
    }
    for (what, path) in [("stdout", &spec.stdout), ("stderr", &spec.stderr)] {
        if let Some(path) = path
            && !path.is_absolute()
        {
            return Err(invalid(format!("{what} file {} is not absolute", path.display())));
        }
    }
    Ok(())
}

/// Environment files written for one submission; removed again unless
/// [`keep`](Self::keep) says the submission went through.
#[derive(Default)]
struct EnvFiles(Vec<PathBuf>);

impl EnvFiles {
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for EnvFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            std::fs::remove_file(path).ok();
        }
    }
}

/// A name no other environment file of this process (or another) takes,
/// starting with `base`.
fn env_file_path(base: &Path) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let count = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{}-{nanos:08x}-{count}.env", std::process::id()));
    PathBuf::from(name)
}

/// Makes the spool directory if missing and keeps it the submitting user's only (0700).
fn prepare_spool(spool: &Path, program: &Path) -> Result<(), FleetError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(spool)
        .and_then(|()| std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o700)))
        .map_err(|error| FleetError::CannotStart {
            program: program.to_owned(),
            reason: format!("cannot prepare the Slurm spool directory {}: {error}", spool.display()),
        })
}

/// The shell lines of one job or task: with a spool (or an output file),
/// its environment written to a file of its own there (mode 0600) that the
/// lines read once and remove, then [`exec_line`]; with neither, the
/// environment in the script.
fn task_lines(spec: &ProcessSpec, spool: Option<&Path>, files: &mut EnvFiles) -> Result<String, FleetError> {
    if spec.env.is_empty() {
        return Ok(exec_line(spec, Some(&spec.env)));
    }
    let base = match (spool, spec.stdout.as_deref()) {
        (Some(spool), _) => {
            prepare_spool(spool, &spec.program)?;
            // Named after the worker when its name is a plain file name.
            let worker = spec.tags.get(TAG_WORKER).filter(|name| {
                !name.starts_with('.')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
            spool.join(worker.unwrap_or("task"))
        }
        (None, Some(stdout)) => stdout.to_owned(),
        (None, None) => return Ok(exec_line(spec, Some(&spec.env))),
    };
    let path = env_file_path(&base);
    let mut text = String::from("set --");
    for (key, value) in &spec.env {
        let _ = write!(text, " {}", shell_quote(&format!("{key}={value}")));
    }
    text.push('\n');
    let written = {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
    };
    written.map_err(|error| FleetError::CannotStart {
        program: spec.program.clone(),
        reason: format!("cannot write the job's environment file {}: {error}", path.display()),
    })?;
    files.0.push(path.clone());
    let file = shell_quote(&path.display().to_string());
    Ok(format!(
        "[ -r {file} ] || {{ echo \"mayfly: \"{file}\" is gone: this task ran before and does not run again\" >>{}; exit 3; }}; \
         . {file}; rm -f {file}; {}",
        shell_quote(&output_path(spec.stderr.as_deref())),
        exec_line(spec, None)
    ))
}

/// `exec env -i VAR=value… program args… >>stdout 2>>stderr`, every word
/// quoted for `sh`; with `env` `None`, the variables are the shell's
/// positional parameters (`"$@"`).
fn exec_line(spec: &ProcessSpec, env: Option<&std::collections::BTreeMap<String, String>>) -> String {
    let mut line = String::from("exec env -i");
    match env {
        Some(env) => {
            for (key, value) in env {
                let _ = write!(line, " {}", shell_quote(&format!("{key}={value}")));
            }
        }
        None => line.push_str(" \"$@\""),
    }
    let program = if spec.program.is_relative() && spec.program.components().count() > 1 {
        spec.working_dir.join(&spec.program)
    } else {
        spec.program.clone()
    };
    let _ = write!(line, " {}", shell_quote(&program.display().to_string()));
    for arg in &spec.args {
        let _ = write!(line, " {}", shell_quote(arg));
    }
    let _ = write!(
        line,
        " </dev/null >>{} 2>>{}",
        shell_quote(&output_path(spec.stdout.as_deref())),
        shell_quote(&output_path(spec.stderr.as_deref()))
    );
    line
}

fn output_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "/dev/null".to_owned(), |path| path.display().to_string())
}

/// `value` as one `sh` word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn memory_megabytes(memory: ByteSize) -> u64 {
    memory.bytes().div_ceil(1024 * 1024).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, exit_code: i64) -> SlurmJob {
        SlurmJob {
            job_id: 7,
            array_job_id: 0,
            array_task_id: None,
            array_task_string: String::new(),
            job_state: state.into(),
            name: "mayfly-worker".into(),
            comment: r#"{"mayfly":{"mayfly.run":"r1","mayfly.role":"worker"}}"#.into(),
            exit_code,
            start_time: 0,
            batch_host: String::new(),
        }
    }

    #[test]
    fn a_job_state_and_wait_status_become_a_resource_state() {
        assert_eq!(job("PENDING", 0).resource_state(), ResourceState::Running);
        assert_eq!(job("RUNNING", 0).resource_state(), ResourceState::Running);
        assert_eq!(job("FAILED", 768).resource_state(), ResourceState::Exited { code: Some(3), signal: None });
        assert_eq!(job("CANCELLED", 15).resource_state(), ResourceState::Exited { code: None, signal: Some(15) });
        assert_eq!(job("COMPLETED", 0).resource_state(), ResourceState::Exited { code: Some(0), signal: None });
        assert_eq!(job("NODE_FAIL", 0).resource_state(), ResourceState::Exited { code: Some(0), signal: None });
    }

    #[test]
    fn an_array_task_carries_the_shared_tags_and_its_own() {
        let mut task = job("RUNNING", 0);
        task.array_job_id = 5;
        task.array_task_id = Some(1);
        task.comment = r#"{"mayfly":{"mayfly.run":"r1"},"tasks":[{"mayfly.worker":"a"},{"mayfly.worker":"b"}]}"#.into();
        assert_eq!(task.resources(), vec![JobRef::Task { array: 5, task: 1 }]);
        let tags = task.tags_of(JobRef::Task { array: 5, task: 1 }).expect("a Mayfly task");
        assert_eq!(tags.get("mayfly.run"), Some("r1"));
        assert_eq!(tags.get("mayfly.worker"), Some("b"));
        assert_eq!(task.tags_of(JobRef::Job(7)), None, "an array's comment names no single job");
        let mut pending = task.clone();
        pending.array_task_id = None;
        pending.array_task_string = "0-1".into();
        assert_eq!(pending.resources(), vec![JobRef::Task { array: 5, task: 0 }, JobRef::Task { array: 5, task: 1 }]);
        assert!(pending.stands_for(JobRef::Task { array: 5, task: 0 }));
        let first = pending.tags_of(JobRef::Task { array: 5, task: 0 }).expect("a pending Mayfly task");
        assert_eq!(first.get("mayfly.worker"), Some("a"));
        let mut foreign = job("RUNNING", 0);
        foreign.name = "analysis".into();
        assert_eq!(foreign.tags_of(JobRef::Job(7)), None, "not a Mayfly job");
        foreign.name = "mayfly-worker".into();
        foreign.comment = "please keep".into();
        assert_eq!(foreign.tags_of(JobRef::Job(7)), None, "a comment that is not Mayfly's tags");
    }

    #[test]
    fn an_arrays_numbered_tags_are_ranges_so_hundreds_of_tasks_fit_in_a_comment() {
        let own: Vec<Tags> = (1..=200).map(|n| Tags::new().with("mayfly.worker", format!("w2-{n:03}"))).collect();
        let comment = JobComment::for_array(Tags::new().with("mayfly.run", "r1"), own);
        assert!(comment.tasks.is_empty(), "{comment:?}");
        let text = serde_json::to_string(&comment).unwrap();
        assert!(text.len() < 200, "{text}");
        let mut task = job("RUNNING", 0);
        (task.array_job_id, task.array_task_id, task.comment) = (5, Some(199), text);
        let tags = task.tags_of(JobRef::Task { array: 5, task: 199 }).expect("a Mayfly task");
        assert_eq!(tags.get("mayfly.worker"), Some("w2-200"));
        assert_eq!(tags.get("mayfly.run"), Some("r1"));
        assert_eq!(task.tags_of(JobRef::Job(7)), None, "an array's comment names no single job");
        let unordered = vec![Tags::new().with("mayfly.worker", "b"), Tags::new().with("mayfly.worker", "a")];
        assert_eq!(JobComment::for_array(Tags::new(), unordered).tasks.len(), 2, "listed when not numbered in order");
    }

    #[test]
    fn words_are_quoted_for_sh() {
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(JobRef::parse(&ResourceId("slurm:42".into())).ok(), Some(JobRef::Job(42)));
        assert_eq!(JobRef::parse(&ResourceId("slurm:42_3".into())).ok(), Some(JobRef::Task { array: 42, task: 3 }));
        assert!(JobRef::parse(&ResourceId("pid:1:2".into())).is_err());
        assert!(JobRef::parse(&ResourceId("slurm:0".into())).is_err());
        assert_eq!(array_task_indices("1,3-5%2"), vec![1, 3, 4, 5]);
        assert_eq!(array_task_indices("0-6:3"), vec![0, 3, 6]);
    }
}
