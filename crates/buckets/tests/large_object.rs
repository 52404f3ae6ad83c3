//! A 64 MiB object streamed in and out: the content survives (SHA-256), and
//! neither direction holds the whole object in memory. Alone in its test
//! binary so the process's peak memory is this test's.

mod support;

use support::{Project, name, stream_in_and_out};

const LENGTH: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_object_streams_in_and_out_in_bounded_memory() {
    let project = Project::with_buckets(&["inbox"]).await;
    let inbox = name("inbox");
    let peak_growth = stream_in_and_out(&project, &inbox, "scans/big.bin", LENGTH).await;
    // Parts are 8 MiB with at most three in memory at once; the whole object
    // is 64 MiB. Allow for allocator slack, not for buffering the object.
    println!("peak resident memory grew by {} KiB while moving 64 MiB", peak_growth / 1024);
    assert!(peak_growth < 40 * 1024 * 1024, "peak memory grew by {peak_growth} bytes");
    assert_eq!(project.files_on_disk("inbox"), ["scans/big.bin"]);
    assert_eq!(project.events().len(), 1);
}
