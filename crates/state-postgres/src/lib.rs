//! The shared state store: PostgreSQL (15 or later), for projects whose
//! control plane runs on several hosts. Built one concern at a time, each
//! passing its module of the conformance suite against a real server:
//! [`DeploymentStore`], [`BucketRegistry`], [`EventLog`],
//! [`mayfly_state::QueueStore`], [`mayfly_state::InvocationLedger`],
//! [`mayfly_state::RunStore`], [`mayfly_state::AuditStore`],
//! [`mayfly_state::AccessStore`], [`mayfly_state::RetentionStore`],
//! [`mayfly_state::LeaseStore`] and [`mayfly_state::ExperimentStore`]: every
//! concern, so it is a [`mayfly_state::StateStore`]. The CLI does not offer
//! it yet: choosing a backend by URL is the host crate's (issue 11 step 4).
//!
//! The client is the synchronous `postgres` crate (the state traits are
//! synchronous), pooled by `r2d2`. Every method runs in one transaction and
//! commits before it returns. Times come from the store's clock, never from
//! the server's, so every host and every test agrees with the embedded store.
//! Payloads are sealed with [`mayfly_state::sealing`] exactly as the
//! embedded store seals them, so nothing a user sent reaches the server in
//! plaintext from a store opened with [`PostgresStore::open_encrypted`].

mod access;
mod audits;
mod copy;
mod errors;
mod experiments;
mod key_identity;
mod leases;
mod ledger;
mod notify;
mod pool;
mod queues;
mod retention;
mod runs;
mod schema;
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;

