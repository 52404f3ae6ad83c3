//! Deploying an architecture: the steps that bring the state store and the
//! buckets in line with it (`plan`, refusing before anything changes what
//! would lose data unless forced) and applying them (`apply`). `mayfly
//! deploy` records the deployment and prints the steps; in-process tests
//! deploy the same way.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use mayfly_core::Name;
use mayfly_core::queue::QueueConfig;
use mayfly_spec::Architecture;
use serde::Serialize;

use crate::Refused;
use crate::project::OpenProject;

/// One step of bringing the store in line with the architecture file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    CreateBucket { name: Name },
    DeleteBucket { name: Name, objects_deleted: bool },
    CreateQueue { name: Name },
    UpdateQueue { name: Name },
    DeleteQueue { name: Name, messages_deleted: u64 },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreateBucket { name } => write!(f, "+ bucket {name}"),
            Step::DeleteBucket { name, objects_deleted: true } => write!(f, "- bucket {name} (and its objects)"),
            Step::DeleteBucket { name, .. } => write!(f, "- bucket {name}"),
            Step::CreateQueue { name } => write!(f, "+ queue {name}"),
            Step::UpdateQueue { name } => write!(f, "~ queue {name}"),
            Step::DeleteQueue { name, messages_deleted } => {
                write!(f, "- queue {name} ({messages_deleted} message(s) deleted)")
            }
        }
    }
}

/// Plan the steps from what the store holds now to what `architecture` declares,
/// refusing (before anything changes) any step that would lose data unless forced.
/// `opened` is `None` for a project never deployed: then nothing exists yet.
pub async fn plan(opened: Option<&OpenProject>, architecture: &Architecture, force: bool) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut refusals = Vec::new();

    let existing_buckets: BTreeSet<Name> = match opened {
        Some(opened) => opened.state.buckets()?.into_iter().map(|b| b.name).collect(),
        None => BTreeSet::new(),
    };
    for name in architecture.buckets.keys() {
        if !existing_buckets.contains(name) {
            steps.push(Step::CreateBucket { name: name.clone() });
        }
    }

    // Queues are created so that a dead-letter queue exists before the queue naming it.
    let existing_queues = match opened {
        Some(opened) => opened.state.queues()?,
        None => Vec::new(),
    };
    let desired = desired_queues(architecture);
    let mut created: BTreeSet<Name> = existing_queues.iter().map(|q| q.name.clone()).collect();
    let mut pending: Vec<&Name> = desired.keys().filter(|name| !created.contains(*name)).collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|name| {
            let dead_letter = &desired[*name].config.dead_letter;
            let ready = dead_letter.as_ref().is_none_or(|dlq| created.contains(dlq) || dlq == *name);
            if ready {
                steps.push(Step::CreateQueue { name: (*name).clone() });
                created.insert((*name).clone());
            }
            !ready
        });
        if pending.len() == before {
            bail!("dead-letter queues form a cycle among: {pending:?}"); // validation forbids this
        }
    }
    for record in &existing_queues {
        if let Some(wanted) = desired.get(&record.name)
            && (wanted.config != record.config || wanted.tags != record.tags)
        {
            steps.push(Step::UpdateQueue { name: record.name.clone() });
        }
    }

    // Removals last: nothing declared may still point at them.
    let Some(opened) = opened else { return Ok(steps) };
    for record in &existing_queues {
        if desired.contains_key(&record.name) {
            continue;
        }
        let stats = opened.state.queue_stats(&record.name)?;
        let messages = stats.visible + stats.in_flight + stats.delayed;
        if messages > 0 && !force {
            refusals.push(format!("queue `{}` holds {messages} message(s)", record.name));
        }
        steps.push(Step::DeleteQueue { name: record.name.clone(), messages_deleted: messages });
    }
    for name in &existing_buckets {
        if architecture.buckets.contains_key(name) {
            continue;
        }
        let empty = opened.buckets.is_empty(name).await?;
        if !empty && !force {
            refusals.push(format!("bucket `{name}` holds objects"));
        }
        steps.push(Step::DeleteBucket { name: name.clone(), objects_deleted: !empty });
    }

    if !refusals.is_empty() {
        return Err(Refused(format!(
            "deploying would delete data: {}; nothing was changed. Empty them first, or pass --force to delete them",
            refusals.join("; ")
        ))
        .into());
    }
    Ok(steps)
}

/// A queue as the architecture wants it.
struct DesiredQueue {
    config: QueueConfig,
    tags: Vec<(String, String)>,
}

/// The declared queues and Mayfly's own (the failure queue and one
/// asynchronous-invocation queue per function), by name.
fn desired_queues(architecture: &Architecture) -> BTreeMap<Name, DesiredQueue> {
    let mut desired: BTreeMap<Name, DesiredQueue> = architecture
        .queues
        .iter()
        .map(|(name, spec)| {
            let tags = tag_pairs(&architecture.effective_tags(&spec.tags));
            (name.clone(), DesiredQueue { config: spec.config(), tags })
        })
        .collect();
    let mut internal_tags = architecture.effective_tags(&BTreeMap::new());
    internal_tags.insert("mayfly-role".to_owned(), "internal".to_owned());
    for (name, config) in mayfly_control::internal_queues(architecture) {
        desired.insert(name, DesiredQueue { config, tags: tag_pairs(&internal_tags) });
    }
    desired
}

fn tag_pairs(tags: &BTreeMap<String, String>) -> Vec<(String, String)> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Apply the `steps` [`plan`] made for `architecture`.
pub async fn apply(opened: &OpenProject, architecture: &Architecture, steps: &[Step]) -> Result<()> {
    let desired = desired_queues(architecture);
    for step in steps {
        match step {
            Step::CreateBucket { name } => {
                let tags = tag_pairs(&architecture.effective_tags(&architecture.buckets[name].tags));
                opened
                    .buckets
                    .create_bucket(name, &tags)
                    .await
                    .with_context(|| format!("cannot create bucket `{name}`"))?;
            }
            Step::DeleteBucket { name, .. } => {
                opened
                    .buckets
                    .delete_bucket(name, true)
                    .await
                    .with_context(|| format!("cannot delete bucket `{name}`"))?;
            }
            Step::CreateQueue { name } => {
                let wanted = &desired[name];
                opened
                    .state
                    .create_queue(name, &wanted.config, &wanted.tags)
                    .with_context(|| format!("cannot create queue `{name}`"))?;
            }
            Step::UpdateQueue { name } => {
                let wanted = &desired[name];
                opened
                    .state
                    .update_queue(name, &wanted.config, &wanted.tags)
                    .with_context(|| format!("cannot update queue `{name}`"))?;
            }
            Step::DeleteQueue { name, .. } => {
                opened.state.delete_queue(name).with_context(|| format!("cannot delete queue `{name}`"))?;
            }
        }
    }
    Ok(())
}
