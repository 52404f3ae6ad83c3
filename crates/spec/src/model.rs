//! The typed architecture: what a valid `mayfly.toml` declares, with every
//! default filled in and every reference checked. Plain data; the control
//! plane, the CLI and the audit read it and never see TOML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{ByteSize, Name, ObjectEventKind, Permission, Schedule, format_duration};
use mayfly_fleet::ProvisionerKind;
use serde::{Serialize, Serializer};

/// The only schema version this crate reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole architecture file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Architecture {
    pub version: u32,
    pub name: Name,
    /// Project tags, carried by every resource (resource tags win on conflict).
    pub tags: BTreeMap<String, String>,
    pub policy: PolicySpec,
    pub pricing: PricingSpec,
    pub buckets: BTreeMap<Name, BucketSpec>,
    pub queues: BTreeMap<Name, QueueSpec>,
    pub functions: BTreeMap<Name, FunctionSpec>,
    /// Bucket events → queue or function (`[[routes]]`).
    pub routes: Vec<RouteSpec>,
    /// Queue → function and schedule → function (`[[triggers]]`).
    pub triggers: Vec<TriggerSpec>,
    pub alarms: BTreeMap<Name, AlarmSpec>,
    pub jobs: BTreeMap<Name, JobSpec>,
    pub api: Option<ApiSpec>,
    /// `[evaluation]`: what `mayfly deploy --evaluate` replays.
    pub evaluation: Option<EvaluationSpec>,
}

/// `[evaluation]`: a representative workload that `mayfly deploy
/// --evaluate` replays on the deployed version and on the new file, as a
/// two-variant experiment. The workload has the shape of an experiment
/// file's `[workload]` (`job`, `input`); local files are relative to the
/// project directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluationSpec {
    pub workload: crate::WorkloadSpec,
    /// Runs of each version.
    pub repetitions: u32,
    /// Seeds the order of runs and the bootstrap.
    pub seed: u64,
    /// What is compared; `--require-no-regression` looks at makespan and cost among them.
    pub metrics: Vec<mayfly_experiment::Metric>,
    /// How much worse (a fraction: 0.05 is 5%) the interval must show a
    /// metric to be before `--require-no-regression` refuses the file.
    pub tolerance: f64,
}

impl EvaluationSpec {
    /// Runs of each version when `[evaluation]` does not say: few, since a deploy waits for them.
    pub const DEFAULT_REPETITIONS: u32 = 3;
    /// What is compared when `[evaluation]` does not say.
    pub const DEFAULT_METRICS: [mayfly_experiment::Metric; 2] =
        [mayfly_experiment::Metric::Makespan, mayfly_experiment::Metric::Cost];
    /// The tolerance when `[evaluation]` does not say: 5%, which keeps
    /// machine noise from refusing an unchanged workload (see README,
    /// "Evaluation on deploy").
    pub const DEFAULT_TOLERANCE: f64 = 0.05;
}

impl Architecture {
    /// The project tags with `resource_tags` merged over them.
    pub fn effective_tags(&self, resource_tags: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        merge_tags(&self.tags, resource_tags)
    }
}

pub(crate) fn merge_tags(
    project_tags: &BTreeMap<String, String>,
    resource_tags: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = project_tags.clone();
    merged.extend(resource_tags.iter().map(|(key, value)| (key.clone(), value.clone())));
    merged
}

/// `[state]`: where the project's state store is. Read by the host before
/// it opens the project ([`crate::state_settings`]); not part of a
/// deployment, so not in [`Architecture`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StateSpec {
    /// The store's URL; `None` for the embedded default.
    pub url: Option<String>,
    /// A file holding the store's password, as written (relative to the project directory).
    pub password_file: Option<String>,
    /// The CA file a PostgreSQL server's certificate must chain to (PEM), as
    /// written (relative to the project directory); the URL's `sslrootcert` wins.
    pub ca_file: Option<String>,
}

/// `[storage]`: where the buckets' objects are. Read by the host before it
/// opens the project ([`crate::storage_settings`]); not part of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StorageSpec {
    /// `file:` or `s3://BUCKET/PREFIX`; `None` for the local default.
    pub url: Option<String>,
}

