//! A real PostgreSQL 15 server for the CLI's tests, and a fresh database per
//! test (as `crates/state-postgres/tests/support`): the server at
//! `MAYFLY_TEST_POSTGRES_URL` (scripts/test.sh starts one for the suite),
//! else the one `scripts/postgres.sh start` starts or finds.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of the test server's `postgres` database.
pub fn server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("MAYFLY_TEST_POSTGRES_URL") {
            return url;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let output = Command::new("bash").arg(script).arg("start").output().expect("run scripts/postgres.sh start");
        assert!(
            output.status.success(),
            "scripts/postgres.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the URL is UTF-8").trim().to_owned()
    })
}

/// A database of its own for one test, dropped (with any connection still
/// open to it) when this is dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn create() -> TestDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("mayfly_cli_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = admin();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop a stale test database");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        TestDatabase { url: database_url(&name), name }
    }

    /// A client on this database.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// `pg_dump` of the whole database, as text.
    pub fn dump(&self) -> Vec<u8> {
        let output = Command::new("/usr/lib/postgresql/15/bin/pg_dump")
            .arg("--dbname")
            .arg(&self.url)
            .output()
            .expect("run pg_dump");
        assert!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(error) = admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// The URL of database `name` on the test server.
pub fn database_url(name: &str) -> String {
    let (server, _) = server_url().rsplit_once('/').expect("the server URL names a database");
    format!("{server}/{name}")
}

/// A connection to the server's `postgres` database.
pub fn admin() -> postgres::Client {
    postgres::Client::connect(server_url(), postgres::NoTls).expect("connect to the test PostgreSQL server")
}

/// The TLS test server (`scripts/postgres.sh start-tls`, or the one at
/// `MAYFLY_TEST_POSTGRES_TLS_URL`): only TLS connections, a certificate
/// naming only `localhost`; its URL (verify-full, its CA file) by `localhost`.
pub fn tls_server_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("MAYFLY_TEST_POSTGRES_TLS_URL") {
            return url;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let output =
            Command::new("bash").arg(script).arg("start-tls").output().expect("run scripts/postgres.sh start-tls");
        assert!(
            output.status.success(),
            "scripts/postgres.sh start-tls failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the URL is UTF-8").trim().to_owned()
    })
}

/// Run `sql` on the TLS server's `postgres` database with psql (verify-full).
pub fn tls_admin(sql: &str) {
    let output = Command::new("psql")
        .arg(tls_server_url())
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("run psql");
    assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
}
