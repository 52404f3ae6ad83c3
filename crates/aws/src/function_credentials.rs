//! The credentials every invocation of a function with `permissions` finds
//! in its environment, in the variables every AWS SDK reads, so an SDK
//! inside needs no configuration: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (see [`crate::sessions`]),
//! `AWS_REGION` (the region the endpoint signs for), `AWS_ENDPOINT_URL` (this
//! project's AWS endpoint) and `AWS_CA_BUNDLE` (its certificate).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mayfly_core::Timestamp;
use mayfly_runtime::{CredentialIssuer, FunctionDefinition, IssuedCredentials};

use crate::REGION;
use crate::sessions::SessionKeys;

/// Issues function credentials for the runtime's invoker.
#[derive(Clone)]
pub struct FunctionCredentials {
    keys: SessionKeys,
    /// `https://host:port`; set again once the endpoint is bound (port 0).
    endpoint: Arc<RwLock<String>>,
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
    let host = match address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(host, address.port()))
}

impl FunctionCredentials {
    /// Credentials for the endpoint at `endpoint` (where it will listen),
    /// whose certificate is the PEM file `ca_bundle`.
    pub fn new(keys: SessionKeys, endpoint: SocketAddr, ca_bundle: PathBuf) -> FunctionCredentials {
        FunctionCredentials { keys, endpoint: Arc::new(RwLock::new(endpoint_url(endpoint))), ca_bundle }
    }

    /// The endpoint was bound at `address` (e.g. a port picked by the system).
    pub fn set_endpoint(&self, address: SocketAddr) {
        *self.endpoint.write().unwrap_or_else(std::sync::PoisonError::into_inner) = endpoint_url(address);
    }

    /// The endpoint's certificate (PEM file).
    pub fn ca_bundle(&self) -> &std::path::Path {
        &self.ca_bundle
    }

    pub fn endpoint_url(&self) -> String {
        self.endpoint.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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
}
