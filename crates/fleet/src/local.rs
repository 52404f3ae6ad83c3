//! The local provisioner: resources are processes on this machine.
//!
//! Each resource is a process started in its own process group, with stdin
//! closed and its output appended to files. Its tags travel in its
//! environment — `MAYFLY_TAGS` holds the exact JSON map, and one
//! `MAYFLY_TAG_<KEY>` variable per tag (key uppercased, `.` and `-` turned
//! into `_`) makes them readable to scripts and `ps e` — so an inventory can
//! find every Mayfly process by reading `/proc/*/environ`, even after the
//! control plane that started it has died.
//!
//! A resource id is `pid:<pid>:<start time>` (the start time in clock ticks
//! after boot, `/proc/PID/stat` field 22), and the resource is the process
//! group that pid leads: it is running while any process of that group is
//! alive, so helpers a worker spawned are waited for and stopped with it.
//! A pid that was recycled has a different start time and is never mistaken
//! for the resource; the group id cannot be recycled while any member lives.
//!
//! Children are not started with `PR_SET_PDEATHSIG`: a worker must survive
//! its coordinator's death (and a coordinator its control plane's), because
//! the control plane decides what to do with a run whose coordinator died —
//! tear the fleet down by its tags, or let a new coordinator resume with it.
//! The reaper ([`crate::reap_orphans`]) removes what nobody owns any more.
//!
//! The provisioner that started a process reaps it (a tokio task waits on
//! each child) and so knows its exit code; for processes it did not start,
//! the state comes from `/proc` alone, and the exit code is known only while
//! the process is a zombie.
//!
//! Known limit: between checking a group's identity and signalling it there
//! is a window of microseconds in which the group could end and its id be
//! reused by a new group; that needs the whole pid space to wrap around
//! inside that window.

mod procfs;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mayfly_core::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::FleetError;
use crate::provisioner::{BoxFuture, LiveResource, ProcessSpec, Provisioner, ResourceId, ResourceState};
use crate::registry::{CoordinatorPlacement, ProvisionerKindEntry};
use crate::tags::{TagFilter, Tags, check_tag};

/// The variable holding the JSON map of a process's tags.
const TAGS_VARIABLE: &str = "MAYFLY_TAGS";
/// The prefix of the per-tag variables.
const TAG_VARIABLE_PREFIX: &str = "MAYFLY_TAG_";
/// How long SIGKILL may take to empty a group before `stop` gives up.
const KILL_VERIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reaping task may take to record the exit of a dead leader.
const EXIT_RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// Exits of children remembered after they ended, so `state` can report
/// their codes; older ones are forgotten (and then reported as `Gone`).
const REMEMBERED_EXITS: usize = 4096;
const FIRST_POLL: Duration = Duration::from_millis(5);
const LONGEST_POLL: Duration = Duration::from_millis(200);

/// Runs resources as local processes. Cheap to clone; clones share what they
/// know about the children they started.
#[derive(Debug, Clone, Default)]
pub struct LocalProvisioner {
    children: Arc<Mutex<Children>>,
}

/// The children this provisioner started, each with the exit its reaping task
/// recorded (`None` while the leader runs).
#[derive(Debug, Default)]
struct Children {
    exits: HashMap<LocalId, watch::Receiver<Option<ResourceState>>>,
    exited_in_order: VecDeque<LocalId>,
}

/// A local resource id: the group leader's pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LocalId {
    pid: i32,
    start_ticks: u64,
}

impl LocalId {
    const FORMAT: &str = "pid:<pid>:<start time>";

    fn parse(id: &ResourceId) -> Result<LocalId, FleetError> {
        let invalid = || FleetError::InvalidResourceId { id: id.clone(), kind: "local", expected: LocalId::FORMAT };
        let rest = id.0.strip_prefix("pid:").ok_or_else(invalid)?;
        let (pid, start_ticks) = rest.split_once(':').ok_or_else(invalid)?;
        let pid: i32 = pid.parse().map_err(|_| invalid())?;
        let start_ticks = start_ticks.parse().map_err(|_| invalid())?;
        if pid <= 0 {
            return Err(invalid());
        }
        Ok(LocalId { pid, start_ticks })
    }

    fn resource_id(self) -> ResourceId {
        ResourceId(format!("pid:{}:{}", self.pid, self.start_ticks))
    }
}

