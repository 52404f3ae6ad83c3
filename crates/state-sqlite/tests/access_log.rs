//! The access log is append-only in the file itself: SQL that tries to change
//! or remove a record is refused by the schema's triggers, whoever runs it.

use std::sync::Arc;

use mayfly_core::{ManualClock, Timestamp};
use mayfly_state::{AccessRecord, StateStore};
use mayfly_state_sqlite::SqliteStore;

#[test]
fn records_cannot_be_changed_or_deleted_even_with_plain_sql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStore::open(&path, Arc::new(ManualClock::starting_at(Timestamp::from_millis(1_000)))).unwrap();
    let record = AccessRecord {
        at: Timestamp::from_millis(1_000),
        token_id: Some("0123456789abcdef".to_owned()),
        client: "127.0.0.1:4000".to_owned(),
        method: "GET".to_owned(),
        path: "/v1/jobs/nightly/results/17".to_owned(),
        resource: "job/nightly/result/17".to_owned(),
        status: 200,
        outcome: "ok".to_owned(),
    };
    store.append_access_records(std::slice::from_ref(&record)).unwrap();

    let raw = rusqlite::Connection::open(&path).unwrap();
    for sql in ["UPDATE access_log SET status = 403", "DELETE FROM access_log"] {
        let error = raw.execute(sql, []).unwrap_err();
        assert!(error.to_string().contains("the access log is append-only"), "{sql}: {error}");
    }
    let stored = store.access_records(None, 10).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].record, record, "the record is as appended");
}
