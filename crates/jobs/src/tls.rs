//! Mutual TLS between a run's coordinator and its workers.
//!
//! A coordinator creates a certificate authority for its run when it starts
//! ([`RunAuthority::create`]); the authority's private key exists only in
//! that coordinator's memory. With it the coordinator issues itself a server
//! certificate naming every address it tells workers to dial
//! ([`RunAuthority::server_config`]), and each worker a short-lived client
//! certificate naming the run and the worker, written with its key into a
//! directory of the worker's own ([`RunAuthority::issue_worker_files`]:
//! `ca.pem`, `cert.pem`, `key.pem`, all owner-only). A worker is given that
//! directory with `--tls-dir` and trusts the run's authority and nothing else
//! ([`worker_client_config`]).
//!
//! The server ([`serve`]) completes a handshake only with a client whose
//! certificate chains to the run's authority, and marks every request with
//! the fingerprint of the certificate its connection presented
//! ([`CertificateFingerprint`]), so the coordinator can check that a worker
//! speaks only for itself. Plain HTTP never gets an answer. Only rustls'
//! `ring` provider is used, and only TLS 1.3: both ends are Mayfly.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

/// The run authority's certificate, in a worker's TLS directory.
pub const CA_FILE: &str = "ca.pem";
/// The worker's own certificate, in its TLS directory.
pub const CERTIFICATE_FILE: &str = "cert.pem";
/// The worker's private key (PKCS #8), in its TLS directory.
pub const KEY_FILE: &str = "key.pem";

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
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {reason} (the worker's --tls-dir must hold ca.pem, cert.pem and key.pem)")]
    Read { path: PathBuf, reason: String },
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
    /// this long: its key is on disk, where the authority's is not.
    pub worker_lifetime_cap: Duration,
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
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.run, &format!("Mayfly run {} coordinator", self.run));
        params.subject_alt_names = names.iter().map(|name| server_name(name)).collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = x509_time(validity.not_before);
        params.not_after = x509_time(validity.not_after);
        let certificate = params.signed_by(&key, &self.issuer)?;

        let provider = ring();
        let mut roots = RootCertStore::empty();
        roots.add(self.certificate.clone())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Issue `worker` a client certificate and write it, its key and the
    /// authority's certificate into `directory` (anything already there is
    /// replaced), readable as `access` says. Returns the certificate's fingerprint.
    pub fn issue_worker_files(
        &self,
        worker: &str,
        validity: Validity,
        directory: &Path,
        access: FileAccess,
    ) -> Result<CertificateFingerprint, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&self.run, worker);
        params.subject_alt_names = vec![SanType::URI(worker_uri(&self.run, worker).try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = x509_time(validity.not_before);
        params.not_after = x509_time(validity.not_after);
        let certificate = params.signed_by(&key, &self.issuer)?;

        remove_tls_directory(directory)?;
        if access == FileAccess::ThroughPrivateParent {
            let parent = directory.parent().ok_or_else(|| TlsError::Write {
                path: directory.to_owned(),
                source: std::io::Error::other("a worker's TLS directory needs a private parent directory"),
            })?;
            create_directory(parent, 0o700)?;
        }
        let (directory_mode, file_mode) = access.modes();
        create_directory(directory, directory_mode)?;
        write_file(&directory.join(CA_FILE), self.certificate_pem.as_bytes(), file_mode)?;
        write_file(&directory.join(CERTIFICATE_FILE), certificate.pem().as_bytes(), file_mode)?;
        write_file(&directory.join(KEY_FILE), key.serialize_pem().as_bytes(), file_mode)?;
        Ok(CertificateFingerprint::of(certificate.der()))
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

/// Who may read a worker's TLS files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    /// Only this user: the directory 0700, the files 0600. For a worker that
    /// runs as this user (a local process).
    OwnerOnly,
    /// Any user that can reach the directory (0755, files 0644), while its
    /// parent directory is made owner-only (0700), so no other user of the
    /// host can. For a worker in a container, whose user (the image's) is
    /// not this one and which sees the directory through a bind mount, not
    /// through its parent.
    ThroughPrivateParent,
}

impl FileAccess {
    fn modes(self) -> (u32, u32) {
        match self {
            FileAccess::OwnerOnly => (0o700, 0o600),
            FileAccess::ThroughPrivateParent => (0o755, 0o644),
        }
    }
}

fn create_directory(directory: &Path, mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(directory)
        .map_err(|source| TlsError::Write { path: directory.to_owned(), source })?;
    // The umask may have narrowed the mode.
    set_mode(directory, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| TlsError::Write { path: path.to_owned(), source })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .map_err(|source| TlsError::Write { path: path.to_owned(), source })?;
    set_mode(path, mode)
}

/// Remove a worker's TLS directory; a missing one is fine.
pub fn remove_tls_directory(directory: &Path) -> Result<(), TlsError> {
    match std::fs::remove_dir_all(directory) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(TlsError::Write { path: directory.to_owned(), source }),
    }
}

