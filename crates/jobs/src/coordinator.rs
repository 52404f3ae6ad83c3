//! The coordinator of one run: the ephemeral "master".
//!
//! It holds a renewable lease on its run, fills the run's durable item ledger
//! from the job's source, keeps a fleet of workers sized to the backlog,
//! serves them items over mutual TLS with a certificate authority of its own
//! (they pull; see [`crate::tls`]; each enrolls first with a one-time token
//! issued when it is started, see [`crate::enrollment`]), watches their heartbeats and the
//! provisioner, returns a lost worker's items to the pool at once and
//! provisions a replacement, and retries failed items with backoff up to the
//! job's attempts before dead-lettering them. Then it ends the run in a fixed
//! order, each step verified: nothing pending or in flight → every worker's
//! log sealed → every worker stopped and verified gone by an inventory of the
//! run's tags → the report written and the lease released. A queue-sourced
//! run that ends unfinished (at its deadline or budget, or failed) puts the
//! messages it did not finish back in the queue once its workers are gone (and a run that is finishing
//! takes no more from it).
//!
//! Everything it knows that matters is in the state store, so a coordinator
//! may die at any moment: the control plane tears down its fleet by tags and
//! starts another, which releases the items the dead fleet held and goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mayfly_buckets::Buckets;
use mayfly_core::run::{
    AfterFailure, RunReport, RunStatus, WorkerReport, after_item_failure, fleet_size, settled_run_error,
    status_of_settled_run,
};
use mayfly_core::{Clock, Name, Timestamp};
use mayfly_fleet::{
    ProcessSpec, Provisioner, ResourceId, ResourceState, TAG_ROLE, TAG_RUN, TAG_WORKER, TagFilter, Tags,
};
use mayfly_runtime::LAMBDA_INSTANCE_CREDENTIAL_LIFETIME;
use mayfly_spec::{Architecture, JobSource, JobSpec};
use mayfly_state::{GroupedCompletion, ItemCompletion, NewRunItem, RunItem, StateStore, WorkerRecord};
use tokio::sync::Mutex;

use crate::enrollment::{AUTHORITY_ENV, EnrollmentDesk, TOKEN_ENV};
use crate::group_commit::{GroupCommitConfig, GroupCommitter};
use crate::logs;
use crate::output::{self, CapturedOutput};
use crate::protocol::{
    AttemptOutcome, AttemptReport, COMPLETE_PATH, CREDENTIALS_PATH, CompleteRequest, CompleteResponse,
    CredentialsRequest, FunctionHandoff, HEARTBEAT_PATH, HELLO_PATH, HandedCredentials, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, LEASE_PATH, LOGS_PATH, LeaseRequest, LeaseResponse, LeasedItem, LogsRequest,
    OUTPUT_PATH, WorkerAssignment, WorkerAwsAccess, WorkerIdentity, decode, encode,
};
use crate::tls::{self, CertificateFingerprint, CertificatePolicy, RunAuthority};
use crate::traces::RunTraces;
use mayfly_control::telemetry::ItemSpanEnd;

/// Timings of one coordinator; the defaults suit local processes.
#[derive(Debug, Clone)]
pub struct CoordinatorTiming {
    /// How long the run lease lasts without renewal; renewed every third of it.
    pub run_lease_ttl: Duration,
    /// How often workers heartbeat (passed to them).
    pub heartbeat_interval: Duration,
    /// A worker silent this long is lost: its items go back at once.
    pub worker_timeout: Duration,
    /// A worker that has not called in this long after starting failed to start.
    pub worker_start_timeout: Duration,
    /// How often the coordinator looks at the ledger (counts, completion, fleet size).
    pub tick: Duration,
    /// How often it asks the provisioner whether each worker still runs, and checks the budget.
    pub process_check_interval: Duration,
    /// How long a worker told to stop may take before it is killed.
    pub stop_grace: Duration,
    /// Workers that fail to start in a row before the run fails.
    pub max_start_failures: u32,
    /// How completions share commits.
    pub group_commit: GroupCommitConfig,
}

impl Default for CoordinatorTiming {
    fn default() -> Self {
        CoordinatorTiming {
            run_lease_ttl: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            worker_timeout: Duration::from_secs(5),
            worker_start_timeout: Duration::from_secs(30),
            tick: Duration::from_millis(200),
            process_check_interval: Duration::from_secs(1),
            stop_grace: Duration::from_secs(10),
            max_start_failures: 3,
            group_commit: GroupCommitConfig::default(),
        }
    }
}

/// How to start a worker process: `program args… --coordinator URL --enroll URL --run R --worker W`,
/// with its enrollment token and the run authority's certificate in its environment.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    /// Host paths every worker reads (mounted read-only into containers).
    pub read_only_mounts: Vec<PathBuf>,
}

pub struct CoordinatorConfig {
    pub run_id: String,
    pub job: Name,
    pub architecture: Arc<Architecture>,
    pub state: Arc<dyn StateStore>,
    pub buckets: Buckets,
    pub provisioner: Arc<dyn Provisioner>,
    pub clock: Arc<dyn Clock>,
    pub launch: WorkerLaunch,
    /// The address the coordinator listens on and, unless `advertise` names
    /// another, tells workers to call: loopback for local workers, its own
    /// address on the job's network when it runs in a container.
    pub listen: IpAddr,
    /// The name or address workers on other hosts dial the coordinator by,
    /// when not `listen` (which may then be unspecified, `0.0.0.0`); its
    /// certificate names it.
    pub advertise: Option<mayfly_spec::AdvertisedHost>,
    /// The function workers run (handed to them in `/v1/hello`), its
    /// timeout already the job's item timeout.
    pub worker_function: mayfly_runtime::FunctionDefinition,
    /// The run's working directory (worker logs while the run lives).
    pub run_dir: PathBuf,
    /// The project's tags (with `mayfly.project`); the run's id and roles are added.
    pub tags: Tags,
    /// Who holds the run lease, e.g. `coordinator-<pid>`.
    pub owner: String,
    /// Encrypts workers' live log files until they are sealed (the CLI always gives one).
    pub keyring: Option<Arc<mayfly_buckets::crypto::Keyring>>,
    pub timing: CoordinatorTiming,
    pub tls: CoordinatorTls,
    /// Mints the AWS credentials of a worker function with `permissions`;
    /// `None`: workers' functions get none.
    pub aws: Option<WorkerAwsIssuer>,
}

/// How a coordinator gives its workers' function AWS credentials: workers
/// hold no key of the store, so it mints them, for the function's
/// `permissions`, each set expiring [`LAMBDA_INSTANCE_CREDENTIAL_LIFETIME`]
/// (or the item timeout, if longer) after it is minted and never after the
/// run's deadline; a worker asks for a new set before an item that would
/// outlive the one it holds.
#[derive(Debug, Clone)]
pub struct WorkerAwsIssuer {
    /// Mints the credentials; its `AWS_ENDPOINT_URL` must be one the
    /// workers' host reaches (the CLI decides, see ARCHITECTURE.md).
    pub issuer: Arc<dyn mayfly_runtime::CredentialIssuer>,
    /// The endpoint's certificate (PEM), which the worker writes to a file of its own.
    pub ca_bundle_pem: String,
}

