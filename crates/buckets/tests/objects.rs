//! Object operations through the public API: put/get round trips, head, list
//! with prefixes and ordering, delete, copy, and what the folder on disk
//! holds afterwards.

mod support;

use bytes::Bytes;
use mayfly_buckets::BucketError;
use support::{GeneratedBody, HashingSink, Project, name, sha256_hex};

#[tokio::test]
async fn put_and_get_round_trip_empty_and_small_objects() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    for (key, body) in [("empty", Vec::new()), ("small.txt", b"hello, mayfly\n".to_vec())] {
        let stored = project.buckets.put(&inbox, key, body.as_slice()).await.unwrap();
        assert_eq!((stored.bucket.as_str(), stored.key.as_str(), stored.size), ("inbox", key, body.len() as u64));
        assert!(stored.etag.is_some());

        let mut streamed = Vec::new();
        let got = project.buckets.get(&inbox, key, &mut streamed).await.unwrap();
        assert_eq!(streamed, body);
        assert_eq!(got, stored);

        let (got, bytes) = project.buckets.get_bytes(&inbox, key).await.unwrap();
        assert_eq!(bytes, body);
        assert_eq!(got, stored);
    }
}

#[tokio::test]
async fn put_bytes_and_head_report_the_same_object() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let stored = project.buckets.put_bytes(&inbox, "a/b.json", Bytes::from_static(b"{}")).await.unwrap();
    let head = project.buckets.head(&inbox, "a/b.json").await.unwrap();
    assert_eq!(head, stored);
    assert_eq!(head.size, 2);
}

#[tokio::test]
async fn a_streamed_body_longer_than_one_part_round_trips() {
    // 8 MiB parts: this is three parts, the last one short.
    let length = 20 * 1024 * 1024 + 7;
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let stored = project.buckets.put(&inbox, "big.bin", GeneratedBody::new(length)).await.unwrap();
    assert_eq!(stored.size, length);
    let mut sink = HashingSink::default();
    project.buckets.get(&inbox, "big.bin", &mut sink).await.unwrap();
    assert_eq!(sink.length, length);
    assert_eq!(sink.sha256_hex(), GeneratedBody::expected_sha256_hex(length));
    assert_eq!(project.files_on_disk("inbox"), ["big.bin"], "no temp file left");
}

#[tokio::test]
async fn a_body_of_exactly_one_part_round_trips() {
    let length = 8 * 1024 * 1024;
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put(&inbox, "one-part", GeneratedBody::new(length)).await.unwrap();
    let (info, bytes) = project.buckets.get_bytes(&inbox, "one-part").await.unwrap();
    assert_eq!(info.size, length);
    assert_eq!(sha256_hex(&bytes), GeneratedBody::expected_sha256_hex(length));
}

#[tokio::test]
async fn put_replaces_an_existing_object() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "k", Bytes::from_static(b"first")).await.unwrap();
    project.buckets.put_bytes(&inbox, "k", Bytes::from_static(b"second!")).await.unwrap();
    let (info, bytes) = project.buckets.get_bytes(&inbox, "k").await.unwrap();
    assert_eq!((info.size, bytes.as_ref()), (7, b"second!".as_ref()));
}

#[tokio::test]
async fn keys_with_unusual_characters_round_trip_and_list_as_given() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let keys = ["100%/a%2Fb", "spaces in/name .txt", "ünïcode/ключ", "x#y", "a#", "q?=&+:@", "back\\slash"];
    for key in keys {
        project.buckets.put_bytes(&inbox, key, Bytes::from(key.as_bytes().to_vec())).await.unwrap();
    }
    for key in keys {
        let (_, bytes) = project.buckets.get_bytes(&inbox, key).await.unwrap();
        assert_eq!(bytes, key.as_bytes(), "{key}");
    }
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort();
    let listed: Vec<String> = project.buckets.list(&inbox, None).await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, expected);
    // `%2F` stays three characters: it must not become a folder separator on disk.
    assert!(project.files_on_disk("inbox").contains(&"100%/a%2Fb".to_owned()));
}

