//! The API that follows the recorded deployments: [`following_router`]
//! serves every `/v1` request from the deployment current when the request
//! arrives, and picks up a new one within about a second of `mayfly deploy`,
//! without a restart.
//!
//! Each deployment becomes one immutable snapshot — its architecture,
//! version and fleet, and the `/v1` router built from them (so
//! `[[api.routes]]` and the OpenAPI document change with it). A request
//! takes the current snapshot once and is served by it to the end: it never
//! sees half of two deployments. Every `/v1` response names its deployment
//! in the `mayfly-deployment` header. A new deployment that does not parse,
//! or whose fleet cannot be reached, is logged and the previous snapshot
//! kept.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use futures::future::BoxFuture;
use mayfly_control::{DEPLOYMENT_POLL, DeploymentWatch, ParsedDeployment};
use mayfly_fleet::Provisioner;
use mayfly_spec::Architecture;
use tokio::sync::watch;
use tower_service::Service;

use crate::{API_PREFIX, ApiConfig, ApiState};

/// Names the deployment that served a `/v1` response.
pub const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static("mayfly-deployment");

/// The fleet of a deployment could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FleetUnavailable(pub String);

/// Derives the provisioners a deployment's runs may hold resources in
/// ([`ApiConfig::fleet`]) from its architecture; the CLI's answer depends
/// on whether a job runs its workers in Docker.
pub trait FleetForDeployment: Send + Sync {
    fn fleet<'a>(
        &'a self,
        architecture: &'a Architecture,
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn Provisioner>>, FleetUnavailable>>;
}

/// One deployment as the API serves it.
struct DeploymentSnapshot {
    version: Option<u64>,
    /// The `/v1` routes built for this deployment, with its [`ApiState`].
    router: Router,
}

impl DeploymentSnapshot {
    fn of(api: ApiState) -> DeploymentSnapshot {
        DeploymentSnapshot { version: api.config().deployment_version, router: crate::router(api) }
    }

    /// Serve `request` with this deployment's routes; a `/v1` response names it.
    async fn serve(&self, request: Request) -> Response {
        let under_api = is_under_api(request.uri().path());
        let mut router = self.router.clone();
        let mut response = match router.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if let (true, Some(version)) = (under_api, self.version) {
            response.headers_mut().insert(DEPLOYMENT_HEADER, HeaderValue::from(version));
        }
        response
    }
}

fn is_under_api(path: &str) -> bool {
    path.strip_prefix(API_PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The `/v1` API of `api` (the deployment it was configured with first),
/// following every deployment recorded after it. It answers every path no
/// other router claims (it is a fallback), so merge the dashboard into it;
/// paths outside `/v1` get 404. Spawns the follower on the current Tokio
/// runtime; it stops when the router and its clones are dropped.
pub fn following_router(api: ApiState) -> Router {
    let (current, serving) = watch::channel(Arc::new(DeploymentSnapshot::of(api.clone())));
    tokio::spawn(follow_deployments(api, current));
    Router::new().fallback(move |request: Request| {
        // Taken as the request arrives, held until its response is made.
        let snapshot = serving.borrow().clone();
        async move { snapshot.serve(request).await }
    })
}

/// Publish a snapshot of each deployment recorded after `base`'s, until nobody serves them.
async fn follow_deployments(base: ApiState, current: watch::Sender<Arc<DeploymentSnapshot>>) {
    let config = base.config();
    let mut watch = DeploymentWatch::after(config.state.clone(), config.deployment_version);
    loop {
        let found = tokio::select! {
            _ = current.closed() => return,
            found = watch.next_latest() => found,
        };
        let serving = current.borrow().version;
        let deployment = match found {
            Ok(deployment) => deployment,
            Err(error) => {
                tracing::error!(error = %error, serving = ?serving, "the API keeps serving its deployment");
                tokio::select! {
                    _ = current.closed() => return,
                    _ = tokio::time::sleep(DEPLOYMENT_POLL) => continue,
                }
            }
        };
        match snapshot_of(&base, deployment).await {
            Ok(snapshot) => {
                tracing::info!(deployment = ?snapshot.version, "the API serves the new deployment");
                current.send_replace(Arc::new(snapshot));
            }
            Err((version, error)) => {
                tracing::error!(
                    deployment = version,
                    error = %error,
                    serving = ?serving,
                    "the API cannot serve the new deployment (its fleet cannot be reached) and keeps serving its deployment"
                );
            }
        }
    }
}

async fn snapshot_of(
    base: &ApiState,
    deployment: ParsedDeployment,
) -> Result<DeploymentSnapshot, (u64, FleetUnavailable)> {
    let fleet = base
        .config()
        .fleet_for_deployment
        .fleet(&deployment.architecture)
        .await
        .map_err(|error| (deployment.version, error))?;
    let config = ApiConfig {
        architecture: deployment.architecture,
        deployment_version: Some(deployment.version),
        fleet,
        ..base.config().clone()
    };
    Ok(DeploymentSnapshot::of(base.with_config(config)))
}

#[cfg(test)]
mod tests {
    use super::is_under_api;

    #[test]
    fn only_paths_under_v1_are_the_apis() {
        for path in ["/v1", "/v1/", "/v1/queues/work", "/v1/routes/charts/1"] {
            assert!(is_under_api(path), "{path}");
        }
        for path in ["/", "/v10", "/v1x/queues", "/runs/1", "/assets/dashboard.css"] {
            assert!(!is_under_api(path), "{path}");
        }
    }
}
