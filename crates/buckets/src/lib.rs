//! Buckets of objects, S3 style, on `object_store`: the local filesystem (one
//! folder per bucket under `.mayfly/buckets/`), or any other store through the
//! same code, S3 among them ([`s3`]: one prefix per bucket under
//! `s3://BUCKET/PREFIX`). Every put, copy and delete is recorded in the state
//! store's bucket event log, which triggers consume.
//!
//! # What an `Ok` means
//!
//! Every successful put and copy appends a `created` event, and every delete a
//! `deleted` event, *after* the object store operation succeeded (and, on the
//! local filesystem, after the file and its folders were fsynced) and *before*
//! the method returns. So an `Ok` means both the object change and its event
//! are durable.
//!
//! The crash window: if the process dies, the state store fails or the caller
//! drops the future after the object store operation and before the event is
//! appended, the object changed but has no event, and the caller got no `Ok`.
//! A caller retries what it was not acknowledged: a retried put or copy
//! rewrites the object and appends its event, so consumers see it then. A
//! retried delete finds the object gone and reports `NoSuchKey`; its `deleted`
//! event is lost — consumers must treat a `created` event whose object has
//! vanished as deleted. The object is never rolled back, because an overwrite
//! cannot be undone. On the local filesystem a body of one part (8 MiB or
//! less) is written by object_store, which renames before this crate can
//! fsync, so a power loss (not a kill) inside the window may also leave that
//! unacknowledged object truncated; a longer body is written by this crate
//! and synced before its rename (`staged_file`).
//!
//! Bad input changes nothing: an unknown bucket or an invalid key is refused
//! before the object store is touched, and no event is appended. A full disk
//! leaves no partial object and no event (uploads write a hidden temp file and
//! rename it into place only when complete; the temp file is removed on
//! failure, and never listed if a kill leaves it behind).
//!
//! # Encryption at rest
//!
//! Buckets opened with a keyring ([`Buckets::open_encrypted`]) store every
//! object as an envelope of `mayfly-crypto`: its own random data key wrapped
//! by the keyring's current key, the body in authenticated 64 KiB chunks, the
//! whole bound to `bucket/key`. Puts, copies and gets stream through it in
//! constant memory; `ObjectInfo::size` and events report the plaintext size
//! (computed from the stored size, which the format fixes). A get of a
//! changed, truncated or moved object fails with [`BucketError::Decrypt`]
//! naming it; a streamed get writes only verified chunks to its sink before
//! failing. A copy decrypts and re-encrypts under a new data key and the new
//! name. [`Buckets::rewrap`] moves an object to the current key by rewriting
//! its header (the body is copied as it is, never decrypted) and appends no
//! event: the content did not change.
//!
//! [`Buckets::open`] encrypts nothing and is for tests and tools; the CLI
//! always opens a project's buckets with its keyring, because every bucket's
//! `encryption` setting defaults to `true` (and `[policy] encryption =
//! "required"`, the default, forbids turning it off).
//!
//! # Ordering
//!
//! Within one process, the commit of writes to one key (the rename or delete
//! plus its event) is serialised, so the log's order for a key is the order
//! the store applied the changes. Two processes writing one key at once are
//! not ordered against each other. `delete_bucket` does not stop a put racing
//! with it from another task or process.

mod backend;
mod error;
mod key;
mod key_locks;
mod metadata;
mod multipart;
pub mod s3;
mod staged_file;
mod upload;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use mayfly_core::{Clock, DeletionReason, Name, NewObjectEvent, ObjectEventKind, Timestamp};
use mayfly_crypto::{CryptoError, DecryptingReader, EncryptingReader, HEADER_LEN, Keyring};
use mayfly_state::{StateError, StateStore};
use object_store::{ObjectMeta, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::io::StreamReader;

use crate::backend::ObjectBackend;
pub use crate::error::BucketError;
pub use crate::key::{InvalidKeyReason, ObjectKey};
use crate::key_locks::KeyLocks;
pub use crate::metadata::ObjectMetadata;
pub use crate::multipart::{ABANDONED_AFTER, MAX_PART_NUMBER, MIN_PART_SIZE, PartInfo, UploadInfo};
use crate::upload::{FirstPart, UploadFailure, UploadedParts};

/// The encryption crate, for callers that manage the keyring.
pub use mayfly_crypto as crypto;

/// What a bucket operation reports about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub bucket: Name,
    pub key: String,
    /// The size of the object's content (for encrypted buckets, the
    /// plaintext; what is stored is slightly larger).
    pub size: u64,
    /// The store's entity tag. On the local filesystem it is derived from the
    /// file's inode, modification time and size, not from its content.
    pub etag: Option<String>,
    /// When the object store last wrote the object. A copy on the local
    /// filesystem is a hard link and keeps its source's time.
    pub last_modified: Timestamp,
}