use mayfly_core::event::DeletionReason;
use mayfly_core::{Clock, Name, NewObjectEvent, ObjectEvent, ObjectEventKind, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::sealing::{ItemIds, Record, Sealer};
use mayfly_state::{
    BucketRecord, BucketRegistry, Deployment, DeploymentStore, EventLog, NewDeployment, Result, StateError,
};
use r2d2_postgres::r2d2;

use crate::errors::PgResultExt;
pub use crate::schema::current_schema_version;
pub use crate::tls::{SslMode, TlsSettings};
/// A parsed connection configuration (`postgres::Config`).
pub use postgres::Config as ConnectConfig;
/// A host of a connection configuration (TCP or a Unix socket directory).
pub use postgres::config::Host as ConnectHost;

/// The `payloads` setting of a store whose payloads, error text, reports and
/// item ids are all sealed (as the embedded store's `envelope-v2`).
const SEALED: &str = "envelope-v2";
/// The `payloads` setting of a store that seals nothing.
const PLAINTEXT: &str = "plaintext";
/// The setting holding the item lookup key, sealed (hex inside the envelope).
const ITEM_KEY_SETTING: &str = "item_key";

/// Connections a store keeps open at most.
const POOL_SIZE: u32 = 8;

/// A state store in a PostgreSQL database.
pub struct PostgresStore {
    /// Dropped off any async runtime (see [`off_runtime`]), in `Drop`.
    pool: std::mem::ManuallyDrop<pool::Pool>,
    clock: Arc<dyn Clock>,
    sealer: Sealer,
    /// The URL without its password, for errors.
    location: String,
    /// Where to connect the wake-up listener (`notify`), outside the pool.
    target: ConnectTarget,
    watchers: Arc<notify::Watchers>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("location", &self.location).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Open the store at `url` (`postgres://user@host:port/database`, or
    /// key=value form), creating or migrating its schema, sealing nothing.
    /// Refuses a store whose payloads are sealed.
    pub fn open(url: &str, clock: Arc<dyn Clock>) -> Result<PostgresStore> {
        PostgresStore::open_with(url, clock, Sealer::new(None))
    }

    /// Open the store at `url`, sealing every payload with `keyring`.
    /// Refuses a store that holds plaintext payloads.
    pub fn open_encrypted(url: &str, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<PostgresStore> {
        PostgresStore::open_with(url, clock, Sealer::new(Some(keyring)))
    }

    /// Open the store a parsed connection configuration names (its
    /// password set from wherever the caller found it), sealing every
    /// payload with `keyring`.
    pub fn open_encrypted_with_config(
        target: ConnectTarget,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<PostgresStore> {
        PostgresStore::open_config(target, clock, Sealer::new(Some(keyring)))
    }

    /// Whether the database `target` names holds a Mayfly state store
    /// (its schema was created), without creating or changing anything.
    pub fn holds_store(target: &ConnectTarget) -> Result<bool> {
        off_runtime(|| PostgresStore::holds_store_here(target))
    }

    fn holds_store_here(target: &ConnectTarget) -> Result<bool> {
        let location = describe(&target.config);
        let mut client = target.connect()?;
        let row = client
            .query_one("SELECT to_regclass('mayfly_schema') IS NOT NULL", &[])
            .map_err(|error| StateError::Backend(format!("state store at {location}: {}", full(&error))))?;
        Ok(row.get(0))
    }

    /// Open the store with a new `keyring` that replaces a lost one: the
    /// recorded keys are forgotten and the new keyring's recorded instead,
    /// and a new item lookup key is made. Payloads sealed by the lost keys
    /// stay unreadable (`Damaged`). Returns the store and the ids of the keys
    /// forgotten. Only for an explicit request from the person who lost the
    /// keyring (`mayfly keys init --replace-lost-keyring`).
    pub fn open_encrypted_replacing_lost_keyring(
        target: ConnectTarget,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<(PostgresStore, Vec<String>)> {
        let forgotten = Arc::new(std::sync::Mutex::new(Vec::new()));
        let adoption = KeyringAdoption::ReplaceLost(forgotten.clone());
        let store =
            off_runtime(move || PostgresStore::open_config_here(target, clock, Sealer::new(Some(keyring)), adoption))?;
        let forgotten = std::mem::take(&mut *forgotten.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Ok((store, forgotten))
    }

    fn open_with(url: &str, clock: Arc<dyn Clock>, sealer: Sealer) -> Result<PostgresStore> {
        let target = parse_url(url)?;
        PostgresStore::open_config(target, clock, sealer)
    }

    fn open_config(target: ConnectTarget, clock: Arc<dyn Clock>, sealer: Sealer) -> Result<PostgresStore> {
        off_runtime(move || PostgresStore::open_config_here(target, clock, sealer, KeyringAdoption::CheckRecorded))
    }

    fn open_config_here(
        target: ConnectTarget,
        clock: Arc<dyn Clock>,
        mut sealer: Sealer,
        adoption: KeyringAdoption,
    ) -> Result<PostgresStore> {
        let location = describe(&target.config);
        let mut client = target.connect()?;
        schema::migrate(&mut client, &location).map_err(|error| match error {
            StateError::Backend(message) => {
                StateError::Backend(format!("state store at {location}: cannot migrate the schema: {message}"))
            }
            other => other,
        })?;
        let ids = settle_payloads(&mut client, &sealer, &location, adoption)?;
        sealer.set_item_ids(ids);
        drop(client);
        let mut config = target.config.clone();
        tls::apply(&mut config, &target.tls);
        let manager = pool::Manager::new(config, target.tls.connector()?);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(std::time::Duration::from_secs(30))
            .build_unchecked(manager);
        Ok(PostgresStore {
            pool: std::mem::ManuallyDrop::new(pool),
            clock,
            sealer,
            location,
            target,
            watchers: Arc::default(),
        })
    }

    /// Take up a new keyring (rotated, or with a key retired): it is checked
    /// against the recorded keys and its current key recorded, as on
    /// opening, then every payload sealed from now on uses it. Refused with
    /// `KeyringLacksKeys` (the old keyring stays) if it lacks a recorded
    /// key. No-op for an unsealed store.
    pub fn replace_keyring(&self, keyring: Arc<Keyring>) -> Result<()> {
        if !self.sealer.is_on() {
            return Ok(());
        }
        self.transact("take up a new keyring", |transaction| {
            key_identity::lock_settings(transaction)?;
            key_identity::check_and_record(transaction, &keyring, &self.location)?;
            // Swapped inside the transaction: no payload is sealed with the
            // new current key before it is recorded.
            self.sealer.replace(keyring.clone());
            Ok(())
        })
    }

    /// The ids of the keys recorded as possibly having sealed this store's data.
    pub fn recorded_key_ids(&self) -> Result<Vec<String>> {
        self.transact("read the recorded keys", |transaction| {
            Ok(key_identity::recorded_keys(transaction)?.into_iter().map(|known| known.id).collect())
        })
    }

    /// Where the store is: the URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether this handle seals payloads.
    pub fn payloads_encrypted(&self) -> bool {
        self.sealer.is_on()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Run `body` in one transaction and commit it; an error from `body`
    /// rolls everything back.
    fn transact<T: Send>(
        &self,
        what: &str,
        body: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| self.transact_here(what, body))
    }

    fn transact_here<T>(
        &self,
        what: &str,
        body: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        self.transact_prepared_here(what, |transaction, _| body(transaction))
    }

    /// [`PostgresStore::transact`], `body` also given the statements
    /// prepared on the connection (see `pool.rs`), for the hot paths.
    fn transact_prepared<T: Send>(
        &self,
        what: &str,
        body: impl FnOnce(&mut postgres::Transaction<'_>, &mut pool::PreparedStatements) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| self.transact_prepared_here(what, body))
    }

    fn transact_prepared_here<T>(
        &self,
        what: &str,
        body: impl FnOnce(&mut postgres::Transaction<'_>, &mut pool::PreparedStatements) -> Result<T>,
    ) -> Result<T> {
        self.with_connection(what, |connection| {
            let mut transaction =
                connection.client.transaction().with_context(|| format!("start a transaction to {what}"))?;
            let value = body(&mut transaction, &mut connection.statements)?;
            transaction.commit().with_context(|| format!("commit ({what})"))?;
            Ok(value)
        })
    }

    /// Run `body` on a pooled connection outside any transaction, for one
    /// statement that is a transaction by itself (its own commit, one
    /// round trip fewer each way than [`PostgresStore::transact`]).
    fn autocommit_prepared<T: Send>(
        &self,
        what: &str,
        body: impl FnOnce(&mut postgres::Client, &mut pool::PreparedStatements) -> Result<T> + Send,
    ) -> Result<T> {
        off_runtime(|| {
            self.with_connection(what, |connection| body(&mut connection.client, &mut connection.statements))
        })
    }

    fn with_connection<T>(&self, what: &str, body: impl FnOnce(&mut pool::Connection) -> Result<T>) -> Result<T> {
        let mut connection = self.pool.get().map_err(|error| {
            StateError::Backend(format!(
                "could not {what}: no connection to the PostgreSQL state store at {}: {error}",
                self.location
            ))
        })?;
        let value = body(&mut connection);
        connection.used();
        value
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // SAFETY: the pool is taken once, here, and never used again.
        let pool = unsafe { std::mem::ManuallyDrop::take(&mut self.pool) };
        off_runtime(move || drop(pool));
    }
}

/// Run `body` where the synchronous client may block: the `postgres`
/// client drives each connection on a runtime of its own, and blocking on
/// (or dropping) that runtime from a thread that is driving an async
/// runtime panics. So on a multi-threaded runtime's worker `body` runs in
/// `block_in_place`, on a current-thread runtime on a scoped thread of its
/// own, and anywhere else (blocking threads, plain threads) directly.
fn off_runtime<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Err(_) => body(),
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(body)
        }
        Ok(_) => std::thread::scope(|scope| match scope.spawn(body).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }),
    }
}

/// How an open takes up its keyring: checked against the recorded keys, or
/// (an explicit request, `mayfly keys init --replace-lost-keyring`) in place
/// of a lost one, the ids of the keys forgotten handed back in the cell.
enum KeyringAdoption {
    CheckRecorded,
    ReplaceLost(Arc<std::sync::Mutex<Vec<String>>>),
}

/// Check that the store seals exactly when this handle seals (recording
/// which on first open), check the keyring against the recorded keys (and
/// record its new ones, `key_identity`), and read or make the item lookup
/// key of a sealed store.
fn settle_payloads(
    client: &mut postgres::Client,
    sealer: &Sealer,
    location: &str,
    adoption: KeyringAdoption,
) -> Result<ItemIds> {
    let mut transaction = client.transaction().context("start a transaction to check payload sealing")?;
    key_identity::lock_settings(&mut transaction)?;
    let wanted = if sealer.is_on() { SEALED } else { PLAINTEXT };
    transaction
        .execute(
            "INSERT INTO mayfly_settings (name, value) VALUES ('payloads', $1) ON CONFLICT (name) DO NOTHING",
            &[&wanted],
        )
        .context("record payload sealing")?;
    let found: String = transaction
        .query_one("SELECT value FROM mayfly_settings WHERE name = 'payloads'", &[])
        .context("read payload sealing")?
        .get(0);
    if found != wanted {
        let why = if sealer.is_on() {
            "holds plaintext payloads, and this handle would seal; open it without a keyring"
        } else {
            "holds sealed payloads; open it with the keyring that sealed them"
        };
        return Err(StateError::Backend(format!("state store at {location} {why}; nothing was changed")));
    }
    let ids = if let Some(keyring) = sealer.keyring() {
        match &adoption {
            KeyringAdoption::CheckRecorded => key_identity::check_and_record(&mut transaction, &keyring, location)?,
            KeyringAdoption::ReplaceLost(forgotten) => {
                transaction
                    .execute("DELETE FROM mayfly_settings WHERE name = $1", &[&ITEM_KEY_SETTING])
                    .context("forget the item lookup key the lost keyring sealed")?;
                let lost = key_identity::replace_all(&mut transaction, &keyring)?;
                *forgotten.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = lost;
            }
        }
        let fresh = hex_encode(&ItemIds::generate_key()?);
        transaction
            .execute(
                "INSERT INTO mayfly_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&ITEM_KEY_SETTING, &sealer.seal_text(Record::ItemKey, &fresh)],
            )
            .context("record the item lookup key")?;
        let stored: String = transaction
            .query_one("SELECT value FROM mayfly_settings WHERE name = $1", &[&ITEM_KEY_SETTING])
            .context("read the item lookup key")?
            .get(0);
        // A keyring without the key that sealed the item key is not this
        // project's (another host's, say): refused by the key's id, as the
        // embedded store refuses a keyring lacking its recorded keys.
        let opened = sealer.open_text(Record::ItemKey, stored).map_err(|error| match &error {
            StateError::Damaged { source, .. } => match source.downcast_ref::<mayfly_crypto::CryptoError>() {
                Some(mayfly_crypto::CryptoError::UnknownKey { id, .. }) => {
                    StateError::KeyringLacksKeys { path: location.to_owned(), missing: vec![id.clone()] }
                }
                _ => error,
            },
            _ => error,
        })?;
        let key = hex_decode(&opened)
            .ok_or_else(|| StateError::Backend(format!("state store at {location}: the item lookup key is not hex")))?;
        ItemIds::keyed(&key)
    } else {
        ItemIds::plain()
    };
    transaction.commit().context("commit payload sealing")?;
    Ok(ids)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

/// Where a store is and how to reach it: the `postgres` crate's
/// configuration (its password set by whoever found one) and the TLS
/// settings (`sslmode`, the CA file), which that crate does not parse.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub config: ConnectConfig,
    pub tls: TlsSettings,
}

impl ConnectTarget {
    /// Connect one client, outside any pool; a failure names the server and
    /// why (a TLS reason in words).
    pub fn connect(&self) -> Result<postgres::Client> {
        self.tls.check()?;
        let mut config = self.config.clone();
        tls::apply(&mut config, &self.tls);
        config.connect(self.tls.connector()?).map_err(|error| self.connect_error(&error))
    }

    fn connect_error(&self, error: &postgres::Error) -> StateError {
        let location = describe(&self.config);
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "localhost".to_owned(),
        };
        let reason = tls::explain(error, &self.tls, &host).unwrap_or_else(|| full(error));
        StateError::Backend(format!("cannot connect to the PostgreSQL state store at {location}: {reason}"))
    }
}

/// Parse a state store URL (`postgres://…` or key=value form, with
/// libpq's `sslmode` and `sslrootcert`); an error shows it without its password.
pub fn parse_url(url: &str) -> Result<ConnectTarget> {
    parse_url_in(url, None)
}

/// [`parse_url`], a relative `sslrootcert` resolved against `base` (the
/// project directory).
pub fn parse_url_in(url: &str, base: Option<&std::path::Path>) -> Result<ConnectTarget> {
    let invalid = |error: String| {
        StateError::Backend(format!("the state store URL `{}` is not a PostgreSQL URL: {error}", redact(url)))
    };
    let (rest, tls) = tls::split_tls(url, base).map_err(|error| invalid(error.to_string()))?;
    let mut config: ConnectConfig = rest.parse().map_err(|error: postgres::Error| invalid(error.to_string()))?;
    tls::apply(&mut config, &tls);
    Ok(ConnectTarget { config, tls })
}

/// `user@host:port/database` of a connection configuration: never its password.
pub fn describe(config: &postgres::Config) -> String {
    let user = config.get_user().unwrap_or("(default user)");
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{database}")
}

/// A URL as it may be shown: any password (in the user part or a
/// `password=` parameter, of either form) replaced by `***`.
fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url
            .split_whitespace()
            .map(|part| if part.starts_with("password=") { "password=***" } else { part })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let mut shown = match before_query.rfind('@') {
        Some(at) if at > scheme => {
            let credentials = &before_query[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &before_query[..scheme + 3], &credentials[..colon], &before_query[at..])
                }
                None => before_query.to_owned(),
            }
        }
        _ => before_query.to_owned(),
    };
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .map(|parameter| match parameter.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => parameter.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&parameters.join("&"));
    }
    shown
}

