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

use std::collections::BTreeMap;
use std::time::Duration;

use mayfly_core::queue::{QueueConfig, QueueRuleError, QueueStats, ReceiptHandle, max_receives_reason};
use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{ByteSize, Clock, ManualClock, Name, NewObjectEvent, ObjectEventKind, Timestamp};

use crate::{
    AUDITS_KEPT, AccessRecord, ApiTokenRecord, AttemptOutcome, AuditFinding, AuditSeverity, DeleteOutcome,
    FunctionStats, GroupedCompletion, InvocationFilter, InvocationRecord, ItemAttempt, ItemCompletion, NewApiToken,
    NewAudit, NewDeployment, NewRun, NewRunItem, OutgoingMessage, ReceiveRequest, ReceivedMessage, ResultRecord,
    RunItem, RunItemCounts, RunRecord, StateError, StateStore, StoredAccessRecord, StoredInvocation,
    WorkerAttemptCounts, WorkerRecord,
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
            deployments_record_the_event_log_head_that_bounds_the_events_they_route,
            damaged_messages_are_none_in_a_healthy_store_even_with_dead_letters,
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
            dead_letters_are_counted_per_source_queue,
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
            runs_are_created_read_and_listed_newest_first,
            creating_an_existing_run_is_already_exists,
            every_run_method_on_an_unknown_run_is_not_found,
            claiming_a_run_starts_it_and_leases_it_to_one_coordinator,
            a_lapsed_run_lease_passes_to_another_coordinator,
            renewing_a_run_lease_extends_it_only_for_its_holder,
            runs_needing_a_coordinator_are_lapsed_or_unclaimed_past_the_grace,
            finishing_a_run_clears_its_lease_and_only_its_holder_may,
            adding_items_is_idempotent_and_refused_once_the_run_finished,
            leasing_gives_the_oldest_available_items_up_to_the_maximum,
            a_done_item_stores_its_result,
            re_executing_an_item_of_a_job_replaces_its_result,
            a_stale_completion_is_ignored,
            completing_and_leasing_together_records_the_result_and_leases_the_next_items,
            completions_grouped_in_one_commit_keep_the_per_item_rules,
            a_failed_attempt_is_pending_again_at_retry_at_or_dead_lettered,
            releasing_a_workers_items_returns_only_them_to_pending,
            releasing_all_leased_items_returns_them_to_pending,
            run_item_counts_are_exact,
            moving_queue_messages_into_a_run_moves_only_visible_ones_in_one_commit,
            unfinished_items_go_back_to_their_queue_as_the_same_messages,
            returning_unfinished_items_again_returns_nothing_and_changes_nothing,
            done_dead_lettered_and_non_queue_items_are_not_returned,
            a_returned_message_moved_into_the_same_run_again_is_pending_again,
            run_items_and_results_page_by_item,
            workers_are_upserted_and_listed_by_start,
            every_lease_of_an_item_is_an_attempt_ended_by_its_completion_or_release,
            attempts_are_counted_by_the_worker_that_ended_them,
            a_run_ends_in_any_finished_status,
    access_records_are_appended_in_order_and_read_newest_first, api_token_names_are_unique_among_live_tokens, api_tokens_are_stored_listed_and_revoked, a_tokens_aws_secret_is_kept_and_read_back, audits_are_recorded_with_their_findings_in_order_and_the_latest_is_read_back, cancelling_a_run_ends_it_whoever_holds_its_lease, only_the_newest_audits_are_kept,
            expired_messages_are_deleted_whatever_their_state_oldest_first_in_batches,
            invocations_started_before_the_cutoff_are_pruned_with_their_logs,
            finished_runs_are_pruned_with_their_items_and_workers_but_results_stay,
            old_events_are_pruned_only_once_every_consumer_has_read_them,
            access_records_older_than_the_cutoff_are_pruned_oldest_first,
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
        reason: None,
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

/// Defect 3 of issue 10: the router must know which deployment governs each
/// event, so each deployment records the event log's head when it is recorded.
pub fn deployments_record_the_event_log_head_that_bounds_the_events_they_route(subject: Subject) {
    let store = &subject.store;
    let first = store.record_deployment(deployment("one")).unwrap();
    assert_eq!(first.event_log_head, 0, "no event yet");
    let before = store.append_object_event(event("inbox", "a", subject.clock.now())).unwrap();
    store.append_object_event(event("inbox", "b", subject.clock.now())).unwrap();
    let second = store.record_deployment(deployment("two")).unwrap();
    let after = store.append_object_event(event("inbox", "c", subject.clock.now())).unwrap();
    assert_eq!(second.event_log_head, after.sequence - 1, "the head when `two` was recorded");
    assert_eq!(store.deployments().unwrap()[1].event_log_head, second.event_log_head, "stored, not computed on read");

    let deployments = store.deployments().unwrap();
    assert_eq!(crate::deployment_governing(&deployments, before.sequence).map(|d| d.version), Some(1));
    assert_eq!(crate::deployment_governing(&deployments, second.event_log_head).map(|d| d.version), Some(1));
    assert_eq!(crate::deployment_governing(&deployments, after.sequence).map(|d| d.version), Some(2));
    // A third deployment with no event in between takes over from the same point on.
    let third = store.record_deployment(deployment("three")).unwrap();
    assert_eq!(third.event_log_head, after.sequence);
    let deployments = store.deployments().unwrap();
    assert_eq!(crate::deployment_governing(&deployments, after.sequence).map(|d| d.version), Some(2));
    assert_eq!(crate::deployment_governing(&deployments, after.sequence + 1).map(|d| d.version), Some(3));
}

/// Defect 12 of issue 10: only messages set aside for integrity are listed;
/// ordinary dead letters (past `max_receives`) are not damage.
pub fn damaged_messages_are_none_in_a_healthy_store_even_with_dead_letters(subject: Subject) {
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

pub fn dead_letters_are_counted_per_source_queue(subject: Subject) {
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

// --- batch-job runs ----------------------------------------------------------------------------

/// How long the runs cases lease a run for.
const RUN_TTL: Duration = Duration::from_secs(30);

fn new_run(id: &str, job: &str, subject: &Subject) -> NewRun {
    NewRun {
        id: id.to_owned(),
        job: name(job),
        deployment_version: None,
        trigger: "manual".to_owned(),
        deadline: subject.clock.now().saturating_add(Duration::from_secs(3_600)),
        budget: None,
    }
}

fn create_run(subject: &Subject, id: &str, job: &str) -> RunRecord {
    subject.store.create_run(new_run(id, job, subject)).expect("create run")
}

/// A run `id` of job `job`, claimed by coordinator `coordinator-1`.
fn claimed_run(subject: &Subject, id: &str, job: &str) -> RunRecord {
    create_run(subject, id, job);
    assert!(subject.store.claim_run(id, "coordinator-1", RUN_TTL).expect("claim run"));
    subject.store.run(id).expect("read run")
}

fn run_items_named(ids: &[&str]) -> Vec<NewRunItem> {
    ids.iter().map(|id| NewRunItem { item: (*id).to_owned(), payload: format!("payload-{id}").into_bytes() }).collect()
}

fn add_items(subject: &Subject, run: &str, ids: &[&str]) {
    subject.store.add_run_items(run, &run_items_named(ids)).expect("add items");
}

fn lease(subject: &Subject, run: &str, worker: &str, max: usize) -> Vec<RunItem> {
    subject.store.lease_run_items(run, worker, max).expect("lease items")
}

/// `ids` sorted: where the store's item order (by id, or by its keyed hash) does not matter.
fn sorted<T: Ord>(mut ids: Vec<T>) -> Vec<T> {
    ids.sort();
    ids
}

fn item_ids(items: &[RunItem]) -> Vec<&str> {
    items.iter().map(|item| item.item.as_str()).collect()
}

fn done(result: &str) -> ItemCompletion {
    ItemCompletion::Done { result: result.as_bytes().to_vec() }
}

fn every_item(subject: &Subject, run: &str, status: Option<ItemStatus>) -> Vec<RunItem> {
    subject.store.run_items(run, status, None, 1_000).expect("list items")
}

fn one_item(subject: &Subject, run: &str, item: &str) -> RunItem {
    let items = every_item(subject, run, None);
    items.into_iter().find(|found| found.item == item).unwrap_or_else(|| panic!("run `{run}` has no item `{item}`"))
}

fn counts(subject: &Subject, run: &str) -> RunItemCounts {
    subject.store.run_item_counts(run).expect("count items")
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: crate::Result<T>) {
    assert!(matches!(result, Err(StateError::Conflict(_))), "expected Conflict, got {result:?}");
}

pub fn runs_are_created_read_and_listed_newest_first(subject: Subject) {
    let store = &subject.store;
    let created_at = subject.clock.now();
    let full = NewRun {
        id: "run-1".to_owned(),
        job: name("thumbnails"),
        deployment_version: Some(4),
        trigger: "alarm:backlog".to_owned(),
        deadline: created_at.saturating_add(Duration::from_secs(600)),
        budget: Some(2.5),
    };
    let first = store.create_run(full.clone()).unwrap();
    assert_eq!(
        first,
        RunRecord {
            id: "run-1".to_owned(),
            job: name("thumbnails"),
            deployment_version: Some(4),
            trigger: "alarm:backlog".to_owned(),
            status: RunStatus::Requested,
            created_at,
            started_at: None,
            finished_at: None,
            deadline: full.deadline,
            budget: Some(2.5),
            lease_owner: None,
            lease_until: None,
            coordinator_attempts: 0,
            error: None,
            report: None,
        }
    );
    assert_eq!(store.run("run-1").unwrap(), first);
    subject.clock.advance(Duration::from_secs(1));
    let second = create_run(&subject, "run-2", "reports");
    let third = create_run(&subject, "run-3", "thumbnails");
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|run| run.id).collect::<Vec<_>>();
    assert_eq!(ids(store.runs(None, 10).unwrap()), ["run-3", "run-2", "run-1"]);
    assert_eq!(ids(store.runs(None, 2).unwrap()), ["run-3", "run-2"]);
    assert_eq!(ids(store.runs(Some(&name("thumbnails")), 10).unwrap()), ["run-3", "run-1"]);
    assert_eq!(store.runs(Some(&name("never-ran")), 10).unwrap(), vec![]);
    assert_eq!(store.runs(Some(&name("reports")), 10).unwrap(), vec![second]);
    assert_eq!(store.run("run-3").unwrap(), third);
}

pub fn creating_an_existing_run_is_already_exists(subject: Subject) {
    let original = create_run(&subject, "run-1", "thumbnails");
    let again = subject.store.create_run(new_run("run-1", "reports", &subject));
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "run", name }) if name == "run-1"), "{again:?}");
    assert_eq!(subject.store.run("run-1").unwrap(), original, "the existing run is unchanged");
}

