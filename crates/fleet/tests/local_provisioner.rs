//! The local provisioner on real processes: starting, observing, stopping
//! whole process groups, finding processes by their tags from the system
//! alone, and reaping orphans.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{TestFleet, eventually, live_members_of_group, pid_and_start, read_proc};
use mayfly_fleet::{
    FleetError, LocalProvisioner, Provisioner, ResourceId, ResourceState, TAG_ROLE, TAG_RUN, TAG_WORKER, TagFilter,
    Tags, reap_orphans,
};

const LONG: Duration = Duration::from_secs(30);

fn exited(code: i32) -> ResourceState {
    ResourceState::Exited { code: Some(code), signal: None }
}

fn killed_by(signal: i32) -> ResourceState {
    ResourceState::Exited { code: None, signal: Some(signal) }
}

#[tokio::test]
async fn a_started_process_runs_then_reports_its_exit_code_or_signal() {
    let fleet = TestFleet::new("exit-codes");
    let sleeper = fleet.start_shell("sleep 1000", &[]).await;
    assert_eq!(fleet.provisioner.state(&sleeper).await.unwrap(), ResourceState::Running);
    assert_eq!(fleet.provisioner.kind(), "local");

    for (script, expected) in
        [("exit 0", exited(0)), ("exit 3", exited(3)), ("exit 255", exited(255)), ("kill -9 $$", killed_by(9))]
    {
        let id = fleet.start_shell(script, &[]).await;
        assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), expected, "{script}");
        assert_eq!(fleet.provisioner.state(&id).await.unwrap(), expected, "{script}, asked again");
    }
    assert_eq!(fleet.provisioner.state(&sleeper).await.unwrap(), ResourceState::Running);
}

#[tokio::test]
async fn wait_returns_running_when_the_timeout_passes_first() {
    let fleet = TestFleet::new("wait-timeout");
    let id = fleet.start_shell("sleep 1000", &[]).await;
    let started = Instant::now();
    assert_eq!(fleet.provisioner.wait(&id, Duration::from_millis(200)).await.unwrap(), ResourceState::Running);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn output_is_appended_to_the_given_files_and_stdin_is_empty() {
    let fleet = TestFleet::new("output");
    for _ in 0..2 {
        let mut spec = fleet.shell("echo out; echo err >&2; cat; echo stdin-closed", &[]);
        spec.stdout = Some(fleet.path("stdout.log"));
        spec.stderr = Some(fleet.path("stderr.log"));
        let id = fleet.provisioner.start(spec).await.unwrap();
        assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), exited(0));
    }
    assert_eq!(std::fs::read_to_string(fleet.path("stdout.log")).unwrap(), "out\nstdin-closed\nout\nstdin-closed\n");
    assert_eq!(std::fs::read_to_string(fleet.path("stderr.log")).unwrap(), "err\nerr\n");
}

#[tokio::test]
async fn the_process_sees_its_environment_and_tags_but_nothing_inherited() {
    let fleet = TestFleet::new("environment");
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok(), "the test runner sets it, the child must not see it");
    let mut spec = fleet.shell(
        "echo \"$GREETING|$MAYFLY_TAG_MAYFLY_RUN|$MAYFLY_TAG_DATA_CLASS|$CARGO_MANIFEST_DIR|$MAYFLY_TAGS\"",
        &[(TAG_RUN, "run-7"), ("data-class", "phi")],
    );
    spec.env.insert("GREETING".to_owned(), "hello".to_owned());
    spec.stdout = Some(fleet.path("out"));
    let id = fleet.provisioner.start(spec).await.unwrap();
    assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), exited(0));
    let expected_json = format!(r#"{{"data-class":"phi","mayfly.run":"run-7","mayfly.test":"{}"}}"#, fleet.scope);
    assert_eq!(std::fs::read_to_string(fleet.path("out")).unwrap(), format!("hello|run-7|phi||{expected_json}\n"));
}

#[tokio::test]
async fn each_process_leads_its_own_process_group() {
    let fleet = TestFleet::new("process-group");
    let id = fleet.start_shell("sleep 1000", &[]).await;
    let (pid, start_ticks) = pid_and_start(&id);
    let process = read_proc(pid).unwrap();
    assert_eq!(process.pgid, pid);
    assert_eq!(process.start_ticks, start_ticks);
    assert_eq!(process.ppid, std::process::id() as i32);
}

