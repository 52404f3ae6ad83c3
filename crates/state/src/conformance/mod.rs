//! The conformance suite: test functions that check a backend keeps the
//! contract, one module per concern ([`deployments`], [`buckets`],
//! [`event_log`], [`queues`], [`invocation_ledger`], [`runs`], [`audits`],
//! [`access`], [`retention`], [`leases`], [`fencing`], [`experiments`], [`wakeups`]). Each case checks one behaviour on a fresh,
//! empty store opened on a [`ManualClock`] (a [`Subject`]), and asks of the
//! store only the traits it uses: a case is generic over the store with
//! bounds such as `S: QueueStore + ?Sized`, so a backend that implements
//! some concerns runs their cases before it implements the rest.
//!
//! Compiled only for tests: this crate's own, and a backend's, which enables
//! the `conformance` feature from its `[dev-dependencies]`.
//!
//! A backend's tests generate one `#[test]` per case, in a module per concern,
//! with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! fn fresh_subject() -> mayfly_state::conformance::Subject<MyStore> { /* open an empty store */ }
//! mayfly_state::conformance_tests!(fresh_subject);                          // every concern
//! mayfly_state::conformance_tests!(fresh_subject; deployments, buckets);    // only these
//! ```
//!
//! or loop over [`all`] / call [`run_all`]. The lists of cases live once, in
//! `__with_conformance_cases!`, so the two cannot drift apart. A concern's
//! module may use concerns listed before it (`event_log` records
//! deployments, `runs` moves queue messages, `retention` uses them all,
//! `fencing` writes to queues, cursors and runs under leases).

use std::collections::BTreeMap;
use std::time::Duration;

use mayfly_core::queue::{QueueConfig, QueueRuleError, QueueStats, ReceiptHandle, max_receives_reason};
use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{ByteSize, Clock, ManualClock, Name, NewObjectEvent, ObjectEventKind, Timestamp};

use crate::{
    AUDITS_KEPT, AccessRecord, ApiTokenRecord, AttemptOutcome, AuditFinding, AuditSeverity, DeleteOutcome,
    FunctionStats, GroupedCompletion, InvocationFilter, InvocationRecord, ItemAttempt, ItemCompletion, Lease,
    NewApiToken, NewAudit, NewDeployment, NewRun, NewRunItem, OutgoingMessage, ReceiveRequest, ReceivedMessage,
    ResultRecord, RunItem, RunItemCounts, RunRecord, StateError, StateStore, StoredAccessRecord, StoredInvocation,
    WorkerAttemptCounts, WorkerRecord,
};
use crate::{
    AccessStore, AuditStore, BucketRegistry, DeploymentStore, EventLog, InvocationLedger, LeaseStore, QueueStore,
    RetentionStore, RunStore,
};

pub mod access;
pub mod audits;
pub mod buckets;
pub mod deployments;
pub mod event_log;
pub mod experiments;
pub mod fencing;
pub mod invocation_ledger;
pub mod leases;
pub mod queues;
pub mod retention;
pub mod runs;
pub mod wakeups;

/// A freshly opened, empty store and the clock it was opened with. `S` is
/// the store: a backend's own type, or `dyn StateStore`.
pub struct Subject<S: ?Sized = dyn StateStore> {
    pub store: Box<S>,
    pub clock: ManualClock,
    /// Whatever the store needs to outlive it during the case (a temporary
    /// directory, a database server); dropped after `store` (fields drop in order).
    pub keep_alive: Box<dyn std::any::Any>,
}

impl<S: ?Sized> Subject<S> {
    pub fn new(store: Box<S>, clock: ManualClock) -> Subject<S> {
        Subject { store, clock, keep_alive: Box::new(()) }
    }

    /// Keep `resource` alive until the store is dropped.
    pub fn keeping(self, resource: impl std::any::Any) -> Subject<S> {
        Subject { keep_alive: Box::new(resource), ..self }
    }
}

