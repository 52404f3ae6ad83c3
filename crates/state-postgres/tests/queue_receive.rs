//! The PostgreSQL receive claims and leases a page in one statement and
//! then undoes, in the same transaction, the lease of every message it does
//! not hand out. These cases check the undone leases against the rows the
//! server holds (the conformance suite sees only what the trait returns):
//! a damaged message is set aside or dead-lettered with its receive count
//! as stored. (That a receive paging on past dead letters never hands a
//! zero-timeout lease out twice is a conformance case, for every backend.)

mod support;

use std::sync::Arc;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, ManualClock, Name, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::{OutgoingMessage, QueueStore, ReceiveRequest};
use mayfly_state_postgres::PostgresStore;

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn bodies(messages: &[mayfly_state::ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|message| String::from_utf8_lossy(&message.body).into_owned()).collect()
}

fn send(store: &PostgresStore, queue: &Name, bodies: &[&str]) -> Vec<i64> {
    let messages: Vec<OutgoingMessage> =
        bodies.iter().map(|body| OutgoingMessage::new(body.as_bytes().to_vec())).collect();
    store.send_messages(queue, &messages).unwrap().into_iter().map(|id| i64::try_from(id).unwrap()).collect()
}

struct Fixture {
    _database: support::TestDatabase,
    client: postgres::Client,
    clock: Arc<ManualClock>,
    store: PostgresStore,
}

fn sealed_store() -> Fixture {
    let database = support::TestDatabase::create();
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000)));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = PostgresStore::open_encrypted(&database.url, clock.clone(), keyring).expect("open a sealed store");
    let client = postgres::Client::connect(&database.url, postgres::NoTls).expect("connect to the test database");
    Fixture { _database: database, client, clock, store }
}

impl Fixture {
    /// Flip one byte in the middle of a message's sealed body.
    fn damage_body(&mut self, message_id: i64) {
        self.client
            .execute(
                "UPDATE messages SET body = set_byte(body, length(body) / 2, get_byte(body, length(body) / 2) # 1) \
                 WHERE message_id = $1",
                &[&message_id],
            )
            .unwrap();
    }

    /// (queue name, visible_at, receive_count, dead_letter_reason) of a message as stored.
    fn stored(&mut self, message_id: i64) -> (String, i64, i64, Option<String>) {
        let row = self
            .client
            .query_one(
                "SELECT q.name, m.visible_at, m.receive_count, m.dead_letter_reason \
                 FROM messages m JOIN queues q ON q.queue_id = m.queue_id WHERE m.message_id = $1",
                &[&message_id],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }
}

#[test]
fn a_damaged_message_is_set_aside_or_dead_lettered_with_its_receive_count_as_stored() {
    let mut fixture = sealed_store();
    let now = fixture.clock.now().as_millis();
    // Without a dead-letter queue: set aside in place, never visible again.
    let orders = name("orders");
    fixture.store.create_queue(&orders, &QueueConfig::default(), &[]).unwrap();
    let ids = send(&fixture.store, &orders, &["first", "damaged", "third"]);
    fixture.damage_body(ids[1]);
    let received = fixture.store.receive_messages(&orders, ReceiveRequest::up_to(10)).unwrap();
    assert_eq!(bodies(&received), ["first", "third"]);
    assert!(received.iter().all(|message| message.receive_count == 1));
    let (queue, visible_at, receive_count, reason) = fixture.stored(ids[1]);
    assert_eq!((queue.as_str(), visible_at, receive_count), ("orders", i64::MAX, 0));
    assert!(reason.is_some_and(|reason| reason.starts_with("integrity: ")));
    // The delivered ones are leased as the receive said.
    assert_eq!(fixture.stored(ids[0]).1, received[0].lease_until.as_millis());

    // With one: moved there, visible at once, its receive count as stored.
    let retry = name("retry");
    let config = QueueConfig { dead_letter: Some(name("retry-dlq")), max_receives: Some(5), ..QueueConfig::default() };
    fixture.store.create_queue(&retry, &config, &[]).unwrap();
    fixture.store.create_queue(&name("retry-dlq"), &QueueConfig::default(), &[]).unwrap();
    let ids = send(&fixture.store, &retry, &["damaged", "intact"]);
    fixture.damage_body(ids[0]);
    let received = fixture.store.receive_messages(&retry, ReceiveRequest::up_to(10)).unwrap();
    assert_eq!(bodies(&received), ["intact"]);
    let (queue, visible_at, receive_count, reason) = fixture.stored(ids[0]);
    assert_eq!((queue.as_str(), visible_at, receive_count), ("retry-dlq", now, 0));
    assert!(reason.is_some_and(|reason| reason.starts_with("integrity: ")));
    assert_eq!(fixture.store.damaged_messages(10).unwrap().len(), 2);
}

#[test]
fn every_receive_and_delete_on_an_unknown_queue_is_not_found_and_an_empty_delete_is_checked_too() {
    let fixture = sealed_store();
    let missing = name("missing");
    let error = fixture.store.receive_messages(&missing, ReceiveRequest::up_to(10)).unwrap_err();
    assert!(matches!(error, mayfly_state::StateError::NotFound { .. }), "{error:?}");
    let error = fixture.store.delete_messages(&missing, &[]).unwrap_err();
    assert!(matches!(error, mayfly_state::StateError::NotFound { .. }), "{error:?}");
    // An empty queue: nothing received, an empty delete is nothing.
    fixture.store.create_queue(&name("empty"), &QueueConfig::default(), &[]).unwrap();
    assert!(fixture.store.receive_messages(&name("empty"), ReceiveRequest::up_to(10)).unwrap().is_empty());
    assert!(fixture.store.delete_messages(&name("empty"), &[]).unwrap().is_empty());
}
