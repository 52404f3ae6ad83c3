//! Several processes share one state file (the CLI next to a running control
//! plane). Separate `SqliteStore`s on the same path stand in for them: each has
//! its own connection, so they contend through SQLite's file locks and
//! `busy_timeout`, exactly as processes do.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Name, SystemClock};
use mayfly_state::prelude::*;
use mayfly_state::{DeleteOutcome, OutgoingMessage, ReceiveRequest};
use mayfly_state_sqlite::SqliteStore;

const SENDERS: usize = 2;
const RECEIVERS: usize = 3;
const BATCHES_PER_SENDER: usize = 50;
const BATCH: usize = 20;

#[test]
fn concurrent_stores_on_one_file_deliver_every_message_exactly_once() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let queue = Name::new("shared").unwrap();
    let open = || Arc::new(SqliteStore::open(&path, Arc::new(SystemClock)).expect("open the shared file"));
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