/// An error with its causes, which `postgres::Error`'s Display leaves out.
fn full(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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
    Name::new(value).map_err(|error| StateError::Backend(format!("the state store holds an invalid name: {error}")))
}

/// Tags are stored sorted by key, the last value of a repeated key winning.
fn tags_to_json(tags: &[(String, String)]) -> Result<String> {
    let sorted: BTreeMap<&str, &str> = tags.iter().map(|(key, value)| (key.as_str(), value.as_str())).collect();
    let pairs: Vec<(&str, &str)> = sorted.into_iter().collect();
    serde_json::to_string(&pairs).map_err(|error| StateError::Backend(format!("could not encode tags: {error}")))
}

fn pairs_from_json(json: &str) -> Result<Vec<(String, String)>> {
    serde_json::from_str(json)
        .map_err(|error| StateError::Backend(format!("the state store holds unreadable key/value pairs: {error}")))
}

fn reason_from_column(reason: &str) -> Result<DeletionReason> {
    DeletionReason::parse(reason)
        .ok_or_else(|| StateError::Backend(format!("unknown deletion reason `{reason}` in the event log")))
}

fn kind_from_column(kind: &str) -> Result<ObjectEventKind> {
    match kind {
        "created" => Ok(ObjectEventKind::Created),
        "deleted" => Ok(ObjectEventKind::Deleted),
        other => Err(StateError::Backend(format!("the state store holds an unknown event kind `{other}`"))),
    }
}

