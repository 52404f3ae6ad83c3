//! The AWS endpoint as a container instance reaches it: a listener on its
//! function network's gateway address (a port of its own, beside its
//! Runtime API), answering only that container's address, that hands each
//! connection to the credential issuer's [`EndpointRelay`], which carries it
//! to the AWS endpoint over TLS. The container dials it in plain HTTP: the
//! function network is internal (a bridge on this host that reaches nothing
//! beyond the gateway), like the Runtime API the container already talks to
//! there; see ARCHITECTURE's Decisions, "Container functions' credentials".

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::invoker::EndpointRelay;
use crate::peers::{AllowedPeer, serve_allowed};

/// The variables that name the endpoint (`AWS_ENDPOINT_URL`) and its certificate (`AWS_CA_BUNDLE`).
const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL";
const CA_BUNDLE_VARIABLE: &str = "AWS_CA_BUNDLE";

/// A running relay listener; dropping it stops it and every connection it carries.
pub(crate) struct GatewayRelay {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GatewayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GatewayRelay {
    /// Listens on a free port of `gateway` for `allowed` peers and hands their connections to `relay`.
    pub(crate) async fn start(
        gateway: IpAddr,
        allowed: AllowedPeer,
        relay: Arc<dyn EndpointRelay>,
    ) -> std::io::Result<GatewayRelay> {
        let listener = TcpListener::bind((gateway, 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, allowed, relay));
        Ok(GatewayRelay { address, task })
    }

    /// `credentials` as the container must see them: the endpoint is this
    /// relay (plain HTTP on the gateway), and there is no certificate to trust.
    pub(crate) fn container_variables(&self, credentials: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut variables = credentials.clone();
        variables.insert(ENDPOINT_VARIABLE.to_owned(), format!("http://{}", self.address));
        variables.remove(CA_BUNDLE_VARIABLE);
        variables
    }
}

async fn serve(listener: TcpListener, allowed: AllowedPeer, relay: Arc<dyn EndpointRelay>) {
    serve_allowed(listener, allowed, "AWS endpoint relay", move |stream| {
        let relay = Arc::clone(&relay);
        async move { relay.carry(stream).await }
    })
    .await
}

/// A container instance's AWS credentials and what carries its connections to their endpoint.
pub(crate) struct ContainerCredentials {
    pub variables: BTreeMap<String, String>,
    pub relay: Arc<dyn EndpointRelay>,
}

impl ContainerCredentials {
    /// Starts the relay listener on `gateway` for `allowed` peers; the error says why it cannot.
    pub(crate) async fn listen(&self, gateway: IpAddr, allowed: AllowedPeer) -> Result<GatewayRelay, String> {
        GatewayRelay::start(gateway, allowed, Arc::clone(&self.relay))
            .await
            .map_err(|error| format!("cannot listen on {gateway} for the function's AWS endpoint: {error}"))
    }
}
