//! The bucket event log: every put and copy appends a `created` event and
//! every delete a `deleted` event, in commit order, with the object's size and
//! entity tag, by the time the call returns.

mod support;

use std::time::Duration;

use bytes::Bytes;
use mayfly_core::{ObjectEventKind, Timestamp};
use support::{GeneratedBody, Project, START, name};

#[tokio::test]
async fn puts_copies_and_deletes_append_events_in_commit_order() {
    let project = Project::with_buckets(&["inbox", "archive"]).await;
    let (inbox, archive) = (name("inbox"), name("archive"));

    let small = project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"12345")).await.unwrap();
    project.clock.advance(Duration::from_secs(1));
    let streamed = project.buckets.put(&inbox, "b/c", GeneratedBody::new(9 * 1024 * 1024)).await.unwrap();
    project.clock.advance(Duration::from_secs(1));
    let copied = project.buckets.copy((&inbox, "a"), (&archive, "a-copy")).await.unwrap();
    project.clock.advance(Duration::from_secs(1));
    project.buckets.delete(&inbox, "a").await.unwrap();
    let empty = project.buckets.put(&inbox, "empty", b"".as_slice()).await.unwrap();

    let events = project.events();
    let summary: Vec<_> = events
        .iter()
        .map(|event| (event.bucket.as_str(), event.key.as_str(), event.kind, event.size, event.etag.clone(), event.at))
        .collect();
    let second = |seconds: i64| Timestamp(START.0 + seconds * 1000);
    assert_eq!(
        summary,
        vec![
            ("inbox", "a", ObjectEventKind::Created, 5, small.etag.clone(), second(0)),
            ("inbox", "b/c", ObjectEventKind::Created, 9 * 1024 * 1024, streamed.etag.clone(), second(1)),
            ("archive", "a-copy", ObjectEventKind::Created, 5, copied.etag.clone(), second(2)),
            ("inbox", "a", ObjectEventKind::Deleted, 0, None, second(3)),
            ("inbox", "empty", ObjectEventKind::Created, 0, empty.etag.clone(), second(3)),
        ]
    );
    assert!(events.iter().all(|event| event.etag.is_some() || event.kind == ObjectEventKind::Deleted));
    assert!(events.windows(2).all(|pair| pair[0].sequence < pair[1].sequence));
}

#[tokio::test]
async fn every_overwrite_appends_its_own_event_with_the_new_etag() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let first = project.buckets.put_bytes(&inbox, "k", Bytes::from_static(b"one")).await.unwrap();
    let second = project.buckets.put_bytes(&inbox, "k", Bytes::from_static(b"three")).await.unwrap();
    assert_ne!(first.etag, second.etag);
    let etags: Vec<_> = project.events().into_iter().map(|event| (event.size, event.etag)).collect();
    assert_eq!(etags, vec![(3, first.etag), (5, second.etag)]);
}

#[tokio::test]
async fn concurrent_puts_of_one_key_log_the_version_that_won_last() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let mut tasks = Vec::new();
    for writer in 0..16u8 {
        let buckets = project.buckets.clone();
        let inbox = inbox.clone();
        tasks.push(tokio::spawn(async move {
            buckets.put_bytes(&inbox, "contended", Bytes::from(vec![writer; usize::from(writer) + 1])).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let events = project.events();
    assert_eq!(events.len(), 16);
    let head = project.buckets.head(&inbox, "contended").await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.size, &last.etag), (head.size, &head.etag), "the last event describes the object that is there");
}
