//! Worker output on Slurm nodes that do not share the coordinator's run
//! directory, as on a real multi-host cluster: each node of the test cluster
//! (`scripts/slurm.sh` with `MAYFLY_SLURM_HIDE`) runs its jobs in a mount
//! namespace where an empty tmpfs covers the project's `.mayfly/runs`, so a
//! FIFO or an environment file there never reaches a worker (before workers
//! sent their own output, every worker failed to start here). The job names
//! a `spool` the nodes do see. The test checks that:
//!
//! 1. the batch script Slurm keeps names no FIFO and no path of the run
//!    directory, and the task's environment file is in the spool;
//! 2. what is written to the worker's own stderr (here by its function,
//!    through `/proc/PPID/fd/2`) reaches `mayfly logs RUN --process W` while
//!    the run goes; the worker's own lines and the function's stderr are in
//!    `mayfly logs RUN --worker W` once it has ended; no file of the project,
//!    the spool or the cluster holds the marker in plaintext;
//! 3. a worker that cannot run its function says why through the same
//!    channel, and the failed run's error quotes it.
//!
//! Its own cluster without network namespaces (other ports than `slurm.rs`),
//! so it runs beside the other Slurm tests.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;
use support::slurm::Cluster;

/// Reads the item, writes one line to its stderr (its item's log) and one to
/// the worker's own stderr (as a library or a helper process inheriting it
/// would), then answers; the item starting with `last` waits for `release`.
const FUNCTION: &str = r#"import json, os, sys, time
event = json.load(sys.stdin)
item = event["item"]
print("stderr of " + item.upper(), file=sys.stderr)
print("run directory visible: " + str(os.path.exists(".mayfly/runs/" + event["run"])), file=sys.stderr)
with open("/proc/%d/fd/2" % os.getppid(), "w") as worker_stderr:
    worker_stderr.write("worker stderr: " + item.upper() + "\n")
if item.startswith("last"):
    while not os.path.exists("release"):
        time.sleep(0.1)
print(json.dumps({"done": True}))
"#;

/// The items are lower case; only the function's output holds this.
const MARKER: &str = "PHI-MARKER-4D2C-JANEDOE";

impl Cluster {
    /// A cluster whose nodes do not see `hidden`.
    fn hiding(hidden: &Path) -> Cluster {
        Cluster::start(&[("MAYFLY_SLURM_PORT_BASE", "16200".as_ref()), ("MAYFLY_SLURM_HIDE", hidden.as_os_str())])
    }

    /// Ids of the running worker jobs.
    fn running_workers(&self) -> Vec<String> {
        self.command("squeue", &["-h", "-t", "R", "-n", "mayfly-worker", "-o", "%i"])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn spec(name: &str, spool: &Path) -> String {
    format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["python3", "functions/work.py"]
[functions.broken]
command = ["no-such-program-7d1f"]
[jobs.scan]
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = 1 }}
logs = "logs"
provisioner = {{ kind = "slurm", partition = "batch", cpus = 1, spool = "{spool}" }}
[jobs.broken]
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
function = "broken"
workers = {{ max = 1 }}
provisioner = {{ kind = "slurm", partition = "batch", cpus = 1, spool = "{spool}" }}
"#,
        spool = spool.display()
    )
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the project's newest run is over; returns its record.
fn finished_run(project: &Project, timeout: Duration) -> Value {
    let runs = project.wait_for(&["runs"], timeout, |runs| {
        runs[0]["status"].as_str().is_some_and(|status| !matches!(status, "requested" | "running" | "finishing"))
    });
    runs[0].clone()
}

#[test]
fn slurm_workers_on_nodes_that_do_not_share_the_run_directory_send_their_output_to_the_coordinator() {
    let project = Project::with_spec("");
    let spool = project.path("spool");
    std::fs::write(project.path("mayfly.toml"), spec(&support::unique_name("slurmout"), &spool)).unwrap();
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/work.py"), FUNCTION).unwrap();
    project.ok(&["deploy"]);
    let manifest = "phi-marker-4d2c-janedoe-1\nphi-marker-4d2c-janedoe-2\nlast-phi-marker-4d2c-janedoe\n";
    support::assert_success(&project.run_with_stdin(&["put", "scans/manifest.txt"], manifest.as_bytes()), &["put"]);
    let runs_dir = project.path(".mayfly/runs");
    std::fs::create_dir_all(&runs_dir).unwrap();
    let cluster = Cluster::hiding(&runs_dir);
    // SAFETY: no other thread runs yet; every `mayfly` this test starts inherits these.
    unsafe {
        std::env::set_var("SLURM_CONF", cluster.dir.join("slurm.conf"));
        std::env::set_var("MAYFLY_COORDINATOR_ADDRESS", "127.0.0.1");
    }
    let up = project.spawn_up();

    // 1. The worker runs (held on its last item); its script names no FIFO
    //    and nothing of the run directory, its environment file was in the spool.
    let run = project.json(&["run", "scan", "--detach"])["run"].as_str().unwrap().to_owned();
    wait_until("the worker's job running", Duration::from_secs(120), || !cluster.running_workers().is_empty());
    let job = cluster.running_workers()[0].clone();
    let kept = cluster.command("scontrol", &["write", "batch_script", &job, "-"]);
    let run_dir = runs_dir.join(&run);
    assert!(!kept.contains(".pipe") && !kept.contains(&run_dir.display().to_string()), "{kept}");
    assert!(!kept.contains(".mayfly/runs"), "nothing of the run directory: {kept}");
    assert!(kept.contains(&format!("{}/w1-001.", spool.display())), "the environment file is in the spool: {kept}");
    assert!(kept.contains(">>'/dev/null' 2>>'/dev/null'"), "output to /dev/null on the node: {kept}");

    // 2. What reaches the worker's own stderr is in its output while the run goes…
    let forwarded = format!("worker stderr: LAST-{MARKER}");
    wait_until("the worker's forwarded output", Duration::from_secs(60), || {
        project.ok(&["logs", &run, "--process", "w1-001"]).contains(&forwarded)
    });
    std::fs::write(project.path("release"), "").unwrap();
    let finished = finished_run(&project, Duration::from_secs(120));
    assert_eq!(finished["status"], "succeeded", "{finished}");
    // …and its own lines and the function's stderr are in its sealed log.
    let logs = project.ok(&["logs", &run, "--worker", "w1-001"]);
    assert!(logs.contains(&format!("worker w1-001 of run {run} started")), "{logs}");
    assert!(logs.contains("worker w1-001 stopping after 3 item(s)"), "{logs}");
    assert!(logs.contains(&format!("stderr of {MARKER}-2")), "{logs}");
    assert!(logs.contains("run directory visible: False"), "the node does not see the run directory: {logs}");
    assert!(!logs.contains("run directory visible: True"), "{logs}");
    // Nothing in plaintext: the project (state, buckets, spool) and the cluster (its saved scripts, logs).
    for folder in [&project.root, &cluster.dir] {
        let (found, looked_at) = support::files_holding(folder, MARKER.as_bytes());
        assert!(looked_at > 3, "{} holds files to look at", folder.display());
        assert_eq!(found, Vec::<String>::new(), "the marker is in plaintext in these files");
    }
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the task removed its environment file: {left:?}");

    // 3. A worker that cannot run its function says why, over the same channel.
    project.ok(&["run", "broken", "--detach"]);
    let failed = finished_run(&project, Duration::from_secs(180));
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("`no-such-program-7d1f` does not exist"), "the worker's own error is quoted: {failed}");
    up.stop();
}
