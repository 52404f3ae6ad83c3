//! Encryption at rest through the public API: a marker put into objects
//! (small, streamed in parts, copied across buckets) never appears in
//! plaintext in any file of the project; sizes are the plaintext's; and an
//! object flipped, truncated or swapped on disk fails to read with an error
//! naming it, never with wrong bytes. Rotation, rewrap and unencrypted
//! objects from before encryption are covered too.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use mayfly_buckets::crypto::{CryptoError, Keyring};
use mayfly_buckets::{BucketError, RewrapOutcome};
use support::{GeneratedBody, HashingSink, Project, START, name};

const MARKER: &[u8] = b"PATIENT-MARKER-7f3a9c-do-not-leak";

/// A body of `length` bytes with the marker repeated through it.
fn marked_body(length: usize) -> Vec<u8> {
    MARKER.iter().chain(b" chart line\n").copied().cycle().take(length).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn assert_marker_nowhere(project: &Project) {
    let files = project.every_file_with_bytes();
    assert!(files.iter().any(|(path, _)| path.starts_with(&project.buckets_root)), "the scan reaches the buckets");
    for (path, bytes) in files {
        assert!(!contains(&bytes, MARKER), "the marker appears in plaintext in {}", path.display());
    }
}

/// The decryption error of a failed read, checking it names the object.
fn decrypt_error(error: BucketError, bucket: &str, key: &str) -> CryptoError {
    let message = error.to_string();
    assert!(message.contains(&format!("{bucket}/{key}")), "the error names the object: {message}");
    match error {
        BucketError::Decrypt { bucket: failed_bucket, key: failed_key, source } => {
            assert_eq!((failed_bucket.as_str(), failed_key.as_str()), (bucket, key));
            source
        }
        other => panic!("expected a decryption error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_marker_never_appears_in_plaintext_on_disk() {
    let project = Project::encrypted_with_buckets(&["inbox", "archive"]).await;
    let (inbox, archive) = (name("inbox"), name("archive"));
    let small = marked_body(1000);
    let large = marked_body(9 * 1024 * 1024 + 17); // above the 8 MiB part size: a multipart upload
    project.buckets.put_bytes(&inbox, "charts/small.txt", Bytes::from(small.clone())).await.unwrap();
    project.buckets.put(&inbox, "charts/streamed.txt", small.as_slice()).await.unwrap();
    let stored = project.buckets.put(&inbox, "charts/large.txt", large.as_slice()).await.unwrap();
    assert_eq!(stored.size, large.len() as u64, "the plaintext size is reported");
    project.buckets.put(&inbox, "empty", &b""[..]).await.unwrap();
    project.buckets.copy((&inbox, "charts/large.txt"), (&archive, "2026/large.txt")).await.unwrap();
    project.buckets.copy((&inbox, "charts/small.txt"), (&inbox, "charts/copy.txt")).await.unwrap();

    assert_marker_nowhere(&project);

    for (bucket, key, body) in [
        (&inbox, "charts/small.txt", &small),
        (&inbox, "charts/streamed.txt", &small),
        (&inbox, "charts/large.txt", &large),
        (&archive, "2026/large.txt", &large),
        (&inbox, "charts/copy.txt", &small),
    ] {
        let (info, bytes) = project.buckets.get_bytes(bucket, key).await.unwrap();
        assert_eq!(bytes, body.as_slice(), "{bucket}/{key}");
        assert_eq!(info.size, body.len() as u64);
        let mut streamed = Vec::new();
        project.buckets.get(bucket, key, &mut streamed).await.unwrap();
        assert_eq!(&streamed, body, "{bucket}/{key} streamed");
        assert_eq!(project.buckets.head(bucket, key).await.unwrap().size, body.len() as u64);
        let on_disk = std::fs::metadata(project.object_file(bucket.as_str(), key)).unwrap().len();
        assert!(on_disk > body.len() as u64, "what is stored is the larger envelope");
    }
    let listed: Vec<(String, u64)> =
        project.buckets.list(&inbox, None).await.unwrap().into_iter().map(|info| (info.key, info.size)).collect();
    assert_eq!(
        listed,
        [
            ("charts/copy.txt".to_owned(), 1000),
            ("charts/large.txt".to_owned(), large.len() as u64),
            ("charts/small.txt".to_owned(), 1000),
            ("charts/streamed.txt".to_owned(), 1000),
            ("empty".to_owned(), 0),
        ]
    );
    let event_sizes: Vec<u64> = project.events().iter().map(|event| event.size).collect();
    assert_eq!(event_sizes, [1000, 1000, large.len() as u64, 0, large.len() as u64, 1000]);
}

#[tokio::test]
async fn a_large_object_streams_in_and_out_encrypted() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let length = 20 * 1024 * 1024 + 5;
    let stored = project.buckets.put(&inbox, "big.bin", GeneratedBody::new(length)).await.unwrap();
    assert_eq!(stored.size, length);
    let mut sink = HashingSink::default();
    let read = project.buckets.get(&inbox, "big.bin", &mut sink).await.unwrap();
    assert_eq!(read, stored);
    assert_eq!(sink.length, length);
    assert_eq!(sink.sha256_hex(), GeneratedBody::expected_sha256_hex(length));
}

#[tokio::test]
async fn a_flipped_byte_on_disk_fails_the_read() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let body = marked_body(200 * 1024);
    project.buckets.put_bytes(&inbox, "a.txt", Bytes::from(body.clone())).await.unwrap();
    let file = project.object_file("inbox", "a.txt");
    let original = std::fs::read(&file).unwrap();
    // In the wrapped key, in the first chunk, in the last chunk's tag.
    for position in [60, 200, original.len() - 1] {
        let mut damaged = original.clone();
        damaged[position] ^= 0x80;
        std::fs::write(&file, &damaged).unwrap();
        let error = project.buckets.get_bytes(&inbox, "a.txt").await.unwrap_err();
        assert!(matches!(decrypt_error(error, "inbox", "a.txt"), CryptoError::Tampered { .. }), "byte {position}");
        let mut sink = Vec::new();
        let error = project.buckets.get(&inbox, "a.txt", &mut sink).await.unwrap_err();
        assert!(matches!(decrypt_error(error, "inbox", "a.txt"), CryptoError::Tampered { .. }));
        assert!(body.starts_with(&sink), "only verified bytes reached the sink");
        // A copy of a damaged object fails too, naming the source, and creates nothing.
        let error = project.buckets.copy((&inbox, "a.txt"), (&inbox, "copy.txt")).await.unwrap_err();
        decrypt_error(error, "inbox", "a.txt");
        assert!(matches!(project.buckets.head(&inbox, "copy.txt").await, Err(BucketError::NoSuchKey { .. })));
    }
}

#[tokio::test]
async fn a_truncated_object_fails_the_read() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let body = marked_body(3 * 64 * 1024 + 100);
    project.buckets.put_bytes(&inbox, "a.txt", Bytes::from(body.clone())).await.unwrap();
    let file = project.object_file("inbox", "a.txt");
    let original = std::fs::read(&file).unwrap();
    let sealed_chunk = 64 * 1024 + 16;
    // At a chunk boundary (the last chunk dropped), mid-chunk, inside the header, empty.
    for cut in [94 + 3 * sealed_chunk, 94 + sealed_chunk, 94 + 1000, 50, 0] {
        std::fs::write(&file, &original[..cut]).unwrap();
        let error = project.buckets.get_bytes(&inbox, "a.txt").await.unwrap_err();
        let source = decrypt_error(error, "inbox", "a.txt");
        assert!(
            matches!(
                source,
                CryptoError::Truncated { .. } | CryptoError::Tampered { .. } | CryptoError::NotEncrypted { .. }
            ),
            "cut at {cut}: {source}"
        );
        let mut sink = Vec::new();
        let error = project.buckets.get(&inbox, "a.txt", &mut sink).await.unwrap_err();
        decrypt_error(error, "inbox", "a.txt");
        assert!(body.starts_with(&sink), "only verified bytes reached the sink");
    }
    std::fs::write(&file, &original[..94 + 2 * sealed_chunk]).unwrap();
    let error = project.buckets.get_bytes(&inbox, "a.txt").await.unwrap_err();
    assert!(matches!(decrypt_error(error, "inbox", "a.txt"), CryptoError::Truncated { .. }));
}

