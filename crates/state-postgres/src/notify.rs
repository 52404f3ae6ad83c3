//! Wake-ups for receivers ([`QueueStore::watch_messages`]) through
//! PostgreSQL's `LISTEN`/`NOTIFY`: every transaction that makes messages
//! visible at once in a queue — a send, a message moved to its dead-letter
//! queue, a lease released with visibility 0, a redrive, a run returning
//! its unfinished items — notifies [`CHANNEL`] with the queue's name
//! (PostgreSQL delivers it at commit, and only if the transaction commits;
//! messages that become visible by time, after a delay or a lapsed lease,
//! are found by the receivers' polls), and one thread per store
//! handle, on a connection of its own outside the pool, listens and tells
//! every registered watcher. The thread starts with the first watch and ends
//! when the last is dropped or the store is. A lost connection is retried
//! every second (logged once when lost and once when back); what was sent
//! meanwhile is found by the receivers' polls.
//!
//! [`QueueStore::watch_messages`]: mayfly_state::QueueStore::watch_messages

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mayfly_state::{MessageWatch, OnMessages, Result};
use postgres::fallible_iterator::FallibleIterator;

use crate::ConnectTarget;
use crate::errors::PgResultExt;

/// The channel sends notify, with the queue's name as the payload (a name
/// from the architecture, never user data).
pub(crate) const CHANNEL: &str = "mayfly_messages";

/// How long the listener waits for a notification before it checks whether
/// anyone still watches.
const LISTEN_SLICE: Duration = Duration::from_millis(500);

/// How long the listener waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Notify receivers of `queue` when `transaction` commits.
pub(crate) fn notify(transaction: &mut postgres::Transaction<'_>, queue: &str) -> Result<()> {
    transaction
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &queue])
        .with_context(|| format!("notify the receivers of queue `{queue}`"))?;
    Ok(())
}

/// Notify receivers of each of `queues` when `transaction` commits, in one
/// statement; nothing for none.
pub(crate) fn notify_each<'a>(
    transaction: &mut postgres::Transaction<'_>,
    queues: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut queues: Vec<&str> = queues.into_iter().collect();
    queues.sort_unstable();
    queues.dedup();
    match queues.as_slice() {
        [] => Ok(()),
        [queue] => notify(transaction, queue),
        _ => {
            transaction
                .execute("SELECT pg_notify($1, queue) FROM UNNEST($2::TEXT[]) AS queue", &[&CHANNEL, &queues])
                .with_context(|| format!("notify the receivers of queues {}", queues.join(", ")))?;
            Ok(())
        }
    }
}

/// The watchers of one store handle, and whether its listener runs.
#[derive(Default)]
pub(crate) struct Watchers {
    inner: Mutex<Registered>,
}

#[derive(Default)]
struct Registered {
    next: u64,
    watchers: BTreeMap<u64, OnMessages>,
    listening: bool,
}

impl Watchers {
    /// Register `on_messages`, starting the listener if none runs.
    pub(crate) fn watch(self: &Arc<Self>, target: &ConnectTarget, on_messages: OnMessages) -> MessageWatch {
        let mut registered = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = registered.next;
        registered.next += 1;
        registered.watchers.insert(id, on_messages);
        if !registered.listening {
            registered.listening = true;
            let watchers = Arc::downgrade(self);
            let target = target.clone();
            std::thread::Builder::new()
                .name("mayfly-pg-listen".into())
                .spawn(move || listen(&watchers, &target))
                .expect("spawn the PostgreSQL listener thread");
        }
        let watchers = Arc::downgrade(self);
        MessageWatch::new(move || {
            if let Some(watchers) = watchers.upgrade() {
                watchers.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).watchers.remove(&id);
            }
        })
    }

    /// The watchers now, or `None` (and the listener marked stopped) when
    /// there are none left.
    fn current(&self) -> Option<Vec<OnMessages>> {
        let mut registered = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if registered.watchers.is_empty() {
            registered.listening = false;
            return None;
        }
        Some(registered.watchers.values().cloned().collect())
    }
}

/// The listener thread: connect, `LISTEN`, and hand every notification to
/// the watchers, until nobody watches or the store is gone. While the
/// database cannot be reached it tries again every second, but says so
/// once (through `tracing`), and once more when it listens again.
fn listen(watchers: &Weak<Watchers>, target: &ConnectTarget) {
    let still_watched = || watchers.upgrade().and_then(|watchers| watchers.current());
    let mut outage = Outage::default();
    'connect: while still_watched().is_some() {
        let mut client = match target.connect() {
            Ok(client) => client,
            Err(error) => {
                outage.failed(&error.to_string());
                std::thread::sleep(RECONNECT_AFTER);
                continue;
            }
        };
        if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            outage.failed(&format!("LISTEN failed: {error}"));
            std::thread::sleep(RECONNECT_AFTER);
            continue;
        }
        outage.listening();
        loop {
            let mut queues = Vec::new();
            {
                let mut notifications = client.notifications();
                // The first to come within the slice, then whatever else has arrived.
                let first = notifications.timeout_iter(LISTEN_SLICE).next();
                let rest = first.and_then(|first| {
                    queues.extend(first.map(|notification| notification.payload().to_owned()));
                    let mut pending = notifications.iter();
                    while let Some(notification) = pending.next()? {
                        queues.push(notification.payload().to_owned());
                    }
                    Ok(())
                });
                if let Err(error) = rest {
                    outage.failed(&format!("the wake-up connection was lost: {error}"));
                    std::thread::sleep(RECONNECT_AFTER);
                    continue 'connect;
                }
            }
            let Some(current) = still_watched() else { return };
            queues.sort();
            queues.dedup();
            for queue in &queues {
                for on_messages in &current {
                    on_messages(queue);
                }
            }
        }
    }
}

/// Whether the listener is cut off from the database, so that an outage is
/// logged once when it starts and once when it ends, not at every retry.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
    retries: u64,
}

impl Outage {
    fn failed(&mut self, error: &str) {
        self.retries += 1;
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::warn!(
                error = %error,
                "the state store's wake-up listener cannot reach PostgreSQL; receivers poll without wake-ups \
                 until it does (retrying every second, logged again once it listens)"
            );
        }
    }

    fn listening(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::warn!(
                down_for = ?since.elapsed(),
                retries = self.retries,
                "the state store's wake-up listener reached PostgreSQL again; receivers are woken on sends again"
            );
        }
        self.retries = 0;
    }
}
