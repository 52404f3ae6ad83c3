//! Workers that enroll themselves: how a worker gets its client certificate
//! without any file being handed to it.
//!
//! When a coordinator starts a worker it issues one enrollment token for it
//! ([`Enrollments::issue`]): 32 random bytes, good once and for a short
//! while (`CertificatePolicy::enrollment_token_lifetime`), known to the
//! coordinator only by its SHA-256. The worker gets the token and the run
//! authority's certificate (public) in its environment ([`TOKEN_ENV`],
//! [`AUTHORITY_ENV`]) and the enrollment address on its command line. It
//! makes its own key in its own memory ([`WorkerKey::generate`]), sends a
//! certificate request with the token to `POST /v1/enroll` over TLS that it
//! verifies against the run's authority ([`enroll`]), and gets back a client
//! certificate signed by the run's authority for the name the token was
//! issued to. Its private key never leaves its process: nothing about it is
//! written anywhere.
//!
//! The coordinator refuses, and logs, a token that was already used, one
//! that expired, one it did not issue (another run's, or forged), one issued
//! to another worker, and a request that names another worker
//! ([`EnrollmentRefusal`]). A token is spent by its first presentation,
//! whatever becomes of the request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use mayfly_core::{Clock, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::protocol::WorkerIdentity;
use crate::tls::{
    CertificateFingerprint, CertificatePolicy, RequestRefusal, RunAuthority, TlsError, WorkerCredentials, WorkerKey,
};

/// The enrollment endpoint, served on the coordinator's enrollment port
/// (TLS without a client certificate: the worker has none yet).
pub const ENROLL_PATH: &str = "/v1/enroll";
/// The environment variable a worker finds its enrollment token in.
pub const TOKEN_ENV: &str = "MAYFLY_ENROLLMENT_TOKEN";
/// The environment variable a worker finds the run authority's certificate (PEM) in.
pub const AUTHORITY_ENV: &str = "MAYFLY_RUN_AUTHORITY";

/// `POST /v1/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub identity: WorkerIdentity,
    pub token: String,
    /// A PKCS #10 certificate request (PEM) for the worker's own key.
    pub certificate_request: String,
}

/// The answer to an accepted enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The worker's client certificate (PEM), signed by the run's authority.
    pub certificate: String,
}

/// What a worker needs to enroll: where, with which token, trusting which authority.
#[derive(Clone)]
pub struct EnrollmentTicket {
    /// `https://ADDRESS:PORT` of the coordinator's enrollment port.
    pub url: String,
    pub token: String,
    /// The run authority's certificate (PEM): the only one the worker trusts.
    pub authority_pem: String,
}

impl std::fmt::Debug for EnrollmentTicket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        formatter.debug_struct("EnrollmentTicket").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Why an enrollment was refused. Every one is logged by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentRefusal {
    #[error("this coordinator serves run {serving}, not {asked}")]
    OtherRun { serving: String, asked: String },
    #[error("worker {worker} is not part of this run")]
    UnknownWorker { worker: String },
    #[error("the enrollment token of worker {worker} was already used")]
    TokenUsed { worker: String },
    #[error("worker {worker} has already enrolled; its token was spent")]
    AlreadyEnrolled { worker: String },
    #[error("the enrollment token of worker {worker} expired at {expired_at}")]
    TokenExpired { worker: String, expired_at: Timestamp },
    #[error("this token was not issued to worker {worker} by this run (another run's, or forged)")]
    ForeignToken { worker: String },
    #[error("the certificate request names {named}, not worker {worker}")]
    OtherName { worker: String, named: String },
    #[error("unusable certificate request: {reason}")]
    BadRequest { reason: String },
}

impl From<RequestRefusal> for EnrollmentRefusal {
    fn from(refusal: RequestRefusal) -> Self {
        match refusal {
            RequestRefusal::OtherName { worker, named } => EnrollmentRefusal::OtherName { worker, named },
            RequestRefusal::Unusable { reason } => EnrollmentRefusal::BadRequest { reason },
        }
    }
}

