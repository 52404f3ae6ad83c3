//! The state backends a project can use, in one registry keyed by URL
//! scheme: no URL or `sqlite:` is the embedded store in the project's data
//! directory (`.mayfly/state.db`), the default. Opening, "does it hold a
//! project yet", a second handle and what a backend cannot do are decided
//! here, once, for every command.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use mayfly_core::Clock;
use mayfly_state::{KeyMaintenance, StateError};
use mayfly_state_sqlite::{Keyring, SqliteStore};

use crate::ProjectStore;

/// One kind of state store, and the URL schemes that choose it.
#[derive(Debug)]
pub struct StateBackend {
    /// Its name in messages and in the audit's inventory.
    pub name: &'static str,
    /// The URL schemes that choose it (before the `:`).
    pub schemes: &'static [&'static str],
    /// Whether it records which keys sealed its data, so that `mayfly keys
    /// rewrap`, `retire` and `init --replace-lost-keyring` can run on it.
    pub key_maintenance: bool,
}

/// The embedded store: one SQLite file in the project's data directory.
pub static EMBEDDED: StateBackend = StateBackend { name: "sqlite", schemes: &["sqlite"], key_maintenance: true };

/// Every state backend, the default first.
pub static STATE_BACKENDS: &[&StateBackend] = &[&EMBEDDED];

/// The backend a state URL's scheme chooses; an unknown scheme is refused
/// with the schemes there are.
pub fn state_backend_for_url(url: &str) -> Result<&'static StateBackend> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default().to_ascii_lowercase();
    if let Some(backend) = STATE_BACKENDS.iter().find(|backend| backend.schemes.contains(&scheme.as_str())) {
        return Ok(backend);
    }
    let known: Vec<String> =
        STATE_BACKENDS.iter().flat_map(|backend| backend.schemes.iter().map(|scheme| format!("{scheme}:"))).collect();
    bail!("the state store URL `{url}` has no known scheme; use one of {}", known.join(", "))
}

/// Where a project's state is, resolved from its settings.
#[derive(Debug, Clone)]
pub enum StateTarget {
    /// The embedded SQLite file.
    Embedded { path: PathBuf },
}

/// A state store opened for a project.
pub struct OpenedState {
    pub store: Arc<dyn ProjectStore>,
    /// `None` on a backend without [`StateBackend::key_maintenance`].
    pub key_maintenance: Option<Arc<dyn KeyMaintenance>>,
}

impl StateTarget {
    pub fn backend(&self) -> &'static StateBackend {
        match self {
            StateTarget::Embedded { .. } => &EMBEDDED,
        }
    }

    /// Where it is, for messages: a path, or a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StateTarget::Embedded { path } => path.display().to_string(),
        }
    }

    /// Whether a project's state is there already (it was deployed).
    pub fn holds_project(&self) -> Result<bool> {
        match self {
            StateTarget::Embedded { path } => Ok(path.is_file()),
        }
    }

    /// Open it sealed with `keyring`, creating or migrating its schema.
    pub fn open(&self, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<OpenedState, StateError> {
        match self {
            StateTarget::Embedded { path } => {
                let store = Arc::new(SqliteStore::open_encrypted(path, clock, keyring)?);
                Ok(OpenedState { store: store.clone(), key_maintenance: Some(store) })
            }
        }
    }

    /// A second handle on the same store for a writer that must never wait
    /// behind the first one's reads (the API's access log): a connection of
    /// its own on SQLite.
    pub fn open_another_handle(
        &self,
        _opened: &Arc<dyn ProjectStore>,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<Arc<dyn ProjectStore>, StateError> {
        match self {
            StateTarget::Embedded { path } => Ok(Arc::new(SqliteStore::open_encrypted(path, clock, keyring)?)),
        }
    }

    /// Record a new keyring in place of a lost one (`mayfly keys init
    /// --replace-lost-keyring`): returns the ids of the lost keys forgotten.
    pub fn record_replacement_keyring(&self, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<Vec<String>> {
        match self {
            StateTarget::Embedded { path } => {
                let (_, lost) = SqliteStore::open_encrypted_replacing_lost_keyring(path, clock, keyring)?;
                Ok(lost)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_chooses_its_backend_by_scheme() {
        assert_eq!(state_backend_for_url("sqlite:").unwrap().name, "sqlite");
        assert_eq!(state_backend_for_url("SQLITE:").unwrap().name, "sqlite");
        let error = state_backend_for_url("mysql://db/x").unwrap_err().to_string();
        assert!(error.contains("`mysql://db/x` has no known scheme; use one of sqlite:"), "{error}");
    }
}
