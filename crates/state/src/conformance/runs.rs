//! Conformance cases of [`crate::RunStore`] (some also use [`crate::QueueStore`]).

#[allow(unused_imports)]
use super::*;

fn item_ids(items: &[RunItem]) -> Vec<&str> {
    items.iter().map(|item| item.item.as_str()).collect()
}

fn done(result: &str) -> ItemCompletion {
    ItemCompletion::Done { result: result.as_bytes().to_vec() }
}

fn every_item<S: RunStore + ?Sized>(subject: &Subject<S>, run: &str, status: Option<ItemStatus>) -> Vec<RunItem> {
    subject.store.run_items(run, status, None, 1_000).expect("list items")
}

fn one_item<S: RunStore + ?Sized>(subject: &Subject<S>, run: &str, item: &str) -> RunItem {
    let items = every_item(subject, run, None);
    items.into_iter().find(|found| found.item == item).unwrap_or_else(|| panic!("run `{run}` has no item `{item}`"))
}

fn counts<S: RunStore + ?Sized>(subject: &Subject<S>, run: &str) -> RunItemCounts {
    subject.store.run_item_counts(run).expect("count items")
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: crate::Result<T>) {
    assert!(matches!(result, Err(StateError::Conflict(_))), "expected Conflict, got {result:?}");
}

pub fn runs_are_created_read_and_listed_newest_first<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn creating_an_existing_run_is_already_exists<S: RunStore + ?Sized>(subject: Subject<S>) {
    let original = create_run(&subject, "run-1", "thumbnails");
    let again = subject.store.create_run(new_run("run-1", "reports", &subject));
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "run", name }) if name == "run-1"), "{again:?}");
    assert_eq!(subject.store.run("run-1").unwrap(), original, "the existing run is unchanged");
}

pub fn every_run_method_on_an_unknown_run_is_not_found<S: QueueStore + RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn claiming_a_run_starts_it_and_leases_it_to_one_coordinator<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_lapsed_run_lease_passes_to_another_coordinator<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn renewing_a_run_lease_extends_it_only_for_its_holder<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn runs_needing_a_coordinator_are_lapsed_or_unclaimed_past_the_grace<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn finishing_a_run_clears_its_lease_and_only_its_holder_may<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn adding_items_is_idempotent_and_refused_once_the_run_finished<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn leasing_gives_the_oldest_available_items_up_to_the_maximum<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_done_item_stores_its_result<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn re_executing_an_item_of_a_job_replaces_its_result<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_stale_completion_is_ignored<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn completing_and_leasing_together_records_the_result_and_leases_the_next_items<S: RunStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn completions_grouped_in_one_commit_keep_the_per_item_rules<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_failed_attempt_is_pending_again_at_retry_at_or_dead_lettered<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn releasing_a_workers_items_returns_only_them_to_pending<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn releasing_all_leased_items_returns_them_to_pending<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn run_item_counts_are_exact<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn completed_items_are_counted_by_job_over_every_run_finished_or_not<S: RunStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    assert_eq!(store.completed_item_counts_by_job().unwrap(), BTreeMap::new());
    claimed_run(&subject, "run-1", "thumbnails");
    claimed_run(&subject, "run-2", "thumbnails");
    claimed_run(&subject, "run-3", "resize");
    add_items(&subject, "run-1", &["a", "b", "c", "d"]);
    add_items(&subject, "run-2", &["a", "b"]);
    add_items(&subject, "run-3", &["x"]);
    lease(&subject, "run-1", "worker-1", 4);
    lease(&subject, "run-2", "worker-2", 2);
    lease(&subject, "run-3", "worker-3", 1);
    assert!(store.complete_run_item("run-1", "a", "worker-1", 1, done("x")).unwrap());
    let dead = ItemCompletion::Failed { error: "no".to_owned(), retry_at: None };
    assert!(store.complete_run_item("run-1", "b", "worker-1", 1, dead).unwrap());
    let later = subject.clock.now().saturating_add(Duration::from_secs(60));
    let retry = ItemCompletion::Failed { error: "again".to_owned(), retry_at: Some(later) };
    assert!(store.complete_run_item("run-1", "c", "worker-1", 1, retry).unwrap());
    assert!(store.complete_run_item("run-2", "a", "worker-2", 1, done("y")).unwrap());
    let thumbnails = crate::CompletedItemCounts { done: 2, dead_lettered: 1 };
    let expected = BTreeMap::from([(name("thumbnails"), thumbnails)]);
    assert_eq!(
        store.completed_item_counts_by_job().unwrap(),
        expected,
        "pending, leased and retried items have not ended"
    );

    // A run that ends keeps its items counted; so does a cancelled one.
    assert!(store.complete_run_item("run-2", "b", "worker-2", 1, done("z")).unwrap());
    store.finish_run("run-2", "coordinator-1", RunStatus::Succeeded, None, None).unwrap();
    store.cancel_run("run-1", "stopped").unwrap();
    assert!(store.complete_run_item("run-3", "x", "worker-3", 1, done("w")).unwrap());
    let expected = BTreeMap::from([
        (name("resize"), crate::CompletedItemCounts { done: 1, dead_lettered: 0 }),
        (name("thumbnails"), crate::CompletedItemCounts { done: 3, dead_lettered: 1 }),
    ]);
    assert_eq!(store.completed_item_counts_by_job().unwrap(), expected);
    assert_eq!(crate::completed_item_counts_run_by_run(store.as_ref()).unwrap(), expected, "the same, run by run");
}

