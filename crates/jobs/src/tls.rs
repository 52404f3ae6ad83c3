//! Mutual TLS between a run's coordinator and its workers.
//!
//! A coordinator creates a certificate authority for its run when it starts
//! ([`RunAuthority::create`]); the authority's private key exists only in
//! that coordinator's memory. With it the coordinator issues itself a server
//! certificate naming every address it tells workers to dial
//! ([`RunAuthority::server_config`]), and signs each worker's own
//! certificate request ([`RunAuthority::sign_worker_request`]) once the
//! worker has enrolled ([`crate::enrollment`]): a short-lived client
//! certificate naming the run and the worker. A worker makes its key in its
//! own memory ([`WorkerKey`]); no key of a worker is ever written to a file.
//! It trusts the run's authority and nothing else ([`worker_client_config`]).
//!
//! The server ([`serve`]) completes a handshake only with a client whose
//! certificate chains to the run's authority, and marks every request with
//! the fingerprint of the certificate its connection presented
//! ([`CertificateFingerprint`]), so the coordinator can check that a worker
//! speaks only for itself. Plain HTTP never gets an answer. The enrollment
//! port ([`serve_enrollment`]) is TLS with the same kind of server
//! certificate but no client certificate (an enrolling worker has none yet).
//! Only rustls' `ring` provider is used, and only TLS 1.3: both ends are Mayfly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot create the run's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot set up the client-certificate check: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("`{name}` cannot be named in the coordinator's certificate: it is neither an IP address nor a DNS name")]
    BadServerName { name: String },
    #[error("unreadable {what}: {reason}")]
    Pem { what: &'static str, reason: String },
}

/// Why the authority will not sign a worker's certificate request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("the certificate request names {named}, not worker {worker}")]
    OtherName { worker: String, named: String },
    #[error("unusable certificate request: {reason}")]
    Unusable { reason: String },
}

/// The SHA-256 of a DER certificate: how the coordinator recognises the
/// certificate it issued to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint(pub [u8; 32]);

impl CertificateFingerprint {
    pub fn of(der: &[u8]) -> CertificateFingerprint {
        CertificateFingerprint(Sha256::digest(der).into())
    }
}

/// When a certificate is valid, and when its holder should make way for a
/// replacement with a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// Set only when the certificate ends before the run's deadline: from
    /// then on the worker takes no new items, finishes what it holds and
    /// exits, and the coordinator starts a replacement with its own
    /// certificate. Three quarters into the certificate's life, so what the
    /// worker holds has a quarter of it to finish.
    pub retire_at: Option<Timestamp>,
}

/// How long a run's certificates last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// A worker's certificate lasts until the run's deadline, but at most
    /// this long: its key lives in a worker process the coordinator does not control.
    pub worker_lifetime_cap: Duration,
    /// An enrollment token is good once, for at most this long after its
    /// worker was started.
    pub enrollment_token_lifetime: Duration,
    /// Added before `not before` and after `not after`, for clocks that disagree.
    pub clock_skew: Duration,
    /// The authority and the server certificate last at least this long, so a
    /// run past its deadline can still wind its workers down.
    pub minimum_lifetime: Duration,
}

impl Default for CertificatePolicy {
    fn default() -> Self {
        CertificatePolicy {
            worker_lifetime_cap: Duration::from_secs(4 * 3600),
            enrollment_token_lifetime: Duration::from_secs(10 * 60),
            clock_skew: Duration::from_secs(5 * 60),
            minimum_lifetime: Duration::from_secs(10 * 60),
        }
    }
}

impl CertificatePolicy {
    /// The authority's and the server certificate's validity: until the run's
    /// deadline (at least `minimum_lifetime`), with the skew margin either side.
    /// Their keys never leave the coordinator's memory and die with it.
    pub fn authority_validity(&self, now: Timestamp, deadline: Timestamp) -> Validity {
        let lifetime = deadline.duration_since(now).max(self.minimum_lifetime);
        Validity {
            not_before: Timestamp::from_millis(now.as_millis().saturating_sub(millis(self.clock_skew))),
            not_after: now.saturating_add(lifetime + self.clock_skew),
            retire_at: None,
        }
    }

