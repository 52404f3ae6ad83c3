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
    // 6: the ledger of batch-job runs. Item ids (or their lookup keys)
    // compare and sort by byte (COLLATE "C"), as the embedded store's do, so
    // paging by the last item seen lists every item once whatever the locale.
    r#"
    CREATE TABLE runs (
        -- Items and workers refer to a run by this number; from a sequence,
        -- so it also orders runs by creation and is never reused.
        run_seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        deployment_version BIGINT,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('requested', 'running', 'finishing', 'succeeded',
            'completed_with_failures', 'failed', 'cancelled', 'deadline_exceeded', 'budget_exceeded')),
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        -- Set exactly when the status is a finished one.
        finished_at BIGINT,
        deadline BIGINT NOT NULL,
        budget DOUBLE PRECISION,
        lease_owner TEXT,
        lease_until BIGINT,
        coordinator_attempts BIGINT NOT NULL DEFAULT 0,
        -- Sealed (base64 of their envelopes) in a sealed store.
        error TEXT,
        report TEXT
    );
    CREATE INDEX runs_by_job ON runs (job, run_seq);
    -- The sweep for runs without a live coordinator reads only unfinished runs.
    CREATE INDEX runs_unfinished ON runs (created_at) WHERE finished_at IS NULL;

    CREATE TABLE run_items (
        -- Insertion order, from a sequence.
        item_seq BIGSERIAL PRIMARY KEY,
        run_seq BIGINT NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        -- The item id, or its lookup key in a sealed store (the id sealed in `item_sealed`).
        item TEXT COLLATE "C" NOT NULL,
        item_sealed TEXT,
        -- Sealed in a sealed store.
        payload BYTEA NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'leased', 'done', 'dead_lettered', 'returned')),
        attempts BIGINT NOT NULL DEFAULT 0,
        worker TEXT,
        not_before BIGINT NOT NULL,
        -- Sealed (base64 of its envelope) in a sealed store.
        last_error TEXT,
        updated_at BIGINT NOT NULL,
        UNIQUE (run_seq, item)
    );
    -- Leasing walks this index: the pending items of one run in the order they became available.
    CREATE INDEX run_items_to_lease ON run_items (run_seq, status, not_before, item_seq);

    -- One result per (job, item): a re-execution replaces it.
    CREATE TABLE results (
        job TEXT NOT NULL,
        item TEXT COLLATE "C" NOT NULL,
        item_sealed TEXT,
        run_id TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        worker TEXT NOT NULL,
        -- Sealed in a sealed store.
        result BYTEA NOT NULL,
        recorded_at BIGINT NOT NULL,
        UNIQUE (job, item)
    );
    CREATE INDEX results_by_run ON results (job, run_id, item);

    CREATE TABLE run_workers (
        run_seq BIGINT NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        worker TEXT NOT NULL,
        resource TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        stopped_at BIGINT,
        -- `end` is an SQL keyword.
        end_reason TEXT,
        items_done BIGINT NOT NULL,
        items_failed BIGINT NOT NULL,
        busy_ms BIGINT NOT NULL,
        log_object TEXT,
        log_sha256 TEXT,
        PRIMARY KEY (run_seq, worker)
    );

    -- One row per lease of an item, written in the same commit as the lease,
    -- the completion or the release.
    CREATE TABLE run_item_attempts (
        item_seq BIGINT NOT NULL REFERENCES run_items (item_seq) ON DELETE CASCADE,
        attempt BIGINT NOT NULL,
        run_seq BIGINT NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        worker TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        outcome TEXT NOT NULL CHECK (outcome IN ('running', 'done', 'failed', 'dead_lettered', 'released')),
        PRIMARY KEY (item_seq, attempt)
    );
    CREATE INDEX run_item_attempts_by_start ON run_item_attempts (run_seq, started_at, item_seq, attempt);

    -- One row per item that came from a queue message and has not gone back:
    -- the message as it was, so it can be put back as the same message.
    CREATE TABLE run_item_messages (
        item_seq BIGINT PRIMARY KEY REFERENCES run_items (item_seq) ON DELETE CASCADE,
        -- A deleted queue takes the way back with it: the item stays as it is.
        queue_id BIGINT NOT NULL REFERENCES queues (queue_id) ON DELETE CASCADE,
        message_id BIGINT NOT NULL UNIQUE,
        sent_at BIGINT NOT NULL,
        receive_count BIGINT NOT NULL,
        -- As `messages.attributes` stored them (sealed bound to the message id).
        attributes BYTEA
    );
    CREATE INDEX run_item_messages_by_queue ON run_item_messages (queue_id);
    "#,
    // 7: named leases that control planes campaign for (`mayfly_state::lease`);
    // a released lease keeps its row, expired, so its term keeps counting.
    r#"
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term BIGINT NOT NULL,
        -- Milliseconds since the epoch, by the clocks of the hosts that take it.
        expires_at BIGINT NOT NULL
    );
    "#,
    // 8: recorded experiments (`mayfly experiment run`, `mayfly deploy
    // --evaluate`): what each was in columns, its evidence as JSON in
    // `details` (sealed, base64 of its envelope, in a sealed store).
    r#"
    CREATE TABLE experiments (
        -- From a sequence, taken before the insert: the details are sealed bound to the id.
        experiment_id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        file_fingerprint TEXT NOT NULL,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('completed', 'failed', 'applied', 'refused')),
        -- The version an evaluation on deploy was applied as.
        deployment_version BIGINT,
        started_at BIGINT NOT NULL,
        finished_at BIGINT NOT NULL,
        baseline TEXT NOT NULL,
        -- JSON array of the variants' names.
        variants TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX experiments_by_deployment ON experiments (deployment_version) WHERE deployment_version IS NOT NULL;
    "#,
];

/// The schema version this build writes.
pub fn current_schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Any constant: the advisory lock every host takes to migrate.
pub(crate) const MIGRATION_LOCK: i64 = 0x6d61_7966_6c79_0001;

/// Bring the database up to [`current_schema_version`], or refuse it if it
/// is newer. `location` names it in errors (the URL without its password).
pub fn migrate(client: &mut postgres::Client, location: &str) -> Result<()> {
    let mut transaction = client.transaction().context("start the migration transaction")?;
    migrate_in(&mut transaction, location)?;
    transaction.commit().context("commit the schema migrations")?;
    Ok(())
}

/// Take the migration lock (held to the end of `transaction`), then
/// [`migrate`] inside `transaction`, which the caller commits.
pub fn migrate_in(transaction: &mut postgres::Transaction<'_>, location: &str) -> Result<()> {
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
    Ok(())
}
