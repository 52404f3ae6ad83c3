//! The orphan reaper: stops live resources whose run is no longer live.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::error::FleetError;
use crate::provisioner::{LiveResource, Provisioner};
use crate::tags::{TAG_OWNER, TAG_RUN, TagFilter, owner_is_alive};

/// Stops (with `grace`) every live resource matching `filter` whose
/// [`TAG_RUN`] is not in `live_runs`, or which has no run but a
/// [`TAG_OWNER`] process that is gone (a function container of a Mayfly
/// that was killed; owners in another pid namespace are never judged),
/// concurrently; returns what was reaped.
///
/// Resources with neither tag are left alone: nothing says they are over. If some orphans cannot be stopped the error
/// [`FleetError::ReapIncomplete`] lists both what was reaped and what was not.
pub async fn reap_orphans(
    provisioner: &dyn Provisioner,
    filter: &TagFilter,
    live_runs: &BTreeSet<String>,
    grace: Duration,
) -> Result<Vec<LiveResource>, FleetError> {
    let orphans: Vec<LiveResource> =
        provisioner.inventory(filter).await?.into_iter().filter(|resource| is_orphan(resource, live_runs)).collect();
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

fn is_orphan(resource: &LiveResource, live_runs: &BTreeSet<String>) -> bool {
    match (resource.tags.get(TAG_RUN), resource.tags.get(TAG_OWNER)) {
        (Some(run), _) => !live_runs.contains(run),
        (None, Some(owner)) => !owner_is_alive(owner),
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provisioner::ResourceId;
    use crate::tags::{Tags, owner_of_this_process};

    fn resource(tags: Tags) -> LiveResource {
        LiveResource {
            id: ResourceId("container:abc".into()),
            kind: "container",
            tags,
            started_at: None,
            address: None,
        }
    }

    #[test]
    fn a_resource_is_an_orphan_when_its_run_is_over_or_its_owner_is_gone() {
        let live_runs = BTreeSet::from(["r-live".to_owned()]);
        let orphan = |tags: Tags| is_orphan(&resource(tags), &live_runs);
        assert!(!orphan(Tags::new().with(TAG_RUN, "r-live")));
        assert!(orphan(Tags::new().with(TAG_RUN, "r-finished")));
        assert!(!orphan(Tags::new().with(TAG_OWNER, owner_of_this_process())));
        // Pid 1 exists, but did not start at tick 1: that owner is gone.
        assert!(orphan(Tags::new().with(TAG_OWNER, "pid:1:1")));
        assert!(!orphan(Tags::new().with(TAG_OWNER, "not a pid")), "not ours to judge");
        assert!(!orphan(Tags::new().with(TAG_OWNER, "pid:1:1@1")), "another pid namespace's: not ours to judge");
        let this = owner_of_this_process();
        let (_, namespace) = this.split_once('@').expect("this process's namespace is readable");
        assert!(orphan(Tags::new().with(TAG_OWNER, format!("pid:1:1@{namespace}"))));
        assert!(!orphan(Tags::new().with("owner", "tests")), "nothing says it is over");
    }
}
