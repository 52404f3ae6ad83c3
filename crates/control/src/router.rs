//! The router: bucket events → queues and functions, by `[[routes]]`, and
//! the control plane's follower of new deployments.
//!
//! It reads the event log after its durable cursor, and sends every
//! matching event of a page to its targets and advances the cursor in one
//! commit, fenced by the leader's term ([`mayfly_state::FencedWrites`]): a
//! crash before the commit routes the page again, one after it never does,
//! and a leader that lost its lease while paused mid-page routes nothing
//! (its commit is refused with `StateError::Fenced`), so the new leader
//! routes that page once.
//!
//! An event is routed by the deployment in force when it was committed: the
//! newest deployment whose recorded event log head is below the event's
//! sequence number ([`mayfly_state::deployment_governing`]). The router holds
//! one deployment at a time; when it reaches an event past the boundary of a
//! newer one, it switches first (and the rest of the control plane with it:
//! see `crate::run`), then routes the event. It looks for new deployments
//! after every read of the log (so none committed before an event it read
//! can be missed) and about once a second when idle, so triggers follow a
//! deployment even when no event arrives.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use mayfly_core::{Name, ObjectEvent};
use mayfly_spec::{Architecture, RouteTarget};
use mayfly_state::{Fence, FencedWrite, OutgoingMessage};
use tokio::sync::watch;

use crate::deployments::{DEPLOYMENT_POLL, DeploymentWatch, ParsedDeployment, parse_deployment};
use crate::functions::{AsyncEnvelope, async_queue_name};
use crate::telemetry::EventJourney;
use crate::{ControlError, ControlPlaneConfig, DeploymentInForce, Shutdown};

/// The consumer name of the router's cursor in the event log.
pub const ROUTER_CURSOR: &str = "router";
const EVENTS_PER_PASS: usize = 1_000;
/// The router's own state: the deployment it routes by and the newer ones
/// whose boundary it has not reached yet.
pub struct Router {
    held: DeploymentInForce,
    /// Deployments newer than `held`, oldest first.
    pending: Vec<ParsedDeployment>,
    /// Finds the deployments recorded after the newest one the router knows of.
    watch: DeploymentWatch,
    last_poll: Instant,
    /// The leader's fence its commits carry; `None` routes unfenced (a test).
    fence: Option<Fence>,
}

impl Router {
    /// Start where the cursor is: holding the deployment that governs the
    /// next event to route. With nothing recorded (a control plane run on an
    /// architecture that was never deployed) it holds `config`'s.
    pub fn start(config: &ControlPlaneConfig) -> Result<Router, ControlError> {
        let state = config.state.as_ref();
        let deployments = state.deployments()?;
        let cursor = state.consumer_cursor(ROUTER_CURSOR)?;
        let governing = mayfly_state::deployment_governing(&deployments, cursor + 1).or(deployments.first());
        let held = match governing {
            Some(deployment) => {
                let parsed = parse_deployment(deployment)?;
                DeploymentInForce {
                    version: Some(parsed.version),
                    architecture: parsed.architecture,
                    from_event: parsed.event_log_head + 1,
                }
            }
            None => DeploymentInForce {
                version: config.deployment_version,
                architecture: config.architecture.clone(),
                from_event: 1,
            },
        };
        let held_version = held.version.unwrap_or(0);
        let pending = deployments
            .iter()
            .filter(|deployment| deployment.version > held_version)
            .map(parse_deployment)
            .collect::<Result<Vec<_>, _>>()?;
        let newest_known = deployments.last().map_or(held_version, |deployment| deployment.version);
        let watch = DeploymentWatch::after(config.state.clone(), Some(newest_known));
        Ok(Router { held, pending, watch, last_poll: Instant::now(), fence: None })
    }

    /// Route under `fence`: every page's commit is refused once another
    /// host took the lease over.
    pub fn fenced_by(self, fence: Fence) -> Router {
        Router { fence: Some(fence), ..self }
    }

    /// The deployment the router routes by now.
    pub fn held(&self) -> &DeploymentInForce {
        &self.held
    }

    /// Learn of deployments recorded since the last look.
    fn poll_deployments(&mut self) -> Result<(), ControlError> {
        self.last_poll = Instant::now();
        self.pending.extend(self.watch.newer()?);
        Ok(())
    }

