//! Conformance cases of [`crate::LeaseStore`].

#[allow(unused_imports)]
use super::*;

const LEASE: &str = "control-plane";
const TTL: Duration = Duration::from_secs(15);

pub fn a_live_lease_is_exclusive_to_its_holder<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let now = subject.clock.now();
    assert_eq!(store.lease(LEASE).unwrap(), None);
    let granted = store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("a free lease is granted");
    let expected = Lease { name: LEASE.into(), holder: "host-a".into(), term: 1, expires_at: now.saturating_add(TTL) };
    assert_eq!(granted, expected);
    assert_eq!(store.acquire_lease(LEASE, "host-b", TTL, now).unwrap(), None);
    let almost = now.saturating_add(TTL - Duration::from_millis(1));
    assert_eq!(store.acquire_lease(LEASE, "host-b", TTL, almost).unwrap(), None, "refused until it expires");
    assert_eq!(store.lease(LEASE).unwrap(), Some(expected), "a refusal changes nothing");
    let other = store.acquire_lease("another-lease", "host-b", TTL, now).unwrap().expect("leases are independent");
    assert_eq!((other.holder.as_str(), other.term), ("host-b", 1));
}

pub fn renewing_extends_the_lease_and_keeps_its_term<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let start = subject.clock.now();
    store.acquire_lease(LEASE, "host-a", TTL, start).unwrap().expect("granted");
    let later = start.saturating_add(Duration::from_secs(10));
    let renewed = store.acquire_lease(LEASE, "host-a", TTL, later).unwrap().expect("the holder renews");
    assert_eq!((renewed.term, renewed.expires_at), (1, later.saturating_add(TTL)));
    let past_the_first_expiry = start.saturating_add(TTL + Duration::from_secs(1));
    assert_eq!(store.acquire_lease(LEASE, "host-b", TTL, past_the_first_expiry).unwrap(), None, "the renewal counts");
    assert_eq!(store.lease(LEASE).unwrap(), Some(renewed));
}

pub fn another_holder_takes_over_only_after_expiry_with_the_next_term<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let start = subject.clock.now();
    store.acquire_lease(LEASE, "host-a", TTL, start).unwrap().expect("granted");
    let expiry = start.saturating_add(TTL);
    let taken = store.acquire_lease(LEASE, "host-b", TTL, expiry).unwrap().expect("taken over at expiry");
    assert_eq!((taken.holder.as_str(), taken.term, taken.expires_at), ("host-b", 2, expiry.saturating_add(TTL)));
    assert_eq!(store.acquire_lease(LEASE, "host-a", TTL, expiry).unwrap(), None, "the old holder is refused");
    let back = expiry.saturating_add(TTL);
    let retaken = store.acquire_lease(LEASE, "host-a", TTL, back).unwrap().expect("and takes it back once it lapses");
    assert_eq!((retaken.holder.as_str(), retaken.term), ("host-a", 3));
}

pub fn releasing_by_another_holder_changes_nothing<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let now = subject.clock.now();
    let granted = store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    assert!(!store.release_lease(LEASE, "host-b").unwrap());
    assert!(!store.release_lease("never-taken", "host-b").unwrap());
    assert_eq!(store.lease(LEASE).unwrap(), Some(granted));
    assert_eq!(store.lease("never-taken").unwrap(), None);
    assert_eq!(store.acquire_lease(LEASE, "host-b", TTL, now).unwrap(), None);
}

pub fn a_released_lease_is_taken_at_once_with_the_next_term<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let now = subject.clock.now();
    store.acquire_lease(LEASE, "host-a", TTL, now).unwrap().expect("granted");
    assert!(store.release_lease(LEASE, "host-a").unwrap());
    let released = store.lease(LEASE).unwrap().expect("a released lease is still recorded");
    assert!(released.is_expired_at(now), "released: lapsed at once ({released:?})");
    let taken = store.acquire_lease(LEASE, "host-b", TTL, now).unwrap().expect("taken at once");
    assert_eq!((taken.holder.as_str(), taken.term), ("host-b", 2));
}

pub fn of_concurrent_acquirers_exactly_one_wins<S: LeaseStore + ?Sized>(subject: Subject<S>) {
    const HOSTS: usize = 8;
    let store = &*subject.store;
    let now = subject.clock.now();
    let start = std::sync::Barrier::new(HOSTS);
    let granted: Vec<Lease> = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..HOSTS)
            .map(|host| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    store.acquire_lease(LEASE, &format!("host-{host}"), TTL, now).expect("acquire")
                })
            })
            .collect();
        attempts.into_iter().filter_map(|attempt| attempt.join().expect("an acquirer panicked")).collect()
    });
    assert_eq!(granted.len(), 1, "exactly one acquirer wins: {granted:?}");
    assert_eq!(store.lease(LEASE).unwrap().as_ref(), granted.first());
    assert_eq!(granted[0].term, 1);
}