#[tokio::test]
async fn a_missing_binary_cannot_start_and_the_error_names_it() {
    let fleet = TestFleet::new("missing-binary");
    let mut spec = fleet.shell("", &[]);
    spec.program = "/nonexistent/mayfly-worker".into();
    let error = fleet.provisioner.start(spec).await.unwrap_err();
    assert!(matches!(&error, FleetError::CannotStart { program, .. } if program.ends_with("mayfly-worker")));
    let message = error.to_string();
    assert!(message.contains("/nonexistent/mayfly-worker"), "{message}");
    assert!(message.contains("No such file or directory"), "{message}");

    let mut spec = fleet.shell("true", &[]);
    spec.working_dir = fleet.path("no-such-folder");
    let message = fleet.provisioner.start(spec).await.unwrap_err().to_string();
    assert!(message.contains("cannot start `/bin/sh`: working directory") && message.contains("no-such-folder"));

    let mut spec = fleet.shell("true", &[]);
    spec.stdout = Some(fleet.path("no-such-folder/out.log"));
    let message = fleet.provisioner.start(spec).await.unwrap_err().to_string();
    assert!(message.contains("stdout file") && message.contains("out.log"), "{message}");
}

#[tokio::test]
async fn stop_terminates_the_whole_group_including_a_grandchild() {
    let fleet = TestFleet::new("stop-group");
    let id = fleet.start_shell("sleep 1000 & echo $! > grandchild; sleep 1000", &[]).await;
    let (pgid, _) = pid_and_start(&id);
    assert!(
        eventually(LONG, || std::fs::read_to_string(fleet.path("grandchild")).is_ok_and(|s| s.ends_with('\n'))).await
    );
    let grandchild: i32 = std::fs::read_to_string(fleet.path("grandchild")).unwrap().trim().parse().unwrap();
    assert_eq!(read_proc(grandchild).unwrap().pgid, pgid);
    assert!(live_members_of_group(pgid).len() >= 2);

    let started = Instant::now();
    fleet.provisioner.stop(&id, LONG).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "SIGTERM was obeyed, no need to wait out the grace");
    assert_eq!(live_members_of_group(pgid), []);
    assert!(read_proc(grandchild).is_none_or(|process| process.state == 'Z'));
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), killed_by(libc::SIGTERM));
    fleet.provisioner.stop(&id, LONG).await.expect("stopping what is gone is Ok");
}

#[tokio::test]
async fn a_group_whose_leader_exited_is_running_until_its_helpers_are_gone() {
    let fleet = TestFleet::new("leader-exited");
    let id = fleet.start_shell("sleep 1000 & echo started > ready; exit 4", &[]).await;
    let (pgid, _) = pid_and_start(&id);
    assert!(eventually(LONG, || read_proc(pgid).is_none()).await, "the leader exits and is reaped");
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), ResourceState::Running);
    let found = fleet.provisioner.inventory(&fleet.filter()).await.unwrap();
    assert_eq!(found.len(), 1, "the helper is found through its group: {found:?}");
    fleet.provisioner.stop(&id, LONG).await.unwrap();
    assert_eq!(live_members_of_group(pgid), []);
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), exited(4), "the leader's own exit");
}

#[tokio::test]
async fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
    let fleet = TestFleet::new("stop-escalates");
    let id = fleet.start_shell("trap '' TERM; sleep 1000 & echo ready > ready; wait; wait", &[]).await;
    let (pgid, _) = pid_and_start(&id);
    assert!(eventually(LONG, || fleet.path("ready").exists()).await);

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    fleet.provisioner.stop(&id, grace).await.unwrap();
    assert!(started.elapsed() >= grace, "SIGTERM was ignored, so stop waited out the grace");
    assert_eq!(live_members_of_group(pgid), []);
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), killed_by(libc::SIGKILL));
}

#[tokio::test]
async fn kill_does_not_wait_for_a_process_that_ignores_sigterm() {
    let fleet = TestFleet::new("kill");
    let id = fleet.start_shell("trap '' TERM; echo ready > ready; sleep 1000", &[]).await;
    assert!(eventually(LONG, || fleet.path("ready").exists()).await);
    let started = Instant::now();
    fleet.provisioner.kill(&id).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), killed_by(libc::SIGKILL));
}

