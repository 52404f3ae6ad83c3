//! Conformance cases of [`crate::QueueStore`].

#[allow(unused_imports)]
use super::*;

#[track_caller]
fn assert_lease_lost<T: std::fmt::Debug>(result: crate::Result<T>) {
    assert!(matches!(result, Err(StateError::LeaseLost { .. })), "expected LeaseLost, got {result:?}");
}

/// Defect 12 of issue 10: only messages set aside for integrity are listed;
/// ordinary dead letters (past `max_receives`) are not damage.
pub fn damaged_messages_are_none_in_a_healthy_store_even_with_dead_letters<S: QueueStore + ?Sized>(
    subject: Subject<S>,
) {
    let store = &subject.store;
    store.create_queue(&name("dlq"), &QueueConfig::default(), &[]).unwrap();
    let config = QueueConfig { max_receives: Some(1), dead_letter: Some(name("dlq")), ..QueueConfig::default() };
    store.create_queue(&name("work"), &config, &[]).unwrap();
    send_bodies(&subject, &name("work"), &["a"]);
    let received = receive(&subject, &name("work"), 1);
    store.change_visibility(&name("work"), received[0].receipt, Duration::ZERO).unwrap();
    assert_eq!(receive(&subject, &name("work"), 1), vec![], "dead-lettered past max_receives");
    assert_eq!(stats(&subject, &name("dlq")).visible, 1);
    assert_eq!(store.damaged_messages(100).unwrap(), vec![]);
}

// --- queues: registry ---------------------------------------------------------------------

pub fn queues_are_created_read_and_listed_by_name<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(120),
        delay: Duration::from_secs(5),
        max_message_size: ByteSize(1024),
        retention: Duration::from_secs(3600),
        max_receives: Some(3),
        dead_letter: Some(name("work-dlq")),
    };
    let work = store.create_queue(&name("work"), &config, &tags(&[("owner", "ml")])).unwrap();
    assert_eq!(work.config, config);
    assert_eq!(work.tags, tags(&[("owner", "ml")]));
    assert_eq!(work.created_at, subject.clock.now());
    let dead_letters = store.create_queue(&name("work-dlq"), &QueueConfig::default(), &[]).unwrap();
    let alpha = store.create_queue(&name("alpha"), &QueueConfig::default(), &[]).unwrap();
    assert_eq!(store.queue(&name("work")).unwrap(), work);
    assert_eq!(store.queues().unwrap(), vec![alpha, work, dead_letters]);
}

pub fn creating_an_existing_queue_is_already_exists<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let original = store.create_queue(&name("work"), &QueueConfig::default(), &[]).unwrap();
    let again = store.create_queue(&name("work"), &queue_config(Duration::from_secs(1)), &[]);
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "queue", name }) if name == "work"), "{again:?}");
    assert_eq!(store.queue(&name("work")).unwrap(), original);
}

pub fn updating_a_queue_keeps_its_messages<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let created_at = subject.store.queue(&queue).unwrap().created_at;
    send_bodies(&subject, &queue, &["a", "b"]);
    subject.clock.advance(Duration::from_secs(1));
    let config = QueueConfig { max_receives: Some(7), ..queue_config(Duration::from_secs(60)) };
    let updated = subject.store.update_queue(&queue, &config, &tags(&[("team", "x")])).unwrap();
    assert_eq!(updated.config, config);
    assert_eq!(updated.tags, tags(&[("team", "x")]));
    assert_eq!(updated.created_at, created_at, "an update keeps the creation time");
    assert_eq!(subject.store.queue(&queue).unwrap(), updated);
    let received = receive(&subject, &queue, 10);
    assert_eq!(bodies_of(&received), ["a", "b"]);
    assert_eq!(received[0].lease_until, subject.clock.now().saturating_add(Duration::from_secs(60)));
}

pub fn deleting_a_queue_removes_its_messages<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a", "b"]);
    subject.store.delete_queue(&queue).unwrap();
    assert_not_found(subject.store.queue(&queue), "queue", "work");
    assert_eq!(subject.store.queues().unwrap(), vec![]);
    let queue = create_queue(&subject, "work");
    assert_eq!(subject.store.peek_messages(&queue, 10).unwrap(), vec![], "a new queue of the same name is empty");
    assert_eq!(stats(&subject, &queue), QueueStats::default());
}

