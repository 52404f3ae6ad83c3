//! How SQLite errors become [`StateError`]s: a full disk is `DiskFull` (the
//! caller can free space and retry), everything else is `Backend` with what
//! the store was doing when it failed.

use mayfly_state::{Result, StateError};
use rusqlite::ErrorCode;

/// Map a SQLite error met while doing `what`.
pub fn state_error(what: &str, error: rusqlite::Error) -> StateError {
    if is_disk_full(&error) {
        tracing::warn!(what, error = %error, "state store disk is full");
        return StateError::DiskFull;
    }
    StateError::Backend(format!("could not {what}: {error}"))
}

/// Whether SQLite reported that it could not write because the disk is full.
pub fn is_disk_full(error: &rusqlite::Error) -> bool {
    match error {
        // SQLite's unix VFS turns ENOSPC from write(2) into SQLITE_FULL.
        rusqlite::Error::SqliteFailure(failure, _) => failure.code == ErrorCode::DiskFull,
        _ => false,
    }
}

/// Attach what the store was doing to a SQLite error.
pub trait SqliteResultExt<T> {
    fn context(self, what: &str) -> Result<T>;
    /// Like `context`, but builds the description only on error (for per-row hot paths).
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SqliteResultExt<T> for std::result::Result<T, rusqlite::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|error| state_error(what, error))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| state_error(&what(), error))
    }
}