#[tokio::test]
async fn inventory_finds_processes_by_tags_and_filters_them() {
    let fleet = TestFleet::new("inventory-filter");
    let coordinator = fleet.start_shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "coordinator")]).await;
    let worker = fleet.start_shell("sleep 1000", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker"), (TAG_WORKER, "w-1")]).await;
    let other_run = fleet.start_shell("sleep 1000", &[(TAG_RUN, "r2"), (TAG_ROLE, "worker")]).await;
    let finished = fleet.start_shell("exit 0", &[(TAG_RUN, "r1"), (TAG_ROLE, "worker")]).await;
    fleet.provisioner.wait(&finished, LONG).await.unwrap();

    let ids = |filter: TagFilter| {
        let provisioner = fleet.provisioner.clone();
        async move {
            let mut ids: Vec<ResourceId> =
                provisioner.inventory(&filter).await.unwrap().into_iter().map(|resource| resource.id).collect();
            ids.sort();
            ids
        }
    };
    let mut all = vec![coordinator.clone(), worker.clone(), other_run.clone()];
    all.sort();
    assert_eq!(ids(fleet.filter()).await, all);
    let mut run_one = vec![coordinator.clone(), worker.clone()];
    run_one.sort();
    assert_eq!(ids(fleet.filter().with(TAG_RUN, "r1")).await, run_one);
    assert_eq!(ids(fleet.filter().with(TAG_RUN, "r1").with(TAG_ROLE, "worker")).await, std::slice::from_ref(&worker));
    assert_eq!(ids(fleet.filter().with(TAG_RUN, "r3")).await, []);
    assert_eq!(ids(TagFilter::new().with("mayfly.test", "some-other-test")).await, []);

    let resources = fleet.provisioner.inventory(&fleet.filter().with(TAG_WORKER, "w-1")).await.unwrap();
    let [resource] = resources.as_slice() else { panic!("{resources:?}") };
    assert_eq!(resource.kind, "process");
    assert_eq!(resource.tags, fleet.tags().with(TAG_RUN, "r1").with(TAG_ROLE, "worker").with(TAG_WORKER, "w-1"));
    assert_eq!(resource.address, None);
    let started_at = resource.started_at.unwrap().as_millis();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - 60_000..=now + 1_000).contains(&started_at), "started {started_at}, now {now}");
}

#[test]
fn tags_match_a_filter_when_they_hold_every_pair_of_it() {
    let tags = Tags::new().with(TAG_RUN, "r1").with(TAG_ROLE, "worker").with("owner", "clinical");
    let cases = [
        (TagFilter::new(), true),
        (TagFilter::new().with(TAG_RUN, "r1"), true),
        (TagFilter::new().with(TAG_RUN, "r1").with(TAG_ROLE, "worker").with("owner", "clinical"), true),
        (TagFilter::new().with(TAG_RUN, "r2"), false),
        (TagFilter::new().with(TAG_RUN, "r1").with(TAG_ROLE, "coordinator"), false),
        (TagFilter::new().with("missing", ""), false),
        (TagFilter::new().with("mayfly.RUN", "r1"), false),
    ];
    for (filter, expected) in cases {
        assert_eq!(tags.matches(&filter), expected, "{filter:?}");
    }
    assert_eq!(tags.get(TAG_ROLE), Some("worker"));
    assert_eq!(tags.get("absent"), None);
    assert_eq!(tags.iter().map(|(key, _)| key).collect::<Vec<_>>(), ["mayfly.role", "mayfly.run", "owner"]);
}

#[tokio::test]
async fn another_provisioner_instance_finds_observes_and_stops_what_the_first_started() {
    let fleet = TestFleet::new("restarted-control-plane");
    let id = {
        let first = LocalProvisioner::new();
        let id = first.start(fleet.shell("sleep 1000", &[(TAG_RUN, "r1")])).await.unwrap();
        drop(first);
        id
    };
    let restarted = LocalProvisioner::new();
    let found = restarted.inventory(&fleet.filter()).await.unwrap();
    assert_eq!(found.iter().map(|resource| &resource.id).collect::<Vec<_>>(), [&id]);
    assert_eq!(found[0].tags.get(TAG_RUN), Some("r1"));
    assert_eq!(restarted.state(&id).await.unwrap(), ResourceState::Running);
    restarted.stop(&id, LONG).await.unwrap();
    assert_eq!(live_members_of_group(pid_and_start(&id).0), []);
    assert!(!restarted.state(&id).await.unwrap().is_running());
    assert_eq!(restarted.inventory(&fleet.filter()).await.unwrap(), []);
}

/// Set in the copy of this test binary that plays a control plane.
const CONTROL_PLANE_FOLDER: &str = "MAYFLY_FLEET_TEST_CONTROL_PLANE_FOLDER";
const CONTROL_PLANE_SCOPE: &str = "MAYFLY_FLEET_TEST_CONTROL_PLANE_SCOPE";
const CONTROL_PLANE_TEST: &str = "inventory_finds_a_worker_whose_control_plane_was_sigkilled";

