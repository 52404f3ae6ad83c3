//! A job run's coordinator as the host composes it (`mayfly coordinator
//! --run R`, which a provisioner starts as a process of its own, and
//! in-process tests): from the opened project, the run and its
//! [`CoordinatorSettings`], [`prepare`] finds the run's deployment, places
//! its workers for the job's provisioner ([`placement`]), mints the AWS
//! credentials of a function with `permissions`, and builds the
//! `CoordinatorConfig`; [`PreparedCoordinator::run`] runs it with the
//! project's telemetry and audits the run afterwards. What to print about it
//! is the caller's.

pub mod placement;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_control::jobs::project_tags;
use mayfly_core::run::RunStatus;
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_fleet::CoordinatorPlacement;
use mayfly_jobs::coordinator::{CoordinatorConfig, CoordinatorTiming, CoordinatorTls};
use mayfly_jobs::group_commit::GroupCommitConfig;
use mayfly_spec::Architecture;
use mayfly_state::StateStore;

use crate::api_server::CertificateMade;
use crate::deployment::run_architecture;
use crate::jobs::{GROUP_COMMIT_ENV_VAR, aws_reach_refusal, run_dir};
use crate::project::{OpenProject, Project};
use crate::telemetry::TelemetrySettings;
use placement::{
    SLURM_WORKER_START_TIMEOUT, WorkerPlacement, container_worker_placement, local_worker_placement,
    slurm_worker_placement, swarm_worker_placement,
};

/// How a coordinator runs, beside its project and run.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// The `mayfly` executable: local and Slurm workers run it (`mayfly
    /// worker`) and functions get it as `MAYFLY_BIN`. The CLI passes its own.
    pub mayfly_bin: PathBuf,
    /// The broker of a coordinator in a container (a Docker job's), which
    /// starts, watches and stops the run's worker containers; `None` for a
    /// coordinator that is a process of this host.
    pub broker: Option<BrokerEndpoint>,
    /// Where the coordinator listens for workers on other hosts.
    pub address: CoordinatorAddressSettings,
    /// How many completions share a commit.
    pub group_commit: GroupCommitConfig,
    /// Where the run's and its items' spans go.
    pub telemetry: TelemetrySettings,
}

/// A coordinator in a container reaches its broker here.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    /// The broker's Unix socket (`mayfly broker`).
    pub socket: PathBuf,
    /// The gateway of the job's network: the coordinator's own address on
    /// that network is the one that reaches it.
    pub gateway: std::net::IpAddr,
}

/// The address a coordinator listens on for workers on other hosts (Slurm
/// nodes, swarm tasks) and what they dial it by, as written
/// ([`placement::COORDINATOR_ADDRESS_VARIABLE`],
/// [`placement::COORDINATOR_ADVERTISE_VARIABLE`]): checked only when a
/// run's workers run elsewhere, so a local run ignores them.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorAddressSettings {
    /// An IP address; `None` for the address this host reaches other networks from.
    pub listen: Option<String>,
    /// A DNS name or IP address; `None` for the one it listens on.
    pub advertise: Option<String>,
}

impl CoordinatorAddressSettings {
    /// The settings as this process's environment holds them.
    pub fn from_env() -> CoordinatorAddressSettings {
        CoordinatorAddressSettings {
            listen: std::env::var(placement::COORDINATOR_ADDRESS_VARIABLE).ok(),
            advertise: std::env::var(placement::COORDINATOR_ADVERTISE_VARIABLE).ok(),
        }
    }
}

/// The group commit [`GROUP_COMMIT_ENV_VAR`] asks for, else the default.
pub fn group_commit_config() -> Result<GroupCommitConfig> {
    let Ok(value) = std::env::var(GROUP_COMMIT_ENV_VAR) else { return Ok(GroupCommitConfig::default()) };
    match value.trim().parse::<usize>() {
        Ok(max_group) if max_group >= 1 => Ok(GroupCommitConfig { max_group }),
        _ => bail!("{GROUP_COMMIT_ENV_VAR}={value:?} is not a whole number of completions of at least 1"),
    }
}

