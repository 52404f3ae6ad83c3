//! The control plane as the host composes and runs it (`mayfly up`, and
//! in-process tests): one per project directory (`.mayfly/control.lock`),
//! campaigning for the control-plane lease; the deployed architecture's
//! invoker with the credentials of functions with `permissions`; the
//! provisioners and coordinator launch of its runs; the HTTPS API that
//! `[api]` declares; and retention beside it. What to print about it is the
//! caller's: `mayfly up` announces through the `announce` callback.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mayfly_control::{Announcement, ControlPlaneConfig, ShutdownTrigger};
use mayfly_core::{Clock, SystemClock};
use mayfly_runtime::Invoker;
use mayfly_state::StateStore;

use crate::api_server::{
    ApiServer, CertificateMade, bind_api_server, function_credentials, invoker_config, serving_certificate_paths,
};
use crate::deployment::deployed_architecture;
use crate::jobs::{coordinator_launch, fleet_provisioners};
use crate::project::{OpenProject, Project};

/// `.mayfly/control.lock`, held by the running control plane of a project
/// directory; it holds that control plane's pid and its lease holder id.
pub struct ControlPlaneLock {
    _file: std::fs::File,
    /// The holder id the previous control plane of this directory wrote:
    /// it is dead now (its lock was free), so its lease may be released.
    pub previous_holder: Option<String>,
}

/// Hold `.mayfly/control.lock` so that one project directory has one control
/// plane, and write this one's pid and lease `holder` id into it.
pub fn lock_control_plane(project: &Project, holder: &str) -> Result<ControlPlaneLock> {
    use std::os::fd::AsRawFd;
    let path = project.data_dir().join("control.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own and keep open for the lock's lifetime.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    let recorded = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines = recorded.lines().map(str::trim);
    let (pid, previous_holder) = (lines.next().unwrap_or_default(), lines.next().filter(|line| !line.is_empty()));
    if !locked {
        return Err(crate::Refused(format!(
            "a control plane is already running for {} (pid {pid}); stop it first",
            project.root.display(),
        ))
        .into());
    }
    let previous_holder = previous_holder.map(str::to_owned);
    file.set_len(0).ok();
    writeln!(&file, "{}\n{holder}", std::process::id()).ok();
    Ok(ControlPlaneLock { _file: file, previous_holder })
}

/// How a control plane runs: `mayfly up`'s options, and the executable
/// functions may call and coordinators are started from.
#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    /// How often idle loops look for new work.
    pub poll_interval: Duration,
    /// Reap warm function instances idle this long (scale to zero).
    pub idle_timeout: Duration,
    /// How long the control-plane lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How often the leader renews the lease and a standby asks for it.
    pub lease_renew_every: Duration,
    /// The `mayfly` executable (`MAYFLY_BIN` of functions; coordinators).
    pub mayfly_bin: PathBuf,
}

/// A control plane composed for an open project, holding its directory's
/// lock, not yet running.
pub struct ComposedControlPlane {
    pub config: ControlPlaneConfig,
    /// The credentials functions with `permissions` get (with `[api]`); the
    /// AWS endpoint's address is set on them once it is bound.
    pub credentials: Option<mayfly_aws::FunctionCredentials>,
    /// What composing made of the API's certificate, in order, for the caller to announce.
    pub certificates_made: Vec<CertificateMade>,
    launch: mayfly_control::jobs::CoordinatorLaunch,
    lock: ControlPlaneLock,
    keyring_follower: Option<tokio::task::JoinHandle<()>>,
}

