//! The JSON Schema of `mayfly.toml` for editors (Taplo / Even Better TOML):
//! "schema mirror" types that describe the file as written — durations,
//! sizes and schedules as patterned strings, choices as enums, every table
//! closed to unknown keys — with descriptions from their doc comments.
//!
//! They are not used to parse: the located walk in `lower.rs` does that. A
//! test deserializes every valid fixture into these types, so the two cannot
//! drift apart silently.

// The mirror types are only deserialized (in tests) and described; nothing reads their fields.
#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Deserialize;

/// The JSON Schema (draft 2020-12) of the architecture file.
pub fn json_schema() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<ArchitectureFile>();
    schema.to_value()
}

/// A resource name: 1–63 lowercase letters, digits, `-` and `_`, starting with a letter or a digit.
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct NameText(#[schemars(pattern(r"^[a-z0-9][a-z0-9_-]{0,62}$"))] pub String);

/// A duration: a whole number and a unit (ms, s, m, h or d), e.g. "30s", "5m", "90d".
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct DurationText(#[schemars(pattern(r"^\s*[0-9]+\s*(ms|s|m|h|d)\s*$"))] pub String);

/// A size: a whole number and a unit (B, KB, MB, GB, KiB, MiB or GiB), e.g. "512MiB".
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct SizeText(#[schemars(pattern(r"^\s*[0-9]+\s*(B|KB|kB|MB|GB|KiB|MiB|GiB)?\s*$"))] pub String);

/// A schedule: "cron(MIN HOUR DAY MONTH WEEKDAY)" (UTC) or "rate(N seconds|minutes|hours|days)".
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct ScheduleText(
    #[schemars(pattern(r"^\s*(cron\(\s*\S+(\s+\S+){4}\s*\)|rate\(\s*[0-9]+\s+(second|seconds|minute|minutes|hour|hours|day|days)\s*\))\s*$"))]
    pub String,
);

/// An IPv4 network in CIDR notation, e.g. "10.77.0.0/16".
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct CidrText(#[schemars(pattern(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$"))] pub String);

/// Tags: string labels carried by resources; resource tags override project tags.
pub(crate) type TagsTable = BTreeMap<String, String>;

/// The architecture file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "mayfly.toml",
    description = "A Mayfly architecture: buckets, queues, functions, triggers, alarms, jobs and the API, schema version 1."
)]
pub(crate) struct ArchitectureFile {
    /// Schema version of this file; must be 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Project name; prefixes every resource Mayfly creates.
    pub name: NameText,
    /// Project tags, carried by every resource.
    #[serde(default)]
    pub tags: TagsTable,
    pub policy: Option<PolicyFile>,
    pub pricing: Option<PricingFile>,
    /// Buckets: namespaces of objects, encrypted at rest, that emit created/deleted events.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketFile>,
    /// Queues: durable at-least-once queues with visibility timeout and dead-letter queue.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueFile>,
    /// Functions: code, runtime and limits.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionFile>,
    /// Bucket-event routes to a queue or a function.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// Queue → function and schedule → function triggers.
    #[serde(default)]
    pub triggers: Vec<TriggerFile>,
    /// Alarms: a threshold on a metric held for a period.
    #[serde(default)]
    pub alarms: BTreeMap<String, AlarmFile>,
    /// Jobs: batch runs over a source by an ephemeral coordinator and its workers.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobFile>,
    pub api: Option<ApiFile>,
    pub state: Option<StateFile>,
    pub storage: Option<StorageFile>,
    pub telemetry: Option<TelemetryFile>,
    pub evaluation: Option<EvaluationFile>,
}

/// The representative workload `mayfly deploy --evaluate` replays on the
/// deployed version and on the new file (an experiment file's `[workload]`
/// fields, plus how often and what to compare).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvaluationFile {
    /// The job each run replays.
    pub job: NameText,
    /// What is put into each version's scratch project; none when the job needs no input.
    pub input: Option<EvaluationInputFile>,
    /// Runs of each version (default 3).
    #[schemars(range(min = 1, max = 100))]
    pub repetitions: Option<u32>,
    /// Seeds the order of runs and the bootstrap (default 1).
    pub seed: Option<u32>,
    /// Metrics to compare (default ["makespan", "cost"]): makespan, cost, item_p50, item_p95, cpu_seconds, failures.
    pub metrics: Option<Vec<String>>,
    /// How much worse a metric must be before `--require-no-regression` refuses, as a percentage (default "5%").
    #[schemars(pattern(r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"))]
    pub tolerance: Option<String>,
}

/// Exactly one of `manifest`, `objects`, `messages`; local files are relative to the project directory.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum EvaluationInputFile {
    /// The local `file` is stored as `bucket/key` before every run.
    Manifest { bucket: String, key: String, file: String },
    /// Every file under the local `dir` is stored under `bucket/prefix` once per version.
    Objects { bucket: String, prefix: Option<String>, dir: String },
    /// Each line of the local `file` is sent to `queue` before every run.
    Messages { queue: String, file: String },
}