#[tokio::test]
async fn inventory_finds_a_worker_whose_control_plane_was_sigkilled() {
    if let Ok(folder) = std::env::var(CONTROL_PLANE_FOLDER) {
        // This process is the control plane: start a worker, say its id, hang.
        let scope = std::env::var(CONTROL_PLANE_SCOPE).unwrap();
        let provisioner = LocalProvisioner::new();
        let mut spec = mayfly_fleet::ProcessSpec::new("/bin/sh", ["-c", "sleep 1000"]);
        spec.tags = Tags::new().with(common::TAG_TEST, scope).with(TAG_RUN, "r1").with(TAG_ROLE, "worker");
        let id = provisioner.start(spec).await.unwrap();
        std::fs::write(format!("{folder}/id.tmp"), &id.0).unwrap();
        std::fs::rename(format!("{folder}/id.tmp"), format!("{folder}/id")).unwrap();
        tokio::time::sleep(Duration::from_secs(1000)).await;
        unreachable!("the test SIGKILLs this process");
    }

    let fleet = TestFleet::new("control-plane-killed");
    let mut control_plane = std::process::Command::new(std::env::current_exe().unwrap())
        .args([CONTROL_PLANE_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CONTROL_PLANE_FOLDER, fleet.dir.path())
        .env(CONTROL_PLANE_SCOPE, &fleet.scope)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let appeared = eventually(LONG, || fleet.path("id").exists()).await;
    control_plane.kill().unwrap(); // SIGKILL
    control_plane.wait().unwrap();
    assert!(appeared, "the control plane never reported its worker");
    let id = ResourceId(std::fs::read_to_string(fleet.path("id")).unwrap());
    let (pid, _) = pid_and_start(&id);
    assert!(eventually(LONG, || read_proc(pid).is_some_and(|worker| worker.ppid != control_plane.id() as i32)).await);

    let found = fleet.provisioner.inventory(&fleet.filter()).await.unwrap();
    assert_eq!(found.iter().map(|resource| &resource.id).collect::<Vec<_>>(), [&id]);
    assert_eq!(found[0].tags.get(TAG_ROLE), Some("worker"));
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), ResourceState::Running);
    fleet.provisioner.stop(&id, LONG).await.unwrap();
    assert_eq!(live_members_of_group(pid), []);
    assert_eq!(fleet.provisioner.inventory(&fleet.filter()).await.unwrap(), []);
}

#[tokio::test]
async fn an_id_whose_start_time_does_not_match_is_gone_and_never_signalled() {
    let fleet = TestFleet::new("recycled-pid");
    let id = fleet.start_shell("sleep 1000", &[]).await;
    let (pid, start_ticks) = pid_and_start(&id);
    for stale in
        [ResourceId(format!("pid:{pid}:{}", start_ticks - 1)), ResourceId(format!("pid:{pid}:{}", start_ticks + 1))]
    {
        assert_eq!(fleet.provisioner.state(&stale).await.unwrap(), ResourceState::Gone, "{stale}");
        assert_eq!(fleet.provisioner.wait(&stale, LONG).await.unwrap(), ResourceState::Gone, "{stale}");
        fleet.provisioner.stop(&stale, LONG).await.unwrap();
        fleet.provisioner.kill(&stale).await.unwrap();
    }
    assert_eq!(fleet.provisioner.state(&id).await.unwrap(), ResourceState::Running, "the real process lives on");

    let no_such_process = ResourceId(format!("pid:{}:1", i32::MAX - 1));
    assert_eq!(fleet.provisioner.state(&no_such_process).await.unwrap(), ResourceState::Gone);
    let error = fleet.provisioner.state(&ResourceId("container:abc".to_owned())).await.unwrap_err();
    assert!(matches!(error, FleetError::InvalidResourceId { .. }), "{error}");
}

#[tokio::test]
async fn stopping_the_callers_own_process_group_is_refused() {
    let fleet = TestFleet::new("own-group");
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    let own = common::read_proc(own_group).map(|leader| ResourceId(format!("pid:{own_group}:{}", leader.start_ticks)));
    if let Some(own) = own {
        let error = fleet.provisioner.stop(&own, LONG).await.unwrap_err();
        assert!(matches!(error, FleetError::OwnProcessGroup { .. }), "{error}");
    }
    let me = read_proc(std::process::id() as i32).unwrap();
    let own_process = ResourceId(format!("pid:{}:{}", me.pid, me.start_ticks));
    let error = fleet.provisioner.kill(&own_process).await.unwrap_err();
    assert!(matches!(error, FleetError::OwnProcessGroup { .. }), "{error}");
}