/// What `/proc` says about a resource's process group.
enum GroupObservation {
    /// Some process of the group is alive.
    Live,
    /// None is; the leader's exit if it is still a zombie.
    Ended { zombie_leader_exit: Option<ResourceState> },
}

impl LocalProvisioner {
    pub fn new() -> LocalProvisioner {
        LocalProvisioner::default()
    }

    async fn start_process(&self, spec: ProcessSpec) -> Result<ResourceId, FleetError> {
        let environment = process_environment(&spec)?;
        let cannot_start = |reason: String| FleetError::CannotStart { program: spec.program.clone(), reason };
        match std::fs::metadata(&spec.working_dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(cannot_start(format!(
                    "working directory {} is not a directory",
                    spec.working_dir.display()
                )));
            }
            Err(error) => {
                return Err(cannot_start(format!("working directory {}: {error}", spec.working_dir.display())));
            }
        }
        let stdout = output_file(spec.stdout.as_deref()).map_err(|reason| cannot_start(format!("stdout {reason}")))?;
        let stderr = output_file(spec.stderr.as_deref()).map_err(|reason| cannot_start(format!("stderr {reason}")))?;
        let mut command = tokio::process::Command::new(program_path(&spec.program, &spec.working_dir));
        command
            .args(&spec.args)
            .env_clear()
            .envs(environment)
            .current_dir(&spec.working_dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|error| cannot_start(error.to_string()))?;
        // The child is not reaped until its task below waits on it, so its
        // pid and /proc entry stay valid until then.
        let stat = child.id().and_then(|pid| procfs::read_stat(i32::try_from(pid).ok()?));
        let Some(stat) = stat else {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(cannot_start("the process vanished before its start time could be read".to_owned()));
        };
        let id = LocalId { pid: stat.pid, start_ticks: stat.start_ticks };
        let (exit_sender, exit_receiver) = watch::channel(None);
        self.children.lock().unwrap_or_else(|poison| poison.into_inner()).exits.insert(id, exit_receiver);
        let children = Arc::clone(&self.children);
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => ResourceState::Exited { code: status.code(), signal: status.signal() },
                Err(error) => {
                    tracing::warn!(pid = id.pid, %error, "cannot wait for a child process");
                    ResourceState::Gone
                }
            };
            exit_sender.send_replace(Some(exit));
            let mut children = children.lock().unwrap_or_else(|poison| poison.into_inner());
            children.exited_in_order.push_back(id);
            while children.exited_in_order.len() > REMEMBERED_EXITS {
                if let Some(forgotten) = children.exited_in_order.pop_front() {
                    children.exits.remove(&forgotten);
                }
            }
        });
        let resource_id = id.resource_id();
        tracing::debug!(id = %resource_id, program = %spec.program.display(), "started process");
        Ok(resource_id)
    }

    /// The exit record of a child this provisioner started.
    fn exit_of_child(&self, id: LocalId) -> Option<watch::Receiver<Option<ResourceState>>> {
        self.children.lock().unwrap_or_else(|poison| poison.into_inner()).exits.get(&id).cloned()
    }

    async fn observe_state(&self, id: LocalId) -> Result<ResourceState, FleetError> {
        match observe_group(id)? {
            GroupObservation::Live => Ok(ResourceState::Running),
            GroupObservation::Ended { zombie_leader_exit } => {
                if let Some(mut exit) = self.exit_of_child(id) {
                    // The leader is dead, so our reaping task records its exit at once.
                    let recorded = tokio::time::timeout(EXIT_RECORD_TIMEOUT, exit.wait_for(Option::is_some)).await;
                    if let Ok(Ok(recorded)) = recorded
                        && let Some(state) = *recorded
                    {
                        return Ok(state);
                    }
                }
                Ok(zombie_leader_exit.unwrap_or(ResourceState::Gone))
            }
        }
    }

    async fn wait_for_end(&self, id: LocalId, timeout: Duration) -> Result<ResourceState, FleetError> {
        let deadline = Instant::now() + timeout;
        let mut exit = self.exit_of_child(id);
        let mut poll = FIRST_POLL;
        loop {
            let state = self.observe_state(id).await?;
            let now = Instant::now();
            if !state.is_running() || now >= deadline {
                return Ok(state);
            }
            let pause = poll.min(deadline - now);
            match &mut exit {
                // While our child leads the group, its exit wakes us.
                Some(exit) if exit.borrow().is_none() => {
                    let _ = tokio::time::timeout(deadline - now, exit.changed()).await;
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    poll = (poll * 2).min(LONGEST_POLL);
                }
            }
        }
    }

    async fn terminate(&self, resource_id: &ResourceId, grace: Option<Duration>) -> Result<(), FleetError> {
        let id = LocalId::parse(resource_id)?;
        // SAFETY: getpgrp has no preconditions and cannot fail.
        if id.pid == unsafe { libc::getpgrp() } || u32::try_from(id.pid).ok() == Some(std::process::id()) {
            return Err(FleetError::OwnProcessGroup { id: resource_id.clone() });
        }
        if !self.observe_state(id).await?.is_running() {
            return Ok(());
        }
        if let Some(grace) = grace {
            signal_group(id, resource_id, libc::SIGTERM)?;
            if !self.wait_for_end(id, grace).await?.is_running() {
                return Ok(());
            }
            tracing::info!(id = %resource_id, ?grace, "still running after SIGTERM and the grace period; sending SIGKILL");
        }
        signal_group(id, resource_id, libc::SIGKILL)?;
        if !self.wait_for_end(id, KILL_VERIFY_TIMEOUT).await?.is_running() {
            return Ok(());
        }
        Err(FleetError::StillRunning { id: resource_id.clone(), waited: KILL_VERIFY_TIMEOUT })
    }
}