pub fn purging_a_queue_deletes_every_message_and_keeps_the_queue<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let config = QueueConfig { visibility_timeout: Duration::from_secs(60), ..QueueConfig::default() };
    let work = store.create_queue(&name("work"), &config, &tags(&[("owner", "ml")])).unwrap();
    let other = create_queue(&subject, "other");
    send_bodies(&subject, &other, &["kept"]);
    send_bodies(&subject, &name("work"), &["in-flight", "visible"]);
    let delayed = OutgoingMessage { delay: Some(Duration::from_secs(30)), ..OutgoingMessage::new("delayed") };
    store.send_messages(&name("work"), &[delayed]).unwrap();
    let leased = receive(&subject, &name("work"), 1);
    assert_eq!(bodies_of(&leased), ["in-flight"]);

    assert_eq!(store.purge_queue(&name("work")).unwrap(), 3, "visible, in flight and delayed");
    assert_eq!(stats(&subject, &name("work")), QueueStats::default());
    assert_eq!(store.peek_messages(&name("work"), 10).unwrap(), vec![]);
    assert_lease_lost(store.change_visibility(&name("work"), leased[0].receipt, Duration::ZERO));
    assert_eq!(store.delete_messages(&name("work"), &[leased[0].receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    subject.clock.advance(Duration::from_secs(120));
    assert_eq!(receive(&subject, &name("work"), 10), vec![], "neither the lease's end nor the delay brings one back");
    assert_eq!(store.queue(&name("work")).unwrap(), work, "the queue and its settings stay");
    assert_eq!(bodies_of(&receive(&subject, &other, 10)), ["kept"], "other queues are untouched");

    send_bodies(&subject, &name("work"), &["after"]);
    assert_eq!(bodies_of(&receive(&subject, &name("work"), 10)), ["after"]);
    assert_eq!(store.purge_queue(&other).unwrap(), 1);
    assert_eq!(store.purge_queue(&other).unwrap(), 0, "purging an empty queue deletes nothing");
}

pub fn every_queue_method_on_an_unknown_queue_is_not_found<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let missing = name("missing");
    let receipt = ReceiptHandle { message_id: 1, receive_count: 1 };
    assert_not_found(store.update_queue(&missing, &QueueConfig::default(), &[]), "queue", "missing");
    assert_not_found(store.delete_queue(&missing), "queue", "missing");
    assert_not_found(store.queue(&missing), "queue", "missing");
    assert_not_found(store.send_messages(&missing, &[OutgoingMessage::new("x")]), "queue", "missing");
    assert_not_found(store.receive_messages(&missing, ReceiveRequest::up_to(1)), "queue", "missing");
    assert_not_found(store.delete_messages(&missing, &[receipt]), "queue", "missing");
    assert_not_found(store.change_visibility(&missing, receipt, Duration::ZERO), "queue", "missing");
    assert_not_found(store.queue_stats(&missing), "queue", "missing");
    assert_not_found(store.peek_messages(&missing, 1), "queue", "missing");
    assert_not_found(store.purge_queue(&missing), "queue", "missing");
    assert_not_found(store.redrive_dead_letters(&missing, None), "queue", "missing");
    let dead_letters = create_queue(&subject, "dead-letters");
    assert_not_found(store.redrive_dead_letters(&dead_letters, Some(&missing)), "queue", "missing");
}

// --- queues: send -------------------------------------------------------------------------

pub fn send_returns_increasing_ids_in_order<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let ids = send_bodies(&subject, &queue, &["a", "b", "c"]);
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let more = send_bodies(&subject, &queue, &["d"]);
    assert!(more[0] > ids[2]);
    let peeked: Vec<u64> = subject.store.peek_messages(&queue, 10).unwrap().iter().map(|m| m.message_id).collect();
    assert_eq!(peeked, [ids, more].concat());
}

pub fn empty_batches_do_nothing<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    assert_eq!(subject.store.send_messages(&queue, &[]).unwrap(), Vec::<u64>::new());
    assert_eq!(subject.store.delete_messages(&queue, &[]).unwrap(), vec![]);
    assert_eq!(stats(&subject, &queue), QueueStats::default());
}

