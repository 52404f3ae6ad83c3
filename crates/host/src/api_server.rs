//! The project's HTTPS API and AWS-compatible endpoint as the host binds
//! them (`bind_api_server`): the certificate they serve (`[api].tls` or the
//! project's self-signed one, `serving_certificate_paths`), the credentials
//! functions with `permissions` get (`function_credentials`), the invoker's
//! settings, the dashboard beside the API and the fleet the API's runs use.
//! `mayfly serve` and `mayfly up` bind it here; so do in-process tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use mayfly_api::tls::{self, TlsPaths};
use mayfly_api::{AccessLog, ApiConfig, ApiLimits, ApiState, FleetForDeployment, FleetUnavailable};
use mayfly_control::jobs::CoordinatorLaunch;
use mayfly_core::{Clock, SystemClock};
use mayfly_dashboard::DashboardState;
use mayfly_runtime::{Invoker, InvokerConfig};
use mayfly_spec::{ApiSpec, Architecture};
use mayfly_state::StateStore;
use tokio::net::TcpListener;

use crate::dashboard_access::DashboardAccess;
use crate::project::{OpenProject, Project};

/// The project's generated certificate lives here.
pub fn tls_dir(project: &Project) -> PathBuf {
    project.data_dir().join("tls")
}

/// What getting the API's certificate made, for the caller to tell its user
/// ([`CertificateMade::notice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a certificate made is announced by the caller"]
pub enum CertificateMade {
    /// Nothing: the user's own `[api].tls`, or the project's self-signed certificate as it was.
    Nothing,
    /// The project's self-signed certificate was generated at `cert`, naming `names`.
    Generated { cert: PathBuf, names: String },
    /// The project's self-signed certificate at `cert` was made again with its
    /// key to name `names` (its fingerprint changed).
    Extended { cert: PathBuf, names: String },
}

impl CertificateMade {
    /// The line that tells the user what was made; `None` for nothing.
    pub fn notice(&self) -> Option<String> {
        match self {
            CertificateMade::Nothing => None,
            CertificateMade::Generated { cert, names } => {
                Some(format!("mayfly: generated a self-signed certificate for {names} at {}", cert.display()))
            }
            CertificateMade::Extended { cert, names } => Some(format!(
                "mayfly: made the self-signed certificate at {} again, with its key, for {names}; its fingerprint changed",
                cert.display()
            )),
        }
    }
}

/// The certificate the API serves: `[api].tls` (paths relative to the
/// project) if declared, else the project's self-signed one, generated now
/// if it is missing (which the second value says).
pub fn certificate_paths(project: &Project, api: Option<&ApiSpec>) -> Result<(TlsPaths, CertificateMade)> {
    if let Some(files) = api.and_then(|api| api.tls.as_ref()) {
        let paths = TlsPaths { cert: project.root.join(&files.cert), key: project.root.join(&files.key) };
        return Ok((paths, CertificateMade::Nothing));
    }
    let (paths, generated) =
        tls::ensure_self_signed(&tls_dir(project)).context("cannot create the API's self-signed certificate")?;
    let made = if generated {
        CertificateMade::Generated { cert: paths.cert.clone(), names: "localhost".to_owned() }
    } else {
        CertificateMade::Nothing
    };
    Ok((paths, made))
}

/// The certificate the API serves, as [`certificate_paths`], which must name
/// the host of `[api].aws_advertise` when that is set (job workers on other
/// hosts dial that name and check it): the project's self-signed certificate
/// is made again with its key to name it (which the second value says); the
/// user's own `[api].tls` certificate is refused if it does not.
pub fn serving_certificate_paths(project: &Project, api: Option<&ApiSpec>) -> Result<(TlsPaths, CertificateMade)> {
    let advertised = api.and_then(|api| api.aws_advertise.as_ref());
    if api.is_some_and(|api| api.tls.is_some()) {
        let (paths, made) = certificate_paths(project, api)?;
        if let Some(advertised) = advertised {
            check_own_certificate_names(&paths, advertised)?;
        }
        return Ok((paths, made));
    }
    let host = advertised.map(|advertised| advertised.host.to_string());
    let (paths, made) = tls::ensure_self_signed_naming(&tls_dir(project), host.as_deref())
        .context("cannot create the API's self-signed certificate")?;
    let names = match &host {
        Some(host) => format!("localhost and {host} (`[api].aws_advertise`)"),
        None => "localhost".to_owned(),
    };
    let made = match made {
        tls::SelfSigned::Kept => CertificateMade::Nothing,
        tls::SelfSigned::Generated => CertificateMade::Generated { cert: paths.cert.clone(), names },
        tls::SelfSigned::Extended => CertificateMade::Extended { cert: paths.cert.clone(), names },
    };
    Ok((paths, made))
}