pub fn every_run_method_on_an_unknown_run_is_not_found(subject: Subject) {
    let store = &subject.store;
    create_run(&subject, "run-1", "thumbnails");
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["a"]);
    assert_not_found(store.run("nope"), "run", "nope");
    assert_not_found(store.claim_run("nope", "c", RUN_TTL), "run", "nope");
    assert_not_found(store.renew_run_lease("nope", "c", RUN_TTL), "run", "nope");
    assert_not_found(store.finish_run("nope", "c", RunStatus::Succeeded, None, None), "run", "nope");
    assert_not_found(store.set_run_status("nope", "c", RunStatus::Finishing), "run", "nope");
    assert_not_found(store.add_run_items("nope", &run_items_named(&["a"])), "run", "nope");
    assert_not_found(store.move_queue_messages_into_run("nope", &queue, 10), "run", "nope");
    assert_not_found(store.lease_run_items("nope", "w", 10), "run", "nope");
    assert_not_found(store.complete_run_item("nope", "a", "w", 1, done("x")), "run", "nope");
    assert_not_found(store.release_worker_items("nope", "w"), "run", "nope");
    assert_not_found(store.release_all_leased_items("nope"), "run", "nope");
    assert_not_found(store.run_item_counts("nope"), "run", "nope");
    assert_not_found(store.run_items("nope", None, None, 10), "run", "nope");
    assert_not_found(store.run_workers("nope"), "run", "nope");
    let worker = WorkerRecord {
        run_id: "nope".to_owned(),
        worker: "w".to_owned(),
        resource: "pid:1".to_owned(),
        started_at: subject.clock.now(),
        stopped_at: None,
        end: None,
        items_done: 0,
        items_failed: 0,
        busy: Duration::ZERO,
        log_object: None,
        log_sha256: None,
    };
    assert_not_found(store.upsert_worker(&worker), "run", "nope");
    assert_not_found(store.complete_run_item("run-1", "never-added", "w", 1, done("x")), "item", "run-1/never-added");
    assert_not_found(store.result(&name("thumbnails"), "k"), "result", "thumbnails/k");
    assert_eq!(stats(&subject, &queue).visible, 1, "nothing moved out of the queue");
    assert_eq!(store.runs(None, 10).unwrap().len(), 1);
}

pub fn claiming_a_run_starts_it_and_leases_it_to_one_coordinator(subject: Subject) {
    let store = &subject.store;
    create_run(&subject, "run-1", "thumbnails");
    subject.clock.advance(Duration::from_secs(2));
    let claimed_at = subject.clock.now();
    assert!(store.claim_run("run-1", "coordinator-1", RUN_TTL).unwrap());
    let run = store.run("run-1").unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.started_at, Some(claimed_at));
    assert_eq!(run.lease_owner.as_deref(), Some("coordinator-1"));
    assert_eq!(run.lease_until, Some(claimed_at.saturating_add(RUN_TTL)));
    assert_eq!(run.coordinator_attempts, 1);

    subject.clock.advance(Duration::from_secs(10));
    assert!(!store.claim_run("run-1", "coordinator-2", RUN_TTL).unwrap(), "a live lease is not taken");
    assert_eq!(store.run("run-1").unwrap(), run, "a refused claim changes nothing");

    assert!(store.claim_run("run-1", "coordinator-1", RUN_TTL).unwrap(), "the holder may claim again");
    let again = store.run("run-1").unwrap();
    assert_eq!(again.lease_until, Some(subject.clock.now().saturating_add(RUN_TTL)), "and extends its lease");
    assert_eq!((again.coordinator_attempts, again.started_at), (1, Some(claimed_at)), "the same coordinator");
}

pub fn a_lapsed_run_lease_passes_to_another_coordinator(subject: Subject) {
    let store = &subject.store;
    let first = claimed_run(&subject, "run-1", "thumbnails");
    store.set_run_status("run-1", "coordinator-1", RunStatus::Finishing).unwrap();
    subject.clock.advance(RUN_TTL - Duration::from_millis(1));
    assert!(!store.claim_run("run-1", "coordinator-2", RUN_TTL).unwrap(), "live until the last millisecond");
    subject.clock.advance(Duration::from_millis(1));
    assert!(store.claim_run("run-1", "coordinator-2", RUN_TTL).unwrap(), "lapsed at lease_until");
    let run = store.run("run-1").unwrap();
    assert_eq!(run.lease_owner.as_deref(), Some("coordinator-2"));
    assert_eq!(run.coordinator_attempts, 2);
    assert_eq!(run.started_at, first.started_at, "started once");
    assert_eq!(run.status, RunStatus::Finishing, "a claim only moves a run out of Requested");
    assert_conflict(store.renew_run_lease("run-1", "coordinator-1", RUN_TTL));
    assert_conflict(store.set_run_status("run-1", "coordinator-1", RunStatus::Running));
    assert!(!store.claim_run("run-1", "coordinator-1", RUN_TTL).unwrap(), "the old coordinator is refused");
    subject.clock.advance(RUN_TTL);
    assert!(store.claim_run("run-1", "coordinator-1", RUN_TTL).unwrap(), "it may come back after a lapse");
    assert_eq!(store.run("run-1").unwrap().coordinator_attempts, 3, "every change of owner counts");
}

pub fn renewing_a_run_lease_extends_it_only_for_its_holder(subject: Subject) {
    let store = &subject.store;
    create_run(&subject, "run-1", "thumbnails");
    assert_conflict(store.renew_run_lease("run-1", "coordinator-1", RUN_TTL));
    claimed_run(&subject, "run-2", "thumbnails");
    subject.clock.advance(Duration::from_secs(20));
    store.renew_run_lease("run-2", "coordinator-1", RUN_TTL).unwrap();
    assert_eq!(store.run("run-2").unwrap().lease_until, Some(subject.clock.now().saturating_add(RUN_TTL)));
    subject.clock.advance(Duration::from_secs(20));
    assert!(!store.claim_run("run-2", "coordinator-2", RUN_TTL).unwrap(), "the renewed lease is still live");
    assert_conflict(store.renew_run_lease("run-2", "coordinator-2", RUN_TTL));
    subject.clock.advance(RUN_TTL);
    let lapsed = store.renew_run_lease("run-2", "coordinator-1", RUN_TTL);
    assert_conflict(lapsed);
    assert_eq!(store.run("run-2").unwrap().coordinator_attempts, 1);
}

pub fn runs_needing_a_coordinator_are_lapsed_or_unclaimed_past_the_grace(subject: Subject) {
    let store = &subject.store;
    let grace = Duration::from_secs(10);
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|run| run.id).collect::<Vec<_>>();
    create_run(&subject, "run-unclaimed", "thumbnails");
    claimed_run(&subject, "run-claimed", "thumbnails");
    claimed_run(&subject, "run-finished", "thumbnails");
    store.finish_run("run-finished", "coordinator-1", RunStatus::Succeeded, None, None).unwrap();
    assert_eq!(ids(store.runs_needing_coordinator(grace).unwrap()), Vec::<String>::new());
    subject.clock.advance(grace);
    assert_eq!(ids(store.runs_needing_coordinator(grace).unwrap()), Vec::<String>::new(), "not more than the grace");
    subject.clock.advance(Duration::from_millis(1));
    assert_eq!(ids(store.runs_needing_coordinator(grace).unwrap()), ["run-unclaimed"]);
    subject.clock.advance(RUN_TTL - grace);
    assert_eq!(
        ids(store.runs_needing_coordinator(grace).unwrap()),
        ["run-unclaimed", "run-claimed"],
        "oldest first; a finished run never needs one"
    );
    assert!(store.claim_run("run-claimed", "coordinator-2", RUN_TTL).unwrap());
    assert!(store.claim_run("run-unclaimed", "coordinator-3", RUN_TTL).unwrap());
    assert_eq!(ids(store.runs_needing_coordinator(grace).unwrap()), Vec::<String>::new());
    assert_eq!(ids(store.runs_needing_coordinator(Duration::ZERO).unwrap()), Vec::<String>::new());
}

