//! The S3 operations over a project's [`Buckets`]. s3s parses each request,
//! checks its signature ([`crate::credentials::TokenAuth`]) and calls the
//! operation here; each operation checks the token's grant (scope
//! `objects:read` or `objects:write`, and its bucket limits) before it
//! touches anything. Puts, copies and deletes go through `Buckets`, so each
//! appends its bucket event exactly as `mayfly put` does, and objects stay
//! sealed at rest. Operations not listed in ARCHITECTURE.md answer
//! `NotImplemented` (s3s's default).

use std::sync::Arc;

use futures::TryStreamExt;
use mayfly_api::{Resource, Scope};
use mayfly_buckets::{BucketError, Buckets, ObjectInfo, ObjectMetadata};
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

/// A listing's page size as asked (`max-keys`, `max-parts`, `max-uploads`):
/// at most [`MAX_KEYS`], the most when absent, refused when negative.
fn page_size(asked: Option<i32>, parameter: &str) -> S3Result<usize> {
    match asked {
        Some(size) if size < 0 => Err(s3_error!(InvalidArgument, "{parameter} must not be negative")),
        Some(size) => Ok((size as usize).min(MAX_KEYS)),
        None => Ok(MAX_KEYS),
    }
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
        BucketError::NoSuchUpload { .. } => S3ErrorCode::NoSuchUpload,
        BucketError::InvalidPartNumber { .. } => S3ErrorCode::InvalidArgument,
        BucketError::InvalidPart { .. } => S3ErrorCode::InvalidPart,
        BucketError::InvalidPartOrder { .. } => S3ErrorCode::InvalidPartOrder,
        BucketError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        BucketError::NoParts { .. } => S3ErrorCode::MalformedXML,
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

/// The metadata a write request carries.
fn metadata_of(content_type: Option<ContentType>, user: Option<Metadata>) -> ObjectMetadata {
    ObjectMetadata { content_type, user: user.unwrap_or_default().into_iter().collect() }
}

fn user_metadata(metadata: &ObjectMetadata) -> Option<Metadata> {
    (!metadata.user.is_empty()).then(|| metadata.user.clone().into_iter().collect())
}

fn content_type(metadata: &ObjectMetadata) -> ContentType {
    metadata.content_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned())
}

/// Seconds since the epoch (HTTP dates have whole seconds).
fn epoch_seconds(at: &s3s::dto::Timestamp) -> i64 {
    let mut text = Vec::new();
    match at.format(TimestampFormat::EpochSeconds, &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).split('.').next().unwrap_or("0").parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn condition_matches(condition: &ETagCondition, info: &ObjectInfo) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(ETag::Strong(tag) | ETag::Weak(tag)) => {
            info.etag.as_deref().is_some_and(|etag| etag.trim_matches('"') == tag.trim_matches('"'))
        }
    }
}

/// The conditional headers of a GET or HEAD, in RFC 9110's order (as S3
/// applies them): If-Match, else If-Unmodified-Since, fail with 412;
/// If-None-Match, else If-Modified-Since, answer 304.
fn check_conditions(
    info: &ObjectInfo,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&s3s::dto::Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&s3s::dto::Timestamp>,
) -> S3Result<()> {
    let modified = info.last_modified.as_millis().div_euclid(1000);
    let failed = match (if_match, if_unmodified_since) {
        (Some(condition), _) => !condition_matches(condition, info),
        (None, Some(since)) => modified > epoch_seconds(since),
        (None, None) => false,
    };
    if failed {
        return Err(s3_error!(
            PreconditionFailed,
            "the object does not meet the If-Match or If-Unmodified-Since condition"
        ));
    }
    let unchanged = match (if_none_match, if_modified_since) {
        (Some(condition), _) => condition_matches(condition, info),
        (None, Some(since)) => modified <= epoch_seconds(since),
        (None, None) => false,
    };
    if unchanged {
        let mut error = S3Error::new(S3ErrorCode::NotModified);
        let mut headers = axum::http::HeaderMap::new();
        if let Some(etag) = info.etag.as_ref().and_then(|etag| format!("\"{}\"", etag.trim_matches('"')).parse().ok()) {
            headers.insert(axum::http::header::ETAG, etag);
        }
        error.set_headers(headers);
        return Err(error);
    }
    Ok(())
}

/// `bytes=first-last` of a copy source, checked against the object's size.
fn copy_range(range: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "x-amz-copy-source-range {range:?} must be bytes=first-last within the object's {size} bytes"
        )
    };
    let (first, last) = range.strip_prefix("bytes=").and_then(|range| range.split_once('-')).ok_or_else(invalid)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| invalid())?, last.parse().map_err(|_| invalid())?);
    if first > last || last >= size {
        return Err(invalid());
    }
    Ok(first..last + 1)
}