/// Add one to counter `name` under its row lock (held to the commit, so
/// numbers follow commit order) and return the new value.
fn next_counter(transaction: &mut postgres::Transaction<'_>, name: &str) -> Result<i64> {
    Ok(transaction
        .query_one("UPDATE mayfly_counters SET value = value + 1 WHERE name = $1 RETURNING value", &[&name])
        .with_context(|| format!("advance the {name} counter"))?
        .get(0))
}

// --- deployments ---------------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &str = "version, content_hash, applied_at, source, forced, event_log_head";

fn deployment_from_row(row: &postgres::Row) -> Deployment {
    Deployment {
        version: from_sql_integer(row.get(0)),
        content_hash: row.get(1),
        applied_at: Timestamp(row.get(2)),
        source: row.get(3),
        forced: row.get(4),
        event_log_head: from_sql_integer(row.get(5)),
    }
}

impl mayfly_state::KeyringHolder for PostgresStore {
    fn payloads_encrypted(&self) -> bool {
        PostgresStore::payloads_encrypted(self)
    }

    fn replace_keyring(&self, keyring: Arc<Keyring>) -> Result<()> {
        PostgresStore::replace_keyring(self, keyring)
    }

    fn set_keyring_reloader(&self, reloader: mayfly_state::sealing::KeyringReloader) {
        self.sealer.set_reloader(reloader);
    }
}

