//! Sealing: how every backend encrypts what it keeps that can carry
//! customer data — queue message bodies and attributes, run item payloads,
//! job results, captured invocation logs, error text (a function's error
//! message and stderr tail), run errors and reports, item ids and a token's
//! AWS secret. A value codec, independent of how a backend stores values: a
//! backend opened with a keyring seals each value right before it writes it
//! ([`Sealer::seal`], [`Sealer::seal_text`]) and opens it right after it reads
//! it ([`Sealer::open`], [`Sealer::open_text`]), with the same envelope as
//! bucket objects ([`mayfly_crypto`]: a random data key per record, wrapped by
//! the keyring's current key). Every backend seals the same way, so a store's
//! values mean the same whichever backend holds them.
//!
//! Every envelope is bound to a context naming its record ([`Record`]), so a
//! ciphertext copied or swapped into another record fails to open:
//!
//! | record | context |
//! |---|---|
//! | message body | `message/<message id>/body` |
//! | message attributes (JSON) | `message/<message id>/attributes` |
//! | run item payload | `run/<run id>/item/<item>` |
//! | job result | `job/<job>/result/<item>` |
//! | invocation logs | `invocation/<ledger id>/logs` |
//! | invocation error message | `invocation-error/<ledger id>` |
//! | an item's last error | `run-item-error/<run id>/<item>` |
//! | a run's error | `run-error/<run id>` |
//! | a run's report | `run-report/<run id>` |
//! | a run item's id | `run-item-id/<run id>/<lookup key>` |
//! | a result's item id | `result-item-id/<job>/<lookup key>` |
//! | the item lookup key | `store/item-key` |
//! | a token's AWS secret access key | `api-token/<token id>/aws-secret` |
//! | an experiment's evidence (JSON) | `experiment/<experiment id>/details` |
//!
//! These are the records' stable identities. A message keeps its id when it
//! is leased or dead-lettered (its queue changes, so the queue is not bound);
//! where a payload changes identity — a redriven message gets a new id, a
//! message moved into a run becomes an item — the backend opens it under the
//! old context and seals it under the new one in the same transaction
//! ([`Sealer::reseal`]). Message ids are bound, so a backend that seals must
//! know a message's id before it writes its body. In run ids and item ids,
//! `%` and `/` are escaped so contexts cannot collide.
//!
//! Item ids may be content (a manifest line is its own id), yet the ledger
//! must find an item by its id. A sealing backend keeps, where it looks items
//! up, a lookup key — hex HMAC-SHA256 of the id under a random 256-bit key
//! made once per store ([`ItemIds`]) — and the sealed id beside it for
//! display ([`StoredItemId`]). The HMAC key is itself kept sealed (context
//! `store/item-key`), so it survives key rotation and rewrapping. Items
//! therefore list in lookup-key order, not in id order, in a sealed store.
//! Text (error strings, run errors, reports, item ids) is sealed as the
//! base64 text of its envelope ([`Sealer::seal_text`]).
//!
//! Not sealed: names (queues, buckets, functions, jobs), generated ids
//! (messages, runs, requests, workers, tokens), timestamps, statuses,
//! counts, an invocation's `error_type` (a class name such as `TimedOut`),
//! and worker bookkeeping.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use crate::{Result, StateError};
use mayfly_crypto::{CryptoError, Keyring, decrypt_bytes, encrypt_bytes, rewrap_header};

