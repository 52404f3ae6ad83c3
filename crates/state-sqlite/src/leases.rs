//! Leases in SQL: `leases`, one row per lease name ever taken (a released
//! lease keeps its row, expired, so its term keeps counting). Each call is
//! one `BEGIN IMMEDIATE` transaction: writers are serialised, so reading the
//! row and writing [`grant_lease`]'s outcome is atomic.

use mayfly_core::Timestamp;
use mayfly_state::{Lease, Result, grant_lease};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;
use crate::{from_sql_integer, to_sql_integer};

fn lease_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lease> {
    Ok(Lease {
        name: row.get(0)?,
        holder: row.get(1)?,
        term: from_sql_integer(row.get(2)?),
        expires_at: Timestamp::from_millis(row.get(3)?),
    })
}

pub(crate) fn lease(transaction: &Transaction<'_>, name: &str) -> Result<Option<Lease>> {
    transaction
        .prepare_cached("SELECT name, holder, term, expires_at FROM leases WHERE name = ?1")
        .and_then(|mut statement| statement.query_row(params![name], lease_from_row).optional())
        .with_context(|| format!("read lease `{name}`"))
}

pub(crate) fn acquire_lease(
    transaction: &Transaction<'_>,
    name: &str,
    holder: &str,
    ttl: std::time::Duration,
    now: Timestamp,
) -> Result<Option<Lease>> {
    let stored = lease(transaction, name)?;
    let Some(granted) = grant_lease(stored.as_ref(), name, holder, ttl, now) else { return Ok(None) };
    transaction
        .prepare_cached(
            "INSERT INTO leases (name, holder, term, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, term = excluded.term, \
             expires_at = excluded.expires_at",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                granted.name,
                granted.holder,
                to_sql_integer(granted.term),
                granted.expires_at.as_millis()
            ])
        })
        .with_context(|| format!("record lease `{name}`"))?;
    Ok(Some(granted))
}

/// Expire the lease (at the epoch, keeping its row and term) if `holder` holds it.
pub(crate) fn release_lease(transaction: &Transaction<'_>, name: &str, holder: &str) -> Result<bool> {
    let released = transaction
        .prepare_cached("UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2")
        .and_then(|mut statement| statement.execute(params![name, holder, Timestamp::EPOCH.as_millis()]))
        .with_context(|| format!("release lease `{name}`"))?;
    Ok(released > 0)
}
