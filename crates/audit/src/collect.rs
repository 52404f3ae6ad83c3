//! Taking the inventory — the audit's only IO — and reaping orphans.
//!
//! Sources: the deployed architecture (functions, jobs, the API, declared
//! bucket settings), the state store (deployments, the bucket and queue
//! registries with their tags, runs with their items, workers and reports),
//! the logs buckets (sealed logs), every [`Provisioner`] (live coordinators
//! and workers, by the project's tag) and every [`NetworkInventory`]
//! (networks, by the project's tag).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mayfly_buckets::Buckets;
use mayfly_core::run::RunReport;
use mayfly_core::{Clock, Name};
use mayfly_fleet::{
    BoxFuture, FleetError, LiveResource, Provisioner, ResourceId, TAG_OWNER, TAG_PROJECT, TAG_ROLE, TAG_RUN,
    TAG_WORKER, TagFilter, Tags,
};
use mayfly_spec::{Architecture, Ipv4Cidr};
use mayfly_state::StateStore;
use serde::Serialize;

use crate::error::AuditError;
use crate::inventory::*;

/// How many runs the inventory reads (newest first); a resource tagged with
/// an older run would be reported as belonging to an unknown run.
const RUNS_READ: usize = 100_000;

/// The prefix sealed worker logs are stored under in a logs bucket.
const SEALED_LOGS_PREFIX: &str = "runs/";

/// A network as a network inventory reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNetwork {
    pub id: String,
    pub name: String,
    pub subnets: Vec<Ipv4Cidr>,
    pub tags: Tags,
}

/// Finds the networks Mayfly's resources run in (Docker networks), by tags.
///
/// The seam for the Docker provisioner: whatever creates networks for runs
/// implements this (or the binary wraps it in a small adapter) and is passed
/// in [`InventorySources::networks`]. Local processes have no network of
/// their own, so today the list is empty.
pub trait NetworkInventory: Send + Sync {
    /// Who finds them, e.g. `docker`.
    fn provider(&self) -> &'static str;

    /// Every network whose tags match `filter`, read from the system itself.
    fn networks<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveNetwork>, FleetError>>;
}

/// Where the inventory comes from.
pub struct InventorySources<'a> {
    /// The architecture as deployed (the latest deployment's file).
    pub architecture: &'a Architecture,
    pub state: &'a dyn StateStore,
    /// The store as a resource: the caller knows its backend and whether it encrypts.
    pub state_store: StateStoreEntry,
    pub buckets: &'a Buckets,
    pub provisioners: &'a [Arc<dyn Provisioner>],
    pub networks: &'a [Arc<dyn NetworkInventory>],
    /// Live resources left out of the inventory: the process taking it, when
    /// it is itself tagged (a coordinator auditing after its run).
    pub ignore: &'a [ResourceId],
    pub clock: &'a dyn Clock,
}

fn tag_map(tags: &Tags) -> TagMap {
    tags.as_map().clone()
}

fn pairs_to_map(pairs: &[(String, String)]) -> TagMap {
    pairs.iter().cloned().collect()
}

