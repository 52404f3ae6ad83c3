//! Multipart uploads, S3's way of writing one object from parts sent
//! separately: [`Buckets::begin_upload`], [`Buckets::put_part`],
//! [`Buckets::list_parts`], [`Buckets::complete_upload`],
//! [`Buckets::abort_upload`]. On every store, S3 included, the parts are
//! staged as sealed objects of their own and streamed into one object at the
//! complete (whose own upload is multipart above 8 MiB), rather than mapped
//! onto S3's own multipart calls: the object is one envelope, which parts
//! sent separately, in any order and replaceable, cannot be sealed into.
//!
//! Layout, beside the bucket folders (bucket names cannot start with `.`):
//! `.uploads/<bucket>/<upload id>/upload` (`.staged-uploads/…` on stores
//! other than the local filesystem, see `STORE_UPLOADS_FOLDER`) is the upload's record (its key,
//! when it began, the object's metadata) and `<part number>.<etag>` each
//! part. Parts are user data: each is sealed like an object, bound to its
//! upload, number and entity tag, so a renamed or swapped file fails to open.
//! A part's entity tag is random, not a hash of its content (a hash of health
//! data in a file name would be a fingerprint of it).
//!
//! Completing streams the parts in order into the object (decrypting each
//! part and sealing the object as one envelope, in constant memory), then
//! appends exactly one `created` event and removes the staging. Nothing about
//! the object changes before the complete: an abandoned upload leaves only
//! its staging, which [`Buckets::abort_abandoned_uploads`] removes once it is
//! older than [`ABANDONED_AFTER`] (the retention pass calls it every minute).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};
use mayfly_core::{Name, Timestamp};
use mayfly_crypto::{DecryptingReader, EncryptingReader};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::metadata::ObjectMetadata;
use crate::{BucketError, Buckets, ObjectInfo, ObjectKey, error, object_context, parse_key};

/// The folder of the uploads in progress on the local filesystem, beside
/// the bucket folders.
pub(crate) const LOCAL_UPLOADS_FOLDER: &str = ".uploads";
/// The same on any other store: SeaweedFS keeps its own multipart staging
/// in `.uploads` folders and hides every folder of that name from listings,
/// so Mayfly's staging could neither be listed nor swept there.
pub(crate) const STORE_UPLOADS_FOLDER: &str = ".staged-uploads";
/// The name of an upload's record in its folder.
const RECORD: &str = "upload";
/// S3's highest part number.
pub const MAX_PART_NUMBER: u32 = 10_000;
/// S3's smallest part, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// An upload neither completed nor aborted within this long is removed.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UploadInfo {
    pub bucket: Name,
    pub key: String,
    pub upload_id: String,
    pub initiated: Timestamp,
    pub metadata: ObjectMetadata,
}

/// One stored part of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartInfo {
    pub number: u32,
    /// Random, 32 hex digits; Complete names the part by it.
    pub etag: String,
    /// The part's content size (for encrypted buckets, the plaintext).
    pub size: u64,
    pub last_modified: Timestamp,
}

/// An upload's record as stored (sealed when the buckets are encrypted).
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    initiated: Timestamp,
    metadata: ObjectMetadata,
}

fn upload_folder(uploads: &str, bucket: &Name, upload_id: &str) -> StorePath {
    StorePath::from_iter([uploads, bucket.as_str(), upload_id])
}

fn record_context(bucket: &Name, upload_id: &str) -> String {
    format!("upload/{bucket}/{upload_id}")
}

fn part_name(number: u32, etag: &str) -> String {
    format!("{number:05}.{etag}")
}

fn part_context(bucket: &Name, upload_id: &str, number: u32, etag: &str) -> String {
    format!("upload/{bucket}/{upload_id}/{}", part_name(number, etag))
}

/// A part file's number and entity tag, from its name.
fn parse_part_name(name: &str) -> Option<(u32, String)> {
    let (number, etag) = name.split_once('.')?;
    let number = number.parse().ok()?;
    is_hex_id(etag).then(|| (number, etag.to_owned()))
}

