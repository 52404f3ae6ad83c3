//! Multipart uploads through the public API, on encrypted buckets: parts
//! are sealed while staged, completion streams them into one object with
//! its metadata and one `created` event, S3's rules refuse bad completions,
//! and abandoned uploads are swept.

mod support;

use std::time::Duration;

use mayfly_buckets::{BucketError, MIN_PART_SIZE, ObjectMetadata};
use mayfly_core::{ObjectEventKind, Timestamp};
use support::{Project, START, name};

const MARKER: &[u8] = b"MULTIPART-MARKER-51c2-do-not-leak ";

fn marked(length: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(length).collect()
}

fn files_under(folder: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else { return found };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    found
}

fn marker_in(project: &Project) -> Vec<std::path::PathBuf> {
    files_under(project.folder.path())
        .into_iter()
        .filter(|(_, bytes)| bytes.windows(MARKER.len()).any(|window| window == MARKER))
        .map(|(path, _)| path)
        .collect()
}

#[tokio::test]
async fn parts_are_sealed_and_completion_streams_them_into_one_object_with_one_event() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let metadata = ObjectMetadata {
        content_type: Some("application/x-chart".to_owned()),
        user: [("patient".to_owned(), String::from_utf8(MARKER.to_vec()).unwrap())].into(),
    };
    let upload = project.buckets.begin_upload(&inbox, "scans/a.bin", metadata.clone()).await.unwrap();
    let first = marked(MIN_PART_SIZE as usize + 3);
    let second = marked(1000);
    let part1 = project.buckets.put_part(&inbox, "scans/a.bin", &upload.upload_id, 1, first.as_slice()).await.unwrap();
    let replaced =
        project.buckets.put_part(&inbox, "scans/a.bin", &upload.upload_id, 2, &b"replaced"[..]).await.unwrap();
    let part2 = project.buckets.put_part(&inbox, "scans/a.bin", &upload.upload_id, 2, second.as_slice()).await.unwrap();
    let parts = project.buckets.list_parts(&inbox, "scans/a.bin", &upload.upload_id).await.unwrap();
    let listed: Vec<_> = parts.iter().map(|part| (part.number, part.size, part.etag.clone())).collect();
    assert_eq!(listed, vec![(1, first.len() as u64, part1.etag.clone()), (2, 1000, part2.etag.clone())]);
    assert_eq!(marker_in(&project), Vec::<std::path::PathBuf>::new(), "staged parts and the record are sealed");
    assert!(project.events().is_empty(), "nothing is written before the completion");

    let complete = |parts: Vec<(u32, String)>| {
        let buckets = project.buckets.clone();
        let (inbox, id) = (inbox.clone(), upload.upload_id.clone());
        async move { buckets.complete_upload(&inbox, "scans/a.bin", &id, &parts).await }
    };
    let error = complete(vec![(2, part2.etag.clone()), (1, part1.etag.clone())]).await.unwrap_err();
    assert!(matches!(error, BucketError::InvalidPartOrder { number: 1, previous: 2, .. }), "{error:?}");
    let error = complete(vec![(1, part1.etag.clone()), (2, replaced.etag.clone())]).await.unwrap_err();
    assert!(matches!(error, BucketError::InvalidPart { number: 2, .. }), "a replaced part is gone: {error:?}");
    assert!(error.to_string().contains("ListParts"), "{error}");

    let info = complete(vec![(1, format!("\"{}\"", part1.etag)), (2, part2.etag.clone())]).await.unwrap();
    let (_, content) = project.buckets.get_bytes(&inbox, "scans/a.bin").await.unwrap();
    assert!(content == [first.as_slice(), second.as_slice()].concat(), "the parts, in order");
    assert_eq!(project.buckets.metadata(&info).await.unwrap(), metadata);
    let events = project.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].kind, events[0].size), (ObjectEventKind::Created, info.size));
    assert_eq!(marker_in(&project), Vec::<std::path::PathBuf>::new(), "the object and its metadata are sealed");
    let staged = files_under(&project.buckets_root.join(".uploads"));
    assert!(staged.is_empty(), "the staging is removed: {:?}", staged.iter().map(|(p, _)| p).collect::<Vec<_>>());
    let error = complete(vec![(1, part1.etag.clone())]).await.unwrap_err();
    assert!(matches!(error, BucketError::NoSuchUpload { .. }), "{error:?}");
}

#[tokio::test]
async fn small_parts_are_refused_aborts_remove_everything_and_abandoned_uploads_are_swept() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let upload = project.buckets.begin_upload(&inbox, "a", ObjectMetadata::default()).await.unwrap();
    let small = project.buckets.put_part(&inbox, "a", &upload.upload_id, 1, &b"tiny"[..]).await.unwrap();
    let last = project.buckets.put_part(&inbox, "a", &upload.upload_id, 2, &b"end"[..]).await.unwrap();
    let error = project
        .buckets
        .complete_upload(&inbox, "a", &upload.upload_id, &[(1, small.etag), (2, last.etag)])
        .await
        .unwrap_err();
    assert!(matches!(error, BucketError::EntityTooSmall { number: 1, size: 4, .. }), "{error:?}");
    for number in [0, 10_001] {
        let error = project.buckets.put_part(&inbox, "a", &upload.upload_id, number, &b"x"[..]).await.unwrap_err();
        assert!(matches!(error, BucketError::InvalidPartNumber { .. }), "{error:?}");
    }
    let error = project.buckets.list_parts(&inbox, "other", &upload.upload_id).await.unwrap_err();
    assert!(matches!(error, BucketError::NoSuchUpload { .. }), "an upload answers only for its key: {error:?}");
    project.buckets.abort_upload(&inbox, "a", &upload.upload_id).await.unwrap();
    assert!(files_under(&project.buckets_root.join(".uploads")).is_empty());
    assert!(matches!(project.buckets.head(&inbox, "a").await, Err(BucketError::NoSuchKey { .. })));

    // Begun at START: kept by a sweep of what began before START, removed a week later.
    let abandoned = project.buckets.begin_upload(&inbox, "b", ObjectMetadata::default()).await.unwrap();
    project.buckets.put_part(&inbox, "b", &abandoned.upload_id, 1, &b"part"[..]).await.unwrap();
    assert_eq!(project.buckets.abort_abandoned_uploads(START).await.unwrap(), 0);
    assert_eq!(project.buckets.list_uploads(&inbox, None).await.unwrap().len(), 1);
    let week = Duration::from_secs(7 * 24 * 3600).as_millis() as i64;
    assert_eq!(project.buckets.abort_abandoned_uploads(Timestamp(START.0 + week + 1)).await.unwrap(), 1);
    assert!(project.buckets.list_uploads(&inbox, None).await.unwrap().is_empty());
    assert!(files_under(&project.buckets_root.join(".uploads")).is_empty(), "the sweep removed its files");
    assert!(project.events().is_empty(), "no upload wrote an object");
}
