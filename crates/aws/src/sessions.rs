//! Short-lived credentials for function invocations, like the credentials
//! of a Lambda execution role: an access key id, a secret access key and a
//! session token, valid for exactly the function's `permissions` until the
//! invocation's deadline.
//!
//! They are stateless, as STS's are: issuing one writes nothing. The session
//! token is a document {access key id, function, deployment, permissions,
//! expiry} with an HMAC-SHA256 tag; the secret is HMAC-SHA256 of the access
//! key id. Both are keyed by the store's `aws-sessions` key
//! ([`StateStore::derived_key`]), which every host opening the store with its
//! keyring derives alike, so any of them can check any credentials, and a
//! credential outlives nothing: a forged or altered token fails its tag, a
//! token presented with another access key fails the binding, and an
//! expired one is refused with `ExpiredToken`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mayfly_api::{Resource, Scope};
use mayfly_core::{Access, Name, Permission, Timestamp};
use mayfly_state::{StateError, StateStore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Access key ids of function credentials start with this (token keys with
/// `MF` and a hex digit, so the two never collide).
pub const SESSION_KEY_PREFIX: &str = "MFS";
/// What the key is derived for in the state store.
const KEY_PURPOSE: &str = "aws-sessions";
/// The token's version prefix.
const TOKEN_PREFIX: &str = "mfs1.";
const SECRET_HEX_DIGITS: usize = 40;

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The access key id the token goes with.
    #[serde(rename = "k")]
    pub access_key_id: String,
    #[serde(rename = "f")]
    pub function: Name,
    /// The deployment version the invocation ran under, if any.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<u64>,
    #[serde(rename = "p")]
    pub permissions: Vec<Permission>,
    /// Unix milliseconds after which the credentials are refused.
    #[serde(rename = "e")]
    pub expires_at_millis: i64,
}

/// Credentials as a function receives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expires_at: Timestamp,
}

/// Why presented session credentials are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefusal {
    #[error("access key `{0}` is a function's, and its request carries no session token (x-amz-security-token)")]
    MissingToken(String),
    #[error("the session token is not one Mayfly issued, or it was altered")]
    InvalidToken,
    #[error("the session token was issued for another access key than `{0}`")]
    WrongKey(String),
    #[error("the credentials of function `{function}` expired at {expired_at}")]
    Expired { function: Name, expired_at: String },
}

/// Issues and checks function credentials with the store's session key.
#[derive(Clone)]
pub struct SessionKeys {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// Whether an access key id is a function's.
pub fn is_session_key(access_key_id: &str) -> bool {
    access_key_id.strip_prefix(SESSION_KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 16 && rest.bytes().all(|byte| byte.is_ascii_digit() || byte.is_ascii_uppercase())
    })
}

impl SessionKeys {
    /// The keys of the store `state` (refused for a store that seals nothing).
    pub fn of_store(state: &dyn StateStore) -> Result<SessionKeys, StateError> {
        Ok(SessionKeys::from_key(&state.derived_key(KEY_PURPOSE)?))
    }

    pub fn from_key(key: &[u8; 32]) -> SessionKeys {
        SessionKeys { key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key) }
    }

    fn tag(&self, label: &[u8], message: &[u8]) -> ring::hmac::Tag {
        let mut input = Vec::with_capacity(label.len() + 1 + message.len());
        input.extend_from_slice(label);
        input.push(0);
        input.extend_from_slice(message);
        ring::hmac::sign(&self.key, &input)
    }

    /// The secret access key of `access_key_id`.
    pub fn secret_for(&self, access_key_id: &str) -> String {
        let mut secret = hex::encode(self.tag(b"secret", access_key_id.as_bytes()).as_ref());
        secret.truncate(SECRET_HEX_DIGITS);
        secret
    }

    /// New credentials for `function`'s `permissions`, valid until `expires_at`.
    pub fn issue(
        &self,
        function: &Name,
        deployment: Option<u64>,
        permissions: &[Permission],
        expires_at: Timestamp,
    ) -> SessionCredentials {
        let mut id = [0u8; 8];
        rand::fill(&mut id);
        let access_key_id = format!("{SESSION_KEY_PREFIX}{}", hex::encode_upper(id));
        let claims = SessionClaims {
            access_key_id: access_key_id.clone(),
            function: function.clone(),
            deployment,
            permissions: permissions.to_vec(),
            expires_at_millis: expires_at.as_millis(),
        };
        // Serializing plain strings and integers cannot fail.
        let document = serde_json::to_vec(&claims).unwrap_or_default();
        let tag = self.tag(b"token", &document);
        let session_token =
            format!("{TOKEN_PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(&document), URL_SAFE_NO_PAD.encode(tag.as_ref()));
        SessionCredentials {
            secret_access_key: self.secret_for(&access_key_id),
            access_key_id,
            session_token,
            expires_at,
        }
    }

    /// The claims of `token` presented with `access_key_id` at `now`, if it
    /// is authentic, bound to that key and not expired.
    pub fn verify(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        now: Timestamp,
    ) -> Result<SessionClaims, SessionRefusal> {
        let token = token.ok_or_else(|| SessionRefusal::MissingToken(access_key_id.to_owned()))?;
        let (document, tag) = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .ok_or(SessionRefusal::InvalidToken)?;
        let document = URL_SAFE_NO_PAD.decode(document).map_err(|_| SessionRefusal::InvalidToken)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| SessionRefusal::InvalidToken)?;
        let expected = self.tag(b"token", &document);
        if !bool::from(expected.as_ref().ct_eq(&tag)) {
            return Err(SessionRefusal::InvalidToken);
        }
        let claims: SessionClaims = serde_json::from_slice(&document).map_err(|_| SessionRefusal::InvalidToken)?;
        if !bool::from(claims.access_key_id.as_bytes().ct_eq(access_key_id.as_bytes())) {
            return Err(SessionRefusal::WrongKey(access_key_id.to_owned()));
        }
        if now.as_millis() >= claims.expires_at_millis {
            return Err(SessionRefusal::Expired {
                function: claims.function,
                expired_at: chrono::DateTime::from_timestamp_millis(claims.expires_at_millis)
                    .map_or_else(|| claims.expires_at_millis.to_string(), |at| at.to_rfc3339()),
            });
        }
        Ok(claims)
    }
}

