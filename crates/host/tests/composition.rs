//! The host's composition root driven in process, with real components: a
//! project in a temporary directory on the embedded SQLite store and local
//! buckets, real function processes, the real `mayfly` binary as a job's
//! coordinator and workers. Each test deploys through `mayfly_host::deploy`,
//! then runs what `mayfly up`, `mayfly serve` and `mayfly run` run:
//! the control plane (`control_plane`), the HTTPS API (`api_server`) and a
//! job's run (`jobs`).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_in_process_runs_every_item_through_the_real_coordinator_and_workers() {
    let spec = format!(
        r#"version = 1
name = "{}"
[buckets.scans]
[functions.work]
command = ["sh", "functions/work.sh"]
[jobs.scan]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
workers = {{ max = 2 }}
max_attempts = 1
"#,
        unique_name("host-jobs")
    );
    let project = TestProject::new(&spec, &[("functions/work.sh", WORK_FUNCTION)]);
    let opened = project.deploy().await;
    let items: BTreeSet<String> = (0..5).map(|i| format!("in/{i:03}")).collect();
    for item in &items {
        opened.buckets.put_bytes(&name("scans"), item, bytes::Bytes::from(item.clone())).await.unwrap();
    }
    let launch = mayfly_host::jobs::coordinator_launch(&project.located, mayfly_binary()).unwrap();
    let run = mayfly_host::jobs::start_run(&opened, &launch, &name("scan"), "manual").await.expect("the run starts");
    let finished = wait_for("the run to finish", || {
        let record = opened.state.run(&run.id).unwrap();
        record.status.is_finished().then_some(record)
    })
    .await;
    assert_eq!(finished.status, mayfly_core::run::RunStatus::Succeeded, "{finished:?}");
    let results = opened.state.results(&name("scan"), Some(&run.id), None, 1000).unwrap();
    let done: BTreeSet<String> = results.iter().map(|result| result.item.clone()).collect();
    assert_eq!(done, items, "one result per item");
    for result in &results {
        let answer = String::from_utf8_lossy(&result.result);
        assert!(answer.contains("done"), "item {}'s result is the function's answer: {answer}", result.item);
    }

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
