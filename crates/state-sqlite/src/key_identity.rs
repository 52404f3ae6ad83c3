//! The identity of the keys that sealed a store's data, kept in
//! `store_settings` as one row per key: `kek:<key id>` → the key's
//! fingerprint (a SHA-256 of its material, [`mayfly_crypto::Kek::fingerprint`];
//! never the material). A key is recorded before it can seal anything (every
//! encrypted open records the keyring's current key), so the rows are a
//! superset of the keys the data needs.
//!
//! Why: a keyring regenerated after a loss, or the wrong `MAYFLY_KEYRING`,
//! would otherwise open the store, fail on every old record and seal new ones
//! that the restored keyring cannot read. Opening checks the keyring holds
//! every recorded key with the same fingerprint and refuses otherwise
//! ([`mayfly_state::StateError::KeyringLacksKeys`]), before anything is read or written.
//! A key leaves the record only when `mayfly keys retire` has checked that
//! no envelope uses it, or when a keyring replacing a lost one is created
//! explicitly ([`crate::SqliteStore::open_encrypted_replacing_lost_keyring`]).

use mayfly_crypto::Keyring;
use mayfly_state::{KeyIdentity, Result, keys_to_record};
use rusqlite::{OptionalExtension, Transaction, params};

use crate::errors::SqliteResultExt;

const KEY_PREFIX: &str = "kek:";

/// The recorded keys, by id.
pub(crate) fn recorded_keys(transaction: &Transaction<'_>) -> Result<Vec<KeyIdentity>> {
    transaction
        .prepare_cached("SELECT key, value FROM store_settings WHERE key LIKE 'kek:%' ORDER BY key")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .context("read the identity of the keys that sealed the store's data")
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(key, fingerprint)| {
                    Some(KeyIdentity { id: key.strip_prefix(KEY_PREFIX)?.to_owned(), fingerprint })
                })
                .collect()
        })
}

/// Refuse a keyring that lacks a recorded key (or holds one of its ids with
/// other material); then record what [`keys_to_record`] says.
pub(crate) fn check_and_record(transaction: &Transaction<'_>, keyring: &Keyring, path: &str) -> Result<()> {
    for identity in keys_to_record(&recorded_keys(transaction)?, keyring, path)? {
        record(transaction, &identity)?;
    }
    Ok(())
}

/// Forget every recorded key and record `keyring`'s instead: the keyring
/// replaces a lost one. Returns the ids forgotten.
pub(crate) fn replace_all(transaction: &Transaction<'_>, keyring: &Keyring) -> Result<Vec<String>> {
    let forgotten: Vec<String> =
        recorded_keys(transaction)?.into_iter().map(|known| known.id).filter(|id| keyring.get(id).is_none()).collect();
    transaction
        .execute("DELETE FROM store_settings WHERE key LIKE 'kek:%'", [])
        .context("forget the keys of the lost keyring")?;
    for kek in keyring.keys() {
        record(transaction, &KeyIdentity::of(kek))?;
    }
    Ok(forgotten)
}

/// Record exactly `identities` (a copied store's), forgetting any other.
pub(crate) fn replace_with(transaction: &Transaction<'_>, identities: &[KeyIdentity]) -> Result<()> {
    transaction
        .execute("DELETE FROM store_settings WHERE key LIKE 'kek:%'", [])
        .context("forget the keys the new store recorded")?;
    for identity in identities {
        record(transaction, identity)?;
    }
    Ok(())
}

/// Forget one key (retired: nothing uses it). Returns whether it was recorded.
pub(crate) fn forget(transaction: &Transaction<'_>, id: &str) -> Result<bool> {
    let removed = transaction
        .execute("DELETE FROM store_settings WHERE key = ?1", [format!("{KEY_PREFIX}{id}")])
        .context("forget a retired key")?;
    Ok(removed > 0)
}

fn record(transaction: &Transaction<'_>, identity: &KeyIdentity) -> Result<()> {
    let key = format!("{KEY_PREFIX}{}", identity.id);
    let existing: Option<String> = transaction
        .query_row("SELECT value FROM store_settings WHERE key = ?1", [&key], |row| row.get(0))
        .optional()
        .context("read a recorded key")?;
    if existing.is_none() {
        transaction
            .execute("INSERT INTO store_settings (key, value) VALUES (?1, ?2)", params![key, identity.fingerprint])
            .context("record the identity of the keyring's current key")?;
    }
    Ok(())
}
