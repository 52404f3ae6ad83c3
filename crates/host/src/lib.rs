//! The library composition root (issue 11 §1): opening a project and
//! choosing its state store from one registry of backends by URL scheme
//! ([`backends`]: the embedded SQLite file by default, or PostgreSQL by
//! `MAYFLY_STATE_URL` or `[state] url`, its password from [`password`]). The CLI parses arguments and prints; what a project is
//! and how it is opened lives here, so other front ends and in-process
//! tests open a project the same way.

pub mod backends;
pub mod migrate;
pub mod password;
pub mod project;
pub mod storage;
pub mod telemetry;

use mayfly_state::{KeyringHolder, StateStore};

/// A project's open state store: every concern, and how it seals with the
/// keyring. The key maintenance of `mayfly keys` is separate
/// ([`project::OpenProject::key_maintenance`]): not every backend has it.
pub trait ProjectStore: StateStore + KeyringHolder {}

impl<T> ProjectStore for T where T: StateStore + KeyringHolder + ?Sized {}

/// An error the host decided to refuse with: carrying on would lose or
/// misread data, or the chosen backend lacks what the command needs. The
/// CLI exits with code 5 for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
