//! The spans a coordinator records for its run (issue 15): `run JOB` for
//! its part in the run and `item JOB` for each attempt at an item, from its
//! lease to the commit of its outcome (the names and attributes are
//! `mayfly_control::telemetry`'s). An item fed from a queue message is the
//! child of the context the message carried (its `send` span), any other
//! item of the run's span. The item span's context rides on the lease to the
//! worker, whose function gets it (`_X_AMZN_TRACE_ID` / `TRACEPARENT`), so a
//! worker on another host needs no route to the collector.
//!
//! With no collector named the run's span does not record, and nothing here
//! looks anything up or keeps anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use mayfly_control::telemetry::{ItemSpanEnd, ItemSpanStart, ItemTrace, RunTrace};
use mayfly_core::trace_header;
use mayfly_state::{RunItem, StateStore};

/// One attempt's span and the worker that holds the item.
struct HeldItem {
    attempt: u32,
    worker: String,
    span: ItemTrace,
}

/// The spans of one coordinator's run.
pub(crate) struct RunTraces {
    run: RunTrace,
    job: String,
    run_id: String,
    /// The queue of a queue-fed run, whose items' messages may carry a context.
    queue: Option<String>,
    state: Arc<dyn StateStore>,
    /// The open item spans, by item (an item is held by one worker at a time).
    items: Mutex<BTreeMap<String, HeldItem>>,
}

impl RunTraces {
    pub(crate) fn start(
        job: &str,
        run_id: &str,
        trigger: &str,
        queue: Option<String>,
        state: Arc<dyn StateStore>,
    ) -> RunTraces {
        RunTraces {
            run: RunTrace::start(job, run_id, trigger),
            job: job.to_owned(),
            run_id: run_id.to_owned(),
            queue,
            state,
            items: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HeldItem>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start the spans of items just leased to `worker`; the X-Ray header
    /// each item's function is to be handed (`None` when nothing records).
    pub(crate) fn leased(&self, worker: &str, items: &[RunItem]) -> Vec<Option<String>> {
        if !self.run.is_recording() || items.is_empty() {
            return vec![None; items.len()];
        }
        // A queue-fed item's parent is in its message's attributes. Spans are
        // not worth failing a lease for: without them, the run's span is the parent.
        let attributes = match &self.queue {
            Some(_) => {
                let ids: Vec<String> = items.iter().map(|item| item.item.clone()).collect();
                self.state.run_item_message_attributes(&self.run_id, &ids).unwrap_or_else(|error| {
                    tracing::warn!(run = %self.run_id, error = %error, "cannot read the trace contexts of leased items");
                    BTreeMap::new()
                })
            }
            None => BTreeMap::new(),
        };
        let mut held = self.held();
        items
            .iter()
            .map(|item| {
                let span = self.run.item(ItemSpanStart {
                    job: &self.job,
                    run: &self.run_id,
                    item: &item.item,
                    attempt: item.attempts,
                    worker,
                    queue: self.queue.as_deref(),
                    message_trace_header: attributes.get(&item.item).and_then(|attributes| trace_header(attributes)),
                });
                let handed = span.handed_to_function().map(|context| context.xray_header());
                let previous = held
                    .insert(item.item.clone(), HeldItem { attempt: item.attempts, worker: worker.to_owned(), span });
                // Leased again without this coordinator seeing it released: that attempt is over.
                if let Some(previous) = previous {
                    previous.span.finish(ItemSpanEnd::Released);
                }
                handed
            })
            .collect()
    }

    /// An attempt's outcome is committed (or refused as stale).
    pub(crate) fn completed(&self, item: &str, attempt: u32, end: ItemSpanEnd) {
        let mut held = self.held();
        if held.get(item).is_some_and(|open| open.attempt == attempt)
            && let Some(open) = held.remove(item)
        {
            open.span.finish(end);
        }
    }

    /// Every item `worker` held went back to the pool (it was lost or stopped).
    pub(crate) fn released_from(&self, worker: &str) {
        let mut held = self.held();
        let released: Vec<String> =
            held.iter().filter(|(_, open)| open.worker == worker).map(|(item, _)| item.clone()).collect();
        for item in released {
            if let Some(open) = held.remove(&item) {
                open.span.finish(ItemSpanEnd::Released);
            }
        }
    }

    /// The run ended: what is still open was left unfinished, and the run's span ends.
    pub(crate) fn finish(&self, status: &str, succeeded: bool) {
        for (_, open) in std::mem::take(&mut *self.held()) {
            open.span.finish(ItemSpanEnd::Released);
        }
        self.run.finish(status, succeeded);
    }
}
