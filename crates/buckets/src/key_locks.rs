//! Serialises the commit step of writes to one key within this process, so the
//! event log records a key's puts and deletes in the order the object store
//! applied them (two racing puts of one key could otherwise append their
//! events in the opposite order to their renames, and the log would name the
//! wrong final version).
//!
//! Only the commit is held under the lock — the rename or delete plus the
//! event append — not the upload, so a slow upload blocks nobody. Keys hash
//! onto a fixed set of stripes: constant memory, and an occasional unrelated
//! key waiting a moment is harmless.

use std::hash::{BuildHasher, RandomState};

use mayfly_core::Name;
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 64;

#[derive(Debug)]
pub(crate) struct KeyLocks {
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl KeyLocks {
    pub(crate) fn new() -> KeyLocks {
        KeyLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(), hasher: RandomState::new() }
    }

    pub(crate) async fn lock(&self, bucket: &Name, key: &str) -> MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one((bucket, key)) % STRIPES as u64) as usize; // < STRIPES, fits usize
        self.stripes[stripe].lock().await
    }
}
