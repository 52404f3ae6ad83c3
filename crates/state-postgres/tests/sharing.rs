//! Several hosts share one PostgreSQL state store. Separate `PostgresStore`s
//! on one database stand in for them: each has its own pool, so they contend
//! through the server's row locks, exactly as hosts do. Receivers and item
//! lessees pass over each other's rows (`FOR UPDATE SKIP LOCKED`): every
//! message and every item goes to exactly one of them.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Name, SystemClock, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{DeleteOutcome, ItemCompletion, NewRun, NewRunItem, OutgoingMessage, ReceiveRequest};
use mayfly_state_postgres::PostgresStore;

const SENDERS: usize = 2;
const RECEIVERS: usize = 3;
const BATCHES_PER_SENDER: usize = 25;
const BATCH: usize = 20;

#[test]
fn concurrent_stores_on_one_database_deliver_every_message_exactly_once() {
    let database = support::TestDatabase::create();
    let queue = Name::new("shared").unwrap();
    let open = || Arc::new(PostgresStore::open(&database.url, Arc::new(SystemClock)).expect("open the shared store"));
    open()
        .create_queue(
            &queue,
            &QueueConfig { visibility_timeout: Duration::from_secs(600), ..QueueConfig::default() },
            &[],
        )
        .unwrap();

    let delivered = Arc::new(Mutex::new(Vec::<u64>::new()));
    let total = SENDERS * BATCHES_PER_SENDER * BATCH;
    std::thread::scope(|scope| {
        for sender in 0..SENDERS {
            let store = open();
            let queue = queue.clone();
            scope.spawn(move || {
                for batch in 0..BATCHES_PER_SENDER {
                    let messages: Vec<_> =
                        (0..BATCH).map(|index| OutgoingMessage::new(format!("{sender}-{batch}-{index}"))).collect();
                    store.send_messages(&queue, &messages).expect("send while others write");
                }
            });
        }
        for _ in 0..RECEIVERS {
            let store = open();
            let queue = queue.clone();
            let delivered = Arc::clone(&delivered);
            scope.spawn(move || {
                loop {
                    if delivered.lock().unwrap().len() >= total {
                        break;
                    }
                    let received = store.receive_messages(&queue, ReceiveRequest::up_to(25)).expect("receive");
                    if received.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let receipts: Vec<_> = received.iter().map(|message| message.receipt).collect();
                    let outcomes = store.delete_messages(&queue, &receipts).expect("delete");
                    assert!(outcomes.iter().all(|outcome| *outcome == DeleteOutcome::Deleted), "{outcomes:?}");
                    delivered.lock().unwrap().extend(received.iter().map(|message| message.message_id));
                }
            });
        }
    });

    let delivered = delivered.lock().unwrap();
    let distinct: BTreeSet<u64> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), total, "every message delivered");
    assert_eq!(distinct.len(), total, "no message delivered twice");
    assert_eq!(open().queue_stats(&queue).unwrap(), Default::default());
}

