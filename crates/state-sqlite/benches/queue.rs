//! Queue throughput of the SQLite state store, durable (`synchronous = FULL`)
//! on a real file: bulk enqueue, batched receive + ack, and the naive
//! one-message-per-commit baseline for both. The store is opened encrypted,
//! as the CLI always opens it (every body sealed in its own envelope); the
//! batched figures are also measured on an unencrypted store in the same run,
//! to show what encryption costs.
//!
//! Run with `cargo bench -p mayfly-state-sqlite --bench queue`. Set
//! `MAYFLY_BENCH_DIR` to measure on another disk (default: the system temp dir).
//! Targets on a 2-core machine: bulk enqueue ≥ 200,000 msg/s, batched durable
//! receive + ack ≥ 25,000 msg/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_state::prelude::*;
use mayfly_state::{OutgoingMessage, ReceiveRequest};
use mayfly_state_sqlite::{Keyring, SqliteStore};

const BODY_BYTES: usize = 100;
const SEND_BATCH: usize = 1_000;
const BULK_MESSAGES: usize = 200_000;
const RECEIVE_BATCH: usize = 100;
const NAIVE_MESSAGES: usize = 2_000;

fn main() {
    let directory = match std::env::var_os("MAYFLY_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("create a directory for the benchmark store");
    let queue = Name::new("bench").expect("valid name");

    let plain_path = directory.path().join("plain.db");
    let plain = SqliteStore::open(&plain_path, Arc::new(SystemClock)).expect("open the unencrypted store");
    plain.create_queue(&queue, &QueueConfig::default(), &[]).expect("create the queue");
    println!("unencrypted store, for comparison: {}", plain_path.display());
    let plain_enqueue_rate = bulk_enqueue(&plain, &queue);
    let plain_receive_ack_rate = batched_receive_and_ack(&plain, &queue, BULK_MESSAGES);
    drop(plain);

    let path = directory.path().join("state.db");
    let keyring = Arc::new(Keyring::generate(SystemClock.now()));
    let store = SqliteStore::open_encrypted(&path, Arc::new(SystemClock), keyring).expect("open the benchmark store");
    store.create_queue(&queue, &QueueConfig::default(), &[]).expect("create the queue");
    println!("queue benchmark on {} (encrypted, synchronous = FULL, WAL)", path.display());

    let bulk_enqueue_rate = bulk_enqueue(&store, &queue);
    let batched_receive_ack_rate = batched_receive_and_ack(&store, &queue, BULK_MESSAGES);
    let naive_enqueue_rate = naive_enqueue(&store, &queue);
    let naive_receive_ack_rate = naive_receive_and_ack(&store, &queue);

    println!();
    println!(
        "enqueue:        batched {:>10.0} msg/s   naive {:>8.0} msg/s   ratio {:>6.1}x   (target >= 200000)",
        bulk_enqueue_rate,
        naive_enqueue_rate,
        bulk_enqueue_rate / naive_enqueue_rate
    );
    println!(
        "receive + ack:  batched {:>10.0} msg/s   naive {:>8.0} msg/s   ratio {:>6.1}x   (target >= 25000)",
        batched_receive_ack_rate,
        naive_receive_ack_rate,
        batched_receive_ack_rate / naive_receive_ack_rate
    );
    println!(
        "unencrypted:    enqueue {:>10.0} msg/s   receive + ack {:>8.0} msg/s   (encrypted: {:.0}% and {:.0}% of it)",
        plain_enqueue_rate,
        plain_receive_ack_rate,
        100.0 * bulk_enqueue_rate / plain_enqueue_rate,
        100.0 * batched_receive_ack_rate / plain_receive_ack_rate
    );
}

fn body(index: usize) -> Vec<u8> {
    let mut body = format!("message-{index:012}-").into_bytes();
    body.resize(BODY_BYTES, b'x');
    body
}

fn rate(messages: usize, elapsed: Duration) -> f64 {
    messages as f64 / elapsed.as_secs_f64()
}

fn bulk_enqueue(store: &SqliteStore, queue: &Name) -> f64 {
    let batches: Vec<Vec<OutgoingMessage>> = (0..BULK_MESSAGES / SEND_BATCH)
        .map(|batch| (0..SEND_BATCH).map(|index| OutgoingMessage::new(body(batch * SEND_BATCH + index))).collect())
        .collect();
    let started = Instant::now();
    for batch in &batches {
        store.send_messages(queue, batch).expect("send a batch");
    }
    let elapsed = started.elapsed();
    let rate = rate(BULK_MESSAGES, elapsed);
    println!(
        "bulk enqueue: {BULK_MESSAGES} messages of {BODY_BYTES} B in batches of {SEND_BATCH}: {elapsed:.2?} -> {rate:.0} msg/s"
    );
    rate
}

fn batched_receive_and_ack(store: &SqliteStore, queue: &Name, messages: usize) -> f64 {
    let request = ReceiveRequest { max_messages: RECEIVE_BATCH, visibility_timeout: Some(Duration::from_secs(60)) };
    let started = Instant::now();
    let mut acknowledged = 0;
    let mut commits = 0;
    while acknowledged < messages {
        let received = store.receive_messages(queue, request).expect("receive a batch");
        if received.is_empty() {
            break;
        }
        let receipts: Vec<_> = received.iter().map(|message| message.receipt).collect();
        store.delete_messages(queue, &receipts).expect("delete a batch");
        acknowledged += receipts.len();
        commits += 2;
    }
    let elapsed = started.elapsed();
    let rate = rate(acknowledged, elapsed);
    println!(
        "durable receive + ack: {acknowledged} messages, receive batches of {RECEIVE_BATCH} + one delete batch each \
         ({commits} commits): {elapsed:.2?} -> {rate:.0} msg/s ({:.2} ms per commit)",
        elapsed.as_secs_f64() * 1000.0 / commits as f64
    );
    rate
}

fn naive_enqueue(store: &SqliteStore, queue: &Name) -> f64 {
    let started = Instant::now();
    for index in 0..NAIVE_MESSAGES {
        store.send_messages(queue, &[OutgoingMessage::new(body(index))]).expect("send one");
    }
    let elapsed = started.elapsed();
    let rate = rate(NAIVE_MESSAGES, elapsed);
    println!("naive enqueue: {NAIVE_MESSAGES} messages, one commit each: {elapsed:.2?} -> {rate:.0} msg/s");
    rate
}

fn naive_receive_and_ack(store: &SqliteStore, queue: &Name) -> f64 {
    let request = ReceiveRequest { max_messages: 1, visibility_timeout: Some(Duration::from_secs(60)) };
    let started = Instant::now();
    let mut acknowledged = 0;
    while acknowledged < NAIVE_MESSAGES {
        let received = store.receive_messages(queue, request).expect("receive one");
        let Some(message) = received.first() else { break };
        store.delete_messages(queue, &[message.receipt]).expect("delete one");
        acknowledged += 1;
    }
    let elapsed = started.elapsed();
    let rate = rate(acknowledged, elapsed);
    println!(
        "naive receive + ack: {acknowledged} messages, one receive and one delete commit each: {elapsed:.2?} -> {rate:.0} msg/s"
    );
    rate
}
