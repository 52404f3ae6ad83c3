//! The whole conformance suite again, on a store opened with
//! `SqliteStore::open_encrypted`: encryption is invisible through the trait.

use std::sync::Arc;

use mayfly_core::{Clock, ManualClock, Timestamp};
use mayfly_state::conformance::Subject;
use mayfly_state_sqlite::{Keyring, SqliteStore};

fn fresh_encrypted_subject() -> Subject<SqliteStore> {
    let directory = tempfile::tempdir().expect("create a temporary directory");
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store =
        SqliteStore::open_encrypted(&directory.path().join(".mayfly/state.db"), Arc::new(clock.clone()), keyring)
            .expect("open a fresh encrypted store");
    Subject::new(Box::new(store), clock).keeping(directory)
}

mayfly_state::conformance_tests!(fresh_encrypted_subject);
