//! A Mayfly project on disk: the directory holding `mayfly.toml`, and its data
//! directory `.mayfly/` (owner-only) with the state store (`state.db`), the
//! keyring (`keyring.json`, owner-only) and the buckets. Both are always
//! opened encrypted under the keyring: every bucket's `encryption` defaults to
//! on and the default policy requires it, and the state store seals every
//! customer payload it keeps (message bodies and attributes, run items,
//! results, invocation logs) with the same keyring. Which state store a
//! project uses is [`crate::backends`]' choice.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::{KEYRING_ENV_VAR, Keyring, KeyringError};
use mayfly_core::{Clock, SystemClock};
use mayfly_state::{KeyMaintenance, StateError, StateStore};

use crate::backends::{STATE_URL_ENV_VAR, StateSettings, StateTarget, resolve_state_target};
use crate::storage::{STORAGE_URL_ENV_VAR, StorageSettings, StorageTarget, resolve_storage_target};
use crate::{ProjectStore, Refused};

pub const SPEC_FILE_NAME: &str = "mayfly.toml";
pub const DATA_DIR_NAME: &str = ".mayfly";

/// Where a project lives; nothing is opened until asked for.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

/// A project's open state store and buckets.
pub struct OpenProject {
    pub state: Arc<dyn ProjectStore>,
    pub buckets: Buckets,
    pub keyring: LoadedKeyring,
    /// Where the state store is.
    pub state_target: StateTarget,
    /// Where the buckets' objects are.
    pub storage_target: StorageTarget,
    key_maintenance: Option<Arc<dyn KeyMaintenance>>,
}

/// How often a long-running process looks whether the keyring file changed.
pub const KEYRING_FILE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

impl OpenProject {
    /// The state store's key maintenance for `command` (`mayfly keys
    /// rewrap`, …), or a refusal (exit code 5) naming the backend that
    /// lacks it, before anything changed.
    pub fn key_maintenance(&self, command: &str) -> Result<Arc<dyn KeyMaintenance>> {
        match &self.key_maintenance {
            Some(maintenance) => Ok(maintenance.clone()),
            None => Err(Refused(format!(
                "`{command}` is not supported on a {} state store yet (the project's state is at {}); nothing was changed",
                self.state_target.backend().name,
                self.state_target.describe()
            ))
            .into()),
        }
    }

    /// A second handle on the state store for a writer that must never wait
    /// behind this one's reads (the API's access log).
    pub fn open_state_again(&self) -> Result<Arc<dyn StateStore>> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store =
            self.state_target.open_another_handle(&self.state, clock, self.keyring.keyring.clone()).with_context(
                || format!("cannot open the state store {} for the access log", self.state_target.describe()),
            )?;
        Ok(store)
    }

    /// For a long-running process (`mayfly up`, `serve`, a coordinator):
    /// take up the keyring file again whenever it changes (`mayfly keys
    /// rotate`, `retire`), so new data is sealed with the current key; a
    /// state store payload sealed by a key added meanwhile opens at once (the
    /// store reads the file again when it meets a key it lacks). The new keyring is
    /// checked against the state store's recorded keys first; one that fails
    /// the check, or cannot be read, is logged and the old one kept. A keyring
    /// from `MAYFLY_KEYRING` cannot change, so nothing is watched then.
    pub fn follow_keyring_file(&self, project: &Project) -> Option<tokio::task::JoinHandle<()>> {
        if self.keyring.source != KeyringSource::File {
            return None;
        }
        let path = project.keyring_path();
        // A payload sealed by a key added a moment ago opens at once, before the next look.
        let reload_path = path.clone();
        self.state.set_keyring_reloader(Box::new(move || Keyring::load(&reload_path).ok().map(Arc::new)));
        let state = self.state.clone();
        let buckets = self.buckets.clone();
        let signature = |path: &Path| {
            std::fs::metadata(path).ok().map(|metadata| (metadata.modified().ok(), metadata.len(), inode(&metadata)))
        };
        let mut seen = signature(&path);
        let mut in_use = self.keyring.keyring.current().id().to_owned();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(KEYRING_FILE_CHECK_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let now = signature(&path);
                if now == seen || now.is_none() {
                    continue;
                }
                seen = now;
                let keyring = match Keyring::load(&path) {
                    Ok(keyring) => Arc::new(keyring),
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "the keyring file changed but cannot be read; keeping the keyring in use");
                        continue;
                    }
                };
                let checking = state.clone();
                let candidate = keyring.clone();
                match tokio::task::spawn_blocking(move || checking.replace_keyring(candidate)).await {
                    Ok(Ok(())) => {
                        buckets.replace_keyring(keyring.clone());
                        let current = keyring.current().id().to_owned();
                        tracing::info!(path = %path.display(), previous = %in_use, current = %current, "took up the changed keyring");
                        in_use = current;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(path = %path.display(), %error, "the changed keyring was refused; keeping the keyring in use");
                    }
                    Err(error) => tracing::warn!(%error, "checking the changed keyring panicked"),
                }
            }
        }))
    }
}