/// The buckets of one Mayfly project. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Buckets {
    inner: Arc<BucketsInner>,
}

struct BucketsInner {
    backend: ObjectBackend,
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    key_locks: KeyLocks,
    /// `Some`: every object is stored as an envelope under this keyring.
    /// Behind a lock so a long-running process can take up a rotated keyring
    /// ([`Buckets::replace_keyring`]); each operation uses one snapshot.
    keyring: Option<std::sync::RwLock<Arc<Keyring>>>,
}

/// What [`Buckets::rewrap`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewrapOutcome {
    /// Its data key was already wrapped by the current key.
    AlreadyCurrent,
    /// Its data key is now wrapped by the current key.
    Rewrapped,
    /// It was stored unencrypted and is now encrypted.
    Encrypted,
    /// It is stored unencrypted and was left so (plaintext not asked to be encrypted).
    LeftUnencrypted,
    /// Another process replaced it while it was being rewrapped; the new
    /// version is kept as that process wrote it.
    ReplacedMeanwhile,
}

/// A body read whole or uploaded in parts, waiting for its commit.
enum PreparedBody {
    Whole(Bytes),
    Parts(UploadedParts),
}

impl std::fmt::Debug for BucketsInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets")
            .field("backend", &self.backend)
            .field("encrypted", &self.keyring.is_some())
            .finish_non_exhaustive()
    }
}

