//! `mayfly state migrate --to URL`: copy a project's state store into a new
//! store on another backend (the embedded SQLite file into PostgreSQL, or
//! back), then check the copy, all before the target commits.
//!
//! The copy is table by table ([`mayfly_state::copy::TABLES`], parents
//! first), rows in key order, in batches, from one snapshot of the source
//! (which is only read); sealed values cross as stored, never opened. The
//! numbers never reused and the sealing settings (the item lookup key,
//! sealed) cross too. Then, still inside the target's one transaction, each
//! table is read back: its row count and a SHA-256 over its rows in key
//! order ([`mayfly_state::copy::Checksum`], computed from the values read
//! on each side) must equal the source's, or the transaction rolls back and
//! the target is left without a store. A target that holds a store already
//! is refused before anything is written.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_core::{Clock, SystemClock};
use mayfly_state::StateError;
use mayfly_state::copy::{Checksum, CopiedTable, CopySource, CopyTarget, SEALED_PAYLOADS, TABLES, Value, copied_table};
use mayfly_state_postgres::PostgresStore;
use mayfly_state_sqlite::{Keyring, SqliteStore};

use crate::Refused;
use crate::backends::{StateSettings, StateTarget, resolve_state_target};
use crate::project::Project;

/// Rows written to the target in one statement at most.
const BATCH_ROWS: usize = 500;
/// Bytes of values written in one statement at most (payloads can be large).
const BATCH_BYTES: usize = 8 << 20;

/// What a copy has done so far, for a progress line.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// `done` of `total` rows of `table` copied.
    Copied { table: &'a str, done: u64, total: u64 },
    /// `done` of `total` rows of `table` read back and checked.
    Checked { table: &'a str, done: u64, total: u64 },
}

/// One table as copied and checked.
#[derive(Debug, Clone)]
pub struct TableCopied {
    pub table: &'static str,
    pub rows: u64,
    /// SHA-256 (hex) over the rows in key order, equal on both sides.
    pub checksum: String,
}

/// What `migrate` did.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The source store (a path, or a URL without its password).
    pub from: String,
    /// The new store.
    pub to: String,
    /// The target's backend name (`sqlite`, `postgresql`).
    pub backend: &'static str,
    /// The URL to set afterwards, without any password.
    pub url: String,
    pub tables: Vec<TableCopied>,
}

/// Where `--to URL` points, for a project: the URL's backend, the embedded
/// file for `sqlite:`, and for PostgreSQL the password from the URL or the
/// environment or `.pgpass` (as for `MAYFLY_STATE_URL`). An error names the
/// URL with any password masked.
pub fn resolve_target(project: &Project, to: &str) -> Result<StateTarget> {
    let settings = StateSettings {
        url: Some(to.trim().to_owned()),
        origin: "--to".to_owned(),
        password_file: None,
        ca_file: None,
        base: Some(project.root.clone()),
    };
    resolve_state_target(&settings, &project.state_path())
}

