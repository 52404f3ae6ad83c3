//! Which host runs the control plane's singleton duties: the campaign for
//! the [`CONTROL_PLANE_LEASE`] in the state store.
//!
//! Every `mayfly up` of a project campaigns under a holder id of its own
//! (host name, pid and a random suffix). The one granted the lease is the
//! leader and runs the singleton duties — the router, the scheduler and the
//! jobs supervisor (alarms, restarting coordinators, reaping) — while every
//! host runs queue pollers and async invokers. The leader renews every
//! [`LeaderLease::renew_every`]; a standby asks as often, and is granted the
//! lease once it lapsed (a takeover increments the term).
//!
//! A leader stops its duties before anyone else can take the lease: it counts
//! the lease as its own only until `ttl - ttl / 5` after it *sent* the
//! renewal that was granted (by its own monotonic clock, so the time the
//! request spent in flight is counted against it), and drops to standby then
//! if no later renewal was granted — a refusal, an error or a store that does
//! not answer in time all count alike. The fifth of the TTL is the margin for
//! a routing pass that is finishing and for the hosts' clocks to disagree.
//!
//! That rule cannot help a leader that is not running (a stopped VM, a long
//! stall): it may resume with writes in hand after another took over. So the
//! duties write under the term's fence (`mayfly_state::Fence`, checked by the
//! store in the write's own transaction), and a refused write stops them at
//! once (see `crate::run_announcing`).

use std::sync::Arc;
use std::time::Duration;

use mayfly_core::Clock;
use mayfly_state::{Lease, StateStore};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{ControlError, Shutdown};

pub use mayfly_state::lease::CONTROL_PLANE_LEASE;

/// How this control plane campaigns for the [`CONTROL_PLANE_LEASE`].
#[derive(Clone, Debug)]
pub struct LeaderLease {
    /// Who this control plane is, unique among every `mayfly up` ever started.
    pub holder: String,
    /// How long a granted lease lasts unless renewed.
    pub ttl: Duration,
    /// How often the leader renews and a standby asks.
    pub renew_every: Duration,
    /// The holder id of a control plane known to be dead — the previous
    /// `mayfly up` of this project directory, whose lock this one now holds:
    /// its lease is released at the start instead of waited out.
    pub dead_predecessor: Option<String>,
}

impl LeaderLease {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
    pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);

    /// The default lease (15 s, renewed every 5 s) for a new holder id.
    pub fn for_this_process() -> LeaderLease {
        LeaderLease {
            holder: new_holder_id(),
            ttl: LeaderLease::DEFAULT_TTL,
            renew_every: LeaderLease::DEFAULT_RENEW_EVERY,
            dead_predecessor: None,
        }
    }

    /// How long after sending a renewal that was granted the lease counts as held.
    pub fn held_for(&self) -> Duration {
        self.ttl - self.ttl / 5
    }
}

/// A holder id: `HOST/pid-PID/RANDOM`.
pub fn new_holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}/pid-{}/{:08x}", std::process::id(), rand::random::<u32>())
}

/// What this control plane is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease under `term`: the singleton duties run here.
    Leader { term: u64 },
    /// Another holds the lease (as far as it knows, `leader`), or nobody
    /// does and this one was not granted it yet.
    Standby { leader: Option<Lease> },
}

impl Role {
    fn same_as(&self, other: &Role) -> bool {
        match (self, other) {
            (Role::Leader { term }, Role::Leader { term: other }) => term == other,
            (Role::Standby { .. }, Role::Standby { .. }) => true,
            _ => false,
        }
    }
}

/// Campaign until `shutdown`, publishing every change of role on `roles`.
/// The lease is not released here: the caller releases it once the duties
/// have stopped (see [`release`]).
pub async fn campaign(
    state: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    lease: LeaderLease,
    roles: watch::Sender<Role>,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    if let Some(predecessor) = &lease.dead_predecessor {
        let (state, name, predecessor) = (state.clone(), CONTROL_PLANE_LEASE, predecessor.clone());
        match tokio::task::spawn_blocking(move || state.release_lease(name, &predecessor)).await {
            Ok(Ok(true)) => tracing::info!("released the lease of this project directory's previous control plane"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "cannot release the previous control plane's lease"),
            Err(error) => tracing::warn!(error = %error, "releasing the previous control plane's lease panicked"),
        }
    }
    let publish = |role: Role| {
        roles.send_if_modified(|current| {
            if current.same_as(&role) {
                return false;
            }
            *current = role;
            true
        });
    };
    // Until when the lease counts as this host's; `None` while standby.
    let mut held_until: Option<Instant> = None;
    loop {
        if held_until.is_some_and(|until| Instant::now() >= until) {
            tracing::warn!("the control plane lease could not be renewed in time; standing by");
            held_until = None;
            publish(Role::Standby { leader: None });
        }
        let asked_at = Instant::now();
        // A leader waits for the answer no longer than it holds the lease.
        let patience = held_until.map_or(lease.renew_every, |until| until.saturating_duration_since(asked_at));
        match ask(&state, &clock, &lease, patience).await {
            Ok(Some(granted)) => {
                held_until = Some(asked_at + lease.held_for());
                publish(Role::Leader { term: granted.term });
            }
            Ok(None) => {
                held_until = None;
                let leader_unknown = match &*roles.borrow() {
                    Role::Leader { .. } => true,
                    Role::Standby { leader } => leader.is_none(),
                };
                if leader_unknown {
                    let leader = current_lease(&state).await;
                    publish_standby(&roles, leader);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot reach the state store to renew the control plane lease")
            }
        }
        let next = asked_at + lease.renew_every;
        let wake = held_until.map_or(next, |until| until.min(next));
        if shutdown.sleep_or_stop(wake.saturating_duration_since(Instant::now())).await {
            return Ok(());
        }
    }
}

/// Publish standby with what is known of the leader (a transition from
/// leader, or the first word of who leads).
fn publish_standby(roles: &watch::Sender<Role>, leader: Option<Lease>) {
    roles.send_if_modified(|current| match current {
        Role::Standby { leader: known } if known.is_some() || leader.is_none() => false,
        _ => {
            *current = Role::Standby { leader };
            true
        }
    });
}

/// Ask for (or renew) the lease, waiting for the answer at most `patience`.
async fn ask(
    state: &Arc<dyn StateStore>,
    clock: &Arc<dyn Clock>,
    lease: &LeaderLease,
    patience: Duration,
) -> Result<Option<Lease>, String> {
    let (state, holder, ttl, now) = (state.clone(), lease.holder.clone(), lease.ttl, clock.now());
    let asking = tokio::task::spawn_blocking(move || state.acquire_lease(CONTROL_PLANE_LEASE, &holder, ttl, now));
    match tokio::time::timeout(patience, asking).await {
        Ok(Ok(Ok(granted))) => Ok(granted),
        Ok(Ok(Err(error))) => Err(error.to_string()),
        Ok(Err(error)) => Err(format!("the request panicked: {error}")),
        Err(_) => Err(format!("no answer within {patience:?}")),
    }
}

/// The lease as stored, if it can be read.
pub(crate) async fn current_lease(state: &Arc<dyn StateStore>) -> Option<Lease> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || state.lease(CONTROL_PLANE_LEASE)).await.ok().and_then(Result::ok).flatten()
}

