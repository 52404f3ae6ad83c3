//! Memory limits: a cgroup per instance (cgroup v2 or v1, detected at run
//! time), or `RLIMIT_AS` where no cgroup hierarchy is writable.
//!
//! Instance cgroups live under `<hierarchy root>/mayfly/<invoker pid>-<instance>`
//! (for v1 the memory controller's mount, `/sys/fs/cgroup/memory`; for v2 the
//! unified mount). Placing them at the hierarchy root rather than under the
//! invoker's own cgroup keeps v2's "no processes in inner cgroups" rule
//! satisfied; it also means an instance is not charged to the invoker's own
//! cgroup, so run Mayfly with an explicit `cgroup_parent` when it is itself
//! confined. Cgroups of invokers that died are removed at the next start.
//! An explicit v2 parent must be on a cgroup v2 file system (checked with
//! `statfs`): a plain directory would take every write and enforce nothing.
//!
//! With `RLIMIT_AS` a process that exceeds the limit sees allocation
//! failures; most runtimes then abort, so the invocation shows as
//! [`Outcome::Crashed`](crate::Outcome::Crashed), not out-of-memory.

use std::ffi::CString;
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mayfly_core::ByteSize;

use crate::error::SpawnError;

/// How the invoker should enforce memory limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MemoryEnforcementMode {
    /// cgroup v2 if its memory controller is available, else v1, else `RLIMIT_AS`.
    #[default]
    Auto,
    /// cgroup v2 with instance cgroups under this directory (which must allow
    /// the memory controller in its children).
    CgroupV2 { parent: PathBuf },
    /// cgroup v1 with instance cgroups under this directory of the memory hierarchy.
    CgroupV1 { parent: PathBuf },
    /// `RLIMIT_AS` only; exceeding the limit shows as a crash.
    AddressSpaceLimit,
}

/// The enforcement the invoker settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryEnforcement {
    CgroupV2 { parent: PathBuf },
    CgroupV1 { parent: PathBuf },
    AddressSpaceLimit,
}

const V1_MEMORY_MOUNT: &str = "/sys/fs/cgroup/memory";
const V2_MOUNTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

impl MemoryEnforcement {
    /// Settles `mode` on this machine; falls back to `RLIMIT_AS` (with a
    /// warning) when the requested hierarchy cannot be used.
    pub fn detect(mode: &MemoryEnforcementMode) -> MemoryEnforcement {
        let detected = match mode {
            MemoryEnforcementMode::Auto => detect_v2().or_else(detect_v1),
            MemoryEnforcementMode::CgroupV2 { parent } => prepare_v2_parent(parent).ok(),
            MemoryEnforcementMode::CgroupV1 { parent } => prepare_v1_parent(parent).ok(),
            MemoryEnforcementMode::AddressSpaceLimit => Some(MemoryEnforcement::AddressSpaceLimit),
        };
        let enforcement = detected.unwrap_or_else(|| {
            tracing::warn!(
                ?mode,
                "no writable memory cgroup; memory limits fall back to RLIMIT_AS and exceeding one shows as a crash"
            );
            MemoryEnforcement::AddressSpaceLimit
        });
        if let MemoryEnforcement::CgroupV1 { parent } | MemoryEnforcement::CgroupV2 { parent } = &enforcement {
            remove_cgroups_of_dead_invokers(parent);
        }
        enforcement
    }
}

fn detect_v2() -> Option<MemoryEnforcement> {
    V2_MOUNTS.iter().map(Path::new).find_map(|mount| {
        let controllers = std::fs::read_to_string(mount.join("cgroup.controllers")).ok()?;
        if !controllers.split_whitespace().any(|controller| controller == "memory") {
            return None;
        }
        // The root's subtree_control must pass the controller down to `mayfly/`.
        enable_memory_controller(mount).ok()?;
        prepare_v2_parent(&mount.join("mayfly")).ok()
    })
}

fn enable_memory_controller(cgroup: &Path) -> std::io::Result<()> {
    let subtree = std::fs::read_to_string(cgroup.join("cgroup.subtree_control"))?;
    if subtree.split_whitespace().any(|controller| controller == "memory") {
        return Ok(());
    }
    std::fs::write(cgroup.join("cgroup.subtree_control"), "+memory")
}

fn prepare_v2_parent(parent: &Path) -> std::io::Result<MemoryEnforcement> {
    std::fs::create_dir_all(parent)?;
    // A plain directory would take every write and enforce nothing; the
    // failure would only show when a child cannot join `cgroup.procs`.
    if !is_on_cgroup2(parent)? {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "not on a cgroup v2 file system"));
    }
    enable_memory_controller(parent)?;
    Ok(MemoryEnforcement::CgroupV2 { parent: parent.to_owned() })
}

/// Whether `path` is on a cgroup v2 (unified) file system.
fn is_on_cgroup2(path: &Path) -> std::io::Result<bool> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: statfs writes into the zeroed struct it is given; `path` is NUL-terminated.
    let mut info: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the pointers are valid for the call.
    if unsafe { libc::statfs(path.as_ptr(), &mut info) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs between targets.
    Ok(info.f_type as i64 == CGROUP2_SUPER_MAGIC)
}

