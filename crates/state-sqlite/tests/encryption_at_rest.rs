//! Customer payloads written through an encrypted store never reach the disk
//! in plaintext, and a damaged or moved ciphertext fails to read with
//! `StateError::Damaged` naming the record, leaving every other record readable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{Clock, ManualClock, Name, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{InvocationRecord, ItemCompletion, NewRun, NewRunItem, OutgoingMessage, ReceiveRequest, StateError};
use mayfly_state_sqlite::{Keyring, SqliteStore};
use rusqlite::Connection;

const MARKER: &str = "PHI-MARKER-7f3e2a-patient-chart";

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

fn with_marker(what: &str) -> Vec<u8> {
    format!("{what}: {MARKER} {MARKER}").into_bytes()
}

/// Every file under `directory` in which `marker` appears.
fn files_containing(directory: &Path, marker: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        if bytes.windows(marker.len()).any(|window| window == marker) {
            found.push(path.display().to_string());
        }
    }
    assert!(scanned >= 1, "scanned nothing under {}", directory.display());
    found
}

fn with_marker_text(what: &str) -> String {
    format!("{what}: {MARKER}")
}

fn invocation(request_id: &str, started_at: Timestamp) -> InvocationRecord {
    InvocationRecord {
        request_id: request_id.to_owned(),
        function: name("summarize"),
        deployment_version: None,
        trigger: "invoke".to_owned(),
        attempt: 1,
        started_at,
        duration: Duration::from_millis(12),
        init_duration: None,
        outcome: InvocationRecord::SUCCESS.to_owned(),
        error_type: None,
        error_message: None,
        peak_memory: None,
        bytes_in: 0,
        bytes_out: 0,
        estimated_cost: 0.0,
    }
}

fn is_damaged(error: &StateError, naming: &str) -> bool {
    matches!(error, StateError::Damaged { what, .. } if what.contains(naming))
}

