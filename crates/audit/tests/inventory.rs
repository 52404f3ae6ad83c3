//! Taking the inventory from real components — a SQLite store, local
//! buckets, processes started by the local provisioner — and reaping what
//! the orphan rule finds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mayfly_audit::{
    AuditSettings, AuditSeverity, InventorySources, NetworkInventory, StateStoreEntry, check, reap_orphans_everywhere,
    take_inventory,
};
use mayfly_buckets::Buckets;
use mayfly_core::{Clock, ManualClock, Name, Timestamp};
use mayfly_fleet::{LocalProvisioner, ProcessSpec, Provisioner, ResourceId, TAG_PROJECT, TAG_ROLE, TAG_RUN, Tags};
use mayfly_state::prelude::*;
use mayfly_state::{NewRun, StateStore, WorkerRecord};
use mayfly_state_sqlite::SqliteStore;

const SPEC: &str = r#"version = 1
name = "inventory-test"
tags = { owner = "lab" }
[policy]
encryption = "required"
[pricing]
worker_hour = 360
[buckets.logs]
retention = "30d"
[functions.work]
command = ["true"]
[jobs.scan]
source = { bucket = "logs", prefix = "in/" }
function = "work"
logs = "logs"
"#;

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

async fn start_tagged(provisioner: &LocalProvisioner, run: &str) -> ResourceId {
    let mut spec = ProcessSpec::new("sleep", ["30"]);
    spec.env.insert("PATH".into(), std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()));
    spec.tags = Tags::new()
        .with(TAG_PROJECT, "inventory-test")
        .with(TAG_RUN, run)
        .with(TAG_ROLE, "worker")
        .with("owner", "lab");
    provisioner.start(spec).await.expect("start a tagged process")
}

#[tokio::test]
async fn the_inventory_reads_the_store_buckets_and_live_processes_and_reaping_removes_orphans() {
    let directory = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let shared_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = Arc::new(SqliteStore::open(&directory.path().join("state.db"), shared_clock.clone()).unwrap());
    let state: Arc<dyn StateStore> = store.clone();
    // Opened without a keyring: the audit must see these buckets as unencrypted.
    let buckets = Buckets::open(&directory.path().join("buckets"), state.clone(), shared_clock).unwrap();
    let architecture = mayfly_spec::parse("mayfly.toml", SPEC).unwrap();

    buckets.create_bucket(&name("logs"), &[("owner".into(), "lab".into())]).await.unwrap();
    buckets.put_bytes(&name("logs"), "runs/run-1/w1-001.log.zst", "sealed".into()).await.unwrap();
    buckets.put_bytes(&name("logs"), "in/not-a-log", "x".into()).await.unwrap();
    let run = NewRun {
        id: "run-1".into(),
        job: name("scan"),
        deployment_version: None,
        trigger: "manual".into(),
        deadline: clock.now().saturating_add(Duration::from_secs(3600)),
        budget: Some(0.5),
    };
    store.create_run(run).unwrap();
    assert!(store.claim_run("run-1", "coordinator-1", Duration::from_secs(30)).unwrap());
    store
        .upsert_worker(&WorkerRecord {
            run_id: "run-1".into(),
            worker: "w1-001".into(),
            resource: "pid:1:1".into(),
            started_at: clock.now(),
            stopped_at: None,
            end: None,
            items_done: 0,
            items_failed: 0,
            busy: Duration::ZERO,
            log_object: None,
            log_sha256: None,
        })
        .unwrap();
    clock.advance(Duration::from_secs(10));

    let local = LocalProvisioner::new();
    let of_live_run = start_tagged(&local, "run-1").await;
    let orphan = start_tagged(&local, "run-unknown").await;
    let ignored = start_tagged(&local, "run-unknown").await;
    let provisioners: Vec<Arc<dyn Provisioner>> = vec![Arc::new(local.clone())];
    let networks: Vec<Arc<dyn NetworkInventory>> = Vec::new();
    let ignore = [ignored.clone()];
    let sources = InventorySources {
        architecture: &architecture,
        state: store.as_ref(),
        state_store: StateStoreEntry {
            backend: "sqlite".into(),
            location: "state.db".into(),
            payloads_encrypted: store.payloads_encrypted(),
        },
        buckets: &buckets,
        provisioners: &provisioners,
        networks: &networks,
        ignore: &ignore,
        clock: &clock,
    };
    let inventory = take_inventory(&sources).await.unwrap();

    let live: BTreeSet<&str> = inventory.live.iter().map(|live| live.id.as_str()).collect();
    assert_eq!(live, BTreeSet::from([of_live_run.0.as_str(), orphan.0.as_str()]), "the ignored one is left out");
    assert!(
        inventory
            .live
            .iter()
            .all(|live| live.owner.as_deref() == Some("lab") && live.role.as_deref() == Some("worker"))
    );
    assert_eq!(inventory.buckets[0].owner.as_deref(), Some("lab"));
    assert!(!inventory.buckets[0].encrypted);
    assert_eq!(inventory.buckets[0].retention, Some(Duration::from_secs(30 * 86_400)));
    let sealed: Vec<&str> = inventory.sealed_logs.iter().map(|log| log.key.as_str()).collect();
    assert_eq!(sealed, ["runs/run-1/w1-001.log.zst"], "only what is under runs/");
    assert!(!inventory.state_store.payloads_encrypted);
    // 10 s of one worker at 360 an hour.
    assert!((inventory.runs[0].estimated_cost - 1.0).abs() < 1e-9, "{:?}", inventory.runs[0]);
    assert_eq!(inventory.functions[0].runtime, "process");
    assert_eq!(inventory.jobs[0].logs, Some(name("logs")));

    let findings = check(&inventory, &architecture.policy, &AuditSettings::default());
    let found: Vec<(&str, AuditSeverity, &str)> =
        findings.iter().map(|f| (f.rule.as_str(), f.severity, f.resource.as_str())).collect();
    assert_eq!(
        found,
        [
            ("encryption", AuditSeverity::Violation, "logs"),
            ("encryption", AuditSeverity::Violation, "state.db"),
            ("orphaned-resource", AuditSeverity::Violation, orphan.0.as_str()),
            // Only a worker of the running run is alive, no coordinator.
            ("run-coordinator", AuditSeverity::Violation, "run-1"),
            ("run-budget", AuditSeverity::Violation, "run-1"),
        ]
    );

    let live_runs = BTreeSet::from(["run-1".to_owned()]);
    let reaped = reap_orphans_everywhere(&provisioners, &name("inventory-test"), &live_runs, Duration::from_secs(2))
        .await
        .unwrap();
    let reaped: BTreeSet<String> = reaped.into_iter().map(|resource| resource.id).collect();
    assert_eq!(reaped, BTreeSet::from([orphan.0.clone(), ignored.0.clone()]), "ignoring is for the inventory only");
    assert!(!local.state(&orphan).await.unwrap().is_running());
    assert!(local.state(&of_live_run).await.unwrap().is_running(), "a live run's process is kept");
    local.kill(&of_live_run).await.unwrap();
}