/// The coordinator's side of mutual TLS with its workers.
#[derive(Debug, Clone)]
pub struct CoordinatorTls {
    /// Every name workers may dial the coordinator by (IP addresses or DNS
    /// names), named in its certificate. The address it listens on is always added.
    pub server_names: Vec<String>,
    pub certificates: CertificatePolicy,
}

impl Default for CoordinatorTls {
    fn default() -> Self {
        CoordinatorTls {
            server_names: vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            certificates: CertificatePolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("run {run} is held by another coordinator or already finished")]
    NotClaimed { run: String },
    #[error("job `{job}` is not in the deployed architecture")]
    UnknownJob { job: Name },
    #[error("the run lease of {run} was lost to another coordinator; this one stops without touching the fleet")]
    LeaseLost { run: String },
    #[error(transparent)]
    State(#[from] mayfly_state::StateError),
    #[error(transparent)]
    Fleet(#[from] mayfly_fleet::FleetError),
    #[error(transparent)]
    Buckets(#[from] mayfly_buckets::BucketError),
    #[error("cannot serve workers: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl CoordinatorError {
    /// The job's source names a bucket or object that does not exist.
    fn is_missing_source(&self) -> bool {
        matches!(
            self,
            CoordinatorError::Buckets(
                mayfly_buckets::BucketError::NoSuchBucket { .. } | mayfly_buckets::BucketError::NoSuchKey { .. }
            )
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerPhase {
    /// Started; has not called in yet.
    Starting,
    Alive,
    /// Told to stop; waiting for it to exit.
    Stopping,
    /// Exited or was stopped; its log is to be sealed.
    Gone,
}

#[derive(Debug)]
struct TrackedWorker {
    resource: ResourceId,
    phase: WorkerPhase,
    started: Instant,
    started_at: Timestamp,
    last_contact: Instant,
    holding: BTreeSet<String>,
    items_done: u64,
    items_failed: u64,
    busy: Duration,
    end: Option<String>,
    /// Told to stop because the fleet is larger than the backlog needs.
    surplus: bool,
    /// When its certificate's life is three-quarters spent (long runs only).
    retire_at: Option<Timestamp>,
}

/// What the HTTP handlers and the main loop share.
struct Shared {
    run_id: String,
    assignment: WorkerAssignment,
    max_attempts: u32,
    backoff: Duration,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    run_dir: PathBuf,
    keyring: Option<Arc<mayfly_buckets::crypto::Keyring>>,
    workers: Mutex<BTreeMap<String, TrackedWorker>>,
    /// Tokens issued and certificates signed: a worker calls in only with the one it enrolled with.
    enrollment: Arc<EnrollmentDesk>,
    finishing: std::sync::atomic::AtomicBool,
    /// Records completions, many to a commit.
    committer: GroupCommitter,
    /// Items handed to workers so far (leases), for the queue feeder's estimate of the ready backlog.
    handed_out: std::sync::atomic::AtomicU64,
    aws: Option<WorkerAwsIssuer>,
    /// The function workers run, for minting its credentials.
    worker_function: mayfly_runtime::FunctionDefinition,
    deadline: Timestamp,
    /// The run's and its items' spans.
    traces: RunTraces,
    /// Seals the output workers send themselves (their provisioner cannot capture it).
    forwarded_output: output::ForwardedOutput,
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

impl Shared {
    fn is_finishing(&self) -> bool {
        self.finishing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The worker must belong to this run, be known to this coordinator, and
    /// call in with the certificate issued to it (no worker speaks for
    /// another); it has called in (it is alive) from then on.
    async fn check_identity(&self, identity: &WorkerIdentity, peer: CertificateFingerprint) -> Result<(), Refusal> {
        self.check_worker(identity, peer, true).await
    }

    async fn check_worker(
        &self,
        identity: &WorkerIdentity,
        peer: CertificateFingerprint,
        calling_in: bool,
    ) -> Result<(), Refusal> {
        if identity.run != self.run_id {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("this coordinator serves run {}, not {}", self.run_id, identity.run),
            ));
        }
        let mut workers = self.workers.lock().await;
        let worker = workers.get_mut(&identity.worker).ok_or_else(|| {
            refuse(StatusCode::FORBIDDEN, format!("worker {} is not part of run {}", identity.worker, self.run_id))
        })?;
        if self.enrollment.certificate_of(&identity.worker) != Some(peer) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("the client certificate of this connection was not issued to worker {}", identity.worker),
            ));
        }
        if worker.phase == WorkerPhase::Gone {
            return Err(refuse(
                StatusCode::GONE,
                format!("worker {} was declared lost; its items were given to others", identity.worker),
            ));
        }
        if !calling_in {
            return Ok(());
        }
        worker.last_contact = Instant::now();
        if worker.phase == WorkerPhase::Starting {
            worker.phase = WorkerPhase::Alive;
        }
        Ok(())
    }

    /// Fresh credentials for the workers' function, if it has `permissions`
    /// and the coordinator has an issuer.
    fn mint_credentials(&self) -> Option<HandedCredentials> {
        let aws = self.aws.as_ref()?;
        let function = &self.worker_function;
        if function.permissions.is_empty() {
            return None;
        }
        let lifetime = LAMBDA_INSTANCE_CREDENTIAL_LIFETIME.max(function.timeout);
        let expires_at = self.clock.now().saturating_add(lifetime).min(self.deadline);
        let issued = aws.issuer.variables(function, expires_at);
        Some(HandedCredentials {
            variables: issued.variables,
            expires_at_millis: issued.expires_at.unwrap_or(expires_at).as_millis(),
        })
    }

    async fn should_stop(&self, worker: &str) -> bool {
        self.is_finishing()
            || self.workers.lock().await.get(worker).is_none_or(|w| w.surplus || w.phase == WorkerPhase::Stopping)
    }
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    refuse(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

/// Lease up to `max` items to `worker`, or tell it to stop.
async fn lease_for(shared: &Shared, worker: &str, max: usize) -> Result<(Vec<LeasedItem>, bool), Refusal> {
    if shared.should_stop(worker).await {
        return Ok((Vec::new(), true));
    }
    let items = shared.state.lease_run_items(&shared.run_id, worker, max.clamp(1, 100)).map_err(internal)?;
    shared.handed_out.fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let mut workers = shared.workers.lock().await;
    if let Some(tracked) = workers.get_mut(worker) {
        tracked.holding.extend(items.iter().map(|i| i.item.clone()));
    }
    drop(workers);
    Ok((handed_items(shared, worker, items), false))
}

/// Items leased to `worker` as they travel to it, each with the context of
/// the span its attempt starts.
fn handed_items(shared: &Shared, worker: &str, items: Vec<RunItem>) -> Vec<LeasedItem> {
    let traces = shared.traces.leased(worker, &items);
    items
        .into_iter()
        .zip(traces)
        .map(|(item, trace)| LeasedItem {
            item: item.item,
            attempt: item.attempts,
            payload: encode(&item.payload),
            trace,
        })
        .collect()
}

/// What to run; not yet calling in (see the protocol).
async fn hello_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<HelloRequest>,
) -> Result<Json<WorkerAssignment>, Refusal> {
    shared.check_worker(&request.identity, peer, false).await?;
    let mut assignment = shared.assignment.clone();
    assignment.aws = shared
        .mint_credentials()
        .zip(shared.aws.as_ref())
        .map(|(credentials, aws)| WorkerAwsAccess { credentials, ca_bundle_pem: aws.ca_bundle_pem.clone() });
    Ok(Json(assignment))
}

/// New AWS credentials for the worker's function.
async fn credentials_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<CredentialsRequest>,
) -> Result<Json<HandedCredentials>, Refusal> {
    shared.check_identity(&request.identity, peer).await?;
    let credentials = shared.mint_credentials().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            format!("the function of run {} gets no AWS credentials (no `permissions`, or no `[api]`)", shared.run_id),
        )
    })?;
    Ok(Json(credentials))
}

async fn lease_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<LeaseRequest>,
) -> Result<Json<LeaseResponse>, Refusal> {
    shared.check_identity(&request.identity, peer).await?;
    let (items, stop) = lease_for(&shared, &request.identity.worker, request.max).await?;
    Ok(Json(LeaseResponse { items, stop }))
}

