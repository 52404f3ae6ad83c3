//! How PostgreSQL errors become [`StateError`]s: a full disk on the server is
//! `DiskFull`, everything else is `Backend` with what the store was doing.

use mayfly_state::{Result, StateError};

/// Map a PostgreSQL error met while doing `what`.
pub fn state_error(what: &str, error: postgres::Error) -> StateError {
    if error.code() == Some(&postgres::error::SqlState::DISK_FULL) {
        tracing::warn!(what, error = %error, "the PostgreSQL server's disk is full");
        return StateError::DiskFull;
    }
    // `postgres::Error`'s Display omits the server's message; its source has it.
    match error.as_db_error() {
        Some(db) => StateError::Backend(format!("could not {what}: {}: {}", db.severity(), db.message())),
        None => StateError::Backend(format!("could not {what}: {error}")),
    }
}

/// Attach what the store was doing to a PostgreSQL error.
pub trait PgResultExt<T> {
    fn context(self, what: &str) -> Result<T>;
    /// Like `context`, but builds the description only on error.
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PgResultExt<T> for std::result::Result<T, postgres::Error> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|error| state_error(what, error))
    }

    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|error| state_error(&what(), error))
    }
}