#[tokio::test]
async fn list_filters_by_string_prefix_and_sorts_by_key() {
    let project = Project::with_buckets(&["inbox", "other"]).await;
    let inbox = name("inbox");
    for key in ["incoming/b", "incoming/a", "incoming/sub/c", "incomplete", "done/x", "in"] {
        project.buckets.put_bytes(&inbox, key, Bytes::from_static(b"x")).await.unwrap();
    }
    project.buckets.put_bytes(&name("other"), "incoming/z", Bytes::from_static(b"x")).await.unwrap();

    let cases: &[(Option<&str>, &[&str])] = &[
        (None, &["done/x", "in", "incoming/a", "incoming/b", "incoming/sub/c", "incomplete"]),
        (Some(""), &["done/x", "in", "incoming/a", "incoming/b", "incoming/sub/c", "incomplete"]),
        (Some("inc"), &["incoming/a", "incoming/b", "incoming/sub/c", "incomplete"]),
        (Some("incoming/"), &["incoming/a", "incoming/b", "incoming/sub/c"]),
        (Some("incoming"), &["incoming/a", "incoming/b", "incoming/sub/c"]),
        (Some("incoming/s"), &["incoming/sub/c"]),
        (Some("incoming/sub/c"), &["incoming/sub/c"]),
        (Some("in"), &["in", "incoming/a", "incoming/b", "incoming/sub/c", "incomplete"]),
        (Some("nothing/here/"), &[]),
        (Some("bad//prefix"), &[]),
        (Some("z"), &[]),
    ];
    for (prefix, expected) in cases {
        let listed: Vec<String> =
            project.buckets.list(&inbox, *prefix).await.unwrap().into_iter().map(|o| o.key).collect();
        assert_eq!(&listed, expected, "prefix {prefix:?}");
    }
}

#[tokio::test]
async fn list_reports_what_head_reports() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"12345")).await.unwrap();
    let listed = project.buckets.list(&inbox, None).await.unwrap();
    assert_eq!(listed, vec![project.buckets.head(&inbox, "a").await.unwrap()]);
}

#[tokio::test]
async fn list_never_shows_temp_files_or_foreign_files() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "real", Bytes::from_static(b"x")).await.unwrap();
    // What a killed upload leaves behind, and files dropped in by hand.
    let folder = project.bucket_folder("inbox");
    std::fs::write(folder.join("real#1"), b"half an upload").unwrap();
    std::fs::create_dir_all(folder.join("deep")).unwrap();
    std::fs::write(folder.join("deep/object#17"), b"half an upload").unwrap();
    std::fs::create_dir_all(folder.join("empty-folder")).unwrap();

    let listed: Vec<String> = project.buckets.list(&inbox, None).await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(listed, ["real"]);
    assert_eq!(project.buckets.list(&inbox, Some("deep")).await.unwrap(), vec![]);

    std::fs::remove_file(folder.join("real")).unwrap();
    assert!(project.buckets.is_empty(&inbox).await.unwrap(), "temp files and folders are not objects");
}

#[tokio::test]
async fn a_file_whose_name_cannot_be_a_key_makes_listing_fail_clearly() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "real", Bytes::from_static(b"x")).await.unwrap();
    std::fs::write(project.bucket_folder("inbox").join("bell\u{7}"), b"dropped in by hand").unwrap();
    // FIXME: skipping the file would be friendlier, but object_store's local
    // listing ends at the first name it cannot turn into a path.
    let error = project.buckets.list(&inbox, None).await.unwrap_err();
    assert!(matches!(&error, BucketError::ForeignFile { bucket, .. } if bucket.as_str() == "inbox"), "{error:?}");
    assert!(error.to_string().contains("move that file out of the bucket folder"), "{error}");
}