impl DeploymentStore for PostgresStore {
    fn record_deployment(&self, deployment: NewDeployment) -> Result<Deployment> {
        let now = self.now();
        self.transact("record a deployment", |transaction| {
            let version = next_counter(transaction, "deployments")?;
            // The event log's head under its row lock, held to the commit: an
            // append in flight commits first (and is below the head), and every
            // event numbered above it commits after this deployment.
            let head: i64 = transaction
                .query_one("SELECT value FROM mayfly_counters WHERE name = 'object_events' FOR UPDATE", &[])
                .context("read the event log's head")?
                .get(0);
            let sql = format!(
                "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {DEPLOYMENT_COLUMNS}"
            );
            let row = transaction
                .query_one(
                    &sql,
                    &[&version, &deployment.content_hash, &now.as_millis(), &deployment.source, &deployment.forced, &head],
                )
                .context("insert a deployment")?;
            Ok(deployment_from_row(&row))
        })
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        self.transact("list deployments", |transaction| {
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY version");
            let rows = transaction.query(&sql, &[]).context("list deployments")?;
            Ok(rows.iter().map(deployment_from_row).collect())
        })
    }

    fn latest_deployment(&self) -> Result<Option<Deployment>> {
        self.transact("find the latest deployment", |transaction| {
            let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY version DESC LIMIT 1");
            let row = transaction.query_opt(&sql, &[]).context("read the latest deployment")?;
            Ok(row.as_ref().map(deployment_from_row))
        })
    }
}

