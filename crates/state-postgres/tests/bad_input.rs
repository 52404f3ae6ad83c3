//! Bad input to a PostgreSQL state store: each a clear error naming what and
//! where, and nothing changed.

mod support;

use std::sync::Arc;

use mayfly_core::{Clock, ManualClock, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::StateError;
use mayfly_state_postgres::{PostgresStore, current_schema_version};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000)))
}

fn schema_version(url: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client.query_one("SELECT version FROM mayfly_schema", &[]).expect("read the schema version").get(0)
}

#[test]
fn a_schema_newer_than_this_build_is_refused_and_left_as_it_is() {
    let database = support::TestDatabase::create();
    drop(PostgresStore::open(&database.url, clock()).expect("create the schema"));
    assert_eq!(schema_version(&database.url), current_schema_version());
    let newer = current_schema_version() + 5;
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).expect("connect");
    client.execute("UPDATE mayfly_schema SET version = $1", &[&newer]).expect("pretend a newer Mayfly wrote it");

    let error = PostgresStore::open(&database.url, clock()).expect_err("a newer schema is refused");
    match &error {
        StateError::SchemaTooNew { path, found, known } => {
            assert_eq!((*found, *known), (newer, current_schema_version()));
            assert!(path.contains(&database.name), "the error names the database: {path}");
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(error.to_string().contains("upgrade Mayfly"), "{error}");
    assert_eq!(schema_version(&database.url), newer, "nothing changed");
}

#[test]
fn an_unreachable_server_is_named_without_its_password() {
    // Port 1 on the loopback: nothing listens there.
    let error = PostgresStore::open("postgres://mayfly:s3cret-pw@127.0.0.1:1/state", clock())
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(
        message.contains("cannot connect to the PostgreSQL state store at postgres://mayfly@127.0.0.1:1/state"),
        "{message}"
    );
    assert!(!message.contains("s3cret-pw"), "the password leaked: {message}");
}

#[test]
fn a_url_that_is_not_a_postgres_url_is_refused_without_its_password() {
    let error =
        PostgresStore::open("postgres://mayfly:s3cret-pw@127.0.0.1:notaport/state", clock()).expect_err("not a port");
    let message = error.to_string();
    assert!(message.contains("is not a PostgreSQL URL"), "{message}");
    assert!(!message.contains("s3cret-pw"), "the password leaked: {message}");
    for url in [
        "postgres://mayfly@127.0.0.1:notaport/state?sslmode=require&password=s3cret-pw",
        "host=127.0.0.1 port=notaport password=s3cret-pw dbname=state",
    ] {
        let message = PostgresStore::open(url, clock()).expect_err("not a port").to_string();
        assert!(message.contains("is not a PostgreSQL URL") && message.contains("password=***"), "{message}");
        assert!(!message.contains("s3cret-pw"), "the password leaked: {message}");
    }
}

#[test]
fn a_plaintext_store_is_not_opened_sealed_nor_a_sealed_one_in_plaintext() {
    let plain = support::TestDatabase::create();
    drop(PostgresStore::open(&plain.url, clock()).expect("create a plaintext store"));
    let keyring = Arc::new(Keyring::generate(clock().now()));
    let error = PostgresStore::open_encrypted(&plain.url, clock(), keyring.clone()).expect_err("plaintext store");
    assert!(error.to_string().contains("holds plaintext payloads"), "{error}");

    let sealed = support::TestDatabase::create();
    drop(PostgresStore::open_encrypted(&sealed.url, clock(), keyring.clone()).expect("create a sealed store"));
    let error = PostgresStore::open(&sealed.url, clock()).expect_err("sealed store");
    assert!(error.to_string().contains("holds sealed payloads"), "{error}");
    // Opening it again with its keyring works: the item key it made is read back.
    PostgresStore::open_encrypted(&sealed.url, clock(), keyring).expect("reopen with the keyring");
}
