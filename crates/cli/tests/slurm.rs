//! Jobs on Slurm end to end: a real Slurm 22.05 cluster of four nodes, each
//! in its own network namespace (`scripts/slurm.sh` with
//! `MAYFLY_SLURM_NETNS=1`), so that workers dial their coordinator over a
//! real non-loopback address (10.252.0.1). `mayfly run` submits workers as
//! Slurm jobs; the tests check that every item is done once, that a worker
//! cancelled behind Mayfly's back (`scancel`) is replaced and loses nothing,
//! that nothing is left in `squeue`, and that `mayfly audit` sees an orphaned
//! worker job by its tags and `mayfly audit --reap` cancels it.
//!
//! One test function: the namespaces and the bridge have fixed names, so one
//! cluster at a time.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

const SLEEPER: &str = r#"#!/bin/sh
event=$(cat)
echo "working on $event" >&2
sleep "${SLEEP:-0}"
printf '{"done": true}'
"#;

/// Where the coordinator listens: the bridge's host address.
const COORDINATOR_ADDRESS: &str = "10.252.0.1";
/// `mayfly audit`'s exit status when it finds a violation.
const VIOLATIONS_FOUND: i32 = 10;

struct Cluster {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm.sh")
}

impl Cluster {
    fn start() -> Cluster {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("slurm");
        let status = Command::new("bash")
            .arg(script())
            .args(["start".as_ref(), dir.as_os_str()])
            .env("MAYFLY_SLURM_PORT_BASE", "15900")
            .env("MAYFLY_SLURM_NETNS", "1")
            .status()
            .expect("bash runs scripts/slurm.sh");
        assert!(status.success(), "scripts/slurm.sh start failed (needs root and slurm-wlm; see scripts/test.sh)");
        Cluster { dir, _parent: parent }
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    fn command(&self, program: &str, args: &[&str]) -> String {
        let output = Command::new(program).args(args).env("SLURM_CONF", self.conf()).output().unwrap();
        assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// Job ids of the jobs in `state` (`R`, `PD`, …), or of all live ones.
    fn jobs(&self, state: Option<&str>) -> Vec<String> {
        let mut args = vec!["-h", "-o", "%i"];
        if let Some(state) = state {
            args.extend(["-t", state]);
        }
        self.command("squeue", &args).lines().map(str::to_owned).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop".as_ref(), self.dir.as_os_str()]).status();
    }
}

fn slurm_project(items: usize, workers: u32, sleep: &str) -> (Project, String) {
    let name = support::unique_name("slurm");
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
env = {{ SLEEP = "{sleep}" }}
[jobs.scan]
source = {{ bucket = "scans", prefix = "in/" }}
function = "work"
workers = {{ max = {workers} }}
max_attempts = 3
logs = "logs"
provisioner = {{ kind = "slurm", partition = "batch", time_limit = "30m", cpus = 1, memory = "200MiB" }}
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    for index in 0..items {
        let line = format!("{index:05}");
        let output = project.run_with_stdin(&["put", &format!("scans/in/{line}")], line.as_bytes());
        support::assert_success(&output, &["put"]);
    }
    (project, name)
}

/// `mayfly ARGS --json` exiting with `code`: the document it printed.
fn json_exiting(project: &Project, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = project.run(&all);
    assert_eq!(output.status.code(), Some(code), "mayfly {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("mayfly {args:?} printed no JSON ({error}): {}", String::from_utf8_lossy(&output.stderr))
    })
}

fn result_items(project: &Project) -> Vec<String> {
    project
        .json(&["results", "scan", "--limit", "100000"])
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["item"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn jobs_run_on_slurm_nodes_survive_a_cancelled_worker_and_orphans_are_audited_and_reaped() {
    let cluster = Cluster::start();
    // SAFETY: no other thread runs yet; every `mayfly` this test starts inherits these.
    unsafe {
        std::env::set_var("SLURM_CONF", cluster.conf());
        std::env::set_var("MAYFLY_COORDINATOR_ADDRESS", COORDINATOR_ADDRESS);
    }

    // 1. A run of 200 items on four Slurm workers: one result per item, no job left.
    const ITEMS: usize = 200;
    let (project, _) = slurm_project(ITEMS, 4, "0.02");
    let began = Instant::now();
    let outcome = project.json(&["run", "scan"]);
    eprintln!("slurm: {ITEMS} items on 4 Slurm workers in {:.1} s", began.elapsed().as_secs_f64());
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["report"]["items_done"], ITEMS as u64, "{outcome}");
    let items = result_items(&project);
    assert_eq!(items.len(), ITEMS);
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), ITEMS, "one result per item");
    let workers = outcome["report"]["workers"].as_array().unwrap();
    assert!(!workers.is_empty() && workers.len() <= 4, "{outcome}");
    for worker in workers {
        assert_eq!(worker["end"], "stopped", "{worker}");
    }
    assert!(cluster.jobs(None).is_empty(), "no Slurm job remains: {:?}", cluster.jobs(None));