pub fn finishing_a_run_clears_its_lease_and_only_its_holder_may(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    store.set_run_status("run-1", "coordinator-1", RunStatus::Finishing).unwrap();
    assert_eq!(store.run("run-1").unwrap().status, RunStatus::Finishing);
    assert_conflict(store.set_run_status("run-1", "coordinator-1", RunStatus::Succeeded));
    assert_conflict(store.finish_run("run-1", "coordinator-2", RunStatus::Failed, Some("not mine"), None));
    assert_conflict(store.finish_run("run-1", "coordinator-1", RunStatus::Running, None, None));
    let before = store.run("run-1").unwrap();
    assert_eq!(before.status, RunStatus::Finishing, "refused calls change nothing");
    subject.clock.advance(Duration::from_secs(5));
    let report = r#"{"items_done":3}"#;
    store
        .finish_run("run-1", "coordinator-1", RunStatus::DeadlineExceeded, Some("deadline passed"), Some(report))
        .unwrap();
    let run = store.run("run-1").unwrap();
    assert_eq!(run.status, RunStatus::DeadlineExceeded);
    assert_eq!(run.finished_at, Some(subject.clock.now()));
    assert_eq!((run.lease_owner, run.lease_until), (None, None));
    assert_eq!(run.error.as_deref(), Some("deadline passed"));
    assert_eq!(run.report.as_deref(), Some(report));
    assert!(!store.claim_run("run-1", "coordinator-2", RUN_TTL).unwrap(), "a finished run is never claimed");
    assert_conflict(store.finish_run("run-1", "coordinator-1", RunStatus::Succeeded, None, None));
    assert_conflict(store.renew_run_lease("run-1", "coordinator-1", RUN_TTL));
    assert_eq!(store.run("run-1").unwrap().status, RunStatus::DeadlineExceeded);
}

pub fn adding_items_is_idempotent_and_refused_once_the_run_finished(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    assert_eq!(store.add_run_items("run-1", &run_items_named(&["a", "b", "a"])).unwrap(), 2, "repeats ignored");
    assert_eq!(store.add_run_items("run-1", &run_items_named(&["b", "c"])).unwrap(), 1);
    assert_eq!(store.add_run_items("run-1", &[]).unwrap(), 0);
    let items = every_item(&subject, "run-1", None);
    assert_eq!(sorted(item_ids(&items)), ["a", "b", "c"]);
    assert_eq!(
        one_item(&subject, "run-1", "a"),
        RunItem {
            run_id: "run-1".to_owned(),
            item: "a".to_owned(),
            payload: b"payload-a".to_vec(),
            status: ItemStatus::Pending,
            attempts: 0,
            worker: None,
            not_before: subject.clock.now(),
            last_error: None,
            updated_at: subject.clock.now(),
        }
    );
    claimed_run(&subject, "run-2", "thumbnails");
    assert_eq!(store.add_run_items("run-2", &run_items_named(&["a"])).unwrap(), 1, "ids are per run");
    store.finish_run("run-1", "coordinator-1", RunStatus::Cancelled, None, None).unwrap();
    assert_conflict(store.add_run_items("run-1", &run_items_named(&["d"])));
    assert_eq!(counts(&subject, "run-1").total, 3);
}

pub fn leasing_gives_the_oldest_available_items_up_to_the_maximum(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["d", "c", "b", "a"]);
    let first = lease(&subject, "run-1", "worker-1", 2);
    assert_eq!(item_ids(&first), ["d", "c"], "insertion order, not item order");
    assert_eq!(first[0].status, ItemStatus::Leased);
    assert_eq!(first[0].worker.as_deref(), Some("worker-1"));
    assert_eq!((first[0].attempts, first[0].payload.as_slice()), (1, b"payload-d".as_slice()));
    assert_eq!(first[0], one_item(&subject, "run-1", "d"), "what lease returns is what is stored");
    let retry_at = subject.clock.now().saturating_add(Duration::from_secs(60));
    let failure = ItemCompletion::Failed { error: "boom".to_owned(), retry_at: Some(retry_at) };
    assert!(store.complete_run_item("run-1", "d", "worker-1", 1, failure).unwrap());
    assert_eq!(item_ids(&lease(&subject, "run-1", "worker-2", 10)), ["b", "a"], "d is not due yet");
    assert_eq!(lease(&subject, "run-1", "worker-2", 10), vec![], "nothing is pending and due");
    subject.clock.advance(Duration::from_secs(60));
    add_items(&subject, "run-1", &["e"]);
    assert_eq!(lease(&subject, "run-1", "worker-3", 0), vec![], "a maximum of 0 leases nothing");
    let later = lease(&subject, "run-1", "worker-3", 10);
    assert_eq!(item_ids(&later), ["d", "e"], "d became available before e was added");
    assert_eq!(later[0].attempts, 2);
    assert_eq!(later[0].last_error.as_deref(), Some("boom"));
}

pub fn a_done_item_stores_its_result(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["a", "b"]);
    lease(&subject, "run-1", "worker-1", 2);
    subject.clock.advance(Duration::from_secs(3));
    let result = vec![0, 159, 146, 150, 255];
    assert!(
        store.complete_run_item("run-1", "a", "worker-1", 1, ItemCompletion::Done { result: result.clone() }).unwrap()
    );
    let stored = ResultRecord {
        job: name("thumbnails"),
        item: "a".to_owned(),
        run_id: "run-1".to_owned(),
        attempt: 1,
        worker: "worker-1".to_owned(),
        result,
        recorded_at: subject.clock.now(),
    };
    assert_eq!(store.result(&name("thumbnails"), "a").unwrap(), stored);
    assert_eq!(store.results(&name("thumbnails"), None, None, 10).unwrap(), vec![stored]);
    let item = one_item(&subject, "run-1", "a");
    assert_eq!((item.status, item.worker.as_deref(), item.attempts), (ItemStatus::Done, Some("worker-1"), 1));
    assert_eq!(item.updated_at, subject.clock.now());
    assert_eq!(one_item(&subject, "run-1", "b").status, ItemStatus::Leased);
    assert_not_found(store.result(&name("thumbnails"), "b"), "result", "thumbnails/b");
}

pub fn re_executing_an_item_of_a_job_replaces_its_result(subject: Subject) {
    let store = &subject.store;
    let job = name("thumbnails");
    for (run, result) in [("run-1", "first"), ("run-2", "second")] {
        claimed_run(&subject, run, "thumbnails");
        add_items(&subject, run, &["k"]);
        lease(&subject, run, "worker-1", 1);
        subject.clock.advance(Duration::from_secs(1));
        assert!(store.complete_run_item(run, "k", "worker-1", 1, done(result)).unwrap());
    }
    claimed_run(&subject, "run-3", "reports");
    add_items(&subject, "run-3", &["k"]);
    lease(&subject, "run-3", "worker-1", 1);
    assert!(store.complete_run_item("run-3", "k", "worker-1", 1, done("another job")).unwrap());

    let results = store.results(&job, None, None, 10).unwrap();
    assert_eq!(results.len(), 1, "exactly one result per (job, item): {results:?}");
    assert_eq!((results[0].run_id.as_str(), results[0].result.as_slice()), ("run-2", b"second".as_slice()));
    assert_eq!(results[0].recorded_at, subject.clock.now());
    assert_eq!(store.result(&job, "k").unwrap(), results[0]);
    assert_eq!(store.results(&job, Some("run-1"), None, 10).unwrap(), vec![], "run-1's result was replaced");
    assert_eq!(store.results(&job, Some("run-2"), None, 10).unwrap(), results);
    assert_eq!(store.result(&name("reports"), "k").unwrap().result, b"another job");
    assert_eq!(one_item(&subject, "run-1", "k").status, ItemStatus::Done, "the earlier run's item stays done");
}

pub fn a_stale_completion_is_ignored(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["a"]);
    lease(&subject, "run-1", "worker-1", 1);
    assert!(!store.complete_run_item("run-1", "a", "worker-1", 2, done("x")).unwrap(), "wrong attempt");
    assert!(!store.complete_run_item("run-1", "a", "worker-2", 1, done("x")).unwrap(), "another worker");
    assert_eq!(store.release_worker_items("run-1", "worker-1").unwrap(), 1);
    assert!(!store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap(), "released");
    let again = lease(&subject, "run-1", "worker-2", 1);
    assert_eq!((again[0].attempts, again[0].worker.as_deref()), (2, Some("worker-2")));
    let stale_failure = ItemCompletion::Failed { error: "late".to_owned(), retry_at: None };
    assert!(!store.complete_run_item("run-1", "a", "worker-1", 1, stale_failure).unwrap(), "re-leased");
    assert_eq!(one_item(&subject, "run-1", "a"), again[0], "stale completions change nothing");
    assert!(store.complete_run_item("run-1", "a", "worker-2", 2, done("fresh")).unwrap());
    assert!(!store.complete_run_item("run-1", "a", "worker-2", 2, done("twice")).unwrap(), "already done");
    let result = store.result(&name("thumbnails"), "a").unwrap();
    assert_eq!(
        (result.result.as_slice(), result.attempt, result.worker.as_str()),
        (b"fresh".as_slice(), 2, "worker-2")
    );
}

