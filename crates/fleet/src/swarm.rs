//! The Docker Swarm provisioner: each resource is a swarm service of one
//! task, placed by the swarm on any of its nodes, reached through a manager's
//! API with `bollard` (the local engine, which must be a swarm manager).
//!
//! - **One service per resource**, replicated with one replica and restart
//!   condition `none`: a task that ends, or is lost with its node, is never
//!   started again by the swarm under the same identity; the coordinator
//!   replaces the worker (a new service, a new enrollment token).
//! - **Tags are service labels**, as the Docker provisioner's container
//!   labels ([`MANAGED_LABEL`], `mayfly.*`, `mayfly.tag.<key>`). The task
//!   containers carry none of them, so the Docker provisioner's inventory of
//!   the same engine never lists (and never reaps) a swarm task's container.
//! - **Ids** are `service:<service id>`.
//! - **Placement** ([`SwarmPlacement`]): the image (on every node: there is no
//!   registry, so `mayfly image build` then `docker save | docker load` on each
//!   node; a node without it rejects the task: the task's end reason, asked
//!   by the coordinator through [`Provisioner::end_reason`], names the node
//!   and the image and becomes the run's error), an attachable overlay network with the subnet
//!   asked for, created labelled when missing, and placement constraints
//!   (`node.labels.gpu == true`). Every task runs with `--init`, a read-only
//!   root file system with a private `/tmp` (tmpfs), every capability dropped,
//!   at most 1024 processes, and the spec's memory and CPU limits. No host path
//!   is mounted: a spec with mounts is refused (workers enroll over the
//!   network). The engine silently drops `no-new-privileges` for services, so
//!   it is not asked for.
//! - **Stopping** removes the service; the engine stops its task with SIGTERM
//!   and SIGKILL after the task's stop grace period ([`STOP_GRACE`], fixed when
//!   the service is made: changing it later would restart the task). A
//!   manager cannot signal a container on another node directly, so `kill` is
//!   a removal too. Gone is verified from the manager's view: no task of the
//!   service is left in a running state.
//! - **Output is not kept.** A task runs with the `none` log driver, since
//!   the node's default `json-file` driver would keep a plaintext copy of
//!   what it writes (health data: a function's error text) on that node's
//!   disk, and a manager cannot attach to a container on another node. A
//!   worker's own log lines still reach the run through its coordinator
//!   (`mayfly logs RUN --worker W`), sealed; why a task ended comes from its
//!   task state ([`Provisioner::end_reason`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    Ipam, IpamConfig, Limit, Mount, MountTmpfsOptions, MountType, NetworkAttachmentConfig, NetworkCreateRequest,
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecLogDriver,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectNetworkOptions, InspectServiceOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
};
use mayfly_core::Timestamp;
use tokio::time::Instant;

use crate::docker::{
    CONTAINER_TMP, MANAGED_LABEL, NO_ENGINE_LOG, is_not_found, label_filters, labels_of, program_in_container, tags_of,
};
use crate::error::FleetError;
use crate::provisioner::{
    BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState, poll_until_ended,
};
use crate::registry::{CoordinatorPlacement, ProvisionerKindEntry};
use crate::tags::TagFilter;

const ID_PREFIX: &str = "service:";
/// How long a task has between SIGTERM and SIGKILL when its service is removed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long removal may take, beyond the grace period, before `stop` reports the task still there.
const REMOVE_VERIFY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
const TMPFS_BYTES: i64 = 256 * 1024 * 1024;

/// Where and from what the provisioner starts services.
#[derive(Debug, Clone)]
pub struct SwarmPlacement {
    /// The image every task starts from; it must be on every node that may run it.
    pub image: String,
    /// The attachable overlay network tasks join, created labelled with
    /// `network_tags` if missing.
    pub network: String,
    /// `a.b.c.d/n`; `None` lets the swarm choose.
    pub subnet: Option<String>,
    pub network_tags: crate::Tags,
    /// Swarm placement constraints, as `docker service create --constraint` takes them.
    pub constraints: Vec<String>,
}

/// Runs resources as swarm services. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SwarmProvisioner {
    docker: Docker,
    placement: Option<Arc<SwarmPlacement>>,
}

