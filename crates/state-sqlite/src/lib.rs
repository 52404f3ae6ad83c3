//! The embedded state store: one SQLite file in WAL mode (by default under
//! `.mayfly/`), implementing [`mayfly_state::StateStore`].
//!
//! Durability: every method that changes state runs in one `BEGIN IMMEDIATE`
//! transaction and commits with `synchronous = FULL`, so a returned `Ok` has
//! been fsynced to the write-ahead log and survives SIGKILL and power loss.
//! Throughput comes from batching (one commit per `send_messages`,
//! `receive_messages` and `delete_messages` call, however many messages it
//! carries), never from relaxing the fsync.
//!
//! Sharing: several processes (the CLI and a running control plane) may open
//! the same file; writers wait for each other up to [`BUSY_TIMEOUT`]. Within a
//! process, one connection behind a mutex serves every thread.
//!
//! FIXME: `QueueConfig::retention` is stored but nothing expires messages
//! yet; the contract does not say whether receive or a reaper should.
//!
//! Only this crate knows SQL. The queue rules come from
//! [`mayfly_core::queue`] and the run rules from [`mayfly_core::run`]; this
//! crate only stores what they decide (`ledger.rs`: invocations; `runs.rs`:
//! batch-job runs, their items, results and workers; `audits.rs`: the latest
//! audits' findings; `access.rs`: the API's tokens and access log;
//! `experiments.rs`: recorded experiments).

mod access;
mod audits;
mod copy;
mod errors;
mod experiments;
mod key_identity;
mod leases;
mod ledger;
mod retention;
mod runs;
mod schema;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mayfly_core::queue::{
    QueueConfig, QueueStats, ReceiptHandle, ReceiveDecision, check_message_size, check_visibility_timeout,
    decide_receive,
};
use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{ByteSize, Clock, DeletionReason, Name, NewObjectEvent, ObjectEvent, ObjectEventKind, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{
    AccessRecord, ApiTokenRecord, AuditRecord, BucketRecord, CompletedItemCounts, DeadLetterInfo, DeleteOutcome,
    Deployment, Fence, FencedOutcome, FencedWrite, FunctionStats, GroupedCompletion, GroupedCompletionOutcome,
    InvocationFilter, InvocationRecord, ItemAttempt, ItemCompletion, Lease, LocalWatchers, MessageWatch, NewApiToken,
    NewAudit, NewDeployment, NewRun, NewRunItem, OnMessages, OutgoingMessage, QueueRecord, ReceiveRequest,
    ReceivedMessage, Result, ResultRecord, RunItem, RunItemCounts, RunRecord, StateError, StoredAccessRecord,
    StoredInvocation, StoredMessage, WorkerRecord, check_fence,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::errors::SqliteResultExt;
pub use crate::schema::current_schema_version;
pub use mayfly_crypto::Keyring;
pub use mayfly_state::sealing::KeyringReloader;
use mayfly_state::sealing::{ItemIds, Record, Sealer};

/// The value of the `payloads` setting of a store whose payloads are
/// envelopes but whose error text, reports and item ids are still plaintext
/// (what Mayfly wrote before they were sealed); opening it encrypted upgrades it.
const ENVELOPE_V1: &str = "envelope-v1";
/// The value of the `payloads` setting of a store whose payloads, error
/// text, reports and item ids are all sealed.
const ENVELOPE_V2: &str = "envelope-v2";

/// How long a writer waits for another process's write transaction before
/// giving up with a "database is locked" error.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Page cache per connection, in KiB (SQLite's negative `cache_size` unit).
const PAGE_CACHE_KIB: i64 = 32 * 1024;

/// How many prepared statements each connection keeps compiled.
const PREPARED_STATEMENT_CACHE_CAPACITY: usize = 64;

/// The SQLite state store. Cheap to share: wrap it in an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    connection: Mutex<Connection>,
    sealer: Sealer,
    /// The watchers of this file in this process (every handle of the file
    /// shares them: [`local_watchers`]).
    watchers: Arc<LocalWatchers>,
    /// Queues the write in progress made messages visible in, told to the
    /// watchers once it commits; touched only under the connection's lock.
    woken: Mutex<BTreeSet<String>>,
}

/// The watchers of the store at `path` in this process, shared by every
/// handle of that file, so that a send through one handle (the API
/// server's, say) wakes the receivers of another (a queue trigger's).
/// Writers in other processes (`mayfly send`) are not heard: their messages
/// are found by the receivers' polls.
fn local_watchers(path: &Path) -> Arc<LocalWatchers> {
    static BY_FILE: Mutex<BTreeMap<PathBuf, std::sync::Weak<LocalWatchers>>> = Mutex::new(BTreeMap::new());
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut by_file = BY_FILE.lock().unwrap_or_else(PoisonError::into_inner);
    by_file.retain(|_, watchers| watchers.strong_count() > 0);
    if let Some(watchers) = by_file.get(&path).and_then(std::sync::Weak::upgrade) {
        return watchers;
    }
    let watchers = Arc::new(LocalWatchers::default());
    by_file.insert(path, Arc::downgrade(&watchers));
    watchers
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open the store at `path` WITHOUT encryption, creating the file and its
    /// parent directory if needed and applying any missing schema migrations.
    /// Customer payloads are stored as given: this is for tests and
    /// benchmarks. The CLI always opens projects with [`SqliteStore::open_encrypted`].
    ///
    /// Fails with `SchemaTooNew` for a file written by a newer Mayfly, with a
    /// `Backend` error naming the path for a file that is not a SQLite
    /// database or cannot be opened, and with a `Backend` error for a store
    /// whose payloads are encrypted (open it with its keyring).
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, clock, Sealer::default(), KeyringAdoption::CheckRecorded)
    }

    /// Open the store at `path` (as [`SqliteStore::open`] does) with every
    /// customer payload — message bodies and attributes, run item payloads,
    /// results, invocation logs — encrypted under `keyring` (see
    /// [`mayfly_state::sealing`] for the envelope contexts). Sizes and limits are
    /// those of the plaintext. A payload that fails to verify is reported as
    /// `StateError::Damaged` naming the record.
    ///
    /// A store that was used unencrypted has its existing payloads encrypted
    /// here, once, in one transaction; from then on [`SqliteStore::open`]
    /// refuses it.
    ///
    /// The store records the identity (id and fingerprint) of every key that
    /// may have sealed its data (`key_identity.rs`); a keyring lacking one of
    /// them is refused with `KeyringLacksKeys` before anything is read or
    /// written.
    pub fn open_encrypted(path: &Path, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<SqliteStore> {
        SqliteStore::open_with(path, clock, Sealer::new(Some(keyring)), KeyringAdoption::CheckRecorded)
    }

    /// Open the store with a new `keyring` that replaces a lost one: the
    /// recorded keys are forgotten and the new keyring's recorded instead.
    /// Payloads sealed by the lost keys stay unreadable (`Damaged`). Returns
    /// the store and the ids of the keys forgotten. Only for an explicit
    /// request from the person who lost the keyring (`mayfly keys init
    /// --replace-lost-keyring`).
    pub fn open_encrypted_replacing_lost_keyring(
        path: &Path,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<(SqliteStore, Vec<String>)> {
        let store =
            SqliteStore::open_with(path, clock, Sealer::new(Some(keyring.clone())), KeyringAdoption::ReplaceLost)?;
        let forgotten =
            store.write("replace the recorded keys", |transaction| key_identity::replace_all(transaction, &keyring))?;
        Ok((store, forgotten))
    }

    /// How many encrypted payloads have their data key wrapped by key `key_id`
    /// (`mayfly keys retire` refuses while any does). A payload whose header
    /// cannot be parsed is reported as `Damaged`.
    pub fn count_envelopes_sealed_by(&self, key_id: &str) -> Result<u64> {
        use base64::Engine as _;
        if !self.sealer.is_on() {
            return Ok(0);
        }
        let sealed_by = |record: Record<'_>, envelope: &[u8]| -> Result<bool> {
            let id = mayfly_crypto::envelope_key_id(envelope, &record.context())
                .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })?;
            Ok(id == key_id)
        };
        let decode = |record: Record<'_>, text: &[u8]| -> Result<Vec<u8>> {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })
        };
        // The item lookup key is an envelope of its own.
        let item_key: Option<String> = self.read("read the item lookup key", |transaction| {
            transaction
                .query_row("SELECT value FROM store_settings WHERE key = ?1", [ITEM_KEY_SETTING], |row| row.get(0))
                .optional()
                .context("read the item lookup key")
        })?;
        let mut count = 0;
        if let Some(stored) = item_key
            && sealed_by(Record::ItemKey, &decode(Record::ItemKey, stored.as_bytes())?)?
        {
            count += 1;
        }
        for kind in SealedColumn::ALL {
            let mut after = i64::MIN;
            loop {
                let (_, last) = self.read("count the records sealed by a key", |transaction| {
                    kind.transform_page(transaction, &self.sealer, after, REWRAP_PAGE, |record, stored| {
                        let envelope = if kind.is_text() { decode(record, stored)? } else { stored.to_vec() };
                        if sealed_by(record, &envelope)? {
                            count += 1;
                        }
                        Ok(None)
                    })
                })?;
                match last {
                    Some(last) => after = last,
                    None => break,
                }
            }
        }
        Ok(count)
    }

    /// Take up a new keyring (rotated, or with a key retired) in this open
    /// store: it is checked against the recorded keys and its current key
    /// recorded, as on opening, then every payload sealed from now on uses
    /// it. Refused with `KeyringLacksKeys` (the old keyring stays) if it lacks
    /// a recorded key. No-op for an unencrypted store.
    pub fn replace_keyring(&self, keyring: Arc<Keyring>) -> Result<()> {
        if !self.sealer.is_on() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        self.write("take up a new keyring", |transaction| {
            key_identity::check_and_record(transaction, &keyring, &path)?;
            // Swapped inside the transaction: no payload is sealed with the
            // new current key before it is recorded.
            self.sealer.replace(keyring.clone());
            Ok(())
        })
    }

    /// Set how to read the keyring again when a payload was sealed by a key
    /// the keyring in use lacks (rotated by another process a moment ago):
    /// that payload is opened with the fresh keyring. Sealing keeps using the
    /// keyring in use until [`SqliteStore::replace_keyring`].
    pub fn set_keyring_reloader(&self, reloader: KeyringReloader) {
        self.sealer.set_reloader(reloader);
    }

    /// The ids of the keys recorded as possibly having sealed this store's data.
    pub fn recorded_key_ids(&self) -> Result<Vec<String>> {
        self.read("read the recorded keys", |transaction| {
            Ok(key_identity::recorded_keys(transaction)?.into_iter().map(|known| known.id).collect())
        })
    }

    /// Forget a retired key (the caller checked nothing uses it): a keyring
    /// without it opens the store from now on. Returns whether it was recorded.
    pub fn forget_retired_key(&self, key_id: &str) -> Result<bool> {
        self.write("forget a retired key", |transaction| key_identity::forget(transaction, key_id))
    }

    fn open_with(path: &Path, clock: Arc<dyn Clock>, sealer: Sealer, adoption: KeyringAdoption) -> Result<SqliteStore> {
        let at_path = |what: &str, error: &dyn std::fmt::Display| {
            StateError::Backend(format!("state store at {}: {what}: {error}", path.display()))
        };
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|error| at_path(&format!("cannot create directory {}", parent.display()), &error))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection =
            Connection::open_with_flags(path, flags).map_err(|error| at_path("cannot open the file", &error))?;
        configure_connection(&connection).map_err(|error| match error {
            rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::NotADatabase => at_path(
                "the file is not a Mayfly state store (not a SQLite database); move it aside or choose another path",
                &error,
            ),
            error if errors::is_disk_full(&error) => StateError::DiskFull,
            error => at_path("cannot configure the database", &error),
        })?;
        schema::migrate(&mut connection, path).map_err(|error| match error {
            StateError::Backend(message) => at_path("cannot migrate the schema", &message),
            other => other,
        })?;
        let mut store = SqliteStore {
            path: path.to_owned(),
            clock,
            connection: Mutex::new(connection),
            sealer,
            watchers: local_watchers(path),
            woken: Mutex::new(BTreeSet::new()),
        };
        let ids = store.settle_payload_encryption(adoption)?;
        store.sealer.set_item_ids(ids);
        Ok(store)
    }

    /// Check that the store's payloads are encrypted exactly when this
    /// handle encrypts; an encrypted handle encrypts a store used
    /// unencrypted, and seals the error text, reports and item ids of a
    /// store whose payloads alone were encrypted (`envelope-v1`). Returns
    /// how the store keeps item ids.
    fn settle_payload_encryption(&self, adoption: KeyringAdoption) -> Result<ItemIds> {
        let path = self.path.display().to_string();
        self.write("check the encryption of stored payloads", |transaction| {
            if let (Some(keyring), KeyringAdoption::CheckRecorded) = (self.sealer.keyring(), adoption) {
                key_identity::check_and_record(transaction, &keyring, &path)?;
            }
            if adoption == KeyringAdoption::ReplaceLost {
                transaction
                    .execute("DELETE FROM store_settings WHERE key = ?1", [ITEM_KEY_SETTING])
                    .context("forget the item lookup key the lost keyring sealed")?;
            }
            let setting: Option<String> = transaction
                .query_row("SELECT value FROM store_settings WHERE key = 'payloads'", [], |row| row.get(0))
                .optional()
                .context("read the payload encryption setting")?;
            match (setting.as_deref(), self.sealer.is_on()) {
                (None, false) => Ok(ItemIds::plain()),
                (Some(ENVELOPE_V2), true) => self.item_ids(transaction),
                (Some(ENVELOPE_V1 | ENVELOPE_V2), false) => Err(StateError::Backend(format!(
                    "state store at {path} holds encrypted payloads; open it with its keyring (the CLI does)"
                ))),
                (Some(other), _) if other != ENVELOPE_V1 => Err(StateError::Backend(format!(
                    "state store at {path} stores payloads as `{other}`, which this Mayfly does not know; upgrade Mayfly"
                ))),
                (previous, _) => {
                    // Everything is sealed while item ids are still plaintext, so
                    // each record's context is what it will stay; then the ids.
                    let mut sealed = 0u64;
                    let columns: &[SealedColumn] =
                        if previous.is_none() { &SealedColumn::ALL[..] } else { &SealedColumn::SEALED_IN_V2[..] };
                    for kind in columns.iter().filter(|kind| !kind.is_item_id()) {
                        sealed += kind.transform_all(transaction, &self.sealer, |record, stored| {
                            Ok(Some(kind.seal(&self.sealer, record, stored)?))
                        })?;
                    }
                    let ids = self.item_ids(transaction)?;
                    let mut sealer = self.sealer.clone();
                    sealer.set_item_ids(ids.clone());
                    sealed += seal_item_ids(transaction, &sealer)?;
                    if sealed > 0 {
                        tracing::info!(path, sealed, "sealed the records the state store held unencrypted");
                    }
                    transaction
                        .execute(
                            "INSERT INTO store_settings (key, value) VALUES ('payloads', ?1) \
                             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            [ENVELOPE_V2],
                        )
                        .context("record that payloads are encrypted")?;
                    Ok(ids)
                }
            }
        })
    }

    /// The store's item lookup key, made (and stored sealed) on first use.
    fn item_ids(&self, transaction: &Transaction<'_>) -> Result<ItemIds> {
        let stored: Option<String> = transaction
            .query_row("SELECT value FROM store_settings WHERE key = ?1", [ITEM_KEY_SETTING], |row| row.get(0))
            .optional()
            .context("read the item lookup key")?;
        if let Some(stored) = stored {
            let key = hex::decode(self.sealer.open_text(Record::ItemKey, stored)?)
                .map_err(|error| StateError::Damaged { what: Record::ItemKey.describe(), source: Box::new(error) })?;
            return Ok(ItemIds::keyed(&key));
        }
        let key = ItemIds::generate_key()?;
        transaction
            .execute(
                "INSERT INTO store_settings (key, value) VALUES (?1, ?2)",
                params![ITEM_KEY_SETTING, self.sealer.seal_text(Record::ItemKey, &hex::encode(key))],
            )
            .context("store the item lookup key")?;
        Ok(ItemIds::keyed(&key))
    }

    /// Rewrap the data key of every encrypted record (payloads, error text,
    /// reports, item ids and the item lookup key) under the keyring's
    /// current key (only the envelope headers change), row by row in
    /// transactions of a few hundred rows. Returns how many envelopes were
    /// rewrapped; 0 for an unencrypted store. Older keys must stay in the
    /// keyring until this has run.
    pub fn rewrap_all(&self) -> Result<u64> {
        if !self.sealer.is_on() {
            return Ok(0);
        }
        let mut rewrapped = self.write("rewrap the item lookup key", |transaction| {
            let stored: String = transaction
                .query_row("SELECT value FROM store_settings WHERE key = ?1", [ITEM_KEY_SETTING], |row| row.get(0))
                .context("read the item lookup key")?;
            let Some(replacement) = self.sealer.rewrap_text(Record::ItemKey, stored.as_bytes())? else {
                return Ok(0);
            };
            let replacement = String::from_utf8(replacement).expect("base64 is ASCII");
            transaction
                .execute("UPDATE store_settings SET value = ?2 WHERE key = ?1", params![ITEM_KEY_SETTING, replacement])
                .context("rewrap the item lookup key")?;
            Ok(1)
        })?;
        for kind in SealedColumn::ALL {
            let mut after = i64::MIN;
            loop {
                let (changed, last) = self.write("rewrap stored payloads", |transaction| {
                    kind.transform_page(transaction, &self.sealer, after, REWRAP_PAGE, |record, stored| {
                        if kind.is_text() {
                            self.sealer.rewrap_text(record, stored)
                        } else {
                            self.sealer.rewrap(record, stored)
                        }
                    })
                })?;
                rewrapped += changed;
                match last {
                    Some(last) => after = last,
                    None => break,
                }
            }
        }
        Ok(rewrapped)
    }

    /// Whether this store seals customer payloads (opened with
    /// [`SqliteStore::open_encrypted`]). Opening settles it: an encrypted
    /// store is never opened unencrypted, so this is also what the file holds.
    pub fn payloads_encrypted(&self) -> bool {
        self.sealer.is_on()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Items with their ids already opened (by `runs`): payloads and last errors opened.
    fn open_items(&self, items: Vec<RunItem>) -> Result<Vec<RunItem>> {
        if !self.sealer.is_on() {
            return Ok(items);
        }
        items
            .into_iter()
            .map(|mut item| {
                let stored = std::mem::take(&mut item.payload);
                let record = Record::RunItem { run: &item.run_id, item: &item.item };
                item.payload = self.sealer.open(record, stored)?;
                let record = Record::ItemError { run: &item.run_id, item: &item.item };
                item.last_error = self.sealer.open_optional_text(record, item.last_error.take())?;
                Ok(item)
            })
            .collect()
    }

    /// A run with its error and report opened.
    fn open_run(&self, mut run: RunRecord) -> Result<RunRecord> {
        run.error = self.sealer.open_optional_text(Record::RunError(&run.id), run.error.take())?;
        run.report = self.sealer.open_optional_text(Record::RunReport(&run.id), run.report.take())?;
        Ok(run)
    }

    fn open_runs(&self, runs: Vec<RunRecord>) -> Result<Vec<RunRecord>> {
        runs.into_iter().map(|run| self.open_run(run)).collect()
    }

    fn open_result(&self, mut result: ResultRecord) -> Result<ResultRecord> {
        let stored = std::mem::take(&mut result.result);
        result.result = self.sealer.open(Record::Result { job: result.job.as_str(), item: &result.item }, stored)?;
        Ok(result)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn lock_connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock unwound through any open transaction,
        // which rolled it back on drop: the connection is still consistent.
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `body` in one `BEGIN IMMEDIATE` transaction and commit it; an error
    /// from `body` rolls everything back. Once it committed, the watchers of
    /// the queues `body` named to [`SqliteStore::wake_on_commit`] are told.
    fn write<T>(&self, what: &str, body: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut connection = self.lock_connection();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_context(|| format!("start a transaction to {what}"))?;
        let value = body(&transaction);
        let woken = std::mem::take(&mut *self.woken.lock().unwrap_or_else(PoisonError::into_inner));
        let value = value?;
        transaction.commit().with_context(|| format!("commit ({what})"))?;
        drop(connection);
        self.watchers.tell(woken.iter().map(String::as_str));
        Ok(value)
    }

    /// Within [`SqliteStore::write`]: messages became visible at once in
    /// `queue`; its watchers are told if the write commits.
    fn wake_on_commit(&self, queue: &str) {
        self.woken.lock().unwrap_or_else(PoisonError::into_inner).insert(queue.to_owned());
    }

    /// Run `body` in one read transaction, so it sees a single snapshot.
    fn read<T>(&self, what: &str, body: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut connection = self.lock_connection();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .with_context(|| format!("start a transaction to {what}"))?;
        let value = body(&transaction)?;
        transaction.commit().with_context(|| format!("finish reading ({what})"))?;
        Ok(value)
    }
}

/// Whether opening checks the keyring against the recorded keys, or
/// replaces a lost keyring: then the record is replaced by the caller, and
/// the item lookup key, sealed under the lost keys, is replaced by a new one
/// (what the lost keys sealed, item ids included, stays unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyringAdoption {
    CheckRecorded,
    ReplaceLost,
}

