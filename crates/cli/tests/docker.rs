//! Batch jobs whose workers are Docker containers, end to end: the real
//! `mayfly` binary, a real Docker engine, an image `mayfly image build`
//! made from this machine's files, containers on a user-defined network in
//! a named subnet. Each chaos case breaks one thing the way a network of
//! real hosts breaks — a container killed, frozen, cut off from the
//! coordinator, the coordinator killed — and checks that the run completes
//! with exactly one result per item and that nothing is left afterwards:
//! no container of the run and no network.
//!
//! Every test has its own project name, network name and subnet
//! (10.77.1xx.0/24), so they run in parallel without seeing each other.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

/// The image the tests' workers run: `mayfly` and the `lambda-echo` handler.
const IMAGE: &str = "mayfly-test-worker:latest";

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker command runs (install docker.io)")
}

fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds the test image unless it is up to date (one test process at a time).
fn ensure_image(project: &Project) {
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "the Docker tests need a running Docker engine that this user may use: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let lock_path = support::handler_directory().join("mayfly-test-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the image lock file");
    // SAFETY: flock(2) on a file descriptor this function owns; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    project.ok(&["image", "build", "--tag", IMAGE, "--include", &support::image_handler("lambda-echo")]);
    drop(lock);
}

struct DockerJob {
    project: Project,
    network: String,
    subnet_prefix: String,
}

/// A project whose job `scan` runs `items` items (each sleeping `sleep_ms`)
/// on up to `workers` containers, on network `mayfly-test-<case>` with
/// subnet 10.77.<100+case>.0/24.
fn docker_job(case: u8, items: usize, workers: u32, sleep_ms: u64) -> DockerJob {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("docker-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let network = format!("mayfly-test-{case}");
    let subnet_prefix = format!("10.77.{}.", 100 + u32::from(case));
    let echo = support::image_handler("lambda-echo");
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests", data-class = "phi" }}
[policy]
require_tags = ["owner"]
networks = ["10.77.0.0/16"]
[buckets.scans]
[buckets.logs]
[functions.work]
runtime = "lambda"
command = ["{echo}"]
env = {{ MAYFLY_TEST_MODE = "sleep", MAYFLY_TEST_MS = "{sleep_ms}" }}
[jobs.scan]
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = {workers} }}
max_attempts = 3
logs = "logs"
provisioner = {{ kind = "docker", network = "{network}", subnet = "{subnet_prefix}0/24", image = "{IMAGE}", memory = "256MiB", cpus = 0.5 }}
"#
    );
    let project = Project::with_spec(&spec);
    ensure_image(&project);
    project.ok(&["deploy"]);
    let manifest: String = (0..items).map(|i| format!("item-{i:05}\n")).collect();
    let output = project.run_with_stdin(&["put", "scans/manifest.txt", "-"], manifest.as_bytes());
    support::assert_success(&output, &["put"]);
    DockerJob { project, network, subnet_prefix }
}

impl DockerJob {
    fn start(&self) -> String {
        self.project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned()
    }

    fn live(&self) -> Vec<Value> {
        self.project.json(&["ps"]).as_array().unwrap().clone()
    }

    fn worker_containers(&self) -> Vec<Value> {
        self.live().into_iter().filter(|r| r["kind"] == "container" && r["role"] == "worker").collect()
    }

    fn run_row(&self) -> Value {
        self.project.json(&["runs"])[0].clone()
    }

