//! TLS to the server, with libpq's `sslmode` names: a state store URL's
//! `sslmode` and `sslrootcert` are read here (the `postgres` crate knows
//! neither `verify-ca` nor `verify-full` nor `sslrootcert`), and every
//! connection goes through one rustls connector (`tokio-postgres-rustls`,
//! the ring provider the workspace uses) whose certificate check the mode
//! decides:
//!
//! - `disable`: plaintext.
//! - `prefer` (libpq's default, and the default here when no `sslmode` is
//!   given): TLS when the server offers it, plaintext when it does not, the
//!   certificate not checked (libpq's meaning: it stops a passive listener,
//!   not an impostor). With a CA file it is checked as under `verify-ca`.
//! - `require`: TLS or no connection; the certificate is not checked unless
//!   a CA file is given, and then as under `verify-ca` (libpq's rule).
//! - `verify-ca`: TLS, and the certificate must chain to the CA file.
//! - `verify-full`: as `verify-ca`, and the certificate must also name the
//!   host connected to (a DNS name, or an IP address among its IP SANs).
//!
//! Client certificates (`sslcert`, `sslkey`) and revocation lists
//! (`sslcrl`) are not built: a URL naming one is refused by name, rather
//! than connecting without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mayfly_state::{Result, StateError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection uses TLS (libpq's `sslmode`, less `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The mode's name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The mode the `postgres` crate is given: whether TLS is tried, and
    /// whether it is insisted on (the certificate check is the connector's).
    fn for_client(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => postgres::config::SslMode::Require,
        }
    }
}

/// How to reach a store's server over TLS: the mode and the CA file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// The certificates of the authorities a server's certificate must chain
    /// to (PEM); `None` when none was given.
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings { mode: SslMode::Prefer, ca_file: None }
    }
}

impl TlsSettings {
    /// What the server's certificate is checked for, in words (for errors).
    pub fn describe(&self) -> String {
        match (&self.ca_file, self.mode) {
            (_, SslMode::Disable) => "sslmode=disable".to_owned(),
            (Some(file), mode) => format!("sslmode={}, CA file {}", mode.as_str(), file.display()),
            (None, mode) => format!("sslmode={}", mode.as_str()),
        }
    }