/// Give the lease up (after the duties stopped), so a standby takes over at once.
pub async fn release(state: &Arc<dyn StateStore>, lease: &LeaderLease) {
    let (state, holder) = (state.clone(), lease.holder.clone());
    match tokio::task::spawn_blocking(move || state.release_lease(CONTROL_PLANE_LEASE, &holder)).await {
        Ok(Ok(true)) => tracing::info!("released the control plane lease"),
        Ok(Ok(false)) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "cannot release the control plane lease; it lapses on its own")
        }
        Err(error) => tracing::warn!(error = %error, "releasing the control plane lease panicked"),
    }
}

#[cfg(test)]
mod tests {
    use mayfly_core::SystemClock;
    use mayfly_state_sqlite::SqliteStore;

    use super::*;
    use crate::ShutdownTrigger;

    fn lease(holder: &str) -> LeaderLease {
        LeaderLease {
            holder: holder.to_owned(),
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(200),
            dead_predecessor: None,
        }
    }

    async fn wait_for_role(roles: &mut watch::Receiver<Role>, wanted: impl Fn(&Role) -> bool) -> Duration {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), roles.wait_for(|role| wanted(role)))
            .await
            .expect("the role did not change in time")
            .expect("the campaign stopped");
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_lease_was_taken_stands_by_at_its_next_renewal_and_a_standby_leads_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db"), clock.clone()).unwrap());
        let (stop, shutdown) = ShutdownTrigger::new();
        let (first_roles, first) = watch::channel(Role::Standby { leader: None });
        let (second_roles, second) = watch::channel(Role::Standby { leader: None });
        let campaigns = [
            tokio::spawn(campaign(state.clone(), clock.clone(), lease("first"), first_roles, shutdown.clone())),
            tokio::spawn(campaign(state.clone(), clock.clone(), lease("second"), second_roles, shutdown.clone())),
        ];
        // Whoever asked first leads; the other stands by, knowing who leads.
        let leads = |roles: &watch::Receiver<Role>| matches!(*roles.borrow(), Role::Leader { .. });
        tokio::time::timeout(Duration::from_secs(10), async {
            while !leads(&first) && !leads(&second) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("one of the two leads");
        let (mut leader_roles, mut standby_roles) =
            if leads(&first) { (first.clone(), second.clone()) } else { (second.clone(), first.clone()) };
        assert_eq!(*leader_roles.borrow(), Role::Leader { term: 1 });
        wait_for_role(
            &mut standby_roles,
            |role| matches!(role, Role::Standby { leader: Some(lease) } if lease.term == 1),
        )
        .await;

        // Another holder takes the lease over (as a host whose clock says it lapsed would):
        // the leader's next renewal is refused and it stands by within one renewal interval.
        let later = clock.now().saturating_add(Duration::from_secs(60));
        let thief = state.acquire_lease(CONTROL_PLANE_LEASE, "thief", Duration::from_secs(1), later).unwrap();
        assert_eq!(thief.map(|lease| lease.term), Some(2));
        let stood_by = wait_for_role(
            &mut leader_roles,
            |role| matches!(role, Role::Standby { leader: Some(lease) } if lease.holder == "thief"),
        )
        .await;
        assert!(stood_by < Duration::from_secs(1), "the leader stood by after {stood_by:?}");

        // Released, the lease goes to one of the two at once, under the next term.
        assert!(state.release_lease(CONTROL_PLANE_LEASE, "thief").unwrap());
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let leading =
                    [&first, &second].iter().filter(|roles| *roles.borrow() == Role::Leader { term: 3 }).count();
                if leading == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("one of the two leads under term 3");
        stop.trigger();
        for campaign in campaigns {
            campaign.await.unwrap().unwrap();
        }
    }
}
