//! Retention end to end on a real SQLite file and real bucket folders: one
//! pass deletes exactly what outlived its retention — objects by their
//! bucket's `retention`, sealed logs by `[policy].log_retention`, messages by
//! their queue's, the ledgers by `LedgerRetention` — and nothing else. Time
//! is injected as the pass's `now`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mayfly_buckets::Buckets;
use mayfly_control::retention::{LedgerRetention, RetentionReport, enforce_retention};
use mayfly_core::queue::QueueConfig;
use mayfly_core::run::RunStatus;
use mayfly_core::{DeletionReason, ManualClock, Name, ObjectEventKind, Timestamp};
use mayfly_state::{AccessRecord, InvocationRecord, NewRun, OutgoingMessage, StateStore};
use mayfly_state_sqlite::SqliteStore;

const SPEC: &str = r#"version = 1
name = "retention"
[policy]
log_retention = "60d"
[buckets.scratch]
retention = "30d"
[buckets.keep]
[buckets.logs]
[queues.work]
retention = "7d"
[functions.f]
command = ["true"]
[jobs.nightly]
source = { queue = "work" }
function = "f"
logs = "logs"
"#;

const DAY: Duration = Duration::from_secs(86_400);

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn wall_clock_now() -> Timestamp {
    Timestamp::from_millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64)
}

fn access(path: &str, at: Timestamp) -> AccessRecord {
    AccessRecord {
        at,
        token_id: None,
        client: "127.0.0.1:1".into(),
        method: "GET".into(),
        path: path.into(),
        resource: path.into(),
        status: 200,
        outcome: "ok".into(),
    }
}

fn invocation(started_at: Timestamp) -> InvocationRecord {
    InvocationRecord {
        request_id: "req-1".into(),
        function: name("f"),
        deployment_version: None,
        trigger: "invoke".into(),
        attempt: 1,
        started_at,
        duration: Duration::from_millis(3),
        init_duration: None,
        outcome: InvocationRecord::SUCCESS.into(),
        error_type: None,
        error_message: None,
        peak_memory: None,
        bytes_in: 0,
        bytes_out: 0,
        estimated_cost: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_deletes_exactly_what_outlived_its_retention() {
    let directory = tempfile::tempdir().unwrap();
    let now = wall_clock_now();
    let clock = Arc::new(ManualClock::starting_at(now));
    let state: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(&directory.path().join("state.db"), clock.clone()).unwrap());
    let buckets = Buckets::open(&directory.path().join("buckets"), state.clone(), clock.clone()).unwrap();
    let architecture = mayfly_spec::parse("mayfly.toml", SPEC).unwrap();
    for bucket in ["scratch", "keep", "logs"] {
        buckets.create_bucket(&name(bucket), &[]).await.unwrap();
    }
    let work = name("work");
    state.create_queue(&work, &QueueConfig { retention: 7 * DAY, ..QueueConfig::default() }, &[]).unwrap();
    for (bucket, key) in
        [("scratch", "a.txt"), ("keep", "b.txt"), ("logs", "runs/run-1/w1.log.zst"), ("logs", "notes.txt")]
    {
        buckets.put_bytes(&name(bucket), key, Bytes::from_static(b"chart")).await.unwrap();
    }
    state.send_messages(&work, &[OutgoingMessage::new(b"chart 1".to_vec())]).unwrap();
    state.record_invocation(&invocation(now), b"logs").unwrap();
    state
        .create_run(NewRun {
            id: "run-1".into(),
            job: name("nightly"),
            deployment_version: None,
            trigger: "manual".into(),
            deadline: now.saturating_add(DAY),
            budget: None,
        })
        .unwrap();
    assert!(state.claim_run("run-1", "coordinator", Duration::from_secs(30)).unwrap());
    state.finish_run("run-1", "coordinator", RunStatus::Succeeded, None, None).unwrap();
    let seven_years_ago = Timestamp::from_millis(now.as_millis() - 7 * 365 * DAY.as_millis() as i64);
    state.append_access_records(&[access("/v1/old", seven_years_ago), access("/v1/new", now)]).unwrap();
    let events = state.object_events_after(0, 100).unwrap();
    state.set_consumer_cursor("router", events.last().unwrap().sequence).unwrap();
    let ledgers = LedgerRetention::default();

    // Ten days on: only the week-old message and the seven-year-old access record.
    let report = enforce_retention(state.as_ref(), &buckets, &architecture, &ledgers, now.saturating_add(10 * DAY))
        .await
        .unwrap();
    assert_eq!(report, RetentionReport { messages: 1, access_records: 1, ..RetentionReport::default() });
    assert_eq!(state.queue_stats(&work).unwrap().visible, 0);

    // Ninety-five days on: the scratch object, the sealed log, the invocation,
    // the finished run and the four events every consumer has read.
    let report = enforce_retention(state.as_ref(), &buckets, &architecture, &ledgers, now.saturating_add(95 * DAY))
        .await
        .unwrap();
    assert_eq!(
        report,
        RetentionReport {
            objects: 1,
            sealed_logs: 1,
            invocations: 1,
            runs: 1,
            events: 4,
            ..RetentionReport::default()
        }
    );
    let keys = |bucket: &'static str| {
        let buckets = buckets.clone();
        async move {
            buckets.list(&name(bucket), None).await.unwrap().into_iter().map(|object| object.key).collect::<Vec<_>>()
        }
    };
    assert_eq!(keys("scratch").await, Vec::<String>::new());
    assert_eq!(keys("keep").await, ["b.txt"], "a bucket without retention keeps everything");
    assert_eq!(keys("logs").await, ["notes.txt"], "log_retention applies to sealed run logs only");
    let deletions: Vec<(String, Option<DeletionReason>)> = state
        .object_events_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == ObjectEventKind::Deleted)
        .map(|event| (format!("{}/{}", event.bucket, event.key), event.reason))
        .collect();
    assert_eq!(
        deletions,
        [
            ("scratch/a.txt".to_owned(), Some(DeletionReason::Retention)),
            ("logs/runs/run-1/w1.log.zst".to_owned(), Some(DeletionReason::LogRetention)),
        ],
        "each expiry leaves a deleted event with its reason, unread by the router, so never pruned yet"
    );
    assert!(state.run("run-1").is_err(), "the finished run is gone");
    let left: Vec<String> = state.access_records(None, 10).unwrap().into_iter().map(|r| r.record.path).collect();
    assert_eq!(left, ["/v1/new"]);

    // Nothing more to do: a second pass at the same time deletes nothing.
    let report = enforce_retention(state.as_ref(), &buckets, &architecture, &ledgers, now.saturating_add(95 * DAY))
        .await
        .unwrap();
    assert_eq!(report, RetentionReport::default());
}