impl EnrollmentRefusal {
    /// The HTTP status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            EnrollmentRefusal::BadRequest { .. } => 400,
            _ => 403,
        }
    }
}

/// One issued token, known by its digest.
#[derive(Debug)]
struct PendingToken {
    digest: [u8; 32],
    expires_at: Timestamp,
}

/// The tokens a coordinator issued: one per worker it starts, each good once
/// until it expires.
#[derive(Debug)]
pub struct Enrollments {
    run: String,
    lifetime: Duration,
    pending: BTreeMap<String, PendingToken>,
    /// Digests of tokens that were presented (used or expired): a second
    /// presentation is told so rather than called foreign.
    spent: BTreeSet<[u8; 32]>,
    /// Workers whose token was spent.
    redeemed: BTreeSet<String>,
}

impl Enrollments {
    pub fn new(run: &str, lifetime: Duration) -> Enrollments {
        Enrollments {
            run: run.to_owned(),
            lifetime,
            pending: BTreeMap::new(),
            spent: BTreeSet::new(),
            redeemed: BTreeSet::new(),
        }
    }

    /// A fresh token for `worker`, replacing any it had; good once, until `now + lifetime`.
    pub fn issue(&mut self, worker: &str, now: Timestamp) -> String {
        let secret: [u8; 32] = rand::random();
        let token = format!("mfe1.{}", hex::encode(secret));
        let pending = PendingToken { digest: digest(&token), expires_at: now.saturating_add(self.lifetime) };
        self.pending.insert(worker.to_owned(), pending);
        token
    }

    /// Forget `worker`'s token, if it was never used (the worker is gone).
    pub fn withdraw(&mut self, worker: &str) {
        if let Some(pending) = self.pending.remove(worker) {
            self.spent.insert(pending.digest);
            self.redeemed.insert(worker.to_owned());
        }
    }

    /// Spend `token` for `identity`: `Ok` if it is the unused, unexpired
    /// token issued to that worker of this run. A token that matches is
    /// spent whatever the answer, so it never works twice.
    pub fn redeem(&mut self, identity: &WorkerIdentity, token: &str, now: Timestamp) -> Result<(), EnrollmentRefusal> {
        if identity.run != self.run {
            return Err(EnrollmentRefusal::OtherRun { serving: self.run.clone(), asked: identity.run.clone() });
        }
        let worker = identity.worker.clone();
        let presented = digest(token);
        let Some(pending) = self.pending.get(&worker) else {
            if self.spent.contains(&presented) {
                return Err(EnrollmentRefusal::TokenUsed { worker });
            }
            if self.redeemed.contains(&worker) {
                return Err(EnrollmentRefusal::AlreadyEnrolled { worker });
            }
            return Err(EnrollmentRefusal::UnknownWorker { worker });
        };
        if !constant_time_equal(&pending.digest, &presented) {
            if self.spent.contains(&presented) {
                return Err(EnrollmentRefusal::TokenUsed { worker });
            }
            return Err(EnrollmentRefusal::ForeignToken { worker });
        }
        let expires_at = pending.expires_at;
        self.pending.remove(&worker);
        self.spent.insert(presented);
        self.redeemed.insert(worker.clone());
        if now > expires_at {
            return Err(EnrollmentRefusal::TokenExpired { worker, expired_at: expires_at });
        }
        Ok(())
    }
}

/// The coordinator's enrollment desk: the run's authority, the tokens it
/// issued, and the certificate each enrolled worker got — the only one that
/// worker may call in with.
pub struct EnrollmentDesk {
    authority: RunAuthority,
    policy: CertificatePolicy,
    deadline: Timestamp,
    clock: Arc<dyn Clock>,
    books: std::sync::Mutex<Books>,
}

struct Books {
    tokens: Enrollments,
    certificates: BTreeMap<String, CertificateFingerprint>,
}

