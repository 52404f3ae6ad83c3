//! `mayfly access-log`: the HTTPS API's append-only access log, newest last.

use std::path::Path;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::output::{Output, table};
use crate::project::Project;

#[derive(Debug, Args)]
pub struct AccessLogArgs {
    /// The most recent N records.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Serialize)]
struct AccessRow {
    id: u64,
    at: String,
    token_id: Option<String>,
    client: String,
    method: String,
    path: String,
    resource: String,
    status: u16,
    outcome: String,
}

pub fn run(args: AccessLogArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let mut records = opened.state.access_records(None, args.limit)?;
    records.reverse();
    let rows: Vec<AccessRow> = records
        .into_iter()
        .map(|stored| AccessRow {
            id: stored.id,
            at: stored.record.at.to_rfc3339(),
            token_id: stored.record.token_id,
            client: stored.record.client,
            method: stored.record.method,
            path: stored.record.path,
            resource: stored.record.resource,
            status: stored.record.status,
            outcome: stored.record.outcome,
        })
        .collect();
    output.emit(&rows, || {
        if rows.is_empty() {
            return "the access log is empty: nothing has called the API yet".into();
        }
        table(
            &["ID", "AT", "TOKEN", "CLIENT", "REQUEST", "STATUS", "OUTCOME"],
            &rows
                .iter()
                .map(|row| {
                    vec![
                        row.id.to_string(),
                        row.at.clone(),
                        row.token_id.clone().unwrap_or_else(|| "-".into()),
                        row.client.clone(),
                        format!("{} {}", row.method, row.path),
                        row.status.to_string(),
                        row.outcome.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}