fn inode(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata.ino()
}

/// Where the keyring came from: the project's file, or `MAYFLY_KEYRING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyringSource {
    File,
    Environment,
}

/// The project's keyring and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedKeyring {
    pub keyring: Arc<Keyring>,
    pub source: KeyringSource,
}

impl Project {
    /// The project at `explicit`, or the nearest directory at or above the
    /// current one that holds a `mayfly.toml`.
    pub fn locate(explicit: Option<&Path>) -> Result<Project> {
        if let Some(root) = explicit {
            let project = Project { root: root.to_path_buf() };
            if !project.spec_path().is_file() {
                bail!(
                    "{} has no {SPEC_FILE_NAME}; run `mayfly init {}` to create a project there",
                    root.display(),
                    root.display()
                );
            }
            return Ok(project);
        }
        let current = std::env::current_dir().context("cannot read the current directory")?;
        for directory in current.ancestors() {
            if directory.join(SPEC_FILE_NAME).is_file() {
                return Ok(Project { root: directory.to_path_buf() });
            }
        }
        bail!(
            "no {SPEC_FILE_NAME} in {} or any parent directory; run `mayfly init` to create a project, or pass --project DIR",
            current.display()
        )
    }

    pub fn spec_path(&self) -> PathBuf {
        self.root.join(SPEC_FILE_NAME)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join(DATA_DIR_NAME)
    }

    /// The embedded state store's file (used when no other store is chosen).
    pub fn state_path(&self) -> PathBuf {
        self.data_dir().join("state.db")
    }

    /// The state store settings: `MAYFLY_STATE_URL` over `[state] url` of
    /// the architecture file (whose `[state]` is checked either way, with
    /// located errors, exit code 3), `[state] password_file` and `ca_file`.
    pub fn state_settings(&self) -> Result<StateSettings> {
        let path = self.spec_path();
        let source = std::fs::read_to_string(&path)
            .map_err(|source| mayfly_spec::LoadError::Io { path: path.clone(), source })?;
        let spec = mayfly_spec::state_settings(&path.display().to_string(), &source)
            .map_err(mayfly_spec::LoadError::Invalid)?;
        let password_file = spec.password_file.map(|file| self.root.join(file));
        let ca_file = spec.ca_file.map(|file| self.root.join(file));
        let (url, origin) = match std::env::var(STATE_URL_ENV_VAR).ok().filter(|url| !url.trim().is_empty()) {
            Some(url) => (Some(url), STATE_URL_ENV_VAR.to_owned()),
            None => (spec.url, format!("`[state] url` of {}", path.display())),
        };
        Ok(StateSettings { url, origin, password_file, ca_file, base: Some(self.root.clone()) })
    }

    /// Where the project's state store is.
    pub fn state_target(&self) -> Result<StateTarget> {
        resolve_state_target(&self.state_settings()?, &self.state_path())
    }

