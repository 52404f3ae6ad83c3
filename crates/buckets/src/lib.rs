//! Buckets of objects, S3 style, on `object_store`: the local filesystem today
//! (one folder per bucket under `.mayfly/buckets/`), S3 later through the same
//! code. Every put, copy and delete is recorded in the state store's bucket
//! event log, which triggers consume.
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
//! cannot be undone. On the local filesystem object_store renames before this
//! crate can fsync, so a power loss (not a kill) inside the window may also
//! leave that unacknowledged object truncated.
//!
//! Bad input changes nothing: an unknown bucket or an invalid key is refused
//! before the object store is touched, and no event is appended. A full disk
//! leaves no partial object and no event (uploads write a hidden temp file and
//! rename it into place only when complete; the temp file is removed on
//! failure, and never listed if a kill leaves it behind).
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
mod upload;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use mayfly_core::{Clock, Name, NewObjectEvent, ObjectEventKind, Timestamp};
use mayfly_state::{StateError, StateStore};
use object_store::{ObjectMeta, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::backend::ObjectBackend;
pub use crate::error::BucketError;
pub use crate::key::{InvalidKeyReason, ObjectKey};
use crate::key_locks::KeyLocks;
use crate::upload::{FirstPart, UploadFailure};

/// What a bucket operation reports about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub bucket: Name,
    pub key: String,
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
}

impl std::fmt::Debug for BucketsInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl Buckets {
    /// Buckets on the local filesystem under `root` (`<project>/.mayfly/buckets`),
    /// one folder per bucket. Creates `root` if it is missing.
    pub fn open(root: &Path, state: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> Result<Buckets, BucketError> {
        Ok(Buckets::with_backend(ObjectBackend::local(root)?, state, clock))
    }

    /// Buckets on any object store, each bucket under the prefix `<bucket>/`.
    /// Nothing beyond the `ObjectStore` trait is used: durability is the
    /// store's own (S3 acknowledges durable writes).
    pub fn open_on_object_store(
        store: Arc<dyn ObjectStore>,
        state: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
    ) -> Buckets {
        Buckets::with_backend(ObjectBackend::other(store), state, clock)
    }

    fn with_backend(backend: ObjectBackend, state: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> Buckets {
        Buckets { inner: Arc::new(BucketsInner { backend, state, clock, key_locks: KeyLocks::new() }) }
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
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let mut body = body;
        let read_failed = |source| BucketError::ReadBody { bucket: bucket.clone(), key: key.to_string(), source };
        match upload::read_first_part(&mut body).await.map_err(read_failed)? {
            FirstPart::WholeBody(bytes) => self.put_whole_body(bucket, &key, bytes).await,
            FirstPart::MoreToCome(first_part) => {
                let upload_failed = |failure| match failure {
                    UploadFailure::ReadBody(source) => read_failed(source),
                    UploadFailure::Store(source) => BucketError::from_store("upload", bucket, key.as_str(), source),
                };
                let store = self.inner.backend.store.as_ref();
                let parts =
                    upload::upload_parts(store, &location, first_part, &mut body).await.map_err(upload_failed)?;
                let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
                parts.complete().await.map_err(upload_failed)?;
                self.record_written_object(bucket, &key).await
            }
        }
    }

    /// Store the object `key` with `body`. Replaces an existing object.
    pub async fn put_bytes(&self, bucket: &Name, key: &str, body: Bytes) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.put_whole_body(bucket, &key, body).await
    }

    async fn put_whole_body(&self, bucket: &Name, key: &ObjectKey, body: Bytes) -> Result<ObjectInfo, BucketError> {
        let location = self.inner.backend.object_location(bucket, key)?;
        let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
        self.inner
            .backend
            .store
            .put(&location, PutPayload::from(body))
            .await
            .map_err(|source| BucketError::from_store("put", bucket, key.as_str(), source))?;
        self.record_written_object(bucket, key).await
    }

    /// Copy an object, within a bucket or across buckets. Replaces an existing
    /// destination object.
    pub async fn copy(&self, from: (&Name, &str), to: (&Name, &str)) -> Result<ObjectInfo, BucketError> {
        let (from_bucket, from_key) = (from.0, parse_key(from.1)?);
        let (to_bucket, to_key) = (to.0, parse_key(to.1)?);
        if from_bucket == to_bucket && from_key == to_key {
            return Err(BucketError::CopyOntoItself { bucket: from_bucket.clone(), key: from_key.to_string() });
        }
        self.require_bucket(from_bucket).await?;
        self.require_bucket(to_bucket).await?;
        let from_location = self.inner.backend.object_location(from_bucket, &from_key)?;
        let to_location = self.inner.backend.object_location(to_bucket, &to_key)?;
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
        self.record_written_object(to_bucket, &to_key).await
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
        let result = self.inner.backend.store.get(&location).await.map_err(store_failed)?;
        let info = object_info(bucket, key.to_string(), &result.meta);
        let mut chunks = result.into_stream();
        let mut sink = sink;
        let write_failed = |source| BucketError::WriteSink { bucket: bucket.clone(), key: key.to_string(), source };
        while let Some(chunk) = chunks.try_next().await.map_err(store_failed)? {
            sink.write_all(&chunk).await.map_err(write_failed)?;
        }
        sink.flush().await.map_err(write_failed)?;
        Ok(info)
    }

    /// The object's content, in memory.
    pub async fn get_bytes(&self, bucket: &Name, key: &str) -> Result<(ObjectInfo, Bytes), BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let location = self.inner.backend.object_location(bucket, &key)?;
        let store_failed = |source| BucketError::from_store_reading("read", bucket, key.as_str(), source);
        let result = self.inner.backend.store.get(&location).await.map_err(store_failed)?;
        let info = object_info(bucket, key.to_string(), &result.meta);
        let bytes = result.bytes().await.map_err(store_failed)?;
        Ok((info, bytes))
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

    /// Delete an object. `NoSuchKey` if it does not exist.
    pub async fn delete(&self, bucket: &Name, key: &str) -> Result<(), BucketError> {
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
        self.append_event(bucket, &key, ObjectEventKind::Deleted, 0, None).await?;
        tracing::debug!(%bucket, %key, "object deleted");
        Ok(())
    }

    // --- internals -----------------------------------------------------------

    /// After an object was written: make it durable, read back what the store
    /// reports, and append its `created` event.
    async fn record_written_object(&self, bucket: &Name, key: &ObjectKey) -> Result<ObjectInfo, BucketError> {
        self.inner.backend.sync_written_object(bucket, key).await?;
        let info = self.head_object(bucket, key).await?;
        self.append_event(bucket, key, ObjectEventKind::Created, info.size, info.etag.clone()).await?;
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
        Ok(object_info(bucket, key.to_string(), &meta))
    }

    async fn append_event(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        kind: ObjectEventKind,
        size: u64,
        etag: Option<String>,
    ) -> Result<(), BucketError> {
        let event = NewObjectEvent {
            bucket: bucket.clone(),
            key: key.to_string(),
            kind,
            size,
            etag,
            at: self.inner.clock.now(),
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
                        Some(object_info(&bucket, key.to_owned(), &meta))
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

fn object_info(bucket: &Name, key: String, meta: &ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        bucket: bucket.clone(),
        key,
        size: meta.size,
        etag: meta.e_tag.clone(),
        last_modified: Timestamp::from_millis(meta.last_modified.timestamp_millis()),
    }
}
