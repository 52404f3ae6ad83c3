//! The web dashboard of a Mayfly project: server-rendered pages of runs
//! (live progress, report, workers, a timeline, the item ledger), queues,
//! functions, a live log tail, recorded experiments (with the experiment
//! report's strip plot) and the audit, with one CSS file and a little
//! plain JavaScript served by the router itself (nothing is fetched from
//! anywhere else, so it works offline).
//!
//! [`router`] gives an `axum::Router` to mount at `/` of the API server.
//! Every page and data endpoint checks the browser's token through
//! [`Authorize`], the seam where the server plugs in its token check (and
//! its access log). The token travels in an `HttpOnly`, `Secure`,
//! `SameSite=Strict` cookie set by the sign-in page.
//!
//! Layout: [`format`], [`chart`], [`model`] and [`views`] are pure (records
//! in, markup out) and unit-tested; [`routes`] and [`auth`] do the IO (the
//! state store on blocking threads, live log files through
//! [`mayfly_jobs::logs`]).

pub mod auth;
pub mod chart;
pub mod format;
pub mod live_logs;
pub mod model;
pub mod routes;
pub mod views;

use std::path::PathBuf;
use std::sync::Arc;

use mayfly_core::Clock;
use mayfly_crypto::Keyring;
use mayfly_state::StateStore;

pub use crate::routes::router;

/// Why a token may not see a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, or one that is unknown, revoked or expired: sign in again.
    #[error("the token is not valid: {0}")]
    Unauthenticated(String),
    /// A valid token whose scopes do not cover the path.
    #[error("the token may not read this: {0}")]
    Forbidden(String),
    /// The token may be fine, but the check could not be made or recorded
    /// (the state store failed): nothing is shown, and trying again may work.
    #[error("the access could not be checked or recorded: {0}")]
    Unavailable(String),
}

/// Decides whether `token` may read `path` (e.g. `/runs/run-1/progress.json`;
/// signing in asks about `/`), and names who it belongs to. The API server implements it with its token
/// check, which also records the access.
pub trait Authorize: Send + Sync {
    /// The principal (a name to show and log) or why not.
    fn authorize(&self, token: &str, path: &str) -> Result<String, Denied>;
}

/// What the dashboard reads, and how it checks tokens.
#[derive(Clone)]
pub struct DashboardState {
    pub store: Arc<dyn StateStore>,
    pub authorize: Arc<dyn Authorize>,
    /// Ages and live durations are measured against it.
    pub clock: Arc<dyn Clock>,
    /// The project's name, shown in every page's title.
    pub project: String,
    /// The project's data directory (`.mayfly/`): live runs keep their
    /// workers' logs under `runs/<run>/workers/`.
    pub data_dir: PathBuf,
    /// The keyring live logs are encrypted with; `None` for a project without encryption.
    pub keyring: Option<Arc<Keyring>>,
}
