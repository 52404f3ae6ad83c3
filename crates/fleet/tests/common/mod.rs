//! Test fixtures: a scope of tagged processes that is torn down even when a
//! test fails, and readers of `/proc` to check what the provisioner claims.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mayfly_fleet::{LocalProvisioner, ProcessSpec, Provisioner, ResourceId, TagFilter, Tags};

/// The tag that scopes every process a test starts.
pub const TAG_TEST: &str = "mayfly.test";

/// One test's processes: all carry a unique `mayfly.test` tag, and dropping
/// the fleet kills every process with that tag, whoever started it.
pub struct TestFleet {
    pub provisioner: Arc<dyn Provisioner>,
    pub scope: String,
    pub dir: tempfile::TempDir,
}

impl TestFleet {
    pub fn new(test: &str) -> TestFleet {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        TestFleet {
            provisioner: Arc::new(LocalProvisioner::new()),
            scope: format!("{test}-{}-{nanos}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn tags(&self) -> Tags {
        Tags::new().with(TAG_TEST, &self.scope)
    }

    pub fn filter(&self) -> TagFilter {
        TagFilter::new().with(TAG_TEST, &self.scope)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `/bin/sh -c script` in the test's folder, tagged with the test's scope plus `tags`.
    pub fn shell(&self, script: &str, tags: &[(&str, &str)]) -> ProcessSpec {
        let mut spec = ProcessSpec::new("/bin/sh", ["-c", script]);
        spec.working_dir = self.dir.path().to_owned();
        spec.env.insert("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned());
        spec.tags = tags.iter().fold(self.tags(), |all, (key, value)| all.with(*key, *value));
        spec
    }

    pub async fn start_shell(&self, script: &str, tags: &[(&str, &str)]) -> ResourceId {
        self.provisioner.start(self.shell(script, tags)).await.unwrap()
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        let filter = self.filter();
        // Drop may run inside the test's runtime, which cannot be blocked on:
        // clean up from a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let provisioner = LocalProvisioner::new();
                for resource in provisioner.inventory(&filter).await.unwrap_or_default() {
                    let _ = provisioner.kill(&resource.id).await;
                }
            })
        });
        let _ = cleanup.join();
    }
}

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub start_ticks: u64,
}

pub fn read_proc(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        state: fields[0].chars().next()?,
        ppid: fields[1].parse().ok()?,
        pgid: fields[2].parse().ok()?,
        start_ticks: fields[19].parse().ok()?,
    })
}

pub fn all_procs() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_proc)
        .collect()
}

/// The processes of group `pgid` that are alive (not zombies).
pub fn live_members_of_group(pgid: i32) -> Vec<Proc> {
    all_procs().into_iter().filter(|proc| proc.pgid == pgid && proc.state != 'Z' && proc.state != 'X').collect()
}

/// `(pid, start time)` of a local resource id.
pub fn pid_and_start(id: &ResourceId) -> (i32, u64) {
    let mut parts = id.0.strip_prefix("pid:").unwrap().split(':');
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

/// Polls `condition` every 10 ms for up to `timeout`; whether it became true.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