fn detect_v1() -> Option<MemoryEnforcement> {
    let mount = Path::new(V1_MEMORY_MOUNT);
    if !mount.join("memory.limit_in_bytes").exists() {
        return None;
    }
    prepare_v1_parent(&mount.join("mayfly")).ok()
}

fn prepare_v1_parent(parent: &Path) -> std::io::Result<MemoryEnforcement> {
    std::fs::create_dir_all(parent)?;
    // Probe that we may create children here.
    let probe = parent.join(format!("probe-{}", std::process::id()));
    std::fs::create_dir(&probe)
        .or_else(|error| if error.kind() == ErrorKind::AlreadyExists { Ok(()) } else { Err(error) })?;
    std::fs::remove_dir(&probe)?;
    Ok(MemoryEnforcement::CgroupV1 { parent: parent.to_owned() })
}

/// Instance cgroups are named `<pid>-<n>`; those whose invoker is gone are
/// leftovers of a crash. Kills what is left in them and removes them.
fn remove_cgroups_of_dead_invokers(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.split('-').next()).and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if process_is_alive(pid) {
            continue;
        }
        let path = entry.path();
        kill_cgroup_members(&path);
        if let Err(error) = std::fs::remove_dir(&path) {
            tracing::warn!(path = %path.display(), error = %error, "cannot remove a leftover instance cgroup");
        }
    }
}

