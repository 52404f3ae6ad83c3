//! `mayfly broker --run R` (hidden, started by Mayfly): the host side of a
//! Docker job's run.
//!
//! The coordinator of a Docker job runs in a container on the job's network,
//! with the project directory bound into it (its state store, buckets and
//! keyring) and running as the owner of those files. It does not get the
//! Docker engine: this broker keeps the engine to itself and serves the
//! coordinator a provisioner confined to its run's workers over a Unix
//! socket in the run's directory (`mayfly_fleet::ProvisionerBroker`). When
//! the coordinator's container ends, the broker removes it, removes the
//! job's network if nothing uses it any more, audits the run with the
//! host's view (processes, containers, networks) and exits.
//!
//! If the coordinator's container dies before the run is over, the broker
//! exits with an error and leaves the run to the control plane: its lease
//! lapses, `mayfly up` tears the run's fleet down by its tags (this broker
//! included, if it still lives) and starts a new broker.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use mayfly_control::jobs::project_tags;
use mayfly_core::run::RunStatus;
use mayfly_fleet::{
    Confinement, CoordinatorPlacement, DockerProvisioner, ProcessSpec, Provisioner, ProvisionerBroker, ResourceState,
    TAG_ROLE, TAG_RUN,
};
use mayfly_host::coordinator::placement::{CONTAINER_PATH, MAYFLY_IN_IMAGE, job_docker};
use mayfly_host::coordinator::seal_own_output;
use mayfly_host::deployment::run_architecture;
use mayfly_host::jobs::run_dir;
use mayfly_state::StateStore;

use crate::project::Project;

#[derive(Debug, Args)]
pub struct BrokerArgs {
    #[arg(long)]
    pub run: String,
}

/// The socket a run's broker listens on, in the run's directory.
const SOCKET_NAME: &str = "broker.sock";
/// How long the coordinator's container may take to stop when the broker is told to stop.
const COORDINATOR_STOP_GRACE: Duration = Duration::from_secs(10);