/// Upload ids and part tags: 32 lowercase hex digits, so they are safe in a path.
fn is_hex_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn random_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Accept `"etag"`, `etag` or `W/"etag"`, as clients send them back.
fn bare_etag(etag: &str) -> &str {
    etag.trim_start_matches("W/").trim_matches('"')
}

impl Buckets {
    /// Begin a multipart upload of `key`; the object appears only when it
    /// is completed, with `metadata`.
    pub async fn begin_upload(
        &self,
        bucket: &Name,
        key: &str,
        metadata: ObjectMetadata,
    ) -> Result<UploadInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.inner.backend.object_location(bucket, &key)?;
        let upload_id = random_id();
        let initiated = self.inner.clock.now();
        let record = Record { key: key.to_string(), initiated, metadata: metadata.clone() };
        let plaintext = serde_json::to_vec(&record).expect("an upload record serializes");
        let location = upload_folder(self.inner.backend.uploads_folder(), bucket, &upload_id).child(RECORD);
        self.inner
            .backend
            .store
            .put(&location, PutPayload::from(self.seal(&record_context(bucket, &upload_id), &plaintext)))
            .await
            .map_err(|source| BucketError::from_store("begin an upload of", bucket, key.as_str(), source))?;
        self.inner.backend.sync_location(&location).await?;
        tracing::debug!(%bucket, %key, %upload_id, "multipart upload begun");
        Ok(UploadInfo { bucket: bucket.clone(), key: key.to_string(), upload_id, initiated, metadata })
    }

    /// Store part `number` (1 to [`MAX_PART_NUMBER`]) of an upload from
    /// `body`, streaming; replaces an earlier part of that number.
    pub async fn put_part(
        &self,
        bucket: &Name,
        key: &str,
        upload_id: &str,
        number: i64,
        body: impl AsyncRead + Unpin + Send,
    ) -> Result<PartInfo, BucketError> {
        let number = match u32::try_from(number) {
            Ok(number) if (1..=MAX_PART_NUMBER).contains(&number) => number,
            _ => return Err(BucketError::InvalidPartNumber { number }),
        };
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.upload_record(bucket, &key, upload_id).await?;
        let etag = random_id();
        let folder = upload_folder(self.inner.backend.uploads_folder(), bucket, upload_id);
        let location = folder.child(part_name(number, &etag));
        let prepared = match &self.keyring_snapshot() {
            None => self.prepare_body(bucket, &key, &location, body).await?,
            Some(keyring) => {
                let context = part_context(bucket, upload_id, number, &etag);
                self.prepare_body(bucket, &key, &location, EncryptingReader::new(body, keyring, &context)).await?
            }
        };
        self.commit_body(bucket, &key, &location, prepared).await?;
        self.inner.backend.sync_location(&location).await?;
        // Earlier versions of this part are replaced.
        for (other, meta) in self.part_files(bucket, &key, upload_id).await? {
            if other.number == number && other.etag != etag {
                self.remove_file(bucket, key.as_str(), &meta.location).await?;
            }
        }
        let meta = self
            .inner
            .backend
            .store
            .head(&location)
            .await
            .map_err(|source| BucketError::from_store_reading("read a part of", bucket, key.as_str(), source))?;
        Ok(self.part_info(number, etag, &meta))
    }

    /// The parts of an upload, by number (the latest of each number).
    pub async fn list_parts(&self, bucket: &Name, key: &str, upload_id: &str) -> Result<Vec<PartInfo>, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.upload_record(bucket, &key, upload_id).await?;
        let mut latest: BTreeMap<u32, PartInfo> = BTreeMap::new();
        for (part, _) in self.part_files(bucket, &key, upload_id).await? {
            if latest.get(&part.number).is_none_or(|kept| kept.last_modified <= part.last_modified) {
                latest.insert(part.number, part);
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The uploads in progress in `bucket` whose keys start with `prefix`, by key.
    pub async fn list_uploads(&self, bucket: &Name, prefix: Option<&str>) -> Result<Vec<UploadInfo>, BucketError> {
        self.require_bucket(bucket).await?;
        let prefix = prefix.unwrap_or_default();
        let folder = StorePath::from_iter([self.inner.backend.uploads_folder(), bucket.as_str()]);
        let listed = self
            .inner
            .backend
            .store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|source| BucketError::from_store("list the uploads of", bucket, "", source))?;
        let mut uploads = Vec::new();
        for upload in listed.common_prefixes {
            let Some(upload_id) = upload.filename().filter(|id| is_hex_id(id)).map(str::to_owned) else {
                continue;
            };
            match self.read_upload_record(bucket, "", &upload_id).await {
                Ok(record) if record.key.starts_with(prefix) => uploads.push(UploadInfo {
                    bucket: bucket.clone(),
                    key: record.key,
                    upload_id,
                    initiated: record.initiated,
                    metadata: record.metadata,
                }),
                Ok(_) | Err(BucketError::NoSuchUpload { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        uploads.sort_by(|left, right| (&left.key, left.initiated).cmp(&(&right.key, right.initiated)));
        Ok(uploads)
    }

    /// Assemble the object from `parts` (number and entity tag, ascending),
    /// by S3's rules: every part named must be stored with that tag, and
    /// every part but the last must be at least [`MIN_PART_SIZE`]. Streams
    /// the parts into the object, appends one `created` event and removes
    /// the upload.
    pub async fn complete_upload(
        &self,
        bucket: &Name,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<ObjectInfo, BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        let record = self.upload_record(bucket, &key, upload_id).await?;
        if parts.is_empty() {
            return Err(BucketError::NoParts { upload_id: upload_id.to_owned() });
        }
        let stored: BTreeMap<(u32, String), ObjectMeta> = self
            .part_files(bucket, &key, upload_id)
            .await?
            .into_iter()
            .map(|(part, meta)| ((part.number, part.etag), meta))
            .collect();
        // The order first, as S3 does, then each part.
        if let Some(pair) = parts.windows(2).find(|pair| pair[1].0 <= pair[0].0) {
            let (previous, number) = (pair[0].0, pair[1].0);
            return Err(BucketError::InvalidPartOrder { upload_id: upload_id.to_owned(), number, previous });
        }
        let mut chosen = Vec::with_capacity(parts.len());
        for (index, (number, etag)) in parts.iter().enumerate() {
            let etag = bare_etag(etag).to_owned();
            let Some(meta) = stored.get(&(*number, etag.clone())) else {
                return Err(BucketError::InvalidPart { upload_id: upload_id.to_owned(), number: *number, etag });
            };
            let size = self.part_info(*number, etag.clone(), meta).size;
            if index + 1 < parts.len() && size < MIN_PART_SIZE {
                return Err(BucketError::EntityTooSmall { upload_id: upload_id.to_owned(), number: *number, size });
            }
            chosen.push((*number, etag, meta.location.clone()));
        }

        let location = self.inner.backend.object_location(bucket, &key)?;
        let body = self.parts_reader(bucket, upload_id, chosen);
        let prepared = match &self.keyring_snapshot() {
            None => self.prepare_body(bucket, &key, &location, body).await?,
            Some(keyring) => {
                let encrypting = EncryptingReader::new(body, keyring, &object_context(bucket, &key));
                self.prepare_body(bucket, &key, &location, encrypting).await?
            }
        };
        let info = {
            let _commit = self.inner.key_locks.lock(bucket, key.as_str()).await;
            self.commit_body(bucket, &key, &location, prepared).await?;
            self.record_written_object(bucket, &key, &record.metadata).await?
        };
        if let Err(error) = self.remove_upload(bucket, &key, upload_id).await {
            // The object and its event are in; the staging is swept later.
            tracing::warn!(%bucket, %key, %upload_id, error = %error, "upload completed, but removing its parts failed");
        }
        tracing::debug!(%bucket, %key, %upload_id, parts = parts.len(), size = info.size, "multipart upload completed");
        Ok(info)
    }

    /// Give an upload up: its parts are removed and the object stays as it was.
    pub async fn abort_upload(&self, bucket: &Name, key: &str, upload_id: &str) -> Result<(), BucketError> {
        let key = parse_key(key)?;
        self.require_bucket(bucket).await?;
        self.upload_record(bucket, &key, upload_id).await?;
        self.remove_upload(bucket, &key, upload_id).await?;
        tracing::debug!(%bucket, %key, %upload_id, "multipart upload aborted");
        Ok(())
    }

    /// Remove every upload that began before `before`, in any bucket, and
    /// those of buckets that no longer exist. Returns how many.
    pub async fn abort_abandoned_uploads(&self, before: Timestamp) -> Result<u64, BucketError> {
        let root = StorePath::from(self.inner.backend.uploads_folder());
        let store = &self.inner.backend.store;
        let listing_failed = |source| BucketError::Io {
            action: "list the uploads in progress",
            path: self.inner.backend.uploads_folder().into(),
            source: std::io::Error::other(source),
        };
        let buckets = store.list_with_delimiter(Some(&root)).await.map_err(listing_failed)?;
        let mut removed = 0;
        for bucket_folder in buckets.common_prefixes {
            let Some(bucket) = bucket_folder.filename().and_then(|name| Name::new(name).ok()) else {
                continue;
            };
            let bucket_gone = self.require_bucket(&bucket).await.is_err();
            let uploads = store.list_with_delimiter(Some(&bucket_folder)).await.map_err(listing_failed)?;
            for upload in uploads.common_prefixes {
                let Some(upload_id) = upload.filename().filter(|id| is_hex_id(id)).map(str::to_owned) else {
                    continue;
                };
                // No readable record (a removal cut short, or corrupt): nothing can complete it.
                let began = match self.read_upload_record(&bucket, "", &upload_id).await {
                    Ok(record) => Some(record.initiated),
                    Err(BucketError::NoSuchUpload { .. } | BucketError::CorruptRecord { .. }) => None,
                    Err(error) => return Err(error),
                };
                if (bucket_gone || began.is_none_or(|began| began < before))
                    && self.remove_upload_files(&bucket, "", &upload_id).await? > 0
                {
                    tracing::info!(%bucket, %upload_id, "abandoned multipart upload removed");
                    removed += 1;
                }
            }
            self.inner.backend.remove_empty_folder(&bucket_folder).await;
        }
        Ok(removed)
    }

    // --- internals -----------------------------------------------------------

    /// The upload's record, if it is an upload of `key` in progress.
    async fn upload_record(&self, bucket: &Name, key: &ObjectKey, upload_id: &str) -> Result<Record, BucketError> {
        let record = self.read_upload_record(bucket, key.as_str(), upload_id).await?;
        if record.key != key.as_str() {
            return Err(self.no_such_upload(bucket, key.as_str(), upload_id));
        }
        Ok(record)
    }

    async fn read_upload_record(&self, bucket: &Name, key: &str, upload_id: &str) -> Result<Record, BucketError> {
        if !is_hex_id(upload_id) {
            return Err(self.no_such_upload(bucket, key, upload_id));
        }
        let location = upload_folder(self.inner.backend.uploads_folder(), bucket, upload_id).child(RECORD);
        let stored = match self.inner.backend.store.get(&location).await {
            Ok(result) => result.bytes().await,
            Err(source) => Err(source),
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(source) if error::is_missing_object(&source) => return Err(self.no_such_upload(bucket, key, upload_id)),
            Err(source) => return Err(BucketError::from_store("read the upload of", bucket, key, source)),
        };
        let corrupt = |detail: String| BucketError::CorruptRecord {
            what: "upload record",
            bucket: bucket.clone(),
            key: key.to_owned(),
            detail: format!("upload `{upload_id}`: {detail}"),
        };
        let plaintext =
            self.unseal(&record_context(bucket, upload_id), &stored).map_err(|error| corrupt(error.to_string()))?;
        serde_json::from_slice(&plaintext).map_err(|error| corrupt(error.to_string()))
    }

    fn no_such_upload(&self, bucket: &Name, key: &str, upload_id: &str) -> BucketError {
        BucketError::NoSuchUpload { bucket: bucket.clone(), key: key.to_owned(), upload_id: upload_id.to_owned() }
    }

    /// Every stored part file of an upload, with its store metadata.
    async fn part_files(
        &self,
        bucket: &Name,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<Vec<(PartInfo, ObjectMeta)>, BucketError> {
        let metas = self
            .upload_files(bucket, key.as_str(), &upload_folder(self.inner.backend.uploads_folder(), bucket, upload_id))
            .await?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let (number, etag) = parse_part_name(meta.location.filename()?)?;
                Some((self.part_info(number, etag, &meta), meta))
            })
            .collect())
    }

    /// Every file in an upload's folder (its record and its parts).
    async fn upload_files(&self, bucket: &Name, key: &str, folder: &StorePath) -> Result<Vec<ObjectMeta>, BucketError> {
        self.inner
            .backend
            .store
            .list(Some(folder))
            .try_collect()
            .await
            .map_err(|source| BucketError::from_store("list the parts of", bucket, key, source))
    }

    fn part_info(&self, number: u32, etag: String, meta: &ObjectMeta) -> PartInfo {
        let size = if self.is_encrypted() { mayfly_crypto::plaintext_len(meta.size).unwrap_or(0) } else { meta.size };
        PartInfo { number, etag, size, last_modified: Timestamp::from_millis(meta.last_modified.timestamp_millis()) }
    }

    /// The plaintext of `parts`, one after the other, each opened as it is reached.
    fn parts_reader(
        &self,
        bucket: &Name,
        upload_id: &str,
        parts: Vec<(u32, String, StorePath)>,
    ) -> impl AsyncRead + Unpin + Send + use<> {
        let store = self.inner.backend.store.clone();
        let keyring = self.keyring_snapshot();
        let bucket = bucket.clone();
        let upload_id = upload_id.to_owned();
        let chunks = futures::stream::iter(parts)
            .then(move |(number, etag, location)| {
                let store = store.clone();
                let keyring = keyring.clone();
                let context = part_context(&bucket, &upload_id, number, &etag);
                async move {
                    let stored = store.get(&location).await.map_err(std::io::Error::other)?;
                    let stored =
                        StreamReader::new(crate::backend::stored_stream(stored).map_err(std::io::Error::other));
                    let plaintext: Box<dyn AsyncRead + Unpin + Send> = match keyring {
                        None => Box::new(stored),
                        Some(keyring) => Box::new(DecryptingReader::open(stored, &keyring, &context).await?),
                    };
                    Ok::<_, std::io::Error>(ReaderStream::new(plaintext))
                }
            })
            .try_flatten();
        StreamReader::new(Box::pin(chunks) as futures::stream::BoxStream<'static, std::io::Result<Bytes>>)
    }

    async fn remove_upload(&self, bucket: &Name, key: &ObjectKey, upload_id: &str) -> Result<(), BucketError> {
        self.remove_upload_files(bucket, key.as_str(), upload_id).await.map(|_| ())
    }

    /// Delete an upload's parts, then its record, then its folder; returns
    /// how many files it had (none: only an empty folder was left, which
    /// some stores, SeaweedFS among them, list after its files are gone).
    async fn remove_upload_files(&self, bucket: &Name, key: &str, upload_id: &str) -> Result<usize, BucketError> {
        let folder = upload_folder(self.inner.backend.uploads_folder(), bucket, upload_id);
        let metas = self.upload_files(bucket, key, &folder).await?;
        if metas.is_empty() {
            self.inner.backend.remove_empty_folder(&folder).await;
            return Ok(0);
        }
        let record = folder.child(RECORD);
        for meta in metas.iter().filter(|meta| meta.location != record) {
            self.remove_file(bucket, key, &meta.location).await?;
        }
        self.remove_file(bucket, key, &record).await?;
        self.inner.backend.remove_empty_folder(&folder).await;
        Ok(metas.len())
    }

    async fn remove_file(&self, bucket: &Name, key: &str, location: &StorePath) -> Result<(), BucketError> {
        match self.inner.backend.store.delete(location).await {
            Ok(()) => Ok(()),
            Err(source) if error::is_missing_object(&source) => Ok(()),
            Err(source) => Err(BucketError::from_store("remove an upload file of", bucket, key, source)),
        }
    }
}