#[test]
fn payloads_are_encrypted_on_disk_and_damage_is_reported_per_record() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join(".mayfly");
    let path = data.join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring.clone()).unwrap();

    // Messages with attributes, in two queues.
    let queue_config = QueueConfig { visibility_timeout: Duration::from_secs(30), ..QueueConfig::default() };
    for queue in ["orders", "other", "intake", "retry-dlq"] {
        store.create_queue(&name(queue), &queue_config, &[]).unwrap();
    }
    let retry = QueueConfig { max_receives: Some(1), dead_letter: Some(name("retry-dlq")), ..queue_config.clone() };
    store.create_queue(&name("retry"), &retry, &[]).unwrap();
    let message = |what: &str| OutgoingMessage {
        body: with_marker(what),
        attributes: vec![("note".to_owned(), format!("{what} attribute {MARKER}"))],
        delay: None,
    };
    let orders =
        store.send_messages(&name("orders"), &[message("first"), message("second"), message("third")]).unwrap();
    store.send_messages(&name("other"), &[message("other")]).unwrap();
    store.send_messages(&name("intake"), &[message("intake-1"), message("intake-2")]).unwrap();
    // A message dead-lettered then redriven is resealed under its new id.
    store.send_messages(&name("retry"), &[message("retried")]).unwrap();
    assert_eq!(store.receive_messages(&name("retry"), ReceiveRequest::up_to(1)).unwrap().len(), 1);
    clock.advance(Duration::from_secs(31));
    assert!(store.receive_messages(&name("retry"), ReceiveRequest::up_to(1)).unwrap().is_empty());
    assert_eq!(store.redrive_dead_letters(&name("retry-dlq"), None).unwrap(), 1);
    let redriven = store.receive_messages(&name("retry"), ReceiveRequest::up_to(1)).unwrap();
    assert_eq!(redriven[0].body, with_marker("retried"));
    assert_eq!(redriven[0].attributes, vec![("note".to_owned(), format!("retried attribute {MARKER}"))]);

    // Run items (added, and moved from a queue), results, invocation logs.
    let run = NewRun {
        id: "run-1".to_owned(),
        job: name("charts"),
        deployment_version: None,
        trigger: "manual".to_owned(),
        deadline: clock.now().saturating_add(Duration::from_secs(3_600)),
        budget: None,
    };
    store.create_run(run).unwrap();
    let items: Vec<NewRunItem> = ["a", "b", "c"]
        .iter()
        .map(|item| NewRunItem { item: (*item).to_owned(), payload: with_marker(item) })
        .collect();
    assert_eq!(store.add_run_items("run-1", &items).unwrap(), 3);
    // Ids that are content (a manifest line), error text and reports.
    let manifest_line = format!("chart of {MARKER}");
    store.add_run_items("run-1", &[NewRunItem { item: manifest_line.clone(), payload: with_marker("line") }]).unwrap();
    assert_eq!(store.move_queue_messages_into_run("run-1", &name("intake"), 10).unwrap(), 2);
    let leased = store.lease_run_items("run-1", "w1", 10).unwrap();
    assert_eq!(leased.len(), 6);
    assert_eq!(leased[0].payload, with_marker("a"));
    assert_eq!(
        (leased[3].item.as_str(), leased[3].payload.as_slice()),
        (manifest_line.as_str(), &with_marker("line")[..])
    );
    assert_eq!(leased[4].payload, with_marker("intake-1"));
    let failure = ItemCompletion::Failed { error: format!("stderr ends with: {MARKER}"), retry_at: None };
    assert!(store.complete_run_item("run-1", &manifest_line, "w1", 1, failure).unwrap());
    let dead = store.run_items("run-1", Some(mayfly_core::run::ItemStatus::DeadLettered), None, 10).unwrap();
    assert_eq!(
        (dead[0].item.as_str(), dead[0].last_error.clone()),
        (manifest_line.as_str(), Some(format!("stderr ends with: {MARKER}")))
    );
    let leased: Vec<_> = leased.into_iter().filter(|item| item.item != manifest_line).collect();
    for item in &leased {
        let result = ItemCompletion::Done { result: with_marker(&format!("result of {}", item.item)) };
        assert!(store.complete_run_item("run-1", &item.item, "w1", 1, result).unwrap());
    }
    let invocation_id = store.record_invocation(&invocation("req-1", clock.now()), &with_marker("logs")).unwrap();
    assert_eq!(store.invocation_logs("req-1").unwrap(), with_marker("logs"));
    let failed = InvocationRecord {
        outcome: "error".to_owned(),
        error_type: Some("ValueError".to_owned()),
        error_message: Some(format!("cannot read {MARKER}")),
        ..invocation("req-failed", clock.now())
    };
    store.record_invocation(&failed, b"").unwrap();
    let ledger = store.invocations(&mayfly_state::InvocationFilter { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(ledger[1].record.error_message, Some(format!("cannot read {MARKER}")));
    store.claim_run("run-1", "c1", Duration::from_secs(60)).unwrap();
    let report = format!("{{\"notes\": [\"{MARKER}\"]}}");
    store
        .finish_run("run-1", "c1", mayfly_core::run::RunStatus::Failed, Some(&format!("error {MARKER}")), Some(&report))
        .unwrap();
    let run = store.run("run-1").unwrap();
    assert_eq!((run.error, run.report), (Some(format!("error {MARKER}")), Some(report)));

    // A run stopped early puts its unfinished messages back in their queue:
    // sealed while in the run (attributes kept for the way back), and sealed
    // again once back, under the same message id.
    store.create_queue(&name("returning"), &queue_config, &[]).unwrap();
    let returning =
        store.send_messages(&name("returning"), &[message("kept-1"), message("back-1"), message("back-2")]).unwrap();
    store
        .create_run(NewRun {
            id: "run-2".to_owned(),
            job: name("drain"),
            deployment_version: None,
            trigger: "manual".to_owned(),
            deadline: clock.now().saturating_add(Duration::from_secs(3_600)),
            budget: None,
        })
        .unwrap();
    assert_eq!(store.move_queue_messages_into_run("run-2", &name("returning"), 10).unwrap(), 3);
    let first_leased = store.lease_run_items("run-2", "w1", 2).unwrap();
    let done = ItemCompletion::Done { result: with_marker("drained") };
    assert!(store.complete_run_item("run-2", &first_leased[0].item, "w1", 1, done).unwrap());
    assert_eq!(store.return_unfinished_items_to_queues("run-2").unwrap(), 2);
    let back = store.peek_messages(&name("returning"), 10).unwrap();
    assert_eq!(back.iter().map(|m| m.message_id).collect::<Vec<_>>(), returning[1..]);
    assert_eq!(back[0].body, with_marker("back-1"));
    assert_eq!(back[1].attributes, vec![("note".to_owned(), format!("back-2 attribute {MARKER}"))]);

    // Every file of the store, before and after a checkpoint: no marker.
    assert_eq!(files_containing(&data, MARKER.as_bytes()), Vec::<String>::new(), "before the checkpoint");
    let raw = Connection::open(&path).unwrap();
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    assert_eq!(files_containing(&data, MARKER.as_bytes()), Vec::<String>::new(), "after the checkpoint");
    // …while the plaintext was really written (the scan would have seen it).
    let plain_directory = tempfile::tempdir().unwrap();
    let plain = SqliteStore::open(&plain_directory.path().join("state.db"), Arc::new(clock.clone())).unwrap();
    plain.create_queue(&name("orders"), &queue_config, &[]).unwrap();
    plain.send_messages(&name("orders"), &[message("first")]).unwrap();
    assert!(!files_containing(plain_directory.path(), MARKER.as_bytes()).is_empty());

    // An unencrypted handle refuses the encrypted store.
    let refused = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap_err();
    assert!(refused.to_string().contains("encrypted"), "{refused}");

    // Flip one byte of the second message's body.
    let flip = |table: &str, column: &str, key: &str, value: &dyn rusqlite::ToSql| {
        let stored: Vec<u8> = raw
            .query_row(&format!("SELECT {column} FROM {table} WHERE {key} = ?1"), [value], |row| row.get(0))
            .unwrap();
        let mut damaged = stored.clone();
        let middle = damaged.len() - 20;
        damaged[middle] ^= 0x01;
        raw.execute(&format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"), rusqlite::params![damaged, value])
            .unwrap();
        stored
    };
    let second = i64::try_from(orders[1]).unwrap();
    flip("messages", "body", "message_id", &second);
    let error = store.peek_messages(&name("orders"), 10).unwrap_err();
    assert!(is_damaged(&error, &format!("body of message {second}")), "{error:?}");
    assert!(error.to_string().contains(&format!("body of message {second}")), "{error}");
    let source = std::error::Error::source(&error).expect("the envelope error").to_string();
    assert!(source.contains(&format!("message/{second}/body")) && source.contains("failed authentication"), "{source}");
    // The message before it is still received; the other queue is untouched.
    let first = store.receive_messages(&name("orders"), ReceiveRequest::up_to(1)).unwrap();
    assert_eq!(first[0].body, with_marker("first"));
    // Defect 12 of issue 10: the damaged message no longer blocks its queue. Receiving
    // sets it aside (this queue has no dead-letter queue) with an integrity reason,
    // and hands out nothing of it; its queue goes on.
    let rest = store.receive_messages(&name("orders"), ReceiveRequest::up_to(10)).unwrap();
    assert_eq!(rest.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), vec![with_marker("third")]);
    let set_aside: (i64, String) = raw
        .query_row("SELECT visible_at, dead_letter_reason FROM messages WHERE message_id = ?1", [second], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!(set_aside.0, i64::MAX, "never visible again");
    assert!(
        set_aside.1.starts_with("integrity: ") && set_aside.1.contains(&format!("message {second}")),
        "{}",
        set_aside.1
    );
    store.send_messages(&name("orders"), &[message("after")]).unwrap();
    let after = store.receive_messages(&name("orders"), ReceiveRequest::up_to(10)).unwrap();
    assert_eq!(after.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), vec![with_marker("after")]);
    assert_eq!(store.peek_messages(&name("other"), 10).unwrap()[0].body, with_marker("other"));
    // With a dead-letter queue, the damaged message moves there, in the same transaction.
    let damaged_retry = store.send_messages(&name("retry"), &[message("damaged"), message("intact")]).unwrap();
    let damaged_retry = i64::try_from(damaged_retry[0]).unwrap();
    flip("messages", "body", "message_id", &damaged_retry);
    let intact = store.receive_messages(&name("retry"), ReceiveRequest::up_to(10)).unwrap();
    assert_eq!(intact.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), vec![with_marker("intact")]);
    let (queue, reason): (String, String) = raw
        .query_row(
            "SELECT q.name, m.dead_letter_reason FROM messages m JOIN queues q ON q.queue_id = m.queue_id \
             WHERE m.message_id = ?1",
            [damaged_retry],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(queue, "retry-dlq");
    assert!(reason.starts_with("integrity: "), "{reason}");
    // Both are listed for the audit, without opening them.
    let damaged = store.damaged_messages(10).unwrap();
    let listed: Vec<(String, i64, String)> = damaged
        .iter()
        .map(|m| (m.queue.to_string(), i64::try_from(m.message_id).unwrap(), m.source_queue.clone()))
        .collect();
    assert_eq!(
        listed,
        vec![("orders".into(), second, "orders".into()), ("retry-dlq".into(), damaged_retry, "retry".into())]
    );
    assert!(damaged.iter().all(|m| m.reason.starts_with("integrity: ")));

    // Flip a byte of a result: only that result fails. (Rows by insertion:
    // item ids are keyed hashes on disk.)
    flip("results", "result", "rowid", &1);
    let error = store.result(&name("charts"), "a").unwrap_err();
    assert!(is_damaged(&error, "result of item `a` of job `charts`"), "{error:?}");
    assert!(store.results(&name("charts"), None, None, 10).is_err(), "a page holding it fails too");
    assert_eq!(store.result(&name("charts"), "b").unwrap().result, with_marker("result of b"));
    assert!(store.results(&name("charts"), None, Some("a"), 10).is_ok(), "a page after it reads");

    // Swapped ciphertexts fail both ways: results, message bodies, item payloads.
    let swap = |table: &str, column: &str, key: &str, one: &dyn rusqlite::ToSql, other: &dyn rusqlite::ToSql| {
        let read = |value: &dyn rusqlite::ToSql| -> Vec<u8> {
            raw.query_row(&format!("SELECT {column} FROM {table} WHERE {key} = ?1"), [value], |row| row.get(0)).unwrap()
        };
        let (first, second) = (read(one), read(other));
        let write = |value: &dyn rusqlite::ToSql, bytes: &[u8]| {
            raw.execute(&format!("UPDATE {table} SET {column} = ?1 WHERE {key} = ?2"), rusqlite::params![bytes, value])
                .unwrap();
        };
        write(one, &second);
        write(other, &first);
    };
    swap("results", "result", "rowid", &2, &3);
    assert!(is_damaged(&store.result(&name("charts"), "b").unwrap_err(), "item `b`"));
    assert!(is_damaged(&store.result(&name("charts"), "c").unwrap_err(), "item `c`"));
    let (third, other_id): (i64, i64) = (
        i64::try_from(orders[2]).unwrap(),
        i64::try_from(store.peek_messages(&name("other"), 1).unwrap()[0].message_id).unwrap(),
    );
    swap("messages", "body", "message_id", &third, &other_id);
    assert!(is_damaged(&store.peek_messages(&name("other"), 1).unwrap_err(), &format!("message {other_id}")));
    swap("run_items", "payload", "item_seq", &1, &2);
    let error = store.run_items("run-1", None, None, 10).unwrap_err();
    assert!(
        is_damaged(&error, "payload of item `a` of run `run-1`")
            || is_damaged(&error, "payload of item `b` of run `run-1`"),
        "{error:?}"
    );
    // Sealed ids swapped between items fail too: each is bound to its lookup key.
    let sealed_id = |seq: i64| -> String {
        raw.query_row("SELECT item_sealed FROM run_items WHERE item_seq = ?1", [seq], |row| row.get(0)).unwrap()
    };
    let (third_id, fourth_id) = (sealed_id(3), sealed_id(4));
    for (seq, id) in [(3, &fourth_id), (4, &third_id)] {
        raw.execute("UPDATE run_items SET item_sealed = ?1 WHERE item_seq = ?2", rusqlite::params![id, seq]).unwrap();
    }
    let error = store.run_items("run-1", Some(mayfly_core::run::ItemStatus::DeadLettered), None, 10).unwrap_err();
    assert!(is_damaged(&error, "id of the item with lookup key"), "{error:?}");

    // Invocation logs: flipping them fails that request's logs only.
    let second_invocation = store.record_invocation(&invocation("req-2", clock.now()), b"other logs").unwrap();
    flip("invocation_logs", "logs", "invocation_id", &i64::try_from(invocation_id).unwrap());
    let error = store.invocation_logs("req-1").unwrap_err();
    assert!(is_damaged(&error, &format!("logs of invocation {invocation_id}")), "{error:?}");
    assert_eq!(store.invocation_logs("req-2").unwrap(), b"other logs", "invocation {second_invocation}");
}

#[test]
fn rewrap_all_moves_every_envelope_to_the_current_key() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let mut keyring = Keyring::generate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    store.create_queue(&name("q"), &QueueConfig::default(), &[]).unwrap();
    let with_attributes = OutgoingMessage { attributes: vec![("k".into(), "v".into())], ..OutgoingMessage::new("one") };
    store.send_messages(&name("q"), &[with_attributes, OutgoingMessage::new("two")]).unwrap();
    store
        .create_run(NewRun {
            id: "r".into(),
            job: name("j"),
            deployment_version: None,
            trigger: "manual".into(),
            deadline: clock.now().saturating_add(Duration::from_secs(60)),
            budget: None,
        })
        .unwrap();
    store.add_run_items("r", &[NewRunItem { item: "i".into(), payload: b"p".to_vec() }]).unwrap();
    store.lease_run_items("r", "w", 1).unwrap();
    store.complete_run_item("r", "i", "w", 1, ItemCompletion::Done { result: b"res".to_vec() }).unwrap();
    store.record_invocation(&invocation("req", clock.now()), b"logs").unwrap();
    // A message in a run keeps its attributes (sealed) for its way back to its queue.
    store.create_queue(&name("moved"), &QueueConfig::default(), &[]).unwrap();
    let moving = OutgoingMessage { attributes: vec![("m".into(), "n".into())], ..OutgoingMessage::new("three") };
    store.send_messages(&name("moved"), &[moving]).unwrap();
    assert_eq!(store.move_queue_messages_into_run("r", &name("moved"), 1).unwrap(), 1);
    drop(store);

    keyring.rotate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    // The item lookup key, two bodies, one attributes, two items (payload and
    // id), one result (payload and item id), one log, the moved message's attributes.
    assert_eq!(store.rewrap_all().unwrap(), 12);
    assert_eq!(store.rewrap_all().unwrap(), 0, "everything is under the current key");
    let raw = Connection::open(&path).unwrap();
    let body: Vec<u8> = raw.query_row("SELECT body FROM messages LIMIT 1", [], |row| row.get(0)).unwrap();
    assert_eq!(mayfly_crypto_key_id(&body), keyring.current().id());
    let messages = store.peek_messages(&name("q"), 10).unwrap();
    assert_eq!(messages[0].body, b"one");
    assert_eq!(messages[0].attributes, vec![("k".to_owned(), "v".to_owned())]);
    assert_eq!(store.result(&name("j"), "i").unwrap().result, b"res");
    assert_eq!(store.invocation_logs("req").unwrap(), b"logs");
    assert_eq!(store.return_unfinished_items_to_queues("r").unwrap(), 1);
    let returned = store.peek_messages(&name("moved"), 10).unwrap();
    assert_eq!(
        (returned[0].body.as_slice(), returned[0].attributes.clone()),
        (&b"three"[..], vec![("m".into(), "n".into())])
    );
}