#[tokio::test]
async fn list_unordered_streams_the_same_objects() {
    use futures::TryStreamExt;
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    for key in ["b", "a/1", "a/2", "c"] {
        project.buckets.put_bytes(&inbox, key, Bytes::from_static(b"x")).await.unwrap();
    }
    let stream = project.buckets.list_unordered(&inbox, Some("a/")).await.unwrap();
    let mut keys: Vec<String> = stream.map_ok(|o| o.key).try_collect().await.unwrap();
    keys.sort();
    assert_eq!(keys, ["a/1", "a/2"]);
}

#[tokio::test]
async fn delete_removes_the_object_and_then_reports_no_such_key() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "deep/down/k", Bytes::from_static(b"x")).await.unwrap();
    project.buckets.put_bytes(&inbox, "deep/other", Bytes::from_static(b"x")).await.unwrap();
    project.buckets.delete(&inbox, "deep/down/k").await.unwrap();

    let mut sink = Vec::new();
    for error in [
        project.buckets.get(&inbox, "deep/down/k", &mut sink).await.unwrap_err(),
        project.buckets.get_bytes(&inbox, "deep/down/k").await.unwrap_err(),
        project.buckets.head(&inbox, "deep/down/k").await.unwrap_err(),
        project.buckets.delete(&inbox, "deep/down/k").await.unwrap_err(),
    ] {
        assert!(
            matches!(&error, BucketError::NoSuchKey { bucket, key } if bucket.as_str() == "inbox" && key == "deep/down/k"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "object `deep/down/k` does not exist in bucket `inbox`; list the bucket to see its keys"
        );
    }
    assert!(sink.is_empty());
    // The emptied folder went with the object; its sibling stayed.
    assert!(!project.bucket_folder("inbox").join("deep/down").exists());
    assert_eq!(project.files_on_disk("inbox"), ["deep/other"]);
}

#[tokio::test]
async fn a_folder_can_become_an_object_once_its_objects_are_deleted() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a/b/c", Bytes::from_static(b"x")).await.unwrap();
    project.buckets.delete(&inbox, "a/b/c").await.unwrap();
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"now a file")).await.unwrap();
    assert_eq!(project.buckets.get_bytes(&inbox, "a").await.unwrap().1.as_ref(), b"now a file");
    assert!(project.bucket_folder("inbox").exists(), "the bucket folder itself stays");
}

#[tokio::test]
async fn an_object_and_a_folder_of_the_same_name_conflict_clearly() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"x")).await.unwrap();
    project.buckets.put_bytes(&inbox, "d/e", Bytes::from_static(b"x")).await.unwrap();
    let events_before = project.events().len();

    // FIXME: S3 holds both `a` and `a/b`; the local filesystem cannot.
    let under_object = project.buckets.put_bytes(&inbox, "a/b", Bytes::from_static(b"y")).await.unwrap_err();
    assert!(matches!(&under_object, BucketError::KeyConflict { key, .. } if key == "a/b"), "{under_object:?}");
    let over_folder = project.buckets.put(&inbox, "d", b"y".as_slice()).await.unwrap_err();
    assert!(matches!(&over_folder, BucketError::KeyConflict { key, .. } if key == "d"), "{over_folder:?}");
    let copy_under_object = project.buckets.copy((&inbox, "d/e"), (&inbox, "a/c")).await.unwrap_err();
    assert!(matches!(&copy_under_object, BucketError::KeyConflict { .. }), "{copy_under_object:?}");
    assert!(under_object.to_string().contains("rename one of them"));

    assert_eq!(project.events().len(), events_before, "no event for a refused put");
    assert_eq!(project.files_on_disk("inbox"), ["a", "d/e"]);
    // Reading through an object as if it were a folder finds nothing.
    assert!(matches!(project.buckets.head(&inbox, "a/b").await, Err(BucketError::NoSuchKey { .. })));
}

