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
    // 4: the latest audits.
    r#"
    CREATE TABLE audits (
        -- From a sequence: ids are never reused, even after old audits are pruned.
        audit_id BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        resources_checked BIGINT NOT NULL
    );

    CREATE TABLE audit_findings (
        audit_id BIGINT NOT NULL REFERENCES audits (audit_id) ON DELETE CASCADE,
        -- The finding's place in the audit's list.
        position BIGINT NOT NULL,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('violation', 'warning', 'notice')),
        resource_kind TEXT NOT NULL,
        resource TEXT NOT NULL,
        message TEXT NOT NULL,
        remedy TEXT NOT NULL,
        PRIMARY KEY (audit_id, position)
    );
    "#,
    // 5: the HTTPS API's bearer tokens and its append-only access log.
    r#"
    CREATE TABLE api_tokens (
        token_seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        -- Hex SHA-256 of the secret; the secret itself is never stored.
        secret_sha256 TEXT NOT NULL,
        -- JSON arrays of strings.
        scopes TEXT NOT NULL,
        jobs TEXT NOT NULL,
        buckets TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT,
        -- The secret access key of the token's AWS credentials, sealed
        -- (base64 of its envelope) in a sealed store.
        aws_secret TEXT
    );

    -- A name picks out one live token; a revoked token's name may be reused.
    CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

    INSERT INTO mayfly_counters (name, value) VALUES ('access_log', 0);

    CREATE TABLE access_log (
        -- From the `access_log` counter: in commit order, never reused.
        id BIGINT PRIMARY KEY,
        at BIGINT NOT NULL,
        token_id TEXT,
        client TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        resource TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX access_log_by_time ON access_log (at, id);

    -- Append-only, enforced by the database itself and not only by the code:
    -- no update ever, and no delete of a record younger than six years
    -- (mayfly_state::ACCESS_LOG_RETENTION, by the server's clock).
    CREATE FUNCTION access_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            RAISE EXCEPTION 'the access log is append-only';
        END IF;
        IF OLD.at > (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT - 189216000000 THEN
            RAISE EXCEPTION 'the access log is append-only: a record is kept for six years';
        END IF;
        RETURN OLD;
    END;
    $$;
    CREATE TRIGGER access_log_refuses_changes BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_refuse_change();
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
