//! The schema of the state file and the migrations that build it.
//!
//! `PRAGMA user_version` holds how many entries of [`MIGRATIONS`] a file has
//! had applied. Opening a store applies the missing ones in one transaction;
//! a file with a larger number was written by a newer Mayfly and is refused.
//! Migrations are append-only: never edit one that has shipped, add another.

use std::path::Path;

use mayfly_state::{Result, StateError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::errors::SqliteResultExt;

/// Every migration, in order. Entry `n` (0-based) takes a file from schema
/// version `n` to `n + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE deployments (
        -- AUTOINCREMENT: numbers are 1, 2, 3, … and never reused.
        version INTEGER PRIMARY KEY AUTOINCREMENT,
        content_hash TEXT NOT NULL,
        applied_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        forced INTEGER NOT NULL
    );

    CREATE TABLE buckets (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        -- JSON array of [key, value] pairs, sorted by key.
        tags TEXT NOT NULL
    );

    CREATE TABLE object_events (
        -- AUTOINCREMENT: a sequence number is never reused, even after the
        -- newest events are deleted.
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('created', 'deleted')),
        size INTEGER NOT NULL,
        etag TEXT,
        at INTEGER NOT NULL
    );

    CREATE TABLE consumer_cursors (
        consumer TEXT PRIMARY KEY,
        sequence INTEGER NOT NULL
    );

    CREATE TABLE queues (
        -- Messages refer to queues by this integer id; AUTOINCREMENT so a
        -- queue deleted and created again never inherits an old id.
        queue_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        visibility_timeout_ms INTEGER NOT NULL,
        delay_ms INTEGER NOT NULL,
        max_message_size INTEGER NOT NULL,
        retention_ms INTEGER NOT NULL,
        max_receives INTEGER,
        dead_letter TEXT,
        tags TEXT NOT NULL
    );

    CREATE TABLE messages (
        -- AUTOINCREMENT: a receipt is (message id, receive count), so an id
        -- must never be handed to a second message.
        message_id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id INTEGER NOT NULL REFERENCES queues (queue_id) ON DELETE CASCADE,
        -- When the message is next visible: after its delay, or when its lease ends.
        visible_at INTEGER NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        sent_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        -- JSON array of [name, value] pairs; NULL when there are none, so the
        -- common case costs no JSON at all.
        attributes TEXT,
        -- Set on a message moved to a dead-letter queue.
        dead_letter_source TEXT,
        dead_letter_reason TEXT,
        dead_letter_at INTEGER
    );

    -- Receive walks this index: the visible messages of one queue, in the
    -- order they became visible. It also serves stats and the cascade delete.
    CREATE INDEX messages_by_queue_and_visibility ON messages (queue_id, visible_at, message_id);
    "#,
    // 2: the invocation ledger.
    r#"
    CREATE TABLE invocations (
        -- AUTOINCREMENT: the ledger sequence; readers page by it, so an id is
        -- never reused.
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        request_id TEXT NOT NULL,
        function TEXT NOT NULL,
        deployment_version INTEGER,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_us INTEGER NOT NULL,
        -- Set on a cold start.
        init_duration_us INTEGER,
        outcome TEXT NOT NULL,
        error_type TEXT,
        error_message TEXT,
        peak_memory INTEGER,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        estimated_cost REAL NOT NULL
    );

    -- `mayfly invocations --function F` and `mayfly logs --function F` page by id.
    CREATE INDEX invocations_by_function ON invocations (function, id);
    -- Every attempt's logs of one request.
    CREATE INDEX invocations_by_request_id ON invocations (request_id, id);
    -- Percentiles: the n-th shortest duration of a function without sorting.
    CREATE INDEX invocations_by_function_and_duration ON invocations (function, duration_us);

    -- Apart from the rows, so listing invocations never reads the logs.
    -- Only invocations that wrote something have a row.
    CREATE TABLE invocation_logs (
        invocation_id INTEGER PRIMARY KEY REFERENCES invocations (id) ON DELETE CASCADE,
        logs BLOB NOT NULL
    );
    "#,
    // 3: the ledger of batch-job runs.
    r#"
    CREATE TABLE runs (
        -- Items and workers refer to a run by this integer; AUTOINCREMENT so
        -- it also orders runs by creation and is never reused.
        run_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        deployment_version INTEGER,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('requested', 'running', 'finishing', 'succeeded', 'failed',
            'cancelled', 'deadline_exceeded', 'budget_exceeded')),
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        -- Set exactly when the status is a finished one.
        finished_at INTEGER,
        deadline INTEGER NOT NULL,
        budget REAL,
        lease_owner TEXT,
        lease_until INTEGER,
        coordinator_attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        report TEXT
    );

    -- `mayfly runs --job J`, newest first.
    CREATE INDEX runs_by_job ON runs (job, run_seq);
    -- The control plane's sweep for runs without a live coordinator reads
    -- only the unfinished runs.
    CREATE INDEX runs_unfinished ON runs (created_at) WHERE finished_at IS NULL;

    CREATE TABLE run_items (
        -- Insertion order; AUTOINCREMENT so it never goes backwards.
        item_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_seq INTEGER NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        item TEXT NOT NULL,
        payload BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'leased', 'done', 'dead_lettered')),
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        not_before INTEGER NOT NULL,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        -- Also the index for listing a run's items by id and finding one item.
        UNIQUE (run_seq, item)
    );

    -- Leasing walks this index: the pending items of one run in the order
    -- they became available. Releasing and counting a run's leased items
    -- read the same range.
    CREATE INDEX run_items_to_lease ON run_items (run_seq, status, not_before, item_seq);

    -- One result per (job, item): a re-execution replaces it.
    CREATE TABLE results (
        job TEXT NOT NULL,
        item TEXT NOT NULL,
        run_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT NOT NULL,
        result BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (job, item)
    );

    -- `mayfly results JOB --run R`, by item.
    CREATE INDEX results_by_run ON results (job, run_id, item);

    CREATE TABLE run_workers (
        run_seq INTEGER NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        worker TEXT NOT NULL,
        resource TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        stopped_at INTEGER,
        -- `end` is an SQL keyword.
        end_reason TEXT,
        items_done INTEGER NOT NULL,
        items_failed INTEGER NOT NULL,
        busy_ms INTEGER NOT NULL,
        log_object TEXT,
        log_sha256 TEXT,
        PRIMARY KEY (run_seq, worker)
    );
    "#,
    // 4: store-wide settings; `payloads` = `envelope-v1` once customer
    // payloads are encrypted (see `mayfly_state::sealing`), so an unencrypted handle
    // never mixes plaintext in.
    r#"
    CREATE TABLE store_settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 5: the latest audits and their findings (`mayfly audit`).
    r#"
    CREATE TABLE audits (
        -- AUTOINCREMENT: ids are never reused, even after old audits are pruned.
        audit_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        -- `trigger` is an SQL keyword.
        trigger_source TEXT NOT NULL,
        resources_checked INTEGER NOT NULL
    );

    CREATE TABLE audit_findings (
        audit_id INTEGER NOT NULL REFERENCES audits (audit_id) ON DELETE CASCADE,
        -- The finding's place in the audit's list.
        position INTEGER NOT NULL,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('violation', 'warning', 'notice')),
        resource_kind TEXT NOT NULL,
        resource TEXT NOT NULL,
        message TEXT NOT NULL,
        remedy TEXT NOT NULL,
        PRIMARY KEY (audit_id, position)
    );
    "#,
    // 6: the HTTPS API's bearer tokens (only a hash of each secret) and its
    // append-only access log.
    r#"
    CREATE TABLE api_tokens (
        token_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        -- Hex SHA-256 of the secret; the secret itself is never stored.
        secret_sha256 TEXT NOT NULL,
        -- JSON arrays of strings.
        scopes TEXT NOT NULL,
        jobs TEXT NOT NULL,
        buckets TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );

    -- A name picks out one live token; a revoked token's name may be reused.
    CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

    CREATE TABLE access_log (
        -- AUTOINCREMENT: ids are never reused.
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        token_id TEXT,
        client TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        resource TEXT NOT NULL,
        status INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );

    -- Append-only, enforced by the file itself and not only by the code.
    CREATE TRIGGER access_log_refuses_updates BEFORE UPDATE ON access_log
    BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
    CREATE TRIGGER access_log_refuses_deletes BEFORE DELETE ON access_log
    BEGIN SELECT RAISE(ABORT, 'the access log is append-only'); END;
    "#,
    // 7: one row per lease of a run item (the dashboard's timeline), written
    // in the same commit as the lease, the completion or the release.
    r#"
    CREATE TABLE run_item_attempts (
        item_seq INTEGER NOT NULL REFERENCES run_items (item_seq) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        run_seq INTEGER NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        worker TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        outcome TEXT NOT NULL CHECK (outcome IN ('running', 'done', 'failed', 'dead_lettered', 'released')),
        PRIMARY KEY (item_seq, attempt)
    );

    -- The latest attempts of a run, newest first, without a sort.
    CREATE INDEX run_item_attempts_by_start ON run_item_attempts (run_seq, started_at, item_seq, attempt);
    "#,
    // 8: a run may end `completed_with_failures` (every item settled, some
    // dead-lettered). SQLite cannot change a CHECK constraint in place, so
    // the table is rebuilt the way SQLite documents (`migrate` turns foreign
    // keys off around the migrations, so dropping the old table cascades
    // nothing, and checks them before it commits).
    r#"
    -- jobs
    CREATE TABLE runs_with_completed_with_failures (
        run_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job TEXT NOT NULL,
        deployment_version INTEGER,
        trigger_source TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('requested', 'running', 'finishing', 'succeeded',
            'completed_with_failures', 'failed', 'cancelled', 'deadline_exceeded', 'budget_exceeded')),
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        deadline INTEGER NOT NULL,
        budget REAL,
        lease_owner TEXT,
        lease_until INTEGER,
        coordinator_attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        report TEXT
    );
    INSERT INTO runs_with_completed_with_failures (run_seq, id, job, deployment_version, trigger_source, status,
        created_at, started_at, finished_at, deadline, budget, lease_owner, lease_until, coordinator_attempts, error,
        report)
        SELECT run_seq, id, job, deployment_version, trigger_source, status, created_at, started_at, finished_at,
            deadline, budget, lease_owner, lease_until, coordinator_attempts, error, report FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_with_completed_with_failures RENAME TO runs;
    CREATE INDEX runs_by_job ON runs (job, run_seq);
    CREATE INDEX runs_unfinished ON runs (created_at) WHERE finished_at IS NULL;
    "#,
    // 9: retention. A `deleted` event says why when Mayfly expired the
    // object itself; the access log may lose a record only once it is six
    // years old (`mayfly_state::ACCESS_LOG_RETENTION`, by the wall clock),
    // which the file enforces for every SQL client as before. -- retention
    r#"
    ALTER TABLE object_events ADD COLUMN reason TEXT;

    DROP TRIGGER access_log_refuses_deletes;
    CREATE TRIGGER access_log_refuses_deletes BEFORE DELETE ON access_log
    WHEN old.at > CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER) - 189216000000
    BEGIN SELECT RAISE(ABORT, 'the access log is append-only: a record is kept for six years'); END;
    "#,
    // 10: item ids sealed (see `mayfly_state::sealing`). In an encrypted store `item`
    // holds the id's keyed hash (the lookup key) and `item_sealed` the id's
    // envelope, base64; both are filled when the store is first opened
    // with its keyring after this migration.
    r#"
    -- seal
    ALTER TABLE run_items ADD COLUMN item_sealed TEXT;
    ALTER TABLE results ADD COLUMN item_sealed TEXT;
    "#,
    // 11: each deployment records the bucket event log's head when it was
    // recorded, so the router knows which deployment routes each event.
    // Older deployments get 0 (in force from the first event).
    r#"
    -- control
    ALTER TABLE deployments ADD COLUMN event_log_head INTEGER NOT NULL DEFAULT 0;
    "#,
    // 12: an unfinished item that came from a queue message goes back to its
    // queue when the run is stopped at its deadline or budget. Items may be
    // `returned` (the CHECK is rebuilt the way migration 8 rebuilt `runs`,
    // keeping the AUTOINCREMENT sequence), and `run_item_messages` keeps
    // what the message was while its item is in the run.
    r#"
    -- jobs
    CREATE TABLE run_items_with_returned (
        item_seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_seq INTEGER NOT NULL REFERENCES runs (run_seq) ON DELETE CASCADE,
        item TEXT NOT NULL,
        payload BLOB NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'leased', 'done', 'dead_lettered', 'returned')),
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        not_before INTEGER NOT NULL,
        last_error TEXT,
        updated_at INTEGER NOT NULL,
        item_sealed TEXT,
        UNIQUE (run_seq, item)
    );
    -- Item numbers are never reused, even those of pruned items.
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'run_items_with_returned', seq FROM sqlite_sequence WHERE name = 'run_items';
    INSERT INTO run_items_with_returned (item_seq, run_seq, item, payload, status, attempts, worker, not_before,
        last_error, updated_at, item_sealed)
        SELECT item_seq, run_seq, item, payload, status, attempts, worker, not_before, last_error, updated_at,
            item_sealed FROM run_items;
    DROP TABLE run_items;
    ALTER TABLE run_items_with_returned RENAME TO run_items;
    CREATE INDEX run_items_to_lease ON run_items (run_seq, status, not_before, item_seq);

    -- One row per item that came from a queue message and has not gone back:
    -- the message as it was, so it can be put back as the same message. A
    -- message is in its queue or in one run, so its id is unique here.
    CREATE TABLE run_item_messages (
        item_seq INTEGER PRIMARY KEY REFERENCES run_items (item_seq) ON DELETE CASCADE,
        -- A deleted queue takes the way back with it: the item stays as it is.
        queue_id INTEGER NOT NULL REFERENCES queues (queue_id) ON DELETE CASCADE,
        message_id INTEGER NOT NULL UNIQUE,
        sent_at INTEGER NOT NULL,
        receive_count INTEGER NOT NULL,
        -- As `messages.attributes` stored them (sealed bound to the message id).
        attributes
    );
    CREATE INDEX run_item_messages_by_queue ON run_item_messages (queue_id);
    "#,
    // 13: a token's AWS credentials (`tokens create --aws`): the secret
    // access key, sealed (base64 of its envelope) in an encrypted store.
    r#"
    -- aws
    ALTER TABLE api_tokens ADD COLUMN aws_secret TEXT;
    "#,
    // 14: named leases that control planes campaign for (`mayfly_state::lease`);
    // a released lease keeps its row, expired, so its term keeps counting.
    r#"
    -- leader
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        term INTEGER NOT NULL,
        -- Milliseconds since the epoch, by the clocks of the hosts that take it.
        expires_at INTEGER NOT NULL
    );
    "#,
    // 15: recorded experiments (`mayfly experiment run`, `mayfly deploy
    // --evaluate`): what each was in columns, its evidence as JSON in
    // `details` (sealed, base64 of its envelope, in an encrypted store).
    r#"
    -- evaluate
    CREATE TABLE experiments (
        -- AUTOINCREMENT: ids are 1, 2, 3, … and never reused.
        experiment_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        file_fingerprint TEXT NOT NULL,
        trigger_source TEXT NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('completed', 'failed', 'applied', 'refused')),
        -- The version an evaluation on deploy was applied as.
        deployment_version INTEGER,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
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

