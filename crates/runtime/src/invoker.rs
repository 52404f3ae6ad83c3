//! The invoker: runs invocations of any function on the right runtime,
//! within the function's concurrency cap, keeps lambda instances warm for
//! reuse and reaps idle ones (scale to zero).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use mayfly_core::{Clock, Name, SystemClock, Timestamp};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::container::{SharedEngine, run_container_process_invocation, shared_engine};
use crate::definition::{FunctionDefinition, Invocation, InvocationResult, Isolation, Outcome, RuntimeKind};
use crate::gateway::ContainerCredentials;
use crate::lambda::{LambdaInstance, LambdaRun};
use crate::memory::{MemoryEnforcement, MemoryEnforcementMode};
use crate::process::run_process_invocation;

/// How the invoker runs instances.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// A warm lambda instance unused this long (by `clock`) is stopped.
    pub idle_timeout: Duration,
    /// The clock that idle time is measured with and `started_at` is read from.
    pub clock: Arc<dyn Clock>,
    /// How often (real time) idle instances are checked against `idle_timeout`.
    pub reap_interval: Duration,
    /// How memory limits are enforced.
    pub memory_enforcement: MemoryEnforcementMode,
    /// Gives instances of functions with `permissions` AWS credentials;
    /// `None`: no instance gets any.
    pub credentials: Option<Arc<dyn CredentialIssuer>>,
}

/// Issues AWS credentials for a function's permissions (the AWS endpoint
/// checks them; the runtime only puts them in the environment).
pub trait CredentialIssuer: Send + Sync + std::fmt::Debug {
    /// The environment variables of credentials for `function`'s
    /// `permissions`, asked to be valid until `expires_at`; empty when it
    /// has none.
    fn variables(&self, function: &FunctionDefinition, expires_at: Timestamp) -> IssuedCredentials;

    /// What carries a container instance's connections to the endpoint
    /// these credentials are for (the instance dials a listener on its
    /// function network's gateway); the error says why containers cannot
    /// reach it.
    fn container_relay(&self) -> Result<Arc<dyn EndpointRelay>, String> {
        Err("its AWS credentials come from an endpoint that containers cannot reach".to_owned())
    }
}

/// Carries one connection from a function's container (plain HTTP on its
/// internal function network) to the AWS endpoint, until either side closes.
pub trait EndpointRelay: Send + Sync + std::fmt::Debug {
    fn carry(&self, connection: tokio::net::TcpStream) -> futures::future::BoxFuture<'static, ()>;
}

/// Credentials as environment variables, and when they really expire: an
/// issuer that mints them gives the expiry asked for; one that hands out
/// credentials minted elsewhere (a job worker's, minted by its coordinator)
/// gives theirs, which may be earlier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub variables: BTreeMap<String, String>,
    pub expires_at: Option<Timestamp>,
}

/// How long a warm lambda instance's credentials last: its environment is
/// fixed when it starts (as on AWS Lambda), so it cannot get new ones per
/// invocation; an instance whose credentials would expire before an
/// invocation's deadline is not given the invocation (a fresh one starts).
pub const LAMBDA_INSTANCE_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(15 * 60);

impl InvokerConfig {
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(1);

    /// The defaults (5 min idle timeout, checked every second, memory
    /// enforcement detected) on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> InvokerConfig {
        InvokerConfig {
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            clock,
            reap_interval: Self::DEFAULT_REAP_INTERVAL,
            memory_enforcement: MemoryEnforcementMode::Auto,
            credentials: None,
        }
    }
}

impl Default for InvokerConfig {
    fn default() -> Self {
        InvokerConfig::with_clock(Arc::new(SystemClock))
    }
}

/// Runs invocations. Cheap to clone; clones share instances and limits.
#[derive(Debug, Clone)]
pub struct Invoker {
    inner: Arc<InvokerInner>,
}

#[derive(Debug)]
struct InvokerInner {
    config: InvokerConfig,
    enforcement: MemoryEnforcement,
    pools: Mutex<HashMap<Name, Arc<FunctionPool>>>,
    next_instance: AtomicU64,
    shutdown: watch::Sender<bool>,
    reaper_started: AtomicBool,
    /// The Docker engine, connected when a container function first runs.
    containers: SharedEngine,
}

