//! The state backends a project can use, in one registry keyed by URL
//! scheme: no URL or `sqlite:` is the embedded store in the project's data
//! directory (`.mayfly/state.db`), the default; `postgres://` or
//! `postgresql://` is a PostgreSQL database (`mayfly_state_postgres`). Opening, "does it hold a
//! project yet", a second handle and what a backend cannot do are decided
//! here, once, for every command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_core::Clock;
use mayfly_state::{KeyMaintenance, StateError};
use mayfly_state_postgres::{ConnectConfig, ConnectTarget, PostgresStore};
use mayfly_state_sqlite::{Keyring, SqliteStore};

use crate::ProjectStore;
use crate::password::{self, PasswordFor};

/// The environment variable that chooses the state store (over `[state] url`).
pub const STATE_URL_ENV_VAR: &str = "MAYFLY_STATE_URL";

/// The variables that choose and reach the state store, which a process
/// started with a cleared environment (a job's coordinator) must be given
/// so that the whole project uses one store.
pub const STATE_ENV_VARS: &[&str] =
    &[STATE_URL_ENV_VAR, password::STATE_PASSWORD_ENV_VAR, password::PGPASSWORD_ENV_VAR, password::PGPASSFILE_ENV_VAR];

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

/// PostgreSQL (15 or later), for a project shared by several hosts.
pub static POSTGRES: StateBackend =
    StateBackend { name: "postgresql", schemes: &["postgres", "postgresql"], key_maintenance: false };

/// Every state backend, the default first.
pub static STATE_BACKENDS: &[&StateBackend] = &[&EMBEDDED, &POSTGRES];

/// The backend a state URL's scheme chooses; an unknown scheme is refused
/// with the schemes there are.
pub fn state_backend_for_url(url: &str) -> Result<&'static StateBackend> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default().to_ascii_lowercase();
    if let Some(backend) = STATE_BACKENDS.iter().find(|backend| backend.schemes.contains(&scheme.as_str())) {
        return Ok(backend);
    }
    let known: Vec<String> =
        STATE_BACKENDS.iter().flat_map(|backend| backend.schemes.iter().map(|scheme| format!("{scheme}:"))).collect();
    bail!("the state store URL `{}` has no known scheme; use one of {}", masked_url(url), known.join(", "))
}

/// A state URL as it may be shown in a message: a password in its user
/// part, a `password=` parameter, or what looks like one in a URL without
/// `//` (`user:secret@host`), replaced by `***`.
pub fn masked_url(url: &str) -> String {
    without_password(url, Some("***"))
}

/// A state URL as it may be printed for the user to set: the same URL with
/// any password left out (it comes from the environment, a password file or
/// `.pgpass`, never the URL kept in a file).
pub fn url_without_password(url: &str) -> String {
    without_password(url, None)
}