/// The user's own `[api].tls` certificate must name the advertised host, or
/// workers that dial it would refuse the endpoint: refused, saying what to do.
pub fn check_own_certificate_names(paths: &TlsPaths, advertised: &mayfly_spec::AdvertisedEndpoint) -> Result<()> {
    tls::check_names_host(&paths.cert, &advertised.host.to_string()).map_err(|error| {
        crate::Refused(format!(
            "`[api].aws_advertise` is {advertised}, but the API's certificate (`[api].tls`) does not name its host, so job workers that dial it would refuse the endpoint: {error}; add `{}` to the certificate's subject alternative names, or advertise a name it holds",
            advertised.host
        ))
        .into()
    })
}

/// The credentials that invocations of functions with `permissions` get
/// (see `mayfly_aws::function_credentials`), for a project with `[api]`,
/// whose AWS endpoint checks them; `None` without `[api]`. The endpoint is
/// `[api].aws_listen` until the caller binds it and says where. The
/// certificate they trust is the API's ([`certificate_paths`], which may
/// generate it: the second value says).
pub fn function_credentials(
    located: &Project,
    opened: &OpenProject,
    architecture: &Architecture,
) -> Result<(Option<mayfly_aws::FunctionCredentials>, CertificateMade)> {
    let Some(api) = &architecture.api else {
        return Ok((None, CertificateMade::Nothing));
    };
    let keys = mayfly_aws::sessions::SessionKeys::of_store(opened.state.as_ref())
        .context("cannot derive the key of function credentials")?;
    let (paths, made) = certificate_paths(located, Some(api))?;
    let cert = std::path::absolute(paths.cert)?;
    Ok((Some(mayfly_aws::FunctionCredentials::new(keys, api.aws_listen, cert)), made))
}

/// An invoker whose instances get `credentials` (if any).
pub fn invoker_config(idle_timeout: Duration, credentials: Option<&mayfly_aws::FunctionCredentials>) -> InvokerConfig {
    InvokerConfig {
        idle_timeout,
        credentials: credentials
            .map(|credentials| Arc::new(credentials.clone()) as Arc<dyn mayfly_runtime::CredentialIssuer>),
        ..InvokerConfig::with_clock(Arc::new(SystemClock))
    }
}

/// A bound, configured API server, not yet serving.
pub struct ApiServer {
    listener: TcpListener,
    router: axum::Router,
    aws_listener: TcpListener,
    aws_router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    pub address: SocketAddr,
    /// Where the AWS-compatible endpoint listens.
    pub aws_address: SocketAddr,
    pub fingerprint_sha256: String,
    pub cert: PathBuf,
    /// What binding made of the project's certificate (nothing when the
    /// caller had it made first, as `mayfly serve` and `mayfly up` do).
    pub certificate_made: CertificateMade,
}

impl ApiServer {
    pub fn url(&self) -> String {
        let host = match self.address {
            SocketAddr::V4(address) if address.ip().is_loopback() => format!("localhost:{}", address.port()),
            SocketAddr::V6(address) if address.ip().is_loopback() => format!("localhost:{}", address.port()),
            address => address.to_string(),
        };
        format!("https://{host}/v1")
    }

    /// The endpoint URL for AWS SDKs (`AWS_ENDPOINT_URL`).
    pub fn aws_url(&self) -> String {
        match self.aws_address {
            SocketAddr::V4(address) if address.ip().is_loopback() => format!("https://localhost:{}", address.port()),
            SocketAddr::V6(address) if address.ip().is_loopback() => format!("https://localhost:{}", address.port()),
            address => format!("https://{address}"),
        }
    }

    pub fn announce(&self) {
        eprintln!(
            "mayfly: API listening on {} (address {}); OpenAPI at {}/openapi.json; dashboard at {}/\nmayfly: certificate {} SHA-256 fingerprint {}",
            self.url(),
            self.address,
            self.url(),
            self.url().trim_end_matches("/v1"),
            self.cert.display(),
            self.fingerprint_sha256
        );
        eprintln!(
            "mayfly: AWS-compatible endpoint (S3 and SQS) at {} (address {}); credentials from `mayfly tokens create --aws`",
            self.aws_url(),
            self.aws_address
        );
    }

