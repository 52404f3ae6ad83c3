//! A worker: a stateless process that enrolls with its coordinator (its own
//! key, made here, and a one-time token: [`crate::enrollment`]), asks it what
//! to run (`/v1/hello`), pulls items from it (over mutual TLS, with the
//! certificate it enrolled for), runs the job's function on each (warm, through the
//! runtime's `Invoker`, handing it the trace context its lease carried),
//! reports the outcome, heartbeats, and streams its log as it goes. Started
//! with `--forward-output` (its provisioner cannot capture its stdout and
//! stderr), it also sends its own output to the coordinator
//! ([`crate::output_forwarding`]), the last of it (with its error, if it
//! fails once enrolled) before it returns.
//!
//! It stops when the coordinator says so (the run is finishing, or the
//! worker is surplus), when the coordinator cannot be reached for
//! `coordinator_timeout` (it died; the control plane tears the fleet down),
//! or on SIGTERM from the provisioner.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mayfly_core::TraceContext;
use mayfly_runtime::{FunctionDefinition, Invocation, Invoker, InvokerConfig, IssuedCredentials};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::output_forwarding::OutputForwarding;
use crate::protocol::{
    AttemptOutcome, AttemptReport, COMPLETE_PATH, CREDENTIALS_PATH, CompleteRequest, CompleteResponse,
    CredentialsRequest, HEARTBEAT_PATH, HELLO_PATH, HandedCredentials, HeartbeatRequest, HeartbeatResponse,
    HelloRequest, ItemEvent, LEASE_PATH, LOGS_PATH, LeaseRequest, LeaseResponse, LeasedItem, LogsRequest, OUTPUT_PATH,
    WorkerAssignment, WorkerIdentity, decode, encode,
};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `https://127.0.0.1:PORT` of the coordinator.
    pub coordinator: String,
    /// Where and with which token it enrolls, trusting which authority.
    pub enrollment: crate::enrollment::EnrollmentTicket,
    pub identity: WorkerIdentity,
    pub heartbeat_interval: Duration,
    /// Give up (exit non-zero) after the coordinator has been unreachable this long.
    pub coordinator_timeout: Duration,
    pub invoker: InvokerConfig,
    /// This process's output, to send to the coordinator (`--forward-output`:
    /// its provisioner cannot capture it); `None`: the provisioner captures it.
    pub forward_output: Option<Arc<OutputForwarding>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the coordinator at {url} for {seconds} s: {source}")]
    CoordinatorUnreachable { url: String, seconds: u64, source: reqwest::Error },
    #[error("the coordinator refused {path}: HTTP {status}: {body}")]
    Refused { path: &'static str, status: u16, body: String },
    #[error("cannot set up TLS to the coordinator: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot enroll: {0}")]
    Enroll(#[from] crate::enrollment::EnrollError),
    #[error("cannot build the HTTPS client: {0}")]
    Client(reqwest::Error),
    #[error("the coordinator handed over an unusable function: {0}")]
    BadAssignment(String),
    #[error("the function's program `{program}` does not exist (looked in {working_dir} and on PATH)")]
    ProgramMissing { program: String, working_dir: String },
    #[error("{0}")]
    Internal(String),
}

struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Client {
    /// POST `body` to `path`, retrying connection failures until `timeout`.
    async fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &'static str,
        body: &Req,
    ) -> Result<Resp, WorkerError> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        loop {
            match self.http.post(&url).json(body).send().await {
                Ok(response) if response.status().is_success() => match response.json::<Resp>().await {
                    Ok(parsed) => return Ok(parsed),
                    Err(error) if started.elapsed() < self.timeout => {
                        tracing::warn!(error = %error, path, "unreadable coordinator response; retrying");
                    }
                    Err(source) => {
                        return Err(WorkerError::CoordinatorUnreachable {
                            url,
                            seconds: self.timeout.as_secs(),
                            source,
                        });
                    }
                },
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    return Err(WorkerError::Refused { path, status, body });
                }
                Err(source) if started.elapsed() >= self.timeout => {
                    return Err(WorkerError::CoordinatorUnreachable { url, seconds: self.timeout.as_secs(), source });
                }
                Err(error) => tracing::debug!(error = %error, path, "coordinator not reachable yet; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The HTTPS client a worker calls its coordinator with: its own certificate,
/// only the run's authority trusted, `https://` only, connections kept alive.
pub fn coordinator_client(credentials: &crate::tls::WorkerCredentials) -> Result<reqwest::Client, WorkerError> {
    let tls = crate::tls::worker_client_config(credentials)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .pool_max_idle_per_host(4)
        .build()
        .map_err(WorkerError::Client)
}

/// Run until told to stop. Returns the number of items processed.
/// The runtime a worker process runs [`run`] on: a current-thread runtime.
/// A worker is one pipeline (its function instance, its coordinator, its
/// heartbeats); one thread serves it without waking threads on other
/// cores, so more of the machine is left to the function.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

pub async fn run(config: WorkerConfig) -> Result<u64, WorkerError> {
    let credentials =
        crate::enrollment::enroll(&config.enrollment, &config.identity, config.coordinator_timeout).await?;
    let client = Arc::new(Client {
        http: coordinator_client(&credentials)?,
        base: config.coordinator.trim_end_matches('/').to_owned(),
        timeout: config.coordinator_timeout,
    });
    let Some(forwarding) = config.forward_output.clone() else { return run_enrolled(&config, &client).await };
    let (stop_forwarding, forwarding_stopped) = tokio::sync::oneshot::channel();
    let sender =
        tokio::spawn(forward_output(forwarding.clone(), client.clone(), config.identity.clone(), forwarding_stopped));
    let result = run_enrolled(&config, &client).await;
    if let Err(error) = &result {
        // The caller prints it after this returns, to a stderr no one reads
        // on the node: the coordinator gets it now (why a start failed).
        forwarding.push(format!("error: {error}\n").as_bytes());
    }
    let _ = stop_forwarding.send(());
    let _ = sender.await;
    result
}

/// How long one batch of forwarded output may take to be delivered.
const OUTPUT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends this process's output to the coordinator in batches until `stop`
/// fires, then the rest ([`OutputForwarding::forward`]).
async fn forward_output(
    forwarding: Arc<OutputForwarding>,
    client: Arc<Client>,
    identity: WorkerIdentity,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let send = |batch: Vec<u8>| {
        let (client, request) = (client.clone(), LogsRequest { identity: identity.clone(), chunk: encode(&batch) });
        async move {
            match tokio::time::timeout(OUTPUT_SEND_TIMEOUT, client.post::<_, serde_json::Value>(OUTPUT_PATH, &request))
                .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("not delivered within {OUTPUT_SEND_TIMEOUT:?}")),
            }
        }
    };
    forwarding.forward(send, stop).await;
}

/// A worker's life once enrolled: hello, then items until told to stop.
async fn run_enrolled(config: &WorkerConfig, client: &Arc<Client>) -> Result<u64, WorkerError> {
    let assignment: WorkerAssignment =
        client.post(HELLO_PATH, &HelloRequest { identity: config.identity.clone() }).await?;
    let function = assignment.function.clone().into_definition().map_err(WorkerError::BadAssignment)?;
    // A worker that cannot run its function must not pretend to start: fail
    // before calling in, so the coordinator counts a failed start and, after
    // a few, fails the run with this message.
    check_program_exists(&function)?;
    let mut invoker_config = config.invoker.clone();
    let aws = match assignment.aws {
        Some(access) => {
            let held = HeldCredentials::new(&config.identity, access.credentials, &access.ca_bundle_pem)?;
            invoker_config.credentials = Some(Arc::new(held.clone()));
            Some(held)
        }
        None => None,
    };
    let task = Task { job: assignment.job, function, batch: assignment.batch.max(1), aws };
    let invoker = Invoker::new(invoker_config);
    let holding: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.identity.clone(),
        holding.clone(),
        stop.clone(),
        config.heartbeat_interval,
    ));
    let result = work_loop(config, &task, client, &invoker, &holding, &stop).await;
    stop.store(true, Ordering::SeqCst);
    heartbeat.abort();
    invoker.shutdown().await;
    result
}

