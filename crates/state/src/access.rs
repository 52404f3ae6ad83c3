//! What the state store keeps for the HTTPS API: bearer tokens (only the
//! SHA-256 of their secret, never the secret) and the append-only access log
//! (who asked for what, when, and what they got).

use mayfly_core::Timestamp;
use serde::{Deserialize, Serialize};

/// A token to store. The caller made the secret, hashed it and shows it once;
/// the store never sees the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiToken {
    /// The public part of the token, unique: what `revoke` and the access log name.
    pub id: String,
    /// A label for people; unique among tokens not revoked.
    pub name: String,
    /// Hex SHA-256 of the token's secret part.
    pub secret_sha256: String,
    /// Scope names as written, e.g. `results:read`.
    pub scopes: Vec<String>,
    /// When not empty, the only jobs the token may touch.
    pub jobs: Vec<String>,
    /// When not empty, the only buckets the token may touch.
    pub buckets: Vec<String>,
    pub expires_at: Option<Timestamp>,
    /// The secret access key of the token's AWS credentials (`tokens create
    /// --aws`), if it has them. SigV4 needs it on the server, so unlike the
    /// bearer secret it is kept, sealed like customer data.
    pub aws_secret: Option<String>,
}

/// A token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub name: String,
    pub secret_sha256: String,
    pub scopes: Vec<String>,
    pub jobs: Vec<String>,
    pub buckets: Vec<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Set once, by the first revocation; a revoked token never works again.
    pub revoked_at: Option<Timestamp>,
}

/// One access to the API, allowed or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub at: Timestamp,
    /// The token presented, if it named one the store knows (a wrong or missing token has none).
    pub token_id: Option<String>,
    /// The peer's address.
    pub client: String,
    pub method: String,
    /// The request path, without the query string.
    pub path: String,
    /// What was asked for, e.g. `job/nightly/result/17` or `bucket/inbox/object/a.txt`.
    pub resource: String,
    /// The HTTP status answered.
    pub status: u16,
    /// `ok`, or why it was refused or failed, e.g. `missing token`, `needs scope results:read`.
    pub outcome: String,
}

/// An access record with its place in the log: 1, 2, 3, … in append order, never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAccessRecord {
    pub id: u64,
    pub record: AccessRecord,
}
