//! A leader whose lease another host took over while it was not looking (as
//! after a pause, or a clock that ran ahead on the other host) finds out
//! from its first fenced write, not at its next renewal: the write is
//! refused and changes nothing, the duties stop at once, and the control
//! plane says it lost the lease and stands by, without failing or writing
//! again. A real SQLite store; the campaign renews only every 20 s, so
//! anything sooner is the fence's doing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly_control::leadership::CONTROL_PLANE_LEASE;
use mayfly_control::{Announcement, ControlPlaneConfig, LeaderLease, ShutdownTrigger};
use mayfly_core::{Clock, Name, NewObjectEvent, ObjectEventKind, SystemClock};
use mayfly_runtime::{Invoker, InvokerConfig};
use mayfly_state::StateStore;
use mayfly_state_sqlite::SqliteStore;

const SPEC: &str = r#"version = 1
name = "fencing"
[buckets.inbox]
[queues.work]
[[routes]]
from = { bucket = "inbox" }
to = { queue = "work" }
"#;

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_write_is_fenced_stops_its_duties_at_once_and_stands_by_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&dir.path().join("state.db"), clock.clone()).unwrap());
    state.create_bucket(&name("inbox"), &[]).unwrap();
    state.create_queue(&name("work"), &Default::default(), &[]).unwrap();
    let config = ControlPlaneConfig {
        architecture: Arc::new(mayfly_spec::parse("test", SPEC).unwrap()),
        deployment_version: None,
        project_root: dir.path().to_path_buf(),
        mayfly_bin: "mayfly".into(),
        state: state.clone(),
        invoker: Invoker::new(InvokerConfig::default()),
        clock: clock.clone(),
        poll_interval: Duration::from_millis(10),
        jobs: None,
        leader: LeaderLease {
            holder: "host-a".into(),
            ttl: Duration::from_secs(60),
            renew_every: Duration::from_secs(20),
            dead_predecessor: None,
        },
    };
    let announced = Arc::new(Mutex::new(Vec::new()));
    let (stop, shutdown) = ShutdownTrigger::new();
    let recorder = announced.clone();
    let running = tokio::spawn(mayfly_control::run_announcing(config, shutdown, move |announcement| {
        recorder.lock().unwrap().push(announcement)
    }));
    let roles = || {
        announced
            .lock()
            .unwrap()
            .iter()
            .filter_map(|announcement| match announcement {
                Announcement::Role(role) => Some(format!("{role:?}")),
                Announcement::LostLease { led_under, taken_under, taken_by } => {
                    Some(format!("lost {led_under} to {taken_under} {taken_by:?}"))
                }
                Announcement::Deployment(_) => None,
            })
            .collect::<Vec<_>>()
    };
    wait_until("leading", Duration::from_secs(10), || roles().contains(&"Leader { term: 1 }".to_owned()));

    // Another host takes the lease over (its clock says it lapsed), and an object arrives.
    let later = clock.now().saturating_add(Duration::from_secs(61));
    let taken = state.acquire_lease(CONTROL_PLANE_LEASE, "host-b", Duration::from_secs(60), later).unwrap();
    assert_eq!(taken.map(|lease| lease.term), Some(2));
    state
        .append_object_event(NewObjectEvent {
            bucket: name("inbox"),
            key: "chart.txt".into(),
            kind: ObjectEventKind::Created,
            size: 1,
            etag: None,
            at: clock.now(),
            reason: None,
        })
        .unwrap();

    // The router's first write under term 1 is refused: the duties stop at once.
    let took =
        wait_until("standing by", Duration::from_secs(5), || roles().iter().any(|role| role.contains("Standby")));
    let roles_now = roles();
    assert_eq!(roles_now[0], "Leader { term: 1 }");
    assert_eq!(roles_now[1], "lost 1 to 2 Some(\"host-b\")", "{roles_now:?}");
    assert!(roles_now[2].starts_with("Standby { leader: Some(Lease {") && roles_now[2].contains("\"host-b\""));
    eprintln!("stood by {took:?} after the takeover");
    // It wrote nothing, then or since: no message, the router's cursor where it was.
    std::thread::sleep(Duration::from_millis(500));
    assert!(state.peek_messages(&name("work"), 10).unwrap().is_empty());
    assert_eq!(state.consumer_cursor("router").unwrap(), 0);
    assert_eq!(
        state.lease(CONTROL_PLANE_LEASE).unwrap().map(|lease| (lease.holder, lease.term)),
        Some(("host-b".into(), 2))
    );

    // The control plane runs on as a standby and stops cleanly: losing the lease is no failure.
    assert!(!running.is_finished(), "the control plane stopped");
    stop.trigger();
    running.await.unwrap().expect("the control plane stops without an error");
    assert_eq!(roles().len(), 3, "nothing more was announced: {:?}", roles());
}
