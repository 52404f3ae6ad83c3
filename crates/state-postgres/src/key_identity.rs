//! The identity of the keys that sealed a store's data, kept in
//! `mayfly_settings` as one row per key, `kek:<key id>` → the key's
//! fingerprint (never its material), as the embedded store keeps them. The
//! rule is [`mayfly_state::keys_to_record`], shared by every backend: a key
//! is recorded before it can seal anything, and opening refuses a keyring
//! that lacks a recorded key (`KeyringLacksKeys`) before anything is read or
//! written — so a second host started with another keyring, or a keyring
//! regenerated after a loss, is refused even when it happens to hold the
//! key that sealed the item lookup key.
//!
//! Every open checks and records under one transaction-scoped advisory lock
//! ([`SETTINGS_LOCK`]), so hosts opening one database at once with different
//! keyrings cannot both record theirs as the first.

use mayfly_crypto::Keyring;
use mayfly_state::{KeyIdentity, Result, keys_to_record};

use crate::errors::PgResultExt;

const KEY_PREFIX: &str = "kek:";

/// The advisory lock (an arbitrary constant, "mfks") under which the sealing
/// settings are checked and recorded.
const SETTINGS_LOCK: i64 = 0x6d66_6b73;

/// Serialise the sealing settings' check-and-record with every other
/// host's, until the transaction ends.
pub(crate) fn lock_settings(transaction: &mut postgres::Transaction<'_>) -> Result<()> {
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SETTINGS_LOCK])
        .context("lock the store's sealing settings")?;
    Ok(())
}

/// The recorded keys, by id.
pub(crate) fn recorded_keys(transaction: &mut postgres::Transaction<'_>) -> Result<Vec<KeyIdentity>> {
    let rows = transaction
        .query("SELECT name, value FROM mayfly_settings WHERE name LIKE 'kek:%' ORDER BY name", &[])
        .context("read the identity of the keys that sealed the store's data")?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name: String = row.get(0);
            Some(KeyIdentity { id: name.strip_prefix(KEY_PREFIX)?.to_owned(), fingerprint: row.get(1) })
        })
        .collect())
}

/// Refuse a keyring that lacks a recorded key; then record what the shared
/// rule says.
pub(crate) fn check_and_record(
    transaction: &mut postgres::Transaction<'_>,
    keyring: &Keyring,
    location: &str,
) -> Result<()> {
    let recorded = recorded_keys(transaction)?;
    for identity in keys_to_record(&recorded, keyring, location)? {
        record(transaction, &identity)?;
    }
    Ok(())
}

/// Record exactly `identities` (a copied store's), forgetting any other.
pub(crate) fn replace_with(transaction: &mut postgres::Transaction<'_>, identities: &[KeyIdentity]) -> Result<()> {
    transaction
        .execute("DELETE FROM mayfly_settings WHERE name LIKE 'kek:%'", &[])
        .context("forget the keys the new store recorded")?;
    for identity in identities {
        record(transaction, identity)?;
    }
    Ok(())
}

/// Forget every recorded key and record `keyring`'s instead: the keyring
/// replaces a lost one. Returns the ids forgotten.
pub(crate) fn replace_all(transaction: &mut postgres::Transaction<'_>, keyring: &Keyring) -> Result<Vec<String>> {
    let forgotten: Vec<String> =
        recorded_keys(transaction)?.into_iter().map(|known| known.id).filter(|id| keyring.get(id).is_none()).collect();
    transaction
        .execute("DELETE FROM mayfly_settings WHERE name LIKE 'kek:%'", &[])
        .context("forget the keys of the lost keyring")?;
    for kek in keyring.keys() {
        record(transaction, &KeyIdentity::of(kek))?;
    }
    Ok(forgotten)
}

fn record(transaction: &mut postgres::Transaction<'_>, identity: &KeyIdentity) -> Result<()> {
    transaction
        .execute(
            "INSERT INTO mayfly_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&format!("{KEY_PREFIX}{}", identity.id), &identity.fingerprint],
        )
        .context("record the identity of the keyring's current key")?;
    Ok(())
}
