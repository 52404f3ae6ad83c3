//! TLS for the API: the project's self-signed certificate for localhost
//! (generated once under `.mayfly/tls/`, the key owner-only, and made again
//! with the same key when it must also name `[api].aws_advertise`'s host), or
//! the user's own certificate and key, loaded into a rustls server
//! configuration on the `ring` provider; and the check that a certificate
//! names a host, as a client checks it (rustls's own `verify_server_name`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Where a certificate and its key are, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{} holds no PEM certificate{}", path.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NoCertificate { path: PathBuf, detail: Option<String> },
    #[error("{} holds no PEM private key ({detail}); give the key that belongs to the certificate", path.display())]
    NoKey { path: PathBuf, detail: String },
    #[error("the certificate {} and the key {} do not make a TLS configuration: {source}", cert.display(), key.display())]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("the certificate {} cannot be read as X.509: {source}", path.display())]
    Unparsable { path: PathBuf, source: rustls::Error },
    #[error("`{host}` is not a host name or IP address a certificate can name")]
    NotAHost { host: String },
    #[error("the certificate {} does not name `{host}` (a DNS name or IP address among its subject alternative names), so clients that dial `{host}` refuse it: {source}", path.display())]
    DoesNotName { path: PathBuf, host: String, source: rustls::Error },
}

/// The names the generated certificate is valid for.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The generated certificate's files under `tls_dir` (`.mayfly/tls/`).
pub fn self_signed_paths(tls_dir: &Path) -> TlsPaths {
    TlsPaths { cert: tls_dir.join("cert.pem"), key: tls_dir.join("key.pem") }
}

/// The project's self-signed certificate under `tls_dir`, generated (for
/// localhost, 127.0.0.1 and ::1; the key readable by the owner only) if it
/// is not there yet. Returns its paths and whether it was generated now.
pub fn ensure_self_signed(tls_dir: &Path) -> Result<(TlsPaths, bool), TlsError> {
    let (paths, made) = ensure_self_signed_naming(tls_dir, None)?;
    Ok((paths, made == SelfSigned::Generated))
}

/// What [`ensure_self_signed_naming`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfSigned {
    /// The certificate there was kept.
    Kept,
    /// There was none: a key and a certificate were generated.
    Generated,
    /// The certificate there did not name the host asked for: it was made
    /// again with the same key for [`SELF_SIGNED_NAMES`] and that host (its
    /// fingerprint changed).
    Extended,
}

/// [`ensure_self_signed`], and when `also_names` is given the certificate
/// names that host too (a DNS name or an IP address): one that does not is
/// made again with the same key, for [`SELF_SIGNED_NAMES`] and that host.
pub fn ensure_self_signed_naming(tls_dir: &Path, also_names: Option<&str>) -> Result<(TlsPaths, SelfSigned), TlsError> {
    let paths = self_signed_paths(tls_dir);
    if paths.cert.is_file() && paths.key.is_file() {
        let Some(host) = also_names else {
            return Ok((paths, SelfSigned::Kept));
        };
        match check_names_host(&paths.cert, host) {
            Ok(()) => return Ok((paths, SelfSigned::Kept)),
            Err(TlsError::DoesNotName { .. }) => {}
            Err(error) => return Err(error),
        }
        let key_pem = std::fs::read_to_string(&paths.key).map_err(|source| TlsError::Io {
            action: "read",
            path: paths.key.clone(),
            source,
        })?;
        let key = rcgen::KeyPair::from_pem(&key_pem)?;
        let certificate = rcgen::CertificateParams::new(self_signed_names(Some(host)))?.self_signed(&key)?;
        write_private(&paths.cert, certificate.pem().as_bytes(), 0o644)?;
        tracing::info!(cert = %paths.cert.display(), host, "the API's self-signed certificate now names the advertised host");
        return Ok((paths, SelfSigned::Extended));
    }
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { action, path, source }
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(tls_dir).map_err(io("create", tls_dir))?;
    std::fs::set_permissions(tls_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("make owner-only", tls_dir))?;
    let certified = rcgen::generate_simple_self_signed(self_signed_names(also_names))?;
    // The key first, each file written aside and renamed, so a crash never leaves a certificate without its key.
    write_private(&paths.key, certified.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_private(&paths.cert, certified.cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %paths.cert.display(), "generated the API's self-signed certificate");
    Ok((paths, SelfSigned::Generated))
}

fn self_signed_names(also_names: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|name| (*name).to_owned()).collect();
    names.extend(also_names.filter(|host| !SELF_SIGNED_NAMES.contains(host)).map(str::to_owned));
    names
}

