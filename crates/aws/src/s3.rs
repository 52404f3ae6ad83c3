//! The S3 operations over a project's [`Buckets`]. s3s parses each request,
//! checks its signature ([`crate::credentials::TokenAuth`]) and calls the
//! operation here; each operation checks the token's grant (scope
//! `objects:read` or `objects:write`, and its bucket limits) before it
//! touches anything. Puts, copies and deletes go through `Buckets`, so each
//! appends its bucket event exactly as `mayfly put` does, and objects stay
//! sealed at rest. Operations not listed in ARCHITECTURE.md answer
//! `NotImplemented` (s3s's default).

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use mayfly_api::{Resource, Scope};
use mayfly_buckets::{BucketError, Buckets, ObjectInfo};
use mayfly_core::{Name, Timestamp};
use mayfly_state::StateStore;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncReadExt;

use crate::credentials::grant_of;
use crate::sessions::Principal;

/// The most keys one ListObjectsV2 page holds (S3's own cap).
const MAX_KEYS: usize = 1000;

/// The S3 protocol's view of one project's buckets.
#[derive(Clone)]
pub struct MayflyS3 {
    buckets: Buckets,
    state: Arc<dyn StateStore>,
}

impl MayflyS3 {
    pub fn new(buckets: Buckets, state: Arc<dyn StateStore>) -> MayflyS3 {
        MayflyS3 { buckets, state }
    }

    /// The grant of the request's signer; no signature, no access. A
    /// function's was checked with its session token by `SignedOnly`.
    async fn grant<T>(&self, request: &S3Request<T>) -> S3Result<Principal> {
        let Some(credentials) = &request.credentials else {
            return Err(s3_error!(AccessDenied, "this endpoint needs signed requests (AWS Signature Version 4)"));
        };
        if let Some(principal) = request.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let state = self.state.clone();
        let access_key = credentials.access_key.clone();
        tokio::task::spawn_blocking(move || grant_of(state.as_ref(), &access_key).map(Principal::Token))
            .await
            .map_err(|error| s3_error!(InternalError, "the grant check failed: {error}"))?
    }

    /// The bucket, once the request's signer may use it with `scope`.
    async fn permitted<T>(&self, request: &S3Request<T>, scope: Scope, bucket: &str) -> S3Result<Name> {
        let grant = self.grant(request).await?;
        require(&grant, scope, bucket)
    }
}

fn require(grant: &Principal, scope: Scope, bucket: &str) -> S3Result<Name> {
    grant.permits(scope, Resource::Bucket(bucket)).map_err(|refusal| s3_error!(AccessDenied, "{refusal}"))?;
    bucket_name(bucket)
}

fn bucket_name(bucket: &str) -> S3Result<Name> {
    Name::new(bucket).map_err(|_| s3_error!(NoSuchBucket, "no bucket `{bucket}`"))
}

/// Bucket errors as S3's error codes, with Mayfly's message.
fn s3_error(error: BucketError) -> S3Error {
    let code = match &error {
        BucketError::NoSuchBucket { .. } => S3ErrorCode::NoSuchBucket,
        BucketError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        BucketError::InvalidKey { .. } | BucketError::CopyOntoItself { .. } => S3ErrorCode::InvalidArgument,
        BucketError::KeyConflict { .. } => S3ErrorCode::InvalidArgument,
        BucketError::DiskFull { .. } => S3ErrorCode::ServiceUnavailable,
        BucketError::ReadBody { .. } => S3ErrorCode::IncompleteBody,
        _ => S3ErrorCode::InternalError,
    };
    S3Error::with_message(code, error.to_string())
}

fn timestamp(at: Timestamp) -> s3s::dto::Timestamp {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(at.as_millis()).unwrap_or(0));
    s3s::dto::Timestamp::from(time)
}

fn etag(info: &ObjectInfo) -> Option<ETag> {
    info.etag.as_ref().map(|etag| ETag::Strong(etag.trim_matches('"').to_owned()))
}

