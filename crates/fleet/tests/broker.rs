//! The provisioning broker through its socket, over real local processes:
//! its client is a working provisioner inside the confinement, and can
//! neither start, observe, signal nor find anything outside it.

mod common;

use std::time::Duration;

use common::TestFleet;
use mayfly_fleet::{
    BrokeredProvisioner, Confinement, FleetError, Provisioner, ProvisionerBroker, ResourceState, TAG_ROLE, TAG_RUN,
    TagFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A broker confined to run `r1`'s workers, mounts under `<dir>/tls`, and its client.
fn broker(fleet: &TestFleet) -> (BrokeredProvisioner, tokio::task::JoinHandle<()>) {
    let socket = fleet.path("broker.sock");
    let listener = ProvisionerBroker::bind(&socket).unwrap();
    let confinement = Confinement {
        required_tags: fleet.tags().with(TAG_RUN, "r1").with(TAG_ROLE, "worker"),
        mount_root: fleet.path("tls"),
    };
    let serving = tokio::spawn(ProvisionerBroker::new(fleet.provisioner.clone(), confinement).serve(listener));
    (BrokeredProvisioner::new(socket, "local"), serving)
}

#[tokio::test]
async fn the_client_starts_watches_finds_and_stops_the_runs_workers() {
    let fleet = TestFleet::new("broker-works");
    let (client, _serving) = broker(&fleet);
    let mut spec = fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]);
    spec.read_only_mounts = vec![fleet.path("tls/w1")];
    let worker = client.start(spec).await.unwrap();
    assert_eq!(client.state(&worker).await.unwrap(), ResourceState::Running);

    let found = client.inventory(&TagFilter::new().with(TAG_RUN, "r1")).await.unwrap();
    assert_eq!(found.iter().map(|r| &r.id).collect::<Vec<_>>(), vec![&worker]);
    assert_eq!(found[0].tags.get(TAG_ROLE), Some("worker"));

    client.stop(&worker, Duration::from_secs(2)).await.unwrap();
    assert!(!client.state(&worker).await.unwrap().is_running());
    let quick = client.start(fleet.shell("exit 3", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")])).await.unwrap();
    assert!(matches!(
        client.wait(&quick, Duration::from_secs(10)).await.unwrap(),
        ResourceState::Exited { code: Some(3), .. } | ResourceState::Gone
    ));
}

#[tokio::test]
async fn what_lies_outside_the_confinement_is_refused_and_nothing_starts() {
    let fleet = TestFleet::new("broker-refuses");
    let (client, _serving) = broker(&fleet);
    let cases = [
        ("another run", fleet.shell("sleep 1000", &[(TAG_RUN, "r2"), (TAG_ROLE, "worker")]), "mayfly.run=r1"),
        (
            "another role",
            fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "coordinator")]),
            "mayfly.role=worker",
        ),
        (
            "a mount outside the root",
            {
                let mut spec = fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]);
                spec.read_only_mounts = vec!["/etc".into()];
                spec
            },
            "may bind only paths under",
        ),
        (
            "a mount climbing out of the root",
            {
                let mut spec = fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]);
                spec.read_only_mounts = vec![fleet.path("tls/../../etc")];
                spec
            },
            "may bind only paths under",
        ),
        (
            "a read-write mount",
            {
                let mut spec = fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]);
                spec.read_write_mounts = vec![fleet.path("tls/w1")];
                spec
            },
            "read-write",
        ),
        (
            "a user",
            {
                let mut spec = fleet.shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]);
                spec.user = Some("0:0".into());
                spec
            },
            "user",
        ),
    ];
    for (case, spec, reason) in cases {
        match client.start(spec).await {
            Err(FleetError::InvalidSpec { reason: refusal, .. }) => {
                assert!(refusal.contains("refused by the broker") && refusal.contains(reason), "{case}: {refusal}");
            }
            other => panic!("{case}: expected a refusal, got {other:?}"),
        }
    }
    assert!(fleet.provisioner.inventory(&fleet.filter()).await.unwrap().is_empty(), "nothing started");
}

#[tokio::test]
async fn resources_of_other_runs_can_be_neither_seen_nor_signalled() {
    let fleet = TestFleet::new("broker-others");
    let (client, _serving) = broker(&fleet);
    let other_run = fleet.start_shell("sleep 1000", &[(TAG_RUN, "r2"), (TAG_ROLE, "worker")]);
    let coordinator = fleet.start_shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "coordinator")]);
    let (other_run, coordinator) = (other_run.await, coordinator.await);

    // An inventory asking for another run still lists only the confinement's.
    assert!(client.inventory(&TagFilter::new().with(TAG_RUN, "r2")).await.unwrap().is_empty());
    assert!(client.inventory(&TagFilter::new()).await.unwrap().is_empty());
    for outsider in [&other_run, &coordinator] {
        assert_eq!(client.state(outsider).await.unwrap(), ResourceState::Gone, "not observable");
        assert!(matches!(client.kill(outsider).await, Err(FleetError::Broker { .. })));
        assert!(matches!(client.stop(outsider, Duration::from_secs(1)).await, Err(FleetError::Broker { .. })));
        assert_eq!(fleet.provisioner.state(outsider).await.unwrap(), ResourceState::Running, "still running");
    }
}

#[tokio::test]
async fn a_malformed_request_gets_an_error_answer_and_a_dead_broker_a_clear_error() {
    let fleet = TestFleet::new("broker-malformed");
    let (client, serving) = broker(&fleet);
    let mut stream = tokio::net::UnixStream::connect(fleet.path("broker.sock")).await.unwrap();
    stream.write_all(b"{\"op\": \"format_disk\"}\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains("\"failed\"") && answer.contains("malformed request"), "{answer}");

    serving.abort();
    let _ = serving.await;
    std::fs::remove_file(fleet.path("broker.sock")).unwrap();
    match client.inventory(&TagFilter::new()).await {
        Err(error @ FleetError::Broker { .. }) => {
            assert!(error.to_string().contains("cannot reach the broker at"), "{error}");
        }
        other => panic!("expected the broker to be unreachable, got {other:?}"),
    }
}