pub fn send_batch_with_one_oversized_message_stores_nothing<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let queue = name("small");
    let config = QueueConfig { max_message_size: ByteSize(10), ..QueueConfig::default() };
    store.create_queue(&queue, &config, &[]).unwrap();
    let batch =
        vec![OutgoingMessage::new("fits"), OutgoingMessage::new("0123456789X"), OutgoingMessage::new("fits too")];
    let result = store.send_messages(&queue, &batch);
    match result {
        Err(StateError::Rule(QueueRuleError::MessageTooLarge { queue: in_queue, size, limit })) => {
            assert_eq!((in_queue, size, limit), (queue.clone(), 11, ByteSize(10)));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(store.peek_messages(&queue, 10).unwrap(), vec![], "nothing of the batch is stored");
    assert_eq!(stats(&subject, &queue), QueueStats::default());
    assert_eq!(store.send_messages(&queue, &[OutgoingMessage::new("0123456789")]).unwrap().len(), 1);
}

pub fn attributes_count_against_the_size_limit<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = name("small");
    let config = QueueConfig { max_message_size: ByteSize(10), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    let message = OutgoingMessage { attributes: tags(&[("kind", "xy")]), ..OutgoingMessage::new("12345") };
    assert_eq!(message.size(), 11);
    let result = subject.store.send_messages(&queue, &[message]);
    assert!(matches!(result, Err(StateError::Rule(QueueRuleError::MessageTooLarge { size: 11, .. }))), "{result:?}");
}

pub fn queue_delay_hides_messages_until_due<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = name("delayed");
    let config = QueueConfig { delay: Duration::from_secs(10), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    send_bodies(&subject, &queue, &["later"]);
    assert_eq!(receive(&subject, &queue, 10), vec![]);
    assert_eq!(stats(&subject, &queue).delayed, 1);
    subject.clock.advance(Duration::from_millis(9_999));
    assert_eq!(receive(&subject, &queue, 10), vec![]);
    subject.clock.advance(Duration::from_millis(1));
    assert_eq!(bodies_of(&receive(&subject, &queue, 10)), ["later"]);
}

pub fn message_delay_overrides_the_queue_delay<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = name("delayed");
    let config = QueueConfig { delay: Duration::from_secs(10), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    let now_message = OutgoingMessage { delay: Some(Duration::ZERO), ..OutgoingMessage::new("now") };
    let soon_message = OutgoingMessage { delay: Some(Duration::from_secs(2)), ..OutgoingMessage::new("soon") };
    subject.store.send_messages(&queue, &[OutgoingMessage::new("queue-delay"), soon_message, now_message]).unwrap();
    assert_eq!(bodies_of(&receive(&subject, &queue, 10)), ["now"]);
    subject.clock.advance(Duration::from_secs(2));
    assert_eq!(bodies_of(&receive(&subject, &queue, 10)), ["soon"]);
    subject.clock.advance(Duration::from_secs(8));
    assert_eq!(bodies_of(&receive(&subject, &queue, 10)), ["queue-delay"]);
}

// --- queues: receive, visibility, delete ------------------------------------------------------

pub fn receive_returns_oldest_first_up_to_the_maximum<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a", "b"]);
    subject.clock.advance(Duration::from_millis(5));
    send_bodies(&subject, &queue, &["c", "d", "e"]);
    let first = receive(&subject, &queue, 3);
    assert_eq!(bodies_of(&first), ["a", "b", "c"]);
    assert!(first.iter().all(|message| message.receive_count == 1));
    assert_eq!(bodies_of(&receive(&subject, &queue, 3)), ["d", "e"]);
    assert_eq!(receive(&subject, &queue, 3), vec![]);
}

pub fn receive_from_an_empty_queue_returns_nothing<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    assert_eq!(receive(&subject, &queue, 10), vec![]);
}

pub fn received_message_is_invisible_until_its_visibility_timeout<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let sent_at = subject.clock.now();
    let ids = send_bodies(&subject, &queue, &["job"]);
    let first = receive(&subject, &queue, 1).remove(0);
    assert_eq!(first.message_id, ids[0]);
    assert_eq!(first.receipt, ReceiptHandle { message_id: ids[0], receive_count: 1 });
    assert_eq!(first.sent_at, sent_at);
    assert_eq!(first.lease_until, sent_at.saturating_add(Duration::from_secs(30)));
    subject.clock.advance(Duration::from_millis(29_999));
    assert_eq!(receive(&subject, &queue, 1), vec![], "leased message is invisible");
    subject.clock.advance(Duration::from_millis(1));
    let second = receive(&subject, &queue, 1).remove(0);
    assert_eq!(second.message_id, ids[0]);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt, "a new receive gives a new receipt");
    assert_eq!(second.sent_at, sent_at);
}

