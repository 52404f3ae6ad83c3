//! Alarms: a condition on a metric held for a period, as CloudWatch alarms.
//! Queue metrics come from the queues' statistics; function metrics from the
//! invocation ledger over the alarm's period, except throttles (invocations
//! that waited for a concurrency slot), which the invoker of this control
//! plane counts. An alarm fires once when its
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
    /// Per function: (when, the invoker's running count of throttles) at each
    /// evaluation, back to the last one before the alarm's period.
    throttle_samples: BTreeMap<Name, VecDeque<(mayfly_core::Timestamp, u64)>>,
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
                    FunctionMeasure::Throttles => {
                        // The invoker counts throttles since it started; the metric is the
                        // increase over the period (from the newest sample at or before its start).
                        let samples = self.throttle_samples.entry(function.clone()).or_default();
                        let now = config.clock.now();
                        let count = config.invoker.throttled_invocations(function);
                        samples.push_back((now, count));
                        while samples.get(1).is_some_and(|(at, _)| at.as_millis() <= horizon) {
                            samples.pop_front();
                        }
                        let base = samples.front().map_or(count, |(_, count)| *count);
                        count.saturating_sub(base) as f64
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! Defect 13 of issue 10: `throttles` counted invocations that waited for
    //! the concurrency cap (it always read 0).

    use std::sync::Arc;

    use mayfly_core::{Clock, SystemClock};
    use mayfly_runtime::{Invocation, Invoker, InvokerConfig};
    use mayfly_state::StateStore;
    use mayfly_state_sqlite::SqliteStore;

    use super::*;
    use crate::functions::function_definition;

    const SPEC: &str = r#"version = 1
name = "throttles"
[functions.capped]
command = ["python3", "-c", "import sys, time; sys.stdin.read(); time.sleep(1); print('{}')"]
concurrency = 1
[alarms.busy]
metric = "function.capped.throttles"
when = ">= 2 for 1s"
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_throttles_metric_counts_invocations_that_waited_for_the_concurrency_cap() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state: Arc<dyn StateStore> =
            Arc::new(SqliteStore::open(&dir.path().join("state.db"), clock.clone()).unwrap());
        let architecture = Arc::new(mayfly_spec::parse("test", SPEC).unwrap());
        let config = ControlPlaneConfig {
            architecture: architecture.clone(),
            deployment_version: None,
            project_root: dir.path().to_path_buf(),
            mayfly_bin: "mayfly".into(),
            state,
            invoker: Invoker::new(InvokerConfig::default()),
            clock,
            poll_interval: Duration::from_millis(10),
            jobs: None,
            leader: crate::LeaderLease::for_this_process(),
        };
        let mut alarms = AlarmState::default();
        assert_eq!(alarms.evaluate(&config).unwrap(), BTreeSet::new(), "nothing throttled yet");
        tokio::time::sleep(Duration::from_millis(1_100)).await; // that first look is now older than the period

        let name = Name::new("capped").unwrap();
        let definition = function_definition(
            &architecture,
            &name,
            &architecture.functions[&name],
            None,
            dir.path(),
            "mayfly".as_ref(),
        );
        let calls: Vec<_> = (0..3)
            .map(|number| {
                let (invoker, definition) = (config.invoker.clone(), definition.clone());
                let invocation = Invocation {
                    request_id: format!("r{number}"),
                    payload: b"{}".to_vec(),
                    trace_id: None,
                    traceparent: None,
                };
                tokio::spawn(async move { invoker.invoke(&definition, invocation).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().outcome.is_success());
        }
        // Three calls at once for one slot: the later ones waited (both, unless one started late).
        let throttled = config.invoker.throttled_invocations(&name);
        assert!((1..=2).contains(&throttled), "{throttled} throttled");

        // The throttles are within the alarm's period.
        let alarm = &architecture.alarms[&Name::new("busy").unwrap()];
        assert_eq!(alarms.measure(&config, alarm).unwrap(), throttled as f64);
        // A period later with no new throttle, the metric is back to 0.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(alarms.measure(&config, alarm).unwrap(), 0.0);
    }
}
