//! `mayfly audit`: take the inventory of the project (state store, buckets,
//! live processes by tag), check it against the deployed `[policy]`, record
//! the findings in the state store and print them; `--reap` first stops
//! orphans. Also the two hooks that audit after every deploy and after every
//! run (called from `deploy` and from the `coordinator` command).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use futures::future::BoxFuture;
use mayfly_audit::{
    AuditFinding, AuditSettings, AuditSeverity, Inventory, InventorySources, LiveNetwork, NetworkInventory,
    ReapedResource, StateStoreEntry,
};
use mayfly_core::SystemClock;
use mayfly_fleet::{DockerProvisioner, FleetError, LocalProvisioner, Provisioner, ResourceId, TAG_RUN, TagFilter};
use mayfly_spec::Architecture;
use mayfly_state::{AuditRecord, NewAudit};
use serde::Serialize;

use crate::commands::functions::deployed_architecture;
use crate::exit_code::{NotFound, ViolationsFound};
use crate::output::Output;
use crate::project::{OpenProject, Project};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// First stop every process of a finished or unknown run (orphans), then audit.
    #[arg(long, conflicts_with = "latest")]
    pub reap: bool,
    /// Print the latest recorded audit (e.g. the one after the last deploy or run) instead of running one.
    #[arg(long)]
    pub latest: bool,
}

/// How long an orphan gets between SIGTERM and SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(5);

/// Where the audit looks: every provisioner the project's runs may have
/// resources in (one of each kind that connects; a kind a job uses must),
/// and the Docker networks when the engine answers.
struct Sources {
    provisioners: Vec<Arc<dyn Provisioner>>,
    networks: Vec<Arc<dyn NetworkInventory>>,
}

impl Sources {
    async fn find(architecture: &Architecture) -> Result<Sources> {
        let provisioners = crate::commands::jobs::fleet_provisioners(architecture).await?;
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
struct Audited {
    record: AuditRecord,
    inventory: Inventory,
}

/// Take the inventory, check the policy of `architecture` (the deployed one), record the findings.
async fn audit_project(
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
    fn of(record: &AuditRecord) -> AuditSummary {
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

#[derive(Serialize)]
struct AuditDocument<'a> {
    audit: u64,
    at: String,
    trigger: &'a str,
    project: Option<&'a str>,
    summary: AuditSummary,
    findings: &'a [AuditFinding],
    reaped: &'a [ReapedResource],
    /// `null` for `--latest` (the store keeps findings, not inventories).
    inventory: Option<serde_json::Value>,
}

/// The inventory as `--json` prints it (README, "JSON output"): as the audit
/// crate serializes it, but a bucket's retention as integer `retention_ms`
/// and a damaged message's time as RFC 3339.
fn inventory_json(inventory: &Inventory) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(inventory).context("cannot render the inventory as JSON")?;
    if let Some(buckets) = value.get_mut("buckets").and_then(serde_json::Value::as_array_mut) {
        for (entry, bucket) in buckets.iter_mut().zip(&inventory.buckets) {
            if let Some(entry) = entry.as_object_mut() {
                entry.remove("retention");
                entry.insert("retention_ms".into(), bucket.retention.map(crate::output::json_millis).into());
            }
        }
    }
    if let Some(damaged) = value.get_mut("damaged_messages").and_then(serde_json::Value::as_array_mut) {
        for (entry, message) in damaged.iter_mut().zip(&inventory.damaged_messages) {
            if let Some(entry) = entry.as_object_mut() {
                entry.insert("set_aside_at".into(), crate::output::json_time(message.set_aside_at).into());
            }
        }
    }
    Ok(value)
}

pub async fn audit(args: AuditArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    if args.latest {
        let record = opened
            .state
            .latest_audit()?
            .ok_or_else(|| NotFound("no audit has been recorded yet; run `mayfly audit`".into()))?;
        emit(&record, None, &[], output)?;
        return fail_on_violations(&record);
    }
    let (_, architecture) = deployed_architecture(&opened)?;
    let sources = Sources::find(&architecture).await?;
    let mut reaped = Vec::new();
    if args.reap {
        let live_runs: BTreeSet<String> =
            opened.state.runs(None, 100_000)?.into_iter().filter(|r| !r.status.is_finished()).map(|r| r.id).collect();
        reaped =
            mayfly_audit::reap_orphans_everywhere(&sources.provisioners, &architecture.name, &live_runs, REAP_GRACE)
                .await
                .context("cannot reap orphans")?;
    }
    let trigger = if args.reap { "manual --reap" } else { "manual" };
    let audited = audit_project(&located, &opened, &architecture, trigger, &[], &sources).await?;
    emit(&audited.record, Some(&audited.inventory), &reaped, output)?;
    fail_on_violations(&audited.record)
}

fn fail_on_violations(record: &AuditRecord) -> Result<()> {
    let violations = record.count(AuditSeverity::Violation);
    if violations > 0 {
        return Err(ViolationsFound(format!(
            "the audit found {violations} policy violation(s); each says what to do (`mayfly audit --reap` stops orphans)"
        ))
        .into());
    }
    Ok(())
}

fn emit(record: &AuditRecord, inventory: Option<&Inventory>, reaped: &[ReapedResource], output: Output) -> Result<()> {
    let summary = AuditSummary::of(record);
    let document = AuditDocument {
        audit: record.id,
        at: record.at.to_rfc3339(),
        trigger: &record.trigger,
        project: inventory.map(|inventory| inventory.project.as_str()),
        summary: summary.clone(),
        findings: &record.findings,
        reaped,
        inventory: inventory.map(inventory_json).transpose()?,
    };
    output.emit(&document, || render(record, &summary, reaped))
}

/// Findings grouped by severity, rule and resource aligned, each remedy under its message.
fn render(record: &AuditRecord, summary: &AuditSummary, reaped: &[ReapedResource]) -> String {
    let mut text = format!(
        "audit {} ({}) at {}: {} resource(s) checked, {}\n",
        record.id,
        record.trigger,
        record.at.to_rfc3339(),
        summary.resources_checked,
        summary.counts()
    );
    for resource in reaped {
        text.push_str(&format!(
            "reaped {} {} of run {}\n",
            resource.kind,
            resource.id,
            resource.run.as_deref().unwrap_or("?")
        ));
    }
    if record.findings.is_empty() {
        text.push_str("no findings: every rule passed\n");
        return text;
    }
    let resource_of = |finding: &AuditFinding| format!("{} {}", finding.resource_kind, finding.resource);
    let rule_width = record.findings.iter().map(|f| f.rule.chars().count()).max().unwrap_or(0);
    let resource_width = record.findings.iter().map(|f| resource_of(f).chars().count()).max().unwrap_or(0);
    for severity in AuditSeverity::ALL {
        let group: Vec<&AuditFinding> = record.findings.iter().filter(|f| f.severity == severity).collect();
        if group.is_empty() {
            continue;
        }
        text.push_str(&format!("\n{} ({})\n", heading(severity), group.len()));
        for finding in group {
            text.push_str(&format!(
                "  {:rule_width$}  {:resource_width$}  {}\n  {:rule_width$}  {:resource_width$}  → {}\n",
                finding.rule,
                resource_of(finding),
                finding.message,
                "",
                "",
                finding.remedy
            ));
        }
    }
    if summary.violations == 0 {
        text.push_str("\nno violations\n");
    }
    text
}

fn heading(severity: AuditSeverity) -> &'static str {
    match severity {
        AuditSeverity::Violation => "VIOLATIONS",
        AuditSeverity::Warning => "WARNINGS",
        AuditSeverity::Notice => "NOTICES",
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
