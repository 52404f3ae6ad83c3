//! The Docker provisioner: resources are containers of the local Docker
//! engine, reached through its API with `bollard`.
//!
//! - **Tags are labels.** A tag whose key starts with `mayfly.` (the run, the
//!   role, the worker, the project) is a label of the same key; any other
//!   tag (the project's own, `owner`, `data-class`) is the label
//!   `mayfly.tag.<key>`; every container also carries [`MANAGED_LABEL`]. The
//!   inventory lists containers by label filter from the engine itself, so
//!   it finds them after any restart, and turns the labels back into tags.
//! - **Ids** are `container:<engine id>`.
//! - **Placement** ([`ContainerPlacement`]): every container starts from the
//!   placement's image on its user-defined bridge network (never the host's
//!   network), unprivileged, with every capability dropped, no new
//!   privileges, a read-only root file system with a private `/tmp` (tmpfs),
//!   the spec's memory and CPU limits, and nothing of the host mounted
//!   except the spec's `read_only_mounts` (bound read-only at the same path).
//! - **Networks** ([`DockerProvisioner::ensure_network`]) are created when
//!   missing, labelled like containers, with the subnet and gateway asked
//!   for; [`DockerProvisioner::reap_unused_networks`] removes Mayfly networks
//!   no container uses any more.
//! - **Output**: the provisioner attaches to each container's streams before
//!   it starts and appends them to the spec's `stdout`/`stderr` files (a
//!   sealing FIFO for workers and coordinators), as a local process would
//!   write them. The engine's log driver is `none`: its default `json-file`
//!   driver would keep a plaintext copy of everything a container writes
//!   (health data: a function's error text) under `/var/lib/docker`.
//!
//! - **Function instances** (`function_container.rs`): one container per
//!   instance of a function with `isolation = "container"`, with the same
//!   hardening ([`hardened_host_config`]), its standard streams attached,
//!   on network `none` or an *internal* function network (whose containers
//!   reach the host's gateway address and nothing beyond it).
//!
//! A container that exited stays until it is stopped (removed): the
//! inventory lists it — it still exists — so the end of a run, or the
//! reaper, removes it, and its exit code stays readable until then.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, EndpointSettings, HostConfig, HostConfigLogConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectNetworkOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use mayfly_core::Timestamp;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::error::FleetError;
use crate::provisioner::{
    BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState, poll_until_ended,
};
use crate::registry::{CoordinatorPlacement, ProvisionerKindEntry};
use crate::tags::{TagFilter, Tags, check_tag};

mod function_container;

pub use function_container::{ContainerExit, ContainerOutput, FunctionContainer, FunctionContainerSpec};

/// Every container and network Mayfly creates carries this label (value `true`).
pub const MANAGED_LABEL: &str = "mayfly.managed";
/// Labels of tags whose keys do not start with `mayfly.` get this prefix.
const TAG_LABEL_PREFIX: &str = "mayfly.tag.";
const ID_PREFIX: &str = "container:";
/// How long removal may take before `stop`/`kill` report the container still there.
const REMOVE_VERIFY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// The private, writable `/tmp` of every container (the root file system is read-only).
const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=256m,mode=1777";
/// Every container's private, writable scratch folder (a tmpfs): whatever
/// an image holds under it is hidden by it.
pub const CONTAINER_TMP: &str = "/tmp";

/// The engine's log driver for every Mayfly container and swarm task: none,
/// so the engine writes none of their output to its own disk (unsealed).
pub(crate) const NO_ENGINE_LOG: &str = "none";

/// Where and from what the provisioner starts containers.
#[derive(Debug, Clone)]
pub struct ContainerPlacement {
    /// The image every container starts from (e.g. one `mayfly image build` made).
    pub image: String,
    /// The user-defined network containers join; re-created from this request
    /// if it disappears between runs.
    pub network: NetworkRequest,
}

