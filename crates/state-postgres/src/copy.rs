//! Copying a store to or from another backend (`mayfly state migrate`, see
//! [`mayfly_state::copy`]): rows of the data tables as they are stored
//! (sealed values as their bytes, never opened), each value stored by the
//! target column's type; the numbers never reused (`mayfly_counters` rows
//! and `BIGSERIAL` sequences); the sealing settings of `mayfly_settings`.
//!
//! A copy into PostgreSQL creates the schema and writes every row in one
//! transaction, so a failed copy leaves the database as it was: without a
//! Mayfly store.

use std::collections::HashMap;

use mayfly_state::copy::{CopiedTable, CopySource, CopyTarget, Sealing, Value};
use mayfly_state::{Result, StateError};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};

use crate::errors::PgResultExt;
use crate::{ConnectTarget, ITEM_KEY_SETTING, PostgresStore, describe, schema};

/// Tables of the store's own bookkeeping, not data: never copied as rows
/// (the control plane's leases included: a migrated store has no leader).
const OWN_TABLES: &[&str] = &["mayfly_schema", "mayfly_settings", "mayfly_counters", "leases"];

/// The numbered tables whose numbers are `mayfly_counters` rows (they
/// follow commit order); the other numbered columns are `BIGSERIAL`.
const COUNTERS: &[&str] = &["deployments", "object_events", "invocations", "access_log"];

/// One snapshot (a repeatable-read transaction) or one write transaction of a copy.
struct PgCopy<'a, 'b> {
    transaction: &'a mut postgres::Transaction<'b>,
    /// Each table's columns and their types (`information_schema`'s names).
    columns: HashMap<String, Vec<(String, String)>>,
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl PgCopy<'_, '_> {
    fn column_types(&mut self, table: &str) -> Result<&[(String, String)]> {
        if !self.columns.contains_key(table) {
            let rows = self
                .transaction
                .query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                    &[&table],
                )
                .with_context(|| format!("read the columns of `{table}`"))?;
            let columns = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
            self.columns.insert(table.to_owned(), columns);
        }
        Ok(&self.columns[table])
    }
}

impl CopySource for PgCopy<'_, '_> {
    fn tables(&mut self) -> Result<Vec<String>> {
        let rows = self
            .transaction
            .query("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename", &[])
            .context("list the tables")?;
        Ok(rows.iter().map(|row| row.get::<_, String>(0)).filter(|name| !OWN_TABLES.contains(&name.as_str())).collect())
    }

    fn columns(&mut self, table: &str) -> Result<Vec<String>> {
        Ok(self.column_types(table)?.iter().map(|(name, _)| name.clone()).collect())
    }

    fn count_rows(&mut self, table: &str) -> Result<u64> {
        let count: i64 = self
            .transaction
            .query_one(&format!("SELECT count(*) FROM {}", quoted(table)), &[])
            .with_context(|| format!("count the rows of `{table}`"))?
            .get(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn read_rows(
        &mut self,
        table: &CopiedTable,
        columns: &[String],
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let types = self.column_types(table.name)?.to_vec();
        let list: Vec<String> = columns.iter().map(|column| quoted(column)).collect();
        // Text keys by byte, as SQLite orders them, whatever the database's collation.
        let order: Vec<String> = table
            .key
            .iter()
            .map(|column| match types.iter().find(|(name, _)| name == column) {
                Some((_, kind)) if kind == "text" => format!("{} COLLATE \"C\"", quoted(column)),
                _ => quoted(column),
            })
            .collect();
        let sql = format!("SELECT {} FROM {} ORDER BY {}", list.join(", "), quoted(table.name), order.join(", "));
        let what = || format!("read the rows of `{}`", table.name);
        let mut rows = self.transaction.query_raw(sql.as_str(), std::iter::empty::<&dyn ToSql>()).with_context(what)?;
        while let Some(row) = rows.next().with_context(what)? {
            let mut values = Vec::with_capacity(columns.len());
            for (index, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(index).with_context(what)?.map(Value::Integer),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(index)
                        .with_context(what)?
                        .map(|number| Value::Integer(number.into())),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(index)
                        .with_context(what)?
                        .map(|flag| Value::Integer(flag.into())),
                    Type::FLOAT8 => row.try_get::<_, Option<f64>>(index).with_context(what)?.map(Value::Real),
                    Type::TEXT => row.try_get::<_, Option<String>>(index).with_context(what)?.map(Value::Text),
                    Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index).with_context(what)?.map(Value::Bytes),
                    ref other => {
                        return Err(StateError::Backend(format!(
                            "cannot copy column `{}.{}`: its type `{other}` is not one a state store uses",
                            table.name,
                            column.name()
                        )));
                    }
                };
                values.push(value.unwrap_or(Value::Null));
            }
            each(values)?;
        }
        Ok(())
    }

