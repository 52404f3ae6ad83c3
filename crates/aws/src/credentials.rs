//! AWS credentials bound to Mayfly tokens.
//!
//! `mayfly tokens create --aws` issues an ordinary token (scopes, bucket
//! limits, expiry, revocation all as for the HTTPS API) and, beside it, an
//! AWS key pair: the access key id names the token (`MF` and its id in
//! capitals, so the access log and `tokens revoke` name the same thing), and
//! the secret access key is 40 random hex digits. SigV4 needs the secret on
//! the server to check a signature, so the state store keeps it sealed like
//! customer data (never in plaintext, rewrapped with the keyring), unlike the
//! bearer secret, of which it keeps only a hash.

use mayfly_api::Grant;
use mayfly_core::Clock;

use crate::sessions::{Principal, SessionKeys, SessionRefusal, is_session_key, session_token};
use mayfly_state::{StateError, StateStore};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use std::sync::Arc;

/// Access key ids start with this; the token id follows in capitals.
pub const ACCESS_KEY_PREFIX: &str = "MF";
const SECRET_BYTES: usize = 20;

/// The access key id of the token `token_id`.
pub fn access_key_id(token_id: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{}", token_id.to_ascii_uppercase())
}

/// The token id an access key id names, if it has the shape of one.
pub fn token_id(access_key_id: &str) -> Option<String> {
    let id = access_key_id.strip_prefix(ACCESS_KEY_PREFIX)?;
    (id.len() == 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// A new secret access key: 40 hex digits from 160 random bits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Finds the secret of an access key in the state store, refusing keys whose
/// token was revoked or has expired, or that hold no AWS secret.
pub struct TokenAuth {
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
}

impl TokenAuth {
    pub fn new(state: Arc<dyn StateStore>, clock: Arc<dyn Clock>) -> TokenAuth {
        TokenAuth { state, clock }
    }
}

/// The grant of a token that `TokenAuth` accepted, for the operations to check.
pub fn grant_of(state: &dyn StateStore, access_key_id: &str) -> S3Result<Grant> {
    let id = token_id(access_key_id).ok_or_else(|| s3_error!(InvalidAccessKeyId))?;
    let record = state.api_token(&id).map_err(store_error)?;
    Grant::parse(&record.scopes, record.jobs, record.buckets)
        .map_err(|error| s3_error!(InternalError, "token `{id}` holds a grant that no longer parses: {error}"))
}

fn store_error(error: StateError) -> s3s::S3Error {
    match error {
        StateError::NotFound { .. } => s3_error!(InvalidAccessKeyId, "the access key is not valid"),
        other => s3_error!(InternalError, "the access key cannot be checked: {other}"),
    }
}

#[async_trait::async_trait]
impl S3Auth for TokenAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if is_session_key(access_key) {
            // A function's key: its secret is derived, its token checked by `SignedOnly`.
            let keys = SessionKeys::of_store(self.state.as_ref())
                .map_err(|error| s3_error!(InvalidAccessKeyId, "function credentials cannot be checked: {error}"))?;
            return Ok(SecretKey::from(keys.secret_for(access_key)));
        }
        let Some(id) = token_id(access_key) else {
            return Err(s3_error!(InvalidAccessKeyId, "access keys look like `MF` and 16 hex digits"));
        };
        let state = self.state.clone();
        let lookup = id.clone();
        let (record, secret) = tokio::task::spawn_blocking(move || {
            let record = state.api_token(&lookup)?;
            let secret = state.api_token_aws_secret(&lookup)?;
            Ok::<_, StateError>((record, secret))
        })
        .await
        .map_err(|error| s3_error!(InternalError, "the access key check failed: {error}"))?
        .map_err(store_error)?;
        if record.revoked_at.is_some() {
            return Err(s3_error!(InvalidAccessKeyId, "the access key was revoked"));
        }
        if record.expires_at.is_some_and(|expires| expires <= self.clock.now()) {
            return Err(s3_error!(ExpiredToken, "the access key has expired"));
        }
        match secret {
            Some(secret) => Ok(SecretKey::from(secret)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "token `{id}` has no AWS credentials; create one with `mayfly tokens create --aws`"
            )),
        }
    }
}

/// Checks a function's session token against the access key that signed
/// the request (see [`crate::sessions`]), as of `now`.
pub fn function_principal(
    state: &dyn StateStore,
    access_key: &str,
    token: Option<&str>,
    now: mayfly_core::Timestamp,
) -> S3Result<Principal> {
    let keys = SessionKeys::of_store(state)
        .map_err(|error| s3_error!(InvalidAccessKeyId, "function credentials cannot be checked: {error}"))?;
    keys.verify(access_key, token, now).map(Principal::Function).map_err(|refusal| match refusal {
        SessionRefusal::Expired { .. } => s3_error!(ExpiredToken, "{refusal}"),
        SessionRefusal::MissingToken(_) => s3_error!(AccessDenied, "{refusal}"),
        SessionRefusal::InvalidToken | SessionRefusal::WrongKey(_) => s3_error!(InvalidToken, "{refusal}"),
    })
}

/// Every request must be signed, and a function's key must come with its
/// valid session token (its checked [`Principal`] is left in the request's
/// extensions); what a signer may do is each operation's check (see
/// [`crate::s3`]), because only it knows every bucket involved (a copy
/// names its source in a header).
pub struct SignedOnly {
    pub state: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl S3Access for SignedOnly {
    async fn check(&self, context: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = context.credentials() else {
            return Err(s3_error!(AccessDenied, "this endpoint needs signed requests (AWS Signature Version 4)"));
        };
        if is_session_key(&credentials.access_key) {
            let token = session_token(context.headers(), context.uri());
            let principal =
                function_principal(self.state.as_ref(), &credentials.access_key, token.as_deref(), self.clock.now())?;
            context.extensions_mut().insert(principal);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_key_names_its_token_and_nothing_else_parses() {
        let key = access_key_id("00ff12ab34cd56ef");
        assert_eq!(key, "MF00FF12AB34CD56EF");
        assert_eq!(token_id(&key).as_deref(), Some("00ff12ab34cd56ef"));
        for bad in ["AKIA00FF12AB34CD56EF", "MF00FF", "MF00FF12AB34CD56EG", "mf00ff12ab34cd56ef", ""] {
            assert_eq!(token_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_are_forty_hex_digits_and_differ() {
        let (first, second) = (new_secret(), new_secret());
        assert_eq!(first.len(), 40);
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
