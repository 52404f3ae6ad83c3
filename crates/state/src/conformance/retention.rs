//! Conformance cases of [`crate::RetentionStore`] (some also use [`crate::EventLog`], [`crate::QueueStore`], [`crate::InvocationLedger`], [`crate::RunStore`], [`crate::AccessStore`]).

#[allow(unused_imports)]
use super::*;

// --- retention ------------------------------------------------------------------------

pub fn expired_messages_are_deleted_whatever_their_state_oldest_first_in_batches<
    S: QueueStore + RetentionStore + ?Sized,
>(
    subject: Subject<S>,
) {
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

pub fn invocations_started_before_the_cutoff_are_pruned_with_their_logs<
    S: InvocationLedger + RetentionStore + ?Sized,
>(
    subject: Subject<S>,
) {
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

pub fn finished_runs_are_pruned_with_their_items_and_workers_but_results_stay<S: RunStore + RetentionStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn old_events_are_pruned_only_once_every_consumer_has_read_them<S: EventLog + RetentionStore + ?Sized>(
    subject: Subject<S>,
) {
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

pub fn access_records_older_than_the_cutoff_are_pruned_oldest_first<S: AccessStore + RetentionStore + ?Sized>(
    subject: Subject<S>,
) {
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
