//! Copying a whole store into another backend, table by table (`mayfly
//! state migrate`): what both backends agree on, so that a backend only
//! reads and writes rows of its own SQL and the caller (the host's
//! `migrate`) drives the copy and checks it.
//!
//! Every backend keeps the same data tables ([`TABLES`]) with the same
//! column names; a value crosses as a [`Value`] and is stored by the
//! target's column type. Sealed values cross as the bytes (or base64 text)
//! they are stored as, never opened: every envelope's context names only
//! ids the copy keeps (`message/{id}/body`, `run/{run}/item/{item}`, …), and
//! the item lookup key crosses sealed in [`Sealing`]. Numbers that are
//! never reused (AUTOINCREMENT on SQLite, sequences and counters on
//! PostgreSQL) cross as "the last number handed out" of each numbered table.
//!
//! [`Checksum`] is computed by the caller from the values read on each side,
//! in key order, so the backends' own hash functions never need to agree.

use ring::digest;

use crate::Result;

/// One value of one column, as it crosses between backends. SQLite's
/// integers (booleans included) are `Integer`, PostgreSQL's `boolean` is
/// `Integer` 0 or 1; text and bytes are kept apart for the target's column
/// type but compare alike in the [`Checksum`] (a payload column is `BYTEA`
/// on PostgreSQL and may hold text on SQLite).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A data table every backend keeps: its name, the columns of its primary
/// (or unique) key, in which order rows are read and compared, and the
/// column numbered by a number never reused, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedTable {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub numbered: Option<&'static str>,
}

const fn table(name: &'static str, key: &'static [&'static str], numbered: Option<&'static str>) -> CopiedTable {
    CopiedTable { name, key, numbered }
}

/// Every data table, parents before the tables that refer to them (the
/// order rows are written in). The control plane's leases are not data and
/// are not copied: a migrated store starts with no leader.
pub const TABLES: &[CopiedTable] = &[
    table("deployments", &["version"], Some("version")),
    table("buckets", &["name"], None),
    table("object_events", &["sequence"], Some("sequence")),
    table("consumer_cursors", &["consumer"], None),
    table("queues", &["queue_id"], Some("queue_id")),
    table("messages", &["message_id"], Some("message_id")),
    table("invocations", &["id"], Some("id")),
    table("invocation_logs", &["invocation_id"], None),
    table("runs", &["run_seq"], Some("run_seq")),
    table("run_items", &["item_seq"], Some("item_seq")),
    table("results", &["job", "item"], None),
    table("run_workers", &["run_seq", "worker"], None),
    table("run_item_attempts", &["item_seq", "attempt"], None),
    table("run_item_messages", &["item_seq"], None),
    table("audits", &["audit_id"], Some("audit_id")),
    table("audit_findings", &["audit_id", "position"], None),
    table("api_tokens", &["token_seq"], Some("token_seq")),
    table("access_log", &["id"], Some("id")),
    table("experiments", &["experiment_id"], Some("experiment_id")),
];

/// The table of [`TABLES`] called `name`.
pub fn copied_table(name: &str) -> Option<&'static CopiedTable> {
    TABLES.iter().find(|table| table.name == name)
}

/// How a store seals: its `payloads` setting (`envelope-v2` when every
/// payload, error text, report and item id is sealed), its item lookup
/// key, sealed (base64 of the envelope, bound to `store/item-key`), and the
/// identities of the keys recorded as possibly having sealed its data (by
/// id; see [`crate::keys_to_record`]), which a copy carries so that the new
/// store refuses a keyring the old one would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    pub payloads: Option<String>,
    pub item_key: Option<String>,
    pub keys: Vec<crate::KeyIdentity>,
}

/// The `payloads` setting of a store that seals everything it should.
pub const SEALED_PAYLOADS: &str = "envelope-v2";

