//! The inventory: one snapshot of every resource Mayfly knows or can find,
//! with its tags and owner, at one instant. Plain data, serializable as the
//! `inventory` of `mayfly audit --json`; the rules read it without IO.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mayfly_core::run::RunStatus;
use mayfly_core::{Name, Timestamp, format_duration};
use mayfly_spec::{Ipv4Cidr, PricingSpec};
use mayfly_state::{RunItemCounts, WorkerRecord};
use serde::{Serialize, Serializer};

/// Tags as key → value.
pub type TagMap = BTreeMap<String, String>;

/// The tag that names a resource's owner, when it has one.
pub const OWNER_TAG: &str = "owner";

/// Everything found, at `taken_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    pub project: Name,
    #[serde(serialize_with = "rfc3339")]
    pub taken_at: Timestamp,
    /// Applied versions of the architecture file, oldest first.
    pub deployments: Vec<DeploymentEntry>,
    pub state_store: StateStoreEntry,
    /// The deployed `[api]`, if any.
    pub api: Option<ApiEntry>,
    pub buckets: Vec<BucketEntry>,
    pub queues: Vec<QueueEntry>,
    pub functions: Vec<FunctionEntry>,
    pub jobs: Vec<JobEntry>,
    /// Every run the store holds, newest first.
    pub runs: Vec<RunEntry>,
    /// Live coordinators and workers (and any other resource tagged with the
    /// project), from every provisioner.
    pub live: Vec<LiveEntry>,
    /// Networks tagged with the project, from every network inventory.
    pub networks: Vec<NetworkEntry>,
    /// Sealed worker logs in the jobs' logs buckets.
    pub sealed_logs: Vec<SealedLogEntry>,
    /// Queue messages set aside because they failed their integrity check.
    pub damaged_messages: Vec<mayfly_state::DamagedMessage>,
}

impl Inventory {
    /// An empty inventory of `project` at `taken_at`: nothing deployed,
    /// nothing running, an encrypted store. Tests build on it.
    pub fn empty(project: Name, taken_at: Timestamp) -> Inventory {
        Inventory {
            project,
            taken_at,
            deployments: Vec::new(),
            state_store: StateStoreEntry {
                backend: "sqlite".to_owned(),
                location: String::new(),
                payloads_encrypted: true,
            },
            api: None,
            buckets: Vec::new(),
            queues: Vec::new(),
            functions: Vec::new(),
            jobs: Vec::new(),
            runs: Vec::new(),
            live: Vec::new(),
            networks: Vec::new(),
            sealed_logs: Vec::new(),
            damaged_messages: Vec::new(),
        }
    }

    /// How many resources the inventory holds (the store itself and the API count one each).
    pub fn resource_count(&self) -> u64 {
        let counted = 1
            + usize::from(self.api.is_some())
            + self.deployments.len()
            + self.buckets.len()
            + self.queues.len()
            + self.functions.len()
            + self.jobs.len()
            + self.runs.len()
            + self.live.len()
            + self.networks.len()
            + self.sealed_logs.len();
        counted as u64
    }

    pub fn run(&self, id: &str) -> Option<&RunEntry> {
        self.runs.iter().find(|run| run.id == id)
    }
}

