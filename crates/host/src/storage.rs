//! The object stores a project's buckets can use, in one registry keyed by
//! URL scheme, beside the state backends ([`crate::backends`]): no URL or
//! `file:` is the local directory `.mayfly/buckets` (the default, with its
//! fsyncs); `s3://BUCKET/PREFIX` an S3-compatible store through object_store,
//! reached with the standard AWS variables (`mayfly_buckets::s3`). Chosen by
//! `MAYFLY_STORAGE_URL` over `[storage] url` of `mayfly.toml`; a secret is
//! never in either. Either way every object is sealed by the buckets crate
//! before it leaves the host.
//!
//! Opening an S3 store first probes it ([`mayfly_buckets::s3::check_store`]):
//! an unreachable endpoint, refused credentials, a missing bucket or a store
//! that ignores conditional creates is refused by name before anything but
//! the probe object is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::Keyring;
use mayfly_buckets::s3::S3Config;
use mayfly_core::Clock;
use mayfly_state::StateStore;

/// The environment variable that chooses the object store (over `[storage] url`).
pub const STORAGE_URL_ENV_VAR: &str = "MAYFLY_STORAGE_URL";

/// The variables that choose and reach the object store, which a process
/// started with a cleared environment (a job's coordinator) must be given
/// so that the whole project uses one store.
pub fn storage_env_vars() -> impl Iterator<Item = &'static str> {
    std::iter::once(STORAGE_URL_ENV_VAR).chain(mayfly_buckets::s3::S3_ENV_VARS.iter().copied())
}

/// One kind of object store, and the URL schemes that choose it.
#[derive(Debug)]
pub struct StorageBackend {
    /// Its name in messages.
    pub name: &'static str,
    /// The URL schemes that choose it (before the `:`).
    pub schemes: &'static [&'static str],
}

/// The project's own directory, `.mayfly/buckets`.
pub static LOCAL: StorageBackend = StorageBackend { name: "local", schemes: &["file"] };

/// An S3-compatible store that honours conditional creates.
pub static S3: StorageBackend = StorageBackend { name: "s3", schemes: &["s3"] };

/// Every storage backend, the default first.
pub static STORAGE_BACKENDS: &[&StorageBackend] = &[&LOCAL, &S3];

/// The backend a storage URL's scheme chooses; an unknown scheme is refused
/// with the schemes there are.
pub fn storage_backend_for_url(url: &str) -> Result<&'static StorageBackend> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default().to_ascii_lowercase();
    if let Some(backend) = STORAGE_BACKENDS.iter().find(|backend| backend.schemes.contains(&scheme.as_str())) {
        return Ok(backend);
    }
    let known: Vec<String> =
        STORAGE_BACKENDS.iter().flat_map(|backend| backend.schemes.iter().map(|scheme| format!("{scheme}:"))).collect();
    bail!("the storage URL `{url}` has no known scheme; use one of {}", known.join(", "))
}

/// Where a storage URL came from.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// The URL, or `None` for the local default.
    pub url: Option<String>,
    /// Where it came from, for messages (`MAYFLY_STORAGE_URL`, or the file's `[storage]`).
    pub origin: String,
}

/// Where a project's objects are.
#[derive(Debug, Clone)]
pub enum StorageTarget {
    /// The local directory (`.mayfly/buckets`).
    Local { path: PathBuf },
    /// A prefix of an S3 bucket.
    S3 { config: Box<S3Config> },
}

/// Resolve a project's storage settings; for S3, the store is reached as the
/// AWS variables of this process's environment say.
pub fn resolve_storage_target(settings: &StorageSettings, local_path: &Path) -> Result<StorageTarget> {
    let Some(url) = settings.url.as_deref() else {
        return Ok(StorageTarget::Local { path: local_path.to_owned() });
    };
    let backend = storage_backend_for_url(url).with_context(|| format!("in {}", settings.origin))?;
    if std::ptr::eq(backend, &LOCAL) {
        if url.trim()["file:".len()..].is_empty() {
            return Ok(StorageTarget::Local { path: local_path.to_owned() });
        }
        bail!(
            "the storage URL `{url}` in {} names a directory; the local store is always the project's {}, so write just \"file:\"",
            settings.origin,
            local_path.display()
        );
    }
    let config =
        S3Config::from_env(url).map_err(anyhow::Error::msg).with_context(|| format!("in {}", settings.origin))?;
    Ok(StorageTarget::S3 { config: Box::new(config) })
}

impl StorageTarget {
    pub fn backend(&self) -> &'static StorageBackend {
        match self {
            StorageTarget::Local { .. } => &LOCAL,
            StorageTarget::S3 { .. } => &S3,
        }
    }

    /// Where it is, for messages: a path, or the bucket, prefix and endpoint.
    pub fn describe(&self) -> String {
        match self {
            StorageTarget::Local { path } => path.display().to_string(),
            StorageTarget::S3 { config } => config.describe(),
        }
    }

    /// Check that the store can be used (an S3 store is probed, see the
    /// module documentation; the local directory needs nothing), before the
    /// project opens anything else.
    pub fn check(&self) -> Result<()> {
        match self {
            StorageTarget::Local { .. } => Ok(()),
            StorageTarget::S3 { config } => probe_s3(config),
        }
    }

    /// Open the project's buckets on it, sealed with `keyring` (after [`StorageTarget::check`]).
    pub fn open(&self, state: Arc<dyn StateStore>, clock: Arc<dyn Clock>, keyring: Arc<Keyring>) -> Result<Buckets> {
        match self {
            StorageTarget::Local { path } => Buckets::open_encrypted(path, state, clock, keyring)
                .with_context(|| format!("cannot open the buckets under {}", path.display())),
            StorageTarget::S3 { config } => {
                let store = config.build(false)?;
                Ok(Buckets::open_on_object_store_encrypted(store, state, clock, keyring))
            }
        }
    }
}

/// Probe the S3 store on a thread and runtime of its own, with a client of
/// its own, so that it works whether or not the caller is inside a runtime
/// (and never blocks one of its workers on a nested `block_on`).
fn probe_s3(config: &S3Config) -> Result<()> {
    let config = config.clone();
    let probing = std::thread::Builder::new().name("mayfly-s3-probe".to_owned()).spawn(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime to check the object store")?;
        runtime.block_on(async {
            let store = config.build(true)?;
            mayfly_buckets::s3::check_store(store.as_ref(), &config.describe()).await?;
            Ok(())
        })
    });
    match probing.context("cannot start a thread to check the object store")?.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_chooses_its_storage_by_scheme() {
        assert_eq!(storage_backend_for_url("file:").unwrap().name, "local");
        assert_eq!(storage_backend_for_url("s3://bucket/prefix").unwrap().name, "s3");
        let error = storage_backend_for_url("gs://bucket").unwrap_err().to_string();
        assert!(error.contains("`gs://bucket` has no known scheme; use one of file:, s3:"), "{error}");
        let settings =
            StorageSettings { url: Some("file:/elsewhere".to_owned()), origin: STORAGE_URL_ENV_VAR.to_owned() };
        let error = resolve_storage_target(&settings, Path::new("buckets")).unwrap_err().to_string();
        assert!(error.contains("names a directory"), "{error}");
        let local = StorageSettings { url: None, origin: STORAGE_URL_ENV_VAR.to_owned() };
        assert!(matches!(resolve_storage_target(&local, Path::new("b")).unwrap(), StorageTarget::Local { .. }));
    }
}