/// The `local` kind in the provisioner registry, the default: workers and
/// the coordinator are processes of this host, as its user.
pub(crate) const KIND: ProvisionerKindEntry = ProvisionerKindEntry {
    name: "local",
    summary: "Local processes.",
    options: &[],
    coordinator: CoordinatorPlacement::OwnProcess,
    workers_in_subnet: false,
    connect: connect_kind,
};

fn connect_kind() -> BoxFuture<'static, Result<Arc<dyn Provisioner>, FleetError>> {
    Box::pin(async { Ok(Arc::new(LocalProvisioner::new()) as Arc<dyn Provisioner>) })
}

impl Provisioner for LocalProvisioner {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    /// Processes of this host write their files here.
    fn output_reaches_this_host(&self) -> bool {
        true
    }

    fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
        Box::pin(self.start_process(spec))
    }

    fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.observe_state(LocalId::parse(id)?).await })
    }

    fn wait<'a>(&'a self, id: &'a ResourceId, timeout: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
        Box::pin(async move { self.wait_for_end(LocalId::parse(id)?, timeout).await })
    }

    fn stop<'a>(&'a self, id: &'a ResourceId, grace: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, Some(grace)))
    }

    fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
        Box::pin(self.terminate(id, None))
    }

    fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
        let filter = filter.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inventory_from_proc(&filter))
                .await
                .map_err(|error| FleetError::Inventory { reason: format!("the inventory task failed: {error}") })?
        })
    }
}

/// The environment of a process: the spec's, plus the tag variables.
fn process_environment(spec: &ProcessSpec) -> Result<BTreeMap<String, String>, FleetError> {
    let invalid = |reason: String| FleetError::InvalidSpec { program: spec.program.clone(), reason };
    if let Some(forged) = spec.env.keys().find(|key| key.starts_with("MAYFLY_TAG")) {
        return Err(invalid(format!(
            "environment variable {forged} is reserved for the process's tags; set tags instead"
        )));
    }
    let mut environment = spec.env.clone();
    for (key, value) in spec.tags.iter() {
        check_tag(key, value).map_err(invalid)?;
        let variable = tag_variable(key);
        if environment.insert(variable.clone(), value.to_owned()).is_some() {
            return Err(invalid(format!("two tag keys both map to the environment variable {variable}")));
        }
    }
    let json =
        serde_json::to_string(&spec.tags).map_err(|error| invalid(format!("cannot encode the tags: {error}")))?;
    environment.insert(TAGS_VARIABLE.to_owned(), json);
    Ok(environment)
}

/// `mayfly.run` → `MAYFLY_TAG_MAYFLY_RUN`.
fn tag_variable(key: &str) -> String {
    let mangled: String =
        key.chars().map(|c| if matches!(c, '.' | '-') { '_' } else { c.to_ascii_uppercase() }).collect();
    format!("{TAG_VARIABLE_PREFIX}{mangled}")
}

