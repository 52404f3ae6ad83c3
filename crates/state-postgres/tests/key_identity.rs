//! A PostgreSQL store records the identity of every key that may have
//! sealed its data, as the embedded store does, and refuses a keyring that
//! lacks one — including a keyring that holds the key that sealed the item
//! lookup key (so the older check passed it) but not a later one.

mod support;

use std::sync::Arc;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{ManualClock, Name, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::prelude::*;
use mayfly_state::{OutgoingMessage, ReceiveRequest, StateError};
use mayfly_state_postgres::{PostgresStore, parse_url};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000)))
}

fn send(store: &PostgresStore, body: &str) {
    let queue = Name::new("charts").unwrap();
    let message = OutgoingMessage { body: body.as_bytes().to_vec(), attributes: Vec::new(), delay: None };
    store.send_messages(&queue, &[message]).expect("send");
}

fn refused_for(result: mayfly_state::Result<PostgresStore>) -> Vec<String> {
    match result {
        Err(StateError::KeyringLacksKeys { path, missing }) => {
            assert!(path.contains("postgres"), "the refusal names the store: {path}");
            missing
        }
        Err(other) => panic!("expected KeyringLacksKeys, got {other}"),
        Ok(_) => panic!("a keyring lacking a recorded key opened the store"),
    }
}

#[test]
fn a_keyring_lacking_a_later_key_is_refused_though_it_holds_the_first() {
    let database = support::TestDatabase::create();
    let first = Keyring::generate(Timestamp::from_millis(1));
    let store = PostgresStore::open_encrypted(&database.url, clock(), Arc::new(first.clone())).expect("open");
    store.create_queue(&Name::new("charts").unwrap(), &QueueConfig::default(), &[]).expect("create a queue");
    send(&store, "sealed by the first key");

    // Rotated: the new key is recorded before it seals anything.
    let mut rotated = first.clone();
    let second = rotated.rotate(Timestamp::from_millis(2)).id().to_owned();
    store.replace_keyring(Arc::new(rotated.clone())).expect("take up the rotated keyring");
    send(&store, "sealed by the second key");
    assert_eq!(store.recorded_key_ids().unwrap(), vec![first.current().id().to_owned(), second.clone()]);
    drop(store);

    // Another host's keyring: the first key (which sealed the item lookup
    // key), and a key of its own instead of the second.
    let mut stray = first.clone();
    stray.rotate(Timestamp::from_millis(3));
    assert_eq!(
        refused_for(PostgresStore::open_encrypted(&database.url, clock(), Arc::new(stray.clone()))),
        vec![second.clone()]
    );

    // The right keyring still opens it and reads both messages.
    let store = PostgresStore::open_encrypted(&database.url, clock(), Arc::new(rotated.clone())).expect("reopen");
    let received = store.receive_messages(&Name::new("charts").unwrap(), ReceiveRequest::up_to(10)).expect("receive");
    assert_eq!(received.len(), 2);

    // Taking up the stray keyring on an open store is refused too, and the
    // store keeps sealing with the one it has: nothing of the stray's recorded.
    match store.replace_keyring(Arc::new(stray.clone())) {
        Err(StateError::KeyringLacksKeys { missing, .. }) => assert_eq!(missing, vec![second.clone()]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(store.recorded_key_ids().unwrap(), vec![first.current().id().to_owned(), second.clone()]);
    send(&store, "still sealed by the second key");
    drop(store);
    let store = PostgresStore::open_encrypted(&database.url, clock(), Arc::new(rotated)).expect("reopen again");
    let queue = Name::new("charts").unwrap();
    let received = store.receive_messages(&queue, ReceiveRequest::up_to(10)).expect("receive");
    assert!(received.iter().any(|message| message.body == b"still sealed by the second key"));
}

#[test]
fn a_keyring_replacing_a_lost_one_is_recorded_only_when_asked_for() {
    let database = support::TestDatabase::create();
    let lost = Keyring::generate(Timestamp::from_millis(1));
    let store = PostgresStore::open_encrypted(&database.url, clock(), Arc::new(lost.clone())).expect("open");
    store.create_queue(&Name::new("charts").unwrap(), &QueueConfig::default(), &[]).expect("create a queue");
    drop(store);

    let new = Keyring::generate(Timestamp::from_millis(5));
    assert_eq!(
        refused_for(PostgresStore::open_encrypted(&database.url, clock(), Arc::new(new.clone()))),
        vec![lost.current().id().to_owned()]
    );

    let target = parse_url(&database.url).expect("parse the URL");
    let (store, forgotten) =
        PostgresStore::open_encrypted_replacing_lost_keyring(target, clock(), Arc::new(new.clone())).expect("replace");
    assert_eq!(forgotten, vec![lost.current().id().to_owned()]);
    assert_eq!(store.recorded_key_ids().unwrap(), vec![new.current().id().to_owned()]);
    send(&store, "sealed by the new keyring");
    drop(store);

    PostgresStore::open_encrypted(&database.url, clock(), Arc::new(new)).expect("the new keyring opens it");
    assert_eq!(refused_for(PostgresStore::open_encrypted(&database.url, clock(), Arc::new(lost.clone()))).len(), 1);
}
