//! What a project's commands need of a state store's keys beyond its
//! concerns: following a rotated keyring ([`KeyringHolder`], every backend)
//! and the key maintenance of `mayfly keys rewrap`/`retire`
//! ([`KeyMaintenance`], only backends that record which keys sealed their
//! data). A backend without [`KeyMaintenance`] has those commands refused
//! by the host, never run half-way.

use std::sync::Arc;

use mayfly_crypto::Keyring;

use crate::Result;
use crate::sealing::KeyringReloader;

/// How an open store seals with the project's keyring.
pub trait KeyringHolder: Send + Sync {
    /// Whether this handle seals payloads.
    fn payloads_encrypted(&self) -> bool;

    /// Take up a new keyring (rotated, or with a key retired): every payload
    /// sealed from now on uses its current key. A backend that records the
    /// keys that sealed its data checks the new keyring holds them first and
    /// refuses it (`KeyringLacksKeys`, the old one stays) otherwise.
    fn replace_keyring(&self, keyring: Arc<Keyring>) -> Result<()>;

    /// How to read the keyring again when a payload was sealed by a key the
    /// keyring in use lacks (rotated by another process a moment ago).
    fn set_keyring_reloader(&self, reloader: KeyringReloader);
}

/// Moving a store's sealed payloads between keys, for `mayfly keys`.
pub trait KeyMaintenance: Send + Sync {
    /// Rewrap every sealed payload's data key to the current key; returns how many.
    fn rewrap_all(&self) -> Result<u64>;

    /// How many sealed payloads have their data key wrapped by `key_id`.
    fn count_envelopes_sealed_by(&self, key_id: &str) -> Result<u64>;

    /// Forget a retired key (the caller checked nothing uses it); returns
    /// whether it was recorded.
    fn forget_retired_key(&self, key_id: &str) -> Result<bool>;
}
