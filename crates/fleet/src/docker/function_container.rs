//! Function instances as containers: one container per instance of a
//! function with `isolation = "container"`, started by the runtime crate
//! through [`DockerProvisioner::start_function_container`].
//!
//! A function container gets the same hardening as a worker container
//! ([`hardened_host_config`]): unprivileged, every capability dropped, no
//! new privileges, a read-only root file system with a private `/tmp`, the
//! memory limit without swap, and nothing of the host but the function's
//! working directory, bound read-only at the same path. Its network is
//! `none` (the process runtime needs none) or a Mayfly network (the lambda
//! runtime's instances reach the Runtime API on its gateway).
//!
//! It is labelled like every Mayfly container (the tags of its spec, which
//! the caller fills with the project's tags, the role `function` and the
//! owner, [`TAG_OWNER`](crate::TAG_OWNER)), so `mayfly ps` lists it and the
//! reaper removes it once its owner process is gone. Its standard streams
//! are attached before it starts, so nothing it writes is lost.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{AttachContainerOptionsBuilder, CreateContainerOptionsBuilder};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mayfly_core::ByteSize;
use tokio::io::AsyncWrite;

use super::{
    DockerProvisioner, MANAGED_LABEL, NetworkInfo, NetworkRequest, hardened_host_config, is_not_found, labels_of,
};
use crate::error::FleetError;
use crate::tags::Tags;

/// How to start one function instance as a container.
#[derive(Debug, Clone)]
pub struct FunctionContainerSpec {
    /// The image (it must already be in the engine: nothing is pulled).
    pub image: String,
    /// Program and arguments; a relative program with a `/` is relative to
    /// `working_dir`, a bare name is looked up on the image's `PATH`.
    pub command: Vec<String>,
    /// Added to the image's environment.
    pub env: BTreeMap<String, String>,
    /// The instance's current directory, bound read-only at the same path.
    pub working_dir: PathBuf,
    pub memory: Option<ByteSize>,
    /// The Mayfly network to join (made again, internal, if it went missing
    /// since [`DockerProvisioner::ensure_function_network`]); `None` is no
    /// network at all (`none`).
    pub network: Option<NetworkRequest>,
    pub tags: Tags,
    /// Open the container's standard input (the process runtime's event).
    pub with_stdin: bool,
}

/// A chunk the container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerOutput {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// The exit code of its first process (`128 + n` when signal `n` killed it).
    pub code: Option<i64>,
    /// The engine saw the kernel's OOM killer end it.
    pub oom_killed: bool,
}

/// A container's attached standard input.
pub type ContainerStdin = Pin<Box<dyn AsyncWrite + Send>>;
/// What a container writes, chunk by chunk, until it exits.
pub type ContainerOutputStream = Pin<Box<dyn Stream<Item = ContainerOutput> + Send>>;

/// A started function container with its attached streams.
pub struct FunctionContainer {
    /// The engine's container id.
    pub id: String,
    /// Its address on its network (`None` without one).
    pub address: Option<IpAddr>,
    /// Its standard input, when the spec asked for one; shut it down to close it.
    pub stdin: Option<ContainerStdin>,
    /// What it writes, until it exits.
    pub output: ContainerOutputStream,
}

