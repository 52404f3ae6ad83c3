//! A real PostgreSQL 15 server for the tests, and a fresh database per test.
//!
//! The server is the one at `MAYFLY_TEST_POSTGRES_URL` (scripts/test.sh
//! starts one for the whole suite), else the one `scripts/postgres.sh start`
//! starts or finds: its own data directory under the temporary directory,
//! its own port, shared by every test process under a lock. Each test gets
//! a database of its own, dropped when the test ends.

#![allow(dead_code)]

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
        let name = format!("mayfly_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut admin = admin();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop a stale test database");
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        let (server, _) = server_url().rsplit_once('/').expect("the server URL names a database");
        TestDatabase { url: format!("{server}/{name}"), name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Err(error) = admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}

/// A connection to the server's `postgres` database.
pub fn admin() -> postgres::Client {
    postgres::Client::connect(server_url(), postgres::NoTls).expect("connect to the test PostgreSQL server")
}

/// The TLS test server (`scripts/postgres.sh start-tls`, or the one at
/// `MAYFLY_TEST_POSTGRES_TLS_URL`): it takes only TLS connections, its
/// certificate names only `localhost`, and `ca_file` is its CA.
pub struct TlsServer {
    pub port: u16,
    pub ca_file: String,
}

pub fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let url = match std::env::var("MAYFLY_TEST_POSTGRES_TLS_URL") {
            Ok(url) => url,
            Err(_) => {
                let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
                let output = Command::new("bash")
                    .arg(script)
                    .arg("start-tls")
                    .output()
                    .expect("run scripts/postgres.sh start-tls");
                assert!(
                    output.status.success(),
                    "scripts/postgres.sh start-tls failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8(output.stdout).expect("the URL is UTF-8").trim().to_owned()
            }
        };
        let port = url.split("localhost:").nth(1).and_then(|rest| rest.split('/').next()).expect("a port");
        let ca_file = url.split("sslrootcert=").nth(1).expect("the URL names the CA file").to_owned();
        TlsServer { port: port.parse().expect("a port number"), ca_file }
    })
}

impl TlsServer {
    /// A URL to `database` on this server by `host`, with `sslmode` and `ca_file`.
    pub fn url(&self, host: &str, database: &str, sslmode: &str, ca_file: Option<&str>) -> String {
        let ca = ca_file.map(|file| format!("&sslrootcert={file}")).unwrap_or_default();
        format!("postgres://postgres@{host}:{}/{database}?sslmode={sslmode}{ca}", self.port)
    }

    /// A database of its own on the TLS server, dropped with the guard.
    pub fn database(&'static self) -> TlsDatabase {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("mayfly_tls_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.admin().batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        TlsDatabase { server: self, name }
    }

    /// A verified connection to the server's `postgres` database.
    pub fn admin(&self) -> postgres::Client {
        mayfly_state_postgres::parse_url(&self.url("localhost", "postgres", "verify-full", Some(&self.ca_file)))
            .and_then(|target| target.connect())
            .expect("connect to the TLS test server")
    }
}

pub struct TlsDatabase {
    pub server: &'static TlsServer,
    pub name: String,
}

impl Drop for TlsDatabase {
    fn drop(&mut self) {
        if let Err(error) =
            self.server.admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
