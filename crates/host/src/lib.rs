//! The library composition root (issue 11 §1): opening a project and
//! choosing its state store from one registry of backends by URL scheme
//! ([`backends`]: the embedded SQLite file by default, or PostgreSQL by
//! `MAYFLY_STATE_URL` or `[state] url`, its password from [`password`]),
//! and wiring the application from the library crates: deploying
//! ([`deploy`]), the control plane ([`control_plane`]), the HTTPS API
//! ([`api_server`]), job runs and the provisioners ([`jobs`]), a run's
//! coordinator and where its workers run ([`coordinator`]) and the audit
//! ([`audit`]). The CLI parses arguments and prints; other front ends and
//! in-process tests compose a project the same way.

pub mod api_server;
pub mod audit;
pub mod backends;
pub mod control_plane;
pub mod coordinator;
pub mod dashboard_access;
pub mod deploy;
pub mod deployment;
pub mod jobs;
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

/// Something the command needs does not exist (e.g. no deployment yet). The
/// CLI exits with code 4 for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);
