//! [`LeaseStore`] on PostgreSQL: `leases`, one row per lease name ever taken
//! (a released lease keeps its row, expired, so its term keeps counting).
//! Acquiring is one statement — an upsert whose update only happens when
//! the stored lease is the same holder's or has lapsed — so of hosts racing
//! for one lease the row lock lets exactly one through, and it decides as
//! [`mayfly_state::grant_lease`] does.

use std::time::Duration;

use mayfly_core::Timestamp;
use mayfly_state::{Lease, LeaseStore, Result};

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer};

fn lease_from_row(row: &postgres::Row) -> Lease {
    Lease {
        name: row.get(0),
        holder: row.get(1),
        term: from_sql_integer(row.get(2)),
        expires_at: Timestamp::from_millis(row.get(3)),
    }
}

impl LeaseStore for PostgresStore {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration, now: Timestamp) -> Result<Option<Lease>> {
        let expires_at = now.saturating_add(ttl);
        self.transact(&format!("acquire lease `{name}` for `{holder}`"), |transaction| {
            let row = transaction
                .query_opt(
                    "INSERT INTO leases AS stored (name, holder, term, expires_at) VALUES ($1, $2, 1, $3) \
                     ON CONFLICT (name) DO UPDATE SET \
                         term = CASE WHEN stored.holder = excluded.holder THEN stored.term ELSE stored.term + 1 END, \
                         holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE stored.holder = excluded.holder OR stored.expires_at <= $4 \
                     RETURNING name, holder, term, expires_at",
                    &[&name, &holder, &expires_at.as_millis(), &now.as_millis()],
                )
                .with_context(|| format!("acquire lease `{name}`"))?;
            Ok(row.as_ref().map(lease_from_row))
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.transact(&format!("release lease `{name}` of `{holder}`"), |transaction| {
            let released = transaction
                .execute(
                    "UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2",
                    &[&name, &holder, &Timestamp::EPOCH.as_millis()],
                )
                .with_context(|| format!("release lease `{name}`"))?;
            Ok(released > 0)
        })
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>> {
        self.transact(&format!("read lease `{name}`"), |transaction| {
            let row = transaction
                .query_opt("SELECT name, holder, term, expires_at FROM leases WHERE name = $1", &[&name])
                .with_context(|| format!("read lease `{name}`"))?;
            Ok(row.as_ref().map(lease_from_row))
        })
    }
}