    /// Waits until at least `done` items are done and a worker container runs; returns the containers.
    fn wait_for_progress(&self, done: u64) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let row = self.run_row();
            assert!(!is_finished(&row), "the run ended before the chaos began: make it longer: {row}");
            let containers = self.worker_containers();
            if row["done"].as_u64().unwrap() >= done && !containers.is_empty() {
                return containers;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no progress: {row}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A worker container that has called in: some of the results are its.
    fn alive_worker_container(&self, done: u64) -> Value {
        let started = Instant::now();
        loop {
            let containers = self.wait_for_progress(done);
            let results = self.project.json(&["results", "scan", "--limit", "100000"]);
            let workers: BTreeSet<&str> =
                results.as_array().unwrap().iter().filter_map(|r| r["worker"].as_str()).collect();
            if let Some(alive) =
                containers.iter().find(|c| workers.contains(c["tags"]["mayfly.worker"].as_str().unwrap()))
            {
                return alive.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no worker container has results yet");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_end(&self) -> Value {
        let started = Instant::now();
        loop {
            let row = self.run_row();
            if is_finished(&row) {
                return row;
            }
            if started.elapsed() > Duration::from_secs(180) {
                let run = row["run"].as_str().unwrap_or_default();
                // The log is sealed on disk; `mayfly logs --process` opens it.
                let output = self.project.run(&["logs", run, "--process", "coordinator"]);
                let log = String::from_utf8_lossy(&output.stdout).into_owned();
                panic!("the run did not finish: {row}\ncoordinator log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Exactly one result per item, and no container or network of the run left.
    fn assert_complete_and_clean(&self, run: &str, items: usize) -> Value {
        let results = self.project.json(&["results", "scan", "--limit", "100000"]);
        let keys: Vec<&str> = results.as_array().unwrap().iter().map(|r| r["item"].as_str().unwrap()).collect();
        assert_eq!(keys.len(), items, "one result per item");
        assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), items, "no item twice");
        let report = self.project.json(&["run-report", run]);
        assert_eq!(report["items_done"], items as u64, "{report}");
        assert_eq!(report["items_dead_lettered"], 0, "{report}");
        // `mayfly run --detach` returns at once: the coordinator removes the fleet and the network, then exits.
        let started = Instant::now();
        while !self.live().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "still live: {:?}", self.live());
            std::thread::sleep(Duration::from_millis(200));
        }
        let left = docker_ok(&["ps", "-a", "-q", "--filter", &format!("label=mayfly.run={run}")]);
        assert!(left.trim().is_empty(), "containers of the run remain: {left}");
        while docker(&["network", "inspect", &self.network]).status.success() {
            assert!(started.elapsed() < Duration::from_secs(30), "network {} remains", self.network);
            std::thread::sleep(Duration::from_millis(200));
        }
        report
    }
}

fn is_finished(row: &Value) -> bool {
    !matches!(row["status"].as_str(), Some("requested" | "running" | "finishing"))
}

fn container_id(resource: &Value) -> String {
    resource["id"].as_str().unwrap().strip_prefix("container:").unwrap().to_owned()
}

/// The report's entry for the worker that ran in `container`.
fn worker_of<'a>(report: &'a Value, resource: &Value) -> &'a Value {
    let worker = resource["tags"]["mayfly.worker"].as_str().unwrap();
    report["workers"].as_array().unwrap().iter().find(|w| w["worker"] == worker).unwrap()
}

#[test]
fn a_thousand_items_on_six_worker_containers_in_a_named_subnet_complete_and_leave_nothing() {
    const ITEMS: usize = 1000;
    let job = docker_job(1, ITEMS, 6, 10);
    // Another project's network, Mayfly's and unused (as a job's is between
    // its creation and its coordinator's start): this run's end must not take it.
    let bystander = format!("mayfly-test-bystander-{}", std::process::id());
    docker_ok(&[
        "network",
        "create",
        "--label",
        "mayfly.managed=true",
        "--label",
        "mayfly.project=bystander",
        &bystander,
    ]);
    let run = job.start();
    let containers = job.wait_for_progress(1);
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    // Every worker container is on the job's subnet, labelled with the project's tags, run and role.
    while seen.len() < 6 && started.elapsed() < Duration::from_secs(60) && !is_finished(&job.run_row()) {
        // A container gets its address when it starts, a moment after it is created.
        for container in job.worker_containers().into_iter().filter(|c| c["address"].is_string()) {
            let address = container["address"].as_str().unwrap().to_owned();
            assert!(address.starts_with(&job.subnet_prefix), "{container}");
            assert_eq!(container["tags"]["owner"], "tests");
            assert_eq!(container["tags"]["data-class"], "phi");
            assert_eq!(container["run"], run.as_str());
            seen.insert(container["id"].as_str().unwrap().to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!containers.is_empty());
    let inspected = docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.CapDrop}} {{.Config.User}} {{.HostConfig.LogConfig.Type}}",
        &container_id(&containers[0]),
    ]);
    // The `none` log driver: the engine keeps no plaintext copy of what a worker writes.
    assert_eq!(inspected.trim(), format!("{} false true 268435456 500000000 [ALL] 10001:10001 none", job.network));
    // The coordinator is a container on the same subnet, as hardened, running as the owner of the project's
    // files (which it binds: its state store, buckets and keyring), with no Docker engine inside; its broker,
    // a host process, starts the workers for it.
    let live = job.live();
    let coordinator = live.iter().find(|r| r["role"] == "coordinator").expect("a coordinator runs");
    assert_eq!(coordinator["kind"], "container", "{coordinator}");
    assert!(coordinator["address"].as_str().unwrap().starts_with(&job.subnet_prefix), "{coordinator}");
    assert!(live.iter().any(|r| r["role"] == "broker" && r["kind"] == "process"), "{live:?}");
    let inspected = docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.NetworkMode}} {{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.Config.User}} {{json .HostConfig.Binds}} {{.HostConfig.LogConfig.Type}}",
        &container_id(coordinator),
    ]);
    let root = std::fs::canonicalize(job.project.path("")).unwrap();
    assert_eq!(
        inspected.trim(),
        format!(r#"{} false true [ALL] 0:0 ["{}:{}:rw"] none"#, job.network, root.display(), root.display())
    );
    // Its output reaches its sealed log by attaching (the engine keeps none); read while the run
    // lasts, since its directory goes once the run's logs are sealed into the logs bucket.
    let log = job.project.ok(&["logs", &run, "--process", "coordinator"]);
    assert!(log.contains("coordinator serving workers"), "{log}");
    let network_labels = docker_ok(&["network", "inspect", "--format", "{{json .Labels}}", &job.network]);
    assert!(network_labels.contains(r#""mayfly.tag.owner":"tests""#), "{network_labels}");

    let row = job.wait_for_end();
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(seen.len(), 6, "six worker containers ran");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    assert_eq!(report["workers"].as_array().unwrap().len(), 6, "{report}");
    let kept = docker(&["network", "inspect", &bystander]).status.success();
    docker(&["network", "rm", &bystander]);
    assert!(kept, "the run's end removed another project's unused network {bystander}");
    // The audit afterwards: no violation, nothing of the run alive, its network gone.
    let audit = job.project.json(&["audit"]);
    assert_eq!(audit["summary"]["violations"], 0, "{audit}");
    let inventory = &audit["inventory"];
    assert!(!inventory["live"].as_array().unwrap().iter().any(|entry| entry.to_string().contains(&run)), "{inventory}");
    assert!(
        !inventory["networks"].as_array().unwrap().iter().any(|network| network["name"] == job.network.as_str()),
        "{inventory}"
    );
    let log = job.project.ok(&["logs", &run, "--worker", "w1-001"]);
    assert!(log.contains("worker w1-001 of run") && log.contains("stopping after"), "{log}");
}

#[test]
fn chaos_a_killed_worker_container_loses_nothing() {
    const ITEMS: usize = 300;
    let job = docker_job(2, ITEMS, 3, 30);
    let run = job.start();
    let victim = job.alive_worker_container(30);
    docker_ok(&["kill", &container_id(&victim)]);
    let row = job.wait_for_end();
    assert_eq!(row["status"], "succeeded", "{row}");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    assert_eq!(worker_of(&report, &victim)["end"], "lost", "{report}");
}

#[test]
fn chaos_a_frozen_worker_container_is_a_straggler_whose_items_run_elsewhere() {
    const ITEMS: usize = 300;
    let job = docker_job(3, ITEMS, 3, 30);
    let run = job.start();
    let victim = job.alive_worker_container(30);
    docker_ok(&["pause", &container_id(&victim)]);
    let row = job.wait_for_end();
    assert_eq!(row["status"], "succeeded", "{row}");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    let frozen = worker_of(&report, &victim);
    assert_eq!(frozen["end"], "killed", "silent past the worker timeout, then killed: {report}");
    assert!(report["retries"].as_u64().unwrap() >= 1, "what it held ran again elsewhere: {report}");
}

#[test]
fn chaos_a_worker_cut_off_from_the_coordinator_is_replaced_and_its_items_run_elsewhere() {
    const ITEMS: usize = 300;
    let job = docker_job(4, ITEMS, 3, 30);
    let run = job.start();
    let victim = job.alive_worker_container(30);
    docker_ok(&["network", "disconnect", "--force", &job.network, &container_id(&victim)]);
    let row = job.wait_for_end();
    assert_eq!(row["status"], "succeeded", "{row}");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    let cut_off = worker_of(&report, &victim);
    assert_eq!(cut_off["end"], "killed", "silent past the worker timeout, then killed: {report}");
    assert!(report["retries"].as_u64().unwrap() >= 1, "what it held ran again elsewhere: {report}");
}

#[test]
fn chaos_the_coordinator_killed_its_containers_are_torn_down_and_a_new_one_finishes() {
    const ITEMS: usize = 300;
    let job = docker_job(5, ITEMS, 3, 40);
    let up = job.project.spawn_up();
    let run = job.start();
    let old_fleet: BTreeSet<String> = job.wait_for_progress(30).iter().map(container_id).collect();
    let coordinator = job
        .live()
        .into_iter()
        .find(|r| r["role"] == "coordinator" && r["kind"] == "container")
        .expect("a coordinator container runs");
    docker_ok(&["kill", &container_id(&coordinator)]);
    let row = job.wait_for_end();
    up.stop();
    assert_eq!(row["status"], "succeeded", "{row}");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    for container in &old_fleet {
        assert!(!docker(&["inspect", container]).status.success(), "{container} of the dead coordinator remains");
    }
    let workers = report["workers"].as_array().unwrap();
    // The second coordinator's fleet, w2: `up` started one coordinator and let it claim the run
    // (it used to tear a coordinator still starting down every second, so under load a third, w3, ran).
    assert!(workers.iter().any(|w| w["worker"].as_str().unwrap().starts_with("w2-")), "a second fleet ran: {report}");
}

#[test]
fn chaos_the_broker_killed_the_coordinator_ends_and_a_new_broker_and_coordinator_finish() {
    const ITEMS: usize = 300;
    let job = docker_job(8, ITEMS, 3, 40);
    let up = job.project.spawn_up();
    let run = job.start();
    job.wait_for_progress(30);
    let broker = job.live().into_iter().find(|r| r["role"] == "broker").expect("a broker runs");
    let pgid: i32 = broker["id"].as_str().unwrap().split(':').nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group: this test's broker.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let row = job.wait_for_end();
    up.stop();
    assert_eq!(row["status"], "succeeded", "{row}");
    let report = job.assert_complete_and_clean(&run, ITEMS);
    let workers = report["workers"].as_array().unwrap();
    assert!(workers.iter().any(|w| w["worker"].as_str().unwrap().starts_with("w2-")), "a second fleet ran: {report}");
}

#[test]
fn a_container_with_mayfly_labels_and_an_unknown_run_is_an_orphan_and_is_reaped() {
    let job = docker_job(6, 1, 1, 0);
    assert!(job.live().is_empty());
    let spec = std::fs::read_to_string(job.project.path("mayfly.toml")).unwrap();
    let project_name = spec.lines().find_map(|l| l.strip_prefix("name = ")).unwrap().trim_matches('"').to_owned();
    let started = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        "mayfly.managed=true",
        "--label",
        &format!("mayfly.project={project_name}"),
        "--label",
        "mayfly.run=run-nobody-knows",
        "--label",
        "mayfly.role=worker",
        IMAGE,
        "/usr/local/bin/mayfly",
        "worker",
        "--coordinator",
        "http://127.0.0.1:9",
        "--run",
        "run-nobody-knows",
        "--worker",
        "w1-001",
    ]);
    let container = started.trim().to_owned();
    let live = job.live();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["kind"], "container");
    assert_eq!(live[0]["run"], "run-nobody-knows");
    assert!(live[0]["id"].as_str().unwrap().ends_with(&container));

    let reaped = job.project.json(&["ps", "--reap"]);
    assert_eq!(reaped[0]["reaped"], true, "{reaped}");
    assert!(!docker(&["inspect", &container]).status.success(), "the orphan container is gone");
    assert!(job.live().is_empty());
}

#[test]
fn a_job_whose_image_is_missing_fails_the_run_with_a_clear_error_and_leaves_nothing() {
    let job = docker_job(7, 5, 2, 0);
    let spec =
        std::fs::read_to_string(job.project.path("mayfly.toml")).unwrap().replace(IMAGE, "mayfly-test-no-such-image:1");
    std::fs::write(job.project.path("mayfly.toml"), spec).unwrap();
    job.project.ok(&["deploy"]);
    let output = job.project.run(&["run", "scan", "--json"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("mayfly-test-no-such-image:1") && error.contains("mayfly image build"), "{error}");
    assert!(job.live().is_empty());
    let started = Instant::now();
    while docker(&["network", "inspect", &job.network]).status.success() {
        assert!(started.elapsed() < Duration::from_secs(30), "network {} remains", job.network);
        std::thread::sleep(Duration::from_millis(200));
    }
}
