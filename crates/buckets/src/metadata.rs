//! An object's content type and user metadata (S3's `Content-Type` and
//! `x-amz-meta-*`): user data, so stored sealed like the object, in a small
//! record beside it at `.meta/<bucket>/<sha256 of the key>` (bucket names
//! cannot start with `.`, so this never clashes with a bucket; the hashed name
//! keeps one flat folder, whatever folders the key has).
//!
//! The record names the entity tag of the object version it describes and is
//! written after that version is committed and before its event, under the
//! key's lock. A record whose tag differs from the object's (a crash between
//! the commit and the record, or an object replaced by another process) is
//! ignored: the object then has no metadata, never someone else's. A write
//! without metadata removes the record; a delete removes it too.

use std::collections::BTreeMap;

use bytes::Bytes;
use mayfly_core::Name;
use object_store::PutPayload;
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{BucketError, Buckets, ObjectKey, error};

/// The folder of the metadata records, beside the bucket folders.
const META_FOLDER: &str = ".meta";

/// What S3 stores with an object besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMetadata {
    /// The media type given when the object was written (`Content-Type`).
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-<name>: <value>`), by name.
    pub user: BTreeMap<String, String>,
}

impl ObjectMetadata {
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none() && self.user.is_empty()
    }
}

/// The record as stored (sealed when the buckets are encrypted).
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    etag: Option<String>,
    metadata: ObjectMetadata,
}

fn record_location(bucket: &Name, key: &ObjectKey) -> StorePath {
    let hashed = hex::encode(Sha256::digest(key.as_str().as_bytes()));
    StorePath::from_iter([META_FOLDER, bucket.as_str(), hashed.as_str()])
}

fn record_context(bucket: &Name, key: &ObjectKey) -> String {
    format!("meta/{bucket}/{key}")
}

impl Buckets {
    /// Seal a small record (when encrypted) under `context`.
    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> Bytes {
        match &self.keyring_snapshot() {
            None => Bytes::copy_from_slice(plaintext),
            Some(keyring) => mayfly_crypto::encrypt_bytes(keyring, context, plaintext).into(),
        }
    }

    /// Open a small record sealed by [`Buckets::seal`].
    pub(crate) fn unseal(&self, context: &str, stored: &[u8]) -> Result<Vec<u8>, mayfly_crypto::CryptoError> {
        match &self.keyring_snapshot() {
            None => Ok(stored.to_vec()),
            Some(keyring) => mayfly_crypto::decrypt_bytes(keyring, context, stored),
        }
    }

    /// The metadata of the object version with entity tag `etag`; empty if it has none.
    pub(crate) async fn read_metadata(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        etag: Option<&str>,
    ) -> Result<ObjectMetadata, BucketError> {
        let location = record_location(bucket, key);
        let stored = match self.inner.backend.store.get(&location).await {
            Ok(result) => result.bytes().await,
            Err(source) => Err(source),
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(source) if error::is_missing_object(&source) => return Ok(ObjectMetadata::default()),
            Err(source) => return Err(BucketError::from_store("read the metadata of", bucket, key.as_str(), source)),
        };
        let corrupt = |detail: String| BucketError::CorruptRecord {
            what: "metadata",
            bucket: bucket.clone(),
            key: key.to_string(),
            detail,
        };
        let plaintext =
            self.unseal(&record_context(bucket, key), &stored).map_err(|error| corrupt(error.to_string()))?;
        let record: Record = serde_json::from_slice(&plaintext).map_err(|error| corrupt(error.to_string()))?;
        if record.key != key.as_str() || record.etag.as_deref() != etag {
            return Ok(ObjectMetadata::default());
        }
        Ok(record.metadata)
    }

    /// Record `metadata` for the object version with entity tag `etag`, or
    /// remove the record if there is none. The caller holds the key's lock.
    pub(crate) async fn write_metadata(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        etag: Option<String>,
        metadata: &ObjectMetadata,
    ) -> Result<(), BucketError> {
        let location = record_location(bucket, key);
        if metadata.is_empty() {
            return self.remove_metadata(bucket, key).await;
        }
        let record = Record { key: key.to_string(), etag, metadata: metadata.clone() };
        let plaintext = serde_json::to_vec(&record).expect("metadata serializes");
        let sealed = self.seal(&record_context(bucket, key), &plaintext);
        self.inner
            .backend
            .store
            .put(&location, PutPayload::from(sealed))
            .await
            .map_err(|source| BucketError::from_store("store the metadata of", bucket, key.as_str(), source))?;
        self.inner.backend.sync_location(&location).await
    }

    /// Remove the object's metadata record, if it has one.
    pub(crate) async fn remove_metadata(&self, bucket: &Name, key: &ObjectKey) -> Result<(), BucketError> {
        match self.inner.backend.store.delete(&record_location(bucket, key)).await {
            Ok(()) => Ok(()),
            Err(source) if error::is_missing_object(&source) => Ok(()),
            Err(source) => Err(BucketError::from_store("remove the metadata of", bucket, key.as_str(), source)),
        }
    }
}