/// Where `mayfly up` and `mayfly serve` export traces (not part of a
/// deployment; `MAYFLY_OTLP_ENDPOINT` overrides it).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetryFile {
    /// The OTLP/HTTP collector's base URL, e.g. "http://localhost:4318"; traces are posted
    /// to its /v1/traces as protobuf. No credentials.
    #[schemars(pattern(r"^[hH][tT][tT][pP][sS]?://[^/@?#]+(/[^?#]*)?$"))]
    pub otlp: Option<String>,
    /// What spans carry of object keys and job item ids, which may be health data
    /// (default "hash").
    pub object_keys: Option<ObjectKeysText>,
}

/// How spans show object keys and job item ids.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ObjectKeysText {
    /// HMAC-SHA256 under a key derived from the state store's sealed secret (the default).
    Hash,
    /// The key as it is.
    Plain,
    /// Left out.
    Omit,
}

/// Where the buckets' objects are (read before the project is opened; not
/// part of a deployment). No `url` or "file:": the project's `.mayfly/buckets`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageFile {
    /// "file:" (the default) or "s3://BUCKET/PREFIX" on an S3-compatible store, reached with
    /// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (never credentials here).
    #[schemars(pattern(r"^(file:|s3://[^/@?]+(/[^?]*)?)$"))]
    pub url: Option<String>,
}

/// Where the project's state store is (read before the project is opened;
/// not part of a deployment). No `url`: the embedded store in `.mayfly/`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    /// "sqlite:" (the embedded default) or "postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=FILE";
    /// never with a password (use PGPASSWORD, MAYFLY_STATE_PASSWORD, a .pgpass file or `password_file`).
    #[schemars(pattern(r"^(sqlite:|postgres(ql)?://[^:@/]*@?[^@]*$)"))]
    pub url: Option<String>,
    /// A file (owner-only) holding the PostgreSQL password, relative to the project directory.
    pub password_file: Option<String>,
    /// The CA certificate file (PEM) a PostgreSQL server's certificate must chain to
    /// under sslmode=verify-ca or verify-full, relative to the project directory; the
    /// URL's `sslrootcert` wins over it.
    pub ca_file: Option<String>,
}

/// Whether something is mandatory or merely allowed.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RequirementText {
    Required,
    Optional,
}

/// Rules that validation and `mayfly audit` enforce.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Tags every resource must carry, from the project tags or its own.
    #[serde(default)]
    pub require_tags: Vec<String>,
    /// Whether every bucket must be encrypted at rest (default "required").
    pub encryption: Option<RequirementText>,
    /// Whether every network path leaving the machine must be TLS (default "required").
    pub tls: Option<RequirementText>,
    /// IPv4 networks workers may run in; docker job subnets must lie inside one.
    #[serde(default)]
    pub networks: Vec<CidrText>,
    /// Largest estimated cost of one job run, in the pricing currency.
    #[schemars(range(min = 0.0))]
    pub max_run_cost: Option<f64>,
    /// How long sealed run logs are kept.
    pub log_retention: Option<DurationText>,
}