/// Rows per transaction when `rewrap_all` walks the payloads.
const REWRAP_PAGE: usize = 256;

/// The `store_settings` key of the sealed item lookup key.
const ITEM_KEY_SETTING: &str = "item-key";

/// A column holding sealed records, walked by `rewrap_all` and by the
/// one-time sealing of a store used unencrypted (or with only its payloads
/// encrypted). Payloads are BLOB envelopes; error text, reports and item ids
/// are TEXT (base64 envelopes).
#[derive(Debug, Clone, Copy)]
enum SealedColumn {
    MessageBody,
    MessageAttributes,
    RunItemPayload,
    Result,
    InvocationLogs,
    InvocationError,
    ItemLastError,
    RunError,
    RunReport,
    RunItemId,
    ResultItemId,
    /// The attributes of a message while its item is in a run.
    RunItemMessageAttributes,
    /// The secret access key of a token\'s AWS credentials.
    TokenAwsSecret,
    /// An experiment's evidence (JSON).
    ExperimentDetails,
}

impl SealedColumn {
    const ALL: [SealedColumn; 14] = [
        SealedColumn::MessageBody,
        SealedColumn::MessageAttributes,
        SealedColumn::RunItemMessageAttributes,
        SealedColumn::RunItemPayload,
        SealedColumn::Result,
        SealedColumn::InvocationLogs,
        SealedColumn::InvocationError,
        SealedColumn::ItemLastError,
        SealedColumn::RunError,
        SealedColumn::RunReport,
        SealedColumn::RunItemId,
        SealedColumn::ResultItemId,
        SealedColumn::TokenAwsSecret,
        SealedColumn::ExperimentDetails,
    ];

    /// What `envelope-v2` seals beyond the payloads of `envelope-v1`.
    const SEALED_IN_V2: [SealedColumn; 6] = [
        SealedColumn::InvocationError,
        SealedColumn::ItemLastError,
        SealedColumn::RunError,
        SealedColumn::RunReport,
        SealedColumn::RunItemId,
        SealedColumn::ResultItemId,
    ];

    fn is_text(self) -> bool {
        !matches!(
            self,
            SealedColumn::MessageBody
                | SealedColumn::MessageAttributes
                | SealedColumn::RunItemMessageAttributes
                | SealedColumn::RunItemPayload
                | SealedColumn::Result
                | SealedColumn::InvocationLogs
        )
    }

    /// Item ids are sealed by `seal_item_ids` (with their lookup keys), not by `seal`.
    fn is_item_id(self) -> bool {
        matches!(self, SealedColumn::RunItemId | SealedColumn::ResultItemId)
    }