impl EnrollmentDesk {
    /// A desk for `authority`'s run, whose certificates last as `policy` says
    /// for a run ending at `deadline`.
    pub fn new(
        run: &str,
        authority: RunAuthority,
        policy: CertificatePolicy,
        deadline: Timestamp,
        clock: Arc<dyn Clock>,
    ) -> EnrollmentDesk {
        let tokens = Enrollments::new(run, policy.enrollment_token_lifetime);
        EnrollmentDesk {
            authority,
            policy,
            deadline,
            clock,
            books: std::sync::Mutex::new(Books { tokens, certificates: BTreeMap::new() }),
        }
    }

    /// The run authority's certificate (PEM), public, what workers trust.
    pub fn authority_pem(&self) -> &str {
        self.authority.certificate_pem()
    }

    pub fn authority(&self) -> &RunAuthority {
        &self.authority
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        // A panic while holding the books leaves them consistent (each update is one insert or remove).
        self.books.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh token for `worker` (replacing any earlier one of it).
    pub fn issue_token(&self, worker: &str) -> String {
        let now = self.clock.now();
        self.books().tokens.issue(worker, now)
    }

    /// `worker` is gone: its unused token and its certificate count no more.
    pub fn forget(&self, worker: &str) {
        let mut books = self.books();
        books.tokens.withdraw(worker);
        books.certificates.remove(worker);
    }

    /// The fingerprint of the certificate `worker` enrolled with, once it has.
    pub fn certificate_of(&self, worker: &str) -> Option<CertificateFingerprint> {
        self.books().certificates.get(worker).copied()
    }

    /// Enroll a worker: spend its token, sign its request. Every refusal is logged.
    pub fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, EnrollmentRefusal> {
        let outcome = self.try_enroll(request);
        if let Err(refusal) = &outcome {
            tracing::warn!(
                run = %request.identity.run,
                worker = %request.identity.worker,
                refusal = %refusal,
                "refused an enrollment"
            );
        }
        outcome
    }

    fn try_enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, EnrollmentRefusal> {
        let now = self.clock.now();
        let worker = &request.identity.worker;
        self.books().tokens.redeem(&request.identity, &request.token, now)?;
        let validity = self.policy.worker_validity(now, self.deadline);
        let (certificate, fingerprint) =
            self.authority.sign_worker_request(worker, &request.certificate_request, validity)?;
        self.books().certificates.insert(worker.clone(), fingerprint);
        tracing::info!(run = %request.identity.run, worker = %worker, "worker enrolled");
        Ok(EnrollResponse { certificate })
    }

    /// `POST /v1/enroll` on this desk, for [`crate::tls::serve_enrollment`].
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().route(ENROLL_PATH, post(enroll_handler)).with_state(self)
    }
}

async fn enroll_handler(
    State(desk): State<Arc<EnrollmentDesk>>,
    Json(request): Json<EnrollRequest>,
) -> Result<Json<EnrollResponse>, (StatusCode, String)> {
    desk.enroll(&request).map(Json).map_err(|refusal| {
        (StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN), refusal.to_string())
    })
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal digests, compared without an early exit.
fn constant_time_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// Enrollment failed on the worker's side.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build the enrollment client: {0}")]
    Client(reqwest::Error),
    #[error("cannot reach the coordinator's enrollment port {url} for {seconds} s: {source}")]
    Unreachable { url: String, seconds: u64, source: reqwest::Error },
    #[error("the coordinator refused the enrollment: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
}