/// What the ledger records for one reported attempt; a malformed report is refused before anything is recorded.
fn ledger_completion(shared: &Shared, report: &AttemptReport) -> Result<ItemCompletion, Refusal> {
    Ok(match report.outcome {
        AttemptOutcome::Done => {
            let result = report.result.as_deref().map(decode).transpose().map_err(|error| {
                refuse(StatusCode::BAD_REQUEST, format!("result of item {} is not base64: {error}", report.item))
            })?;
            ItemCompletion::Done { result: result.unwrap_or_default() }
        }
        AttemptOutcome::Failed => {
            let error = report.error.clone().unwrap_or_else(|| "failed".to_owned());
            let retry_at = match after_item_failure(
                report.attempt,
                shared.max_attempts,
                shared.backoff,
                shared.clock.now(),
                rand::random::<f64>(),
            ) {
                AfterFailure::RetryAt(at) => Some(at),
                AfterFailure::DeadLetter => None,
            };
            ItemCompletion::Failed { error, retry_at }
        }
    })
}

async fn complete_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<CompleteRequest>,
) -> Result<Json<CompleteResponse>, Refusal> {
    shared.check_identity(&request.identity, peer).await?;
    let worker = &request.identity.worker;
    if request.attempts.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "a completion must report at least one attempt"));
    }
    let mut completions = Vec::with_capacity(request.attempts.len());
    let mut log = Vec::new();
    for report in &request.attempts {
        completions.push(ledger_completion(&shared, report)?);
        if let Some(chunk) = &report.log {
            log.extend(decode(chunk).map_err(|error| {
                refuse(StatusCode::BAD_REQUEST, format!("log chunk of item {} is not base64: {error}", report.item))
            })?);
        }
    }
    // The logs of the call's attempts, in order, before any outcome is recorded.
    if !log.is_empty() {
        logs::append(&shared.run_dir, &shared.run_id, worker, &log, shared.keyring.as_deref()).map_err(internal)?;
    }
    // The next items ride on the answer, leased in the same commit as the
    // last outcome, and the commit is shared with the completions of other
    // workers that arrive meanwhile. The answer (the acknowledgement) waits for that commit.
    let stop = shared.should_stop(worker).await;
    let lease_next = if stop { 0 } else { request.lease_next.min(100) };
    let last = completions.len() - 1;
    let dead_lettered: Vec<bool> = completions
        .iter()
        .map(|completion| matches!(completion, ItemCompletion::Failed { retry_at: None, .. }))
        .collect();
    let grouped = request
        .attempts
        .iter()
        .zip(completions)
        .enumerate()
        .map(|(index, (report, completion))| GroupedCompletion {
            item: report.item.clone(),
            worker: worker.clone(),
            attempt: report.attempt,
            completion,
            lease_next: if index == last { lease_next } else { 0 },
        })
        .collect();
    let answers = shared.committer.complete(&shared.run_id, grouped).await.map_err(internal)?;
    let mut accepted = Vec::with_capacity(answers.len());
    let mut next = Vec::new();
    for ((answer, report), dead_lettered) in answers.into_iter().zip(&request.attempts).zip(dead_lettered) {
        let outcome = answer.map_err(internal)?;
        let end = match (outcome.accepted, report.outcome) {
            (false, _) => ItemSpanEnd::Stale,
            (true, AttemptOutcome::Done) => ItemSpanEnd::Done { duration_ms: report.duration_ms },
            (true, AttemptOutcome::Failed) => ItemSpanEnd::Failed { duration_ms: report.duration_ms, dead_lettered },
        };
        shared.traces.completed(&report.item, report.attempt, end);
        accepted.push(outcome.accepted);
        next.extend(outcome.leased);
    }
    shared.handed_out.fetch_add(next.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let mut workers = shared.workers.lock().await;
    if let Some(tracked) = workers.get_mut(worker) {
        for report in &request.attempts {
            tracked.holding.remove(&report.item);
            tracked.busy += Duration::from_millis(report.duration_ms);
            match report.outcome {
                AttemptOutcome::Done => tracked.items_done += 1,
                AttemptOutcome::Failed => tracked.items_failed += 1,
            }
        }
        tracked.holding.extend(next.iter().map(|i| i.item.clone()));
    }
    drop(workers);
    let items = handed_items(&shared, worker, next);
    Ok(Json(CompleteResponse { accepted, items, stop }))
}

async fn heartbeat_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, Refusal> {
    shared.check_identity(&request.identity, peer).await?;
    let stop = shared.should_stop(&request.identity.worker).await;
    Ok(Json(HeartbeatResponse { stop }))
}

async fn logs_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<LogsRequest>,
) -> Result<Json<serde_json::Value>, Refusal> {
    shared.check_identity(&request.identity, peer).await?;
    let chunk = decode(&request.chunk)
        .map_err(|error| refuse(StatusCode::BAD_REQUEST, format!("chunk is not base64: {error}")))?;
    logs::append(&shared.run_dir, &shared.run_id, &request.identity.worker, &chunk, shared.keyring.as_deref())
        .map_err(internal)?;
    Ok(Json(serde_json::json!({})))
}

/// Output a worker sends itself (its provisioner cannot capture it), sealed
/// into its output file as a capture would. Not calling in: a worker that
/// says why it fails before its first lease still failed to start.
async fn output_handler(
    State(shared): State<Arc<Shared>>,
    Extension(peer): Extension<CertificateFingerprint>,
    Json(request): Json<LogsRequest>,
) -> Result<Json<serde_json::Value>, Refusal> {
    shared.check_worker(&request.identity, peer, false).await?;
    let chunk = decode(&request.chunk)
        .map_err(|error| refuse(StatusCode::BAD_REQUEST, format!("output chunk is not base64: {error}")))?;
    let worker = &request.identity.worker;
    shared
        .forwarded_output
        .append(
            &output::worker_output_path(&shared.run_dir, worker),
            &output::output_stream(&shared.run_id, worker),
            &chunk,
        )
        .map_err(internal)?;
    Ok(Json(serde_json::json!({})))
}

/// Run the coordinator to the end of its run. Returns the final status.
/// The runtime a coordinator process runs [`run`] on: one thread for its
/// tasks (serving workers, watching them, renewing the lease) plus the
/// blocking pool. Its work per request is small, and with one thread it
/// wakes no other core, which is left to the workers' functions.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
}

