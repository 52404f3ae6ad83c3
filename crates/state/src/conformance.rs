//! The conformance suite: test functions that take any [`StateStore`] and check
//! it keeps the contract. Each function checks one behaviour on a fresh, empty
//! store opened on a [`ManualClock`] (a [`Subject`]).
//!
//! A backend's tests generate one `#[test]` per case with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! fn fresh_subject() -> mayfly_state::conformance::Subject { /* open an empty store */ }
//! mayfly_state::conformance_tests!(fresh_subject);
//! ```
//!
//! or loop over [`all`] / call [`run_all`]. The list of cases lives once, in
//! `__with_every_conformance_case!`, so the two cannot drift apart.

use std::time::Duration;

use mayfly_core::queue::{QueueConfig, QueueRuleError, QueueStats, ReceiptHandle, max_receives_reason};
use mayfly_core::{ByteSize, Clock, ManualClock, Name, NewObjectEvent, ObjectEventKind, Timestamp};

use crate::{
    DeleteOutcome, FunctionStats, InvocationFilter, InvocationRecord, NewDeployment, OutgoingMessage, ReceiveRequest,
    ReceivedMessage, StateError, StateStore, StoredInvocation,
};

/// A freshly opened, empty store and the clock it was opened with.
pub struct Subject {
    pub store: Box<dyn StateStore>,
    pub clock: ManualClock,
    /// Whatever the store needs to outlive it during the case (a temporary
    /// directory, a database server); dropped after `store` (fields drop in order).
    pub keep_alive: Box<dyn std::any::Any>,
}

impl Subject {
    pub fn new(store: Box<dyn StateStore>, clock: ManualClock) -> Subject {
        Subject { store, clock, keep_alive: Box::new(()) }
    }

    /// Keep `resource` alive until the store is dropped.
    pub fn keeping(self, resource: impl std::any::Any) -> Subject {
        Subject { keep_alive: Box::new(resource), ..self }
    }
}

/// Calls `$callback!` with every case name; the single list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_every_conformance_case {
    ($callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*)
            deployments_are_numbered_in_order_with_source_and_hash,
            latest_deployment_is_none_then_the_newest,
            buckets_are_created_read_listed_by_name_and_deleted,
            creating_an_existing_bucket_is_already_exists,
            unknown_bucket_is_not_found,
            object_event_sequences_increase_in_commit_order,
            object_events_after_pages_through_the_log,
            consumer_cursors_start_at_zero_and_keep_what_was_set,
            queues_are_created_read_and_listed_by_name,
            creating_an_existing_queue_is_already_exists,
            updating_a_queue_keeps_its_messages,
            deleting_a_queue_removes_its_messages,
            every_queue_method_on_an_unknown_queue_is_not_found,
            send_returns_increasing_ids_in_order,
            empty_batches_do_nothing,
            send_batch_with_one_oversized_message_stores_nothing,
            attributes_count_against_the_size_limit,
            queue_delay_hides_messages_until_due,
            message_delay_overrides_the_queue_delay,
            receive_returns_oldest_first_up_to_the_maximum,
            receive_from_an_empty_queue_returns_nothing,
            received_message_is_invisible_until_its_visibility_timeout,
            receive_request_visibility_timeout_overrides_the_queue,
            delete_with_a_live_receipt_removes_the_message,
            delete_with_a_stale_receipt_after_a_re_receive_is_lease_lost,
            delete_after_the_lease_lapsed_is_lease_lost,
            delete_batch_mixes_deleted_and_lease_lost,
            delete_with_a_receipt_of_another_queue_is_lease_lost,
            change_visibility_extends_the_lease,
            change_visibility_to_zero_releases_the_message,
            change_visibility_with_a_stale_receipt_is_lease_lost,
            past_max_receives_moves_to_the_dead_letter_queue_with_the_reason,
            past_max_receives_without_an_existing_dead_letter_queue_stays_put,
            redrive_moves_dead_letters_back_with_receive_count_reset,
            redrive_to_a_named_queue,
            queue_stats_are_exact_under_a_manual_clock,
            attributes_round_trip,
            bodies_are_arbitrary_bytes,
            visibility_timeout_over_twelve_hours_is_refused,
            peek_does_not_lease,
            message_ids_are_never_reused,
            invocations_are_recorded_with_every_field_in_ascending_id_order,
            invocations_filter_by_function_and_outcome,
            invocations_page_by_after_id,
            invocation_logs_join_every_attempt_of_a_request_in_order,
            invocation_logs_of_an_unknown_request_are_not_found,
            function_stats_are_exact,
            function_stats_of_a_function_never_invoked_are_empty,
            an_invocation_with_a_cost_that_is_not_finite_records_nothing,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    (() $($case:ident,)*) => {
        vec![$((stringify!($case), $crate::conformance::$case as fn($crate::conformance::Subject)),)*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_tests {
    (($fresh_subject:expr) $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case($fresh_subject());
            }
        )*
    };
}

