//! Latency of the run ledger's hot paths, durable (`synchronous = FULL`) on a
//! real file: one `lease_run_items` of 100 items, and one `complete_run_item`
//! (each its own commit), with a backlog of 20,000 items in the run.
//!
//! Run with `cargo bench -p mayfly-state-sqlite --bench runs`. Set
//! `MAYFLY_BENCH_DIR` to measure on another disk (default: the system temp dir).
//! Target: both well under 10 ms per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mayfly_core::{Name, SystemClock, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{ItemCompletion, NewRun, NewRunItem};
use mayfly_state_sqlite::SqliteStore;

const BACKLOG: usize = 20_000;
const ADD_BATCH: usize = 1_000;
const LEASE_BATCH: usize = 100;
const ROUNDS: usize = 20;

fn main() {
    let directory = match std::env::var_os("MAYFLY_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("create a directory for the benchmark store");
    let path = directory.path().join("state.db");
    let store = SqliteStore::open(&path, Arc::new(SystemClock)).expect("open the benchmark store");
    println!("run ledger benchmark on {} (synchronous = FULL, WAL)", path.display());
    let run = NewRun {
        id: "run-bench".to_owned(),
        job: Name::new("bench").expect("valid name"),
        deployment_version: None,
        trigger: "manual".to_owned(),
        deadline: Timestamp(i64::MAX),
        budget: None,
    };
    store.create_run(run).expect("create the run");
    assert!(store.claim_run("run-bench", "coordinator", Duration::from_secs(3_600)).expect("claim the run"));

    let started = Instant::now();
    for batch in 0..BACKLOG / ADD_BATCH {
        let items: Vec<NewRunItem> = (0..ADD_BATCH)
            .map(|index| NewRunItem {
                item: format!("objects/{:08}.png", batch * ADD_BATCH + index),
                payload: vec![b'x'; 100],
            })
            .collect();
        store.add_run_items("run-bench", &items).expect("add items");
    }
    let add_rate = BACKLOG as f64 / started.elapsed().as_secs_f64();

    let mut leases = Vec::with_capacity(ROUNDS);
    let mut completions = Vec::with_capacity(ROUNDS * LEASE_BATCH);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let leased = store.lease_run_items("run-bench", "worker-1", LEASE_BATCH).expect("lease");
        leases.push(started.elapsed());
        assert_eq!(leased.len(), LEASE_BATCH);
        for item in leased {
            let started = Instant::now();
            let completion = ItemCompletion::Done { result: item.item.as_bytes().to_vec() };
            let recorded = store
                .complete_run_item("run-bench", &item.item, "worker-1", item.attempts, completion)
                .expect("complete");
            completions.push(started.elapsed());
            assert!(recorded);
        }
    }

    println!();
    println!("add items:            {add_rate:>10.0} items/s in batches of {ADD_BATCH}");
    println!("lease {LEASE_BATCH} items:       {}   (target well under 10 ms)", summary(&mut leases));
    println!("complete one item:    {}   (target well under 10 ms)", summary(&mut completions));
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction).round() as usize];
    format!(
        "median {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms   ({} calls)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        samples.len()
    )
}
