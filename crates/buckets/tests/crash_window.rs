//! The documented crash window: the object store operation succeeded but its
//! event could not be appended. The caller gets no `Ok`; the object changed
//! anyway; a retried put appends the event. The failing append is injected
//! with a state store wrapper around the real SQLite store.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mayfly_buckets::{BucketError, Buckets};
use mayfly_core::queue::{QueueConfig, QueueStats, ReceiptHandle};
use mayfly_core::run::{ItemStatus, RunStatus};
use mayfly_core::{ManualClock, Name, NewObjectEvent, ObjectEvent, ObjectEventKind};
use mayfly_state::prelude::*;
use mayfly_state::{
    BucketRecord, DeleteOutcome, Deployment, FunctionStats, InvocationFilter, InvocationRecord, ItemCompletion,
    NewDeployment, NewRun, NewRunItem, OutgoingMessage, QueueRecord, ReceiveRequest, ReceivedMessage, Result,
    ResultRecord, RunItem, RunItemCounts, RunRecord, StateError, StoredInvocation, StoredMessage, WorkerRecord,
};
use mayfly_state_sqlite::SqliteStore;
use support::{START, name};

/// The real store, except that appending an event fails while `fail_appends` is set.
struct StoreWithFailingAppends {
    inner: SqliteStore,
    fail_appends: AtomicBool,
}

impl DeploymentStore for StoreWithFailingAppends {
    fn record_deployment(&self, deployment: NewDeployment) -> Result<Deployment> {
        self.inner.record_deployment(deployment)
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        self.inner.deployments()
    }

    fn latest_deployment(&self) -> Result<Option<Deployment>> {
        self.inner.latest_deployment()
    }
}

impl BucketRegistry for StoreWithFailingAppends {
    fn create_bucket(&self, name: &Name, tags: &[(String, String)]) -> Result<BucketRecord> {
        self.inner.create_bucket(name, tags)
    }

    fn delete_bucket(&self, name: &Name) -> Result<()> {
        self.inner.delete_bucket(name)
    }

    fn bucket(&self, name: &Name) -> Result<BucketRecord> {
        self.inner.bucket(name)
    }

    fn buckets(&self) -> Result<Vec<BucketRecord>> {
        self.inner.buckets()
    }
}

impl EventLog for StoreWithFailingAppends {
    fn append_object_event(&self, event: NewObjectEvent) -> Result<ObjectEvent> {
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(StateError::DiskFull);
        }
        self.inner.append_object_event(event)
    }

    fn object_events_after(&self, after: u64, limit: usize) -> Result<Vec<ObjectEvent>> {
        self.inner.object_events_after(after, limit)
    }

    fn consumer_cursor(&self, consumer: &str) -> Result<u64> {
        self.inner.consumer_cursor(consumer)
    }

    fn set_consumer_cursor(&self, consumer: &str, sequence: u64) -> Result<()> {
        self.inner.set_consumer_cursor(consumer, sequence)
    }
}

