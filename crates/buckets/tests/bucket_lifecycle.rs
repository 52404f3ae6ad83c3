//! Creating and deleting buckets: the registry and the folder move together;
//! a bucket holding objects is deleted only when forced, and then each object
//! gets its `deleted` event.

mod support;

use bytes::Bytes;
use mayfly_buckets::BucketError;
use mayfly_core::ObjectEventKind;
use mayfly_state::prelude::*;
use support::{Project, name};

#[tokio::test]
async fn create_bucket_registers_it_with_tags_and_makes_its_folder() {
    let project = Project::new();
    let tags = vec![("owner".to_owned(), "clinical-data".to_owned())];
    project.buckets.create_bucket(&name("charts"), &tags).await.unwrap();
    let record = project.state.bucket(&name("charts")).unwrap();
    assert_eq!(record.tags, tags);
    assert!(project.bucket_folder("charts").is_dir());
    assert!(project.buckets.is_empty(&name("charts")).await.unwrap());
}

#[tokio::test]
async fn creating_a_registered_bucket_again_is_already_exists_and_keeps_its_objects() {
    let project = Project::with_buckets(&["charts"]).await;
    project.buckets.put_bytes(&name("charts"), "a", Bytes::from_static(b"x")).await.unwrap();
    let error = project.buckets.create_bucket(&name("charts"), &[]).await.unwrap_err();
    assert!(matches!(&error, BucketError::AlreadyExists { bucket } if bucket.as_str() == "charts"), "{error:?}");
    assert_eq!(error.to_string(), "bucket `charts` already exists; pick another name or use the existing bucket");
    assert_eq!(project.files_on_disk("charts"), ["a"]);
}

#[tokio::test]
async fn delete_bucket_removes_an_empty_bucket() {
    let project = Project::with_buckets(&["charts"]).await;
    assert_eq!(project.buckets.delete_bucket(&name("charts"), false).await.unwrap(), 0);
    assert!(project.state.buckets().unwrap().is_empty());
    assert!(!project.bucket_folder("charts").exists());
    // The name is free again.
    project.buckets.create_bucket(&name("charts"), &[]).await.unwrap();
    assert!(project.buckets.is_empty(&name("charts")).await.unwrap());
}

#[tokio::test]
async fn delete_bucket_refuses_a_bucket_with_objects_unless_forced() {
    let project = Project::with_buckets(&["charts", "other"]).await;
    let charts = name("charts");
    for key in ["a", "b/c", "b/d"] {
        project.buckets.put_bytes(&charts, key, Bytes::from_static(b"x")).await.unwrap();
    }
    project.buckets.put_bytes(&name("other"), "keep", Bytes::from_static(b"x")).await.unwrap();
    let events_before = project.events().len();

    let refused = project.buckets.delete_bucket(&charts, false).await.unwrap_err();
    assert!(
        matches!(&refused, BucketError::BucketNotEmpty { bucket, objects: 3 } if bucket.as_str() == "charts"),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "bucket `charts` still holds 3 object(s); delete them first, or force the deletion to delete them too"
    );
    assert!(!project.buckets.is_empty(&charts).await.unwrap());
    assert_eq!(project.events().len(), events_before, "a refusal appends nothing");
    assert_eq!(project.files_on_disk("charts"), ["a", "b/c", "b/d"]);

    assert_eq!(project.buckets.delete_bucket(&charts, true).await.unwrap(), 3);
    let deleted: Vec<_> = project.events()[events_before..]
        .iter()
        .map(|event| (event.bucket.as_str().to_owned(), event.key.clone(), event.kind))
        .collect();
    assert_eq!(deleted, ["a", "b/c", "b/d"].map(|key| ("charts".to_owned(), key.to_owned(), ObjectEventKind::Deleted)));
    assert!(!project.bucket_folder("charts").exists());
    assert!(matches!(project.buckets.is_empty(&charts).await, Err(BucketError::NoSuchBucket { .. })));
    assert_eq!(project.files_on_disk("other"), ["keep"], "other buckets untouched");
}

#[tokio::test]
async fn delete_bucket_also_removes_temp_files_of_abandoned_uploads() {
    let project = Project::with_buckets(&["charts"]).await;
    std::fs::write(project.bucket_folder("charts").join("killed-upload#1"), b"half").unwrap();
    assert!(project.buckets.is_empty(&name("charts")).await.unwrap());
    assert_eq!(project.buckets.delete_bucket(&name("charts"), false).await.unwrap(), 0);
    assert!(!project.bucket_folder("charts").exists());
}