/// A relative program path with a folder in it (`bin/worker`) is relative to
/// the working directory; a bare name (`sh`) is looked up on `PATH` (the
/// spec's `PATH` if it sets one, else Mayfly's own).
fn program_path(program: &Path, working_dir: &Path) -> PathBuf {
    if program.is_relative() && program.components().count() > 1 {
        working_dir.join(program)
    } else {
        program.to_owned()
    }
}

fn output_file(path: Option<&Path>) -> Result<Stdio, String> {
    let Some(path) = path else { return Ok(Stdio::null()) };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .map_err(|error| format!("file {}: {error}", path.display()))
}

/// Whether any process of `id`'s group is alive, from `/proc`.
fn observe_group(id: LocalId) -> Result<GroupObservation, FleetError> {
    // Fast path: the leader itself.
    match procfs::read_stat(id.pid) {
        Some(leader) if leader.start_ticks != id.start_ticks => {
            // The pid was recycled, which cannot happen while the group has members.
            return Ok(GroupObservation::Ended { zombie_leader_exit: None });
        }
        Some(leader) if !leader.is_dead() => return Ok(GroupObservation::Live),
        _ => {}
    }
    let stats = procfs::all_stats().map_err(|error| FleetError::Inventory { reason: format!("/proc: {error}") })?;
    let mut zombie_leader_exit = None;
    for stat in stats {
        let is_leader = stat.pid == id.pid && stat.start_ticks == id.start_ticks;
        let in_group = stat.pgid == id.pid && stat.start_ticks >= id.start_ticks;
        if !(is_leader || in_group) {
            continue;
        }
        if !stat.is_dead() {
            return Ok(GroupObservation::Live);
        }
        if is_leader {
            zombie_leader_exit = stat.exit_status.map(exit_state_of_wait_status);
        }
    }
    Ok(GroupObservation::Ended { zombie_leader_exit })
}

fn exit_state_of_wait_status(status: i32) -> ResourceState {
    let status = std::process::ExitStatus::from_raw(status);
    ResourceState::Exited { code: status.code(), signal: status.signal() }
}

