//! The conformance suite: test functions that take any [`StateStore`] and check
//! it keeps the contract. Every backend's tests call [`run_all`] (or the
//! functions one by one) with a fresh store opened on a [`ManualClock`].

use crate::StateStore;
use mayfly_core::ManualClock;

/// A freshly opened, empty store and the clock it was opened with.
pub struct Subject {
    pub store: Box<dyn StateStore>,
    pub clock: ManualClock,
}