impl QueueStore for StoreWithFailingAppends {
    fn create_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        self.inner.create_queue(name, config, tags)
    }

    fn update_queue(&self, name: &Name, config: &QueueConfig, tags: &[(String, String)]) -> Result<QueueRecord> {
        self.inner.update_queue(name, config, tags)
    }

    fn delete_queue(&self, name: &Name) -> Result<()> {
        self.inner.delete_queue(name)
    }

    fn queue(&self, name: &Name) -> Result<QueueRecord> {
        self.inner.queue(name)
    }

    fn queues(&self) -> Result<Vec<QueueRecord>> {
        self.inner.queues()
    }

    fn send_messages(&self, queue: &Name, messages: &[OutgoingMessage]) -> Result<Vec<u64>> {
        self.inner.send_messages(queue, messages)
    }

    fn receive_messages(&self, queue: &Name, request: ReceiveRequest) -> Result<Vec<ReceivedMessage>> {
        self.inner.receive_messages(queue, request)
    }

    fn delete_messages(&self, queue: &Name, receipts: &[ReceiptHandle]) -> Result<Vec<DeleteOutcome>> {
        self.inner.delete_messages(queue, receipts)
    }

    fn change_visibility(&self, queue: &Name, receipt: ReceiptHandle, timeout: Duration) -> Result<()> {
        self.inner.change_visibility(queue, receipt, timeout)
    }

    fn queue_stats(&self, queue: &Name) -> Result<QueueStats> {
        self.inner.queue_stats(queue)
    }

    fn peek_messages(&self, queue: &Name, limit: usize) -> Result<Vec<StoredMessage>> {
        self.inner.peek_messages(queue, limit)
    }

    fn damaged_messages(&self, limit: usize) -> Result<Vec<mayfly_state::DamagedMessage>> {
        self.inner.damaged_messages(limit)
    }

    fn redrive_dead_letters(&self, dead_letter: &Name, to: Option<&Name>) -> Result<u64> {
        self.inner.redrive_dead_letters(dead_letter, to)
    }

    fn dead_letters_from(&self, dead_letter: &Name, source: &Name) -> Result<u64> {
        self.inner.dead_letters_from(dead_letter, source)
    }

    fn purge_queue(&self, queue: &Name) -> Result<u64> {
        self.inner.purge_queue(queue)
    }
}

impl InvocationLedger for StoreWithFailingAppends {
    fn record_invocation(&self, record: &InvocationRecord, logs: &[u8]) -> Result<u64> {
        self.inner.record_invocation(record, logs)
    }

    fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<StoredInvocation>> {
        self.inner.invocations(filter)
    }

    fn invocation_logs(&self, request_id: &str) -> Result<Vec<u8>> {
        self.inner.invocation_logs(request_id)
    }

    fn function_stats(&self, function: &Name) -> Result<FunctionStats> {
        self.inner.function_stats(function)
    }
}

impl RunStore for StoreWithFailingAppends {
    fn create_run(&self, run: NewRun) -> Result<RunRecord> {
        self.inner.create_run(run)
    }

    fn run(&self, id: &str) -> Result<RunRecord> {
        self.inner.run(id)
    }

    fn runs(&self, job: Option<&Name>, limit: usize) -> Result<Vec<RunRecord>> {
        self.inner.runs(job, limit)
    }

    fn claim_run(&self, id: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.inner.claim_run(id, owner, ttl)
    }

    fn renew_run_lease(&self, id: &str, owner: &str, ttl: Duration) -> Result<()> {
        self.inner.renew_run_lease(id, owner, ttl)
    }

    fn runs_needing_coordinator(&self, grace: Duration) -> Result<Vec<RunRecord>> {
        self.inner.runs_needing_coordinator(grace)
    }

    fn finish_run(
        &self,
        id: &str,
        owner: &str,
        status: RunStatus,
        error: Option<&str>,
        report: Option<&str>,
    ) -> Result<()> {
        self.inner.finish_run(id, owner, status, error, report)
    }

    fn set_run_status(&self, id: &str, owner: &str, status: RunStatus) -> Result<()> {
        self.inner.set_run_status(id, owner, status)
    }

    fn add_run_items(&self, run: &str, items: &[NewRunItem]) -> Result<u64> {
        self.inner.add_run_items(run, items)
    }

    fn move_queue_messages_into_run(&self, run: &str, queue: &Name, max: usize) -> Result<u64> {
        self.inner.move_queue_messages_into_run(run, queue, max)
    }

    fn return_unfinished_items_to_queues(&self, run: &str) -> Result<u64> {
        self.inner.return_unfinished_items_to_queues(run)
    }

    fn lease_run_items(&self, run: &str, worker: &str, max: usize) -> Result<Vec<RunItem>> {
        self.inner.lease_run_items(run, worker, max)
    }

    fn run_item_message_attributes(
        &self,
        run: &str,
        items: &[String],
    ) -> Result<std::collections::BTreeMap<String, Vec<(String, String)>>> {
        self.inner.run_item_message_attributes(run, items)
    }

