//! A full disk: the put fails with `DiskFull`, the bucket is unchanged (no
//! partial object, no temp file, no event) and the space is given back, so the
//! next put that fits succeeds. The buckets live on a 1 MiB tmpfs this test
//! mounts (it runs as root); the state store stays on the normal disk.

mod support;

use bytes::Bytes;
use mayfly_buckets::BucketError;
use support::{GeneratedBody, Project, TestMount, name};

#[tokio::test]
async fn a_full_disk_is_disk_full_and_leaves_the_bucket_unchanged() {
    // Dropped in reverse: the project, then the mount, then its folder.
    let mount_folder = tempfile::tempdir().unwrap();
    let tmpfs =
        TestMount::mount("tmpfs", Some("size=1m"), &mount_folder.path().join("small-disk"), "of 1 MiB to fill a disk");
    let project = Project::with_buckets_root(tempfile::tempdir().unwrap(), tmpfs.mount_point.join("buckets"));
    let inbox = name("inbox");
    project.buckets.create_bucket(&inbox, &[]).await.unwrap();
    let kept = project.buckets.put_bytes(&inbox, "kept", Bytes::from(vec![7; 600 * 1024])).await.unwrap();
    let events_before = project.events();

    let too_big_in_memory = project.buckets.put_bytes(&inbox, "in-memory", Bytes::from(vec![1; 600 * 1024])).await;
    let too_big_streamed_small = project.buckets.put(&inbox, "streamed-small", GeneratedBody::new(600 * 1024)).await;
    let too_big_in_parts = project.buckets.put(&inbox, "deep/in-parts", GeneratedBody::new(20 * 1024 * 1024)).await;
    let overwrite = project.buckets.put_bytes(&inbox, "kept", Bytes::from(vec![9; 2 * 1024 * 1024])).await;
    for (what, outcome) in [
        ("put_bytes", too_big_in_memory),
        ("put of one part", too_big_streamed_small),
        ("put in parts", too_big_in_parts),
        ("overwrite", overwrite),
    ] {
        let error = outcome.expect_err(what);
        assert!(matches!(&error, BucketError::DiskFull { bucket } if bucket.as_str() == "inbox"), "{what}: {error:?}");
        assert_eq!(
            error.to_string(),
            "the disk holding bucket `inbox` is full; nothing was stored. Free space and retry"
        );
    }

    assert_eq!(project.events(), events_before, "no event for a failed put");
    assert_eq!(project.files_on_disk("inbox"), ["kept"], "no partial object, no temp file");
    let (info, bytes) = project.buckets.get_bytes(&inbox, "kept").await.unwrap();
    assert_eq!((info, bytes.as_ref()), (kept, vec![7; 600 * 1024].as_slice()), "the old version is intact");

    // The failed uploads gave their space back.
    project.buckets.put_bytes(&inbox, "fits", Bytes::from(vec![3; 300 * 1024])).await.unwrap();
}
