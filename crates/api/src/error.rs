//! Errors as the API answers them: a status and a JSON body
//! `{"error": "<what happened and what to do>", "status": <code>}`, mapped
//! from the state store's, the buckets' and the control plane's errors.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mayfly_buckets::BucketError;
use mayfly_state::StateError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, where, and what to do about it.
    pub error: String,
    /// The HTTP status, repeated for clients that only see the body.
    pub status: u16,
}

/// An error answered to a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

/// The message of an error response, for its access record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorOutcome(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.message, "API request failed");
        }
        let outcome = ErrorOutcome(self.message.clone());
        let body = ErrorBody { error: self.message, status: self.status.as_u16() };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(outcome);
        response
    }
}

impl From<StateError> for ApiError {
    fn from(error: StateError) -> ApiError {
        let message = error.to_string();
        match error {
            StateError::NotFound { .. } => ApiError::not_found(message),
            StateError::AlreadyExists { .. }
            | StateError::Conflict(_)
            | StateError::LeaseLost { .. }
            | StateError::Fenced { .. } => ApiError::conflict(message),
            StateError::Rule(mayfly_core::queue::QueueRuleError::MessageTooLarge { .. }) => {
                ApiError::too_large(message)
            }
            StateError::Rule(_) => ApiError::bad_request(message),
            StateError::DiskFull
            | StateError::SchemaTooNew { .. }
            | StateError::Backend(_)
            | StateError::Damaged { .. }
            | StateError::KeyringLacksKeys { .. } => ApiError::internal(message),
        }
    }
}

impl From<BucketError> for ApiError {
    fn from(error: BucketError) -> ApiError {
        let message = error.to_string();
        match error {
            BucketError::NoSuchBucket { .. } | BucketError::NoSuchKey { .. } => ApiError::not_found(message),
            BucketError::InvalidKey { .. } | BucketError::CopyOntoItself { .. } | BucketError::ReadBody { .. } => {
                ApiError::bad_request(message)
            }
            BucketError::KeyConflict { .. }
            | BucketError::AlreadyExists { .. }
            | BucketError::BucketNotEmpty { .. } => ApiError::conflict(message),
            BucketError::State(state) => ApiError::from(state),
            _ => ApiError::internal(message),
        }
    }
}

impl From<mayfly_control::jobs::JobError> for ApiError {
    fn from(error: mayfly_control::jobs::JobError) -> ApiError {
        use mayfly_control::jobs::JobError;
        match error {
            JobError::UnknownJob { .. } => ApiError::not_found(error.to_string()),
            JobError::State(state) => ApiError::from(state),
            other => ApiError::internal(other.to_string()),
        }
    }
}