/// Lock the project directory's control plane and compose it for the
/// deployed architecture (its certificate made, or made to name
/// `[api].aws_advertise`, before anything hands it out).
pub async fn compose_control_plane(
    located: &Project,
    opened: &OpenProject,
    settings: &ControlPlaneSettings,
) -> Result<ComposedControlPlane> {
    let holder = mayfly_control::leadership::new_holder_id();
    let lock = lock_control_plane(located, &holder)?;
    let leader = mayfly_control::LeaderLease {
        holder,
        ttl: settings.lease_ttl,
        renew_every: settings.lease_renew_every,
        dead_predecessor: lock.previous_holder.clone(),
    };
    let keyring_follower = opened.follow_keyring_file(located);
    let (version, architecture) = deployed_architecture(opened)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut certificates_made = Vec::new();
    if architecture.api.is_some() {
        // Made (or made to name `[api].aws_advertise`) before anything hands it out.
        certificates_made.push(serving_certificate_paths(located, architecture.api.as_ref())?.1);
    }
    let (credentials, made) = function_credentials(located, opened, &architecture)?;
    certificates_made.push(made);
    let invoker = Invoker::new(invoker_config(settings.idle_timeout, credentials.as_ref()));
    let state: Arc<dyn StateStore> = opened.state.clone();
    let fleet = fleet_provisioners(&architecture).await?;
    let launch = coordinator_launch(located, settings.mayfly_bin.clone())?;
    let config = ControlPlaneConfig {
        architecture: Arc::new(architecture),
        deployment_version: version,
        project_root: std::path::absolute(&located.root)?,
        mayfly_bin: settings.mayfly_bin.clone(),
        state,
        invoker,
        clock,
        poll_interval: settings.poll_interval,
        jobs: Some(mayfly_control::JobsConfig {
            provisioner: Arc::new(mayfly_fleet::LocalProvisioner::new()),
            fleet,
            launch: launch.clone(),
        }),
        leader,
    };
    Ok(ComposedControlPlane { config, credentials, certificates_made, launch, lock, keyring_follower })
}

impl ComposedControlPlane {
    /// Bind the HTTPS API that `[api]` declares, served by the control plane
    /// too, with the control plane's invoker; `None` without `[api]`.
    pub async fn bind_declared_api(&self, located: &Project, opened: &OpenProject) -> Result<Option<ApiServer>> {
        if self.config.architecture.api.is_none() {
            return Ok(None);
        }
        let deployed = (self.config.deployment_version, self.config.architecture.as_ref().clone());
        let invoker = self.config.invoker.clone();
        let server = bind_api_server(located, opened, deployed, invoker, None, None, self.launch.clone())
            .await
            .context("cannot start the HTTPS API that `[api]` declares")?;
        if let Some(credentials) = &self.credentials {
            credentials.set_endpoint(server.aws_address);
        }
        Ok(Some(server))
    }

    /// Start the control plane, `api` (if bound) and retention beside it;
    /// `announce` hears which deployment is in force and this host's role.
    pub fn start(
        self,
        opened: &OpenProject,
        api: Option<ApiServer>,
        announce: impl Fn(Announcement) + Send + 'static,
    ) -> RunningControlPlane {
        let (trigger, shutdown) = ShutdownTrigger::new();
        let api = api.map(|server| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            (
                stop,
                tokio::spawn(server.run(async move {
                    let _ = stopped.await;
                })),
            )
        });
        // Retention runs beside the control plane, under the deployment current at each pass.
        let retention = tokio::spawn(mayfly_control::retention::run(
            opened.state.clone(),
            opened.buckets.clone(),
            self.config.clock.clone(),
            shutdown.clone(),
        ));
        let running = tokio::spawn(mayfly_control::run_announcing(self.config, shutdown, announce));
        RunningControlPlane {
            trigger,
            running,
            api,
            retention,
            _lock: self.lock,
            _keyring_follower: self.keyring_follower,
        }
    }
}

type ApiTask = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>);

/// A running control plane, its API and retention; it holds the project
/// directory's lock until it is dropped.
pub struct RunningControlPlane {
    trigger: ShutdownTrigger,
    running: tokio::task::JoinHandle<Result<(), mayfly_control::ControlError>>,
    api: Option<ApiTask>,
    retention: tokio::task::JoinHandle<Result<(), mayfly_control::ControlError>>,
    _lock: ControlPlaneLock,
    _keyring_follower: Option<tokio::task::JoinHandle<()>>,
}

impl RunningControlPlane {
    /// Run until the control plane ends on its own (a failed loop) or `stop`
    /// completes, which stops it gracefully (in-flight invocations finish
    /// first); then stop the API and retention.
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let result = tokio::select! {
            result = &mut self.running => result,
            () = stop => { self.trigger.trigger(); (&mut self.running).await }
        };
        if let Some((stop, server)) = self.api {
            let _ = stop.send(());
            server.await.context("the API server task panicked")??;
        }
        // The control plane may have ended on its own (a failed loop): stop retention too.
        self.trigger.trigger();
        self.retention.await.context("the retention task panicked")??;
        result.context("the control plane task panicked")??;
        Ok(())
    }
}
