//! Conformance cases of [`crate::FencedWrites`]: writes made under a lease
//! commit only while the stored lease is still the writer's term, checked in
//! their own transaction, and a refused batch changes nothing.

#[allow(unused_imports)]
use super::*;
use crate::{Fence, FencedOutcome, FencedWrite, FencedWrites};

const LEASE: &str = "control-plane";
const TTL: Duration = Duration::from_secs(15);
const CURSOR: &str = "router";

fn fence(holder: &str, term: u64) -> Fence {
    Fence { lease: LEASE.to_owned(), holder: holder.to_owned(), term }
}

/// One write of each kind: two messages to `queue`, the cursor to `sequence`, run `run`.
fn one_of_each<S: ?Sized>(subject: &Subject<S>, queue: &Name, sequence: u64, run: &str) -> Vec<FencedWrite> {
    vec![
        FencedWrite::SendMessages {
            queue: queue.clone(),
            messages: vec![OutgoingMessage::new("first"), OutgoingMessage::new("second")],
        },
        FencedWrite::SetConsumerCursor { consumer: CURSOR.to_owned(), sequence },
        FencedWrite::CreateRun(new_run(run, "nightly", subject)),
    ]
}

/// Host `a` took the lease under term 1, then `b` took it over (term 2) once it lapsed.
fn taken_over<S: LeaseStore + ?Sized>(subject: &Subject<S>) {
    let now = subject.clock.now();
    subject.store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    let lapsed = now.saturating_add(TTL);
    let taken = subject.store.acquire_lease(LEASE, "host-b", TTL, lapsed).unwrap().expect("taken over");
    assert_eq!(taken.term, 2);
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(
    result: crate::Result<T>,
    term: u64,
    stored_holder: Option<&str>,
    stored_term: u64,
) {
    match result {
        Err(StateError::Fenced {
            lease,
            holder,
            term: found_term,
            stored_holder: found_holder,
            stored_term: found,
        }) => {
            assert_eq!((lease.as_str(), holder.as_str(), found_term), (LEASE, "host-a", term));
            assert_eq!((found_holder.as_deref(), found), (stored_holder, stored_term));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
}

pub fn writes_fenced_by_a_superseded_term_are_refused_and_change_nothing<
    S: LeaseStore + FencedWrites + QueueStore + EventLog + RunStore + ?Sized,
>(
    subject: Subject<S>,
) {
    let queue = create_queue(&subject, "q");
    taken_over(&subject);
    for write in one_of_each(&subject, &queue, 7, "run-1") {
        assert_fenced(subject.store.commit_fenced(Some(&fence("host-a", 1)), vec![write]), 1, Some("host-b"), 2);
    }
    let refused = subject.store.commit_fenced(Some(&fence("host-a", 1)), one_of_each(&subject, &queue, 7, "run-1"));
    assert_fenced(refused, 1, Some("host-b"), 2);
    let text = subject
        .store
        .commit_fenced(Some(&fence("host-a", 1)), vec![])
        .expect_err("even an empty batch is refused")
        .to_string();
    assert!(text.contains("lease `control-plane`") && text.contains("term 1") && text.contains("term 2"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");

    assert_eq!(stats(&subject, &queue).visible, 0, "no message was sent");
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 0, "the cursor did not move");
    assert_not_found(subject.store.run("run-1"), "run", "run-1");
    assert_eq!(subject.store.lease(LEASE).unwrap().map(|lease| (lease.holder, lease.term)), Some(("host-b".into(), 2)));
}

pub fn the_current_holders_fenced_writes_commit_together_in_order<
    S: LeaseStore + FencedWrites + QueueStore + EventLog + RunStore + ?Sized,
>(
    subject: Subject<S>,
) {
    let queue = create_queue(&subject, "q");
    taken_over(&subject);
    let outcomes =
        subject.store.commit_fenced(Some(&fence("host-b", 2)), one_of_each(&subject, &queue, 7, "run-1")).unwrap();
    let [FencedOutcome::Sent(ids), FencedOutcome::CursorSet, FencedOutcome::RunCreated(run)] = outcomes.as_slice()
    else {
        panic!("one outcome per write, in order: {outcomes:?}")
    };
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "{ids:?}");
    assert_eq!(**run, subject.store.run("run-1").unwrap());
    assert_eq!((run.status, run.trigger.as_str()), (RunStatus::Requested, "manual"));
    let received = receive(&subject, &queue, 10);
    assert_eq!(bodies_of(&received), ["first", "second"]);
    assert_eq!(received.iter().map(|message| message.message_id).collect::<Vec<_>>(), *ids);
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 7);
    // The same queue twice in one batch gets distinct ids, in order.
    let twice = vec![
        FencedWrite::SendMessages { queue: queue.clone(), messages: vec![OutgoingMessage::new("third")] },
        FencedWrite::SendMessages { queue: queue.clone(), messages: vec![OutgoingMessage::new("fourth")] },
    ];
    let outcomes = subject.store.commit_fenced(Some(&fence("host-b", 2)), twice).unwrap();
    let [FencedOutcome::Sent(third), FencedOutcome::Sent(fourth)] = outcomes.as_slice() else { panic!("{outcomes:?}") };
    assert!(ids[1] < third[0] && third[0] < fourth[0], "{ids:?} {third:?} {fourth:?}");
}

pub fn a_fence_holds_after_its_lease_lapsed_until_another_takes_it_over<
    S: LeaseStore + FencedWrites + EventLog + ?Sized,
>(
    subject: Subject<S>,
) {
    let now = subject.clock.now();
    subject.store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    subject.clock.advance(TTL * 2);
    let cursor = |sequence| vec![FencedWrite::SetConsumerCursor { consumer: CURSOR.to_owned(), sequence }];
    subject.store.commit_fenced(Some(&fence("host-a", 1)), cursor(1)).expect("lapsed, but nobody took it over");
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 1);
    assert_fenced(subject.store.commit_fenced(Some(&fence("host-a", 2)), cursor(2)), 2, Some("host-a"), 1);
    let other = Fence { holder: "host-b".into(), ..fence("host-a", 1) };
    assert!(
        matches!(subject.store.commit_fenced(Some(&other), cursor(2)), Err(StateError::Fenced { .. })),
        "the term is the holder's, not anyone's"
    );
    subject.store.acquire_lease(LEASE, "host-b", TTL, subject.clock.now()).unwrap().expect("taken over");
    assert_fenced(subject.store.commit_fenced(Some(&fence("host-a", 1)), cursor(2)), 1, Some("host-b"), 2);
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 1);
}

