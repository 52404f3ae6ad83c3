//! Checking a request's bearer token against the state store, and what each
//! request notes for its access record (who, what, why refused).

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use mayfly_state::StateError;

use crate::access::{self, Grant, Refusal, Resource, Scope};
use crate::error::ApiError;

/// Who a valid token belongs to, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The token's name, as `mayfly tokens create --name` gave it.
    pub name: String,
    pub grant: Grant,
}

impl Principal {
    pub fn permits(&self, scope: Scope, resource: Resource<'_>) -> Result<(), AuthError> {
        self.grant
            .permits(scope, resource)
            .map_err(|refusal| AuthError::Forbidden { token_id: self.token_id.clone(), refusal })
    }
}

/// Why a token was not accepted. Everything but `Forbidden` and `Store` is a 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this endpoint needs a token: send `Authorization: Bearer <token>` (create one with `mayfly tokens create`)"
    )]
    MissingToken,
    #[error("the bearer token is malformed; tokens look like `mf_<16 hex digits>_<64 hex digits>`")]
    MalformedToken,
    #[error("the bearer token is not valid")]
    UnknownToken,
    #[error("the bearer token is not valid")]
    WrongSecret { token_id: String },
    #[error("the bearer token was revoked")]
    Revoked { token_id: String },
    #[error("the bearer token has expired")]
    Expired { token_id: String },
    #[error("forbidden: {refusal}")]
    Forbidden { token_id: String, refusal: Refusal },
    #[error("the token cannot be checked: {0}")]
    Store(#[from] StateError),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The token the refusal is about, when the store knows it.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            AuthError::WrongSecret { token_id }
            | AuthError::Revoked { token_id }
            | AuthError::Expired { token_id }
            | AuthError::Forbidden { token_id, .. } => Some(token_id),
            _ => None,
        }
    }

    /// What the access log says about it: more precise than what the client is told.
    pub fn outcome(&self) -> String {
        match self {
            AuthError::MissingToken => "refused: no token".into(),
            AuthError::MalformedToken => "refused: malformed token".into(),
            AuthError::UnknownToken => "refused: unknown token".into(),
            AuthError::WrongSecret { .. } => "refused: wrong secret".into(),
            AuthError::Revoked { .. } => "refused: revoked token".into(),
            AuthError::Expired { .. } => "refused: expired token".into(),
            AuthError::Forbidden { refusal, .. } => format!("refused: {refusal}"),
            AuthError::Store(error) => format!("failed: {error}"),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> ApiError {
        ApiError::new(error.status(), error.to_string())
    }
}

/// Check a presented token (the part after `Bearer `) against the store:
/// known id, matching secret (constant time), not revoked, not expired.
pub(crate) fn check_token(
    store: &dyn mayfly_state::StateStore,
    now: mayfly_core::Timestamp,
    token: Option<&str>,
) -> Result<Principal, AuthError> {
    let token = token.ok_or(AuthError::MissingToken)?;
    let presented = access::parse_token(token).ok_or(AuthError::MalformedToken)?;
    let record = match store.api_token(presented.id) {
        Ok(record) => record,
        Err(StateError::NotFound { .. }) => return Err(AuthError::UnknownToken),
        Err(error) => return Err(AuthError::Store(error)),
    };
    if !access::secret_matches(presented.secret, &record.secret_sha256) {
        return Err(AuthError::WrongSecret { token_id: record.id });
    }
    if record.revoked_at.is_some() {
        return Err(AuthError::Revoked { token_id: record.id });
    }
    if record.expires_at.is_some_and(|expires_at| now >= expires_at) {
        return Err(AuthError::Expired { token_id: record.id });
    }
    let grant = Grant::parse(&record.scopes, record.jobs, record.buckets).map_err(|error| {
        AuthError::Store(StateError::Backend(format!(
            "token `{}` holds a grant that no longer parses: {error}",
            record.id
        )))
    })?;
    Ok(Principal { token_id: record.id, name: record.name, grant })
}

/// What a request's handler notes for its access record; the access-log
/// middleware puts one in every request and reads it after the response.
#[derive(Debug, Clone, Default)]
pub struct AccessNote(Arc<Mutex<NoteFields>>);

#[derive(Debug, Clone, Default)]
pub(crate) struct NoteFields {
    pub token_id: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<String>,
}

impl AccessNote {
    fn update(&self, change: impl FnOnce(&mut NoteFields)) {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn fields(&self) -> NoteFields {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set_resource(&self, resource: impl Into<String>) {
        let resource = resource.into();
        self.update(|fields| fields.resource = Some(resource));
    }

    pub(crate) fn set_token(&self, token_id: Option<&str>) {
        self.update(|fields| fields.token_id = token_id.map(str::to_owned));
    }

    pub(crate) fn set_outcome(&self, outcome: String) {
        self.update(|fields| fields.outcome = Some(outcome));
    }
}

/// The caller of a request: the bearer token it presented and its access note.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Option<String>,
    pub note: AccessNote,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(access::bearer_token)
            .map(str::to_owned);
        let note = parts.extensions.get::<AccessNote>().cloned().unwrap_or_default();
        Ok(Caller { token, note })
    }
}
