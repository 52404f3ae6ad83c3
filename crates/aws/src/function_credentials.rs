//! The credentials every invocation of a function with `permissions` finds
//! in its environment, in the variables every AWS SDK reads, so an SDK
//! inside needs no configuration: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (see [`crate::sessions`]),
//! `AWS_REGION` (the region the endpoint signs for), `AWS_ENDPOINT_URL` (this
//! project's AWS endpoint) and `AWS_CA_BUNDLE` (its certificate).
//!
//! A function in a container dials the endpoint through a relay on its
//! function network's gateway ([`EndpointRelay`]): plain HTTP from the
//! container to the gateway, TLS from there on, checked against the
//! endpoint's certificate as a local function checks it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use mayfly_core::Timestamp;
use mayfly_runtime::{CredentialIssuer, EndpointRelay, FunctionDefinition, IssuedCredentials};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::REGION;
use crate::sessions::SessionKeys;

/// Issues function credentials for the runtime's invoker.
#[derive(Clone)]
pub struct FunctionCredentials {
    keys: SessionKeys,
    /// The address a local function dials; set again once the endpoint is bound (port 0).
    endpoint: Arc<RwLock<SocketAddr>>,
    /// The URL handed out instead, for job workers off this host
    /// (`[api].aws_advertise`); the certificate names its host.
    advertised: Option<String>,
    ca_bundle: PathBuf,
}

impl std::fmt::Debug for FunctionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCredentials").field("endpoint", &self.endpoint_url()).finish_non_exhaustive()
    }
}

/// The URL a local function dials for an endpoint listening on `address`
/// (a wildcard address is reached on loopback).
pub fn endpoint_url(address: SocketAddr) -> String {
    format!("https://{}", dialled_address(address))
}

/// The address a local process dials for an endpoint listening on `address`.
fn dialled_address(address: SocketAddr) -> SocketAddr {
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(host, address.port())
}

impl FunctionCredentials {
    /// Credentials for the endpoint at `endpoint` (where it will listen),
    /// whose certificate is the PEM file `ca_bundle`.
    pub fn new(keys: SessionKeys, endpoint: SocketAddr, ca_bundle: PathBuf) -> FunctionCredentials {
        FunctionCredentials {
            keys,
            endpoint: Arc::new(RwLock::new(dialled_address(endpoint))),
            advertised: None,
            ca_bundle,
        }
    }

    /// The same credentials with `AWS_ENDPOINT_URL` the advertised `url`
    /// (`[api].aws_advertise`), for job workers on other hosts.
    pub fn advertised_at(mut self, url: String) -> FunctionCredentials {
        self.advertised = Some(url);
        self
    }

    /// The endpoint was bound at `address` (e.g. a port picked by the system).
    pub fn set_endpoint(&self, address: SocketAddr) {
        *self.endpoint.write().unwrap_or_else(std::sync::PoisonError::into_inner) = dialled_address(address);
    }

    /// The endpoint's certificate (PEM file).
    pub fn ca_bundle(&self) -> &std::path::Path {
        &self.ca_bundle
    }

    pub fn endpoint_url(&self) -> String {
        match &self.advertised {
            Some(url) => url.clone(),
            None => format!("https://{}", self.endpoint_address()),
        }
    }

    fn endpoint_address(&self) -> SocketAddr {
        *self.endpoint.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl CredentialIssuer for FunctionCredentials {
    fn variables(&self, function: &FunctionDefinition, expires_at: Timestamp) -> IssuedCredentials {
        if function.permissions.is_empty() {
            return IssuedCredentials::default();
        }
        let deployment = function.version.parse::<u64>().ok();
        let issued = self.keys.issue(&function.name, deployment, &function.permissions, expires_at);
        let variables = [
            ("AWS_ACCESS_KEY_ID", issued.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", issued.secret_access_key),
            ("AWS_SESSION_TOKEN", issued.session_token),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_CA_BUNDLE", self.ca_bundle.display().to_string()),
        ];
        let variables = variables.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        IssuedCredentials { variables, expires_at: Some(expires_at) }
    }

    fn container_relay(&self) -> Result<Arc<dyn EndpointRelay>, String> {
        let relay = TlsRelay::new(self.endpoint_address(), &self.ca_bundle)?;
        Ok(Arc::new(relay))
    }
}

/// Carries a container's plain connection to the endpoint over TLS,
/// trusting only the endpoint's certificate and checking that it names the
/// address dialled (as an SDK in a local function checks it).
struct TlsRelay {
    endpoint: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for TlsRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRelay").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl TlsRelay {
    fn new(endpoint: SocketAddr, ca_bundle: &std::path::Path) -> Result<TlsRelay, String> {
        let unreadable = |error: &dyn std::fmt::Display| {
            format!("the AWS endpoint's certificate {} cannot be read: {error}", ca_bundle.display())
        };
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca_bundle).map_err(|error| unreadable(&error))? {
            roots.add(certificate.map_err(|error| unreadable(&error))?).map_err(|error| unreadable(&error))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("cannot configure TLS to the AWS endpoint: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The container speaks HTTP/1.1; the endpoint must not pick HTTP/2 for it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsRelay { endpoint, connector: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }
}

impl EndpointRelay for TlsRelay {
    fn carry(&self, mut connection: tokio::net::TcpStream) -> BoxFuture<'static, ()> {
        let endpoint = self.endpoint;
        let connector = self.connector.clone();
        Box::pin(async move {
            let upstream = match tokio::net::TcpStream::connect(endpoint).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    tracing::warn!(%endpoint, error = %error, "a container's AWS request cannot reach the endpoint");
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            let name = ServerName::IpAddress(endpoint.ip().into());
            let mut upstream = match connector.connect(name, upstream).await {
                Ok(upstream) => upstream,
                Err(error) => {
                    tracing::warn!(%endpoint, error = %error, "TLS to the AWS endpoint failed for a container's request");
                    return;
                }
            };
            if let Err(error) = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await {
                tracing::debug!(error = %error, "a relayed AWS endpoint connection ended");
            }
        })
    }
}
