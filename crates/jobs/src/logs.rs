//! Workers' logs: appended to one file per worker under the run's working
//! directory as they stream in (so a coordinator that dies loses nothing the
//! next one cannot seal), then sealed — compressed with zstd, checksummed with
//! SHA-256, written to the logs bucket — before the worker is stopped.

use std::io::Write;
use std::path::{Path, PathBuf};

use mayfly_buckets::Buckets;
use mayfly_core::Name;
use sha2::{Digest, Sha256};

/// Where a worker's log is collected while the run lives.
pub fn worker_log_path(run_dir: &Path, worker: &str) -> PathBuf {
    run_dir.join("workers").join(format!("{worker}.log"))
}

/// The object key of a worker's sealed log in the logs bucket.
pub fn sealed_log_key(run: &str, worker: &str) -> String {
    format!("runs/{run}/{worker}.log.zst")
}

/// Append `chunk` to the worker's log file (created on first use).
pub fn append(run_dir: &Path, worker: &str, chunk: &[u8]) -> std::io::Result<()> {
    let path = worker_log_path(run_dir, worker);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(chunk)
}

/// A sealed log: where it went and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLog {
    pub key: String,
    /// Hex SHA-256 of the compressed object.
    pub sha256: String,
    pub plain_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the log of worker {worker} at {path}: {source}")]
    Read { worker: String, path: PathBuf, source: std::io::Error },
    #[error("cannot compress the log of worker {worker}: {source}")]
    Compress { worker: String, source: std::io::Error },
    #[error("cannot store the sealed log of worker {worker} in bucket `{bucket}`: {source}")]
    Store { worker: String, bucket: Name, source: mayfly_buckets::BucketError },
    #[error("the sealed log of worker {worker} read back from bucket `{bucket}` does not match what was written")]
    Verify { worker: String, bucket: Name },
}

/// Compress, checksum and store one worker's log; read it back to verify.
/// A worker that never logged gets an empty sealed log, so every worker has one.
pub async fn seal(
    buckets: &Buckets,
    bucket: &Name,
    run_dir: &Path,
    run: &str,
    worker: &str,
) -> Result<SealedLog, SealError> {
    let path = worker_log_path(run_dir, worker);
    let plain = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(SealError::Read { worker: worker.to_owned(), path, source }),
    };
    let compressed = zstd::encode_all(plain.as_slice(), 9)
        .map_err(|source| SealError::Compress { worker: worker.to_owned(), source })?;
    let sha256 = hex::encode(Sha256::digest(&compressed));
    let key = sealed_log_key(run, worker);
    let store_error = |source| SealError::Store { worker: worker.to_owned(), bucket: bucket.clone(), source };
    buckets.put_bytes(bucket, &key, compressed.clone().into()).await.map_err(store_error)?;
    buckets
        .put_bytes(bucket, &format!("{key}.sha256"), format!("{sha256}  {worker}.log.zst\n").into_bytes().into())
        .await
        .map_err(store_error)?;
    let (_, stored) = buckets.get_bytes(bucket, &key).await.map_err(store_error)?;
    if hex::encode(Sha256::digest(&stored)) != sha256 {
        return Err(SealError::Verify { worker: worker.to_owned(), bucket: bucket.clone() });
    }
    Ok(SealedLog { key, sha256, plain_bytes: plain.len() as u64 })
}

/// Decompress a sealed log, checking it against its recorded checksum.
pub fn unseal(compressed: &[u8], expected_sha256: Option<&str>) -> Result<Vec<u8>, String> {
    if let Some(expected) = expected_sha256 {
        let actual = hex::encode(Sha256::digest(compressed));
        if actual != expected {
            return Err(format!("checksum mismatch: expected {expected}, found {actual}"));
        }
    }
    zstd::decode_all(compressed).map_err(|error| format!("not a zstd stream: {error}"))
}
