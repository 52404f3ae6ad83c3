//! What changes between two versions of the architecture: the plan that
//! `mayfly deploy` shows before applying, and refuses when a removal would
//! lose data (the CLI checks whether the bucket or queue actually holds any).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value as Json;

use crate::model::Architecture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Added,
    Removed,
    Changed,
}

impl ChangeAction {
    fn sign(self) -> char {
        match self {
            ChangeAction::Added => '+',
            ChangeAction::Removed => '-',
            ChangeAction::Changed => '~',
        }
    }
}

/// One added, removed or changed resource or section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: ChangeAction,
    /// "project", "policy", "pricing", "bucket", "queue", "function", "route",
    /// "trigger", "alarm", "job" or "api".
    pub kind: &'static str,
    /// The resource name; for routes and triggers, a description of the entry.
    pub name: String,
    /// For `Changed`: one line per changed field, e.g. "visibility_timeout: 30s → 2m".
    pub details: Vec<String>,
    /// Whether applying the change would delete stored data (removing a bucket or a queue).
    pub loses_data: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action.sign(), self.kind)?;
        if !self.name.is_empty() {
            write!(f, " {}", self.name)?;
        }
        if self.loses_data {
            match self.kind {
                "bucket" => write!(f, " (would delete its objects)")?,
                "queue" => write!(f, " (would delete its messages)")?,
                _ => write!(f, " (would delete its data)")?,
            }
        }
        for detail in &self.details {
            write!(f, "\n    {detail}")?;
        }
        Ok(())
    }
}

/// Every change from one architecture to the next, in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchitectureDiff {
    pub changes: Vec<Change>,
}

impl ArchitectureDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether any change would delete stored data.
    pub fn loses_data(&self) -> bool {
        self.changes.iter().any(|change| change.loses_data)
    }
}

impl fmt::Display for ArchitectureDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return write!(f, "no changes");
        }
        for (index, change) in self.changes.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{change}")?;
        }
        Ok(())
    }
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &Architecture, new: &Architecture) -> ArchitectureDiff {
    let mut changes = Vec::new();
    let old_json = to_json(old);
    let new_json = to_json(new);

    let project_fields = ["name", "tags"];
    let project_details: Vec<String> = project_fields
        .iter()
        .flat_map(|field| field_details(field, old_json.get(*field), new_json.get(*field)))
        .collect();
    if !project_details.is_empty() {
        changes.push(Change {
            action: ChangeAction::Changed,
            kind: "project",
            name: new.name.to_string(),
            details: project_details,
            loses_data: false,
        });
    }
    for section in ["policy", "pricing"] {
        let details = object_details(old_json.get(section), new_json.get(section));
        if !details.is_empty() {
            changes.push(Change {
                action: ChangeAction::Changed,
                kind: section,
                name: String::new(),
                details,
                loses_data: false,
            });
        }
    }
    for (section, kind, removal_loses_data) in
        [("buckets", "bucket", true), ("queues", "queue", true), ("functions", "function", false)]
    {
        diff_named(&mut changes, kind, removal_loses_data, old_json.get(section), new_json.get(section));
    }
    diff_listed(
        &mut changes,
        "route",
        old.routes.iter().map(ToString::to_string),
        new.routes.iter().map(ToString::to_string),
    );
    diff_listed(
        &mut changes,
        "trigger",
        old.triggers.iter().map(ToString::to_string),
        new.triggers.iter().map(ToString::to_string),
    );
    for (section, kind) in [("alarms", "alarm"), ("jobs", "job")] {
        diff_named(&mut changes, kind, false, old_json.get(section), new_json.get(section));
    }
    match (&old.api, &new.api) {
        (None, Some(_)) => changes.push(simple_change(ChangeAction::Added, "api", String::new())),
        (Some(_), None) => changes.push(simple_change(ChangeAction::Removed, "api", String::new())),
        (Some(_), Some(_)) => {
            let details = object_details(old_json.get("api"), new_json.get("api"));
            if !details.is_empty() {
                changes.push(Change {
                    action: ChangeAction::Changed,
                    kind: "api",
                    name: String::new(),
                    details,
                    loses_data: false,
                });
            }
        }
        (None, None) => {}
    }
    ArchitectureDiff { changes }
}

fn to_json(architecture: &Architecture) -> Json {
    // Serializing plain data with string keys cannot fail; an empty object diffs as "everything added".
    serde_json::to_value(architecture).unwrap_or(Json::Null)
}

fn simple_change(action: ChangeAction, kind: &'static str, name: String) -> Change {
    Change { action, kind, name, details: Vec::new(), loses_data: false }
}

fn diff_named(
    changes: &mut Vec<Change>,
    kind: &'static str,
    removal_loses_data: bool,
    old: Option<&Json>,
    new: Option<&Json>,
) {
    let empty = serde_json::Map::new();
    let old = old.and_then(Json::as_object).unwrap_or(&empty);
    let new = new.and_then(Json::as_object).unwrap_or(&empty);
    for name in old.keys().filter(|name| !new.contains_key(*name)) {
        changes.push(Change {
            action: ChangeAction::Removed,
            kind,
            name: name.clone(),
            details: Vec::new(),
            loses_data: removal_loses_data,
        });
    }
    for name in new.keys().filter(|name| !old.contains_key(*name)) {
        changes.push(simple_change(ChangeAction::Added, kind, name.clone()));
    }
    for (name, new_value) in new {
        if let Some(old_value) = old.get(name) {
            let details = object_details(Some(old_value), Some(new_value));
            if !details.is_empty() {
                changes.push(Change {
                    action: ChangeAction::Changed,
                    kind,
                    name: name.clone(),
                    details,
                    loses_data: false,
                });
            }
        }
    }
}

