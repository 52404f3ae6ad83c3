//! Conformance cases of [`crate::EventLog`] (some also use [`crate::DeploymentStore`]).

#[allow(unused_imports)]
use super::*;

/// Defect 3 of issue 10: the router must know which deployment governs each
/// event, so each deployment records the event log's head when it is recorded.
pub fn deployments_record_the_event_log_head_that_bounds_the_events_they_route<
    S: DeploymentStore + EventLog + ?Sized,
>(
    subject: Subject<S>,
) {
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

// --- the bucket event log ---------------------------------------------------------------

pub fn object_event_sequences_increase_in_commit_order<S: EventLog + ?Sized>(subject: Subject<S>) {
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

pub fn object_events_after_pages_through_the_log<S: EventLog + ?Sized>(subject: Subject<S>) {
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

pub fn consumer_cursors_start_at_zero_and_keep_what_was_set<S: EventLog + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    assert_eq!(store.consumer_cursor("router").unwrap(), 0);
    store.set_consumer_cursor("router", 5).unwrap();
    store.set_consumer_cursor("router", 9).unwrap();
    store.set_consumer_cursor("alarms", 2).unwrap();
    assert_eq!(store.consumer_cursor("router").unwrap(), 9);
    assert_eq!(store.consumer_cursor("alarms").unwrap(), 2);
}

/// A late write from a control plane that lost its lease while cut off
/// (its request delivered once it came back) must not move the cursor back.
pub fn a_consumer_cursor_never_moves_back<S: EventLog + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    store.set_consumer_cursor("router", 9).unwrap();
    store.set_consumer_cursor("router", 5).unwrap();
    assert_eq!(store.consumer_cursor("router").unwrap(), 9);
    store.set_consumer_cursor("router", 12).unwrap();
    assert_eq!(store.consumer_cursor("router").unwrap(), 12);
}