/// Sends `signal` to `id`'s process group (and to its leader, should the
/// leader have moved to another group), unless the group is already over.
fn signal_group(id: LocalId, resource_id: &ResourceId, signal: i32) -> Result<(), FleetError> {
    let leader = procfs::read_stat(id.pid);
    if leader.is_some_and(|leader| leader.start_ticks != id.start_ticks) {
        return Ok(());
    }
    let send = |target: i32| {
        // SAFETY: kill(2) with a valid signal number; the target was checked above.
        if unsafe { libc::kill(target, signal) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        Err(FleetError::Signal { id: resource_id.clone(), source: error })
    };
    send(-id.pid)?;
    if leader.is_some_and(|leader| leader.pgid != id.pid && !leader.is_dead()) {
        send(id.pid)?;
    }
    Ok(())
}

/// Every live, tagged process group whose tags match `filter`.
fn inventory_from_proc(filter: &TagFilter) -> Result<Vec<LiveResource>, FleetError> {
    let stats = procfs::all_stats().map_err(|error| FleetError::Inventory { reason: format!("/proc: {error}") })?;
    let by_pid: HashMap<i32, procfs::ProcessStat> = stats.iter().map(|stat| (stat.pid, *stat)).collect();
    let mut tagged_groups: BTreeMap<i32, Vec<(procfs::ProcessStat, Tags)>> = BTreeMap::new();
    for stat in stats.iter().filter(|stat| !stat.is_dead()) {
        let Some(json) = procfs::read_environment_variable(stat.pid, TAGS_VARIABLE) else { continue };
        match serde_json::from_str::<BTreeMap<String, String>>(&json) {
            Ok(tags) => tagged_groups.entry(stat.pgid).or_default().push((*stat, Tags::from(tags))),
            Err(error) => tracing::debug!(pid = stat.pid, %error, "ignoring a process with unreadable {TAGS_VARIABLE}"),
        }
    }
    let mut resources = Vec::new();
    for (pgid, mut members) in tagged_groups {
        members.sort_by_key(|(stat, _)| (stat.pid != pgid, stat.start_ticks));
        let (first_member, first_member_tags) = &members[0];
        let start_ticks = match by_pid.get(&pgid) {
            // A live leader that carries no tags: these processes inherited
            // tags some other way and are not a resource Mayfly started.
            Some(leader) if !leader.is_dead() && first_member.pid != pgid => continue,
            // The leader, alive or a zombie, names the group.
            Some(leader) => leader.start_ticks,
            // The leader was reaped but members remain: the earliest names it.
            None => first_member.start_ticks,
        };
        if !first_member_tags.matches(filter) {
            continue;
        }
        resources.push(LiveResource {
            id: LocalId { pid: pgid, start_ticks }.resource_id(),
            kind: "process",
            tags: first_member_tags.clone(),
            started_at: procfs::start_time_millis(start_ticks).map(Timestamp::from_millis),
            address: None,
        });
    }
    Ok(resources)
}

/// The start time (clock ticks after boot) of process `pid`, if it exists.
pub(crate) fn procfs_start_ticks(pid: i32) -> Option<u64> {
    procfs::read_stat(pid).map(|stat| stat.start_ticks)
}

/// Whether process `pid`, started at `start_ticks`, is alive (not a zombie).
pub(crate) fn procfs_is_alive(pid: i32, start_ticks: u64) -> bool {
    procfs::read_stat(pid).is_some_and(|stat| stat.start_ticks == start_ticks && !stat.is_dead())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_round_trip_and_bad_ones_are_refused() {
        let id = LocalId { pid: 42, start_ticks: 12_345 };
        assert_eq!(id.resource_id().0, "pid:42:12345");
        assert_eq!(LocalId::parse(&id.resource_id()).unwrap(), id);
        for bad in ["42", "pid:42", "pid:x:1", "pid:0:1", "pid:-3:1", "container:abc", "pid:42:1:2"] {
            let error = LocalId::parse(&ResourceId(bad.to_owned())).unwrap_err();
            assert!(matches!(error, FleetError::InvalidResourceId { .. }), "{bad}: {error}");
        }
    }

    #[test]
    fn tag_keys_become_uppercase_variables() {
        assert_eq!(tag_variable("mayfly.run"), "MAYFLY_TAG_MAYFLY_RUN");
        assert_eq!(tag_variable("data-class"), "MAYFLY_TAG_DATA_CLASS");
    }

    #[test]
    fn the_environment_carries_each_tag_and_the_exact_map() {
        let mut spec = ProcessSpec::new("/bin/true", Vec::<String>::new());
        spec.env.insert("PATH".to_owned(), "/bin".to_owned());
        spec.tags = Tags::new().with("mayfly.run", "r-1").with("data-class", "phi");
        let environment = process_environment(&spec).unwrap();
        assert_eq!(environment["PATH"], "/bin");
        assert_eq!(environment["MAYFLY_TAG_MAYFLY_RUN"], "r-1");
        assert_eq!(environment["MAYFLY_TAG_DATA_CLASS"], "phi");
        assert_eq!(environment["MAYFLY_TAGS"], r#"{"data-class":"phi","mayfly.run":"r-1"}"#);
    }

    #[test]
    fn unusable_tags_and_forged_tag_variables_are_refused() {
        let refused = |tags: Tags, env: &[(&str, &str)]| {
            let mut spec = ProcessSpec::new("/bin/true", Vec::<String>::new());
            spec.tags = tags;
            spec.env = env.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
            match process_environment(&spec) {
                Err(FleetError::InvalidSpec { reason, .. }) => reason,
                other => panic!("expected InvalidSpec, got {other:?}"),
            }
        };
        assert!(refused(Tags::new().with("", "x"), &[]).contains("empty"));
        assert!(refused(Tags::new().with("a b", "x"), &[]).contains("`a b`"));
        assert!(refused(Tags::new().with("a.b", "1").with("a-b", "2"), &[]).contains("MAYFLY_TAG_A_B"));
        assert!(refused(Tags::new().with("k", "nul\0"), &[]).contains("NUL"));
        assert!(refused(Tags::new(), &[("MAYFLY_TAGS", "{}")]).contains("reserved"));
        assert!(refused(Tags::new(), &[("MAYFLY_TAG_MAYFLY_RUN", "forged")]).contains("reserved"));
    }
}