    /// Record `keyring` in the state store in place of a lost one (`mayfly
    /// keys init --replace-lost-keyring`); returns the lost keys' ids.
    pub fn record_replacement_keyring(&self, keyring: Arc<Keyring>) -> Result<Vec<String>> {
        let target = self.state_target()?;
        target
            .record_replacement_keyring(Arc::new(SystemClock), keyring)
            .with_context(|| format!("cannot record the new keyring in the state store {}", target.describe()))
    }

    /// The object store settings: `MAYFLY_STORAGE_URL` over `[storage] url`
    /// of the architecture file (whose `[storage]` is checked either way,
    /// with located errors, exit code 3).
    pub fn storage_settings(&self) -> Result<StorageSettings> {
        let path = self.spec_path();
        let source = std::fs::read_to_string(&path)
            .map_err(|source| mayfly_spec::LoadError::Io { path: path.clone(), source })?;
        let spec = mayfly_spec::storage_settings(&path.display().to_string(), &source)
            .map_err(mayfly_spec::LoadError::Invalid)?;
        Ok(match std::env::var(STORAGE_URL_ENV_VAR).ok().filter(|url| !url.trim().is_empty()) {
            Some(url) => StorageSettings { url: Some(url), origin: STORAGE_URL_ENV_VAR.to_owned() },
            None => StorageSettings { url: spec.url, origin: format!("`[storage] url` of {}", path.display()) },
        })
    }

    /// Where traces are exported: `MAYFLY_OTLP_ENDPOINT` over `[telemetry]
    /// otlp` of the architecture file (whose `[telemetry]` is checked either
    /// way, with located errors, exit code 3).
    pub fn telemetry_settings(&self) -> Result<crate::telemetry::TelemetrySettings> {
        let path = self.spec_path();
        let source = std::fs::read_to_string(&path)
            .map_err(|source| mayfly_spec::LoadError::Io { path: path.clone(), source })?;
        let spec = mayfly_spec::telemetry_settings(&path.display().to_string(), &source)
            .map_err(mayfly_spec::LoadError::Invalid)?;
        crate::telemetry::TelemetrySettings::resolve(spec, format!("`[telemetry] otlp` of {}", path.display()))
    }

    /// Where the project's objects are.
    pub fn storage_target(&self) -> Result<StorageTarget> {
        resolve_storage_target(&self.storage_settings()?, &self.buckets_dir())
    }

    /// The local buckets directory (used when no other object store is chosen).
    pub fn buckets_dir(&self) -> PathBuf {
        self.data_dir().join("buckets")
    }

    pub fn keyring_path(&self) -> PathBuf {
        self.data_dir().join("keyring.json")
    }

    /// The keyring: `MAYFLY_KEYRING` if set, else the project's keyring file.
    /// A missing file is created (owner-only, in an owner-only data
    /// directory) only if `create` and the project has no data yet (no state
    /// store): for a project with data a new keyring would leave the old data
    /// unreadable and seal new data the restored keyring cannot read, so that
    /// is refused and replacing a lost keyring is the explicit `mayfly keys
    /// init --replace-lost-keyring`.
    pub fn load_keyring(&self, create: bool) -> Result<LoadedKeyring> {
        if let Some(keyring) = Keyring::from_env()? {
            return Ok(LoadedKeyring { keyring: Arc::new(keyring), source: KeyringSource::Environment });
        }
        let path = self.keyring_path();
        let loaded = Keyring::load(&path);
        let missing_with_data = matches!(loaded, Err(KeyringError::Missing { .. })) && self.is_deployed()?;
        let keyring = match loaded {
            Ok(keyring) => keyring,
            Err(KeyringError::Missing { .. }) if missing_with_data => {
                return Err(Refused(format!(
                    "project {} has data (its state store {}) but no keyring at {} and {KEYRING_ENV_VAR} is not set, so its encrypted data cannot be read or written; \
restore the keyring file from your backup to {} (owner-only: chmod 600), or set {KEYRING_ENV_VAR} to its contents. \
If it is lost for good, `mayfly keys init --replace-lost-keyring` creates a new one; the data sealed by the lost keys stays unreadable",
                    self.root.display(),
                    self.state_target()?.describe(),
                    path.display(),
                    path.display(),
                ))
                .into());
            }
            Err(KeyringError::Missing { .. }) if create => self.create_keyring()?,
            Err(KeyringError::Missing { .. }) => bail!(
                "project {} has no keyring at {} and {KEYRING_ENV_VAR} is not set; \
restore the keyring file from your backup (or set {KEYRING_ENV_VAR}), or, for a project that never had one, run `mayfly deploy` to create it",
                self.root.display(),
                path.display()
            ),
            Err(error) => return Err(error).context("cannot load the project's keyring"),
        };
        Ok(LoadedKeyring { keyring: Arc::new(keyring), source: KeyringSource::File })
    }