async fn heartbeat_loop(
    client: Arc<Client>,
    identity: WorkerIdentity,
    holding: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let request = HeartbeatRequest { identity: identity.clone(), holding: holding.lock().await.clone() };
        match client.post::<_, HeartbeatResponse>(HEARTBEAT_PATH, &request).await {
            Ok(response) if response.stop => stop.store(true, Ordering::SeqCst),
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %error, "heartbeats failed; stopping");
                stop.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

async fn send_log(client: &Client, identity: &WorkerIdentity, text: &[u8]) -> Result<(), WorkerError> {
    if text.is_empty() {
        return Ok(());
    }
    let request = LogsRequest { identity: identity.clone(), chunk: encode(text) };
    client.post::<_, serde_json::Value>(LOGS_PATH, &request).await.map(|_| ())
}

/// What this worker runs, as its coordinator handed it over.
struct Task {
    job: String,
    function: FunctionDefinition,
    batch: usize,
    /// The function's AWS credentials, when it has `permissions`.
    aws: Option<HeldCredentials>,
}

/// The AWS credentials a worker's coordinator minted for its function, as
/// the invoker's issuer: it hands out the set it holds, with that set's own
/// expiry (so the invoker starts no lambda instance on credentials that
/// would lapse before an invocation's deadline), and `AWS_CA_BUNDLE`
/// pointing at the endpoint's certificate written on this host.
#[derive(Clone)]
struct HeldCredentials {
    held: Arc<std::sync::Mutex<HandedCredentials>>,
    ca_bundle: Arc<CaBundleFile>,
}

impl std::fmt::Debug for HeldCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCredentials").field("ca_bundle", &self.ca_bundle.0).finish_non_exhaustive()
    }
}

