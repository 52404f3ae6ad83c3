//! The schema of a PostgreSQL state store and the migrations that build it.
//!
//! `mayfly_schema.version` holds how many entries of [`MIGRATIONS`] the
//! database has had applied. Opening a store applies the missing ones in one
//! transaction under an advisory lock (so hosts opening one database at once
//! migrate it once); a database with a larger number was written by a newer
//! Mayfly and is refused, changing nothing. Migrations are append-only: never
//! edit one that has shipped, add another.
//!
//! Times are milliseconds since the Unix epoch (`BIGINT`), from the store's
//! clock, never the server's. Counters that must follow commit order (the
//! event log's sequence, deployment versions) are rows of `mayfly_counters`
//! updated under their row lock, not sequences, which hand out numbers in
//! call order and leave gaps.

use mayfly_state::{Result, StateError};

use crate::errors::PgResultExt;

/// Every migration, in order. Entry `n` (0-based) takes a database from
/// schema version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: deployments, the bucket registry, the event log and its cursors,
    // and the store's settings.
    r#"
    CREATE TABLE mayfly_settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    CREATE TABLE mayfly_counters (
        name TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );
    INSERT INTO mayfly_counters (name, value) VALUES ('deployments', 0), ('object_events', 0);

    CREATE TABLE deployments (
        version BIGINT PRIMARY KEY,
        content_hash TEXT NOT NULL,
        applied_at BIGINT NOT NULL,
        source TEXT NOT NULL,
        forced BOOLEAN NOT NULL,
        event_log_head BIGINT NOT NULL
    );

    CREATE TABLE buckets (
        name TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL,
        -- JSON array of [key, value] pairs, sorted by key.
        tags TEXT NOT NULL
    );

    CREATE TABLE object_events (
        sequence BIGINT PRIMARY KEY,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('created', 'deleted')),
        size BIGINT NOT NULL,
        etag TEXT,
        at BIGINT NOT NULL,
        reason TEXT
    );

    CREATE TABLE consumer_cursors (
        consumer TEXT PRIMARY KEY,
        sequence BIGINT NOT NULL
    );
    "#,
    // 2: queues and their messages.
    r#"
    CREATE TABLE queues (
        -- Messages refer to queues by this id; from a sequence, so a queue
        -- deleted and created again never inherits an old id.
        queue_id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        visibility_timeout_ms BIGINT NOT NULL,
        delay_ms BIGINT NOT NULL,
        max_message_size BIGINT NOT NULL,
        retention_ms BIGINT NOT NULL,
        max_receives BIGINT,
        dead_letter TEXT,
        tags TEXT NOT NULL
    );

    CREATE TABLE messages (
        -- From a sequence: a receipt is (message id, receive count), so an id
        -- is never handed to a second message.
        message_id BIGSERIAL PRIMARY KEY,
        queue_id BIGINT NOT NULL REFERENCES queues (queue_id) ON DELETE CASCADE,
        -- When the message is next visible: after its delay, or when its lease ends.
        visible_at BIGINT NOT NULL,
        receive_count BIGINT NOT NULL DEFAULT 0,
        sent_at BIGINT NOT NULL,
        -- The body, sealed in a sealed store.
        body BYTEA NOT NULL,
        -- JSON array of [name, value] pairs (sealed in a sealed store); NULL without any.
        attributes BYTEA,
        -- Set on a message moved to a dead-letter queue.
        dead_letter_source TEXT,
        dead_letter_reason TEXT,
        dead_letter_at BIGINT
    );

    -- Receive walks this index: the visible messages of one queue, in the
    -- order they became visible. It also serves stats and the cascade delete.
    CREATE INDEX messages_by_queue_and_visibility ON messages (queue_id, visible_at, message_id);
    "#,
    // 3: the invocation ledger.
    r#"
    INSERT INTO mayfly_counters (name, value) VALUES ('invocations', 0);

    CREATE TABLE invocations (
        -- The ledger sequence, from the `invocations` counter: readers page by it.
        id BIGINT PRIMARY KEY,
        request_id TEXT NOT NULL,
        function TEXT NOT NULL,
        deployment_version BIGINT,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        duration_us BIGINT NOT NULL,
        -- Set on a cold start.
        init_duration_us BIGINT,
        outcome TEXT NOT NULL,
        error_type TEXT,
        -- Sealed (base64 of its envelope) in a sealed store.
        error_message TEXT,
        peak_memory BIGINT,
        bytes_in BIGINT NOT NULL,
        bytes_out BIGINT NOT NULL,
        estimated_cost DOUBLE PRECISION NOT NULL
    );

    -- Listing one function's invocations pages by id.
    CREATE INDEX invocations_by_function ON invocations (function, id);
    -- Every attempt's logs of one request.
    CREATE INDEX invocations_by_request ON invocations (request_id, id);
    -- Percentiles walk one function's durations in order.
    CREATE INDEX invocations_by_function_and_duration ON invocations (function, duration_us);
    -- Retention deletes the oldest first.
    CREATE INDEX invocations_by_start ON invocations (started_at, id);

    CREATE TABLE invocation_logs (
        invocation_id BIGINT PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
        -- Sealed in a sealed store.
        logs BYTEA NOT NULL
    );
    "#,
];

/// The schema version this build writes.
pub fn current_schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Any constant: the advisory lock every host takes to migrate.
const MIGRATION_LOCK: i64 = 0x6d61_7966_6c79_0001;

/// Bring the database up to [`current_schema_version`], or refuse it if it
/// is newer. `location` names it in errors (the URL without its password).
pub fn migrate(client: &mut postgres::Client, location: &str) -> Result<()> {
    let mut transaction = client.transaction().context("start the migration transaction")?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).context("take the migration lock")?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS mayfly_schema (version BIGINT NOT NULL)")
        .context("create the schema version table")?;
    let found: Option<i64> = transaction
        .query_opt("SELECT version FROM mayfly_schema", &[])
        .context("read the schema version")?
        .map(|row| row.get(0));
    let found = found.unwrap_or(0);
    let known = current_schema_version();
    if found > known {
        return Err(StateError::SchemaTooNew { path: location.to_owned(), found, known });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        tracing::info!(location, version, "applying state store migration");
        transaction.batch_execute(migration).context(&format!("apply schema migration {version}"))?;
    }
    if found < known {
        transaction.execute("DELETE FROM mayfly_schema", &[]).context("record the schema version")?;
        transaction
            .execute("INSERT INTO mayfly_schema (version) VALUES ($1)", &[&known])
            .context("record the schema version")?;
    }
    transaction.commit().context("commit the schema migrations")?;
    Ok(())
}
