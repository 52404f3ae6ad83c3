//! What can go wrong when starting, watching, stopping or finding resources.

use std::path::PathBuf;
use std::time::Duration;

use crate::provisioner::{LiveResource, ResourceId};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The resource could not be started: a missing binary, a missing working
    /// directory, an unwritable log file. `reason` names the OS error.
    #[error("cannot start `{program}`: {reason}")]
    CannotStart { program: PathBuf, reason: String },
    /// The spec itself is unusable (a tag key that cannot be carried, an
    /// environment variable that would forge a tag); nothing was started.
    #[error("invalid process spec for `{program}`: {reason}")]
    InvalidSpec { program: PathBuf, reason: String },
    /// The id was not made by this kind of provisioner.
    #[error("`{id}` is not a resource id of the {kind} provisioner (expected {expected})")]
    InvalidResourceId { id: ResourceId, kind: &'static str, expected: &'static str },
    /// Signalling the resource failed for a reason other than it being gone
    /// (typically `EPERM`: it belongs to another user).
    #[error("cannot signal {id}: {source}")]
    Signal { id: ResourceId, source: std::io::Error },
    /// The provisioner refuses to stop the process group it is running in.
    #[error("refusing to stop {id}: it is the caller's own process group")]
    OwnProcessGroup { id: ResourceId },
    /// SIGKILL was sent but the resource was still there after `waited`
    /// (a process stuck in uninterruptible sleep, for example).
    #[error("{id} is still running {waited:?} after SIGKILL; check it with `ps -g <pgid>`")]
    StillRunning { id: ResourceId, waited: Duration },
    /// The system's process table (or container list) could not be read.
    #[error("cannot list live resources: {reason}")]
    Inventory { reason: String },
    /// The Docker engine could not be reached or refused the API version.
    #[error("cannot reach the Docker engine: {reason}; is it running, and may this user use /var/run/docker.sock?")]
    EngineUnreachable { reason: String },
    /// A Docker network could not be created, inspected or removed.
    #[error("Docker network `{network}`: {reason}")]
    Network { network: String, reason: String },
    /// An image could not be imported or inspected.
    #[error("Docker image `{image}`: {reason}")]
    Image { image: String, reason: String },
    /// The provisioning broker could not be reached, refused the request, or
    /// its provisioner failed (the reason says which).
    #[error("provisioning broker: {reason}")]
    Broker { reason: String },
    /// A Slurm command (`sbatch`, `squeue`, `scancel`) failed; `command` is
    /// the command line, `reason` its exit status and standard error.
    #[error("`{command}` failed: {reason}")]
    SlurmCommand { command: String, reason: String },
    /// Some orphans were reaped and some could not be stopped.
    #[error("reaped {} orphan(s) but could not stop {}: {}", reaped.len(), failures.len(), describe_failures(failures))]
    ReapIncomplete { reaped: Vec<LiveResource>, failures: Vec<(ResourceId, String)> },
}

fn describe_failures(failures: &[(ResourceId, String)]) -> String {
    failures.iter().map(|(id, reason)| format!("{id} ({reason})")).collect::<Vec<_>>().join("; ")
}