pub async fn broker(args: BrokerArgs, project: Option<&Path>) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    seal_own_output(&opened, &args.run, "broker")?;
    let record = opened.state.run(&args.run)?;
    let architecture = run_architecture(&opened, &record)?;
    let job = architecture
        .jobs
        .get(&record.job)
        .with_context(|| format!("job `{}` is not in the run's deployment", record.job))?;
    if job.provisioner.kind.coordinator() != CoordinatorPlacement::ContainerThroughBroker {
        bail!(
            "job `{}` runs its workers with the {} provisioner; its coordinator is `mayfly coordinator`",
            record.job,
            job.provisioner.kind
        );
    }
    let root = std::path::absolute(&located.root)?;
    let run_dir = std::path::absolute(run_dir(&located, &args.run))?;
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let (docker, network) = job_docker(&architecture, &record.job, job).await?;
    let gateway = network.gateway.with_context(|| {
        format!("Docker network `{}` has no gateway address; the coordinator finds its own address by it", network.name)
    })?;
    let docker = Arc::new(docker);
    let run_tags = project_tags(&architecture).with(TAG_RUN, &args.run);

    let socket = run_dir.join(SOCKET_NAME);
    let listener = ProvisionerBroker::bind(&socket)?;
    let broker = ProvisionerBroker::new(
        docker.clone(),
        Confinement { required_tags: run_tags.clone().with(TAG_ROLE, "worker"), mount_root: run_dir.join("tls") },
    );
    let serving = tokio::spawn(broker.serve(listener));

    let log = run_dir.join("coordinator.log");
    let mut env = std::collections::BTreeMap::from([
        ("PATH".to_owned(), CONTAINER_PATH.to_owned()),
        ("MAYFLY_LOG".to_owned(), std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "info".to_owned())),
    ]);
    if let Ok(keyring) = std::env::var(mayfly_buckets::crypto::KEYRING_ENV_VAR) {
        env.insert(mayfly_buckets::crypto::KEYRING_ENV_VAR.to_owned(), keyring);
    }
    // Where the coordinator exports its spans, when the variable (not the file) says so.
    if let Ok(endpoint) = std::env::var(mayfly_host::telemetry::OTLP_ENDPOINT_ENV_VAR) {
        env.insert(mayfly_host::telemetry::OTLP_ENDPOINT_ENV_VAR.to_owned(), endpoint);
    }
    let started = docker
        .start(ProcessSpec {
            program: MAYFLY_IN_IMAGE.into(),
            args: vec![
                "--project".into(),
                root.display().to_string(),
                "coordinator".into(),
                "--run".into(),
                args.run.clone(),
                "--broker".into(),
                socket.display().to_string(),
                "--gateway".into(),
                gateway.to_string(),
            ],
            env,
            working_dir: root.clone(),
            tags: run_tags.clone().with(TAG_ROLE, "coordinator"),
            stdout: Some(log.clone()),
            stderr: Some(log),
            memory: None,
            cpus: None,
            read_only_mounts: Vec::new(),
            // The state store, the buckets and the run's files; the keyring read there too.
            read_write_mounts: vec![root.clone()],
            // As the owner of the project's files, which are owner-only.
            user: Some(owner_of(&located.data_dir())?),
        })
        .await
        .with_context(|| format!("cannot start the coordinator container of run {}", args.run));
    let coordinator = match started {
        Ok(coordinator) => coordinator,
        Err(error) => {
            // Nothing of the run started, and nothing would: the run fails with the reason.
            serving.abort();
            std::fs::remove_file(&socket).ok();
            fail_unstarted_run(opened.state.as_ref(), &args.run, &format!("{error:#}"))?;
            remove_network_if_unused(docker.as_ref(), &network.name).await;
            return Err(error);
        }
    };
    tracing::info!(run = %args.run, container = %coordinator, network = %network.name, "coordinator container started");

    let ended = tokio::select! {
        ended = wait_for_end(docker.as_ref(), &coordinator) => ended,
        () = crate::signals::stop_signal() => {
            tracing::info!(run = %args.run, "stopping the coordinator container");
            docker.stop(&coordinator, COORDINATOR_STOP_GRACE).await.ok();
            ResourceState::Gone
        }
    };
    // Its exit is read; now the container goes (stopping an exited container removes it).
    if let Err(error) = docker.stop(&coordinator, Duration::from_secs(1)).await {
        tracing::warn!(container = %coordinator, error = %error, "cannot remove the coordinator container");
    }
    serving.abort();
    std::fs::remove_file(&socket).ok();

    let finished = opened.state.run(&args.run)?.status.is_finished();
    if finished {
        remove_network_if_unused(docker.as_ref(), &network.name).await;
        mayfly_host::audit::after_run(&located, &opened, &args.run).await;
    }
    match ended {
        ResourceState::Exited { code: Some(0), .. } if finished => Ok(()),
        ended => bail!(
            "the coordinator container of run {} ended ({ended:?}) before the run did; read its log with `mayfly logs {} --process coordinator` (sealed in {}/coordinator.log), and `mayfly up` starts a new one once its lease lapses",
            args.run,
            args.run,
            run_dir.display()
        ),
    }
}

/// Removes the job's network if no container uses it any more (it is shared
/// by every run on it) — that network only: another job's, created a moment
/// ago and not yet joined by its coordinator, is not this run's to remove.
async fn remove_network_if_unused(docker: &DockerProvisioner, network: &str) {
    match docker.remove_network_if_unused(network).await {
        Ok(true) => tracing::info!(network, "network removed"),
        Ok(false) => tracing::info!(network, "network still in use; kept"),
        Err(error) => tracing::warn!(network, error = %error, "cannot remove the network"),
    }
}

/// Ends a run whose coordinator never started as failed, with `error`.
fn fail_unstarted_run(state: &dyn StateStore, run: &str, error: &str) -> Result<()> {
    let owner = format!("broker-{}-{:08x}", std::process::id(), rand::random::<u32>());
    if state.claim_run(run, &owner, Duration::from_secs(60))? {
        state.finish_run(run, &owner, RunStatus::Failed, Some(error), None)?;
    }
    Ok(())
}

/// Waits until `container` no longer runs; its final state.
async fn wait_for_end(docker: &dyn Provisioner, container: &mayfly_fleet::ResourceId) -> ResourceState {
    loop {
        match docker.wait(container, Duration::from_secs(3600)).await {
            Ok(ResourceState::Running) => continue,
            Ok(state) => return state,
            Err(error) => {
                tracing::warn!(container = %container, error = %error, "cannot watch the coordinator container");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `uid:gid` of the owner of `path`.
fn owner_of(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{}:{}", metadata.uid(), metadata.gid()))
}
