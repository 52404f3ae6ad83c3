//! Where a run's workers run, as its coordinator places them
//! ([`WorkerPlacement`]): `mayfly worker` processes on this host (local),
//! Slurm batch jobs, Docker Swarm services, or containers that a Docker
//! job's broker starts on the job's network; how each worker is launched
//! (its program, environment and working directory), the address the
//! coordinator listens on for workers on other hosts
//! ([`COORDINATOR_ADDRESS_VARIABLE`], [`COORDINATOR_ADVERTISE_VARIABLE`]),
//! and the worker image's layout and network that `mayfly image build` and
//! `mayfly broker` share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use mayfly_control::jobs::project_tags;
use mayfly_core::Name;
use mayfly_fleet::{
    BrokeredProvisioner, ContainerPlacement, DockerProvisioner, LocalProvisioner, NetworkRequest, Provisioner,
    SlurmProvisioner, SlurmSettings, SwarmPlacement, SwarmProvisioner,
};
use mayfly_jobs::coordinator::WorkerLaunch;
use mayfly_spec::{Architecture, JobSpec};

use super::CoordinatorAddressSettings;

/// Where a run's workers run, how they are started and where the coordinator listens for them.
pub(crate) struct WorkerPlacement {
    pub(crate) provisioner: Arc<dyn Provisioner>,
    pub(crate) launch: WorkerLaunch,
    pub(crate) listen: std::net::IpAddr,
    /// What workers dial the coordinator by, when not `listen`.
    pub(crate) advertise: Option<mayfly_spec::AdvertisedHost>,
    /// Whether workers run as processes of this host (and reach its loopback).
    pub(crate) on_this_host: bool,
}

/// The image a Docker job runs when it names none: what `mayfly image build` makes by default.
pub const DEFAULT_IMAGE: &str = "mayfly-worker:latest";

/// Where the image keeps the `mayfly` binary (`mayfly image build` puts it there).
pub const MAYFLY_IN_IMAGE: &str = "/usr/local/bin/mayfly";
/// The working directory of workers and functions in containers: the
/// container's private tmpfs (the root file system is read-only).
const CONTAINER_WORKING_DIR: &str = "/tmp";
/// `PATH` in Mayfly's containers.
pub const CONTAINER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The environment of a worker: the inherited basics, `PATH` replaced in a container, quiet logs.
fn worker_env(path: Option<&str>) -> BTreeMap<String, String> {
    let mut env = mayfly_control::jobs::inherited_env();
    if let Some(path) = path {
        env.insert("PATH".to_owned(), path.to_owned());
        env.remove("HOME");
    }
    env.insert("MAYFLY_LOG".to_owned(), "warn".to_owned());
    env
}

/// A worker as a process of `mayfly_bin` (`mayfly worker`), run in the
/// project's directory: how local and Slurm workers start.
fn worker_process_launch(mayfly_bin: &Path, root: &Path) -> Result<WorkerLaunch> {
    Ok(WorkerLaunch {
        program: mayfly_bin.to_owned(),
        args: vec!["worker".into()],
        env: worker_env(None),
        working_dir: root.to_owned(),
        read_only_mounts: Vec::new(),
    })
}

/// Local workers: `mayfly worker` processes, the coordinator on loopback.
pub(crate) fn local_worker_placement(mayfly_bin: &Path, root: &Path) -> Result<WorkerPlacement> {
    Ok(WorkerPlacement {
        on_this_host: true,
        provisioner: Arc::new(LocalProvisioner::new()),
        launch: worker_process_launch(mayfly_bin, root)?,
        listen: std::net::Ipv4Addr::LOCALHOST.into(),
        advertise: None,
    })
}

/// The variable naming the address a coordinator listens on for workers that
/// run on other hosts (Slurm nodes, swarm tasks); by default the address this
/// host reaches other networks from. `0.0.0.0` (or `::`) listens on every
/// address, and then [`COORDINATOR_ADVERTISE_VARIABLE`] must be set.
pub const COORDINATOR_ADDRESS_VARIABLE: &str = "MAYFLY_COORDINATOR_ADDRESS";

/// The variable naming the DNS name or address such workers dial the
/// coordinator by, when not the one it listens on (a NAT, a name the
/// cluster resolves, a listener on every address); its certificate names
/// it. A setting of the host, not of `mayfly.toml`: every host of a shared
/// project may run coordinators, each reached by its own name.
pub const COORDINATOR_ADVERTISE_VARIABLE: &str = "MAYFLY_COORDINATOR_ADVERTISE";

