//! Jobs on Slurm end to end: a real Slurm 22.05 cluster of four nodes, each
//! in its own network namespace (`scripts/slurm.sh` with
//! `MAYFLY_SLURM_NETNS=1`), so that workers dial their coordinator over a
//! real non-loopback address (10.252.0.1). `mayfly run` submits its workers
//! as one Slurm job array; the test checks, in phases:
//!
//! 1. 2,000 items on eight workers across all four nodes, submitted in one
//!    `sbatch --array`: one result per item, nothing left in `squeue`,
//!    `mayfly audit` clean.
//! 2. Chaos in one run: a node lost mid-run (its `slurmd` and every process
//!    in its namespace SIGKILLed, the node set down), a worker's task
//!    cancelled behind Mayfly's back (`scancel`), the coordinator SIGKILLed
//!    and resumed by `mayfly up`: every item done, re-executions in the
//!    report, no Slurm job and no process of the run left.
//! 3. An orphaned worker job is reported by `mayfly audit` and cancelled by
//!    `mayfly audit --reap`.
//!
//! One test function: the namespaces and the bridge have fixed names, so one
//! cluster at a time.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;
use support::slurm::Cluster;

const SLEEPER: &str = r#"#!/bin/sh
event=$(cat)
echo "working on $event" >&2
sleep "${SLEEP:-0}"
printf '{"done": true}'
"#;

/// What the coordinator advertises to its workers: the bridge's host address.
const COORDINATOR_ADDRESS: &str = "10.252.0.1";
/// `mayfly audit`'s exit status when it finds a violation.
const VIOLATIONS_FOUND: i32 = 10;

