//! The host's composition root driven in process, with real components: a
//! project in a temporary directory on the embedded SQLite store and local
//! buckets, real function processes, the real `mayfly` binary as a job's
//! coordinator and workers. Each test deploys through `mayfly_host::deploy`,
//! then runs what `mayfly up`, `mayfly serve`, `mayfly run` and `mayfly
//! coordinator` run: the control plane (`control_plane`), the HTTPS API
//! (`api_server`), a job's run (`jobs`) and a run's coordinator in this
//! process (`coordinator`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mayfly_core::Name;
use mayfly_host::project::{OpenProject, Project};
use mayfly_state::{InvocationFilter, NewApiToken, NewDeployment};

const WAIT: Duration = Duration::from_secs(60);

/// A project in a temporary directory: `mayfly.toml` and `files` under it.
struct TestProject {
    _dir: tempfile::TempDir,
    located: Project,
}

impl TestProject {
    fn new(spec: &str, files: &[(&str, &str)]) -> TestProject {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("project");
        std::fs::create_dir_all(root.join("functions")).unwrap();
        std::fs::write(root.join("mayfly.toml"), spec).unwrap();
        for (path, contents) in files {
            std::fs::write(root.join(path), contents).unwrap();
        }
        let located = Project::locate(Some(&root)).expect("the project is found");
        TestProject { _dir: dir, located }
    }

    /// Open the project (creating its store) and deploy its `mayfly.toml`
    /// as `mayfly deploy` does: plan, apply, record.
    async fn deploy(&self) -> OpenProject {
        let opened = self.located.open(true).expect("the project opens");
        let loaded = mayfly_spec::load(&self.located.spec_path()).expect("the spec loads");
        let steps = mayfly_host::deploy::plan(Some(&opened), &loaded.architecture, false).await.expect("plan");
        mayfly_host::deploy::apply(&opened, &loaded.architecture, &steps).await.expect("apply");
        opened
            .state
            .record_deployment(NewDeployment {
                content_hash: loaded.content_hash.clone(),
                source: loaded.source.clone(),
                forced: false,
            })
            .expect("record the deployment");
        opened
    }
}

fn name(text: &str) -> Name {
    text.parse().expect("a valid name")
}

