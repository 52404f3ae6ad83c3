//! Jobs on Docker Swarm end to end: a real two-node swarm (`scripts/swarm.sh`:
//! the system engine as manager on 10.250.0.1, a second dockerd in a network
//! namespace of its own on 10.250.0.2 as worker), the workers' image built by
//! `mayfly image build` and copied to the second node with `docker save |
//! docker load`. `mayfly run` starts workers as swarm services on the job's
//! overlay network; they dial their coordinator (a process on the manager
//! host) at 10.250.0.1. The test checks that 2,000 items are each done once
//! by workers on both nodes, that no service of the run is left and the
//! audit is clean; then that a run survives the loss of the second node
//! (its link cut, then its dockerd and containers SIGKILLed, mid-run) with
//! exactly one result per item.
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
provisioner = {{ kind = "swarm", network = "mayfly-test-{name}", subnet = "{subnet}", image = "{IMAGE}", memory = "256MiB", cpus = 0.5 }}
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

#[test]
fn jobs_run_on_both_nodes_of_a_swarm_and_survive_the_loss_of_a_node() {
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
    let items = results(&project);
    assert_eq!(items.len(), ITEMS, "one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), ITEMS);
    assert_eq!(nodes.len(), 2, "workers ran on both nodes: {nodes:?}");
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]), "", "no service left");
    let audit = project.run(&["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(0), "a clean audit: {}", String::from_utf8_lossy(&audit.stdout));

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
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        let row = run_row(&project);
        if is_finished(&row) {
            break row;
        }
        assert!(Instant::now() < deadline, "the run did not finish after the node loss: {row}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let items = results(&project);
    assert_eq!(items.len(), CHAOS_ITEMS, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), CHAOS_ITEMS);
    let report = project.json(&["run-report", &run]);
    let workers = report["workers"].as_array().unwrap();
    // A worker that was serving on the lost node ended without being stopped
    // (lost, or killed with its node); the others finished the run.
    assert!(
        workers.iter().any(|worker| worker["end"] != "stopped" && worker["items_done"].as_u64() > Some(0)),
        "a worker of the lost node ended with it: {report}"
    );
    eprintln!("swarm node loss: {} retries, {} workers in the report", report["retries"], workers.len());
    assert_eq!(docker(&["service", "ls", "-q", "--filter", &format!("label=mayfly.run={run}")]), "", "no service left");
}
