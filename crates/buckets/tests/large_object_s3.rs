//! A 128 MiB object streamed in and out of an encrypted bucket on S3
//! (SeaweedFS, `support::s3`): it goes up through S3's multipart upload, the
//! content survives (SHA-256), and neither direction holds the whole object
//! in memory. Alone in its test binary so the process's peak memory is this
//! test's.

mod support;

use std::sync::Arc;

use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::Keyring;
use mayfly_core::ManualClock;
use mayfly_state_sqlite::SqliteStore;
use support::{GeneratedBody, HashingSink, START, name, peak_resident_bytes};

const LENGTH: u64 = 128 * 1024 * 1024 + 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_128_mib_object_streams_to_s3_and_back_in_bounded_memory() {
    let folder = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(START);
    let state = Arc::new(SqliteStore::open(&folder.path().join("state.db"), Arc::new(clock.clone())).unwrap());
    let config = support::s3::fresh_config("large");
    let store = config.build(false).unwrap();
    let buckets =
        Buckets::open_on_object_store_encrypted(store, state, Arc::new(clock), Arc::new(Keyring::generate(START)));
    let inbox = name("inbox");
    buckets.create_bucket(&inbox, &[]).await.unwrap();

    let peak_before = peak_resident_bytes();
    let started = std::time::Instant::now();
    let stored = buckets.put(&inbox, "scans/big.bin", GeneratedBody::new(LENGTH)).await.unwrap();
    let put_took = started.elapsed();
    assert_eq!(stored.size, LENGTH);
    let mut sink = HashingSink::default();
    let started = std::time::Instant::now();
    buckets.get(&inbox, "scans/big.bin", &mut sink).await.unwrap();
    let get_took = started.elapsed();
    let peak_growth = peak_resident_bytes().saturating_sub(peak_before);
    assert_eq!(sink.length, LENGTH);
    assert_eq!(sink.sha256_hex(), GeneratedBody::expected_sha256_hex(LENGTH));
    println!(
        "128 MiB sealed to SeaweedFS: put {put_took:?}, get {get_took:?}; peak resident memory grew by {} KiB",
        peak_growth / 1024
    );
    // Parts are 8 MiB with at most three in memory at once, plus the HTTP
    // client's buffers; the whole object is 128 MiB.
    assert!(peak_growth < 48 * 1024 * 1024, "peak memory grew by {peak_growth} bytes");
}