pub fn receive_request_visibility_timeout_overrides_the_queue<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let request = ReceiveRequest { max_messages: 1, visibility_timeout: Some(Duration::from_secs(2)) };
    let received = subject.store.receive_messages(&queue, request).unwrap();
    assert_eq!(received[0].lease_until, subject.clock.now().saturating_add(Duration::from_secs(2)));
    subject.clock.advance(Duration::from_secs(2));
    assert_eq!(bodies_of(&receive(&subject, &queue, 1)), ["job"]);
}

pub fn delete_with_a_live_receipt_removes_the_message<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let received = receive(&subject, &queue, 1).remove(0);
    assert_eq!(subject.store.delete_messages(&queue, &[received.receipt]).unwrap(), vec![DeleteOutcome::Deleted]);
    assert_eq!(subject.store.peek_messages(&queue, 10).unwrap(), vec![]);
    subject.clock.advance(Duration::from_secs(60));
    assert_eq!(receive(&subject, &queue, 1), vec![]);
    assert_eq!(
        subject.store.delete_messages(&queue, &[received.receipt]).unwrap(),
        vec![DeleteOutcome::LeaseLost],
        "deleting twice"
    );
}

pub fn delete_with_a_stale_receipt_after_a_re_receive_is_lease_lost<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let stale = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(30));
    let fresh = receive(&subject, &queue, 1).remove(0).receipt;
    assert_eq!(subject.store.delete_messages(&queue, &[stale]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    assert_eq!(subject.store.peek_messages(&queue, 10).unwrap().len(), 1, "the message stays");
    assert_eq!(stats(&subject, &queue).in_flight, 1);
    assert_eq!(subject.store.delete_messages(&queue, &[fresh]).unwrap(), vec![DeleteOutcome::Deleted]);
}

pub fn delete_after_the_lease_lapsed_is_lease_lost<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(30));
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    assert_eq!(stats(&subject, &queue).visible, 1);
}

pub fn delete_batch_mixes_deleted_and_lease_lost<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a", "b", "c"]);
    let short = ReceiveRequest { max_messages: 1, visibility_timeout: Some(Duration::from_secs(5)) };
    let a = subject.store.receive_messages(&queue, short).unwrap().remove(0);
    let rest = receive(&subject, &queue, 2);
    assert_eq!(bodies_of(&rest), ["b", "c"]);
    subject.clock.advance(Duration::from_secs(5));
    let a_again = receive(&subject, &queue, 1).remove(0);
    let unknown = ReceiptHandle { message_id: 999_999, receive_count: 1 };
    let outcomes =
        subject.store.delete_messages(&queue, &[rest[0].receipt, a.receipt, unknown, rest[1].receipt]).unwrap();
    assert_eq!(
        outcomes,
        vec![DeleteOutcome::Deleted, DeleteOutcome::LeaseLost, DeleteOutcome::LeaseLost, DeleteOutcome::Deleted]
    );
    let left: Vec<u64> = subject.store.peek_messages(&queue, 10).unwrap().iter().map(|m| m.message_id).collect();
    assert_eq!(left, vec![a_again.message_id]);
}

pub fn delete_with_a_receipt_of_another_queue_is_lease_lost<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let work = create_queue(&subject, "work");
    let other = create_queue(&subject, "other");
    send_bodies(&subject, &work, &["job"]);
    let receipt = receive(&subject, &work, 1).remove(0).receipt;
    assert_eq!(subject.store.delete_messages(&other, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    assert_lease_lost(subject.store.change_visibility(&other, receipt, Duration::ZERO));
    assert_eq!(stats(&subject, &work).in_flight, 1);
}

pub fn change_visibility_extends_the_lease<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(20));
    subject.store.change_visibility(&queue, receipt, Duration::from_secs(60)).unwrap();
    subject.clock.advance(Duration::from_secs(59));
    assert_eq!(receive(&subject, &queue, 1), vec![], "still leased 79 s after the receive");
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::Deleted]);
}

pub fn change_visibility_to_zero_releases_the_message<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.store.change_visibility(&queue, receipt, Duration::ZERO).unwrap();
    let again = receive(&subject, &queue, 1);
    assert_eq!(bodies_of(&again), ["job"]);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
}

