//! Queue throughput of the PostgreSQL state store beside the embedded SQLite
//! store measured in the same run, both sealed (as the CLI opens stores):
//! bulk enqueue (batches of 1,000) and durable batched receive + ack
//! (receive 100, delete those 100). PostgreSQL is the server
//! `scripts/postgres.sh start-durable` runs on this machine, with
//! PostgreSQL's durable defaults (`fsync`, `synchronous_commit` and
//! `full_page_writes` on; the tests' server has them off), or the one at
//! `MAYFLY_BENCH_POSTGRES_URL`.
//!
//! Run with `cargo bench -p mayfly-state-postgres --bench queue`.
//! Issue 11's target for durable receive + ack on PostgreSQL: 10,000 msg/s.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_crypto::Keyring;
use mayfly_state::{OutgoingMessage, QueueStore, ReceiveRequest};
use mayfly_state_postgres::PostgresStore;
use mayfly_state_sqlite::SqliteStore;

const BODY_BYTES: usize = 100;
const SEND_BATCH: usize = 1_000;
const MESSAGES: usize = 50_000;
const RECEIVE_BATCH: usize = 100;

fn main() {
    let server = std::env::var("MAYFLY_BENCH_POSTGRES_URL").unwrap_or_else(|_| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg("start-durable")
            .output()
            .expect("run scripts/postgres.sh start-durable");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
    });
    let mut admin = postgres::Client::connect(&server, postgres::NoTls).expect("connect to PostgreSQL");
    admin.batch_execute("DROP DATABASE IF EXISTS mayfly_bench WITH (FORCE)").unwrap();
    admin.batch_execute("CREATE DATABASE mayfly_bench").unwrap();
    let (base, _) = server.rsplit_once('/').expect("the URL names a database");
    let keyring = Arc::new(Keyring::generate(SystemClock.now()));
    let queue = Name::new("bench").expect("valid name");

    let directory = tempfile::tempdir().expect("a directory for the SQLite store");
    let sqlite =
        SqliteStore::open_encrypted(&directory.path().join("state.db"), Arc::new(SystemClock), keyring.clone())
            .expect("open the SQLite store");
    let postgres = PostgresStore::open_encrypted(&format!("{base}/mayfly_bench"), Arc::new(SystemClock), keyring)
        .expect("open the PostgreSQL store");

    let mut rows = Vec::new();
    for (name, store) in [("sqlite", &sqlite as &dyn QueueStore), ("postgres", &postgres as &dyn QueueStore)] {
        store.create_queue(&queue, &QueueConfig::default(), &[]).expect("create the queue");
        let enqueue = bulk_enqueue(store, &queue);
        let receive_ack = batched_receive_and_ack(store, &queue);
        rows.push((name, enqueue, receive_ack));
    }
    println!();
    println!("{:<10} {:>16} {:>22}", "store", "enqueue msg/s", "receive + ack msg/s");
    for (name, enqueue, receive_ack) in rows {
        println!("{name:<10} {enqueue:>16.0} {receive_ack:>22.0}");
    }
    drop(postgres);
    admin.batch_execute("DROP DATABASE IF EXISTS mayfly_bench WITH (FORCE)").unwrap();
}

fn bulk_enqueue(store: &dyn QueueStore, queue: &Name) -> f64 {
    let body = vec![b'x'; BODY_BYTES];
    let batch: Vec<OutgoingMessage> = (0..SEND_BATCH).map(|_| OutgoingMessage::new(body.clone())).collect();
    let started = Instant::now();
    for _ in 0..MESSAGES / SEND_BATCH {
        store.send_messages(queue, &batch).expect("send a batch");
    }
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

fn batched_receive_and_ack(store: &dyn QueueStore, queue: &Name) -> f64 {
    let started = Instant::now();
    let mut acked = 0;
    while acked < MESSAGES {
        let received = store.receive_messages(queue, ReceiveRequest::up_to(RECEIVE_BATCH)).expect("receive");
        assert!(!received.is_empty(), "the queue ran dry after {acked} messages");
        let receipts: Vec<_> = received.iter().map(|message| message.receipt).collect();
        store.delete_messages(queue, &receipts).expect("ack");
        acked += received.len();
    }
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}
