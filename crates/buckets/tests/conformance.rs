//! The object layer's conformance suite, as object_store runs one suite over
//! every store: each case runs the buckets' operations, through their public
//! API on encrypted buckets as the CLI opens them, over the local file
//! system, object_store's in-memory store and a real S3 server (SeaweedFS,
//! `support::s3`), and checks what reached the store: every object, part,
//! upload record and metadata record sealed, the staging of `.uploads/` and
//! `.meta/` written through the object store, and one event per change.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use mayfly_buckets::crypto::Keyring;
use mayfly_buckets::{BucketError, Buckets, MIN_PART_SIZE, ObjectMetadata};
use mayfly_core::{ManualClock, ObjectEventKind, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state_sqlite::SqliteStore;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use support::{GeneratedBody, HashingSink, START, name};

/// A byte pattern user data is made of; it must never be found in the store.
const MARKER: &[u8] = b"CONFORMANCE-PLAINTEXT-7f3e ";

fn marked(length: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(length).collect()
}

#[derive(Debug, Clone, Copy)]
enum Store {
    Local,
    Memory,
    SeaweedFs,
}

struct Fixture {
    buckets: Buckets,
    state: Arc<SqliteStore>,
    /// The store as the buckets see it (for S3: rooted at the test's prefix).
    raw: Arc<dyn ObjectStore>,
    _folder: tempfile::TempDir,
}

impl Fixture {
    async fn new(store: Store) -> Fixture {
        let folder = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_at(START);
        let state = Arc::new(SqliteStore::open(&folder.path().join("state.db"), Arc::new(clock.clone())).unwrap());
        let keyring = Arc::new(Keyring::generate(START));
        let (raw, description): (Arc<dyn ObjectStore>, String) = match store {
            Store::Local => {
                let root = folder.path().join("buckets");
                std::fs::create_dir_all(&root).unwrap();
                (Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap()), root.display().to_string())
            }
            Store::Memory => (Arc::new(InMemory::new()), "memory".to_owned()),
            Store::SeaweedFs => {
                let config = support::s3::fresh_config("conformance");
                (config.build(false).unwrap(), config.describe())
            }
        };
        // Every store here honours a conditional create.
        mayfly_buckets::s3::check_store(raw.as_ref(), &description).await.unwrap();
        let buckets = match store {
            Store::Local => {
                Buckets::open_encrypted(&folder.path().join("buckets"), state.clone(), Arc::new(clock), keyring)
                    .unwrap()
            }
            _ => Buckets::open_on_object_store_encrypted(raw.clone(), state.clone(), Arc::new(clock), keyring),
        };
        buckets.create_bucket(&name("inbox"), &[]).await.unwrap();
        buckets.create_bucket(&name("archive"), &[]).await.unwrap();
        Fixture { buckets, state, raw, _folder: folder }
    }

    /// Every object in the store, with its bytes.
    async fn stored(&self) -> Vec<(String, Bytes)> {
        let metas: Vec<_> = self.raw.list(None).try_collect().await.unwrap();
        let mut stored = Vec::new();
        for meta in metas {
            let bytes = self.raw.get(&meta.location).await.unwrap().bytes().await.unwrap();
            stored.push((meta.location.to_string(), bytes));
        }
        stored.sort();
        stored
    }

    /// The store's objects that hold plaintext user data.
    async fn leaks(&self) -> Vec<String> {
        self.stored()
            .await
            .into_iter()
            .filter(|(_, bytes)| bytes.windows(MARKER.len()).any(|window| window == MARKER))
            .map(|(location, _)| location)
            .collect()
    }

    fn events(&self) -> Vec<(String, String, ObjectEventKind)> {
        self.state
            .object_events_after(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|event| (event.bucket.to_string(), event.key, event.kind))
            .collect()
    }

    async fn keys(&self, bucket: &str, prefix: Option<&str>) -> Vec<String> {
        self.buckets.list(&name(bucket), prefix).await.unwrap().into_iter().map(|info| info.key).collect()
    }
}

async fn put_get_head_and_overwrite(store: Store) {
    let fixture = Fixture::new(store).await;
    let inbox = name("inbox");
    let written = fixture.buckets.put_bytes(&inbox, "a/one", Bytes::from(marked(1000))).await.unwrap();
    assert_eq!(written.size, 1000);
    let head = fixture.buckets.head(&inbox, "a/one").await.unwrap();
    assert_eq!((head.size, &head.etag), (1000, &written.etag));
    let (info, body) = fixture.buckets.get_bytes(&inbox, "a/one").await.unwrap();
    assert_eq!((info.size, body.as_ref()), (1000, marked(1000).as_slice()));

    fixture.buckets.put(&inbox, "a/one", &b"replaced"[..]).await.unwrap();
    let (_, body) = fixture.buckets.get_bytes(&inbox, "a/one").await.unwrap();
    assert_eq!(body.as_ref(), b"replaced");
    assert!(matches!(fixture.buckets.head(&inbox, "a/none").await, Err(BucketError::NoSuchKey { .. })));
    assert!(matches!(fixture.buckets.get_bytes(&name("nobucket"), "a").await, Err(BucketError::NoSuchBucket { .. })));
    assert_eq!(fixture.leaks().await, Vec::<String>::new());
}

