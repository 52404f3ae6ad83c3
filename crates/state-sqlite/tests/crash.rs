//! Crash safety: a child process works a queue in a loop (send numbered
//! messages, receive some with a short lease, delete some) and journals every
//! operation that returned `Ok`; the parent SIGKILLs it at random moments and,
//! after each kill, reopens the store and checks that nothing acknowledged was
//! lost, nothing was duplicated, no acknowledged delete came back, and every
//! lease held by the dead child lapses.
//!
//! The child is this test binary itself, re-executed to run only
//! `crash_child_workload` with `CHILD_STORE_DIRECTORY` set.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, ManualClock, Name, SystemClock};
use mayfly_state::prelude::*;
use mayfly_state::{DeleteOutcome, OutgoingMessage, ReceiveRequest, StateError};
use mayfly_state_sqlite::SqliteStore;
use rand::Rng;

const CHILD_STORE_DIRECTORY: &str = "MAYFLY_CRASH_CHILD_STORE_DIRECTORY";
const CHILD_RUN_NUMBER: &str = "MAYFLY_CRASH_CHILD_RUN_NUMBER";
const KILLS: usize = 80;
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(2);
const SEND_BATCH: u64 = 20;
const RECEIVE_BATCH: usize = 10;
/// Each child run numbers its messages from `run * IDS_PER_RUN`, so a run never
/// reuses a number even when its predecessor died before journaling a send.
const IDS_PER_RUN: u64 = 1_000_000_000;

fn queue_name() -> Name {
    Name::new("crash").expect("valid name")
}

fn store_path(directory: &Path) -> PathBuf {
    directory.join("state.db")
}

fn journal_path(directory: &Path) -> PathBuf {
    directory.join("journal.txt")
}

/// Append one line and fsync it: once this returns, the line survives the kill.
fn journal(file: &mut File, line: &str) {
    file.write_all(format!("{line}\n").as_bytes()).expect("write the journal");
    file.sync_data().expect("fsync the journal");
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// The child's work: runs `iterations` loops (forever if `None`).
fn run_workload(directory: &Path, run_number: u64, iterations: Option<usize>) {
    let store = SqliteStore::open(&store_path(directory), Arc::new(SystemClock)).expect("open the store");
    let queue = queue_name();
    let config = QueueConfig { visibility_timeout: VISIBILITY_TIMEOUT, ..QueueConfig::default() };
    match store.create_queue(&queue, &config, &[]) {
        Ok(_) | Err(StateError::AlreadyExists { .. }) => {}
        Err(error) => panic!("create the queue: {error}"),
    }
    let mut journal_file =
        OpenOptions::new().create(true).append(true).open(journal_path(directory)).expect("open the journal");
    let mut next_id = run_number * IDS_PER_RUN;
    let request = ReceiveRequest { max_messages: RECEIVE_BATCH, visibility_timeout: Some(VISIBILITY_TIMEOUT) };
    let mut iteration = 0;
    while iterations.is_none_or(|iterations| iteration < iterations) {
        iteration += 1;
        let ids: Vec<u64> = (next_id..next_id + SEND_BATCH).collect();
        next_id += SEND_BATCH;
        let messages: Vec<OutgoingMessage> =
            ids.iter().map(|id| OutgoingMessage::new(id.to_string().into_bytes())).collect();
        store.send_messages(&queue, &messages).expect("send");
        journal(&mut journal_file, &format!("sent {}", join_ids(&ids)));

        let received = store.receive_messages(&queue, request).expect("receive");
        // Acknowledge every other message; the rest stay leased until the timeout.
        let to_delete: Vec<_> = received.iter().step_by(2).collect();
        let deleting_ids: Vec<u64> = to_delete.iter().map(|message| body_id(&message.body)).collect();
        journal(&mut journal_file, &format!("deleting {}", join_ids(&deleting_ids)));
        let receipts: Vec<_> = to_delete.iter().map(|message| message.receipt).collect();
        let outcomes = store.delete_messages(&queue, &receipts).expect("delete");
        let acked: Vec<u64> = deleting_ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == DeleteOutcome::Deleted)
            .map(|(id, _)| *id)
            .collect();
        journal(&mut journal_file, &format!("acked {}", join_ids(&acked)));
    }
}

fn body_id(body: &[u8]) -> u64 {
    std::str::from_utf8(body).ok().and_then(|text| text.parse().ok()).expect("bodies are decimal ids")
}

/// What the journal says was acknowledged. A torn last line (no newline) is ignored:
/// its operation was not acknowledged to the journal.
#[derive(Default)]
struct Journal {
    sent: BTreeSet<u64>,
    /// Ids a delete was attempted for (written before the delete was called).
    deleting: BTreeSet<u64>,
    acked: BTreeSet<u64>,
}