    fn complete_run_item(
        &self,
        run: &str,
        item: &str,
        worker: &str,
        attempt: u32,
        completion: ItemCompletion,
    ) -> Result<bool> {
        self.inner.complete_run_item(run, item, worker, attempt, completion)
    }

    fn complete_run_items_together(
        &self,
        run: &str,
        completions: Vec<mayfly_state::GroupedCompletion>,
    ) -> Result<Vec<Result<mayfly_state::GroupedCompletionOutcome>>> {
        self.inner.complete_run_items_together(run, completions)
    }

    fn release_worker_items(&self, run: &str, worker: &str) -> Result<u64> {
        self.inner.release_worker_items(run, worker)
    }

    fn release_all_leased_items(&self, run: &str) -> Result<u64> {
        self.inner.release_all_leased_items(run)
    }

    fn run_item_counts(&self, run: &str) -> Result<RunItemCounts> {
        self.inner.run_item_counts(run)
    }

    fn run_items(
        &self,
        run: &str,
        status: Option<ItemStatus>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunItem>> {
        self.inner.run_items(run, status, after_item, limit)
    }

    fn results(
        &self,
        job: &Name,
        run: Option<&str>,
        after_item: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ResultRecord>> {
        self.inner.results(job, run, after_item, limit)
    }

    fn result(&self, job: &Name, item: &str) -> Result<ResultRecord> {
        self.inner.result(job, item)
    }

    fn upsert_worker(&self, worker: &WorkerRecord) -> Result<()> {
        self.inner.upsert_worker(worker)
    }

    fn run_workers(&self, run: &str) -> Result<Vec<WorkerRecord>> {
        self.inner.run_workers(run)
    }

    fn cancel_run(&self, id: &str, reason: &str) -> Result<RunRecord> {
        self.inner.cancel_run(id, reason)
    }

    fn run_item_attempts(&self, run: &str, limit: usize) -> Result<Vec<mayfly_state::ItemAttempt>> {
        self.inner.run_item_attempts(run, limit)
    }

    fn run_attempt_counts_by_worker(
        &self,
        run: &str,
    ) -> Result<std::collections::BTreeMap<String, mayfly_state::WorkerAttemptCounts>> {
        self.inner.run_attempt_counts_by_worker(run)
    }
}

impl AuditStore for StoreWithFailingAppends {
    fn record_audit(&self, audit: &mayfly_state::NewAudit) -> Result<mayfly_state::AuditRecord> {
        self.inner.record_audit(audit)
    }

    fn latest_audit(&self) -> Result<Option<mayfly_state::AuditRecord>> {
        self.inner.latest_audit()
    }
}

impl AccessStore for StoreWithFailingAppends {
    fn derived_key(&self, purpose: &str) -> Result<[u8; 32]> {
        self.inner.derived_key(purpose)
    }

    fn create_api_token(&self, token: mayfly_state::NewApiToken) -> Result<mayfly_state::ApiTokenRecord> {
        self.inner.create_api_token(token)
    }

    fn api_token(&self, id: &str) -> Result<mayfly_state::ApiTokenRecord> {
        self.inner.api_token(id)
    }

    fn api_tokens(&self) -> Result<Vec<mayfly_state::ApiTokenRecord>> {
        self.inner.api_tokens()
    }

    fn revoke_api_token(&self, id: &str) -> Result<mayfly_state::ApiTokenRecord> {
        self.inner.revoke_api_token(id)
    }

    fn api_token_aws_secret(&self, id: &str) -> Result<Option<String>> {
        self.inner.api_token_aws_secret(id)
    }

    fn append_access_records(&self, records: &[mayfly_state::AccessRecord]) -> Result<()> {
        self.inner.append_access_records(records)
    }

    fn access_records(&self, before_id: Option<u64>, limit: usize) -> Result<Vec<mayfly_state::StoredAccessRecord>> {
        self.inner.access_records(before_id, limit)
    }
}

impl mayfly_state::ExperimentStore for StoreWithFailingAppends {
    fn record_experiment(&self, experiment: &mayfly_state::Experiment) -> Result<mayfly_state::ExperimentRecord> {
        self.inner.record_experiment(experiment)
    }

    fn experiments(&self, limit: usize) -> Result<Vec<mayfly_state::ExperimentRecord>> {
        self.inner.experiments(limit)
    }

    fn experiment(&self, id: u64) -> Result<mayfly_state::ExperimentRecord> {
        self.inner.experiment(id)
    }
}

impl mayfly_state::LeaseStore for StoreWithFailingAppends {
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now: mayfly_core::Timestamp,
    ) -> Result<Option<mayfly_state::Lease>> {
        self.inner.acquire_lease(name, holder, ttl, now)
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
        self.inner.release_lease(name, holder)
    }

    fn lease(&self, name: &str) -> Result<Option<mayfly_state::Lease>> {
        self.inner.lease(name)
    }
}

impl FencedWrites for StoreWithFailingAppends {
    fn commit_fenced(
        &self,
        fence: Option<&mayfly_state::Fence>,
        writes: Vec<mayfly_state::FencedWrite>,
    ) -> Result<Vec<mayfly_state::FencedOutcome>> {
        self.inner.commit_fenced(fence, writes)
    }
}

impl RetentionStore for StoreWithFailingAppends {
    fn expire_messages(&self, queue: &Name, sent_before: mayfly_core::Timestamp, limit: usize) -> Result<u64> {
        self.inner.expire_messages(queue, sent_before, limit)
    }