pub fn change_visibility_with_a_stale_receipt_is_lease_lost<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let stale = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(30));
    assert_lease_lost(subject.store.change_visibility(&queue, stale, Duration::from_secs(10)));
    let fresh = receive(&subject, &queue, 1).remove(0).receipt;
    assert_lease_lost(subject.store.change_visibility(&queue, stale, Duration::from_secs(10)));
    subject.store.change_visibility(&queue, fresh, Duration::from_secs(10)).unwrap();
}

// --- queues: dead letters ----------------------------------------------------------------------

fn queue_with_dead_letters<S: QueueStore + ?Sized>(subject: &Subject<S>, max_receives: u32) -> (Name, Name) {
    let queue = name("work");
    let dead_letter = name("work-dlq");
    let config = QueueConfig {
        max_receives: Some(max_receives),
        dead_letter: Some(dead_letter.clone()),
        ..queue_config(Duration::from_secs(10))
    };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    subject.store.create_queue(&dead_letter, &QueueConfig::default(), &[]).unwrap();
    (queue, dead_letter)
}

pub fn past_max_receives_moves_to_the_dead_letter_queue_with_the_reason<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let (queue, dead_letter) = queue_with_dead_letters(&subject, 2);
    let ids = send_bodies(&subject, &queue, &["poison"]);
    for receive_count in 1..=2 {
        let received = receive(&subject, &queue, 1);
        assert_eq!(bodies_of(&received), ["poison"]);
        assert_eq!(received[0].receive_count, receive_count);
        subject.clock.advance(Duration::from_secs(10));
    }
    // Visible at the same instant as `poison`, which comes first by id.
    send_bodies(&subject, &queue, &["fine"]);
    // The third receive moves `poison` away and goes on to deliver `fine`.
    let moved_at = subject.clock.now();
    let received = receive(&subject, &queue, 1);
    assert_eq!(bodies_of(&received), ["fine"]);
    assert_eq!(stats(&subject, &queue).visible, 0);
    let dead = subject.store.peek_messages(&dead_letter, 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"poison");
    assert_eq!(dead[0].message_id, ids[0]);
    let info = dead[0].dead_letter.clone().expect("dead-letter info");
    assert_eq!(info.source_queue, queue);
    assert_eq!(info.reason, max_receives_reason(2));
    assert_eq!(info.at, moved_at);
    assert_eq!(stats(&subject, &dead_letter).visible, 1);
    assert_eq!(bodies_of(&receive(&subject, &dead_letter, 10)), ["poison"]);
}

/// A receive that dead-letters what it finds first and goes on to the next
/// page must not take again a message it has just leased with a zero
/// timeout (visible again at once, and after the first page's keyset).
pub fn a_receive_that_pages_past_dead_letters_hands_a_zero_timeout_lease_out_once<S: QueueStore + ?Sized>(
    subject: Subject<S>,
) {
    let (queue, dead_letter) = queue_with_dead_letters(&subject, 1);
    let released = ReceiveRequest { max_messages: 2, visibility_timeout: Some(Duration::ZERO) };
    // Received once and released at once: still visible, past max_receives.
    send_bodies(&subject, &queue, &["poison-1", "poison-2"]);
    assert_eq!(bodies_of(&subject.store.receive_messages(&queue, released).unwrap()), ["poison-1", "poison-2"]);
    let fresh = send_bodies(&subject, &queue, &["fresh"]);
    subject.clock.advance(Duration::from_secs(1));
    let request = ReceiveRequest { max_messages: 3, visibility_timeout: Some(Duration::ZERO) };
    let received = subject.store.receive_messages(&queue, request).unwrap();
    assert_eq!(bodies_of(&received), ["fresh"]);
    assert_eq!((received[0].message_id, received[0].receive_count), (fresh[0], 1));
    assert_eq!(subject.store.peek_messages(&dead_letter, 10).unwrap().len(), 2);
    let left = subject.store.peek_messages(&queue, 10).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].receive_count, 1, "received once, not dead-lettered by a second look");
}

pub fn past_max_receives_without_an_existing_dead_letter_queue_stays_put<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = name("work");
    let config = QueueConfig {
        max_receives: Some(1),
        dead_letter: Some(name("not-created-yet")),
        ..queue_config(Duration::from_secs(10))
    };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    send_bodies(&subject, &queue, &["poison"]);
    assert_eq!(receive(&subject, &queue, 1).len(), 1);
    subject.clock.advance(Duration::from_secs(10));
    assert_eq!(receive(&subject, &queue, 1), vec![], "not delivered past max_receives");
    assert_eq!(stats(&subject, &queue).visible, 1, "and not lost either");
    let dead_letter = create_queue(&subject, "not-created-yet");
    assert_eq!(receive(&subject, &queue, 1), vec![]);
    assert_eq!(subject.store.peek_messages(&dead_letter, 10).unwrap().len(), 1);
}