/// Enroll as `identity` with `ticket`: make a key here, send a certificate
/// request with the token, and return the credentials (the key never leaves
/// this process). Connection failures are retried until `timeout`; a refusal is final.
pub async fn enroll(
    ticket: &EnrollmentTicket,
    identity: &WorkerIdentity,
    timeout: Duration,
) -> Result<WorkerCredentials, EnrollError> {
    let key = WorkerKey::generate(&identity.run, &identity.worker)?;
    let request = EnrollRequest {
        identity: identity.clone(),
        token: ticket.token.clone(),
        certificate_request: key.certificate_request()?,
    };
    let tls = crate::tls::enrollment_client_config(&ticket.authority_pem)?;
    let http =
        reqwest::Client::builder().use_preconfigured_tls(tls).https_only(true).build().map_err(EnrollError::Client)?;
    let url = format!("{}{ENROLL_PATH}", ticket.url.trim_end_matches('/'));
    let started = Instant::now();
    let response = loop {
        match http.post(&url).json(&request).send().await {
            Ok(response) => break response,
            Err(source) if started.elapsed() >= timeout => {
                return Err(EnrollError::Unreachable { url, seconds: timeout.as_secs(), source });
            }
            Err(error) => tracing::debug!(error = %error, "enrollment port not reachable yet; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(EnrollError::Refused { status, body });
    }
    let answer: EnrollResponse =
        response.json().await.map_err(|source| EnrollError::Unreachable { url, seconds: timeout.as_secs(), source })?;
    Ok(key.with_certificate(&ticket.authority_pem, &answer.certificate)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + seconds * 1000)
    }

    fn identity(run: &str, worker: &str) -> WorkerIdentity {
        WorkerIdentity { run: run.to_owned(), worker: worker.to_owned() }
    }

    #[test]
    fn a_token_works_once_for_its_worker_within_its_lifetime() {
        let mut enrollments = Enrollments::new("r1", Duration::from_secs(60));
        let token = enrollments.issue("w1-001", at(0));
        assert_eq!(enrollments.redeem(&identity("r1", "w1-001"), &token, at(59)), Ok(()));
        assert_eq!(
            enrollments.redeem(&identity("r1", "w1-001"), &token, at(59)),
            Err(EnrollmentRefusal::TokenUsed { worker: "w1-001".into() })
        );
    }

    #[test]
    fn an_expired_token_is_refused_and_spent() {
        let mut enrollments = Enrollments::new("r1", Duration::from_secs(60));
        let token = enrollments.issue("w1-001", at(0));
        assert_eq!(
            enrollments.redeem(&identity("r1", "w1-001"), &token, at(61)),
            Err(EnrollmentRefusal::TokenExpired { worker: "w1-001".into(), expired_at: at(60) })
        );
        assert!(matches!(
            enrollments.redeem(&identity("r1", "w1-001"), &token, at(0)),
            Err(EnrollmentRefusal::TokenUsed { .. })
        ));
    }

    #[test]
    fn another_runs_token_and_another_workers_token_are_refused_without_spending_the_right_one() {
        let mut ours = Enrollments::new("r1", Duration::from_secs(60));
        let mut theirs = Enrollments::new("r2", Duration::from_secs(60));
        let own = ours.issue("w1-001", at(0));
        let other = ours.issue("w1-002", at(0));
        let foreign = theirs.issue("w1-001", at(0));
        assert!(matches!(
            ours.redeem(&identity("r1", "w1-001"), &foreign, at(1)),
            Err(EnrollmentRefusal::ForeignToken { .. })
        ));
        assert!(matches!(
            ours.redeem(&identity("r2", "w1-001"), &foreign, at(1)),
            Err(EnrollmentRefusal::OtherRun { .. })
        ));
        assert!(matches!(
            ours.redeem(&identity("r1", "w1-001"), &other, at(1)),
            Err(EnrollmentRefusal::ForeignToken { .. })
        ));
        assert!(matches!(
            ours.redeem(&identity("r1", "w9-999"), &own, at(1)),
            Err(EnrollmentRefusal::UnknownWorker { .. })
        ));
        assert_eq!(ours.redeem(&identity("r1", "w1-001"), &own, at(1)), Ok(()), "refusals spent nothing");
        assert_eq!(ours.redeem(&identity("r1", "w1-002"), &other, at(1)), Ok(()));
    }

    #[test]
    fn a_withdrawn_token_no_longer_works() {
        let mut enrollments = Enrollments::new("r1", Duration::from_secs(60));
        let token = enrollments.issue("w1-001", at(0));
        enrollments.withdraw("w1-001");
        assert!(matches!(
            enrollments.redeem(&identity("r1", "w1-001"), &token, at(1)),
            Err(EnrollmentRefusal::TokenUsed { .. })
        ));
    }
}