    /// Hold the newest pending deployment for which `takes_over` holds (and
    /// drop the older ones, which govern no event); returns the switch, if any.
    fn switch_to_newest(&mut self, takes_over: impl Fn(&ParsedDeployment) -> bool) -> Option<DeploymentInForce> {
        let index = self.pending.iter().rposition(takes_over)?;
        let next = self.pending.drain(..=index).next_back()?;
        self.held = DeploymentInForce {
            version: Some(next.version),
            architecture: next.architecture,
            from_event: next.event_log_head + 1,
        };
        tracing::info!(
            deployment = next.version,
            from_event = self.held.from_event,
            "deployment {} in force from event {}",
            next.version,
            self.held.from_event
        );
        Some(self.held.clone())
    }

    /// Route one page of events; returns how many events were routed. Each
    /// deployment the router switches to is passed to `switched` before any
    /// event it governs is routed. `still_leading` is asked after the reads
    /// and before anything is sent: a pass whose reads outlasted this host's
    /// lease (a host cut off from the state store, whose answers arrive
    /// when it is back, stale) sends nothing — else it would route again
    /// every event its stale cursor is behind, which the new leader routed.
    pub fn route_once(
        &mut self,
        config: &ControlPlaneConfig,
        switched: &mut dyn FnMut(DeploymentInForce),
        still_leading: &dyn Fn() -> bool,
    ) -> Result<usize, ControlError> {
        let state = config.state.as_ref();
        let cursor = state.consumer_cursor(ROUTER_CURSOR)?;
        let events = state.object_events_after(cursor, EVENTS_PER_PASS)?;
        if !still_leading() {
            return Ok(0);
        }
        // After the read: a deployment committed before any event just read is seen now.
        if !events.is_empty() || self.last_poll.elapsed() >= DEPLOYMENT_POLL {
            self.poll_deployments()?;
        }

        let mut outgoing: BTreeMap<Name, Vec<OutgoingMessage>> = BTreeMap::new();
        let mut journeys = Vec::new();
        for event in &events {
            if let Some(in_force) = self.switch_to_newest(|deployment| deployment.event_log_head < event.sequence) {
                switched(in_force);
            }
            journeys.extend(route_event(&self.held.architecture, event, &mut outgoing));
        }
        let routed_up_to = match events.last() {
            Some(last) => {
                // The page's sends and the cursor past it: one commit, under the leader's fence.
                let mut writes: Vec<FencedWrite> = outgoing
                    .into_iter()
                    .map(|(queue, messages)| FencedWrite::SendMessages { queue, messages })
                    .collect();
                writes.push(FencedWrite::SetConsumerCursor {
                    consumer: ROUTER_CURSOR.to_owned(),
                    sequence: last.sequence,
                });
                state.commit_fenced(self.fence.as_ref(), writes)?;
                journeys.into_iter().for_each(EventJourney::end);
                tracing::debug!(events = events.len(), up_to = last.sequence, "routed bucket events");
                last.sequence
            }
            None => cursor,
        };
        // Every event before a newer deployment's boundary is routed: it is in
        // force now, even if no event of its own has arrived yet.
        if let Some(in_force) = self.switch_to_newest(|deployment| deployment.event_log_head <= routed_up_to) {
            switched(in_force);
        }
        Ok(events.len())
    }
}