/// The key id in an envelope header (bytes 10.., length at byte 9).
fn mayfly_crypto_key_id(envelope: &[u8]) -> String {
    let length = usize::from(envelope[9]);
    String::from_utf8(envelope[10..10 + length].to_vec()).unwrap()
}

#[test]
fn a_store_used_unencrypted_is_encrypted_when_first_opened_with_a_keyring() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let plain = SqliteStore::open(&path, Arc::new(clock.clone())).unwrap();
    plain.create_queue(&name("q"), &QueueConfig::default(), &[]).unwrap();
    let message =
        OutgoingMessage { attributes: vec![("k".into(), MARKER.into())], ..OutgoingMessage::new(with_marker("old")) };
    plain.send_messages(&name("q"), &[message]).unwrap();
    // Item ids that are content, error text, a report and a failed invocation.
    plain
        .create_run(NewRun {
            id: "r".into(),
            job: name("j"),
            deployment_version: None,
            trigger: "manual".into(),
            deadline: clock.now().saturating_add(Duration::from_secs(60)),
            budget: None,
        })
        .unwrap();
    let (done, failed) = (format!("done {MARKER}"), format!("failed {MARKER}"));
    let items = [done.clone(), failed.clone()].map(|item| NewRunItem { item, payload: with_marker("p") });
    plain.add_run_items("r", &items).unwrap();
    plain.lease_run_items("r", "w", 2).unwrap();
    plain.complete_run_item("r", &done, "w", 1, ItemCompletion::Done { result: with_marker("res") }).unwrap();
    let error = ItemCompletion::Failed { error: with_marker_text("stderr"), retry_at: None };
    plain.complete_run_item("r", &failed, "w", 1, error).unwrap();
    plain.claim_run("r", "c", Duration::from_secs(60)).unwrap();
    plain
        .finish_run(
            "r",
            "c",
            mayfly_core::run::RunStatus::Failed,
            Some(&with_marker_text("run")),
            Some(&with_marker_text("report")),
        )
        .unwrap();
    let failed_invocation = InvocationRecord {
        outcome: "error".into(),
        error_message: Some(with_marker_text("message")),
        ..invocation("req", clock.now())
    };
    plain.record_invocation(&failed_invocation, &with_marker("logs")).unwrap();
    drop(plain);
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring.clone()).unwrap();
    let messages = store.peek_messages(&name("q"), 10).unwrap();
    assert_eq!(messages[0].body, with_marker("old"));
    assert_eq!(messages[0].attributes, vec![("k".to_owned(), MARKER.to_owned())]);
    let mut items: Vec<(String, Option<String>)> =
        store.run_items("r", None, None, 10).unwrap().into_iter().map(|item| (item.item, item.last_error)).collect();
    items.sort();
    assert_eq!(items, [(done.clone(), None), (failed.clone(), Some(with_marker_text("stderr")))]);
    assert_eq!(store.result(&name("j"), &done).unwrap().result, with_marker("res"));
    let run = store.run("r").unwrap();
    assert_eq!((run.error, run.report), (Some(with_marker_text("run")), Some(with_marker_text("report"))));
    let ledger = store.invocations(&mayfly_state::InvocationFilter { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(ledger[0].record.error_message, Some(with_marker_text("message")));
    // Opened again, the lookup key is the same: items are still found by id.
    drop(store);
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring).unwrap();
    assert_eq!(store.result(&name("j"), &done).unwrap().item, done);
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    assert_eq!(files_containing(directory.path(), MARKER.as_bytes()), Vec::<String>::new());
}

