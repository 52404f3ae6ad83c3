//! Workers' logs: appended to one file per worker under the run's working
//! directory as they stream in (so a coordinator that dies loses nothing the
//! next one cannot seal), then sealed — compressed with zstd, checksummed with
//! SHA-256, written to the logs bucket — before the worker is stopped.
//!
//! With a keyring (as the CLI always gives), each appended chunk is stored as
//! its own envelope, framed by its length and bound to the run, the worker
//! and its byte offset in the file, so no log line is on disk in plaintext
//! even while the run is going, and a damaged or moved chunk fails to read.

use std::io::Write;
use std::path::{Path, PathBuf};

use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::{Keyring, decrypt_bytes, encrypt_bytes};
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

fn live_chunk_context(run: &str, worker: &str, offset: u64) -> String {
    format!("live-log/{run}/{worker}/{offset}")
}

/// Append `chunk` to the worker's log file (created on first use), as an
/// envelope when a keyring is given.
pub fn append(run_dir: &Path, run: &str, worker: &str, chunk: &[u8], keyring: Option<&Keyring>) -> std::io::Result<()> {
    let path = worker_log_path(run_dir, worker);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let Some(keyring) = keyring else { return file.write_all(chunk) };
    let offset = file.metadata()?.len();
    let envelope = encrypt_bytes(keyring, &live_chunk_context(run, worker, offset), chunk);
    let length = u32::try_from(envelope.len()).map_err(|_| std::io::Error::other("log chunk over 4 GiB"))?;
    let mut framed = Vec::with_capacity(4 + envelope.len());
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(&envelope);
    file.write_all(&framed)
}

/// The worker's log so far, in plaintext (decrypting each chunk when a keyring is given).
/// A missing file is an empty log.
pub fn read_live(run_dir: &Path, run: &str, worker: &str, keyring: Option<&Keyring>) -> std::io::Result<Vec<u8>> {
    let stored = match std::fs::read(worker_log_path(run_dir, worker)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let Some(keyring) = keyring else { return Ok(stored) };
    let mut plain = Vec::new();
    let mut offset = 0usize;
    while offset < stored.len() {
        let damaged = |what: &str| {
            std::io::Error::other(format!(
                "the live log of worker {worker} of run {run} is damaged at byte {offset}: {what}"
            ))
        };
        let header: [u8; 4] =
            stored.get(offset..offset + 4).and_then(|b| b.try_into().ok()).ok_or_else(|| damaged("a cut frame"))?;
        let length = u32::from_be_bytes(header) as usize;
        let envelope = stored.get(offset + 4..offset + 4 + length).ok_or_else(|| damaged("a cut chunk"))?;
        let chunk = decrypt_bytes(keyring, &live_chunk_context(run, worker, offset as u64), envelope)
            .map_err(|error| damaged(&error.to_string()))?;
        plain.extend_from_slice(&chunk);
        offset += 4 + length;
    }
    Ok(plain)
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
    keyring: Option<&Keyring>,
) -> Result<SealedLog, SealError> {
    let plain = read_live(run_dir, run, worker, keyring).map_err(|source| SealError::Read {
        worker: worker.to_owned(),
        path: worker_log_path(run_dir, worker),
        source,
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::Timestamp;

    #[test]
    fn live_logs_are_encrypted_chunk_by_chunk_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::generate(Timestamp::from_millis(1));
        for chunk in ["patient 17: chest pain\n", "patient 18: ", "fracture\n"] {
            append(dir.path(), "run-1", "w1-001", chunk.as_bytes(), Some(&keyring)).unwrap();
        }
        let stored = std::fs::read(worker_log_path(dir.path(), "w1-001")).unwrap();
        assert!(!stored.windows(7).any(|w| w == b"patient"), "no plaintext on disk");
        let plain = read_live(dir.path(), "run-1", "w1-001", Some(&keyring)).unwrap();
        assert_eq!(plain, b"patient 17: chest pain\npatient 18: fracture\n");

        let mut damaged = stored.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(worker_log_path(dir.path(), "w1-001"), &damaged).unwrap();
        let error = read_live(dir.path(), "run-1", "w1-001", Some(&keyring)).unwrap_err();
        assert!(error.to_string().contains("worker w1-001 of run run-1 is damaged"), "{error}");

        // A chunk is bound to its worker: another worker's file does not read.
        std::fs::write(worker_log_path(dir.path(), "w1-002"), &stored).unwrap();
        assert!(read_live(dir.path(), "run-1", "w1-002", Some(&keyring)).is_err());
    }

    #[test]
    fn without_a_keyring_logs_are_plain_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_live(dir.path(), "run-1", "w1-001", None).unwrap().is_empty());
        append(dir.path(), "run-1", "w1-001", b"line\n", None).unwrap();
        assert_eq!(read_live(dir.path(), "run-1", "w1-001", None).unwrap(), b"line\n");
    }
}
