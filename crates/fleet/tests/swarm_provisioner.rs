//! The swarm provisioner against a real two-node Docker Swarm (the system
//! engine as manager, a second dockerd in a network namespace of its own as
//! worker, formed by `scripts/swarm.sh` and left when the test ends): services
//! start with their own arguments, environment, output, limits and tags, land
//! on the node their constraint names, are followed to their exit, found again
//! by their tags from a fresh provisioner (and never by the Docker
//! provisioner of the same engine), and stopped.
//!
//! One test function: the system engine can be in one swarm at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mayfly_fleet::{
    DockerProvisioner, FleetError, ProcessSpec, Provisioner, ResourceState, SwarmPlacement, SwarmProvisioner, TAG_ROLE,
    TAG_RUN, TAG_WORKER, TagFilter, Tags,
};

const IMAGE: &str = "mayfly-fleet-swarm-test:1";
const WAIT: Duration = Duration::from_secs(90);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm.sh")
}

/// A two-node swarm of its own, left (both engines) when dropped.
struct Swarm {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Swarm {
    fn start() -> Swarm {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("swarm");
        let swarm = Swarm { dir, _parent: parent };
        let output = Command::new("bash")
            .arg(script())
            .args(["start".as_ref(), swarm.dir.as_os_str(), IMAGE.as_ref()])
            .output()
            .expect("run scripts/swarm.sh");
        assert!(output.status.success(), "scripts/swarm.sh start failed: {}", String::from_utf8_lossy(&output.stderr));
        swarm
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).args(["stop".as_ref(), self.dir.as_os_str()]).status();
    }
}

/// An image of busybox alone (static, from Debian's busybox-static), imported into the system engine.
fn build_image() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "the swarm test needs /bin/busybox: apt-get install busybox-static (scripts/test.sh does)"
    );
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("tar -C '{}' -cf - . | docker import - {IMAGE} >/dev/null", root.path().display()))
        .status()
        .unwrap();
    assert!(status.success(), "docker import of the test image failed");
}

fn tags(run: &str, worker: &str) -> Tags {
    Tags::new().with(TAG_RUN, run).with(TAG_ROLE, "worker").with(TAG_WORKER, worker).with("owner", "fleet-tests")
}

