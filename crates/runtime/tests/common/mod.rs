//! Fixtures shared by the runtime tests: the real handler binaries (built on
//! demand into this test's own target directory), function definitions that
//! run them, and checks on processes.
//!
//! The handlers are built by running `cargo build -p mayfly-test-handlers`
//! with the target directory and profile this test binary was built with
//! (derived from its own path, `<target>/<profile>/deps/<test>`). That works
//! the same under `cargo test`, `cargo nextest` and `cargo bench`, needs no
//! extra crate, and cargo's own lock serialises concurrent builds.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mayfly_core::Name;
use mayfly_runtime::{FunctionDefinition, Invocation, RuntimeKind};

/// Names a directory holding the handler binaries already built, used as is:
/// inside `cgroup_v2_vm.rs`'s VM there is no cargo to build them with.
pub const HANDLERS_DIRECTORY_VARIABLE: &str = "MAYFLY_TEST_HANDLERS_DIR";

/// `<target>/<profile>`, with the handler binaries built in it.
pub fn handler_directory() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Some(directory) = std::env::var_os(HANDLERS_DIRECTORY_VARIABLE) {
            return PathBuf::from(directory);
        }
        let test_binary = std::env::current_exe().expect("the test binary's path");
        let profile_dir = test_binary.parent().and_then(Path::parent).expect("<target>/<profile>/deps/<test>");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--quiet", "-p", "mayfly-test-handlers", "--bins", "--target-dir"]).arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build of the test handlers runs");
        assert!(status.success(), "cargo build -p mayfly-test-handlers failed: {status}");
        profile_dir.to_owned()
    })
}

pub fn handler(name: &str) -> String {
    handler_directory().join(name).display().to_string()
}

pub fn process_echo(name: &str) -> FunctionDefinition {
    function(name, RuntimeKind::Process, vec![handler("process-echo")])
}

pub fn lambda_echo(name: &str) -> FunctionDefinition {
    function(name, RuntimeKind::Lambda, vec![handler("lambda-echo")])
}

pub fn function(name: &str, runtime: RuntimeKind, command: Vec<String>) -> FunctionDefinition {
    let mut function = FunctionDefinition::new(Name::new(name).unwrap(), runtime, command, std::env::temp_dir());
    function.timeout = Duration::from_secs(20);
    function
}

/// An invocation with a fresh request id.
pub fn invocation(event: serde_json::Value) -> Invocation {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let request_id = format!("req-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    Invocation { request_id, payload: serde_json::to_vec(&event).unwrap(), trace_id: None, traceparent: None }
}

pub fn response_json(response: &Option<Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(response.as_deref().expect("a response")).expect("the response is JSON")
}

pub fn logs_text(logs: &[u8]) -> String {
    String::from_utf8_lossy(logs).into_owned()
}

/// The pid a `spawn_child_and_sleep` handler logged as `child-pid=N`.
pub fn logged_child_pid(logs: &[u8]) -> i32 {
    let text = logs_text(logs);
    let line = text.lines().find_map(|line| line.strip_prefix("child-pid=")).unwrap_or_else(|| {
        panic!("no child-pid line in the logs: {text:?}");
    });
    line.trim().parse().unwrap()
}

/// Whether `pid` is gone (or a zombie waiting for init), waiting up to 5 s.
pub fn process_ends(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
                if state == Some("Z") || state == Some("X") {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `condition` for up to `within`.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Set by `cgroup_v2_vm.rs` when it runs the memory tests in its VM: they
/// then fail unless the invoker settled on cgroup v2 (instead of passing on
/// whatever the machine offers), and check what only cgroup v2 offers (the
/// kernel's `memory.peak`) and that no instance cgroup of this process is
/// left afterwards (the VM runs them one at a time, so no other test's
/// instance can be there).
pub const REQUIRE_CGROUP_V2_VARIABLE: &str = "MAYFLY_TEST_REQUIRE_CGROUP_V2";

pub fn cgroup_v2_is_required() -> bool {
    std::env::var_os(REQUIRE_CGROUP_V2_VARIABLE).is_some()
}

/// Under [`REQUIRE_CGROUP_V2_VARIABLE`], the parent of the instance cgroups.
pub fn required_cgroup_v2_parent(invoker: &mayfly_runtime::Invoker) -> Option<std::path::PathBuf> {
    if !cgroup_v2_is_required() {
        return None;
    }
    let mayfly_runtime::MemoryEnforcement::CgroupV2 { parent } = invoker.memory_enforcement() else {
        panic!("{REQUIRE_CGROUP_V2_VARIABLE} is set but the invoker settled on {:?}", invoker.memory_enforcement());
    };
    Some(parent.clone())
}

pub fn assert_no_instance_cgroup_is_left(parent: &std::path::Path) {
    let prefix = format!("{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "instance cgroups left under {}: {left:?}", parent.display());
}