    /// The stored form of plaintext `stored`.
    fn seal(self, sealer: &Sealer, record: Record<'_>, stored: &[u8]) -> Result<Vec<u8>> {
        if self.is_text() {
            let text = std::str::from_utf8(stored)
                .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })?;
            Ok(sealer.seal_text(record, text).into_bytes())
        } else {
            Ok(sealer.seal(record, stored).into_owned())
        }
    }

    /// Rows after a key, in key order: (key, name 1, name 2, stored, sealed item id).
    /// Name 2 is the item's lookup key where there is one.
    fn select_sql(self) -> &'static str {
        match self {
            SealedColumn::MessageBody => {
                "SELECT message_id, NULL, NULL, body, NULL FROM messages WHERE message_id > ?1 \
                 ORDER BY message_id LIMIT ?2"
            }
            SealedColumn::MessageAttributes => {
                "SELECT message_id, NULL, NULL, attributes, NULL FROM messages \
                 WHERE message_id > ?1 AND attributes IS NOT NULL ORDER BY message_id LIMIT ?2"
            }
            SealedColumn::RunItemMessageAttributes => {
                "SELECT message_id, NULL, NULL, attributes, NULL FROM run_item_messages \
                 WHERE message_id > ?1 AND attributes IS NOT NULL ORDER BY message_id LIMIT ?2"
            }
            SealedColumn::RunItemPayload => {
                "SELECT run_items.item_seq, runs.id, run_items.item, run_items.payload, run_items.item_sealed \
                 FROM run_items JOIN runs ON runs.run_seq = run_items.run_seq \
                 WHERE run_items.item_seq > ?1 ORDER BY run_items.item_seq LIMIT ?2"
            }
            SealedColumn::Result => {
                "SELECT rowid, job, item, result, item_sealed FROM results WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            }
            SealedColumn::InvocationLogs => {
                "SELECT invocation_id, NULL, NULL, logs, NULL FROM invocation_logs WHERE invocation_id > ?1 \
                 ORDER BY invocation_id LIMIT ?2"
            }
            SealedColumn::InvocationError => {
                "SELECT id, NULL, NULL, error_message, NULL FROM invocations \
                 WHERE id > ?1 AND error_message IS NOT NULL ORDER BY id LIMIT ?2"
            }
            SealedColumn::ItemLastError => {
                "SELECT run_items.item_seq, runs.id, run_items.item, run_items.last_error, run_items.item_sealed \
                 FROM run_items JOIN runs ON runs.run_seq = run_items.run_seq \
                 WHERE run_items.item_seq > ?1 AND run_items.last_error IS NOT NULL \
                 ORDER BY run_items.item_seq LIMIT ?2"
            }
            SealedColumn::RunError => {
                "SELECT run_seq, id, NULL, error, NULL FROM runs WHERE run_seq > ?1 AND error IS NOT NULL \
                 ORDER BY run_seq LIMIT ?2"
            }
            SealedColumn::RunReport => {
                "SELECT run_seq, id, NULL, report, NULL FROM runs WHERE run_seq > ?1 AND report IS NOT NULL \
                 ORDER BY run_seq LIMIT ?2"
            }
            SealedColumn::RunItemId => {
                "SELECT run_items.item_seq, runs.id, run_items.item, run_items.item_sealed, NULL \
                 FROM run_items JOIN runs ON runs.run_seq = run_items.run_seq \
                 WHERE run_items.item_seq > ?1 AND run_items.item_sealed IS NOT NULL \
                 ORDER BY run_items.item_seq LIMIT ?2"
            }
            SealedColumn::ResultItemId => {
                "SELECT rowid, job, item, item_sealed, NULL FROM results WHERE rowid > ?1 \
                 AND item_sealed IS NOT NULL ORDER BY rowid LIMIT ?2"
            }
            SealedColumn::TokenAwsSecret => {
                "SELECT token_seq, id, NULL, aws_secret, NULL FROM api_tokens WHERE token_seq > ?1 \
                 AND aws_secret IS NOT NULL ORDER BY token_seq LIMIT ?2"
            }
            SealedColumn::ExperimentDetails => {
                "SELECT experiment_id, NULL, NULL, details, NULL FROM experiments WHERE experiment_id > ?1 \
                 ORDER BY experiment_id LIMIT ?2"
            }
        }
    }

    fn update_sql(self) -> &'static str {
        match self {
            SealedColumn::MessageBody => "UPDATE messages SET body = ?2 WHERE message_id = ?1",
            SealedColumn::MessageAttributes => "UPDATE messages SET attributes = ?2 WHERE message_id = ?1",
            SealedColumn::RunItemMessageAttributes => {
                "UPDATE run_item_messages SET attributes = ?2 WHERE message_id = ?1"
            }
            SealedColumn::RunItemPayload => "UPDATE run_items SET payload = ?2 WHERE item_seq = ?1",
            SealedColumn::Result => "UPDATE results SET result = ?2 WHERE rowid = ?1",
            SealedColumn::InvocationLogs => "UPDATE invocation_logs SET logs = ?2 WHERE invocation_id = ?1",
            SealedColumn::InvocationError => "UPDATE invocations SET error_message = ?2 WHERE id = ?1",
            SealedColumn::ItemLastError => "UPDATE run_items SET last_error = ?2 WHERE item_seq = ?1",
            SealedColumn::RunError => "UPDATE runs SET error = ?2 WHERE run_seq = ?1",
            SealedColumn::RunReport => "UPDATE runs SET report = ?2 WHERE run_seq = ?1",
            SealedColumn::RunItemId => "UPDATE run_items SET item_sealed = ?2 WHERE item_seq = ?1",
            SealedColumn::ResultItemId => "UPDATE results SET item_sealed = ?2 WHERE rowid = ?1",
            SealedColumn::TokenAwsSecret => "UPDATE api_tokens SET aws_secret = ?2 WHERE token_seq = ?1",
            SealedColumn::ExperimentDetails => "UPDATE experiments SET details = ?2 WHERE experiment_id = ?1",
        }
    }

    /// The record of a row; `item` is the plaintext item id where the
    /// record is bound to it, the lookup key for an item id's own envelope.
    fn record<'a>(self, key: i64, first: &'a str, item: &'a str) -> Record<'a> {
        match self {
            SealedColumn::MessageBody => Record::MessageBody(key),
            SealedColumn::MessageAttributes | SealedColumn::RunItemMessageAttributes => Record::MessageAttributes(key),
            SealedColumn::RunItemPayload => Record::RunItem { run: first, item },
            SealedColumn::Result => Record::Result { job: first, item },
            SealedColumn::InvocationLogs => Record::InvocationLogs(key),
            SealedColumn::InvocationError => Record::InvocationError(key),
            SealedColumn::ItemLastError => Record::ItemError { run: first, item },
            SealedColumn::RunError => Record::RunError(first),
            SealedColumn::RunReport => Record::RunReport(first),
            SealedColumn::RunItemId => Record::RunItemId { run: first, key: item },
            SealedColumn::ResultItemId => Record::ResultItemId { job: first, key: item },
            SealedColumn::TokenAwsSecret => Record::TokenAwsSecret(first),
            SealedColumn::ExperimentDetails => Record::ExperimentDetails(key),
        }
    }

    /// Replace the stored value of up to `limit` rows after `after` with what
    /// `transform` returns (`None` keeps it). Returns how many changed and
    /// the last key seen (`None` when there were no rows).
    fn transform_page(
        self,
        transaction: &Transaction<'_>,
        sealer: &Sealer,
        after: i64,
        limit: usize,
        mut transform: impl FnMut(Record<'_>, &[u8]) -> Result<Option<Vec<u8>>>,
    ) -> Result<(u64, Option<i64>)> {
        let rows: Vec<SealedRow> = transaction
            .prepare_cached(self.select_sql())
            .and_then(|mut statement| {
                statement
                    .query_map(params![after, limit_to_sql(limit)], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, bytes_at(row, 3)?.unwrap_or_default(), row.get(4)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .with_context(|| format!("read stored records ({self:?})"))?;
        let mut update = transaction.prepare_cached(self.update_sql()).context("prepare to rewrite records")?;
        let mut changed = 0;
        for (key, first, second, stored, sealed_id) in &rows {
            let first = first.as_deref().unwrap_or("");
            let second = second.clone().unwrap_or_default();
            // Records bound to an item are bound to its id, which an encrypted store keeps sealed.
            let item = match (self, sealed_id) {
                (SealedColumn::RunItemPayload | SealedColumn::ItemLastError, Some(sealed)) => {
                    sealer.open_run_item_id(first, second, Some(sealed.clone()))?
                }
                (SealedColumn::Result, Some(sealed)) => {
                    sealer.open_result_item_id(first, second, Some(sealed.clone()))?
                }
                _ => second,
            };
            let record = self.record(*key, first, &item);
            if let Some(replacement) = transform(record, stored)? {
                let written = if self.is_text() {
                    let text = String::from_utf8(replacement).expect("sealed text is base64, so UTF-8");
                    update.execute(params![key, text])
                } else {
                    update.execute(params![key, replacement])
                };
                written.with_context(|| format!("rewrite the {}", record.describe()))?;
                changed += 1;
            }
        }
        Ok((changed, rows.last().map(|row| row.0)))
    }

    fn transform_all(
        self,
        transaction: &Transaction<'_>,
        sealer: &Sealer,
        mut transform: impl FnMut(Record<'_>, &[u8]) -> Result<Option<Vec<u8>>>,
    ) -> Result<u64> {
        let (mut total, mut after) = (0, i64::MIN);
        loop {
            let (changed, last) = self.transform_page(transaction, sealer, after, REWRAP_PAGE, &mut transform)?;
            total += changed;
            match last {
                Some(last) => after = last,
                None => return Ok(total),
            }
        }
    }
}

/// A row as `SealedColumn::select_sql` reads it: key, two names, stored value, sealed item id.
type SealedRow = (i64, Option<String>, Option<String>, Vec<u8>, Option<String>);

/// Replace every plaintext item id (of run items and of results) with its
/// lookup key and sealed id. Returns how many.
fn seal_item_ids(transaction: &Transaction<'_>, sealer: &Sealer) -> Result<u64> {
    let items: Vec<(i64, String, String)> = transaction
        .prepare(
            "SELECT run_items.item_seq, runs.id, run_items.item FROM run_items \
             JOIN runs ON runs.run_seq = run_items.run_seq WHERE run_items.item_sealed IS NULL",
        )
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("read plaintext item ids")?;
    for (item_seq, run, item) in &items {
        let stored = sealer.seal_run_item_id(run, item);
        transaction
            .execute(
                "UPDATE run_items SET item = ?2, item_sealed = ?3 WHERE item_seq = ?1",
                params![item_seq, stored.key, stored.sealed],
            )
            .with_context(|| format!("seal the id of an item of run `{run}`"))?;
    }
    let results: Vec<(i64, String, String)> = transaction
        .prepare("SELECT rowid, job, item FROM results WHERE item_sealed IS NULL")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("read plaintext result item ids")?;
    for (rowid, job, item) in &results {
        let stored = sealer.seal_result_item_id(job, item);
        transaction
            .execute(
                "UPDATE results SET item = ?2, item_sealed = ?3 WHERE rowid = ?1",
                params![rowid, stored.key, stored.sealed],
            )
            .with_context(|| format!("seal the item id of a result of job `{job}`"))?;
    }
    Ok((items.len() + results.len()) as u64)
}

/// A message's body and attributes, opened.
type MessagePayload = (Vec<u8>, Vec<(String, String)>);

/// A dead letter as redrive reads it: id, sent at, body, attributes.
type DeadLetterRow = (i64, i64, Vec<u8>, Option<Vec<u8>>);

/// A column that holds TEXT (unencrypted JSON) or a BLOB (an envelope), as bytes.
pub(crate) fn bytes_at(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    use rusqlite::types::ValueRef;
    match row.get_ref(column)? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Some(bytes.to_vec())),
        other => Err(rusqlite::Error::InvalidColumnType(column, "payload".to_owned(), other.data_type())),
    }
}

fn configure_connection(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(PREPARED_STATEMENT_CACHE_CAPACITY);
    let journal_mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode, "state store could not switch to WAL mode");
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update(None, "cache_size", -PAGE_CACHE_KIB)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

// --- conversions between Rust values and columns ------------------------------

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn duration_from_millis(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// Sequence numbers and ids are `u64` in the contract and `INTEGER` (i64) in SQLite.
fn to_sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql_integer(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn name_from_column(value: String) -> Result<Name> {
    Name::new(value).map_err(|error| StateError::Backend(format!("the state file holds an invalid name: {error}")))
}

/// Tags are stored sorted by key, the last value of a repeated key winning.
fn tags_to_json(tags: &[(String, String)]) -> Result<String> {
    let sorted: BTreeMap<&str, &str> = tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let pairs: Vec<(&str, &str)> = sorted.into_iter().collect();
    serde_json::to_string(&pairs).map_err(|error| StateError::Backend(format!("could not encode tags: {error}")))
}

fn pairs_from_json(json: &str) -> Result<Vec<(String, String)>> {
    serde_json::from_str(json)
        .map_err(|error| StateError::Backend(format!("the state file holds unreadable key/value pairs: {error}")))
}

fn attributes_to_json(attributes: &[(String, String)]) -> Result<Option<String>> {
    if attributes.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(attributes)
        .map(Some)
        .map_err(|error| StateError::Backend(format!("could not encode message attributes: {error}")))
}

fn attributes_from_json_bytes(json: &[u8]) -> Result<Vec<(String, String)>> {
    serde_json::from_slice(json)
        .map_err(|error| StateError::Backend(format!("the state file holds unreadable message attributes: {error}")))
}

/// A message's stored body and attributes.
type SealedMessage = (Vec<u8>, Option<Vec<u8>>);

/// Batches at least this large are sealed on several threads.
const PARALLEL_SEAL_MIN: usize = 256;

/// The stored body and attributes of each message, sealed for ids
/// `first_id`, `first_id + 1`, …; large batches are split across the cores
/// (sealing is CPU-bound and independent per message).
fn seal_messages(sealer: &Sealer, first_id: i64, messages: &[OutgoingMessage]) -> Result<Vec<SealedMessage>> {
    let seal_range = |first_id: i64, messages: &[OutgoingMessage]| -> Result<Vec<SealedMessage>> {
        (first_id..)
            .zip(messages)
            .map(|(id, message)| {
                let body = sealer.seal(Record::MessageBody(id), &message.body).into_owned();
                let attributes = attributes_to_json(&message.attributes)?
                    .map(|json| sealer.seal(Record::MessageAttributes(id), json.as_bytes()).into_owned());
                Ok((body, attributes))
            })
            .collect()
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(8);
    if threads < 2 || messages.len() < PARALLEL_SEAL_MIN {
        return seal_range(first_id, messages);
    }
    let chunk = messages.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = messages
            .chunks(chunk)
            .enumerate()
            .map(|(index, part)| {
                let part_first_id = first_id + (index * chunk) as i64;
                scope.spawn(move || seal_range(part_first_id, part))
            })
            .collect();
        let mut sealed = Vec::with_capacity(messages.len());
        for handle in handles {
            sealed.extend(handle.join().map_err(|_| StateError::Backend("sealing messages panicked".to_owned()))??);
        }
        Ok(sealed)
    })
}

/// Send `messages` to `queue` within `transaction` (see [`QueueStore::send_messages`]).
fn send_messages(
    transaction: &Transaction<'_>,
    sealer: &Sealer,
    now: Timestamp,
    queue: &Name,
    messages: &[OutgoingMessage],
) -> Result<Vec<u64>> {
    let stored = require_queue(transaction, queue)?;
    let config = &stored.record.config;
    // Check every message before storing any: the batch is all or nothing.
    for message in messages {
        check_message_size(config, queue, message.size())?;
    }
    let mut ids = Vec::with_capacity(messages.len());
    if sealer.is_on() {
        // The ids are chosen here (as AUTOINCREMENT would) so each
        // body is sealed bound to its message id before it is written.
        let first_id = next_message_id(transaction)?;
        let mut insert = transaction
            .prepare_cached(
                "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, \
                 attributes) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
            )
            .context("prepare to insert messages")?;
        let sealed = seal_messages(sealer, first_id, messages)?;
        for ((next_id, message), (body, attributes)) in (first_id..).zip(messages).zip(sealed) {
            let visible_at = now.saturating_add(message.delay.unwrap_or(config.delay));
            insert
                .execute(params![next_id, stored.queue_id, visible_at.as_millis(), now.as_millis(), body, attributes])
                .with_context(|| format!("insert a message into queue `{queue}`"))?;
            ids.push(from_sql_integer(next_id));
        }
        return Ok(ids);
    }
    let mut insert = transaction
        .prepare_cached(
            "INSERT INTO messages (queue_id, visible_at, receive_count, sent_at, body, attributes) \
             VALUES (?1, ?2, 0, ?3, ?4, ?5)",
        )
        .context("prepare to insert messages")?;
    for message in messages {
        let visible_at = now.saturating_add(message.delay.unwrap_or(config.delay));
        let attributes = attributes_to_json(&message.attributes)?;
        insert
            .execute(params![stored.queue_id, visible_at.as_millis(), now.as_millis(), message.body, attributes])
            .with_context(|| format!("insert a message into queue `{queue}`"))?;
        ids.push(from_sql_integer(transaction.last_insert_rowid()));
    }
    Ok(ids)
}

/// Set a consumer's cursor within `transaction` (see [`EventLog::set_consumer_cursor`]).
fn set_consumer_cursor(transaction: &Transaction<'_>, consumer: &str, sequence: u64) -> Result<()> {
    transaction
        .prepare_cached(
            "INSERT INTO consumer_cursors (consumer, sequence) VALUES (?1, ?2) \
             ON CONFLICT (consumer) DO UPDATE \
             SET sequence = max(consumer_cursors.sequence, excluded.sequence)",
        )
        .and_then(|mut statement| statement.execute(params![consumer, to_sql_integer(sequence)]))
        .with_context(|| format!("set the cursor of consumer `{consumer}`"))?;
    Ok(())
}

/// The id the next message inserted into `messages` gets: what
/// `AUTOINCREMENT` would choose. Only meaningful inside a write transaction.
/// An encrypted store needs the id before the insert, to bind the body to it.
fn next_message_id(transaction: &Transaction<'_>) -> Result<i64> {
    transaction
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0), \
                        COALESCE((SELECT MAX(message_id) FROM messages), 0)) + 1",
        )
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .context("allocate message ids")
}