/// From here on this process's stdout and stderr (the provisioner's
/// `coordinator.log` or `broker.log`, or a container's log) hold only sealed
/// frames: its tracing may quote item ids or a function's error text. A
/// person running the command in a terminal sees it plainly.
pub fn seal_own_output(opened: &OpenProject, run: &str, process: &str) -> Result<()> {
    use std::io::IsTerminal as _;
    if std::io::stderr().is_terminal() {
        return Ok(());
    }
    mayfly_jobs::output::seal_own_output(
        opened.keyring.keyring.clone(),
        mayfly_jobs::output::output_stream(run, process),
    )
    .context("cannot seal this process's output")
}

/// A run's coordinator composed for an open project, its workers placed, not yet running.
pub struct PreparedCoordinator<'a> {
    located: &'a Project,
    opened: &'a OpenProject,
    /// What the coordinator runs with.
    pub config: CoordinatorConfig,
    /// What minting its workers' AWS credentials made of the API's
    /// certificate, for the caller to announce.
    pub certificate_made: CertificateMade,
    telemetry: TelemetrySettings,
    /// Whether a broker audits the run instead (a coordinator in a container
    /// sees neither the host's processes nor the engine).
    brokered: bool,
    _keyring_follower: Option<tokio::task::JoinHandle<()>>,
}

/// Compose the coordinator of `run`: its deployment's job and function, the
/// workers' placement for the job's provisioner, and the `CoordinatorConfig`.
/// It follows the project's keyring file from now on.
pub async fn prepare<'a>(
    located: &'a Project,
    opened: &'a OpenProject,
    run: &str,
    settings: CoordinatorSettings,
) -> Result<PreparedCoordinator<'a>> {
    let keyring_follower = opened.follow_keyring_file(located);
    let record = opened.state.run(run)?;
    let architecture = run_architecture(opened, &record)?;
    let root = std::path::absolute(&located.root)?;
    let job = architecture
        .jobs
        .get(&record.job)
        .with_context(|| format!("job `{}` is not in the run's deployment", record.job))?
        .clone();
    let function = architecture
        .functions
        .get(&job.function)
        .with_context(|| format!("function `{}` is not in the run's deployment", job.function))?;
    let mut worker_function = mayfly_control::function_definition(
        &architecture,
        &job.function,
        function,
        record.deployment_version,
        &root,
        &settings.mayfly_bin,
    );
    // An item may run longer than the function's own timeout: the job's item timeout governs.
    if let Some(item_timeout) = job.item_timeout {
        worker_function.timeout = item_timeout;
    }
    let placement = match &settings.broker {
        Some(broker) => container_worker_placement(&broker.socket, broker.gateway, &mut worker_function)?,
        _ if job.provisioner.kind.coordinator() == CoordinatorPlacement::ContainerThroughBroker => bail!(
            "job `{}` runs its workers with the {} provisioner, so its coordinator runs in a container that `mayfly broker --run {}` starts (as `mayfly run` and `mayfly up` do)",
            record.job,
            job.provisioner.kind,
            run
        ),
        _ if job.provisioner.kind.name() == "slurm" => {
            slurm_worker_placement(&settings.mayfly_bin, &root, &job, &run_dir(located, run), &settings.address)?
        }
        _ if job.provisioner.kind.name() == "swarm" => {
            swarm_worker_placement(&architecture, &record.job, &job, &mut worker_function, &settings.address).await?
        }
        _ => local_worker_placement(&settings.mayfly_bin, &root)?,
    };
    let (aws, certificate_made) =
        worker_aws_issuer(located, opened, &architecture, &worker_function, &record.job, &placement)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state: Arc<dyn StateStore> = opened.state.clone();
    let config = CoordinatorConfig {
        run_id: run.to_owned(),
        job: record.job.clone(),
        tags: project_tags(&architecture),
        architecture: Arc::new(architecture),
        state,
        buckets: opened.buckets.clone(),
        provisioner: placement.provisioner,
        clock,
        launch: placement.launch,
        listen: placement.listen,
        advertise: placement.advertise,
        worker_function,
        run_dir: run_dir(located, run),
        // Unique across containers too, where every coordinator may be pid 1.
        owner: format!("coordinator-{}-{:08x}", std::process::id(), rand::random::<u32>()),
        keyring: Some(opened.keyring.keyring.clone()),
        timing: CoordinatorTiming {
            group_commit: settings.group_commit,
            worker_start_timeout: if job.provisioner.kind.name() == "slurm" {
                SLURM_WORKER_START_TIMEOUT
            } else {
                CoordinatorTiming::default().worker_start_timeout
            },
            ..CoordinatorTiming::default()
        },
        tls: CoordinatorTls::default(),
        aws,
    };
    Ok(PreparedCoordinator {
        located,
        opened,
        config,
        certificate_made,
        telemetry: settings.telemetry,
        brokered: settings.broker.is_some(),
        _keyring_follower: keyring_follower,
    })
}

