//! The shared state store conformance suite, run against a real SQLite file:
//! one test per case, each on a fresh store in its own temporary directory.

use std::sync::Arc;

use mayfly_core::{ManualClock, Timestamp};
use mayfly_state::conformance::Subject;
use mayfly_state_sqlite::SqliteStore;

fn fresh_subject() -> Subject<SqliteStore> {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let store = SqliteStore::open(&directory.path().join(".mayfly/state.db"), Arc::new(clock.clone()))
        .expect("open a fresh store");
    Subject::new(Box::new(store), clock).keeping(directory)
}

mayfly_state::conformance_tests!(fresh_subject);