pub fn a_fence_of_a_lease_never_taken_is_refused<S: FencedWrites + EventLog + ?Sized>(subject: Subject<S>) {
    let write = vec![FencedWrite::SetConsumerCursor { consumer: CURSOR.to_owned(), sequence: 3 }];
    assert_fenced(subject.store.commit_fenced(Some(&fence("host-a", 1)), write), 1, None, 0);
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 0);
}

pub fn a_failing_write_in_a_batch_changes_nothing<
    S: LeaseStore + FencedWrites + QueueStore + EventLog + RunStore + ?Sized,
>(
    subject: Subject<S>,
) {
    let queue = create_queue(&subject, "q");
    let now = subject.clock.now();
    subject.store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    create_run(&subject, "run-1", "nightly");
    for fence in [Some(fence("host-a", 1)), None] {
        let duplicate_run = subject.store.commit_fenced(fence.as_ref(), one_of_each(&subject, &queue, 7, "run-1"));
        assert!(matches!(duplicate_run, Err(StateError::AlreadyExists { kind: "run", .. })), "{duplicate_run:?}");
        let mut unknown_queue = one_of_each(&subject, &queue, 7, "run-2");
        unknown_queue
            .push(FencedWrite::SendMessages { queue: name("missing"), messages: vec![OutgoingMessage::new("x")] });
        assert_not_found(subject.store.commit_fenced(fence.as_ref(), unknown_queue), "queue", "missing");
    }
    assert_eq!(stats(&subject, &queue).visible, 0, "no message was sent");
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 0, "the cursor did not move");
    assert_not_found(subject.store.run("run-2"), "run", "run-2");
}

pub fn unfenced_writes_commit_together_whoever_holds_the_lease<
    S: LeaseStore + FencedWrites + QueueStore + EventLog + RunStore + ?Sized,
>(
    subject: Subject<S>,
) {
    let queue = create_queue(&subject, "q");
    taken_over(&subject);
    let outcomes = subject.store.commit_fenced(None, one_of_each(&subject, &queue, 7, "run-1")).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(stats(&subject, &queue).visible, 2);
    assert_eq!(subject.store.consumer_cursor(CURSOR).unwrap(), 7);
    subject.store.run("run-1").expect("created");
}

/// The property fencing exists for: once a takeover has been granted, no
/// write of the previous term lands, however the two race.
pub fn no_write_of_the_previous_term_lands_after_a_takeover<S: LeaseStore + FencedWrites + EventLog + ?Sized>(
    subject: Subject<S>,
) {
    let store = &*subject.store;
    let now = subject.clock.now();
    store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    let started = std::sync::Barrier::new(2);
    let (cursor_at_takeover, last_written) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            started.wait();
            let mut last_written = 0;
            for sequence in 1..=10_000 {
                let write = vec![FencedWrite::SetConsumerCursor { consumer: CURSOR.to_owned(), sequence }];
                match store.commit_fenced(Some(&fence("host-a", 1)), write) {
                    Ok(_) => last_written = sequence,
                    Err(StateError::Fenced { stored_term: 2, .. }) => return last_written,
                    Err(error) => panic!("write {sequence}: {error}"),
                }
            }
            panic!("the takeover never fenced the writer out");
        });
        started.wait();
        // Let some writes through first.
        while store.consumer_cursor(CURSOR).unwrap() < 3 {
            std::thread::yield_now();
        }
        store.acquire_lease(LEASE, "host-b", TTL, now.saturating_add(TTL)).unwrap().expect("taken over");
        let cursor_at_takeover = store.consumer_cursor(CURSOR).unwrap();
        (cursor_at_takeover, writer.join().expect("the writer panicked"))
    });
    assert_eq!(cursor_at_takeover, last_written, "every write the old term made landed before the takeover");
    assert_eq!(store.consumer_cursor(CURSOR).unwrap(), last_written, "and none after it");
}