    fn prune_invocations(&self, started_before: mayfly_core::Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_invocations(started_before, limit)
    }

    fn prune_finished_runs(&self, finished_before: mayfly_core::Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_finished_runs(finished_before, limit)
    }

    fn prune_object_events(&self, before: mayfly_core::Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_object_events(before, limit)
    }

    fn prune_access_records(&self, before: mayfly_core::Timestamp, limit: usize) -> Result<u64> {
        self.inner.prune_access_records(before, limit)
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_appended_fails_the_put_and_a_retry_records_it() {
    let folder = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(START);
    let state = Arc::new(StoreWithFailingAppends {
        inner: SqliteStore::open(&folder.path().join("state.db"), Arc::new(clock.clone())).unwrap(),
        fail_appends: AtomicBool::new(false),
    });
    let buckets = Buckets::open(&folder.path().join("buckets"), state.clone(), Arc::new(clock)).unwrap();
    let inbox = name("inbox");
    buckets.create_bucket(&inbox, &[]).await.unwrap();

    state.fail_appends.store(true, Ordering::SeqCst);
    let error = buckets.put_bytes(&inbox, "k", Bytes::from_static(b"v1")).await.unwrap_err();
    assert!(matches!(error, BucketError::State(StateError::DiskFull)), "{error:?}");
    // Inside the window: the object is there, its event is not.
    assert_eq!(buckets.get_bytes(&inbox, "k").await.unwrap().1.as_ref(), b"v1");
    assert!(state.object_events_after(0, 10).unwrap().is_empty());

    // The caller retries what was not acknowledged.
    state.fail_appends.store(false, Ordering::SeqCst);
    let stored = buckets.put_bytes(&inbox, "k", Bytes::from_static(b"v1")).await.unwrap();
    let events = state.object_events_after(0, 10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].kind, events[0].size, &events[0].etag), (ObjectEventKind::Created, 2, &stored.etag));

    // A delete in the window: the object is gone, its event lost; the retry says so.
    state.fail_appends.store(true, Ordering::SeqCst);
    assert!(matches!(buckets.delete(&inbox, "k").await, Err(BucketError::State(_))));
    state.fail_appends.store(false, Ordering::SeqCst);
    assert!(matches!(buckets.delete(&inbox, "k").await, Err(BucketError::NoSuchKey { .. })));
    assert_eq!(state.object_events_after(0, 10).unwrap().len(), 1, "the deleted event is lost, as the crate doc says");
}
