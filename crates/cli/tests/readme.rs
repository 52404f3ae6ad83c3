//! The README's first-project block, run as written: a newcomer copies it
//! into a shell, so it must work line by line against the real `mayfly`
//! binary. The block is taken from README.md itself (between its
//! `first-project` markers), so the README cannot drift from what works.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BEGIN: &str = "<!-- first-project: begin -->";
const END: &str = "<!-- first-project: end -->";

/// The shell commands of the README's first-project block.
fn first_project_block() -> String {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");
    let start = readme.find(BEGIN).expect("README.md has the first-project begin marker") + BEGIN.len();
    let end = readme[start..].find(END).expect("README.md has the first-project end marker") + start;
    let fenced = readme[start..end].trim();
    let body = fenced
        .strip_prefix("```sh")
        .and_then(|rest| rest.strip_suffix("```"))
        .expect("the first-project block is one ```sh fence");
    body.to_owned()
}

/// Kills the script's whole process group (the backgrounded `mayfly up` too)
/// if the test fails before the block stops it.
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals a process group we created; no memory is involved.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

fn mayfly_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mayfly")).parent().unwrap().to_path_buf()
}

#[test]
fn the_readme_first_project_runs_as_written_and_its_route_triggers_the_function() {
    let block = first_project_block();
    let workspace = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", mayfly_dir().display(), std::env::var("PATH").unwrap_or_default());
    let child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(workspace.path())
        .env("PATH", path)
        .env_remove("MAYFLY_PROJECT")
        .env_remove("MAYFLY_KEYRING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let _group = ProcessGroup(child.id() as i32);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the README block failed ({:?}):\n{stdout}\n{stderr}", output.status);
    assert!(started.elapsed() < Duration::from_secs(120), "the block took {:?}", started.elapsed());

    for expected in [
        "deployed version 1",
        "stored inbox/incoming/001.txt",
        "created  inbox/incoming/001.txt",
        "sent message 1 to work",
        "receipt 1.1",
        "deleted 1.1",
        "REPORT RequestId:",
    ] {
        assert!(stdout.contains(expected), "the block's output lacks `{expected}`:\n{stdout}");
    }
    assert!(stderr.contains("control plane stopped"), "`kill %1` stops `mayfly up` gracefully:\n{stderr}");

    // The route fired: the object put under incoming/ reached the function through the queue.
    let project = workspace.path().join("chart-coding");
    let ledger = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["invocations", "--function", "rename", "--json"])
        .current_dir(&project)
        .env_remove("MAYFLY_PROJECT")
        .output()
        .unwrap();
    assert!(ledger.status.success(), "{}", String::from_utf8_lossy(&ledger.stderr));
    let invocations: Value = serde_json::from_slice(&ledger.stdout).unwrap();
    let triggers: Vec<&str> =
        invocations.as_array().unwrap().iter().filter_map(|invocation| invocation["trigger"].as_str()).collect();
    assert!(triggers.contains(&"invoke"), "the explicit invoke is in the ledger: {invocations}");
    assert!(
        triggers.contains(&"queue:work"),
        "the route queued the chart and the trigger invoked rename: {invocations}"
    );
    assert!(
        invocations.as_array().unwrap().iter().all(|invocation| invocation["outcome"] == "success"),
        "every invocation succeeded: {invocations}"
    );
}
