//! Conformance cases of [`crate::BucketRegistry`].

#[allow(unused_imports)]
use super::*;

// --- buckets --------------------------------------------------------------------------

pub fn buckets_are_created_read_listed_by_name_and_deleted<S: BucketRegistry + ?Sized>(subject: Subject<S>) {
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

pub fn creating_an_existing_bucket_is_already_exists<S: BucketRegistry + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let original = store.create_bucket(&name("charts"), &tags(&[("owner", "a")])).unwrap();
    let again = store.create_bucket(&name("charts"), &tags(&[("owner", "b")]));
    assert!(matches!(&again, Err(StateError::AlreadyExists { kind: "bucket", name }) if name == "charts"), "{again:?}");
    assert_eq!(store.bucket(&name("charts")).unwrap(), original, "the existing bucket is unchanged");
}

pub fn unknown_bucket_is_not_found<S: BucketRegistry + ?Sized>(subject: Subject<S>) {
    assert_not_found(subject.store.bucket(&name("nope")), "bucket", "nope");
    assert_not_found(subject.store.delete_bucket(&name("nope")), "bucket", "nope");
}
