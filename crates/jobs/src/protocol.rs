//! The coordinator ↔ worker protocol: JSON over HTTPS with mutual TLS (see
//! [`crate::tls`]), every call made by the worker (workers pull, so pulling
//! is the load balancer).
//!
//! - `POST /v1/enroll` — on the coordinator's enrollment port (TLS, no
//!   client certificate yet): a starting worker trades its one-time token
//!   and a certificate request for its client certificate
//!   ([`crate::enrollment`]). Every call below is over mutual TLS with it.
//! - `POST /v1/hello` — a starting worker asks what to run: the job, the
//!   function's definition and the batch size (workers read nothing from
//!   the state store, so they can run in containers with no access to it).
//!   Saying hello is not yet calling in: a worker that cannot run the
//!   function exits before its first lease and counts as failing to start.
//! - `POST /v1/lease` — a worker asks for up to `max` items; the answer may
//!   also tell it to stop (the run is finishing, or it is surplus).
//! - `POST /v1/complete` — the outcomes of one or more attempts (a worker
//!   sends the items that finished while its previous call was on its way
//!   together), each with its log, and (optionally) the lease of the next
//!   items in the same round trip.
//! - `POST /v1/heartbeat` — "I am alive and hold these items"; the
//!   coordinator extends their leases while heartbeats arrive.
//! - `POST /v1/logs` — a chunk of the worker's log, appended in order.
//! - `POST /v1/output` — what the worker process wrote to its own stdout and
//!   stderr, sent by a worker whose provisioner cannot capture it (started
//!   with `--forward-output`, see [`crate::output_forwarding`]); sealed into
//!   its output file like captured output. Not calling in: it may come
//!   before the first lease (a worker that fails to start says why).
//! - `POST /v1/credentials` — fresh AWS credentials for the function's
//!   `permissions` (a worker asks when the ones it holds would expire before
//!   its next item's deadline); the first come with `/v1/hello`. Workers hold
//!   no key of the store, so the coordinator mints them.
//!
//! Item payloads and results are bytes, carried base64-encoded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mayfly_core::{ByteSize, Name, Permission};
use mayfly_runtime::{FunctionDefinition, Isolation, RuntimeKind};
use serde::{Deserialize, Serialize};

pub const HELLO_PATH: &str = "/v1/hello";
pub const LEASE_PATH: &str = "/v1/lease";
pub const COMPLETE_PATH: &str = "/v1/complete";
pub const HEARTBEAT_PATH: &str = "/v1/heartbeat";
pub const LOGS_PATH: &str = "/v1/logs";
/// Carries a [`LogsRequest`] whose chunk is process output, not log.
pub const OUTPUT_PATH: &str = "/v1/output";
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

/// Every request names the run and the worker, so a worker of another run is
/// refused; the name must be the one the connection's client certificate was issued to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub run: String,
    pub worker: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloRequest {
    pub identity: WorkerIdentity,
}

/// What a worker of this run runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerAssignment {
    pub job: String,
    pub function: FunctionHandoff,
    /// Items to ask for at once.
    pub batch: usize,
    /// How the function reaches the AWS endpoint, when it has `permissions`.
    #[serde(default)]
    pub aws: Option<WorkerAwsAccess>,
}

/// What a worker needs to give its function AWS credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerAwsAccess {
    /// The first credentials; later ones come from `/v1/credentials`.
    pub credentials: HandedCredentials,
    /// The endpoint's certificate (PEM): the worker writes it to a file of
    /// its own host and points `AWS_CA_BUNDLE` there.
    pub ca_bundle_pem: String,
}

/// Credentials minted by the coordinator: the `AWS_*` variables and when
/// they expire (Unix milliseconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandedCredentials {
    pub variables: BTreeMap<String, String>,
    pub expires_at_millis: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialsRequest {
    pub identity: WorkerIdentity,
}