    // 2. A worker cancelled behind Mayfly's back mid-run: a replacement, nothing lost.
    const CHAOS_ITEMS: usize = 400;
    let (project, name) = slurm_project(CHAOS_ITEMS, 4, "0.1");
    let up = project.spawn_up();
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(180);
    let victim = loop {
        let running = cluster.jobs(Some("R"));
        // Fifty results at four workers' pace: every worker has called in by then.
        if running.len() == 4 && result_items(&project).len() >= 50 {
            break running[1].clone();
        }
        assert!(Instant::now() < deadline, "four workers never ran; squeue: {running:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    cluster.command("scancel", &[&victim]);
    let finished = loop {
        let runs = project.json(&["runs"]);
        let status = runs[0]["status"].as_str().unwrap().to_owned();
        if status == "succeeded" || status == "failed" {
            break runs[0].clone();
        }
        assert!(Instant::now() < deadline + Duration::from_secs(120), "the run did not finish: {runs}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let items = result_items(&project);
    assert_eq!(items.len(), CHAOS_ITEMS, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), CHAOS_ITEMS);
    let report = project.json(&["run-report", &run]);
    let workers = report["workers"].as_array().unwrap();
    assert!(workers.iter().any(|worker| worker["end"] == "lost"), "the cancelled worker is lost: {report}");
    assert!(workers.len() >= 5, "a replacement was submitted: {report}");
    eprintln!(
        "slurm chaos: job {victim} cancelled; {} retries, {} workers in the report",
        report["retries"],
        workers.len()
    );
    assert!(cluster.jobs(None).is_empty(), "no Slurm job remains: {:?}", cluster.jobs(None));

    // 3. A worker job of a run that is over is an orphan: the audit sees it, --reap cancels it.
    let comment = format!(
        r#"{{"mayfly":{{"mayfly.project":"{name}","mayfly.run":"r-long-gone","mayfly.role":"worker","mayfly.worker":"w1-001"}}}}"#
    );
    let orphan = Command::new("sbatch")
        .args(["--parsable", "--job-name=mayfly-worker", &format!("--comment={comment}"), "--output=/dev/null"])
        .args(["--wrap", "exec sleep 600"])
        .env("SLURM_CONF", cluster.conf())
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{}", String::from_utf8_lossy(&orphan.stderr));
    let orphan = String::from_utf8(orphan.stdout).unwrap().trim().to_owned();
    let audit = json_exiting(&project, &["audit"], VIOLATIONS_FOUND);
    let findings = audit["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|finding| finding["rule"] == "orphaned-resource"
            && finding["resource"].as_str().is_some_and(|resource| resource.contains(&format!("slurm:{orphan}")))),
        "the orphaned worker job is reported: {audit}"
    );
    let reaped = json_exiting(&project, &["audit", "--reap"], 0);
    assert_eq!(reaped["reaped"][0]["id"].as_str(), Some(format!("slurm:{orphan}").as_str()), "{reaped}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.jobs(None).is_empty() {
        assert!(Instant::now() < deadline, "--reap did not cancel job {orphan}: {:?}", cluster.jobs(None));
        std::thread::sleep(Duration::from_millis(200));
    }
    up.stop();
}