/// One function's concurrency cap and warm instances.
#[derive(Default)]
struct FunctionPool {
    /// The cap it was created for, and its permits.
    concurrency: Mutex<Option<(u32, Arc<Semaphore>)>>,
    /// Warm lambda instances waiting for work, most recently used last.
    idle: Mutex<Vec<LambdaInstance>>,
    /// Lambda instances alive: idle, busy or starting.
    live: AtomicUsize,
    /// Invocations in progress.
    running: AtomicUsize,
    /// Invocations that found every concurrency slot taken and had to wait
    /// (Lambda's throttles, except that Mayfly queues them instead of refusing).
    throttled: AtomicU64,
}

impl std::fmt::Debug for FunctionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionPool")
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("running", &self.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays consistent at every await-free step.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FunctionPool {
    /// The permits for `concurrency`, replaced when the cap changed.
    fn semaphore(&self, concurrency: Option<u32>) -> Option<Arc<Semaphore>> {
        let concurrency = concurrency?;
        let mut current = lock(&self.concurrency);
        match &*current {
            Some((cap, semaphore)) if *cap == concurrency => Some(Arc::clone(semaphore)),
            _ => {
                let semaphore = Arc::new(Semaphore::new(concurrency.max(1) as usize));
                *current = Some((concurrency, Arc::clone(&semaphore)));
                Some(semaphore)
            }
        }
    }

    /// A warm instance started from exactly this definition; instances of
    /// other definitions (a new deployment), and instances whose credentials
    /// expire before `deadline`, are returned for discarding.
    fn take_idle(
        &self,
        function: &FunctionDefinition,
        deadline: Timestamp,
    ) -> (Option<LambdaInstance>, Vec<LambdaInstance>) {
        let usable = |instance: &LambdaInstance| {
            instance.definition == *function && instance.credentials_expire_at.is_none_or(|expiry| expiry > deadline)
        };
        let mut idle = lock(&self.idle);
        let stale_at = idle.iter().position(|instance| !usable(instance));
        let stale = match stale_at {
            None => Vec::new(),
            Some(_) => {
                let (fresh, stale): (Vec<_>, Vec<_>) = idle.drain(..).partition(usable);
                *idle = fresh;
                stale
            }
        };
        (idle.pop(), stale)
    }

    async fn discard(&self, instance: LambdaInstance) {
        instance.discard().await;
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an invocation as running until dropped.
struct RunningGuard<'a>(&'a AtomicUsize);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Invoker {
    /// An invoker with no instances. Memory enforcement is settled here
    /// (cgroup hierarchy detected and prepared).
    pub fn new(config: InvokerConfig) -> Invoker {
        let enforcement = MemoryEnforcement::detect(&config.memory_enforcement);
        tracing::debug!(?enforcement, "invoker memory enforcement");
        let (shutdown, _) = watch::channel(false);
        Invoker {
            inner: Arc::new(InvokerInner {
                config,
                enforcement,
                pools: Mutex::new(HashMap::new()),
                next_instance: AtomicU64::new(1),
                shutdown,
                reaper_started: AtomicBool::new(false),
                containers: SharedEngine::new(),
            }),
        }
    }

    /// The credential variables of an instance of `function` valid until
    /// `expires_at`: none without an issuer or without permissions.
    fn credentials(&self, function: &FunctionDefinition, expires_at: Timestamp) -> IssuedCredentials {
        match &self.inner.config.credentials {
            Some(issuer) if !function.permissions.is_empty() => issuer.variables(function, expires_at),
            _ => IssuedCredentials::default(),
        }
    }

    /// The credentials of a container instance of `function` valid until
    /// `expires_at`, with what carries them to their endpoint: none without
    /// an issuer or without permissions; an error when the function declares
    /// permissions that a container cannot use here.
    fn container_credentials(
        &self,
        function: &FunctionDefinition,
        expires_at: Timestamp,
    ) -> Result<(Option<ContainerCredentials>, Option<Timestamp>), String> {
        let issued = self.credentials(function, expires_at);
        let Some(issuer) = &self.inner.config.credentials else {
            return Ok((None, None));
        };
        if issued.variables.is_empty() {
            return Ok((None, None));
        }
        let relay = issuer.container_relay().map_err(|reason| {
            format!("function `{}` declares permissions and runs in a container, but {reason}", function.name)
        })?;
        Ok((Some(ContainerCredentials { variables: issued.variables, relay }), issued.expires_at))
    }

    /// How memory limits are enforced on this machine.
    pub fn memory_enforcement(&self) -> &MemoryEnforcement {
        &self.inner.enforcement
    }

    /// Runs one invocation of `function`, waiting for a concurrency slot first.
    /// Never panics; every failure is an [`Outcome`].
    pub async fn invoke(&self, function: &FunctionDefinition, invocation: Invocation) -> InvocationResult {
        let inner = &self.inner;
        self.start_reaper();
        let bytes_in = invocation.payload.len() as u64;
        let failed = |outcome: Outcome, invocation: Invocation| InvocationResult {
            request_id: invocation.request_id,
            outcome,
            response: None,
            started_at: inner.config.clock.now(),
            duration: Duration::ZERO,
            init_duration: None,
            peak_memory: None,
            logs: Vec::new(),
            bytes_in,
            bytes_out: 0,
        };
        // An id that needs escaping would reach the handler altered (or not at
        // all): refuse it here, naming it, rather than as a handler crash.
        if !crate::is_url_safe_request_id(&invocation.request_id) {
            let reason = format!(
                "the request id {:?} is not URL-safe (1 to {} letters, digits, `-`, `.`, `_` or `~`); \
                 request ids are opaque: make them with random_request_id or derived_request_id",
                invocation.request_id,
                crate::MAX_REQUEST_ID_BYTES
            );
            return failed(Outcome::Crashed { reason }, invocation);
        }
        if bytes_in > function.max_payload.bytes() {
            return failed(Outcome::PayloadTooLarge { size: bytes_in, limit: function.max_payload }, invocation);
        }
        let mut shutdown = inner.shutdown.subscribe();
        if *shutdown.borrow() {
            return failed(Outcome::Crashed { reason: "the invoker is shut down".into() }, invocation);
        }
        let pool = self.pool(&function.name);
        pool.running.fetch_add(1, Ordering::AcqRel);
        let _running = RunningGuard(&pool.running);
        let _permit: Option<OwnedSemaphorePermit> = match pool.semaphore(function.concurrency) {
            None => None,
            Some(semaphore) => match Arc::clone(&semaphore).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    pool.throttled.fetch_add(1, Ordering::AcqRel);
                    tokio::select! {
                        permit = semaphore.acquire_owned() => permit.ok(),
                        () = shutdown_requested(&mut shutdown) => {
                            return failed(Outcome::Crashed { reason: "the invoker shut down".into() }, invocation);
                        }
                    }
                }
            },
        };
        match function.runtime {
            RuntimeKind::Process => self.invoke_process(function, invocation, &mut shutdown).await,
            RuntimeKind::Lambda => self.invoke_lambda(&pool, function, invocation, &mut shutdown).await,
        }
    }

    async fn invoke_process(
        &self,
        function: &FunctionDefinition,
        invocation: Invocation,
        shutdown: &mut watch::Receiver<bool>,
    ) -> InvocationResult {
        let started_at = self.inner.config.clock.now();
        let run = match &function.isolation {
            Isolation::Process => {
                let instance_name = self.next_instance_name();
                let credentials = self.credentials(function, started_at.saturating_add(function.timeout));
                run_process_invocation(
                    function,
                    &invocation,
                    &self.inner.enforcement,
                    &instance_name,
                    &credentials.variables,
                    shutdown,
                )
                .await
            }
            Isolation::Container(isolation) => {
                let credentials = self.container_credentials(function, started_at.saturating_add(function.timeout));
                match (shared_engine(&self.inner.containers).await, credentials) {
                    (Ok(engine), Ok((credentials, _))) => {
                        run_container_process_invocation(
                            &engine,
                            function,
                            isolation,
                            &invocation,
                            credentials,
                            shutdown,
                        )
                        .await
                    }
                    (Err(reason), _) | (_, Err(reason)) => crate::process::ProcessRun::failed_to_start(reason),
                }
            }
        };
        log_failure(function, &invocation.request_id, &run.outcome);
        InvocationResult {
            bytes_in: invocation.payload.len() as u64,
            bytes_out: run.response.as_ref().map_or(0, |response| response.len() as u64),
            request_id: invocation.request_id,
            outcome: run.outcome,
            response: run.response,
            started_at,
            duration: run.duration,
            init_duration: Some(run.spawn_duration),
            peak_memory: run.peak_memory,
            logs: run.logs,
        }
    }

    async fn invoke_lambda(
        &self,
        pool: &FunctionPool,
        function: &FunctionDefinition,
        invocation: Invocation,
        shutdown: &mut watch::Receiver<bool>,
    ) -> InvocationResult {
        let started_at = self.inner.config.clock.now();
        let bytes_in = invocation.payload.len() as u64;
        let result = |run: LambdaRun, init_duration: Option<Duration>, request_id: String| InvocationResult {
            request_id,
            bytes_out: run.response.as_ref().map_or(0, |response| response.len() as u64),
            outcome: run.outcome,
            response: run.response,
            started_at,
            duration: run.duration,
            init_duration,
            peak_memory: run.peak_memory,
            logs: run.logs,
            bytes_in,
        };
        let Ok(request_id_header) = HeaderValue::from_str(&invocation.request_id) else {
            // Unreachable for ids `invoke` let through (URL-safe ids are valid header values).
            let reason = "the request id cannot be sent as an HTTP header".to_owned();
            return result(LambdaRun::failed(Outcome::Crashed { reason }, Vec::new()), None, invocation.request_id);
        };
        let (warm, stale) = pool.take_idle(function, started_at.saturating_add(function.timeout));
        for instance in stale {
            pool.discard(instance).await;
        }
        let (mut instance, init_duration) = match warm {
            Some(instance) => (instance, None),
            None => match self.start_lambda_instance(pool, function, shutdown).await {
                Ok(started) => started,
                Err((run, init_duration)) => {
                    log_failure(function, &invocation.request_id, &run.outcome);
                    return result(run, Some(init_duration), invocation.request_id);
                }
            },
        };
        let request_id = invocation.request_id.clone();
        let run = instance.invoke(function, invocation, request_id_header, shutdown).await;
        log_failure(function, &request_id, &run.outcome);
        if run.reusable && !*shutdown.borrow() {
            instance.last_used = self.inner.config.clock.now();
            lock(&pool.idle).push(instance);
        } else {
            pool.discard(instance).await;
        }
        result(run, init_duration, request_id)
    }

    /// Starts an instance and waits for its init; on failure, the run to report.
    async fn start_lambda_instance(
        &self,
        pool: &FunctionPool,
        function: &FunctionDefinition,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(LambdaInstance, Option<Duration>), (LambdaRun, Duration)> {
        let spawn_started = Instant::now();
        let instance_name = self.next_instance_name();
        pool.live.fetch_add(1, Ordering::AcqRel);
        let now = self.inner.config.clock.now();
        let started = match &function.isolation {
            Isolation::Process => {
                let expires_at = now.saturating_add(LAMBDA_INSTANCE_CREDENTIAL_LIFETIME.max(function.timeout));
                let credentials = self.credentials(function, expires_at);
                let expiry = credentials.expires_at.filter(|_| !credentials.variables.is_empty());
                LambdaInstance::start(
                    function,
                    &self.inner.enforcement,
                    &instance_name,
                    now,
                    &credentials.variables,
                    expiry,
                )
                .await
            }
            Isolation::Container(isolation) => {
                let expires_at = now.saturating_add(LAMBDA_INSTANCE_CREDENTIAL_LIFETIME.max(function.timeout));
                match (shared_engine(&self.inner.containers).await, self.container_credentials(function, expires_at)) {
                    (Ok(engine), Ok((credentials, expiry))) => {
                        LambdaInstance::start_in_container(function, isolation, engine, now, credentials, expiry).await
                    }
                    (Err(reason), _) | (_, Err(reason)) => Err(crate::SpawnError::Container { reason }),
                }
            }
        };
        let mut instance = match started {
            Ok(instance) => instance,
            Err(error) => {
                pool.live.fetch_sub(1, Ordering::AcqRel);
                let outcome = Outcome::Crashed { reason: error.to_string() };
                return Err((LambdaRun::failed(outcome, Vec::new()), spawn_started.elapsed()));
            }
        };
        match instance.wait_until_ready(function.timeout, shutdown).await {
            Ok(()) => Ok((instance, Some(spawn_started.elapsed()))),
            Err(outcome) => {
                let init_duration = spawn_started.elapsed();
                let logs = instance.take_logs();
                pool.discard(instance).await;
                Err((LambdaRun::failed(outcome, logs), init_duration))
            }
        }
    }

    /// Starts one `lambda` instance of `function` ahead of its first
    /// invocation (its init phase), if none is alive, and keeps it idle for the
    /// next [`Invoker::invoke`]; like provisioned concurrency, so that a caller
    /// can overlap the cold start with other work. Returns the init time, or
    /// `None` when nothing was started (a `process` function, or an instance
    /// already alive). An instance that fails its init is discarded and its
    /// outcome returned; the next invocation starts (and reports) one itself.
    pub async fn prewarm(&self, function: &FunctionDefinition) -> Result<Option<Duration>, Outcome> {
        if function.runtime != RuntimeKind::Lambda {
            return Ok(None);
        }
        self.start_reaper();
        let mut shutdown = self.inner.shutdown.subscribe();
        if *shutdown.borrow() {
            return Ok(None);
        }
        let pool = self.pool(&function.name);
        if pool.live.load(Ordering::Acquire) > 0 {
            return Ok(None);
        }
        match self.start_lambda_instance(&pool, function, &mut shutdown).await {
            Ok((mut instance, init_duration)) => {
                instance.last_used = self.inner.config.clock.now();
                lock(&pool.idle).push(instance);
                Ok(init_duration)
            }
            Err((run, _)) => Err(run.outcome),
        }
    }

    /// How many invocations of `function` this invoker has throttled so far:
    /// found its concurrency cap reached and waited for a slot.
    pub fn throttled_invocations(&self, function: &Name) -> u64 {
        lock(&self.inner.pools).get(function).map_or(0, |pool| pool.throttled.load(Ordering::Acquire))
    }

    /// Warm lambda instances of `function` (idle or busy).
    pub fn warm_instances(&self, function: &Name) -> usize {
        lock(&self.inner.pools).get(function).map_or(0, |pool| pool.live.load(Ordering::Acquire))
    }

    /// Stops every idle instance unused for `idle_timeout` by the clock. The
    /// invoker does this by itself every `reap_interval`.
    pub async fn reap_idle_instances(&self) {
        reap_idle_instances(&self.inner).await;
    }

    /// Stops every instance: idle ones at once, busy ones by ending their
    /// invocations (as crashed); waits until all are gone. Later invocations fail.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        loop {
            let pools: Vec<Arc<FunctionPool>> = lock(&self.inner.pools).values().cloned().collect();
            let mut busy = 0;
            for pool in &pools {
                let idle: Vec<LambdaInstance> = lock(&pool.idle).drain(..).collect();
                for instance in idle {
                    pool.discard(instance).await;
                }
                busy += pool.live.load(Ordering::Acquire) + pool.running.load(Ordering::Acquire);
            }
            if busy == 0 {
                if let Some(engine) = self.inner.containers.get() {
                    engine.remove_unused_networks().await;
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn pool(&self, function: &Name) -> Arc<FunctionPool> {
        let mut pools = lock(&self.inner.pools);
        match pools.get(function) {
            Some(pool) => Arc::clone(pool),
            None => {
                let pool = Arc::new(FunctionPool::default());
                pools.insert(function.clone(), Arc::clone(&pool));
                pool
            }
        }
    }

    fn next_instance_name(&self) -> String {
        self.inner.next_instance.fetch_add(1, Ordering::Relaxed).to_string()
    }

    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.reap_interval;
        tokio::spawn(reap_periodically(weak, interval));
    }
}

async fn reap_periodically(inner: Weak<InvokerInner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if *inner.shutdown.borrow() {
            return;
        }
        reap_idle_instances(&inner).await;
    }
}

async fn reap_idle_instances(inner: &InvokerInner) {
    let now: Timestamp = inner.config.clock.now();
    let idle_timeout = inner.config.idle_timeout;
    let pools: Vec<Arc<FunctionPool>> = lock(&inner.pools).values().cloned().collect();
    for pool in pools {
        let expired: Vec<LambdaInstance> = {
            let mut idle = lock(&pool.idle);
            let (expired, kept): (Vec<_>, Vec<_>) =
                idle.drain(..).partition(|instance| now.duration_since(instance.last_used) >= idle_timeout);
            *idle = kept;
            expired
        };
        for instance in expired {
            tracing::debug!(function = %instance.definition.name, "stopping an idle instance");
            pool.discard(instance).await;
        }
    }
}

fn log_failure(function: &FunctionDefinition, request_id: &str, outcome: &Outcome) {
    if !outcome.is_success() {
        tracing::info!(function = %function.name, request_id, outcome = outcome.kind(), detail = %outcome, "invocation failed");
    }
}

/// Resolves once the invoker is shutting down.
pub(crate) async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|shutting_down| *shutting_down).await.is_err() {
        // The invoker is gone without a shutdown; nothing will ever ask for one.
        std::future::pending::<()>().await;
    }
}
