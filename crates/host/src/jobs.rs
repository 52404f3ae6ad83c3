//! Jobs as the host starts them: how coordinators are launched for a
//! project (`coordinator_launch`), starting a run of a deployed job, and the
//! provisioners a project's runs may have resources in (`fleet_provisioners`,
//! `fleet_inventory`). The CLI's `run`, `reconcile`, `ps`, `up`, `serve` and
//! `audit` reach them here, as in-process tests do.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use mayfly_buckets::crypto::KEYRING_ENV_VAR;
use mayfly_control::jobs::CoordinatorLaunch;
use mayfly_core::{Name, SystemClock};
use mayfly_fleet::{LocalProvisioner, Provisioner, ProvisionerKind, TagFilter};
use mayfly_spec::Architecture;
use mayfly_state::RunRecord;

use crate::Refused;
use crate::deployment::deployed_architecture;
use crate::project::{OpenProject, Project};

/// The most completions a coordinator commits together (default 256); `1`
/// commits each alone, as before group commit: the baseline of bench (e).
pub const GROUP_COMMIT_ENV_VAR: &str = "MAYFLY_GROUP_COMMIT_MAX";

/// The directory of run `run` of the project.
pub fn run_dir(project: &Project, run: &str) -> PathBuf {
    mayfly_control::jobs::run_dir(&project.data_dir(), run)
}

/// How `mayfly_bin` (the `mayfly` executable; the CLI passes its own) starts
/// coordinators for the project.
pub fn coordinator_launch(located: &Project, mayfly_bin: PathBuf) -> Result<CoordinatorLaunch> {
    Ok(CoordinatorLaunch {
        mayfly_bin,
        project_root: std::path::absolute(&located.root)?,
        data_dir: std::path::absolute(located.data_dir())?,
        log_filter: std::env::var("MAYFLY_LOG").unwrap_or_else(|_| "info".into()),
        // The keyring, the group-commit setting of the throughput benchmark's baseline, where traces go,
        // the state store's and the object store's.
        secret_env: [KEYRING_ENV_VAR, GROUP_COMMIT_ENV_VAR, crate::telemetry::OTLP_ENDPOINT_ENV_VAR]
            .into_iter()
            .chain(crate::backends::STATE_ENV_VARS.iter().copied())
            .chain(crate::storage::storage_env_vars())
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_owned(), value)))
            .collect(),
    })
}

/// Create a run of `job` and start its coordinator, by `launch`, as a process of its own.
pub async fn start_run(
    opened: &OpenProject,
    launch: &CoordinatorLaunch,
    job: &Name,
    trigger: &str,
) -> Result<RunRecord> {
    let (version, architecture) = deployed_architecture(opened)?;
    if let Some(job_spec) = architecture.jobs.get(job) {
        // Only local workers run on this host, where the AWS endpoint listens.
        let on_this_host = job_spec.provisioner.kind == ProvisionerKind::LOCAL;
        if let Some(refusal) = aws_reach_refusal(&architecture, job, &job_spec.function, on_this_host) {
            return Err(Refused(refusal).into());
        }
    }
    // An unknown job is refused there, with the deployed jobs listed (exit code 4).
    let run = mayfly_control::jobs::start_run(
        opened.state.as_ref(),
        &LocalProvisioner::new(),
        launch,
        mayfly_control::jobs::Deployed { architecture: &architecture, version },
        job,
        trigger,
        &SystemClock,
    )
    .await?;
    Ok(run)
}

/// Why the workers of `job` could not give `function` AWS credentials it
/// can use, if it declares `permissions`: they run off this host and
/// `[api].aws_advertise` tells them no address of the endpoint (the one on
/// `[api].aws_listen` is this host's), or they run on this host and
/// `aws_listen` has port 0 (the coordinator, a process of its own, cannot
/// learn the port `mayfly serve` or `mayfly up` picked). `mayfly deploy`
/// refuses such a job (`mayfly-spec`); a version deployed before that check
/// is refused here, before a run is created, and again by its coordinator.
pub fn aws_reach_refusal(
    architecture: &Architecture,
    job: &Name,
    function: &Name,
    on_this_host: bool,
) -> Option<String> {
    let permissions = architecture.functions.get(function).map(|spec| !spec.permissions.is_empty());
    let api = architecture.api.as_ref()?;
    if permissions != Some(true) {
        return None;
    }
    if !on_this_host {
        return api.aws_advertise.is_none().then(|| format!(
            "function `{function}` of job `{job}` declares `permissions`, but the job's workers run off this host, where the AWS endpoint on `[api].aws_listen` cannot be reached; set `[api].aws_advertise` to the endpoint's URL as the workers reach it, or run the job with local workers (`provisioner = {{ kind = \"local\" }}`), or remove `permissions`"
        ));
    }
    if api.aws_listen.port() == 0 {
        return Some(format!(
            "function `{function}` of job `{job}` declares `permissions`, but `[api].aws_listen` ({}) has port 0, so its workers cannot be told where the AWS endpoint is; give `aws_listen` a fixed port",
            api.aws_listen
        ));
    }
    None
}

/// Every provisioner the project's runs may have resources in, one of each
/// kind in the registry that connects: a kind a job uses must connect (the
/// Docker engine must answer); any other kind counts when it connects anyway
/// (containers of a job since changed to local).
pub async fn fleet_provisioners(architecture: &Architecture) -> Result<Vec<Arc<dyn Provisioner>>> {
    let mut provisioners = Vec::new();
    for kind in ProvisionerKind::all() {
        match kind.connect().await {
            Ok(provisioner) => provisioners.push(provisioner),
            Err(error) => match architecture.jobs.iter().find(|(_, job)| job.provisioner.kind == kind) {
                Some((job, _)) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("job `{job}` runs its workers with the {kind} provisioner")));
                }
                None => tracing::debug!(kind = %kind, error = %error, "provisioner unavailable; no job uses it"),
            },
        }
    }
    Ok(provisioners)
}

/// What every provisioner finds for `filter`.
pub async fn fleet_inventory(
    provisioners: &[Arc<dyn Provisioner>],
    filter: &TagFilter,
) -> Result<Vec<mayfly_fleet::LiveResource>> {
    let mut live = Vec::new();
    for provisioner in provisioners {
        live.extend(provisioner.inventory(filter).await?);
    }
    Ok(live)
}