#[tokio::test]
async fn swapping_two_objects_files_fails_both_reads() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "patients/alice", Bytes::from_static(b"alice's chart")).await.unwrap();
    project.buckets.put_bytes(&inbox, "patients/bob", Bytes::from_static(b"bob's chart!!")).await.unwrap();
    let (alice, bob) = (project.object_file("inbox", "patients/alice"), project.object_file("inbox", "patients/bob"));
    let (alice_bytes, bob_bytes) = (std::fs::read(&alice).unwrap(), std::fs::read(&bob).unwrap());
    assert_eq!(alice_bytes.len(), bob_bytes.len(), "same size, so only the binding can tell them apart");
    std::fs::write(&alice, &bob_bytes).unwrap();
    std::fs::write(&bob, &alice_bytes).unwrap();
    for key in ["patients/alice", "patients/bob"] {
        let error = project.buckets.get_bytes(&inbox, key).await.unwrap_err();
        assert!(matches!(decrypt_error(error, "inbox", key), CryptoError::Tampered { .. }));
    }
}

#[tokio::test]
async fn rotate_then_rewrap_moves_objects_to_the_new_key_without_events() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let large = marked_body(9 * 1024 * 1024);
    project.buckets.put_bytes(&inbox, "small", Bytes::from_static(b"small chart")).await.unwrap();
    project.buckets.put(&inbox, "large", large.as_slice()).await.unwrap();
    let events_before = project.events().len();

    let mut rotated = Keyring::clone(project.keyring.as_ref().unwrap());
    rotated.rotate(START);
    let buckets = project.reopen(Some(Arc::new(rotated.clone())));
    assert_eq!(buckets.get_bytes(&inbox, "small").await.unwrap().1, &b"small chart"[..], "old objects stay readable");
    buckets.put_bytes(&inbox, "new", Bytes::from_static(b"new chart")).await.unwrap();

    let mut outcomes = Vec::new();
    for key in ["large", "new", "small"] {
        outcomes.push(buckets.rewrap(&inbox, key, false).await.unwrap());
    }
    assert_eq!(outcomes, [RewrapOutcome::Rewrapped, RewrapOutcome::AlreadyCurrent, RewrapOutcome::Rewrapped]);
    assert_eq!(project.events().len(), events_before + 1, "only the new put appended an event");
    assert_eq!(buckets.rewrap(&inbox, "small", false).await.unwrap(), RewrapOutcome::AlreadyCurrent);

    // A keyring holding only the new key reads everything.
    let only_new = Keyring::from_json(&only_current_key_json(&rotated), "test").unwrap();
    assert_eq!(only_new.keys().count(), 1);
    let buckets = project.reopen(Some(Arc::new(only_new)));
    assert_eq!(buckets.get_bytes(&inbox, "small").await.unwrap().1, &b"small chart"[..]);
    assert_eq!(buckets.get_bytes(&inbox, "large").await.unwrap().1, large);
    assert_eq!(buckets.head(&inbox, "large").await.unwrap().size, large.len() as u64);
    assert_marker_nowhere(&project);
}