pub async fn run(config: CoordinatorConfig) -> Result<RunStatus, CoordinatorError> {
    let timing = config.timing.clone();
    let state = config.state.clone();
    let run_id = config.run_id.clone();
    let job: JobSpec = config
        .architecture
        .jobs
        .get(&config.job)
        .cloned()
        .ok_or_else(|| CoordinatorError::UnknownJob { job: config.job.clone() })?;
    if !state.claim_run(&run_id, &config.owner, timing.run_lease_ttl)? {
        return Err(CoordinatorError::NotClaimed { run: run_id });
    }
    let run_record = state.run(&run_id)?;
    // The fleet of a previous coordinator was torn down; what it held is pending again.
    let released = state.release_all_leased_items(&run_id)?;
    if released > 0 {
        tracing::info!(run = %run_id, released, "resumed: items held by the previous fleet are pending again");
    }
    std::fs::create_dir_all(config.run_dir.join("workers")).map_err(CoordinatorError::Serve)?;
    if let Err(error) = fill_from_source(&config, &job).await {
        // A source that does not exist fails the run now: a new coordinator
        // would find it missing again, for ever. Anything else (a store that
        // did not answer) ends this coordinator, and the run is resumed.
        if !error.is_missing_source() {
            return Err(error);
        }
        let reason = format!("the job's source cannot be read: {error}");
        tracing::error!(run = %run_id, error = %reason, "run failed before it started");
        state.finish_run(&run_id, &config.owner, RunStatus::Failed, Some(&reason), None)?;
        return Ok(RunStatus::Failed);
    }

    let backoff = config
        .architecture
        .functions
        .get(&job.function)
        .map_or(Duration::from_secs(1), |function| function.retries.backoff);
    let batch = match &job.source {
        JobSource::Queue { batch, .. } => (*batch as usize).max(1),
        _ => 1,
    };
    let assignment = WorkerAssignment {
        job: config.job.to_string(),
        function: FunctionHandoff::from_definition(&config.worker_function),
        batch,
        aws: None,
    };
    let committer =
        GroupCommitter::start(state.clone(), run_id.clone(), timing.group_commit).map_err(CoordinatorError::Serve)?;
    // A fresh authority per coordinator: the fleet of an earlier one is gone, and so are its certificates.
    let validity = config.tls.certificates.authority_validity(config.clock.now(), run_record.deadline);
    let authority = RunAuthority::create(&run_id, validity)?;
    let enrollment = Arc::new(EnrollmentDesk::new(
        &run_id,
        authority,
        config.tls.certificates.clone(),
        run_record.deadline,
        config.clock.clone(),
    ));
    let shared = Arc::new(Shared {
        enrollment,
        run_id: run_id.clone(),
        assignment,
        max_attempts: job.max_attempts,
        backoff,
        state: state.clone(),
        clock: config.clock.clone(),
        run_dir: config.run_dir.clone(),
        keyring: config.keyring.clone(),
        workers: Mutex::new(BTreeMap::new()),
        finishing: std::sync::atomic::AtomicBool::new(false),
        committer,
        handed_out: std::sync::atomic::AtomicU64::new(0),
        aws: config.aws.clone(),
        worker_function: config.worker_function.clone(),
        deadline: run_record.deadline,
        traces: RunTraces::start(
            config.job.as_str(),
            &run_id,
            &run_record.trigger,
            match &job.source {
                JobSource::Queue { queue, .. } => Some(queue.to_string()),
                _ => None,
            },
            state.clone(),
        ),
        forwarded_output: output::ForwardedOutput::new(config.keyring.clone()),
    });
    let router = Router::new()
        .route(HELLO_PATH, post(hello_handler))
        .route(LEASE_PATH, post(lease_handler))
        .route(COMPLETE_PATH, post(complete_handler))
        .route(HEARTBEAT_PATH, post(heartbeat_handler))
        .route(LOGS_PATH, post(logs_handler))
        .route(OUTPUT_PATH, post(output_handler))
        .route(CREDENTIALS_PATH, post(credentials_handler))
        .with_state(shared.clone());
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(config.listen, 0)).await.map_err(CoordinatorError::Serve)?;
    let address = listener.local_addr().map_err(CoordinatorError::Serve)?;
    let enrollment_listener =
        tokio::net::TcpListener::bind(SocketAddr::new(config.listen, 0)).await.map_err(CoordinatorError::Serve)?;
    let enrollment_address = enrollment_listener.local_addr().map_err(CoordinatorError::Serve)?;
    let dialed = match &config.advertise {
        Some(host) => host.clone(),
        None if address.ip().is_unspecified() => {
            return Err(CoordinatorError::Serve(std::io::Error::other(format!(
                "the coordinator listens on {}, which workers cannot dial, and advertises no other address",
                address.ip()
            ))));
        }
        None => mayfly_spec::AdvertisedHost::Ip(address.ip()),
    };
    let mut server_names = config.tls.server_names.clone();
    server_names.push(address.ip().to_string());
    server_names.push(dialed.to_string());
    server_names.retain(|name| !name.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()));
    server_names.sort();
    server_names.dedup();
    let server_config = shared.enrollment.authority().server_config(&server_names, validity)?;
    let enrollment_config = shared.enrollment.authority().enrollment_server_config(&server_names, validity)?;
    let server = tokio::spawn(tls::serve(listener, server_config, router));
    let enrollment_server =
        tokio::spawn(tls::serve_enrollment(enrollment_listener, enrollment_config, shared.enrollment.clone().router()));
    let url = dialed.url(address.port());
    let enrollment_url = dialed.url(enrollment_address.port());
    tracing::info!(run = %run_id, url = %url, enrollment = %enrollment_url, "coordinator serving workers");

    let mut fleet = Fleet {
        config: &config,
        job: &job,
        shared: shared.clone(),
        url,
        enrollment_url,
        deadline: run_record.deadline,
        next_worker: 0,
        start_failures: 0,
        last_start_error: None,
        incarnation: run_record.coordinator_attempts.max(1),
        captures: BTreeMap::new(),
    };
    let outcome = fleet.drive(&timing).await;
    server.abort();
    enrollment_server.abort();
    outcome
}

/// Put the job's items into the run's ledger (idempotent: a resumed run adds nothing twice).
async fn fill_from_source(config: &CoordinatorConfig, job: &JobSpec) -> Result<(), CoordinatorError> {
    let items: Vec<NewRunItem> = match &job.source {
        JobSource::Bucket { bucket, prefix } => config
            .buckets
            .list(bucket, prefix.as_deref())
            .await?
            .into_iter()
            .map(|object| NewRunItem {
                payload: serde_json::json!({"bucket": bucket, "key": object.key, "size": object.size})
                    .to_string()
                    .into_bytes(),
                item: object.key,
            })
            .collect(),
        JobSource::Manifest { bucket, key } => {
            let (_, body) = config.buckets.get_bytes(bucket, key).await?;
            String::from_utf8_lossy(&body)
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| NewRunItem { item: line.to_owned(), payload: line.as_bytes().to_vec() })
                .collect()
        }
        JobSource::Queue { .. } => Vec::new(), // drained continuously by the main loop
    };
    for chunk in items.chunks(1_000) {
        config.state.add_run_items(&config.run_id, chunk)?;
    }
    Ok(())
}

