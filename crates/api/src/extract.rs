//! Axum's extractors with the API's JSON errors: a malformed path, query or
//! body is a 400 naming what was wrong (a body over the limit a 413), never
//! axum's plain-text rejection. Queries and JSON bodies are taken raw and
//! parsed by the handler AFTER it checked the token, so a caller without a
//! valid token always gets its 401/403, whatever it sent.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::error::ApiError;

/// Path parameters, percent-decoded.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection: PathRejection| ApiError::bad_request(format!("bad path: {}", rejection.body_text())))
    }
}

/// The query string, parsed on demand.
pub struct LazyQuery(pub axum::http::Uri);

impl<S: Send + Sync> FromRequestParts<S> for LazyQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(LazyQuery(parts.uri.clone()))
    }
}

impl LazyQuery {
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&self.0).map(|axum::extract::Query(value)| value).map_err(
            |rejection: QueryRejection| ApiError::bad_request(format!("bad query string: {}", rejection.body_text())),
        )
    }
}

/// A JSON body, left unread until the handler asks for it: it is read whole
/// (up to the server's limit) and parsed only after the token check, so a
/// caller without a valid token gets its 401/403 even for an oversized body,
/// and the access log names the token of a caller whose body was too large.
pub struct JsonBody {
    body: axum::body::Body,
    limit: usize,
}

impl FromRequest<ApiState> for JsonBody {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        Ok(JsonBody { body: request.into_body(), limit: state.config().limits.max_json_body })
    }
}

impl JsonBody {
    /// Read and parse the body: 413 over the limit, 400 for bad JSON.
    pub async fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        let limit = self.limit;
        let bytes = axum::body::to_bytes(self.body, limit).await.map_err(|_| {
            ApiError::too_large(format!("the body is larger than the {limit} bytes a JSON body may be"))
        })?;
        serde_json::from_slice(&bytes).map_err(|error| ApiError::bad_request(format!("bad JSON body: {error}")))
    }
}
