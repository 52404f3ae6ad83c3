//! What can go wrong with a bucket operation, and how object_store's errors
//! map onto it: a missing object becomes `NoSuchKey`, a full disk `DiskFull`,
//! a file-versus-folder clash `KeyConflict`; the rest stays a `Store` error
//! naming the operation, bucket and key.

use std::io;
use std::path::PathBuf;

use mayfly_core::Name;
use mayfly_crypto::CryptoError;
use mayfly_state::StateError;

use crate::key::InvalidKeyReason;
use crate::staged_file::StagedFileFailure;

/// Errors of [`crate::Buckets`]. Each message says what happened, where, and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("the object store {store} {problem}; nothing was changed")]
    UnusableStore { store: String, problem: String },

    #[error("bucket `{bucket}` does not exist; check the name, or create the bucket first")]
    NoSuchBucket { bucket: Name },

    #[error("object `{key}` does not exist in bucket `{bucket}`; list the bucket to see its keys")]
    NoSuchKey { bucket: Name, key: String },

    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: InvalidKeyReason },

    #[error(
        "bucket `{bucket}` still holds {objects} object(s); delete them first, or force the deletion to delete them too"
    )]
    BucketNotEmpty { bucket: Name, objects: u64 },

    #[error("bucket `{bucket}` already exists; pick another name or use the existing bucket")]
    AlreadyExists { bucket: Name },

    #[error("the disk holding bucket `{bucket}` is full; nothing was stored. Free space and retry")]
    DiskFull { bucket: Name },

    #[error(
        "cannot store `{key}` in bucket `{bucket}`: an object's key is the folder of the other (like `a` and `a/b`), which the local filesystem cannot hold both of; rename one of them"
    )]
    KeyConflict { bucket: Name, key: String },

    #[error("copying `{key}` in bucket `{bucket}` onto itself changes nothing; give a different destination")]
    CopyOntoItself { bucket: Name, key: String },

    #[error("the object {bucket}/{key} was not stored: reading its body failed: {source}")]
    ReadBody { bucket: Name, key: String, source: io::Error },

    #[error("writing object {bucket}/{key} to its destination failed: {source}")]
    WriteSink { bucket: Name, key: String, source: io::Error },

    #[error(
        "bucket `{bucket}` cannot be listed: its folder holds a file whose name cannot be an object key ({detail}); move that file out of the bucket folder"
    )]
    ForeignFile { bucket: Name, detail: String },

    #[error("object {bucket}/{key} cannot be read: {source}{}", decrypt_hint(source))]
    Decrypt { bucket: Name, key: String, source: CryptoError },

    #[error("these buckets were opened without a keyring, so they store objects unencrypted; {action} needs one")]
    NoKeyring { action: &'static str },

    #[error(
        "no multipart upload `{upload_id}` of `{key}` in bucket `{bucket}`: it was completed, aborted or swept as abandoned, or never begun; begin a new upload"
    )]
    NoSuchUpload { bucket: Name, key: String, upload_id: String },

    #[error("part number {number} is out of range; parts are numbered 1 to {max}", max = crate::MAX_PART_NUMBER)]
    InvalidPartNumber { number: i64 },

    #[error(
        "part {number} of upload `{upload_id}` has no stored version with ETag {etag:?}; send the ETag its UploadPart answered (ListParts shows them)"
    )]
    InvalidPart { upload_id: String, number: u32, etag: String },

    #[error(
        "the parts to complete upload `{upload_id}` must be listed in ascending order; part {number} follows part {previous}"
    )]
    InvalidPartOrder { upload_id: String, number: u32, previous: u32 },

    #[error(
        "part {number} of upload `{upload_id}` is {size} bytes; every part but the last must be at least {min} bytes (5 MiB)",
        min = crate::MIN_PART_SIZE
    )]
    EntityTooSmall { upload_id: String, number: u32, size: u64 },

    #[error("completing upload `{upload_id}` needs at least one part; list the parts to assemble")]
    NoParts { upload_id: String },

    #[error("the stored {what} of {bucket}/{key} cannot be read: {detail}")]
    CorruptRecord { what: &'static str, bucket: Name, key: String, detail: String },

    #[error(transparent)]
    State(#[from] StateError),

    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },

    #[error("object store failed to {operation} {bucket}/{key}: {source}")]
    Store {
        operation: &'static str,
        bucket: Name,
        key: String,
        /// Boxed: object_store's error is large and this one travels in every `Result`.
        source: Box<object_store::Error>,
    },
}

