//! Group commit: the completions that workers send at about the same moment
//! share one durable commit of the state store
//! ([`mayfly_state::RunStore::complete_run_items_together`]) instead of one fsync each.
//!
//! A committer thread owns a channel of (completion, reply). It blocks for
//! the first completion, takes everything already queued behind it (up to
//! [`GroupCommitConfig::max_group`]), commits the group and answers each
//! completion. It never waits for company: the completions that arrive while
//! one group is being committed (its fsync) queue up and form the next group,
//! so a group grows with the load by itself (one completion on an idle run,
//! many when many workers complete at once) and no completion waits longer
//! than the commit before its own. A worker's acknowledgement is sent only
//! after that answer, so an acknowledged result is durable.
//!
//! The store is synchronous, so the committer is a thread of its own: the
//! coordinator's runtime thread keeps serving requests while it fsyncs.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

use mayfly_state::{GroupedCompletion, GroupedCompletionOutcome, StateStore};
use tokio::sync::oneshot;

/// How many completions share a commit.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// The most completions in one commit (1: a commit per completion, as
    /// before group commit; the throughput benchmark's baseline).
    pub max_group: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig { max_group: 256 }
    }
}

/// One completion's answer: its outcome, or why it was not recorded.
pub type CompletionAnswer = Result<GroupedCompletionOutcome, mayfly_state::StateError>;

struct Waiting {
    completion: GroupedCompletion,
    reply: oneshot::Sender<CompletionAnswer>,
}

/// The sending side; the committer thread ends when every handle is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: Sender<Waiting>,
}

#[derive(Debug, thiserror::Error)]
#[error("the committer of run {run} stopped")]
pub struct CommitterStopped {
    run: String,
}

impl GroupCommitter {
    /// Start the committer thread of `run`.
    pub fn start(
        state: Arc<dyn StateStore>,
        run: String,
        config: GroupCommitConfig,
    ) -> std::io::Result<GroupCommitter> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || commit_groups(state.as_ref(), &run, config, &receiver))?;
        Ok(GroupCommitter { sender })
    }

    /// Record `completions` (one worker's call, in order) in the next group;
    /// answers, one each in order, once they are durable. They are queued
    /// together, so they share a commit unless the group fills up.
    pub async fn complete(
        &self,
        run: &str,
        completions: Vec<GroupedCompletion>,
    ) -> Result<Vec<CompletionAnswer>, CommitterStopped> {
        let stopped = || CommitterStopped { run: run.to_owned() };
        let mut answers = Vec::with_capacity(completions.len());
        for completion in completions {
            let (reply, answer) = oneshot::channel();
            self.sender.send(Waiting { completion, reply }).map_err(|_| stopped())?;
            answers.push(answer);
        }
        let mut outcomes = Vec::with_capacity(answers.len());
        for answer in answers {
            outcomes.push(answer.await.map_err(|_| stopped())?);
        }
        Ok(outcomes)
    }
}

fn commit_groups(state: &dyn StateStore, run: &str, config: GroupCommitConfig, receiver: &Receiver<Waiting>) {
    let max_group = config.max_group.max(1);
    while let Ok(first) = receiver.recv() {
        // The group is what queued up while the previous one was committed: no timed wait.
        let mut group = vec![first];
        group.extend(receiver.try_iter().take(max_group - 1));
        let (completions, replies): (Vec<GroupedCompletion>, Vec<oneshot::Sender<CompletionAnswer>>) =
            group.into_iter().map(|waiting| (waiting.completion, waiting.reply)).unzip();
        let size = completions.len();
        match state.complete_run_items_together(run, completions) {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // A worker that hung up gets no answer; its result is recorded all the same.
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(run, error = %error, size, "a group of completions could not be committed");
                let message = error.to_string();
                for reply in replies {
                    // Each waiter gets the group's error (errors are not `Clone`; a full disk stays one).
                    let error = match error {
                        mayfly_state::StateError::DiskFull => mayfly_state::StateError::DiskFull,
                        _ => mayfly_state::StateError::Backend(message.clone()),
                    };
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}
