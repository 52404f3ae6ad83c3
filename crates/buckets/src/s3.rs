//! Buckets on an S3-compatible store (`s3://BUCKET/PREFIX`), through
//! object_store's `aws` support: every Mayfly bucket is the prefix
//! `PREFIX/<bucket>/` of the one S3 bucket, with `.meta/` and `.uploads/`
//! beside them, all written through the `ObjectStore` trait and sealed by
//! this crate before they leave the host.
//!
//! [`S3Config::from_env`] reads the standard variables: `AWS_ENDPOINT_URL_S3`
//! or `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`; none: AWS itself), `AWS_REGION` (or
//! `AWS_DEFAULT_REGION`; default `us-east-1`), `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`. object_store cannot read
//! the AWS CLI's profiles, so `AWS_PROFILE` without `AWS_ACCESS_KEY_ID` is
//! refused, saying how to export the profile's credentials instead.
//!
//! [`check_store`] is run before a project uses the store: it writes one probe
//! object with a conditional create twice. The second must fail with
//! `AlreadyExists`; a store that ignores `If-None-Match` (Garage does) would
//! let create-only writes overwrite each other, so it is refused by name. The
//! same probe turns an unreachable endpoint, wrong credentials or a missing
//! bucket into one clear error, before anything else is written.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

use crate::BucketError;

/// Where a project's objects are on S3, and how to reach the store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The S3 bucket.
    pub bucket: String,
    /// The prefix inside it, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// `None`: AWS itself, by region.
    pub endpoint: Option<String>,
    pub region: String,
    /// `None` with `secret_access_key` `None`: object_store's own fallbacks
    /// (web identity, container or instance credentials).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The variables [`S3Config::from_env`] reads, which a process started with
/// a cleared environment must be given to reach the same store.
pub const S3_ENV_VARS: &[&str] = &[
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
];