/// A user-defined bridge network to create if missing.
#[derive(Debug, Clone)]
pub struct NetworkRequest {
    pub name: String,
    /// `a.b.c.d/n`; `None` lets the engine choose.
    pub subnet: Option<String>,
    /// The gateway (the host's address on the network); `None` lets the engine choose.
    pub gateway: Option<Ipv4Addr>,
    /// Labels of the network (the project's tags).
    pub tags: Tags,
}

/// A Mayfly network as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub subnet: Option<String>,
    /// The host's address on the network: where containers reach processes on the host.
    pub gateway: Option<IpAddr>,
    pub tags: Tags,
    /// Containers attached now.
    pub containers: usize,
}

/// Runs resources as containers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerProvisioner {
    docker: Docker,
    placement: Option<Arc<ContainerPlacement>>,
}

impl DockerProvisioner {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`)
    /// and agrees on an API version. This provisioner can find, stop and
    /// inventory containers; [`DockerProvisioner::with_placement`] lets it start them.
    pub async fn connect() -> Result<DockerProvisioner, FleetError> {
        let unreachable = |error: DockerError| FleetError::EngineUnreachable { reason: error.to_string() };
        let docker = Docker::connect_with_local_defaults().map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerProvisioner { docker, placement: None })
    }

    /// This provisioner, starting containers from `placement`.
    pub fn with_placement(mut self, placement: ContainerPlacement) -> DockerProvisioner {
        self.placement = Some(Arc::new(placement));
        self
    }

    /// The engine client, for callers that manage images.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The network `request` names, created (labelled with its tags) if it
    /// does not exist. An existing network with another subnet is refused.
    pub async fn ensure_network(&self, request: &NetworkRequest) -> Result<NetworkInfo, FleetError> {
        self.ensure_bridge_network(request, false).await
    }

    /// [`ensure_network`](Self::ensure_network); an `internal` network is
    /// created so that its containers reach only the host and each other.
    async fn ensure_bridge_network(&self, request: &NetworkRequest, internal: bool) -> Result<NetworkInfo, FleetError> {
        let failed = |reason: String| FleetError::Network { network: request.name.clone(), reason };
        if let Some(existing) = self.network(&request.name).await? {
            if let Some(wanted) = &request.subnet
                && existing.subnet.as_deref() != Some(wanted.as_str())
            {
                return Err(failed(format!(
                    "it exists with subnet {}, but {wanted} is asked for; remove it (`docker network rm {}`) or choose another network name",
                    existing.subnet.as_deref().unwrap_or("(none)"),
                    request.name
                )));
            }
            return Ok(existing);
        }
        let mut labels = labels_of(&request.tags).map_err(failed)?;
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let ipam = request.subnet.as_ref().map(|subnet| Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.clone()),
                gateway: request.gateway.map(|gateway| gateway.to_string()),
                ..Default::default()
            }]),
            options: None,
        });
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: request.name.clone(),
                driver: Some("bridge".to_owned()),
                internal: Some(internal),
                attachable: Some(false),
                ipam,
                labels: Some(labels),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => tracing::info!(network = %request.name, subnet = ?request.subnet, "created network"),
            // Created concurrently by another coordinator: use it.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(error) => return Err(failed(error.to_string())),
        }
        self.network(&request.name).await?.ok_or_else(|| failed("it vanished right after it was created".to_owned()))
    }

    /// The network named `name`, if it exists.
    pub async fn network(&self, name: &str) -> Result<Option<NetworkInfo>, FleetError> {
        match self.docker.inspect_network(name, None::<InspectNetworkOptions>).await {
            Ok(network) => {
                let ipam = network.ipam.and_then(|ipam| ipam.config).and_then(|configs| configs.into_iter().next());
                Ok(Some(NetworkInfo {
                    name: network.name.unwrap_or_else(|| name.to_owned()),
                    id: network.id.unwrap_or_default(),
                    subnet: ipam.as_ref().and_then(|config| config.subnet.clone()),
                    gateway: ipam.and_then(|config| config.gateway).and_then(|gateway| gateway.parse().ok()),
                    tags: tags_of(network.labels.as_ref()),
                    containers: network.containers.map_or(0, |containers| containers.len()),
                }))
            }
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(FleetError::Network { network: name.to_owned(), reason: error.to_string() }),
        }
    }

    /// Every Mayfly network whose tags match `filter`.
    pub async fn networks(&self, filter: &TagFilter) -> Result<Vec<NetworkInfo>, FleetError> {
        let filters = HashMap::from([("label".to_owned(), label_filters(filter)?)]);
        let listed = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|error| FleetError::Inventory { reason: format!("cannot list Docker networks: {error}") })?;
        let mut networks = Vec::new();
        for network in listed {
            let Some(name) = network.name else { continue };
            // The list does not say which containers are attached; inspecting does.
            if let Some(info) = self.network(&name).await? {
                networks.push(info);
            }
        }
        Ok(networks)
    }

    /// Removes the network `name` if no container is attached to it; `true` if
    /// it is gone (removed now, or it did not exist).
    pub async fn remove_network_if_unused(&self, name: &str) -> Result<bool, FleetError> {
        let Some(network) = self.network(name).await? else { return Ok(true) };
        if network.containers > 0 {
            return Ok(false);
        }
        match self.docker.remove_network(name).await {
            Ok(()) => {
                tracing::info!(network = %name, "removed network no container uses");
                Ok(true)
            }
            Err(error) if is_not_found(&error) => Ok(true),
            // A container joined in between: it is in use again.
            Err(DockerError::DockerResponseServerError { status_code: 403 | 409, .. }) => Ok(false),
            Err(error) => Err(FleetError::Network { network: name.to_owned(), reason: error.to_string() }),
        }
    }

    /// Removes every Mayfly network matching `filter` that no container uses; returns their names.
    pub async fn reap_unused_networks(&self, filter: &TagFilter) -> Result<Vec<String>, FleetError> {
        let mut removed = Vec::new();
        for network in self.networks(filter).await? {
            if network.containers == 0 && self.remove_network_if_unused(&network.name).await? {
                removed.push(network.name);
            }
        }
        Ok(removed)
    }

    /// Imports `tarball` (a root file system as a tar archive) as the image
    /// `reference` (`name:tag`), applying `changes` (`USER …`, `ENV …`,
    /// `LABEL …`, as `docker import --change` takes them); returns the image id.
    pub async fn import_root_filesystem(
        &self,
        tarball: &Path,
        reference: &str,
        changes: Vec<String>,
    ) -> Result<String, FleetError> {
        let failed = |reason: String| FleetError::Image { image: reference.to_owned(), reason };
        let (repo, tag) = split_reference(reference);
        let file = tokio::fs::File::open(tarball)
            .await
            .map_err(|error| failed(format!("cannot read {}: {error}", tarball.display())))?;
        let options = CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(tag).changes(changes).build();
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let mut progress = self.docker.create_image(Some(options), Some(body), None);
        while let Some(step) = progress.next().await {
            let step = step.map_err(|error| failed(error.to_string()))?;
            if let Some(error) = step.error_detail.and_then(|detail| detail.message) {
                return Err(failed(error));
            }
        }
        let image = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|error| failed(format!("imported, but cannot inspect it: {error}")))?;
        Ok(image.id.unwrap_or_default())
    }

    /// The value of `label` on image `reference`; `None` if the image or the label does not exist.
    pub async fn image_label(&self, reference: &str, label: &str) -> Result<Option<String>, FleetError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => {
                Ok(image.config.and_then(|config| config.labels).and_then(|labels| labels.get(label).cloned()))
            }
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(FleetError::Image { image: reference.to_owned(), reason: error.to_string() }),
        }
    }

    async fn start_container(&self, spec: ProcessSpec) -> Result<ResourceId, FleetError> {
        let invalid = |reason: String| FleetError::InvalidSpec { program: spec.program.clone(), reason };
        let cannot_start = |reason: String| FleetError::CannotStart { program: spec.program.clone(), reason };
        let placement = self.placement.clone().ok_or_else(|| {
            invalid("this Docker provisioner has no placement (image and network) to start containers with".into())
        })?;
        let mut labels = labels_of(&spec.tags).map_err(invalid)?;
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let mut command = vec![program_in_container(&spec.program, &spec.working_dir)];
        command.extend(spec.args.iter().cloned());
        let mounts = spec
            .read_only_mounts
            .iter()
            .map(|path| (path, "ro"))
            .chain(spec.read_write_mounts.iter().map(|path| (path, "rw")));
        let binds = mounts
            .map(|(path, mode)| {
                let path = path
                    .to_str()
                    .filter(|p| path.is_absolute() && !p.contains(':'))
                    .ok_or_else(|| invalid(format!("mount {} must be an absolute path without `:`", path.display())))?;
                Ok(format!("{path}:{path}:{mode}"))
            })
            .collect::<Result<Vec<String>, FleetError>>()?;
        let memory = spec
            .memory
            .map(|memory| i64::try_from(memory.bytes()))
            .transpose()
            .map_err(|_| invalid("the memory limit does not fit the engine's range".into()))?;
        let host_config = HostConfig {
            nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            ..hardened_host_config(placement.network.name.clone(), memory, binds)
        };
        let body = ContainerCreateBody {
            image: Some(placement.image.clone()),
            cmd: Some(command),
            // The image's entrypoint would otherwise wrap our command.
            entrypoint: Some(vec![]),
            env: Some(spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect()),
            labels: Some(labels),
            working_dir: Some(spec.working_dir.display().to_string()),
            user: spec.user.clone(),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(placement.network.name.clone(), EndpointSettings::default())])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            // The network was removed since the run began (no container used it): make it again.
            Err(error) if is_not_found(&error) && error.to_string().contains("network") => {
                self.ensure_network(&placement.network).await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        let created = created.map_err(|error| match &error {
            error if is_not_found(error) => cannot_start(format!(
                "image `{}` is not in the engine ({error}); build one with `mayfly image build`",
                placement.image
            )),
            _ => cannot_start(error.to_string()),
        })?;
        let id = created.id;
        if let Err(error) = self.follow_output(&id, spec.stdout.clone(), spec.stderr.clone()).await {
            let _ = self.remove(&id).await;
            return Err(cannot_start(format!("cannot attach to the container: {error}")));
        }
        if let Err(error) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(cannot_start(error.to_string()));
        }
        let resource_id = ResourceId(format!("{ID_PREFIX}{id}"));
        tracing::debug!(id = %resource_id, image = %placement.image, network = %placement.network.name, "started container");
        Ok(resource_id)
    }

    /// Attaches to the created container `id` before it starts (so none of
    /// its output is missed) and appends its output to the spec's files as
    /// it comes, until it ends. Attached, not read back from the engine's
    /// log: containers run with the `none` log driver, so the engine keeps
    /// none of their output on its disk unsealed ([`hardened_host_config`]).
    async fn follow_output(
        &self,
        id: &str,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    ) -> Result<(), DockerError> {
        if stdout.is_none() && stderr.is_none() {
            return Ok(());
        }
        let options =
            AttachContainerOptionsBuilder::new().stream(true).stdout(stdout.is_some()).stderr(stderr.is_some()).build();
        let attached = self.docker.attach_container(id, Some(options)).await?;
        tokio::spawn(append_log_stream(attached.output, stdout, stderr));
        Ok(())
    }

    async fn observe(&self, id: &str) -> Result<ResourceState, FleetError> {
        match self.docker.inspect_container(id, None).await {
            Ok(container) => {
                let state = container.state.unwrap_or_default();
                Ok(match state.status {
                    Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => ResourceState::Exited {
                        code: state.exit_code.and_then(|code| i32::try_from(code).ok()),
                        signal: None,
                    },
                    Some(ContainerStateStatusEnum::REMOVING) => ResourceState::Gone,
                    // Created, running, paused (frozen, but alive), restarting, stopping.
                    _ => ResourceState::Running,
                })
            }
            Err(error) if is_not_found(&error) => Ok(ResourceState::Gone),
            Err(error) => Err(FleetError::Inventory { reason: format!("cannot inspect container {id}: {error}") }),
        }
    }

    async fn wait_for_end(&self, id: &str, timeout: Duration) -> Result<ResourceState, FleetError> {
        poll_until_ended(timeout, POLL, || self.observe(id)).await
    }

    /// Force-removes the container (SIGKILL if it runs) and waits until the engine no longer knows it.
    async fn remove(&self, id: &str) -> Result<(), FleetError> {
        let resource = ResourceId(format!("{ID_PREFIX}{id}"));
        // A frozen container is thawed first, so that the kill is not held up by the freezer.
        let _ = self.docker.unpause_container(id).await;
        match self.docker.remove_container(id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => return Ok(()),
            // 409: removal already in progress.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {}
            Err(error) => {
                return Err(FleetError::Signal { id: resource, source: std::io::Error::other(error.to_string()) });
            }
        }
        let deadline = Instant::now() + REMOVE_VERIFY_TIMEOUT;
        loop {
            match self.docker.inspect_container(id, None).await {
                Err(error) if is_not_found(&error) => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(FleetError::StillRunning { id: resource, waited: REMOVE_VERIFY_TIMEOUT });
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn terminate(&self, resource: &ResourceId, grace: Option<Duration>) -> Result<(), FleetError> {
        let id = container_id(resource)?;
        if self.observe(id).await? == ResourceState::Gone {
            return Ok(());
        }
        if let Some(grace) = grace {
            let _ = self.docker.unpause_container(id).await;
            // SIGTERM, then the engine sends SIGKILL after `grace`.
            let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
            match self.docker.stop_container(id, Some(StopContainerOptionsBuilder::new().t(seconds).build())).await {
                Ok(()) => {}
                Err(error) if is_not_found(&error) => return Ok(()),
                // 304: it had already stopped; anything else: removal below kills it anyway.
                Err(error) => tracing::debug!(id = %resource, %error, "docker stop did not succeed; removing"),
            }
        } else {
            let _ = self
                .docker
                .kill_container(id, Some(KillContainerOptionsBuilder::new().signal("SIGKILL").build()))
                .await;
        }
        self.remove(id).await
    }

    async fn inventory_containers(&self, filter: &TagFilter) -> Result<Vec<LiveResource>, FleetError> {
        let filters = HashMap::from([("label".to_owned(), label_filters(filter)?)]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
            .await
            .map_err(|error| FleetError::Inventory { reason: format!("cannot list Docker containers: {error}") })?;
        let mut resources = Vec::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let tags = tags_of(container.labels.as_ref());
            if !tags.matches(filter) {
                continue;
            }
            let address = container.network_settings.and_then(|settings| settings.networks).and_then(|networks| {
                networks.into_values().find_map(|endpoint| endpoint.ip_address.filter(|ip| !ip.is_empty()))
            });
            resources.push(LiveResource {
                id: ResourceId(format!("{ID_PREFIX}{id}")),
                kind: "container",
                tags,
                started_at: container.created.map(|seconds| Timestamp::from_millis(seconds.saturating_mul(1000))),
                address,
            });
        }
        Ok(resources)
    }
}

/// The `docker` kind in the provisioner registry: workers are containers
/// on the job's network (`network`, `subnet`, `image`), as the image's user;
/// the coordinator runs in a container too, started by a host broker.
pub(crate) const KIND: ProvisionerKindEntry = ProvisionerKindEntry {
    name: "docker",
    summary: "Docker containers.",
    options: &["network", "subnet", "image"],
    coordinator: CoordinatorPlacement::ContainerThroughBroker,
    workers_in_subnet: true,
    connect: connect_kind,
};

fn connect_kind() -> BoxFuture<'static, Result<Arc<dyn Provisioner>, FleetError>> {
    Box::pin(async { Ok(Arc::new(DockerProvisioner::connect().await?) as Arc<dyn Provisioner>) })
}

impl Provisioner for DockerProvisioner {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    /// The engine on this host attaches to each container and writes its output files here.
    fn output_reaches_this_host(&self) -> bool {
        true
    }

    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
        Box::pin(self.start_container(spec))
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.observe(container_id(id)?).await })
    }

    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.wait_for_end(container_id(id)?, timeout).await })
    }

    fn stop<'a>(&'a self, id: &'a ResourceId, grace: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, Some(grace)))
    }

    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, None))
    }

    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
        Box::pin(self.inventory_containers(filter))
    }

    fn remove_unused_networks<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<String>, FleetError>> {
        Box::pin(self.reap_unused_networks(filter))
    }
}

/// Appends an engine log stream (a container's or a service's) to the
/// `stdout`/`stderr` files as it comes, as a local process would write them,
/// until the stream ends.
pub(crate) async fn append_log_stream(
    stream: impl futures::Stream<Item = Result<bollard::container::LogOutput, DockerError>>,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut files: HashMap<PathBuf, tokio::fs::File> = HashMap::new();
    while let Some(Ok(output)) = stream.next().await {
        let (path, bytes) = match output {
            bollard::container::LogOutput::StdOut { message } => (stdout.as_ref(), message),
            bollard::container::LogOutput::StdErr { message } => (stderr.as_ref(), message),
            bollard::container::LogOutput::Console { message } => (stdout.as_ref(), message),
            bollard::container::LogOutput::StdIn { .. } => continue,
        };
        let Some(path) = path else { continue };
        if !files.contains_key(path) {
            match tokio::fs::OpenOptions::new().create(true).append(true).open(path).await {
                Ok(file) => {
                    files.insert(path.clone(), file);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot write a container's output");
                    return;
                }
            }
        }
        if let Some(file) = files.get_mut(path) {
            let _ = file.write_all(&bytes).await;
        }
    }
}

/// The host configuration every Mayfly container starts with, workers and
/// function instances alike: on `network_mode` (a user-defined network or
/// `none`, never the host's), unprivileged, every capability dropped, no new
/// privileges, a read-only root file system with a private `/tmp`, at most
/// 1024 processes, `memory` without swap beyond it, nothing of the host but
/// `binds`, and the `none` log driver: what a container writes may be health
/// data, which the engine's default `json-file` driver would keep on its
/// disk in plaintext; Mayfly attaches to the streams instead and seals them.
fn hardened_host_config(network_mode: String, memory: Option<i64>, binds: Vec<String>) -> HostConfig {
    HostConfig {
        log_config: Some(HostConfigLogConfig { typ: Some(NO_ENGINE_LOG.to_owned()), config: None }),
        network_mode: Some(network_mode),
        memory,
        // No swap beyond the memory limit.
        memory_swap: memory,
        pids_limit: Some(1024),
        privileged: Some(false),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(CONTAINER_TMP.to_owned(), TMPFS_OPTIONS.to_owned())])),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        binds: (!binds.is_empty()).then_some(binds),
        ..Default::default()
    }
}

/// `name:tag` → (`name`, `tag`); no tag is `latest`. A `:` before the last `/` is a registry port.
fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    }
}

fn container_id(id: &ResourceId) -> Result<&str, FleetError> {
    id.0.strip_prefix(ID_PREFIX)
        .filter(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| FleetError::InvalidResourceId { id: id.clone(), kind: "docker", expected: "container:<id>" })
}

pub(crate) fn is_not_found(error: &DockerError) -> bool {
    matches!(error, DockerError::DockerResponseServerError { status_code: 404, .. })
}

/// The label a tag is carried as.
fn label_key(tag: &str) -> String {
    if tag.starts_with("mayfly.") { tag.to_owned() } else { format!("{TAG_LABEL_PREFIX}{tag}") }
}

pub(crate) fn labels_of(tags: &Tags) -> Result<HashMap<String, String>, String> {
    let mut labels = HashMap::new();
    for (key, value) in tags.iter() {
        check_tag(key, value)?;
        if key == MANAGED_LABEL || key.starts_with(TAG_LABEL_PREFIX) {
            return Err(format!("tag key `{key}` is reserved for Mayfly's Docker labels"));
        }
        labels.insert(label_key(key), value.to_owned());
    }
    Ok(labels)
}

/// The tags a container's or network's labels carry (labels Mayfly did not set are ignored).
pub(crate) fn tags_of(labels: Option<&HashMap<String, String>>) -> Tags {
    let mut tags = BTreeMap::new();
    for (label, value) in labels.into_iter().flatten() {
        if label == MANAGED_LABEL {
            continue;
        }
        if let Some(tag) = label.strip_prefix(TAG_LABEL_PREFIX) {
            tags.insert(tag.to_owned(), value.clone());
        } else if label.starts_with("mayfly.") {
            tags.insert(label.clone(), value.clone());
        }
    }
    Tags::from(tags)
}

/// The engine's `label` filters for `filter`, always requiring [`MANAGED_LABEL`].
pub(crate) fn label_filters(filter: &TagFilter) -> Result<Vec<String>, FleetError> {
    let mut filters = vec![format!("{MANAGED_LABEL}=true")];
    for (key, value) in filter.iter() {
        check_tag(key, value).map_err(|reason| FleetError::Inventory { reason })?;
        filters.push(format!("{}={value}", label_key(key)));
    }
    Ok(filters)
}

/// A relative program path with a folder in it is relative to the working
/// directory (as for local processes); a bare name is looked up on the image's `PATH`.
pub(crate) fn program_in_container(program: &Path, working_dir: &Path) -> String {
    if program.is_relative() && program.components().count() > 1 {
        working_dir.join(program).display().to_string()
    } else {
        program.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_labels() {
        let tags = Tags::new().with("mayfly.run", "run-1").with("owner", "tests").with("data-class", "phi");
        let mut labels = labels_of(&tags).unwrap();
        assert_eq!(labels["mayfly.run"], "run-1");
        assert_eq!(labels["mayfly.tag.owner"], "tests");
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        labels.insert("org.opencontainers.image.title".to_owned(), "from the image".to_owned());
        assert_eq!(tags_of(Some(&labels)), tags);
    }

    #[test]
    fn reserved_and_unusable_tag_keys_are_refused() {
        assert!(labels_of(&Tags::new().with("mayfly.managed", "x")).unwrap_err().contains("reserved"));
        assert!(labels_of(&Tags::new().with("mayfly.tag.owner", "x")).unwrap_err().contains("reserved"));
        assert!(labels_of(&Tags::new().with("a b", "x")).unwrap_err().contains("`a b`"));
    }

    #[test]
    fn filters_always_require_the_managed_label() {
        let filter = TagFilter::new().with("mayfly.run", "r").with("owner", "o");
        assert_eq!(label_filters(&filter).unwrap(), ["mayfly.managed=true", "mayfly.run=r", "mayfly.tag.owner=o"]);
    }

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(split_reference("mayfly-worker:1"), ("mayfly-worker", "1"));
        assert_eq!(split_reference("mayfly-worker"), ("mayfly-worker", "latest"));
        assert_eq!(split_reference("registry:5000/team/worker"), ("registry:5000/team/worker", "latest"));
        assert_eq!(split_reference("registry:5000/team/worker:2"), ("registry:5000/team/worker", "2"));
    }

    #[test]
    fn resource_ids_name_containers() {
        assert_eq!(container_id(&ResourceId("container:abc123".into())).unwrap(), "abc123");
        for bad in ["abc123", "container:", "container:xyz", "pid:1:2"] {
            assert!(matches!(container_id(&ResourceId(bad.into())), Err(FleetError::InvalidResourceId { .. })));
        }
    }
}