// --- buckets --------------------------------------------------------------------------

fn bucket_from_row(row: &postgres::Row) -> Result<BucketRecord> {
    Ok(BucketRecord {
        name: name_from_column(row.get(0))?,
        created_at: Timestamp(row.get(1)),
        tags: pairs_from_json(row.get(2))?,
    })
}

impl BucketRegistry for PostgresStore {
    fn create_bucket(&self, name: &Name, tags: &[(String, String)]) -> Result<BucketRecord> {
        let now = self.now();
        let tags_json = tags_to_json(tags)?;
        self.transact(&format!("create bucket `{name}`"), |transaction| {
            let inserted = transaction
                .execute(
                    "INSERT INTO buckets (name, created_at, tags) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&name.as_str(), &now.as_millis(), &tags_json],
                )
                .with_context(|| format!("insert bucket `{name}`"))?;
            if inserted == 0 {
                return Err(StateError::AlreadyExists { kind: "bucket", name: name.to_string() });
            }
            Ok(BucketRecord { name: name.clone(), created_at: now, tags: pairs_from_json(&tags_json)? })
        })
    }

    fn delete_bucket(&self, name: &Name) -> Result<()> {
        self.transact(&format!("delete bucket `{name}`"), |transaction| {
            let deleted = transaction
                .execute("DELETE FROM buckets WHERE name = $1", &[&name.as_str()])
                .with_context(|| format!("delete bucket `{name}`"))?;
            if deleted == 0 {
                return Err(StateError::not_found("bucket", name));
            }
            Ok(())
        })
    }

