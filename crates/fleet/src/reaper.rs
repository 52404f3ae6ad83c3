//! The orphan reaper: stops live resources whose run is no longer live.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::FleetError;
use crate::provisioner::{LiveResource, Provisioner};
use crate::tags::{TAG_RUN, TagFilter};

/// Stops (with `grace`) every live resource matching `filter` whose
/// [`TAG_RUN`] is not in `live_runs`, concurrently; returns what was reaped.
///
/// Resources without a run tag are left alone: they are not part of a run,
/// so their run cannot be over. If some orphans cannot be stopped the error
/// [`FleetError::ReapIncomplete`] lists both what was reaped and what was not.
pub async fn reap_orphans(
    provisioner: &dyn Provisioner,
    filter: &TagFilter,
    live_runs: &BTreeSet<String>,
    grace: Duration,
) -> Result<Vec<LiveResource>, FleetError> {
    let orphans: Vec<LiveResource> = provisioner
        .inventory(filter)
        .await?
        .into_iter()
        .filter(|resource| resource.tags.get(TAG_RUN).is_some_and(|run| !live_runs.contains(run)))
        .collect();
    let outcomes = futures::future::join_all(orphans.iter().map(|orphan| provisioner.stop(&orphan.id, grace))).await;
    let mut reaped = Vec::new();
    let mut failures = Vec::new();
    for (orphan, outcome) in orphans.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => {
                tracing::info!(id = %orphan.id, run = orphan.tags.get(TAG_RUN), "reaped orphan");
                reaped.push(orphan);
            }
            Err(error) => {
                tracing::warn!(id = %orphan.id, %error, "could not reap orphan");
                failures.push((orphan.id, error.to_string()));
            }
        }
    }
    if failures.is_empty() { Ok(reaped) } else { Err(FleetError::ReapIncomplete { reaped, failures }) }
}