fn kind_to_column(kind: ObjectEventKind) -> &'static str {
    kind.as_str()
}

fn reason_from_column(reason: &str) -> Result<DeletionReason> {
    DeletionReason::parse(reason)
        .ok_or_else(|| StateError::Backend(format!("unknown deletion reason `{reason}` in the event log")))
}

fn kind_from_column(kind: &str) -> Result<ObjectEventKind> {
    match kind {
        "created" => Ok(ObjectEventKind::Created),
        "deleted" => Ok(ObjectEventKind::Deleted),
        other => Err(StateError::Backend(format!("the state file holds an unknown event kind `{other}`"))),
    }
}

// --- rows -------------------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &str = "version, content_hash, applied_at, source, forced, event_log_head";

fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        version: from_sql_integer(row.get(0)?),
        content_hash: row.get(1)?,
        applied_at: Timestamp(row.get(2)?),
        source: row.get(3)?,
        forced: row.get(4)?,
        event_log_head: from_sql_integer(row.get(5)?),
    })
}

/// A bucket row before its name and tags are validated.
struct BucketRow {
    name: String,
    created_at: i64,
    tags: String,
}

impl BucketRow {
    const COLUMNS: &str = "name, created_at, tags";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BucketRow> {
        Ok(BucketRow { name: row.get(0)?, created_at: row.get(1)?, tags: row.get(2)? })
    }

    fn into_record(self) -> Result<BucketRecord> {
        Ok(BucketRecord {
            name: name_from_column(self.name)?,
            created_at: Timestamp(self.created_at),
            tags: pairs_from_json(&self.tags)?,
        })
    }
}

/// A queue row: its integer id (what messages refer to) and its record.
struct QueueRow {
    queue_id: i64,
    name: String,
    created_at: i64,
    visibility_timeout_ms: i64,
    delay_ms: i64,
    max_message_size: i64,
    retention_ms: i64,
    max_receives: Option<i64>,
    dead_letter: Option<String>,
    tags: String,
}

/// A queue as the message methods need it.
struct StoredQueue {
    queue_id: i64,
    record: QueueRecord,
}

impl QueueRow {
    const COLUMNS: &str = "queue_id, name, created_at, visibility_timeout_ms, delay_ms, max_message_size, \
                           retention_ms, max_receives, dead_letter, tags";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QueueRow> {
        Ok(QueueRow {
            queue_id: row.get(0)?,
            name: row.get(1)?,
            created_at: row.get(2)?,
            visibility_timeout_ms: row.get(3)?,
            delay_ms: row.get(4)?,
            max_message_size: row.get(5)?,
            retention_ms: row.get(6)?,
            max_receives: row.get(7)?,
            dead_letter: row.get(8)?,
            tags: row.get(9)?,
        })
    }

    fn into_stored(self) -> Result<StoredQueue> {
        let config = QueueConfig {
            visibility_timeout: duration_from_millis(self.visibility_timeout_ms),
            delay: duration_from_millis(self.delay_ms),
            max_message_size: ByteSize(from_sql_integer(self.max_message_size)),
            retention: duration_from_millis(self.retention_ms),
            max_receives: self.max_receives.map(|count| u32::try_from(count).unwrap_or(u32::MAX)),
            dead_letter: self.dead_letter.map(name_from_column).transpose()?,
        };
        Ok(StoredQueue {
            queue_id: self.queue_id,
            record: QueueRecord {
                name: name_from_column(self.name)?,
                created_at: Timestamp(self.created_at),
                config,
                tags: pairs_from_json(&self.tags)?,
            },
        })
    }
}

fn find_queue(transaction: &Transaction<'_>, name: &Name) -> Result<Option<StoredQueue>> {
    let sql = format!("SELECT {} FROM queues WHERE name = ?1", QueueRow::COLUMNS);
    let row = transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| statement.query_row([name.as_str()], QueueRow::from_row).optional())
        .with_context(|| format!("look up queue `{name}`"))?;
    row.map(QueueRow::into_stored).transpose()
}

fn require_queue(transaction: &Transaction<'_>, name: &Name) -> Result<StoredQueue> {
    find_queue(transaction, name)?.ok_or_else(|| StateError::not_found("queue", name))
}

fn check_queue_config(config: &QueueConfig) -> Result<()> {
    check_visibility_timeout(config.visibility_timeout)?;
    Ok(())
}

/// Bind values for a queue's settings, in the order of the `queues` columns.
struct QueueConfigColumns {
    visibility_timeout_ms: i64,
    delay_ms: i64,
    max_message_size: i64,
    retention_ms: i64,
    max_receives: Option<i64>,
    dead_letter: Option<String>,
}

impl QueueConfigColumns {
    fn new(config: &QueueConfig) -> QueueConfigColumns {
        QueueConfigColumns {
            visibility_timeout_ms: millis(config.visibility_timeout),
            delay_ms: millis(config.delay),
            max_message_size: to_sql_integer(config.max_message_size.bytes()),
            retention_ms: millis(config.retention),
            max_receives: config.max_receives.map(i64::from),
            dead_letter: config.dead_letter.as_ref().map(|name| name.as_str().to_owned()),
        }
    }
}

/// A message row as receive and peek read it.
struct MessageRow {
    message_id: i64,
    visible_at: i64,
    receive_count: i64,
    sent_at: i64,
    body: Vec<u8>,
    /// JSON text, or its envelope in an encrypted store.
    attributes: Option<Vec<u8>>,
}

impl MessageRow {
    const COLUMNS: &str = "message_id, visible_at, receive_count, sent_at, body, attributes";

    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
        Ok(MessageRow {
            message_id: row.get(0)?,
            visible_at: row.get(1)?,
            receive_count: row.get(2)?,
            sent_at: row.get(3)?,
            body: row.get(4)?,
            attributes: bytes_at(row, 5)?,
        })
    }

    /// The body and attributes, opened.
    fn open_payload(&mut self, sealer: &Sealer) -> Result<MessagePayload> {
        let body = sealer.open(Record::MessageBody(self.message_id), std::mem::take(&mut self.body))?;
        let attributes = match self.attributes.take() {
            None => Vec::new(),
            Some(stored) => {
                attributes_from_json_bytes(&sealer.open(Record::MessageAttributes(self.message_id), stored)?)?
            }
        };
        Ok((body, attributes))
    }

    fn receive_count(&self) -> u32 {
        u32::try_from(self.receive_count).unwrap_or(u32::MAX)
    }
}

impl mayfly_state::KeyringHolder for SqliteStore {
    fn payloads_encrypted(&self) -> bool {
        SqliteStore::payloads_encrypted(self)
    }

    fn replace_keyring(&self, keyring: Arc<Keyring>) -> Result<()> {
        SqliteStore::replace_keyring(self, keyring)
    }

    fn set_keyring_reloader(&self, reloader: KeyringReloader) {
        SqliteStore::set_keyring_reloader(self, reloader)
    }
}

impl mayfly_state::KeyMaintenance for SqliteStore {
    fn rewrap_all(&self) -> Result<u64> {
        SqliteStore::rewrap_all(self)
    }

    fn count_envelopes_sealed_by(&self, key_id: &str) -> Result<u64> {
        SqliteStore::count_envelopes_sealed_by(self, key_id)
    }

    fn forget_retired_key(&self, key_id: &str) -> Result<bool> {
        SqliteStore::forget_retired_key(self, key_id)
    }
}