impl SwarmProvisioner {
    /// Connects to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`),
    /// which must be a manager of an active swarm.
    pub async fn connect() -> Result<SwarmProvisioner, FleetError> {
        let unreachable = |reason: String| FleetError::EngineUnreachable { reason };
        let docker = Docker::connect_with_local_defaults().map_err(|error| unreachable(error.to_string()))?;
        let docker = docker.negotiate_version().await.map_err(|error| unreachable(error.to_string()))?;
        let info = docker.info().await.map_err(|error| unreachable(error.to_string()))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm.local_node_state.map_or_else(|| "unknown".to_owned(), |state| state.to_string());
            return Err(unreachable(format!(
                "this engine is not a swarm manager (its swarm state is `{state}`); run Mayfly on a manager node, or point DOCKER_HOST at one"
            )));
        }
        Ok(SwarmProvisioner { docker, placement: None })
    }

    /// This provisioner, starting services from `placement`.
    pub fn with_placement(mut self, placement: SwarmPlacement) -> SwarmProvisioner {
        self.placement = Some(Arc::new(placement));
        self
    }

    /// The manager's client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The overlay network of `placement`, created (attachable, labelled) if missing.
    /// An existing network of another driver or subnet is refused.
    pub async fn ensure_network(&self, placement: &SwarmPlacement) -> Result<(), FleetError> {
        let failed = |reason: String| FleetError::Network { network: placement.network.clone(), reason };
        match self.docker.inspect_network(&placement.network, None::<InspectNetworkOptions>).await {
            Ok(network) => {
                if network.driver.as_deref() != Some("overlay") {
                    return Err(failed(format!(
                        "it exists with driver `{}`, but swarm workers need an overlay network; choose another network name",
                        network.driver.unwrap_or_default()
                    )));
                }
                let subnet = network.ipam.and_then(|ipam| ipam.config).and_then(|configs| configs.into_iter().next());
                let subnet = subnet.and_then(|config| config.subnet);
                if let Some(wanted) = &placement.subnet
                    && subnet.as_deref() != Some(wanted.as_str())
                {
                    return Err(failed(format!(
                        "it exists with subnet {}, but {wanted} is asked for",
                        subnet.as_deref().unwrap_or("(none)")
                    )));
                }
                return Ok(());
            }
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(failed(error.to_string())),
        }
        let mut labels = labels_of(&placement.network_tags).map_err(failed)?;
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let ipam = placement.subnet.as_ref().map(|subnet| Ipam {
            driver: Some("default".to_owned()),
            config: Some(vec![IpamConfig { subnet: Some(subnet.clone()), ..Default::default() }]),
            options: None,
        });
        let request = NetworkCreateRequest {
            name: placement.network.clone(),
            driver: Some("overlay".to_owned()),
            attachable: Some(true),
            ipam,
            labels: Some(labels),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %placement.network, subnet = ?placement.subnet, "created overlay network");
                Ok(())
            }
            // Created concurrently by another coordinator: use it.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(error) => Err(failed(error.to_string())),
        }
    }

    async fn start_service(&self, spec: ProcessSpec) -> Result<ResourceId, FleetError> {
        let invalid = |reason: String| FleetError::InvalidSpec { program: spec.program.clone(), reason };
        let cannot_start = |reason: String| FleetError::CannotStart { program: spec.program.clone(), reason };
        let placement = self.placement.clone().ok_or_else(|| {
            invalid("this swarm provisioner has no placement (image and network) to start services with".into())
        })?;
        if let Some(path) = spec.read_only_mounts.iter().chain(&spec.read_write_mounts).next() {
            return Err(invalid(format!(
                "swarm tasks get no host path, but {} is asked for; a worker enrolls over the network instead",
                path.display()
            )));
        }
        let mut labels = labels_of(&spec.tags).map_err(invalid)?;
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let memory = spec
            .memory
            .map(|memory| i64::try_from(memory.bytes()))
            .transpose()
            .map_err(|_| invalid("the memory limit does not fit the engine's range".into()))?;
        let container = TaskSpecContainerSpec {
            image: Some(placement.image.clone()),
            command: Some(vec![program_in_container(&spec.program, &spec.working_dir)]),
            args: Some(spec.args.clone()),
            env: Some(spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect()),
            dir: Some(spec.working_dir.display().to_string()),
            user: spec.user.clone(),
            read_only: Some(true),
            init: Some(true),
            capability_drop: Some(vec!["ALL".to_owned()]),
            stop_grace_period: Some(i64::try_from(STOP_GRACE.as_nanos()).unwrap_or(i64::MAX)),
            mounts: Some(vec![Mount {
                target: Some(CONTAINER_TMP.to_owned()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(TMPFS_BYTES),
                    mode: Some(0o1777),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let limits = Limit {
            memory_bytes: memory,
            nano_cpus: spec.cpus.map(|cpus| (cpus * 1e9).round() as i64),
            pids: Some(1024),
        };
        let service = ServiceSpec {
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(container),
                // No engine log on the node (what a task writes may be health
                // data, which `json-file` keeps in plaintext); a swarm task's
                // output is not kept at all (see ARCHITECTURE.md, "Swarm").
                log_driver: Some(TaskSpecLogDriver { name: Some(NO_ENGINE_LOG.to_owned()), options: None }),
                resources: Some(TaskSpecResources { limits: Some(limits), ..Default::default() }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: (!placement.constraints.is_empty()).then(|| TaskSpecPlacement {
                    constraints: Some(placement.constraints.clone()),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(placement.network.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match self.docker.create_service(service.clone(), None).await {
            // The run's network is made once, before its first worker; made
            // again only if it was removed since (no task used it). The
            // manager answers a missing network with a 500, not a 404.
            Err(DockerError::DockerResponseServerError { message, .. })
                if message.contains(&format!("network {} not found", placement.network)) =>
            {
                self.ensure_network(&placement).await?;
                self.docker.create_service(service, None).await
            }
            other => other,
        };
        let created = created.map_err(|error| cannot_start(error.to_string()))?;
        let id = created
            .id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| cannot_start("the swarm returned no service id".into()))?;
        let resource = ResourceId(format!("{ID_PREFIX}{id}"));
        tracing::debug!(id = %resource, image = %placement.image, network = %placement.network, "created swarm service");
        Ok(resource)
    }

    /// The service's tasks, newest first; `None` if the service does not exist.
    async fn tasks(&self, id: &str) -> Result<Option<Vec<Task>>, FleetError> {
        match self.docker.inspect_service(id, None::<InspectServiceOptions>).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => {
                return Err(FleetError::Inventory { reason: format!("cannot inspect swarm service {id}: {error}") });
            }
        }
        let filters = HashMap::from([("service".to_owned(), vec![id.to_owned()])]);
        let mut tasks =
            self.docker.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await.map_err(
                |error| FleetError::Inventory { reason: format!("cannot list the tasks of service {id}: {error}") },
            )?;
        tasks.sort_by_key(|task| std::cmp::Reverse(task.version.as_ref().and_then(|version| version.index)));
        Ok(Some(tasks))
    }

    async fn observe(&self, id: &str) -> Result<ResourceState, FleetError> {
        let Some(tasks) = self.tasks(id).await? else { return Ok(ResourceState::Gone) };
        // A replicated service of one replica with restart condition `none`
        // has one task; a newer one only if the swarm moved it off a lost node.
        let Some(task) = tasks.into_iter().next() else { return Ok(ResourceState::Running) };
        let status = task.status.unwrap_or_default();
        Ok(match status.state {
            Some(
                TaskState::COMPLETE
                | TaskState::FAILED
                | TaskState::SHUTDOWN
                | TaskState::REJECTED
                | TaskState::ORPHANED
                | TaskState::REMOVE,
            ) => {
                if let Some(error) = status.err.filter(|error| !error.is_empty()) {
                    tracing::warn!(service = %id, state = ?status.state, %error, "swarm task ended");
                }
                // A task its node rejected never had a container: its
                // "exit code" 0 is no exit at all.
                let code = status
                    .container_status
                    .filter(|container| container.container_id.as_deref().is_some_and(|id| !id.is_empty()))
                    .and_then(|container| container.exit_code);
                ResourceState::Exited { code: code.and_then(|code| i32::try_from(code).ok()), signal: None }
            }
            // New, pending, assigned, preparing, starting, running: not over yet.
            _ => ResourceState::Running,
        })
    }

    /// What the engine said of the service's last task, if it ended with an
    /// error: the node's name, the task's state and the error, and for an
    /// image missing on that node, how to put it there.
    async fn task_end_reason(&self, id: &str) -> Result<Option<String>, FleetError> {
        let Some(task) = self.tasks(id).await?.and_then(|tasks| tasks.into_iter().next()) else { return Ok(None) };
        let status = task.status.unwrap_or_default();
        let Some(error) = status.err.filter(|error| !error.is_empty()) else { return Ok(None) };
        let state = status.state.map_or_else(|| "ended".to_owned(), |state| state.to_string());
        let node = match task.node_id.filter(|node| !node.is_empty()) {
            Some(node) => match self.docker.inspect_node(&node).await {
                Ok(found) => {
                    let hostname = found.description.and_then(|description| description.hostname);
                    format!("node `{}` ({node})", hostname.unwrap_or_default())
                }
                Err(_) => format!("node {node}"),
            },
            None => "no node".to_owned(),
        };
        let mut reason = format!("the swarm task on {node} was {state}: {error}");
        if error.contains("No such image") {
            let image = self.placement.as_ref().map_or("the image", |placement| placement.image.as_str());
            reason.push_str(&format!(
                "; the image must be on every node that may run a worker (there is no registry): \
                 `docker save {image} | docker load` on that node, or a placement constraint that keeps workers off it"
            ));
        }
        Ok(Some(reason))
    }

    async fn wait_for_end(&self, id: &str, timeout: Duration) -> Result<ResourceState, FleetError> {
        poll_until_ended(timeout, POLL, || self.observe(id)).await
    }

    /// Removes the service and waits until the manager lists no task of it running.
    async fn remove(&self, resource: &ResourceId) -> Result<(), FleetError> {
        let id = service_id(resource)?;
        match self.docker.delete_service(id).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => {
                return Err(FleetError::Signal {
                    id: resource.clone(),
                    source: std::io::Error::other(error.to_string()),
                });
            }
        }
        let waited = STOP_GRACE + REMOVE_VERIFY_TIMEOUT;
        let deadline = Instant::now() + waited;
        let filters = HashMap::from([("service".to_owned(), vec![id.to_owned()])]);
        loop {
            let listed = self.docker.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await;
            let tasks = match listed {
                Ok(tasks) => tasks,
                // The filter names a service that is gone: so are its tasks.
                Err(error) if is_not_found(&error) => Vec::new(),
                Err(error) => {
                    return Err(FleetError::Inventory {
                        reason: format!("cannot list the tasks of {resource}: {error}"),
                    });
                }
            };
            let running = tasks.iter().any(|task| {
                let state = task.status.as_ref().and_then(|status| status.state);
                matches!(state, Some(TaskState::RUNNING | TaskState::STARTING | TaskState::PREPARING))
            });
            if !running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(FleetError::StillRunning { id: resource.clone(), waited });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn inventory_services(&self, filter: &TagFilter) -> Result<Vec<LiveResource>, FleetError> {
        let filters = HashMap::from([("label".to_owned(), label_filters(filter)?)]);
        let services = self
            .docker
            .list_services(Some(ListServicesOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|error| FleetError::Inventory { reason: format!("cannot list swarm services: {error}") })?;
        let mut resources = Vec::new();
        for service in services {
            let Some(id) = service.id else { continue };
            let tags = tags_of(service.spec.as_ref().and_then(|spec| spec.labels.as_ref()));
            if !tags.matches(filter) {
                continue;
            }
            resources.push(LiveResource {
                id: ResourceId(format!("{ID_PREFIX}{id}")),
                kind: "service",
                tags,
                started_at: service.created_at.and_then(|created| created_timestamp(&created)),
                address: None,
            });
        }
        Ok(resources)
    }
}

/// Docker Swarm in the provisioner registry: workers are services on the
/// job's overlay network (`network`, `subnet`, `image`, `constraints`); the
/// coordinator is a process of its own on the manager host, which the
/// workers dial.
pub(crate) const KIND: ProvisionerKindEntry = ProvisionerKindEntry {
    name: "swarm",
    summary: "Docker Swarm services: containers on any node of the swarm this host manages, the image on every node.",
    options: &["network", "subnet", "image", "constraints"],
    coordinator: CoordinatorPlacement::OwnProcess,
    workers_in_subnet: true,
    connect: connect_kind,
};

fn connect_kind() -> BoxFuture<'static, Result<Arc<dyn Provisioner>, FleetError>> {
    Box::pin(async { Ok(Arc::new(SwarmProvisioner::connect().await?) as Arc<dyn Provisioner>) })
}

impl Provisioner for SwarmProvisioner {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    /// A task runs on whichever node the swarm picks; its output stays there.
    fn output_reaches_this_host(&self) -> bool {
        false
    }

    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
        Box::pin(self.start_service(spec))
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.observe(service_id(id)?).await })
    }

    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.wait_for_end(service_id(id)?, timeout).await })
    }

    fn stop<'a>(&'a self, id: &'a ResourceId, _grace: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.remove(id))
    }

    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.remove(id))
    }

    fn end_reason<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<Option<String>, FleetError>> {
        Box::pin(async move { self.task_end_reason(service_id(id)?).await })
    }

    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
        Box::pin(self.inventory_services(filter))
    }
}

fn service_id(id: &ResourceId) -> Result<&str, FleetError> {
    id.0.strip_prefix(ID_PREFIX)
        .filter(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| FleetError::InvalidResourceId { id: id.clone(), kind: "swarm", expected: "service:<id>" })
}

/// The engine's RFC 3339 creation time as a timestamp.
fn created_timestamp(created: &bollard::models::BollardDate) -> Option<Timestamp> {
    let text = created.to_string();
    let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok().map(Timestamp::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_name_services() {
        assert_eq!(
            service_id(&ResourceId("service:kexwcd2yln6bbp3qwv4t83nj2".into())).unwrap(),
            "kexwcd2yln6bbp3qwv4t83nj2"
        );
        for bad in ["kexwcd2", "service:", "service:a/b", "container:abc", "pid:1:2"] {
            assert!(matches!(service_id(&ResourceId(bad.into())), Err(FleetError::InvalidResourceId { .. })));
        }
    }
}
