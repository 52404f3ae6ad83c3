//! Access control as plain rules, with no IO: the scopes a token can hold,
//! what a token's grant permits, and the token format.
//!
//! A token reads `mf_<id>_<secret>`: `id` (16 hex digits) is public and names
//! the token in the store and the access log; `secret` (64 hex digits, 256
//! random bits) is shown once and stored only as its SHA-256, compared in
//! constant time.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    ObjectsRead,
    ObjectsWrite,
    MessagesWrite,
    QueuesRead,
    FunctionsInvoke,
    RunsRead,
    RunsWrite,
    ResultsRead,
    LogsRead,
    MetricsRead,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 11] = [
        Scope::ObjectsRead,
        Scope::ObjectsWrite,
        Scope::MessagesWrite,
        Scope::QueuesRead,
        Scope::FunctionsInvoke,
        Scope::RunsRead,
        Scope::RunsWrite,
        Scope::ResultsRead,
        Scope::LogsRead,
        Scope::MetricsRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ObjectsRead => "objects:read",
            Scope::ObjectsWrite => "objects:write",
            Scope::MessagesWrite => "messages:write",
            Scope::QueuesRead => "queues:read",
            Scope::FunctionsInvoke => "functions:invoke",
            Scope::RunsRead => "runs:read",
            Scope::RunsWrite => "runs:write",
            Scope::ResultsRead => "results:read",
            Scope::LogsRead => "logs:read",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{given}`; scopes are: {}", Scope::ALL.map(Scope::as_str).join(", "))]
pub struct UnknownScope {
    pub given: String,
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| UnknownScope { given: text.to_owned() })
    }
}

/// What an access is about, for the limits a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Anything of a job: its runs, results, logs.
    Job(&'a str),
    /// A bucket or its objects.
    Bucket(&'a str),
    /// Something no token limit names (queues, functions, the access log).
    Unlimited,
}

/// Why a grant does not permit an access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the token lacks scope `{0}`")]
    MissingScope(Scope),
    #[error("the token is limited to other jobs than `{0}`")]
    JobNotAllowed(String),
    #[error("the token is limited to other buckets than `{0}`")]
    BucketNotAllowed(String),
}

/// What a token holds: scopes, and optionally the only jobs and buckets it may touch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    pub scopes: Vec<Scope>,
    /// Empty: every job.
    pub jobs: Vec<String>,
    /// Empty: every bucket.
    pub buckets: Vec<String>,
}

/// A grant that cannot be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("a token needs at least one scope, e.g. `--scope results:read`")]
    NoScope,
    #[error("an admin token may do everything, so it cannot be limited to jobs or buckets; drop `admin` or the limits")]
    LimitedAdmin,
    #[error(transparent)]
    UnknownScope(#[from] UnknownScope),
}

impl Grant {
    /// A grant from scope names as written and the limits; refuses unknown
    /// scopes, no scope at all, and an admin token with limits.
    pub fn parse(scopes: &[String], jobs: Vec<String>, buckets: Vec<String>) -> Result<Grant, GrantError> {
        let mut parsed = scopes.iter().map(|scope| scope.parse::<Scope>()).collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        if parsed.is_empty() {
            return Err(GrantError::NoScope);
        }
        if parsed.contains(&Scope::Admin) && (!jobs.is_empty() || !buckets.is_empty()) {
            return Err(GrantError::LimitedAdmin);
        }
        Ok(Grant { scopes: parsed, jobs, buckets })
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.is_admin() || self.scopes.contains(&scope)
    }

    pub fn allows_job(&self, job: &str) -> bool {
        self.jobs.is_empty() || self.jobs.iter().any(|allowed| allowed == job)
    }

    pub fn allows_bucket(&self, bucket: &str) -> bool {
        self.buckets.is_empty() || self.buckets.iter().any(|allowed| allowed == bucket)
    }

    /// Whether this grant permits `scope` on `resource`.
    pub fn permits(&self, scope: Scope, resource: Resource<'_>) -> Result<(), Refusal> {
        if !self.has_scope(scope) {
            return Err(Refusal::MissingScope(scope));
        }
        match resource {
            Resource::Job(job) if !self.allows_job(job) => Err(Refusal::JobNotAllowed(job.to_owned())),
            Resource::Bucket(bucket) if !self.allows_bucket(bucket) => {
                Err(Refusal::BucketNotAllowed(bucket.to_owned()))
            }
            _ => Ok(()),
        }
    }
}

const TOKEN_PREFIX: &str = "mf_";
const ID_HEX_DIGITS: usize = 16;
const SECRET_HEX_DIGITS: usize = 64;

/// A freshly made token: what to show once, and what to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub id: String,
    /// `mf_<id>_<secret>`: shown once, never stored.
    pub token: String,
    /// Hex SHA-256 of the secret: what the store keeps.
    pub secret_sha256: String,
}

/// Make a token from 8 random bytes for its id and 32 for its secret.
pub fn issue_token(id_bytes: [u8; 8], secret_bytes: [u8; 32]) -> IssuedToken {
    let id = hex::encode(id_bytes);
    let secret = hex::encode(secret_bytes);
    IssuedToken { token: format!("{TOKEN_PREFIX}{id}_{secret}"), secret_sha256: secret_sha256(&secret), id }
}

/// Hex SHA-256 of a token's secret part.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A token as presented, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// Split `mf_<id>_<secret>`; `None` for anything else.
pub fn parse_token(token: &str) -> Option<PresentedToken<'_>> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let lower_hex = |text: &str, digits: usize| {
        text.len() == digits && text.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    };
    (lower_hex(id, ID_HEX_DIGITS) && lower_hex(secret, SECRET_HEX_DIGITS)).then_some(PresentedToken { id, secret })
}

/// Whether `secret` hashes to `stored_sha256`, compared in constant time.
pub fn secret_matches(secret: &str, stored_sha256: &str) -> bool {
    let presented = secret_sha256(secret);
    presented.len() == stored_sha256.len() && bool::from(presented.as_bytes().ct_eq(stored_sha256.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn scopes_parse_from_their_names_and_back() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        let error = "results:write".parse::<Scope>().unwrap_err();
        assert!(error.to_string().contains("unknown scope `results:write`"), "{error}");
        assert!(error.to_string().contains("results:read"), "the error lists the scopes: {error}");
    }

    #[test]
    fn a_grant_needs_a_scope_and_admin_takes_no_limits() {
        assert_eq!(Grant::parse(&[], vec![], vec![]), Err(GrantError::NoScope));
        assert_eq!(Grant::parse(&strings(&["admin"]), strings(&["nightly"]), vec![]), Err(GrantError::LimitedAdmin));
        assert!(matches!(Grant::parse(&strings(&["nope"]), vec![], vec![]), Err(GrantError::UnknownScope(_))));
        let grant = Grant::parse(&strings(&["runs:read", "results:read", "runs:read"]), vec![], vec![]).unwrap();
        assert_eq!(grant.scopes, vec![Scope::RunsRead, Scope::ResultsRead], "sorted, repeats dropped");
    }

    #[test]
    fn admin_implies_every_scope_on_everything() {
        let admin = Grant::parse(&strings(&["admin"]), vec![], vec![]).unwrap();
        for scope in Scope::ALL {
            assert_eq!(admin.permits(scope, Resource::Job("any")), Ok(()));
            assert_eq!(admin.permits(scope, Resource::Bucket("any")), Ok(()));
        }
    }

    #[test]
    fn a_scope_permits_only_itself() {
        let grant = Grant::parse(&strings(&["results:read"]), vec![], vec![]).unwrap();
        assert_eq!(grant.permits(Scope::ResultsRead, Resource::Job("nightly")), Ok(()));
        for scope in Scope::ALL.into_iter().filter(|scope| *scope != Scope::ResultsRead) {
            assert_eq!(grant.permits(scope, Resource::Unlimited), Err(Refusal::MissingScope(scope)));
        }
    }

    #[test]
    fn limits_to_jobs_and_buckets_hold() {
        let grant =
            Grant::parse(&strings(&["results:read", "objects:read"]), strings(&["nightly"]), strings(&["inbox"]))
                .unwrap();
        assert_eq!(grant.permits(Scope::ResultsRead, Resource::Job("nightly")), Ok(()));
        assert_eq!(
            grant.permits(Scope::ResultsRead, Resource::Job("weekly")),
            Err(Refusal::JobNotAllowed("weekly".to_owned()))
        );
        assert_eq!(grant.permits(Scope::ObjectsRead, Resource::Bucket("inbox")), Ok(()));
        assert_eq!(
            grant.permits(Scope::ObjectsRead, Resource::Bucket("outbox")),
            Err(Refusal::BucketNotAllowed("outbox".to_owned()))
        );
        assert_eq!(
            grant.permits(Scope::ObjectsWrite, Resource::Bucket("inbox")),
            Err(Refusal::MissingScope(Scope::ObjectsWrite)),
            "a limit never adds a scope"
        );
    }

    #[test]
    fn issued_tokens_parse_and_match_only_their_own_hash() {
        let issued = issue_token([1; 8], [2; 32]);
        assert_eq!(issued.id, "0101010101010101");
        assert!(issued.token.starts_with("mf_0101010101010101_0202"));
        let presented = parse_token(&issued.token).unwrap();
        assert_eq!(presented.id, issued.id);
        assert!(secret_matches(presented.secret, &issued.secret_sha256));
        assert!(!issued.token.contains(&issued.secret_sha256), "the stored hash is not in the token");
        let other = issue_token([1; 8], [3; 32]);
        assert!(!secret_matches(parse_token(&other.token).unwrap().secret, &issued.secret_sha256));
        assert!(!secret_matches(presented.secret, "short"));
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let good = issue_token([0xab; 8], [0xcd; 32]).token;
        assert!(parse_token(&good).is_some());
        for bad in [
            "",
            "mf_",
            &good[1..],
            &good[..good.len() - 1],
            &good.to_uppercase(),
            &good.replace("mf_", "xx_"),
            &format!("{good}0"),
            "mf_abababababababab_zz",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bearer_tokens_come_from_the_authorization_header() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
