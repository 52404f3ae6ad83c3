//! AWS-compatible endpoints over a project, so that code written for AWS
//! reaches Mayfly's data unchanged: the S3 protocol over the buckets
//! ([`s3`]), through `s3s`, which parses requests, checks SigV4 signatures
//! (headers, presigned URLs, chunked payload signing) and writes S3's XML;
//! and the SQS protocol (AWS JSON 1.0) over the queues ([`sqs`]) on the same
//! endpoint URL, which s3s cannot carry (see [`sqs`] for why). This crate
//! supplies the operations and the credentials ([`credentials`]: AWS key
//! pairs bound to Mayfly tokens).
//!
//! [`router`] is an axum router that the caller serves over TLS with
//! [`mayfly_api::serve::serve`], on its own port (`[api].aws_listen`):
//! S3 addresses buckets from the path's root, which the HTTPS API's `/v1`
//! and the dashboard's `/` already own. Every request lands in the access
//! log before it is answered, refusals included, named by its token.

pub mod credentials;
pub mod function_credentials;
pub mod host;
pub mod s3;
pub mod sessions;
pub mod sqs;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use mayfly_api::AccessLog;
use mayfly_api::serve::ClientAddr;
use mayfly_buckets::Buckets;
use mayfly_core::Clock;
use mayfly_state::{AccessRecord, StateStore};
use s3s::service::S3ServiceBuilder;

pub use crate::credentials::{TokenAuth, access_key_id, new_secret, token_id};
pub use crate::function_credentials::FunctionCredentials;
pub use crate::s3::MayflyS3;

/// The region Mayfly answers for; clients must sign for it.
pub const REGION: &str = "us-east-1";

/// The largest S3 error document read back for the access log.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the AWS endpoints run against.
#[derive(Clone)]
pub struct AwsConfig {
    pub state: Arc<dyn StateStore>,
    pub buckets: Buckets,
    pub clock: Arc<dyn Clock>,
    pub access_log: AccessLog,
    /// The domain of virtual-hosted-style requests (`[api].aws_domain`).
    pub domain: String,
}

/// The AWS endpoint as a router: SQS requests (`POST /` with an
/// `X-Amz-Target: AmazonSQS.*` header) go to [`sqs`], every other request
/// is S3's.
pub fn router(config: AwsConfig) -> Router {
    let config = Arc::new(config);
    let mut builder = S3ServiceBuilder::new(MayflyS3::new(config.buckets.clone(), config.state.clone()));
    builder.set_auth(TokenAuth::new(config.state.clone(), config.clock.clone()));
    builder.set_host(host::EndpointDomain::new(&config.domain));
    builder.set_access(credentials::SignedOnly { state: config.state.clone(), clock: config.clock.clone() });
    let service = builder.build();
    let sqs_config = config.clone();
    let endpoint = move |request: Request| {
        let mut service = service.clone();
        let sqs_config = sqs_config.clone();
        async move {
            if sqs::is_sqs_request(&request) {
                return sqs::handle(sqs_config, request).await;
            }
            match tower_service::Service::call(&mut service, request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => {
                    tracing::warn!(error = ?error, "the S3 endpoint failed to answer");
                    (StatusCode::INTERNAL_SERVER_ERROR, "the S3 endpoint failed to answer").into_response()
                }
            }
        }
    };
    Router::new().fallback(endpoint).layer(axum::middleware::from_fn_with_state(config, record_access))
}

/// Append the access record of every request and wait for its commit before
/// the response leaves; if it cannot be written, answer 500 instead.
async fn record_access(State(config): State<Arc<AwsConfig>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let client =
        request.extensions().get::<ClientAddr>().map_or_else(|| "unknown".to_owned(), |client| client.0.to_string());
    // A function's key is logged as is (`MFS…`): it names no token.
    let token_id = signer(&request).and_then(|access_key| {
        if sessions::is_session_key(&access_key) { Some(access_key) } else { token_id(&access_key) }
    });
    let mut response = next.run(request).await;
    let status = response.status();
    let sqs_access = response.extensions_mut().remove::<sqs::SqsAccess>();
    let (response, resource, outcome) = if let Some(access) = sqs_access {
        (response, access.resource, access.outcome)
    } else if status.is_success() || status.is_redirection() {
        (response, format!("s3{path}"), "ok".to_owned())
    } else {
        let (response, outcome) = error_outcome(response).await;
        (response, format!("s3{path}"), outcome)
    };
    let record = AccessRecord {
        at: config.clock.now(),
        token_id,
        client,
        method,
        resource,
        path,
        status: status.as_u16(),
        outcome,
    };
    match config.access_log.append(record).await {
        Ok(()) => response,
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{error}; the response was withheld (every access must be recorded first)"),
        )
            .into_response(),
    }
}

/// The access key a request is signed with: from the `Authorization`
/// header or a presigned URL's `X-Amz-Credential`.
fn signer(request: &Request) -> Option<String> {
    let credential = match request.headers().get(axum::http::header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().ok()?;
            value.split("Credential=").nth(1)?.to_owned()
        }
        None => {
            let query = request.uri().query()?;
            let value = query.split('&').find_map(|pair| pair.strip_prefix("X-Amz-Credential="))?;
            percent_encoding::percent_decode_str(value).decode_utf8().ok()?.into_owned()
        }
    };
    credential.split('/').next().map(str::to_owned)
}

/// A refused or failed response, rebuilt after reading its S3 error code and
/// message for the access log.
async fn error_outcome(response: Response) -> (Response, String) {
    let (parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    let bytes = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let outcome = format!("error: {}", parts.status);
            return (Response::from_parts(parts, Body::empty()), outcome);
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_owned())
    };
    let outcome = match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => format!("error: {}", parts.status),
    };
    (Response::from_parts(parts, Body::from(bytes)), outcome)
}
