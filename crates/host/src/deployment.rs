//! The architecture a project runs: the latest recorded deployment (what
//! `up`, `invoke`, the API and the audit run), not the file on disk, and the
//! deployment a run was started under.

use anyhow::{Context, Result};
use mayfly_spec::Architecture;
use mayfly_state::RunRecord;

use crate::NotFound;
use crate::project::OpenProject;

/// The deployed architecture (what `up` and `invoke` run), not the file on disk.
pub fn deployed_architecture(opened: &OpenProject) -> Result<(Option<u64>, Architecture)> {
    let deployment = opened
        .state
        .latest_deployment()?
        .ok_or_else(|| NotFound("nothing is deployed; run `mayfly deploy` first".into()))?;
    let architecture = mayfly_spec::parse(&format!("deployment {}", deployment.version), &deployment.source)
        .with_context(|| format!("the recorded deployment {} no longer parses", deployment.version))?;
    Ok((Some(deployment.version), architecture))
}

/// The architecture a run was started under: its deployment version's file
/// (a later deploy does not change a run in flight), or the latest if unknown.
pub fn run_architecture(opened: &OpenProject, run: &RunRecord) -> Result<Architecture> {
    let source =
        opened.state.deployments()?.into_iter().find(|d| Some(d.version) == run.deployment_version).map(|d| d.source);
    Ok(match source {
        Some(source) => mayfly_spec::parse(&format!("deployment of run {}", run.id), &source)?,
        None => deployed_architecture(opened)?.1,
    })
}
