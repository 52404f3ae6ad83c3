//! A run whose coordinator is gone gets one new coordinator, not one a
//! second: the supervisor of `mayfly up` checks every second for runs whose
//! lease lapsed, and until the coordinator it started has claimed the run,
//! the lease still looks lapsed. A coordinator that takes longer than a
//! second to start (a container on a busy host) was torn down and replaced
//! every second, and under a steady load might never get to claim the run.
//! Here the "coordinator" is a real process that never claims: a script
//! that records each start and sleeps; the supervisor must start it once
//! and leave it running. A real SQLite store and the local provisioner.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use mayfly_control::jobs::CoordinatorLaunch;
use mayfly_control::{ControlPlaneConfig, JobsConfig, LeaderLease, ShutdownTrigger};
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_fleet::{LocalProvisioner, Provisioner, TAG_RUN, TagFilter};
use mayfly_runtime::{Invoker, InvokerConfig};
use mayfly_state::{NewRun, StateStore};
use mayfly_state_sqlite::SqliteStore;

const SPEC: &str = r#"version = 1
name = "relaunch"
[buckets.scans]
[functions.work]
command = ["true"]
[jobs.scan]
source = { manifest = { bucket = "scans", key = "list.txt" } }
function = "work"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_run_gets_one_new_coordinator_while_it_starts_not_one_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join(".mayfly");
    std::fs::create_dir_all(&data_dir).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&data_dir.join("state.db"), clock.clone()).unwrap());
    state.create_bucket(&Name::new("scans").unwrap(), &[]).unwrap();
    // What `mayfly deploy` makes for the function: its queue of asynchronous invocations.
    state.create_queue(&Name::new("mayfly-async-work").unwrap(), &Default::default(), &[]).unwrap();

    // A run whose coordinator claimed it and died: its lease has lapsed.
    let run = "run-20261205t000000-relaunch";
    state
        .create_run(NewRun {
            id: run.to_owned(),
            job: Name::new("scan").unwrap(),
            deployment_version: None,
            trigger: "manual".to_owned(),
            deadline: clock.now().saturating_add(Duration::from_secs(3600)),
            budget: None,
        })
        .unwrap();
    assert!(state.claim_run(run, "coordinator-that-died", Duration::from_millis(1)).unwrap());
    std::thread::sleep(Duration::from_millis(20));

    // The "coordinator": records that it started, then never claims the run.
    let starts = dir.path().join("starts.log");
    let script = dir.path().join("slow-coordinator.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec sleep 60\n", starts.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let local: Arc<dyn Provisioner> = Arc::new(LocalProvisioner::new());
    let config = ControlPlaneConfig {
        architecture: Arc::new(mayfly_spec::parse("test", SPEC).unwrap()),
        deployment_version: None,
        project_root: dir.path().to_path_buf(),
        mayfly_bin: "mayfly".into(),
        state: state.clone(),
        invoker: Invoker::new(InvokerConfig::default()),
        clock: clock.clone(),
        poll_interval: Duration::from_millis(50),
        jobs: Some(JobsConfig {
            provisioner: local.clone(),
            fleet: vec![local.clone()],
            launch: CoordinatorLaunch {
                mayfly_bin: script.clone(),
                project_root: dir.path().to_path_buf(),
                data_dir: data_dir.clone(),
                log_filter: "info".to_owned(),
                secret_env: BTreeMap::new(),
            },
        }),
        leader: LeaderLease {
            holder: "host-a".into(),
            ttl: Duration::from_secs(60),
            renew_every: Duration::from_secs(20),
            dead_predecessor: None,
        },
    };
    let (stop, shutdown) = ShutdownTrigger::new();
    let running = tokio::spawn(mayfly_control::run_announcing(config, shutdown, |_| {}));

    // Four and a half supervisor periods of one second each.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    let live = local.inventory(&TagFilter::new().with(TAG_RUN, run)).await.unwrap();
    stop.trigger();
    running.await.unwrap().expect("the control plane stops cleanly");
    for resource in &live {
        local.kill(&resource.id).await.ok();
    }

    assert_eq!(started.lines().count(), 1, "coordinators started: {started:?}");
    assert!(started.contains(&format!("coordinator --run {run}")), "{started}");
    assert_eq!(live.len(), 1, "the one it started runs on, not torn down: {live:?}");
}