fn object(info: ObjectInfo) -> Object {
    Object {
        e_tag: etag(&info),
        last_modified: Some(timestamp(info.last_modified)),
        size: i64::try_from(info.size).ok(),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        key: Some(info.key),
        ..Default::default()
    }
}

/// An object's plaintext as a byte stream: `Buckets::get` writes into one
/// end of a pipe in its own task, the response reads the other.
fn object_stream(buckets: Buckets, bucket: Name, key: String) -> tokio::io::DuplexStream {
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Err(error) = buckets.get(&bucket, &key, writer).await {
            // The status is already sent; cutting the stream short tells the client.
            tracing::warn!(bucket = %bucket, error = %error, "S3 GetObject failed while streaming");
        }
    });
    reader
}

#[async_trait::async_trait]
impl S3 for MayflyS3 {
    async fn list_buckets(&self, request: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let grant = self.grant(&request).await?;
        if !grant.has_scope(Scope::ObjectsRead) && !grant.has_scope(Scope::ObjectsWrite) {
            return Err(s3_error!(AccessDenied, "the token lacks scope `objects:read`"));
        }
        let state = self.state.clone();
        let records = tokio::task::spawn_blocking(move || state.buckets())
            .await
            .map_err(|error| s3_error!(InternalError, "{error}"))?
            .map_err(|error| s3_error!(InternalError, "cannot list buckets: {error}"))?;
        let buckets = records
            .into_iter()
            .filter(|record| grant.allows_bucket(record.name.as_str()))
            .map(|record| Bucket {
                creation_date: Some(timestamp(record.created_at)),
                name: Some(record.name.to_string()),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn head_bucket(&self, request: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.bucket(&bucket))
            .await
            .map_err(|error| s3_error!(InternalError, "{error}"))?
            .map_err(|_| s3_error!(NoSuchBucket))?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        request: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        self.buckets.is_empty(&bucket).await.map_err(s3_error)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_objects(&self, request: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let marker = request.input.marker.clone();
        let v2 = self.list_objects_v2(request.map_input(Into::into)).await?;
        Ok(v2.map_output(|v2| {
            let next_marker = v2.next_continuation_token.clone();
            ListObjectsOutput {
                contents: v2.contents,
                common_prefixes: v2.common_prefixes,
                delimiter: v2.delimiter,
                encoding_type: v2.encoding_type,
                name: v2.name,
                prefix: v2.prefix,
                max_keys: v2.max_keys,
                is_truncated: v2.is_truncated,
                marker,
                next_marker,
                ..Default::default()
            }
        }))
    }

    async fn list_objects_v2(
        &self,
        request: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        let input = request.input;
        let max_keys = match input.max_keys {
            Some(keys) if keys < 0 => return Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
            Some(keys) => (keys as usize).min(MAX_KEYS),
            None => MAX_KEYS,
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        // The continuation token is the last key (or common prefix) of the previous page.
        let after = input.continuation_token.clone().or(input.start_after.clone());
        let objects =
            self.buckets.list(&bucket, (!prefix.is_empty()).then_some(prefix.as_str())).await.map_err(s3_error)?;
        let delimiter = input.delimiter.clone().filter(|delimiter| !delimiter.is_empty());
        let mut contents = Vec::new();
        let mut common_prefixes: Vec<String> = Vec::new();
        let mut last = None;
        let mut truncated = false;
        for info in objects {
            let entry = match &delimiter {
                Some(delimiter) => match info.key[prefix.len()..].find(delimiter.as_str()) {
                    Some(at) => Some(info.key[..prefix.len() + at + delimiter.len()].to_owned()),
                    None => None,
                },
                None => None,
            };
            let name = entry.as_deref().unwrap_or(&info.key);
            if after.as_deref().is_some_and(|after| name <= after) {
                continue;
            }
            if common_prefixes.last().is_some_and(|previous| Some(previous) == entry.as_ref()) {
                continue;
            }
            if contents.len() + common_prefixes.len() == max_keys {
                truncated = true;
                break;
            }
            last = Some(name.to_owned());
            match entry {
                Some(common) => common_prefixes.push(common),
                None => contents.push(object(info)),
            }
        }
        let key_count = (contents.len() + common_prefixes.len()) as i32;
        let output = ListObjectsV2Output {
            name: Some(bucket.to_string()),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            encoding_type: input.encoding_type,
            is_truncated: Some(truncated),
            next_continuation_token: if truncated { last } else { None },
            contents: Some(contents),
            common_prefixes: Some(
                common_prefixes.into_iter().map(|prefix| CommonPrefix { prefix: Some(prefix) }).collect(),
            ),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(&self, request: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        let info = self.buckets.head(&bucket, &request.input.key).await.map_err(s3_error)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: i64::try_from(info.size).ok(),
            e_tag: etag(&info),
            last_modified: Some(timestamp(info.last_modified)),
            content_type: Some("application/octet-stream".parse().expect("a valid media type")),
            ..Default::default()
        }))
    }

    async fn get_object(&self, request: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        let input = request.input;
        let info = self.buckets.head(&bucket, &input.key).await.map_err(s3_error)?;
        let whole = 0..info.size;
        let range = match &input.range {
            None => whole.clone(),
            Some(range) => range.check(info.size).map_err(|_| {
                s3_error!(InvalidRange, "the range is not satisfiable for an object of {} bytes", info.size)
            })?,
        };
        let length = range.end - range.start;
        let mut reader = object_stream(self.buckets.clone(), bucket, input.key.clone());
        if range.start > 0 {
            // Objects are sealed in chunks; skipping in the plaintext is the simple, correct way.
            let mut skip = (&mut reader).take(range.start);
            tokio::io::copy(&mut skip, &mut tokio::io::sink())
                .await
                .map_err(|error| s3_error!(InternalError, "cannot read the object: {error}"))?;
        }
        let body = tokio_util::io::ReaderStream::new(reader.take(length));
        let content_range =
            (range != whole).then(|| format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.size));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: i64::try_from(length).ok(),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: etag(&info),
            last_modified: Some(timestamp(info.last_modified)),
            content_type: Some("application/octet-stream".parse().expect("a valid media type")),
            ..Default::default()
        }))
    }

    async fn put_object(&self, request: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let info = match input.body {
            None => self.buckets.put_bytes(&bucket, &input.key, Bytes::new()).await,
            Some(body) => {
                let stream = body.map_err(std::io::Error::other);
                self.buckets.put(&bucket, &input.key, tokio_util::io::StreamReader::new(stream)).await
            }
        }
        .map_err(s3_error)?;
        Ok(S3Response::new(PutObjectOutput { e_tag: etag(&info), ..Default::default() }))
    }

    async fn copy_object(&self, request: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let grant = self.grant(&request).await?;
        let input = request.input;
        let CopySource::Bucket { bucket: from_bucket, key: from_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copying from an access point is not supported"));
        };
        let from = require(&grant, Scope::ObjectsRead, from_bucket)?;
        let to = require(&grant, Scope::ObjectsWrite, &input.bucket)?;
        let info = self.buckets.copy((&from, from_key), (&to, &input.key)).await.map_err(s3_error)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: etag(&info),
                last_modified: Some(timestamp(info.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, request: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        match self.buckets.delete(&bucket, &request.input.key).await {
            // S3 answers 204 for a key that is not there.
            Ok(()) | Err(BucketError::NoSuchKey { .. }) => Ok(S3Response::new(DeleteObjectOutput::default())),
            Err(error) => Err(s3_error(error)),
        }
    }

    async fn delete_objects(
        &self,
        request: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let quiet = request.input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for target in request.input.delete.objects {
            match self.buckets.delete(&bucket, &target.key).await {
                Ok(()) | Err(BucketError::NoSuchKey { .. }) => {
                    if !quiet {
                        deleted.push(DeletedObject { key: Some(target.key), ..Default::default() });
                    }
                }
                Err(error) => {
                    let error = s3_error(error);
                    errors.push(Error {
                        key: Some(target.key),
                        code: Some(error.code().as_str().to_owned()),
                        message: error.message().map(str::to_owned),
                        ..Default::default()
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
    }
}
