//! From the architecture file's functions to what the runtime runs and what
//! the state store must hold for them: the runtime's `FunctionDefinition`,
//! each function's internal asynchronous-invocation queue, and the cost model.

use std::path::Path;
use std::time::Duration;

use mayfly_core::queue::QueueConfig;
use mayfly_core::{ByteSize, Name};
use mayfly_runtime::{ContainerIsolation, FunctionDefinition, Isolation, RuntimeKind};
use mayfly_spec::{Architecture, FunctionSpec, Isolation as SpecIsolation, PricingSpec, Runtime};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where asynchronous invocations go when their retries are exhausted and the
/// function names no `on_failure` queue.
pub const FAILED_QUEUE: &str = "mayfly-failed";

/// The timeout of a function that declares none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The internal queue holding `function`'s pending asynchronous invocations:
/// `mayfly-async-<function>`, shortened with a hash when that would be too long.
pub fn async_queue_name(function: &Name) -> Name {
    let prefix = format!("{}async-", Name::RESERVED_PREFIX);
    let full = format!("{prefix}{function}");
    let name = if full.len() <= Name::MAX_LENGTH {
        full
    } else {
        let hash = hex::encode(&Sha256::digest(function.as_str().as_bytes())[..4]);
        let keep = Name::MAX_LENGTH - prefix.len() - hash.len() - 1;
        format!("{prefix}{}-{hash}", &function.as_str()[..keep])
    };
    Name::new(name).expect("built from a valid name, a fixed prefix and hex") // ASCII, ≤ 63
}

pub fn failed_queue_name() -> Name {
    Name::new(FAILED_QUEUE).expect("constant name is valid")
}

/// The function's timeout, or the default.
pub fn function_timeout(spec: &FunctionSpec) -> Duration {
    spec.timeout.unwrap_or(DEFAULT_TIMEOUT)
}

/// How much longer than the function's timeout an asynchronous invocation
/// leases its message: time to record the invocation and delete the message.
pub const ASYNC_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The lease an asynchronous invocation of `spec` takes on its message: the
/// function's timeout plus [`ASYNC_LEASE_MARGIN`]. The invoker renews it while
/// the invocation waits for a concurrency slot or runs, so a message is
/// delivered again about this long after the control plane holding it died.
pub fn async_lease(spec: &FunctionSpec) -> Duration {
    (function_timeout(spec) + ASYNC_LEASE_MARGIN).min(QueueConfig::MAX_VISIBILITY_TIMEOUT)
}

/// The queues Mayfly creates for itself for this architecture: `mayfly-failed`
/// and one asynchronous-invocation queue per function. An invocation holds its
/// message's lease for [`async_lease`]; a message
/// received more often than the function's attempts (the control plane died
/// mid-invocation each time) goes to the failure destination, so not even a
/// crash loop retries forever.
pub fn internal_queues(architecture: &Architecture) -> Vec<(Name, QueueConfig)> {
    if architecture.functions.is_empty() {
        return Vec::new();
    }
    let mut queues = vec![(
        failed_queue_name(),
        QueueConfig { retention: Duration::from_secs(14 * 86_400), ..QueueConfig::default() },
    )];
    for (name, spec) in &architecture.functions {
        let destination = spec.on_failure.clone().unwrap_or_else(failed_queue_name);
        let lease = async_lease(spec);
        queues.push((
            async_queue_name(name),
            QueueConfig {
                visibility_timeout: lease,
                max_receives: Some(spec.retries.max_attempts.max(1)),
                dead_letter: Some(destination),
                max_message_size: ByteSize(6 * 1024 * 1024 + 64 * 1024),
                ..QueueConfig::default()
            },
        ));
    }
    queues
}

/// One pending asynchronous invocation, as stored in the function's internal queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AsyncEnvelope {
    /// What caused it: `bucket:inbox`, `schedule:<expression>`, …
    pub trigger: String,
    /// The event handed to the function.
    pub event: serde_json::Value,
}

/// The Docker network lambda instances of `architecture`'s container
/// functions join to reach the Runtime API on its gateway.
pub fn function_network_name(architecture: &Architecture) -> String {
    format!("mayfly-fn-{}", architecture.name)
}

/// What the runtime needs to run `spec`, function `name` of `architecture`.
///
/// A container function (`isolation = "container"`) gets its image, the
/// project's network for lambda instances and the project's and function's
/// tags as labels; it gets no `MAYFLY_PROJECT` / `MAYFLY_BIN`, because the
/// project's store is not reachable from inside its container.
pub fn function_definition(
    architecture: &Architecture,
    name: &Name,
    spec: &FunctionSpec,
    deployment_version: Option<u64>,
    project_root: &Path,
    mayfly_bin: &Path,
) -> FunctionDefinition {
    let mut env = spec.env.clone();
    let isolation = match (spec.isolation, &spec.image) {
        (SpecIsolation::Container, Some(image)) => {
            let mut tags = crate::jobs::project_tags(architecture);
            for (key, value) in &spec.tags {
                tags.insert(key, value);
            }
            Isolation::Container(ContainerIsolation {
                image: image.clone(),
                network: function_network_name(architecture),
                tags,
            })
        }
        // Validation refuses a container function without an image.
        _ => {
            env.insert("MAYFLY_PROJECT".into(), project_root.display().to_string());
            env.insert("MAYFLY_BIN".into(), mayfly_bin.display().to_string());
            Isolation::Process
        }
    };
    FunctionDefinition {
        name: name.clone(),
        version: deployment_version.map_or_else(|| "$LATEST".to_owned(), |v| v.to_string()),
        runtime: match spec.runtime {
            Runtime::Process => RuntimeKind::Process,
            Runtime::Lambda => RuntimeKind::Lambda,
        },
        command: spec.command.clone(),
        handler: spec.handler.clone(),
        env,
        working_dir: project_root.to_path_buf(),
        timeout: function_timeout(spec),
        memory: spec.memory,
        concurrency: spec.concurrency,
        max_payload: ByteSize(6 * 1024 * 1024),
        isolation,
        permissions: spec.permissions.clone(),
    }
}

/// The estimated cost of one invocation under `[pricing]`: a price per
/// invocation, per second of wall time (`cpu_second`), and per GB-second of
/// the memory limit (`gb_second`; 128 MiB when the function sets none).
pub fn estimate_cost(pricing: &PricingSpec, memory: Option<ByteSize>, duration: Duration) -> f64 {
    let seconds = duration.as_secs_f64();
    let gigabytes = memory.map_or(128.0 / 1024.0, |m| m.bytes() as f64 / ByteSize::GIB as f64);
    pricing.invocation + pricing.cpu_second * seconds + pricing.gb_second * gigabytes * seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_queue_names_are_valid_and_distinct() {
        let short = async_queue_name(&Name::new("rename").unwrap());
        assert_eq!(short.as_str(), "mayfly-async-rename");
        let long_a = async_queue_name(&Name::new("a".repeat(63)).unwrap());
        let long_b = async_queue_name(&Name::new(format!("{}b", "a".repeat(62))).unwrap());
        assert!(long_a.as_str().len() <= 63 && long_b.as_str().len() <= 63);
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn cost_adds_invocation_time_and_memory() {
        let pricing = PricingSpec { invocation: 0.5, cpu_second: 1.0, gb_second: 2.0, ..PricingSpec::default() };
        let cost = estimate_cost(&pricing, Some(ByteSize(512 * 1024 * 1024)), Duration::from_secs(2));
        assert!((cost - (0.5 + 2.0 + 2.0 * 0.5 * 2.0)).abs() < 1e-9, "{cost}");
    }
}