#[test]
fn a_large_batch_sealed_on_several_threads_reads_back_in_order() {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = SqliteStore::open_encrypted(&directory.path().join("state.db"), Arc::new(clock), keyring).unwrap();
    store.create_queue(&name("q"), &QueueConfig::default(), &[]).unwrap();
    let messages: Vec<OutgoingMessage> = (0..1_001)
        .map(|index| OutgoingMessage {
            attributes: vec![("index".to_owned(), index.to_string())],
            ..OutgoingMessage::new(format!("body {index}"))
        })
        .collect();
    let ids = store.send_messages(&name("q"), &messages).unwrap();
    let stored = store.peek_messages(&name("q"), 2_000).unwrap();
    assert_eq!(stored.len(), 1_001);
    for (index, (message, id)) in stored.iter().zip(&ids).enumerate() {
        assert_eq!((message.message_id, &message.body), (*id, &format!("body {index}").into_bytes()));
        assert_eq!(message.attributes, vec![("index".to_owned(), index.to_string())]);
    }
}

/// A store written before error text, reports and item ids were sealed
/// (`envelope-v1`: payloads only) is sealed whole when next opened with its
/// keyring, and everything reads back. The v1 store is made by writing a v2
/// store and putting back, in raw SQL, what v1 kept in plaintext.
#[test]
fn an_envelope_v1_store_has_its_error_text_reports_and_item_ids_sealed_on_open() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring.clone()).unwrap();
    store
        .create_run(NewRun {
            id: "r".into(),
            job: name("j"),
            deployment_version: None,
            trigger: "manual".into(),
            deadline: clock.now().saturating_add(Duration::from_secs(60)),
            budget: None,
        })
        .unwrap();
    let (done, failed) = (format!("done {MARKER}"), format!("failed {MARKER}"));
    let items = [done.clone(), failed.clone()].map(|item| NewRunItem { item, payload: with_marker("p") });
    store.add_run_items("r", &items).unwrap();
    store.lease_run_items("r", "w", 2).unwrap();
    store.complete_run_item("r", &done, "w", 1, ItemCompletion::Done { result: with_marker("res") }).unwrap();
    store
        .complete_run_item("r", &failed, "w", 1, ItemCompletion::Failed { error: "x".into(), retry_at: None })
        .unwrap();
    store.claim_run("r", "c", Duration::from_secs(60)).unwrap();
    store.finish_run("r", "c", mayfly_core::run::RunStatus::Failed, Some("x"), Some("x")).unwrap();
    let failed_invocation =
        InvocationRecord { outcome: "error".into(), error_message: Some("x".into()), ..invocation("req", clock.now()) };
    store.record_invocation(&failed_invocation, b"").unwrap();
    drop(store);

    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(&format!(
        "UPDATE run_items SET item = CASE item_seq WHEN 1 THEN '{done}' ELSE '{failed}' END, item_sealed = NULL, \
         last_error = CASE item_seq WHEN 2 THEN 'stderr: {MARKER}' END;
         UPDATE results SET item = '{done}', item_sealed = NULL;
         UPDATE runs SET error = 'run: {MARKER}', report = 'report: {MARKER}';
         UPDATE invocations SET error_message = 'message: {MARKER}';
         DELETE FROM store_settings WHERE key = 'item-key';
         UPDATE store_settings SET value = 'envelope-v1' WHERE key = 'payloads';
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    assert!(!files_containing(directory.path(), MARKER.as_bytes()).is_empty(), "v1 kept these in plaintext");
    drop(raw);

    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring).unwrap();
    let mut items: Vec<(String, Option<String>, Vec<u8>)> = store
        .run_items("r", None, None, 10)
        .unwrap()
        .into_iter()
        .map(|item| (item.item, item.last_error, item.payload))
        .collect();
    items.sort();
    assert_eq!(
        items,
        [(done.clone(), None, with_marker("p")), (failed, Some(format!("stderr: {MARKER}")), with_marker("p"))]
    );
    assert_eq!(store.result(&name("j"), &done).unwrap().result, with_marker("res"));
    let run = store.run("r").unwrap();
    assert_eq!((run.error, run.report), (Some(format!("run: {MARKER}")), Some(format!("report: {MARKER}"))));
    let ledger = store.invocations(&mayfly_state::InvocationFilter { limit: 10, ..Default::default() }).unwrap();
    assert_eq!(ledger[0].record.error_message, Some(format!("message: {MARKER}")));
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    assert_eq!(files_containing(directory.path(), MARKER.as_bytes()), Vec::<String>::new());
}