/// Whether the (first) certificate of the PEM file `cert` is valid for
/// `host` (a DNS name or an IP address) as a TLS client checks it: the
/// error says which file does not name which host.
pub fn check_names_host(cert: &Path, host: &str) -> Result<(), TlsError> {
    let certificate = CertificateDer::pem_file_iter(cert)
        .map_err(|error| TlsError::NoCertificate { path: cert.to_owned(), detail: Some(error.to_string()) })?
        .next()
        .ok_or_else(|| TlsError::NoCertificate { path: cert.to_owned(), detail: None })?
        .map_err(|error| TlsError::NoCertificate { path: cert.to_owned(), detail: Some(error.to_string()) })?;
    let parsed = rustls::server::ParsedCertificate::try_from(&certificate)
        .map_err(|source| TlsError::Unparsable { path: cert.to_owned(), source })?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| TlsError::NotAHost { host: host.to_owned() })?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|source| TlsError::DoesNotName {
        path: cert.to_owned(),
        host: host.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let aside = path.with_extension("pem.new");
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { action, path, source }
    };
    let _ = std::fs::remove_file(&aside);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&aside)
        .map_err(io("create", &aside))?;
    file.write_all(contents).map_err(io("write", &aside))?;
    file.sync_all().map_err(io("sync", &aside))?;
    std::fs::rename(&aside, path).map_err(io("rename into place", path))
}

/// A server configuration and what to tell people about its certificate.
#[derive(Debug, Clone)]
pub struct LoadedTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the (first) certificate's DER, as `AB:CD:…`.
    pub fingerprint_sha256: String,
}

/// Load a PEM certificate chain and private key into a rustls server
/// configuration (TLS 1.2 and 1.3, HTTP/1.1, no client certificates).
pub fn load(paths: &TlsPaths) -> Result<LoadedTls, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::NoCertificate { path: paths.cert.clone(), detail: Some(error.to_string()) })?;
    let Some(first) = certs.first() else {
        return Err(TlsError::NoCertificate { path: paths.cert.clone(), detail: None });
    };
    let fingerprint_sha256 = fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|error| TlsError::NoKey { path: paths.key.clone(), detail: error.to_string() })?;
    let config_error = |source| TlsError::Config { cert: paths.cert.clone(), key: paths.key.clone(), source };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoadedTls { config: Arc::new(config), fingerprint_sha256 })
}

/// `AB:CD:…`: the SHA-256 of a certificate's DER, as browsers show it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref()).iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_self_signed_certificate_is_made_once_with_an_owner_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let (paths, generated) = ensure_self_signed(&tls_dir).unwrap();
        assert!(generated);
        assert_eq!(std::fs::metadata(&paths.key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&tls_dir).unwrap().mode() & 0o777, 0o700);
        let first = load(&paths).unwrap().fingerprint_sha256;
        let (again, generated) = ensure_self_signed(&tls_dir).unwrap();
        assert!(!generated, "an existing certificate is kept");
        assert_eq!(load(&again).unwrap().fingerprint_sha256, first);
        assert_eq!(first.len(), 32 * 3 - 1);
    }

    #[test]
    fn the_self_signed_certificate_is_extended_with_its_key_to_name_an_advertised_host() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = ensure_self_signed(dir.path()).unwrap();
        let key = std::fs::read(&paths.key).unwrap();
        let before = load(&paths).unwrap().fingerprint_sha256;
        check_names_host(&paths.cert, "localhost").unwrap();
        check_names_host(&paths.cert, "127.0.0.1").unwrap();
        for host in ["10.77.0.1", "mayfly.example.org"] {
            let error = check_names_host(&paths.cert, host).unwrap_err();
            assert!(matches!(error, TlsError::DoesNotName { .. }), "{error}");
            assert!(error.to_string().contains(host) && error.to_string().contains("cert.pem"), "{error}");
        }
        let (_, made) = ensure_self_signed_naming(dir.path(), Some("10.77.0.1")).unwrap();
        assert_eq!(made, SelfSigned::Extended);
        check_names_host(&paths.cert, "10.77.0.1").unwrap();
        check_names_host(&paths.cert, "localhost").unwrap();
        assert!(check_names_host(&paths.cert, "10.77.0.2").is_err(), "only the host asked for is added");
        assert_eq!(std::fs::read(&paths.key).unwrap(), key, "the key is kept");
        assert_ne!(load(&paths).unwrap().fingerprint_sha256, before, "the certificate is a new one");
        let (_, made) = ensure_self_signed_naming(dir.path(), Some("10.77.0.1")).unwrap();
        assert_eq!(made, SelfSigned::Kept, "a certificate that names the host is kept");
        let (_, made) = ensure_self_signed_naming(dir.path(), Some("mayfly.example.org")).unwrap();
        assert_eq!(made, SelfSigned::Extended);
        check_names_host(&paths.cert, "mayfly.example.org").unwrap();

        let fresh = dir.path().join("fresh");
        let (paths, made) = ensure_self_signed_naming(&fresh, Some("fd00::1")).unwrap();
        assert_eq!(made, SelfSigned::Generated);
        check_names_host(&paths.cert, "fd00::1").unwrap();
    }

    #[test]
    fn files_that_are_not_pem_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, _) = ensure_self_signed(dir.path()).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let error = load(&TlsPaths { cert: garbage.clone(), key: paths.key.clone() }).unwrap_err();
        assert!(error.to_string().contains("garbage.pem"), "{error}");
        let error = load(&TlsPaths { cert: paths.cert.clone(), key: garbage }).unwrap_err();
        assert!(error.to_string().contains("no PEM private key"), "{error}");
    }
}