/// One stored payload: where it is, for its context and for error messages.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    MessageBody(i64),
    MessageAttributes(i64),
    RunItem {
        run: &'a str,
        item: &'a str,
    },
    Result {
        job: &'a str,
        item: &'a str,
    },
    InvocationLogs(i64),
    InvocationError(i64),
    ItemError {
        run: &'a str,
        item: &'a str,
    },
    RunError(&'a str),
    RunReport(&'a str),
    /// The id of a run item, by its lookup key.
    RunItemId {
        run: &'a str,
        key: &'a str,
    },
    /// The item id of a result, by its lookup key.
    ResultItemId {
        job: &'a str,
        key: &'a str,
    },
    ItemKey,
    /// The secret access key of a token's AWS credentials.
    TokenAwsSecret(&'a str),
    /// An experiment's evidence: measurements, comparisons, error text.
    ExperimentDetails(i64),
}

impl Record<'_> {
    /// The context its envelope is bound to.
    pub fn context(&self) -> String {
        match self {
            Record::MessageBody(id) => format!("message/{id}/body"),
            Record::MessageAttributes(id) => format!("message/{id}/attributes"),
            Record::RunItem { run, item } => format!("run/{}/item/{item}", escape(run)),
            Record::Result { job, item } => format!("job/{}/result/{item}", escape(job)),
            Record::InvocationLogs(id) => format!("invocation/{id}/logs"),
            Record::InvocationError(id) => format!("invocation-error/{id}"),
            Record::ItemError { run, item } => format!("run-item-error/{}/{}", escape(run), escape(item)),
            Record::RunError(run) => format!("run-error/{}", escape(run)),
            Record::RunReport(run) => format!("run-report/{}", escape(run)),
            Record::RunItemId { run, key } => format!("run-item-id/{}/{key}", escape(run)),
            Record::ResultItemId { job, key } => format!("result-item-id/{}/{key}", escape(job)),
            Record::ItemKey => "store/item-key".to_owned(),
            Record::TokenAwsSecret(token) => format!("api-token/{}/aws-secret", escape(token)),
            Record::ExperimentDetails(id) => format!("experiment/{id}/details"),
        }
    }

    /// Which record, for a person.
    pub fn describe(&self) -> String {
        match self {
            Record::MessageBody(id) => format!("body of message {id}"),
            Record::MessageAttributes(id) => format!("attributes of message {id}"),
            Record::RunItem { run, item } => format!("payload of item `{item}` of run `{run}`"),
            Record::Result { job, item } => format!("result of item `{item}` of job `{job}`"),
            Record::InvocationLogs(id) => format!("logs of invocation {id}"),
            Record::InvocationError(id) => format!("error message of invocation {id}"),
            Record::ItemError { run, item } => format!("last error of item `{item}` of run `{run}`"),
            Record::RunError(run) => format!("error of run `{run}`"),
            Record::RunReport(run) => format!("report of run `{run}`"),
            Record::RunItemId { run, key } => format!("id of the item with lookup key {key} of run `{run}`"),
            Record::ResultItemId { job, key } => format!("item id of the result with lookup key {key} of job `{job}`"),
            Record::ItemKey => "item lookup key".to_owned(),
            Record::TokenAwsSecret(token) => format!("AWS secret access key of token `{token}`"),
            Record::ExperimentDetails(id) => format!("details of experiment {id}"),
        }
    }
}

fn escape(component: &str) -> Cow<'_, str> {
    if component.contains(['%', '/']) {
        Cow::Owned(component.replace('%', "%25").replace('/', "%2F"))
    } else {
        Cow::Borrowed(component)
    }
}

/// Seals and opens payloads, or passes them through for an unencrypted store.
/// The keyring sits behind a lock shared by every clone, so a long-running
/// process can take up a rotated keyring (e.g. `SqliteStore::replace_keyring`);
/// each payload is sealed or opened with one snapshot.
///
/// A payload sealed by a key this keyring does not hold yet (another process
/// rotated the keyring a moment ago) is opened with a keyring freshly read by
/// the reloader, if one is set ([`Sealer::set_reloader`]); only for opening:
/// the keyring that seals changes through [`Sealer::replace`] alone, after
/// the store checked and recorded it.
#[derive(Clone, Default)]
pub struct Sealer {
    keyring: Option<Arc<RwLock<Arc<Keyring>>>>,
    reloader: Arc<OnceLock<KeyringReloader>>,
    /// Set once the store's item key is read (an encrypted store).
    ids: ItemIds,
}

/// An item id as a backend stores it: the lookup key (what it finds the
/// item by) and, in a sealed store, the sealed id beside it.
pub struct StoredItemId {
    pub key: String,
    pub sealed: Option<String>,
}

/// Reads the keyring again (from its file), or `None` if it cannot.
pub type KeyringReloader = Box<dyn Fn() -> Option<Arc<Keyring>> + Send + Sync>;

impl Sealer {
    pub fn new(keyring: Option<Arc<Keyring>>) -> Sealer {
        Sealer {
            keyring: keyring.map(|keyring| Arc::new(RwLock::new(keyring))),
            reloader: Arc::default(),
            ids: ItemIds::plain(),
        }
    }

    /// Use `ids` for item lookup keys from now on.
    pub fn set_item_ids(&mut self, ids: ItemIds) {
        self.ids = ids;
    }