impl DeploymentStore for SqliteStore {
    fn record_deployment(&self, deployment: NewDeployment) -> Result<Deployment> {
        let now = self.now();
        self.write("record a deployment", |transaction| {
            // The event log's head in the same transaction: writers are serialised, so every
            // event numbered above it commits after this deployment (and is routed by it).
            let sql = format!(
                "INSERT INTO deployments (content_hash, applied_at, source, forced, event_log_head) \
                 VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'object_events')) \
                 RETURNING {DEPLOYMENT_COLUMNS}"
            );
            transaction
                .prepare_cached(&sql)
                .and_then(|mut statement| {
                    statement.query_row(
                        params![deployment.content_hash, now.as_millis(), deployment.source, deployment.forced],
                        deployment_from_row,
                    )
                })
                .context("insert a deployment")
        })
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        self.read("list deployments", |transaction| {
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY version");
            let mut statement = transaction.prepare_cached(&sql).context("list deployments")?;
            let rows = statement.query_map([], deployment_from_row).context("list deployments")?;
            rows.collect::<rusqlite::Result<Vec<_>>>().context("read deployments")
        })
    }

    fn latest_deployment(&self) -> Result<Option<Deployment>> {
        self.read("find the latest deployment", |transaction| {
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY version DESC LIMIT 1");
            transaction
                .prepare_cached(&sql)
                .and_then(|mut statement| statement.query_row([], deployment_from_row).optional())
                .context("read the latest deployment")
        })
    }
}