/// A name no other test of this run uses: the audit and the provisioners'
/// inventories find processes by project name.
fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// Poll `probe` until it returns `Some`, or panic after [`WAIT`] saying `what`.
async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(started.elapsed() < WAIT, "gave up waiting for {what} after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const RECORD_FUNCTION: &str = r#"import json, sys
event = json.load(sys.stdin)
for record in event.get("Records", []):
    print("event", record["eventSource"], record["s3"]["object"]["key"], file=sys.stderr)
json.dump({"seen": len(event.get("Records", []))}, sys.stdout)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_runs_in_process_routes_an_object_to_its_function_and_stops_cleanly() {
    let spec = format!(
        r#"version = 1
name = "{}"
[buckets.inbox]
[functions.record]
command = ["python3", "functions/record.py"]
[[routes]]
from = {{ bucket = "inbox", prefix = "charts/" }}
to = {{ function = "record" }}
"#,
        unique_name("host-control")
    );
    let project = TestProject::new(&spec, &[("functions/record.py", RECORD_FUNCTION)]);
    let opened = project.deploy().await;
    let settings = mayfly_host::control_plane::ControlPlaneSettings {
        poll_interval: Duration::from_millis(10),
        idle_timeout: Duration::from_secs(60),
        lease_ttl: Duration::from_secs(15),
        lease_renew_every: Duration::from_secs(5),
        // No job here: nothing starts it, and the function does not call it.
        mayfly_bin: std::env::current_exe().unwrap(),
    };
    let composed = mayfly_host::control_plane::compose_control_plane(&project.located, &opened, &settings)
        .await
        .expect("the control plane composes");
    assert!(
        composed.bind_declared_api(&project.located, &opened).await.expect("no API to bind").is_none(),
        "a project without `[api]` serves no API"
    );
    let running = composed.start(&opened, None, |_| {});
    // One control plane per project directory: a second is refused while this one runs.
    let second = mayfly_host::control_plane::lock_control_plane(&project.located, "second").err().expect("refused");
    assert!(second.to_string().contains("a control plane is already running"), "{second:#}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let control_plane = tokio::spawn(running.run_until(async move {
        let _ = stopped.await;
    }));

    opened.buckets.put_bytes(&name("inbox"), "charts/17.txt", bytes::Bytes::from_static(b"chart")).await.unwrap();
    opened.buckets.put_bytes(&name("inbox"), "other/18.txt", bytes::Bytes::from_static(b"not routed")).await.unwrap();
    let filter = InvocationFilter { function: Some(name("record")), after_id: 0, limit: 100, outcome: None };
    let invocation =
        wait_for("the routed object's invocation", || opened.state.invocations(&filter).unwrap().into_iter().next())
            .await;
    assert_eq!(invocation.record.outcome, "success", "{invocation:?}");
    assert_eq!(invocation.record.trigger, "bucket:inbox");
    let logs = opened.state.invocation_logs(&invocation.record.request_id).unwrap();
    let logs = String::from_utf8_lossy(&logs);
    assert!(logs.contains("event aws:s3 charts/17.txt"), "the function got the S3 event: {logs}");

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, control_plane)
        .await
        .expect("the control plane stops")
        .expect("its task did not panic")
        .expect("it stopped cleanly");
    assert_eq!(opened.state.invocations(&filter).unwrap().len(), 1, "the object outside the prefix was routed");
    // Stopped, it let go of the project directory's lock.
    mayfly_host::control_plane::lock_control_plane(&project.located, "after").expect("the lock is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_binds_in_process_with_the_project_certificate_and_checks_tokens() {
    let spec = format!("version = 1\nname = \"{}\"\n[buckets.inbox]\n", unique_name("host-api"));
    let project = TestProject::new(&spec, &[]);
    let opened = project.deploy().await;
    let deployed = mayfly_host::deployment::deployed_architecture(&opened).unwrap();
    assert_eq!(deployed.0, Some(1));
    let invoker = mayfly_runtime::Invoker::new(mayfly_host::api_server::invoker_config(Duration::from_secs(60), None));
    let launch = mayfly_host::jobs::coordinator_launch(&project.located, std::env::current_exe().unwrap()).unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = mayfly_host::api_server::bind_api_server(
        &project.located,
        &opened,
        deployed,
        invoker.clone(),
        Some(any_port),
        Some(any_port),
        launch,
    )
    .await
    .expect("the API binds");
    let address = server.address;
    assert_ne!(address.port(), 0);
    assert_eq!(server.cert, mayfly_host::api_server::tls_dir(&project.located).join("cert.pem"));
    let cert = std::fs::read(&server.cert).expect("the project's certificate was generated");
    // Binding made it; saying so is the caller's.
    assert_eq!(
        server.certificate_made,
        mayfly_host::api_server::CertificateMade::Generated { cert: server.cert.clone(), names: "localhost".into() }
    );
    assert_eq!(
        server.certificate_made.notice().expect("a notice"),
        format!("mayfly: generated a self-signed certificate for localhost at {}", server.cert.display())
    );
    // Asked again, the certificate is kept and there is nothing to say.
    let (again, made) = mayfly_host::api_server::serving_certificate_paths(&project.located, None).unwrap();
    assert_eq!((again.cert, made.notice()), (server.cert.clone(), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let issued = mayfly_api::access::issue_token(rand::random(), rand::random());
    opened
        .state
        .create_api_token(NewApiToken {
            id: issued.id.clone(),
            name: "reader".into(),
            secret_sha256: issued.secret_sha256.clone(),
            scopes: vec!["runs:read".into()],
            jobs: Vec::new(),
            buckets: Vec::new(),
            expires_at: None,
            aws_secret: None,
        })
        .unwrap();
    // Trusting the project's certificate and nothing else, for the name it holds.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .resolve("localhost", address)
        .timeout(WAIT)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/runs", address.port());
    let allowed = client.get(&url).bearer_auth(&issued.token).send().await.expect("the API answers over TLS");
    assert_eq!(allowed.status(), reqwest::StatusCode::OK);
    let runs: serde_json::Value = allowed.json().await.unwrap();
    assert_eq!(runs, serde_json::json!({"runs": []}), "no run yet");
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let wrong = client.get(&url).bearer_auth(format!("{}x", issued.token)).send().await.unwrap();
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, serving).await.expect("the server stops").unwrap().expect("it stopped cleanly");
    invoker.shutdown().await;
}

/// A job's function: answers with the item it got.
const WORK_FUNCTION: &str = r#"#!/bin/sh
event=$(cat)
echo "working on $event" >&2
printf '{"done": true}'
"#;

/// A deployed project whose job `scan` (function `work`, two workers, one
/// attempt per item; `function_settings` and `job_settings` added to their
/// tables) reads `count` objects under `in/` of bucket `scans`, which it
/// holds; and their keys.
async fn deployed_scan_job(
    prefix: &str,
    count: usize,
    function_settings: &str,
    job_settings: &str,
) -> (TestProject, OpenProject, BTreeSet<String>) {
    let spec = format!(
        r#"version = 1
name = "{}"
[buckets.scans]
[functions.work]
command = ["sh", "functions/work.sh"]
{function_settings}
[jobs.scan]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
workers = {{ max = 2 }}
max_attempts = 1
{job_settings}
"#,
        unique_name(prefix)
    );
    let project = TestProject::new(&spec, &[("functions/work.sh", WORK_FUNCTION)]);
    let opened = project.deploy().await;
    let items: BTreeSet<String> = (0..count).map(|i| format!("in/{i:03}")).collect();
    for item in &items {
        opened.buckets.put_bytes(&name("scans"), item, bytes::Bytes::from(item.clone())).await.unwrap();
    }
    (project, opened, items)
}

/// Run `run` of job `scan` recorded the function's answer for each of
/// `items` once, on its first attempt, and nothing else.
fn assert_one_answer_per_item(opened: &OpenProject, run: &str, items: &BTreeSet<String>) {
    let results = opened.state.results(&name("scan"), Some(run), None, 1000).unwrap();
    assert_eq!(results.len(), items.len(), "one result per item, none twice: {results:?}");
    let done: BTreeSet<String> = results.iter().map(|result| result.item.clone()).collect();
    assert_eq!(&done, items, "every item has its result");
    for result in &results {
        let answer = String::from_utf8_lossy(&result.result);
        assert_eq!(answer, r#"{"done": true}"#, "item {}'s result is the function's answer", result.item);
        assert_eq!(result.attempt, 1, "item {} ran once", result.item);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_in_process_runs_every_item_through_the_real_coordinator_and_workers() {
    let (project, opened, items) = deployed_scan_job("host-jobs", 5, "", "").await;
    let launch = mayfly_host::jobs::coordinator_launch(&project.located, mayfly_binary()).unwrap();
    let run = mayfly_host::jobs::start_run(&opened, &launch, &name("scan"), "manual").await.expect("the run starts");
    let finished = wait_for("the run to finish", || {
        let record = opened.state.run(&run.id).unwrap();
        record.status.is_finished().then_some(record)
    })
    .await;
    assert_eq!(finished.status, mayfly_core::run::RunStatus::Succeeded, "{finished:?}");
    assert_one_answer_per_item(&opened, &run.id, &items);

    // The coordinator writes the report, then exits: nothing of the run is left running.
    let (_, architecture) = mayfly_host::deployment::deployed_architecture(&opened).unwrap();
    let provisioners = mayfly_host::jobs::fleet_provisioners(&architecture).await.unwrap();
    let filter = mayfly_fleet::TagFilter::new().with(mayfly_fleet::TAG_RUN, &run.id);
    let started = Instant::now();
    while !mayfly_host::jobs::fleet_inventory(&provisioners, &filter).await.unwrap().is_empty() {
        assert!(started.elapsed() < WAIT, "processes of run {} are still running", run.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The coordinator audited the run after it ended.
    let audit = opened.state.latest_audit().unwrap().expect("an audit was recorded");
    assert_eq!(audit.trigger, format!("run:{}", run.id));
}

/// Create a run of `job` as `mayfly run` does, without starting its coordinator.
fn create_run(opened: &OpenProject, job: &str) -> mayfly_state::RunRecord {
    let (version, architecture) = mayfly_host::deployment::deployed_architecture(opened).unwrap();
    let new_run = mayfly_control::jobs::new_run(
        mayfly_control::jobs::Deployed { architecture: &architecture, version },
        &name(job),
        "manual",
        &mayfly_core::SystemClock,
    )
    .expect("the job is deployed");
    opened.state.create_run(new_run).expect("the run is created")
}

/// A coordinator's settings as `mayfly coordinator` makes them on this host, workers from `mayfly_bin`.
fn coordinator_settings(
    project: &TestProject,
    address: mayfly_host::coordinator::CoordinatorAddressSettings,
) -> mayfly_host::coordinator::CoordinatorSettings {
    mayfly_host::coordinator::CoordinatorSettings {
        mayfly_bin: mayfly_binary(),
        broker: None,
        address,
        group_commit: mayfly_jobs::group_commit::GroupCommitConfig { max_group: 2 },
        telemetry: project.located.telemetry_settings().expect("no `[telemetry]`: nothing exported"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_s_coordinator_runs_in_process_with_real_workers_records_every_result_and_leaves_nothing_running() {
    let (project, opened, items) =
        deployed_scan_job("host-coordinator", 7, r#"timeout = "2s""#, r#"item_timeout = "45s""#).await;
    let run = create_run(&opened, "scan");

    let settings = coordinator_settings(&project, Default::default());
    let prepared = mayfly_host::coordinator::prepare(&project.located, &opened, &run.id, settings)
        .await
        .expect("the coordinator composes");
    // A local job: `mayfly worker` processes of the given binary, the coordinator on loopback.
    let config = &prepared.config;
    assert_eq!(config.listen, std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST));
    assert!(config.advertise.is_none());
    assert_eq!((config.launch.program.clone(), config.launch.args.clone()), (mayfly_binary(), vec!["worker".into()]));
    assert_eq!(config.launch.working_dir, std::path::absolute(&project.located.root).unwrap());
    assert_eq!(config.worker_function.timeout, Duration::from_secs(45), "the job's item timeout governs");
    assert_eq!(config.timing.group_commit.max_group, 2);
    assert_eq!(config.run_dir, mayfly_host::jobs::run_dir(&project.located, &run.id));
    assert!(config.aws.is_none(), "the function has no `permissions`");

    let status = tokio::time::timeout(WAIT, prepared.run())
        .await
        .expect("the run ends in time")
        .expect("the coordinator runs the run to its end");
    assert_eq!(status, mayfly_core::run::RunStatus::Succeeded);
    let record = opened.state.run(&run.id).unwrap();
    assert_eq!(record.status, mayfly_core::run::RunStatus::Succeeded, "{record:?}");
    let report: mayfly_core::run::RunReport =
        serde_json::from_str(record.report.as_deref().expect("the coordinator wrote the report")).unwrap();
    assert_eq!((report.items_expected, report.items_done, report.items_dead_lettered), (7, 7, 0), "{report:?}");
    assert_one_answer_per_item(&opened, &run.id, &items);
    // The run ended only once its workers were verified gone: nothing of it runs now.
    let (_, architecture) = mayfly_host::deployment::deployed_architecture(&opened).unwrap();
    let provisioners = mayfly_host::jobs::fleet_provisioners(&architecture).await.unwrap();
    let filter = mayfly_fleet::TagFilter::new().with(mayfly_fleet::TAG_RUN, &run.id);
    let live = mayfly_host::jobs::fleet_inventory(&provisioners, &filter).await.unwrap();
    assert!(live.is_empty(), "processes of run {} still run: {live:?}", run.id);
    // Not brokered: the coordinator audited the run after it ended.
    let audit = opened.state.latest_audit().unwrap().expect("an audit was recorded");
    assert_eq!(audit.trigger, format!("run:{}", run.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_places_workers_by_the_job_s_provisioner_and_refuses_what_it_cannot_place() {
    let spec = format!(
        r#"version = 1
name = "{}"
[buckets.scans]
[functions.work]
command = ["sh", "functions/work.sh"]
[jobs.cluster]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
provisioner = {{ kind = "slurm", partition = "batch" }}
[jobs.boxed]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
provisioner = {{ kind = "docker" }}
"#,
        unique_name("host-placement")
    );
    let project = TestProject::new(&spec, &[("functions/work.sh", WORK_FUNCTION)]);
    let opened = project.deploy().await;
    let address = |listen: &str, advertise: Option<&str>| mayfly_host::coordinator::CoordinatorAddressSettings {
        listen: Some(listen.to_owned()),
        advertise: advertise.map(str::to_owned),
    };

    // Slurm workers dial the coordinator on the address it was given, by the name it advertises.
    let cluster = create_run(&opened, "cluster");
    let settings = coordinator_settings(&project, address("0.0.0.0", Some("node-7.cluster.example")));
    let prepared = mayfly_host::coordinator::prepare(&project.located, &opened, &cluster.id, settings)
        .await
        .expect("a Slurm job's coordinator composes without reaching the cluster");
    assert!(prepared.config.listen.is_unspecified());
    assert_eq!(prepared.config.advertise.as_ref().unwrap().url(443), "https://node-7.cluster.example:443");
    assert_eq!(prepared.config.launch.program, mayfly_binary(), "Slurm runs the same binary on its nodes");
    assert_eq!(prepared.config.timing.worker_start_timeout, Duration::from_secs(600), "a queued task may wait");
    drop(prepared);
    // Listening on every address with no name to dial is refused, naming both settings.
    let settings = coordinator_settings(&project, address("0.0.0.0", None));
    let error = mayfly_host::coordinator::prepare(&project.located, &opened, &cluster.id, settings)
        .await
        .err()
        .expect("refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("MAYFLY_COORDINATOR_ADDRESS=0.0.0.0 listens on every address, which Slurm workers cannot dial")
            && error.contains("set MAYFLY_COORDINATOR_ADVERTISE"),
        "{error}"
    );

    // A Docker job's coordinator runs in a container its broker starts: one without a broker is refused.
    let boxed = create_run(&opened, "boxed");
    let error = mayfly_host::coordinator::prepare(
        &project.located,
        &opened,
        &boxed.id,
        coordinator_settings(&project, Default::default()),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "job `boxed` runs its workers with the docker provisioner, so its coordinator runs in a container that `mayfly broker --run {}` starts (as `mayfly run` and `mayfly up` do)",
            boxed.id
        )
    );
    // Refusing changed nothing: both runs are as they were created, and nothing of them runs.
    for run in [&cluster, &boxed] {
        let record = opened.state.run(&run.id).unwrap();
        assert_eq!((record.status, record.error.clone()), (run.status, None), "{record:?}");
        assert!(opened.state.run_workers(&run.id).unwrap().is_empty());
    }
}

/// The `mayfly` executable a job's coordinator and workers run: `MAYFLY_BIN`
/// if set, else the CLI package's binary in this test binary's own target
/// directory and profile (`<target>/<profile>/deps/<test>`), which a
/// workspace test run (`cargo nextest run --workspace`) builds with the
/// workspace's features. This crate cannot depend on the binary (the CLI
/// depends on it), so Cargo does not build it for `-p mayfly-host` alone;
/// nor does the test build it: `cargo build -p mayfly` unifies features
/// differently and would rebuild half the workspace back and forth.
fn mayfly_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("MAYFLY_BIN") {
        return PathBuf::from(binary);
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary.parent().and_then(Path::parent).expect("<target>/<profile>/deps/<test>");
    let binary = profile_dir.join("mayfly");
    assert!(
        binary.is_file(),
        "{} is missing: run these tests with `cargo nextest run --workspace -E 'package(mayfly-host)'`, which builds it, or set MAYFLY_BIN",
        binary.display()
    );
    binary
}