    fn last_number(&mut self, table: &CopiedTable) -> Result<i64> {
        let Some(column) = table.numbered else {
            return Ok(0);
        };
        let what = || format!("read the last number of `{}`", table.name);
        let handed_out: i64 = if COUNTERS.contains(&table.name) {
            self.transaction
                .query_one("SELECT value FROM mayfly_counters WHERE name = $1", &[&table.name])
                .with_context(what)?
                .get(0)
        } else {
            self.transaction
                .query_one(
                    "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence($1, $2)::regclass), 0)",
                    &[&table.name, &column],
                )
                .with_context(what)?
                .get(0)
        };
        let largest: i64 = self
            .transaction
            .query_one(&format!("SELECT COALESCE(MAX({}), 0) FROM {}", quoted(column), quoted(table.name)), &[])
            .with_context(what)?
            .get(0);
        Ok(handed_out.max(largest))
    }

    fn sealing(&mut self) -> Result<Sealing> {
        let mut setting = |name: &str| -> Result<Option<String>> {
            Ok(self
                .transaction
                .query_opt("SELECT value FROM mayfly_settings WHERE name = $1", &[&name])
                .with_context(|| format!("read the `{name}` setting"))?
                .map(|row| row.get(0)))
        };
        let item_key = setting(ITEM_KEY_SETTING)?;
        Ok(Sealing {
            payloads: setting("payloads")?,
            item_key,
            keys: crate::key_identity::recorded_keys(self.transaction)?,
        })
    }
}

/// `value` as a parameter for a column of type `kind`, or why it cannot be.
fn parameter(value: &Value, kind: &str) -> std::result::Result<Box<dyn ToSql + Sync>, String> {
    let mismatch = || format!("a {} cannot be stored in a `{kind}` column", describe_value(value));
    Ok(match (kind, value) {
        ("bigint", Value::Null) => Box::new(None::<i64>),
        ("bigint", Value::Integer(number)) => Box::new(*number),
        ("integer", Value::Null) => Box::new(None::<i32>),
        ("integer", Value::Integer(number)) => {
            Box::new(i32::try_from(*number).map_err(|_| format!("{number} is too large for an `integer` column"))?)
        }
        ("boolean", Value::Null) => Box::new(None::<bool>),
        ("boolean", Value::Integer(0)) => Box::new(false),
        ("boolean", Value::Integer(1)) => Box::new(true),
        ("double precision", Value::Null) => Box::new(None::<f64>),
        ("double precision", Value::Real(number)) => Box::new(*number),
        ("double precision", Value::Integer(number)) => Box::new(*number as f64),
        ("text", Value::Null) => Box::new(None::<String>),
        ("text", Value::Text(text)) => Box::new(text.clone()),
        ("bytea", Value::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", Value::Bytes(bytes)) => Box::new(bytes.clone()),
        ("bytea", Value::Text(text)) => Box::new(text.as_bytes().to_vec()),
        _ => return Err(mismatch()),
    })
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real number",
        Value::Text(_) => "text",
        Value::Bytes(_) => "byte string",
    }
}

