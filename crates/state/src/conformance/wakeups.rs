//! Conformance cases of [`crate::QueueStore::watch_messages`]: every write
//! that makes messages visible at once wakes the queue's watchers — a send,
//! a lease released with visibility 0, a message moved to its dead-letter
//! queue, a redrive, a run returning its unfinished items. A backend whose
//! `watch_messages` answers `None` (it cannot tell; receivers poll) passes
//! every case.

use std::sync::{Arc, mpsc};
use std::time::Instant;

#[allow(unused_imports)]
use super::*;
use crate::MessageWatch;

/// How long a case waits for a wake-up before it fails.
const WAKE_WITHIN: Duration = Duration::from_secs(10);

/// A watch whose calls arrive on a channel.
struct Wakes {
    heard: mpsc::Receiver<String>,
    _watch: MessageWatch,
}

impl Wakes {
    /// Watch `subject`'s store, or `None` if it cannot tell. A backend may
    /// start listening in the background: this sends to a queue of its own
    /// until a send is heard, so that the case's wake-ups are not missed.
    fn start<S: QueueStore + ?Sized>(subject: &Subject<S>) -> Option<Wakes> {
        let (told, heard) = mpsc::channel::<String>();
        let watch = subject
            .store
            .watch_messages(Arc::new(move |queue: &str| {
                let _ = told.send(queue.to_owned());
            }))
            .expect("watch messages")?;
        let wakes = Wakes { heard, _watch: watch };
        let ready = create_queue(subject, "listening");
        let started = Instant::now();
        'sending: loop {
            send_bodies(subject, &ready, &["are you listening"]);
            while let Ok(queue) = wakes.heard.recv_timeout(Duration::from_millis(200)) {
                if queue == ready.as_str() {
                    break 'sending;
                }
            }
            assert!(started.elapsed() < WAKE_WITHIN, "no send woke the watch within {WAKE_WITHIN:?}");
        }
        // Sends of the warm-up heard late.
        while wakes.heard.recv_timeout(Duration::from_millis(100)).is_ok() {}
        Some(wakes)
    }

    /// Wait until the watch is told of `queue`; other queues are passed over.
    #[track_caller]
    fn expect(&self, queue: &Name, after: &str) {
        let started = Instant::now();
        while let Some(left) = WAKE_WITHIN.checked_sub(started.elapsed()) {
            match self.heard.recv_timeout(left) {
                Ok(told) if told == queue.as_str() => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the watchers of queue `{queue}` were not woken within {WAKE_WITHIN:?} after {after}");
    }
}

pub fn a_send_wakes_the_watchers_with_the_queues_name<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let Some(wakes) = Wakes::start(&subject) else { return };
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["hello"]);
    wakes.expect(&queue, "a send");
}

pub fn releasing_a_lease_with_visibility_zero_wakes_the_watchers<S: QueueStore + ?Sized>(subject: Subject<S>) {
    let Some(wakes) = Wakes::start(&subject) else { return };
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["retry me"]);
    wakes.expect(&queue, "a send");
    let received = receive(&subject, &queue, 1);
    subject.store.change_visibility(&queue, received[0].receipt, Duration::ZERO).unwrap();
    wakes.expect(&queue, "ChangeMessageVisibility to 0");
    assert_eq!(stats(&subject, &queue).visible, 1);
}

pub fn a_message_moved_to_its_dead_letter_queue_wakes_that_queues_watchers<S: QueueStore + ?Sized>(
    subject: Subject<S>,
) {
    let Some(wakes) = Wakes::start(&subject) else { return };
    let dead_letter = create_queue(&subject, "work-dlq");
    let queue = name("work");
    let config =
        QueueConfig { max_receives: Some(1), dead_letter: Some(dead_letter.clone()), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    send_bodies(&subject, &queue, &["poison"]);
    wakes.expect(&queue, "a send");
    assert_eq!(receive(&subject, &queue, 1).len(), 1);
    subject.clock.advance(Duration::from_secs(60));
    // The second receive moves it, past max_receives, and returns nothing.
    assert!(receive(&subject, &queue, 1).is_empty());
    wakes.expect(&dead_letter, "a message moved to the dead-letter queue");
    assert_eq!(stats(&subject, &dead_letter).visible, 1);
}

pub fn redriven_dead_letters_wake_the_watchers_of_the_queue_they_return_to<S: QueueStore + ?Sized>(
    subject: Subject<S>,
) {
    let Some(wakes) = Wakes::start(&subject) else { return };
    let dead_letter = create_queue(&subject, "work-dlq");
    let queue = name("work");
    let config =
        QueueConfig { max_receives: Some(1), dead_letter: Some(dead_letter.clone()), ..QueueConfig::default() };
    subject.store.create_queue(&queue, &config, &[]).unwrap();
    let other = create_queue(&subject, "other");
    send_bodies(&subject, &queue, &["poison"]);
    assert_eq!(receive(&subject, &queue, 1).len(), 1);
    subject.clock.advance(Duration::from_secs(60));
    assert!(receive(&subject, &queue, 1).is_empty());
    wakes.expect(&dead_letter, "a message moved to the dead-letter queue");

    // Back to the queue it came from.
    assert_eq!(subject.store.redrive_dead_letters(&dead_letter, None).unwrap(), 1);
    wakes.expect(&queue, "a redrive to the source queue");
    // And, dead-lettered again, to a queue named.
    assert_eq!(receive(&subject, &queue, 1).len(), 1);
    subject.clock.advance(Duration::from_secs(60));
    assert!(receive(&subject, &queue, 1).is_empty());
    wakes.expect(&dead_letter, "a message moved to the dead-letter queue again");
    assert_eq!(subject.store.redrive_dead_letters(&dead_letter, Some(&other)).unwrap(), 1);
    wakes.expect(&other, "a redrive to a named queue");
    assert_eq!(stats(&subject, &other).visible, 1);
}

pub fn unfinished_run_items_returned_to_their_queue_wake_its_watchers<S: QueueStore + RunStore + ?Sized>(
    subject: Subject<S>,
) {
    let Some(wakes) = Wakes::start(&subject) else { return };
    subject.store.create_run(new_run("run-1", "drain", &subject)).unwrap();
    assert!(subject.store.claim_run("run-1", "coordinator-1", Duration::from_secs(30)).unwrap());
    let queue = create_queue(&subject, "work");
    send_bodies(&subject, &queue, &["one", "two"]);
    wakes.expect(&queue, "a send");
    assert_eq!(subject.store.move_queue_messages_into_run("run-1", &queue, 10).unwrap(), 2);
    assert_eq!(stats(&subject, &queue).visible, 0);
    assert_eq!(subject.store.return_unfinished_items_to_queues("run-1").unwrap(), 2);
    wakes.expect(&queue, "a run returned its unfinished items");
    assert_eq!(stats(&subject, &queue).visible, 2);
}