/// Reading a store for a copy, all in one snapshot (one read transaction).
pub trait CopySource {
    /// The store's data tables, by name (its own bookkeeping left out:
    /// settings, schema version, counters).
    fn tables(&mut self) -> Result<Vec<String>>;
    /// The columns of `table`, in the table's order.
    fn columns(&mut self, table: &str) -> Result<Vec<String>>;
    /// How many rows `table` holds.
    fn count_rows(&mut self, table: &str) -> Result<u64>;
    /// Every row of `table` (its `columns`, in that order), in key order
    /// (text keys by byte).
    fn read_rows(
        &mut self,
        table: &CopiedTable,
        columns: &[String],
        each: &mut dyn FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()>;
    /// The last number handed out for `table`'s numbered column (0 if none):
    /// at least its largest value, more if newer rows were deleted.
    fn last_number(&mut self, table: &CopiedTable) -> Result<i64>;
    /// How the store seals.
    fn sealing(&mut self) -> Result<Sealing>;
}

/// Writing a copy into a new store, all in one transaction that commits
/// only if the whole copy was written and checked; it can be read back
/// before the commit.
pub trait CopyTarget: CopySource {
    /// Insert `rows` (their `columns`, in that order) into `table`.
    fn write_rows(&mut self, table: &CopiedTable, columns: &[String], rows: &[Vec<Value>]) -> Result<()>;
    /// Make `number` the last number handed out for `table` (never lower it).
    fn set_last_number(&mut self, table: &CopiedTable, number: i64) -> Result<()>;
    /// Record the source's sealing (its item lookup key and its recorded
    /// keys replacing any the new store made).
    fn set_sealing(&mut self, sealing: &Sealing) -> Result<()>;
}

/// SHA-256 over rows in a canonical form: each value tagged by kind (null,
/// integer, real, bytes — text and bytes alike), lengths explicit, so equal
/// checksums mean equal rows in equal order whichever backend read them.
pub struct Checksum {
    context: digest::Context,
    rows: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum { context: digest::Context::new(&digest::SHA256), rows: 0 }
    }
}

impl Checksum {
    pub fn new() -> Checksum {
        Checksum::default()
    }

    /// Add one row.
    pub fn add(&mut self, row: &[Value]) {
        self.context.update(&(row.len() as u64).to_be_bytes());
        for value in row {
            match value {
                Value::Null => self.context.update(&[0]),
                Value::Integer(number) => {
                    self.context.update(&[1]);
                    self.context.update(&number.to_be_bytes());
                }
                Value::Real(number) => {
                    self.context.update(&[2]);
                    self.context.update(&number.to_bits().to_be_bytes());
                }
                Value::Text(text) => self.add_bytes(text.as_bytes()),
                Value::Bytes(bytes) => self.add_bytes(bytes),
            }
        }
        self.rows += 1;
    }

    fn add_bytes(&mut self, bytes: &[u8]) {
        self.context.update(&[3]);
        self.context.update(&(bytes.len() as u64).to_be_bytes());
        self.context.update(bytes);
    }

    /// How many rows were added.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The checksum, hex.
    pub fn finish(self) -> String {
        hex::encode(self.context.finish().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(rows: &[Vec<Value>]) -> String {
        let mut checksum = Checksum::new();
        for row in rows {
            checksum.add(row);
        }
        checksum.finish()
    }

    #[test]
    fn equal_rows_in_equal_order_have_equal_checksums_and_any_difference_shows() {
        let rows = vec![
            vec![Value::Integer(1), Value::Text("a".into()), Value::Null],
            vec![Value::Integer(2), Value::Bytes(b"b".to_vec()), Value::Real(0.5)],
        ];
        let same = vec![
            vec![Value::Integer(1), Value::Bytes(b"a".to_vec()), Value::Null],
            vec![Value::Integer(2), Value::Text("b".into()), Value::Real(0.5)],
        ];
        assert_eq!(checksum(&rows), checksum(&same), "text and bytes compare alike");
        let mut reordered = rows.clone();
        reordered.reverse();
        assert_ne!(checksum(&rows), checksum(&reordered));
        let mut changed = rows.clone();
        changed[1][2] = Value::Real(0.25);
        assert_ne!(checksum(&rows), checksum(&changed));
        let mut null_for_empty = rows.clone();
        null_for_empty[0][2] = Value::Text(String::new());
        assert_ne!(checksum(&rows), checksum(&null_for_empty));
        let split = vec![vec![Value::Text("ab".into()), Value::Text("c".into())]];
        let moved = vec![vec![Value::Text("a".into()), Value::Text("bc".into())]];
        assert_ne!(checksum(&split), checksum(&moved), "value boundaries count");
        assert_ne!(checksum(&[vec![Value::Integer(1)]]), checksum(&[vec![Value::Real(1.0)]]));
        assert_eq!(TABLES.len(), 19);
    }
}