impl std::fmt::Debug for FunctionContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionContainer")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl DockerProvisioner {
    /// The internal bridge network `request` names, for function instances,
    /// labelled with its tags, created if missing: its containers reach the host (its
    /// gateway) and nothing beyond it.
    pub async fn ensure_function_network(&self, request: &NetworkRequest) -> Result<NetworkInfo, FleetError> {
        self.ensure_bridge_network(request, true).await
    }

    /// Creates, attaches to and starts a function container. A missing
    /// image is [`FleetError::Image`] saying how to build one.
    pub async fn start_function_container(&self, spec: FunctionContainerSpec) -> Result<FunctionContainer, FleetError> {
        let program = spec.command.first().cloned().unwrap_or_default();
        let invalid = |reason: String| FleetError::InvalidSpec { program: program.clone().into(), reason };
        let cannot_start = |reason: String| FleetError::CannotStart { program: program.clone().into(), reason };
        if spec.command.is_empty() {
            return Err(invalid("the function's command is empty".into()));
        }
        match self.docker.inspect_image(&spec.image).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {
                return Err(FleetError::Image {
                    image: spec.image.clone(),
                    reason: format!(
                        "it is not in the local Docker engine (Mayfly pulls nothing); build it with `mayfly image build --tag {} --include <your program and what it reads>`, or `docker pull` / `docker load` it",
                        spec.image
                    ),
                });
            }
            Err(error) => return Err(FleetError::Image { image: spec.image.clone(), reason: error.to_string() }),
        }
        let mut labels = labels_of(&spec.tags).map_err(invalid)?;
        labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
        let working_dir = spec
            .working_dir
            .to_str()
            .filter(|path| spec.working_dir.is_absolute() && !path.contains(':'))
            .ok_or_else(|| {
                invalid(format!(
                    "working directory {} must be an absolute path without `:`",
                    spec.working_dir.display()
                ))
            })?
            .to_owned();
        let mut command = spec.command.clone();
        command[0] = super::program_in_container(std::path::Path::new(&command[0]), &spec.working_dir);
        let memory = spec
            .memory
            .map(|memory| i64::try_from(memory.bytes()))
            .transpose()
            .map_err(|_| invalid("the memory limit does not fit the engine's range".into()))?;
        let network_name = spec.network.as_ref().map(|network| network.name.clone());
        let network_mode = network_name.clone().unwrap_or_else(|| "none".to_owned());
        let host_config: HostConfig =
            hardened_host_config(network_mode, memory, vec![format!("{working_dir}:{working_dir}:ro")]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(command),
            // The image's entrypoint would otherwise wrap the function's command.
            entrypoint: Some(vec![]),
            env: Some(spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect()),
            labels: Some(labels),
            working_dir: Some(working_dir),
            attach_stdin: Some(spec.with_stdin),
            open_stdin: Some(spec.with_stdin),
            // Closing the attached stdin closes the container's.
            stdin_once: Some(spec.with_stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(host_config),
            networking_config: network_name.as_ref().map(|network| NetworkingConfig {
                endpoints_config: Some(std::collections::HashMap::from([(
                    network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().build();
        let created = match (self.docker.create_container(Some(options.clone()), body.clone()).await, &spec.network) {
            // The network was removed since it was ensured (no container used it): make it again.
            (Err(error), Some(network)) if is_not_found(&error) && error.to_string().contains("network") => {
                self.ensure_function_network(network).await?;
                self.docker.create_container(Some(options), body).await
            }
            (created, _) => created,
        };
        let created = created
            .map_err(|error| cannot_start(format!("the Docker engine refused to create the container: {error}")))?;
        let id = created.id;
        let started = self.attach_and_start(&id, spec.with_stdin).await;
        let (stdin, output) = match started {
            Ok(streams) => streams,
            Err(reason) => {
                let _ = self.remove(&id).await;
                return Err(cannot_start(reason));
            }
        };
        let address = match &network_name {
            None => None,
            Some(network) => match self.container_address(&id, network).await {
                Ok(address) => address,
                Err(reason) => {
                    let _ = self.remove(&id).await;
                    return Err(cannot_start(reason));
                }
            },
        };
        tracing::debug!(container = %id, image = %spec.image, ?address, "started function container");
        Ok(FunctionContainer { id, address, stdin, output })
    }

    /// Attaches to the created container `id` (so that none of its output is
    /// missed) and starts it.
    async fn attach_and_start(
        &self,
        id: &str,
        with_stdin: bool,
    ) -> Result<(Option<ContainerStdin>, ContainerOutputStream), String> {
        let options =
            AttachContainerOptionsBuilder::new().stdin(with_stdin).stdout(true).stderr(true).stream(true).build();
        let attached = self
            .docker
            .attach_container(id, Some(options))
            .await
            .map_err(|error| format!("cannot attach to the container: {error}"))?;
        self.docker.start_container(id, None).await.map_err(|error| format!("cannot start the container: {error}"))?;
        let output = attached.output.filter_map(|chunk| async move {
            match chunk {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(ContainerOutput::Stdout(message))
                }
                Ok(LogOutput::StdErr { message }) => Some(ContainerOutput::Stderr(message)),
                Ok(LogOutput::StdIn { .. }) | Err(_) => None,
            }
        });
        Ok((with_stdin.then_some(attached.input), Box::pin(output)))
    }

    async fn container_address(&self, id: &str, network: &str) -> Result<Option<IpAddr>, String> {
        let container = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|error| format!("cannot inspect the started container: {error}"))?;
        Ok(container
            .network_settings
            .and_then(|settings| settings.networks)
            .and_then(|mut networks| networks.remove(network))
            .and_then(|endpoint| endpoint.ip_address)
            .and_then(|address| address.parse().ok()))
    }

    /// Waits until container `id` has exited; how it ended.
    pub async fn wait_for_container_exit(&self, id: &str) -> Result<ContainerExit, FleetError> {
        let mut waiting = self.docker.wait_container(id, None);
        // A non-zero exit arrives as an error item; either way, inspect says how it ended.
        while waiting.next().await.is_some() {}
        self.container_exit(id).await
    }

    /// How container `id` ended (`code` is `None` while it runs).
    pub async fn container_exit(&self, id: &str) -> Result<ContainerExit, FleetError> {
        let container = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|error| FleetError::Inventory { reason: format!("cannot inspect container {id}: {error}") })?;
        let state = container.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        Ok(ContainerExit {
            code: if running { None } else { state.exit_code },
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// Kills (if it runs) and removes container `id`; `Ok` once the engine no longer knows it.
    pub async fn remove_container(&self, id: &str) -> Result<(), FleetError> {
        self.remove(id).await
    }
}