pub fn completing_and_leasing_together_records_the_result_and_leases_the_next_items(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c"]);
    lease(&subject, "run-1", "worker-1", 1);
    let (accepted, next) = store.complete_and_lease_run_items("run-1", "a", "worker-1", 1, done("x"), 5).unwrap();
    assert!(accepted);
    let next: Vec<(&str, u32, Option<&str>)> =
        next.iter().map(|i| (i.item.as_str(), i.attempts, i.worker.as_deref())).collect();
    assert_eq!(next, [("b", 1, Some("worker-1")), ("c", 1, Some("worker-1"))]);
    assert_eq!(store.result(&name("thumbnails"), "a").unwrap().result, b"x");
    // A stale completion records nothing, but the worker still gets work.
    add_items(&subject, "run-1", &["d"]);
    let (accepted, next) = store.complete_and_lease_run_items("run-1", "a", "worker-1", 1, done("late"), 1).unwrap();
    assert!(!accepted);
    assert_eq!(next.len(), 1);
    assert_eq!(store.result(&name("thumbnails"), "a").unwrap().result, b"x");
    let (accepted, none) = store.complete_and_lease_run_items("run-1", "b", "worker-1", 1, done("y"), 0).unwrap();
    assert!(accepted && none.is_empty(), "lease_max 0 leases nothing");
    let counts = store.run_item_counts("run-1").unwrap();
    assert_eq!((counts.done, counts.leased, counts.pending), (2, 2, 0));
}

pub fn completions_grouped_in_one_commit_keep_the_per_item_rules(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c", "d", "e"]);
    lease(&subject, "run-1", "worker-1", 2);
    lease(&subject, "run-1", "worker-2", 1);
    let grouped = |item: &str, worker: &str, completion: ItemCompletion, lease_next: usize| GroupedCompletion {
        item: item.to_owned(),
        worker: worker.to_owned(),
        attempt: 1,
        completion,
        lease_next,
    };
    let retry_at = subject.clock.now().saturating_add(Duration::from_secs(20));
    let retry = ItemCompletion::Failed { error: "timeout".to_owned(), retry_at: Some(retry_at) };
    let outcomes = store
        .complete_run_items_together(
            "run-1",
            vec![
                grouped("a", "worker-1", done("ra"), 0),
                grouped("c", "worker-2", done("rc"), 1),
                grouped("b", "worker-2", done("not its item"), 0),
                grouped("never-added", "worker-1", done("x"), 0),
                grouped("a", "worker-1", done("twice"), 0),
                grouped("b", "worker-1", retry, 1),
            ],
        )
        .unwrap();
    assert_eq!(outcomes.len(), 6, "one answer per completion, in order");
    let summary = |index: usize| {
        let outcome = outcomes[index].as_ref().unwrap();
        (outcome.accepted, outcome.leased.iter().map(|i| (i.item.clone(), i.worker.clone())).collect::<Vec<_>>())
    };
    assert_eq!(summary(0), (true, vec![]));
    assert_eq!(summary(1), (true, vec![("d".to_owned(), Some("worker-2".to_owned()))]), "leased in the same commit");
    assert_eq!(summary(2), (false, vec![]), "another worker's completion is stale");
    assert_not_found(outcomes[3].as_ref().map(|_| ()).map_err(clone_not_found), "item", "run-1/never-added");
    assert_eq!(summary(4), (false, vec![]), "an item done earlier in the same group is not done twice");
    assert_eq!(summary(5), (true, vec![("e".to_owned(), Some("worker-1".to_owned()))]), "b waits for its retry");

    let job = name("thumbnails");
    assert_eq!(store.result(&job, "a").unwrap().result, b"ra", "one result per item: the first");
    assert_eq!(store.result(&job, "c").unwrap().result, b"rc");
    assert_not_found(store.result(&job, "b"), "result", "thumbnails/b");
    let b = one_item(&subject, "run-1", "b");
    assert_eq!((b.status, b.not_before, b.last_error.as_deref()), (ItemStatus::Pending, retry_at, Some("timeout")));
    let counts = store.run_item_counts("run-1").unwrap();
    assert_eq!((counts.done, counts.leased, counts.pending), (2, 2, 1), "the refused completion undid nothing else");
}

/// A `NotFound` answer of a group, comparable by kind and name (errors are not `Clone`).
fn clone_not_found(error: &StateError) -> StateError {
    match error {
        StateError::NotFound { kind, name } => StateError::NotFound { kind, name: name.clone() },
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub fn a_failed_attempt_is_pending_again_at_retry_at_or_dead_lettered(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    add_items(&subject, "run-1", &["retried", "hopeless"]);
    lease(&subject, "run-1", "worker-1", 2);
    let retry_at = subject.clock.now().saturating_add(Duration::from_secs(20));
    let retry = ItemCompletion::Failed { error: "timeout after 5s".to_owned(), retry_at: Some(retry_at) };
    assert!(store.complete_run_item("run-1", "retried", "worker-1", 1, retry).unwrap());
    let dead = ItemCompletion::Failed { error: "exit status 3: bad input".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", "hopeless", "worker-1", 1, dead).unwrap());

    let retried = one_item(&subject, "run-1", "retried");
    assert_eq!((retried.status, retried.not_before, retried.worker), (ItemStatus::Pending, retry_at, None));
    assert_eq!(retried.last_error.as_deref(), Some("timeout after 5s"));
    let hopeless = one_item(&subject, "run-1", "hopeless");
    assert_eq!(hopeless.status, ItemStatus::DeadLettered);
    assert_eq!(hopeless.last_error.as_deref(), Some("exit status 3: bad input"));
    assert_eq!((hopeless.attempts, hopeless.worker.as_deref()), (1, Some("worker-1")));
    assert_eq!(store.results(&name("thumbnails"), None, None, 10).unwrap(), vec![], "failures store no result");

    subject.clock.advance(Duration::from_secs(19));
    assert_eq!(lease(&subject, "run-1", "worker-2", 10), vec![]);
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(item_ids(&lease(&subject, "run-1", "worker-2", 10)), ["retried"], "never a dead-lettered item");
}

pub fn releasing_a_workers_items_returns_only_them_to_pending(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c", "d"]);
    add_items(&subject, "run-2", &["a"]);
    lease(&subject, "run-1", "worker-1", 2);
    lease(&subject, "run-1", "worker-2", 1);
    lease(&subject, "run-2", "worker-1", 1);
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.release_worker_items("run-1", "worker-1").unwrap(), 1, "only b: a is done");
    assert_eq!(store.release_worker_items("run-1", "worker-1").unwrap(), 0);
    let b = one_item(&subject, "run-1", "b");
    assert_eq!((b.status, b.worker, b.attempts), (ItemStatus::Pending, None, 1), "attempts are kept");
    assert_eq!(b.updated_at, subject.clock.now());
    assert_eq!(one_item(&subject, "run-1", "c").status, ItemStatus::Leased, "worker-2 keeps its item");
    assert_eq!(one_item(&subject, "run-2", "a").status, ItemStatus::Leased, "other runs are untouched");
    assert_eq!(item_ids(&lease(&subject, "run-1", "worker-3", 10)), ["b", "d"], "a released item keeps its place");
}

pub fn releasing_all_leased_items_returns_them_to_pending(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c", "d"]);
    add_items(&subject, "run-2", &["a"]);
    lease(&subject, "run-1", "worker-1", 2);
    lease(&subject, "run-1", "worker-2", 1);
    lease(&subject, "run-2", "worker-1", 1);
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    assert_eq!(store.release_all_leased_items("run-1").unwrap(), 2);
    assert_eq!(store.release_all_leased_items("run-1").unwrap(), 0);
    assert_eq!(
        counts(&subject, "run-1"),
        RunItemCounts { total: 4, pending: 3, leased: 0, done: 1, dead_lettered: 0, returned: 0, attempts: 3 }
    );
    assert_eq!(counts(&subject, "run-2").leased, 1, "other runs are untouched");
    assert_eq!(item_ids(&lease(&subject, "run-1", "worker-3", 10)), ["b", "c", "d"]);
}

pub fn run_item_counts_are_exact(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    assert_eq!(counts(&subject, "run-1"), RunItemCounts::default());
    add_items(&subject, "run-1", &["a", "b", "c", "d", "e"]);
    lease(&subject, "run-1", "worker-1", 3);
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    let dead = ItemCompletion::Failed { error: "no".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", "b", "worker-1", 1, dead).unwrap());
    let later = subject.clock.now().saturating_add(Duration::from_secs(60));
    let retry = ItemCompletion::Failed { error: "again".to_owned(), retry_at: Some(later) };
    assert!(store.complete_run_item("run-1", "c", "worker-1", 1, retry).unwrap());
    assert_eq!(
        counts(&subject, "run-1"),
        RunItemCounts { total: 5, pending: 3, leased: 0, done: 1, dead_lettered: 1, returned: 0, attempts: 3 }
    );
    lease(&subject, "run-1", "worker-2", 10);
    assert_eq!(
        counts(&subject, "run-1"),
        RunItemCounts { total: 5, pending: 1, leased: 2, done: 1, dead_lettered: 1, returned: 0, attempts: 5 }
    );
    assert_eq!(every_item(&subject, "run-1", Some(ItemStatus::Pending)).len(), 1);
}

pub fn moving_queue_messages_into_a_run_moves_only_visible_ones_in_one_commit(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    let queue = create_queue(&subject, "work");
    let ids = send_bodies(&subject, &queue, &["in-flight", "one", "two", "three"]);
    let delayed = OutgoingMessage { delay: Some(Duration::from_secs(60)), ..OutgoingMessage::new("delayed") };
    store.send_messages(&queue, &[delayed]).unwrap();
    assert_eq!(bodies_of(&receive(&subject, &queue, 1)), ["in-flight"]);

    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 2).unwrap(), 2);
    assert_eq!(
        stats(&subject, &queue),
        QueueStats { visible: 1, in_flight: 1, delayed: 1, oldest_age: Some(Duration::ZERO) }
    );
    let leased = lease(&subject, "run-1", "worker-1", 10);
    assert_eq!(item_ids(&leased), [ids[1].to_string(), ids[2].to_string()], "oldest messages first, ids as items");
    assert_eq!(leased[0].payload, b"one");
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 1);
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 0, "only visible messages move");
    assert_eq!(
        stats(&subject, &queue),
        QueueStats { visible: 0, in_flight: 1, delayed: 1, oldest_age: Some(Duration::ZERO) }
    );
    assert_eq!(counts(&subject, "run-1").total, 3);
    assert_eq!(one_item(&subject, "run-1", &ids[3].to_string()).payload, b"three");

    assert_not_found(store.move_queue_messages_into_run("run-1", &name("nope"), 10), "queue", "nope");
    subject.clock.advance(Duration::from_secs(60));
    claimed_run(&subject, "run-2", "thumbnails");
    store.finish_run("run-2", "coordinator-1", RunStatus::Cancelled, None, None).unwrap();
    assert_conflict(store.move_queue_messages_into_run("run-2", &queue, 10));
    assert_eq!(stats(&subject, &queue).visible, 2, "a refused move leaves the messages in the queue");
}