fn process_is_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn kill_cgroup_members(cgroup: &Path) {
    if std::fs::write(cgroup.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let Ok(members) = std::fs::read_to_string(cgroup.join("cgroup.procs")) else { return };
    for pid in members.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        // SAFETY: plain kill(2) of a pid read from the cgroup; a pid that exited
        // meanwhile gives ESRCH, which is ignored.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The cgroup of one instance, removed by [`InstanceCgroup::remove`].
#[derive(Debug)]
pub(crate) struct InstanceCgroup {
    path: PathBuf,
    version: CgroupVersion,
    /// `<path>/cgroup.procs`, ready for the child to write itself into before exec.
    procs: CString,
    limit: ByteSize,
    /// The OOM-kill counter when the current invocation started.
    oom_kills_before: u64,
    /// An open handle on the peak file (v2's `memory.peak` resets per handle).
    peak_file: Option<std::fs::File>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

impl InstanceCgroup {
    pub(crate) fn create(
        enforcement: &MemoryEnforcement,
        instance: &str,
        limit: ByteSize,
    ) -> Result<Option<InstanceCgroup>, SpawnError> {
        let (parent, version) = match enforcement {
            MemoryEnforcement::CgroupV1 { parent } => (parent, CgroupVersion::V1),
            MemoryEnforcement::CgroupV2 { parent } => (parent, CgroupVersion::V2),
            MemoryEnforcement::AddressSpaceLimit => return Ok(None),
        };
        let path = parent.join(format!("{}-{instance}", std::process::id()));
        let cgroup_error = |source| SpawnError::Cgroup { path: path.clone(), source };
        std::fs::create_dir(&path).map_err(cgroup_error)?;
        let configured = configure_limit(&path, version, limit);
        if let Err(source) = configured {
            let _ = std::fs::remove_dir(&path);
            return Err(cgroup_error(source));
        }
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| cgroup_error(std::io::Error::from(ErrorKind::InvalidInput)))?;
        let peak_name = match version {
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
            CgroupVersion::V2 => "memory.peak",
        };
        let peak_file = std::fs::OpenOptions::new().read(true).write(true).open(path.join(peak_name)).ok();
        Ok(Some(InstanceCgroup { path, version, procs, limit, oom_kills_before: 0, peak_file }))
    }

    /// The file a child writes `0` into (before exec) to join this cgroup.
    pub(crate) fn procs_file(&self) -> &CString {
        &self.procs
    }

    pub(crate) fn limit(&self) -> ByteSize {
        self.limit
    }

    /// Starts measuring one invocation: resets the peak, remembers the OOM count.
    pub(crate) fn begin_invocation(&mut self) {
        self.oom_kills_before = self.oom_kills();
        if let Some(file) = &mut self.peak_file {
            // v1 resets max_usage_in_bytes on any write; v2 (Linux ≥ 6.12)
            // resets memory.peak for readers of this handle.
            let _ = file.write_all(b"0\n");
        }
    }

    /// Peak memory since [`begin_invocation`](Self::begin_invocation) (or creation).
    pub(crate) fn peak_memory(&mut self) -> Option<u64> {
        let file = self.peak_file.as_mut()?;
        file.rewind().ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        text.trim().parse().ok()
    }

    /// Whether the kernel's OOM killer acted in this cgroup since the invocation began.
    pub(crate) fn oom_killed_since_begin(&self) -> bool {
        self.oom_kills() > self.oom_kills_before
    }

    fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
        };
        let Ok(text) = std::fs::read_to_string(self.path.join(file)) else { return 0 };
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(name, _)| *name == key)
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILLs every process in the cgroup, including any that left the process group.
    pub(crate) fn kill_all(&self) {
        kill_cgroup_members(&self.path);
    }

    /// Kills what is left and removes the cgroup, retrying while the kernel
    /// finishes tearing the processes down.
    pub(crate) async fn remove(mut self) {
        let path = std::mem::take(&mut self.path);
        drop(self);
        for attempt in 0..200 {
            kill_cgroup_members(&path);
            match std::fs::remove_dir(&path) {
                Ok(()) => return,
                Err(error) if error.kind() == ErrorKind::NotFound => return,
                Err(error) if attempt == 199 => {
                    tracing::warn!(path = %path.display(), error = %error, "cannot remove an instance cgroup");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

impl Drop for InstanceCgroup {
    /// An instance dropped without [`InstanceCgroup::remove`] (its invoker was
    /// dropped without `shutdown`): kill and remove off the async threads.
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let cleanup = std::thread::Builder::new().name("mayfly-cgroup".into()).spawn(move || {
            for _ in 0..200 {
                kill_cgroup_members(&path);
                if std::fs::remove_dir(&path).is_ok() || !path.exists() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            tracing::warn!(path = %path.display(), "cannot remove an instance cgroup");
        });
        if let Err(error) = cleanup {
            tracing::warn!(error = %error, "cannot start a thread to remove an instance cgroup");
        }
    }
}

fn configure_limit(path: &Path, version: CgroupVersion, limit: ByteSize) -> std::io::Result<()> {
    let bytes = limit.bytes().to_string();
    match version {
        CgroupVersion::V1 => {
            std::fs::write(path.join("memory.limit_in_bytes"), &bytes)?;
            // Without swap accounting the limit would push pages to swap
            // instead of stopping the instance.
            let swap_limit = path.join("memory.memsw.limit_in_bytes");
            if swap_limit.exists() {
                std::fs::write(swap_limit, &bytes)?;
            }
        }
        CgroupVersion::V2 => {
            std::fs::write(path.join("memory.max"), &bytes)?;
            let swap_limit = path.join("memory.swap.max");
            if swap_limit.exists() {
                std::fs::write(swap_limit, "0")?;
            }
            // Kill the whole instance on OOM, not one of its processes.
            let _ = std::fs::write(path.join("memory.oom.group"), "1");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The cgroup v2 files Mayfly writes and reads, on a directory standing in
    //! for an instance's parent. The memory tests in `tests/process_runtime.rs`
    //! run under whichever hierarchy the machine offers; on a machine whose
    //! memory controller is bound to cgroup v1 (ours), nothing else would
    //! notice a regression here. The kernel's part (creating the interface
    //! files, counting OOM kills) is played by the test.

    use super::*;

    const LIMIT: ByteSize = ByteSize(96 * 1024 * 1024);

    fn v2_instance(parent: &Path) -> InstanceCgroup {
        let enforcement = MemoryEnforcement::CgroupV2 { parent: parent.to_owned() };
        InstanceCgroup::create(&enforcement, "7", LIMIT).unwrap().expect("a cgroup under cgroup v2")
    }

    #[test]
    fn an_instance_cgroup_is_named_for_its_invoker_and_holds_the_limit_and_the_group_oom_kill() {
        let parent = tempfile::tempdir().unwrap();
        let cgroup = v2_instance(parent.path());
        let path = parent.path().join(format!("{}-7", std::process::id()));
        assert_eq!(std::fs::read_to_string(path.join("memory.max")).unwrap(), LIMIT.bytes().to_string());
        assert_eq!(std::fs::read_to_string(path.join("memory.oom.group")).unwrap(), "1");
        assert_eq!(cgroup.procs_file().to_bytes(), path.join("cgroup.procs").as_os_str().as_bytes());
        assert_eq!(cgroup.limit(), LIMIT);
    }

    #[test]
    fn swap_is_turned_off_where_the_kernel_offers_it() {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("instance");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("memory.swap.max"), "max\n").unwrap();
        configure_limit(&path, CgroupVersion::V2, LIMIT).unwrap();
        assert_eq!(std::fs::read_to_string(path.join("memory.swap.max")).unwrap(), "0");
    }

    #[test]
    fn only_oom_kills_counted_after_the_invocation_began_make_it_out_of_memory() {
        let parent = tempfile::tempdir().unwrap();
        let mut cgroup = v2_instance(parent.path());
        let events = parent.path().join(format!("{}-7", std::process::id())).join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n").unwrap();
        // An earlier invocation's kill does not count against this one.
        cgroup.begin_invocation();
        assert!(!cgroup.oom_killed_since_begin());
        std::fs::write(&events, "low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\noom_group_kill 1\n").unwrap();
        assert!(cgroup.oom_killed_since_begin());
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_v2_file_system_is_refused_as_a_parent() {
        let parent = tempfile::tempdir().unwrap();
        let error = prepare_v2_parent(parent.path()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        let mode = MemoryEnforcementMode::CgroupV2 { parent: parent.path().to_owned() };
        assert_eq!(MemoryEnforcement::detect(&mode), MemoryEnforcement::AddressSpaceLimit);
    }
}