fn lacks_keys(result: Result<SqliteStore, StateError>) -> Vec<String> {
    match result {
        Err(StateError::KeyringLacksKeys { missing, .. }) => missing,
        Err(other) => panic!("expected KeyringLacksKeys, got {other:?}"),
        Ok(_) => panic!("a keyring lacking a recorded key was accepted"),
    }
}

#[test]
fn a_keyring_lacking_a_key_that_sealed_data_is_refused_and_retiring_forgets_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let open =
        |keyring: &Keyring| SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone()));
    let original = Keyring::generate(clock.now());
    let first = original.current().id().to_owned();
    let store = open(&original).unwrap();
    store.create_queue(&name("q"), &QueueConfig::default(), &[]).unwrap();
    store.send_messages(&name("q"), &[OutgoingMessage::new("under the first key")]).unwrap();
    drop(store);

    // A regenerated keyring: refused before anything is read or written.
    assert_eq!(lacks_keys(open(&Keyring::generate(clock.now()))), [first.as_str()]);

    // Rotated: opening records the new current key before it seals anything.
    let mut rotated = original.clone();
    let second = rotated.rotate(clock.now()).id().to_owned();
    let store = open(&rotated).unwrap();
    assert_eq!(store.recorded_key_ids().unwrap(), [first.clone(), second.clone()]);
    store.send_messages(&name("q"), &[OutgoingMessage::new("under the second key")]).unwrap();
    // The first message and the store's item lookup key (sealed when the store was made).
    assert_eq!(store.count_envelopes_sealed_by(&first).unwrap(), 2);
    assert_eq!(store.count_envelopes_sealed_by(&second).unwrap(), 1);
    // The backup from before the rotation lacks the second key, in a running process too.
    assert!(matches!(store.replace_keyring(Arc::new(original.clone())), Err(StateError::KeyringLacksKeys { .. })));
    assert_eq!(store.peek_messages(&name("q"), 10).unwrap().len(), 2, "the refused keyring was not taken up");
    drop(store);
    assert_eq!(lacks_keys(open(&original)), [second.as_str()]);

    // Rewrapped and retired: the keyring without the first key opens the store.
    let store = open(&rotated).unwrap();
    store.rewrap_all().unwrap();
    assert_eq!(store.count_envelopes_sealed_by(&first).unwrap(), 0);
    assert!(store.forget_retired_key(&first).unwrap());
    drop(store);
    rotated.remove(&first).unwrap();
    let store = open(&rotated).unwrap();
    let bodies: Vec<Vec<u8>> = store.peek_messages(&name("q"), 10).unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, [b"under the first key".to_vec(), b"under the second key".to_vec()]);
}