/// The session token of a request: the `x-amz-security-token` header, or a
/// presigned URL's `X-Amz-Security-Token`.
pub fn session_token(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(value) = headers.get("x-amz-security-token") {
        return value.to_str().ok().map(str::to_owned);
    }
    let query = uri.query()?;
    let value = query.split('&').find_map(|pair| pair.strip_prefix("X-Amz-Security-Token="))?;
    percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|value| value.into_owned())
}

/// Who signed a request, and so what it may do: a token's grant, or a
/// function's permissions.
#[derive(Debug, Clone)]
pub enum Principal {
    Token(mayfly_api::Grant),
    Function(SessionClaims),
}

fn access_of(scope: Scope) -> Option<Access> {
    match scope {
        Scope::ObjectsRead => Some(Access::ObjectsRead),
        Scope::ObjectsWrite => Some(Access::ObjectsWrite),
        Scope::QueuesRead => Some(Access::QueuesRead),
        Scope::MessagesWrite => Some(Access::MessagesWrite),
        _ => None,
    }
}

impl Principal {
    fn function_refusal(claims: &SessionClaims, scope: Scope, what: &str) -> String {
        let held = claims.permissions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        format!(
            "the credentials of function `{}` do not allow `{scope}` on {what}; its permissions are [{held}] (`permissions` in mayfly.toml)",
            claims.function
        )
    }

