//! Jobs on Docker Swarm end to end: a real two-node swarm (`scripts/swarm.sh`:
//! the system engine as manager on 10.250.0.1, a second dockerd in a network
//! namespace of its own on 10.250.0.2 as worker), the workers' image built by
//! `mayfly image build` and copied to the second node with `docker save |
//! docker load`. `mayfly run` starts workers as swarm services on the job's
//! overlay network; they dial their coordinator (a process on the manager
//! host) at 10.250.0.1. The test checks that 2,000 items are each done once
//! by workers on both nodes, that no service of the run is left and the
//! audit is clean; then that a run loses nothing, with exactly one result
//! per item, when mid-run: the second node is lost (its link cut, then its
//! dockerd and containers SIGKILLed); then, on the manager alone, a worker's
//! service is scaled to zero behind Mayfly's back (`docker service scale`);
//! and the coordinator is SIGKILLed and `mayfly up` resumes the run with a
//! second fleet. Before the chaos, a job whose image is missing on the node
//! its workers are constrained to fails with an error naming the node, the
//! image and how to copy it there.
//!
//! One test function: the system engine can be in one swarm at a time.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

const IMAGE: &str = "mayfly-test-swarm-worker:latest";
const COORDINATOR_ADDRESS: &str = "10.250.0.1";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm.sh")
}

struct Swarm {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Swarm {
    fn start() -> Swarm {
        let parent = tempfile::tempdir().unwrap();
        let swarm = Swarm { dir: parent.path().join("swarm"), _parent: parent };
        swarm.script(&["start"]);
        swarm
    }

    fn script(&self, action: &[&str]) {
        let output = Command::new("bash")
            .arg(script())
            .arg(action[0])
            .arg(&self.dir)
            .args(&action[1..])
            .output()
            .expect("bash runs scripts/swarm.sh");
        assert!(
            output.status.success(),
            "scripts/swarm.sh {action:?} failed (needs root and docker.io; see scripts/test.sh): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop".as_ref(), self.dir.as_os_str()]).status();
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("the docker command runs");
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn swarm_project(items: usize, workers: u32, sleep_ms: u64, subnet: &str) -> Project {
    swarm_project_placed(items, workers, sleep_ms, subnet, IMAGE, &[])
}

/// As [`swarm_project`], its workers from `image`, placed under `constraints`.
fn swarm_project_placed(
    items: usize,
    workers: u32,
    sleep_ms: u64,
    subnet: &str,
    image: &str,
    constraints: &[&str],
) -> Project {
    let constraints: Vec<String> = constraints.iter().map(|constraint| format!("{constraint:?}")).collect();
    let constraints = constraints.join(", ");
    let name = support::unique_name("swarm");
    let echo = support::image_handler("lambda-echo");
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[policy]
require_tags = ["owner"]
networks = ["10.231.0.0/16"]
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
provisioner = {{ kind = "swarm", network = "mayfly-test-{name}", subnet = "{subnet}", image = "{image}", constraints = [{constraints}], memory = "256MiB", cpus = 0.5 }}
"#
    );
    let project = Project::with_spec(&spec);
    project.ok(&["deploy"]);
    let manifest: String = (0..items).map(|i| format!("item-{i:05}\n")).collect();
    let output = project.run_with_stdin(&["put", "scans/manifest.txt", "-"], manifest.as_bytes());
    support::assert_success(&output, &["put"]);
    project
}

fn results(project: &Project) -> Vec<String> {
    let results = project.json(&["results", "scan", "--limit", "100000"]);
    results.as_array().unwrap().iter().map(|result| result["item"].as_str().unwrap().to_owned()).collect()
}

fn run_row(project: &Project) -> Value {
    project.json(&["runs"])[0].clone()
}

fn is_finished(row: &Value) -> bool {
    !matches!(row["status"].as_str(), Some("requested" | "running" | "finishing"))
}

/// The nodes (ids) running a task of a Mayfly service of `run` now.
fn nodes_of_run(run: &str) -> BTreeSet<String> {
    let quiet = |args: &[&str]| {
        let output = Command::new("docker").args(args).output().expect("the docker command runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut nodes = BTreeSet::new();
    for service in quiet(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]).lines() {
        let tasks = quiet(&["service", "ps", service, "--format", "{{.ID}} {{.CurrentState}}"]);
        for task in tasks.lines().filter(|task| task.contains(" Running")) {
            let id = task.split(' ').next().unwrap_or_default();
            let node = quiet(&["inspect", id, "--format", "{{.NodeID}}"]);
            if !node.trim().is_empty() {
                nodes.insert(node.trim().to_owned());
            }
        }
    }
    nodes
}

/// The services (ids) of `run` the manager lists now.
fn services_of_run(run: &str) -> Vec<String> {
    let listed = docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]);
    listed.lines().map(str::to_owned).collect()
}