/// `[telemetry]`: where the host exports traces. Read by the host when
/// `mayfly up` or `mayfly serve` starts ([`crate::telemetry_settings`]);
/// not part of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct TelemetrySpec {
    /// The OTLP/HTTP collector's base URL (`http://HOST:PORT`); traces are
    /// posted to its `/v1/traces`. `None`: no traces are exported.
    pub otlp: Option<String>,
    /// How spans show object keys and job item ids (which may be health
    /// data, e.g. `patient-1234.pdf`).
    pub object_keys: ObjectKeysInSpans,
}

/// `[telemetry] object_keys`: what a span carries of an object key or a
/// job item id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKeysInSpans {
    /// A keyed hash (HMAC-SHA256 under a key the state store derives from
    /// its sealed secret): equal keys match across spans and hosts, and the
    /// collector cannot guess them back.
    #[default]
    Hash,
    /// The key itself.
    Plain,
    /// Nothing.
    Omit,
}

/// Whether something is mandatory or merely allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Requirement {
    #[default]
    Required,
    Optional,
}

/// `[policy]`: the rules `mayfly audit` enforces and validation checks up front.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PolicySpec {
    /// Tags every resource must carry (from the project tags or its own).
    pub require_tags: Vec<String>,
    /// Whether every bucket must be encrypted at rest.
    pub encryption: Requirement,
    /// Whether every network path leaving the machine must be TLS.
    pub tls: Requirement,
    /// When not empty, workers may run only inside these IPv4 networks.
    pub networks: Vec<Ipv4Cidr>,
    /// Largest estimated cost of one job run, in the pricing currency.
    pub max_run_cost: Option<f64>,
    /// How long sealed run logs are kept.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub log_retention: Option<Duration>,
}

/// `[pricing]`: unit prices for cost estimates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PricingSpec {
    pub cpu_second: f64,
    pub gb_second: f64,
    pub invocation: f64,
    pub worker_hour: f64,
    pub currency: String,
}

impl Default for PricingSpec {
    fn default() -> Self {
        PricingSpec { cpu_second: 0.0, gb_second: 0.0, invocation: 0.0, worker_hour: 0.0, currency: "USD".to_owned() }
    }
}

/// `[buckets.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketSpec {
    pub tags: BTreeMap<String, String>,
    /// Objects older than this are deleted; `None` keeps them forever.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub retention: Option<Duration>,
    /// Encrypt objects at rest (default true).
    pub encryption: bool,
}

impl Default for BucketSpec {
    fn default() -> Self {
        BucketSpec { tags: BTreeMap::new(), retention: None, encryption: true }
    }
}

/// `[queues.NAME]`; unset settings take [`QueueConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct QueueSpec {
    #[serde(serialize_with = "serialize_optional_duration")]
    pub visibility_timeout: Option<Duration>,
    #[serde(serialize_with = "serialize_optional_duration")]
    pub delay: Option<Duration>,
    pub max_message_size: Option<ByteSize>,
    #[serde(serialize_with = "serialize_optional_duration")]
    pub retention: Option<Duration>,
    pub max_receives: Option<u32>,
    pub dead_letter: Option<Name>,
    pub tags: BTreeMap<String, String>,
}

impl QueueSpec {
    /// The queue's settings with defaults filled in from [`QueueConfig::default`].
    pub fn config(&self) -> QueueConfig {
        let defaults = QueueConfig::default();
        QueueConfig {
            visibility_timeout: self.visibility_timeout.unwrap_or(defaults.visibility_timeout),
            delay: self.delay.unwrap_or(defaults.delay),
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            retention: self.retention.unwrap_or(defaults.retention),
            max_receives: self.max_receives.or(defaults.max_receives),
            dead_letter: self.dead_letter.clone().or(defaults.dead_letter),
        }
    }
}

/// How a function's code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// One process per invocation: event on stdin, result on stdout.
    #[default]
    Process,
    /// The AWS Lambda Runtime API on loopback; instances stay warm.
    Lambda,
}

/// What a function instance is isolated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Process,
    Container,
}

/// Bounded retries of a failed invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetrySpec {
    /// Attempts in total, the first included (≥ 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each later one.
    #[serde(serialize_with = "serialize_duration")]
    pub backoff: Duration,
}