/// The endpoint's certificate in this host's temporary directory, removed with the worker.
struct CaBundleFile(std::path::PathBuf);

impl Drop for CaBundleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl HeldCredentials {
    fn new(identity: &WorkerIdentity, first: HandedCredentials, ca_bundle_pem: &str) -> Result<Self, WorkerError> {
        // Unique per worker of a run: several workers may share a host (and a temporary directory).
        let path = std::env::temp_dir().join(format!(
            "mayfly-{}-{}-{:08x}-aws-ca.pem",
            identity.run,
            identity.worker,
            rand::random::<u32>()
        ));
        std::fs::write(&path, ca_bundle_pem).map_err(|error| {
            WorkerError::Internal(format!("cannot write the AWS endpoint's certificate to {}: {error}", path.display()))
        })?;
        Ok(HeldCredentials { held: Arc::new(std::sync::Mutex::new(first)), ca_bundle: Arc::new(CaBundleFile(path)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandedCredentials> {
        // Replaced whole under the lock: never seen half-written.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expires_at(&self) -> mayfly_core::Timestamp {
        mayfly_core::Timestamp::from_millis(self.lock().expires_at_millis)
    }

    fn replace(&self, fresh: HandedCredentials) {
        *self.lock() = fresh;
    }
}

impl mayfly_runtime::CredentialIssuer for HeldCredentials {
    fn variables(&self, _function: &FunctionDefinition, _expires_at: mayfly_core::Timestamp) -> IssuedCredentials {
        let held = self.lock();
        let mut variables = held.variables.clone();
        variables.insert("AWS_CA_BUNDLE".to_owned(), self.ca_bundle.0.display().to_string());
        IssuedCredentials { variables, expires_at: Some(mayfly_core::Timestamp::from_millis(held.expires_at_millis)) }
    }
}

/// Before an item: if the credentials held would lapse before the item's
/// deadline (with a margin for the call), ask the coordinator for new ones.
async fn refresh_credentials(
    client: &Client,
    identity: &WorkerIdentity,
    task: &Task,
    now: mayfly_core::Timestamp,
) -> Result<(), WorkerError> {
    let Some(aws) = &task.aws else {
        return Ok(());
    };
    let needed_until = now.saturating_add(task.function.timeout + CREDENTIAL_MARGIN);
    if aws.expires_at() >= needed_until {
        return Ok(());
    }
    let fresh: HandedCredentials =
        client.post(CREDENTIALS_PATH, &CredentialsRequest { identity: identity.clone() }).await?;
    aws.replace(fresh);
    Ok(())
}

/// How long before an item's deadline held credentials must still be valid
/// for the worker not to ask for new ones.
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(5);

fn check_program_exists(function: &FunctionDefinition) -> Result<(), WorkerError> {
    let Some(program) = function.command.first() else {
        return Err(WorkerError::BadAssignment("the function has an empty command".into()));
    };
    let found = if program.contains('/') {
        let path = Path::new(program);
        if path.is_absolute() { path.is_file() } else { function.working_dir.join(path).is_file() }
    } else {
        let path = function.env.get("PATH").cloned().or_else(|| std::env::var("PATH").ok()).unwrap_or_default();
        std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
    };
    if found {
        Ok(())
    } else {
        Err(WorkerError::ProgramMissing {
            program: program.clone(),
            working_dir: function.working_dir.display().to_string(),
        })
    }
}

/// How a worker paces its calls: from the time its items take and the
/// time a completion's round trip takes, how many items to hold ahead so
/// that it never waits on the coordinator between items, and when to send
/// what finished. Short items pile up while a completion is on its way and
/// go together in the next one; the items that finish are also held back
/// until they add up to [`Pace::SPACING`] of work (or nothing is left to
/// run), so that the round trips (TLS, JSON, the coordinator's commit: the
/// same cores the function runs on) cost at most a percent or two of the
/// work however short the items are. An item longer than that goes alone,
/// as soon as it is done.
struct Pace {
    /// The least to hold ahead (the job's batch, and at least 2: one
    /// running, one ready).
    least: usize,
    item: Option<Duration>,
    round_trip: Option<Duration>,
}

impl Pace {
    /// No more than the coordinator leases at once.
    const MOST_AHEAD: usize = 100;
    /// The least work between two completions while more items are at hand.
    /// A result waits at most this long (plus its round trip) to become
    /// durable; a worker that dies loses at most this much work, which is
    /// done again.
    const SPACING: Duration = Duration::from_millis(50);

    fn new(batch: usize) -> Pace {
        Pace { least: batch.max(2), item: None, round_trip: None }
    }

    fn average(average: Option<Duration>, sample: Duration) -> Option<Duration> {
        // A moving average of the last few samples (weight 1/4 to the newest).
        Some(average.map_or(sample, |average| (average * 3 + sample) / 4))
    }

    fn item_took(&mut self, duration: Duration) {
        self.item = Pace::average(self.item, duration);
    }

    fn round_trip_took(&mut self, duration: Duration) {
        self.round_trip = Pace::average(self.round_trip, duration);
    }

    /// Items to hold (leased, not yet started): enough to keep running
    /// until the next completion's answer is back (the spacing and its
    /// round trip), plus one.
    fn ahead(&self) -> usize {
        let through_round_trip = match (self.item, self.round_trip) {
            (Some(item), Some(round_trip)) => {
                let item = item.as_secs_f64().max(1e-6);
                ((round_trip + Pace::SPACING).as_secs_f64() / item).ceil() as usize + 1
            }
            _ => 0,
        };
        through_round_trip.clamp(self.least, Pace::MOST_AHEAD.max(self.least))
    }

    /// Whether what finished goes now: it adds up to the spacing, or
    /// nothing is left to run before the next lease.
    fn send_now(finished_work: Duration, items_at_hand: usize) -> bool {
        items_at_hand == 0 || finished_work >= Pace::SPACING
    }
}

type CompletionCall = JoinHandle<Result<(CompleteResponse, Duration), WorkerError>>;

/// What finished and not yet sent, and the completion on its way (one at a
/// time, so that they arrive in order).
#[derive(Default)]
struct Outbox {
    finished: Vec<AttemptReport>,
    /// The work `finished` holds (the items' wall time), for the spacing.
    finished_work: Duration,
    /// When the oldest of `finished` finished: it goes no later than the
    /// spacing after that, even while a long item runs.
    oldest: Option<Instant>,
    in_flight: Option<CompletionCall>,
    calls: u64,
}

impl Outbox {
    fn hold(&mut self, report: AttemptReport, took: Duration) {
        self.oldest.get_or_insert_with(Instant::now);
        self.finished_work += took;
        self.finished.push(report);
    }

    /// Whether what finished goes now: nothing is on its way, and it adds
    /// up to the spacing, or has waited the spacing, or nothing is left to
    /// run (`items_at_hand` counts an item running), or the worker stops.
    fn due(&self, items_at_hand: usize, stopping: bool, now: Instant) -> bool {
        let waited_the_spacing = self.oldest.is_some_and(|oldest| now.duration_since(oldest) >= Pace::SPACING);
        self.in_flight.is_none()
            && !self.finished.is_empty()
            && (stopping || waited_the_spacing || Pace::send_now(self.finished_work, items_at_hand))
    }

    /// When what finished will have waited the spacing (nothing on its way).
    fn due_at(&self) -> Option<Instant> {
        if self.in_flight.is_some() { None } else { self.oldest.map(|oldest| oldest + Pace::SPACING) }
    }

    fn send(
        &mut self,
        client: &Arc<Client>,
        identity: &WorkerIdentity,
        holding: &Arc<Mutex<Vec<String>>>,
        lease_next: usize,
    ) {
        let attempts = std::mem::take(&mut self.finished);
        self.in_flight = Some(send_completion(client, identity, holding, attempts, lease_next));
        self.finished_work = Duration::ZERO;
        self.oldest = None;
        self.calls += 1;
    }
}

/// The answer to a completion: the round trip measured, the next items queued.
fn take_in(answer: (CompleteResponse, Duration), pace: &mut Pace, queue: &mut VecDeque<LeasedItem>) -> bool {
    let (response, took) = answer;
    pace.round_trip_took(took);
    queue.extend(response.items);
    response.stop
}

async fn work_loop(
    config: &WorkerConfig,
    task: &Task,
    client: &Arc<Client>,
    invoker: &Invoker,
    holding: &Arc<Mutex<Vec<String>>>,
    stop: &AtomicBool,
) -> Result<u64, WorkerError> {
    let identity = &config.identity;
    let mut processed = 0;
    let mut pace = Pace::new(task.batch);
    // Items leased and not yet run are kept ahead: while items run, the
    // completion of earlier ones travels (with their logs) and leases the
    // next, so the worker never waits on the coordinator between items.
    // One completion is on its way at a time (so they arrive in order); the
    // items that finish meanwhile go together in the next.
    // The function's cold start (a lambda instance's init) overlaps the
    // worker's first round trips instead of delaying its first item.
    let announce_and_lease = async {
        let started = format!("worker {} of run {} started\n", identity.worker, identity.run);
        send_log(client, identity, started.as_bytes()).await?;
        client
            .post::<_, LeaseResponse>(LEASE_PATH, &LeaseRequest { identity: identity.clone(), max: pace.ahead() })
            .await
    };
    let (first_lease, warmed) = tokio::join!(announce_and_lease, invoker.prewarm(&task.function));
    match warmed {
        Ok(Some(init)) => tracing::debug!(init_ms = init.as_millis() as u64, "function instance warmed"),
        Ok(None) => {}
        // The first item's invocation starts an instance again and records the failure as its outcome.
        Err(outcome) => tracing::warn!(outcome = %outcome, "the function instance failed its init while warming"),
    }
    let first_lease = first_lease?;
    let mut told_to_stop = first_lease.stop && first_lease.items.is_empty();
    let mut queue: VecDeque<LeasedItem> = first_lease.items.into();
    let mut outbox = Outbox::default();
    loop {
        // An answered completion is taken in without waiting for it.
        if let Some(completion) = outbox.in_flight.take_if(|call| call.is_finished()) {
            told_to_stop |= take_in(join_completion(completion).await?, &mut pace, &mut queue);
        }
        // Nothing on its way: what finished goes now, with a lease of what keeps the worker busy.
        let stopping = told_to_stop || stop.load(Ordering::SeqCst);
        if outbox.due(queue.len(), stopping, Instant::now()) {
            let wanted = if stopping { 0 } else { pace.ahead().saturating_sub(queue.len()) };
            outbox.send(client, identity, holding, wanted);
            continue;
        }
        let Some(item) = queue.pop_front() else {
            if let Some(completion) = outbox.in_flight.take() {
                told_to_stop |= take_in(join_completion(completion).await?, &mut pace, &mut queue);
                continue;
            }
            if told_to_stop || stop.load(Ordering::SeqCst) {
                break;
            }
            let lease: LeaseResponse =
                client.post(LEASE_PATH, &LeaseRequest { identity: identity.clone(), max: pace.ahead() }).await?;
            if lease.items.is_empty() {
                if lease.stop {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            queue.extend(lease.items);
            continue;
        };
        holding.lock().await.push(item.item.clone());
        refresh_credentials(client, identity, task, config.invoker.clock.now()).await?;
        // While the item runs, what finished before it still goes on time:
        // the answer of the completion on its way is taken in, and what
        // finished is sent once it has waited the spacing (a short item
        // before a long one is not held for the long one).
        let running = run_item(task, identity, invoker, &item);
        tokio::pin!(running);
        let report = loop {
            let answer_awaited = outbox.in_flight.is_some();
            let wake_at = outbox.due_at();
            tokio::select! {
                report = &mut running => break report,
                answer = async { outbox.in_flight.as_mut().expect("a completion on its way").await }, if answer_awaited => {
                    outbox.in_flight = None;
                    let answer = answer.map_err(|error| WorkerError::Internal(format!("the completion task failed: {error}")))??;
                    told_to_stop |= take_in(answer, &mut pace, &mut queue);
                }
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at.unwrap_or_else(Instant::now))), if wake_at.is_some() => {}
            }
            let stopping = told_to_stop || stop.load(Ordering::SeqCst);
            if outbox.due(queue.len() + 1, stopping, Instant::now()) {
                let wanted = if stopping { 0 } else { pace.ahead().saturating_sub(queue.len() + 1) };
                outbox.send(client, identity, holding, wanted);
            }
        };
        pace.item_took(report.1);
        outbox.hold(report.0, report.1);
        processed += 1;
    }
    let stopping = format!(
        "worker {} stopping after {processed} item(s) in {} completion call(s)\n",
        identity.worker, outbox.calls
    );
    send_log(client, identity, stopping.as_bytes()).await?;
    Ok(processed)
}

/// Run one item; its outcome (with its log) and how long the call to the function took.
async fn run_item(
    task: &Task,
    identity: &WorkerIdentity,
    invoker: &Invoker,
    item: &LeasedItem,
) -> (AttemptReport, Duration) {
    let started = Instant::now();
    let payload = decode(&item.payload).unwrap_or_default();
    let event = ItemEvent {
        job: task.job.clone(),
        run: identity.run.clone(),
        item: item.item.clone(),
        attempt: item.attempt,
        payload: serde_json::from_slice(&payload)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned())),
    };
    let handed = item.trace.as_deref().and_then(TraceContext::from_xray_header);
    let invocation = Invocation {
        // Opaque and URL-safe: the item id (any object key or manifest
        // line) travels in the event, never in the Runtime API's URL paths.
        request_id: mayfly_runtime::derived_request_id(&[&identity.run, &item.item, &item.attempt.to_string()]),
        payload: serde_json::to_vec(&event).expect("JSON values serialise"), // plain JSON
        // The item span's context, as any other invocation gets its own.
        trace_id: handed.as_ref().map(TraceContext::xray_header),
        traceparent: handed.as_ref().map(TraceContext::traceparent),
    };
    let result = invoker.invoke(&task.function, invocation).await;
    let mut log = format!(
        "--- item {} attempt {}: {} in {} ms\n",
        item.item,
        item.attempt,
        result.outcome.kind(),
        result.duration.as_millis()
    )
    .into_bytes();
    log.extend_from_slice(&result.logs);
    if !log.ends_with(b"\n") {
        log.push(b'\n');
    }
    let succeeded = result.outcome.is_success();
    let report = AttemptReport {
        item: item.item.clone(),
        attempt: item.attempt,
        outcome: if succeeded { AttemptOutcome::Done } else { AttemptOutcome::Failed },
        result: result.response.as_deref().map(encode),
        error: (!succeeded).then(|| result.outcome.to_string()),
        duration_ms: result.duration.as_millis() as u64,
        log: Some(encode(&log)),
    };
    (report, started.elapsed())
}

/// Send `attempts` in one call, leasing up to `lease_next` items; the items
/// stay held (in heartbeats) until the coordinator has acknowledged them.
fn send_completion(
    client: &Arc<Client>,
    identity: &WorkerIdentity,
    holding: &Arc<Mutex<Vec<String>>>,
    attempts: Vec<AttemptReport>,
    lease_next: usize,
) -> CompletionCall {
    let (client, holding) = (client.clone(), holding.clone());
    let request = CompleteRequest { identity: identity.clone(), attempts, lease_next };
    tokio::spawn(async move {
        let started = Instant::now();
        let response: CompleteResponse = client.post(COMPLETE_PATH, &request).await?;
        let took = started.elapsed();
        holding.lock().await.retain(|held| !request.attempts.iter().any(|attempt| &attempt.item == held));
        Ok((response, took))
    })
}

async fn join_completion(completion: CompletionCall) -> Result<(CompleteResponse, Duration), WorkerError> {
    completion.await.map_err(|error| WorkerError::Internal(format!("the completion task failed: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_items_are_held_ahead_through_the_spacing_and_the_round_trip() {
        let mut pace = Pace::new(1);
        assert_eq!(pace.ahead(), 2, "before anything is measured: one running, one ready");
        pace.item_took(Duration::from_millis(10));
        pace.round_trip_took(Duration::from_millis(2));
        // (2 + 50) / 10 = 5.2, so 6, plus one.
        assert_eq!(pace.ahead(), 7);
        pace.item = Some(Duration::from_micros(100));
        assert_eq!(pace.ahead(), Pace::MOST_AHEAD, "no more than the coordinator leases at once");
        pace.item = Some(Duration::from_secs(5));
        assert_eq!(pace.ahead(), 2, "a long item: one running, one ready");
        assert_eq!(Pace::new(8).ahead(), 8, "never fewer than the job's batch");
    }

    #[test]
    fn finished_items_wait_for_company_only_while_more_are_at_hand() {
        assert!(!Pace::send_now(Duration::from_millis(10), 3), "short work with items at hand waits");
        assert!(Pace::send_now(Duration::from_millis(10), 0), "nothing left to run: it goes, leasing more");
        assert!(Pace::send_now(Pace::SPACING, 3), "the spacing reached: it goes");
        assert!(Pace::send_now(Duration::from_secs(2), 5), "a long item goes alone, at once");
    }

    fn report(item: &str) -> AttemptReport {
        AttemptReport {
            item: item.to_owned(),
            attempt: 1,
            outcome: crate::protocol::AttemptOutcome::Done,
            result: None,
            error: None,
            duration_ms: 1,
            log: None,
        }
    }

    #[test]
    fn a_short_items_result_goes_once_it_has_waited_the_spacing_even_while_a_long_item_runs() {
        let mut outbox = Outbox::default();
        assert!(!outbox.due(0, true, Instant::now()), "nothing finished: nothing to send");
        assert_eq!(outbox.due_at(), None);
        outbox.hold(report("short"), Duration::from_millis(2));
        let finished_at = outbox.oldest.expect("the time it finished");
        assert!(!outbox.due(1, false, finished_at), "a long item runs: the short one waits for company");
        assert_eq!(outbox.due_at(), Some(finished_at + Pace::SPACING), "but no longer than the spacing");
        assert!(outbox.due(1, false, finished_at + Pace::SPACING), "the spacing waited: it goes");
        assert!(outbox.due(0, false, finished_at), "nothing left to run: it goes at once");
        assert!(outbox.due(1, true, finished_at), "a stopping worker sends at once");
        outbox.hold(report("long"), Pace::SPACING);
        assert!(outbox.due(1, false, finished_at), "the work adds up to the spacing: it goes");
    }

    #[tokio::test]
    async fn nothing_goes_while_a_completion_is_on_its_way() {
        let mut outbox = Outbox::default();
        outbox.hold(report("a"), Pace::SPACING);
        outbox.in_flight = Some(tokio::spawn(std::future::pending()));
        assert!(!outbox.due(0, true, Instant::now()), "one completion on its way at a time");
        assert_eq!(outbox.due_at(), None, "no timer while one is on its way: its answer wakes the worker");
        outbox.in_flight.take().expect("on its way").abort();
        assert!(outbox.due(0, false, Instant::now()), "answered: what finished goes");
    }
}
