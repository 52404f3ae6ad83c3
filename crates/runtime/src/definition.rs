//! What the invoker is given (a function's definition and one invocation) and
//! what it gives back (the result with its [`Outcome`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mayfly_core::{ByteSize, Name, Timestamp};
use serde::{Deserialize, Serialize};

/// How a function's code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// One process per invocation: event on stdin, result on stdout.
    #[default]
    Process,
    /// The AWS Lambda Runtime API on loopback; instances stay warm.
    Lambda,
}

/// What a function's instances are isolated in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A local process group (and memory cgroup) per instance.
    #[default]
    Process,
    /// A Docker container per instance.
    Container(ContainerIsolation),
}

/// How a function's instances run as containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIsolation {
    /// The image every instance starts from; it must be in the local engine.
    pub image: String,
    /// The Mayfly network lambda instances join to reach the Runtime API on
    /// its gateway (created when missing, internal, labelled with `tags`).
    /// Process-runtime instances have no network at all.
    pub network: String,
    /// Labels of every container (the project's tags): the invoker adds the
    /// role, the function and itself as the owner.
    pub tags: mayfly_fleet::Tags,
}

/// Everything the invoker needs to run a function: its code, environment and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDefinition {
    pub name: Name,
    /// The deployment version, `$LATEST` if none.
    pub version: String,
    pub runtime: RuntimeKind,
    /// Program and arguments. A relative program path containing `/` is
    /// resolved against `working_dir`; a bare name is looked up on `PATH`.
    pub command: Vec<String>,
    /// `_HANDLER` for the lambda runtime.
    pub handler: Option<String>,
    pub env: BTreeMap<String, String>,
    /// The instance's current directory and `LAMBDA_TASK_ROOT`.
    pub working_dir: PathBuf,
    /// Wall-clock limit of one invocation (and, separately, of a cold start's init).
    pub timeout: Duration,
    /// Memory limit of one instance, its process group and descendants included.
    pub memory: Option<ByteSize>,
    /// Most invocations of this function running at once; `None` is unbounded.
    pub concurrency: Option<u32>,
    /// Largest event and largest response accepted.
    pub max_payload: ByteSize,
    /// A process group per instance, or a container.
    pub isolation: Isolation,
    /// What its AWS credentials allow (see [`crate::CredentialIssuer`]);
    /// empty: it gets none. Container instances get none yet.
    pub permissions: Vec<mayfly_core::Permission>,
}

impl FunctionDefinition {
    /// The version a function has when no deployment names one.
    pub const LATEST_VERSION: &'static str = "$LATEST";
    /// AWS Lambda's synchronous payload limit.
    pub const DEFAULT_MAX_PAYLOAD: ByteSize = ByteSize(6 * 1024 * 1024);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    /// A definition with the defaults: `$LATEST`, no handler, no extra
    /// environment, 3 s timeout, no memory limit, unbounded concurrency, 6 MB
    /// payloads, process isolation.
    pub fn new(name: Name, runtime: RuntimeKind, command: Vec<String>, working_dir: PathBuf) -> FunctionDefinition {
        FunctionDefinition {
            name,
            version: Self::LATEST_VERSION.to_owned(),
            runtime,
            command,
            handler: None,
            env: BTreeMap::new(),
            working_dir,
            timeout: Self::DEFAULT_TIMEOUT,
            memory: None,
            concurrency: None,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            isolation: Isolation::Process,
            permissions: Vec::new(),
        }
    }
}

