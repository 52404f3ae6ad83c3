//! The access log is append-only in the file itself: SQL that tries to change
//! a record, or remove one younger than six years (`ACCESS_LOG_RETENTION`),
//! is refused by the schema's triggers, whoever runs it. Only a record past
//! that age may go, which is what retention does.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mayfly_core::{ManualClock, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{ACCESS_LOG_RETENTION, AccessRecord};
use mayfly_state_sqlite::SqliteStore;

fn wall_clock_now() -> Timestamp {
    Timestamp::from_millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64)
}

fn record(path: &str, at: Timestamp) -> AccessRecord {
    AccessRecord {
        at,
        token_id: Some("0123456789abcdef".to_owned()),
        client: "127.0.0.1:4000".to_owned(),
        method: "GET".to_owned(),
        path: path.to_owned(),
        resource: "job/nightly/result/17".to_owned(),
        status: 200,
        outcome: "ok".to_owned(),
    }
}

#[test]
fn records_cannot_be_changed_or_deleted_before_six_years_even_with_plain_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let now = wall_clock_now();
    let store = SqliteStore::open(&path, Arc::new(ManualClock::starting_at(now))).unwrap();
    let seven_years_ago = Timestamp::from_millis(now.as_millis() - 7 * 365 * 86_400_000);
    let young = record("/v1/jobs/nightly/results/17", now);
    store.append_access_records(&[record("/v1/old", seven_years_ago), young.clone()]).unwrap();

    let raw = rusqlite::Connection::open(&path).unwrap();
    for sql in [
        "UPDATE access_log SET status = 403",
        "DELETE FROM access_log",
        "DELETE FROM access_log WHERE path = '/v1/jobs/nightly/results/17'",
    ] {
        let error = raw.execute(sql, []).unwrap_err();
        assert!(error.to_string().contains("the access log is append-only"), "{sql}: {error}");
    }
    assert_eq!(store.access_records(None, 10).unwrap().len(), 2, "a refused statement changes nothing");

    // Asked to prune past the six years, the store is refused by its own file.
    let too_late = now.saturating_add(Duration::from_secs(1));
    assert!(store.prune_access_records(too_late, 10).is_err(), "a young record is never deleted");
    assert_eq!(store.access_records(None, 10).unwrap().len(), 2);

    // A record past six years may go, by retention or by hand.
    let floor = Timestamp::from_millis(now.as_millis() - ACCESS_LOG_RETENTION.as_millis() as i64);
    assert_eq!(store.prune_access_records(floor, 10).unwrap(), 1);
    let stored = store.access_records(None, 10).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].record, young, "the young record is as appended");
}