    fn bucket(&self, name: &Name) -> Result<BucketRecord> {
        self.transact(&format!("look up bucket `{name}`"), |transaction| {
            let row = transaction
                .query_opt("SELECT name, created_at, tags FROM buckets WHERE name = $1", &[&name.as_str()])
                .with_context(|| format!("look up bucket `{name}`"))?;
            bucket_from_row(&row.ok_or_else(|| StateError::not_found("bucket", name))?)
        })
    }

    fn buckets(&self) -> Result<Vec<BucketRecord>> {
        self.transact("list buckets", |transaction| {
            // COLLATE "C": byte order, as the embedded store sorts names.
            let rows = transaction
                .query("SELECT name, created_at, tags FROM buckets ORDER BY name COLLATE \"C\"", &[])
                .context("list buckets")?;
            rows.iter().map(bucket_from_row).collect()
        })
    }
}

// --- the bucket event log ---------------------------------------------------------------

impl EventLog for PostgresStore {
    fn append_object_event(&self, event: NewObjectEvent) -> Result<ObjectEvent> {
        self.transact("append an object event", |transaction| {
            let sequence = next_counter(transaction, "object_events")?;
            transaction
                .execute(
                    "INSERT INTO object_events (sequence, bucket, key, kind, size, etag, at, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &sequence,
                        &event.bucket.as_str(),
                        &event.key,
                        &event.kind.as_str(),
                        &to_sql_integer(event.size),
                        &event.etag,
                        &event.at.as_millis(),
                        &event.reason.map(DeletionReason::as_str),
                    ],
                )
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
        self.transact("read the object event log", |transaction| {
            let rows = transaction
                .query(
                    "SELECT sequence, bucket, key, kind, size, etag, at, reason FROM object_events \
                     WHERE sequence > $1 ORDER BY sequence LIMIT $2",
                    &[&to_sql_integer(after), &limit_to_sql(limit)],
                )
                .context("read the object event log")?;
            rows.iter()
                .map(|row| {
                    Ok(ObjectEvent {
                        sequence: from_sql_integer(row.get(0)),
                        bucket: name_from_column(row.get(1))?,
                        key: row.get(2),
                        kind: kind_from_column(row.get(3))?,
                        size: from_sql_integer(row.get(4)),
                        etag: row.get(5),
                        at: Timestamp(row.get(6)),
                        reason: row.get::<_, Option<&str>>(7).map(reason_from_column).transpose()?,
                    })
                })
                .collect()
        })
    }

    fn consumer_cursor(&self, consumer: &str) -> Result<u64> {
        self.transact(&format!("read the cursor of consumer `{consumer}`"), |transaction| {
            let row = transaction
                .query_opt("SELECT sequence FROM consumer_cursors WHERE consumer = $1", &[&consumer])
                .with_context(|| format!("read the cursor of consumer `{consumer}`"))?;
            Ok(row.map(|row| from_sql_integer(row.get(0))).unwrap_or(0))
        })
    }

    fn set_consumer_cursor(&self, consumer: &str, sequence: u64) -> Result<()> {
        self.transact(&format!("set the cursor of consumer `{consumer}`"), |transaction| {
            set_consumer_cursor(transaction, consumer, sequence)
        })
    }
}

/// Set a consumer's cursor within `transaction` (see [`EventLog::set_consumer_cursor`]).
pub(crate) fn set_consumer_cursor(
    transaction: &mut postgres::Transaction<'_>,
    consumer: &str,
    sequence: u64,
) -> Result<()> {
    transaction
        .execute(
            "INSERT INTO consumer_cursors (consumer, sequence) VALUES ($1, $2) \
             ON CONFLICT (consumer) DO UPDATE \
             SET sequence = GREATEST(consumer_cursors.sequence, excluded.sequence)",
            &[&consumer, &to_sql_integer(sequence)],
        )
        .with_context(|| format!("set the cursor of consumer `{consumer}`"))?;
    Ok(())
}

/// Every concern is here: the store is a whole [`mayfly_state::StateStore`].
const _: fn() = || {
    fn is_a_state_store<T: mayfly_state::StateStore>() {}
    is_a_state_store::<PostgresStore>();
};