#[tokio::test]
async fn copy_within_and_across_buckets() {
    let project = Project::with_buckets(&["inbox", "archive"]).await;
    let (inbox, archive) = (name("inbox"), name("archive"));
    project.buckets.put_bytes(&inbox, "src/a", Bytes::from_static(b"payload")).await.unwrap();

    let within = project.buckets.copy((&inbox, "src/a"), (&inbox, "dst/a")).await.unwrap();
    let across = project.buckets.copy((&inbox, "src/a"), (&archive, "2026/a")).await.unwrap();
    assert_eq!((within.bucket.as_str(), within.key.as_str(), within.size), ("inbox", "dst/a", 7));
    assert_eq!((across.bucket.as_str(), across.key.as_str(), across.size), ("archive", "2026/a", 7));
    assert_eq!(project.buckets.get_bytes(&archive, "2026/a").await.unwrap().1.as_ref(), b"payload");
    assert_eq!(project.buckets.get_bytes(&inbox, "dst/a").await.unwrap().1.as_ref(), b"payload");

    // The copy is independent of its source.
    project.buckets.put_bytes(&inbox, "src/a", Bytes::from_static(b"changed")).await.unwrap();
    project.buckets.delete(&inbox, "dst/a").await.unwrap();
    assert_eq!(project.buckets.get_bytes(&archive, "2026/a").await.unwrap().1.as_ref(), b"payload");

    // Onto an existing object: replaced.
    project.buckets.copy((&inbox, "src/a"), (&archive, "2026/a")).await.unwrap();
    assert_eq!(project.buckets.get_bytes(&archive, "2026/a").await.unwrap().1.as_ref(), b"changed");
}

#[tokio::test]
async fn copy_of_a_missing_object_or_onto_itself_is_refused() {
    let project = Project::with_buckets(&["inbox", "archive"]).await;
    let (inbox, archive) = (name("inbox"), name("archive"));
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"x")).await.unwrap();
    let events_before = project.events().len();

    let missing = project.buckets.copy((&inbox, "nope"), (&archive, "a")).await.unwrap_err();
    assert!(
        matches!(&missing, BucketError::NoSuchKey { bucket, key } if bucket.as_str() == "inbox" && key == "nope"),
        "{missing:?}"
    );
    let onto_itself = project.buckets.copy((&inbox, "a"), (&inbox, "a")).await.unwrap_err();
    assert!(matches!(onto_itself, BucketError::CopyOntoItself { .. }), "{onto_itself:?}");

    assert_eq!(project.events().len(), events_before);
    assert!(project.buckets.is_empty(&archive).await.unwrap());
    assert_eq!(project.files_on_disk("inbox"), ["a"]);
}

#[tokio::test]
async fn a_body_that_fails_mid_stream_stores_nothing() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    for good_bytes in [10, 9 * 1024 * 1024] {
        let error =
            project.buckets.put(&inbox, "partial", support::FailingBody::failing_after(good_bytes)).await.unwrap_err();
        assert!(matches!(&error, BucketError::ReadBody { key, .. } if key == "partial"), "{error:?}");
        assert!(error.to_string().contains("client went away"), "{error}");
    }
    assert_eq!(project.files_on_disk("inbox"), Vec::<String>::new(), "no partial object, no temp file");
    assert!(project.events().is_empty());
}

#[tokio::test]
async fn get_stream_of_an_unencrypted_bucket_yields_the_file_in_pieces() {
    use futures::TryStreamExt;
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    for length in [0, 1, 1024 * 1024, 2 * 1024 * 1024 + 3] {
        let key = format!("object-{length}");
        project.buckets.put(&inbox, &key, GeneratedBody::new(length)).await.unwrap();
        let (info, pieces) = project.buckets.get_stream(&inbox, &key).await.unwrap();
        assert_eq!(info.size, length);
        let pieces: Vec<Bytes> = pieces.try_collect().await.unwrap();
        assert!(pieces.iter().all(|piece| piece.len() <= 1024 * 1024), "pieces of at most 1 MiB");
        let streamed = pieces.concat();
        assert_eq!(sha256_hex(&streamed), GeneratedBody::expected_sha256_hex(length), "{length} bytes");
    }
}