    /// A worker certificate's validity: until the run's deadline or for
    /// `worker_lifetime_cap`, whichever comes first, with the skew margin.
    pub fn worker_validity(&self, now: Timestamp, deadline: Timestamp) -> Validity {
        let until_deadline = deadline.duration_since(now).max(self.minimum_lifetime);
        let capped = until_deadline > self.worker_lifetime_cap;
        let lifetime = until_deadline.min(self.worker_lifetime_cap);
        Validity {
            not_before: Timestamp::from_millis(now.as_millis().saturating_sub(millis(self.clock_skew))),
            not_after: now.saturating_add(lifetime + self.clock_skew),
            retire_at: capped.then(|| now.saturating_add(lifetime * 3 / 4)),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn x509_time(at: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.as_millis()) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate authority of one run, held by its coordinator.
pub struct RunAuthority {
    run: String,
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
    certificate_pem: String,
}

impl std::fmt::Debug for RunAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        formatter.debug_struct("RunAuthority").field("run", &self.run).finish_non_exhaustive()
    }
}

impl RunAuthority {
    /// A new authority for `run`, with a fresh ECDSA P-256 key kept in memory only.
    pub fn create(run: &str, validity: Validity) -> Result<RunAuthority, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(run, &format!("Mayfly run {run} authority"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = x509_time(validity.not_before);
        params.not_after = x509_time(validity.not_after);
        let certificate = params.self_signed(&key)?;
        Ok(RunAuthority {
            run: run.to_owned(),
            certificate_pem: certificate.pem(),
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The authority's certificate in PEM, what a worker trusts.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The server side: a certificate for `names` (IP addresses or DNS names,
    /// every one a worker may dial), and a client check that accepts only
    /// certificates issued by this authority.
    pub fn server_config(&self, names: &[String], validity: Validity) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.server_certificate(names, validity)?;
        let provider = ring();
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.clone())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The enrollment port's server side: a certificate for `names` as in
    /// [`RunAuthority::server_config`], and no client certificate asked for.
    pub fn enrollment_server_config(
        &self,
        names: &[String],
        validity: Validity,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.server_certificate(names, validity)?;
        let mut config = ServerConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn server_certificate(
        &self,
        names: &[String],
        validity: Validity,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.run, &format!("Mayfly run {} coordinator", self.run));
        params.subject_alt_names = names.iter().map(|name| server_name(name)).collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = x509_time(validity.not_before);
        params.not_after = x509_time(validity.not_after);
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((vec![certificate.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))))
    }

    /// Sign `worker`'s certificate request (PEM) as its client certificate.
    /// The request's signature must verify and any name it asks for (common
    /// name, alternative names) must be the worker's own; the certificate
    /// carries the request's public key and only what the authority decides:
    /// the worker's name, client authentication, `validity`. Returns the
    /// certificate (PEM) and its fingerprint.
    pub fn sign_worker_request(
        &self,
        worker: &str,
        request_pem: &str,
        validity: Validity,
    ) -> Result<(String, CertificateFingerprint), RequestRefusal> {
        let unusable = |error: rcgen::Error| RequestRefusal::Unusable { reason: error.to_string() };
        let mut request = CertificateSigningRequestParams::from_pem(request_pem).map_err(unusable)?;
        let own_uri = worker_uri(&self.run, worker);
        let other_name = |named: String| RequestRefusal::OtherName { worker: worker.to_owned(), named };
        for name in &request.params.subject_alt_names {
            match name {
                SanType::URI(uri) if uri.as_str() == own_uri => {}
                SanType::URI(uri) => return Err(other_name(uri.as_str().to_owned())),
                other => return Err(other_name(format!("{other:?}"))),
            }
        }
        if let Some(common_name) = request.params.distinguished_name.get(&DnType::CommonName) {
            let named = match common_name {
                DnValue::Utf8String(text) => text.clone(),
                DnValue::PrintableString(text) => text.as_str().to_owned(),
                DnValue::Ia5String(text) => text.as_str().to_owned(),
                other => format!("{other:?}"),
            };
            if named != worker {
                return Err(other_name(named));
            }
        }
        request.params = worker_certificate_params(&self.run, worker, validity).map_err(unusable)?;
        let certificate = request.signed_by(&self.issuer).map_err(unusable)?;
        Ok((certificate.pem(), CertificateFingerprint::of(certificate.der())))
    }
}

/// What a worker's client certificate says: the run and the worker, client
/// authentication only, `validity`.
fn worker_certificate_params(run: &str, worker: &str, validity: Validity) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(run, worker);
    params.subject_alt_names = vec![SanType::URI(worker_uri(run, worker).try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = x509_time(validity.not_before);
    params.not_after = x509_time(validity.not_after);
    Ok(params)
}

/// A worker's own key, made in its own memory and never written anywhere.
pub struct WorkerKey {
    run: String,
    worker: String,
    key: KeyPair,
}

impl std::fmt::Debug for WorkerKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        formatter
            .debug_struct("WorkerKey")
            .field("run", &self.run)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl WorkerKey {
    /// A fresh ECDSA P-256 key for `worker` of `run`.
    pub fn generate(run: &str, worker: &str) -> Result<WorkerKey, TlsError> {
        Ok(WorkerKey { run: run.to_owned(), worker: worker.to_owned(), key: KeyPair::generate()? })
    }

    /// A certificate request (PEM) for this key, naming the worker.
    pub fn certificate_request(&self) -> Result<String, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.run, &self.worker);
        params.subject_alt_names = vec![SanType::URI(worker_uri(&self.run, &self.worker).try_into()?)];
        Ok(params.serialize_request(&self.key)?.pem()?)
    }

    /// This key with the certificate the run's authority signed for it, and
    /// that authority (`authority_pem`) as the only one trusted.
    pub fn with_certificate(self, authority_pem: &str, certificate_pem: &str) -> Result<WorkerCredentials, TlsError> {
        let pem_error = |what: &'static str| {
            move |error: rustls::pki_types::pem::Error| TlsError::Pem { what, reason: error.to_string() }
        };
        let authority =
            CertificateDer::from_pem_slice(authority_pem.as_bytes()).map_err(pem_error("run authority certificate"))?;
        let chain = CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("worker certificate"))?;
        if chain.is_empty() {
            return Err(TlsError::Pem { what: "worker certificate", reason: "no certificate in it".into() });
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        Ok(WorkerCredentials { authority, chain, key })
    }
}

/// What a worker presents and trusts, in its memory only.
pub struct WorkerCredentials {
    authority: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for WorkerCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        formatter.debug_struct("WorkerCredentials").finish_non_exhaustive()
    }
}