    /// Serve the API and the AWS-compatible endpoint until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let aws =
            tokio::spawn(mayfly_api::serve::serve(self.aws_listener, self.aws_router, self.tls.clone(), async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        let api = mayfly_api::serve::serve(self.listener, self.router, self.tls, shutdown).await;
        let _ = stop.send(true);
        let aws = aws.await.context("the AWS-compatible endpoint panicked")?;
        api.context("the API server failed")?;
        aws.context("the AWS-compatible endpoint failed")
    }
}

/// A deployment's fleet as the host finds it: local processes, and Docker
/// when its engine answers (required when a job runs its workers there).
struct ProjectFleet;

impl FleetForDeployment for ProjectFleet {
    fn fleet<'a>(
        &'a self,
        architecture: &'a Architecture,
    ) -> BoxFuture<'a, Result<Vec<Arc<dyn mayfly_fleet::Provisioner>>, FleetUnavailable>> {
        Box::pin(async move {
            crate::jobs::fleet_provisioners(architecture).await.map_err(|error| FleetUnavailable(format!("{error:#}")))
        })
    }
}

/// Configure and bind the API of an open project, serving `deployed` and
/// every deployment recorded after it; the runs it starts get their
/// coordinators by `launch`.
pub async fn bind_api_server(
    located: &Project,
    opened: &OpenProject,
    deployed: (Option<u64>, Architecture),
    invoker: Invoker,
    listen: Option<SocketAddr>,
    aws_listen: Option<SocketAddr>,
    launch: CoordinatorLaunch,
) -> Result<ApiServer> {
    let (version, architecture) = deployed;
    let (paths, certificate_made) = serving_certificate_paths(located, architecture.api.as_ref())?;
    let loaded = tls::load(&paths).context("cannot load the API's certificate")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The access log gets a connection of its own, so its commits never wait behind reads.
    let log_store: Arc<dyn StateStore> = opened.open_state_again()?;
    let listen = listen.or(architecture.api.as_ref().map(|api| api.listen)).unwrap_or(ApiSpec::DEFAULT_LISTEN);
    let aws_listen =
        aws_listen.or(architecture.api.as_ref().map(|api| api.aws_listen)).unwrap_or(ApiSpec::DEFAULT_AWS_LISTEN);
    let aws_domain =
        architecture.api.as_ref().map_or_else(|| ApiSpec::DEFAULT_AWS_DOMAIN.to_owned(), |api| api.aws_domain.clone());
    let state: Arc<dyn StateStore> = opened.state.clone();
    let fleet = crate::jobs::fleet_provisioners(&architecture).await?;
    let config = ApiConfig {
        architecture: Arc::new(architecture),
        deployment_version: version,
        state,
        buckets: opened.buckets.clone(),
        invoker,
        provisioner: Arc::new(mayfly_fleet::LocalProvisioner::new()),
        fleet,
        fleet_for_deployment: Arc::new(ProjectFleet),
        mayfly_bin: launch.mayfly_bin.clone(),
        coordinator_launch: launch,
        project_root: std::path::absolute(&located.root)?,
        data_dir: std::path::absolute(located.data_dir())?,
        keyring: Some(opened.keyring.keyring.clone()),
        clock,
        limits: ApiLimits::default(),
    };
    let access_log = AccessLog::start(log_store);
    let aws_router = mayfly_aws::router(mayfly_aws::AwsConfig {
        state: config.state.clone(),
        buckets: config.buckets.clone(),
        clock: config.clock.clone(),
        access_log: access_log.clone(),
        domain: aws_domain,
    });
    let api = ApiState::new(config, access_log);
    // The dashboard at `/`, the API under `/v1`: one port, one certificate, one access log.
    // The dashboard's project name is the one of the deployment the server started with.
    let dashboard = mayfly_dashboard::router(DashboardState {
        store: api.config().state.clone(),
        authorize: Arc::new(DashboardAccess { api: api.clone() }),
        clock: api.config().clock.clone(),
        project: api.config().architecture.name.to_string(),
        data_dir: api.config().data_dir.clone(),
        keyring: Some(opened.keyring.keyring.clone()),
    });
    let router = mayfly_api::following_router(api).merge(dashboard);
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let aws_listener = TcpListener::bind(aws_listen)
        .await
        .with_context(|| format!("cannot listen on {aws_listen} for the AWS-compatible endpoint"))?;
    let aws_address = aws_listener.local_addr()?;
    Ok(ApiServer {
        listener,
        router,
        aws_listener,
        aws_router,
        tls: loaded.config,
        address,
        aws_address,
        fingerprint_sha256: loaded.fingerprint_sha256,
        cert: paths.cert,
        certificate_made,
    })
}
