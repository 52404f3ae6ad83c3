//! Copying a store to or from another backend (`mayfly state migrate`, see
//! [`mayfly_state::copy`]): rows of the data tables as they are stored
//! (sealed values as their bytes, never opened), the AUTOINCREMENT numbers
//! of `sqlite_sequence`, and the sealing settings of `store_settings`.
//!
//! A copy into SQLite is built in a file of its own beside the target
//! (`<file>.migrating`) and linked into place only once the whole copy
//! committed (and was switched out of WAL, so the file stands alone): a
//! failed copy leaves no store at the target.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_core::Clock;
use mayfly_crypto::Keyring;
use mayfly_state::copy::{CopiedTable, CopySource, CopyTarget, Sealing, Value};
use mayfly_state::sealing::Sealer;
use mayfly_state::{Result, StateError};
use rusqlite::types::ValueRef;
use rusqlite::{OptionalExtension, Transaction, params_from_iter};

use crate::errors::SqliteResultExt;
use crate::{ITEM_KEY_SETTING, KeyringAdoption, SqliteStore};

/// Tables of the store's own bookkeeping, not data: never copied as rows
/// (the control plane's leases included: a migrated store has no leader).
const OWN_TABLES: &[&str] = &["store_settings", "leases"];

/// One snapshot (a read transaction) or one write transaction of a copy.
struct SqliteCopy<'a> {
    transaction: &'a Transaction<'a>,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl CopySource for SqliteCopy<'_> {
    fn tables(&mut self) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .transaction
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
            .context("list the tables")?;
        Ok(names.into_iter().filter(|name| !OWN_TABLES.contains(&name.as_str())).collect())
    }

    fn columns(&mut self, table: &str) -> Result<Vec<String>> {
        self.transaction
            .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .and_then(|mut statement| statement.query_map([table], |row| row.get(0))?.collect())
            .with_context(|| format!("read the columns of `{table}`"))
    }

    fn count_rows(&mut self, table: &str) -> Result<u64> {
        let count: i64 = self
            .transaction
            .query_row(&format!("SELECT count(*) FROM {}", quoted(table)), [], |row| row.get(0))
            .with_context(|| format!("count the rows of `{table}`"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn read_rows(
        &mut self,
        table: &CopiedTable,
        columns: &[String],
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let list: Vec<String> = columns.iter().map(|column| quoted(column)).collect();
        let order: Vec<String> = table.key.iter().map(|column| quoted(column)).collect();
        let sql = format!("SELECT {} FROM {} ORDER BY {}", list.join(", "), quoted(table.name), order.join(", "));
        let what = || format!("read the rows of `{}`", table.name);
        let mut statement = self.transaction.prepare(&sql).with_context(what)?;
        let mut rows = statement.query([]).with_context(what)?;
        while let Some(row) = rows.next().with_context(what)? {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                values.push(match row.get_ref(index).with_context(what)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(number) => Value::Integer(number),
                    ValueRef::Real(number) => Value::Real(number),
                    ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
                        Ok(text) => Value::Text(text.to_owned()),
                        Err(_) => Value::Bytes(bytes.to_vec()),
                    },
                    ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
                });
            }
            each(values)?;
        }
        Ok(())
    }

    fn last_number(&mut self, table: &CopiedTable) -> Result<i64> {
        let Some(column) = table.numbered else {
            return Ok(0);
        };
        let sql = format!(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?1), 0), \
                        COALESCE((SELECT MAX({}) FROM {}), 0))",
            quoted(column),
            quoted(table.name)
        );
        self.transaction
            .query_row(&sql, [table.name], |row| row.get(0))
            .with_context(|| format!("read the last number of `{}`", table.name))
    }

    fn sealing(&mut self) -> Result<Sealing> {
        let setting = |key: &str| -> Result<Option<String>> {
            self.transaction
                .query_row("SELECT value FROM store_settings WHERE key = ?1", [key], |row| row.get(0))
                .optional()
                .with_context(|| format!("read the `{key}` setting"))
        };
        Ok(Sealing {
            payloads: setting("payloads")?,
            item_key: setting(ITEM_KEY_SETTING)?,
            keys: crate::key_identity::recorded_keys(self.transaction)?,
        })
    }
}

