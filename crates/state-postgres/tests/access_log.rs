//! The access log is append-only in PostgreSQL itself, for every SQL client:
//! no UPDATE, and no DELETE of a record younger than six years.

mod support;

use std::sync::Arc;

use mayfly_core::{Clock, SystemClock};
use mayfly_state::AccessRecord;
use mayfly_state::prelude::*;
use mayfly_state_postgres::PostgresStore;

#[test]
fn another_sql_client_can_neither_change_nor_delete_a_young_access_record() {
    let database = support::TestDatabase::create();
    let store = PostgresStore::open(&database.url, Arc::new(SystemClock)).expect("open");
    let record = AccessRecord {
        at: SystemClock.now(),
        token_id: Some("t1".to_owned()),
        client: "127.0.0.1".to_owned(),
        method: "GET".to_owned(),
        path: "/v1/runs".to_owned(),
        resource: "runs".to_owned(),
        status: 200,
        outcome: "ok".to_owned(),
    };
    store.append_access_records(&[record]).expect("append");

    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).expect("connect");
    let update = client.execute("UPDATE access_log SET status = 500", &[]).expect_err("no update");
    assert!(format!("{update:?}").contains("append-only"), "{update:?}");
    let delete = client.execute("DELETE FROM access_log", &[]).expect_err("no delete of a young record");
    assert!(format!("{delete:?}").contains("kept for six years"), "{delete:?}");
    assert_eq!(store.access_records(None, 10).expect("read").len(), 1, "the record is still there");
}
