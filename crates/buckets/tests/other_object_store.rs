//! The bucket logic speaks only the `ObjectStore` trait: the same operations
//! work on object_store's in-memory store, standing in for S3 until that
//! backend lands.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use mayfly_buckets::{BucketError, Buckets};
use mayfly_core::{ManualClock, ObjectEventKind};
use mayfly_state::prelude::*;
use mayfly_state_sqlite::SqliteStore;
use object_store::memory::InMemory;
use support::{GeneratedBody, HashingSink, START, name};

#[tokio::test]
async fn buckets_work_on_any_object_store() {
    let folder = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(START);
    let state = Arc::new(SqliteStore::open(&folder.path().join("state.db"), Arc::new(clock.clone())).unwrap());
    let buckets = Buckets::open_on_object_store(Arc::new(InMemory::new()), state.clone(), Arc::new(clock));
    let (inbox, archive) = (name("inbox"), name("archive"));
    buckets.create_bucket(&inbox, &[]).await.unwrap();
    buckets.create_bucket(&archive, &[]).await.unwrap();

    buckets.put_bytes(&inbox, "a/1", Bytes::from_static(b"one")).await.unwrap();
    let length = 17 * 1024 * 1024;
    buckets.put(&inbox, "a/big", GeneratedBody::new(length)).await.unwrap();
    let mut sink = HashingSink::default();
    buckets.get(&inbox, "a/big", &mut sink).await.unwrap();
    assert_eq!(sink.sha256_hex(), GeneratedBody::expected_sha256_hex(length));
    buckets.copy((&inbox, "a/1"), (&archive, "1")).await.unwrap();
    let keys: Vec<String> = buckets.list(&inbox, Some("a/")).await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["a/1", "a/big"]);
    buckets.delete(&inbox, "a/1").await.unwrap();
    assert!(matches!(buckets.delete(&inbox, "a/1").await, Err(BucketError::NoSuchKey { .. })));
    assert!(matches!(buckets.delete_bucket(&inbox, false).await, Err(BucketError::BucketNotEmpty { objects: 1, .. })));
    assert_eq!(buckets.delete_bucket(&inbox, true).await.unwrap(), 1);
    assert_eq!(buckets.list(&archive, None).await.unwrap().len(), 1, "other buckets untouched");

    let kinds: Vec<_> = state
        .object_events_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|event| (event.bucket.to_string(), event.key, event.kind))
        .collect();
    let created = ObjectEventKind::Created;
    let deleted = ObjectEventKind::Deleted;
    assert_eq!(
        kinds,
        [
            ("inbox", "a/1", created),
            ("inbox", "a/big", created),
            ("archive", "1", created),
            ("inbox", "a/1", deleted),
            ("inbox", "a/big", deleted),
        ]
        .map(|(bucket, key, kind)| (bucket.to_owned(), key.to_owned(), kind))
    );
}
