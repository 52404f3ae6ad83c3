//! Conformance cases of [`crate::ExperimentStore`].

#[allow(unused_imports)]
use super::*;

use crate::{
    Experiment, ExperimentComparison, ExperimentDetails, ExperimentOutcome, ExperimentRatio, ExperimentRun,
    ExperimentStore,
};

fn experiment_named(name: &str, outcome: ExperimentOutcome, started_at: Timestamp) -> Experiment {
    let run = |variant: &str, order: u32, makespan: f64| ExperimentRun {
        variant: variant.to_owned(),
        repetition: order.div_ceil(2),
        order,
        run_id: format!("run-{order}"),
        status: "succeeded".to_owned(),
        metrics: BTreeMap::from([("makespan".to_owned(), makespan), ("failures".to_owned(), 0.0)]),
        item_durations: vec![0.125, 0.5, 1.75],
    };
    Experiment {
        name: name.to_owned(),
        file_fingerprint: "9f".repeat(32),
        trigger: "experiment run".to_owned(),
        outcome,
        deployment_version: None,
        started_at,
        baseline: "plain".to_owned(),
        variants: vec!["plain".to_owned(), "indexed".to_owned()],
        details: ExperimentDetails {
            repetitions: 2,
            seed: 7,
            metrics: vec!["makespan".to_owned(), "failures".to_owned()],
            summaries: vec!["variant `indexed` against `plain`: 4.00× faster (95% CI 3.50–4.50); 2 runs each".into()],
            runs: vec![run("plain", 1, 8.0), run("indexed", 2, 2.0), run("indexed", 3, 2.25), run("plain", 4, 8.5)],
            comparisons: vec![ExperimentComparison {
                metric: "makespan".to_owned(),
                variant: "indexed".to_owned(),
                baseline: "plain".to_owned(),
                runs: 2,
                baseline_runs: 2,
                median: 2.125,
                baseline_median: 8.25,
                ratio: Some(ExperimentRatio { ratio: 0.2575, low: 0.2, high: 0.3 }),
                p_value: Some(0.333),
                differs: true,
                verdict: "3.88× faster".to_owned(),
            }],
            error: None,
        },
    }
}

pub fn experiments_are_recorded_with_their_evidence_and_listed_newest_first<S: ExperimentStore + ?Sized>(
    subject: Subject<S>,
) {
    let store = &subject.store;
    assert!(store.experiments(10).unwrap().is_empty(), "no experiment yet");
    let started = subject.clock.now();
    subject.clock.advance(Duration::from_secs(90));
    let first = store.record_experiment(&experiment_named("a.toml", ExperimentOutcome::Completed, started)).unwrap();
    assert_eq!(first.finished_at, subject.clock.now(), "recorded at the store's now");
    assert_eq!(first.experiment, experiment_named("a.toml", ExperimentOutcome::Completed, started));

    subject.clock.advance(Duration::from_secs(60));
    // An evaluation on deploy that failed: its error text (which may quote user code) round-trips.
    let mut failed =
        experiment_named("evaluation of mayfly.toml against deployment 3", ExperimentOutcome::Failed, started);
    failed.trigger = "deploy --evaluate".to_owned();
    failed.details.runs.truncate(1);
    failed.details.comparisons.clear();
    failed.details.error = Some("run 2 of 4 failed: Traceback — ünïcode 'quotes' \"and\" <tags>\nline 2".to_owned());
    let second = store.record_experiment(&failed).unwrap();
    assert!(second.id > first.id, "ids increase");
    assert_eq!(second.experiment, failed);

    let mut applied = experiment_named("evaluation", ExperimentOutcome::Applied, started);
    applied.deployment_version = Some(4);
    let third = store.record_experiment(&applied).unwrap();

    let listed = store.experiments(10).unwrap();
    let ids: Vec<u64> = listed.iter().map(|record| record.id).collect();
    assert_eq!(ids, [third.id, second.id, first.id], "newest first");
    assert_eq!(listed[0], third);
    assert_eq!(listed[0].experiment.deployment_version, Some(4));
    assert_eq!(store.experiments(2).unwrap().len(), 2, "at most the limit");
    assert_eq!(store.experiment(second.id).unwrap(), second);
    assert_eq!(store.experiment(first.id).unwrap(), first);
}

pub fn an_unknown_experiment_is_not_found<S: ExperimentStore + ?Sized>(subject: Subject<S>) {
    assert_not_found(subject.store.experiment(1), "experiment", "1");
    let recorded = subject
        .store
        .record_experiment(&experiment_named("a.toml", ExperimentOutcome::Refused, subject.clock.now()))
        .unwrap();
    assert_not_found(subject.store.experiment(recorded.id + 1), "experiment", &(recorded.id + 1).to_string());
}