fn without_password(url: &str, mask: Option<&str>) -> String {
    let url = url.trim();
    // The key=value form: `host=h password=secret dbname=d` (a value may be quoted).
    if !url.contains(':') || (url.contains('=') && !url.contains("://")) {
        let mut shown = Vec::new();
        let mut in_quoted_password = false;
        for part in url.split_whitespace() {
            if in_quoted_password {
                in_quoted_password = !part.ends_with('\'');
                continue;
            }
            match part.strip_prefix("password=") {
                Some(value) => {
                    in_quoted_password = value.starts_with('\'') && (value.len() == 1 || !value.ends_with('\''));
                    if let Some(mask) = mask {
                        shown.push(format!("password={mask}"));
                    }
                }
                None => shown.push(part.to_owned()),
            }
        }
        return shown.join(" ");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => {
            // `scheme:user:secret@host` or `user:secret@host`: all between the
            // first colon and the last `@` may be a secret.
            return match (url.find(':'), url.rfind('@')) {
                (Some(colon), Some(at)) if colon < at => {
                    format!("{}:{}{}", &url[..colon], mask.unwrap_or(""), &url[at..])
                }
                _ => url.to_owned(),
            };
        }
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut shown = scheme;
    match before_query.rfind('@') {
        Some(at) => {
            let user_part = &before_query[..at];
            match (user_part.split_once(':'), mask) {
                (Some((user, _)), Some(mask)) => shown.push_str(&format!("{user}:{mask}")),
                (Some((user, _)), None) => shown.push_str(user),
                (None, _) => shown.push_str(user_part),
            }
            shown.push_str(&before_query[at..]);
        }
        None => shown.push_str(before_query),
    }
    if let Some(query) = query {
        let parameters: Vec<String> = query
            .split('&')
            .filter_map(|parameter| match (parameter.split_once('='), mask) {
                (Some((name, _)), Some(mask)) if name.eq_ignore_ascii_case("password") => {
                    Some(format!("{name}={mask}"))
                }
                (Some((name, _)), None) if name.eq_ignore_ascii_case("password") => None,
                _ => Some(parameter.to_owned()),
            })
            .collect();
        if !parameters.is_empty() {
            shown.push('?');
            shown.push_str(&parameters.join("&"));
        }
    }
    shown
}

/// Where a project's state is, resolved from its settings.
#[derive(Debug, Clone)]
pub enum StateTarget {
    /// The embedded SQLite file.
    Embedded { path: PathBuf },
    /// A PostgreSQL database; `target` holds the password if one was
    /// found, and how the server is reached over TLS.
    Postgres { target: Box<ConnectTarget>, location: String },
}

/// Where a state URL came from, and the settings beside it.
#[derive(Debug, Clone)]
pub struct StateSettings {
    /// The URL, or `None` for the embedded default.
    pub url: Option<String>,
    /// Where the URL came from, for messages (`MAYFLY_STATE_URL`, or the file's `[state]`).
    pub origin: String,
    /// `[state] password_file`, resolved against the project directory.
    pub password_file: Option<PathBuf>,
    /// `[state] ca_file`, resolved against the project directory: the CA
    /// a PostgreSQL server's certificate must chain to, unless the URL's
    /// `sslrootcert` names one (the URL wins).
    pub ca_file: Option<PathBuf>,
    /// The directory a relative `sslrootcert` in the URL is resolved
    /// against (the project directory).
    pub base: Option<PathBuf>,
}

/// Resolve a project's state settings into where its state is: the
/// backend by the URL's scheme, and for PostgreSQL the password (from
/// [`crate::password`]'s sources, a password in the URL itself winning).
pub fn resolve_state_target(settings: &StateSettings, embedded_path: &Path) -> Result<StateTarget> {
    let Some(url) = settings.url.as_deref() else {
        return Ok(StateTarget::Embedded { path: embedded_path.to_owned() });
    };
    let backend = state_backend_for_url(url).with_context(|| format!("in {}", settings.origin))?;
    if std::ptr::eq(backend, &EMBEDDED) {
        if url.trim_start_matches("sqlite:").is_empty() {
            return Ok(StateTarget::Embedded { path: embedded_path.to_owned() });
        }
        bail!(
            "the state store URL `{url}` in {} names a file; the embedded store is always the project's {}, so write just \"sqlite:\"",
            settings.origin,
            embedded_path.display()
        );
    }
    let mut target = mayfly_state_postgres::parse_url_in(url, settings.base.as_deref())
        .with_context(|| format!("in {}", settings.origin))?;
    if target.tls.ca_file.is_none() {
        target.tls.ca_file = settings.ca_file.clone();
    }
    target.tls.check().with_context(|| format!("in {}", settings.origin))?;
    let config = &mut target.config;
    if config.get_password().is_none() {
        let found = match password::password_from_environment() {
            Some(found) => Some(found),
            None => match &settings.password_file {
                Some(file) => Some(password::password_from_file(file)?),
                None => match password::pgpass_path() {
                    Some(pgpass) => password::password_from_pgpass(&pgpass, &password_for(config))?,
                    None => None,
                },
            },
        };
        if let Some(found) = found {
            config.password(found);
        }
    }
    let location = mayfly_state_postgres::describe(&target.config);
    Ok(StateTarget::Postgres { target: Box::new(target), location })
}

/// What a `.pgpass` line is matched against, with libpq's defaults.
fn password_for(config: &ConnectConfig) -> PasswordFor {
    let user = config.get_user().unwrap_or_default().to_owned();
    let host = match config.get_hosts().first() {
        Some(mayfly_state_postgres::ConnectHost::Tcp(host)) => host.clone(),
        _ => "localhost".to_owned(),
    };
    PasswordFor {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().map_or_else(|| user.clone(), str::to_owned),
        user,
    }
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
            StateTarget::Postgres { .. } => &POSTGRES,
        }
    }

    /// Where it is, for messages: a path, or a URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StateTarget::Embedded { path } => path.display().to_string(),
            StateTarget::Postgres { location, .. } => location.clone(),
        }
    }

    /// Whether a project's state is there already (it was deployed).
    pub fn holds_project(&self) -> Result<bool> {
        match self {
            StateTarget::Embedded { path } => Ok(path.is_file()),
            StateTarget::Postgres { target, .. } => Ok(PostgresStore::holds_store(target)?),
        }
    }

    /// Open it sealed with `keyring`, creating or migrating its schema.
    pub fn open(&self, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<OpenedState, StateError> {
        match self {
            StateTarget::Embedded { path } => {
                let store = Arc::new(SqliteStore::open_encrypted(path, clock, keyring)?);
                Ok(OpenedState { store: store.clone(), key_maintenance: Some(store) })
            }
            StateTarget::Postgres { target, .. } => {
                let store = PostgresStore::open_encrypted_with_config(ConnectTarget::clone(target), clock, keyring)?;
                Ok(OpenedState { store: Arc::new(store), key_maintenance: None })
            }
        }
    }

    /// A second handle on the same store for a writer that must never wait
    /// behind the first one's reads (the API's access log): a connection of
    /// its own on SQLite; the same pooled store on PostgreSQL.
    pub fn open_another_handle(
        &self,
        opened: &Arc<dyn ProjectStore>,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<Arc<dyn ProjectStore>, StateError> {
        match self {
            StateTarget::Embedded { path } => Ok(Arc::new(SqliteStore::open_encrypted(path, clock, keyring)?)),
            // A pool: the access log takes a connection of its own from it.
            StateTarget::Postgres { .. } => Ok(opened.clone()),
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
            StateTarget::Postgres { target, .. } => {
                let (_, lost) =
                    PostgresStore::open_encrypted_replacing_lost_keyring(ConnectTarget::clone(target), clock, keyring)?;
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
        assert_eq!(state_backend_for_url("postgres://u@h/d").unwrap().name, "postgresql");
        assert_eq!(state_backend_for_url("postgresql://u@h/d").unwrap().name, "postgresql");
        let settings = StateSettings {
            url: Some("postgres://u@h/d?sslmode=verify-full".to_owned()),
            origin: "MAYFLY_STATE_URL".to_owned(),
            password_file: None,
            ca_file: None,
            base: None,
        };
        let error = format!("{:#}", resolve_state_target(&settings, Path::new("state.db")).unwrap_err());
        assert!(
            error.contains("in MAYFLY_STATE_URL") && error.contains("`sslmode=verify-full` needs a CA file"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let settings = StateSettings {
            url: Some("postgres://u@h/d?sslmode=verify-ca&sslrootcert=certs/ca.pem".to_owned()),
            base: Some(dir.path().to_owned()),
            ca_file: Some(dir.path().join("ignored.pem")),
            ..settings
        };
        let error = format!("{:#}", resolve_state_target(&settings, Path::new("state.db")).unwrap_err());
        let wanted = format!("cannot use the CA file {}/certs/ca.pem", dir.path().display());
        assert!(error.contains(&wanted), "{error}");
        let error = state_backend_for_url("mysql://db/x").unwrap_err().to_string();
        assert!(
            error.contains("`mysql://db/x` has no known scheme; use one of sqlite:, postgres:, postgresql:"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_scheme_is_named_without_the_password_in_the_url() {
        for (url, shown) in [
            ("mysql://admin:hunter2@db:3306/x", "`mysql://admin:***@db:3306/x`"),
            (
                "postgress://admin:hunter2@db/x?sslmode=require&password=hunter2",
                "`postgress://admin:***@db/x?sslmode=require&password=***`",
            ),
            ("mysql:admin:hunter2@db/x", "`mysql:***@db/x`"),
            ("admin:hunter2@db/x", "`admin:***@db/x`"),
        ] {
            let error = state_backend_for_url(url).unwrap_err().to_string();
            assert!(!error.contains("hunter2"), "the password is repeated: {error}");
            assert!(error.contains(shown), "{error}");
        }
        let settings = StateSettings {
            url: Some("postgress://admin:hunter2@db/x".to_owned()),
            origin: "MAYFLY_STATE_URL".to_owned(),
            password_file: None,
            ca_file: None,
            base: None,
        };
        let error = format!("{:#}", resolve_state_target(&settings, Path::new("state.db")).unwrap_err());
        assert!(error.contains("in MAYFLY_STATE_URL") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_url_to_set_is_shown_without_its_password() {
        for (url, shown) in [
            (
                "postgres://admin:hunter2@db:5432/x?sslmode=verify-full",
                "postgres://admin@db:5432/x?sslmode=verify-full",
            ),
            ("postgres://admin@db/x?password=hunter2&sslmode=require", "postgres://admin@db/x?sslmode=require"),
            ("postgres://admin@db/x?password=hunter2", "postgres://admin@db/x"),
            ("host=db password=hunter2 dbname=x", "host=db dbname=x"),
            ("host=db password='hunter 2' dbname=x", "host=db dbname=x"),
            ("sqlite:", "sqlite:"),
        ] {
            assert_eq!(url_without_password(url), shown);
        }
        assert_eq!(masked_url("host=db password=hunter2 dbname=x"), "host=db password=*** dbname=x");
    }
}
