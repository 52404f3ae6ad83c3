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

/// The identity of one key recorded as possibly having sealed a store's
/// data: its id and its fingerprint (a SHA-256 of its material,
/// [`mayfly_crypto::Kek::fingerprint`]; never the material).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyIdentity {
    pub id: String,
    pub fingerprint: String,
}

impl KeyIdentity {
    pub fn of(kek: &mayfly_crypto::Kek) -> KeyIdentity {
        KeyIdentity { id: kek.id().to_owned(), fingerprint: kek.fingerprint() }
    }
}

/// Every backend that seals keeps the identities of the keys that may have
/// sealed its data, a superset of what the data needs: a key is recorded
/// before it can seal anything. Opening (and taking up a rotated keyring)
/// checks the keyring against them with this: it refuses a keyring that
/// lacks a recorded key or holds one of its ids with other material
/// (`KeyringLacksKeys`, naming them and where), and otherwise returns the
/// identities to record — the keyring's current key, and on a store with
/// none recorded yet (new, or from before keys were recorded) every key of
/// the keyring, since older data may be sealed by any of them.
///
/// Why: a keyring regenerated after a loss, or the wrong `MAYFLY_KEYRING`
/// on a second host, would otherwise open the store, fail on every old
/// record and seal new ones that the right keyring cannot read.
pub fn keys_to_record(recorded: &[KeyIdentity], keyring: &Keyring, location: &str) -> Result<Vec<KeyIdentity>> {
    let missing: Vec<String> = recorded
        .iter()
        .filter(|known| keyring.get(&known.id).is_none_or(|kek| kek.fingerprint() != known.fingerprint))
        .map(|known| known.id.clone())
        .collect();
    if !missing.is_empty() {
        return Err(crate::StateError::KeyringLacksKeys { path: location.to_owned(), missing });
    }
    let wanted: Vec<KeyIdentity> = if recorded.is_empty() {
        keyring.keys().map(KeyIdentity::of).collect()
    } else {
        vec![KeyIdentity::of(keyring.current())]
    };
    Ok(wanted.into_iter().filter(|identity| !recorded.iter().any(|known| known.id == identity.id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring_with(count: usize) -> Keyring {
        let mut keyring = Keyring::generate(mayfly_core::Timestamp(1));
        for at in 1..count {
            keyring.rotate(mayfly_core::Timestamp(1 + at as i64));
        }
        keyring
    }

    #[test]
    fn a_new_store_records_every_key_and_a_known_one_only_the_current() {
        let keyring = keyring_with(2);
        let first = keys_to_record(&[], &keyring, "here").unwrap();
        assert_eq!(first.len(), 2);
        let recorded: Vec<KeyIdentity> = first;
        assert!(keys_to_record(&recorded, &keyring, "here").unwrap().is_empty());
        let mut rotated = keyring.clone();
        rotated.rotate(mayfly_core::Timestamp(9));
        let added = keys_to_record(&recorded, &rotated, "here").unwrap();
        assert_eq!(added, vec![KeyIdentity::of(rotated.current())]);
    }

    #[test]
    fn a_keyring_lacking_a_recorded_key_or_holding_other_material_under_its_id_is_refused() {
        let keyring = keyring_with(1);
        let recorded = keys_to_record(&[], &keyring, "here").unwrap();
        let other = keyring_with(1);
        match keys_to_record(&recorded, &other, "postgres://h/db") {
            Err(crate::StateError::KeyringLacksKeys { path, missing }) => {
                assert_eq!(path, "postgres://h/db");
                assert_eq!(missing, vec![keyring.current().id().to_owned()]);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let forged = vec![KeyIdentity { id: other.current().id().to_owned(), fingerprint: "0".repeat(64) }];
        assert!(matches!(keys_to_record(&forged, &other, "here"), Err(crate::StateError::KeyringLacksKeys { .. })));
    }
}
