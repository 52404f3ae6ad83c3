//! [`LeaseStore`] on PostgreSQL: `leases`, one row per lease name ever taken
//! (a released lease keeps its row, expired, so its term keeps counting).
//! Acquiring is one statement — an upsert whose update only happens when
//! the stored lease is the same holder's or has lapsed — so of hosts racing
//! for one lease the row lock lets exactly one through, and it decides as
//! [`mayfly_state::grant_lease`] does.
//!
//! [`FencedWrites`]: the writes are made first, then the lease row is read
//! `FOR SHARE` and checked ([`check_fence`]) as the transaction's last
//! statement before its commit. A takeover (an `UPDATE` of that row) that
//! committed before the check is seen by it, and the writes roll back; one
//! that comes after waits for the commit. Checking last rather than first
//! keeps the row locked only for the round trip of the commit, so a writer
//! paused in the middle of its writes (a stopped VM) does not hold off the
//! takeover that fences it out.

use std::time::Duration;

use mayfly_core::Timestamp;
use mayfly_state::{Fence, FencedOutcome, FencedWrite, FencedWrites, Lease, LeaseStore, Result, check_fence};

use crate::errors::PgResultExt;
use crate::{PostgresStore, from_sql_integer};

const LEASE_COLUMNS: &str = "name, holder, term, expires_at";

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

impl FencedWrites for PostgresStore {
    fn commit_fenced(&self, fence: Option<&Fence>, writes: Vec<FencedWrite>) -> Result<Vec<FencedOutcome>> {
        let now = self.now();
        let what = match fence {
            Some(fence) => format!("write under lease `{}` term {}", fence.lease, fence.term),
            None => "write".to_owned(),
        };
        self.transact(&what, |transaction| {
            let mut outcomes = Vec::with_capacity(writes.len());
            for write in writes {
                outcomes.push(match write {
                    FencedWrite::SendMessages { queue, messages } => FencedOutcome::Sent(crate::queues::send_messages(
                        transaction,
                        &self.sealer,
                        now,
                        &queue,
                        &messages,
                    )?),
                    FencedWrite::SetConsumerCursor { consumer, sequence } => {
                        crate::set_consumer_cursor(transaction, &consumer, sequence)?;
                        FencedOutcome::CursorSet
                    }
                    FencedWrite::CreateRun(run) => {
                        FencedOutcome::RunCreated(Box::new(self.create_run_within(transaction, run, now)?))
                    }
                });
            }
            if let Some(fence) = fence {
                // Last, so the lease row stays locked only until the commit (see the module's comment).
                let stored = transaction
                    .query_opt(
                        &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE name = $1 FOR SHARE"),
                        &[&fence.lease],
                    )
                    .with_context(|| format!("check lease `{}`", fence.lease))?;
                check_fence(stored.as_ref().map(lease_from_row).as_ref(), fence)?;
            }
            Ok(outcomes)
        })
    }
}
