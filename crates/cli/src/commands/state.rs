//! `mayfly state migrate --to URL`: copy the project's state store into a
//! new store on another backend (the embedded SQLite file into PostgreSQL,
//! or back into a new embedded file), checked table by table, then say what
//! to set so the project uses it. The copy itself is the host's
//! ([`mayfly_host::migrate`]); this prints progress on stderr and the result.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use mayfly_host::backends::{EMBEDDED, STATE_URL_ENV_VAR};
use mayfly_host::migrate::{Migration, Progress, migrate, resolve_target};
use serde::Serialize;

use crate::exit_code::UsageError;
use crate::output::{Output, table};
use crate::project::Project;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy the project's state store into a new, empty store elsewhere, checked table by table.
    #[command(
        after_help = "Examples:\n  mayfly state migrate --to postgres://mayfly@db.internal:5432/mayfly\n  MAYFLY_STATE_URL=postgres://mayfly@db/mayfly mayfly state migrate --to sqlite:\n\n\
The source is only read; stop `mayfly up`, `mayfly serve` and running jobs first, so nothing changes it meanwhile. \
The target must hold no Mayfly store (a new database, or no .mayfly/state.db for sqlite:). \
A PostgreSQL password comes from the URL, MAYFLY_STATE_PASSWORD, PGPASSWORD or .pgpass, and is never printed. \
Afterwards set MAYFLY_STATE_URL (or `[state] url` in mayfly.toml) as printed."
    )]
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where to copy the state: postgres://USER@HOST:PORT/DATABASE, or sqlite: for the project's embedded file.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

pub fn run(command: StateCommand, project: Option<&Path>, output: Output) -> Result<()> {
    match command {
        StateCommand::Migrate(args) => migrate_command(args, project, output),
    }
}

/// How often a long table's progress line is printed at most.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Tables with fewer rows get no progress line.
const LONG_TABLE_ROWS: u64 = 2_000;

#[derive(Serialize)]
struct MigrationView<'a> {
    from: &'a str,
    to: &'a str,
    backend: &'a str,
    /// What to set so the project uses the new store.
    set: SettingView<'a>,
    tables: Vec<TableView<'a>>,
}

#[derive(Serialize)]
struct SettingView<'a> {
    /// `MAYFLY_STATE_URL`'s value, or `null` to unset it (the embedded store).
    env: Option<&'a str>,
    /// `url` of `[state]` in mayfly.toml.
    url: &'a str,
}

#[derive(Serialize)]
struct TableView<'a> {
    table: &'a str,
    rows: u64,
    checksum: &'a str,
}

fn migrate_command(args: MigrateArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let project = Project::locate(project)?;
    let target = resolve_target(&project, &args.to).map_err(|error| UsageError(format!("--to: {error:#}")))?;
    let last_line = Mutex::new(None::<Instant>);
    let progress = |step: Progress<'_>| {
        let (verb, table, done, total) = match step {
            Progress::Copied { table, done, total } => ("copied", table, done, total),
            Progress::Checked { table, done, total } => ("checked", table, done, total),
        };
        if total < LONG_TABLE_ROWS {
            return;
        }
        let mut last = last_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if done < total && last.is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        eprintln!("{table}: {verb} {done} of {total} rows");
    };
    let migration = migrate(&project, &target, args.to.trim(), &progress)?;
    let embedded = std::ptr::eq(target.backend(), &EMBEDDED);
    let view = MigrationView {
        from: &migration.from,
        to: &migration.to,
        backend: migration.backend,
        set: SettingView {
            env: (!embedded).then_some(migration.url.as_str()),
            url: if embedded { "sqlite:" } else { &migration.url },
        },
        tables: migration
            .tables
            .iter()
            .map(|copied| TableView { table: copied.table, rows: copied.rows, checksum: &copied.checksum })
            .collect(),
    };
    output.emit(&view, || text(&migration, embedded))
}

fn text(migration: &Migration, embedded: bool) -> String {
    let rows: Vec<Vec<String>> = migration
        .tables
        .iter()
        .map(|copied| vec![copied.table.to_owned(), copied.rows.to_string(), copied.checksum[..16].to_owned()])
        .collect();
    let total: u64 = migration.tables.iter().map(|copied| copied.rows).sum();
    let next = if embedded {
        format!(
            "To use it, unset {STATE_URL_ENV_VAR} and remove `url` from `[state]` in mayfly.toml (or set it to \"sqlite:\")."
        )
    } else {
        format!(
            "To use it, set {STATE_URL_ENV_VAR}={url}\n(or `url = \"{url}\"` under `[state]` in mayfly.toml), with its password in MAYFLY_STATE_PASSWORD, PGPASSWORD or .pgpass — never in the file.",
            url = migration.url
        )
    };
    format!(
        "copied {total} row(s) from {} into {} ({}), every table checked (row count and SHA-256 over its rows in key order):\n{}\nThe source was not changed. {next}",
        migration.from,
        migration.to,
        migration.backend,
        table(&["TABLE", "ROWS", "CHECKSUM"], &rows).trim_end()
    )
}
