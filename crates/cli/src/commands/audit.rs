//! `mayfly audit`: take the inventory of the project (state store, buckets,
//! live processes by tag), check it against the deployed `[policy]`, record
//! the findings in the state store and print them; `--reap` first stops
//! orphans. The audit itself, and the hooks after every deploy and run, are
//! the host's (`mayfly_host::audit`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mayfly_audit::{AuditFinding, AuditSeverity, Inventory, ReapedResource};
use mayfly_host::audit::{AuditSummary, Sources, audit_project};
use mayfly_host::deployment::deployed_architecture;
use mayfly_state::AuditRecord;
use serde::Serialize;

use crate::exit_code::{NotFound, ViolationsFound};
use crate::output::Output;
use crate::project::Project;

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