#[test]
fn a_tokens_aws_secret_is_sealed_on_disk_and_rewrapped_with_the_keyring() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let mut keyring = Keyring::generate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    let secret = "a9c3e1f00d5b7aa2c4e6f8091b3d5f7a9c1e3f5d";
    store
        .create_api_token(mayfly_state::NewApiToken {
            id: "0011223344556677".into(),
            name: "s3".into(),
            secret_sha256: "0".repeat(64),
            scopes: vec!["objects:read".into()],
            jobs: Vec::new(),
            buckets: Vec::new(),
            expires_at: None,
            aws_secret: Some(secret.into()),
        })
        .unwrap();
    drop(store);
    assert_eq!(files_containing(directory.path(), secret.as_bytes()), Vec::<String>::new());

    keyring.rotate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    // The item lookup key and the secret.
    assert_eq!(store.rewrap_all().unwrap(), 2);
    assert_eq!(store.api_token_aws_secret("0011223344556677").unwrap().as_deref(), Some(secret));
}

#[test]
fn a_derived_key_is_the_same_for_every_opener_survives_rotation_and_never_reaches_the_disk() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let mut keyring = Keyring::generate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    let sessions = store.derived_key("aws-sessions").unwrap();
    assert_ne!(store.derived_key("other").unwrap(), sessions, "each purpose has its own key");
    // A second opener (another host sharing the store) derives the same key.
    let second = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    assert_eq!(second.derived_key("aws-sessions").unwrap(), sessions);
    drop((store, second));
    assert_eq!(files_containing(directory.path(), &sessions), Vec::<String>::new());

    keyring.rotate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    store.rewrap_all().unwrap();
    assert_eq!(store.derived_key("aws-sessions").unwrap(), sessions, "rotation keeps outstanding credentials valid");

    let other = SqliteStore::open(&directory.path().join("plain.db"), Arc::new(clock)).unwrap();
    let error = other.derived_key("aws-sessions").unwrap_err();
    assert!(error.to_string().contains("seals nothing"), "{error}");
}

