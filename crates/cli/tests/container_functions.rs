//! Functions with `isolation = "container"`, end to end: the real `mayfly`
//! binary, a real Docker engine, and an image `mayfly image build` made from
//! this machine's files (Debian's Python interpreter and standard library,
//! and a copy of the `awslambdaric` client the lambda tests use). Each
//! invocation runs in a container of its own; the tests check what the
//! function sees from inside (its result, its logs, no network, a read-only
//! working directory), that the limits hold (timeout, memory), that a
//! missing image or engine is a clear error, and that no container is left
//! afterwards — also when the invoking Mayfly was killed (the reaper).
//!
//! Like `docker.rs`, these tests need a running Docker engine this user may use.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Project;

/// The image of the tests' functions: Python, its standard library, `awslambdaric`.
const IMAGE: &str = "mayfly-test-function:latest";

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker command runs (install docker.io)")
}

/// The containers (running or not) carrying `label`.
fn containers_labelled(label: &str) -> Vec<String> {
    let output = docker(&["ps", "-a", "-q", "--filter", &format!("label={label}")]);
    assert!(output.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).split_whitespace().map(str::to_owned).collect()
}

/// What Python the image carries: Debian's interpreter and standard library
/// (small, unlike a pyenv tree), and a folder with `awslambdaric` and its
/// dependencies copied from the Python that has it (the lambda tests' one).
struct ImagePython {
    interpreter: String,
    standard_library: String,
    packages: PathBuf,
}

fn image_python() -> ImagePython {
    let system = std::fs::canonicalize("/usr/bin/python3").expect("Debian's python3 (apt-get install python3)");
    let ask = |python: &str, code: &str| -> String {
        let output = Command::new(python).args(["-c", code]).output().expect("python runs");
        assert!(output.status.success(), "{python} -c {code}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let interpreter = system.display().to_string();
    let standard_library = ask(&interpreter, "import sysconfig; print(sysconfig.get_paths()['stdlib'])");
    support::ensure_awslambdaric();
    let site =
        ask("python3", "import awslambdaric, os; print(os.path.dirname(os.path.dirname(awslambdaric.__file__)))");
    let versions = [&interpreter, "python3"].map(|python| ask(python, "import sys; print(sys.version_info[:2])"));
    assert_eq!(versions[0], versions[1], "awslambdaric's compiled part must match Debian's Python version");
    let packages = support::image_files_directory().join("container-python");
    if !packages.join("awslambdaric").exists() {
        std::fs::create_dir_all(&packages).unwrap();
        let mut copy = Command::new("cp");
        copy.arg("-a");
        for entry in std::fs::read_dir(&site).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let wanted = ["awslambdaric", "simplejson", "snapshot_restore_py.py"].contains(&name.as_str())
                || name.starts_with("runtime_client");
            if wanted {
                copy.arg(&path);
            }
        }
        let status = copy.arg(&packages).status().expect("cp runs");
        assert!(status.success(), "cannot copy awslambdaric from {site}");
    }
    ImagePython { interpreter, standard_library, packages }
}

/// Builds the test image unless it is up to date (one test process at a time).
fn ensure_image(project: &Project) -> ImagePython {
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "the container tests need a running Docker engine that this user may use: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let lock_path = support::handler_directory().join("mayfly-test-function-image.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the image lock file");
    // SAFETY: flock(2) on a file descriptor this function owns; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    let python = image_python();
    let packages = python.packages.display().to_string();
    project.ok(&[
        "image",
        "build",
        "--tag",
        IMAGE,
        "--include",
        &python.interpreter,
        "--include",
        &python.standard_library,
        "--include",
        &packages,
    ]);
    drop(lock);
    python
}

/// A process-runtime probe: reads its event, logs, tries the network and the
/// working directory, sleeps or allocates when asked, and returns what it saw.
const PROBE: &str = r#"import json, os, socket, sys, time
event = json.load(sys.stdin)
print("probing in", os.getcwd(), file=sys.stderr, flush=True)
if event.get("sleep"):
    time.sleep(event["sleep"])
if event.get("allocate_mb"):
    hoard = b"x" * (event["allocate_mb"] * 1024 * 1024)
seen = {"uid": os.getuid(), "cwd": os.getcwd()}
try:
    with open("written-by-the-function.txt", "w") as file:
        file.write("x")
    seen["wrote_working_dir"] = True
except OSError as error:
    seen["wrote_working_dir"] = False
    seen["write_error"] = str(error)
try:
    with open("/tmp/scratch", "w") as file:
        file.write("x")
    seen["wrote_tmp"] = True
except OSError:
    seen["wrote_tmp"] = False
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    seen["network"] = True
except OSError as error:
    seen["network"] = False
    seen["network_error"] = str(error)
json.dump(seen, sys.stdout)
"#;

const HANDLER: &str = r#"import os, socket, time

def handler(event, context):
    print('coding chart', event.get('chart'))
    if event.get('sleep'):
        time.sleep(event['sleep'])
    if event.get('fail'):
        raise ValueError('chart is empty')
    try:
        socket.create_connection(('1.1.1.1', 53), timeout=2).close()
        network = True
    except OSError:
        network = False
    return {'chart': event.get('chart'), 'request': context.aws_request_id, 'uid': os.getuid(), 'network': network}
"#;

/// A deployed project with container functions `probe` (process runtime)
/// and `py` (lambda runtime, `awslambdaric`), both with `extra` appended to
/// their tables; `image` is their image.
fn container_project(case: &str, image: Option<&str>, extra: &str) -> (Project, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("iso-{case}-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let placeholder = Project::with_spec("version = 1\nname = \"placeholder\"\n");
    let python = ensure_image(&placeholder);
    let image = image.unwrap_or(IMAGE);
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[functions.probe]
runtime = "process"
command = ["{interpreter}", "probe.py"]
isolation = "container"
image = "{image}"
timeout = "20s"
{extra}
[functions.py]
runtime = "lambda"
command = ["{interpreter}", "-m", "awslambdaric", "handler.handler"]
handler = "handler.handler"
isolation = "container"
image = "{image}"
env = {{ PYTHONPATH = "{packages}" }}
timeout = "20s"
{extra}
"#,
        interpreter = python.interpreter,
        packages = python.packages.display(),
    );
    let project = Project::with_spec(&spec);
    std::fs::write(project.path("probe.py"), PROBE).unwrap();
    std::fs::write(project.path("handler.py"), HANDLER).unwrap();
    project.ok(&["deploy"]);
    (project, name)
}