impl BucketError {
    pub(crate) fn invalid_key(key: &str, reason: InvalidKeyReason) -> BucketError {
        BucketError::InvalidKey { key: key.to_owned(), reason }
    }

    /// Map an object_store error on one object. `NotFound` becomes
    /// `NoSuchKey` only where the caller asks, because for a put it would mean
    /// something else.
    pub(crate) fn from_store(
        operation: &'static str,
        bucket: &Name,
        key: &str,
        source: object_store::Error,
    ) -> BucketError {
        let bucket = bucket.clone();
        let key = key.to_owned();
        if is_disk_full(&source) {
            return BucketError::DiskFull { bucket };
        }
        if is_file_folder_clash(&source) {
            return BucketError::KeyConflict { bucket, key };
        }
        BucketError::Store { operation, bucket, key, source: Box::new(source) }
    }

    /// A failure writing an object's file ourselves (`crate::staged_file`),
    /// mapped as object_store's errors are: a full disk, a file-versus-folder
    /// clash, or the failing action on its file.
    pub(crate) fn from_local_write(bucket: &Name, key: &str, failure: StagedFileFailure) -> BucketError {
        let StagedFileFailure { action, path, source } = failure;
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                BucketError::DiskFull { bucket: bucket.clone() }
            }
            io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
                BucketError::KeyConflict { bucket: bucket.clone(), key: key.to_owned() }
            }
            _ => BucketError::Io { action, path, source },
        }
    }

    /// An error reading an object's body: an envelope that fails to open
    /// becomes `Decrypt`, an object store error is mapped as on any read.
    pub(crate) fn from_body_read(bucket: &Name, key: &str, error: io::Error) -> BucketError {
        if let Some(crypto) = CryptoError::from_io(&error) {
            return BucketError::Decrypt { bucket: bucket.clone(), key: key.to_owned(), source: crypto.clone() };
        }
        let from_store = error.get_ref().is_some_and(|inner| inner.is::<object_store::Error>());
        let source = match error.into_inner() {
            // Just checked: the inner error is an object_store error.
            Some(inner) if from_store => *inner.downcast::<object_store::Error>().expect("an object_store error"),
            Some(inner) => object_store::Error::Generic { store: "object body", source: inner },
            None => object_store::Error::Generic { store: "object body", source: "the read failed".into() },
        };
        BucketError::from_store_reading("read", bucket, key, source)
    }

    /// Like [`BucketError::from_store`], and a missing object is `NoSuchKey`.
    pub(crate) fn from_store_reading(
        operation: &'static str,
        bucket: &Name,
        key: &str,
        source: object_store::Error,
    ) -> BucketError {
        if is_missing_object(&source) {
            return BucketError::NoSuchKey { bucket: bucket.clone(), key: key.to_owned() };
        }
        BucketError::from_store(operation, bucket, key, source)
    }
}

/// The io errors in an error's source chain. object_store wraps the local
/// backend's `std::io::Error` two levels deep (`Generic` → its own error → io).
fn io_errors_in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl Iterator<Item = &'a io::Error> {
    std::iter::successors(Some(error), |error| error.source()).filter_map(|error| error.downcast_ref::<io::Error>())
}

pub(crate) fn is_disk_full(error: &object_store::Error) -> bool {
    io_errors_in_chain(error)
        .any(|io_error| matches!(io_error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
}

/// A path component is a file where a folder is needed (`ENOTDIR`), or a
/// folder where a file is needed (`EISDIR`).
pub(crate) fn is_file_folder_clash(error: &object_store::Error) -> bool {
    io_errors_in_chain(error)
        .any(|io_error| matches!(io_error.kind(), io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory))
}

/// Absent, or one of its folders is an object (so it cannot exist).
pub(crate) fn is_missing_object(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
        || io_errors_in_chain(error)
            .any(|io_error| matches!(io_error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory))
}

/// What to do about an object that is not encrypted.
fn decrypt_hint(error: &CryptoError) -> &'static str {
    match error {
        CryptoError::NotEncrypted { .. } => {
            ". If it was stored before encryption was on, encrypt it in place with a rewrap that encrypts plaintext (`mayfly keys rewrap --encrypt-plaintext`)"
        }
        _ => "",
    }
}