/// A claimed run `run-1` holding three messages of queue `work` (the first
/// with attributes, the second received once before it moved), the third
/// leased to `worker-1`. Returns the queue and the message ids.
fn run_holding_queue_messages(subject: &Subject) -> (Name, Vec<u64>) {
    let store = &subject.store;
    claimed_run(subject, "run-1", "drain");
    let queue = create_queue(subject, "work");
    let with_attributes =
        OutgoingMessage { attributes: tags(&[("trace-id", "abc"), ("kind", "scan")]), ..OutgoingMessage::new("one") };
    let mut ids = store.send_messages(&queue, &[with_attributes]).unwrap();
    subject.clock.advance(Duration::from_secs(1));
    ids.extend(send_bodies(subject, &queue, &["two", "three"]));
    let received = receive(subject, &queue, 3);
    for message in &received {
        store.change_visibility(&queue, message.receipt, Duration::ZERO).unwrap();
    }
    let again = receive(subject, &queue, 1);
    store.change_visibility(&queue, again[0].receipt, Duration::ZERO).unwrap();
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 3);
    assert_eq!(item_ids(&lease(subject, "run-1", "worker-1", 1)), [ids[0].to_string()]);
    (queue, ids)
}

pub fn unfinished_items_go_back_to_their_queue_as_the_same_messages(subject: Subject) {
    let store = &subject.store;
    let (queue, ids) = run_holding_queue_messages(&subject);
    let sent_at = Timestamp(subject.clock.now().as_millis() - 2_000);
    subject.clock.advance(Duration::from_secs(5));

    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 3);
    assert_eq!(stats(&subject, &queue).visible, 3, "visible at once");
    let back = store.peek_messages(&queue, 10).unwrap();
    assert_eq!(back.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids, "the same message ids");
    assert_eq!(back.iter().map(|m| m.body.as_slice()).collect::<Vec<_>>(), [&b"one"[..], b"two", b"three"]);
    assert_eq!(back[0].attributes, tags(&[("trace-id", "abc"), ("kind", "scan")]), "attributes kept, in order");
    assert_eq!(back[1].attributes, vec![]);
    assert_eq!(back.iter().map(|m| m.receive_count).collect::<Vec<_>>(), [2, 1, 1], "receive counts kept");
    assert_eq!(back[0].sent_at, sent_at, "sent time kept");
    assert_eq!(back[1].sent_at, sent_at.saturating_add(Duration::from_secs(1)));
    assert_eq!(back[0].visible_at, subject.clock.now());

    assert_eq!(
        counts(&subject, "run-1"),
        RunItemCounts { total: 3, pending: 0, leased: 0, done: 0, dead_lettered: 0, returned: 3, attempts: 1 }
    );
    let returned = every_item(&subject, "run-1", Some(ItemStatus::Returned));
    assert_eq!(
        sorted(returned.iter().map(|item| item.item.clone()).collect()),
        sorted(ids.iter().map(u64::to_string).collect())
    );
    assert!(returned.iter().all(|item| item.worker.is_none()), "{returned:?}");
    assert!(lease(&subject, "run-1", "worker-2", 10).is_empty(), "a returned item is not pending");
    let attempt = store.run_item_attempts("run-1", 10).unwrap();
    assert_eq!(attempt[0].outcome, AttemptOutcome::Released, "the leased item's attempt ended");
    let late = store.complete_run_item("run-1", &ids[0].to_string(), "worker-1", 1, done("late")).unwrap();
    assert!(!late, "a completion of a returned item is stale");
    assert_not_found(store.result(&name("drain"), &ids[0].to_string()), "result", &format!("drain/{}", ids[0]));

    let received = receive(&subject, &queue, 10);
    assert_eq!(received.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids, "received from the queue again");
    assert_eq!(received[0].receive_count, 3);
    assert_eq!(store.delete_messages(&queue, &[received[0].receipt]).unwrap(), vec![DeleteOutcome::Deleted]);
}

pub fn returning_unfinished_items_again_returns_nothing_and_changes_nothing(subject: Subject) {
    let store = &subject.store;
    let (queue, _) = run_holding_queue_messages(&subject);
    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 3);
    let queued = store.peek_messages(&queue, 10).unwrap();
    let counted = counts(&subject, "run-1");
    subject.clock.advance(Duration::from_secs(5));
    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 0);
    assert_eq!(store.peek_messages(&queue, 10).unwrap(), queued, "each message is in the queue once");
    assert_eq!(counts(&subject, "run-1"), counted);
    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 0);
    assert_not_found(store.return_unfinished_items_to_queues("nope"), "run", "nope");
}

pub fn done_dead_lettered_and_non_queue_items_are_not_returned(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "drain");
    claimed_run(&subject, "run-2", "drain");
    let queue = create_queue(&subject, "work");
    let ids = send_bodies(&subject, &queue, &["done", "dead", "pending"]);
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 3);
    add_items(&subject, "run-1", &["from-a-bucket"]);
    let other = send_bodies(&subject, &queue, &["other run"]);
    assert_eq!(store.move_queue_messages_into_run("run-2", &queue, 10).unwrap(), 1);
    assert_eq!(item_ids(&lease(&subject, "run-1", "worker-1", 2)), [ids[0].to_string(), ids[1].to_string()]);
    assert!(store.complete_run_item("run-1", &ids[0].to_string(), "worker-1", 1, done("x")).unwrap());
    let dead = ItemCompletion::Failed { error: "no".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", &ids[1].to_string(), "worker-1", 1, dead).unwrap());

    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 1, "only the pending message");
    let back: Vec<u64> = store.peek_messages(&queue, 10).unwrap().iter().map(|m| m.message_id).collect();
    assert_eq!(back, [ids[2]], "the done, dead-lettered and other run's messages stay out of the queue");
    assert_eq!(one_item(&subject, "run-1", &ids[0].to_string()).status, ItemStatus::Done);
    assert_eq!(one_item(&subject, "run-1", &ids[1].to_string()).status, ItemStatus::DeadLettered);
    assert_eq!(one_item(&subject, "run-1", "from-a-bucket").status, ItemStatus::Pending, "it has no queue to go to");
    assert_eq!(store.result(&name("drain"), &ids[0].to_string()).unwrap().result, b"x");
    assert_eq!(
        one_item(&subject, "run-2", &other[0].to_string()).status,
        ItemStatus::Pending,
        "other runs are untouched"
    );
}