impl BucketRegistry for SqliteStore {
    fn create_bucket(&self, name: &Name, tags: &[(String, String)]) -> Result<BucketRecord> {
        let now = self.now();
        let tags_json = tags_to_json(tags)?;
        self.write(&format!("create bucket `{name}`"), |transaction| {
            let inserted = transaction
                .prepare_cached(
                    "INSERT INTO buckets (name, created_at, tags) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )
                .and_then(|mut statement| statement.execute(params![name.as_str(), now.as_millis(), tags_json]))
                .with_context(|| format!("insert bucket `{name}`"))?;
            if inserted == 0 {
                return Err(StateError::AlreadyExists { kind: "bucket", name: name.to_string() });
            }
            Ok(BucketRecord { name: name.clone(), created_at: now, tags: pairs_from_json(&tags_json)? })
        })
    }

    fn delete_bucket(&self, name: &Name) -> Result<()> {
        self.write(&format!("delete bucket `{name}`"), |transaction| {
            let deleted = transaction
                .prepare_cached("DELETE FROM buckets WHERE name = ?1")
                .and_then(|mut statement| statement.execute([name.as_str()]))
                .with_context(|| format!("delete bucket `{name}`"))?;
            if deleted == 0 {
                return Err(StateError::not_found("bucket", name));
            }
            Ok(())
        })
    }

    fn bucket(&self, name: &Name) -> Result<BucketRecord> {
        self.read(&format!("look up bucket `{name}`"), |transaction| {
            let sql = format!("SELECT {} FROM buckets WHERE name = ?1", BucketRow::COLUMNS);
            let row = transaction
                .prepare_cached(&sql)
                .and_then(|mut statement| statement.query_row([name.as_str()], BucketRow::from_row).optional())
                .with_context(|| format!("look up bucket `{name}`"))?;
            row.ok_or_else(|| StateError::not_found("bucket", name))?.into_record()
        })
    }

    fn buckets(&self) -> Result<Vec<BucketRecord>> {
        self.read("list buckets", |transaction| {
            let sql = format!("SELECT {} FROM buckets ORDER BY name", BucketRow::COLUMNS);
            let mut statement = transaction.prepare_cached(&sql).context("list buckets")?;
            let rows = statement
                .query_map([], BucketRow::from_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .context("list buckets")?;
            rows.into_iter().map(BucketRow::into_record).collect()
        })
    }
}

impl EventLog for SqliteStore {
    fn append_object_event(&self, event: NewObjectEvent) -> Result<ObjectEvent> {
        self.write("append an object event", |transaction| {
            let sequence: i64 = transaction
                .prepare_cached(
                    "INSERT INTO object_events (bucket, key, kind, size, etag, at, reason) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING sequence",
                )
                .and_then(|mut statement| {
                    statement.query_row(
                        params![
                            event.bucket.as_str(),
                            event.key,
                            kind_to_column(event.kind),
                            to_sql_integer(event.size),
                            event.etag,
                            event.at.as_millis(),
                            event.reason.map(DeletionReason::as_str)
                        ],
                        |row| row.get(0),
                    )
                })
                .context("insert an object event")?;
            Ok(ObjectEvent {
                sequence: from_sql_integer(sequence),
                bucket: event.bucket,
                key: event.key,
                kind: event.kind,
                size: event.size,
                etag: event.etag,
                at: event.at,
                reason: event.reason,
            })
        })
    }

    fn object_events_after(&self, after: u64, limit: usize) -> Result<Vec<ObjectEvent>> {
        self.read("read the object event log", |transaction| {
            let mut statement = transaction
                .prepare_cached(
                    "SELECT sequence, bucket, key, kind, size, etag, at, reason FROM object_events \
                     WHERE sequence > ?1 ORDER BY sequence LIMIT ?2",
                )
                .context("read the object event log")?;
            let rows = statement
                .query_map(params![to_sql_integer(after), limit_to_sql(limit)], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Option<String>>(5)?,
                        row.get::<_, i64>(6)?,
                        row.get::<_, Option<String>>(7)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .context("read the object event log")?;
            rows.into_iter()
                .map(|(sequence, bucket, key, kind, size, etag, at, reason)| {
                    Ok(ObjectEvent {
                        sequence: from_sql_integer(sequence),
                        bucket: name_from_column(bucket)?,
                        key,
                        kind: kind_from_column(&kind)?,
                        size: from_sql_integer(size),
                        etag,
                        at: Timestamp(at),
                        reason: reason.as_deref().map(reason_from_column).transpose()?,
                    })
                })
                .collect()
        })
    }

    fn consumer_cursor(&self, consumer: &str) -> Result<u64> {
        self.read(&format!("read the cursor of consumer `{consumer}`"), |transaction| {
            let sequence: Option<i64> = transaction
                .prepare_cached("SELECT sequence FROM consumer_cursors WHERE consumer = ?1")
                .and_then(|mut statement| statement.query_row([consumer], |row| row.get(0)).optional())
                .with_context(|| format!("read the cursor of consumer `{consumer}`"))?;
            Ok(sequence.map(from_sql_integer).unwrap_or(0))
        })
    }

    fn set_consumer_cursor(&self, consumer: &str, sequence: u64) -> Result<()> {
        self.write(&format!("set the cursor of consumer `{consumer}`"), |transaction| {
            set_consumer_cursor(transaction, consumer, sequence)
        })
    }
}

impl QueueStore for SqliteStore {
    fn create_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        check_queue_config(config)?;
        let now = self.now();
        let tags_json = tags_to_json(tags)?;
        let columns = QueueConfigColumns::new(config);
        self.write(&format!("create queue `{name}`"), |transaction| {
            let inserted = transaction
                .prepare_cached(
                    "INSERT INTO queues (name, created_at, visibility_timeout_ms, delay_ms, max_message_size, \
                     retention_ms, max_receives, dead_letter, tags) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT DO NOTHING",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        name.as_str(),
                        now.as_millis(),
                        columns.visibility_timeout_ms,
                        columns.delay_ms,
                        columns.max_message_size,
                        columns.retention_ms,
                        columns.max_receives,
                        columns.dead_letter,
                        tags_json
                    ])
                })
                .with_context(|| format!("insert queue `{name}`"))?;
            if inserted == 0 {
                return Err(StateError::AlreadyExists { kind: "queue", name: name.to_string() });
            }
            Ok(require_queue(transaction, name)?.record)
        })
    }

    fn update_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        check_queue_config(config)?;
        let tags_json = tags_to_json(tags)?;
        let columns = QueueConfigColumns::new(config);
        self.write(&format!("update queue `{name}`"), |transaction| {
            let updated = transaction
                .prepare_cached(
                    "UPDATE queues SET visibility_timeout_ms = ?2, delay_ms = ?3, max_message_size = ?4, \
                     retention_ms = ?5, max_receives = ?6, dead_letter = ?7, tags = ?8 WHERE name = ?1",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        name.as_str(),
                        columns.visibility_timeout_ms,
                        columns.delay_ms,
                        columns.max_message_size,
                        columns.retention_ms,
                        columns.max_receives,
                        columns.dead_letter,
                        tags_json
                    ])
                })
                .with_context(|| format!("update queue `{name}`"))?;
            if updated == 0 {
                return Err(StateError::not_found("queue", name));
            }
            Ok(require_queue(transaction, name)?.record)
        })
    }

    fn delete_queue(&self, name: &Name) -> Result<()> {
        self.write(&format!("delete queue `{name}`"), |transaction| {
            // Messages go with it: `ON DELETE CASCADE`.
            let deleted = transaction
                .prepare_cached("DELETE FROM queues WHERE name = ?1")
                .and_then(|mut statement| statement.execute([name.as_str()]))
                .with_context(|| format!("delete queue `{name}`"))?;
            if deleted == 0 {
                return Err(StateError::not_found("queue", name));
            }
            Ok(())
        })
    }

    fn queue(&self, name: &Name) -> Result<QueueRecord> {
        self.read(&format!("look up queue `{name}`"), |transaction| Ok(require_queue(transaction, name)?.record))
    }

    fn queues(&self) -> Result<Vec<QueueRecord>> {
        self.read("list queues", |transaction| {
            let sql = format!("SELECT {} FROM queues ORDER BY name", QueueRow::COLUMNS);
            let mut statement = transaction.prepare_cached(&sql).context("list queues")?;
            let rows = statement
                .query_map([], QueueRow::from_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .context("list queues")?;
            rows.into_iter().map(|row| Ok(row.into_stored()?.record)).collect()
        })
    }

    fn send_messages(&self, queue: &Name, messages: &[OutgoingMessage]) -> Result<Vec<u64>> {
        let now = self.now();
        self.write(&format!("send messages to queue `{queue}`"), |transaction| {
            let ids = send_messages(transaction, &self.sealer, now, queue, messages)?;
            if !ids.is_empty() {
                self.wake_on_commit(queue.as_str());
            }
            Ok(ids)
        })
    }

    fn receive_messages(&self, queue: &Name, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>> {
        if let Some(timeout) = request.visibility_timeout {
            check_visibility_timeout(timeout)?;
        }
        let now = self.now();
        self.write(&format!("receive messages from queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let config = &stored.record.config;
            let visibility_timeout = request.visibility_timeout.unwrap_or(config.visibility_timeout);
            let mut received = Vec::with_capacity(request.max_messages.min(1024));
            // Keyset paging over (visible_at, message_id): a message dead-lettered or
            // left in place is never looked at twice. A zero-timeout lease is
            // visible again at once, after the page's keyset, so a later page
            // skips what this receive leased (it is not handed out twice, nor
            // dead-lettered while its receiver holds it).
            let mut after: (i64, i64) = (i64::MIN, i64::MIN);
            let mut leased: std::collections::HashSet<i64> = std::collections::HashSet::new();
            let mut dead_letter_queue_ids: BTreeMap<Name, Option<i64>> = BTreeMap::new();
            while received.len() < request.max_messages {
                let wanted = request.max_messages - received.len();
                let candidates = visible_messages_after(transaction, stored.queue_id, now, after, wanted)?;
                let Some(last) = candidates.last() else { break };
                after = (last.visible_at, last.message_id);
                for mut candidate in candidates {
                    if leased.contains(&candidate.message_id) {
                        continue;
                    }
                    match decide_receive(config, candidate.receive_count(), visibility_timeout, now) {
                        ReceiveDecision::Deliver { receive_count, lease_until } => {
                            // Opened before the lease: a damaged message is never handed
                            // out, and it is set aside so it no longer blocks the queue.
                            let (body, attributes) = match candidate.open_payload(&self.sealer) {
                                Ok(payload) => payload,
                                Err(error) if failed_integrity(&error) => {
                                    let reason = format!("{}{error}", mayfly_state::INTEGRITY_REASON_PREFIX);
                                    let dead_letter = match &config.dead_letter {
                                        Some(dead_letter) if dead_letter != queue => {
                                            find_queue(transaction, dead_letter)?.map(|queue| queue.queue_id)
                                        }
                                        _ => None,
                                    };
                                    tracing::error!(
                                        queue = %queue,
                                        message_id = candidate.message_id,
                                        dead_letter_queue = ?config.dead_letter,
                                        reason = %reason,
                                        "a message failed its integrity check; dead-lettered (or set aside) so the queue goes on"
                                    );
                                    match dead_letter {
                                        Some(dead_letter_queue_id) => {
                                            move_to_dead_letter_queue(
                                                transaction,
                                                candidate.message_id,
                                                dead_letter_queue_id,
                                                queue,
                                                &reason,
                                                now,
                                            )?;
                                            if let Some(dead_letter) = &config.dead_letter {
                                                self.wake_on_commit(dead_letter.as_str());
                                            }
                                        }
                                        None => set_aside_in_place(transaction, candidate.message_id, queue, &reason, now)?,
                                    }
                                    continue;
                                }
                                Err(error) => return Err(error),
                            };
                            lease_message(transaction, candidate.message_id, receive_count, lease_until)?;
                            leased.insert(candidate.message_id);
                            received.push(ReceivedMessage {
                                message_id: from_sql_integer(candidate.message_id),
                                receipt: ReceiptHandle {
                                    message_id: from_sql_integer(candidate.message_id),
                                    receive_count,
                                },
                                body,
                                attributes,
                                sent_at: Timestamp(candidate.sent_at),
                                receive_count,
                                lease_until,
                            });
                        }
                        ReceiveDecision::DeadLetter { dead_letter, reason } => {
                            let dead_letter_queue_id = match dead_letter_queue_ids.get(&dead_letter) {
                                Some(id) => *id,
                                None => {
                                    let id = find_queue(transaction, &dead_letter)?.map(|queue| queue.queue_id);
                                    dead_letter_queue_ids.insert(dead_letter.clone(), id);
                                    id
                                }
                            };
                            let Some(dead_letter_queue_id) = dead_letter_queue_id else {
                                tracing::warn!(
                                    queue = %queue,
                                    dead_letter_queue = %dead_letter,
                                    message_id = candidate.message_id,
                                    "message is past max_receives but its dead-letter queue does not exist; \
                                     leaving it in place until the queue is created"
                                );
                                continue;
                            };
                            move_to_dead_letter_queue(
                                transaction,
                                candidate.message_id,
                                dead_letter_queue_id,
                                queue,
                                &reason,
                                now,
                            )?;
                            self.wake_on_commit(dead_letter.as_str());
                        }
                    }
                }
            }
            Ok(received)
        })
    }

    fn damaged_messages(&self, limit: usize) -> Result<Vec<mayfly_state::DamagedMessage>> {
        self.read("list damaged messages", |transaction| {
            let mut statement = transaction
                .prepare_cached(
                    "SELECT q.name, m.message_id, m.dead_letter_source, m.dead_letter_reason, m.dead_letter_at \
                     FROM messages m JOIN queues q ON q.queue_id = m.queue_id \
                     WHERE substr(m.dead_letter_reason, 1, ?1) = ?2 ORDER BY m.message_id LIMIT ?3",
                )
                .context("list damaged messages")?;
            let prefix = mayfly_state::INTEGRITY_REASON_PREFIX;
            let rows = statement
                .query_map(params![prefix.len() as i64, prefix, limit_to_sql(limit)], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                    ))
                })
                .context("list damaged messages")?;
            let mut damaged = Vec::new();
            for row in rows {
                let (queue, message_id, source_queue, reason, at) = row.context("read a damaged message")?;
                damaged.push(mayfly_state::DamagedMessage {
                    queue: name_from_column(queue)?,
                    message_id: from_sql_integer(message_id),
                    source_queue: source_queue.unwrap_or_default(),
                    reason,
                    set_aside_at: Timestamp(at.unwrap_or_default()),
                });
            }
            Ok(damaged)
        })
    }

    fn delete_messages(&self, queue: &Name, receipts: &[ReceiptHandle]) -> Result<Vec<DeleteOutcome>> {
        let now = self.now();
        self.write(&format!("delete messages from queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let mut delete = transaction
                .prepare_cached(
                    "DELETE FROM messages WHERE message_id = ?1 AND queue_id = ?2 AND receive_count = ?3 \
                     AND visible_at > ?4",
                )
                .context("prepare to delete messages")?;
            receipts
                .iter()
                .map(|receipt| {
                    let deleted = delete
                        .execute(params![
                            to_sql_integer(receipt.message_id),
                            stored.queue_id,
                            receipt.receive_count,
                            now.as_millis()
                        ])
                        .with_context(|| format!("delete message {} from queue `{queue}`", receipt.message_id))?;
                    Ok(if deleted == 1 { DeleteOutcome::Deleted } else { DeleteOutcome::LeaseLost })
                })
                .collect()
        })
    }

    fn change_visibility(&self, queue: &Name, receipt: ReceiptHandle, timeout: Duration) -> Result<()> {
        check_visibility_timeout(timeout)?;
        let now = self.now();
        self.write(&format!("change the visibility of a message in queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let changed = transaction
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?5 WHERE message_id = ?1 AND queue_id = ?2 \
                     AND receive_count = ?3 AND visible_at > ?4",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        to_sql_integer(receipt.message_id),
                        stored.queue_id,
                        receipt.receive_count,
                        now.as_millis(),
                        now.saturating_add(timeout).as_millis()
                    ])
                })
                .with_context(|| format!("change the visibility of message {}", receipt.message_id))?;
            if changed == 0 {
                return Err(StateError::LeaseLost { receipt });
            }
            if timeout.is_zero() {
                // Released: visible again at once.
                self.wake_on_commit(queue.as_str());
            }
            Ok(())
        })
    }

    fn queue_stats(&self, queue: &Name) -> Result<QueueStats> {
        let now = self.now();
        self.read(&format!("count the messages of queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let (visible, in_flight, delayed, oldest_sent_at) = transaction
                .prepare_cached(
                    "SELECT \
                       COALESCE(SUM(visible_at <= ?2), 0), \
                       COALESCE(SUM(visible_at > ?2 AND receive_count > 0), 0), \
                       COALESCE(SUM(visible_at > ?2 AND receive_count = 0), 0), \
                       MIN(sent_at) \
                     FROM messages WHERE queue_id = ?1",
                )
                .and_then(|mut statement| {
                    statement.query_row(params![stored.queue_id, now.as_millis()], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                        ))
                    })
                })
                .with_context(|| format!("count the messages of queue `{queue}`"))?;
            Ok(QueueStats {
                visible: from_sql_integer(visible),
                in_flight: from_sql_integer(in_flight),
                delayed: from_sql_integer(delayed),
                oldest_age: oldest_sent_at.map(|sent_at| now.duration_since(Timestamp(sent_at))),
            })
        })
    }

    fn peek_messages(&self, queue: &Name, limit: usize) -> Result<Vec<StoredMessage>> {
        self.read(&format!("peek at queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let sql = format!(
                "SELECT {}, dead_letter_source, dead_letter_reason, dead_letter_at FROM messages \
                 WHERE queue_id = ?1 ORDER BY message_id LIMIT ?2",
                MessageRow::COLUMNS
            );
            let mut statement = transaction.prepare_cached(&sql).context("prepare to peek")?;
            let rows = statement
                .query_map(params![stored.queue_id, limit_to_sql(limit)], |row| {
                    Ok((
                        MessageRow::from_row(row)?,
                        row.get::<_, Option<String>>(6)?,
                        row.get::<_, Option<String>>(7)?,
                        row.get::<_, Option<i64>>(8)?,
                    ))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .with_context(|| format!("peek at queue `{queue}`"))?;
            rows.into_iter()
                .map(|(mut message, source, reason, at)| {
                    let dead_letter = match (source, reason, at) {
                        (Some(source), Some(reason), Some(at)) => {
                            Some(DeadLetterInfo { source_queue: name_from_column(source)?, reason, at: Timestamp(at) })
                        }
                        _ => None,
                    };
                    let (body, attributes) = message.open_payload(&self.sealer)?;
                    Ok(StoredMessage {
                        message_id: from_sql_integer(message.message_id),
                        receive_count: message.receive_count(),
                        body,
                        attributes,
                        sent_at: Timestamp(message.sent_at),
                        visible_at: Timestamp(message.visible_at),
                        dead_letter,
                    })
                })
                .collect()
        })
    }

    fn dead_letters_from(&self, dead_letter: &Name, source: &Name) -> Result<u64> {
        self.read(&format!("count the dead letters of `{source}` in `{dead_letter}`"), |transaction| {
            let dead_letter_queue = require_queue(transaction, dead_letter)?;
            let count: i64 = transaction
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE queue_id = ?1 AND dead_letter_source = ?2",
                    params![dead_letter_queue.queue_id, source.as_str()],
                    |row| row.get(0),
                )
                .context("count dead letters by source")?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    }

    fn purge_queue(&self, queue: &Name) -> Result<u64> {
        self.write(&format!("purge queue `{queue}`"), |transaction| {
            let stored = require_queue(transaction, queue)?;
            let deleted = transaction
                .prepare_cached("DELETE FROM messages WHERE queue_id = ?1")
                .and_then(|mut statement| statement.execute([stored.queue_id]))
                .with_context(|| format!("delete the messages of queue `{queue}`"))?;
            Ok(deleted as u64)
        })
    }

    /// In this process only: every handle of this file in it tells its
    /// watchers after its writes commit ([`local_watchers`]); a send by
    /// another process (`mayfly send`) is found by the receivers' polls.
    fn watch_messages(&self, on_messages: OnMessages) -> Result<Option<MessageWatch>> {
        Ok(Some(self.watchers.watch(on_messages)))
    }

    fn redrive_dead_letters(&self, dead_letter: &Name, to: Option<&Name>) -> Result<u64> {
        let now = self.now();
        self.write(&format!("redrive dead-letter queue `{dead_letter}`"), |transaction| {
            let dead_letter_queue = require_queue(transaction, dead_letter)?;
            let explicit_target = to.map(|name| require_queue(transaction, name)).transpose()?;
            if explicit_target.as_ref().is_some_and(|target| target.queue_id == dead_letter_queue.queue_id) {
                return Err(StateError::Conflict(format!(
                    "cannot redrive dead-letter queue `{dead_letter}` into itself; name another queue"
                )));
            }
            // Each group of dead letters and the queue it moves to (its id and name).
            let mut moves: Vec<(Option<String>, i64, String)> = Vec::new();
            match explicit_target {
                Some(target) => moves.push((None, target.queue_id, target.record.name.to_string())),
                None => {
                    let sources: Vec<String> = transaction
                        .prepare_cached(
                            "SELECT DISTINCT dead_letter_source FROM messages \
                             WHERE queue_id = ?1 AND dead_letter_source IS NOT NULL",
                        )
                        .and_then(|mut statement| {
                            statement
                                .query_map([dead_letter_queue.queue_id], |row| row.get(0))
                                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                        })
                        .context("list the source queues of dead letters")?;
                    for source in sources {
                        let source_queue_id = require_queue(transaction, &name_from_column(source.clone())?)?.queue_id;
                        moves.push((Some(source.clone()), source_queue_id, source));
                    }
                }
            }
            let mut moved: u64 = 0;
            for (source, target_queue_id, target) in moves {
                // `?2 IS NULL` selects every message of the dead-letter queue.
                // A redriven message gets a new id, so no receipt handed out
                // before it was dead-lettered can ever match it again (its
                // receive count starts over).
                // In an encrypted store the payloads are bound to the message
                // id, so they are resealed under the new one.
                let dead_letters: Vec<DeadLetterRow> = transaction
                    .prepare_cached(
                        "SELECT message_id, sent_at, body, attributes FROM messages \
                         WHERE queue_id = ?1 AND (?2 IS NULL OR dead_letter_source = ?2) ORDER BY message_id",
                    )
                    .and_then(|mut statement| {
                        statement
                            .query_map(params![dead_letter_queue.queue_id, source], |row| {
                                Ok((row.get(0)?, row.get(1)?, row.get(2)?, bytes_at(row, 3)?))
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .context("read dead letters")?;
                let first_id = next_message_id(transaction)?;
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO messages (message_id, queue_id, visible_at, receive_count, sent_at, body, \
                         attributes) VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
                    )
                    .context("prepare to copy dead letters back")?;
                for (next_id, (old_id, sent_at, body, attributes)) in (first_id..).zip(dead_letters) {
                    let body = self.sealer.reseal(Record::MessageBody(old_id), Record::MessageBody(next_id), body)?;
                    let attributes = attributes
                        .map(|stored| {
                            self.sealer.reseal(
                                Record::MessageAttributes(old_id),
                                Record::MessageAttributes(next_id),
                                stored,
                            )
                        })
                        .transpose()?;
                    // Unencrypted attributes stay JSON text.
                    let attributes: Option<rusqlite::types::Value> = attributes.map(|bytes| {
                        if self.sealer.is_on() {
                            rusqlite::types::Value::Blob(bytes)
                        } else {
                            rusqlite::types::Value::Text(String::from_utf8_lossy(&bytes).into_owned())
                        }
                    });
                    insert
                        .execute(params![next_id, target_queue_id, now.as_millis(), sent_at, body, attributes])
                        .context("copy a dead letter back")?;
                    moved += 1;
                    self.wake_on_commit(&target);
                }
                transaction
                    .prepare_cached(
                        "DELETE FROM messages WHERE queue_id = ?1 AND (?2 IS NULL OR dead_letter_source = ?2)",
                    )
                    .and_then(|mut statement| statement.execute(params![dead_letter_queue.queue_id, source]))
                    .context("remove redriven dead letters")?;
            }
            Ok(moved)
        })
    }
}

impl InvocationLedger for SqliteStore {
    fn record_invocation(&self, record: &InvocationRecord, logs: &[u8]) -> Result<u64> {
        self.write(&format!("record invocation {}", record.request_id), |transaction| {
            ledger::record_invocation(transaction, record, logs, &self.sealer)
        })
    }

    fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<StoredInvocation>> {
        self.read("list invocations", |transaction| ledger::invocations(transaction, filter, &self.sealer))
    }

    fn invocation_logs(&self, request_id: &str) -> Result<Vec<u8>> {
        self.read(&format!("read the logs of request {request_id}"), |transaction| {
            ledger::invocation_logs(transaction, request_id, &self.sealer)
        })
    }

    fn function_stats(&self, function: &Name) -> Result<FunctionStats> {
        self.read(&format!("summarize the invocations of `{function}`"), |transaction| {
            ledger::function_stats(transaction, function)
        })
    }
}

impl RunStore for SqliteStore {
    fn create_run(&self, run: NewRun) -> Result<RunRecord> {
        let now = self.now();
        self.write(&format!("create run `{}`", run.id), |transaction| {
            self.open_run(runs::create_run(transaction, run, now)?)
        })
    }

    fn run(&self, id: &str) -> Result<RunRecord> {
        self.read(&format!("look up run `{id}`"), |transaction| self.open_run(runs::run(transaction, id)?))
    }

    fn runs(&self, job: Option<&Name>, limit: usize) -> Result<Vec<RunRecord>> {
        self.read("list runs", |transaction| self.open_runs(runs::runs(transaction, job, limit)?))
    }

    fn claim_run(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let now = self.now();
        self.write(&format!("claim run `{id}`"), |transaction| runs::claim_run(transaction, id, owner, ttl, now))
    }

    fn renew_run_lease(&self, id: &str, owner: &str, ttl: Duration) -> Result<()> {
        let now = self.now();
        self.write(&format!("renew the lease of run `{id}`"), |transaction| {
            runs::renew_run_lease(transaction, id, owner, ttl, now)
        })
    }

    fn runs_needing_coordinator(&self, grace: Duration) -> Result<Vec<RunRecord>> {
        let now = self.now();
        self.read("find runs without a live coordinator", |transaction| {
            self.open_runs(runs::runs_needing_coordinator(transaction, grace, now)?)
        })
    }

    fn finish_run(
        &self,
        id: &str,
        owner: &str,
        status: RunStatus,
        error: Option<&str>,
        report: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        self.write(&format!("finish run `{id}`"), |transaction| {
            let error = self.sealer.seal_optional_text(Record::RunError(id), error);
            let report = self.sealer.seal_optional_text(Record::RunReport(id), report);
            runs::finish_run(transaction, id, owner, status, error.as_deref(), report.as_deref(), now)
        })
    }

    fn set_run_status(&self, id: &str, owner: &str, status: RunStatus) -> Result<()> {
        let now = self.now();
        self.write(&format!("set the status of run `{id}`"), |transaction| {
            runs::set_run_status(transaction, id, owner, status, now)
        })
    }

    fn add_run_items(&self, run: &str, items: &[NewRunItem]) -> Result<u64> {
        let now = self.now();
        let sealed: Vec<NewRunItem>;
        let items = if self.sealer.is_on() {
            sealed = items
                .iter()
                .map(|item| NewRunItem {
                    payload: self.sealer.seal(Record::RunItem { run, item: &item.item }, &item.payload).into_owned(),
                    item: item.item.clone(),
                })
                .collect();
            &sealed
        } else {
            items
        };
        self.write(&format!("add items to run `{run}`"), |transaction| {
            runs::add_run_items(transaction, run, items, now, &self.sealer)
        })
    }

    fn move_queue_messages_into_run(&self, run: &str, queue: &Name, max: usize) -> Result<u64> {
        let now = self.now();
        self.write(&format!("move messages of queue `{queue}` into run `{run}`"), |transaction| {
            runs::move_queue_messages_into_run(transaction, run, queue, max, now, &self.sealer)
        })
    }

    fn return_unfinished_items_to_queues(&self, run: &str) -> Result<u64> {
        let now = self.now();
        self.write(&format!("return the unfinished items of run `{run}` to their queues"), |transaction| {
            let (returned, queues) = runs::return_unfinished_items_to_queues(transaction, run, now, &self.sealer)?;
            for queue in &queues {
                self.wake_on_commit(queue);
            }
            Ok(returned)
        })
    }

    fn lease_run_items(&self, run: &str, worker: &str, max: usize) -> Result<Vec<RunItem>> {
        let now = self.now();
        self.write(&format!("lease items of run `{run}`"), |transaction| {
            // Opened before the commit: a damaged item fails the lease (rolled back).
            self.open_items(runs::lease_run_items(transaction, run, worker, max, now, &self.sealer)?)
        })
    }

    fn run_item_message_attributes(
        &self,
        run: &str,
        items: &[String],
    ) -> Result<BTreeMap<String, Vec<(String, String)>>> {
        let stored = self.read(&format!("read the attributes of messages of run `{run}`"), |transaction| {
            runs::run_item_message_attributes(transaction, run, items, &self.sealer)
        })?;
        stored
            .into_iter()
            .map(|(item, message_id, attributes)| {
                let opened = self.sealer.open(Record::MessageAttributes(message_id), attributes)?;
                Ok((item, attributes_from_json_bytes(&opened)?))
            })
            .collect()
    }

    fn complete_run_item(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
    ) -> Result<bool> {
        let now = self.now();
        self.write(&format!("complete item `{item}` of run `{run}`"), |transaction| {
            runs::complete_run_item(transaction, run, item, worker, attempt, completion, now, &self.sealer)
        })
    }

    fn complete_and_lease_run_items(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
        lease_max: usize,
    ) -> Result<(bool, Vec<RunItem>)> {
        let now = self.now();
        self.write(&format!("complete item `{item}` of run `{run}` and lease the next"), |transaction| {
            let accepted =
                runs::complete_run_item(transaction, run, item, worker, attempt, completion, now, &self.sealer)?;
            let items = if lease_max > 0 {
                self.open_items(runs::lease_run_items(transaction, run, worker, lease_max, now, &self.sealer)?)?
            } else {
                Vec::new()
            };
            Ok((accepted, items))
        })
    }

    fn complete_run_items_together(
        &self,
        run: &str,
        completions: Vec<GroupedCompletion>,
    ) -> Result<Vec<Result<GroupedCompletionOutcome>>> {
        let now = self.now();
        let count = completions.len();
        self.write(&format!("complete {count} item(s) of run `{run}` together"), |transaction| {
            let mut outcomes = Vec::with_capacity(count);
            for grouped in completions {
                // Each completion in a savepoint of its own: one refused alone is undone alone.
                transaction.execute_batch("SAVEPOINT grouped_completion").context("start a grouped completion")?;
                let item = grouped.item.clone();
                let outcome = runs::complete_run_item(
                    transaction,
                    run,
                    &grouped.item,
                    &grouped.worker,
                    grouped.attempt,
                    grouped.completion,
                    now,
                    &self.sealer,
                )
                .and_then(|accepted| {
                    let leased = if grouped.lease_next > 0 {
                        self.open_items(runs::lease_run_items(
                            transaction,
                            run,
                            &grouped.worker,
                            grouped.lease_next,
                            now,
                            &self.sealer,
                        )?)?
                    } else {
                        Vec::new()
                    };
                    Ok(GroupedCompletionOutcome { accepted, leased })
                });
                match outcome {
                    Ok(outcome) => {
                        transaction
                            .execute_batch("RELEASE grouped_completion")
                            .with_context(|| format!("record the completion of item `{item}` of run `{run}`"))?;
                        outcomes.push(Ok(outcome));
                    }
                    Err(error @ (StateError::NotFound { .. } | StateError::Damaged { .. })) => {
                        transaction
                            .execute_batch("ROLLBACK TO grouped_completion; RELEASE grouped_completion")
                            .with_context(|| format!("undo the refused completion of item `{item}` of run `{run}`"))?;
                        outcomes.push(Err(error));
                    }
                    // Anything else (a full disk, an I/O error) fails the whole group: nothing is recorded.
                    Err(error) => return Err(error),
                }
            }
            Ok(outcomes)
        })
    }

    fn release_worker_items(&self, run: &str, worker: &str) -> Result<u64> {
        let now = self.now();
        self.write(&format!("release the items of worker `{worker}` of run `{run}`"), |transaction| {
            runs::release_leased_items(transaction, run, Some(worker), now)
        })
    }

    fn release_all_leased_items(&self, run: &str) -> Result<u64> {
        let now = self.now();
        self.write(&format!("release the leased items of run `{run}`"), |transaction| {
            runs::release_leased_items(transaction, run, None, now)
        })
    }

    fn run_item_counts(&self, run: &str) -> Result<RunItemCounts> {
        self.read(&format!("count the items of run `{run}`"), |transaction| runs::run_item_counts(transaction, run))
    }

    fn completed_item_counts_by_job(&self) -> Result<BTreeMap<Name, CompletedItemCounts>> {
        self.read("count the completed items of every job", runs::completed_item_counts_by_job)
    }

    fn run_items(
        &self,
        run: &str,
        status: Option<ItemStatus>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunItem>> {
        self.read(&format!("list the items of run `{run}`"), |transaction| {
            self.open_items(runs::run_items(transaction, run, status, after_item, limit, &self.sealer)?)
        })
    }

    fn results(
        &self,
        job: &Name,
        run: Option<&str>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResultRecord>> {
        self.read(&format!("list the results of job `{job}`"), |transaction| {
            runs::results(transaction, job, run, after_item, limit, &self.sealer)?
                .into_iter()
                .map(|result| self.open_result(result))
                .collect()
        })
    }

    fn result(&self, job: &Name, item: &str) -> Result<ResultRecord> {
        self.read(&format!("look up the result of item `{item}` of job `{job}`"), |transaction| {
            self.open_result(runs::result(transaction, job, item, &self.sealer)?)
        })
    }

    fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()> {
        self.write(&format!("record worker `{}` of run `{}`", worker.worker, worker.run_id), |transaction| {
            runs::upsert_worker(transaction, worker)
        })
    }

    fn run_workers(&self, run: &str) -> Result<Vec<WorkerRecord>> {
        self.read(&format!("list the workers of run `{run}`"), |transaction| runs::run_workers(transaction, run))
    }

    fn cancel_run(&self, id: &str, reason: &str) -> Result<RunRecord> {
        let now = self.now();
        self.write(&format!("cancel run `{id}`"), |transaction| {
            let reason = self.sealer.seal_text(Record::RunError(id), reason);
            self.open_run(runs::cancel_run(transaction, id, &reason, now)?)
        })
    }

    fn run_item_attempts(&self, run: &str, limit: usize) -> Result<Vec<ItemAttempt>> {
        self.read(&format!("list the attempts of run `{run}`"), |transaction| {
            runs::run_item_attempts(transaction, run, limit, &self.sealer)
        })
    }

    fn run_attempt_counts_by_worker(
        &self,
        run: &str,
    ) -> Result<std::collections::BTreeMap<String, mayfly_state::WorkerAttemptCounts>> {
        self.read(&format!("count the attempts of run `{run}` by worker"), |transaction| {
            runs::run_attempt_counts_by_worker(transaction, run)
        })
    }
}

impl AuditStore for SqliteStore {
    fn record_audit(&self, audit: &NewAudit) -> Result<AuditRecord> {
        let now = self.now();
        self.write(&format!("record an audit ({})", audit.trigger), |transaction| {
            audits::record_audit(transaction, audit, now)
        })
    }

    fn latest_audit(&self) -> Result<Option<AuditRecord>> {
        self.read("read the latest audit", audits::latest_audit)
    }
}

impl ExperimentStore for SqliteStore {
    fn record_experiment(&self, experiment: &mayfly_state::Experiment) -> Result<mayfly_state::ExperimentRecord> {
        let now = self.now();
        self.write(&format!("record experiment `{}`", experiment.name), |transaction| {
            experiments::record_experiment(transaction, &self.sealer, experiment, now)
        })
    }

    fn experiments(&self, limit: usize) -> Result<Vec<mayfly_state::ExperimentRecord>> {
        self.read("list the experiments", |transaction| experiments::experiments(transaction, &self.sealer, limit))
    }

    fn experiment(&self, id: u64) -> Result<mayfly_state::ExperimentRecord> {
        self.read(&format!("read experiment {id}"), |transaction| {
            experiments::experiment(transaction, &self.sealer, id)
        })
    }
}

impl LeaseStore for SqliteStore {
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration, now: Timestamp) -> Result<Option<Lease>> {
        self.write(&format!("acquire lease `{name}` for `{holder}`"), |transaction| {
            leases::acquire_lease(transaction, name, holder, ttl, now)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.write(&format!("release lease `{name}` of `{holder}`"), |transaction| {
            leases::release_lease(transaction, name, holder)
        })
    }

    fn lease(&self, name: &str) -> Result<Option<Lease>> {
        self.read(&format!("read lease `{name}`"), |transaction| leases::lease(transaction, name))
    }
}

impl FencedWrites for SqliteStore {
    fn commit_fenced(&self, fence: Option<&Fence>, writes: Vec<FencedWrite>) -> Result<Vec<FencedOutcome>> {
        let now = self.now();
        let what = match fence {
            Some(fence) => format!("write under lease `{}` term {}", fence.lease, fence.term),
            None => "write".to_owned(),
        };
        // `BEGIN IMMEDIATE` serialises this with every other writer, a takeover of the lease included.
        self.write(&what, |transaction| {
            if let Some(fence) = fence {
                check_fence(leases::lease(transaction, &fence.lease)?.as_ref(), fence)?;
            }
            let mut outcomes = Vec::with_capacity(writes.len());
            for write in writes {
                outcomes.push(match write {
                    FencedWrite::SendMessages { queue, messages } => {
                        let ids = send_messages(transaction, &self.sealer, now, &queue, &messages)?;
                        if !ids.is_empty() {
                            self.wake_on_commit(queue.as_str());
                        }
                        FencedOutcome::Sent(ids)
                    }
                    FencedWrite::SetConsumerCursor { consumer, sequence } => {
                        set_consumer_cursor(transaction, &consumer, sequence)?;
                        FencedOutcome::CursorSet
                    }
                    FencedWrite::CreateRun(run) => {
                        FencedOutcome::RunCreated(Box::new(self.open_run(runs::create_run(transaction, run, now)?)?))
                    }
                });
            }
            Ok(outcomes)
        })
    }
}

impl AccessStore for SqliteStore {
    fn create_api_token(&self, token: NewApiToken) -> Result<ApiTokenRecord> {
        let now = self.now();
        let aws_secret = self.sealer.seal_optional_text(Record::TokenAwsSecret(&token.id), token.aws_secret.as_deref());
        let token = NewApiToken { aws_secret, ..token };
        self.write(&format!("create token `{}`", token.name), |transaction| {
            access::create_api_token(transaction, token, now)
        })
    }

    fn api_token(&self, id: &str) -> Result<ApiTokenRecord> {
        self.read(&format!("look up token `{id}`"), |transaction| access::api_token(transaction, id))
    }

    fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
        self.read("list tokens", access::api_tokens)
    }

    fn api_token_aws_secret(&self, id: &str) -> Result<Option<String>> {
        let stored = self.read(&format!("look up the AWS secret of token `{id}`"), |transaction| {
            access::api_token_aws_secret(transaction, id)
        })?;
        self.sealer.open_optional_text(Record::TokenAwsSecret(id), stored)
    }

    fn derived_key(&self, purpose: &str) -> Result<[u8; 32]> {
        self.sealer.derived_key(purpose).ok_or_else(|| {
            StateError::Backend(format!(
                "the state store at {} seals nothing, so it holds no secret to derive the `{purpose}` key from; open it with its keyring",
                self.path.display()
            ))
        })
    }

    fn revoke_api_token(&self, id: &str) -> Result<ApiTokenRecord> {
        let now = self.now();
        self.write(&format!("revoke token `{id}`"), |transaction| access::revoke_api_token(transaction, id, now))
    }

    fn append_access_records(&self, records: &[AccessRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write("append to the access log", |transaction| access::append_access_records(transaction, records))
    }

    fn access_records(&self, before_id: Option<u64>, limit: usize) -> Result<Vec<StoredAccessRecord>> {
        self.read("read the access log", |transaction| access::access_records(transaction, before_id, limit))
    }
}

impl RetentionStore for SqliteStore {
    fn expire_messages(&self, queue: &Name, sent_before: Timestamp, limit: usize) -> Result<u64> {
        self.write(&format!("expire old messages of queue `{queue}`"), |transaction| {
            let queue = require_queue(transaction, queue)?;
            retention::expire_messages(transaction, queue.queue_id, sent_before, limit)
        })
    }

    fn prune_invocations(&self, started_before: Timestamp, limit: usize) -> Result<u64> {
        self.write("prune old invocations", |transaction| {
            retention::prune_invocations(transaction, started_before, limit)
        })
    }

    fn prune_finished_runs(&self, finished_before: Timestamp, limit: usize) -> Result<u64> {
        self.write("prune old finished runs", |transaction| {
            retention::prune_finished_runs(transaction, finished_before, limit)
        })
    }

    fn prune_object_events(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.write("prune old events", |transaction| retention::prune_object_events(transaction, before, limit))
    }

    fn prune_access_records(&self, before: Timestamp, limit: usize) -> Result<u64> {
        self.write("prune old access records", |transaction| {
            retention::prune_access_records(transaction, before, limit)
        })
    }
}

/// Up to `limit` visible messages of a queue after the keyset position `after`,
/// in the order they became visible.
fn visible_messages_after(
    transaction: &Transaction<'_>,
    queue_id: i64,
    now: Timestamp,
    after: (i64, i64),
    limit: usize,
) -> Result<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {} FROM messages \
         WHERE queue_id = ?1 AND visible_at <= ?2 AND (visible_at, message_id) > (?3, ?4) \
         ORDER BY visible_at, message_id LIMIT ?5",
        MessageRow::COLUMNS
    );
    transaction
        .prepare_cached(&sql)
        .and_then(|mut statement| {
            statement
                .query_map(
                    params![queue_id, now.as_millis(), after.0, after.1, limit_to_sql(limit)],
                    MessageRow::from_row,
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        })
        .context("find visible messages")
}

fn lease_message(
    transaction: &Transaction<'_>,
    message_id: i64,
    receive_count: u32,
    lease_until: Timestamp,
) -> Result<()> {
    transaction
        .prepare_cached("UPDATE messages SET visible_at = ?2, receive_count = ?3 WHERE message_id = ?1")
        .and_then(|mut statement| statement.execute(params![message_id, lease_until.as_millis(), receive_count]))
        .with_context(|| format!("lease message {message_id}"))?;
    Ok(())
}

/// Move a message to its dead-letter queue, visible there at once, keeping
/// its id and receive count (so old receipts stay stale) and recording why.
/// Whether `error` says a stored payload failed its integrity check (changed,
/// cut short, not an envelope) — not a keyring that lacks the key, which
/// damages nothing and must not move messages.
fn failed_integrity(error: &StateError) -> bool {
    match error {
        StateError::Damaged { source, .. } => !matches!(
            source.downcast_ref::<mayfly_crypto::CryptoError>(),
            Some(mayfly_crypto::CryptoError::UnknownKey { .. })
        ),
        _ => false,
    }
}

/// Keep a damaged message of a queue without a dead-letter queue where it is,
/// never visible again, with the reason a dead letter would carry.
fn set_aside_in_place(
    transaction: &Transaction<'_>,
    message_id: i64,
    queue: &Name,
    reason: &str,
    now: Timestamp,
) -> Result<()> {
    transaction
        .prepare_cached(
            "UPDATE messages SET visible_at = ?2, dead_letter_source = ?3, dead_letter_reason = ?4, \
             dead_letter_at = ?5 WHERE message_id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![message_id, i64::MAX, queue.as_str(), reason, now.as_millis()])
        })
        .with_context(|| format!("set damaged message {message_id} aside"))?;
    Ok(())
}

fn move_to_dead_letter_queue(
    transaction: &Transaction<'_>,
    message_id: i64,
    dead_letter_queue_id: i64,
    source_queue: &Name,
    reason: &str,
    now: Timestamp,
) -> Result<()> {
    transaction
        .prepare_cached(
            "UPDATE messages SET queue_id = ?2, visible_at = ?3, dead_letter_source = ?4, dead_letter_reason = ?5, \
             dead_letter_at = ?3 WHERE message_id = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![message_id, dead_letter_queue_id, now.as_millis(), source_queue.as_str(), reason])
        })
        .with_context(|| format!("move message {message_id} to its dead-letter queue"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot queries must walk `messages_by_queue_and_visibility`, never scan
    /// the table or sort: receive cost must not grow with the backlog.
    #[test]
    fn receive_and_stats_queries_use_the_visibility_index() {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&directory.path().join("state.db"), Arc::new(mayfly_core::SystemClock)).unwrap();
        let connection = store.lock_connection();
        let receive_sql = format!(
            "SELECT {} FROM messages WHERE queue_id = ?1 AND visible_at <= ?2 AND (visible_at, message_id) > (?3, ?4) \
             ORDER BY visible_at, message_id LIMIT ?5",
            MessageRow::COLUMNS
        );
        let stats_sql = "SELECT SUM(visible_at <= ?2), MIN(sent_at) FROM messages WHERE queue_id = ?1";
        for sql in [receive_sql.as_str(), stats_sql] {
            let plan = query_plan(&connection, sql);
            assert!(plan.contains("USING INDEX messages_by_queue_and_visibility"), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
    }

    /// SQLite's plan for `sql` (every parameter bound to 0), one step per line.
    pub(crate) fn query_plan(connection: &Connection, sql: &str) -> String {
        let mut statement = connection.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let parameters = rusqlite::params_from_iter(std::iter::repeat_n(0, statement.parameter_count()));
        let plan: Vec<String> = statement
            .query_map(parameters, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        plan.join("\n")
    }

    /// Percentiles and logs per request read one index range, never the whole
    /// ledger, and never sort: `function_stats` must not grow with other functions' rows.
    #[test]
    fn ledger_queries_use_their_indexes() {
        let directory = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&directory.path().join("state.db"), Arc::new(mayfly_core::SystemClock)).unwrap();
        let connection = store.lock_connection();
        for (sql, index) in [
            (
                "SELECT duration_us FROM invocations WHERE function = ?1 ORDER BY duration_us LIMIT 1 OFFSET ?2",
                "invocations_by_function_and_duration",
            ),
            (
                "SELECT invocation_logs.logs FROM invocations LEFT JOIN invocation_logs \
                 ON invocation_logs.invocation_id = invocations.id WHERE invocations.request_id = ?1 \
                 ORDER BY invocations.id",
                "invocations_by_request_id",
            ),
        ] {
            let plan = query_plan(&connection, sql);
            assert!(plan.contains(index), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
    }

    /// A file written before the ledger existed (schema 1) opens, keeps its
    /// data and gains the ledger.
    #[test]
    fn a_schema_1_file_is_migrated_to_the_ledger_keeping_its_data() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("state.db");
        {
            let connection = Connection::open(&path).unwrap();
            connection.execute_batch(schema::MIGRATIONS[0]).unwrap();
            connection.execute_batch("PRAGMA user_version = 1").unwrap();
            connection
                .execute(
                    "INSERT INTO deployments (content_hash, applied_at, source, forced) VALUES ('h', 5, 'src', 0)",
                    [],
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path, Arc::new(mayfly_core::SystemClock)).unwrap();
        assert_eq!(store.deployments().unwrap().len(), 1);
        let record = InvocationRecord {
            request_id: "req-1".to_owned(),
            function: Name::new("rename").unwrap(),
            deployment_version: Some(1),
            trigger: "invoke".to_owned(),
            attempt: 1,
            started_at: Timestamp(10),
            duration: Duration::from_micros(250),
            init_duration: None,
            outcome: InvocationRecord::SUCCESS.to_owned(),
            error_type: None,
            error_message: None,
            peak_memory: None,
            bytes_in: 0,
            bytes_out: 0,
            estimated_cost: 0.0,
        };
        assert_eq!(store.record_invocation(&record, b"hello").unwrap(), 1);
        assert_eq!(store.invocation_logs("req-1").unwrap(), b"hello");
        let version: i64 = store.lock_connection().query_row("PRAGMA user_version", [], |row| row.get(0)).unwrap();
        assert_eq!(version, current_schema_version());
        assert_eq!(current_schema_version(), 15);
    }
}