/// How long a Slurm worker has to call in: a task may wait in the queue, and
/// a node starts the tasks of a large array a few at a time (200 took over a
/// minute on the bench's cluster, see BENCHMARKS.md), so the enrollment
/// token's lifetime rather than a local process's 30 s.
pub(crate) const SLURM_WORKER_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The `SlurmProvisioner` settings of a job with `kind = "slurm"` (the
/// cluster is the one `SLURM_CONF` or Slurm's defaults name) for a run
/// whose directory is `run_dir`: its workers' environment files go in the
/// job's `spool`, else in `slurm-spool` of the run's directory.
pub fn slurm_settings(job: &JobSpec, run_dir: &Path) -> SlurmSettings {
    let settings = &job.provisioner;
    SlurmSettings {
        partition: settings.partition.clone(),
        account: settings.account.clone(),
        qos: settings.qos.clone(),
        time_limit: settings.time_limit,
        extra_args: settings.extra_args.clone(),
        slurm_conf: None,
        spool: Some(settings.spool.clone().unwrap_or_else(|| run_dir.join("slurm-spool"))),
    }
}

/// Slurm workers: `mayfly worker` processes that Slurm runs on its nodes as
/// batch jobs. `mayfly_bin`, the project and the run directory must be on
/// a file system the nodes share (the same paths on every node); the
/// coordinator listens on [`COORDINATOR_ADDRESS_VARIABLE`] or this host's
/// outward address, which the nodes must reach.
pub(crate) fn slurm_worker_placement(
    mayfly_bin: &Path,
    root: &Path,
    job: &JobSpec,
    run_dir: &Path,
    address: &CoordinatorAddressSettings,
) -> Result<WorkerPlacement> {
    let (listen, advertise) = coordinator_address(address, "Slurm workers")?;
    tracing::info!(address = %listen, advertise = ?advertise.as_ref().map(ToString::to_string), "workers are Slurm jobs");
    Ok(WorkerPlacement {
        on_this_host: false,
        provisioner: Arc::new(SlurmProvisioner::new(slurm_settings(job, run_dir))),
        launch: worker_process_launch(mayfly_bin, root)?,
        listen,
        advertise,
    })
}

/// The address a coordinator listens on for `workers` on other hosts
/// ([`COORDINATOR_ADDRESS_VARIABLE`], else the address this host reaches other
/// networks from) and what they dial it by, if not that
/// ([`COORDINATOR_ADVERTISE_VARIABLE`]), as `address` holds them.
fn coordinator_address(
    address: &CoordinatorAddressSettings,
    workers: &str,
) -> Result<(std::net::IpAddr, Option<mayfly_spec::AdvertisedHost>)> {
    coordinator_address_from(address.listen.as_deref(), address.advertise.as_deref(), workers)
}

fn coordinator_address_from(
    listen: Option<&str>,
    advertise: Option<&str>,
    workers: &str,
) -> Result<(std::net::IpAddr, Option<mayfly_spec::AdvertisedHost>)> {
    let advertise = advertise
        .map(|text| {
            mayfly_spec::AdvertisedHost::parse(text)
                .map_err(|problem| anyhow::anyhow!("{COORDINATOR_ADVERTISE_VARIABLE}={text} {problem}"))
        })
        .transpose()?;
    let listen = match listen {
        Some(text) => text
            .parse::<std::net::IpAddr>()
            .with_context(|| format!("{COORDINATOR_ADDRESS_VARIABLE}={text} is not an IP address"))?,
        // Connecting a datagram socket sends nothing; it picks the address of the default route.
        None => std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|socket| {
                socket.connect((std::net::Ipv4Addr::new(192, 0, 2, 1), 9)).and_then(|()| socket.local_addr())
            })
            .map(|address| address.ip())
            .with_context(|| {
                format!(
                    "cannot find this host's outward address for {workers} to dial; set {COORDINATOR_ADDRESS_VARIABLE}"
                )
            })?,
    };
    if listen.is_unspecified() && advertise.is_none() {
        bail!(
            "{COORDINATOR_ADDRESS_VARIABLE}={listen} listens on every address, which {workers} cannot dial; \
             set {COORDINATOR_ADVERTISE_VARIABLE} to the name or address they reach this host by"
        );
    }
    Ok((listen, advertise))
}

/// Swarm workers: `mayfly worker` in containers from the job's image, as
/// services of the swarm this host manages, on the job's overlay network;
/// the coordinator (a process on this host) listens on
/// [`COORDINATOR_ADDRESS_VARIABLE`] or this host's outward address, which
/// tasks on every node reach through their node's gateway.
pub(crate) async fn swarm_worker_placement(
    architecture: &Architecture,
    job_name: &Name,
    job: &JobSpec,
    function: &mut mayfly_runtime::FunctionDefinition,
    address: &CoordinatorAddressSettings,
) -> Result<WorkerPlacement> {
    let (listen, advertise) = coordinator_address(address, "swarm workers")?;
    let network = job_network(architecture, job);
    let placement = SwarmPlacement {
        image: job.provisioner.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        network: network.name,
        subnet: network.subnet,
        network_tags: network.tags,
        constraints: job.provisioner.constraints.clone(),
    };
    let provisioner = SwarmProvisioner::connect()
        .await
        .with_context(|| format!("job `{job_name}` runs its workers as Docker Swarm services"))?;
    provisioner.ensure_network(&placement).await?;
    function_in_container(function);
    tracing::info!(address = %listen, network = %placement.network, "workers are swarm services");
    Ok(WorkerPlacement {
        on_this_host: false,
        provisioner: Arc::new(provisioner.with_placement(placement)),
        launch: container_worker_launch(),
        listen,
        advertise,
    })
}