/// Waits until the project's latest run has done `items` items, and panics if it ended first.
fn wait_for_done(project: &Project, items: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let row = run_row(project);
        assert!(!is_finished(&row), "the run ended before the chaos: {row}");
        if row["done"].as_u64().unwrap_or(0) >= items {
            return;
        }
        assert!(Instant::now() < deadline, "the run never got going: {row}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the project's latest run to end and returns its row.
fn wait_for_end(project: &Project, seconds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let row = run_row(project);
        if is_finished(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "the run did not finish in {seconds} s: {row}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn assert_one_result_per_item(project: &Project, expected: usize) {
    let items = results(project);
    assert_eq!(items.len(), expected, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), expected);
}

#[test]
fn jobs_run_on_both_nodes_of_a_swarm_and_survive_a_cancelled_worker_a_killed_coordinator_and_a_lost_node() {
    let swarm = Swarm::start();
    let builder = Project::with_spec("version = 1\nname = \"swarm-image\"\n");
    builder.ok(&["image", "build", "--tag", IMAGE, "--include", &support::image_handler("lambda-echo")]);
    swarm.script(&["load", IMAGE]);
    // SAFETY: no other thread runs yet; every `mayfly` this test starts inherits it.
    unsafe { std::env::set_var("MAYFLY_COORDINATOR_ADDRESS", COORDINATOR_ADDRESS) };

    // 1. 2,000 items on four swarm workers, spread over both nodes.
    const ITEMS: usize = 2_000;
    let project = swarm_project(ITEMS, 4, 20, "10.231.1.0/24");
    let began = Instant::now();
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    let mut nodes = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        nodes.extend(nodes_of_run(&run));
        let row = run_row(&project);
        if is_finished(&row) {
            break row;
        }
        assert!(Instant::now() < deadline, "the run did not finish in 300 s: {row}");
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!("swarm: {ITEMS} items on 4 swarm workers in {:.1} s", began.elapsed().as_secs_f64());
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_one_result_per_item(&project, ITEMS);
    assert_eq!(nodes.len(), 2, "workers ran on both nodes: {nodes:?}");
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]), "", "no service left");
    let audit = project.run(&["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(0), "a clean audit: {}", String::from_utf8_lossy(&audit.stdout));

    // 1b. A node that lacks the image: the run fails, and says which node,
    // which image and how to put it there (an image tagged on the manager
    // only, workers constrained to the worker node).
    const MANAGER_ONLY: &str = "mayfly-test-swarm-manager-only:latest";
    docker(&["tag", IMAGE, MANAGER_ONLY]);
    let project = swarm_project_placed(20, 2, 0, "10.231.5.0/24", MANAGER_ONLY, &["node.role == worker"]);
    let output = project.run(&["run", "scan", "--json"]);
    docker(&["rmi", MANAGER_ONLY]);
    assert_eq!(output.status.code(), Some(5), "the run fails: {}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "failed", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    for needed in ["failed to start", "ended before calling in", "No such image", MANAGER_ONLY, "docker save", "node `"]
    {
        assert!(error.contains(needed), "the run's error says {needed:?}: {error}");
    }
    let run = outcome["run"].as_str().unwrap();
    assert_eq!(services_of_run(run), Vec::<String>::new(), "no service of the failed run is left");
    eprintln!("swarm missing image: {error}");

    // 2. The second node lost mid-run: its workers' items go back, nothing is lost.
    const CHAOS_ITEMS: usize = 1_000;
    let project = swarm_project(CHAOS_ITEMS, 4, 100, "10.231.2.0/24");
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let row = run_row(&project);
        assert!(!is_finished(&row), "the run ended before the node was lost: {row}");
        if row["done"].as_u64().unwrap_or(0) >= 50 && nodes_of_run(&run).len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "workers never ran on both nodes: {row}");
        std::thread::sleep(Duration::from_millis(200));
    }
    swarm.script(&["kill-worker"]);
    let finished = wait_for_end(&project, 300);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_one_result_per_item(&project, CHAOS_ITEMS);
    let report = project.json(&["run-report", &run]);
    let workers = report["workers"].as_array().unwrap();
    // A worker that was serving on the lost node ended with it (lost, or
    // silent and then killed), what it held ran again elsewhere, and the
    // others finished the run.
    assert!(
        workers.iter().any(|worker| matches!(worker["end"].as_str(), Some("killed" | "lost"))),
        "a worker of the lost node ended with it: {report}"
    );
    assert!(report["retries"].as_u64() > Some(0), "what it held ran again: {report}");
    eprintln!("swarm node loss: {} retries, {} workers in the report", report["retries"], workers.len());
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]), "", "no service left");

    // 3. (On the manager alone from here.) A worker's service scaled to zero
    // behind Mayfly's back: its task ends, what it held goes back, a
    // replacement finishes the run.
    const CANCEL_ITEMS: usize = 600;
    let project = swarm_project(CANCEL_ITEMS, 4, 100, "10.231.3.0/24");
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    wait_for_done(&project, 40);
    let services = services_of_run(&run);
    let victim = services.first().expect("a worker service runs").clone();
    docker(&["service", "scale", "--detach", &format!("{victim}=0")]);
    let finished = wait_for_end(&project, 300);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_one_result_per_item(&project, CANCEL_ITEMS);
    let report = project.json(&["run-report", &run]);
    let workers = report["workers"].as_array().unwrap();
    assert!(workers.len() > 4, "a replacement worker ran after the cancelled one: {report}");
    eprintln!("swarm cancel: {} retries, {} workers in the report", report["retries"], workers.len());
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]), "", "no service left");

    // 4. The coordinator SIGKILLed mid-run, resumed by `mayfly up`: the dead
    // coordinator's services are removed, a second fleet finishes the run.
    const RESUME_ITEMS: usize = 600;
    let project = swarm_project(RESUME_ITEMS, 4, 100, "10.231.4.0/24");
    let up = project.spawn_up();
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    wait_for_done(&project, 40);
    let old_fleet = services_of_run(&run);
    assert!(!old_fleet.is_empty(), "the first fleet runs");
    let live = project.json(&["ps"]);
    let coordinator = live
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["role"] == "coordinator" && resource["run"] == run.as_str())
        .unwrap_or_else(|| panic!("the coordinator is a live process of this host: {live}"));
    let pgid: i32 = coordinator["id"].as_str().unwrap().split(':').nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group: this run's coordinator.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let finished = wait_for_end(&project, 300);
    up.stop();
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_one_result_per_item(&project, RESUME_ITEMS);
    let report = project.json(&["run-report", &run]);
    let workers = report["workers"].as_array().unwrap();
    assert!(
        workers.iter().any(|worker| worker["worker"].as_str().unwrap().starts_with("w2-")),
        "a second fleet ran: {report}"
    );
    let left = services_of_run(&run);
    assert!(left.is_empty(), "no service of either fleet is left: {left:?} (first fleet {old_fleet:?})");
    eprintln!("swarm coordinator resumed: {} retries, {} workers in the report", report["retries"], workers.len());
}