/// `mayfly invoke FUNCTION --payload EVENT --json`: its report and exit code.
fn invoke(project: &Project, function: &str, event: &str) -> (Value, Option<i32>) {
    let output = project.run(&["invoke", function, "--payload", event, "--json"]);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "invoke {function}: not JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output.status.code())
}

/// The function network is removed when the invoking Mayfly ends.
fn assert_no_network_left(project_name: &str) {
    let output = docker(&["network", "ls", "-q", "--filter", &format!("label=mayfly.project={project_name}")]);
    let left = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(output.status.success() && left.is_empty(), "networks of {project_name} are left: {left}");
}

fn assert_no_container_left(project_name: &str) {
    let left = containers_labelled(&format!("mayfly.project={project_name}"));
    assert!(left.is_empty(), "containers of {project_name} are left: {left:?}");
}

#[test]
fn a_process_function_in_a_container_answers_logs_and_has_neither_network_nor_a_writable_working_directory() {
    let (project, name) = container_project("process", None, "");
    let (report, code) = invoke(&project, "probe", r#"{"chart": 1}"#);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["outcome"], "success", "{report}");
    let seen = &report["response"];
    assert_eq!(seen["cwd"], project.root.display().to_string(), "the working directory is at the same path: {seen}");
    assert_eq!(seen["uid"], 10001, "the image's unprivileged user: {seen}");
    assert_eq!(seen["wrote_working_dir"], false, "{seen}");
    assert!(seen["write_error"].as_str().unwrap().contains("Read-only file system"), "{seen}");
    assert_eq!(seen["wrote_tmp"], true, "a private /tmp is writable: {seen}");
    assert_eq!(seen["network"], false, "{seen}");
    assert!(report["logs"].as_str().unwrap().contains("probing in"), "stderr is the log: {report}");
    assert!(!project.path("written-by-the-function.txt").exists());
    assert_no_container_left(&name);

    // The ledger has it like any other invocation.
    let ledger = project.json(&["invocations", "--function", "probe"]);
    assert_eq!(ledger[0]["outcome"], "success", "{ledger}");
}

#[test]
fn a_lambda_function_in_a_container_answers_through_the_runtime_api() {
    let (project, name) = container_project("lambda", None, "");
    let (report, code) = invoke(&project, "py", r#"{"chart": 3}"#);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["outcome"], "success", "{report}");
    assert_eq!(report["response"]["chart"], 3);
    assert_eq!(report["response"]["request"], report["request_id"]);
    assert_eq!(report["response"]["uid"], 10001, "it ran in the image, as its user: {report}");
    assert_eq!(report["response"]["network"], false, "its network is internal: only the host's gateway: {report}");
    assert!(report["logs"].as_str().unwrap().contains("coding chart 3"), "{report}");
    assert_no_container_left(&name);
    assert_no_network_left(&name);

    let (failed, code) = invoke(&project, "py", r#"{"fail": true}"#);
    assert_eq!(code, Some(8), "{failed}");
    assert_eq!(failed["error_type"], "ValueError");
    assert_eq!(failed["error_message"], "chart is empty");
    assert_no_container_left(&name);
}

#[test]
fn a_container_function_past_its_timeout_is_killed_and_its_container_removed() {
    let (project, name) = container_project("timeout", None, "");
    // Give it a one-second timeout.
    let spec =
        std::fs::read_to_string(project.path("mayfly.toml")).unwrap().replace("timeout = \"20s\"", "timeout = \"1s\"");
    std::fs::write(project.path("mayfly.toml"), spec).unwrap();
    project.ok(&["deploy"]);
    let started = Instant::now();
    let (report, code) = invoke(&project, "probe", r#"{"sleep": 30}"#);
    assert_eq!(code, Some(8), "{report}");
    assert_eq!(report["outcome"], "timeout", "{report}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_no_container_left(&name);

    // A lambda instance past its timeout (in its init or its invocation) goes the same way.
    let started = Instant::now();
    let (report, code) = invoke(&project, "py", r#"{"sleep": 30}"#);
    assert_eq!(code, Some(8), "{report}");
    assert_eq!(report["outcome"], "timeout", "{report}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert_no_container_left(&name);
    assert_no_network_left(&name);
}

#[test]
fn a_container_function_over_its_memory_limit_is_killed_out_of_memory() {
    let (project, name) = container_project("memory", None, "memory = \"64MiB\"");
    let (report, code) = invoke(&project, "probe", r#"{"allocate_mb": 256}"#);
    assert_eq!(code, Some(8), "{report}");
    assert_eq!(report["outcome"], "out_of_memory", "{report}");
    assert!(report["error_message"].as_str().unwrap().contains("64"), "{report}");
    // Within the limit it runs.
    let (report, code) = invoke(&project, "probe", r#"{"allocate_mb": 8}"#);
    assert_eq!(code, Some(0), "{report}");
    assert_no_container_left(&name);
}

#[test]
fn a_missing_image_fails_the_invocation_with_a_clear_error() {
    let (project, name) = container_project("no-image", Some("mayfly-test-no-such-image:1"), "");
    let started = Instant::now();
    for function in ["probe", "py"] {
        let (report, code) = invoke(&project, function, "{}");
        assert_eq!(code, Some(8), "{report}");
        let message = report["error_message"].as_str().unwrap();
        assert!(message.contains("mayfly-test-no-such-image:1"), "{message}");
        assert!(message.contains("mayfly image build"), "{message}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "it fails fast, it does not hang");
    assert_no_container_left(&name);
}

#[test]
fn an_unreachable_docker_engine_fails_the_invocation_saying_so() {
    let (project, _name) = container_project("no-engine", None, "");
    let output = project
        .command(&["invoke", "probe", "--payload", "{}", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(8));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = report["error_message"].as_str().unwrap();
    assert!(message.contains("cannot reach the Docker engine"), "{message}");
    assert!(message.contains("isolation = \"container\""), "{message}");
}

#[test]
fn the_container_of_a_killed_mayfly_is_reaped() {
    let (project, name) = container_project("killed", None, "");
    let mut invoking = project
        .command(&["invoke", "probe", "--payload", r#"{"sleep": 60}"#])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let label = format!("mayfly.project={name}");
    let started = Instant::now();
    while containers_labelled(&label).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "no container started");
        std::thread::sleep(Duration::from_millis(100));
    }
    invoking.kill().unwrap();
    invoking.wait().unwrap();
    let orphans = containers_labelled(&label);
    assert_eq!(orphans.len(), 1, "the container outlives the Mayfly that was killed");

    // It is hardened like a worker container.
    let format = "{{json .HostConfig.NetworkMode}} {{json .HostConfig.Privileged}} {{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}} {{json .HostConfig.ReadonlyRootfs}} {{json .HostConfig.Binds}} {{json .HostConfig.Memory}} {{json .HostConfig.LogConfig.Type}}";
    let inspected = docker(&["inspect", "--format", format, &orphans[0]]);
    let inspected = String::from_utf8_lossy(&inspected.stdout).trim().to_owned();
    let root = project.root.display();
    assert_eq!(
        inspected,
        format!(r#""none" false ["ALL"] ["no-new-privileges"] true ["{root}:{root}:ro"] 0 "none""#),
        "no network, unprivileged, no capabilities, read-only root and working directory, no engine log"
    );

    // `mayfly ps` lists it as a function container of a dead owner; `--reap` removes it.
    let live = project.json(&["ps"]);
    let listed = live.as_array().unwrap().iter().find(|r| r["kind"] == "container").cloned();
    let listed = listed.unwrap_or_else(|| panic!("mayfly ps lists the container: {live}"));
    assert_eq!(listed["role"], "function", "{listed}");
    assert_eq!(listed["tags"]["mayfly.function"], "probe", "{listed}");
    // The audit finds it too: an orphan is a violation (exit 10).
    let audit = project.run(&["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(10), "{}", String::from_utf8_lossy(&audit.stderr));
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert!(
        audit["findings"].as_array().unwrap().iter().any(|finding| finding["rule"] == "orphaned-resource"
            && finding["resource_kind"] == "container"
            && finding["severity"] == "violation"),
        "{audit}"
    );
    project.ok(&["ps", "--reap"]);
    assert_no_container_left(&name);
}
