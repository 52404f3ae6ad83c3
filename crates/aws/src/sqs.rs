//! The SQS protocol over a project's queues, in the AWS JSON 1.0 form that
//! boto3 (≥ 1.34) and current SDKs send: `POST /` with
//! `X-Amz-Target: AmazonSQS.<Operation>` and a JSON body, on the same
//! endpoint URL as S3.
//!
//! s3s cannot carry these requests: its SigV4 checker refuses any credential
//! scope whose service is not `s3` or `sts`, and it does so before a custom
//! route (`S3Route`) is matched; even where a newer s3s lets more services
//! through, a request without `x-amz-content-sha256` (SQS clients send none)
//! is checked only for `sts`. So the router sends SQS requests here, before
//! s3s, and [`verify_signature`] checks them with `aws-sigv4` (the SDKs' own
//! signer): it signs the request again exactly as the client said it signed
//! it (its signed headers, its date, its scope, the body's hash) with the
//! secret from [`TokenAuth`], and compares the signatures in constant time.
//!
//! Every operation checks the signer's grant (see ARCHITECTURE.md for the
//! scopes), validates its whole input before it touches the store (bad input
//! changes nothing), and answers SQS's JSON errors with the
//! `x-amzn-query-error` header SDKs read the error code from.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use mayfly_api::Scope;
use mayfly_core::queue::{QueueConfig, ReceiptHandle, check_message_size};
use mayfly_core::{Clock, Name, TRACE_HEADER_ATTRIBUTE, user_attributes};
use mayfly_state::{
    DeleteOutcome, OutgoingMessage, QueueRecord, ReceiveRequest, ReceivedMessage, StateError, StateStore,
};
use md5::{Digest, Md5};
use s3s::auth::S3Auth;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::credentials::{TokenAuth, function_principal, grant_of};
use crate::sessions::{Principal, is_session_key, session_token};
use crate::{AwsConfig, REGION};

/// The account id in every queue URL and ARN: Mayfly has no AWS accounts.
pub const ACCOUNT_ID: &str = "000000000000";
/// The largest request body read: ten messages of 256 KiB, JSON-escaped.
const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;
/// How often a long poll looks at the queue again when the store cannot
/// say that messages became visible (`QueueStore::watch_messages`), or
/// says so only for this process's writes.
const LONG_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often it looks when the store says so for every process's writes:
/// only for messages that become visible by time (a delay, a lapsed lease)
/// or a wake-up that was missed.
const WATCHED_LONG_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// SQS's limits.
const MAX_WAIT_SECONDS: u64 = 20;
const MAX_DELAY_SECONDS: u64 = 900;
const MAX_VISIBILITY_SECONDS: u64 = 43_200;
const MAX_BATCH_ENTRIES: usize = 10;
/// How far a request's `x-amz-date` may be from the server's clock.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// What the access log records for an SQS request; the handler puts it in
/// the response's extensions for the access-log middleware.
#[derive(Debug, Clone)]
pub struct SqsAccess {
    /// `sqs/<queue>`, or `sqs` for requests about no one queue.
    pub resource: String,
    /// `ok`, or the SQS error code and its message.
    pub outcome: String,
}

/// Whether a request is an SQS request in the AWS JSON 1.0 protocol.
pub fn is_sqs_request(request: &Request) -> bool {
    request.method() == Method::POST
        && request.uri().path() == "/"
        && request
            .headers()
            .get("x-amz-target")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|target| target.starts_with("AmazonSQS."))
}

/// The SQS errors this endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqsErrorCode {
    QueueDoesNotExist,
    InvalidParameterValue,
    InvalidAttributeName,
    ReceiptHandleIsInvalid,
    MessageNotInflight,
    MissingParameter,
    AccessDenied,
    UnsupportedOperation,
    BatchEntryIdsNotDistinct,
    EmptyBatchRequest,
    TooManyEntriesInBatchRequest,
    IncompleteSignature,
    SignatureDoesNotMatch,
    InvalidClientTokenId,
    ExpiredToken,
    RequestExpired,
    MalformedQueryString,
    InternalFailure,
}