impl WorkerCredentials {
    /// The fingerprint of the worker's own certificate.
    pub fn fingerprint(&self) -> CertificateFingerprint {
        CertificateFingerprint::of(&self.chain[0])
    }
}

/// The URI a worker's certificate names it by: `urn:mayfly:run:RUN:worker:WORKER`.
pub fn worker_uri(run: &str, worker: &str) -> String {
    format!("urn:mayfly:run:{run}:worker:{worker}")
}

fn distinguished_name(run: &str, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Mayfly");
    name.push(DnType::OrganizationalUnitName, format!("run {run}"));
    name.push(DnType::CommonName, common_name);
    name
}

fn server_name(name: &str) -> Result<SanType, TlsError> {
    if let Ok(address) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(address));
    }
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(TlsError::BadServerName { name: name.to_owned() });
    }
    let dns = name.to_owned().try_into().map_err(|_| TlsError::BadServerName { name: name.to_owned() })?;
    Ok(SanType::DnsName(dns))
}

/// A worker's client side: it presents its own certificate and trusts only the run's authority.
pub fn worker_client_config(credentials: &WorkerCredentials) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(credentials.authority.clone())?;
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(credentials.chain.clone(), credentials.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An enrolling worker's client side: no certificate of its own yet, and
/// only the run's authority (`authority_pem`) trusted.
pub fn enrollment_client_config(authority_pem: &str) -> Result<ClientConfig, TlsError> {
    let authority = CertificateDer::from_pem_slice(authority_pem.as_bytes())
        .map_err(|error| TlsError::Pem { what: "run authority certificate", reason: error.to_string() })?;
    let mut roots = RootCertStore::empty();
    roots.add(authority)?;
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serve `router` over TLS on `listener` until the task is dropped. Each
/// connection is handshaken in a task of its own (a slow or hostile client
/// holds up no one), kept alive for as many requests as the client sends,
/// and every request on it carries the client's [`CertificateFingerprint`]
/// as an extension. Connections end with this task.
pub async fn serve(listener: tokio::net::TcpListener, config: Arc<ServerConfig>, router: axum::Router) {
    serve_connections(listener, config, router, true).await;
}

/// Serve `router` over TLS on `listener` to clients without a certificate
/// (the enrollment port: `config` from [`RunAuthority::enrollment_server_config`]).
pub async fn serve_enrollment(listener: tokio::net::TcpListener, config: Arc<ServerConfig>, router: axum::Router) {
    serve_connections(listener, config, router, false).await;
}

async fn serve_connections(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    client_certificates: bool,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %error, "cannot accept a worker connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::warn!(peer = %peer, error = %error, "refused a connection: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, "refused a connection: no TLS handshake within 10 s");
                    return;
                }
            };
            // The verifier demands a client certificate, so a finished handshake has one.
            let fingerprint = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| CertificateFingerprint::of(c));
            if client_certificates && fingerprint.is_none() {
                tracing::warn!(peer = %peer, "refused a connection without a client certificate");
                return;
            }
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                if let Some(fingerprint) = fingerprint {
                    request.extensions_mut().insert(fingerprint);
                }
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(peer = %peer, error = %error, "worker connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + seconds * 1000)
    }

    #[test]
    fn a_worker_certificate_lasts_until_the_deadline_plus_skew_when_that_is_sooner_than_the_cap() {
        let policy = CertificatePolicy::default();
        let validity = policy.worker_validity(at(0), at(3600));
        assert_eq!(validity.not_before, at(-300));
        assert_eq!(validity.not_after, at(3600 + 300));
        assert_eq!(validity.retire_at, None, "it outlives the run: no replacement needed");
    }

    #[test]
    fn a_worker_certificate_of_a_long_run_is_capped_and_its_worker_retires_three_quarters_in() {
        let policy = CertificatePolicy::default();
        let validity = policy.worker_validity(at(0), at(24 * 3600));
        assert_eq!(validity.not_after, at(4 * 3600 + 300));
        assert_eq!(validity.retire_at, Some(at(3 * 3600)));
    }

    #[test]
    fn certificates_of_a_run_past_its_deadline_still_last_the_minimum() {
        let policy = CertificatePolicy::default();
        assert_eq!(policy.worker_validity(at(100), at(0)).not_after, at(100 + 600 + 300));
        assert_eq!(policy.authority_validity(at(100), at(0)).not_after, at(100 + 600 + 300));
        assert_eq!(policy.authority_validity(at(0), at(48 * 3600)).not_after, at(48 * 3600 + 300));
    }

    #[test]
    fn a_server_name_that_is_neither_an_address_nor_a_host_name_is_refused() {
        for name in ["", "bad name", "under_score", "a..b"] {
            assert!(matches!(server_name(name), Err(TlsError::BadServerName { .. })), "{name:?}");
        }
        assert!(matches!(server_name("10.77.1.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(server_name("coordinator.mayfly-phi"), Ok(SanType::DnsName(_))));
    }

    fn authority() -> RunAuthority {
        RunAuthority::create("r1", CertificatePolicy::default().authority_validity(at(0), at(60)))
            .expect("an authority")
    }

    #[test]
    fn a_worker_request_is_signed_for_its_own_name_and_makes_a_client_configuration() {
        let authority = authority();
        let key = WorkerKey::generate("r1", "w1-001").unwrap();
        let request = key.certificate_request().unwrap();
        let validity = CertificatePolicy::default().worker_validity(at(0), at(60));
        let (certificate, fingerprint) = authority.sign_worker_request("w1-001", &request, validity).unwrap();
        let credentials = key.with_certificate(authority.certificate_pem(), &certificate).unwrap();
        assert_eq!(credentials.fingerprint(), fingerprint);
        worker_client_config(&credentials).expect("the credentials make a client configuration");
        let (again, _) = authority.sign_worker_request("w1-001", &request, validity).unwrap();
        assert_ne!(again, certificate, "each signature is a new certificate");
    }

    #[test]
    fn a_request_naming_another_worker_or_unreadable_is_refused() {
        let authority = authority();
        let validity = CertificatePolicy::default().worker_validity(at(0), at(60));
        let other = WorkerKey::generate("r1", "w1-002").unwrap().certificate_request().unwrap();
        assert!(matches!(
            authority.sign_worker_request("w1-001", &other, validity),
            Err(RequestRefusal::OtherName { .. })
        ));
        let other_run = WorkerKey::generate("r2", "w1-001").unwrap().certificate_request().unwrap();
        assert!(matches!(
            authority.sign_worker_request("w1-001", &other_run, validity),
            Err(RequestRefusal::OtherName { .. })
        ));
        assert!(matches!(
            authority.sign_worker_request("w1-001", "not a request", validity),
            Err(RequestRefusal::Unusable { .. })
        ));
    }
}
