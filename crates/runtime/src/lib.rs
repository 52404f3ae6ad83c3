//! Runs function invocations as real processes under enforced limits.
//!
//! Two runtimes share one entry point, [`Invoker::invoke`]:
//!
//! - **process**: one process per invocation (cold every time); the event JSON
//!   on stdin, the result JSON on stdout, logs on stderr, the exit status
//!   decides success.
//! - **lambda**: each instance is served the AWS Lambda Runtime API on its own
//!   loopback port; instances stay warm, are reused, and are reaped after the
//!   idle timeout. Handlers built on `lambda_runtime` (Rust) or `awslambdaric`
//!   (Python) run unmodified.
//!
//! Every instance runs in its own process group, or, with
//! [`Isolation::Container`], in a Docker container of its own (see
//! `container.rs`); a timeout kills the whole group (the container). A memory limit is enforced by a cgroup per instance (v2 or v1,
//! detected at run time) or, where no cgroup hierarchy is writable, by
//! `RLIMIT_AS` (then exceeding it shows as a crash, not as out-of-memory).
//! Every failure is an [`Outcome`]; `invoke` never panics and never returns an
//! error.

mod child;
mod container;
mod definition;
mod environment;
mod error;
mod gateway;
mod invoker;
mod lambda;
mod logs;
mod memory;
mod peers;
mod process;
mod request_id;

pub use definition::{
    ContainerIsolation, FunctionDefinition, Invocation, InvocationResult, Isolation, Outcome, RuntimeKind,
};
pub use error::SpawnError;
pub use invoker::{
    CredentialIssuer, EndpointRelay, Invoker, InvokerConfig, IssuedCredentials, LAMBDA_INSTANCE_CREDENTIAL_LIFETIME,
};
pub use logs::LOG_CAPTURE_LIMIT;
pub use memory::{MemoryEnforcement, MemoryEnforcementMode};
pub use request_id::{MAX_REQUEST_ID_BYTES, derived_request_id, is_url_safe_request_id, random_request_id};