pub fn a_returned_message_moved_into_the_same_run_again_is_pending_again(subject: Subject) {
    let store = &subject.store;
    let (queue, ids) = run_holding_queue_messages(&subject);
    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 3);
    assert_eq!(store.move_queue_messages_into_run("run-1", &queue, 1).unwrap(), 1);
    assert_eq!(stats(&subject, &queue).visible, 2);
    let counted = counts(&subject, "run-1");
    assert_eq!((counted.total, counted.pending, counted.returned), (3, 1, 2), "{counted:?}");
    let leased = lease(&subject, "run-1", "worker-2", 10);
    assert_eq!(item_ids(&leased), [ids[0].to_string()]);
    assert_eq!(leased[0].payload, b"one");
    assert_eq!(leased[0].attempts, 2, "attempts are kept");
    assert_eq!(store.return_unfinished_items_to_queues("run-1").unwrap(), 1, "and it may go back again");
    let back = store.peek_messages(&queue, 10).unwrap();
    assert_eq!(back.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids);
    assert_eq!(back[0].attributes, tags(&[("trace-id", "abc"), ("kind", "scan")]));
    assert_eq!(counts(&subject, "run-1").returned, 3);
}

pub fn run_items_and_results_page_by_item(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    let ids: Vec<String> = (0..7).map(|index| format!("key-{index}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).rev().collect();
    add_items(&subject, "run-1", &id_refs);
    for item in lease(&subject, "run-1", "worker-1", 7) {
        if item.item != "key-3" {
            assert!(store.complete_run_item("run-1", &item.item, "worker-1", 1, done(&item.item)).unwrap());
        }
    }
    let mut seen_items = Vec::new();
    let mut seen_results = Vec::new();
    let (mut after_item, mut after_result): (Option<String>, Option<String>) = (None, None);
    loop {
        let page = store.run_items("run-1", Some(ItemStatus::Done), after_item.as_deref(), 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after_item = Some(last.item.clone());
        seen_items.extend(page.into_iter().map(|item| item.item));
    }
    loop {
        let page = store.results(&name("thumbnails"), Some("run-1"), after_result.as_deref(), 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after_result = Some(last.item.clone());
        seen_results.extend(page.into_iter().map(|result| result.item));
    }
    // Pages follow the store's item order (by id, or by a keyed hash of it
    // in an encrypted store): every item once, in the order of one listing.
    let expected: Vec<String> = ids.iter().filter(|id| *id != "key-3").cloned().collect();
    assert_eq!(sorted(seen_items.clone()), expected, "done only, each once");
    assert_eq!(sorted(seen_results.clone()), expected);
    let listed: Vec<String> = store
        .run_items("run-1", Some(ItemStatus::Done), None, 100)
        .unwrap()
        .into_iter()
        .map(|item| item.item)
        .collect();
    assert_eq!(seen_items, listed, "pages in the order of one listing");
    let listed_results: Vec<String> = store
        .results(&name("thumbnails"), Some("run-1"), None, 100)
        .unwrap()
        .into_iter()
        .map(|result| result.item)
        .collect();
    assert_eq!(seen_results, listed_results);
    assert_eq!(item_ids(&store.run_items("run-1", Some(ItemStatus::Leased), None, 10).unwrap()), ["key-3"]);
    let every: Vec<String> =
        store.run_items("run-1", None, None, 100).unwrap().into_iter().map(|item| item.item).collect();
    let after_fifth = every.iter().position(|item| item == "key-5").unwrap();
    assert_eq!(
        item_ids(&store.run_items("run-1", None, Some("key-5"), 10).unwrap()),
        every[after_fifth + 1..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(store.run_items("run-1", None, None, 0).unwrap(), vec![], "a limit of 0 lists nothing");
}

pub fn workers_are_upserted_and_listed_by_start(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    let started = subject.clock.now();
    let worker = |name: &str, started_at: Timestamp| WorkerRecord {
        run_id: "run-1".to_owned(),
        worker: name.to_owned(),
        resource: format!("pid:{}", name.len()),
        started_at,
        stopped_at: None,
        end: None,
        items_done: 0,
        items_failed: 0,
        busy: Duration::ZERO,
        log_object: None,
        log_sha256: None,
    };
    let late = worker("a-late", started.saturating_add(Duration::from_secs(5)));
    let early = worker("z-early", started);
    store.upsert_worker(&late).unwrap();
    store.upsert_worker(&early).unwrap();
    store.upsert_worker(&WorkerRecord { run_id: "run-2".to_owned(), ..worker("other", started) }).unwrap();
    assert_eq!(store.run_workers("run-1").unwrap(), vec![early.clone(), late.clone()]);
    let stopped = WorkerRecord {
        stopped_at: Some(started.saturating_add(Duration::from_secs(90))),
        end: Some("stopped".to_owned()),
        items_done: 41,
        items_failed: 2,
        busy: Duration::from_millis(83_250),
        log_object: Some("runs/run-1/z-early.log.zst".to_owned()),
        log_sha256: Some("ab".repeat(32)),
        ..early
    };
    store.upsert_worker(&stopped).unwrap();
    assert_eq!(store.run_workers("run-1").unwrap(), vec![stopped, late], "replaced, not duplicated");
    assert_eq!(store.run_workers("run-2").unwrap().len(), 1);
}

// --- audits ------------------------------------------------------------------------

fn finding(rule: &str, severity: AuditSeverity, resource: &str) -> AuditFinding {
    AuditFinding {
        rule: rule.to_owned(),
        severity,
        resource_kind: "bucket".to_owned(),
        resource: resource.to_owned(),
        message: format!("`{resource}` breaks {rule} — with ünïcode and 'quotes'"),
        remedy: "fix it".to_owned(),
    }
}

pub fn audits_are_recorded_with_their_findings_in_order_and_the_latest_is_read_back(subject: Subject) {
    let store = &subject.store;
    assert_eq!(store.latest_audit().unwrap(), None, "no audit yet");
    let first =
        store.record_audit(&NewAudit { trigger: "deploy".into(), resources_checked: 0, findings: vec![] }).unwrap();
    assert_eq!((first.trigger.as_str(), first.at, first.findings.len()), ("deploy", subject.clock.now(), 0));
    assert_eq!(store.latest_audit().unwrap(), Some(first.clone()));

    subject.clock.advance(Duration::from_secs(60));
    // Deliberately not sorted by severity or name: the order given is kept.
    let findings = vec![
        finding("required-tags", AuditSeverity::Warning, "zeta"),
        finding("encryption", AuditSeverity::Violation, "alpha"),
        finding("encryption", AuditSeverity::Notice, "alpha"),
        finding("orphaned-resource", AuditSeverity::Violation, "pid:1:2"),
    ];
    let second = store
        .record_audit(&NewAudit { trigger: "run:run-1".into(), resources_checked: 17, findings: findings.clone() })
        .unwrap();
    assert!(second.id > first.id, "ids increase");
    assert_eq!(second.at, subject.clock.now());
    assert_eq!(second.resources_checked, 17);
    assert_eq!(second.findings, findings);
    assert_eq!(second.count(AuditSeverity::Violation), 2);
    assert_eq!(store.latest_audit().unwrap(), Some(second));
}

pub fn only_the_newest_audits_are_kept(subject: Subject) {
    let store = &subject.store;
    let mut last = None;
    for index in 0..AUDITS_KEPT + 5 {
        let findings = vec![finding("log-retention", AuditSeverity::Violation, &format!("log-{index}"))];
        let audit = store
            .record_audit(&NewAudit { trigger: format!("manual-{index}"), resources_checked: 1, findings })
            .unwrap();
        if let Some(previous) = last {
            assert!(audit.id > previous, "ids keep increasing past pruning");
        }
        last = Some(audit.id);
    }
    let latest = store.latest_audit().unwrap().expect("an audit");
    assert_eq!(latest.trigger, format!("manual-{}", AUDITS_KEPT + 4));
    assert_eq!(latest.findings[0].resource, format!("log-{}", AUDITS_KEPT + 4));
}

// --- cancelling runs ---------------------------------------------------------------

pub fn cancelling_a_run_ends_it_whoever_holds_its_lease(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    create_run(&subject, "run-2", "thumbnails");
    subject.clock.advance(Duration::from_secs(5));
    let cancelled = store.cancel_run("run-1", "cancelled by token tok-1").unwrap();
    assert_eq!(cancelled, store.run("run-1").unwrap(), "returns the run as stored");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.finished_at, Some(subject.clock.now()));
    assert_eq!((cancelled.lease_owner.as_deref(), cancelled.lease_until), (None, None));
    assert_eq!(cancelled.error.as_deref(), Some("cancelled by token tok-1"));
    assert_conflict(store.renew_run_lease("run-1", "coordinator-1", RUN_TTL));
    assert_conflict(store.finish_run("run-1", "coordinator-1", RunStatus::Succeeded, None, None));
    assert!(!store.claim_run("run-1", "coordinator-2", RUN_TTL).unwrap(), "a cancelled run is never claimed");
    assert_conflict(store.cancel_run("run-1", "again"));
    assert_eq!(
        store.run("run-1").unwrap().error.as_deref(),
        Some("cancelled by token tok-1"),
        "refusal changes nothing"
    );
    // A run no coordinator ever claimed can be cancelled too, and then needs none.
    assert_eq!(store.cancel_run("run-2", "not needed").unwrap().status, RunStatus::Cancelled);
    subject.clock.advance(Duration::from_secs(3_600));
    assert!(store.runs_needing_coordinator(Duration::ZERO).unwrap().is_empty());
    assert_not_found(store.cancel_run("run-9", "unknown"), "run", "run-9");
}

// --- API tokens and the access log ---------------------------------------------------

fn new_token(id: &str, name: &str) -> NewApiToken {
    NewApiToken {
        id: id.to_owned(),
        name: name.to_owned(),
        secret_sha256: format!("{:0>64}", id.len()),
        scopes: vec!["results:read".to_owned(), "runs:read".to_owned()],
        jobs: vec!["nightly".to_owned()],
        buckets: Vec::new(),
        expires_at: None,
        aws_secret: None,
    }
}

pub fn api_tokens_are_stored_listed_and_revoked(subject: Subject) {
    let store = &subject.store;
    let created_at = subject.clock.now();
    let expires_at = created_at.saturating_add(Duration::from_secs(86_400));
    let first =
        store.create_api_token(NewApiToken { expires_at: Some(expires_at), ..new_token("tok-1", "ci") }).unwrap();
    assert_eq!(
        first,
        ApiTokenRecord {
            id: "tok-1".to_owned(),
            name: "ci".to_owned(),
            secret_sha256: format!("{:0>64}", 5),
            scopes: vec!["results:read".to_owned(), "runs:read".to_owned()],
            jobs: vec!["nightly".to_owned()],
            buckets: Vec::new(),
            created_at,
            expires_at: Some(expires_at),
            revoked_at: None,
        }
    );
    subject.clock.advance(Duration::from_secs(1));
    let second = store
        .create_api_token(NewApiToken {
            buckets: vec!["inbox".to_owned()],
            jobs: Vec::new(),
            ..new_token("tok-2", "dashboard")
        })
        .unwrap();
    assert_eq!(store.api_token("tok-1").unwrap(), first);
    assert_eq!(store.api_tokens().unwrap(), vec![first.clone(), second.clone()], "oldest first");
    assert!(matches!(
        store.create_api_token(new_token("tok-1", "other")),
        Err(StateError::AlreadyExists { kind: "token", .. })
    ));

    subject.clock.advance(Duration::from_secs(1));
    let revoked_at = subject.clock.now();
    let revoked = store.revoke_api_token("tok-1").unwrap();
    assert_eq!(revoked, ApiTokenRecord { revoked_at: Some(revoked_at), ..first.clone() });
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.revoke_api_token("tok-1").unwrap().revoked_at, Some(revoked_at), "the first revocation stands");
    assert_eq!(store.api_token("tok-2").unwrap(), second, "revoking one token leaves the others");
    assert_not_found(store.api_token("tok-9"), "token", "tok-9");
    assert_not_found(store.revoke_api_token("tok-9"), "token", "tok-9");
}

pub fn a_tokens_aws_secret_is_kept_and_read_back(subject: Subject) {
    let store = &subject.store;
    let secret = "0123456789abcdef0123456789abcdef01234567";
    store.create_api_token(NewApiToken { aws_secret: Some(secret.to_owned()), ..new_token("tok-1", "s3") }).unwrap();
    store.create_api_token(new_token("tok-2", "bearer only")).unwrap();
    assert_eq!(store.api_token_aws_secret("tok-1").unwrap().as_deref(), Some(secret));
    assert_eq!(store.api_token_aws_secret("tok-2").unwrap(), None);
    store.revoke_api_token("tok-1").unwrap();
    assert_eq!(store.api_token_aws_secret("tok-1").unwrap().as_deref(), Some(secret), "revocation is the token's");
    assert_not_found(store.api_token_aws_secret("tok-9"), "token", "tok-9");
}

pub fn api_token_names_are_unique_among_live_tokens(subject: Subject) {
    let store = &subject.store;
    store.create_api_token(new_token("tok-1", "ci")).unwrap();
    match store.create_api_token(new_token("tok-2", "ci")) {
        Err(StateError::AlreadyExists { kind: "token", name }) => assert_eq!(name, "ci"),
        other => panic!("expected AlreadyExists for the name, got {other:?}"),
    }
    assert_not_found(store.api_token("tok-2"), "token", "tok-2");
    store.revoke_api_token("tok-1").unwrap();
    let again = store.create_api_token(new_token("tok-2", "ci")).unwrap();
    assert_eq!((again.name.as_str(), again.revoked_at), ("ci", None), "a revoked token's name may be reused");
    assert_eq!(store.api_tokens().unwrap().len(), 2);
}

fn access(path: &str, status: u16, at: Timestamp) -> AccessRecord {
    AccessRecord {
        at,
        token_id: (status != 401).then(|| "tok-1".to_owned()),
        client: "127.0.0.1:50000".to_owned(),
        method: "GET".to_owned(),
        path: path.to_owned(),
        resource: format!("resource{path}"),
        status,
        outcome: if status == 200 { "ok".to_owned() } else { "refused".to_owned() },
    }
}

pub fn access_records_are_appended_in_order_and_read_newest_first(subject: Subject) {
    let store = &subject.store;
    assert!(store.access_records(None, 10).unwrap().is_empty());
    let now = subject.clock.now();
    let batch: Vec<AccessRecord> =
        (1..=5).map(|n| access(&format!("/v1/x/{n}"), if n == 3 { 401 } else { 200 }, now)).collect();
    store.append_access_records(&batch[..2]).unwrap();
    store.append_access_records(&[]).unwrap();
    store.append_access_records(&batch[2..]).unwrap();
    let newest: Vec<StoredAccessRecord> = store.access_records(None, 3).unwrap();
    assert_eq!(
        newest.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
        vec![batch[4].clone(), batch[3].clone(), batch[2].clone()]
    );
    assert!(newest.windows(2).all(|pair| pair[0].id > pair[1].id), "ids increase in append order");
    let older = store.access_records(Some(newest[2].id), 10).unwrap();
    assert_eq!(older.iter().map(|r| r.record.clone()).collect::<Vec<_>>(), vec![batch[1].clone(), batch[0].clone()]);
    assert_eq!(store.access_records(Some(older[1].id), 10).unwrap(), Vec::new());
    assert_eq!(older[1].record.token_id.as_deref(), Some("tok-1"));
    assert_eq!(newest[2].record.token_id, None, "a refused access without a known token names none");
}

pub fn every_lease_of_an_item_is_an_attempt_ended_by_its_completion_or_release(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c", "d"]);
    add_items(&subject, "run-2", &["a"]);
    let t0 = subject.clock.now();
    let at = |seconds: u64| t0.saturating_add(Duration::from_secs(seconds));
    lease(&subject, "run-1", "worker-1", 2);
    lease(&subject, "run-2", "worker-1", 1);
    subject.clock.advance(Duration::from_secs(1));
    lease(&subject, "run-1", "worker-2", 2);
    subject.clock.advance(Duration::from_secs(1));
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    let retry = ItemCompletion::Failed { error: "timeout".to_owned(), retry_at: Some(at(2)) };
    assert!(store.complete_run_item("run-1", "b", "worker-1", 1, retry).unwrap());
    let dead = ItemCompletion::Failed { error: "bad input".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", "c", "worker-2", 1, dead).unwrap());
    assert!(!store.complete_run_item("run-1", "d", "worker-1", 1, done("stale")).unwrap());
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.release_worker_items("run-1", "worker-2").unwrap(), 1, "d");
    lease(&subject, "run-1", "worker-3", 2);

    let attempt = |item: &str, attempt: u32, worker: &str, started: u64, ended: Option<u64>, outcome| ItemAttempt {
        item: item.to_owned(),
        attempt,
        worker: worker.to_owned(),
        started_at: at(started),
        ended_at: ended.map(at),
        outcome,
    };
    let every = vec![
        attempt("a", 1, "worker-1", 0, Some(2), AttemptOutcome::Done),
        attempt("b", 1, "worker-1", 0, Some(2), AttemptOutcome::Failed),
        attempt("c", 1, "worker-2", 1, Some(2), AttemptOutcome::DeadLettered),
        attempt("d", 1, "worker-2", 1, Some(3), AttemptOutcome::Released),
        attempt("b", 2, "worker-3", 3, None, AttemptOutcome::Running),
        attempt("d", 2, "worker-3", 3, None, AttemptOutcome::Running),
    ];
    assert_eq!(store.run_item_attempts("run-1", 100).unwrap(), every);
    assert_eq!(store.run_item_attempts("run-1", 2).unwrap(), every[4..].to_vec(), "the latest, in start order");
    assert_eq!(store.run_item_attempts("run-2", 100).unwrap().len(), 1, "runs are apart");

    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.release_all_leased_items("run-1").unwrap(), 2);
    let after_release = store.run_item_attempts("run-1", 2).unwrap();
    assert_eq!(
        after_release.iter().map(|a| (a.ended_at, a.outcome)).collect::<Vec<_>>(),
        [(Some(at(4)), AttemptOutcome::Released), (Some(at(4)), AttemptOutcome::Released)]
    );
    assert!(matches!(store.run_item_attempts("no-such-run", 10), Err(StateError::NotFound { kind: "run", .. })));
}

// --- retention ------------------------------------------------------------------------

pub fn expired_messages_are_deleted_whatever_their_state_oldest_first_in_batches(subject: Subject) {
    let store = &subject.store;
    let queue = create_queue(&subject, "charts");
    let other = create_queue(&subject, "other");
    let t0 = subject.clock.now();
    send_bodies(&subject, &queue, &["old-1", "old-2", "old-3"]);
    send_bodies(&subject, &other, &["other-old"]);
    subject.clock.advance(Duration::from_secs(10));
    send_bodies(&subject, &queue, &["young"]);
    assert_eq!(bodies_of(&receive(&subject, &queue, 1)), ["old-1"], "one old message is in flight");
    let cutoff = t0.saturating_add(Duration::from_secs(1));
    assert_eq!(store.expire_messages(&queue, cutoff, 2).unwrap(), 2, "at most the limit");
    assert_eq!(store.expire_messages(&queue, cutoff, 2).unwrap(), 1, "then the rest");
    assert_eq!(store.expire_messages(&queue, cutoff, 2).unwrap(), 0);
    let left: Vec<String> = store
        .peek_messages(&queue, 10)
        .unwrap()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(left, ["young"]);
    assert_eq!(stats(&subject, &queue).in_flight, 0, "the leased old message expired too");
    assert_eq!(stats(&subject, &other).visible, 1, "another queue's messages are its own");
    assert_not_found(store.expire_messages(&name("nope"), cutoff, 10), "queue", "nope");
}

pub fn invocations_started_before_the_cutoff_are_pruned_with_their_logs(subject: Subject) {
    let store = &subject.store;
    let t0 = subject.clock.now();
    let day = Duration::from_secs(86_400);
    store.record_invocation(&invocation("f", "req-a", t0, 5), b"log of a").unwrap();
    store.record_invocation(&invocation("f", "req-b", t0, 5), b"log of b").unwrap();
    store.record_invocation(&invocation("f", "req-c", t0.saturating_add(day * 2), 5), b"log of c").unwrap();
    let cutoff = t0.saturating_add(day);
    assert_eq!(store.prune_invocations(cutoff, 1).unwrap(), 1);
    assert_eq!(store.prune_invocations(cutoff, 10).unwrap(), 1);
    assert_eq!(store.prune_invocations(cutoff, 10).unwrap(), 0);
    assert_eq!(request_ids(&every_invocation(&subject)), ["req-c"]);
    assert_not_found(store.invocation_logs("req-a"), "invocation", "req-a");
    assert_eq!(store.invocation_logs("req-c").unwrap(), b"log of c");
}

pub fn finished_runs_are_pruned_with_their_items_and_workers_but_results_stay(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    add_items(&subject, "run-1", &["a", "b"]);
    let leased = lease(&subject, "run-1", "worker-1", 1);
    store
        .complete_run_item("run-1", &leased[0].item, "worker-1", 1, ItemCompletion::Done { result: b"{}".to_vec() })
        .unwrap();
    store.finish_run("run-1", "coordinator-1", RunStatus::Succeeded, None, Some("{}")).unwrap();
    let finished_at = subject.clock.now();
    subject.clock.advance(Duration::from_secs(3 * 86_400));
    let cutoff = finished_at.saturating_add(Duration::from_secs(86_400));
    assert_eq!(store.prune_finished_runs(cutoff, 10).unwrap(), 1);
    assert_eq!(store.prune_finished_runs(cutoff, 10).unwrap(), 0);
    assert_not_found(store.run("run-1"), "run", "run-1");
    assert_eq!(store.run("run-2").unwrap().status, RunStatus::Running, "a running run is never pruned");
    assert_eq!(store.result(&name("thumbnails"), &leased[0].item).unwrap().result, b"{}", "results stay");
}

pub fn old_events_are_pruned_only_once_every_consumer_has_read_them(subject: Subject) {
    let store = &subject.store;
    let t0 = subject.clock.now();
    let events: Vec<_> =
        ["a", "b", "c", "d"].iter().map(|key| store.append_object_event(event("charts", key, t0)).unwrap()).collect();
    let young =
        store.append_object_event(event("charts", "e", t0.saturating_add(Duration::from_secs(86_400)))).unwrap();
    let cutoff = t0.saturating_add(Duration::from_secs(60));
    assert_eq!(store.prune_object_events(cutoff, 10).unwrap(), 0, "no consumer has read anything yet");
    store.set_consumer_cursor("router", events[2].sequence).unwrap();
    store.set_consumer_cursor("audit", events[1].sequence).unwrap();
    assert_eq!(store.prune_object_events(cutoff, 10).unwrap(), 2, "up to the slowest consumer");
    store.set_consumer_cursor("audit", young.sequence).unwrap();
    assert_eq!(store.prune_object_events(cutoff, 10).unwrap(), 1, "up to the router now");
    store.set_consumer_cursor("router", young.sequence).unwrap();
    assert_eq!(store.prune_object_events(cutoff, 10).unwrap(), 1, "the last old one; the young one stays");
    let left: Vec<String> = store.object_events_after(0, 10).unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(left, ["e"]);
    assert_eq!(store.append_object_event(event("charts", "f", t0)).unwrap().sequence, young.sequence + 1);
}

pub fn access_records_older_than_the_cutoff_are_pruned_oldest_first(subject: Subject) {
    let store = &subject.store;
    let now = subject.clock.now();
    let seven_years = Duration::from_secs(7 * 365 * 86_400);
    let long_ago = Timestamp::from_millis(now.as_millis() - seven_years.as_millis() as i64);
    let old: Vec<AccessRecord> = (1..=3).map(|n| access(&format!("/v1/old/{n}"), 200, long_ago)).collect();
    store.append_access_records(&old).unwrap();
    store.append_access_records(&[access("/v1/young", 200, now)]).unwrap();
    let cutoff = Timestamp::from_millis(now.as_millis() - crate::ACCESS_LOG_RETENTION.as_millis() as i64);
    assert_eq!(store.prune_access_records(cutoff, 2).unwrap(), 2);
    assert_eq!(store.prune_access_records(cutoff, 2).unwrap(), 1);
    assert_eq!(store.prune_access_records(cutoff, 2).unwrap(), 0);
    let left: Vec<String> = store.access_records(None, 10).unwrap().into_iter().map(|r| r.record.path).collect();
    assert_eq!(left, ["/v1/young"]);
}

pub fn attempts_are_counted_by_the_worker_that_ended_them(subject: Subject) {
    let store = &subject.store;
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    add_items(&subject, "run-1", &["a", "b", "c", "d", "e"]);
    add_items(&subject, "run-2", &["a"]);
    assert_eq!(store.run_attempt_counts_by_worker("run-1").unwrap(), BTreeMap::new(), "nothing ended yet");
    lease(&subject, "run-1", "worker-1", 3);
    lease(&subject, "run-2", "worker-1", 1);
    lease(&subject, "run-1", "worker-2", 2);
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    let retry = ItemCompletion::Failed { error: "timeout".to_owned(), retry_at: Some(subject.clock.now()) };
    assert!(store.complete_run_item("run-1", "b", "worker-1", 1, retry).unwrap());
    let dead = ItemCompletion::Failed { error: "bad input".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", "d", "worker-2", 1, dead).unwrap());
    assert!(store.complete_run_item("run-2", "a", "worker-1", 1, done("y")).unwrap());
    // worker-2 dies holding `e`; worker-1 still holds `c`: neither counts.
    assert_eq!(store.release_worker_items("run-1", "worker-2").unwrap(), 1);
    // A worker of a later coordinator takes `b` again and `e`.
    lease(&subject, "run-1", "worker-3", 2);
    assert!(store.complete_run_item("run-1", "b", "worker-3", 2, done("z")).unwrap());
    assert!(store.complete_run_item("run-1", "e", "worker-3", 2, done("w")).unwrap());

    let counts = |done, failed| WorkerAttemptCounts { done, failed };
    let expected: BTreeMap<String, WorkerAttemptCounts> = [
        ("worker-1".to_owned(), counts(1, 1)),
        ("worker-2".to_owned(), counts(0, 1)),
        ("worker-3".to_owned(), counts(2, 0)),
    ]
    .into();
    assert_eq!(store.run_attempt_counts_by_worker("run-1").unwrap(), expected);
    assert_eq!(
        store.run_attempt_counts_by_worker("run-2").unwrap(),
        [("worker-1".to_owned(), counts(1, 0))].into(),
        "runs are apart"
    );
    assert!(matches!(store.run_attempt_counts_by_worker("no-such-run"), Err(StateError::NotFound { kind: "run", .. })));
}

pub fn a_run_ends_in_any_finished_status(subject: Subject) {
    let store = &subject.store;
    for status in RunStatus::ALL.into_iter().filter(|status| status.is_finished()) {
        let id = format!("run-{}", status.as_str().replace('_', "-"));
        claimed_run(&subject, &id, "thumbnails");
        store.finish_run(&id, "coordinator-1", status, Some("why"), None).unwrap();
        assert_eq!(store.run(&id).unwrap().status, status);
    }
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
        assert!(listed >= 69, "only {listed} cases");
    }
}
