//! Bodies longer than one part (8 MiB) on the local filesystem, which this
//! crate writes itself (a hidden file, each part written past the page cache
//! with `O_DIRECT` where the filesystem allows it and through it where it
//! refuses, synced and then renamed into place): the object reads back byte
//! for byte and is sealed on disk; it appears only whole, and a body that
//! fails, a put that is dropped midway or a key that clashes with a folder
//! leaves the old version, no temp file and no event. The same holds on a
//! disk filesystem, on tmpfs and on ramfs, which refuses `O_DIRECT`.

mod support;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use mayfly_buckets::BucketError;
use support::{FailingBody, Project, TestMount, name};
use tokio::io::AsyncWriteExt;

const PART: usize = 8 * 1024 * 1024;

/// `length` bytes of recognisable plaintext: a numbered marker, repeated.
fn marked_plaintext(length: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(length + 32);
    let mut line = 0u64;
    while body.len() < length {
        body.extend_from_slice(format!("PLAINTEXT-MARKER-{line:012}\n").as_bytes());
        line += 1;
    }
    body.truncate(length);
    body
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The files under the bucket's folder, polled until they are `expected`
/// (a dropped put removes its temp file on the blocking pool, a moment later).
async fn files_become(project: &Project, bucket: &str, expected: &[&str]) -> Vec<String> {
    for _ in 0..100 {
        if project.files_on_disk(bucket) == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    project.files_on_disk(bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_parts_reads_back_byte_identical_and_is_sealed_on_disk() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    // Four parts of envelope, the last one short; a key with spaces, `%` and
    // non-ASCII in a folder that does not exist yet.
    let key = "scans/2026 Q4/ünïcode 100%.bin";
    let plaintext = marked_plaintext(3 * PART + 12_345);

    let stored = project.buckets.put(&inbox, key, plaintext.as_slice()).await.unwrap();

    assert_eq!(stored.size, plaintext.len() as u64);
    let (read, content) = project.buckets.get_bytes(&inbox, key).await.unwrap();
    assert_eq!(read, stored);
    assert!(content.as_ref() == plaintext.as_slice(), "the content read back differs from what was put");
    let listed = project.buckets.list(&inbox, None).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&stored));
    assert_eq!(project.files_on_disk("inbox"), [key], "the object's file and nothing else (no temp file)");
    let on_disk = std::fs::read(project.object_file("inbox", key)).unwrap();
    assert!(on_disk.len() > plaintext.len(), "an envelope is longer than its plaintext");
    assert!(!contains(&on_disk, b"PLAINTEXT-MARKER"), "plaintext reached the disk");
    // Another process with the same keyring reads it too.
    let reopened = project.reopen(project.keyring.clone());
    assert!(reopened.get_bytes(&inbox, key).await.unwrap().1.as_ref() == plaintext.as_slice());
    let events = project.events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].key.as_str(), events[0].size, &events[0].etag), (key, stored.size, &stored.etag));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unencrypted_object_in_parts_is_stored_as_it_came() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let plaintext = marked_plaintext(2 * PART + 1);

    let stored = project.buckets.put(&inbox, "big.bin", plaintext.as_slice()).await.unwrap();

    assert_eq!(stored.size, plaintext.len() as u64);
    assert!(std::fs::read(project.object_file("inbox", "big.bin")).unwrap() == plaintext);
    assert_eq!(project.files_on_disk("inbox"), ["big.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_after_some_parts_leaves_the_old_version_and_no_temp_file() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let old = project.buckets.put_bytes(&inbox, "report.bin", b"old version".to_vec().into()).await.unwrap();

    let failed = project.buckets.put(&inbox, "report.bin", FailingBody::failing_after(2 * PART as u64 + 7)).await;

    let error = failed.expect_err("a body that fails is not stored");
    assert!(matches!(error, BucketError::ReadBody { .. }), "{error:?}");
    assert_eq!(project.files_on_disk("inbox"), ["report.bin"]);
    let (info, content) = project.buckets.get_bytes(&inbox, "report.bin").await.unwrap();
    assert_eq!((info, content.as_ref()), (old, b"old version".as_slice()));
    assert_eq!(project.events().len(), 1, "no event for the failed put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_parts_appears_only_whole_and_a_put_dropped_midway_leaves_nothing() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let old = project.buckets.put_bytes(&inbox, "report.bin", b"old version".to_vec().into()).await.unwrap();
    let plaintext = marked_plaintext(3 * PART);

    // A client that sends two and a half parts and then goes quiet.
    for finish in [false, true] {
        let (mut client, body) = tokio::io::duplex(1024 * 1024);
        let buckets = project.buckets.clone();
        let put = tokio::spawn({
            let inbox = inbox.clone();
            async move { buckets.put(&inbox, "report.bin", body).await }
        });
        client.write_all(&plaintext[..5 * PART / 2]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!put.is_finished(), "the put waits for the rest of the body");
        let (info, content) = project.buckets.get_bytes(&inbox, "report.bin").await.unwrap();
        assert_eq!((info, content.as_ref()), (old.clone(), b"old version".as_slice()), "the old version, mid-put");
        assert_eq!(
            project.buckets.list(&inbox, None).await.unwrap(),
            std::slice::from_ref(&old),
            "no half object is listed"
        );

        if finish {
            client.write_all(&plaintext[5 * PART / 2..]).await.unwrap();
            drop(client);
            let stored = put.await.unwrap().unwrap();
            let (read, content) = project.buckets.get_bytes(&inbox, "report.bin").await.unwrap();
            assert_eq!(read, stored);
            assert!(content.as_ref() == plaintext.as_slice(), "the finished put's content differs");
        } else {
            put.abort();
            assert!(put.await.unwrap_err().is_cancelled());
            assert_eq!(files_become(&project, "inbox", &["report.bin"]).await, ["report.bin"], "no temp file");
            assert_eq!(project.buckets.get_bytes(&inbox, "report.bin").await.unwrap().1.as_ref(), b"old version");
            assert_eq!(project.events().len(), 1, "no event for the dropped put");
        }
    }
    assert_eq!(project.files_on_disk("inbox"), ["report.bin"]);
    assert_eq!(project.events().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_parts_whose_key_clashes_with_a_folder_is_a_key_conflict() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a", b"a file".to_vec().into()).await.unwrap();
    project.buckets.put_bytes(&inbox, "d/e", b"in a folder".to_vec().into()).await.unwrap();
    let body = marked_plaintext(PART + 1);

    let under_object = project.buckets.put(&inbox, "a/b", body.as_slice()).await.unwrap_err();
    let over_folder = project.buckets.put(&inbox, "d", body.as_slice()).await.unwrap_err();

    assert!(matches!(&under_object, BucketError::KeyConflict { key, .. } if key == "a/b"), "{under_object:?}");
    assert!(matches!(&over_folder, BucketError::KeyConflict { key, .. } if key == "d"), "{over_folder:?}");
    assert_eq!(project.files_on_disk("inbox"), ["a", "d/e"], "no temp file");
    assert_eq!(project.events().len(), 2, "no event for a refused put");
}

/// The bytes of `file` in the page cache, as `fincore` (util-linux) counts them.
fn page_cache_bytes(file: &Path) -> u64 {
    let output = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .expect("run `fincore` (util-linux; is it installed?)");
    assert!(output.status.success(), "fincore failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("fincore prints a byte count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_parts_on_a_disk_filesystem_is_written_past_the_page_cache() {
    // Under the target folder, which lies on a disk (/tmp may be a tmpfs,
    // whose files are all page cache).
    let folder = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let buckets_root = folder.path().join(".mayfly/buckets");
    let project = Project::encrypted_with_buckets_root(folder, buckets_root);
    let inbox = name("inbox");
    project.buckets.create_bucket(&inbox, &[]).await.unwrap();
    let plaintext = marked_plaintext(3 * PART + 12_345);

    project.buckets.put(&inbox, "big.bin", plaintext.as_slice()).await.unwrap();

    let file = project.object_file("inbox", "big.bin");
    let (cached, size) = (page_cache_bytes(&file), std::fs::metadata(&file).unwrap().len());
    assert!(
        cached <= 4096,
        "{cached} of the object's {size} bytes are in the page cache: only its unaligned tail (under a page) should \
         have gone through it (is the target folder on a disk filesystem such as ext4 or xfs?)"
    );
    assert!(project.buckets.get_bytes(&inbox, "big.bin").await.unwrap().1.as_ref() == plaintext.as_slice());
}

/// On the filesystem holding `project`'s buckets: a body in parts that
/// fails leaves the old version and no temp file; one that completes reads
/// back byte for byte, is sealed on disk and is the only file left.
async fn a_put_in_parts_fails_cleanly_and_then_succeeds(project: &Project, filesystem: &str) {
    let inbox = name("inbox");
    project.buckets.create_bucket(&inbox, &[]).await.unwrap();
    let old = project.buckets.put_bytes(&inbox, "report.bin", b"old version".to_vec().into()).await.unwrap();

    let failed = project.buckets.put(&inbox, "report.bin", FailingBody::failing_after(2 * PART as u64 + 7)).await;

    assert!(matches!(failed, Err(BucketError::ReadBody { .. })), "{filesystem}: {failed:?}");
    assert_eq!(project.files_on_disk("inbox"), ["report.bin"], "{filesystem}: no temp file");
    let (info, content) = project.buckets.get_bytes(&inbox, "report.bin").await.unwrap();
    assert_eq!((info, content.as_ref()), (old, b"old version".as_slice()), "{filesystem}");

    let plaintext = marked_plaintext(2 * PART + 4096 + 99);
    let stored = project.buckets.put(&inbox, "report.bin", plaintext.as_slice()).await.unwrap();

    let (read, content) = project.buckets.get_bytes(&inbox, "report.bin").await.unwrap();
    assert_eq!(read, stored, "{filesystem}");
    assert!(content.as_ref() == plaintext.as_slice(), "{filesystem}: the content read back differs");
    let on_disk = std::fs::read(project.object_file("inbox", "report.bin")).unwrap();
    assert!(!contains(&on_disk, b"PLAINTEXT-MARKER"), "{filesystem}: plaintext reached the disk");
    assert_eq!(project.files_on_disk("inbox"), ["report.bin"], "{filesystem}: no temp file");
    assert_eq!(project.events().len(), 2, "{filesystem}: no event for the failed put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_in_parts_on_a_disk_filesystem_fails_cleanly_and_then_succeeds() {
    let folder = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let buckets_root = folder.path().join(".mayfly/buckets");
    let project = Project::encrypted_with_buckets_root(folder, buckets_root);
    a_put_in_parts_fails_cleanly_and_then_succeeds(&project, "a disk filesystem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_in_parts_on_tmpfs_fails_cleanly_and_then_succeeds() {
    // /dev/shm is a tmpfs; tmpfs takes O_DIRECT since Linux 6.6 and
    // refuses it before, so either path may run here.
    let shm = tempfile::tempdir_in("/dev/shm").expect("a folder on /dev/shm (a tmpfs)");
    let project = Project::encrypted_with_buckets_root(tempfile::tempdir().unwrap(), shm.path().join("buckets"));
    a_put_in_parts_fails_cleanly_and_then_succeeds(&project, "tmpfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_in_parts_on_ramfs_which_refuses_direct_writes_fails_cleanly_and_then_succeeds() {
    // Dropped in reverse: the project, then the mount, then its folder.
    let mount_folder = tempfile::tempdir().unwrap();
    let ramfs = TestMount::mount("ramfs", None, &mount_folder.path().join("ramfs"), "(which refuses O_DIRECT)");
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(ramfs.mount_point.join("probe"));
    assert_eq!(
        probe.map(drop).map_err(|error| error.raw_os_error()),
        Err(Some(libc::EINVAL)),
        "ramfs refuses O_DIRECT"
    );
    std::fs::remove_file(ramfs.mount_point.join("probe")).expect("the refused open created the probe file");
    let project = Project::encrypted_with_buckets_root(tempfile::tempdir().unwrap(), ramfs.mount_point.join("buckets"));
    a_put_in_parts_fails_cleanly_and_then_succeeds(&project, "ramfs").await;
}