impl S3Config {
    /// Parse `s3://BUCKET/PREFIX`; the store is reached as the environment says.
    pub fn from_env(url: &str) -> Result<S3Config, String> {
        let (bucket, prefix) = parse_s3_url(url)?;
        let var = |name: &str| std::env::var(name).ok().map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        let access_key_id = var("AWS_ACCESS_KEY_ID");
        if access_key_id.is_none()
            && let Some(profile) = var("AWS_PROFILE")
        {
            return Err(format!(
                "AWS_PROFILE={profile} is set, but Mayfly's S3 client (object_store) cannot read AWS profiles; \
export the profile's credentials instead, e.g. `eval \"$(aws configure export-credentials --profile {profile} --format env)\"`, \
or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ));
        }
        Ok(S3Config {
            bucket,
            prefix,
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")).or_else(|| var("AWS_ENDPOINT")),
            region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        })
    }

    /// The store and bucket, for messages: `s3://BUCKET/PREFIX at ENDPOINT`.
    pub fn describe(&self) -> String {
        let endpoint = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("AWS S3 in {}", self.region),
        };
        if self.prefix.is_empty() {
            format!("s3://{} at {endpoint}", self.bucket)
        } else {
            format!("s3://{}/{} at {endpoint}", self.bucket, self.prefix)
        }
    }

    /// The store, rooted at the prefix. `quick`: few retries and short
    /// timeouts, for [`check_store`], so an unreachable endpoint is reported
    /// in seconds rather than after object_store's three minutes of retries.
    pub fn build(&self, quick: bool) -> Result<Arc<dyn ObjectStore>, BucketError> {
        let mut builder = AmazonS3Builder::new().with_bucket_name(&self.bucket).with_region(&self.region);
        if quick {
            // Before the endpoint: the client options replace any set earlier (`allow_http` among them).
            builder = builder
                .with_retry(RetryConfig {
                    max_retries: 1,
                    retry_timeout: Duration::from_secs(10),
                    ..Default::default()
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(20)),
                );
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &self.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &self.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|source| BucketError::UnusableStore {
            store: self.describe(),
            problem: format!("cannot be configured: {source}"),
        })?;
        if self.prefix.is_empty() {
            Ok(Arc::new(store))
        } else {
            Ok(Arc::new(PrefixStore::new(store, self.prefix.as_str())))
        }
    }
}

/// `s3://BUCKET/PREFIX` → (bucket, prefix without surrounding slashes).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .trim()
        .strip_prefix("s3://")
        .ok_or_else(|| format!("the storage URL `{url}` is not of the form s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains(['@', '?', ':']) {
        return Err(format!(
            "the storage URL `{url}` names no valid bucket; write s3://BUCKET/PREFIX, with credentials in the environment, never in the URL"
        ));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// Where the probe object is written, under the prefix; bucket names cannot
/// start with `.`, so it never clashes with an object.
const PROBE_FOLDER: &str = ".probe";

/// What the second conditional create of the probe answered.
#[derive(Debug)]
pub enum ProbeAnswer {
    /// Refused with `AlreadyExists`: the store honours conditional creates.
    AlreadyExists,
    /// Accepted: the store overwrote the object, ignoring the condition.
    Overwritten,
    /// The client has no conditional create for this store.
    NotImplemented,
}

/// Whether a store whose second conditional create answered `answer` can be
/// used; the refusal names `store`.
pub fn decide_on_probe(store: &str, answer: &ProbeAnswer) -> Result<(), BucketError> {
    let problem = match answer {
        ProbeAnswer::AlreadyExists => return Ok(()),
        ProbeAnswer::Overwritten => {
            "ignores conditional writes: a create-only put (If-None-Match: *) of an existing object overwrote it \
instead of failing, so Mayfly's create-only writes could silently lose data (Garage behaves so); use a store that \
honours If-None-Match, such as AWS S3, MinIO or SeaweedFS"
        }
        ProbeAnswer::NotImplemented => {
            "offers no conditional create through Mayfly's S3 client; use a store that honours If-None-Match"
        }
    };
    Err(BucketError::UnusableStore { store: store.to_owned(), problem: problem.to_owned() })
}

/// Check that `store` (described as `describe` in messages) is reachable,
/// accepts the credentials, has its bucket and honours a conditional create:
/// two create-only puts of one probe object, the second of which must fail
/// with `AlreadyExists`. Only the probe object is written, and it is removed.
pub async fn check_store(store: &dyn ObjectStore, describe: &str) -> Result<(), BucketError> {
    let location = StorePath::from_iter([
        PROBE_FOLDER,
        &format!("conditional-create-{}", hex::encode(rand::random::<[u8; 16]>())),
    ]);
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let probe = || PutPayload::from_static(b"mayfly checks that this store honours conditional creates");
    // A listing first, which writes nothing: a missing bucket, refused
    // credentials or an unreachable endpoint are found before any write
    // (SeaweedFS creates a missing bucket on a put from an admin identity).
    if let Err(source) = store.list_with_delimiter(Some(&StorePath::from(PROBE_FOLDER))).await {
        return Err(unreachable(describe, &source));
    }
    store.put_opts(&location, probe(), create()).await.map_err(|source| unreachable(describe, &source))?;
    let answer = match store.put_opts(&location, probe(), create()).await {
        Err(object_store::Error::AlreadyExists { .. }) => ProbeAnswer::AlreadyExists,
        Err(object_store::Error::NotImplemented) => ProbeAnswer::NotImplemented,
        Ok(_) => ProbeAnswer::Overwritten,
        Err(source) => {
            let _ = store.delete(&location).await;
            return Err(unreachable(describe, &source));
        }
    };
    if let Err(error) = store.delete(&location).await {
        tracing::warn!(store = describe, %location, %error, "could not remove the conditional-create probe object");
    }
    decide_on_probe(describe, &answer)
}

/// An error of the probe, with what it most likely means.
fn unreachable(describe: &str, source: &object_store::Error) -> BucketError {
    let text = source.to_string();
    let cause = if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
        "its bucket does not exist; create it (e.g. `aws s3 mb`) or fix the bucket in the storage URL"
    } else if ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403 Forbidden"]
        .iter()
        .any(|code| text.contains(code))
    {
        "it refused the credentials; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION)"
    } else if text.contains("error sending request")
        || text.contains("connect")
        || text.contains("timed out")
        || text.contains("dns")
    {
        "it cannot be reached; check AWS_ENDPOINT_URL and that the store is running"
    } else {
        "it refused the probe"
    };
    BucketError::UnusableStore { store: describe.to_owned(), problem: format!("cannot be used: {cause} ({text})") }
}