impl SqsErrorCode {
    /// The short name: the shape in `__type` and what the access log records.
    pub fn name(self) -> &'static str {
        match self {
            SqsErrorCode::QueueDoesNotExist => "QueueDoesNotExist",
            SqsErrorCode::InvalidParameterValue => "InvalidParameterValue",
            SqsErrorCode::InvalidAttributeName => "InvalidAttributeName",
            SqsErrorCode::ReceiptHandleIsInvalid => "ReceiptHandleIsInvalid",
            SqsErrorCode::MessageNotInflight => "MessageNotInflight",
            SqsErrorCode::MissingParameter => "MissingParameter",
            SqsErrorCode::AccessDenied => "AccessDenied",
            SqsErrorCode::UnsupportedOperation => "UnsupportedOperation",
            SqsErrorCode::BatchEntryIdsNotDistinct => "BatchEntryIdsNotDistinct",
            SqsErrorCode::EmptyBatchRequest => "EmptyBatchRequest",
            SqsErrorCode::TooManyEntriesInBatchRequest => "TooManyEntriesInBatchRequest",
            SqsErrorCode::IncompleteSignature => "IncompleteSignature",
            SqsErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            SqsErrorCode::InvalidClientTokenId => "InvalidClientTokenId",
            SqsErrorCode::ExpiredToken => "ExpiredToken",
            SqsErrorCode::RequestExpired => "RequestExpired",
            SqsErrorCode::MalformedQueryString => "MalformedQueryString",
            SqsErrorCode::InternalFailure => "InternalFailure",
        }
    }

    /// The code of the query protocol, which SDKs read from the
    /// `x-amzn-query-error` header to name the error.
    fn query_code(self) -> &'static str {
        match self {
            SqsErrorCode::QueueDoesNotExist => "AWS.SimpleQueueService.NonExistentQueue",
            SqsErrorCode::MessageNotInflight => "AWS.SimpleQueueService.MessageNotInflight",
            SqsErrorCode::UnsupportedOperation => "AWS.SimpleQueueService.UnsupportedOperation",
            SqsErrorCode::BatchEntryIdsNotDistinct => "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            SqsErrorCode::EmptyBatchRequest => "AWS.SimpleQueueService.EmptyBatchRequest",
            SqsErrorCode::TooManyEntriesInBatchRequest => "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            other => other.name(),
        }
    }

    fn status(self) -> StatusCode {
        match self {
            SqsErrorCode::AccessDenied
            | SqsErrorCode::IncompleteSignature
            | SqsErrorCode::SignatureDoesNotMatch
            | SqsErrorCode::InvalidClientTokenId
            | SqsErrorCode::ExpiredToken
            | SqsErrorCode::RequestExpired => StatusCode::FORBIDDEN,
            SqsErrorCode::ReceiptHandleIsInvalid => StatusCode::NOT_FOUND,
            SqsErrorCode::InternalFailure => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the client is at fault (`Sender`) or the server (`Receiver`).
    fn is_sender_fault(self) -> bool {
        self != SqsErrorCode::InternalFailure
    }
}

/// An SQS error answer: a code and what a person needs to know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.name())]
pub struct SqsError {
    pub code: SqsErrorCode,
    pub message: String,
}

impl SqsError {
    pub fn new(code: SqsErrorCode, message: impl Into<String>) -> SqsError {
        SqsError { code, message: message.into() }
    }

    fn response(&self) -> Response {
        let body = json!({
            "__type": format!("com.amazonaws.sqs#{}", self.code.name()),
            "message": self.message,
        });
        let fault = if self.code.is_sender_fault() { "Sender" } else { "Receiver" };
        let mut response = (self.code.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
        if let Ok(value) = HeaderValue::from_str(&format!("{};{fault}", self.code.query_code())) {
            headers.insert("x-amzn-query-error", value);
        }
        response
    }
}

fn invalid(message: impl Into<String>) -> SqsError {
    SqsError::new(SqsErrorCode::InvalidParameterValue, message)
}

fn store_error(error: StateError, queue: &str) -> SqsError {
    match error {
        StateError::NotFound { kind: "queue", .. } => no_such_queue(queue),
        StateError::Rule(rule) => invalid(rule.to_string()),
        StateError::LeaseLost { receipt } => SqsError::new(
            SqsErrorCode::ReceiptHandleIsInvalid,
            format!(
                "receipt handle `{receipt}` no longer holds its message's lease (it lapsed, or the message was received again or deleted); nothing changed"
            ),
        ),
        other => SqsError::new(SqsErrorCode::InternalFailure, format!("queue `{queue}`: {other}")),
    }
}

fn no_such_queue(queue: &str) -> SqsError {
    SqsError::new(
        SqsErrorCode::QueueDoesNotExist,
        format!("queue `{queue}` does not exist; queues are declared in the spec and created by `mayfly deploy`"),
    )
}

/// Answer one SQS request: check its signature, run its operation, and
/// leave what the access log needs in the response.
pub async fn handle(config: Arc<AwsConfig>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let (resource, result) = match http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Err(error) => ("sqs".to_owned(), Err(invalid(format!("the request body could not be read: {error}")))),
        Ok(collected) => {
            let body = collected.to_bytes();
            match verify_signature(config.state.clone(), config.clock.clone(), &parts, &body).await {
                Err(error) => ("sqs".to_owned(), Err(error)),
                Ok(access_key) => {
                    let operation = parts
                        .headers
                        .get("x-amz-target")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|target| target.strip_prefix("AmazonSQS."))
                        .unwrap_or_default()
                        .to_owned();
                    let endpoint = endpoint_of(&parts.headers);
                    let sqs = Sqs { config: config.clone(), endpoint };
                    let token = session_token(&parts.headers, &parts.uri);
                    sqs.call(&access_key, token.as_deref(), &operation, &body).await
                }
            }
        }
    };
    let (mut response, outcome) = match result {
        Ok(value) => {
            let mut response = (StatusCode::OK, value.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.0"));
            (response, "ok".to_owned())
        }
        Err(error) => {
            if error.code == SqsErrorCode::InternalFailure {
                tracing::warn!(error = %error, resource = %resource, "an SQS request failed on the server's side");
            }
            (error.response(), error.to_string())
        }
    };
    response.extensions_mut().insert(SqsAccess { resource, outcome });
    response
}

/// The endpoint URL the client used, for the queue URLs it is handed.
fn endpoint_of(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("localhost");
    format!("https://{host}")
}

/// The parts of a SigV4 `Authorization` header.
struct Authorization<'a> {
    access_key: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(value) = part.strip_prefix("Credential=") {
            credential = Some(value);
        } else if let Some(value) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(value);
        } else if let Some(value) = part.strip_prefix("Signature=") {
            signature = Some(value);
        }
    }
    let mut scope = credential?.split('/');
    let (access_key, scope_date, region, service, terminator) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != "aws4_request" || scope.next().is_some() {
        return None;
    }
    Some(Authorization {
        access_key,
        scope_date,
        region,
        service,
        signed_headers: signed_headers?.split(';').collect(),
        signature: signature?,
    })
}

