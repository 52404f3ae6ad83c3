//! Why an instance could not be started. The invoker turns these into
//! [`Outcome::Crashed`](crate::Outcome::Crashed); they are public so callers
//! that match on the message know the shapes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("the function's command is empty")]
    EmptyCommand,
    #[error("cannot start `{program}` in {working_dir}: {source}")]
    Spawn { program: String, working_dir: PathBuf, source: std::io::Error },
    #[error("cannot watch process {pid} for its exit (pidfd_open): {source}")]
    ExitWatch { pid: i32, source: std::io::Error },
    #[error("cannot set up the memory cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: std::io::Error },
    #[error("cannot serve the Lambda Runtime API on {address}: {source}")]
    RuntimeApi { address: std::net::IpAddr, source: std::io::Error },
    /// A container instance could not be started (no engine, no image, …).
    #[error("{reason}")]
    Container { reason: String },
}