/// A function's definition as it travels to a worker: the runtime's
/// [`FunctionDefinition`], with the item timeout as its timeout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionHandoff {
    pub name: String,
    pub version: String,
    pub runtime: RuntimeKind,
    pub command: Vec<String>,
    pub handler: Option<String>,
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    pub timeout_ms: u64,
    pub memory_bytes: Option<u64>,
    pub concurrency: Option<u32>,
    pub max_payload_bytes: u64,
    /// Absent from coordinators older than container isolation: a process.
    #[serde(default)]
    pub isolation: Isolation,
    /// What its AWS credentials allow; absent from older coordinators: none.
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

impl FunctionHandoff {
    pub fn from_definition(definition: &FunctionDefinition) -> FunctionHandoff {
        FunctionHandoff {
            name: definition.name.to_string(),
            version: definition.version.clone(),
            runtime: definition.runtime,
            command: definition.command.clone(),
            handler: definition.handler.clone(),
            env: definition.env.clone(),
            working_dir: definition.working_dir.clone(),
            timeout_ms: u64::try_from(definition.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_bytes: definition.memory.map(|memory| memory.bytes()),
            concurrency: definition.concurrency,
            max_payload_bytes: definition.max_payload.bytes(),
            isolation: definition.isolation.clone(),
            permissions: definition.permissions.clone(),
        }
    }

    /// The definition back; an unusable function name is refused.
    pub fn into_definition(self) -> Result<FunctionDefinition, String> {
        let name: Name = self.name.parse().map_err(|error| format!("function name `{}`: {error}", self.name))?;
        Ok(FunctionDefinition {
            name,
            version: self.version,
            runtime: self.runtime,
            command: self.command,
            handler: self.handler,
            env: self.env,
            working_dir: self.working_dir,
            timeout: Duration::from_millis(self.timeout_ms),
            memory: self.memory_bytes.map(ByteSize),
            concurrency: self.concurrency,
            max_payload: ByteSize(self.max_payload_bytes),
            isolation: self.isolation,
            permissions: self.permissions,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub identity: WorkerIdentity,
    pub max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeasedItem {
    pub item: String,
    pub attempt: u32,
    /// base64 of the item's payload.
    pub payload: String,
    /// The trace context the function is handed (X-Ray format, its parent
    /// the item's span), when the coordinator records traces; absent from
    /// older coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseResponse {
    pub items: Vec<LeasedItem>,
    /// Finish what you hold, send your logs, and exit.
    pub stop: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Done,
    Failed,
}

/// The outcome of one attempt of one item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    pub item: String,
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    /// base64 of the function's response, for `done`.
    pub result: Option<String>,
    /// What went wrong, for `failed`.
    pub error: Option<String>,
    pub duration_ms: u64,
    /// base64 of this attempt's log, appended to the worker's log before the outcome is recorded.
    #[serde(default)]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub identity: WorkerIdentity,
    /// In the order the worker ran them; all are recorded, each on its own
    /// (one may be refused while the others are accepted).
    pub attempts: Vec<AttemptReport>,
    /// Lease up to this many next items in the same call (0: none).
    #[serde(default)]
    pub lease_next: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteResponse {
    /// One per attempt, in order: false when the attempt no longer held its
    /// item (it was re-leased elsewhere).
    pub accepted: Vec<bool>,
    /// The next items, when `lease_next` asked for them.
    #[serde(default)]
    pub items: Vec<LeasedItem>,
    /// Finish and exit: no more items for this worker.
    #[serde(default)]
    pub stop: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub identity: WorkerIdentity,
    /// Items the worker is working on now.
    pub holding: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub stop: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsRequest {
    pub identity: WorkerIdentity,
    /// base64 of the bytes to append.
    pub chunk: String,
}

/// The event a function receives for one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ItemEvent {
    pub job: String,
    pub run: String,
    pub item: String,
    pub attempt: u32,
    /// The payload as JSON when it is JSON, else as a string (lossy UTF-8).
    pub payload: serde_json::Value,
}

pub fn encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text)
}
