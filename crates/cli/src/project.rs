//! A Mayfly project on disk: the directory holding `mayfly.toml`, and its data
//! directory `.mayfly/` with the state store (`state.db`) and the buckets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_buckets::Buckets;
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

    pub fn is_deployed(&self) -> bool {
        self.state_path().is_file()
    }

    /// Open the state store and buckets, creating them if `create` (deploy does).
    /// Other commands need a deployed project and say so.
    pub fn open(&self, create: bool) -> Result<OpenProject> {
        if !create && !self.is_deployed() {
            bail!("project {} has not been deployed yet; run `mayfly deploy` first", self.root.display());
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = Arc::new(
            SqliteStore::open(&self.state_path(), clock.clone())
                .with_context(|| format!("cannot open the state store {}", self.state_path().display()))?,
        );
        let state_for_buckets: Arc<dyn StateStore> = state.clone();
        let buckets = Buckets::open(&self.buckets_dir(), state_for_buckets, clock)
            .with_context(|| format!("cannot open the buckets under {}", self.buckets_dir().display()))?;
        Ok(OpenProject { state, buckets })
    }
}
