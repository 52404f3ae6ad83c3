//! The recorded deployments as their parsed architectures: one parser for
//! everything that follows them ([`parse_deployment`]), and a
//! [`DeploymentWatch`] that looks for new ones in the state store.
//!
//! The control plane's router switches at each deployment's event boundary
//! and needs every deployment in order ([`DeploymentWatch::newer`]); the API
//! serves whatever was recorded last ([`DeploymentWatch::next_latest`]).

use std::sync::Arc;
use std::time::Duration;

use mayfly_spec::Architecture;
use mayfly_state::{Deployment, StateStore};

use crate::ControlError;

/// How often a follower of the recorded deployments looks for a new one.
pub const DEPLOYMENT_POLL: Duration = Duration::from_secs(1);

/// A recorded deployment, parsed.
#[derive(Clone, Debug)]
pub struct ParsedDeployment {
    pub version: u64,
    /// The bucket event log's head when it was recorded: it routes the events after it.
    pub event_log_head: u64,
    pub architecture: Arc<Architecture>,
}

/// Parse the architecture a deployment recorded; an error names the deployment.
pub fn parse_deployment(deployment: &Deployment) -> Result<ParsedDeployment, ControlError> {
    let architecture = mayfly_spec::parse(&format!("deployment {}", deployment.version), &deployment.source).map_err(
        |diagnostics| ControlError::Deployment { version: deployment.version, reason: diagnostics.to_string() },
    )?;
    Ok(ParsedDeployment {
        version: deployment.version,
        event_log_head: deployment.event_log_head,
        architecture: Arc::new(architecture),
    })
}

/// Looks in the state store for deployments newer than the last one it saw.
///
/// A deployment counts as seen once it was looked at, even if it does not
/// parse: its error is reported once, and the next deployment is looked for.
pub struct DeploymentWatch {
    state: Arc<dyn StateStore>,
    newest_seen: u64,
}

impl DeploymentWatch {
    /// Watch for deployments newer than `seen` (`None`: any deployment is new).
    pub fn after(state: Arc<dyn StateStore>, seen: Option<u64>) -> DeploymentWatch {
        DeploymentWatch { state, newest_seen: seen.unwrap_or(0) }
    }

    /// The newest deployment version looked at so far (0 for none).
    pub fn newest_seen(&self) -> u64 {
        self.newest_seen
    }

    /// Every deployment recorded since the last look, oldest first; empty when none is.
    pub fn newer(&mut self) -> Result<Vec<ParsedDeployment>, ControlError> {
        let Some(latest) = self.state.latest_deployment()? else { return Ok(Vec::new()) };
        if latest.version <= self.newest_seen {
            return Ok(Vec::new());
        }
        let seen = std::mem::replace(&mut self.newest_seen, latest.version);
        self.state
            .deployments()?
            .iter()
            .filter(|deployment| deployment.version > seen && deployment.version <= latest.version)
            .map(parse_deployment)
            .collect()
    }

    /// The latest deployment if it was recorded since the last look (the ones
    /// recorded in between are skipped).
    pub fn latest(&mut self) -> Result<Option<ParsedDeployment>, ControlError> {
        let Some(latest) = self.state.latest_deployment()? else { return Ok(None) };
        if latest.version <= self.newest_seen {
            return Ok(None);
        }
        self.newest_seen = latest.version;
        parse_deployment(&latest).map(Some)
    }

    /// Wait for a deployment newer than the last one seen, looking every
    /// [`DEPLOYMENT_POLL`]; the latest one wins. An error (the store, or a
    /// deployment that does not parse) ends the wait; call again to go on.
    pub async fn next_latest(&mut self) -> Result<ParsedDeployment, ControlError> {
        loop {
            if let Some(deployment) = self.latest()? {
                return Ok(deployment);
            }
            tokio::time::sleep(DEPLOYMENT_POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a real SQLite store.

    use mayfly_core::SystemClock;
    use mayfly_state::NewDeployment;
    use mayfly_state_sqlite::SqliteStore;

    use super::*;

    fn record(state: &dyn StateStore, source: &str) -> u64 {
        let deployment = NewDeployment { content_hash: source.to_owned(), source: source.to_owned(), forced: false };
        state.record_deployment(deployment).unwrap().version
    }

    fn with_queue(queue: &str) -> String {
        format!("version = 1\nname = \"watched\"\n[queues.{queue}]\n")
    }

    #[test]
    fn the_watch_yields_each_new_deployment_once_and_reports_one_that_does_not_parse_once() {
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db"), Arc::new(SystemClock)).unwrap());
        let mut watch = DeploymentWatch::after(state.clone(), None);
        assert!(watch.latest().unwrap().is_none(), "nothing recorded yet");

        let first = record(state.as_ref(), &with_queue("one"));
        let seen = watch.latest().unwrap().expect("the first deployment is new");
        assert_eq!(seen.version, first);
        assert!(seen.architecture.queues.keys().any(|queue| queue.as_str() == "one"));
        assert!(watch.latest().unwrap().is_none(), "already seen");

        let broken = record(state.as_ref(), "version = 1\nname = \"watched\"\n[queues.two\n");
        match watch.latest() {
            Err(ControlError::Deployment { version, .. }) => assert_eq!(version, broken),
            other => panic!("a deployment that does not parse is an error naming it, not {other:?}"),
        }
        assert!(watch.latest().unwrap().is_none(), "the broken deployment is reported once");

        let third = record(state.as_ref(), &with_queue("three"));
        let fourth = record(state.as_ref(), &with_queue("four"));
        let mut in_order = DeploymentWatch::after(state.clone(), Some(broken));
        let newer: Vec<u64> = in_order.newer().unwrap().iter().map(|deployment| deployment.version).collect();
        assert_eq!(newer, [third, fourth], "every deployment after the one seen, oldest first");
        assert_eq!(watch.latest().unwrap().map(|deployment| deployment.version), Some(fourth), "the latest wins");
        assert_eq!(watch.newest_seen(), fourth);
    }
}