/// Check a request's SigV4 signature (service `sqs`) and return the access
/// key that signed it. The signature is computed again by `aws-sigv4` from
/// what the client says it signed and the key's secret; the key's token must
/// hold AWS credentials and be neither revoked nor expired at `clock`'s now.
pub async fn verify_signature(
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    request: &Parts,
    body: &[u8],
) -> Result<String, SqsError> {
    let (method, uri, headers) = (&request.method, &request.uri, &request.headers);
    let incomplete = |message: &str| SqsError::new(SqsErrorCode::IncompleteSignature, message);
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).ok_or_else(|| {
        SqsError::new(SqsErrorCode::AccessDenied, "this endpoint needs signed requests (AWS Signature Version 4)")
    })?;
    let authorization = parse_authorization(authorization)
        .ok_or_else(|| incomplete("the Authorization header is not an AWS4-HMAC-SHA256 signature"))?;
    if authorization.service != "sqs" {
        return Err(SqsError::new(
            SqsErrorCode::SignatureDoesNotMatch,
            format!(
                "the credential scope names service `{}`; SQS requests are signed for `sqs`",
                authorization.service
            ),
        ));
    }
    // The operation is chosen by x-amz-target: unsigned, a captured request
    // could be replayed as another operation.
    for required in ["host", "x-amz-date", "x-amz-target"] {
        if !authorization.signed_headers.contains(&required) {
            return Err(incomplete(&format!("the signature must cover the `{required}` header")));
        }
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| incomplete("the request has no x-amz-date header"))?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| incomplete("x-amz-date is not a date like 20260101T120000Z"))?
        .and_utc();
    if !amz_date.starts_with(authorization.scope_date) {
        return Err(SqsError::new(
            SqsErrorCode::SignatureDoesNotMatch,
            "the credential scope's date is not x-amz-date's",
        ));
    }
    let now_millis = clock.now().as_millis();
    let skew = Duration::from_millis(now_millis.abs_diff(signed_at.timestamp_millis()));
    if skew > MAX_CLOCK_SKEW {
        return Err(SqsError::new(
            SqsErrorCode::RequestExpired,
            format!("the request was signed at {amz_date}, more than 15 minutes from the server's clock"),
        ));
    }
    let signed_at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(signed_at.timestamp()).unwrap_or(0));

    let auth = TokenAuth::new(state, clock);
    let secret = auth.get_secret_key(authorization.access_key).await.map_err(|error| {
        let code = match error.code() {
            s3s::S3ErrorCode::ExpiredToken => SqsErrorCode::ExpiredToken,
            s3s::S3ErrorCode::InternalError => SqsErrorCode::InternalFailure,
            _ => SqsErrorCode::InvalidClientTokenId,
        };
        SqsError::new(code, error.message().unwrap_or("the access key is not valid").to_owned())
    })?;

    let mut signed = Vec::new();
    for name in &authorization.signed_headers {
        let mut found = false;
        for value in headers.get_all(*name) {
            let value = value.to_str().map_err(|_| incomplete(&format!("signed header `{name}` is not text")))?;
            signed.push((*name, value));
            found = true;
        }
        if !found {
            return Err(incomplete(&format!("signed header `{name}` is missing")));
        }
    }
    let path_and_query = uri.path_and_query().map_or("/", |value| value.as_str());
    let identity =
        aws_credential_types::Credentials::new(authorization.access_key, secret.expose(), None, None, "mayfly-token")
            .into();
    let mut settings = aws_sigv4::http_request::SigningSettings::default();
    // Sign exactly the headers the client signed, no more, no fewer.
    settings.excluded_headers = None;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(authorization.region)
        .name("sqs")
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|error| SqsError::new(SqsErrorCode::InternalFailure, format!("cannot check the signature: {error}")))?
        .into();
    let signable = aws_sigv4::http_request::SignableRequest::new(
        method.as_str(),
        path_and_query,
        signed.into_iter(),
        aws_sigv4::http_request::SignableBody::Bytes(body),
    )
    .map_err(|error| incomplete(&format!("the request cannot be signed: {error}")))?;
    let expected = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|error| incomplete(&format!("the request cannot be signed: {error}")))?;
    if bool::from(expected.signature().as_bytes().ct_eq(authorization.signature.as_bytes())) {
        Ok(authorization.access_key.to_owned())
    } else {
        Err(SqsError::new(
            SqsErrorCode::SignatureDoesNotMatch,
            "the request signature does not match; check the secret access key and the signing method",
        ))
    }
}