/// Generate one `#[test]` per conformance case, each on a subject made by
/// `$fresh_subject` (a `fn() -> Subject`, or a closure).
#[macro_export]
macro_rules! conformance_tests {
    ($fresh_subject:expr) => {
        $crate::__with_every_conformance_case!(__conformance_case_tests!($fresh_subject));
    };
}

/// One conformance case: its name and the function that checks it.
pub type NamedCase = (&'static str, fn(Subject));

/// Every case, by name.
pub fn all() -> Vec<NamedCase> {
    crate::__with_every_conformance_case!(__conformance_case_list!())
}

/// Run every case, each on a fresh subject, naming the case that fails.
pub fn run_all(fresh_subject: impl Fn() -> Subject) {
    for (name, case) in all() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(fresh_subject())));
        if let Err(panic) = outcome {
            eprintln!("conformance case `{name}` failed");
            std::panic::resume_unwind(panic);
        }
    }
}

// --- helpers ------------------------------------------------------------------------

fn name(text: &str) -> Name {
    Name::new(text).expect("test names are valid")
}

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn queue_config(visibility_timeout: Duration) -> QueueConfig {
    QueueConfig { visibility_timeout, ..QueueConfig::default() }
}

/// A queue `q` with a 30 s visibility timeout.
fn create_queue(subject: &Subject, queue: &str) -> Name {
    let queue = name(queue);
    subject.store.create_queue(&queue, &queue_config(Duration::from_secs(30)), &[]).expect("create queue");
    queue
}

fn send_bodies(subject: &Subject, queue: &Name, bodies: &[&str]) -> Vec<u64> {
    let messages: Vec<OutgoingMessage> = bodies.iter().map(|body| OutgoingMessage::new(body.as_bytes())).collect();
    subject.store.send_messages(queue, &messages).expect("send")
}

fn receive(subject: &Subject, queue: &Name, max_messages: usize) -> Vec<ReceivedMessage> {
    subject.store.receive_messages(queue, ReceiveRequest::up_to(max_messages)).expect("receive")
}

fn bodies_of(messages: &[ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|message| String::from_utf8_lossy(&message.body).into_owned()).collect()
}

fn stats(subject: &Subject, queue: &Name) -> QueueStats {
    subject.store.queue_stats(queue).expect("stats")
}

fn deployment(source: &str) -> NewDeployment {
    NewDeployment { content_hash: format!("hash-of-{source}"), source: source.to_owned(), forced: false }
}