/// One request to run a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Unique per invocation; the `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// The event, JSON.
    pub payload: Vec<u8>,
    /// Passed to the handler as `Lambda-Runtime-Trace-Id` when present
    /// (lambda runtime; X-Ray format, which the runtime client puts in
    /// `_X_AMZN_TRACE_ID`).
    pub trace_id: Option<String>,
    /// The W3C trace context (`00-TRACE-SPAN-01`) a process-runtime
    /// invocation gets as its `TRACEPARENT` variable, when present.
    pub traceparent: Option<String>,
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationResult {
    pub request_id: String,
    pub outcome: Outcome,
    /// The handler's result (JSON) when it gave one.
    pub response: Option<Vec<u8>>,
    /// When the invocation got its concurrency slot and started.
    pub started_at: Timestamp,
    /// From handing the event to the handler to its result, init excluded.
    pub duration: Duration,
    /// `Some` on a cold start: for the lambda runtime, spawn until the
    /// instance's first `/next`; for the process runtime (always cold), the spawn.
    pub init_duration: Option<Duration>,
    /// Peak memory in bytes: the instance cgroup's peak while this invocation
    /// ran, or (without a cgroup) the process's maximum resident set.
    pub peak_memory: Option<u64>,
    /// This request's logs: stdout and stderr (lambda) or stderr (process),
    /// at most [`LOG_CAPTURE_LIMIT`](crate::LOG_CAPTURE_LIMIT) bytes and a truncation note.
    pub logs: Vec<u8>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// How an invocation ended. Every failure is one of these; none is a panic or an `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The handler reported an error (lambda `/error`), or the process exited
    /// non-zero (`error_type` "ProcessExit", the message has the status and the
    /// last stderr lines).
    FunctionError {
        error_type: String,
        message: String,
    },
    /// The timeout elapsed; the whole process group was killed.
    TimedOut {
        after: Duration,
    },
    /// The instance exceeded its memory limit and was killed.
    OutOfMemory {
        limit: ByteSize,
    },
    /// The instance died (signal, exit before responding, init error) or could not start.
    Crashed {
        reason: String,
    },
    /// The process runtime's stdout was not JSON.
    InvalidResponse {
        reason: String,
    },
    /// The event or the response is larger than the function's `max_payload`.
    PayloadTooLarge {
        size: u64,
        limit: ByteSize,
    },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success)
    }

    /// A stable short name for ledgers and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FunctionError { .. } => "error",
            Outcome::TimedOut { .. } => "timeout",
            Outcome::OutOfMemory { .. } => "out_of_memory",
            Outcome::Crashed { .. } => "crashed",
            Outcome::InvalidResponse { .. } => "invalid_response",
            Outcome::PayloadTooLarge { .. } => "payload_too_large",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::FunctionError { error_type, message } => write!(f, "{error_type}: {message}"),
            Outcome::TimedOut { after } => write!(f, "timed out after {} s", format_seconds(*after)),
            Outcome::OutOfMemory { limit } => write!(f, "out of memory (limit {limit})"),
            Outcome::Crashed { reason } => write!(f, "crashed: {reason}"),
            Outcome::InvalidResponse { reason } => write!(f, "invalid response: {reason}"),
            Outcome::PayloadTooLarge { size, limit } => {
                write!(f, "payload of {size} bytes is larger than the limit of {limit}")
            }
        }
    }
}

/// `3`, `0.5`, `1.25`: seconds without trailing zeros.
fn format_seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        text.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_out_reads_in_seconds() {
        assert_eq!(Outcome::TimedOut { after: Duration::from_secs(2) }.to_string(), "timed out after 2 s");
        assert_eq!(Outcome::TimedOut { after: Duration::from_millis(1500) }.to_string(), "timed out after 1.5 s");
    }

    #[test]
    fn kinds_are_stable() {
        let kinds = [
            Outcome::Success,
            Outcome::FunctionError { error_type: "E".into(), message: "m".into() },
            Outcome::TimedOut { after: Duration::ZERO },
            Outcome::OutOfMemory { limit: ByteSize(1) },
            Outcome::Crashed { reason: "r".into() },
            Outcome::InvalidResponse { reason: "r".into() },
            Outcome::PayloadTooLarge { size: 2, limit: ByteSize(1) },
        ]
        .map(|outcome| outcome.kind());
        assert_eq!(
            kinds,
            ["success", "error", "timeout", "out_of_memory", "crashed", "invalid_response", "payload_too_large"]
        );
    }
}