/// Entries without names (routes, triggers) are compared as sets of their descriptions.
fn diff_listed(
    changes: &mut Vec<Change>,
    kind: &'static str,
    old: impl Iterator<Item = String>,
    new: impl Iterator<Item = String>,
) {
    let old: Vec<String> = old.collect();
    let new: Vec<String> = new.collect();
    for removed in old.iter().filter(|entry| !new.contains(entry)) {
        changes.push(simple_change(ChangeAction::Removed, kind, removed.clone()));
    }
    for added in new.iter().filter(|entry| !old.contains(entry)) {
        changes.push(simple_change(ChangeAction::Added, kind, added.clone()));
    }
}

/// One line per leaf field that differs, with dotted paths for nested objects.
fn object_details(old: Option<&Json>, new: Option<&Json>) -> Vec<String> {
    field_details("", old, new)
}

/// Like [`object_details`], with every path under `field`.
fn field_details(field: &str, old: Option<&Json>, new: Option<&Json>) -> Vec<String> {
    let mut details = Vec::new();
    let (mut old_fields, mut new_fields) = (BTreeMap::new(), BTreeMap::new());
    flatten(field, old.unwrap_or(&Json::Null), &mut old_fields);
    flatten(field, new.unwrap_or(&Json::Null), &mut new_fields);
    let mut paths: Vec<&String> = old_fields.keys().chain(new_fields.keys()).collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (old_value, new_value) = (old_fields.get(path), new_fields.get(path));
        if old_value != new_value {
            details.push(format!("{path}: {} → {}", render(old_value), render(new_value)));
        }
    }
    details
}

fn flatten(prefix: &str, value: &Json, fields: &mut BTreeMap<String, Json>) {
    match value {
        Json::Object(object) if !object.is_empty() => {
            for (key, child) in object {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, child, fields);
            }
        }
        Json::Object(_) | Json::Null => {}
        other => {
            fields.insert(prefix.to_owned(), other.clone());
        }
    }
}

fn render(value: Option<&Json>) -> String {
    match value {
        None => "(unset)".to_owned(),
        Some(Json::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn architecture(body: &str) -> Architecture {
        let source = format!("version = 1\nname = \"demo\"\n{body}");
        parse("mayfly.toml", &source).unwrap_or_else(|diagnostics| panic!("{diagnostics}"))
    }

    #[test]
    fn identical_architectures_have_no_changes() {
        let one = architecture("[buckets.inbox]\n[queues.work]\n");
        let plan = diff(&one, &one.clone());
        assert!(plan.is_empty());
        assert_eq!(plan.to_string(), "no changes");
    }

    #[test]
    fn plan_shows_additions_removals_and_field_changes() {
        let old = architecture("[buckets.old]\n[queues.work]\nvisibility_timeout = \"30s\"\n[queues.gone]\n");
        let new = architecture(
            "[buckets.inbox]\n[queues.work]\nvisibility_timeout = \"2m\"\n[functions.f]\ncommand = [\"true\"]\n",
        );
        let plan = diff(&old, &new);
        assert_eq!(
            plan.to_string(),
            "\
- bucket old (would delete its objects)
+ bucket inbox
- queue gone (would delete its messages)
~ queue work
    visibility_timeout: 30s → 2m
+ function f"
        );
        assert!(plan.loses_data());
        let removed_queue = plan.changes.iter().find(|change| change.name == "gone").unwrap();
        assert_eq!(
            (removed_queue.action, removed_queue.kind, removed_queue.loses_data),
            (ChangeAction::Removed, "queue", true)
        );
        let changed = plan.changes.iter().find(|change| change.action == ChangeAction::Changed).unwrap();
        assert_eq!(changed.details, vec!["visibility_timeout: 30s → 2m".to_owned()]);
    }

    #[test]
    fn removing_a_function_does_not_lose_data() {
        let old = architecture("[functions.f]\ncommand = [\"true\"]\n");
        let new = architecture("");
        let plan = diff(&old, &new);
        assert_eq!(plan.changes.len(), 1);
        assert!(!plan.loses_data());
        assert_eq!(plan.to_string(), "- function f");
    }

    #[test]
    fn routes_policy_tags_and_api_changes() {
        let old = architecture(
            "tags = { owner = \"a\" }\n[buckets.b]\n[queues.q]\n[[routes]]\nfrom = { bucket = \"b\" }\nto = { queue = \"q\" }\n",
        );
        let new = architecture(
            "tags = { owner = \"b\" }\n[policy]\nencryption = \"optional\"\n[buckets.b]\n[queues.q]\n[[routes]]\nfrom = { bucket = \"b\", prefix = \"in/\" }\nto = { queue = \"q\" }\n[api]\n",
        );
        let plan = diff(&old, &new);
        assert_eq!(
            plan.to_string(),
            "\
~ project demo
    tags.owner: a → b
~ policy
    encryption: required → optional
- route bucket b [created] → queue q
+ route bucket b [created] prefix \"in/\" → queue q
+ api"
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["changes"][0]["action"], "changed");
        assert_eq!(json["changes"][0]["kind"], "project");
    }
}