fn shell(script: &str, run: &str, worker: &str, out: &Path) -> ProcessSpec {
    let mut spec = ProcessSpec::new("/bin/sh", ["-c", script]);
    spec.tags = tags(run, worker);
    spec.env.insert("GREETING".into(), "hello from the swarm".into());
    spec.stdout = Some(out.join(format!("{worker}.out")));
    spec.stderr = Some(out.join(format!("{worker}.err")));
    spec.memory = Some(mayfly_core::ByteSize(64 * 1024 * 1024));
    spec.cpus = Some(0.5);
    spec
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn services_run_on_the_swarms_nodes_with_their_tags_and_are_found_and_stopped() {
    build_image();
    let swarm = Swarm::start();
    let out = tempfile::tempdir().unwrap();
    let placement = SwarmPlacement {
        image: IMAGE.to_owned(),
        network: "mayfly-fleet-swarm-test".to_owned(),
        subnet: Some("10.231.7.0/24".to_owned()),
        network_tags: Tags::new().with("owner", "fleet-tests"),
        constraints: Vec::new(),
    };
    let provisioner =
        SwarmProvisioner::connect().await.expect("the system engine is the manager").with_placement(placement.clone());
    let run = "r-swarm";

    // A task that checks its environment (exit 4 without it), writes to both streams and exits 3.
    let script = "[ \"$GREETING\" = 'hello from the swarm' ] || exit 4; echo out-PHI; echo err-PHI >&2; exit 3";
    let id = provisioner.start(shell(script, run, "w-001", out.path())).await.unwrap();
    assert!(id.0.starts_with("service:"), "{id}");
    let ended = provisioner.wait(&id, WAIT).await.unwrap();
    assert_eq!(ended, ResourceState::Exited { code: Some(3), signal: None });
    // What a task writes may be health data: no engine keeps it (the `none`
    // log driver), so there is nothing to read back, here or on any node.
    let service = id.0.strip_prefix("service:").unwrap();
    let driver = docker(&["service", "inspect", service, "--format", "{{.Spec.TaskTemplate.LogDriver.Name}}"]);
    assert_eq!(driver, "none");
    let logs = Command::new("docker").args(["service", "logs", "--raw", service]).output().unwrap();
    let logged = format!("{}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr));
    assert!(!logged.contains("-PHI"), "the engine kept the task's output: {logged}");
    for file in ["w-001.out", "w-001.err"] {
        let kept = std::fs::read_to_string(out.path().join(file)).unwrap_or_default();
        assert!(kept.is_empty(), "{file}: {kept}");
    }

    // Limits and hardening as the engine holds them.
    let inspected = docker(&[
        "service",
        "inspect",
        service,
        "--format",
        "{{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} \
         {{.Spec.TaskTemplate.ContainerSpec.ReadOnly}} {{.Spec.TaskTemplate.ContainerSpec.Init}} \
         {{.Spec.TaskTemplate.ContainerSpec.CapabilityDrop}} {{.Spec.TaskTemplate.RestartPolicy.Condition}}",
    ]);
    assert_eq!(inspected, "67108864 500000000 true true [ALL] none");

    // Long-running workers, placed on the worker node by a constraint.
    let constrained = SwarmProvisioner::connect()
        .await
        .unwrap()
        .with_placement(SwarmPlacement { constraints: vec!["node.role==worker".to_owned()], ..placement.clone() });
    let mut sleepers = Vec::new();
    for worker in ["w-002", "w-003"] {
        sleepers.push(constrained.start(shell("exec sleep 600", run, worker, out.path())).await.unwrap());
    }
    for sleeper in &sleepers {
        eventually("the sleeper running", || async { constrained.state(sleeper).await.unwrap().is_running() }).await;
        let service = sleeper.0.strip_prefix("service:").unwrap();
        eventually("the task running on the worker node", || async {
            docker(&["service", "ps", service, "--format", "{{.CurrentState}}"]).starts_with("Running")
        })
        .await;
        let node = docker(&["service", "ps", service, "--format", "{{.Node}}/{{.ID}}"]);
        let task = node.rsplit('/').next().unwrap();
        let node_id = docker(&["inspect", task, "--format", "{{.NodeID}}"]);
        assert_eq!(docker(&["node", "inspect", &node_id, "--format", "{{.Spec.Role}}"]), "worker");
    }

    // A fresh provisioner finds all three by their tags; the Docker
    // provisioner of the same engine finds none of their task containers.
    let fresh = SwarmProvisioner::connect().await.unwrap();
    let filter = TagFilter::new().with(TAG_RUN, run);
    let mut found: Vec<String> = fresh.inventory(&filter).await.unwrap().into_iter().map(|live| live.id.0).collect();
    found.sort();
    let mut expected: Vec<String> = sleepers.iter().chain([&id]).map(|id| id.0.clone()).collect();
    expected.sort();
    assert_eq!(found, expected);
    let live = fresh.inventory(&TagFilter::new().with(TAG_WORKER, "w-002")).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].tags, tags(run, "w-002"));
    assert_eq!(live[0].kind, "service");
    assert!(live[0].started_at.is_some());
    let docker_provisioner = DockerProvisioner::connect().await.unwrap();
    assert_eq!(docker_provisioner.inventory(&filter).await.unwrap(), Vec::new());

    // Stopping removes each service; stopping again is fine.
    for resource in sleepers.iter().chain([&id]) {
        fresh.stop(resource, Duration::from_secs(1)).await.unwrap();
        assert_eq!(fresh.state(resource).await.unwrap(), ResourceState::Gone);
        fresh.stop(resource, Duration::from_secs(1)).await.unwrap();
    }
    assert_eq!(fresh.inventory(&filter).await.unwrap(), Vec::new());

    // Host paths are refused, and nothing is started.
    let mut mounting = shell("true", run, "w-004", out.path());
    mounting.read_only_mounts.push(PathBuf::from("/etc"));
    let refused = provisioner.start(mounting).await.unwrap_err();
    assert!(matches!(refused, FleetError::InvalidSpec { .. }) && refused.to_string().contains("/etc"), "{refused}");
    assert_eq!(fresh.inventory(&filter).await.unwrap(), Vec::new());

    drop(swarm);
    // Out of the swarm, the engine is no manager, and connecting says so.
    let error = SwarmProvisioner::connect().await.unwrap_err();
    assert!(error.to_string().contains("not a swarm manager"), "{error}");
}