    /// A key for `purpose` derived from the item key; `None` unencrypted.
    pub fn derived_key(&self, purpose: &str) -> Option<[u8; 32]> {
        self.ids.derived_key(purpose)
    }

    /// The lookup key of `item`: the id itself, or its keyed hash in a sealed store.
    pub fn lookup_key<'a>(&self, item: &'a str) -> Cow<'a, str> {
        self.ids.lookup_key(item)
    }

    /// How a run's item id is stored.
    pub fn seal_run_item_id(&self, run: &str, item: &str) -> StoredItemId {
        let key = self.ids.lookup_key(item).into_owned();
        let sealed = self.ids.is_keyed().then(|| self.seal_text(Record::RunItemId { run, key: &key }, item));
        StoredItemId { key, sealed }
    }

    /// How the item id of a job's result is stored.
    pub fn seal_result_item_id(&self, job: &str, item: &str) -> StoredItemId {
        let key = self.ids.lookup_key(item).into_owned();
        let sealed = self.ids.is_keyed().then(|| self.seal_text(Record::ResultItemId { job, key: &key }, item));
        StoredItemId { key, sealed }
    }

    /// A run item's id from its lookup key and sealed id.
    pub fn open_run_item_id(&self, run: &str, key: String, sealed: Option<String>) -> Result<String> {
        match sealed {
            Some(sealed) => self.open_text(Record::RunItemId { run, key: &key }, sealed),
            None => Ok(key),
        }
    }

    /// A result's item id from its lookup key and sealed id.
    pub fn open_result_item_id(&self, job: &str, key: String, sealed: Option<String>) -> Result<String> {
        match sealed {
            Some(sealed) => self.open_text(Record::ResultItemId { job, key: &key }, sealed),
            None => Ok(key),
        }
    }

    /// Set how to read the keyring again for a payload sealed by a key it
    /// lacks. Only the first call counts.
    pub fn set_reloader(&self, reloader: KeyringReloader) {
        let _ = self.reloader.set(reloader);
    }

    /// The keyring as it is now.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        // A panic while holding the lock cannot leave a half-written Arc.
        self.keyring.as_ref().map(|lock| lock.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Use `keyring` from now on (no-op for an unencrypted store).
    pub fn replace(&self, keyring: Arc<Keyring>) {
        if let Some(lock) = &self.keyring {
            *lock.write().unwrap_or_else(PoisonError::into_inner) = keyring;
        }
    }

    pub fn is_on(&self) -> bool {
        self.keyring.is_some()
    }

    /// The bytes to store for `plaintext`.
    pub fn seal<'a>(&self, record: Record<'_>, plaintext: &'a [u8]) -> Cow<'a, [u8]> {
        match &self.keyring() {
            Some(keyring) => Cow::Owned(encrypt_bytes(keyring, &record.context(), plaintext)),
            None => Cow::Borrowed(plaintext),
        }
    }

    /// The plaintext of stored bytes; `Damaged` naming the record if they do not verify.
    pub fn open(&self, record: Record<'_>, stored: Vec<u8>) -> Result<Vec<u8>> {
        let Some(keyring) = self.keyring() else { return Ok(stored) };
        let context = record.context();
        let opened = match decrypt_bytes(&keyring, &context, &stored) {
            Err(CryptoError::UnknownKey { .. }) => match self.reloader.get().and_then(|reload| reload()) {
                Some(fresh) => decrypt_bytes(&fresh, &context, &stored),
                None => decrypt_bytes(&keyring, &context, &stored),
            },
            other => other,
        };
        opened.map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })
    }

    /// The text to store for `text`: the base64 of its envelope, or `text` itself unencrypted.
    pub fn seal_text(&self, record: Record<'_>, text: &str) -> String {
        use base64::Engine as _;
        match &self.keyring {
            Some(_) => base64::engine::general_purpose::STANDARD.encode(self.seal(record, text.as_bytes())),
            None => text.to_owned(),
        }
    }

    /// The plaintext of text stored by [`Sealer::seal_text`].
    pub fn open_text(&self, record: Record<'_>, stored: String) -> Result<String> {
        use base64::Engine as _;
        if self.keyring.is_none() {
            return Ok(stored);
        }
        let damaged = |error: Box<dyn std::error::Error + Send + Sync>| StateError::Damaged {
            what: record.describe(),
            source: error,
        };
        let envelope =
            base64::engine::general_purpose::STANDARD.decode(stored).map_err(|error| damaged(Box::new(error)))?;
        let plaintext = self.open(record, envelope)?;
        String::from_utf8(plaintext).map_err(|error| damaged(Box::new(error)))
    }

    /// Optional text, sealed.
    pub fn seal_optional_text(&self, record: Record<'_>, text: Option<&str>) -> Option<String> {
        text.map(|text| self.seal_text(record, text))
    }

    /// Optional text, opened.
    pub fn open_optional_text(&self, record: Record<'_>, stored: Option<String>) -> Result<Option<String>> {
        stored.map(|stored| self.open_text(record, stored)).transpose()
    }

    /// [`Sealer::rewrap`] for text stored by [`Sealer::seal_text`].
    pub fn rewrap_text(&self, record: Record<'_>, stored: &[u8]) -> Result<Option<Vec<u8>>> {
        use base64::Engine as _;
        if self.keyring.is_none() {
            return Ok(None);
        }
        let envelope = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .map_err(|error| StateError::Damaged { what: record.describe(), source: Box::new(error) })?;
        Ok(self
            .rewrap(record, &envelope)?
            .map(|rewrapped| base64::engine::general_purpose::STANDARD.encode(rewrapped).into_bytes()))
    }

    /// Open under `from` and seal under `to`: a payload that changes identity.
    pub fn reseal(&self, from: Record<'_>, to: Record<'_>, stored: Vec<u8>) -> Result<Vec<u8>> {
        if self.keyring.is_none() {
            return Ok(stored);
        }
        let plaintext = self.open(from, stored)?;
        Ok(self.seal(to, &plaintext).into_owned())
    }

    /// The envelope with its data key rewrapped under the current key, or
    /// `None` if it already is (or the store is not encrypted).
    pub fn rewrap(&self, record: Record<'_>, stored: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(keyring) = &self.keyring() else { return Ok(None) };
        let damaged = |error| StateError::Damaged { what: record.describe(), source: Box::new(error) };
        let Some(header) = rewrap_header(keyring, &record.context(), stored).map_err(damaged)? else {
            return Ok(None);
        };
        let mut rewrapped = stored.to_vec();
        rewrapped[..header.len()].copy_from_slice(&header);
        Ok(Some(rewrapped))
    }
}