impl Cluster {
    /// A cluster whose nodes are network namespaces of their own.
    fn with_namespaces() -> Cluster {
        Cluster::start(&[("MAYFLY_SLURM_PORT_BASE", "15900".as_ref()), ("MAYFLY_SLURM_NETNS", "1".as_ref())])
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

/// One line of `squeue`: a job or an array task.
#[derive(Debug, Clone)]
struct QueuedJob {
    /// `123` or `123_4`.
    id: String,
    /// The array's job id (the job's own for a single job).
    array: String,
    node: String,
    state: String,
}

impl Cluster {
    /// Mayfly's worker jobs and tasks.
    fn worker_jobs(&self) -> Vec<QueuedJob> {
        self.command("squeue", &["-h", "-r", "-o", "%i|%F|%N|%T|%j"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('|').collect();
                (fields.len() == 5 && fields[4] == "mayfly-worker").then(|| QueuedJob {
                    id: fields[0].to_owned(),
                    array: fields[1].to_owned(),
                    node: fields[2].to_owned(),
                    state: fields[3].to_owned(),
                })
            })
            .collect()
    }

    fn running_workers(&self) -> Vec<QueuedJob> {
        self.worker_jobs().into_iter().filter(|job| job.state == "RUNNING").collect()
    }

    /// `node` lost as a machine is: its `slurmd` and every process in its
    /// namespace (its workers) SIGKILLed, then the node set down.
    fn lose_node(&self, node: &str) {
        let pid_file = self.dir.join(format!("slurmd-{node}.pid"));
        let slurmd = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let mut pids = vec![slurmd];
        let listed = Command::new("ip").args(["netns", "pids", &format!("mfs-{node}")]).output().unwrap();
        pids.extend(String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned));
        for pid in pids {
            let pid: i32 = pid.trim().parse().unwrap();
            // SAFETY: kill(2) of processes of this test's cluster node.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.command("scontrol", &["update", &format!("nodename={node}"), "state=down", "reason=mayfly-chaos"]);
    }
}

/// Processes whose command line names `run` (a coordinator's or a worker's).
fn processes_of_run(run: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(run) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A project whose job `scan` runs one item per line of a manifest of
/// `items` lines on up to `workers` Slurm workers, each item sleeping `sleep`.
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
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
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
    let manifest: String = (0..items).map(|index| format!("{index:05}\n")).collect();
    let output = project.run_with_stdin(&["put", "scans/manifest.txt"], manifest.as_bytes());
    support::assert_success(&output, &["put"]);
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

/// Waits until the project's newest run is over; returns its record.
fn finished_run(project: &Project, timeout: Duration) -> Value {
    let runs = project.wait_for(&["runs"], timeout, |runs| {
        runs[0]["status"].as_str().is_some_and(|status| !matches!(status, "requested" | "running" | "finishing"))
    });
    runs[0].clone()
}

/// The live coordinator's resource id (`pid:<pgid>:<start>`).
fn coordinator(project: &Project) -> String {
    let live = project.json(&["ps"]);
    let found = live.as_array().unwrap().iter().find(|p| p["role"] == "coordinator");
    found.unwrap_or_else(|| panic!("no live coordinator: {live}"))["id"].as_str().unwrap().to_owned()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn jobs_run_on_slurm_nodes_across_chaos_and_orphans_are_audited_and_reaped() {
    let cluster = Cluster::with_namespaces();
    // SAFETY: no other thread runs yet; every `mayfly` this test starts inherits these.
    unsafe {
        std::env::set_var("SLURM_CONF", cluster.conf());
        // Listening on every address, the coordinator is dialled by what it
        // advertises, which its certificate must name (it is no name it
        // would put there itself): a worker's TLS check fails otherwise.
        std::env::set_var("MAYFLY_COORDINATOR_ADDRESS", "0.0.0.0");
        std::env::set_var("MAYFLY_COORDINATOR_ADVERTISE", COORDINATOR_ADDRESS);
    }

    // 1. 2,000 items on eight workers, one job array across the four nodes
    //    (two CPUs each): one result per item, no job left, the audit clean.
    const ITEMS: usize = 2_000;
    let (project, _) = slurm_project(ITEMS, 8, "0");
    let up = project.spawn_up();
    let began = Instant::now();
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let (mut arrays, mut nodes) = (BTreeSet::new(), BTreeSet::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        for job in cluster.worker_jobs() {
            arrays.insert(job.array);
            if job.state == "RUNNING" {
                nodes.insert(job.node);
            }
        }
        let runs = project.json(&["runs"]);
        if !matches!(runs[0]["status"].as_str(), Some("requested" | "running" | "finishing")) {
            break;
        }
        assert!(Instant::now() < deadline, "{ITEMS} items did not finish: {runs}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = project.json(&["run-report", &run]);
    eprintln!("slurm: {ITEMS} items on 8 Slurm workers in {:.1} s", began.elapsed().as_secs_f64());
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["items_done"], ITEMS as u64, "{report}");
    let items = result_items(&project);
    assert_eq!(items.len(), ITEMS);
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), ITEMS, "one result per item");
    assert_eq!(arrays.len(), 1, "the fleet is one sbatch --array: {arrays:?}");
    assert_eq!(nodes.len(), 4, "workers ran on all four nodes: {nodes:?}");
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 8, "{report}");
    for worker in workers {
        assert_eq!(worker["end"], "stopped", "{worker}");
    }
    assert!(cluster.jobs(None).is_empty(), "no Slurm job remains: {:?}", cluster.jobs(None));
    let audit = json_exiting(&project, &["audit"], 0);
    assert!(audit["findings"].as_array().is_none_or(Vec::is_empty), "the audit is clean: {audit}");
    up.stop();

    // 2. Chaos in one run of six workers (room for replacements on three nodes):
    //    a node lost, a task cancelled, the coordinator SIGKILLed and resumed.
    const CHAOS_ITEMS: usize = 1_500;
    let (project, name) = slurm_project(CHAOS_ITEMS, 6, "0.2");
    let up = project.spawn_up();
    let started = project.json(&["run", "scan", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let done = |project: &Project| project.json(&["runs"])[0]["done"].as_u64().unwrap_or(0);
    wait_until("six workers running and 60 items done", Duration::from_secs(180), || {
        cluster.running_workers().len() == 6 && done(&project) >= 60
    });
    // a. A node lost: its workers' items go back, replacements run elsewhere.
    let before = cluster.running_workers();
    let lost_node = before[0].node.clone();
    let on_lost: Vec<String> = before.iter().filter(|job| job.node == lost_node).map(|job| job.id.clone()).collect();
    let lost_at = Instant::now();
    cluster.lose_node(&lost_node);
    wait_until("replacements for the lost node running", Duration::from_secs(120), || {
        let running = cluster.running_workers();
        running.len() == 6 && running.iter().all(|job| job.node != lost_node && !on_lost.contains(&job.id))
    });
    eprintln!(
        "slurm chaos: node {lost_node} lost with {} worker(s); replacements running after {:.1} s",
        on_lost.len(),
        lost_at.elapsed().as_secs_f64()
    );
    // b. A task cancelled behind Mayfly's back.
    let done_before = done(&project);
    let victim = cluster.running_workers()[0].id.clone();
    cluster.command("scancel", &[&victim]);
    wait_until("a replacement for the cancelled task", Duration::from_secs(120), || {
        let running = cluster.running_workers();
        running.len() == 6 && running.iter().all(|job| job.id != victim) && done(&project) > done_before + 30
    });
    // c. The coordinator SIGKILLed: `mayfly up` tears its fleet down and resumes the run.
    let victim_coordinator = coordinator(&project);
    let pgid: i32 = victim_coordinator.split(':').nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a negative pid signals the coordinator's own process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let finished = finished_run(&project, Duration::from_secs(600));
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let items = result_items(&project);
    assert_eq!(items.len(), CHAOS_ITEMS, "exactly one result per item");
    assert_eq!(items.iter().collect::<BTreeSet<_>>().len(), CHAOS_ITEMS);
    let report = project.json(&["run-report", &run]);
    assert_eq!(report["items_done"], CHAOS_ITEMS as u64, "{report}");
    let workers = report["workers"].as_array().unwrap();
    let lost = workers.iter().filter(|worker| worker["end"] == "lost").count();
    assert!(lost > on_lost.len(), "the node's workers and the cancelled one are lost: {report}");
    assert!(workers.iter().any(|w| w["worker"].as_str().unwrap().starts_with("w2-")), "a second fleet: {report}");
    let retries = report["retries"].as_u64().unwrap();
    assert!(retries > 0, "items held by lost workers ran again and are counted: {report}");
    eprintln!("slurm chaos: {retries} re-executions, {} workers ({lost} lost) in the report", workers.len());
    assert!(cluster.jobs(None).is_empty(), "no Slurm job remains: {:?}", cluster.jobs(None));
    // The resumed coordinator audits the project as its last act after the
    // run is recorded as over, then exits.
    wait_until("no process of the run remains", Duration::from_secs(30), || processes_of_run(&run).is_empty());

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