#[test]
fn an_experiments_error_text_is_sealed_on_disk_rewrapped_and_a_moved_envelope_is_damaged() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let mut keyring = Keyring::generate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    let experiment = |error: &str| mayfly_state::Experiment {
        name: "experiment.toml".into(),
        file_fingerprint: "0".repeat(64),
        trigger: "experiment run".into(),
        outcome: mayfly_state::ExperimentOutcome::Failed,
        deployment_version: None,
        started_at: clock.now(),
        baseline: "plain".into(),
        variants: vec!["plain".into(), "fast".into()],
        details: mayfly_state::ExperimentDetails { error: Some(error.to_owned()), ..Default::default() },
    };
    // A function's output quoted in the error: health data.
    let first = store.record_experiment(&experiment(&format!("run 1 failed: {MARKER}"))).unwrap();
    let second = store.record_experiment(&experiment("run 2 failed")).unwrap();
    drop(store);
    assert_eq!(files_containing(directory.path(), MARKER.as_bytes()), Vec::<String>::new());

    keyring.rotate(clock.now());
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring.clone())).unwrap();
    // The item lookup key and the two experiments' details.
    assert_eq!(store.rewrap_all().unwrap(), 3);
    let read = store.experiment(first.id).unwrap();
    assert_eq!(read.experiment.details.error.as_deref(), Some(format!("run 1 failed: {MARKER}").as_str()));
    drop(store);

    // The first experiment's envelope copied over the second's: it is bound to its own id.
    let connection = Connection::open(&path).unwrap();
    connection
        .execute(
            "UPDATE experiments SET details = (SELECT details FROM experiments WHERE experiment_id = ?1) \
             WHERE experiment_id = ?2",
            rusqlite::params![first.id as i64, second.id as i64],
        )
        .unwrap();
    drop(connection);
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), Arc::new(keyring)).unwrap();
    match store.experiment(second.id) {
        Err(StateError::Damaged { what, .. }) => assert_eq!(what, format!("details of experiment {}", second.id)),
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert!(store.experiment(first.id).is_ok(), "the other experiment still reads");
}