impl Buckets {
    /// Buckets on the local filesystem under `root` (`<project>/.mayfly/buckets`),
    /// one folder per bucket, storing objects **unencrypted**. Creates `root`
    /// if it is missing. The CLI uses [`Buckets::open_encrypted`].
    pub fn open(root: &Path, state: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> Result<Buckets, BucketError> {
        Ok(Buckets::with_backend(ObjectBackend::local(root)?, state, clock, None))
    }

    /// Like [`Buckets::open`], and every object is encrypted at rest under
    /// `keyring` (see the crate documentation).
    pub fn open_encrypted(
        root: &Path,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Result<Buckets, BucketError> {
        Ok(Buckets::with_backend(ObjectBackend::local(root)?, state, clock, Some(keyring)))
    }

    /// Buckets on any object store, each bucket under the prefix `<bucket>/`.
    /// Nothing beyond the `ObjectStore` trait is used: durability is the
    /// store's own (S3 acknowledges durable writes).
    pub fn open_on_object_store(
        store: Arc<dyn ObjectStore>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
    ) -> Buckets {
        Buckets::with_backend(ObjectBackend::other(store), state, clock, None)
    }

    /// Like [`Buckets::open_on_object_store`], encrypted under `keyring`.
    pub fn open_on_object_store_encrypted(
        store: Arc<dyn ObjectStore>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        keyring: Arc<Keyring>,
    ) -> Buckets {
        Buckets::with_backend(ObjectBackend::other(store), state, clock, Some(keyring))
    }

    fn with_backend(
        backend: ObjectBackend,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        keyring: Option<Arc<Keyring>>,
    ) -> Buckets {
        let keyring = keyring.map(std::sync::RwLock::new);
        Buckets { inner: Arc::new(BucketsInner { backend, state, clock, key_locks: KeyLocks::new(), keyring }) }
    }

    /// Whether objects are encrypted at rest.
    pub fn is_encrypted(&self) -> bool {
        self.inner.keyring.is_some()
    }

    /// The keyring as it is now (`None` for unencrypted buckets).
    fn keyring_snapshot(&self) -> Option<Arc<Keyring>> {
        // A panic while holding the lock cannot leave a half-written Arc.
        self.inner.keyring.as_ref().map(|lock| lock.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    /// Take up a new keyring (rotated, or with a key retired): operations
    /// from now on wrap new data keys with its current key and unwrap with
    /// any of its keys. Every clone of these buckets shares it. The caller
    /// checks it first (the CLI, against the state store's recorded keys);
    /// unencrypted buckets stay unencrypted.
    pub fn replace_keyring(&self, keyring: Arc<Keyring>) {
        if let Some(lock) = &self.inner.keyring {
            *lock.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keyring;
        }
    }

    // --- buckets -------------------------------------------------------------

    /// Register a bucket and create its folder. `AlreadyExists` if registered.
    pub async fn create_bucket(&self, name: &Name, tags: &[(String, String)]) -> Result<(), BucketError> {
        // The folder first: if registering fails, an empty folder is harmless,
        // while a registered bucket without a folder would look broken.
        self.inner.backend.create_bucket_folder(name).await?;
        let bucket = name.clone();
        let tags = tags.to_vec();
        let registered =
            self.call_state(move |state| state.create_bucket(&bucket, &tags)).await.map_err(|error| match error {
                StateError::AlreadyExists { .. } => BucketError::AlreadyExists { bucket: name.clone() },
                other => BucketError::State(other),
            })?;
        // Registered: from here on only warn, an error would misreport the outcome.
        match self.count_objects(name).await {
            Ok(0) => {}
            Ok(leftover) => {
                tracing::warn!(bucket = %name, objects = leftover, "new bucket's folder already holds objects (left from an earlier bucket of this name?); they have no created events")
            }
            Err(error) => tracing::warn!(bucket = %name, error = %error, "cannot list the new bucket's folder"),
        }
        tracing::info!(bucket = %name, created_at = %registered.created_at, "bucket created");
        Ok(())
    }

    /// Delete a bucket. Refuses one that holds objects unless `force`, which
    /// deletes them first, each recording a `deleted` event. Returns how many
    /// objects were deleted.
    pub async fn delete_bucket(&self, name: &Name, force: bool) -> Result<u64, BucketError> {
        self.require_bucket(name).await?;
        let objects = self.count_objects(name).await?;
        if objects > 0 && !force {
            return Err(BucketError::BucketNotEmpty { bucket: name.clone(), objects });
        }
        let mut deleted = 0;
        if objects > 0 {
            let keys: Vec<String> = self.list(name, None).await?.into_iter().map(|info| info.key).collect();
            for key in keys {
                match self.delete(name, &key).await {
                    Ok(()) => deleted += 1,
                    // Deleted meanwhile by someone else, who recorded the event.
                    Err(BucketError::NoSuchKey { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        let bucket = name.clone();
        self.call_state(move |state| state.delete_bucket(&bucket)).await.map_err(|error| match error {
            StateError::NotFound { .. } => BucketError::NoSuchBucket { bucket: name.clone() },
            other => BucketError::State(other),
        })?;
        self.inner.backend.remove_bucket_folder(name).await?;
        tracing::info!(bucket = %name, objects_deleted = deleted, "bucket deleted");
        Ok(deleted)
    }

    /// Whether the bucket holds no object.
    pub async fn is_empty(&self, bucket: &Name) -> Result<bool, BucketError> {
        self.require_bucket(bucket).await?;
        let mut objects = self.object_stream(bucket, None);
        Ok(objects.try_next().await?.is_none())
    }

    // --- objects -------------------------------------------------------------

    /// Store the object `key` from `body`, streaming: any size, in constant
    /// memory (see the `upload` module). Replaces an existing object.
    pub async fn put(
        &self,
        bucket: &Name,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
    ) -> Result<ObjectInfo, BucketError> {
        self.put_with_metadata(bucket, key, body, &ObjectMetadata::default()).await
    }

    /// Like [`Buckets::put`], storing `metadata` with the object (sealed;
    /// see the `metadata` module).
    pub async fn put_with_metadata(
        &self,
        bucket: &Name,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        metadata: &ObjectMetadata,
    ) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let prepared = match &self.keyring_snapshot() {
            None => self.prepare_body(bucket, &key, &location, body).await?,
            Some(keyring) => {
                let encrypting = EncryptingReader::new(body, keyring, &object_context(bucket, &key));
                self.prepare_body(bucket, &key, &location, encrypting).await?
            }
        };
        let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
        self.commit_body(bucket, &key, &location, prepared).await?;
        self.record_written_object(bucket, &key, metadata).await
    }

    /// The content type and user metadata stored with the object version `info`.
    pub async fn metadata(&self, info: &ObjectInfo) -> Result<ObjectMetadata, BucketError> {
        let key = parse_key(&info.key)?;
        self.read_metadata(&info.bucket, &key, info.etag.as_deref()).await
    }

    /// Read `body` whole if it fits in one part, or upload it in parts; the
    /// object does not change until [`Buckets::commit_body`].
    async fn prepare_body(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        location: &object_store::path::Path,
        body: impl AsyncRead + Unpin + Send,
    ) -> Result<PreparedBody, BucketError> {
        let mut body = body;
        let read_failed = |source| BucketError::ReadBody { bucket: bucket.clone(), key: key.to_string(), source };
        match upload::read_first_part(&mut body).await.map_err(read_failed)? {
            FirstPart::WholeBody(bytes) => Ok(PreparedBody::Whole(bytes)),
            FirstPart::MoreToCome(first_part) => {
                let parts = upload::upload_parts(&self.inner.backend, location, first_part, &mut body)
                    .await
                    .map_err(|failure| upload_failed(bucket, key, failure))?;
                Ok(PreparedBody::Parts(parts))
            }
        }
    }

    /// Make a prepared body the object: the commit point. The caller holds the key's lock.
    async fn commit_body(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        location: &object_store::path::Path,
        prepared: PreparedBody,
    ) -> Result<(), BucketError> {
        match prepared {
            PreparedBody::Whole(bytes) => {
                self.inner
                    .backend
                    .store
                    .put(location, PutPayload::from(bytes))
                    .await
                    .map_err(|source| BucketError::from_store("put", bucket, key.as_str(), source))?;
            }
            PreparedBody::Parts(parts) => {
                parts.complete().await.map_err(|failure| upload_failed(bucket, key, failure))?
            }
        }
        Ok(())
    }

    /// Store the object `key` with `body`. Replaces an existing object.
    pub async fn put_bytes(&self, bucket: &Name, key: &str, body: Bytes) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let stored = match &self.keyring_snapshot() {
            None => body,
            Some(keyring) => mayfly_crypto::encrypt_bytes(keyring, &object_context(bucket, &key), &body).into(),
        };
        let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
        self.commit_body(bucket, &key, &location, PreparedBody::Whole(stored)).await?;
        self.record_written_object(bucket, &key, &ObjectMetadata::default()).await
    }

    /// Copy an object, within a bucket or across buckets. Replaces an existing
    /// destination object.
    pub async fn copy(&self, from: (&Name, &str), to: (&Name, &str)) -> Result<ObjectInfo, BucketError> {
        self.copy_with_metadata(from, to, None).await
    }

    /// Like [`Buckets::copy`]; the copy gets `metadata`, or the source's if `None`.
    pub async fn copy_with_metadata(
        &self,
        from: (&Name, &str),
        to: (&Name, &str),
        metadata: Option<ObjectMetadata>,
    ) -> Result<ObjectInfo, BucketError> {
        let (from_bucket, from_key) = (from.0, parse_key(from.1)?);
        let (to_bucket, to_key) = (to.0, parse_key(to.1)?);
        if from_bucket == to_bucket && from_key == to_key {
            return Err(BucketError::CopyOntoItself { bucket: from_bucket.clone(), key: from_key.to_string() });
        }
        self.require_bucket(from_bucket).await?;
        self.require_bucket(to_bucket).await?;
        let from_location = self.inner.backend.object_location(from_bucket, &from_key)?;
        let to_location = self.inner.backend.object_location(to_bucket, &to_key)?;
        let metadata = match metadata {
            Some(metadata) => metadata,
            None => {
                let source = self.head_object(from_bucket, &from_key).await?;
                self.read_metadata(from_bucket, &from_key, source.etag.as_deref()).await?
            }
        };
        if let Some(keyring) = &self.keyring_snapshot() {
            // An envelope is bound to its name: decrypt and re-encrypt, streaming.
            let (_, source) = self.open_decrypting(keyring, from_bucket, &from_key, &from_location).await?;
            let encrypting = EncryptingReader::new(source, keyring, &object_context(to_bucket, &to_key));
            let prepared = match self.prepare_body(to_bucket, &to_key, &to_location, encrypting).await {
                Ok(prepared) => prepared,
                Err(BucketError::ReadBody { source, .. }) => {
                    return Err(BucketError::from_body_read(from_bucket, from_key.as_str(), source));
                }
                Err(other) => return Err(other),
            };
            let _commit = self.inner.key_locks.lock(to_bucket, to_key.as_str()).await;
            self.commit_body(to_bucket, &to_key, &to_location, prepared).await?;
            return self.record_written_object(to_bucket, &to_key, &metadata).await;
        }
        let _commit = self.inner.key_locks.lock(to_bucket, to_key.as_str()).await;
        // Check the source explicitly: a store's "not found" on copy could
        // mean the source or the destination's folder.
        self.inner
            .backend
            .store
            .head(&from_location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", from_bucket, from_key.as_str(), source))?;
        self.inner.backend.store.copy(&from_location, &to_location).await.map_err(|source| {
            if error::is_missing_object(&source) && !error::is_file_folder_clash(&source) {
                BucketError::NoSuchKey { bucket: from_bucket.clone(), key: from_key.to_string() }
            } else {
                BucketError::from_store("copy to", to_bucket, to_key.as_str(), source)
            }
        })?;
        self.record_written_object(to_bucket, &to_key, &metadata).await
    }

    /// Write the object to `sink`, streaming, and flush it.
    pub async fn get(
        &self,
        bucket: &Name,
        key: &str,
        sink: impl AsyncWrite + Unpin + Send,
    ) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let store_failed = |source| BucketError::from_store_reading("read", bucket, key.as_str(), source);
        let mut sink = sink;
        let write_failed = |source| BucketError::WriteSink { bucket: bucket.clone(), key: key.to_string(), source };
        if let Some(keyring) = &self.keyring_snapshot() {
            let (meta, mut plaintext) = self.open_decrypting(keyring, bucket, &key, &location).await?;
            let info = self.object_info(bucket, key.to_string(), &meta);
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = plaintext
                    .read(&mut buffer)
                    .await
                    .map_err(|error| BucketError::from_body_read(bucket, key.as_str(), error))?;
                if read == 0 {
                    break;
                }
                sink.write_all(&buffer[..read]).await.map_err(write_failed)?;
            }
            sink.flush().await.map_err(write_failed)?;
            return Ok(info);
        }
        let result = self.inner.backend.store.get(&location).await.map_err(store_failed)?;
        let info = self.object_info(bucket, key.to_string(), &result.meta);
        let mut chunks = backend::stored_stream(result);
        while let Some(chunk) = chunks.try_next().await.map_err(store_failed)? {
            sink.write_all(&chunk).await.map_err(write_failed)?;
        }
        sink.flush().await.map_err(write_failed)?;
        Ok(info)
    }

    /// The object's content as a stream of pieces, for a caller that passes
    /// them on (an HTTP response body) without a pipe or a task of its own.
    /// For encrypted buckets only verified chunks are yielded; a changed or
    /// truncated object ends the stream in [`BucketError::Decrypt`] after the
    /// verified chunks before the damage, as [`Buckets::get`] does.
    pub async fn get_stream(
        &self,
        bucket: &Name,
        key: &str,
    ) -> Result<(ObjectInfo, BoxStream<'static, Result<Bytes, BucketError>>), BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let (failed_bucket, failed_key) = (bucket.clone(), key.to_string());
        if let Some(keyring) = &self.keyring_snapshot() {
            let (meta, plaintext) = self.open_decrypting(keyring, bucket, &key, &location).await?;
            let info = self.object_info(bucket, key.to_string(), &meta);
            let stream = tokio_util::io::ReaderStream::with_capacity(plaintext, mayfly_crypto::CHUNK_SIZE)
                .map_err(move |error| BucketError::from_body_read(&failed_bucket, &failed_key, error));
            return Ok((info, stream.boxed()));
        }
        let result = self
            .inner
            .backend
            .store
            .get(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", bucket, key.as_str(), source))?;
        let info = self.object_info(bucket, key.to_string(), &result.meta);
        let stream = backend::stored_stream(result)
            .map_err(move |source| BucketError::from_store_reading("read", &failed_bucket, &failed_key, source));
        Ok((info, stream.boxed()))
    }

    /// The object's content, in memory.
    pub async fn get_bytes(&self, bucket: &Name, key: &str) -> Result<(ObjectInfo, Bytes), BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let store_failed = |source| BucketError::from_store_reading("read", bucket, key.as_str(), source);
        let result = self.inner.backend.store.get(&location).await.map_err(store_failed)?;
        let info = self.object_info(bucket, key.to_string(), &result.meta);
        let bytes = result.bytes().await.map_err(store_failed)?;
        match &self.keyring_snapshot() {
            None => Ok((info, bytes)),
            Some(keyring) => match mayfly_crypto::decrypt_bytes(keyring, &object_context(bucket, &key), &bytes) {
                Ok(plaintext) => Ok((info, plaintext.into())),
                Err(source) => Err(BucketError::Decrypt { bucket: bucket.clone(), key: key.to_string(), source }),
            },
        }
    }

    /// The object's size, entity tag and time, without its content.
    pub async fn head(&self, bucket: &Name, key: &str) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.head_object(bucket, &key).await
    }

    /// The objects whose keys start with `prefix` (a plain string prefix, as in
    /// S3: `inc` matches `incoming/a`), sorted by key.
    pub async fn list(&self, bucket: &Name, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, BucketError> {
        self.require_bucket(bucket).await?;
        let mut objects: Vec<ObjectInfo> = self.object_stream(bucket, prefix).try_collect().await?;
        objects.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(objects)
    }

    /// Like [`Buckets::list`] but streamed in constant memory, in no particular
    /// order (the local filesystem walks folders in directory order).
    pub async fn list_unordered(
        &self,
        bucket: &Name,
        prefix: Option<&str>,
    ) -> Result<BoxStream<'static, Result<ObjectInfo, BucketError>>, BucketError> {
        self.require_bucket(bucket).await?;
        Ok(self.object_stream(bucket, prefix))
    }

    /// Move an object to the keyring's current key: its data key is unwrapped
    /// with the key that wrapped it and wrapped again with the current one.
    /// Only the header changes; the body is copied as stored, never
    /// decrypted. An unencrypted object (stored before encryption was on) is
    /// encrypted if `encrypt_plaintext`, else left as it is. No event is
    /// appended: the content does not change.
    ///
    /// Writes of the key from this process wait for the rewrap. A put from
    /// another process that lands during it is detected by the object's
    /// entity tag just before the commit and kept (`ReplacedMeanwhile`); one
    /// landing in the instant between that check and the rename would be
    /// overwritten by the old content (FIXME: a conditional put, once the S3
    /// backend brings one; until then rewrap while `mayfly up` is stopped).
    pub async fn rewrap(
        &self,
        bucket: &Name,
        key: &str,
        encrypt_plaintext: bool,
    ) -> Result<RewrapOutcome, BucketError> {
        let keyring = self.keyring_snapshot().ok_or(BucketError::NoKeyring { action: "rewrap" })?;
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let context = object_context(bucket, &key);
        let read_failed = |error| BucketError::from_body_read(bucket, key.as_str(), error);
        let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;

        let result = self
            .inner
            .backend
            .store
            .get(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", bucket, key.as_str(), source))?;
        let etag_before = result.meta.e_tag.clone();
        let metadata = self.read_metadata(bucket, &key, etag_before.as_deref()).await?;
        let mut stored = StreamReader::new(backend::stored_stream(result).map_err(std::io::Error::other));
        let mut header = Vec::with_capacity(HEADER_LEN);
        (&mut stored).take(HEADER_LEN as u64).read_to_end(&mut header).await.map_err(read_failed)?;
        let (outcome, new_body): (RewrapOutcome, Box<dyn AsyncRead + Unpin + Send>) =
            match mayfly_crypto::rewrap_header(&keyring, &context, &header) {
                Ok(None) => return Ok(RewrapOutcome::AlreadyCurrent),
                Ok(Some(new_header)) => {
                    (RewrapOutcome::Rewrapped, Box::new(std::io::Cursor::new(new_header.to_vec()).chain(stored)))
                }
                Err(CryptoError::NotEncrypted { .. }) if encrypt_plaintext => {
                    let plaintext = std::io::Cursor::new(header).chain(stored);
                    (RewrapOutcome::Encrypted, Box::new(EncryptingReader::new(plaintext, &keyring, &context)))
                }
                Err(CryptoError::NotEncrypted { .. }) => return Ok(RewrapOutcome::LeftUnencrypted),
                Err(source) => {
                    return Err(BucketError::Decrypt { bucket: bucket.clone(), key: key.to_string(), source });
                }
            };
        let prepared = match self.prepare_body(bucket, &key, &location, new_body).await {
            Ok(prepared) => prepared,
            Err(BucketError::ReadBody { source, .. }) => return Err(read_failed(source)),
            Err(other) => return Err(other),
        };
        let etag_now = self.inner.backend.store.head(&location).await.ok().and_then(|meta| meta.e_tag);
        if etag_now != etag_before {
            if let PreparedBody::Parts(parts) = prepared {
                parts.abort().await;
            }
            tracing::info!(%bucket, %key, "object replaced while being rewrapped; keeping the new version");
            return Ok(RewrapOutcome::ReplacedMeanwhile);
        }
        self.commit_body(bucket, &key, &location, prepared).await?;
        self.inner.backend.sync_written_object(bucket, &key).await?;
        if !metadata.is_empty() {
            // The record names the object's entity tag, which the rewrite changed.
            let etag = self.head_object(bucket, &key).await?.etag;
            self.write_metadata(bucket, &key, etag, &metadata).await?;
        }
        tracing::debug!(%bucket, %key, ?outcome, key_id = keyring.current().id(), "object rewrapped");
        Ok(outcome)
    }

    /// The id of the key that wraps an object's data key, read from its
    /// envelope header; `None` for an object stored unencrypted (from before
    /// encryption was on). `mayfly keys retire` counts objects by it.
    pub async fn object_key_id(&self, bucket: &Name, key: &str) -> Result<Option<String>, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let result = self
            .inner
            .backend
            .store
            .get(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", bucket, key.as_str(), source))?;
        // object_store's own stream reads 8 KiB at a time: enough for the header, all this reads.
        let mut stored = StreamReader::new(result.into_stream().map_err(std::io::Error::other));
        let mut header = Vec::with_capacity(HEADER_LEN);
        (&mut stored)
            .take(HEADER_LEN as u64)
            .read_to_end(&mut header)
            .await
            .map_err(|error| BucketError::from_body_read(bucket, key.as_str(), error))?;
        match mayfly_crypto::envelope_key_id(&header, &object_context(bucket, &key)) {
            Ok(id) => Ok(Some(id)),
            Err(CryptoError::NotEncrypted { .. }) => Ok(None),
            Err(source) => Err(BucketError::Decrypt { bucket: bucket.clone(), key: key.to_string(), source }),
        }
    }

    /// Delete an object. `NoSuchKey` if it does not exist.
    pub async fn delete(&self, bucket: &Name, key: &str) -> Result<(), BucketError> {
        self.delete_object(bucket, key, None).await
    }

    /// Delete an object that outlived a retention rule: its `deleted` event
    /// carries the reason. `NoSuchKey` if it is already gone.
    pub async fn expire(&self, bucket: &Name, key: &str, reason: DeletionReason) -> Result<(), BucketError> {
        self.delete_object(bucket, key, Some(reason)).await
    }

    async fn delete_object(&self, bucket: &Name, key: &str, reason: Option<DeletionReason>) -> Result<(), BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
        // Look first: S3 deletes a missing key without complaint, and a
        // deleted event must name an object that existed.
        self.head_object(bucket, &key).await?;
        self.inner
            .backend
            .store
            .delete(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("delete", bucket, key.as_str(), source))?;
        if let Err(error) = self.inner.backend.tidy_after_delete(bucket, &key).await {
            // The object is gone; failing now would lose its event for good.
            tracing::warn!(%bucket, %key, error = %error, "object deleted, but tidying its folders failed");
        }
        if let Err(error) = self.remove_metadata(bucket, &key).await {
            // A leftover record names the deleted version's entity tag, so it is never used again.
            tracing::warn!(%bucket, %key, error = %error, "object deleted, but removing its metadata failed");
        }
        self.append_event(bucket, &key, ObjectEventKind::Deleted, 0, None, reason).await?;
        match reason {
            Some(reason) => tracing::info!(%bucket, %key, reason = reason.as_str(), "object expired"),
            None => tracing::debug!(%bucket, %key, "object deleted"),
        }
        Ok(())
    }

    // --- internals -----------------------------------------------------------

    /// After an object was written: make it durable, read back what the store
    /// reports, record its metadata, and append its `created` event. The
    /// caller holds the key's lock.
    async fn record_written_object(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        metadata: &ObjectMetadata,
    ) -> Result<ObjectInfo, BucketError> {
        self.inner.backend.sync_written_object(bucket, key).await?;
        let info = self.head_object(bucket, key).await?;
        self.write_metadata(bucket, key, info.etag.clone(), metadata).await?;
        self.append_event(bucket, key, ObjectEventKind::Created, info.size, info.etag.clone(), None).await?;
        tracing::debug!(%bucket, %key, size = info.size, "object written");
        Ok(info)
    }

    async fn head_object(&self, bucket: &Name, key: &ObjectKey) -> Result<ObjectInfo, BucketError> {
        let location = self.inner.backend.object_location(bucket, key)?;
        let meta = self
            .inner
            .backend
            .store
            .head(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", bucket, key.as_str(), source))?;
        Ok(self.object_info(bucket, key.to_string(), &meta))
    }

    /// Reader of an object's verified plaintext (its header checked already).
    async fn open_decrypting(
        &self,
        keyring: &Keyring,
        bucket: &Name,
        key: &ObjectKey,
        location: &object_store::path::Path,
    ) -> Result<(ObjectMeta, DecryptingReader<impl AsyncRead + Unpin + Send + use<>>), BucketError> {
        let result = self
            .inner
            .backend
            .store
            .get(location)
            .await
            .map_err(|source| BucketError::from_store_reading("read", bucket, key.as_str(), source))?;
        let meta = result.meta.clone();
        let envelope = StreamReader::new(backend::stored_stream(result).map_err(std::io::Error::other));
        let plaintext = DecryptingReader::open(envelope, keyring, &object_context(bucket, key))
            .await
            .map_err(|error| BucketError::from_body_read(bucket, key.as_str(), error))?;
        Ok((meta, plaintext))
    }

    /// An object's info; for encrypted buckets the size is the plaintext's.
    fn object_info(&self, bucket: &Name, key: String, meta: &ObjectMeta) -> ObjectInfo {
        object_info(bucket, key, meta, self.inner.keyring.is_some())
    }

    async fn append_event(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        kind: ObjectEventKind,
        size: u64,
        etag: Option<String>,
        reason: Option<DeletionReason>,
    ) -> Result<(), BucketError> {
        let event = NewObjectEvent {
            bucket: bucket.clone(),
            key: key.to_string(),
            kind,
            size,
            etag,
            at: self.inner.clock.now(),
            reason,
        };
        self.call_state(move |state| state.append_object_event(event)).await?;
        Ok(())
    }

    /// `NoSuchBucket` unless the state store has the bucket registered (its
    /// folder alone does not count).
    async fn require_bucket(&self, bucket: &Name) -> Result<(), BucketError> {
        let name = bucket.clone();
        match self.call_state(move |state| state.bucket(&name)).await {
            Ok(_) => Ok(()),
            Err(StateError::NotFound { .. }) => Err(BucketError::NoSuchBucket { bucket: bucket.clone() }),
            Err(other) => Err(BucketError::State(other)),
        }
    }

    /// Call the synchronous state store on tokio's blocking pool. Lookups are
    /// fast, but appends commit (an fsync on SQLite, a network round trip on
    /// PostgreSQL) and would stall the async workers that stream object bodies;
    /// a hop to the blocking pool costs microseconds next to an object write.
    async fn call_state<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn StateStore) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let state = Arc::clone(&self.inner.state);
        match tokio::task::spawn_blocking(move || call(state.as_ref())).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => Err(StateError::Backend(format!(
                "state store call interrupted (the runtime is shutting down): {error}"
            ))),
        }
    }

    async fn count_objects(&self, bucket: &Name) -> Result<u64, BucketError> {
        self.object_stream(bucket, None).try_fold(0, |count, _| async move { Ok(count + 1) }).await
    }

    /// The bucket's objects under `prefix`, unordered. Only keys that pass
    /// [`ObjectKey::parse`] are objects: object_store already hides its upload
    /// temp files, and anything else dropped into the folder by hand is
    /// skipped.
    fn object_stream(
        &self,
        bucket: &Name,
        prefix: Option<&str>,
    ) -> BoxStream<'static, Result<ObjectInfo, BucketError>> {
        let prefix = prefix.unwrap_or_default().to_owned();
        // object_store lists whole folders; list the deepest folder the prefix
        // names and filter by the string prefix.
        let folder = match prefix.rsplit_once('/') {
            None => None,
            Some((folder, _)) => match ObjectKey::parse(folder) {
                Ok(folder) => Some(folder),
                // No valid key can lie in an invalid folder.
                Err(_) => return futures::stream::empty().boxed(),
            },
        };
        let location = self.inner.backend.folder_location(bucket, folder.as_ref());
        let backend = self.inner.backend.clone();
        let encrypted = self.is_encrypted();
        let bucket = bucket.clone();
        let listed_bucket = bucket.clone();
        let listed_folder = folder.map(|folder| format!("{folder}/")).unwrap_or_default();
        self.inner
            .backend
            .store
            .list(Some(&location))
            .map_err(move |source| match source {
                // The local backend met a file name that is no valid path.
                object_store::Error::InvalidPath { source } => {
                    BucketError::ForeignFile { bucket: listed_bucket.clone(), detail: source.to_string() }
                }
                source => BucketError::Store {
                    operation: "list",
                    bucket: listed_bucket.clone(),
                    key: listed_folder.clone(),
                    source: Box::new(source),
                },
            })
            .try_filter_map(move |meta| {
                let info = match backend.key_of(&bucket, &meta.location) {
                    Some(key) if key.starts_with(&prefix) && ObjectKey::parse(key).is_ok() => {
                        Some(object_info(&bucket, key.to_owned(), &meta, encrypted))
                    }
                    _ => {
                        tracing::trace!(location = %meta.location, "listing skips a file that is not an object");
                        None
                    }
                };
                futures::future::ready(Ok(info))
            })
            .boxed()
    }
}

fn parse_key(key: &str) -> Result<ObjectKey, BucketError> {
    ObjectKey::parse(key).map_err(|reason| BucketError::invalid_key(key, reason))
}

/// What an envelope is bound to: its object's name.
fn object_context(bucket: &Name, key: &ObjectKey) -> String {
    format!("{bucket}/{key}")
}

fn upload_failed(bucket: &Name, key: &ObjectKey, failure: UploadFailure) -> BucketError {
    match failure {
        UploadFailure::ReadBody(source) => {
            BucketError::ReadBody { bucket: bucket.clone(), key: key.to_string(), source }
        }
        UploadFailure::Store(source) => BucketError::from_store("upload", bucket, key.as_str(), source),
        UploadFailure::LocalFile(failure) => BucketError::from_local_write(bucket, key.as_str(), failure),
    }
}

fn object_info(bucket: &Name, key: String, meta: &ObjectMeta, encrypted: bool) -> ObjectInfo {
    // Computed from the stored size, which the envelope format fixes, so a
    // listing reads no object. FIXME: an unencrypted leftover from before
    // encryption was on reports its size less the envelope overhead until a
    // rewrap encrypts it (checking each object's magic would cost a read per
    // object).
    let size = if encrypted { mayfly_crypto::plaintext_len(meta.size).unwrap_or(meta.size) } else { meta.size };
    ObjectInfo {
        bucket: bucket.clone(),
        key,
        size,
        etag: meta.e_tag.clone(),
        last_modified: Timestamp::from_millis(meta.last_modified.timestamp_millis()),
    }
}