async fn list_by_prefix(store: Store) {
    let fixture = Fixture::new(store).await;
    let inbox = name("inbox");
    for key in ["incoming/b", "incoming/a", "incoming/deep/c", "income", "other/x", "z"] {
        fixture.buckets.put_bytes(&inbox, key, Bytes::from_static(b"x")).await.unwrap();
    }
    fixture.buckets.put_bytes(&name("archive"), "incoming/elsewhere", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(fixture.keys("inbox", Some("incoming/")).await, ["incoming/a", "incoming/b", "incoming/deep/c"]);
    // A plain string prefix, as in S3: `inc` matches `incoming/a` and `income`.
    assert_eq!(fixture.keys("inbox", Some("inc")).await, ["income", "incoming/a", "incoming/b", "incoming/deep/c"]);
    assert_eq!(fixture.keys("inbox", Some("incoming/d")).await, ["incoming/deep/c"]);
    assert_eq!(fixture.keys("inbox", Some("nothing")).await, Vec::<String>::new());
    assert_eq!(fixture.keys("inbox", None).await.len(), 6, "the metadata and upload records are not objects");
    let streamed: Vec<_> =
        fixture.buckets.list_unordered(&inbox, Some("other")).await.unwrap().try_collect().await.unwrap();
    assert_eq!(streamed.len(), 1);
    assert!(!fixture.buckets.is_empty(&inbox).await.unwrap());
}

async fn copy_delete_and_metadata(store: Store) {
    let fixture = Fixture::new(store).await;
    let (inbox, archive) = (name("inbox"), name("archive"));
    let metadata = ObjectMetadata {
        content_type: Some("text/plain".to_owned()),
        user: [("patient".to_owned(), String::from_utf8(marked(40)).unwrap())].into(),
    };
    let written = fixture.buckets.put_with_metadata(&inbox, "note", &marked(300)[..], &metadata).await.unwrap();
    assert_eq!(fixture.buckets.metadata(&written).await.unwrap(), metadata);

    let copied = fixture.buckets.copy((&inbox, "note"), (&archive, "kept/note")).await.unwrap();
    assert_eq!(copied.size, 300);
    assert_eq!(fixture.buckets.metadata(&copied).await.unwrap(), metadata, "a copy keeps the metadata");
    let (_, body) = fixture.buckets.get_bytes(&archive, "kept/note").await.unwrap();
    assert_eq!(body.as_ref(), marked(300).as_slice());
    let plain = fixture.buckets.copy_with_metadata((&inbox, "note"), (&inbox, "bare"), Some(ObjectMetadata::default()));
    assert!(fixture.buckets.metadata(&plain.await.unwrap()).await.unwrap().is_empty());
    assert!(matches!(
        fixture.buckets.copy((&inbox, "missing"), (&archive, "x")).await,
        Err(BucketError::NoSuchKey { .. })
    ));

    fixture.buckets.delete(&inbox, "note").await.unwrap();
    assert!(matches!(fixture.buckets.delete(&inbox, "note").await, Err(BucketError::NoSuchKey { .. })));
    assert_eq!(fixture.keys("inbox", None).await, ["bare"]);
    assert!(matches!(fixture.buckets.delete_bucket(&inbox, false).await, Err(BucketError::BucketNotEmpty { .. })));
    assert_eq!(fixture.buckets.delete_bucket(&inbox, true).await.unwrap(), 1);
    assert_eq!(fixture.keys("archive", None).await, ["kept/note"]);

    let stored = fixture.stored().await;
    assert!(
        stored.iter().any(|(location, _)| location.starts_with(".meta/archive/")),
        "the metadata record is in the object store: {stored:?}"
    );
    assert_eq!(fixture.leaks().await, Vec::<String>::new());
    let created = ObjectEventKind::Created;
    let deleted = ObjectEventKind::Deleted;
    assert_eq!(
        fixture.events(),
        [
            ("inbox", "note", created),
            ("archive", "kept/note", created),
            ("inbox", "bare", created),
            ("inbox", "note", deleted),
            ("inbox", "bare", deleted),
        ]
        .map(|(bucket, key, kind)| (bucket.to_owned(), key.to_owned(), kind))
    );
}

async fn multipart_upload(store: Store) {
    let fixture = Fixture::new(store).await;
    let inbox = name("inbox");
    let metadata =
        ObjectMetadata { content_type: Some("application/octet-stream".to_owned()), user: Default::default() };
    let upload = fixture.buckets.begin_upload(&inbox, "scan.bin", metadata.clone()).await.unwrap();
    let first = marked(MIN_PART_SIZE as usize);
    let second = marked(1234);
    let one = fixture.buckets.put_part(&inbox, "scan.bin", &upload.upload_id, 1, &first[..]).await.unwrap();
    let two = fixture.buckets.put_part(&inbox, "scan.bin", &upload.upload_id, 2, &second[..]).await.unwrap();
    let listed = fixture.buckets.list_parts(&inbox, "scan.bin", &upload.upload_id).await.unwrap();
    assert_eq!(listed.iter().map(|part| (part.number, part.size)).collect::<Vec<_>>(), [(1, MIN_PART_SIZE), (2, 1234)]);
    let uploads = fixture.buckets.list_uploads(&inbox, None).await.unwrap();
    assert_eq!(uploads.iter().map(|u| u.upload_id.as_str()).collect::<Vec<_>>(), [upload.upload_id.as_str()]);
    let staged = fixture.stored().await;
    let uploads = match store {
        Store::Local => ".uploads/",
        _ => ".staged-uploads/",
    };
    assert!(
        staged.iter().filter(|(location, _)| location.starts_with(&format!("{uploads}inbox/"))).count() == 3,
        "the upload's record and two parts are staged in the object store: {:?}",
        staged.iter().map(|(location, _)| location).collect::<Vec<_>>()
    );
    assert_eq!(fixture.leaks().await, Vec::<String>::new(), "staged parts are sealed");
    assert_eq!(fixture.keys("inbox", None).await, Vec::<String>::new(), "nothing appears before the complete");

    let info = fixture
        .buckets
        .complete_upload(&inbox, "scan.bin", &upload.upload_id, &[(1, one.etag), (2, two.etag)])
        .await
        .unwrap();
    assert_eq!(info.size, MIN_PART_SIZE + 1234);
    let (_, body) = fixture.buckets.get_bytes(&inbox, "scan.bin").await.unwrap();
    assert_eq!(body.len() as u64, MIN_PART_SIZE + 1234);
    assert!(body.starts_with(&first) && body.ends_with(&second));
    assert_eq!(fixture.buckets.metadata(&info).await.unwrap(), metadata);
    assert!(fixture.buckets.list_uploads(&inbox, None).await.unwrap().is_empty());
    assert!(
        !fixture.stored().await.iter().any(|(location, _)| location.starts_with(uploads)),
        "the staging is removed"
    );

    let aborted = fixture.buckets.begin_upload(&inbox, "gone", ObjectMetadata::default()).await.unwrap();
    fixture.buckets.put_part(&inbox, "gone", &aborted.upload_id, 1, &b"part"[..]).await.unwrap();
    fixture.buckets.abort_upload(&inbox, "gone", &aborted.upload_id).await.unwrap();
    assert!(matches!(
        fixture.buckets.list_parts(&inbox, "gone", &aborted.upload_id).await,
        Err(BucketError::NoSuchUpload { .. })
    ));
    assert_eq!(fixture.keys("inbox", None).await, ["scan.bin"]);

    // An abandoned upload is swept, listed through the store's delimiter listing.
    let abandoned = fixture.buckets.begin_upload(&inbox, "left", ObjectMetadata::default()).await.unwrap();
    fixture.buckets.put_part(&inbox, "left", &abandoned.upload_id, 1, &marked(10)[..]).await.unwrap();
    assert_eq!(fixture.buckets.abort_abandoned_uploads(START).await.unwrap(), 0, "not older than START");
    assert_eq!(fixture.buckets.abort_abandoned_uploads(Timestamp(START.0 + 1)).await.unwrap(), 1);
    assert!(fixture.buckets.list_uploads(&inbox, None).await.unwrap().is_empty());
    assert!(!fixture.stored().await.iter().any(|(location, _)| location.starts_with(uploads)));
    assert_eq!(fixture.leaks().await, Vec::<String>::new());
    assert_eq!(fixture.events(), [("inbox".to_owned(), "scan.bin".to_owned(), ObjectEventKind::Created)]);
}

async fn large_object_streams(store: Store) {
    let fixture = Fixture::new(store).await;
    let inbox = name("inbox");
    // Over two of the upload's 8 MiB parts: the store's own multipart upload.
    let length = 17 * 1024 * 1024 + 5;
    let info = fixture.buckets.put(&inbox, "big", GeneratedBody::new(length)).await.unwrap();
    assert_eq!(info.size, length);
    let mut sink = HashingSink::default();
    fixture.buckets.get(&inbox, "big", &mut sink).await.unwrap();
    assert_eq!(sink.sha256_hex(), GeneratedBody::expected_sha256_hex(length));
    let (_, stream) = fixture.buckets.get_stream(&inbox, "big").await.unwrap();
    let streamed: u64 =
        stream.map_ok(|chunk| chunk.len() as u64).try_fold(0, |sum, n| async move { Ok(sum + n) }).await.unwrap();
    assert_eq!(streamed, length);
    let stored = fixture.stored().await;
    let (_, raw) = stored.iter().find(|(location, _)| location == "inbox/big").unwrap();
    assert!(raw.len() as u64 > length, "the stored object is an envelope, larger than its content");
    assert_eq!(fixture.events().len(), 1);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local_file_system {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Store::Local).await })*
        }
        mod in_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Store::Memory).await })*
        }
        mod seaweedfs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Store::SeaweedFs).await })*
        }
    };
}

conformance!(
    put_get_head_and_overwrite,
    list_by_prefix,
    copy_delete_and_metadata,
    multipart_upload,
    large_object_streams
);
