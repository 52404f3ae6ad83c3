//! How fast the local provisioner starts and stops processes: the time from
//! `start` to the process being observably running, and full start + stop
//! cycles per second, for `sleep` in its own process group.
//!
//! Run: `cargo bench -p mayfly-fleet --bench start_stop`

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mayfly_fleet::{LocalProvisioner, ProcessSpec, Provisioner, TagFilter, Tags};

const ROUNDS: usize = 200;

#[tokio::main]
async fn main() {
    let provisioner = LocalProvisioner::new();
    let scope = format!("bench-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos());
    let spec = || {
        let mut spec = ProcessSpec::new("/bin/sleep", ["1000"]);
        spec.tags = Tags::new().with("mayfly.bench", &scope);
        spec
    };

    let mut start_latencies = Vec::with_capacity(ROUNDS);
    let cycles = Instant::now();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let id = provisioner.start(spec()).await.expect("start");
        start_latencies.push(started.elapsed());
        provisioner.stop(&id, Duration::from_secs(10)).await.expect("stop");
    }
    let cycle_seconds = cycles.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut ids = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        ids.push(provisioner.start(spec()).await.expect("start"));
    }
    let start_seconds = started.elapsed().as_secs_f64();
    let inventory_started = Instant::now();
    let found = provisioner.inventory(&TagFilter::new().with("mayfly.bench", &scope)).await.expect("inventory");
    let inventory_time = inventory_started.elapsed();
    let stop_started = Instant::now();
    futures::future::join_all(ids.iter().map(|id| provisioner.stop(id, Duration::from_secs(10)))).await;
    let stop_seconds = stop_started.elapsed().as_secs_f64();
    assert_eq!(found.len(), ROUNDS, "the inventory found every process");

    start_latencies.sort();
    let percentile = |p: f64| start_latencies[((start_latencies.len() - 1) as f64 * p) as usize];
    println!("local provisioner, {ROUNDS} processes (/bin/sleep):");
    println!("  start latency          p50 {:?}, p99 {:?}", percentile(0.5), percentile(0.99));
    println!("  start + stop cycles    {:.0} per second", ROUNDS as f64 / cycle_seconds);
    println!("  starts in a row        {:.0} per second", ROUNDS as f64 / start_seconds);
    println!("  inventory of {ROUNDS} live   {inventory_time:?}");
    println!("  concurrent stops       {:.0} per second", ROUNDS as f64 / stop_seconds);
}