fn event(bucket: &str, key: &str, at: Timestamp) -> NewObjectEvent {
    NewObjectEvent {
        bucket: name(bucket),
        key: key.to_owned(),
        kind: ObjectEventKind::Created,
        size: 10,
        etag: Some(format!("etag-{key}")),
        at,
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: crate::Result<T>, kind: &str, expected_name: &str) {
    match result {
        Err(StateError::NotFound { kind: found_kind, name: found_name }) => {
            assert_eq!((found_kind, found_name.as_str()), (kind, expected_name));
        }
        other => panic!("expected NotFound for {kind} `{expected_name}`, got {other:?}"),
    }
}

#[track_caller]
fn assert_lease_lost<T: std::fmt::Debug>(result: crate::Result<T>) {
    assert!(matches!(result, Err(StateError::LeaseLost { .. })), "expected LeaseLost, got {result:?}");
}

// --- deployments ----------------------------------------------------------------------

pub fn deployments_are_numbered_in_order_with_source_and_hash(subject: Subject) {
    let store = &subject.store;
    assert_eq!(store.deployments().unwrap(), vec![]);
    let first = store.record_deployment(deployment("one")).unwrap();
    subject.clock.advance(Duration::from_secs(1));
    let second = store.record_deployment(NewDeployment { forced: true, ..deployment("two") }).unwrap();
    let third = store.record_deployment(deployment("three")).unwrap();
    assert_eq!((first.version, second.version, third.version), (1, 2, 3));
    assert_eq!(second.source, "two");
    assert_eq!(second.content_hash, "hash-of-two");
    assert!(second.forced);
    assert_eq!(second.applied_at, subject.clock.now());
    assert_eq!(store.deployments().unwrap(), vec![first, second, third]);
}

pub fn latest_deployment_is_none_then_the_newest(subject: Subject) {
    let store = &subject.store;
    assert_eq!(store.latest_deployment().unwrap(), None);
    store.record_deployment(deployment("one")).unwrap();
    let second = store.record_deployment(deployment("two")).unwrap();
    assert_eq!(store.latest_deployment().unwrap(), Some(second));
}

// --- buckets --------------------------------------------------------------------------

pub fn buckets_are_created_read_listed_by_name_and_deleted(subject: Subject) {
    let store = &subject.store;
    let zebra = store.create_bucket(&name("zebra"), &tags(&[("owner", "ml"), ("class", "phi")])).unwrap();
    assert_eq!(zebra.tags, tags(&[("class", "phi"), ("owner", "ml")]), "tags are sorted by key");
    assert_eq!(zebra.created_at, subject.clock.now());
    let apple = store.create_bucket(&name("apple"), &[]).unwrap();
    assert_eq!(store.bucket(&name("zebra")).unwrap(), zebra);
    assert_eq!(store.buckets().unwrap(), vec![apple.clone(), zebra]);
    store.delete_bucket(&name("zebra")).unwrap();
    assert_eq!(store.buckets().unwrap(), vec![apple]);
}

pub fn creating_an_existing_bucket_is_already_exists(subject: Subject) {
    let store = &subject.store;
    let original = store.create_bucket(&name("charts"), &tags(&[("owner", "a")])).unwrap();
    let again = store.create_bucket(&name("charts"), &tags(&[("owner", "b")]));
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "bucket", name }) if name == "charts"), "{again:?}");
    assert_eq!(store.bucket(&name("charts")).unwrap(), original, "the existing bucket is unchanged");
}

pub fn unknown_bucket_is_not_found(subject: Subject) {
    assert_not_found(subject.store.bucket(&name("nope")), "bucket", "nope");
    assert_not_found(subject.store.delete_bucket(&name("nope")), "bucket", "nope");
}

// --- the bucket event log ---------------------------------------------------------------