#[test]
fn a_queue_fed_items_message_attributes_are_read_back_opened_and_only_for_items_of_messages() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store = SqliteStore::open_encrypted(&path, Arc::new(clock.clone()), keyring).unwrap();
    let queue = name("work");
    store.create_queue(&queue, &QueueConfig::default(), &[]).unwrap();
    let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let traced = OutgoingMessage {
        body: with_marker("traced"),
        attributes: vec![
            (mayfly_core::TRACE_HEADER_ATTRIBUTE.to_owned(), header.to_owned()),
            ("note".to_owned(), MARKER.to_owned()),
        ],
        delay: None,
    };
    let ids = store.send_messages(&queue, &[traced, OutgoingMessage::new(with_marker("plain"))]).unwrap();
    store
        .create_run(NewRun {
            id: "run-1".to_owned(),
            job: name("drain"),
            deployment_version: None,
            trigger: "manual".to_owned(),
            deadline: Timestamp::from_millis(1_795_588_702_000 + 3_600_000),
            budget: None,
        })
        .unwrap();
    store.claim_run("run-1", "c1", Duration::from_secs(60)).unwrap();
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 2);
    store.add_run_items("run-1", &[NewRunItem { item: "manifest-line".to_owned(), payload: b"x".to_vec() }]).unwrap();

    let asked: Vec<String> =
        vec![ids[0].to_string(), ids[1].to_string(), "manifest-line".to_owned(), "unknown".to_owned()];
    let found = store.run_item_message_attributes("run-1", &asked).unwrap();
    assert_eq!(
        found.keys().cloned().collect::<Vec<_>>(),
        vec![ids[0].to_string()],
        "only the item whose message had attributes"
    );
    assert_eq!(mayfly_core::trace_header(&found[&ids[0].to_string()]), Some(header));
    assert_eq!(found[&ids[0].to_string()][1], ("note".to_owned(), MARKER.to_owned()));
    assert!(matches!(store.run_item_message_attributes("nope", &asked), Err(StateError::NotFound { .. })));
    drop(store);
    assert_eq!(files_containing(directory.path(), MARKER.as_bytes()), Vec::<String>::new(), "still sealed on disk");
}
