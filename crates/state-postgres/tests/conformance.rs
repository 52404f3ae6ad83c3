//! The shared state store conformance suite, run against a real PostgreSQL
//! 15 server: one test per case, each on a fresh database of its own, for
//! every concern.

mod support;

use std::sync::Arc;

use mayfly_core::{ManualClock, Timestamp};
use mayfly_state::conformance::Subject;
use mayfly_state_postgres::PostgresStore;

fn fresh_subject() -> Subject<PostgresStore> {
    let database = support::TestDatabase::create();
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let store = PostgresStore::open(&database.url, Arc::new(clock.clone())).expect("open a fresh store");
    Subject::new(Box::new(store), clock).keeping(database)
}

mayfly_state::conformance_tests!(fresh_subject);