/// Keeps a queue-fed run's ready backlog topped up from its queue: whenever
/// the items not yet handed to workers fall below [`QueueFeeder::LOW_WATERMARK`], up to
/// [`QueueFeeder::REFILL`] messages move into the run in one commit (on the blocking
/// pool, so serving workers does not wait on it). The backlog is estimated
/// from what moved in and what was handed out, corrected by the ledger's
/// count from time to time (items released or retried are pending again).
struct QueueFeeder {
    shared: Arc<Shared>,
    queue: Name,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl QueueFeeder {
    const LOW_WATERMARK: u64 = 2_000;
    const REFILL: usize = 1_000;
    /// How often it looks when the backlog is full or the queue is empty.
    const PAUSE: Duration = Duration::from_millis(10);
    const RECOUNT: Duration = Duration::from_secs(1);

    async fn run(self) -> Result<(), CoordinatorError> {
        use std::sync::atomic::Ordering;
        let (run, queue) = (self.shared.run_id.clone(), self.queue.clone());
        let mut ready = 0;
        let mut handed_before = 0;
        let mut counted_at: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) && !self.shared.is_finishing() {
            if counted_at.is_none_or(|at| at.elapsed() >= Self::RECOUNT) {
                let state = self.shared.state.clone();
                let run = run.clone();
                handed_before = self.shared.handed_out.load(Ordering::Relaxed);
                ready = blocking(move || state.run_item_counts(&run)).await?.pending;
                counted_at = Some(Instant::now());
            }
            let handed = self.shared.handed_out.load(Ordering::Relaxed);
            ready = ready.saturating_sub(handed - handed_before);
            handed_before = handed;
            if ready < Self::LOW_WATERMARK {
                let state = self.shared.state.clone();
                let (run, queue) = (run.clone(), queue.clone());
                let moved = blocking(move || state.move_queue_messages_into_run(&run, &queue, Self::REFILL)).await?;
                ready += moved;
                if moved as usize == Self::REFILL {
                    continue; // more may be waiting
                }
            }
            tokio::time::sleep(Self::PAUSE).await;
        }
        Ok(())
    }
}

/// A state store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, mayfly_state::StateError> + Send + 'static,
) -> Result<T, CoordinatorError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| CoordinatorError::Serve(std::io::Error::other(error.to_string())))?
        .map_err(CoordinatorError::from)
}

struct Fleet<'c> {
    config: &'c CoordinatorConfig,
    job: &'c JobSpec,
    shared: Arc<Shared>,
    url: String,
    /// Where workers enroll (TLS, no client certificate).
    enrollment_url: String,
    deadline: Timestamp,
    next_worker: u32,
    start_failures: u32,
    last_start_error: Option<String>,
    incarnation: u32,
    /// Each live worker's stdout and stderr, sealed as they come (it holds no keyring).
    captures: BTreeMap<String, CapturedOutput>,
}