    /// Whether this principal may use `scope` at all (on some resource).
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::Token(grant) => grant.has_scope(scope),
            Principal::Function(claims) => access_of(scope)
                .is_some_and(|access| claims.permissions.iter().any(|permission| permission.access == access)),
        }
    }

    /// Whether any of its bucket permissions names `bucket`.
    pub fn allows_bucket(&self, bucket: &str) -> bool {
        match self {
            Principal::Token(grant) => grant.allows_bucket(bucket),
            Principal::Function(claims) => claims.permissions.iter().any(|permission| {
                matches!(permission.access, Access::ObjectsRead | Access::ObjectsWrite)
                    && permission.resource.as_str() == bucket
            }),
        }
    }

    /// Whether it may list or address `queue` (`queues:read` on it, or any queue for a token).
    pub fn allows_queue(&self, queue: &str) -> bool {
        match self {
            Principal::Token(_) => true,
            Principal::Function(claims) => {
                mayfly_core::permission::permits(&claims.permissions, Access::QueuesRead, queue)
            }
        }
    }

    /// Whether it may use `scope` on `resource`; the refusal says why not.
    pub fn permits(&self, scope: Scope, resource: Resource<'_>) -> Result<(), String> {
        match self {
            Principal::Token(grant) => grant.permits(scope, resource).map_err(|refusal| refusal.to_string()),
            Principal::Function(claims) => {
                let allowed = |name: &str| {
                    access_of(scope)
                        .is_some_and(|access| mayfly_core::permission::permits(&claims.permissions, access, name))
                };
                match resource {
                    Resource::Bucket(bucket) if allowed(bucket) => Ok(()),
                    Resource::Bucket(bucket) => {
                        Err(Self::function_refusal(claims, scope, &format!("bucket `{bucket}`")))
                    }
                    _ => Err(Self::function_refusal(claims, scope, "this resource")),
                }
            }
        }
    }

    /// Whether it may use every one of `scopes` on `queue`.
    pub fn permits_on_queue(&self, scopes: &[Scope], queue: &str) -> Result<(), String> {
        for scope in scopes {
            match self {
                Principal::Token(grant) => {
                    grant.permits(*scope, Resource::Unlimited).map_err(|refusal| refusal.to_string())?
                }
                Principal::Function(claims) => {
                    let allowed = access_of(*scope)
                        .is_some_and(|access| mayfly_core::permission::permits(&claims.permissions, access, queue));
                    if !allowed {
                        return Err(Self::function_refusal(claims, *scope, &format!("queue `{queue}`")));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(items: &[&str]) -> Vec<Permission> {
        items.iter().map(|item| item.parse().unwrap()).collect()
    }

    fn keys() -> SessionKeys {
        SessionKeys::from_key(&[7; 32])
    }

    #[test]
    fn issued_credentials_verify_until_they_expire() {
        let function: Name = "rename".parse().unwrap();
        let expires = Timestamp::from_millis(1_000_000);
        let issued = keys().issue(&function, Some(3), &permissions(&["objects:read:inbox"]), expires);
        assert!(is_session_key(&issued.access_key_id), "{}", issued.access_key_id);
        assert!(crate::token_id(&issued.access_key_id).is_none(), "never mistaken for a token's key");
        assert_eq!(issued.secret_access_key, keys().secret_for(&issued.access_key_id));
        assert_eq!(issued.secret_access_key.len(), 40);
        let claims =
            keys().verify(&issued.access_key_id, Some(&issued.session_token), Timestamp::from_millis(999_999)).unwrap();
        assert_eq!((claims.function, claims.deployment), (function, Some(3)));
        assert_eq!(claims.permissions, permissions(&["objects:read:inbox"]));
        assert!(matches!(
            keys().verify(&issued.access_key_id, Some(&issued.session_token), expires),
            Err(SessionRefusal::Expired { .. })
        ));
    }

    #[test]
    fn altered_foreign_or_rebound_tokens_are_refused() {
        let function: Name = "rename".parse().unwrap();
        let now = Timestamp::from_millis(0);
        let later = Timestamp::from_millis(60_000);
        let issued = keys().issue(&function, None, &permissions(&["objects:read:inbox"]), later);
        let other = keys().issue(&function, None, &permissions(&["objects:write:archive"]), later);
        let verify = |key: &str, token: &str| keys().verify(key, Some(token), now);
        assert_eq!(
            verify(&issued.access_key_id, &other.session_token),
            Err(SessionRefusal::WrongKey(issued.access_key_id.clone()))
        );
        let foreign = SessionKeys::from_key(&[8; 32]).issue(&function, None, &[], later);
        assert_eq!(verify(&foreign.access_key_id, &foreign.session_token), Err(SessionRefusal::InvalidToken));
        // Widen the permissions in the document and keep the tag: refused.
        let (document, tag) = issued.session_token.trim_start_matches(TOKEN_PREFIX).split_once('.').unwrap();
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(document).unwrap()).unwrap();
        let widened = text.replace("objects:read:inbox", "objects:write:inbox");
        let forged = format!("{TOKEN_PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(widened));
        assert_eq!(verify(&issued.access_key_id, &forged), Err(SessionRefusal::InvalidToken));
        assert_eq!(verify(&issued.access_key_id, "nonsense"), Err(SessionRefusal::InvalidToken));
        assert!(matches!(keys().verify(&issued.access_key_id, None, now), Err(SessionRefusal::MissingToken(_))));
    }

    #[test]
    fn a_function_principal_may_do_exactly_its_permissions() {
        let claims = keys().verify_for_test(&permissions(&[
            "objects:read:inbox",
            "objects:write:archive",
            "messages:write:work",
        ]));
        let principal = Principal::Function(claims);
        assert!(principal.permits(Scope::ObjectsRead, Resource::Bucket("inbox")).is_ok());
        assert!(principal.permits(Scope::ObjectsWrite, Resource::Bucket("archive")).is_ok());
        let refusal = principal.permits(Scope::ObjectsWrite, Resource::Bucket("inbox")).unwrap_err();
        assert!(refusal.contains("do not allow `objects:write` on bucket `inbox`"), "{refusal}");
        assert!(principal.permits(Scope::ObjectsRead, Resource::Bucket("archive")).is_err());
        assert!(principal.permits(Scope::Admin, Resource::Unlimited).is_err());
        assert!(principal.permits_on_queue(&[Scope::MessagesWrite], "work").is_ok());
        assert!(principal.permits_on_queue(&[Scope::QueuesRead, Scope::MessagesWrite], "work").is_err());
        assert!(principal.permits_on_queue(&[Scope::MessagesWrite], "other").is_err());
        assert!(principal.has_scope(Scope::ObjectsRead) && !principal.has_scope(Scope::QueuesRead));
        assert!(
            principal.allows_bucket("inbox") && principal.allows_bucket("archive") && !principal.allows_bucket("x")
        );
    }

    impl SessionKeys {
        fn verify_for_test(&self, permissions: &[Permission]) -> SessionClaims {
            let issued = self.issue(&"rename".parse().unwrap(), None, permissions, Timestamp::from_millis(10));
            self.verify(&issued.access_key_id, Some(&issued.session_token), Timestamp::from_millis(0)).unwrap()
        }
    }
}
