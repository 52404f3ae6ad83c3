//! `mayfly prune`: one retention pass now, as `mayfly up` runs every minute —
//! objects past their bucket's `retention`, sealed run logs past
//! `[policy].log_retention`, messages past their queue's `retention`, and
//! Mayfly's ledgers past theirs (`mayfly_control::retention`).

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use mayfly_control::retention::{LedgerRetention, enforce_retention};
use mayfly_core::{Clock, SystemClock};
use mayfly_host::deployment::deployed_architecture;

use crate::output::Output;
use crate::project::Project;

#[derive(Debug, Args)]
pub struct PruneArgs {}

pub async fn run(_args: PruneArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let (_, architecture) = deployed_architecture(&opened)?;
    let report = enforce_retention(
        opened.state.as_ref(),
        &opened.buckets,
        &architecture,
        &LedgerRetention::default(),
        SystemClock.now(),
    )
    .await
    .context("the retention pass failed; what it deleted before the failure stays deleted")?;
    output.emit(&report, || {
        format!(
            "deleted {} object(s), {} sealed log(s), {} message(s), {} invocation(s), {} finished run(s), {} event(s), {} access record(s), {} abandoned upload(s)",
            report.objects,
            report.sealed_logs,
            report.messages,
            report.invocations,
            report.runs,
            report.events,
            report.access_records,
            report.abandoned_uploads
        )
    })
}