pub fn redrive_moves_dead_letters_back_with_receive_count_reset<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let (queue, dead_letter) = queue_with_dead_letters(&subject, 1);
    send_bodies(&subject, &queue, &["one", "two"]);
    let old_receipts: Vec<ReceiptHandle> = receive(&subject, &queue, 2).iter().map(|m| m.receipt).collect();
    subject.clock.advance(Duration::from_secs(10));
    assert_eq!(receive(&subject, &queue, 10), vec![]);
    assert_eq!(stats(&subject, &dead_letter).visible, 2);
    assert_eq!(subject.store.redrive_dead_letters(&dead_letter, None).unwrap(), 2);
    assert_eq!(stats(&subject, &dead_letter), QueueStats::default());
    let back = subject.store.peek_messages(&queue, 10).unwrap();
    assert_eq!(back.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(back.iter().all(|m| m.receive_count == 0 && m.dead_letter.is_none()));
    let again = receive(&subject, &queue, 10);
    assert_eq!(bodies_of(&again), ["one", "two"]);
    assert!(again.iter().all(|m| m.receive_count == 1));
    assert_eq!(
        subject.store.delete_messages(&queue, &old_receipts).unwrap(),
        vec![DeleteOutcome::LeaseLost, DeleteOutcome::LeaseLost],
        "receipts from before the dead-lettering never match a redriven message"
    );
}

pub fn redrive_to_a_named_queue<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let (queue, dead_letter) = queue_with_dead_letters(&subject, 1);
    let elsewhere = create_queue(&subject, "elsewhere");
    send_bodies(&subject, &queue, &["one"]);
    send_bodies(&subject, &dead_letter, &["sent-directly"]);
    receive(&subject, &queue, 1);
    subject.clock.advance(Duration::from_secs(10));
    assert_eq!(receive(&subject, &queue, 1), vec![]);
    assert_eq!(subject.store.redrive_dead_letters(&dead_letter, Some(&elsewhere)).unwrap(), 2);
    assert_eq!(stats(&subject, &queue), QueueStats::default());
    assert_eq!(stats(&subject, &dead_letter), QueueStats::default());
    assert_eq!(bodies_of(&receive(&subject, &elsewhere, 10)), ["one", "sent-directly"]);
}

pub fn dead_letters_are_counted_per_source_queue<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let (queue, dead_letter) = queue_with_dead_letters(&subject, 1);
    let other = name("other");
    let config = QueueConfig {
        max_receives: Some(1),
        dead_letter: Some(dead_letter.clone()),
        ..queue_config(Duration::from_secs(10))
    };
    subject.store.create_queue(&other, &config, &[]).unwrap();
    send_bodies(&subject, &queue, &["one", "two"]);
    send_bodies(&subject, &other, &["three"]);
    send_bodies(&subject, &dead_letter, &["sent-directly"]);
    receive(&subject, &queue, 10);
    receive(&subject, &other, 10);
    subject.clock.advance(Duration::from_secs(10));
    assert_eq!(receive(&subject, &queue, 10), vec![]);
    assert_eq!(receive(&subject, &other, 10), vec![]);
    assert_eq!(subject.store.dead_letters_from(&dead_letter, &queue).unwrap(), 2);
    assert_eq!(subject.store.dead_letters_from(&dead_letter, &other).unwrap(), 1);
    assert_eq!(subject.store.dead_letters_from(&dead_letter, &dead_letter).unwrap(), 0);
    assert_not_found(subject.store.dead_letters_from(&name("missing"), &queue), "queue", "missing");
}

// --- queues: stats, contents, limits -------------------------------------------------------------