impl RetrySpec {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { max_attempts: Self::DEFAULT_MAX_ATTEMPTS, backoff: Self::DEFAULT_BACKOFF }
    }
}

/// `[functions.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionSpec {
    pub runtime: Runtime,
    /// Program and arguments; never empty.
    pub command: Vec<String>,
    /// `_HANDLER` for the lambda runtime.
    pub handler: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit of one invocation; `None` is the runtime's default.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub timeout: Option<Duration>,
    pub memory: Option<ByteSize>,
    /// Most instances running at once; `None` is unbounded by the function.
    pub concurrency: Option<u32>,
    pub retries: RetrySpec,
    /// Queue that receives events whose retries are exhausted.
    pub on_failure: Option<Name>,
    pub isolation: Isolation,
    /// Container image, required with `isolation = "container"`.
    pub image: Option<String>,
    /// What the function's short-lived AWS credentials allow (needs `[api]`).
    pub permissions: Vec<Permission>,
    pub tags: BTreeMap<String, String>,
}

/// Where a route sends a bucket event, or a trigger delivers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteTarget {
    Queue(Name),
    Function(Name),
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Queue(queue) => write!(f, "queue {queue}"),
            RouteTarget::Function(function) => write!(f, "function {function}"),
        }
    }
}

/// `[[routes]]`: bucket events (optionally filtered by key prefix/suffix) to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSpec {
    pub bucket: Name,
    /// Never empty; default `["created"]`.
    pub events: Vec<ObjectEventKind>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub to: RouteTarget,
}

impl RouteSpec {
    /// Whether this route takes `event`: same bucket, one of its event kinds,
    /// and the key has its prefix and suffix.
    pub fn matches(&self, event: &mayfly_core::ObjectEvent) -> bool {
        event.bucket == self.bucket
            && self.events.contains(&event.kind)
            && self.prefix.as_deref().is_none_or(|prefix| event.key.starts_with(prefix))
            && self.suffix.as_deref().is_none_or(|suffix| event.key.ends_with(suffix))
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: Vec<&str> = self.events.iter().map(|event| event.as_str()).collect();
        write!(f, "bucket {} [{}]", self.bucket, events.join(", "))?;
        if let Some(prefix) = &self.prefix {
            write!(f, " prefix {prefix:?}")?;
        }
        if let Some(suffix) = &self.suffix {
            write!(f, " suffix {suffix:?}")?;
        }
        write!(f, " → {}", self.to)
    }
}

/// `[[triggers]]`: what invokes a function besides bucket routes and the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TriggerSpec {
    /// Messages of `queue` are delivered to `function` in batches (SQS-style).
    Queue {
        queue: Name,
        function: Name,
        /// Most messages per invocation (1–10000, default 10).
        batch_size: u32,
        /// How long to wait to fill a batch; `None` delivers what is there.
        #[serde(serialize_with = "serialize_optional_duration")]
        batch_window: Option<Duration>,
    },
    /// `function` is invoked on a cron or rate schedule.
    Schedule { schedule: Schedule, function: Name },
}

impl TriggerSpec {
    pub const DEFAULT_BATCH_SIZE: u32 = 10;
    pub const MAX_BATCH_SIZE: u32 = 10_000;

    pub fn function(&self) -> &Name {
        match self {
            TriggerSpec::Queue { function, .. } | TriggerSpec::Schedule { function, .. } => function,
        }
    }
}

impl fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerSpec::Queue { queue, function, batch_size, batch_window } => {
                write!(f, "queue {queue} → function {function} (batch {batch_size}")?;
                if let Some(window) = batch_window {
                    write!(f, ", window {}", format_duration(*window))?;
                }
                write!(f, ")")
            }
            TriggerSpec::Schedule { schedule, function } => write!(f, "{schedule} → function {function}"),
        }
    }
}

/// What an alarm measures of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMeasure {
    /// Messages ready to be received.
    Visible,
    /// Messages received and not yet deleted.
    InFlight,
    /// Messages waiting out their delay.
    Delayed,
    /// Age in seconds of the oldest message.
    OldestAge,
    /// Messages in the queue's dead-letter queue.
    DlqDepth,
}