    /// Generate and save a new keyring file (the caller checked there is none).
    pub fn create_keyring(&self) -> Result<Keyring> {
        let path = self.keyring_path();
        self.create_private_data_dir()?;
        let keyring = Keyring::generate(SystemClock.now());
        keyring.save(&path).with_context(|| format!("cannot create the keyring {}", path.display()))?;
        tracing::info!(path = %path.display(), key_id = keyring.current().id(), "created the project's keyring");
        Ok(keyring)
    }

    /// Where a loaded keyring came from, for messages.
    pub fn keyring_origin(&self, source: KeyringSource) -> String {
        match source {
            KeyringSource::File => self.keyring_path().display().to_string(),
            KeyringSource::Environment => KEYRING_ENV_VAR.to_owned(),
        }
    }

    /// Create the data directory readable by the owner only (it holds the
    /// keyring and the state store); an existing one is made owner-only.
    fn create_private_data_dir(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = self.data_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} owner-only", dir.display()))
    }

    /// Whether the project's state store holds its state (it was deployed).
    pub fn is_deployed(&self) -> Result<bool> {
        self.state_target()?.holds_project()
    }

    /// Open the state store and buckets, creating them if `create` (deploy does).
    /// Other commands need a deployed project and say so.
    pub fn open(&self, create: bool) -> Result<OpenProject> {
        let target = self.state_target()?;
        let storage_target = self.storage_target()?;
        if !create && !target.holds_project()? {
            bail!("project {} has not been deployed yet; run `mayfly deploy` first", self.root.display());
        }
        // Before anything is created or opened: a store Mayfly must not use changes nothing.
        storage_target.check()?;
        let keyring = self.load_keyring(create)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let opened = target
            .open(clock.clone(), keyring.keyring.clone())
            .map_err(|error| self.explain_state_open_error(error, &keyring, &target))?;
        let state_for_buckets: Arc<dyn StateStore> = opened.store.clone();
        let buckets = storage_target.open(state_for_buckets, clock, keyring.keyring.clone())?;
        Ok(OpenProject {
            state: opened.store,
            buckets,
            keyring,
            state_target: target,
            storage_target,
            key_maintenance: opened.key_maintenance,
        })
    }

    /// The error of opening the state store, with what to do about a keyring
    /// that lacks the keys the data needs.
    fn explain_state_open_error(
        &self,
        error: StateError,
        keyring: &LoadedKeyring,
        target: &StateTarget,
    ) -> anyhow::Error {
        let origin = self.keyring_origin(keyring.source);
        let holds: Vec<String> =
            keyring.keyring.keys().map(|key| format!("{} (fingerprint {})", key.id(), key.fingerprint())).collect();
        let message = match &error {
            StateError::KeyringLacksKeys { missing, .. } => format!(
                "refusing to use the keyring from {origin}, which holds key(s) {}: it lacks key(s) {} that sealed this project's data in the state store {} (old data would not read, and new data would not read with the right keyring); \
restore the keyring file {} from your backup (or set {KEYRING_ENV_VAR} to it). A key is dropped with `mayfly keys retire KEY`, which checks nothing uses it; \
if the keys are lost for good, move the keyring aside and run `mayfly keys init --replace-lost-keyring`",
                holds.join(", "),
                missing.join(", "),
                target.describe(),
                self.keyring_path().display()
            ),
            _ => format!("cannot open the state store {}", target.describe()),
        };
        anyhow::Error::new(error).context(message)
    }
}