/// Copy `project`'s state store into `target`, a store that must not exist
/// yet, and check the copy; `url` is what chose the target (shown, without a
/// password, as the setting to use afterwards). The source is never written.
pub fn migrate(
    project: &Project,
    target: &StateTarget,
    url: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Migration> {
    let source = project.state_target()?;
    if !source.holds_project()? {
        bail!(
            "project {} has not been deployed yet (no state store at {}): there is nothing to migrate",
            project.root.display(),
            source.describe()
        );
    }
    let holds = target
        .holds_project()
        .with_context(|| format!("cannot reach the target state store {}; nothing was changed", target.describe()))?;
    if holds {
        let empty = match target {
            StateTarget::Embedded { path } => format!("no file at {} (move it aside first)", path.display()),
            StateTarget::Postgres { .. } => "a database without Mayfly's schema".to_owned(),
        };
        return Err(Refused(format!(
            "the target {} already holds a Mayfly state store; `mayfly state migrate` copies only into an empty one ({empty}); nothing was changed",
            target.describe()
        ))
        .into());
    }
    let keyring = project.load_keyring(false)?.keyring;
    // On a thread of its own: the PostgreSQL client blocks on a runtime of
    // its own, which must not be nested in the caller's.
    let tables = std::thread::scope(|scope| {
        scope
            .spawn(|| copy_between(&source, target, keyring, progress))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
    .map_err(|error| explain(error, &source, target))?;
    Ok(Migration {
        from: source.describe(),
        to: target.describe(),
        backend: target.backend().name,
        url: crate::backends::url_without_password(url),
        tables,
    })
}

fn explain(error: StateError, source: &StateTarget, target: &StateTarget) -> anyhow::Error {
    // A target found holding a store is `Conflict`: exit code 5, as a refusal.
    let message = format!(
        "the copy of the state store {} into {} failed, so the target was left without a store and the source as it was",
        source.describe(),
        target.describe()
    );
    anyhow::Error::new(error).context(message)
}

fn copy_between(
    source: &StateTarget,
    target: &StateTarget,
    keyring: Arc<Keyring>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<TableCopied>, StateError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let into = |from: &mut dyn CopySource| -> Result<Vec<TableCopied>, StateError> {
        match target {
            StateTarget::Embedded { path } => {
                SqliteStore::copy_into_new(path, clock.clone(), keyring.clone(), |to| copy_all(from, to, progress))
            }
            StateTarget::Postgres { target, .. } => {
                PostgresStore::copy_into_new(target, |to| copy_all(from, to, progress))
            }
        }
    };
    match source {
        StateTarget::Embedded { path } => {
            let store = SqliteStore::open_encrypted(path, clock.clone(), keyring.clone())?;
            refuse_while_led(&store, clock.as_ref())?;
            store.copy_from(into)
        }
        StateTarget::Postgres { target, .. } => {
            let store = PostgresStore::open_encrypted_with_config(
                mayfly_state_postgres::ConnectTarget::clone(target),
                clock.clone(),
                keyring.clone(),
            )?;
            refuse_while_led(&store, clock.as_ref())?;
            store.copy_from(into)
        }
    }
}

/// A control plane leading on the source would go on changing it after the
/// snapshot is taken, and those changes would be lost: refuse until it stops.
fn refuse_while_led(source: &dyn mayfly_state::StateStore, clock: &dyn Clock) -> Result<(), StateError> {
    match source.lease(mayfly_state::lease::CONTROL_PLANE_LEASE)? {
        Some(lease) if !lease.is_expired_at(clock.now()) => Err(StateError::Conflict(format!(
            "`mayfly up` ({}) is running against this state store and would change it after the copy; stop every `mayfly up` of the project first (`mayfly ps` names the leader)",
            lease.holder
        ))),
        _ => Ok(()),
    }
}

fn failed(message: String) -> StateError {
    StateError::Backend(message)
}

/// Copy every table of `from` into `to`, then read each back and check it.
fn copy_all(
    from: &mut dyn CopySource,
    to: &mut dyn CopyTarget,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<TableCopied>, StateError> {
    let tables = from.tables()?;
    if let Some(unknown) = tables.iter().find(|name| copied_table(name).is_none()) {
        return Err(failed(format!(
            "the source holds a table `{unknown}` this Mayfly does not know how to copy; upgrade Mayfly"
        )));
    }
    if let Some(missing) = TABLES.iter().find(|table| !tables.iter().any(|name| name == table.name)) {
        return Err(failed(format!("the source has no table `{}`; its schema is not this Mayfly's", missing.name)));
    }
    let sealing = from.sealing()?;
    if sealing.payloads.as_deref() != Some(SEALED_PAYLOADS) || sealing.item_key.is_none() {
        return Err(failed(format!(
            "the source store does not seal everything (its payloads are `{}`); open it once with the project's keyring (any `mayfly` command does) and retry",
            sealing.payloads.as_deref().unwrap_or("plaintext")
        )));
    }
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns = from.columns(table.name)?;
        let mut theirs = to.columns(table.name)?;
        let mut ours = columns.clone();
        ours.sort();
        theirs.sort();
        if ours != theirs {
            return Err(failed(format!(
                "table `{}` has columns ({}) in the source but ({}) in the target; the two backends' schemas differ",
                table.name,
                ours.join(", "),
                theirs.join(", ")
            )));
        }
        let total = from.count_rows(table.name)?;
        let checksum = copy_table(from, to, table, &columns, total, progress)?;
        if table.numbered.is_some() {
            let last = from.last_number(table)?;
            to.set_last_number(table, last)?;
        }
        copied.push((table, columns, TableCopied { table: table.name, rows: total, checksum }));
    }
    to.set_sealing(&sealing)?;
    for (table, columns, copy) in &copied {
        let rows = to.count_rows(table.name)?;
        let mut checksum = Checksum::new();
        let mut done = 0u64;
        to.read_rows(table, columns, &mut |row| {
            checksum.add(&row);
            done += 1;
            if done.is_multiple_of(BATCH_ROWS as u64) && done < copy.rows {
                progress(Progress::Checked { table: table.name, done, total: copy.rows });
            }
            Ok(())
        })?;
        let read_back = checksum.rows();
        let checksum = checksum.finish();
        if rows != copy.rows || read_back != copy.rows || checksum != copy.checksum {
            return Err(failed(format!(
                "the copy of table `{}` does not match its source: {} row(s) with checksum {} in the source, {rows} row(s) ({read_back} read) with checksum {checksum} in the target",
                table.name, copy.rows, copy.checksum
            )));
        }
        if table.numbered.is_some() && to.last_number(table)? < from.last_number(table)? {
            return Err(failed(format!("the copy of table `{}` would hand out numbers already used", table.name)));
        }
        if copy.rows > 0 {
            progress(Progress::Checked { table: table.name, done: copy.rows, total: copy.rows });
        }
    }
    if to.sealing()? != sealing {
        return Err(failed("the copy's sealing settings do not match the source's".to_owned()));
    }
    Ok(copied.into_iter().map(|(_, _, copy)| copy).collect())
}

/// Copy one table's rows in batches; returns the checksum of the rows read.
fn copy_table(
    from: &mut dyn CopySource,
    to: &mut dyn CopyTarget,
    table: &CopiedTable,
    columns: &[String],
    total: u64,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<String, StateError> {
    let mut checksum = Checksum::new();
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH_ROWS);
    let mut batch_bytes = 0usize;
    let mut done = 0u64;
    let mut flush = |batch: &mut Vec<Vec<Value>>, batch_bytes: &mut usize, done: &mut u64| -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        to.write_rows(table, columns, batch)?;
        *done += batch.len() as u64;
        batch.clear();
        *batch_bytes = 0;
        progress(Progress::Copied { table: table.name, done: *done, total });
        Ok(())
    };
    from.read_rows(table, columns, &mut |row| {
        checksum.add(&row);
        batch_bytes += row.iter().map(value_size).sum::<usize>();
        batch.push(row);
        if batch.len() >= BATCH_ROWS || batch_bytes >= BATCH_BYTES {
            flush(&mut batch, &mut batch_bytes, &mut done)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut batch_bytes, &mut done)?;
    if checksum.rows() != total {
        return Err(failed(format!(
            "table `{}` counted {total} row(s) but {} were read; nothing was copied",
            table.name,
            checksum.rows()
        )));
    }
    Ok(checksum.finish())
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(text) => text.len(),
        Value::Bytes(bytes) => bytes.len(),
    }
}