pub fn queue_stats_are_exact_under_a_manual_clock<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    assert_eq!(stats(&subject, &queue), QueueStats::default());
    send_bodies(&subject, &queue, &["a", "b", "c"]);
    subject.clock.advance(Duration::from_secs(4));
    let delayed = OutgoingMessage { delay: Some(Duration::from_secs(60)), ..OutgoingMessage::new("d") };
    subject.store.send_messages(&queue, &[delayed]).unwrap();
    receive(&subject, &queue, 1);
    subject.clock.advance(Duration::from_secs(3));
    assert_eq!(
        stats(&subject, &queue),
        QueueStats { visible: 2, in_flight: 1, delayed: 1, oldest_age: Some(Duration::from_secs(7)) }
    );
    subject.clock.advance(Duration::from_secs(27));
    assert_eq!(
        stats(&subject, &queue),
        QueueStats { visible: 3, in_flight: 0, delayed: 1, oldest_age: Some(Duration::from_secs(34)) }
    );
}

pub fn attributes_round_trip<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let attributes = tags(&[("trace-id", "abc"), ("content-type", "application/json"), ("empty", ""), ("ünï", "ç😀")]);
    let message = OutgoingMessage { attributes: attributes.clone(), ..OutgoingMessage::new("x") };
    subject.store.send_messages(&queue, &[message, OutgoingMessage::new("plain")]).unwrap();
    assert_eq!(subject.store.peek_messages(&queue, 1).unwrap()[0].attributes, attributes);
    let received = receive(&subject, &queue, 2);
    assert_eq!(received[0].attributes, attributes, "attributes keep their order");
    assert_eq!(received[1].attributes, vec![]);
}

pub fn bodies_are_arbitrary_bytes<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let bodies: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff, 0xfe, 0x00, 0xc3, 0x28], (0..=255).collect()];
    let messages: Vec<OutgoingMessage> = bodies.iter().map(|body| OutgoingMessage::new(body.clone())).collect();
    subject.store.send_messages(&queue, &messages).unwrap();
    let peeked: Vec<Vec<u8>> = subject.store.peek_messages(&queue, 10).unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(peeked, bodies);
    let received: Vec<Vec<u8>> = receive(&subject, &queue, 10).into_iter().map(|m| m.body).collect();
    assert_eq!(received, bodies);
}

pub fn visibility_timeout_over_twelve_hours_is_refused<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let too_long = QueueConfig::MAX_VISIBILITY_TIMEOUT + Duration::from_millis(1);
    let refused = |result: crate::Result<()>| {
        assert!(
            matches!(result, Err(StateError::Rule(QueueRuleError::VisibilityTimeoutTooLong { requested })) if requested == too_long),
            "{result:?}"
        );
    };
    refused(store.create_queue(&name("slow"), &queue_config(too_long), &[]).map(drop));
    assert_not_found(store.queue(&name("slow")), "queue", "slow");
    let queue = create_queue(&subject, "work");
    refused(store.update_queue(&queue, &queue_config(too_long), &[]).map(drop));
    assert_eq!(store.queue(&queue).unwrap().config.visibility_timeout, Duration::from_secs(30));
    send_bodies(&subject, &queue, &["job"]);
    let request = ReceiveRequest { max_messages: 1, visibility_timeout: Some(too_long) };
    refused(store.receive_messages(&queue, request).map(drop));
    assert_eq!(stats(&subject, &queue).visible, 1, "a refused receive leases nothing");
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    refused(store.change_visibility(&queue, receipt, too_long));
    store.change_visibility(&queue, receipt, QueueConfig::MAX_VISIBILITY_TIMEOUT).unwrap();
}

pub fn peek_does_not_lease<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    let ids = send_bodies(&subject, &queue, &["a", "b", "c"]);
    let peeked = subject.store.peek_messages(&queue, 2).unwrap();
    assert_eq!(peeked.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(peeked[0].visible_at, subject.clock.now());
    assert_eq!(peeked[0].receive_count, 0);
    assert_eq!(peeked[0].dead_letter, None);
    assert_eq!(stats(&subject, &queue).visible, 3);
    assert_eq!(receive(&subject, &queue, 10).len(), 3);
}

pub fn message_ids_are_never_reused<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a", "b"]);
    let received = receive(&subject, &queue, 2);
    let receipts: Vec<ReceiptHandle> = received.iter().map(|m| m.receipt).collect();
    subject.store.delete_messages(&queue, &receipts).unwrap();
    let new_ids = send_bodies(&subject, &queue, &["c"]);
    assert!(new_ids[0] > received[1].message_id, "id {} reused", new_ids[0]);
    receive(&subject, &queue, 1);
    assert_eq!(
        subject.store.delete_messages(&queue, &receipts).unwrap(),
        vec![DeleteOutcome::LeaseLost, DeleteOutcome::LeaseLost],
        "old receipts never match a new message"
    );
}
