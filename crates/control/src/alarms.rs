//! Alarms: a condition on a metric held for a period, as CloudWatch alarms.
//! Queue metrics come from the queues' statistics; function metrics from the
//! invocation ledger over the alarm's period. An alarm fires once when its
//! condition has held for the whole period, and again only after it cleared.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use mayfly_core::Name;
use mayfly_spec::{AlarmSpec, Comparator, FunctionMeasure, Metric, QueueMeasure};
use mayfly_state::InvocationFilter;

use crate::{ControlError, ControlPlaneConfig};

#[derive(Default)]
pub struct AlarmState {
    /// Since when each alarm's condition has held (None: it does not).
    breaching_since: BTreeMap<Name, Option<Instant>>,
    /// Alarms that fired and have not cleared since.
    firing: BTreeSet<Name>,
    /// Per function: (when, failed) of recent invocations, and the last ledger id read.
    recent: BTreeMap<Name, (VecDeque<(mayfly_core::Timestamp, bool)>, u64)>,
}

fn holds(comparator: Comparator, value: f64, threshold: f64) -> bool {
    match comparator {
        Comparator::Greater => value > threshold,
        Comparator::GreaterOrEqual => value >= threshold,
        Comparator::Less => value < threshold,
        Comparator::LessOrEqual => value <= threshold,
    }
}

impl AlarmState {
    /// Evaluate every alarm; returns those that fired now.
    pub fn evaluate(&mut self, config: &ControlPlaneConfig) -> Result<BTreeSet<Name>, ControlError> {
        let mut fired = BTreeSet::new();
        for (name, alarm) in &config.architecture.alarms {
            let value = self.measure(config, alarm)?;
            let breaching = holds(alarm.when.comparator, value, alarm.when.threshold);
            let since = self.breaching_since.entry(name.clone()).or_default();
            if !breaching {
                *since = None;
                self.firing.remove(name);
                continue;
            }
            let started = *since.get_or_insert_with(Instant::now);
            if started.elapsed() >= alarm.when.period && self.firing.insert(name.clone()) {
                tracing::warn!(alarm = %name, value, threshold = alarm.when.threshold, "alarm fired");
                fired.insert(name.clone());
            }
        }
        Ok(fired)
    }

    fn measure(&mut self, config: &ControlPlaneConfig, alarm: &AlarmSpec) -> Result<f64, ControlError> {
        let state = config.state.as_ref();
        Ok(match &alarm.metric {
            Metric::Queue { queue, measure } => {
                let stats = state.queue_stats(queue)?;
                match measure {
                    QueueMeasure::Visible => stats.visible as f64,
                    QueueMeasure::InFlight => stats.in_flight as f64,
                    QueueMeasure::Delayed => stats.delayed as f64,
                    QueueMeasure::OldestAge => stats.oldest_age.map_or(0.0, |age| age.as_secs_f64()),
                    QueueMeasure::DlqDepth => match state.queue(queue)?.config.dead_letter {
                        Some(dlq) => {
                            let dlq = state.queue_stats(&dlq)?;
                            (dlq.visible + dlq.in_flight + dlq.delayed) as f64
                        }
                        None => 0.0,
                    },
                }
            }
            Metric::Function { function, measure } => {
                let (window, last_id) = self.recent.entry(function.clone()).or_default();
                loop {
                    let page = state.invocations(&InvocationFilter {
                        function: Some(function.clone()),
                        after_id: *last_id,
                        limit: 1_000,
                        outcome: None,
                    })?;
                    let Some(last) = page.last() else { break };
                    *last_id = last.id;
                    for invocation in &page {
                        window.push_back((invocation.record.started_at, invocation.record.outcome != "success"));
                    }
                }
                let horizon = config.clock.now().as_millis()
                    - i64::try_from(alarm.when.period.max(Duration::from_secs(1)).as_millis()).unwrap_or(i64::MAX);
                while window.front().is_some_and(|(at, _)| at.as_millis() < horizon) {
                    window.pop_front();
                }
                let invocations = window.len() as f64;
                let errors = window.iter().filter(|(_, failed)| *failed).count() as f64;
                match measure {
                    FunctionMeasure::Invocations => invocations,
                    FunctionMeasure::Errors => errors,
                    FunctionMeasure::ErrorRate => {
                        if invocations > 0.0 {
                            errors / invocations
                        } else {
                            0.0
                        }
                    }
                    FunctionMeasure::Throttles => 0.0, // FIXME: the invoker does not report waits for a slot yet
                }
            }
        })
    }
}