pub fn object_event_sequences_increase_in_commit_order(subject: Subject) {
    let store = &subject.store;
    let at = subject.clock.now();
    let mut previous = 0;
    for key in ["a", "b", "c", "d"] {
        let appended = store.append_object_event(event("charts", key, at)).unwrap();
        assert!(appended.sequence > previous, "{} after {previous}", appended.sequence);
        assert_eq!(appended.key, key);
        previous = appended.sequence;
    }
    let events = store.object_events_after(0, 100).unwrap();
    let keys: Vec<&str> = events.iter().map(|event| event.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    assert_eq!(events[1].etag.as_deref(), Some("etag-b"));
    assert_eq!(events[1].kind, ObjectEventKind::Created);
    assert_eq!(events[1].at, at);
    assert_eq!(events[1].bucket, name("charts"));
    let deleted = store
        .append_object_event(NewObjectEvent {
            kind: ObjectEventKind::Deleted,
            size: 0,
            etag: None,
            ..event("charts", "a", at)
        })
        .unwrap();
    assert_eq!(store.object_events_after(previous, 10).unwrap(), vec![deleted]);
}

pub fn object_events_after_pages_through_the_log(subject: Subject) {
    let store = &subject.store;
    let at = subject.clock.now();
    for index in 0..7 {
        store.append_object_event(event("logs", &format!("key-{index}"), at)).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.object_events_after(cursor, 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = last.sequence;
        seen.extend(page.into_iter().map(|event| event.key));
    }
    let expected: Vec<String> = (0..7).map(|index| format!("key-{index}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(store.object_events_after(cursor, 3).unwrap(), vec![]);
}

pub fn consumer_cursors_start_at_zero_and_keep_what_was_set(subject: Subject) {
    let store = &subject.store;
    assert_eq!(store.consumer_cursor("router").unwrap(), 0);
    store.set_consumer_cursor("router", 5).unwrap();
    store.set_consumer_cursor("router", 9).unwrap();
    store.set_consumer_cursor("alarms", 2).unwrap();
    assert_eq!(store.consumer_cursor("router").unwrap(), 9);
    assert_eq!(store.consumer_cursor("alarms").unwrap(), 2);
}

// --- queues: registry ---------------------------------------------------------------------

pub fn queues_are_created_read_and_listed_by_name(subject: Subject) {
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

pub fn creating_an_existing_queue_is_already_exists(subject: Subject) {
    let store = &subject.store;
    let original = store.create_queue(&name("work"), &QueueConfig::default(), &[]).unwrap();
    let again = store.create_queue(&name("work"), &queue_config(Duration::from_secs(1)), &[]);
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "queue", name }) if name == "work"), "{again:?}");
    assert_eq!(store.queue(&name("work")).unwrap(), original);
}

pub fn updating_a_queue_keeps_its_messages(subject: Subject) {
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

pub fn deleting_a_queue_removes_its_messages(subject: Subject) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a", "b"]);
    subject.store.delete_queue(&queue).unwrap();
    assert_not_found(subject.store.queue(&queue), "queue", "work");
    assert_eq!(subject.store.queues().unwrap(), vec![]);
    let queue = create_queue(&subject, "work");
    assert_eq!(subject.store.peek_messages(&queue, 10).unwrap(), vec![], "a new queue of the same name is empty");
    assert_eq!(stats(&subject, &queue), QueueStats::default());
}

pub fn every_queue_method_on_an_unknown_queue_is_not_found(subject: Subject) {
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
    assert_not_found(store.redrive_dead_letters(&missing, None), "queue", "missing");
    let dead_letters = create_queue(&subject, "dead-letters");
    assert_not_found(store.redrive_dead_letters(&dead_letters, Some(&missing)), "queue", "missing");
}

// --- queues: send -------------------------------------------------------------------------

pub fn send_returns_increasing_ids_in_order(subject: Subject) {
    let queue = create_queue(&subject, "work");
    let ids = send_bodies(&subject, &queue, &["a", "b", "c"]);
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let more = send_bodies(&subject, &queue, &["d"]);
    assert!(more[0] > ids[2]);
    let peeked: Vec<u64> = subject.store.peek_messages(&queue, 10).unwrap().iter().map(|m| m.message_id).collect();
    assert_eq!(peeked, [ids, more].concat());
}

pub fn empty_batches_do_nothing(subject: Subject) {
    let queue = create_queue(&subject, "work");
    assert_eq!(subject.store.send_messages(&queue, &[]).unwrap(), Vec::<u64>::new());
    assert_eq!(subject.store.delete_messages(&queue, &[]).unwrap(), vec![]);
    assert_eq!(stats(&subject, &queue), QueueStats::default());
}

pub fn send_batch_with_one_oversized_message_stores_nothing(subject: Subject) {
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

pub fn attributes_count_against_the_size_limit(subject: Subject) {
    let queue = name("small");
    let config = QueueConfig { max_message_size: ByteSize(10), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    let message = OutgoingMessage { attributes: tags(&[("kind", "xy")]), ..OutgoingMessage::new("12345") };
    assert_eq!(message.size(), 11);
    let result = subject.store.send_messages(&queue, &[message]);
    assert!(matches!(result, Err(StateError::Rule(QueueRuleError::MessageTooLarge { size: 11, .. }))), "{result:?}");
}

pub fn queue_delay_hides_messages_until_due(subject: Subject) {
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

pub fn message_delay_overrides_the_queue_delay(subject: Subject) {
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

pub fn receive_returns_oldest_first_up_to_the_maximum(subject: Subject) {
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

pub fn receive_from_an_empty_queue_returns_nothing(subject: Subject) {
    let queue = create_queue(&subject, "work");
    assert_eq!(receive(&subject, &queue, 10), vec![]);
}

pub fn received_message_is_invisible_until_its_visibility_timeout(subject: Subject) {
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

pub fn receive_request_visibility_timeout_overrides_the_queue(subject: Subject) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let request = ReceiveRequest { max_messages: 1, visibility_timeout: Some(Duration::from_secs(2)) };
    let received = subject.store.receive_messages(&queue, request).unwrap();
    assert_eq!(received[0].lease_until, subject.clock.now().saturating_add(Duration::from_secs(2)));
    subject.clock.advance(Duration::from_secs(2));
    assert_eq!(bodies_of(&receive(&subject, &queue, 1)), ["job"]);
}

pub fn delete_with_a_live_receipt_removes_the_message(subject: Subject) {
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

pub fn delete_with_a_stale_receipt_after_a_re_receive_is_lease_lost(subject: Subject) {
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

pub fn delete_after_the_lease_lapsed_is_lease_lost(subject: Subject) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(30));
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    assert_eq!(stats(&subject, &queue).visible, 1);
}

pub fn delete_batch_mixes_deleted_and_lease_lost(subject: Subject) {
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

pub fn delete_with_a_receipt_of_another_queue_is_lease_lost(subject: Subject) {
    let work = create_queue(&subject, "work");
    let other = create_queue(&subject, "other");
    send_bodies(&subject, &work, &["job"]);
    let receipt = receive(&subject, &work, 1).remove(0).receipt;
    assert_eq!(subject.store.delete_messages(&other, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
    assert_lease_lost(subject.store.change_visibility(&other, receipt, Duration::ZERO));
    assert_eq!(stats(&subject, &work).in_flight, 1);
}

pub fn change_visibility_extends_the_lease(subject: Subject) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.clock.advance(Duration::from_secs(20));
    subject.store.change_visibility(&queue, receipt, Duration::from_secs(60)).unwrap();
    subject.clock.advance(Duration::from_secs(59));
    assert_eq!(receive(&subject, &queue, 1), vec![], "still leased 79 s after the receive");
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::Deleted]);
}

pub fn change_visibility_to_zero_releases_the_message(subject: Subject) {
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["job"]);
    let receipt = receive(&subject, &queue, 1).remove(0).receipt;
    subject.store.change_visibility(&queue, receipt, Duration::ZERO).unwrap();
    let again = receive(&subject, &queue, 1);
    assert_eq!(bodies_of(&again), ["job"]);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(subject.store.delete_messages(&queue, &[receipt]).unwrap(), vec![DeleteOutcome::LeaseLost]);
}

pub fn change_visibility_with_a_stale_receipt_is_lease_lost(subject: Subject) {
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

fn queue_with_dead_letters(subject: &Subject, max_receives: u32) -> (Name, Name) {
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

pub fn past_max_receives_moves_to_the_dead_letter_queue_with_the_reason(subject: Subject) {
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

pub fn past_max_receives_without_an_existing_dead_letter_queue_stays_put(subject: Subject) {
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

pub fn redrive_moves_dead_letters_back_with_receive_count_reset(subject: Subject) {
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

pub fn redrive_to_a_named_queue(subject: Subject) {
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

// --- queues: stats, contents, limits -------------------------------------------------------------

pub fn queue_stats_are_exact_under_a_manual_clock(subject: Subject) {
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

pub fn attributes_round_trip(subject: Subject) {
    let queue = create_queue(&subject, "work");
    let attributes = tags(&[("trace-id", "abc"), ("content-type", "application/json"), ("empty", ""), ("ünï", "ç😀")]);
    let message = OutgoingMessage { attributes: attributes.clone(), ..OutgoingMessage::new("x") };
    subject.store.send_messages(&queue, &[message, OutgoingMessage::new("plain")]).unwrap();
    assert_eq!(subject.store.peek_messages(&queue, 1).unwrap()[0].attributes, attributes);
    let received = receive(&subject, &queue, 2);
    assert_eq!(received[0].attributes, attributes, "attributes keep their order");
    assert_eq!(received[1].attributes, vec![]);
}

pub fn bodies_are_arbitrary_bytes(subject: Subject) {
    let queue = create_queue(&subject, "work");
    let bodies: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xff, 0xfe, 0x00, 0xc3, 0x28], (0..=255).collect()];
    let messages: Vec<OutgoingMessage> = bodies.iter().map(|body| OutgoingMessage::new(body.clone())).collect();
    subject.store.send_messages(&queue, &messages).unwrap();
    let peeked: Vec<Vec<u8>> = subject.store.peek_messages(&queue, 10).unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(peeked, bodies);
    let received: Vec<Vec<u8>> = receive(&subject, &queue, 10).into_iter().map(|m| m.body).collect();
    assert_eq!(received, bodies);
}

pub fn visibility_timeout_over_twelve_hours_is_refused(subject: Subject) {
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

pub fn peek_does_not_lease(subject: Subject) {
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

pub fn message_ids_are_never_reused(subject: Subject) {
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

// --- the invocation ledger -------------------------------------------------------------------

/// A successful, warm invocation of `function` that took `duration_ms`.
fn invocation(function: &str, request_id: &str, started_at: Timestamp, duration_ms: u64) -> InvocationRecord {
    InvocationRecord {
        request_id: request_id.to_owned(),
        function: name(function),
        deployment_version: None,
        trigger: "invoke".to_owned(),
        attempt: 1,
        started_at,
        duration: Duration::from_millis(duration_ms),
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

fn failed(record: InvocationRecord, outcome: &str) -> InvocationRecord {
    InvocationRecord {
        outcome: outcome.to_owned(),
        error_type: Some(outcome.to_owned()),
        error_message: Some(format!("it {outcome}")),
        ..record
    }
}

fn every_invocation(subject: &Subject) -> Vec<StoredInvocation> {
    let filter = InvocationFilter { limit: 1_000, ..InvocationFilter::default() };
    subject.store.invocations(&filter).expect("list invocations")
}

fn request_ids(invocations: &[StoredInvocation]) -> Vec<&str> {
    invocations.iter().map(|invocation| invocation.record.request_id.as_str()).collect()
}

pub fn invocations_are_recorded_with_every_field_in_ascending_id_order(subject: Subject) {
    let store = &subject.store;
    assert_eq!(every_invocation(&subject), vec![]);
    let full = InvocationRecord {
        request_id: "req-full".to_owned(),
        function: name("rename"),
        deployment_version: Some(3),
        trigger: "bucket:inbox".to_owned(),
        attempt: 2,
        started_at: subject.clock.now(),
        duration: Duration::from_micros(1_234_567),
        init_duration: Some(Duration::from_micros(89_012)),
        outcome: "timeout".to_owned(),
        error_type: Some("TimedOut".to_owned()),
        error_message: Some("timed out after 1.2 s; ünïcode ok".to_owned()),
        peak_memory: Some(64 * 1024 * 1024),
        bytes_in: 1_500,
        bytes_out: 2_048,
        estimated_cost: 0.000_016_667,
    };
    let bare = invocation("thumbnail", "req-bare", Timestamp(0), 0);
    let first = store.record_invocation(&full, b"log line\n").unwrap();
    let second = store.record_invocation(&bare, b"").unwrap();
    subject.clock.advance(Duration::from_secs(1));
    let third = store.record_invocation(&invocation("rename", "req-3", subject.clock.now(), 5), b"").unwrap();
    assert!(first < second && second < third, "ids {first}, {second}, {third} increase");
    assert_eq!(
        every_invocation(&subject),
        vec![
            StoredInvocation { id: first, record: full },
            StoredInvocation { id: second, record: bare },
            StoredInvocation { id: third, record: invocation("rename", "req-3", subject.clock.now(), 5) },
        ],
        "every field round-trips, durations to the microsecond"
    );
}

pub fn invocations_filter_by_function_and_outcome(subject: Subject) {
    let store = &subject.store;
    let at = subject.clock.now();
    store.record_invocation(&invocation("rename", "a", at, 1), b"").unwrap();
    store.record_invocation(&failed(invocation("rename", "b", at, 1), "timeout"), b"").unwrap();
    store.record_invocation(&failed(invocation("resize", "c", at, 1), "timeout"), b"").unwrap();
    store.record_invocation(&failed(invocation("rename", "d", at, 1), "crashed"), b"").unwrap();
    store.record_invocation(&invocation("resize", "e", at, 1), b"").unwrap();
    let list = |function: Option<&str>, outcome: Option<&str>| {
        let filter = InvocationFilter {
            function: function.map(name),
            outcome: outcome.map(str::to_owned),
            limit: 100,
            after_id: 0,
        };
        request_ids(&store.invocations(&filter).unwrap()).into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(list(None, None), ["a", "b", "c", "d", "e"]);
    assert_eq!(list(Some("rename"), None), ["a", "b", "d"]);
    assert_eq!(list(None, Some("timeout")), ["b", "c"]);
    assert_eq!(list(Some("rename"), Some("timeout")), ["b"]);
    assert_eq!(list(Some("resize"), Some("crashed")), Vec::<String>::new());
    assert_eq!(list(Some("never-invoked"), None), Vec::<String>::new());
}

pub fn invocations_page_by_after_id(subject: Subject) {
    let store = &subject.store;
    let at = subject.clock.now();
    for index in 0..7 {
        store.record_invocation(&invocation("rename", &format!("req-{index}"), at, 1), b"").unwrap();
        store.record_invocation(&invocation("other", &format!("other-{index}"), at, 1), b"").unwrap();
    }
    let mut seen = Vec::new();
    let mut after_id = 0;
    loop {
        let filter = InvocationFilter { function: Some(name("rename")), after_id, limit: 3, outcome: None };
        let page = store.invocations(&filter).unwrap();
        assert!(page.len() <= 3, "a page of {}", page.len());
        let Some(last) = page.last() else { break };
        assert!(page.windows(2).all(|pair| pair[0].id < pair[1].id), "ascending within a page");
        assert!(page[0].id > after_id);
        after_id = last.id;
        seen.extend(page.into_iter().map(|invocation| invocation.record.request_id));
    }
    let expected: Vec<String> = (0..7).map(|index| format!("req-{index}")).collect();
    assert_eq!(seen, expected);
    let none = InvocationFilter { limit: 0, ..InvocationFilter::default() };
    assert_eq!(store.invocations(&none).unwrap(), vec![], "a limit of 0 lists nothing");
}

pub fn invocation_logs_join_every_attempt_of_a_request_in_order(subject: Subject) {
    let store = &subject.store;
    let at = subject.clock.now();
    let attempt =
        |number: u32| InvocationRecord { attempt: number, ..failed(invocation("rename", "req-1", at, 5), "error") };
    store.record_invocation(&attempt(1), b"first attempt\n").unwrap();
    store.record_invocation(&invocation("rename", "req-2", at, 5), b"another request\n").unwrap();
    store.record_invocation(&attempt(2), b"").unwrap();
    store
        .record_invocation(&InvocationRecord { attempt: 3, ..invocation("rename", "req-1", at, 5) }, b"third\xff\x00\n")
        .unwrap();
    assert_eq!(store.invocation_logs("req-1").unwrap(), b"first attempt\nthird\xff\x00\n".to_vec());
    assert_eq!(store.invocation_logs("req-2").unwrap(), b"another request\n".to_vec());
    store.record_invocation(&invocation("rename", "silent", at, 5), b"").unwrap();
    assert_eq!(store.invocation_logs("silent").unwrap(), Vec::<u8>::new(), "an invocation that wrote nothing");
}

pub fn invocation_logs_of_an_unknown_request_are_not_found(subject: Subject) {
    assert_not_found(subject.store.invocation_logs("no-such-request"), "invocation", "no-such-request");
    subject.store.record_invocation(&invocation("rename", "req-1", subject.clock.now(), 5), b"x").unwrap();
    assert_not_found(subject.store.invocation_logs("req-"), "invocation", "req-");
}

pub fn function_stats_are_exact(subject: Subject) {
    let store = &subject.store;
    let start = subject.clock.now();
    // Durations 1..=20 ms, recorded out of order; started_at out of order too.
    for (index, duration_ms) in
        [7_u64, 3, 20, 1, 15, 9, 12, 2, 18, 5, 11, 4, 16, 8, 19, 6, 14, 10, 17, 13].iter().enumerate()
    {
        let started_at = start.saturating_add(Duration::from_secs(((index as u64) * 7) % 20));
        let mut record = invocation("rename", &format!("req-{index}"), started_at, *duration_ms);
        if index % 5 == 0 {
            record.init_duration = Some(Duration::from_millis(30));
        }
        if index % 4 == 1 {
            record = failed(record, if index == 1 { "timeout" } else { "error" });
        }
        store.record_invocation(&record, b"").unwrap();
    }
    store
        .record_invocation(&invocation("other", "x", start.saturating_add(Duration::from_secs(99)), 999), b"")
        .unwrap();
    assert_eq!(
        store.function_stats(&name("rename")).unwrap(),
        FunctionStats {
            invocations: 20,
            errors: 5,
            cold_starts: 4,
            p50_duration: Some(Duration::from_millis(10)),
            p95_duration: Some(Duration::from_millis(19)),
            last_invoked: Some(start.saturating_add(Duration::from_secs(19))),
        }
    );
    let other = store.function_stats(&name("other")).unwrap();
    assert_eq!(
        (other.invocations, other.p50_duration, other.p95_duration),
        (1, Some(Duration::from_millis(999)), Some(Duration::from_millis(999)))
    );
}

pub fn function_stats_of_a_function_never_invoked_are_empty(subject: Subject) {
    subject.store.record_invocation(&invocation("rename", "req-1", subject.clock.now(), 5), b"").unwrap();
    assert_eq!(subject.store.function_stats(&name("never-invoked")).unwrap(), FunctionStats::default());
}

pub fn an_invocation_with_a_cost_that_is_not_finite_records_nothing(subject: Subject) {
    for cost in [f64::NAN, f64::INFINITY] {
        let record = InvocationRecord { estimated_cost: cost, ..invocation("rename", "req-1", subject.clock.now(), 5) };
        let result = subject.store.record_invocation(&record, b"logs");
        assert!(matches!(result, Err(StateError::Backend(_))), "{cost}: {result:?}");
    }
    assert_eq!(every_invocation(&subject), vec![]);
    assert_not_found(subject.store.invocation_logs("req-1"), "invocation", "req-1");
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_case_is_listed_once() {
        let mut names: Vec<&str> = super::all().into_iter().map(|(name, _)| name).collect();
        let listed = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), listed, "a case is listed twice");
        assert!(listed >= 49, "only {listed} cases");
    }
}
