//! The access log's writer: one thread that appends records in batches, each
//! batch one transaction (group commit), so a durable record per request
//! does not cost a disk sync per request.
//!
//! The promise: a request is answered only after its access record is
//! committed. Each request hands its record to the writer and waits; the
//! writer takes everything waiting, commits it in one transaction and wakes
//! every waiter, so while one batch commits the next one gathers.

use std::sync::Arc;
use std::sync::mpsc;

use mayfly_state::{AccessRecord, StateStore};
use tokio::sync::oneshot;

/// The most records one transaction takes.
const MAX_BATCH: usize = 4_096;

/// Why an access could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessLogError {
    #[error("the access log cannot be written: {0}")]
    Write(String),
    #[error("the access log writer has stopped")]
    Stopped,
}

struct Pending {
    record: AccessRecord,
    committed: Committed,
}

enum Committed {
    Async(oneshot::Sender<Result<(), AccessLogError>>),
    Blocking(mpsc::SyncSender<Result<(), AccessLogError>>),
}

impl Committed {
    fn send(self, outcome: Result<(), AccessLogError>) {
        // A waiter that went away (its client hung up) no longer needs the answer.
        match self {
            Committed::Async(sender) => drop(sender.send(outcome)),
            Committed::Blocking(sender) => drop(sender.send(outcome)),
        }
    }
}

/// A handle on the writer; cheap to clone. The writer stops when the last handle is dropped,
/// after committing what it was given.
#[derive(Clone)]
pub struct AccessLog {
    sender: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Start the writer on its own thread, appending to `store`. Give it a
    /// store handle of its own (its own connection), so its commits never
    /// wait behind the API's reads.
    pub fn start(store: Arc<dyn StateStore>) -> AccessLog {
        let (sender, receiver) = mpsc::channel::<Pending>();
        let spawned = std::thread::Builder::new()
            .name("mayfly-access-log".into())
            .spawn(move || write_batches(store.as_ref(), &receiver));
        if let Err(error) = spawned {
            // Without a writer every append fails with `Stopped`: requests are refused, not unlogged.
            tracing::error!(error = %error, "cannot start the access log writer");
        }
        AccessLog { sender }
    }

    /// Append `record` and wait until it is committed.
    pub async fn append(&self, record: AccessRecord) -> Result<(), AccessLogError> {
        let (sender, receiver) = oneshot::channel();
        self.sender
            .send(Pending { record, committed: Committed::Async(sender) })
            .map_err(|_| AccessLogError::Stopped)?;
        receiver.await.map_err(|_| AccessLogError::Stopped)?
    }

    /// Append `record` and block the calling thread until it is committed.
    pub fn append_blocking(&self, record: AccessRecord) -> Result<(), AccessLogError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.sender
            .send(Pending { record, committed: Committed::Blocking(sender) })
            .map_err(|_| AccessLogError::Stopped)?;
        receiver.recv().map_err(|_| AccessLogError::Stopped)?
    }
}

fn write_batches(store: &dyn StateStore, receiver: &mpsc::Receiver<Pending>) {
    // `recv` fails once every handle is gone and nothing is left: then the writer ends.
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let records: Vec<AccessRecord> = batch.iter().map(|pending| pending.record.clone()).collect();
        let outcome = store.append_access_records(&records).map_err(|error| {
            tracing::error!(error = %error, records = records.len(), "cannot append to the access log");
            AccessLogError::Write(error.to_string())
        });
        tracing::trace!(records = records.len(), "access log batch committed");
        for pending in batch {
            pending.committed.send(outcome.clone());
        }
    }
}
