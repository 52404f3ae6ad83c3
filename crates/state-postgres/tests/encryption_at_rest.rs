//! No user data reaches PostgreSQL in plaintext from a sealed store: a
//! `pg_dump` of the whole database holds no trace of a marker sent in a
//! message's body and attributes and recorded in an invocation's error
//! message and logs — while a plaintext store's dump does, so the scan can fail.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, ManualClock, Name, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::prelude::*;
use mayfly_state::{InvocationRecord, OutgoingMessage, ReceiveRequest};
use mayfly_state_postgres::PostgresStore;

const MARKER: &str = "PATIENT-MRN-5551234-marker";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Send the marker in a body and an attribute, receive it once (leased and
/// back), and dump the database. Returns whether the dump shows the marker,
/// as text or as the hex `pg_dump` writes `bytea` in.
fn dump_shows_marker(store_for: impl FnOnce(&str, Arc<ManualClock>) -> PostgresStore) -> bool {
    let database = support::TestDatabase::create();
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000)));
    let store = store_for(&database.url, clock);
    let queue = Name::new("charts").unwrap();
    store.create_queue(&queue, &QueueConfig::default(), &[]).expect("create a queue");
    let message = OutgoingMessage {
        body: format!("chart of {MARKER}").into_bytes(),
        attributes: vec![("mrn".to_owned(), MARKER.to_owned())],
        delay: None,
    };
    store.send_messages(&queue, &[message]).expect("send");
    let received = store.receive_messages(&queue, ReceiveRequest::up_to(1)).expect("receive");
    assert_eq!(received.len(), 1);
    assert!(String::from_utf8_lossy(&received[0].body).contains(MARKER), "the store reads its own message back");

    let invocation = InvocationRecord {
        request_id: "request-1".to_owned(),
        function: Name::new("coder").unwrap(),
        deployment_version: None,
        trigger: "queue:charts".to_owned(),
        attempt: 1,
        started_at: Timestamp::from_millis(1_795_588_702_000),
        duration: Duration::from_millis(12),
        init_duration: None,
        outcome: "error".to_owned(),
        error_type: Some("ValueError".to_owned()),
        error_message: Some(format!("cannot code {MARKER}")),
        peak_memory: None,
        bytes_in: 10,
        bytes_out: 0,
        estimated_cost: 0.0,
    };
    store.record_invocation(&invocation, format!("stderr: {MARKER}\n").as_bytes()).expect("record an invocation");
    let recorded = store.invocation_logs("request-1").expect("read the logs back");
    assert!(String::from_utf8_lossy(&recorded).contains(MARKER));

    let pg_dump = std::env::var("MAYFLY_PG_DUMP").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_dump".to_owned());
    let output = Command::new(&pg_dump).arg("--dbname").arg(&database.url).output().expect("run pg_dump");
    assert!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
    let dump = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(dump.contains("create table public.messages"), "the dump holds the messages table");
    dump.contains(&MARKER.to_lowercase()) || dump.contains(&hex(MARKER.as_bytes()))
}

#[test]
fn a_sealed_store_keeps_no_user_data_in_plaintext_in_postgresql() {
    let shown = dump_shows_marker(|url, clock| {
        let keyring = Arc::new(Keyring::generate(clock.now()));
        PostgresStore::open_encrypted(url, clock, keyring).expect("open a sealed store")
    });
    assert!(!shown, "a pg_dump of a sealed store holds the marker in plaintext");
}

#[test]
fn the_scan_finds_the_marker_in_a_plaintext_store() {
    let shown = dump_shows_marker(|url, clock| PostgresStore::open(url, clock).expect("open a plaintext store"));
    assert!(shown, "the scan must see the marker where it is stored in plaintext");
}
