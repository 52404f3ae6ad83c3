//! The connection pool: `r2d2` over `r2d2_postgres`'s manager, each pooled
//! connection carrying the statements prepared on it.
//!
//! Two round trips per call are saved on the hot paths (queue receive and
//! delete, see `queues.rs`): a statement is prepared once per connection
//! and then only bound and executed ([`PreparedStatements`]), and a
//! connection used within the last [`TRUSTED_FOR`] is handed out without
//! `r2d2`'s probe (an empty query) — a busy store probes nothing, an idle
//! one still finds a connection the server dropped before using it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mayfly_state::Result;
use postgres::{Client, Statement};
use r2d2_postgres::PostgresConnectionManager;
use r2d2_postgres::r2d2;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::errors::PgResultExt;

/// How long after its last use a pooled connection is handed out without a
/// probe. A server that dropped it within that time fails that one call (as
/// it would fail a call it drops midway); after it, the probe finds the
/// loss and `r2d2` connects afresh.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

pub(crate) type Pool = r2d2::Pool<Manager>;

/// `r2d2_postgres`'s manager, its connections wrapped with their statements.
pub(crate) struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
}

impl Manager {
    pub(crate) fn new(config: postgres::Config, tls: MakeRustlsConnect) -> Manager {
        Manager { inner: PostgresConnectionManager::new(config, tls) }
    }
}

/// A pooled connection: the client, the statements prepared on it, and
/// when a call last used it.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) statements: PreparedStatements,
    last_used: Instant,
}

impl Connection {
    /// Note a call that used the connection (whether it succeeded or not:
    /// a failed statement leaves the connection usable).
    pub(crate) fn used(&mut self) {
        self.last_used = Instant::now();
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Connection, postgres::Error> {
        Ok(Connection {
            client: self.inner.connect()?,
            statements: PreparedStatements::default(),
            last_used: Instant::now(),
        })
    }

    fn is_valid(&self, connection: &mut Connection) -> std::result::Result<(), postgres::Error> {
        if connection.last_used.elapsed() < TRUSTED_FOR && !connection.client.is_closed() {
            return Ok(());
        }
        self.inner.is_valid(&mut connection.client)
    }

    fn has_broken(&self, connection: &mut Connection) -> bool {
        self.inner.has_broken(&mut connection.client)
    }
}

/// The statements prepared on one connection, by their SQL. PostgreSQL
/// keeps a prepared statement for the session whatever becomes of the
/// transaction that prepared it, so one prepared inside a transaction that
/// rolls back stays usable.
#[derive(Default)]
pub(crate) struct PreparedStatements {
    by_sql: HashMap<&'static str, Statement>,
}

impl PreparedStatements {
    /// The statement `sql`, prepared on this connection (through `client`,
    /// the connection or a transaction on it) on its first use.
    pub(crate) fn get(&mut self, client: &mut impl postgres::GenericClient, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.by_sql.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).context("prepare a statement")?;
        self.by_sql.insert(sql, statement.clone());
        Ok(statement)
    }
}
