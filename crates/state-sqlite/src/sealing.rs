//! Encryption of the customer payloads the store keeps: queue message bodies
//! and attributes, run item payloads, job results and captured invocation
//! logs. A store opened with [`crate::SqliteStore::open_encrypted`] seals each
//! one right before it is written and opens it right after it is read, with
//! the same envelope as bucket objects ([`mayfly_crypto`]: a random data key
//! per record, wrapped by the keyring's current key).
//!
//! Every envelope is bound to a context naming its record, so a ciphertext
//! copied or swapped into another record fails to open:
//!
//! | record | context |
//! |---|---|
//! | message body | `message/<message id>/body` |
//! | message attributes (JSON) | `message/<message id>/attributes` |
//! | run item payload | `run/<run id>/item/<item>` |
//! | job result | `job/<job>/result/<item>` |
//! | invocation logs | `invocation/<ledger id>/logs` |
//!
//! These are the records' stable identities. A message keeps its id when it
//! is leased or dead-lettered (its queue changes, so the queue is not bound);
//! where a payload changes identity — a redriven message gets a new id, a
//! message moved into a run becomes an item — the store opens it under the
//! old context and seals it under the new one in the same transaction.
//! Message ids are assigned on insert, so an encrypted store allocates them
//! itself inside the write transaction (`AUTOINCREMENT` semantics kept). In
//! a run id, `%` and `/` are escaped so contexts cannot collide.
//!
//! Not encrypted: names, ids, timestamps, statuses, error strings
//! (`last_error`, invocation `error_message`), run reports and worker
//! bookkeeping.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use mayfly_crypto::{CryptoError, Keyring, decrypt_bytes, encrypt_bytes, rewrap_header};
use mayfly_state::{Result, StateError};

/// The value of the `payloads` setting of a store whose payloads are envelopes.
pub const ENVELOPE_V1: &str = "envelope-v1";

/// One stored payload: where it is, for its context and for error messages.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    MessageBody(i64),
    MessageAttributes(i64),
    RunItem { run: &'a str, item: &'a str },
    Result { job: &'a str, item: &'a str },
    InvocationLogs(i64),
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
/// process can take up a rotated keyring (`SqliteStore::replace_keyring`);
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
}

/// Reads the keyring again (from its file), or `None` if it cannot.
pub type KeyringReloader = Box<dyn Fn() -> Option<Arc<Keyring>> + Send + Sync>;

impl Sealer {
    pub fn new(keyring: Option<Arc<Keyring>>) -> Sealer {
        Sealer { keyring: keyring.map(|keyring| Arc::new(RwLock::new(keyring))), reloader: Arc::default() }
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
