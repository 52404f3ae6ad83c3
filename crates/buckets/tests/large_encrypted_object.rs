//! A 32 MiB object streamed in and out of an encrypted bucket: the content
//! survives (SHA-256), the plaintext size is reported, and neither direction
//! holds the whole object in memory. Alone in its test binary so the
//! process's peak memory is this test's.

mod support;

use support::{Project, name, stream_in_and_out};

const LENGTH: u64 = 32 * 1024 * 1024 + 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_32_mib_encrypted_object_streams_in_and_out_in_bounded_memory() {
    let project = Project::encrypted_with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let peak_growth = stream_in_and_out(&project, &inbox, "scans/big.bin", LENGTH).await;
    // Parts are 8 MiB with at most three in memory at once, plus one 64 KiB
    // chunk in each direction; the whole object is 32 MiB.
    println!("peak resident memory grew by {} KiB while moving 32 MiB encrypted", peak_growth / 1024);
    assert!(peak_growth < 30 * 1024 * 1024, "peak memory grew by {peak_growth} bytes");
    assert_eq!(project.events().len(), 1);
    assert_eq!(project.events()[0].size, LENGTH);
}