/// The keyring's JSON with only its current key.
fn only_current_key_json(keyring: &Keyring) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&keyring.to_json()).unwrap();
    let current = json["current"].clone();
    json["keys"].as_array_mut().unwrap().retain(|key| key["id"] == current);
    json.to_string()
}

#[tokio::test]
async fn an_object_under_a_key_the_keyring_lacks_names_the_key() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    project.buckets.put_bytes(&inbox, "a", Bytes::from_static(b"chart")).await.unwrap();
    let stranger = project.reopen(Some(Arc::new(Keyring::generate(START))));
    let error = stranger.get_bytes(&inbox, "a").await.unwrap_err();
    let id = project.keyring.as_ref().unwrap().current().id().to_owned();
    assert!(error.to_string().contains(&id), "{error}");
    assert_eq!(decrypt_error(error, "inbox", "a"), CryptoError::UnknownKey { id, context: "inbox/a".to_owned() });
}

#[tokio::test]
async fn unencrypted_objects_from_before_are_refused_until_encrypted_by_rewrap() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let unencrypted = project.reopen(None);
    unencrypted.put_bytes(&inbox, "old.txt", Bytes::from(marked_body(5000))).await.unwrap();

    let error = project.buckets.get_bytes(&inbox, "old.txt").await.unwrap_err();
    assert!(error.to_string().contains("--encrypt-plaintext"), "{error}");
    assert!(matches!(decrypt_error(error, "inbox", "old.txt"), CryptoError::NotEncrypted { .. }));
    // FIXME: sizes in an encrypted bucket are computed from the envelope
    // format without reading the object, so an unencrypted leftover reports
    // its size less the envelope's overhead until it is encrypted.
    assert_eq!(project.buckets.head(&inbox, "old.txt").await.unwrap().size, 5000 - 94 - 16);

    assert_eq!(project.buckets.rewrap(&inbox, "old.txt", false).await.unwrap(), RewrapOutcome::LeftUnencrypted);
    assert_eq!(project.buckets.rewrap(&inbox, "old.txt", true).await.unwrap(), RewrapOutcome::Encrypted);
    assert_eq!(project.buckets.get_bytes(&inbox, "old.txt").await.unwrap().1, marked_body(5000));
    assert_eq!(project.buckets.head(&inbox, "old.txt").await.unwrap().size, 5000);
    assert_marker_nowhere(&project);
    assert!(matches!(unencrypted.rewrap(&inbox, "old.txt", false).await, Err(BucketError::NoKeyring { .. })));
}

