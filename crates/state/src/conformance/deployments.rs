//! Conformance cases of [`crate::DeploymentStore`].

#[allow(unused_imports)]
use super::*;

// --- deployments ----------------------------------------------------------------------

pub fn deployments_are_numbered_in_order_with_source_and_hash<S: DeploymentStore + ?Sized>(subject: Subject<S>) {
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

pub fn latest_deployment_is_none_then_the_newest<S: DeploymentStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    assert_eq!(store.latest_deployment().unwrap(), None);
    store.record_deployment(deployment("one")).unwrap();
    let second = store.record_deployment(deployment("two")).unwrap();
    assert_eq!(store.latest_deployment().unwrap(), Some(second));
}