/// What an alarm measures of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionMeasure {
    /// Invocations per period.
    Invocations,
    /// Failed invocations per period.
    Errors,
    /// Failed invocations / invocations over the period, from 0 to 1.
    ErrorRate,
    /// Invocations that waited for a concurrency slot.
    Throttles,
}

pub(crate) const QUEUE_MEASURES: &[(&str, QueueMeasure)] = &[
    ("visible", QueueMeasure::Visible),
    ("in_flight", QueueMeasure::InFlight),
    ("delayed", QueueMeasure::Delayed),
    ("oldest_age", QueueMeasure::OldestAge),
    ("dlq_depth", QueueMeasure::DlqDepth),
];

pub(crate) const FUNCTION_MEASURES: &[(&str, FunctionMeasure)] = &[
    ("invocations", FunctionMeasure::Invocations),
    ("errors", FunctionMeasure::Errors),
    ("error_rate", FunctionMeasure::ErrorRate),
    ("throttles", FunctionMeasure::Throttles),
];

/// An alarm's metric, written `queue.NAME.MEASURE` or `function.NAME.MEASURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    Queue { queue: Name, measure: QueueMeasure },
    Function { function: Name, measure: FunctionMeasure },
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Queue { queue, measure } => {
                let text = QUEUE_MEASURES.iter().find(|(_, m)| m == measure).map_or("?", |(text, _)| text);
                write!(f, "queue.{queue}.{text}")
            }
            Metric::Function { function, measure } => {
                let text = FUNCTION_MEASURES.iter().find(|(_, m)| m == measure).map_or("?", |(text, _)| text);
                write!(f, "function.{function}.{text}")
            }
        }
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Comparator {
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl Comparator {
    pub fn as_str(self) -> &'static str {
        match self {
            Comparator::Greater => ">",
            Comparator::GreaterOrEqual => ">=",
            Comparator::Less => "<",
            Comparator::LessOrEqual => "<=",
        }
    }

    /// Whether `value` is on the alarming side of `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparator::Greater => value > threshold,
            Comparator::GreaterOrEqual => value >= threshold,
            Comparator::Less => value < threshold,
            Comparator::LessOrEqual => value <= threshold,
        }
    }
}

/// `when = ">= 500 for 1m"`: the metric compared with a threshold, held for a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmCondition {
    pub comparator: Comparator,
    /// Plain number; durations are in seconds; percentages are fractions (5% = 0.05).
    pub threshold: f64,
    #[serde(serialize_with = "serialize_duration")]
    pub period: Duration,
}

impl fmt::Display for AlarmCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} for {}", self.comparator.as_str(), self.threshold, format_duration(self.period))
    }
}

/// `[alarms.NAME]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmSpec {
    pub metric: Metric,
    pub when: AlarmCondition,
}

/// What a job run works through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobSource {
    /// Drain a queue, `batch` messages per work item.
    Queue { queue: Name, batch: u32 },
    /// Every object of a bucket under `prefix`, one item per object.
    Bucket { bucket: Name, prefix: Option<String> },
    /// One item per line of the manifest object `key` in `bucket`.
    Manifest { bucket: Name, key: String },
}

/// How many workers a run may start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkersSpec {
    /// Most workers at once (≥ 1).
    pub max: u32,
    /// Backlog one worker is sized for: the fleet is ceil(backlog / items_per_worker) workers, at most `max`; `None` sizes it to `max`.
    pub items_per_worker: Option<u32>,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        WorkersSpec { max: 1, items_per_worker: None }
    }
}

/// Where a job's coordinator starts its workers.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProvisionerSpec {
    /// A kind from `mayfly_fleet`'s registry of provisioners (default `local`).
    pub kind: ProvisionerKind,
    /// Docker network name (docker and swarm).
    pub network: Option<String>,
    /// Docker network subnet (docker and swarm); inside `policy.networks` when set.
    pub subnet: Option<Ipv4Cidr>,
    /// Worker image (docker and swarm).
    pub image: Option<String>,
    /// Memory limit per worker.
    pub memory: Option<ByteSize>,
    /// CPU limit per worker.
    pub cpus: Option<f64>,
    /// Slurm partition (slurm only); the cluster's default when unset.
    pub partition: Option<String>,
    /// Slurm account (slurm only).
    pub account: Option<String>,
    /// Slurm quality of service (slurm only).
    pub qos: Option<String>,
    /// Slurm time limit of each worker job (slurm only), rounded up to minutes.
    pub time_limit: Option<Duration>,
    /// Further `sbatch` arguments (slurm only), e.g. `["--constraint=avx2"]`.
    pub extra_args: Vec<String>,
    /// Where the Slurm provisioner writes each task's 0600 environment file
    /// (its enrollment token), a directory every node sees at the same path
    /// (slurm only); the run's directory when unset.
    pub spool: Option<std::path::PathBuf>,
    /// Placement constraints of each worker task (swarm only), e.g. `["node.labels.gpu==true"]`.
    pub constraints: Vec<String>,
}