/// Read everything `sources` know into one [`Inventory`].
pub async fn take_inventory(sources: &InventorySources<'_>) -> Result<Inventory, AuditError> {
    let architecture = sources.architecture;
    let state = sources.state;
    let taken_at = sources.clock.now();
    let mut inventory = Inventory::empty(architecture.name.clone(), taken_at);
    inventory.state_store = sources.state_store.clone();

    inventory.deployments = state
        .deployments()?
        .into_iter()
        .map(|deployment| DeploymentEntry {
            version: deployment.version,
            applied_at: deployment.applied_at,
            content_hash: deployment.content_hash,
            forced: deployment.forced,
        })
        .collect();
    inventory.api = architecture.api.as_ref().map(|api| ApiEntry { listen: api.listen, tls: api.tls.is_some() });

    for record in state.buckets()? {
        let declared = architecture.buckets.get(&record.name);
        let tags = pairs_to_map(&record.tags);
        inventory.buckets.push(BucketEntry {
            owner: owner_of(&tags),
            tags,
            declared_tags: declared.map(|spec| architecture.effective_tags(&spec.tags)),
            encrypted: sources.buckets.is_encrypted(),
            declared_encryption: declared.map(|spec| spec.encryption),
            retention: declared.and_then(|spec| spec.retention),
            name: record.name,
        });
    }
    for record in state.queues()? {
        let tags = pairs_to_map(&record.tags);
        inventory.queues.push(QueueEntry {
            owner: owner_of(&tags),
            tags,
            internal: record.name.is_reserved(),
            name: record.name,
        });
    }
    // Enough to report; more than this many damaged messages is one problem, not many.
    inventory.damaged_messages = state.damaged_messages(1_000)?;
    for (name, spec) in &architecture.functions {
        let tags = architecture.effective_tags(&spec.tags);
        inventory.functions.push(FunctionEntry {
            name: name.clone(),
            runtime: serde_name(&spec.runtime),
            isolation: serde_name(&spec.isolation),
            owner: owner_of(&tags),
            tags,
        });
    }
    for (name, spec) in &architecture.jobs {
        let tags = architecture.effective_tags(&spec.tags);
        inventory.jobs.push(JobEntry {
            name: name.clone(),
            owner: owner_of(&tags),
            tags,
            provisioner: spec.provisioner.kind.name().to_owned(),
            network: spec.provisioner.network.clone(),
            subnet: spec.provisioner.subnet,
            logs: spec.logs.clone(),
        });
    }

    for run in state.runs(None, RUNS_READ)? {
        let items = state.run_item_counts(&run.id)?;
        let reported_cost = run
            .report
            .as_deref()
            .and_then(|report| serde_json::from_str::<RunReport>(report).ok())
            .map(|report| report.estimated_cost);
        let estimated_cost = match reported_cost {
            Some(cost) => cost,
            None => {
                let workers = state.run_workers(&run.id)?;
                let now = run.finished_at.unwrap_or(taken_at);
                estimate_run_cost(&workers, items.attempts, &architecture.pricing, now)
            }
        };
        inventory.runs.push(RunEntry {
            id: run.id,
            job: run.job,
            status: run.status,
            trigger: run.trigger,
            created_at: run.created_at,
            finished_at: run.finished_at,
            deadline: run.deadline,
            budget: run.budget,
            estimated_cost,
            items,
        });
    }

    let registered: BTreeSet<&Name> = inventory.buckets.iter().map(|bucket| &bucket.name).collect();
    let logs_buckets: BTreeSet<&Name> =
        architecture.jobs.values().filter_map(|job| job.logs.as_ref()).filter(|b| registered.contains(b)).collect();
    for bucket in logs_buckets {
        let objects = sources
            .buckets
            .list(bucket, Some(SEALED_LOGS_PREFIX))
            .await
            .map_err(|source| AuditError::Bucket { bucket: bucket.clone(), source })?;
        inventory.sealed_logs.extend(objects.into_iter().map(|object| SealedLogEntry {
            bucket: object.bucket,
            key: object.key,
            size: object.size,
            stored_at: object.last_modified,
        }));
    }

    let filter = TagFilter::new().with(TAG_PROJECT, architecture.name.as_str());
    for provisioner in sources.provisioners {
        let live = provisioner
            .inventory(&filter)
            .await
            .map_err(|source| AuditError::Provisioner { provisioner: provisioner.kind(), source })?;
        inventory.live.extend(
            live.into_iter()
                .filter(|resource| !sources.ignore.contains(&resource.id))
                .map(|resource| live_entry(provisioner.kind(), resource)),
        );
    }
    for networks in sources.networks {
        let found = networks
            .networks(&filter)
            .await
            .map_err(|source| AuditError::Networks { provider: networks.provider(), source })?;
        inventory.networks.extend(found.into_iter().map(|network| {
            let tags = tag_map(&network.tags);
            NetworkEntry {
                provider: networks.provider().to_owned(),
                id: network.id,
                name: network.name,
                subnets: network.subnets,
                owner: owner_of(&tags),
                run: tags.get(TAG_RUN).cloned(),
                tags,
            }
        }));
    }
    Ok(inventory)
}

fn live_entry(provisioner: &'static str, resource: LiveResource) -> LiveEntry {
    let tags = tag_map(&resource.tags);
    LiveEntry {
        provisioner: provisioner.to_owned(),
        kind: resource.kind.to_owned(),
        id: resource.id.0,
        role: tags.get(TAG_ROLE).cloned(),
        run: tags.get(TAG_RUN).cloned(),
        worker: tags.get(TAG_WORKER).cloned(),
        owner: owner_of(&tags),
        owner_process_gone: resource.tags.get(TAG_OWNER).is_some_and(|owner| !mayfly_fleet::owner_is_alive(owner)),
        tags,
        address: resource.address,
        started_at: resource.started_at,
    }
}

/// A unit enum's serde spelling (`"lambda"`), as the architecture writes it.
fn serde_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        other => format!("{other:?}"),
    }
}

/// A resource `--reap` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReapedResource {
    pub provisioner: String,
    pub kind: String,
    pub id: String,
    pub run: Option<String>,
}

/// Stop, on every provisioner, each live resource of `project` whose run is
/// not among `live_runs` (finished or unknown) — the fleet's reaper, with
/// `grace` between SIGTERM and SIGKILL. Returns what was reaped.
pub async fn reap_orphans_everywhere(
    provisioners: &[Arc<dyn Provisioner>],
    project: &Name,
    live_runs: &BTreeSet<String>,
    grace: Duration,
) -> Result<Vec<ReapedResource>, AuditError> {
    let filter = TagFilter::new().with(TAG_PROJECT, project.as_str());
    let mut reaped = Vec::new();
    for provisioner in provisioners {
        let stopped = mayfly_fleet::reap_orphans(provisioner.as_ref(), &filter, live_runs, grace)
            .await
            .map_err(|source| AuditError::Reap { provisioner: provisioner.kind(), source })?;
        reaped.extend(stopped.into_iter().map(|resource| ReapedResource {
            provisioner: provisioner.kind().to_owned(),
            kind: resource.kind.to_owned(),
            run: resource.tags.get(TAG_RUN).map(str::to_owned),
            id: resource.id.0,
        }));
    }
    Ok(reaped)
}