/// The `owner` tag, if present.
pub fn owner_of(tags: &TagMap) -> Option<String> {
    tags.get(OWNER_TAG).cloned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentEntry {
    pub version: u64,
    #[serde(serialize_with = "rfc3339")]
    pub applied_at: Timestamp,
    pub content_hash: String,
    pub forced: bool,
}

/// The state store itself: where it is and whether it seals customer payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateStoreEntry {
    /// e.g. `sqlite`.
    pub backend: String,
    /// e.g. the file's path.
    pub location: String,
    /// Whether message bodies, item payloads, results and invocation logs are encrypted.
    pub payloads_encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiEntry {
    pub listen: SocketAddr,
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketEntry {
    pub name: Name,
    /// The tags the store's registry holds for it.
    pub tags: TagMap,
    pub owner: Option<String>,
    /// The effective tags mayfly.toml declares for it; `None` if it is not declared.
    pub declared_tags: Option<TagMap>,
    /// Whether its objects are written encrypted at rest.
    pub encrypted: bool,
    /// The bucket's `encryption` setting in mayfly.toml, if declared.
    pub declared_encryption: Option<bool>,
    #[serde(serialize_with = "optional_duration")]
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueEntry {
    pub name: Name,
    pub tags: TagMap,
    pub owner: Option<String>,
    /// One of Mayfly's own (`mayfly-…`), carrying the project tags only.
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionEntry {
    pub name: Name,
    pub runtime: String,
    pub isolation: String,
    /// Effective tags: the project's with the function's over them.
    pub tags: TagMap,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEntry {
    pub name: Name,
    pub tags: TagMap,
    pub owner: Option<String>,
    /// Its provisioner's kind, as the registry names it (`local`, `docker`).
    pub provisioner: String,
    pub network: Option<String>,
    pub subnet: Option<Ipv4Cidr>,
    /// The bucket its sealed logs go to.
    pub logs: Option<Name>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEntry {
    pub id: String,
    pub job: Name,
    pub status: RunStatus,
    pub trigger: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Timestamp,
    #[serde(serialize_with = "optional_rfc3339")]
    pub finished_at: Option<Timestamp>,
    #[serde(serialize_with = "rfc3339")]
    pub deadline: Timestamp,
    pub budget: Option<f64>,
    /// From the run's report once it ended; estimated from its workers and
    /// attempts while it goes ([`estimate_run_cost`]).
    pub estimated_cost: f64,
    pub items: RunItemCounts,
}

/// A live resource found by a provisioner's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveEntry {
    /// The provisioner that found it: `local`, later `docker`.
    pub provisioner: String,
    /// `process` or `container`.
    pub kind: String,
    /// The provisioner's resource id, e.g. `pid:<pgid>:<start ticks>`.
    pub id: String,
    /// `coordinator`, `worker` or `function`, from its `mayfly.role` tag.
    pub role: Option<String>,
    /// From its `mayfly.run` tag.
    pub run: Option<String>,
    /// From its `mayfly.worker` tag.
    pub worker: Option<String>,
    pub tags: TagMap,
    pub owner: Option<String>,
    /// It names the Mayfly process that owns it (`mayfly.owner`, a function
    /// container) and that process is gone.
    pub owner_process_gone: bool,
    /// Where it can be reached, for resources that have an address of their own (containers).
    pub address: Option<String>,
    #[serde(serialize_with = "optional_rfc3339")]
    pub started_at: Option<Timestamp>,
}

/// A network found by a network inventory (Docker networks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkEntry {
    /// Who found it, e.g. `docker`.
    pub provider: String,
    pub id: String,
    pub name: String,
    pub subnets: Vec<Ipv4Cidr>,
    pub tags: TagMap,
    pub owner: Option<String>,
    /// From its `mayfly.run` tag, if it belongs to one run.
    pub run: Option<String>,
}

/// A sealed worker log (`runs/<run>/<worker>.log.zst` and its checksum) in a logs bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealedLogEntry {
    pub bucket: Name,
    pub key: String,
    pub size: u64,
    #[serde(serialize_with = "rfc3339")]
    pub stored_at: Timestamp,
}

/// A run's cost so far under `[pricing]`: the workers' wall time × `worker_hour`
/// plus attempts × `invocation` — the model the coordinator enforces budgets with.
pub fn estimate_run_cost(workers: &[WorkerRecord], attempts: u64, pricing: &PricingSpec, now: Timestamp) -> f64 {
    let worker_seconds: f64 = workers
        .iter()
        .map(|worker| worker.stopped_at.unwrap_or(now).duration_since(worker.started_at).as_secs_f64())
        .sum();
    worker_seconds / 3600.0 * pricing.worker_hour + attempts as f64 * pricing.invocation
}

fn rfc3339<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339())
}

fn optional_rfc3339<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(&at.to_rfc3339()),
        None => serializer.serialize_none(),
    }
}

fn optional_duration<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_str(&format_duration(*duration)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_cost_counts_worker_time_and_attempts() {
        let pricing = PricingSpec { worker_hour: 3.6, invocation: 0.01, ..PricingSpec::default() };
        let start = Timestamp::from_millis(1_000_000);
        let worker = |name: &str, seconds: Option<u64>| WorkerRecord {
            run_id: "r".into(),
            worker: name.into(),
            resource: "pid:1:1".into(),
            started_at: start,
            stopped_at: seconds.map(|s| start.saturating_add(Duration::from_secs(s))),
            end: None,
            items_done: 0,
            items_failed: 0,
            busy: Duration::ZERO,
            log_object: None,
            log_sha256: None,
        };
        let now = start.saturating_add(Duration::from_secs(50));
        // 100 s stopped + 50 s live = 150 s at 0.001/s, plus 4 attempts at 0.01.
        let cost = estimate_run_cost(&[worker("a", Some(100)), worker("b", None)], 4, &pricing, now);
        assert!((cost - 0.19).abs() < 1e-9, "{cost}");
        assert_eq!(estimate_run_cost(&[], 0, &pricing, now), 0.0);
    }
}