/// What starts a job run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobTrigger {
    Alarm(Name),
    Schedule(Schedule),
}

impl fmt::Display for JobTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobTrigger::Alarm(alarm) => write!(f, "alarm {alarm}"),
            JobTrigger::Schedule(schedule) => write!(f, "{schedule}"),
        }
    }
}

/// `[jobs.NAME]`: a batch run over a source, with no per-run time limit
/// other than its own deadline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSpec {
    pub source: JobSource,
    pub function: Name,
    pub workers: WorkersSpec,
    /// Limit on one item; `None` is the function's timeout.
    #[serde(serialize_with = "serialize_optional_duration")]
    pub item_timeout: Option<Duration>,
    /// Attempts per item, the first included (≥ 1).
    pub max_attempts: u32,
    /// The whole run must end within this (default 24h).
    #[serde(serialize_with = "serialize_duration")]
    pub deadline: Duration,
    /// Largest estimated cost of one run; `None` falls back to `policy.max_run_cost`.
    pub budget: Option<f64>,
    /// Bucket for the run's sealed logs.
    pub logs: Option<Name>,
    pub provisioner: ProvisionerSpec,
    pub triggers: Vec<JobTrigger>,
    pub tags: BTreeMap<String, String>,
}

impl JobSpec {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_QUEUE_BATCH: u32 = 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    /// Any method.
    Any,
}

pub(crate) const HTTP_METHODS: &[(&str, HttpMethod)] = &[
    ("GET", HttpMethod::Get),
    ("POST", HttpMethod::Post),
    ("PUT", HttpMethod::Put),
    ("PATCH", HttpMethod::Patch),
    ("DELETE", HttpMethod::Delete),
    ("ANY", HttpMethod::Any),
];

/// `[[api.routes]]`: an HTTPS route to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiRouteSpec {
    pub method: HttpMethod,
    /// Starts with `/`; `{param}` segments match one path segment.
    pub path: String,
    pub function: Name,
}

/// `[api.tls]`: certificate and key files (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiSpec {
    pub listen: SocketAddr,
    /// Where the AWS-compatible (S3) endpoint listens, with the same certificate.
    pub aws_listen: SocketAddr,
    /// The domain under which the S3 endpoint also answers virtual-hosted-style
    /// requests (`<bucket>.<aws_domain>`); path-style requests work on any host.
    pub aws_domain: String,
    /// The endpoint's URL as job workers off this host dial it
    /// (`aws_advertise`); the API's certificate must name its host.
    pub aws_advertise: Option<AdvertisedEndpoint>,
    pub tls: Option<TlsFiles>,
    pub routes: Vec<ApiRouteSpec>,
}

/// `[api].aws_advertise`: `https://HOST:PORT`, the address of the AWS
/// endpoint that job workers on other hosts (containers, Slurm nodes, swarm
/// tasks) are told to dial, and a name its certificate must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedEndpoint {
    pub host: AdvertisedHost,
    pub port: u16,
}

/// The host of an advertised endpoint: a DNS name (lower case) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertisedHost {
    Dns(String),
    Ip(std::net::IpAddr),
}