impl PreparedCoordinator<'_> {
    /// Run the coordinator until its run ends (exporting its spans when the
    /// project's telemetry says where), then audit the run unless its broker
    /// does; the run's final status.
    pub async fn run(self) -> Result<RunStatus> {
        let run = self.config.run_id.clone();
        // The run's and its items' spans are recorded here (workers need no route to the collector).
        let telemetry =
            crate::telemetry::start_telemetry(&self.telemetry, self.opened, self.config.architecture.name.as_str())?;
        let status = mayfly_jobs::coordinator::run(self.config).await;
        if let Some(telemetry) = telemetry {
            tokio::task::spawn_blocking(move || telemetry.shutdown()).await.context("flushing traces panicked")?;
        }
        let status = status?;
        // A containerised coordinator sees neither the host's processes nor the
        // engine: its broker audits the run once the container is gone.
        if !self.brokered {
            crate::audit::after_run(self.located, self.opened, &run).await;
        }
        tracing::info!(run = %run, status = status.as_str(), "coordinator exiting");
        Ok(status)
    }
}

/// How the coordinator mints the AWS credentials of a worker function with
/// `permissions`: with the store's session key and the API's certificate,
/// for the endpoint as its workers reach it: `[api].aws_listen` as a local
/// function dials it (its loopback for a wildcard address) for workers on
/// this host, `[api].aws_advertise` for workers elsewhere (containers, Slurm
/// nodes, swarm tasks), whose certificate must name the advertised host.
/// Without an advertised endpoint such a job is refused, since its function
/// could not reach the endpoint. The second value is what getting the API's
/// certificate made.
fn worker_aws_issuer(
    located: &Project,
    opened: &OpenProject,
    architecture: &Architecture,
    worker_function: &mayfly_runtime::FunctionDefinition,
    job: &Name,
    placement: &WorkerPlacement,
) -> Result<(Option<mayfly_jobs::coordinator::WorkerAwsIssuer>, CertificateMade)> {
    if worker_function.permissions.is_empty() {
        return Ok((None, CertificateMade::Nothing));
    }
    if let Some(refusal) = aws_reach_refusal(architecture, job, &worker_function.name, placement.on_this_host) {
        bail!(refusal);
    }
    let (credentials, made) = crate::api_server::function_credentials(located, opened, architecture)?;
    let Some(mut credentials) = credentials else {
        return Ok((None, made));
    };
    if !placement.on_this_host
        && let Some(advertised) = architecture.api.as_ref().and_then(|api| api.aws_advertise.as_ref())
    {
        // The certificate is made or extended by `mayfly serve` and `mayfly up`
        // when they start; one the endpoint does not serve yet is never handed out.
        mayfly_api::tls::check_names_host(credentials.ca_bundle(), &advertised.host.to_string()).with_context(|| {
            format!("job `{job}`'s workers would dial the AWS endpoint at {advertised} (`[api].aws_advertise`); restart `mayfly up` or `mayfly serve` so that it serves a certificate naming it")
        })?;
        credentials = credentials.advertised_at(advertised.url());
    }
    let ca_bundle_pem = std::fs::read_to_string(credentials.ca_bundle()).with_context(|| {
        format!("cannot read the AWS endpoint's certificate {} for job `{job}`", credentials.ca_bundle().display())
    })?;
    Ok((Some(mayfly_jobs::coordinator::WorkerAwsIssuer { issuer: Arc::new(credentials), ca_bundle_pem }), made))
}
