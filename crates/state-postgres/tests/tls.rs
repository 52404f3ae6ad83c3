//! TLS to a real PostgreSQL server (`scripts/postgres.sh start-tls`: only
//! TLS connections, a certificate naming only `localhost`): verify-full
//! connects and runs; a wrong CA, a host name the certificate does not
//! name (under verify-full) and a server without TLS (under require) are
//! each refused with an error naming the server and the reason, and nothing
//! is changed.

mod support;

use std::sync::Arc;

use mayfly_core::{ManualClock, Name, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::BucketRegistry;
use mayfly_state_postgres::PostgresStore;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000)))
}

fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::generate(Timestamp::from_millis(1_795_588_702_000)))
}

/// Whether `database` on the TLS server holds a store (read over a verified connection).
fn holds_store(server: &support::TlsServer, database: &str) -> bool {
    let target =
        mayfly_state_postgres::parse_url(&server.url("localhost", database, "verify-full", Some(&server.ca_file)))
            .expect("parse");
    PostgresStore::holds_store(&target).expect("look")
}

#[test]
fn verify_full_connects_over_tls_and_runs() {
    let server = support::tls_server();
    let database = server.database();
    let url = server.url("localhost", &database.name, "verify-full", Some(&server.ca_file));
    let store = PostgresStore::open_encrypted(&url, clock(), keyring()).expect("open over verify-full");
    let bucket = Name::new("charts").unwrap();
    store.create_bucket(&bucket, &[]).expect("create a bucket");
    assert_eq!(store.buckets().expect("list").len(), 1);
    // The connection is encrypted (the server refuses any other, too).
    let mut client = mayfly_state_postgres::parse_url(&url).unwrap().connect().expect("connect");
    let encrypted: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .expect("read pg_stat_ssl")
        .get(0);
    assert!(encrypted, "the connection uses TLS");
    let disabled = server.url("localhost", &database.name, "disable", None);
    let error = PostgresStore::open(&disabled, clock()).expect_err("the server takes only TLS");
    assert!(error.to_string().contains("no encryption"), "{error}");
}

#[test]
fn a_certificate_from_another_authority_is_refused_and_nothing_changes() {
    let server = support::tls_server();
    let database = server.database();
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other_ca, params.self_signed(&key).unwrap().pem()).unwrap();
    let other_ca = other_ca.display().to_string();

    for mode in ["verify-full", "verify-ca", "require"] {
        let url = server.url("localhost", &database.name, mode, Some(&other_ca));
        let error =
            PostgresStore::open_encrypted(&url, clock(), keyring()).expect_err("another CA is refused").to_string();
        let wanted =
            format!("cannot connect to the PostgreSQL state store at postgres://postgres@localhost:{}/", server.port);
        assert!(error.contains(&wanted), "{mode}: {error}");
        assert!(
            error.contains(&format!("the server's certificate is not signed by an authority in {other_ca}")),
            "{mode}: {error}"
        );
    }
    assert!(!holds_store(server, &database.name), "nothing was created");
}

#[test]
fn a_host_name_the_certificate_does_not_name_is_refused_under_verify_full_only() {
    let server = support::tls_server();
    let database = server.database();
    let url = server.url("127.0.0.1", &database.name, "verify-full", Some(&server.ca_file));
    let error =
        PostgresStore::open_encrypted(&url, clock(), keyring()).expect_err("127.0.0.1 is not named").to_string();
    assert!(error.contains(&format!("at postgres://postgres@127.0.0.1:{}/{}", server.port, database.name)), "{error}");
    assert!(error.contains("the server's certificate does not name `127.0.0.1`"), "{error}");
    assert!(!holds_store(server, &database.name), "nothing was created");

    let url = server.url("127.0.0.1", &database.name, "verify-ca", Some(&server.ca_file));
    let store = PostgresStore::open_encrypted(&url, clock(), keyring()).expect("verify-ca checks only the authority");
    store.create_bucket(&Name::new("charts").unwrap(), &[]).expect("create a bucket");
    assert!(holds_store(server, &database.name));
}

#[test]
fn a_server_without_tls_is_refused_under_require_and_nothing_changes() {
    let database = support::TestDatabase::create();
    let url = format!("{}?sslmode=require", database.url);
    let error = PostgresStore::open_encrypted(&url, clock(), keyring()).expect_err("no TLS, no connection").to_string();
    assert!(
        error.contains("cannot connect to the PostgreSQL state store at postgres://postgres@127.0.0.1:"),
        "{error}"
    );
    assert!(error.contains("the server does not offer TLS, and sslmode=require insists on it"), "{error}");
    let plain = mayfly_state_postgres::parse_url(&database.url).unwrap();
    assert!(!PostgresStore::holds_store(&plain).unwrap(), "nothing was created");
    // prefer (the default) falls back to plaintext on such a server.
    drop(PostgresStore::open(&format!("{}?sslmode=prefer", database.url), clock()).expect("prefer connects"));
}
