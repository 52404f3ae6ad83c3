//! The Slurm provisioner against a real Slurm 22.05 cluster (four node
//! names, started by `scripts/slurm.sh` and stopped when the test ends):
//! jobs and job arrays start with their own arguments, environment, output
//! and tags, are followed to their exit, found again by their tags from a
//! fresh provisioner, stopped, and reaped once their run is over; a task's
//! environment stays out of the script Slurm keeps (in a file beside its
//! output, or in the spool) and a task run again starts nothing; a failing
//! command's error names the command and carries its standard error.
//!
//! One test function: every cluster needs its own ports, and one cluster is
//! enough for all the checks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mayfly_fleet::{
    FleetError, ProcessSpec, Provisioner, ResourceState, SlurmProvisioner, SlurmSettings, TAG_ROLE, TAG_RUN,
    TAG_WORKER, TagFilter, Tags, reap_orphans,
};

const WAIT: Duration = Duration::from_secs(120);

/// A Slurm cluster of its own, stopped (every daemon, every job) when dropped.
struct Cluster {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm.sh")
}

impl Cluster {
    fn start(port_base: u16) -> Cluster {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("slurm");
        let status = Command::new("bash")
            .arg(script())
            .args(["start".as_ref(), dir.as_os_str()])
            .env("MAYFLY_SLURM_PORT_BASE", port_base.to_string())
            .status()
            .expect("bash runs scripts/slurm.sh");
        assert!(status.success(), "scripts/slurm.sh start failed (needs root and slurm-wlm; see scripts/test.sh)");
        Cluster { dir, _parent: parent }
    }

    fn settings(&self) -> SlurmSettings {
        SlurmSettings { slurm_conf: Some(self.dir.join("slurm.conf")), ..SlurmSettings::default() }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop".as_ref(), self.dir.as_os_str()]).status();
    }
}

fn shell(dir: &Path, script: &str, tags: Tags) -> ProcessSpec {
    let mut spec = ProcessSpec::new("/bin/sh", ["-c", script]);
    spec.working_dir = dir.to_owned();
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    spec.tags = tags;
    spec
}

async fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(start.elapsed() < WAIT, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_jobs_start_are_followed_found_by_tags_stopped_and_reaped() {
    let cluster = Cluster::start(15800);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let provisioner = SlurmProvisioner::new(cluster.settings());
    let run_tags = |run: &str, worker: &str| {
        Tags::new()
            .with("mayfly.project", "slurm-test")
            .with(TAG_RUN, run)
            .with(TAG_ROLE, "worker")
            .with(TAG_WORKER, worker)
    };

    // A single job: its own environment only, its output where the spec says, its exit code.
    let mut spec = shell(dir, "echo \"$GREETING from $(pwd)\"; test -z \"$HOME\" && exit 7", run_tags("r-one", "w1"));
    spec.env.insert("GREETING".into(), "it's me".into());
    spec.stdout = Some(dir.join("one.out"));
    let one = provisioner.start(spec).await.expect("sbatch submits");
    assert!(one.0.starts_with("slurm:"), "{one}");
    assert_eq!(provisioner.wait(&one, WAIT).await.unwrap(), ResourceState::Exited { code: Some(7), signal: None });
    assert_eq!(std::fs::read_to_string(dir.join("one.out")).unwrap(), format!("it's me from {}\n", dir.display()));

    // A task's environment (a worker's one-time token) is not in the batch
    // script slurmctld keeps: it is in a file of the task's own, mode 0600,
    // gone once the task started; the same task run again starts nothing.
    let secret_specs: Vec<ProcessSpec> = (0..2)
        .map(|index| {
            let mut spec =
                shell(dir, "echo \"token=$TOKEN\"; exec sleep 600", run_tags("r-secret", &format!("s{index}")));
            spec.env.insert("TOKEN".into(), format!("secret-{index}-5f1d"));
            spec.stdout = Some(dir.join(format!("s{index}.out")));
            spec
        })
        .collect();
    let secret = provisioner.start_array(secret_specs).await.expect("sbatch --array submits");
    for index in 0..2 {
        assert_eq!(wait_for_file(&dir.join(format!("s{index}.out"))).await, format!("token=secret-{index}-5f1d\n"));
    }
    let leftover: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".env"))
        .map(|entry| entry.file_name())
        .collect();
    assert!(leftover.is_empty(), "each task removed its environment file: {leftover:?}");
    let task_id = secret[0].0.strip_prefix("slurm:").unwrap();
    let kept = Command::new("scontrol")
        .args(["write", "batch_script", task_id, "-"])
        .env("SLURM_CONF", cluster.dir.join("slurm.conf"))
        .output()
        .unwrap();
    assert!(kept.status.success(), "{}", String::from_utf8_lossy(&kept.stderr));
    let kept = String::from_utf8(kept.stdout).unwrap();
    assert!(kept.contains(".env") && kept.contains("SLURM_ARRAY_TASK_ID"), "{kept}");
    assert!(!kept.contains("secret-"), "no token in the script Slurm keeps: {kept}");
    let again = Command::new("sh").args(["-c", &kept]).env("SLURM_ARRAY_TASK_ID", "0").status().unwrap();
    assert_eq!(again.code(), Some(3), "a task run again stops before starting anything");
    assert_eq!(std::fs::read_to_string(dir.join("s0.out")).unwrap(), "token=secret-0-5f1d\n");
    for task in &secret {
        provisioner.kill(task).await.expect("scancel");
    }

    // With a spool, the environment files go there (a directory of mode
    // 0700 the nodes see), whatever the output: here none, which the script
    // sends to /dev/null on the node, naming no file of the submitting host.
    let spool = dir.join("spool");
    let spooled = SlurmProvisioner::new(SlurmSettings { spool: Some(spool.clone()), ..cluster.settings() });
    let spooled_specs: Vec<ProcessSpec> = (0..2)
        .map(|index| {
            let script = format!("echo \"token=$TOKEN\" >{}/p{index}.out; echo lost", dir.display());
            let mut spec = shell(dir, &script, run_tags("r-spool", &format!("p{index}")));
            spec.env.insert("TOKEN".into(), format!("spooled-{index}-9a2e"));
            spec
        })
        .collect();
    let spooled_tasks = spooled.start_array(spooled_specs).await.expect("sbatch --array submits");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777, 0o700);
    for (index, task) in spooled_tasks.iter().enumerate() {
        assert_eq!(wait_for_file(&dir.join(format!("p{index}.out"))).await, format!("token=spooled-{index}-9a2e\n"));
        assert_eq!(spooled.wait(task, WAIT).await.unwrap(), ResourceState::Exited { code: Some(0), signal: None });
    }
    let left_in_spool: Vec<_> =
        std::fs::read_dir(&spool).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert!(left_in_spool.is_empty(), "each task removed its environment file: {left_in_spool:?}");
    let spooled_id = spooled_tasks[0].0.strip_prefix("slurm:").unwrap();
    let kept = Command::new("scontrol")
        .args(["write", "batch_script", spooled_id, "-"])
        .env("SLURM_CONF", cluster.dir.join("slurm.conf"))
        .output()
        .unwrap();
    let kept = String::from_utf8(kept.stdout).unwrap();
    assert!(kept.contains(&format!("{}/p0.", spool.display())), "the environment file is in the spool: {kept}");
    assert!(!kept.contains("spooled-"), "no token in the script Slurm keeps: {kept}");
    assert!(kept.contains(">>'/dev/null' 2>>'/dev/null'"), "no output file: {kept}");

    // An array: each task runs its own spec and carries its own worker tag.
    let specs: Vec<ProcessSpec> = (0..3)
        .map(|index| {
            let mut spec =
                shell(dir, &format!("echo task {index}; exec sleep 600"), run_tags("r-array", &format!("a{index}")));
            spec.stdout = Some(dir.join(format!("a{index}.out")));
            spec
        })
        .collect();
    let tasks = provisioner.start_array(specs).await.expect("sbatch --array submits");
    assert_eq!(tasks.len(), 3);
    for (index, task) in tasks.iter().enumerate() {
        assert_eq!(wait_for_file(&dir.join(format!("a{index}.out"))).await, format!("task {index}\n"));
        assert_eq!(provisioner.state(task).await.unwrap(), ResourceState::Running, "{task}");
    }

    // A provisioner that started nothing (a coordinator after a restart) finds them by tags.
    let fresh = SlurmProvisioner::new(cluster.settings());
    let found = fresh.inventory(&TagFilter::new().with(TAG_RUN, "r-array")).await.unwrap();
    let found_workers: BTreeSet<(String, String)> = found
        .iter()
        .map(|resource| (resource.id.0.clone(), resource.tags.get(TAG_WORKER).unwrap_or_default().to_owned()))
        .collect();
    let expected: BTreeSet<(String, String)> =
        tasks.iter().enumerate().map(|(index, task)| (task.0.clone(), format!("a{index}"))).collect();
    assert_eq!(found_workers, expected);
    assert!(found.iter().all(|resource| resource.kind == "slurm-job" && resource.address.is_some()));
    assert_eq!(found[0].tags.get("mayfly.project"), Some("slurm-test"));
    assert!(fresh.inventory(&TagFilter::new().with(TAG_RUN, "r-one")).await.unwrap().is_empty(), "r-one ended");

    // One task stopped behind the others' backs: the others keep running.
    fresh.stop(&tasks[1], Duration::from_secs(5)).await.expect("scancel stops a task");
    assert!(!provisioner.wait(&tasks[1], WAIT).await.unwrap().is_running());
    assert_eq!(provisioner.state(&tasks[0]).await.unwrap(), ResourceState::Running);
    // Stopping it again is fine.
    fresh.stop(&tasks[1], Duration::from_secs(5)).await.expect("stopping a stopped job is Ok");

    // A pending array (more tasks than the cluster has CPUs for is not needed:
    // a held job stays pending) is found and reaped like a running one.
    let mut held = shell(dir, "exec sleep 600", run_tags("r-held", "h0"));
    held.stdout = Some(dir.join("held.out"));
    let settings = SlurmSettings { extra_args: vec!["--hold".into()], ..cluster.settings() };
    let held_provisioner = SlurmProvisioner::new(settings);
    let held_ids = held_provisioner.start_array(vec![held.clone(), held]).await.unwrap();
    assert_eq!(
        held_provisioner.state(&held_ids[1]).await.unwrap(),
        ResourceState::Running,
        "pending counts as running"
    );

    // The reaper stops what belongs to runs that are over and leaves live runs alone.
    let live_runs = BTreeSet::from(["r-array".to_owned()]);
    let reaped = reap_orphans(
        &fresh,
        &TagFilter::new().with("mayfly.project", "slurm-test"),
        &live_runs,
        Duration::from_secs(2),
    )
    .await
    .expect("reaps");
    let reaped: BTreeSet<String> = reaped.into_iter().map(|resource| resource.id.0).collect();
    assert_eq!(reaped, held_ids.iter().map(|id| id.0.clone()).collect());
    assert_eq!(fresh.inventory(&TagFilter::new().with(TAG_RUN, "r-array")).await.unwrap().len(), 2);

    // Killing the rest leaves no job of the test.
    for task in [&tasks[0], &tasks[2]] {
        fresh.kill(task).await.expect("scancel --signal=KILL");
    }
    assert!(fresh.inventory(&TagFilter::new().with("mayfly.project", "slurm-test")).await.unwrap().is_empty());

    // A command that fails names itself and what Slurm said.
    let settings = SlurmSettings { partition: Some("no-such-partition".into()), ..cluster.settings() };
    let error = SlurmProvisioner::new(settings)
        .start(shell(dir, "true", run_tags("r-bad", "b0")))
        .await
        .expect_err("an unknown partition is refused");
    let FleetError::CannotStart { program, reason } = &error else { panic!("unexpected error: {error}") };
    assert!(program.to_string_lossy().starts_with("sbatch --parsable"), "{error}");
    assert!(reason.contains("invalid partition"), "{error}");
    // An id of another provisioner is refused.
    assert!(matches!(
        provisioner.state(&mayfly_fleet::ResourceId("pid:1:1".into())).await,
        Err(FleetError::InvalidResourceId { .. })
    ));
}