/// Unit prices for cost estimates (default 0).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PricingFile {
    /// Price of one CPU-second.
    #[schemars(range(min = 0.0))]
    pub cpu_second: Option<f64>,
    /// Price of one GB-second of memory.
    #[schemars(range(min = 0.0))]
    pub gb_second: Option<f64>,
    /// Price of one invocation.
    #[schemars(range(min = 0.0))]
    pub invocation: Option<f64>,
    /// Price of one worker-hour.
    #[schemars(range(min = 0.0))]
    pub worker_hour: Option<f64>,
    /// ISO 4217 currency code (default "USD").
    #[schemars(pattern(r"^[A-Z]{3}$"))]
    pub currency: Option<String>,
}

/// A bucket.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketFile {
    #[serde(default)]
    pub tags: TagsTable,
    /// Objects older than this are deleted (default: kept forever).
    pub retention: Option<DurationText>,
    /// Encrypt objects at rest (default true).
    pub encryption: Option<bool>,
}

/// A queue.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueFile {
    /// How long a received message stays invisible to other receivers (default "30s", at most "12h").
    pub visibility_timeout: Option<DurationText>,
    /// Delay before a new message becomes visible (default "0s").
    pub delay: Option<DurationText>,
    /// Largest message accepted (default "256KiB").
    pub max_message_size: Option<SizeText>,
    /// How long an undeleted message is kept (default "4d").
    pub retention: Option<DurationText>,
    /// Receives before a message moves to `dead_letter`; requires `dead_letter`.
    #[schemars(range(min = 1))]
    pub max_receives: Option<u32>,
    /// The dead-letter queue; requires `max_receives`.
    pub dead_letter: Option<NameText>,
    #[serde(default)]
    pub tags: TagsTable,
}

/// How a function's code runs.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RuntimeText {
    /// One process per invocation: event JSON on stdin, result JSON on stdout.
    Process,
    /// The AWS Lambda Runtime API on loopback; instances stay warm.
    Lambda,
}

/// What a function instance is isolated in.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IsolationText {
    /// A process group with limits.
    Process,
    /// A container; needs `image`.
    Container,
}

/// Bounded retries of a failed invocation.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetriesFile {
    /// Attempts in total, the first included (default 3).
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, doubled for each later one (default "10s").
    pub backoff: Option<DurationText>,
}

/// A function.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FunctionFile {
    /// Runtime (default "process").
    pub runtime: Option<RuntimeText>,
    /// Program and arguments.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// `_HANDLER` for the lambda runtime.
    pub handler: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Limit on one invocation.
    pub timeout: Option<DurationText>,
    /// Memory limit.
    pub memory: Option<SizeText>,
    /// Most instances at once.
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    pub retries: Option<RetriesFile>,
    /// Queue that receives events whose retries are exhausted.
    pub on_failure: Option<NameText>,
    /// Isolation (default "process").
    pub isolation: Option<IsolationText>,
    /// Container image; required with isolation = "container".
    pub image: Option<String>,
    /// What the function's AWS credentials allow: `<verb>:<bucket or queue>`,
    /// verbs `objects:read`, `objects:write`, `queues:read`, `messages:write`.
    #[serde(default)]
    pub permissions: Vec<PermissionText>,
    #[serde(default)]
    pub tags: TagsTable,
}

/// A permission: a verb and a bucket or queue, e.g. "objects:read:inbox".
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub(crate) struct PermissionText(
    #[schemars(pattern(r"^(objects:read|objects:write|queues:read|messages:write):[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub  String,
);

/// A bucket event kind.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventText {
    Created,
    Deleted,
}

/// Which bucket events a route takes.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFromFile {
    pub bucket: NameText,
    /// Event kinds (default ["created"]).
    #[schemars(length(min = 1))]
    pub events: Option<Vec<EventText>>,
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only keys ending with this.
    pub suffix: Option<String>,
}

/// Deliver to a queue.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToQueueFile {
    pub queue: NameText,
}