#[tokio::test]
async fn get_stream_yields_what_get_writes_and_stops_before_damage() {
    use futures::TryStreamExt;
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    // Several 1 MiB pieces of the file, many 64 KiB chunks, a short last one.
    let length = 3 * 1024 * 1024 + 7;
    let stored = project.buckets.put(&inbox, "big.bin", GeneratedBody::new(length)).await.unwrap();
    let (info, pieces) = project.buckets.get_stream(&inbox, "big.bin").await.unwrap();
    assert_eq!(info, stored);
    let pieces: Vec<Bytes> = pieces.try_collect().await.unwrap();
    let streamed: Vec<u8> = pieces.concat();
    assert_eq!(streamed.len() as u64, length);
    assert_eq!(support::sha256_hex(&streamed), GeneratedBody::expected_sha256_hex(length));

    // A flipped byte in the 20th chunk: the chunks before it come out, then the error.
    let file = project.object_file("inbox", "big.bin");
    let mut damaged = std::fs::read(&file).unwrap();
    let position = 94 + 19 * (64 * 1024 + 16) + 10;
    damaged[position] ^= 0x01;
    std::fs::write(&file, &damaged).unwrap();
    let (_, mut pieces) = project.buckets.get_stream(&inbox, "big.bin").await.unwrap();
    let mut verified = Vec::new();
    let error = loop {
        match pieces.try_next().await {
            Ok(Some(piece)) => verified.extend_from_slice(&piece),
            Ok(None) => panic!("a damaged object streamed to its end"),
            Err(error) => break error,
        }
    };
    assert!(matches!(decrypt_error(error, "inbox", "big.bin"), CryptoError::Tampered { .. }));
    assert_eq!(verified.len(), 19 * 64 * 1024, "exactly the chunks before the damage");
    assert_eq!(verified[..], streamed[..verified.len()]);

    // A missing object is refused before any stream.
    let Err(error) = project.buckets.get_stream(&inbox, "missing").await else { panic!("a missing object streamed") };
    assert!(matches!(error, BucketError::NoSuchKey { .. }));
}