#[test]
fn concurrent_lessees_on_one_database_get_every_item_exactly_once() {
    const ITEMS: usize = 400;
    const LESSEES: usize = 4;
    let database = support::TestDatabase::create();
    let open = || Arc::new(PostgresStore::open(&database.url, Arc::new(SystemClock)).expect("open the shared store"));
    let setup = open();
    setup
        .create_run(NewRun {
            id: "run-1".to_owned(),
            job: Name::new("coding").unwrap(),
            deployment_version: None,
            trigger: "manual".to_owned(),
            deadline: Timestamp::from_millis(i64::MAX / 2),
            budget: None,
        })
        .unwrap();
    assert!(setup.claim_run("run-1", "coordinator", Duration::from_secs(600)).unwrap());
    let items: Vec<_> =
        (0..ITEMS).map(|index| NewRunItem { item: format!("chart-{index:04}"), payload: vec![1, 2, 3] }).collect();
    assert_eq!(setup.add_run_items("run-1", &items).unwrap(), ITEMS as u64);

    let leased = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::scope(|scope| {
        for lessee in 0..LESSEES {
            let store = open();
            let leased = Arc::clone(&leased);
            scope.spawn(move || {
                let worker = format!("worker-{lessee}");
                loop {
                    let batch = store.lease_run_items("run-1", &worker, 7).expect("lease");
                    if batch.is_empty() {
                        break;
                    }
                    for item in &batch {
                        let done = ItemCompletion::Done { result: b"ok".to_vec() };
                        let accepted = store
                            .complete_run_item("run-1", &item.item, &worker, item.attempts, done)
                            .expect("complete");
                        assert!(accepted, "the lessee's completion of {} is accepted", item.item);
                    }
                    leased.lock().unwrap().extend(batch.into_iter().map(|item| item.item));
                }
            });
        }
    });

    let leased = leased.lock().unwrap();
    let distinct: BTreeSet<&String> = leased.iter().collect();
    assert_eq!(leased.len(), ITEMS, "every item leased once");
    assert_eq!(distinct.len(), ITEMS, "no item leased twice");
    let counts = setup.run_item_counts("run-1").unwrap();
    assert_eq!((counts.done, counts.attempts), (ITEMS as u64, ITEMS as u64));
}

/// A send on one host wakes receivers on another (`LISTEN`/`NOTIFY`): the
/// watch is told the queue's name soon after the send commits, a send that
/// fails (and so stores nothing) tells nothing, and a dropped watch is told
/// nothing more.
#[test]
fn a_send_on_one_store_wakes_the_watchers_of_another_and_a_failed_send_does_not() {
    let database = support::TestDatabase::create();
    let open = || Arc::new(PostgresStore::open(&database.url, Arc::new(SystemClock)).expect("open the shared store"));
    let (sender, receiver) = (open(), open());
    let work = Name::new("work").unwrap();
    let small = Name::new("small").unwrap();
    sender.create_queue(&work, &QueueConfig::default(), &[]).unwrap();
    sender
        .create_queue(
            &small,
            &QueueConfig { max_message_size: mayfly_core::ByteSize(4), ..QueueConfig::default() },
            &[],
        )
        .unwrap();

    let (told, heard) = std::sync::mpsc::channel::<String>();
    let watch = receiver
        .watch_messages(Arc::new(move |queue: &str| {
            let _ = told.send(queue.to_owned());
        }))
        .unwrap()
        .expect("PostgreSQL wakes receivers");
    // The listener connects in the background; a send before it listens is
    // not heard (receivers' polls find it), so send until one is.
    let started = std::time::Instant::now();
    let first = loop {
        sender.send_messages(&work, &[OutgoingMessage::new("hello")]).unwrap();
        if let Ok(queue) = heard.recv_timeout(Duration::from_millis(500)) {
            break queue;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no wake-up within 10 s of sending");
    };
    assert_eq!(first, "work");
    while heard.recv_timeout(Duration::from_millis(200)).is_ok() {}

    // Heard promptly once listening.
    let sent_at = std::time::Instant::now();
    sender.send_messages(&work, &[OutgoingMessage::new("again")]).unwrap();
    assert_eq!(heard.recv_timeout(Duration::from_secs(5)).as_deref(), Ok("work"));
    assert!(sent_at.elapsed() < Duration::from_secs(2), "woken after {:?}", sent_at.elapsed());

    // A send refused (too large) commits nothing and notifies nobody.
    let refused = sender.send_messages(&small, &[OutgoingMessage::new("far too large")]);
    assert!(refused.is_err(), "{refused:?}");
    assert!(heard.recv_timeout(Duration::from_millis(700)).is_err(), "a failed send woke a receiver");

    // Dropped, the watch hears nothing more.
    drop(watch);
    sender.send_messages(&work, &[OutgoingMessage::new("unheard")]).unwrap();
    assert!(heard.recv_timeout(Duration::from_millis(700)).is_err(), "a dropped watch was still told");
}