impl CopyTarget for SqliteCopy<'_> {
    fn write_rows(&mut self, table: &CopiedTable, columns: &[String], rows: &[Vec<Value>]) -> Result<()> {
        let list: Vec<String> = columns.iter().map(|column| quoted(column)).collect();
        let places: Vec<String> = (1..=columns.len()).map(|index| format!("?{index}")).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES ({})", quoted(table.name), list.join(", "), places.join(", "));
        let what = || format!("write rows of `{}`", table.name);
        let mut statement = self.transaction.prepare_cached(&sql).with_context(what)?;
        for row in rows {
            let values = row.iter().map(|value| match value {
                Value::Null => rusqlite::types::Value::Null,
                Value::Integer(number) => rusqlite::types::Value::Integer(*number),
                Value::Real(number) => rusqlite::types::Value::Real(*number),
                Value::Text(text) => rusqlite::types::Value::Text(text.clone()),
                Value::Bytes(bytes) => rusqlite::types::Value::Blob(bytes.clone()),
            });
            statement.execute(params_from_iter(values)).with_context(what)?;
        }
        Ok(())
    }

    fn set_last_number(&mut self, table: &CopiedTable, number: i64) -> Result<()> {
        if table.numbered.is_none() || number <= 0 {
            return Ok(());
        }
        let what = || format!("set the last number of `{}`", table.name);
        let updated = self
            .transaction
            .execute(
                "UPDATE sqlite_sequence SET seq = MAX(seq, ?2) WHERE name = ?1",
                rusqlite::params![table.name, number],
            )
            .with_context(what)?;
        if updated == 0 {
            self.transaction
                .execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                    rusqlite::params![table.name, number],
                )
                .with_context(what)?;
        }
        Ok(())
    }

    fn set_sealing(&mut self, sealing: &Sealing) -> Result<()> {
        for (key, value) in [("payloads", &sealing.payloads), (ITEM_KEY_SETTING, &sealing.item_key)] {
            let what = || format!("record the `{key}` setting");
            match value {
                Some(value) => self
                    .transaction
                    .execute(
                        "INSERT INTO store_settings (key, value) VALUES (?1, ?2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [key, value.as_str()],
                    )
                    .with_context(what)?,
                None => {
                    self.transaction.execute("DELETE FROM store_settings WHERE key = ?1", [key]).with_context(what)?
                }
            };
        }
        crate::key_identity::replace_with(self.transaction, &sealing.keys)
    }
}

/// The files a SQLite database at `path` may have: itself, its WAL and shared memory.
fn database_files(path: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_owned(), with_suffix("-wal"), with_suffix("-shm")]
}

fn remove_database(path: &Path) {
    for file in database_files(path) {
        if let Err(error) = std::fs::remove_file(&file)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %file.display(), %error, "could not remove a file of an unfinished copy");
        }
    }
}

impl SqliteStore {
    /// Read the whole store for a copy, in one snapshot: `body` gets the
    /// rows as stored (sealed values never opened).
    pub fn copy_from<T>(&self, body: impl FnOnce(&mut dyn CopySource) -> Result<T>) -> Result<T> {
        self.read("read the store for a copy", |transaction| body(&mut SqliteCopy { transaction }))
    }

    /// Build a new store at `path` (which must not exist) by a copy: the
    /// schema and sealing are this backend's own (opened with `keyring`,
    /// which records its keys), then `body` writes the rows in one
    /// transaction, which commits only if `body` returns `Ok`. The store
    /// appears at `path` only then; on any error nothing is left there.
    pub fn copy_into_new<T>(
        path: &Path,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
        body: impl FnOnce(&mut dyn CopyTarget) -> Result<T>,
    ) -> Result<T> {
        let taken = || {
            StateError::Conflict(format!(
                "{} already exists: a copy goes only into a new state store; nothing was changed",
                path.display()
            ))
        };
        if database_files(path).iter().any(|file| file.exists()) {
            return Err(taken());
        }
        let mut building = path.as_os_str().to_owned();
        building.push(".migrating");
        let building = PathBuf::from(building);
        // A copy that died half-way left this file; it was never the store.
        remove_database(&building);
        let built = SqliteStore::copy_into_file(&building, clock, keyring, body);
        let value = match built {
            Ok(value) => value,
            Err(error) => {
                remove_database(&building);
                return Err(error);
            }
        };
        let linked = std::fs::hard_link(&building, path);
        remove_database(&building);
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => return Err(taken()),
            Err(error) => {
                return Err(StateError::Backend(format!(
                    "could not move the copied state store into place at {}: {error}",
                    path.display()
                )));
            }
        }
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty())
            && let Err(error) = std::fs::File::open(parent).and_then(|directory| directory.sync_all())
        {
            return Err(StateError::Backend(format!("could not sync {} after the copy: {error}", parent.display())));
        }
        Ok(value)
    }

    fn copy_into_file<T>(
        path: &Path,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
        body: impl FnOnce(&mut dyn CopyTarget) -> Result<T>,
    ) -> Result<T> {
        let store = SqliteStore::open_with(path, clock, Sealer::new(Some(keyring)), KeyringAdoption::CheckRecorded)?;
        let value =
            store.write("copy into the new state store", |transaction| body(&mut SqliteCopy { transaction }))?;
        // One self-contained file (no WAL beside it) before it is linked into place.
        let connection = store.lock_connection();
        connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .context("checkpoint the copied state store")?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
            .context("leave WAL mode in the copied state store")?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StateError::Backend(format!(
                "the copied state store at {} stayed in `{mode}` journal mode",
                path.display()
            )));
        }
        drop(connection);
        drop(store);
        Ok(value)
    }
}
