//! A Mayfly project on disk: the directory holding `mayfly.toml`, and its data
//! directory `.mayfly/` (owner-only) with the state store (`state.db`), the
//! keyring (`keyring.json`, owner-only) and the buckets. Both are always
//! opened encrypted under the keyring: every bucket's `encryption` defaults to
//! on and the default policy requires it, and the state store seals every
//! customer payload it keeps (message bodies and attributes, run items,
//! results, invocation logs) with the same keyring.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::{KEYRING_ENV_VAR, Keyring, KeyringError};
use mayfly_core::{Clock, SystemClock};
use mayfly_state::StateStore;
use mayfly_state_sqlite::SqliteStore;

pub const SPEC_FILE_NAME: &str = "mayfly.toml";
pub const DATA_DIR_NAME: &str = ".mayfly";

/// Where a project lives; nothing is opened until asked for.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

/// A project's open state store and buckets.
pub struct OpenProject {
    pub state: Arc<SqliteStore>,
    pub buckets: Buckets,
    pub keyring: LoadedKeyring,
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

    pub fn state_path(&self) -> PathBuf {
        self.data_dir().join("state.db")
    }

    pub fn buckets_dir(&self) -> PathBuf {
        self.data_dir().join("buckets")
    }

    pub fn keyring_path(&self) -> PathBuf {
        self.data_dir().join("keyring.json")
    }

    /// The keyring: `MAYFLY_KEYRING` if set, else the project's keyring file,
    /// created (owner-only, in an owner-only data directory) if missing and
    /// `create`.
    pub fn load_keyring(&self, create: bool) -> Result<LoadedKeyring> {
        if let Some(keyring) = Keyring::from_env()? {
            return Ok(LoadedKeyring { keyring: Arc::new(keyring), source: KeyringSource::Environment });
        }
        let path = self.keyring_path();
        let keyring = match Keyring::load(&path) {
            Ok(keyring) => keyring,
            Err(KeyringError::Missing { .. }) if create => {
                self.create_private_data_dir()?;
                let keyring = Keyring::generate(SystemClock.now());
                keyring.save(&path).with_context(|| format!("cannot create the keyring {}", path.display()))?;
                tracing::info!(path = %path.display(), key_id = keyring.current().id(), "created the project's keyring");
                keyring
            }
            Err(KeyringError::Missing { .. }) => bail!(
                "project {} has no keyring at {} and {KEYRING_ENV_VAR} is not set, so its encrypted objects cannot be read or written; \
restore the keyring file from your backup (or set {KEYRING_ENV_VAR}), or, for a project that never had one, run `mayfly deploy` to create it",
                self.root.display(),
                path.display()
            ),
            Err(error) => return Err(error).context("cannot load the project's keyring"),
        };
        Ok(LoadedKeyring { keyring: Arc::new(keyring), source: KeyringSource::File })
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

    pub fn is_deployed(&self) -> bool {
        self.state_path().is_file()
    }

    /// Open the state store and buckets, creating them if `create` (deploy does).
    /// Other commands need a deployed project and say so.
    pub fn open(&self, create: bool) -> Result<OpenProject> {
        if !create && !self.is_deployed() {
            bail!("project {} has not been deployed yet; run `mayfly deploy` first", self.root.display());
        }
        let keyring = self.load_keyring(create)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = Arc::new(
            SqliteStore::open_encrypted(&self.state_path(), clock.clone(), keyring.keyring.clone())
                .with_context(|| format!("cannot open the state store {}", self.state_path().display()))?,
        );
        let state_for_buckets: Arc<dyn StateStore> = state.clone();
        let buckets = Buckets::open_encrypted(&self.buckets_dir(), state_for_buckets, clock, keyring.keyring.clone())
            .with_context(|| format!("cannot open the buckets under {}", self.buckets_dir().display()))?;
        Ok(OpenProject { state, buckets, keyring })
    }
}