impl fmt::Display for AdvertisedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdvertisedHost::Dns(name) => f.write_str(name),
            AdvertisedHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl AdvertisedHost {
    /// A bare host as an operator writes it (`MAYFLY_COORDINATOR_ADVERTISE`):
    /// a DNS name, an IPv4 address, or an IPv6 address with or without
    /// brackets. The error says what is wrong.
    pub fn parse(text: &str) -> Result<AdvertisedHost, String> {
        let unbracketed = text.strip_prefix('[').and_then(|inside| inside.strip_suffix(']')).unwrap_or(text);
        if let Ok(ip) = unbracketed.parse::<std::net::IpAddr>() {
            return Ok(AdvertisedHost::Ip(ip));
        }
        if text.is_empty() {
            return Err("names no host".to_owned());
        }
        if crate::lower::is_domain_name(text) && text.contains(|c: char| c.is_ascii_alphabetic()) {
            return Ok(AdvertisedHost::Dns(text.to_ascii_lowercase()));
        }
        Err(format!("is neither a DNS name nor an IP address: `{text}`"))
    }

    /// `https://HOST:PORT`, an IPv6 address in brackets.
    pub fn url(&self, port: u16) -> String {
        match self {
            AdvertisedHost::Ip(std::net::IpAddr::V6(ip)) => format!("https://[{ip}]:{port}"),
            host => format!("https://{host}:{port}"),
        }
    }
}

impl AdvertisedEndpoint {
    /// `https://HOST:PORT` (an IPv6 address in brackets), as `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        self.host.url(self.port)
    }
}

impl fmt::Display for AdvertisedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl Serialize for AdvertisedEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.url())
    }
}

impl ApiSpec {
    pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8443));
    pub const DEFAULT_AWS_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8444));
    pub const DEFAULT_AWS_DOMAIN: &str = "localhost";
}

/// An IPv4 network in CIDR notation, e.g. `10.77.0.0/16`; host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_length: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{input}` is not an IPv4 network; write an address and a prefix length, e.g. `10.77.0.0/16`")]
    Malformed { input: String },
    #[error("`{input}` has host bits set; the network is `{network}`")]
    HostBitsSet { input: String, network: Ipv4Cidr },
}

impl Ipv4Cidr {
    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_length(self) -> u8 {
        self.prefix_length
    }

    fn mask(prefix_length: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix_length)).unwrap_or(0)
    }

    /// Whether every address of `other` is inside `self`.
    pub fn contains(self, other: Ipv4Cidr) -> bool {
        other.prefix_length >= self.prefix_length
            && u32::from(other.network) & Self::mask(self.prefix_length) == u32::from(self.network)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = || CidrError::Malformed { input: input.to_owned() };
        let (address, prefix) = input.split_once('/').ok_or_else(malformed)?;
        let address: Ipv4Addr = address.parse().map_err(|_| malformed())?;
        if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(malformed());
        }
        let prefix_length: u8 = prefix.parse().map_err(|_| malformed())?;
        if prefix_length > 32 {
            return Err(malformed());
        }
        let network = Ipv4Addr::from(u32::from(address) & Self::mask(prefix_length));
        let cidr = Ipv4Cidr { network, prefix_length };
        if network != address {
            return Err(CidrError::HostBitsSet { input: input.to_owned(), network: cidr });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_length)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn serialize_duration<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration(*duration))
}

fn serialize_optional_duration<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_duration(*duration)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_and_containment() {
        let wide: Ipv4Cidr = "10.77.0.0/16".parse().unwrap();
        let narrow: Ipv4Cidr = "10.77.1.0/24".parse().unwrap();
        let outside: Ipv4Cidr = "10.78.1.0/24".parse().unwrap();
        assert!(wide.contains(narrow) && wide.contains(wide) && !narrow.contains(wide));
        assert!(!wide.contains(outside));
        assert!("0.0.0.0/0".parse::<Ipv4Cidr>().unwrap().contains(outside));
        assert_eq!(
            "10.77.1.5/24".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBitsSet { input: "10.77.1.5/24".into(), network: narrow })
        );
        for bad in ["10.77.0.0", "10.77.0.0/33", "10.77.0/16", "10.77.0.0/+8", "::1/128", "10.77.0.0/"] {
            assert!(matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Malformed { .. })), "{bad}");
        }
    }

    #[test]
    fn queue_spec_fills_defaults_from_queue_config() {
        let spec = QueueSpec { visibility_timeout: Some(Duration::from_secs(120)), ..QueueSpec::default() };
        let config = spec.config();
        assert_eq!(config.visibility_timeout, Duration::from_secs(120));
        assert_eq!(config.retention, QueueConfig::DEFAULT_RETENTION);
        assert_eq!(config.max_receives, None);
    }
}