/// An object's plaintext in pieces, streaming straight from the bucket (no
/// pipe, no task of its own).
async fn object_pieces(
    buckets: &Buckets,
    bucket: Name,
    key: &str,
) -> S3Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + use<>> {
    let (_, pieces) = buckets.get_stream(&bucket, key).await.map_err(s3_error)?;
    Ok(pieces.map_err(move |error| {
        // The status is already sent; cutting the stream short tells the client.
        tracing::warn!(bucket = %bucket, error = %error, "S3 GetObject failed while streaming");
        std::io::Error::other(error)
    }))
}

/// Bytes `range` of an object's plaintext, streaming.
async fn object_range(
    buckets: &Buckets,
    bucket: Name,
    key: &str,
    range: std::ops::Range<u64>,
) -> S3Result<impl tokio::io::AsyncRead + Send + Unpin + use<>> {
    let mut reader = tokio_util::io::StreamReader::new(object_pieces(buckets, bucket, key).await?);
    if range.start > 0 {
        // Objects are sealed in chunks; skipping in the plaintext is the simple, correct way.
        let mut skip = (&mut reader).take(range.start);
        tokio::io::copy(&mut skip, &mut tokio::io::sink())
            .await
            .map_err(|error| s3_error!(InternalError, "cannot read the object: {error}"))?;
    }
    Ok(reader.take(range.end - range.start))
}

/// Bytes `range` of an object's plaintext as a response body: the whole
/// object as the bucket yields it, a range through [`object_range`].
async fn object_body(
    buckets: &Buckets,
    bucket: Name,
    key: &str,
    range: std::ops::Range<u64>,
    size: u64,
) -> S3Result<StreamingBlob> {
    if range == (0..size) {
        let pieces = object_pieces(buckets, bucket, key).await?;
        return Ok(StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(pieces))));
    }
    let reader = object_range(buckets, bucket, key, range).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(reader, BODY_PIECE);
    Ok(StreamingBlob::wrap(SyncStream(std::sync::Mutex::new(body))))
}

/// The largest piece of a ranged GET's body handed to the HTTP layer at once.
const BODY_PIECE: usize = 256 * 1024;

/// A stream that is `Sync`, as s3s's bodies must be, though only ever polled
/// through `&mut`: the mutex is never locked (`get_mut` needs no lock).
struct SyncStream<S>(std::sync::Mutex<S>);