/// How item ids are kept: as given (an unencrypted store), or as the hex
/// HMAC-SHA256 of the id under the store's item key (an encrypted one).
#[derive(Clone, Default)]
pub struct ItemIds {
    key: Option<ring::hmac::Key>,
}

/// Bytes of the item lookup key.
pub const ITEM_KEY_LEN: usize = 32;

impl ItemIds {
    /// Ids stored as given.
    pub fn plain() -> ItemIds {
        ItemIds { key: None }
    }

    /// Ids stored as their HMAC under `key`.
    pub fn keyed(key: &[u8]) -> ItemIds {
        ItemIds { key: Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)) }
    }

    /// A fresh random item key.
    pub fn generate_key() -> Result<[u8; ITEM_KEY_LEN]> {
        use ring::rand::SecureRandom as _;
        let mut key = [0u8; ITEM_KEY_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| StateError::Backend("the system random number generator failed".to_owned()))?;
        Ok(key)
    }

    pub fn is_keyed(&self) -> bool {
        self.key.is_some()
    }

    /// HMAC-SHA256 of `0xFF`, `mayfly derived key:` and `purpose` under the
    /// item key. Item ids are UTF-8 text, in which the byte `0xFF` never
    /// occurs, so no item's lookup key (stored in plaintext) is ever a derived key.
    pub fn derived_key(&self, purpose: &str) -> Option<[u8; 32]> {
        let key = self.key.as_ref()?;
        let mut message = vec![0xFF];
        message.extend_from_slice(b"mayfly derived key:");
        message.extend_from_slice(purpose.as_bytes());
        let mut derived = [0u8; 32];
        derived.copy_from_slice(ring::hmac::sign(key, &message).as_ref());
        Some(derived)
    }

    /// The lookup key of `item`: the id itself, or its keyed hash in a sealed store.
    pub fn lookup_key<'a>(&self, item: &'a str) -> Cow<'a, str> {
        match &self.key {
            Some(key) => Cow::Owned(hex::encode(ring::hmac::sign(key, item.as_bytes()).as_ref())),
            None => Cow::Borrowed(item),
        }
    }
}