fn read_journal(directory: &Path) -> Journal {
    let text = std::fs::read_to_string(journal_path(directory)).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut journal = Journal::default();
    for line in complete.lines() {
        let mut words = line.split(' ');
        let set = match words.next() {
            Some("sent") => &mut journal.sent,
            Some("deleting") => &mut journal.deleting,
            Some("acked") => &mut journal.acked,
            other => panic!("unexpected journal line {other:?}"),
        };
        set.extend(words.filter(|word| !word.is_empty()).map(|word| word.parse::<u64>().expect("journal id")));
    }
    journal
}

/// Reopen the store as of a moment past every lease and check the journal's promises.
fn verify_store(directory: &Path) -> usize {
    let past_every_lease = SystemClock.now().saturating_add(VISIBILITY_TIMEOUT + Duration::from_secs(1));
    let clock = ManualClock::starting_at(past_every_lease);
    let store = SqliteStore::open(&store_path(directory), Arc::new(clock)).expect("reopen the store after a kill");
    let journal = read_journal(directory);
    let queue = queue_name();
    let Ok(stats) = store.queue_stats(&queue) else {
        assert!(journal.sent.is_empty(), "the queue is gone but the journal recorded sends");
        return 0;
    };
    let stored = store.peek_messages(&queue, usize::MAX).expect("peek every message");
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for message in &stored {
        *copies.entry(body_id(&message.body)).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, count)| **count > 1).map(|(id, _)| *id).collect();
    assert!(duplicated.is_empty(), "messages stored twice: {duplicated:?}");
    let lost: Vec<_> =
        journal.sent.iter().filter(|id| !copies.contains_key(id) && !journal.deleting.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged sends lost: {lost:?}");
    let resurrected: Vec<_> = journal.acked.iter().filter(|id| copies.contains_key(id)).collect();
    assert!(resurrected.is_empty(), "acknowledged deletes came back: {resurrected:?}");
    assert_eq!(stats.in_flight, 0, "every lease of the killed child has lapsed");
    assert_eq!(stats.delayed, 0);
    assert_eq!(stats.visible, stored.len() as u64, "every stored message is visible again");
    stored.len()
}

#[test]
fn acknowledged_queue_operations_survive_sigkill() {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let child_log = directory.path().join("child-stderr.txt");
    let test_binary = std::env::current_exe().expect("find this test binary");
    let started = Instant::now();
    let mut random = rand::rng();
    let mut killed_while_running = 0;
    let mut stored = 0;
    for run_number in 1..=KILLS as u64 {
        let mut child = Command::new(&test_binary)
            .args(["crash_child_workload", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_STORE_DIRECTORY, directory.path())
            .env(CHILD_RUN_NUMBER, run_number.to_string())
            .stdout(Stdio::null())
            .stderr(File::create(&child_log).expect("create the child log"))
            .spawn()
            .expect("start the child");
        std::thread::sleep(Duration::from_millis(random.random_range(5..=120)));
        if let Some(status) = child.try_wait().expect("poll the child") {
            let log = std::fs::read_to_string(&child_log).unwrap_or_default();
            panic!("child {run_number} exited by itself ({status}) instead of being killed:\n{log}");
        }
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        killed_while_running += 1;
        stored = verify_store(directory.path());
    }
    let journal = read_journal(directory.path());
    eprintln!(
        "{killed_while_running} kills in {:.1?}: {} sends and {} deletes acknowledged, {stored} messages left",
        started.elapsed(),
        journal.sent.len(),
        journal.acked.len()
    );
    assert_eq!(killed_while_running, KILLS);
    assert!(journal.sent.len() > 1_000, "the children did too little work to prove anything");
    assert!(!journal.acked.is_empty());

    // Past every lease, everything left can actually be received again.
    let clock = ManualClock::starting_at(SystemClock.now().saturating_add(Duration::from_secs(60)));
    let store = SqliteStore::open(&store_path(directory.path()), Arc::new(clock)).expect("reopen");
    let mut received = 0;
    loop {
        let batch = store.receive_messages(&queue_name(), ReceiveRequest::up_to(1_000)).expect("receive");
        if batch.is_empty() {
            break;
        }
        received += batch.len();
    }
    assert_eq!(received, stored);
}

/// The child's entry point when `CHILD_STORE_DIRECTORY` is set (it then runs
/// until killed). Run as an ordinary test, it runs the same workload in-process
/// for a few iterations, without kills, and checks the verifier accepts it.
#[test]
fn crash_child_workload() {
    if let Some(directory) = std::env::var_os(CHILD_STORE_DIRECTORY) {
        let run_number = std::env::var(CHILD_RUN_NUMBER).ok().and_then(|run| run.parse().ok()).unwrap_or(1);
        run_workload(Path::new(&directory), run_number, None);
        return;
    }
    let directory = tempfile::tempdir().expect("create a temporary directory");
    run_workload(directory.path(), 1, Some(10));
    let journal = read_journal(directory.path());
    assert_eq!(journal.sent.len(), 10 * SEND_BATCH as usize);
    assert_eq!(journal.acked.len(), 10 * RECEIVE_BATCH / 2);
    assert_eq!(verify_store(directory.path()), journal.sent.len() - journal.acked.len());
}
