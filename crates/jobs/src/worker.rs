//! A worker: a stateless process that enrolls with its coordinator (its own
//! key, made here, and a one-time token: [`crate::enrollment`]), asks it what
//! to run (`/v1/hello`), pulls items from it (over mutual TLS, with the
//! certificate it enrolled for), runs the job's function on each (warm, through the
//! runtime's `Invoker`),
//! reports the outcome, heartbeats, and streams its log as it goes.
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

use mayfly_runtime::{FunctionDefinition, Invocation, Invoker, InvokerConfig};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::protocol::{
    AttemptOutcome, COMPLETE_PATH, CompleteRequest, CompleteResponse, HEARTBEAT_PATH, HELLO_PATH, HeartbeatRequest,
    HeartbeatResponse, HelloRequest, ItemEvent, LEASE_PATH, LOGS_PATH, LeaseRequest, LeaseResponse, LeasedItem,
    LogsRequest, WorkerAssignment, WorkerIdentity, decode, encode,
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
    let assignment: WorkerAssignment =
        client.post(HELLO_PATH, &HelloRequest { identity: config.identity.clone() }).await?;
    let function = assignment.function.clone().into_definition().map_err(WorkerError::BadAssignment)?;
    // A worker that cannot run its function must not pretend to start: fail
    // before calling in, so the coordinator counts a failed start and, after
    // a few, fails the run with this message.
    check_program_exists(&function)?;
    let task = Task { job: assignment.job, function, batch: assignment.batch.max(1) };
    let invoker = Invoker::new(config.invoker.clone());
    let holding: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.identity.clone(),
        holding.clone(),
        stop.clone(),
        config.heartbeat_interval,
    ));
    let result = work_loop(&config, &task, &client, &invoker, &holding, &stop).await;
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
}

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
    // Items leased and not yet run, kept one ahead: while item N runs, the
    // completion of item N-1 travels (with its log) and leases the next one,
    // so the worker never waits on the coordinator between items.
    let ahead = task.batch.max(2);
    // The function's cold start (a lambda instance's init) overlaps the
    // worker's first round trips instead of delaying its first item.
    let announce_and_lease = async {
        let started = format!("worker {} of run {} started\n", identity.worker, identity.run);
        send_log(client, identity, started.as_bytes()).await?;
        client.post::<_, LeaseResponse>(LEASE_PATH, &LeaseRequest { identity: identity.clone(), max: ahead }).await
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
    let mut in_flight: Option<JoinHandle<Result<CompleteResponse, WorkerError>>> = None;
    loop {
        if queue.is_empty() {
            if let Some(completion) = in_flight.take() {
                let response = join_completion(completion).await?;
                told_to_stop |= response.stop;
                queue.extend(response.items);
                continue;
            }
            if told_to_stop || stop.load(Ordering::SeqCst) {
                break;
            }
            let lease: LeaseResponse =
                client.post(LEASE_PATH, &LeaseRequest { identity: identity.clone(), max: ahead }).await?;
            if lease.items.is_empty() {
                if lease.stop {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            queue.extend(lease.items);
        }
        let Some(item) = queue.pop_front() else { continue };
        holding.lock().await.push(item.item.clone());
        let payload = decode(&item.payload).unwrap_or_default();
        let event = ItemEvent {
            job: task.job.clone(),
            run: identity.run.clone(),
            item: item.item.clone(),
            attempt: item.attempt,
            payload: serde_json::from_slice(&payload)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&payload).into_owned())),
        };
        let invocation = Invocation {
            // Opaque and URL-safe: the item id (any object key or manifest
            // line) travels in the event, never in the Runtime API's URL paths.
            request_id: mayfly_runtime::derived_request_id(&[&identity.run, &item.item, &item.attempt.to_string()]),
            payload: serde_json::to_vec(&event).expect("JSON values serialise"), // plain JSON
            trace_id: None,
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
        // One completion in flight at a time, so they arrive in order.
        if let Some(completion) = in_flight.take() {
            let response = join_completion(completion).await?;
            told_to_stop |= response.stop;
            queue.extend(response.items);
        }
        let succeeded = result.outcome.is_success();
        let wanted = if told_to_stop || stop.load(Ordering::SeqCst) { 0 } else { ahead.saturating_sub(queue.len()) };
        let request = CompleteRequest {
            identity: identity.clone(),
            item: item.item.clone(),
            attempt: item.attempt,
            outcome: if succeeded { AttemptOutcome::Done } else { AttemptOutcome::Failed },
            result: result.response.as_deref().map(encode),
            error: (!succeeded).then(|| result.outcome.to_string()),
            duration_ms: result.duration.as_millis() as u64,
            log: Some(encode(&log)),
            lease_next: wanted,
        };
        let (client, holding) = (client.clone(), holding.clone());
        in_flight = Some(tokio::spawn(async move {
            let response: CompleteResponse = client.post(COMPLETE_PATH, &request).await?;
            holding.lock().await.retain(|held| held != &request.item);
            Ok(response)
        }));
        processed += 1;
    }
    send_log(client, identity, format!("worker {} stopping after {processed} item(s)\n", identity.worker).as_bytes())
        .await?;
    Ok(processed)
}

async fn join_completion(
    completion: JoinHandle<Result<CompleteResponse, WorkerError>>,
) -> Result<CompleteResponse, WorkerError> {
    completion.await.map_err(|error| WorkerError::Internal(format!("the completion task failed: {error}")))?
}