impl CopyTarget for PgCopy<'_, '_> {
    fn write_rows(&mut self, table: &CopiedTable, columns: &[String], rows: &[Vec<Value>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let types = self.column_types(table.name)?.to_vec();
        let mut kinds = Vec::with_capacity(columns.len());
        for column in columns {
            match types.iter().find(|(name, _)| name == column) {
                Some((_, kind)) => kinds.push(kind.clone()),
                None => {
                    return Err(StateError::Backend(format!(
                        "cannot copy into `{}`: it has no column `{column}`",
                        table.name
                    )));
                }
            }
        }
        let mut parameters: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(rows.len() * columns.len());
        let mut tuples = Vec::with_capacity(rows.len());
        for row in rows {
            let mut places = Vec::with_capacity(columns.len());
            for ((value, kind), column) in row.iter().zip(&kinds).zip(columns) {
                let parameter = parameter(value, kind).map_err(|why| {
                    StateError::Backend(format!("cannot copy into column `{}.{column}`: {why}", table.name))
                })?;
                parameters.push(parameter);
                places.push(format!("${}", parameters.len()));
            }
            tuples.push(format!("({})", places.join(", ")));
        }
        let list: Vec<String> = columns.iter().map(|column| quoted(column)).collect();
        let sql = format!("INSERT INTO {} ({}) VALUES {}", quoted(table.name), list.join(", "), tuples.join(", "));
        let references: Vec<&(dyn ToSql + Sync)> = parameters.iter().map(|parameter| parameter.as_ref()).collect();
        self.transaction
            .execute(sql.as_str(), &references)
            .with_context(|| format!("write rows of `{}`", table.name))?;
        Ok(())
    }

    fn set_last_number(&mut self, table: &CopiedTable, number: i64) -> Result<()> {
        let Some(column) = table.numbered else {
            return Ok(());
        };
        let what = || format!("set the last number of `{}`", table.name);
        if COUNTERS.contains(&table.name) {
            self.transaction
                .execute(
                    "UPDATE mayfly_counters SET value = GREATEST(value, $2) WHERE name = $1",
                    &[&table.name, &number],
                )
                .with_context(what)?;
        } else if number > 0 {
            self.transaction
                .execute("SELECT setval(pg_get_serial_sequence($1, $2), $3, true)", &[&table.name, &column, &number])
                .with_context(what)?;
        }
        Ok(())
    }

    fn set_sealing(&mut self, sealing: &Sealing) -> Result<()> {
        for (name, value) in [("payloads", &sealing.payloads), (ITEM_KEY_SETTING, &sealing.item_key)] {
            let what = || format!("record the `{name}` setting");
            match value {
                Some(value) => self
                    .transaction
                    .execute(
                        "INSERT INTO mayfly_settings (name, value) VALUES ($1, $2) \
                         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        &[&name, value],
                    )
                    .with_context(what)?,
                None => self
                    .transaction
                    .execute("DELETE FROM mayfly_settings WHERE name = $1", &[&name])
                    .with_context(what)?,
            };
        }
        crate::key_identity::replace_with(self.transaction, &sealing.keys)
    }
}

impl PostgresStore {
    /// Read the whole store for a copy, in one snapshot (a read-only,
    /// repeatable-read transaction): `body` gets the rows as stored (sealed
    /// values never opened). Call it from a thread that drives no async
    /// runtime (the host runs a copy on a thread of its own).
    pub fn copy_from<T>(&self, body: impl FnOnce(&mut dyn CopySource) -> Result<T>) -> Result<T> {
        let mut connection = self.pool.get().map_err(|error| {
            StateError::Backend(format!("no connection to the PostgreSQL state store at {}: {error}", self.location))
        })?;
        let mut transaction = connection
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .context("start a snapshot to read the store for a copy")?;
        let value = body(&mut PgCopy { transaction: &mut transaction, columns: HashMap::new() })?;
        transaction.commit().context("finish reading the store for a copy")?;
        Ok(value)
    }

    /// Build a new store in the database `target` names (which must not
    /// hold one) by a copy: the schema is this backend's own, created in
    /// the same transaction in which `body` writes the rows and the sealing
    /// settings; it commits only if `body` returns `Ok`, so on any error the
    /// database is left as it was. Call it from a thread that drives no
    /// async runtime.
    pub fn copy_into_new<T>(target: &ConnectTarget, body: impl FnOnce(&mut dyn CopyTarget) -> Result<T>) -> Result<T> {
        let location = describe(&target.config);
        let mut client = target.connect()?;
        let mut transaction = client.transaction().context("start the copy's transaction")?;
        // Under the migration lock, so no other host creates a store here meanwhile.
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&schema::MIGRATION_LOCK])
            .context("take the migration lock")?;
        let holds: bool = transaction
            .query_one("SELECT to_regclass('mayfly_schema') IS NOT NULL", &[])
            .context("look for a state store")?
            .get(0);
        if holds {
            return Err(StateError::Conflict(format!(
                "the PostgreSQL database at {location} already holds a Mayfly state store: a copy goes only into a database without one; nothing was changed"
            )));
        }
        schema::migrate_in(&mut transaction, &location).map_err(|error| match error {
            StateError::Backend(message) => {
                StateError::Backend(format!("state store at {location}: cannot create the schema: {message}"))
            }
            other => other,
        })?;
        let value = body(&mut PgCopy { transaction: &mut transaction, columns: HashMap::new() })?;
        transaction.commit().context("commit the copy")?;
        Ok(value)
    }
}