/// One request's view of the queues.
struct Sqs {
    config: Arc<AwsConfig>,
    endpoint: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct QueueNameInput {
    queue_name: Option<String>,
    queue_name_prefix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct QueueInput {
    queue_url: Option<String>,
    attribute_names: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct MessageAttributeValue {
    data_type: Option<String>,
    string_value: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct SendEntry {
    id: Option<String>,
    message_body: Option<String>,
    delay_seconds: Option<u64>,
    message_attributes: BTreeMap<String, MessageAttributeValue>,
    /// Only `AWSTraceHeader`, as SQS takes.
    message_system_attributes: BTreeMap<String, MessageAttributeValue>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct SendInput {
    queue_url: Option<String>,
    #[serde(flatten)]
    message: SendEntry,
    entries: Option<Vec<SendEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ReceiveInput {
    queue_url: Option<String>,
    max_number_of_messages: Option<u64>,
    visibility_timeout: Option<u64>,
    wait_time_seconds: Option<u64>,
    message_attribute_names: Vec<String>,
    message_system_attribute_names: Vec<String>,
    attribute_names: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
struct ReceiptEntry {
    id: Option<String>,
    receipt_handle: Option<String>,
    visibility_timeout: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ReceiptInput {
    queue_url: Option<String>,
    #[serde(flatten)]
    receipt: ReceiptEntry,
    entries: Option<Vec<ReceiptEntry>>,
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, SqsError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|error| invalid(format!("the request body is not the JSON this operation takes: {error}")))
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, SqsError> {
    value.as_deref().ok_or_else(|| {
        SqsError::new(SqsErrorCode::MissingParameter, format!("the request must contain the parameter {name}"))
    })
}

/// The queue a queue URL names: its last path segment.
fn queue_of_url(url: &Option<String>) -> Result<Name, SqsError> {
    let url = required(url, "QueueUrl")?;
    let last = url.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    Name::new(last).map_err(|_| no_such_queue(last))
}

fn seconds(value: Option<u64>, name: &str, max: u64) -> Result<Option<Duration>, SqsError> {
    match value {
        Some(seconds) if seconds > max => Err(invalid(format!("{name} of {seconds} is outside 0–{max} seconds"))),
        other => Ok(other.map(Duration::from_secs)),
    }
}

fn require(grant: &Principal, scopes: &[Scope], queue: &str) -> Result<(), SqsError> {
    grant.permits_on_queue(scopes, queue).map_err(|refusal| SqsError::new(SqsErrorCode::AccessDenied, refusal))
}

/// Reading a queue's name, URL and counts: as the HTTPS API's queue endpoints.
const READ: &[Scope] = &[Scope::QueuesRead];
/// Sending: as the HTTPS API's send endpoint.
const SEND: &[Scope] = &[Scope::MessagesWrite];
/// Receiving, deleting, changing visibility: a consumer reads the queue and
/// changes its messages, so it needs both; a producer's token cannot consume.
const CONSUME: &[Scope] = &[Scope::QueuesRead, Scope::MessagesWrite];

impl Sqs {
    /// Run a store call off the async threads; `queue` names the queue it is
    /// about, for its errors.
    async fn blocking<T: Send + 'static>(
        &self,
        queue: &(impl AsRef<str> + ?Sized),
        work: impl FnOnce(&dyn StateStore) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, SqsError> {
        let state = self.config.state.clone();
        tokio::task::spawn_blocking(move || work(state.as_ref()))
            .await
            .map_err(|error| SqsError::new(SqsErrorCode::InternalFailure, format!("the store call failed: {error}")))?
            .map_err(|error| store_error(error, queue.as_ref()))
    }

    async fn grant(&self, access_key: &str, token: Option<&str>) -> Result<Principal, SqsError> {
        if is_session_key(access_key) {
            return function_principal(self.config.state.as_ref(), access_key, token, self.config.clock.now()).map_err(
                |error| {
                    let code = match error.code() {
                        s3s::S3ErrorCode::ExpiredToken => SqsErrorCode::ExpiredToken,
                        s3s::S3ErrorCode::AccessDenied => SqsErrorCode::AccessDenied,
                        _ => SqsErrorCode::InvalidClientTokenId,
                    };
                    SqsError::new(code, error.message().unwrap_or("the session token is not valid"))
                },
            );
        }
        let state = self.config.state.clone();
        let access_key = access_key.to_owned();
        tokio::task::spawn_blocking(move || grant_of(state.as_ref(), &access_key).map(Principal::Token))
            .await
            .map_err(|error| SqsError::new(SqsErrorCode::InternalFailure, format!("the grant check failed: {error}")))?
            .map_err(|error| {
                SqsError::new(
                    SqsErrorCode::InvalidClientTokenId,
                    error.message().unwrap_or("the access key is not valid"),
                )
            })
    }

    async fn queue_record(&self, queue: &Name) -> Result<QueueRecord, SqsError> {
        let name = queue.clone();
        self.blocking(queue, move |state| state.queue(&name)).await
    }

    fn queue_url(&self, queue: &Name) -> String {
        format!("{}/{ACCOUNT_ID}/{queue}", self.endpoint)
    }

    /// Run an operation: the access-log resource, and the answer.
    async fn call(
        &self,
        access_key: &str,
        token: Option<&str>,
        operation: &str,
        body: &[u8],
    ) -> (String, Result<Value, SqsError>) {
        let grant = match self.grant(access_key, token).await {
            Ok(grant) => grant,
            Err(error) => return ("sqs".to_owned(), Err(error)),
        };
        let resource = |queue: &Result<Name, SqsError>| match queue {
            Ok(queue) => format!("sqs/{queue}"),
            Err(_) => "sqs".to_owned(),
        };
        macro_rules! on_queue {
            ($input:ty, $method:ident) => {{
                match parse::<$input>(body) {
                    Err(error) => ("sqs".to_owned(), Err(error)),
                    Ok(input) => {
                        let queue = queue_of_url(&input.queue_url);
                        let resource = resource(&queue);
                        let result = match queue {
                            Ok(queue) => self.$method(&grant, queue, input).await,
                            Err(error) => Err(error),
                        };
                        (resource, result)
                    }
                }
            }};
        }
        match operation {
            "GetQueueUrl" => match parse::<QueueNameInput>(body) {
                Err(error) => ("sqs".to_owned(), Err(error)),
                Ok(input) => match required(&input.queue_name, "QueueName") {
                    Err(error) => ("sqs".to_owned(), Err(error)),
                    Ok(name) => (format!("sqs/{name}"), self.get_queue_url(&grant, name).await),
                },
            },
            "ListQueues" => match parse::<QueueNameInput>(body) {
                Err(error) => ("sqs".to_owned(), Err(error)),
                Ok(input) => ("sqs".to_owned(), self.list_queues(&grant, input.queue_name_prefix.as_deref()).await),
            },
            "GetQueueAttributes" => on_queue!(QueueInput, get_queue_attributes),
            "SendMessage" => on_queue!(SendInput, send_message),
            "SendMessageBatch" => on_queue!(SendInput, send_message_batch),
            "ReceiveMessage" => on_queue!(ReceiveInput, receive_message),
            "DeleteMessage" => on_queue!(ReceiptInput, delete_message),
            "DeleteMessageBatch" => on_queue!(ReceiptInput, delete_message_batch),
            "ChangeMessageVisibility" => on_queue!(ReceiptInput, change_message_visibility),
            "ChangeMessageVisibilityBatch" => on_queue!(ReceiptInput, change_message_visibility_batch),
            "PurgeQueue" => on_queue!(QueueInput, purge_queue),
            other => (
                "sqs".to_owned(),
                Err(SqsError::new(
                    SqsErrorCode::UnsupportedOperation,
                    format!(
                        "{other} is not implemented by Mayfly's SQS endpoint; queues are declared in the spec and created by `mayfly deploy` (see README, \"AWS-compatible endpoint\")"
                    ),
                )),
            ),
        }
    }

    async fn get_queue_url(&self, grant: &Principal, name: &str) -> Result<Value, SqsError> {
        require(grant, READ, name)?;
        let queue = Name::new(name).map_err(|_| no_such_queue(name))?;
        self.queue_record(&queue).await?;
        Ok(json!({ "QueueUrl": self.queue_url(&queue) }))
    }

    async fn list_queues(&self, grant: &Principal, prefix: Option<&str>) -> Result<Value, SqsError> {
        if !grant.has_scope(Scope::QueuesRead) {
            return Err(SqsError::new(SqsErrorCode::AccessDenied, "the credentials lack scope `queues:read`"));
        }
        let queues = self.blocking("(all)", |state| state.queues()).await?;
        let urls: Vec<String> = queues
            .iter()
            .filter(|record| grant.allows_queue(record.name.as_str()))
            .filter(|record| prefix.is_none_or(|prefix| record.name.as_str().starts_with(prefix)))
            .map(|record| self.queue_url(&record.name))
            .collect();
        Ok(json!({ "QueueUrls": urls }))
    }

    async fn get_queue_attributes(&self, grant: &Principal, queue: Name, input: QueueInput) -> Result<Value, SqsError> {
        require(grant, READ, queue.as_str())?;
        let known = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "MaximumMessageSize",
            "CreatedTimestamp",
            "QueueArn",
            "RedrivePolicy",
        ];
        let all = input.attribute_names.iter().any(|name| name == "All");
        if let Some(unknown) =
            input.attribute_names.iter().find(|name| *name != "All" && !known.contains(&name.as_str()))
        {
            return Err(SqsError::new(
                SqsErrorCode::InvalidAttributeName,
                format!("unknown or unsupported attribute {unknown}; supported: All, {}", known.join(", ")),
            ));
        }
        let record = self.queue_record(&queue).await?;
        let name = queue.clone();
        let stats = self.blocking(&queue, move |state| state.queue_stats(&name)).await?;
        let config = &record.config;
        let mut attributes = BTreeMap::new();
        let mut put = |name: &str, value: String| {
            if all || input.attribute_names.iter().any(|wanted| wanted == name) {
                attributes.insert(name.to_owned(), value);
            }
        };
        put("ApproximateNumberOfMessages", stats.visible.to_string());
        put("ApproximateNumberOfMessagesNotVisible", stats.in_flight.to_string());
        put("ApproximateNumberOfMessagesDelayed", stats.delayed.to_string());
        put("VisibilityTimeout", config.visibility_timeout.as_secs().to_string());
        put("MessageRetentionPeriod", config.retention.as_secs().to_string());
        put("DelaySeconds", config.delay.as_secs().to_string());
        put("MaximumMessageSize", config.max_message_size.0.to_string());
        put("CreatedTimestamp", (record.created_at.as_millis() / 1000).to_string());
        put("QueueArn", queue_arn(&queue));
        if let (Some(dead_letter), Some(max_receives)) = (&config.dead_letter, config.max_receives) {
            let policy = json!({ "deadLetterTargetArn": queue_arn(dead_letter), "maxReceiveCount": max_receives });
            put("RedrivePolicy", policy.to_string());
        }
        Ok(json!({ "Attributes": attributes }))
    }

    async fn send_message(&self, grant: &Principal, queue: Name, input: SendInput) -> Result<Value, SqsError> {
        require(grant, SEND, queue.as_str())?;
        let record = self.queue_record(&queue).await?;
        let message = outgoing(&input.message, &record.config, &queue)?;
        let answer = sent_answer(&message);
        let name = queue.clone();
        let ids = self.blocking(&queue, move |state| state.send_messages(&name, &[message])).await?;
        let mut answer = answer;
        answer["MessageId"] = json!(ids.first().map(u64::to_string).unwrap_or_default());
        Ok(answer)
    }

    async fn send_message_batch(&self, grant: &Principal, queue: Name, input: SendInput) -> Result<Value, SqsError> {
        require(grant, SEND, queue.as_str())?;
        let entries = input.entries.unwrap_or_default();
        let ids = batch_ids(entries.iter().map(|entry| entry.id.as_deref()))?;
        let record = self.queue_record(&queue).await?;
        let mut failed = Vec::new();
        let mut accepted = Vec::new();
        for (id, entry) in ids.into_iter().zip(&entries) {
            match outgoing(entry, &record.config, &queue) {
                Ok(message) => accepted.push((id, message)),
                Err(error) => failed.push(failure(&id, &error)),
            }
        }
        let messages: Vec<OutgoingMessage> = accepted.iter().map(|(_, message)| message.clone()).collect();
        let name = queue.clone();
        let message_ids = if messages.is_empty() {
            Vec::new()
        } else {
            self.blocking(&queue, move |state| state.send_messages(&name, &messages)).await?
        };
        let successful: Vec<Value> = accepted
            .iter()
            .zip(message_ids)
            .map(|((id, message), message_id)| {
                let mut answer = sent_answer(message);
                answer["Id"] = json!(id);
                answer["MessageId"] = json!(message_id.to_string());
                answer
            })
            .collect();
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn receive_message(&self, grant: &Principal, queue: Name, input: ReceiveInput) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let max_messages = input.max_number_of_messages.unwrap_or(1);
        if !(1..=10).contains(&max_messages) {
            return Err(invalid(format!("MaxNumberOfMessages of {max_messages} is outside 1–10")));
        }
        let visibility_timeout = seconds(input.visibility_timeout, "VisibilityTimeout", MAX_VISIBILITY_SECONDS)?;
        let wait = seconds(input.wait_time_seconds, "WaitTimeSeconds", MAX_WAIT_SECONDS)?.unwrap_or_default();
        self.queue_record(&queue).await?;
        let request = ReceiveRequest { max_messages: max_messages as usize, visibility_timeout };
        // Long polling: look again when the store says messages became
        // visible in the queue, or after a fallback interval (messages also
        // become visible by time, and a store may not tell), until a message
        // comes or the wait is over, holding no thread while asleep. The
        // watch is registered before the first look, so a send between a
        // look and the wait still wakes it (`Notify` keeps the permit).
        let deadline = tokio::time::Instant::now() + wait;
        let woken = Arc::new(tokio::sync::Notify::new());
        let watch = if wait.is_zero() {
            None
        } else {
            let (woken, watched) = (woken.clone(), queue.to_string());
            self.config
                .state
                .watch_messages(Arc::new(move |sent_to: &str| {
                    if sent_to == watched {
                        woken.notify_one();
                    }
                }))
                .map_err(|error| store_error(error, queue.as_str()))?
        };
        // A watch of this process only (the embedded store): another
        // process's sends (`mayfly send`) are still found by looking often.
        let every_process = watch.as_ref().is_some_and(mayfly_state::MessageWatch::hears_other_processes);
        let interval = if every_process { WATCHED_LONG_POLL_INTERVAL } else { LONG_POLL_INTERVAL };
        let received = loop {
            let name = queue.clone();
            let received = self.blocking(&queue, move |state| state.receive_messages(&name, request)).await?;
            let now = tokio::time::Instant::now();
            if !received.is_empty() || now >= deadline {
                break received;
            }
            let next_look = (now + interval).min(deadline);
            tokio::select! {
                () = tokio::time::sleep_until(next_look) => {}
                () = woken.notified() => {}
            }
        };
        drop(watch);
        let mut system_names = input.message_system_attribute_names.clone();
        system_names.extend(input.attribute_names.iter().cloned());
        let messages: Vec<Value> = received
            .iter()
            .map(|message| received_answer(message, &input.message_attribute_names, &system_names))
            .collect();
        Ok(json!({ "Messages": messages }))
    }

    async fn delete_message(&self, grant: &Principal, queue: Name, input: ReceiptInput) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let receipt = receipt_handle(&input.receipt.receipt_handle)?;
        self.queue_record(&queue).await?;
        let name = queue.clone();
        let outcomes = self.blocking(&queue, move |state| state.delete_messages(&name, &[receipt])).await?;
        match outcomes.first() {
            Some(DeleteOutcome::Deleted) => Ok(json!({})),
            _ => Err(store_error(StateError::LeaseLost { receipt }, queue.as_str())),
        }
    }

    async fn delete_message_batch(
        &self,
        grant: &Principal,
        queue: Name,
        input: ReceiptInput,
    ) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let entries = input.entries.unwrap_or_default();
        let ids = batch_ids(entries.iter().map(|entry| entry.id.as_deref()))?;
        self.queue_record(&queue).await?;
        let mut failed = Vec::new();
        let mut valid = Vec::new();
        for (id, entry) in ids.into_iter().zip(&entries) {
            match receipt_handle(&entry.receipt_handle) {
                Ok(receipt) => valid.push((id, receipt)),
                Err(error) => failed.push(failure(&id, &error)),
            }
        }
        let receipts: Vec<ReceiptHandle> = valid.iter().map(|(_, receipt)| *receipt).collect();
        let name = queue.clone();
        let outcomes = if receipts.is_empty() {
            Vec::new()
        } else {
            self.blocking(&queue, move |state| state.delete_messages(&name, &receipts)).await?
        };
        let mut successful = Vec::new();
        for ((id, receipt), outcome) in valid.iter().zip(outcomes) {
            match outcome {
                DeleteOutcome::Deleted => successful.push(json!({ "Id": id })),
                DeleteOutcome::LeaseLost => {
                    failed.push(failure(id, &store_error(StateError::LeaseLost { receipt: *receipt }, queue.as_str())))
                }
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    async fn change_message_visibility(
        &self,
        grant: &Principal,
        queue: Name,
        input: ReceiptInput,
    ) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let receipt = receipt_handle(&input.receipt.receipt_handle)?;
        let timeout = visibility(input.receipt.visibility_timeout)?;
        self.queue_record(&queue).await?;
        let name = queue.clone();
        self.blocking(&queue, move |state| state.change_visibility(&name, receipt, timeout))
            .await
            .map_err(not_in_flight)?;
        Ok(json!({}))
    }

    async fn change_message_visibility_batch(
        &self,
        grant: &Principal,
        queue: Name,
        input: ReceiptInput,
    ) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let entries = input.entries.unwrap_or_default();
        let ids = batch_ids(entries.iter().map(|entry| entry.id.as_deref()))?;
        self.queue_record(&queue).await?;
        let (mut successful, mut failed) = (Vec::new(), Vec::new());
        for (id, entry) in ids.into_iter().zip(&entries) {
            let checked = receipt_handle(&entry.receipt_handle)
                .and_then(|receipt| Ok((receipt, visibility(entry.visibility_timeout)?)));
            let (receipt, timeout) = match checked {
                Ok(checked) => checked,
                Err(error) => {
                    failed.push(failure(&id, &error));
                    continue;
                }
            };
            let name = queue.clone();
            match self.blocking(&queue, move |state| state.change_visibility(&name, receipt, timeout)).await {
                Ok(()) => successful.push(json!({ "Id": id })),
                Err(error) => failed.push(failure(&id, &not_in_flight(error))),
            }
        }
        Ok(json!({ "Successful": successful, "Failed": failed }))
    }

    /// Delete every message of the queue, in flight included. SQS allows one
    /// purge per queue per 60 s and answers `PurgeQueueInProgress` within
    /// them; Mayfly purges at once every time (one commit, nothing to wait
    /// for), so it never answers that.
    async fn purge_queue(&self, grant: &Principal, queue: Name, _input: QueueInput) -> Result<Value, SqsError> {
        require(grant, CONSUME, queue.as_str())?;
        let name = queue.clone();
        let purged = self.blocking(&queue, move |state| state.purge_queue(&name)).await?;
        tracing::info!(queue = %queue, purged, "purged queue through the SQS endpoint");
        Ok(json!({}))
    }
}

fn queue_arn(queue: &Name) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue}")
}

fn visibility(value: Option<u64>) -> Result<Duration, SqsError> {
    seconds(value, "VisibilityTimeout", MAX_VISIBILITY_SECONDS)?.ok_or_else(|| {
        SqsError::new(SqsErrorCode::MissingParameter, "the request must contain the parameter VisibilityTimeout")
    })
}

/// A lapsed lease, for ChangeMessageVisibility, is SQS's MessageNotInflight.
fn not_in_flight(error: SqsError) -> SqsError {
    match error.code {
        SqsErrorCode::ReceiptHandleIsInvalid => SqsError::new(SqsErrorCode::MessageNotInflight, error.message),
        _ => error,
    }
}

fn receipt_handle(value: &Option<String>) -> Result<ReceiptHandle, SqsError> {
    let value = required(value, "ReceiptHandle")?;
    value
        .parse::<ReceiptHandle>()
        .map_err(|error| SqsError::new(SqsErrorCode::ReceiptHandleIsInvalid, error.to_string()))
}

/// The ids of a batch's entries, once the batch is well formed.
fn batch_ids<'a>(ids: impl ExactSizeIterator<Item = Option<&'a str>>) -> Result<Vec<String>, SqsError> {
    if ids.len() == 0 {
        return Err(SqsError::new(SqsErrorCode::EmptyBatchRequest, "the batch request contains no entries"));
    }
    if ids.len() > MAX_BATCH_ENTRIES {
        return Err(SqsError::new(
            SqsErrorCode::TooManyEntriesInBatchRequest,
            format!("the batch holds {} entries; the limit is {MAX_BATCH_ENTRIES}", ids.len()),
        ));
    }
    let mut seen = HashSet::new();
    let mut checked = Vec::new();
    for id in ids {
        let id = id.ok_or_else(|| SqsError::new(SqsErrorCode::MissingParameter, "every batch entry needs an Id"))?;
        if !seen.insert(id) {
            return Err(SqsError::new(
                SqsErrorCode::BatchEntryIdsNotDistinct,
                format!("two batch entries have Id `{id}`"),
            ));
        }
        checked.push(id.to_owned());
    }
    Ok(checked)
}

fn failure(id: &str, error: &SqsError) -> Value {
    json!({ "Id": id, "SenderFault": error.code.is_sender_fault(), "Code": error.code.name(), "Message": error.message })
}

/// A message to send from an SQS entry, refused whole if any part is invalid.
fn outgoing(entry: &SendEntry, config: &QueueConfig, queue: &Name) -> Result<OutgoingMessage, SqsError> {
    let body = required(&entry.message_body, "MessageBody")?;
    if body.is_empty() {
        return Err(SqsError::new(
            SqsErrorCode::MissingParameter,
            "the request must contain the parameter MessageBody",
        ));
    }
    let delay = seconds(entry.delay_seconds, "DelaySeconds", MAX_DELAY_SECONDS)?;
    let mut attributes = Vec::new();
    for (name, value) in &entry.message_system_attributes {
        match (name.as_str(), value.data_type.as_deref(), &value.string_value) {
            (TRACE_HEADER_ATTRIBUTE, Some("String"), Some(header)) => {
                attributes.push((TRACE_HEADER_ATTRIBUTE.to_owned(), header.clone()))
            }
            (TRACE_HEADER_ATTRIBUTE, data_type, _) => {
                return Err(invalid(format!(
                    "message system attribute `{TRACE_HEADER_ATTRIBUTE}` has DataType {}; it takes a String with a StringValue",
                    data_type.unwrap_or("(none)")
                )));
            }
            (other, _, _) => {
                return Err(invalid(format!(
                    "message system attribute `{other}` is not supported; the only one is `{TRACE_HEADER_ATTRIBUTE}`"
                )));
            }
        }
    }
    for (name, value) in &entry.message_attributes {
        if name == TRACE_HEADER_ATTRIBUTE {
            return Err(invalid(format!(
                "message attribute `{name}` is reserved for the trace header; send it as a message system attribute"
            )));
        }
        match (value.data_type.as_deref(), &value.string_value) {
            (Some("String"), Some(text)) => attributes.push((name.clone(), text.clone())),
            (data_type, _) => {
                return Err(invalid(format!(
                    "message attribute `{name}` has DataType {}; Mayfly's queues hold String attributes with a StringValue",
                    data_type.unwrap_or("(none)")
                )));
            }
        }
    }
    let message = OutgoingMessage { body: body.as_bytes().to_vec(), attributes, delay };
    check_message_size(config, queue, message.size()).map_err(|rule| invalid(rule.to_string()))?;
    Ok(message)
}

fn sent_answer(message: &OutgoingMessage) -> Value {
    let mut answer = json!({ "MD5OfMessageBody": md5_hex(&message.body) });
    let attributes = user_attributes(&message.attributes);
    if !attributes.is_empty() {
        answer["MD5OfMessageAttributes"] = json!(md5_of_attributes(&attributes));
    }
    answer
}

/// Whether a requested attribute-name list asks for `name` (`All`, `.*`, or
/// a `prefix.*`).
fn wants(requested: &[String], name: &str) -> bool {
    requested.iter().any(|wanted| {
        wanted == "All"
            || wanted == ".*"
            || wanted == name
            || wanted.strip_suffix(".*").is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
    })
}

fn received_answer(message: &ReceivedMessage, attribute_names: &[String], system_names: &[String]) -> Value {
    let body = String::from_utf8_lossy(&message.body).into_owned();
    let mut answer = json!({
        "MessageId": message.message_id.to_string(),
        "ReceiptHandle": message.receipt.to_string(),
        "MD5OfBody": md5_hex(body.as_bytes()),
        "Body": body,
    });
    let mut system = BTreeMap::new();
    if wants(system_names, "ApproximateReceiveCount") {
        system.insert("ApproximateReceiveCount", message.receive_count.to_string());
    }
    if wants(system_names, "SentTimestamp") {
        system.insert("SentTimestamp", message.sent_at.as_millis().to_string());
    }
    if wants(system_names, TRACE_HEADER_ATTRIBUTE)
        && let Some((_, header)) = message.attributes.iter().find(|(name, _)| name == TRACE_HEADER_ATTRIBUTE)
    {
        system.insert(TRACE_HEADER_ATTRIBUTE, header.clone());
    }
    if !system.is_empty() {
        answer["Attributes"] = json!(system);
    }
    let attributes: Vec<(String, String)> =
        user_attributes(&message.attributes).into_iter().filter(|(name, _)| wants(attribute_names, name)).collect();
    if !attributes.is_empty() {
        answer["MD5OfMessageAttributes"] = json!(md5_of_attributes(&attributes));
        let values: BTreeMap<&str, Value> = attributes
            .iter()
            .map(|(name, value)| (name.as_str(), json!({ "DataType": "String", "StringValue": value })))
            .collect();
        answer["MessageAttributes"] = json!(values);
    }
    answer
}

/// The transport byte of String (and Number) attributes; Binary's is 2.
const STRING_TRANSPORT: u8 = 1;

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// SQS's digest of message attributes: for each attribute in name order, the
/// name, the data type and the value, each as a 4-byte big-endian length and
/// its bytes, with a transport byte before the value.
pub fn md5_of_attributes(attributes: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = attributes.iter().collect();
    sorted.sort();
    let mut digest = Md5::new();
    let field = |digest: &mut Md5, bytes: &[u8]| {
        digest.update((bytes.len() as u32).to_be_bytes());
        digest.update(bytes);
    };
    for (name, value) in sorted {
        field(&mut digest, name.as_bytes());
        field(&mut digest, b"String");
        digest.update([STRING_TRANSPORT]);
        field(&mut digest, value.as_bytes());
    }
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::ManualClock;

    /// A store with one token holding AWS credentials, and a clock.
    fn store_with_token(
        expires_at: Option<mayfly_core::Timestamp>,
    ) -> (tempfile::TempDir, Arc<dyn StateStore>, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::starting_at(mayfly_core::Timestamp::from_millis(1_780_000_000_000)));
        let state: Arc<dyn StateStore> =
            Arc::new(mayfly_state_sqlite::SqliteStore::open(&dir.path().join("state.db"), clock.clone()).unwrap());
        state
            .create_api_token(mayfly_state::NewApiToken {
                id: TOKEN_ID.to_owned(),
                name: "consumer".to_owned(),
                secret_sha256: "0".repeat(64),
                scopes: vec!["messages:write".to_owned()],
                jobs: Vec::new(),
                buckets: Vec::new(),
                expires_at,
                aws_secret: Some(SECRET.to_owned()),
            })
            .unwrap();
        (dir, state, clock)
    }

    const TOKEN_ID: &str = "00ff12ab34cd56ef";
    const SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A SendMessage request as an SDK signs it, with aws-sigv4's signer.
    fn signed_request(at: mayfly_core::Timestamp, service: &str, secret: &str, body: &[u8]) -> Parts {
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "localhost:8444")
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "AmazonSQS.SendMessage")
            .body(())
            .unwrap();
        let identity =
            aws_credential_types::Credentials::new(crate::access_key_id(TOKEN_ID), secret, None, None, "test").into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(service)
            .time(SystemTime::UNIX_EPOCH + Duration::from_millis(at.as_millis() as u64))
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers: Vec<(&str, &str)> =
            request.headers().iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            "https://localhost:8444/",
            headers.into_iter(),
            aws_sigv4::http_request::SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut request);
        request.into_parts().0
    }

    async fn check(
        state: &Arc<dyn StateStore>,
        clock: &Arc<ManualClock>,
        request: &Parts,
        body: &[u8],
    ) -> Result<String, SqsErrorCode> {
        verify_signature(state.clone(), clock.clone(), request, body).await.map_err(|error| error.code)
    }

    #[tokio::test]
    async fn a_signature_is_accepted_only_for_its_body_its_service_its_secret_and_its_time() {
        let (_dir, state, clock) = store_with_token(None);
        let body = br#"{"QueueUrl":"work","MessageBody":"hello"}"#;
        let now = clock.now();
        let signed = signed_request(now, "sqs", SECRET, body);
        assert_eq!(check(&state, &clock, &signed, body).await, Ok(crate::access_key_id(TOKEN_ID)));
        let forged = br#"{"QueueUrl":"work","MessageBody":"forged"}"#;
        assert_eq!(check(&state, &clock, &signed, forged).await, Err(SqsErrorCode::SignatureDoesNotMatch));
        let for_s3 = signed_request(now, "s3", SECRET, body);
        assert_eq!(check(&state, &clock, &for_s3, body).await, Err(SqsErrorCode::SignatureDoesNotMatch));
        let wrong_secret = signed_request(now, "sqs", &"0".repeat(40), body);
        assert_eq!(check(&state, &clock, &wrong_secret, body).await, Err(SqsErrorCode::SignatureDoesNotMatch));
        let mut unsigned_target = signed.clone();
        unsigned_target.headers.insert("x-amz-target", HeaderValue::from_static("AmazonSQS.PurgeQueue"));
        assert_eq!(check(&state, &clock, &unsigned_target, body).await, Err(SqsErrorCode::SignatureDoesNotMatch));
        let mut no_signature = signed.clone();
        no_signature.headers.remove(header::AUTHORIZATION);
        assert_eq!(check(&state, &clock, &no_signature, body).await, Err(SqsErrorCode::AccessDenied));

        clock.advance(Duration::from_secs(16 * 60));
        assert_eq!(check(&state, &clock, &signed, body).await, Err(SqsErrorCode::RequestExpired));
    }

    #[tokio::test]
    async fn keys_of_expired_or_revoked_tokens_are_refused() {
        let (_dir, state, clock) = store_with_token(Some(mayfly_core::Timestamp::from_millis(1_780_000_060_000)));
        let body = b"{}";
        assert!(check(&state, &clock, &signed_request(clock.now(), "sqs", SECRET, body), body).await.is_ok());
        clock.advance(Duration::from_secs(61));
        let late = signed_request(clock.now(), "sqs", SECRET, body);
        assert_eq!(check(&state, &clock, &late, body).await, Err(SqsErrorCode::ExpiredToken));

        let (_dir, state, clock) = store_with_token(None);
        state.revoke_api_token(TOKEN_ID).unwrap();
        let request = signed_request(clock.now(), "sqs", SECRET, body);
        assert_eq!(check(&state, &clock, &request, body).await, Err(SqsErrorCode::InvalidClientTokenId));
    }

    #[test]
    fn attribute_digests_match_what_sdks_compute() {
        // Computed by botocore's `_add_md5_of_message_attributes` algorithm
        // for {"colour": String "blue"}.
        let mut digest = Md5::new();
        digest.update(6u32.to_be_bytes());
        digest.update(b"colour");
        digest.update(6u32.to_be_bytes());
        digest.update(b"String");
        digest.update([1u8]);
        digest.update(4u32.to_be_bytes());
        digest.update(b"blue");
        assert_eq!(md5_of_attributes(&[("colour".to_owned(), "blue".to_owned())]), hex::encode(digest.finalize()));
    }

    #[test]
    fn the_trace_header_is_a_system_attribute_never_a_message_attribute() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let string =
            |value: &str| MessageAttributeValue { data_type: Some("String".into()), string_value: Some(value.into()) };
        let entry = SendEntry {
            message_body: Some("chart".into()),
            message_attributes: BTreeMap::from([("colour".to_owned(), string("blue"))]),
            message_system_attributes: BTreeMap::from([(TRACE_HEADER_ATTRIBUTE.to_owned(), string(header))]),
            ..SendEntry::default()
        };
        let queue: Name = "backlog".parse().unwrap();
        let message = outgoing(&entry, &QueueConfig::default(), &queue).unwrap();
        assert!(message.attributes.contains(&(TRACE_HEADER_ATTRIBUTE.to_owned(), header.to_owned())));
        let user_only = [("colour".to_owned(), "blue".to_owned())];
        assert_eq!(sent_answer(&message)["MD5OfMessageAttributes"], md5_of_attributes(&user_only));

        let received = ReceivedMessage {
            message_id: 7,
            receipt: ReceiptHandle { message_id: 7, receive_count: 1 },
            body: b"chart".to_vec(),
            attributes: message.attributes.clone(),
            sent_at: mayfly_core::Timestamp::from_millis(0),
            receive_count: 1,
            lease_until: mayfly_core::Timestamp::from_millis(30_000),
        };
        let all = ["All".to_owned()];
        let asked = received_answer(&received, &all, &[TRACE_HEADER_ATTRIBUTE.to_owned()]);
        assert_eq!(asked["Attributes"][TRACE_HEADER_ATTRIBUTE], header);
        assert_eq!(asked["MessageAttributes"], json!({"colour": {"DataType": "String", "StringValue": "blue"}}));
        let not_asked = received_answer(&received, &all, &[]);
        assert_eq!(not_asked.get("Attributes"), None);

        let reserved = SendEntry {
            message_attributes: BTreeMap::from([(TRACE_HEADER_ATTRIBUTE.to_owned(), string(header))]),
            ..entry
        };
        let refused = outgoing(&reserved, &QueueConfig::default(), &queue).unwrap_err();
        assert!(refused.message.contains("reserved for the trace header"), "{}", refused.message);
    }

    #[test]
    fn queue_urls_name_their_queue_by_the_last_segment() {
        let url = Some("https://localhost:8444/000000000000/work".to_owned());
        assert_eq!(queue_of_url(&url).unwrap().as_str(), "work");
        assert_eq!(queue_of_url(&Some("work".to_owned())).unwrap().as_str(), "work");
        assert_eq!(queue_of_url(&None).unwrap_err().code, SqsErrorCode::MissingParameter);
    }

    #[test]
    fn batches_must_be_non_empty_small_and_distinct() {
        let code = |ids: Vec<Option<&str>>| batch_ids(ids.into_iter()).map_err(|error| error.code);
        assert_eq!(code(vec![]), Err(SqsErrorCode::EmptyBatchRequest));
        assert_eq!(code(vec![Some("a"); 11]), Err(SqsErrorCode::TooManyEntriesInBatchRequest));
        assert_eq!(code(vec![Some("a"), Some("a")]), Err(SqsErrorCode::BatchEntryIdsNotDistinct));
        assert_eq!(code(vec![Some("a"), None]), Err(SqsErrorCode::MissingParameter));
        assert_eq!(code(vec![Some("a"), Some("b")]), Ok(vec!["a".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn authorization_headers_parse_into_their_scope() {
        let header = "AWS4-HMAC-SHA256 Credential=MF00/20260101/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abcd";
        let parsed = parse_authorization(header).unwrap();
        assert_eq!(
            (parsed.access_key, parsed.scope_date, parsed.region, parsed.service, parsed.signature),
            ("MF00", "20260101", "us-east-1", "sqs", "abcd")
        );
        assert_eq!(parsed.signed_headers, vec!["content-type", "host", "x-amz-date"]);
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=MF00/20260101/us-east-1/sqs, Signature=ab").is_none());
    }
}