/// Route events until `shutdown`, publishing every switch of deployment on `switches`.
pub async fn run(
    config: Arc<ControlPlaneConfig>,
    mut router: Router,
    switches: watch::Sender<DeploymentInForce>,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    loop {
        let read = router.route_once(
            &config,
            &mut |in_force| {
                // The receiver lives as long as the control plane; a send only fails while it stops.
                let _ = switches.send(in_force);
            },
            &|| !shutdown.is_triggered(),
        )?;
        if read == 0 && shutdown.sleep_or_stop(config.poll_interval).await {
            return Ok(());
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
    }
}

/// On a standby host (see `crate::leadership`): about once a second, work
/// out the deployment in force as a router starting now would — from the
/// durable cursor the leader's router keeps ([`Router::start`]) — and
/// publish it on `switches` when it differs from the one published, until
/// `shutdown`. The standby's queue pollers and async invokers follow it.
pub async fn follow(
    config: Arc<ControlPlaneConfig>,
    switches: watch::Sender<DeploymentInForce>,
    mut shutdown: Shutdown,
) -> Result<(), ControlError> {
    loop {
        if shutdown.sleep_or_stop(DEPLOYMENT_POLL).await {
            return Ok(());
        }
        let in_force = Router::start(&config)?.held().clone();
        if switches.borrow().version != in_force.version {
            tracing::info!(deployment = ?in_force.version, "the leader's router holds a new deployment; following it");
            switches.send_replace(in_force);
        }
    }
}

/// Queue the messages `architecture`'s routes make of `event`; returns the
/// spans of its journey when it matched a route (see [`crate::telemetry`]),
/// each message carrying the context of its `send` span.
fn route_event(
    architecture: &Architecture,
    event: &ObjectEvent,
    outgoing: &mut BTreeMap<Name, Vec<OutgoingMessage>>,
) -> Option<EventJourney> {
    let mut journey = None;
    for (index, route) in architecture.routes.iter().enumerate() {
        if !route.matches(event) {
            continue;
        }
        let (target, queue, body) = match &route.to {
            RouteTarget::Queue(queue) => (format!("queue:{queue}"), queue.clone(), s3_notification(event, index)),
            RouteTarget::Function(function) => {
                let envelope = AsyncEnvelope {
                    trigger: format!("bucket:{}", event.bucket),
                    event: serde_json::from_slice(&s3_notification(event, index))
                        .expect("s3_notification serialises a JSON value"), // round trip of our own JSON
                };
                let body = serde_json::to_vec(&envelope).expect("envelopes serialise"); // plain data
                (format!("function:{function}"), async_queue_name(function), body)
            }
        };
        let journey = journey.get_or_insert_with(|| EventJourney::start(event));
        let mut message = OutgoingMessage::new(body);
        message.attributes.extend(journey.route(&format!("route-{}", index + 1), &target, queue.as_str()));
        outgoing.entry(queue).or_default().push(message);
    }
    journey
}

/// The S3 notification for one event; routes are named `route-N` in file order.
fn s3_notification(event: &ObjectEvent, route_index: usize) -> Vec<u8> {
    let value = mayfly_events::s3_event_for_route(&format!("route-{}", route_index + 1), std::slice::from_ref(event));
    serde_json::to_vec(&value).expect("JSON values serialise") // no non-string keys
}

#[cfg(test)]
mod tests {
    //! The deployment boundary against a real SQLite store: every event is
    //! routed by the deployment recorded last before it was committed.

    use std::sync::Arc;
    use std::time::Duration;

    use mayfly_core::{Clock, Name, NewObjectEvent, ObjectEventKind, SystemClock};
    use mayfly_runtime::{Invoker, InvokerConfig};
    use mayfly_state::{NewDeployment, ReceiveRequest, StateStore};
    use mayfly_state_sqlite::SqliteStore;

    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    /// An architecture routing every `inbox` event to `queue`.
    fn routing_to(queue: &str) -> String {
        format!(
            "version = 1\nname = \"boundary\"\n[buckets.inbox]\n[queues.one]\n[queues.two]\n[queues.three]\n\
             [[routes]]\nfrom = {{ bucket = \"inbox\" }}\nto = {{ queue = \"{queue}\" }}\n"
        )
    }

    struct Fixture {
        config: ControlPlaneConfig,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let state: Arc<dyn StateStore> =
                Arc::new(SqliteStore::open(&dir.path().join("state.db"), clock.clone()).unwrap());
            state.create_bucket(&name("inbox"), &[]).unwrap();
            for queue in ["one", "two", "three"] {
                state.create_queue(&name(queue), &Default::default(), &[]).unwrap();
            }
            let architecture = Arc::new(mayfly_spec::parse("test", &routing_to("one")).unwrap());
            let config = ControlPlaneConfig {
                architecture,
                deployment_version: None,
                project_root: dir.path().to_path_buf(),
                mayfly_bin: "mayfly".into(),
                state,
                invoker: Invoker::new(InvokerConfig::default()),
                clock,
                poll_interval: Duration::from_millis(10),
                jobs: None,
                leader: crate::LeaderLease::for_this_process(),
            };
            Fixture { config, _dir: dir }
        }

        fn deploy(&self, queue: &str) -> u64 {
            let source = routing_to(queue);
            let deployment = NewDeployment { content_hash: format!("hash-{queue}"), source, forced: false };
            self.config.state.record_deployment(deployment).unwrap().version
        }

        fn put(&self, key: &str) -> u64 {
            let event = NewObjectEvent {
                bucket: name("inbox"),
                key: key.to_owned(),
                kind: ObjectEventKind::Created,
                size: 1,
                etag: None,
                at: self.config.clock.now(),
                reason: None,
            };
            self.config.state.append_object_event(event).unwrap().sequence
        }

        /// The keys of the S3 notifications waiting in `queue`.
        fn keys_in(&self, queue: &str) -> Vec<String> {
            let messages = self.config.state.receive_messages(&name(queue), ReceiveRequest::up_to(100)).unwrap();
            messages
                .iter()
                .map(|message| {
                    let value: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
                    value["Records"][0]["s3"]["object"]["key"].as_str().unwrap().to_owned()
                })
                .collect()
        }

        /// Route until the log is drained; returns the switches, as (version, first event).
        fn route_all(&self, router: &mut Router) -> Vec<(u64, u64)> {
            let mut switches = Vec::new();
            let mut record =
                |in_force: DeploymentInForce| switches.push((in_force.version.unwrap(), in_force.from_event));
            while router.route_once(&self.config, &mut record, &|| true).unwrap() > 0 {}
            switches
        }
    }

    #[test]
    fn a_router_that_was_down_routes_each_event_by_the_deployment_in_force_when_it_was_committed() {
        let fixture = Fixture::new();
        fixture.deploy("one");
        fixture.put("a1");
        fixture.put("a2");
        fixture.deploy("two");
        let first_of_two = fixture.put("b1");
        fixture.deploy("three"); // no event of its own yet

        let mut router = Router::start(&fixture.config).unwrap();
        assert_eq!(router.held().version, Some(1), "the deployment governing the first unrouted event");
        let switches = fixture.route_all(&mut router);
        assert_eq!(switches, vec![(2, first_of_two), (3, first_of_two + 1)]);
        assert_eq!(fixture.keys_in("one"), ["a1", "a2"]);
        assert_eq!(fixture.keys_in("two"), ["b1"]);
        fixture.put("c1");
        assert_eq!(fixture.route_all(&mut router), vec![], "already holding deployment 3");
        assert_eq!(fixture.keys_in("three"), ["c1"]);
    }

    #[test]
    fn a_running_router_switches_at_the_boundary_before_routing_the_first_event_after_it() {
        let fixture = Fixture::new();
        fixture.deploy("one");
        let mut router = Router::start(&fixture.config).unwrap();
        fixture.put("a1");
        assert_eq!(fixture.route_all(&mut router), vec![]);
        // Deployed while running, and events follow at once: no wait for the idle poll.
        fixture.deploy("two");
        let boundary = fixture.put("b1");
        fixture.put("b2");
        assert_eq!(fixture.route_all(&mut router), vec![(2, boundary)]);
        assert_eq!(fixture.keys_in("one"), ["a1"]);
        assert_eq!(fixture.keys_in("two"), ["b1", "b2"]);
        assert_eq!(router.held().version, Some(2));
    }

    #[test]
    fn a_pass_that_is_no_longer_leading_after_its_reads_sends_nothing_and_keeps_the_cursor() {
        let fixture = Fixture::new();
        fixture.deploy("one");
        let mut router = Router::start(&fixture.config).unwrap();
        fixture.put("a1");
        fixture.put("a2");
        let read = router.route_once(&fixture.config, &mut |_| {}, &|| false).unwrap();
        assert_eq!(read, 0, "a pass that lost the lease routes nothing");
        assert_eq!(fixture.keys_in("one"), Vec::<String>::new());
        assert_eq!(fixture.config.state.consumer_cursor(ROUTER_CURSOR).unwrap(), 0);
        // Whoever leads next routes them, once.
        assert_eq!(fixture.route_all(&mut router), vec![]);
        assert_eq!(fixture.keys_in("one"), ["a1", "a2"]);
    }
}