    /// Check that the settings can work before anything connects: the
    /// verifying modes need a CA file, and the CA file must be readable PEM
    /// holding at least one certificate.
    pub fn check(&self) -> Result<()> {
        if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) && self.ca_file.is_none() {
            return Err(StateError::Backend(format!(
                "`sslmode={}` needs a CA file to check the server's certificate against: add `sslrootcert=/path/to/ca.pem` \
to the state store URL, or `ca_file = \"...\"` to `[state]`",
                self.mode.as_str()
            )));
        }
        if self.mode != SslMode::Disable
            && let Some(file) = &self.ca_file
        {
            load_roots(file)?;
        }
        Ok(())
    }

    /// The connector for these settings.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.ca_file, self.mode) {
            (_, SslMode::Disable) | (None, _) => Arc::new(AnyCertificate { provider: provider.clone() }),
            (Some(file), mode) => {
                let roots = load_roots(file)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(
                        |error| StateError::Backend(format!("the CA file {} cannot be used: {error}", file.display())),
                    )?;
                Arc::new(ChainVerifier { webpki, check_name: mode == SslMode::VerifyFull })
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| StateError::Backend(format!("cannot set up TLS: {error}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

fn load_roots(file: &Path) -> Result<RootCertStore> {
    let unreadable = |reason: String| {
        StateError::Backend(format!("cannot use the CA file {} for the state store: {reason}", file.display()))
    };
    let bytes = std::fs::read(file).map_err(|error| unreadable(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        let certificate = certificate.map_err(|error| unreadable(format!("not PEM: {error}")))?;
        roots.add(certificate).map_err(|error| unreadable(format!("not a usable certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(unreadable("it holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)".to_owned()));
    }
    Ok(roots)
}

/// `verify-ca` and `verify-full`: the chain to the CA file, and under
/// `verify-full` the name. (rustls checks the name after the chain, so a
/// name error means the chain was good.)
#[derive(Debug)]
struct ChainVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA file: any certificate (libpq's
/// meaning), the handshake's signatures still checked.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS parameters a URL may hold, and whether it is in URL or
/// key=value form.
const TLS_PARAMETERS: &[&str] = &["sslmode", "sslrootcert"];
/// TLS parameters that are not built; refused by name.
const UNSUPPORTED_PARAMETERS: &[&str] = &["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir", "sslsni"];

/// Split a state store URL into what the `postgres` crate parses (the URL
/// without `sslmode` and `sslrootcert`) and the TLS settings those give.
/// A relative `sslrootcert` is resolved against `base`.
pub(crate) fn split_tls(url: &str, base: Option<&Path>) -> Result<(String, TlsSettings)> {
    let mut mode = None;
    let mut ca_file = None;
    let mut take = |key: &str, value: &str| -> Result<()> {
        if UNSUPPORTED_PARAMETERS.contains(&key) {
            return Err(StateError::Backend(format!(
                "`{key}` in the state store URL is not supported (client certificates and revocation lists are not built); \
remove it, and authenticate with a password"
            )));
        }
        match key {
            "sslmode" => {
                mode = Some(SslMode::parse(value).ok_or_else(|| {
                    StateError::Backend(format!(
                        "`sslmode={value}` in the state store URL is not a mode; use disable, prefer, require, verify-ca or verify-full"
                    ))
                })?);
            }
            "sslrootcert" => {
                let path = PathBuf::from(value);
                ca_file = Some(match base {
                    Some(base) if path.is_relative() => base.join(path),
                    _ => path,
                });
            }
            _ => {}
        }
        Ok(())
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((head, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let value = percent_decode(value);
                    take(key, &value)?;
                    if !TLS_PARAMETERS.contains(&key) {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { head.to_owned() } else { format!("{head}?{}", kept.join("&")) }
            }
        }
    } else {
        // key=value form (values with spaces are quoted; TLS values are not).
        let mut kept = Vec::new();
        for part in url.split_whitespace() {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            take(key, value.trim_matches('\''))?;
            if !TLS_PARAMETERS.contains(&key) {
                kept.push(part);
            }
        }
        kept.join(" ")
    };
    Ok((rest, TlsSettings { mode: mode.unwrap_or(SslMode::Prefer), ca_file }))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%'
            && let Some(byte) = value.get(at + 1..at + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            at += 3;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Set the `postgres` crate's mode from the settings.
pub(crate) fn apply(config: &mut postgres::Config, tls: &TlsSettings) {
    config.ssl_mode(tls.mode.for_client());
}

/// Why a connection failed, in words, when TLS is the reason: the
/// certificate's issuer, its names, or a server without TLS.
pub(crate) fn explain(error: &(dyn std::error::Error + 'static), tls: &TlsSettings, host: &str) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        let rustls_error = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| cause.downcast_ref::<rustls::Error>());
        if let Some(rustls_error) = rustls_error {
            let ca = tls.ca_file.as_ref().map_or_else(|| "the CA file".to_owned(), |file| file.display().to_string());
            return Some(match rustls_error {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
                    format!("the server's certificate is not signed by an authority in {ca} ({})", tls.describe())
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                ) => format!(
                    "the server's certificate does not name `{host}` ({}); connect by a name the certificate holds, \
or use sslmode=verify-ca to check only the authority",
                    tls.describe()
                ),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => {
                    format!("the server's certificate has expired ({})", tls.describe())
                }
                other => format!("the TLS handshake failed: {other} ({})", tls.describe()),
            });
        }
        if cause.to_string().contains("server does not support TLS") {
            return Some(format!(
                "the server does not offer TLS, and {} insists on it; turn on `ssl` in the server's configuration",
                tls.describe()
            ));
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_either_form() {
        let (rest, tls) = split_tls(
            "postgres://u@h:5/d?sslmode=verify-full&sslrootcert=ca%20dir/ca.pem&connect_timeout=3",
            Some(Path::new("/p")),
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5/d?connect_timeout=3");
        assert_eq!(tls, TlsSettings { mode: SslMode::VerifyFull, ca_file: Some(PathBuf::from("/p/ca dir/ca.pem")) });
        let (rest, tls) = split_tls("host=h user=u sslmode=require dbname=d", None).unwrap();
        assert_eq!(rest, "host=h user=u dbname=d");
        assert_eq!(tls, TlsSettings { mode: SslMode::Require, ca_file: None });
        let (rest, tls) = split_tls("postgres://u@h/d?sslmode=disable", None).unwrap();
        assert_eq!((rest.as_str(), tls.mode), ("postgres://u@h/d", SslMode::Disable));
        assert_eq!(split_tls("postgres://u@h/d", None).unwrap().1, TlsSettings::default());
        let error = split_tls("postgres://u@h/d?sslmode=verify", None).unwrap_err().to_string();
        assert!(error.contains("`sslmode=verify` in the state store URL is not a mode"), "{error}");
        let error = split_tls("postgres://u@h/d?sslcert=c.pem", None).unwrap_err().to_string();
        assert!(error.contains("`sslcert` in the state store URL is not supported"), "{error}");
        let error = TlsSettings { mode: SslMode::VerifyCa, ca_file: None }.check().unwrap_err().to_string();
        assert!(error.contains("`sslmode=verify-ca` needs a CA file"), "{error}");
        let error =
            TlsSettings { mode: SslMode::VerifyCa, ca_file: Some("/nonexistent/ca.pem".into()) }.check().unwrap_err();
        assert!(error.to_string().contains("cannot use the CA file /nonexistent/ca.pem"), "{error}");
    }
}