/// Invoke a function.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToFunctionFile {
    pub function: NameText,
}

/// Where a route delivers.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum RouteToFile {
    Queue(ToQueueFile),
    Function(ToFunctionFile),
}

/// A bucket-event route.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub from: RouteFromFile,
    pub to: RouteToFile,
}

/// Messages of a queue invoke a function in batches.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueTriggerFile {
    pub queue: NameText,
    pub function: NameText,
    /// Most messages per invocation (default 10).
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: Option<u32>,
    /// How long to wait to fill a batch.
    pub batch_window: Option<DurationText>,
}

/// A schedule invokes a function.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleTriggerFile {
    pub schedule: ScheduleText,
    pub function: NameText,
}

/// A trigger: queue → function or schedule → function.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum TriggerFile {
    Queue(QueueTriggerFile),
    Schedule(ScheduleTriggerFile),
}

/// An alarm.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlarmFile {
    /// "queue.NAME.visible|in_flight|delayed|oldest_age|dlq_depth" or "function.NAME.invocations|errors|error_rate|throttles".
    #[schemars(pattern(
        r"^(queue\.[a-z0-9][a-z0-9_-]*\.(visible|in_flight|delayed|oldest_age|dlq_depth)|function\.[a-z0-9][a-z0-9_-]*\.(invocations|errors|error_rate|throttles))$"
    ))]
    pub metric: String,
    /// "<comparator> <threshold> for <period>", e.g. ">= 500 for 1m"; thresholds may be "5%" (error_rate) or a duration (oldest_age).
    #[schemars(pattern(r"^\s*(>=|<=|>|<)\s*\S+\s+for\s+\S+\s*$"))]
    pub when: String,
}

/// Drain a queue.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueSourceFile {
    pub queue: NameText,
    /// Messages per work item (default 1).
    #[schemars(range(min = 1, max = 10000))]
    pub batch: Option<u32>,
}

/// Every object of a bucket under a prefix.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BucketSourceFile {
    pub bucket: NameText,
    pub prefix: Option<String>,
}

/// The object holding one item per line.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestFile {
    pub bucket: NameText,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// One item per line of a manifest object.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestSourceFile {
    pub manifest: ManifestFile,
}

/// What a job works through.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum JobSourceFile {
    Queue(QueueSourceFile),
    Bucket(BucketSourceFile),
    Manifest(ManifestSourceFile),
}

/// How many workers a run may start.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkersFile {
    /// Most workers at once (default 1).
    #[schemars(range(min = 1, max = 10000))]
    pub max: Option<u32>,
    /// Backlog one worker is sized for: the fleet is ceil(backlog / items_per_worker) workers, at most `max`.
    #[schemars(range(min = 1))]
    pub items_per_worker: Option<u32>,
}

/// Where workers run: a kind from the provisioner registry (`mayfly_fleet::ProvisionerKind`).
#[derive(Deserialize)]
#[serde(transparent)]
pub(crate) struct ProvisionerKindText(pub String);

impl JsonSchema for ProvisionerKindText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProvisionerKindText".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let kinds: Vec<serde_json::Value> = mayfly_fleet::ProvisionerKind::all()
            .map(|kind| serde_json::json!({ "type": "string", "const": kind.name(), "description": kind.summary() }))
            .collect();
        schemars::json_schema!({ "description": "Where workers run.", "oneOf": kinds })
    }
}

