//! The conformance suite again, on stores opened with
//! `PostgresStore::open_encrypted`: sealing is invisible through the traits.

mod support;

use std::sync::Arc;

use mayfly_core::{Clock, ManualClock, Timestamp};
use mayfly_crypto::Keyring;
use mayfly_state::conformance::Subject;
use mayfly_state_postgres::PostgresStore;

fn fresh_encrypted_subject() -> Subject<PostgresStore> {
    let database = support::TestDatabase::create();
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    let keyring = Arc::new(Keyring::generate(clock.now()));
    let store =
        PostgresStore::open_encrypted(&database.url, Arc::new(clock.clone()), keyring).expect("open a fresh store");
    Subject::new(Box::new(store), clock).keeping(database)
}

mayfly_state::conformance_tests!(fresh_encrypted_subject);
