//! What can go wrong opening an envelope or loading a keyring. Every message
//! says what happened, to which object (the caller's context, e.g.
//! `bucket/key`) or file, and what to do.

use std::io;
use std::path::PathBuf;

/// Errors reading or writing an envelope. `context` is the caller-supplied
/// context the envelope is bound to (for bucket objects, `bucket/key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "`{context}` failed authentication: its encrypted bytes were changed (or it belongs to another object), so no unverified byte of it was returned; restore it from a backup"
    )]
    Tampered { context: String },

    #[error(
        "`{context}` is truncated: its encrypted stream ends before its final chunk, so it was cut short; no unverified byte of it was returned; restore it from a backup"
    )]
    Truncated { context: String },

    #[error(
        "`{context}` was encrypted under key `{id}`, which the keyring does not hold; load the keyring that has it (the project's .mayfly/keyring.json, or MAYFLY_KEYRING)"
    )]
    UnknownKey { id: String, context: String },

    #[error(
        "`{context}` is not encrypted (it has no MAYFLYE1 envelope header): it was stored before encryption was on, or replaced by something else"
    )]
    NotEncrypted { context: String },

    #[error("`{context}` has an invalid envelope header ({detail}); it was damaged, or written by a newer Mayfly")]
    BadHeader { context: String, detail: String },
}

impl CryptoError {
    /// The envelope error carried by an io error from [`crate::DecryptingReader`]
    /// or [`crate::EncryptingReader`], if that is what it is.
    pub fn from_io(error: &io::Error) -> Option<&CryptoError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<CryptoError>())
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// Errors loading, parsing or saving a keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    #[error("no keyring at {}; create one (`mayfly deploy` does), restore it from your backup, or set MAYFLY_KEYRING", path.display())]
    Missing { path: PathBuf },

    #[error(
        "the keyring {} can be read by other users (mode {mode:o}); it holds the keys to every encrypted object. Run `chmod 600 {}` and retry",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("the keyring from {origin} is invalid: {detail}")]
    Invalid { origin: String, detail: String },
}
