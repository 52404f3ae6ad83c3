//! Bad input is refused with an error that names what and where, and changes
//! nothing: no object, no event. Unknown buckets are judged by the state
//! store's registry, not by the folder on disk.

mod support;

use bytes::Bytes;
use mayfly_buckets::{BucketError, InvalidKeyReason};
use support::{Project, name};

#[tokio::test]
async fn every_operation_on_an_unregistered_bucket_is_no_such_bucket() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"x")).await.unwrap();
    // A folder alone does not make a bucket.
    std::fs::create_dir_all(project.bucket_folder("ghost")).unwrap();
    let ghost = name("ghost");
    let events_before = project.events();

    let mut sink = Vec::new();
    let outcomes: Vec<(&str, BucketError)> = vec![
        ("put", project.buckets.put(&ghost, "k", b"x".as_slice()).await.unwrap_err()),
        ("put_bytes", project.buckets.put_bytes(&ghost, "k", Bytes::from_static(b"x")).await.unwrap_err()),
        ("get", project.buckets.get(&ghost, "k", &mut sink).await.unwrap_err()),
        ("get_bytes", project.buckets.get_bytes(&ghost, "k").await.unwrap_err()),
        ("head", project.buckets.head(&ghost, "k").await.unwrap_err()),
        ("list", project.buckets.list(&ghost, None).await.unwrap_err()),
        ("list_unordered", project.buckets.list_unordered(&ghost, None).await.err().unwrap()),
        ("delete", project.buckets.delete(&ghost, "k").await.unwrap_err()),
        ("copy from", project.buckets.copy((&ghost, "k"), (&inbox, "b")).await.unwrap_err()),
        ("copy to", project.buckets.copy((&inbox, "a"), (&ghost, "b")).await.unwrap_err()),
        ("is_empty", project.buckets.is_empty(&ghost).await.unwrap_err()),
        ("delete_bucket", project.buckets.delete_bucket(&ghost, true).await.unwrap_err()),
    ];
    for (operation, error) in outcomes {
        assert!(
            matches!(&error, BucketError::NoSuchBucket { bucket } if bucket.as_str() == "ghost"),
            "{operation}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            "bucket `ghost` does not exist; check the name, or create the bucket first",
            "{operation}"
        );
    }
    assert_eq!(project.events(), events_before, "no event appended");
    assert_eq!(project.files_on_disk("ghost"), Vec::<String>::new());
    assert_eq!(project.files_on_disk("inbox"), ["a"]);
    assert!(sink.is_empty());
}

#[tokio::test]
async fn bad_keys_are_refused_with_the_reason_and_change_nothing() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "good", Bytes::from_static(b"x")).await.unwrap();
    let events_before = project.events();

    let too_long = "k".repeat(1025);
    let long_segment = format!("a/{}", "s".repeat(241));
    let cases: Vec<(&str, InvalidKeyReason, &str)> = vec![
        ("", InvalidKeyReason::Empty, "the key is empty"),
        (&too_long, InvalidKeyReason::TooLong { length: 1025 }, "1025 bytes long; the limit is 1024 bytes"),
        ("/abs", InvalidKeyReason::LeadingSlash, "starts with `/`"),
        ("a//b", InvalidKeyReason::EmptySegment, "empty segment"),
        ("dir/", InvalidKeyReason::EmptySegment, "empty segment"),
        ("a/../b", InvalidKeyReason::DotSegment { segment: "..".into() }, "`..` segment"),
        ("..", InvalidKeyReason::DotSegment { segment: "..".into() }, "`..` segment"),
        ("./a", InvalidKeyReason::DotSegment { segment: ".".into() }, "`.` segment"),
        (
            "tab\there",
            InvalidKeyReason::ControlCharacter { character: '\t', position: 3 },
            "control character '\\t' at byte 3",
        ),
        ("nul\0", InvalidKeyReason::ControlCharacter { character: '\0', position: 3 }, "control character"),
        ("c1\u{85}", InvalidKeyReason::ControlCharacter { character: '\u{85}', position: 2 }, "control character"),
        (
            &long_segment,
            InvalidKeyReason::SegmentTooLong { segment: "s".repeat(241), length: 241 },
            "limit per `/`-separated segment is 240",
        ),
        ("file#12", InvalidKeyReason::ReservedUploadSuffix { segment: "file#12".into() }, "reserves for uploads"),
        ("dir#3/file", InvalidKeyReason::ReservedUploadSuffix { segment: "dir#3".into() }, "reserves for uploads"),
    ];
    for (key, expected_reason, message_part) in cases {
        let mut sink = Vec::new();
        let errors = vec![
            project.buckets.put(&inbox, key, b"x".as_slice()).await.unwrap_err(),
            project.buckets.put_bytes(&inbox, key, Bytes::from_static(b"x")).await.unwrap_err(),
            project.buckets.get(&inbox, key, &mut sink).await.unwrap_err(),
            project.buckets.get_bytes(&inbox, key).await.unwrap_err(),
            project.buckets.head(&inbox, key).await.unwrap_err(),
            project.buckets.delete(&inbox, key).await.unwrap_err(),
            project.buckets.copy((&inbox, "good"), (&inbox, key)).await.unwrap_err(),
            project.buckets.copy((&inbox, key), (&inbox, "elsewhere")).await.unwrap_err(),
        ];
        for error in errors {
            match &error {
                BucketError::InvalidKey { key: refused, reason } => {
                    assert_eq!((refused.as_str(), reason), (key, &expected_reason));
                }
                other => panic!("key {key:?}: expected InvalidKey, got {other:?}"),
            }
            let message = error.to_string();
            assert!(message.starts_with("invalid object key "), "{message}");
            assert!(message.contains(message_part), "key {key:?}: {message}");
        }
    }
    assert_eq!(project.events(), events_before, "no event appended");
    assert_eq!(project.files_on_disk("inbox"), ["good"]);
}

#[tokio::test]
async fn an_invalid_key_is_reported_before_an_unknown_bucket() {
    let project = Project::new();
    let error = project.buckets.put_bytes(&name("ghost"), "a//b", Bytes::new()).await.unwrap_err();
    assert!(matches!(error, BucketError::InvalidKey { .. }), "{error:?}");
}