/// Calls `$callback!` with a concern's module name and its cases; the single list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_conformance_cases {
    (deployments, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) deployments:
            deployments_are_numbered_in_order_with_source_and_hash,
            latest_deployment_is_none_then_the_newest,
        }
    };
    (buckets, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) buckets:
            buckets_are_created_read_listed_by_name_and_deleted,
            creating_an_existing_bucket_is_already_exists,
            unknown_bucket_is_not_found,
        }
    };
    (event_log, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) event_log:
            deployments_record_the_event_log_head_that_bounds_the_events_they_route,
            object_event_sequences_increase_in_commit_order,
            object_events_after_pages_through_the_log,
            consumer_cursors_start_at_zero_and_keep_what_was_set,
            a_consumer_cursor_never_moves_back,
        }
    };
    (queues, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) queues:
            damaged_messages_are_none_in_a_healthy_store_even_with_dead_letters,
            queues_are_created_read_and_listed_by_name,
            creating_an_existing_queue_is_already_exists,
            updating_a_queue_keeps_its_messages,
            deleting_a_queue_removes_its_messages,
            purging_a_queue_deletes_every_message_and_keeps_the_queue,
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
            a_receive_that_pages_past_dead_letters_hands_a_zero_timeout_lease_out_once,
            redrive_moves_dead_letters_back_with_receive_count_reset,
            redrive_to_a_named_queue,
            dead_letters_are_counted_per_source_queue,
            queue_stats_are_exact_under_a_manual_clock,
            attributes_round_trip,
            bodies_are_arbitrary_bytes,
            visibility_timeout_over_twelve_hours_is_refused,
            peek_does_not_lease,
            message_ids_are_never_reused,
        }
    };
    (invocation_ledger, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) invocation_ledger:
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
    (runs, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) runs:
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
            completed_items_are_counted_by_job_over_every_run_finished_or_not,
            moving_queue_messages_into_a_run_moves_only_visible_ones_in_one_commit,
            unfinished_items_go_back_to_their_queue_as_the_same_messages,
            an_items_message_attributes_are_read_back_while_it_is_in_the_run,
            returning_unfinished_items_again_returns_nothing_and_changes_nothing,
            done_dead_lettered_and_non_queue_items_are_not_returned,
            a_returned_message_moved_into_the_same_run_again_is_pending_again,
            run_items_and_results_page_by_item,
            workers_are_upserted_and_listed_by_start,
            cancelling_a_run_ends_it_whoever_holds_its_lease,
            every_lease_of_an_item_is_an_attempt_ended_by_its_completion_or_release,
            attempts_are_counted_by_the_worker_that_ended_them,
            a_run_ends_in_any_finished_status,
        }
    };
    (audits, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) audits:
            audits_are_recorded_with_their_findings_in_order_and_the_latest_is_read_back,
            only_the_newest_audits_are_kept,
        }
    };
    (access, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) access:
            api_tokens_are_stored_listed_and_revoked,
            a_tokens_aws_secret_is_kept_and_read_back,
            api_token_names_are_unique_among_live_tokens,
            access_records_are_appended_in_order_and_read_newest_first,
        }
    };
    (retention, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) retention:
            expired_messages_are_deleted_whatever_their_state_oldest_first_in_batches,
            invocations_started_before_the_cutoff_are_pruned_with_their_logs,
            finished_runs_are_pruned_with_their_items_and_workers_but_results_stay,
            old_events_are_pruned_only_once_every_consumer_has_read_them,
            access_records_older_than_the_cutoff_are_pruned_oldest_first,
        }
    };
    (leases, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) leases:
            a_live_lease_is_exclusive_to_its_holder,
            renewing_extends_the_lease_and_keeps_its_term,
            another_holder_takes_over_only_after_expiry_with_the_next_term,
            releasing_by_another_holder_changes_nothing,
            a_released_lease_is_taken_at_once_with_the_next_term,
            of_concurrent_acquirers_exactly_one_wins,
        }
    };
    (fencing, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) fencing:
            writes_fenced_by_a_superseded_term_are_refused_and_change_nothing,
            the_current_holders_fenced_writes_commit_together_in_order,
            a_fence_holds_after_its_lease_lapsed_until_another_takes_it_over,
            a_fence_of_a_lease_never_taken_is_refused,
            a_failing_write_in_a_batch_changes_nothing,
            unfenced_writes_commit_together_whoever_holds_the_lease,
            no_write_of_the_previous_term_lands_after_a_takeover,
        }
    };
    (experiments, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) experiments:
            experiments_are_recorded_with_their_evidence_and_listed_newest_first,
            an_unknown_experiment_is_not_found,
        }
    };
    (wakeups, $callback:ident ! ($($arguments:tt)*)) => {
        $crate::$callback! {
            ($($arguments)*) wakeups:
            a_send_wakes_the_watchers_with_the_queues_name,
            releasing_a_lease_with_visibility_zero_wakes_the_watchers,
            a_message_moved_to_its_dead_letter_queue_wakes_that_queues_watchers,
            redriven_dead_letters_wake_the_watchers_of_the_queue_they_return_to,
            unfinished_run_items_returned_to_their_queue_wake_its_watchers,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_list {
    (() $concern:ident: $($case:ident,)*) => {
        vec![$(
            (
                concat!(stringify!($concern), "::", stringify!($case)),
                $crate::conformance::$concern::$case::<dyn $crate::StateStore> as fn($crate::conformance::Subject),
            ),
        )*]
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case_tests {
    (($fresh_subject:expr) $concern:ident: $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$concern::$case($fresh_subject());
            }
        )*
    };
}

/// Generate one `#[test]` per conformance case, each on a subject made by
/// `$fresh_subject` (a `fn() -> Subject<S>`, or a closure), in one module per
/// concern: of every concern, or of those listed after a `;`.
#[macro_export]
macro_rules! conformance_tests {
    ($fresh_subject:expr) => {
        $crate::conformance_tests!($fresh_subject; deployments, buckets, event_log, queues, invocation_ledger, runs, audits, access, retention, leases, fencing, experiments, wakeups);
    };
    ($fresh_subject:expr; $($concern:ident),+ $(,)?) => {
        $(
            mod $concern {
                #[allow(unused_imports)]
                use super::*;
                $crate::__with_conformance_cases!($concern, __conformance_case_tests!($fresh_subject));
            }
        )+
    };
}

/// One conformance case: its name (`concern::case`) and the function that checks it.
pub type NamedCase = (&'static str, fn(Subject));

/// Every case, by name.
pub fn all() -> Vec<NamedCase> {
    let mut cases = Vec::new();
    cases.extend(crate::__with_conformance_cases!(deployments, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(buckets, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(event_log, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(queues, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(invocation_ledger, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(runs, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(audits, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(access, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(retention, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(leases, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(fencing, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(experiments, __conformance_case_list!()));
    cases.extend(crate::__with_conformance_cases!(wakeups, __conformance_case_list!()));
    cases
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
fn create_queue<S: QueueStore + ?Sized>(subject: &Subject<S>, queue: &str) -> Name {
    let queue = name(queue);
    subject.store.create_queue(&queue, &queue_config(Duration::from_secs(30)), &[]).expect("create queue");
    queue
}

fn send_bodies<S: QueueStore + ?Sized>(subject: &Subject<S>, queue: &Name, bodies: &[&str]) -> Vec<u64> {
    let messages: Vec<OutgoingMessage> = bodies.iter().map(|body| OutgoingMessage::new(body.as_bytes())).collect();
    subject.store.send_messages(queue, &messages).expect("send")
}

fn receive<S: QueueStore + ?Sized>(subject: &Subject<S>, queue: &Name, max_messages: usize) -> Vec<ReceivedMessage> {
    subject.store.receive_messages(queue, ReceiveRequest::up_to(max_messages)).expect("receive")
}

fn bodies_of(messages: &[ReceivedMessage]) -> Vec<String> {
    messages.iter().map(|message| String::from_utf8_lossy(&message.body).into_owned()).collect()
}

fn stats<S: QueueStore + ?Sized>(subject: &Subject<S>, queue: &Name) -> QueueStats {
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

fn every_invocation<S: InvocationLedger + ?Sized>(subject: &Subject<S>) -> Vec<StoredInvocation> {
    let filter = InvocationFilter { limit: 1_000, ..InvocationFilter::default() };
    subject.store.invocations(&filter).expect("list invocations")
}

fn request_ids(invocations: &[StoredInvocation]) -> Vec<&str> {
    invocations.iter().map(|invocation| invocation.record.request_id.as_str()).collect()
}

// --- batch-job runs ----------------------------------------------------------------------------

/// How long the runs cases lease a run for.
const RUN_TTL: Duration = Duration::from_secs(30);

fn new_run<S: ?Sized>(id: &str, job: &str, subject: &Subject<S>) -> NewRun {
    NewRun {
        id: id.to_owned(),
        job: name(job),
        deployment_version: None,
        trigger: "manual".to_owned(),
        deadline: subject.clock.now().saturating_add(Duration::from_secs(3_600)),
        budget: None,
    }
}

fn create_run<S: RunStore + ?Sized>(subject: &Subject<S>, id: &str, job: &str) -> RunRecord {
    subject.store.create_run(new_run(id, job, subject)).expect("create run")
}

/// A run `id` of job `job`, claimed by coordinator `coordinator-1`.
fn claimed_run<S: RunStore + ?Sized>(subject: &Subject<S>, id: &str, job: &str) -> RunRecord {
    create_run(subject, id, job);
    assert!(subject.store.claim_run(id, "coordinator-1", RUN_TTL).expect("claim run"));
    subject.store.run(id).expect("read run")
}

fn run_items_named(ids: &[&str]) -> Vec<NewRunItem> {
    ids.iter().map(|id| NewRunItem { item: (*id).to_owned(), payload: format!("payload-{id}").into_bytes() }).collect()
}

fn add_items<S: RunStore + ?Sized>(subject: &Subject<S>, run: &str, ids: &[&str]) {
    subject.store.add_run_items(run, &run_items_named(ids)).expect("add items");
}

fn lease<S: RunStore + ?Sized>(subject: &Subject<S>, run: &str, worker: &str, max: usize) -> Vec<RunItem> {
    subject.store.lease_run_items(run, worker, max).expect("lease items")
}

/// `ids` sorted: where the store's item order (by id, or by its keyed hash) does not matter.
fn sorted<T: Ord>(mut ids: Vec<T>) -> Vec<T> {
    ids.sort();
    ids
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_case_is_listed_once() {
        let mut names: Vec<&str> = super::all().into_iter().map(|(name, _)| name).collect();
        let listed = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), listed, "a case is listed twice");
        assert!(listed >= 99, "only {listed} cases");
    }
}
