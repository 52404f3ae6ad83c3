//! The dashboard's token check: the API's own ([`ApiState::authorize`]), so
//! a browser's token is checked, scoped and recorded in the access log
//! exactly like an API caller's.
//!
//! Which scope a dashboard path needs: a run's logs `logs:read`, queues
//! `queues:read`, the audit `admin`, everything else (runs, a run's report,
//! timeline and workers, functions' statistics, experiments and their
//! verdicts) `runs:read`. The dashboard
//! shows every job of the project, so a token limited to some jobs
//! (`mayfly tokens create --job`) is refused there: it would otherwise see
//! other jobs' runs in the lists.

use mayfly_api::{ApiState, AuthError, Resource, Scope};
use mayfly_dashboard::{Authorize, Denied};

pub struct DashboardAccess {
    pub api: ApiState,
}

/// The scope a dashboard path needs.
pub fn scope_for(path: &str) -> Scope {
    let logs = path.starts_with("/runs/") && (path.ends_with("/logs") || path.ends_with("/logs.json"));
    if logs {
        Scope::LogsRead
    } else if path == "/queues" {
        Scope::QueuesRead
    } else if path == "/audit" {
        Scope::Admin
    } else {
        Scope::RunsRead
    }
}

impl Authorize for DashboardAccess {
    fn authorize(&self, token: &str, path: &str) -> Result<String, Denied> {
        match self.api.authorize(token, scope_for(path), Resource::Unlimited, path) {
            Ok(principal) if !principal.grant.jobs.is_empty() => Err(Denied::Forbidden(format!(
                "token `{}` is limited to the jobs {}; the dashboard shows every job, so it needs a token without --job",
                principal.name,
                principal.grant.jobs.join(", ")
            ))),
            Ok(principal) => Ok(principal.name),
            Err(AuthError::Forbidden { refusal, .. }) => Err(Denied::Forbidden(refusal.to_string())),
            // The token may be fine; the check could not be made or recorded.
            Err(error @ AuthError::Store(_)) => Err(Denied::Unavailable(error.to_string())),
            Err(error) => Err(Denied::Unauthenticated(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dashboard_path_needs_the_scope_of_what_it_shows() {
        assert_eq!(scope_for("/"), Scope::RunsRead);
        assert_eq!(scope_for("/runs.json"), Scope::RunsRead);
        assert_eq!(scope_for("/runs/run-1/timeline.svg"), Scope::RunsRead);
        assert_eq!(scope_for("/runs/run-1/logs"), Scope::LogsRead);
        assert_eq!(scope_for("/runs/run-1/logs.json"), Scope::LogsRead);
        assert_eq!(scope_for("/queues"), Scope::QueuesRead);
        assert_eq!(scope_for("/functions"), Scope::RunsRead);
        assert_eq!(scope_for("/audit"), Scope::Admin);
        assert_eq!(scope_for("/experiments"), Scope::RunsRead);
        assert_eq!(scope_for("/experiments/3"), Scope::RunsRead);
    }
}
