//! Provisioners: how Mayfly starts, watches, stops and finds the processes
//! and containers that make up a run — its coordinator and its workers.
//!
//! - [`Provisioner`] is the contract every backend implements; it is object
//!   safe, so callers hold an `Arc<dyn Provisioner>`.
//! - [`Tags`] label every resource a provisioner creates (the project's tags
//!   plus Mayfly's own: [`TAG_PROJECT`], [`TAG_RUN`], [`TAG_ROLE`],
//!   [`TAG_WORKER`]); [`Provisioner::inventory`] finds live resources from the
//!   system itself by those tags, so a reaper started after a control plane
//!   restart still finds every orphan ([`reap_orphans`]).
//! - [`LocalProvisioner`] runs resources as local processes, each in its own
//!   process group, tagged through its environment.
//! - [`DockerProvisioner`] runs them as containers of the local Docker engine
//!   on a user-defined network, tagged through their labels, and function
//!   instances with `isolation = "container"` as containers
//!   ([`DockerProvisioner::start_function_container`]).
//! - [`ProvisionerKind`] names a kind of provisioner (`local`, `docker`) from
//!   the one registry of kinds: the facts other crates ask about it
//!   ([`CoordinatorPlacement`], its spec keys) and how to
//!   connect a provisioner of it.
//! - [`SlurmProvisioner`] runs them as Slurm batch jobs (one job, or a task
//!   of a job array per resource), driven through `sbatch`, `squeue --json`
//!   and `scancel`, tagged through the job's name and comment.
//! - [`SwarmProvisioner`] runs them as Docker Swarm services of one task
//!   each, placed by the swarm on any node, tagged through service labels.
//! - [`ProvisionerBroker`] serves a provisioner over a Unix socket, confined
//!   to one run's workers, to a coordinator that runs in a container;
//!   [`BrokeredProvisioner`] is its client.

mod broker;
mod docker;
mod error;
mod local;
mod provisioner;
mod reaper;
mod registry;
mod slurm;
mod swarm;
mod tags;

pub use broker::{BrokeredProvisioner, Confinement, ProvisionerBroker};
pub use docker::{
    CONTAINER_TMP, ContainerExit, ContainerOutput, ContainerPlacement, DockerProvisioner, FunctionContainer,
    FunctionContainerSpec, MANAGED_LABEL, NetworkInfo, NetworkRequest,
};
pub use error::FleetError;
pub use local::LocalProvisioner;
pub use provisioner::{BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState};
pub use reaper::reap_orphans;
pub use registry::{ConnectProvisioner, CoordinatorPlacement, ProvisionerKind, ProvisionerKindEntry};
pub use slurm::{JobRef, SNAPSHOT_MAX_AGE, SlurmJob, SlurmProvisioner, SlurmSettings};
pub use swarm::{SwarmPlacement, SwarmProvisioner};
pub use tags::{
    TAG_FUNCTION, TAG_OWNER, TAG_PROJECT, TAG_ROLE, TAG_RUN, TAG_WORKER, TagFilter, Tags, owner_is_alive,
    owner_of_this_process,
};
