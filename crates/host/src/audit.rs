//! The audit as the host runs it: the inventory of a project (state store,
//! buckets, live processes by tag, Docker networks), checked against the
//! deployed `[policy]` and recorded in the state store (`audit_project`);
//! and the two hooks that audit after every deploy and after every run
//! (`after_deploy` from `mayfly deploy`, `after_run` from a run's
//! coordinator or broker). The CLI's `mayfly audit` prints what this records.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use mayfly_audit::{
    AuditSettings, AuditSeverity, Inventory, InventorySources, LiveNetwork, NetworkInventory, StateStoreEntry,
};
use mayfly_core::SystemClock;
use mayfly_fleet::{DockerProvisioner, FleetError, LocalProvisioner, Provisioner, ResourceId, TAG_RUN, TagFilter};
use mayfly_spec::Architecture;
use mayfly_state::{AuditRecord, NewAudit};
use serde::Serialize;

use crate::deployment::deployed_architecture;
use crate::project::{OpenProject, Project};

/// Where the audit looks: every provisioner the project's runs may have
/// resources in (one of each kind that connects; a kind a job uses must),
/// and the Docker networks when the engine answers.
pub struct Sources {
    pub provisioners: Vec<Arc<dyn Provisioner>>,
    pub networks: Vec<Arc<dyn NetworkInventory>>,
}

impl Sources {
    pub async fn find(architecture: &Architecture) -> Result<Sources> {
        let provisioners = crate::jobs::fleet_provisioners(architecture).await?;
        let mut networks: Vec<Arc<dyn NetworkInventory>> = Vec::new();
        if let Ok(docker) = DockerProvisioner::connect().await {
            networks.push(Arc::new(DockerNetworks(docker)));
        }
        Ok(Sources { provisioners, networks })
    }
}

/// The Docker networks Mayfly created, as the audit sees networks.
struct DockerNetworks(DockerProvisioner);

impl NetworkInventory for DockerNetworks {
    fn provider(&self) -> &'static str {
        "docker"
    }

    fn networks<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveNetwork>, FleetError>> {
        Box::pin(async move {
            let networks = self.0.networks(filter).await?;
            Ok(networks
                .into_iter()
                .map(|network| LiveNetwork {
                    id: network.id,
                    // A subnet Docker reports that is not IPv4 CIDR is left out, not guessed at.
                    subnets: network.subnet.and_then(|subnet| subnet.parse().ok()).into_iter().collect(),
                    name: network.name,
                    tags: network.tags,
                })
                .collect())
        })
    }
}

/// One audit, recorded, with the inventory it checked.
pub struct Audited {
    pub record: AuditRecord,
    pub inventory: Inventory,
}

/// Take the inventory, check the policy of `architecture` (the deployed one), record the findings.
pub async fn audit_project(
    _located: &Project,
    opened: &OpenProject,
    architecture: &Architecture,
    trigger: &str,
    ignore: &[ResourceId],
    found: &Sources,
) -> Result<Audited> {
    let sources = InventorySources {
        architecture,
        state: opened.state.as_ref(),
        state_store: StateStoreEntry {
            backend: opened.state_target.backend().name.to_owned(),
            location: opened.state_target.describe(),
            payloads_encrypted: opened.state.payloads_encrypted(),
        },
        buckets: &opened.buckets,
        provisioners: &found.provisioners,
        networks: &found.networks,
        ignore,
        clock: &SystemClock,
    };
    let inventory = mayfly_audit::take_inventory(&sources).await.context("cannot take the inventory")?;
    let findings = mayfly_audit::check(&inventory, &architecture.policy, &AuditSettings::default());
    let record = opened
        .state
        .record_audit(&NewAudit {
            trigger: trigger.to_owned(),
            resources_checked: inventory.resource_count(),
            findings,
        })
        .context("cannot record the audit")?;
    Ok(Audited { record, inventory })
}
/// Counts by severity, as deploy and the JSON document show them.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSummary {
    pub audit: u64,
    pub resources_checked: u64,
    pub violations: usize,
    pub warnings: usize,
    pub notices: usize,
}

impl AuditSummary {
    pub fn of(record: &AuditRecord) -> AuditSummary {
        AuditSummary {
            audit: record.id,
            resources_checked: record.resources_checked,
            violations: record.count(AuditSeverity::Violation),
            warnings: record.count(AuditSeverity::Warning),
            notices: record.count(AuditSeverity::Notice),
        }
    }

    /// `2 violation(s), 1 warning(s), 0 notice(s)`.
    pub fn counts(&self) -> String {
        format!("{} violation(s), {} warning(s), {} notice(s)", self.violations, self.warnings, self.notices)
    }
}
/// The audit after a deploy: it reports and never undoes the deployment
/// (deploy has already refused what the file itself breaks). `None`, with a
/// warning logged, if it could not run.
pub async fn after_deploy(
    located: &Project,
    opened: &OpenProject,
    architecture: &Architecture,
) -> Option<AuditSummary> {
    let audited = async {
        audit_project(located, opened, architecture, "deploy", &[], &Sources::find(architecture).await?).await
    };
    match audited.await {
        Ok(audited) => Some(AuditSummary::of(&audited.record)),
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "the audit after the deploy could not run");
            None
        }
    }
}

/// The audit after run `run` ended, from its coordinator (still alive and
/// tagged with the run, so left out of the inventory). Findings go to the
/// state store and the log; nothing here changes the run's outcome.
pub async fn after_run(located: &Project, opened: &OpenProject, run: &str) {
    let audited = async {
        let (_, architecture) = deployed_architecture(opened)?;
        let own = own_resources(run).await?;
        let sources = Sources::find(&architecture).await?;
        audit_project(located, opened, &architecture, &format!("run:{run}"), &own, &sources).await
    }
    .await;
    match audited {
        Ok(audited) => {
            let summary = AuditSummary::of(&audited.record);
            if summary.violations > 0 {
                tracing::warn!(
                    run,
                    audit = summary.audit,
                    counts = summary.counts(),
                    "the audit after the run found violations; see `mayfly audit --latest`"
                );
            } else {
                tracing::info!(run, audit = summary.audit, counts = summary.counts(), "audited after the run");
            }
        }
        Err(error) => tracing::warn!(run, error = format!("{error:#}"), "the audit after the run could not run"),
    }
}

/// This process's own resource among run `run`'s: the local process group it leads.
async fn own_resources(run: &str) -> Result<Vec<ResourceId>> {
    // SAFETY: getpgrp(2) takes no arguments and cannot fail.
    let own_group = format!("pid:{}:", unsafe { libc::getpgrp() });
    let live = LocalProvisioner::new().inventory(&TagFilter::new().with(TAG_RUN, run)).await?;
    Ok(live.into_iter().filter(|resource| resource.id.0.starts_with(&own_group)).map(|resource| resource.id).collect())
}