/// Where a job's coordinator starts its workers.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisionerFile {
    /// Default "local".
    pub kind: Option<ProvisionerKindText>,
    /// Docker network name (docker and swarm).
    pub network: Option<String>,
    /// Docker network subnet (docker and swarm), inside policy.networks when set.
    pub subnet: Option<CidrText>,
    /// Worker image (docker and swarm).
    pub image: Option<String>,
    /// Memory limit per worker.
    pub memory: Option<SizeText>,
    /// CPU limit per worker.
    #[schemars(range(min = 0.0))]
    pub cpus: Option<f64>,
    /// Slurm partition (slurm only); the cluster's default when unset.
    pub partition: Option<String>,
    /// Slurm account (slurm only).
    pub account: Option<String>,
    /// Slurm quality of service (slurm only).
    pub qos: Option<String>,
    /// Time limit of each worker job (slurm only), rounded up to whole minutes.
    pub time_limit: Option<DurationText>,
    /// Further sbatch options (slurm only), each with its value: ["--constraint=avx2"].
    pub extra_args: Option<Vec<String>>,
    /// Directory for each worker task's 0600 environment file (slurm only), an absolute path every node sees; the run's directory by default.
    pub spool: Option<String>,
    /// Placement constraints of each worker task (swarm only): ["node.labels.gpu==true"].
    pub constraints: Option<Vec<String>>,
}

/// Start a run when an alarm fires.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlarmTriggerFile {
    pub alarm: NameText,
}

/// Start a run on a schedule.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobScheduleTriggerFile {
    pub schedule: ScheduleText,
}

/// What starts a job run.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum JobTriggerFile {
    Alarm(AlarmTriggerFile),
    Schedule(JobScheduleTriggerFile),
}

/// A job.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFile {
    pub source: JobSourceFile,
    /// The function that processes each item.
    pub function: NameText,
    pub workers: Option<WorkersFile>,
    /// Limit on one item (default: the function's timeout).
    pub item_timeout: Option<DurationText>,
    /// Attempts per item (default 3).
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// The whole run must end within this (default "24h").
    pub deadline: Option<DurationText>,
    /// Largest estimated cost of one run (default: policy.max_run_cost).
    #[schemars(range(min = 0.0))]
    pub budget: Option<f64>,
    /// Bucket for the run's sealed logs.
    pub logs: Option<NameText>,
    pub provisioner: Option<ProvisionerFile>,
    #[serde(default)]
    pub triggers: Vec<JobTriggerFile>,
    #[serde(default)]
    pub tags: TagsTable,
}

/// TLS certificate and key files (PEM).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiTlsFile {
    pub cert: String,
    pub key: String,
}

/// HTTP method of an API route.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum MethodText {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    /// Any method.
    Any,
}

/// An HTTPS route to a function.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiRouteFile {
    pub method: MethodText,
    /// Starts with "/"; "{param}" segments match one path segment.
    #[schemars(pattern(r"^/\S*$"))]
    pub path: String,
    pub function: NameText,
}

/// The HTTPS API.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiFile {
    /// Socket address (default "127.0.0.1:8443").
    pub listen: Option<String>,
    /// Socket address of the S3-compatible endpoint (default "127.0.0.1:8444").
    pub aws_listen: Option<String>,
    /// Domain for virtual-hosted-style S3 requests, `<bucket>.<aws_domain>` (default "localhost").
    pub aws_domain: Option<String>,
    /// URL of the AWS endpoint for job workers on other hosts, "https://NAME:PORT" (NAME a DNS name or an IP address; the certificate must name it).
    pub aws_advertise: Option<String>,
    /// Required by policy.tls = "required" unless listening on loopback.
    pub tls: Option<ApiTlsFile>,
    #[serde(default)]
    pub routes: Vec<ApiRouteFile>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_draft_2020_12_and_closed() {
        let schema = json_schema();
        assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], serde_json::json!(["version", "name"]));
        let definitions = schema["$defs"].as_object().unwrap();
        assert!(definitions["DurationText"]["pattern"].is_string(), "{}", definitions["DurationText"]);
        assert!(definitions["QueueFile"]["description"].is_string());
    }

    #[test]
    fn mirror_types_accept_every_valid_fixture() {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid");
        let mut checked = 0;
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if let Err(error) = toml::from_str::<ArchitectureFile>(&text) {
                    panic!("{}: {error}", path.display());
                }
                checked += 1;
            }
        }
        assert!(checked > 0);
        toml::from_str::<ArchitectureFile>(&crate::scaffold(&mayfly_core::Name::new("demo").unwrap())).unwrap();
    }
}