impl Fleet<'_> {
    fn run_id(&self) -> &str {
        &self.config.run_id
    }

    async fn drive(&mut self, timing: &CoordinatorTiming) -> Result<RunStatus, CoordinatorError> {
        let state = self.config.state.clone();
        let run = state.run(self.run_id())?;
        let resumed_finishing = run.status == RunStatus::Finishing;
        let mut last_renewal = Instant::now();
        let mut last_process_check: Option<Instant> = None;
        let mut feeder: Option<tokio::task::JoinHandle<Result<(), CoordinatorError>>> = None;
        let feeder_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (status, error) = loop {
            if last_renewal.elapsed() >= timing.run_lease_ttl / 3 {
                if let Err(error) = state.renew_run_lease(self.run_id(), &self.config.owner, timing.run_lease_ttl) {
                    tracing::error!(error = %error, "run lease lost");
                    return Err(CoordinatorError::LeaseLost { run: self.run_id().to_owned() });
                }
                last_renewal = Instant::now();
            }
            // A run already finishing (resumed from a coordinator that died
            // while ending it) takes no more messages from its queue.
            if let (JobSource::Queue { queue, .. }, false, None) = (&self.job.source, resumed_finishing, &feeder) {
                let feeding =
                    QueueFeeder { shared: self.shared.clone(), queue: queue.clone(), stop: feeder_stop.clone() };
                feeder = Some(tokio::spawn(feeding.run()));
            }
            // The feeder ends only when told to, or on an error, which ends the coordinator as it did in this loop.
            if let Some(task) = feeder.take_if(|task| task.is_finished()) {
                task.await.map_err(|error| CoordinatorError::Serve(std::io::Error::other(error.to_string())))??;
            }
            // Asking the provisioner about every worker costs a /proc read each: not on every tick.
            let check_processes = last_process_check.is_none_or(|at| at.elapsed() >= timing.process_check_interval);
            if check_processes {
                self.retire_expiring_certificates().await;
                self.watch_workers(timing).await?;
                last_process_check = Some(Instant::now());
            }
            if self.start_failures >= timing.max_start_failures {
                let reason = self.last_start_error.clone().unwrap_or_else(|| "no detail".into());
                break (
                    RunStatus::Failed,
                    Some(format!("{} workers in a row failed to start: {reason}", self.start_failures)),
                );
            }
            let now = self.config.clock.now();
            if now > run.deadline {
                break (RunStatus::DeadlineExceeded, Some(format!("deadline {} passed", run.deadline)));
            }
            if let (Some(budget), true) = (run.budget, check_processes) {
                let cost = self.estimated_cost(&run).await;
                if cost > budget {
                    break (
                        RunStatus::BudgetExceeded,
                        Some(format!("estimated cost {cost:.4} exceeds the budget {budget:.4}")),
                    );
                }
            }
            // The queue before the ledger: the feeder moves messages from one
            // to the other in one commit, so a message is seen in at least one of them.
            let source_drained = match &self.job.source {
                JobSource::Queue { .. } if resumed_finishing => true,
                JobSource::Queue { queue, .. } => {
                    let stats = state.queue_stats(queue)?;
                    stats.visible + stats.delayed + stats.in_flight == 0
                }
                _ => true,
            };
            let counts = state.run_item_counts(self.run_id())?;
            if counts.pending == 0 && counts.leased == 0 && source_drained {
                break (
                    status_of_settled_run(counts.done, counts.dead_lettered),
                    settled_run_error(counts.done, counts.dead_lettered),
                );
            }
            self.size_fleet(counts.pending + counts.leased).await?;
            tokio::time::sleep(timing.tick).await;
        };
        // No message moves into a run that is ending.
        feeder_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(task) = feeder {
            task.await.map_err(|error| CoordinatorError::Serve(std::io::Error::other(error.to_string())))??;
        }
        self.finish(status, error, timing).await
    }

    /// Workers × wall time × `worker_hour` plus attempts × `invocation`, from `[pricing]`.
    async fn estimated_cost(&self, run: &mayfly_state::RunRecord) -> f64 {
        let pricing = &self.config.architecture.pricing;
        let workers = self.config.state.run_workers(self.run_id()).unwrap_or_default();
        let now = self.config.clock.now();
        let worker_seconds: f64 =
            workers.iter().map(|w| w.stopped_at.unwrap_or(now).duration_since(w.started_at).as_secs_f64()).sum();
        let live: f64 = {
            let tracked = self.shared.workers.lock().await;
            tracked.values().filter(|w| w.phase != WorkerPhase::Gone).map(|w| w.started.elapsed().as_secs_f64()).sum()
        };
        let attempts = self.config.state.run_item_counts(&run.id).map(|c| c.attempts).unwrap_or(0) as f64;
        (worker_seconds + live) / 3600.0 * pricing.worker_hour + attempts * pricing.invocation
    }

    fn worker_tags(&self, worker: &str) -> Tags {
        self.config.tags.clone().with(TAG_RUN, self.run_id()).with(TAG_ROLE, "worker").with(TAG_WORKER, worker)
    }

    /// A gone worker's token and certificate count no more.
    fn forget_worker_certificate(&self, worker: &str) {
        self.shared.enrollment.forget(worker);
    }

    /// Workers whose certificates are three-quarters spent take no new items;
    /// they finish what they hold and exit, and replacements get fresh ones.
    async fn retire_expiring_certificates(&self) {
        let now = self.config.clock.now();
        let mut workers = self.shared.workers.lock().await;
        for (name, worker) in workers.iter_mut() {
            let expiring = worker.retire_at.is_some_and(|at| now >= at);
            if expiring && matches!(worker.phase, WorkerPhase::Starting | WorkerPhase::Alive) {
                tracing::info!(run = %self.run_id(), worker = %name, "worker certificate nearly spent; the worker makes way for a replacement");
                worker.phase = WorkerPhase::Stopping;
            }
        }
    }

    /// Names a new worker, issues its token, tracks it as starting and opens
    /// its output capture; returns its name and how to start it.
    async fn prepare_worker(&mut self) -> Result<(String, ProcessSpec), CoordinatorError> {
        self.next_worker += 1;
        let worker = format!("w{}-{:03}", self.incarnation, self.next_worker);
        // Its certificate is signed when it enrolls; this says when a long run's worker retires.
        let validity = self.config.tls.certificates.worker_validity(self.config.clock.now(), self.deadline);
        let token = self.shared.enrollment.issue_token(&worker);
        let mut args = self.config.launch.args.clone();
        args.extend([
            "--coordinator".to_owned(),
            self.url.clone(),
            "--enroll".to_owned(),
            self.enrollment_url.clone(),
            "--run".to_owned(),
            self.run_id().to_owned(),
            "--worker".to_owned(),
            worker.clone(),
            "--heartbeat-interval".to_owned(),
            format!("{}ms", self.config.timing.heartbeat_interval.as_millis()),
        ]);
        // The token and the authority's certificate travel in the environment, not on the command line.
        let mut env = self.config.launch.env.clone();
        env.insert(TOKEN_ENV.to_owned(), token);
        env.insert(AUTHORITY_ENV.to_owned(), self.shared.enrollment.authority_pem().to_owned());
        let stderr = self.worker_output(&worker, &mut args)?;
        let spec = ProcessSpec {
            program: self.config.launch.program.clone(),
            args,
            env,
            working_dir: self.config.launch.working_dir.clone(),
            tags: self.worker_tags(&worker),
            stdout: stderr.clone(),
            stderr,
            memory: self.job.provisioner.memory,
            cpus: self.job.provisioner.cpus,
            read_only_mounts: self.config.launch.read_only_mounts.clone(),
            read_write_mounts: Vec::new(),
            user: None,
        };
        let now = self.config.clock.now();
        // Known before it exists: a worker may call in before `start` returns.
        self.shared.workers.lock().await.insert(
            worker.clone(),
            TrackedWorker {
                resource: ResourceId(String::new()),
                phase: WorkerPhase::Starting,
                started: Instant::now(),
                started_at: now,
                last_contact: Instant::now(),
                holding: BTreeSet::new(),
                items_done: 0,
                items_failed: 0,
                busy: Duration::ZERO,
                end: None,
                surplus: false,
                retire_at: validity.retire_at,
            },
        );
        Ok((worker, spec))
    }

    /// Where a new worker's stdout and stderr go: a FIFO of this host that
    /// is captured into its output file, when the provisioner's resources
    /// write their output files here; else nowhere (`/dev/null` on its
    /// node), and the worker is told to send its output itself
    /// (`--forward-output`, see [`crate::output_forwarding`]) into the same file.
    fn worker_output(&mut self, worker: &str, args: &mut Vec<String>) -> Result<Option<PathBuf>, CoordinatorError> {
        let sealed = output::worker_output_path(&self.config.run_dir, worker);
        let stream = output::output_stream(self.run_id(), worker);
        if !self.config.provisioner.output_reaches_this_host() {
            // Every worker has an output file, if empty: `mayfly logs RUN --process W` finds it.
            std::fs::OpenOptions::new().create(true).append(true).open(&sealed).map_err(CoordinatorError::Serve)?;
            args.push("--forward-output".to_owned());
            return Ok(None);
        }
        let capture =
            output::capture_output(sealed, stream, self.config.keyring.clone()).map_err(CoordinatorError::Serve)?;
        let fifo = capture.fifo().to_owned();
        self.captures.insert(worker.to_owned(), capture);
        Ok(Some(fifo))
    }

    /// Starts `count` new workers in one submission to the provisioner (one
    /// Slurm job array for them all); a failed submission counts as one
    /// start failure.
    async fn start_workers(&mut self, count: usize) -> Result<(), CoordinatorError> {
        if count == 0 {
            return Ok(());
        }
        let mut names = Vec::with_capacity(count);
        let mut specs = Vec::with_capacity(count);
        for _ in 0..count {
            let (worker, spec) = self.prepare_worker().await?;
            names.push(worker);
            specs.push(spec);
        }
        let now = self.config.clock.now();
        match self.config.provisioner.start_many(specs).await {
            Ok(resources) => {
                for (worker, resource) in names.into_iter().zip(resources) {
                    tracing::info!(run = %self.run_id(), worker = %worker, resource = %resource.0, "worker started");
                    if let Some(tracked) = self.shared.workers.lock().await.get_mut(&worker) {
                        tracked.resource = resource.clone();
                    }
                    self.config.state.upsert_worker(&WorkerRecord {
                        run_id: self.run_id().to_owned(),
                        worker: worker.clone(),
                        resource: resource.0.clone(),
                        started_at: now,
                        stopped_at: None,
                        end: None,
                        items_done: 0,
                        items_failed: 0,
                        busy: Duration::ZERO,
                        log_object: None,
                        log_sha256: None,
                    })?;
                }
            }
            Err(error) => {
                tracing::error!(run = %self.run_id(), workers = names.len(), error = %error, "cannot start workers");
                for worker in names {
                    self.shared.workers.lock().await.remove(&worker);
                    self.forget_worker_certificate(&worker);
                    if let Some(capture) = self.captures.remove(&worker) {
                        capture.finish().await;
                    }
                }
                self.start_failures += 1;
                self.last_start_error = Some(error.to_string());
            }
        }
        Ok(())
    }

    /// Notice workers that exited, went silent or never started; put their items back.
    async fn watch_workers(&mut self, timing: &CoordinatorTiming) -> Result<(), CoordinatorError> {
        let candidates: Vec<(String, ResourceId, WorkerPhase, Instant, Instant)> = {
            let workers = self.shared.workers.lock().await;
            workers
                .iter()
                .filter(|(_, w)| w.phase != WorkerPhase::Gone)
                .map(|(name, w)| (name.clone(), w.resource.clone(), w.phase, w.started, w.last_contact))
                .collect()
        };
        let mut ended = Vec::new();
        for (worker, resource, phase, started, last_contact) in candidates {
            let resource_state = self.config.provisioner.state(&resource).await?;
            let exited = !matches!(resource_state, ResourceState::Running);
            let silent = phase == WorkerPhase::Alive && last_contact.elapsed() > timing.worker_timeout;
            let never_started = phase == WorkerPhase::Starting && started.elapsed() > timing.worker_start_timeout;
            if exited || silent || never_started {
                ended.push((worker, resource, phase, resource_state, exited));
            }
        }
        // Silent but running (frozen, or cut off): make sure they can do no
        // more, all at once: a kill on a lost node may take a minute to be
        // verified, and the next silent worker's items must not wait for it.
        let mut kills = tokio::task::JoinSet::new();
        for (_, resource, _, _, _) in ended.iter().filter(|(.., exited)| !exited) {
            let (provisioner, resource) = (self.config.provisioner.clone(), resource.clone());
            kills.spawn(async move { provisioner.kill(&resource).await.ok() });
        }
        kills.join_all().await;
        for (worker, resource, phase, resource_state, exited) in ended {
            let told_to_stop = phase == WorkerPhase::Stopping || self.shared.is_finishing();
            let end = match (phase, exited) {
                (_, true) if told_to_stop => "stopped",
                (WorkerPhase::Starting, _) => "failed_to_start",
                (_, true) => "lost",
                _ => "killed",
            };
            if let Some(capture) = self.captures.remove(&worker) {
                capture.finish().await;
            }
            if phase == WorkerPhase::Starting {
                self.start_failures += 1;
                let stderr = output::read_output(
                    &output::worker_output_path(&self.config.run_dir, &worker),
                    &output::output_stream(self.run_id(), &worker),
                    self.config.keyring.as_deref(),
                )
                .unwrap_or_default();
                let stderr = String::from_utf8_lossy(&stderr);
                let mut said: Vec<String> = stderr.lines().rev().take(3).map(str::to_owned).collect();
                said.reverse();
                // What the engine knows of its end (a node that lacks the image).
                if exited {
                    match self.config.provisioner.end_reason(&resource).await {
                        Ok(Some(reason)) => said.push(reason),
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(run = %self.run_id(), worker = %worker, %error, "cannot ask why a worker ended")
                        }
                    }
                }
                self.last_start_error = Some(format!(
                    "worker {worker} {} before calling in{}",
                    match resource_state {
                        ResourceState::Exited { code: Some(code), .. } => format!("exited with status {code}"),
                        ResourceState::Exited { signal: Some(signal), .. } => format!("was killed by signal {signal}"),
                        ResourceState::Exited { .. } | ResourceState::Gone => "ended".to_owned(),
                        ResourceState::Running => "did not respond".to_owned(),
                    },
                    if said.is_empty() { String::new() } else { format!(": {}", said.join(" / ")) }
                ));
            } else if phase == WorkerPhase::Alive {
                self.start_failures = 0;
            }
            let released = self.config.state.release_worker_items(self.run_id(), &worker)?;
            self.shared.traces.released_from(&worker);
            if end != "stopped" {
                tracing::warn!(run = %self.run_id(), worker = %worker, end, released, "worker gone; its items are back in the pool");
            }
            let mut workers = self.shared.workers.lock().await;
            if let Some(tracked) = workers.get_mut(&worker) {
                tracked.phase = WorkerPhase::Gone;
                tracked.holding.clear();
                tracked.end = Some(end.to_owned());
            }
            drop(workers);
            self.forget_worker_certificate(&worker);
            self.record_worker(&worker, None).await?;
        }
        Ok(())
    }

    async fn record_worker(&self, worker: &str, sealed: Option<&logs::SealedLog>) -> Result<(), CoordinatorError> {
        let workers = self.shared.workers.lock().await;
        let Some(tracked) = workers.get(worker) else { return Ok(()) };
        let gone = tracked.phase == WorkerPhase::Gone;
        self.config.state.upsert_worker(&WorkerRecord {
            run_id: self.run_id().to_owned(),
            worker: worker.to_owned(),
            resource: tracked.resource.0.clone(),
            started_at: tracked.started_at,
            stopped_at: gone.then(|| self.config.clock.now()),
            end: tracked.end.clone(),
            items_done: tracked.items_done,
            items_failed: tracked.items_failed,
            busy: tracked.busy,
            log_object: sealed.map(|s| s.key.clone()),
            log_sha256: sealed.map(|s| s.sha256.clone()),
        })?;
        Ok(())
    }

    /// Start workers up to what the backlog needs; retire idle surplus ones.
    async fn size_fleet(&mut self, backlog: u64) -> Result<(), CoordinatorError> {
        let wanted = fleet_size(backlog, self.job.workers.items_per_worker, self.job.workers.max) as usize;
        let (live, idle_surplus): (usize, Vec<String>) = {
            let workers = self.shared.workers.lock().await;
            let live: Vec<(&String, &TrackedWorker)> = workers
                .iter()
                .filter(|(_, w)| matches!(w.phase, WorkerPhase::Starting | WorkerPhase::Alive) && !w.surplus)
                .collect();
            let surplus = live.len().saturating_sub(wanted);
            let idle: Vec<String> = live
                .iter()
                .filter(|(_, w)| w.holding.is_empty() && w.phase == WorkerPhase::Alive)
                .map(|(n, _)| (*n).clone())
                .take(surplus)
                .collect();
            (live.len(), idle)
        };
        if !idle_surplus.is_empty() {
            let mut workers = self.shared.workers.lock().await;
            for worker in idle_surplus {
                if let Some(tracked) = workers.get_mut(&worker) {
                    tracked.surplus = true;
                    tracked.phase = WorkerPhase::Stopping;
                }
            }
        }
        self.start_workers(wanted.saturating_sub(live)).await?;
        Ok(())
    }

    /// The end of a run, in order: stop handing out work → workers exit →
    /// (deadline or budget) unfinished queue messages back in the queue → logs sealed →
    /// every worker stopped and verified gone by inventory → report → lease released.
    async fn finish(
        &mut self,
        status: RunStatus,
        error: Option<String>,
        timing: &CoordinatorTiming,
    ) -> Result<RunStatus, CoordinatorError> {
        let state = self.config.state.clone();
        let run_id = self.run_id().to_owned();
        self.shared.finishing.store(true, std::sync::atomic::Ordering::SeqCst);
        state.set_run_status(&run_id, &self.config.owner, RunStatus::Finishing)?;
        // Ending a run may take longer than its lease (a swarm service or a
        // Slurm job takes seconds to stop): the lease is renewed until the
        // report is written, so no other coordinator takes the run over meanwhile.
        let _renewing = LeaseRenewal::start(state.clone(), &run_id, &self.config.owner, timing.run_lease_ttl);
        let mut notes = Vec::new();
        if let Some(error) = &error {
            notes.push(error.clone());
        }

        // 1. Workers see `stop` on their next call, finish what they hold and exit.
        let deadline = Instant::now() + timing.stop_grace;
        loop {
            self.watch_workers(timing).await?;
            let remaining = self.shared.workers.lock().await.values().filter(|w| w.phase != WorkerPhase::Gone).count();
            if remaining == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(timing.tick).await;
        }
        // Whatever is still running after the grace period is stopped now; its items go back.
        let stragglers: Vec<(String, ResourceId)> = self
            .shared
            .workers
            .lock()
            .await
            .iter()
            .filter(|(_, w)| w.phase != WorkerPhase::Gone)
            .map(|(n, w)| (n.clone(), w.resource.clone()))
            .collect();
        for (worker, resource) in &stragglers {
            self.config.provisioner.stop(resource, Duration::from_secs(2)).await?;
            let released = state.release_worker_items(&run_id, worker)?;
            self.shared.traces.released_from(worker);
            if released > 0 {
                notes.push(format!("worker {worker} was stopped holding {released} item(s); they are pending again"));
            }
            if let Some(tracked) = self.shared.workers.lock().await.get_mut(worker) {
                tracked.phase = WorkerPhase::Gone;
                tracked.end = Some("stopped".into());
            }
            self.forget_worker_certificate(worker);
        }
        for (_, capture) in std::mem::take(&mut self.captures) {
            capture.finish().await;
        }
        // No worker holds an item now. A run that ends with items unfinished
        // (stopped early, or failed: its workers could not start) puts their
        // messages back in its queue, for a later run: the queue is where a
        // message waits until its result is durable. This is idempotent, so
        // a coordinator resuming this step returns none twice.
        if let JobSource::Queue { queue, .. } = &self.job.source
            && !matches!(status, RunStatus::Succeeded | RunStatus::CompletedWithFailures)
        {
            let returned_now = state.return_unfinished_items_to_queues(&run_id)?;
            let returned = state.run_item_counts(&run_id)?.returned;
            tracing::info!(run = %run_id, queue = %queue, returned_now, returned, "unfinished items went back to their queue");
            if returned > 0 {
                notes.push(format!("{returned} unfinished item(s) went back to queue `{queue}`"));
            }
        }

        // 2. Seal every log of this run (this coordinator's workers and any earlier fleet's).
        let logs_bucket = self.job.logs.clone();
        let mut sealed_by_worker = BTreeMap::new();
        if let Some(bucket) = &logs_bucket {
            for worker in self.logged_workers() {
                let sealed = logs::seal(
                    &self.config.buckets,
                    bucket,
                    &self.config.run_dir,
                    &run_id,
                    &worker,
                    self.config.keyring.as_deref(),
                )
                .await
                .map_err(|error| CoordinatorError::Serve(std::io::Error::other(error.to_string())))?;
                sealed_by_worker.insert(worker, sealed);
            }
        } else {
            notes.push("the job names no `logs` bucket; worker logs were not kept".into());
        }
        let tracked_names: Vec<String> = self.shared.workers.lock().await.keys().cloned().collect();
        for worker in &tracked_names {
            self.record_worker(worker, sealed_by_worker.get(worker)).await?;
        }
        for (worker, sealed) in &sealed_by_worker {
            if !tracked_names.contains(worker) {
                // A worker of an earlier coordinator: record where its log went.
                if let Some(mut record) = state.run_workers(&run_id)?.into_iter().find(|r| &r.worker == worker) {
                    record.log_object = Some(sealed.key.clone());
                    record.log_sha256 = Some(sealed.sha256.clone());
                    record.end = record.end.or(Some("lost".into()));
                    record.stopped_at = record.stopped_at.or(Some(self.config.clock.now()));
                    state.upsert_worker(&record)?;
                }
            }
        }

        // 3. Every worker of the run stopped and verified gone by an inventory of its tags.
        let filter = TagFilter::new().with(TAG_RUN, &run_id).with(TAG_ROLE, "worker");
        for attempt in 0..3 {
            let live = self.config.provisioner.inventory(&filter).await?;
            if live.is_empty() {
                break;
            }
            for resource in &live {
                self.config.provisioner.stop(&resource.id, Duration::from_secs(2)).await?;
            }
            if attempt == 2 {
                notes.push(format!("{} worker(s) could not be verified gone", live.len()));
            }
        }

        // 4. The report, then the lease.
        let report = self.report(status, notes).await?;
        let report_json = serde_json::to_string(&report).expect("reports serialise"); // plain data
        state.finish_run(&run_id, &self.config.owner, status, error.as_deref(), Some(&report_json))?;
        if logs_bucket.is_some() {
            // The plaintext copies are sealed in the bucket now.
            std::fs::remove_dir_all(&self.config.run_dir).ok();
        }
        self.shared.traces.finish(status.as_str(), status == RunStatus::Succeeded);
        tracing::info!(run = %run_id, status = status.as_str(), "run finished");
        Ok(status)
    }

    /// Workers with a log file in the run directory.
    fn logged_workers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.config.run_dir.join("workers")) else { return Vec::new() };
        let mut workers: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.strip_suffix(".log")).map(str::to_owned))
            .collect();
        workers.sort();
        workers
    }

    async fn report(&self, status: RunStatus, notes: Vec<String>) -> Result<RunReport, CoordinatorError> {
        let state = &self.config.state;
        let run = state.run(self.run_id())?;
        let counts = state.run_item_counts(self.run_id())?;
        let workers = state.run_workers(self.run_id())?;
        // Per-worker counts come from the attempts ledger, not from what each
        // coordinator kept in memory: a coordinator that died took its
        // workers' tallies with it, the ledger did not lose them.
        let attempts_by_worker = state.run_attempt_counts_by_worker(self.run_id())?;
        let finished_at = self.config.clock.now();
        let started_at = run.started_at.unwrap_or(run.created_at);
        let failed_attempts: u64 = attempts_by_worker.values().map(|counts| counts.failed).sum();
        Ok(RunReport {
            run_id: run.id.clone(),
            job: run.job.clone(),
            status,
            items_expected: counts.total,
            items_done: counts.done,
            items_failed_attempts: failed_attempts,
            items_dead_lettered: counts.dead_lettered,
            retries: counts.attempts.saturating_sub(counts.done + counts.dead_lettered),
            workers: workers
                .iter()
                .map(|w| WorkerReport {
                    worker: w.worker.clone(),
                    items_done: attempts_by_worker.get(&w.worker).map_or(0, |counts| counts.done),
                    items_failed: attempts_by_worker.get(&w.worker).map_or(0, |counts| counts.failed),
                    busy: w.busy,
                    started_at: w.started_at,
                    stopped_at: w.stopped_at,
                    end: w.end.clone().unwrap_or_else(|| "stopped".into()),
                    log_object: w.log_object.clone(),
                    log_sha256: w.log_sha256.clone(),
                })
                .collect(),
            started_at,
            finished_at,
            makespan: finished_at.duration_since(started_at),
            estimated_cost: self.estimated_cost(&run).await,
            notes,
        })
    }
}

/// Renews a run's lease every third of its lifetime until dropped (the
/// coordinator's main loop renews it itself; this covers the end of a run).
struct LeaseRenewal(tokio::task::JoinHandle<()>);

impl LeaseRenewal {
    fn start(state: Arc<dyn StateStore>, run: &str, owner: &str, ttl: Duration) -> LeaseRenewal {
        let (run, owner) = (run.to_owned(), owner.to_owned());
        LeaseRenewal(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(ttl / 3);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = state.renew_run_lease(&run, &owner, ttl) {
                    tracing::error!(run = %run, error = %error, "run lease lost while the run was ending");
                    return;
                }
            }
        }))
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}
