//! Buckets and objects: list buckets, list a bucket's objects, put and get
//! one object (streamed both ways). An object key travels as ONE path
//! segment, percent-encoded (`a/b.txt` is `a%2Fb.txt`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use mayfly_buckets::ObjectInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{page_limit, parse_name, rfc3339};
use crate::ApiState;
use crate::access::{Resource, Scope};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiPath, LazyQuery};

/// A bucket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BucketView {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BucketList {
    pub buckets: Vec<BucketView>,
}

/// An object's metadata.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectView {
    pub bucket: String,
    pub key: String,
    /// The content's size in bytes.
    pub size: u64,
    pub etag: Option<String>,
    /// RFC 3339.
    pub last_modified: String,
}

impl From<ObjectInfo> for ObjectView {
    fn from(info: ObjectInfo) -> ObjectView {
        ObjectView {
            bucket: info.bucket.to_string(),
            key: info.key,
            size: info.size,
            etag: info.etag,
            last_modified: rfc3339(info.last_modified),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectList {
    /// By key.
    pub objects: Vec<ObjectView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListObjectsQuery {
    /// Only keys that start with this.
    pub prefix: Option<String>,
    /// Only keys that sort after this (the previous page's `next_after`).
    pub after: Option<String>,
    /// At most this many (1–1000, default 100).
    pub limit: Option<usize>,
}

/// An object's bytes, as stored (`application/octet-stream`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ObjectBytes(#[allow(dead_code)] Vec<u8>);

/// List the buckets (those the token may see).
#[utoipa::path(get, path = "/v1/buckets", tag = "objects", operation_id = "list_buckets",
    responses((status = 200, description = "The buckets, by name", body = BucketList)))]
pub async fn list_buckets(State(api): State<ApiState>, caller: Caller) -> Result<Json<BucketList>, ApiError> {
    let principal = api.authorize_caller(&caller, Scope::ObjectsRead, Resource::Unlimited, "buckets")?;
    let buckets = api
        .config()
        .state
        .buckets()?
        .into_iter()
        .filter(|bucket| principal.grant.allows_bucket(bucket.name.as_str()))
        .map(|bucket| BucketView {
            name: bucket.name.to_string(),
            created_at: rfc3339(bucket.created_at),
            tags: bucket.tags.into_iter().collect(),
        })
        .collect();
    Ok(Json(BucketList { buckets }))
}

/// List a bucket's objects, by key, a page at a time.
#[utoipa::path(get, path = "/v1/buckets/{bucket}/objects", tag = "objects", operation_id = "list_objects",
    params(("bucket" = String, Path, description = "The bucket"), ListObjectsQuery),
    responses((status = 200, description = "A page of objects", body = ObjectList)))]
pub async fn list_objects(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath(bucket): ApiPath<String>,
    query: LazyQuery,
) -> Result<Json<ObjectList>, ApiError> {
    api.authorize_caller(&caller, Scope::ObjectsRead, Resource::Bucket(&bucket), format!("bucket/{bucket}"))?;
    let query: ListObjectsQuery = query.parse()?;
    let limit = page_limit(query.limit, 100, 1_000)?;
    let name = parse_name("bucket", &bucket)?;
    let mut objects: Vec<ObjectInfo> = api.config().buckets.list(&name, query.prefix.as_deref()).await?;
    if let Some(after) = &query.after {
        objects.retain(|object| object.key.as_str() > after.as_str());
    }
    let more = objects.len() > limit;
    objects.truncate(limit);
    let next_after = more.then(|| objects.last().map(|object| object.key.clone())).flatten();
    Ok(Json(ObjectList { objects: objects.into_iter().map(ObjectView::from).collect(), next_after }))
}

/// Read an object, streamed.
#[utoipa::path(get, path = "/v1/buckets/{bucket}/objects/{key}", tag = "objects", operation_id = "get_object",
    params(("bucket" = String, Path, description = "The bucket"),
           ("key" = String, Path, description = "The object key, percent-encoded as one segment")),
    responses((status = 200, description = "The object's bytes", content_type = "application/octet-stream", body = ObjectBytes)))]
pub async fn get_object(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath((bucket, key)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    api.authorize_caller(
        &caller,
        Scope::ObjectsRead,
        Resource::Bucket(&bucket),
        format!("bucket/{bucket}/object/{key}"),
    )?;
    let name = parse_name("bucket", &bucket)?;
    let buckets = api.config().buckets.clone();
    // Look first, so a missing object is a 404 and not a broken stream.
    let info = buckets.head(&name, &key).await?;
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Err(error) = buckets.get(&name, &key, writer).await {
            // The status is already sent; cutting the stream short tells the client.
            tracing::error!(bucket = %name, key, error = %error, "reading an object for the API failed mid-stream");
        }
    });
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    Ok(response)
}

/// Store an object from the request body (any size up to the server's limit, streamed), replacing any
/// object with that key. Its `created` event follows as for any put.
#[utoipa::path(put, path = "/v1/buckets/{bucket}/objects/{key}", tag = "objects", operation_id = "put_object",
    params(("bucket" = String, Path, description = "The bucket"),
           ("key" = String, Path, description = "The object key, percent-encoded as one segment")),
    request_body(content = ObjectBytes, content_type = "application/octet-stream", description = "The object's bytes"),
    responses((status = 200, description = "Stored", body = ObjectView)))]
pub async fn put_object(
    State(api): State<ApiState>,
    caller: Caller,
    ApiPath((bucket, key)): ApiPath<(String, String)>,
    body: Body,
) -> Result<Json<ObjectView>, ApiError> {
    api.authorize_caller(
        &caller,
        Scope::ObjectsWrite,
        Resource::Bucket(&bucket),
        format!("bucket/{bucket}/object/{key}"),
    )?;
    let name = parse_name("bucket", &bucket)?;
    let limit = api.config().limits.max_object_size;
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let mut received = 0u64;
    let stream = body.into_data_stream().map_err(std::io::Error::other).and_then(move |chunk| {
        received += chunk.len() as u64;
        let over = received > limit;
        if over {
            flag.store(true, Ordering::SeqCst);
        }
        std::future::ready(if over {
            Err(std::io::Error::other("the object is over the size limit"))
        } else {
            Ok(chunk)
        })
    });
    let reader = tokio_util::io::StreamReader::new(stream);
    match api.config().buckets.put(&name, &key, reader).await {
        Ok(info) => Ok(Json(ObjectView::from(info))),
        Err(_) if too_large.load(Ordering::SeqCst) => Err(ApiError::too_large(format!(
            "the object is larger than this server accepts ({limit} bytes); nothing was stored"
        ))),
        Err(error) => Err(error.into()),
    }
}