#[tokio::test]
async fn reap_orphans_stops_only_processes_of_runs_that_are_not_live() {
    let fleet = TestFleet::new("reap");
    let live_worker = fleet.start_shell("sleep 1000", &[(TAG_RUN, "live"), (TAG_ROLE, "worker")]).await;
    let live_coordinator = fleet.start_shell("sleep 1000", &[(TAG_RUN, "live"), (TAG_ROLE, "coordinator")]).await;
    let orphan_worker = fleet.start_shell("sleep 1000", &[(TAG_RUN, "dead-1"), (TAG_ROLE, "worker")]).await;
    let orphan_coordinator = fleet
        .start_shell("trap '' TERM; sleep 1000 & wait; wait", &[(TAG_RUN, "dead-2"), (TAG_ROLE, "coordinator")])
        .await;
    let no_run = fleet.start_shell("sleep 1000", &[(TAG_ROLE, "function")]).await;

    let live_runs = BTreeSet::from(["live".to_owned()]);
    let reaped = reap_orphans(fleet.provisioner.as_ref(), &fleet.filter(), &live_runs, Duration::from_millis(200))
        .await
        .unwrap();
    let mut reaped_ids: Vec<ResourceId> = reaped.into_iter().map(|resource| resource.id).collect();
    reaped_ids.sort();
    let mut orphans = vec![orphan_worker.clone(), orphan_coordinator.clone()];
    orphans.sort();
    assert_eq!(reaped_ids, orphans);
    for orphan in &orphans {
        assert!(!fleet.provisioner.state(orphan).await.unwrap().is_running(), "{orphan}");
        assert_eq!(live_members_of_group(pid_and_start(orphan).0), []);
    }
    for survivor in [&live_worker, &live_coordinator, &no_run] {
        assert_eq!(fleet.provisioner.state(survivor).await.unwrap(), ResourceState::Running, "{survivor}");
    }
    let again = reap_orphans(fleet.provisioner.as_ref(), &fleet.filter(), &live_runs, LONG).await.unwrap();
    assert_eq!(again, []);
}

#[tokio::test]
async fn fifty_processes_started_and_stopped_leave_no_zombie() {
    let fleet = TestFleet::new("no-zombies");
    let mut ids = Vec::new();
    for round in 0..50 {
        let script = if round % 2 == 0 { "sleep 1000" } else { "sleep 1000 & sleep 1000" };
        let id = fleet.start_shell(script, &[]).await;
        fleet.provisioner.stop(&id, LONG).await.unwrap();
        ids.push(id);
    }
    for id in &ids {
        let (pid, start_ticks) = pid_and_start(id);
        let leftover = read_proc(pid).filter(|process| process.start_ticks == start_ticks);
        assert_eq!(leftover, None, "{id} is still in /proc");
        assert_eq!(live_members_of_group(pid), [], "{id}");
    }
    let own_zombies: Vec<_> = common::all_procs()
        .into_iter()
        .filter(|process| process.ppid == std::process::id() as i32 && process.state == 'Z')
        .collect();
    assert_eq!(own_zombies, []);
    assert_eq!(fleet.provisioner.inventory(&fleet.filter()).await.unwrap(), []);
}

#[tokio::test]
async fn programs_are_found_on_path_or_relative_to_the_working_directory() {
    let fleet = TestFleet::new("program-lookup");
    std::fs::create_dir(fleet.path("bin")).unwrap();
    std::fs::write(fleet.path("bin/worker"), "#!/bin/sh\nexit 7\n").unwrap();
    std::fs::set_permissions(fleet.path("bin/worker"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut relative = fleet.shell("", &[]);
    relative.program = "bin/worker".into();
    relative.args.clear();
    let id = fleet.provisioner.start(relative).await.unwrap();
    assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), exited(7));

    let mut on_spec_path = fleet.shell("exit 5", &[]);
    on_spec_path.program = "worker".into();
    on_spec_path.env.insert("PATH".to_owned(), fleet.path("bin").display().to_string());
    let id = fleet.provisioner.start(on_spec_path).await.unwrap();
    assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), exited(7), "found on the spec's PATH");

    let mut not_on_spec_path = fleet.shell("exit 5", &[]);
    not_on_spec_path.program = "sh".into();
    not_on_spec_path.env.insert("PATH".to_owned(), fleet.path("bin").display().to_string());
    let error = fleet.provisioner.start(not_on_spec_path).await.unwrap_err();
    assert!(matches!(error, FleetError::CannotStart { .. }), "{error}");

    let mut on_own_path = fleet.shell("exit 5", &[]);
    on_own_path.program = "sh".into();
    on_own_path.env.clear();
    let id = fleet.provisioner.start(on_own_path).await.unwrap();
    assert_eq!(fleet.provisioner.wait(&id, LONG).await.unwrap(), exited(5), "found on Mayfly's own PATH");
}
