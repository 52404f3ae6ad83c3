//! Tags: the labels every resource Mayfly creates carries, and the filters an
//! inventory matches them against.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The project (the architecture file's `name`).
pub const TAG_PROJECT: &str = "mayfly.project";
/// The run a coordinator or worker belongs to.
pub const TAG_RUN: &str = "mayfly.run";
/// `coordinator`, `worker` or `function`.
pub const TAG_ROLE: &str = "mayfly.role";
/// A worker's id within its run.
pub const TAG_WORKER: &str = "mayfly.worker";
/// The function a function instance (role `function`) belongs to.
pub const TAG_FUNCTION: &str = "mayfly.function";
/// The local process that owns a resource outside any run (a function
/// container): `pid:<pid>:<start time in clock ticks>@<pid namespace>`, as
/// [`owner_of_this_process`] gives it. Once that process is gone the
/// resource is an orphan ([`reap_orphans`](crate::reap_orphans)).
pub const TAG_OWNER: &str = "mayfly.owner";

/// Labels on every resource Mayfly creates: the project's tags plus Mayfly's own.
///
/// Keys are ASCII letters, digits, `.`, `-` and `_` (so every backend can
/// carry them: environment variables, Docker labels); this is checked when a
/// resource is started, not here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<String, String>);

impl Tags {
    pub fn new() -> Tags {
        Tags::default()
    }

    /// These tags with `key` set to `value` (replacing an earlier value).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Tags {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Sets `key` to `value` in place.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every pair of `filter` is among these tags.
    pub fn matches(&self, filter: &TagFilter) -> bool {
        filter.0.iter().all(|(key, value)| self.0.get(key) == Some(value))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for Tags {
    fn from(map: BTreeMap<String, String>) -> Tags {
        Tags(map)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Tags {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Tags {
        Tags(pairs.into_iter().map(|(key, value)| (key.into(), value.into())).collect())
    }
}

/// Which resources an inventory returns: those carrying every pair listed
/// (an empty filter matches every Mayfly resource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TagFilter(BTreeMap<String, String>);

impl TagFilter {
    pub fn new() -> TagFilter {
        TagFilter::default()
    }

    /// This filter additionally requiring `key` = `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> TagFilter {
        self.0.insert(key.into(), value.into());
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(key, value)| (key.as_str(), value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for TagFilter {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> TagFilter {
        TagFilter(pairs.into_iter().map(|(key, value)| (key.into(), value.into())).collect())
    }
}

/// Why a tag cannot be carried by every backend, if it cannot.
pub(crate) fn check_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a tag key is empty".to_owned());
    }
    if let Some(bad) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(format!(
            "tag key `{key}` contains `{bad}`; tag keys may hold ASCII letters, digits, `.`, `-` and `_`"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of tag `{key}` contains a NUL byte"));
    }
    Ok(())
}

/// This process as a [`TAG_OWNER`] value: its pid and start time, so that a
/// recycled pid is never taken for it, and its pid namespace
/// (`pid:<pid>:<start ticks>@<namespace inode>`), so that a reaper in
/// another namespace sharing the engine never judges it.
pub fn owner_of_this_process() -> String {
    let pid = std::process::id() as i32;
    let start_ticks = crate::local::procfs_start_ticks(pid).unwrap_or(0);
    match pid_namespace() {
        Some(namespace) => format!("pid:{pid}:{start_ticks}@{namespace}"),
        None => format!("pid:{pid}:{start_ticks}"),
    }
}

/// Whether the process a [`TAG_OWNER`] value names is still alive. A value
/// that names no process in this form, or one in another pid namespace,
/// counts as alive: it is not ours to judge.
pub fn owner_is_alive(owner: &str) -> bool {
    let (process, namespace) = match owner.split_once('@') {
        Some((process, namespace)) => (process, Some(namespace)),
        None => (owner, None),
    };
    if namespace.is_some_and(|namespace| pid_namespace().as_deref() != Some(namespace)) {
        return true;
    }
    let parsed = process
        .strip_prefix("pid:")
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(pid, ticks)| Some((pid.parse::<i32>().ok()?, ticks.parse::<u64>().ok()?)));
    match parsed {
        Some((pid, start_ticks)) => crate::local::procfs_is_alive(pid, start_ticks),
        None => true,
    }
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid` → `pid:[N]`).
fn pid_namespace() -> Option<String> {
    let link = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    Some(text.strip_prefix("pid:[")?.strip_suffix(']')?.to_owned())
}