impl<S: futures::Stream + Unpin> futures::Stream for SyncStream<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        match self.get_mut().0.get_mut() {
            Ok(stream) => std::pin::Pin::new(stream).poll_next(context),
            // Only a panic inside poll_next poisons it; that stream is done.
            Err(_) => std::task::Poll::Ready(None),
        }
    }
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
        let max_keys = page_size(input.max_keys, "max-keys")?;
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
        let input = &request.input;
        let info = self.buckets.head(&bucket, &input.key).await.map_err(s3_error)?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let metadata = self.buckets.metadata(&info).await.map_err(s3_error)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: i64::try_from(info.size).ok(),
            e_tag: etag(&info),
            last_modified: Some(timestamp(info.last_modified)),
            content_type: Some(content_type(&metadata)),
            metadata: user_metadata(&metadata),
            accept_ranges: Some("bytes".to_owned()),
            ..Default::default()
        }))
    }

    async fn get_object(&self, request: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsRead, &request.input.bucket).await?;
        let input = request.input;
        let info = self.buckets.head(&bucket, &input.key).await.map_err(s3_error)?;
        check_conditions(
            &info,
            input.if_match.as_ref(),
            input.if_unmodified_since.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
        )?;
        let metadata = self.buckets.metadata(&info).await.map_err(s3_error)?;
        let whole = 0..info.size;
        let range = match &input.range {
            None => whole.clone(),
            Some(range) => range.check(info.size).map_err(|_| {
                s3_error!(InvalidRange, "the range is not satisfiable for an object of {} bytes", info.size)
            })?,
        };
        let length = range.end - range.start;
        let body = object_body(&self.buckets, bucket, &input.key, range.clone(), info.size).await?;
        let content_range =
            (range != whole).then(|| format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), info.size));
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: i64::try_from(length).ok(),
            content_range,
            accept_ranges: Some("bytes".to_owned()),
            e_tag: etag(&info),
            last_modified: Some(timestamp(info.last_modified)),
            content_type: Some(content_type(&metadata)),
            metadata: user_metadata(&metadata),
            ..Default::default()
        }))
    }

    async fn put_object(&self, request: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let metadata = metadata_of(input.content_type, input.metadata);
        let info = match input.body {
            None => self.buckets.put_with_metadata(&bucket, &input.key, tokio::io::empty(), &metadata).await,
            Some(body) => {
                let stream = tokio_util::io::StreamReader::new(body.map_err(std::io::Error::other));
                self.buckets.put_with_metadata(&bucket, &input.key, stream, &metadata).await
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
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|directive| directive.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
        let metadata = replace.then(|| metadata_of(input.content_type.clone(), input.metadata.clone()));
        let info =
            self.buckets.copy_with_metadata((&from, from_key), (&to, &input.key), metadata).await.map_err(s3_error)?;
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
    async fn create_multipart_upload(
        &self,
        request: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let metadata = metadata_of(input.content_type, input.metadata);
        let upload = self.buckets.begin_upload(&bucket, &input.key, metadata).await.map_err(s3_error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload.upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, request: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let number = i64::from(input.part_number);
        let part = match input.body {
            None => self.buckets.put_part(&bucket, &input.key, &input.upload_id, number, tokio::io::empty()).await,
            Some(body) => {
                let body = tokio_util::io::StreamReader::new(body.map_err(std::io::Error::other));
                self.buckets.put_part(&bucket, &input.key, &input.upload_id, number, body).await
            }
        }
        .map_err(s3_error)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(part.etag)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        request: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let grant = self.grant(&request).await?;
        let input = request.input;
        let CopySource::Bucket { bucket: from_bucket, key: from_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copying from an access point is not supported"));
        };
        let from = require(&grant, Scope::ObjectsRead, from_bucket)?;
        let to = require(&grant, Scope::ObjectsWrite, &input.bucket)?;
        let source = self.buckets.head(&from, from_key).await.map_err(s3_error)?;
        check_conditions(
            &source,
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
        )
        .map_err(|error| match error.code() {
            // S3 answers a copy whose source condition fails with 412 either way.
            S3ErrorCode::NotModified => {
                s3_error!(PreconditionFailed, "the copy source meets If-None-Match or If-Modified-Since")
            }
            _ => error,
        })?;
        let range = match &input.copy_source_range {
            None => 0..source.size,
            Some(range) => copy_range(range, source.size)?,
        };
        let body = object_range(&self.buckets, from, from_key, range).await?;
        let part = self
            .buckets
            .put_part(&to, &input.key, &input.upload_id, i64::from(input.part_number), body)
            .await
            .map_err(s3_error)?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(timestamp(part.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        request: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let mut parts = Vec::new();
        for part in input.multipart_upload.and_then(|upload| upload.parts).unwrap_or_default() {
            let (Some(number), Some(ETag::Strong(tag) | ETag::Weak(tag))) = (part.part_number, part.e_tag) else {
                return Err(s3_error!(MalformedXML, "every part to complete needs its PartNumber and ETag"));
            };
            let number = u32::try_from(number)
                .map_err(|_| s3_error!(InvalidArgument, "part number {number} is out of range"))?;
            parts.push((number, tag));
        }
        let info =
            self.buckets.complete_upload(&bucket, &input.key, &input.upload_id, &parts).await.map_err(s3_error)?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: etag(&info),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        request: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        self.buckets.abort_upload(&bucket, &input.key, &input.upload_id).await.map_err(s3_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, request: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let max_parts = page_size(input.max_parts, "max-parts")?;
        let marker = input.part_number_marker.unwrap_or(0);
        let stored = self.buckets.list_parts(&bucket, &input.key, &input.upload_id).await.map_err(s3_error)?;
        let mut after: Vec<_> = stored.into_iter().filter(|part| i64::from(part.number) > i64::from(marker)).collect();
        let truncated = after.len() > max_parts;
        after.truncate(max_parts);
        let next = after.last().map(|part| part.number as i32);
        let parts = after
            .into_iter()
            .map(|part| Part {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(timestamp(part.last_modified)),
                part_number: Some(part.number as i32),
                size: i64::try_from(part.size).ok(),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts as i32),
            part_number_marker: Some(marker),
            next_part_number_marker: if truncated { next } else { None },
            is_truncated: Some(truncated),
            parts: Some(parts),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        request: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let bucket = self.permitted(&request, Scope::ObjectsWrite, &request.input.bucket).await?;
        let input = request.input;
        let max_uploads = page_size(input.max_uploads, "max-uploads")?;
        let uploads = self.buckets.list_uploads(&bucket, input.prefix.as_deref()).await.map_err(s3_error)?;
        // Uploads sort by key, then by when they began; the markers name the last one listed.
        let after = |upload: &&mayfly_buckets::UploadInfo| match (&input.key_marker, &input.upload_id_marker) {
            (None, _) => true,
            (Some(key), None) => upload.key.as_str() > key.as_str(),
            (Some(key), Some(id)) => {
                upload.key.as_str() > key.as_str() || (upload.key == *key && upload.upload_id > *id)
            }
        };
        let mut listed: Vec<_> = uploads.iter().filter(after).collect();
        let truncated = listed.len() > max_uploads;
        listed.truncate(max_uploads);
        let last = listed.last().map(|upload| (upload.key.clone(), upload.upload_id.clone()));
        let uploads = listed
            .into_iter()
            .map(|upload| MultipartUpload {
                initiated: Some(timestamp(upload.initiated)),
                key: Some(upload.key.clone()),
                upload_id: Some(upload.upload_id.clone()),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let (next_key_marker, next_upload_id_marker) = match (truncated, last) {
            (true, Some((key, id))) => (Some(key), Some(id)),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(max_uploads as i32),
            is_truncated: Some(truncated),
            next_key_marker,
            next_upload_id_marker,
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