/// Bring the file up to [`current_schema_version`], or refuse it if it is newer.
pub fn migrate(connection: &mut Connection, path: &Path) -> Result<()> {
    // A migration that rebuilds a table must not cascade the drop of the old
    // one into its children; the pragma is a no-op inside a transaction, so
    // it is set around it, and the keys are checked before the commit.
    let foreign_keys: bool =
        connection.query_row("PRAGMA foreign_keys", [], |row| row.get(0)).context("read the foreign key setting")?;
    connection.pragma_update(None, "foreign_keys", "OFF").context("turn foreign keys off to migrate")?;
    let migrated = apply_missing_migrations(connection, path);
    if foreign_keys {
        connection.pragma_update(None, "foreign_keys", "ON").context("turn foreign keys back on")?;
    }
    migrated
}

fn apply_missing_migrations(connection: &mut Connection, path: &Path) -> Result<()> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("start the migration transaction")?;
    let found: i64 =
        transaction.query_row("PRAGMA user_version", [], |row| row.get(0)).context("read the schema version")?;
    let known = current_schema_version();
    if found > known {
        return Err(StateError::SchemaTooNew { path: path.display().to_string(), found, known });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        tracing::info!(path = %path.display(), version, "applying state store migration");
        transaction.execute_batch(migration).context(&format!("apply schema migration {version}"))?;
    }
    if found < known {
        // PRAGMA does not take bound parameters; `known` is an integer we computed.
        transaction.execute_batch(&format!("PRAGMA user_version = {known}")).context("record the schema version")?;
    }
    let broken_reference: Option<String> = transaction
        .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
        .optional()
        .context("check foreign keys after the migrations")?;
    if let Some(table) = broken_reference {
        return Err(StateError::Backend(format!(
            "the schema migrations of {} left a row of `{table}` referring to nothing; nothing was changed",
            path.display()
        )));
    }
    transaction.commit().context("commit the schema migrations")?;
    Ok(())
}