pub fn moving_queue_messages_into_a_run_moves_only_visible_ones_in_one_commit<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
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
fn run_holding_queue_messages<S: QueueStore + RunStore + ?Sized>(subject: &Subject<S>) -> (Name, Vec<u64>) {
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

pub fn an_items_message_attributes_are_read_back_while_it_is_in_the_run<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
    let store = &subject.store;
    let (_, ids) = run_holding_queue_messages(&subject);
    store.add_run_items("run-1", &[NewRunItem { item: "manifest-line".to_owned(), payload: b"x".to_vec() }]).unwrap();
    let asked: Vec<String> =
        vec![ids[0].to_string(), ids[1].to_string(), "manifest-line".to_owned(), "unknown".to_owned()];
    let found = store.run_item_message_attributes("run-1", &asked).unwrap();
    assert_eq!(
        found,
        BTreeMap::from([(ids[0].to_string(), tags(&[("trace-id", "abc"), ("kind", "scan")]))]),
        "only the item whose message had attributes, as sent"
    );
    assert_not_found(store.run_item_message_attributes("nope", &asked), "run", "nope");
    store.return_unfinished_items_to_queues("run-1").unwrap();
    assert!(
        store.run_item_message_attributes("run-1", &asked).unwrap().is_empty(),
        "returned items are not in the run"
    );
}

pub fn unfinished_items_go_back_to_their_queue_as_the_same_messages<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn returning_unfinished_items_again_returns_nothing_and_changes_nothing<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn done_dead_lettered_and_non_queue_items_are_not_returned<S: QueueStore + RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_returned_message_moved_into_the_same_run_again_is_pending_again<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn run_items_and_results_page_by_item<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn workers_are_upserted_and_listed_by_start<S: RunStore + ?Sized>(subject: Subject<S>) {
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

// --- cancelling runs ---------------------------------------------------------------

pub fn cancelling_a_run_ends_it_whoever_holds_its_lease<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn every_lease_of_an_item_is_an_attempt_ended_by_its_completion_or_release<S: RunStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn attempts_are_counted_by_the_worker_that_ended_them<S: RunStore + ?Sized>(subject: Subject<S>) {
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

pub fn a_run_ends_in_any_finished_status<S: RunStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    for status in RunStatus::ALL.into_iter().filter(|status| status.is_finished()) {
        let id = format!("run-{}", status.as_str().replace('_', "-"));
        claimed_run(&subject, &id, "thumbnails");
        store.finish_run(&id, "coordinator-1", status, Some("why"), None).unwrap();
        assert_eq!(store.run(&id).unwrap().status, status);
    }
}