/// A job's function as a worker in a container runs it: a relative program
/// made absolute (images keep included files at their host paths), in the
/// container's private working directory, `MAYFLY_BIN` the image's binary.
fn function_in_container(function: &mut mayfly_runtime::FunctionDefinition) {
    if let Some(program) = function.command.first_mut()
        && program.contains('/')
        && Path::new(program.as_str()).is_relative()
    {
        *program = function.working_dir.join(program.as_str()).display().to_string();
    }
    function.working_dir = PathBuf::from(CONTAINER_WORKING_DIR);
    function.env.insert("MAYFLY_BIN".to_owned(), MAYFLY_IN_IMAGE.to_owned());
    function.env.remove("MAYFLY_PROJECT");
}

/// A worker in a container: the image's `mayfly worker`, in its private `/tmp`.
fn container_worker_launch() -> WorkerLaunch {
    WorkerLaunch {
        program: PathBuf::from(MAYFLY_IN_IMAGE),
        args: vec!["worker".into()],
        env: worker_env(Some(CONTAINER_PATH)),
        working_dir: PathBuf::from(CONTAINER_WORKING_DIR),
        read_only_mounts: Vec::new(),
    }
}

/// Docker workers, for a coordinator in a container of the job's network:
/// containers from the job's image that its broker starts on that network,
/// the coordinator listening on its own address there, and the function's
/// relative program made absolute (images keep included files at their host
/// paths).
pub(crate) fn container_worker_placement(
    broker: &Path,
    gateway: std::net::IpAddr,
    function: &mut mayfly_runtime::FunctionDefinition,
) -> Result<WorkerPlacement> {
    // Connecting a datagram socket sends nothing; it picks the address that routes to the gateway.
    let own_address = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| socket.connect((gateway, 9)).and_then(|()| socket.local_addr()))
        .with_context(|| format!("cannot find this container's address on the network of gateway {gateway}"))?
        .ip();
    function_in_container(function);
    tracing::info!(address = %own_address, broker = %broker.display(), "workers are containers");
    Ok(WorkerPlacement {
        on_this_host: false,
        provisioner: Arc::new(BrokeredProvisioner::new(broker, "docker")),
        launch: container_worker_launch(),
        listen: own_address,
        advertise: None,
    })
}

/// The network a Docker job's coordinator and workers join: the job's
/// `network` (default `mayfly-<project>`) with its subnet, the subnet's
/// first address as the gateway.
pub fn job_network(architecture: &Architecture, job: &JobSpec) -> NetworkRequest {
    let settings = &job.provisioner;
    NetworkRequest {
        name: settings.network.clone().unwrap_or_else(|| format!("mayfly-{}", architecture.name)),
        subnet: settings.subnet.map(|subnet| subnet.to_string()),
        gateway: settings.subnet.map(|subnet| std::net::Ipv4Addr::from(u32::from(subnet.network()) + 1)),
        tags: project_tags(architecture),
    }
}

/// The Docker provisioner of a Docker job: connected, its network made if
/// missing, placing containers from the job's image on it.
pub async fn job_docker(
    architecture: &Architecture,
    job_name: &Name,
    job: &JobSpec,
) -> Result<(DockerProvisioner, mayfly_fleet::NetworkInfo)> {
    let image = job.provisioner.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
    let request = job_network(architecture, job);
    let docker = DockerProvisioner::connect()
        .await
        .with_context(|| format!("job `{job_name}` runs its workers in Docker containers"))?;
    let info = docker.ensure_network(&request).await?;
    Ok((docker.with_placement(ContainerPlacement { image, network: request }), info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinator_listens_where_told_and_is_dialled_by_what_it_advertises() {
        let (listen, advertise) = coordinator_address_from(Some("0.0.0.0"), Some("Node-7.Cluster.org"), "w").unwrap();
        assert!(listen.is_unspecified());
        assert_eq!(advertise.unwrap().url(443), "https://node-7.cluster.org:443");
        let (listen, advertise) = coordinator_address_from(Some("10.252.0.1"), None, "w").unwrap();
        assert_eq!((listen.to_string(), advertise), ("10.252.0.1".to_owned(), None));

        let error = coordinator_address_from(Some("0.0.0.0"), None, "Slurm workers").unwrap_err().to_string();
        assert!(
            error.contains("MAYFLY_COORDINATOR_ADDRESS=0.0.0.0") && error.contains("MAYFLY_COORDINATOR_ADVERTISE"),
            "{error}"
        );
        let error = coordinator_address_from(Some("0.0.0.0"), Some("node 7"), "w").unwrap_err().to_string();
        assert!(
            error.contains("MAYFLY_COORDINATOR_ADVERTISE=node 7 is neither a DNS name nor an IP address"),
            "{error}"
        );
        let error = coordinator_address_from(Some("node-7"), None, "w").unwrap_err().to_string();
        assert!(error.contains("MAYFLY_COORDINATOR_ADDRESS=node-7 is not an IP address"), "{error}");
    }
}