/// A worker's client side, from its TLS directory: it presents its own
/// certificate and trusts only the run's authority in `ca.pem`.
pub fn worker_client_config(directory: &Path) -> Result<ClientConfig, TlsError> {
    let read_error = |path: &Path| {
        let path = path.to_owned();
        move |error: rustls::pki_types::pem::Error| TlsError::Read { path, reason: error.to_string() }
    };
    let ca_path = directory.join(CA_FILE);
    let authority = CertificateDer::from_pem_file(&ca_path).map_err(read_error(&ca_path))?;
    let certificate_path = directory.join(CERTIFICATE_FILE);
    let chain = CertificateDer::pem_file_iter(&certificate_path)
        .map_err(read_error(&certificate_path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error(&certificate_path))?;
    if chain.is_empty() {
        return Err(TlsError::Read { path: certificate_path, reason: "no certificate in it".into() });
    }
    let key_path = directory.join(KEY_FILE);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(read_error(&key_path))?;

    let mut roots = RootCertStore::empty();
    roots.add(authority)?;
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Serve `router` over TLS on `listener` until the task is dropped. Each
/// connection is handshaken in a task of its own (a slow or hostile client
/// holds up no one), kept alive for as many requests as the client sends,
/// and every request on it carries the client's [`CertificateFingerprint`]
/// as an extension. Connections end with this task.
pub async fn serve(listener: tokio::net::TcpListener, config: Arc<ServerConfig>, router: axum::Router) {
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
            let Some(fingerprint) = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| CertificateFingerprint::of(c))
            else {
                tracing::warn!(peer = %peer, "refused a connection without a client certificate");
                return;
            };
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(fingerprint);
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

    #[test]
    fn worker_files_are_owner_only_and_replaced_on_reissue() {
        use std::os::unix::fs::PermissionsExt;
        let authority = RunAuthority::create("r1", CertificatePolicy::default().authority_validity(at(0), at(60)))
            .expect("an authority");
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("tls").join("w1-001");
        let validity = CertificatePolicy::default().worker_validity(at(0), at(60));
        let first = authority.issue_worker_files("w1-001", validity, &files, FileAccess::OwnerOnly).unwrap();
        let second = authority.issue_worker_files("w1-001", validity, &files, FileAccess::OwnerOnly).unwrap();
        assert_ne!(first, second, "a reissue is a new certificate");
        assert_eq!(std::fs::metadata(&files).unwrap().permissions().mode() & 0o777, 0o700);
        for file in [CA_FILE, CERTIFICATE_FILE, KEY_FILE] {
            let mode = std::fs::metadata(files.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        assert_eq!(std::fs::read_to_string(files.join(CA_FILE)).unwrap(), authority.certificate_pem());
        worker_client_config(&files).expect("the files make a client configuration");
        remove_tls_directory(&files).unwrap();
        assert!(!files.exists());
        remove_tls_directory(&files).expect("removing twice is fine");
    }

    #[test]
    fn a_container_workers_files_are_readable_below_an_owner_only_parent() {
        use std::os::unix::fs::PermissionsExt;
        let authority = RunAuthority::create("r1", CertificatePolicy::default().authority_validity(at(0), at(60)))
            .expect("an authority");
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("tls").join("w1-001");
        let validity = CertificatePolicy::default().worker_validity(at(0), at(60));
        authority.issue_worker_files("w1-001", validity, &files, FileAccess::ThroughPrivateParent).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("tls")), 0o700, "no other user of the host gets past the parent");
        assert_eq!(mode(&files), 0o755);
        for file in [CA_FILE, CERTIFICATE_FILE, KEY_FILE] {
            assert_eq!(mode(&files.join(file)), 0o644, "{file}");
        }
        worker_client_config(&files).expect("the files make a client configuration");
    }

    #[test]
    fn a_tls_directory_with_a_missing_file_is_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = worker_client_config(dir.path()).unwrap_err().to_string();
        assert!(error.contains("ca.pem") && error.contains("--tls-dir"), "{error}");
    }
}
