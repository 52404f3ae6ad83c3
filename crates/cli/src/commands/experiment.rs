//! `mayfly experiment run FILE`: deploys each variant of the architecture
//! file into a scratch copy of the project, replays the same workload on
//! each in an interleaved, randomised order, and reports per metric the ratio
//! to the baseline with a 95% interval, a rank test and a plain verdict
//! (`mayfly-experiment`), as text or `--json`, and as an offline HTML report.
//! Every experiment that got as far as deploying its variants is recorded in
//! the project's own state store (`ExperimentStore`), completed or failed
//! with its error; `mayfly experiment list` and `show ID` read them back.
//! `mayfly deploy --evaluate` runs the same machinery on two variants, the
//! deployed version and the new file ([`evaluate_against_deployed`]).
//!
//! Each run is the same `mayfly` binary driving a scratch project the way a
//! user would (`deploy`, `put`, `send`, `run`), each in a process of its
//! own, so a variant sees exactly what a deployment of it would; a
//! variant's `setup` jobs run the same way, once, unmeasured, before its
//! runs. Scratch projects hold their own embedded state and keyring in one
//! temporary folder, removed when the experiment ends, fails or is
//! interrupted by an error; the project's own state is never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use mayfly_core::Clock as _;
use mayfly_experiment::{Comparison, Metric, RunMeasurement, compare, report, summaries};
use mayfly_spec::{EvaluationSpec, ExperimentSpec, VariantSpec, WorkloadInput};
use mayfly_state::{
    Deployment, Experiment, ExperimentComparison, ExperimentDetails, ExperimentOutcome, ExperimentRatio,
    ExperimentRecord, ExperimentRun,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;

use crate::output::Output;
use crate::project::Project;

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Deploy each variant into a scratch copy of the project, replay the workload on each, and compare.
    #[command(
        after_help = "Examples:\n  mayfly experiment run experiment.toml\n  mayfly experiment run experiment.toml --report report.html --json\n\nThe experiment file names the workload (a job and its input), the variants (changes to\nmayfly.toml, or another architecture file), repetitions and metrics: see README, \"Comparing\narchitectures with mayfly experiment\"."
    )]
    Run(RunArgs),
    /// The recorded experiments (and evaluations on deploy), newest first.
    #[command(after_help = "Examples:\n  mayfly experiment list\n  mayfly experiment list --limit 5 --json")]
    List(ListArgs),
    /// One recorded experiment: its verdicts, each metric's ratio with its interval and p-value, every run.
    #[command(
        after_help = "Examples:\n  mayfly experiment show 3\n  mayfly experiment show 3 --json\n  mayfly experiment show 3 --report exp3.html   # the HTML report again, from the stored evidence"
    )]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The experiment's id, from `mayfly experiment list`.
    pub id: u64,
    /// Also write its HTML report (the one `experiment run` writes) to this
    /// file, drawn again from the evidence the state store kept.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// Where to write the HTML report (default: beside the experiment file, `<name>.report.html`).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Environment variables a scratch project must not inherit: it keeps its
/// own embedded state, never the project's shared store.
const ISOLATED_ENV: &[&str] = &["MAYFLY_STATE_URL", "MAYFLY_STORAGE_URL", "MAYFLY_PROJECT", "MAYFLY_KEYRING"];

pub async fn run(command: ExperimentCommand, project: Option<&Path>, output: Output) -> Result<()> {
    match command {
        ExperimentCommand::Run(args) => run_experiment(args, project, output).await,
        ExperimentCommand::List(args) => list_experiments(args, project, output),
        ExperimentCommand::Show(args) => show_experiment(args, project, output),
    }
}

#[derive(Serialize)]
struct ExperimentView<'a> {
    /// Its id in the project's state store (`mayfly experiment show ID`).
    experiment_id: u64,
    file: String,
    baseline: &'a str,
    repetitions: u32,
    seed: u64,
    summaries: &'a [String],
    comparisons: &'a [mayfly_experiment::Comparison],
    runs: &'a [RunMeasurement],
    report: String,
}

async fn run_experiment(args: RunArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the experiment file {}", args.file.display()))?;
    let file_name = args.file.display().to_string();
    let spec = mayfly_spec::parse_experiment(&file_name, &text).map_err(|diagnostics| anyhow!(diagnostics))?;
    let experiment_dir = args.file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let report_path = args.report.clone().unwrap_or_else(|| {
        let stem = args.file.file_stem().map_or("experiment".into(), |stem| stem.to_string_lossy().into_owned());
        experiment_dir.join(format!("{stem}.report.html"))
    });

    // Every variant's architecture is made and checked before anything runs.
    let project_spec = std::fs::read_to_string(located.spec_path())
        .with_context(|| format!("cannot read {}", located.spec_path().display()))?;
    let deployments = if spec.variants.iter().any(|variant| variant.version.is_some()) {
        recorded_deployments(&located)?
    } else {
        Vec::new()
    };
    let mut architectures = Vec::new();
    for variant in &spec.variants {
        let base = VariantBase { project_spec: &project_spec, deployments: &deployments, experiment_dir };
        architectures.push(variant_architecture(&spec, variant, &base)?);
    }

    let started_at = mayfly_core::SystemClock.now();
    let fingerprint = mayfly_spec::content_hash(&text);
    let (runs, measured) = measure_variants(&located.root, &spec, &architectures, experiment_dir, output);
    if let Err(error) = measured {
        let details = experiment_details(&spec, &runs, &[], &[], Some(format!("{error:#}")));
        let experiment = Experiment {
            name: file_name.clone(),
            file_fingerprint: fingerprint,
            trigger: "experiment run".to_owned(),
            outcome: ExperimentOutcome::Failed,
            deployment_version: None,
            started_at,
            baseline: spec.baseline.clone(),
            variants: spec.variants.iter().map(|variant| variant.name.clone()).collect(),
            details,
        };
        if let Err(record_error) = record_in_project(&located, &experiment) {
            eprintln!("warning: the failed experiment could not be recorded: {record_error:#}");
        }
        return Err(error);
    }

    let comparisons = compare(&runs, &spec.baseline, &spec.metrics, spec.seed);
    let summaries = summaries(&comparisons);
    let variants: Vec<String> = spec.variants.iter().map(|variant| variant.name.clone()).collect();
    let details = format!(
        "{} run at {}; job `{}`; {} repetitions of {} variants, interleaved in a shuffled order (seed {}); baseline `{}`",
        file_name,
        crate::output::json_time(mayfly_core::SystemClock.now()),
        spec.workload.job,
        spec.repetitions,
        variants.len(),
        spec.seed,
        spec.baseline
    );
    let context = report::ReportContext {
        title: &format!("Experiment {file_name}"),
        baseline: &spec.baseline,
        variants: &variants,
        metrics: &spec.metrics,
        summaries: &summaries,
        details: &details,
    };
    std::fs::write(&report_path, report::html(&context, &runs, &comparisons))
        .with_context(|| format!("cannot write the report {}", report_path.display()))?;
    let experiment = Experiment {
        name: file_name.clone(),
        file_fingerprint: fingerprint,
        trigger: "experiment run".to_owned(),
        outcome: ExperimentOutcome::Completed,
        deployment_version: None,
        started_at,
        baseline: spec.baseline.clone(),
        variants: variants.clone(),
        details: experiment_details(&spec, &runs, &comparisons, &summaries, None),
    };
    let recorded = record_in_project(&located, &experiment)?;

    let view = ExperimentView {
        experiment_id: recorded.id,
        file: file_name,
        baseline: &spec.baseline,
        repetitions: spec.repetitions,
        seed: spec.seed,
        summaries: &summaries,
        comparisons: &comparisons,
        runs: &runs,
        report: report_path.display().to_string(),
    };
    output.emit(&view, || {
        let mut text = String::new();
        for summary in &summaries {
            text.push_str(summary);
            text.push('\n');
        }
        let rows: Vec<Vec<String>> = comparisons
            .iter()
            .map(|c| {
                vec![
                    c.metric.name().to_owned(),
                    c.variant.clone(),
                    c.metric.format(c.median),
                    c.metric.format(c.baseline_median),
                    c.verdict.clone(),
                ]
            })
            .collect();
        text.push('\n');
        text.push_str(&crate::output::table(&["METRIC", "VARIANT", "MEDIAN", "BASELINE", "VERDICT"], &rows));
        text.push_str(&format!("\nreport: {}\n", report_path.display()));
        text.push_str(&format!("recorded as experiment {} (`mayfly experiment show {}`)\n", recorded.id, recorded.id));
        text
    })
}

/// Deploys each variant's architecture into a scratch project of its own
/// (in one temporary folder, removed when this returns), runs its setup
/// jobs, then replays the workload interleaved in a shuffled order. Returns
/// the runs measured, and the error that stopped it, if any (the runs
/// before it are still returned, for the record).
fn measure_variants(
    project_root: &Path,
    spec: &ExperimentSpec,
    architectures: &[String],
    experiment_dir: &Path,
    output: Output,
) -> (Vec<RunMeasurement>, Result<()>) {
    let mut runs = Vec::new();
    let outcome = measure_variants_into(project_root, spec, architectures, experiment_dir, output, &mut runs);
    (runs, outcome)
}

fn measure_variants_into(
    project_root: &Path,
    spec: &ExperimentSpec,
    architectures: &[String],
    experiment_dir: &Path,
    output: Output,
    runs: &mut Vec<RunMeasurement>,
) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("mayfly-experiment-")
        .tempdir()
        .context("cannot make the experiment's scratch folder")?;
    let mut projects = Vec::new();
    for (variant, architecture) in spec.variants.iter().zip(architectures) {
        let dir = scratch.path().join(&variant.name);
        make_scratch_project(project_root, &dir, architecture)?;
        let scratch_project = ScratchProject { dir, variant: variant.name.clone() };
        scratch_project.mayfly(&["deploy"], None).with_context(|| {
            format!("cannot deploy variant `{}` ({}) into its scratch project", variant.name, variant.location)
        })?;
        if let WorkloadInput::Objects { bucket, prefix, dir } = &spec.workload.input {
            put_objects(&scratch_project, bucket, prefix, &experiment_dir.join(dir))?;
        }
        for job in &variant.setup {
            run_setup_job(&scratch_project, job.as_str(), output).with_context(|| {
                format!("the setup of variant `{}` ({}) failed; the experiment stops", variant.name, variant.location)
            })?;
        }
        projects.push(scratch_project);
    }

    // Interleaved: each repetition runs every variant once, in an order shuffled per repetition.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let mut order = Vec::new();
    for repetition in 1..=spec.repetitions {
        let mut block: Vec<usize> = (0..projects.len()).collect();
        block.shuffle(&mut rng);
        order.extend(block.into_iter().map(|variant| (variant, repetition)));
    }
    let total = order.len();
    for (index, (variant, repetition)) in order.into_iter().enumerate() {
        let scratch_project = &projects[variant];
        let measurement =
            measure_run(spec, scratch_project, experiment_dir, repetition, index as u32 + 1).with_context(|| {
                format!(
                    "run {} of {total} (variant `{}`, repetition {repetition}) of job `{}` failed; the experiment stops and its scratch projects are removed",
                    index + 1,
                    scratch_project.variant,
                    spec.workload.job
                )
            })?;
        if !output.json {
            eprintln!(
                "[{}/{total}] variant `{}` repetition {repetition}: {} in {}",
                index + 1,
                scratch_project.variant,
                measurement.status,
                measurement.metrics.get(&Metric::Makespan).map_or("?".to_owned(), |m| Metric::Makespan.format(*m))
            );
        }
        runs.push(measurement);
    }
    drop(scratch);
    Ok(())
}

/// Records `experiment` in the project's own state store (created if the
/// project was never deployed), never a scratch project's.
fn record_in_project(project: &Project, experiment: &Experiment) -> Result<ExperimentRecord> {
    let opened = project.open(true)?;
    opened
        .state
        .record_experiment(experiment)
        .with_context(|| format!("cannot record experiment `{}` in the project's state store", experiment.name))
}

/// The evidence as the state store keeps it.
fn experiment_details(
    spec: &ExperimentSpec,
    runs: &[RunMeasurement],
    comparisons: &[Comparison],
    summaries: &[String],
    error: Option<String>,
) -> ExperimentDetails {
    ExperimentDetails {
        repetitions: spec.repetitions,
        seed: spec.seed,
        metrics: spec.metrics.iter().map(|metric| metric.name().to_owned()).collect(),
        summaries: summaries.to_vec(),
        runs: runs
            .iter()
            .map(|run| ExperimentRun {
                variant: run.variant.clone(),
                repetition: run.repetition,
                order: run.order,
                run_id: run.run_id.clone(),
                status: run.status.clone(),
                metrics: run
                    .metrics
                    .iter()
                    .filter(|(_, value)| value.is_finite())
                    .map(|(metric, value)| (metric.name().to_owned(), *value))
                    .collect(),
                item_durations: run.item_durations.clone(),
            })
            .collect(),
        comparisons: comparisons
            .iter()
            .map(|comparison| ExperimentComparison {
                metric: comparison.metric.name().to_owned(),
                variant: comparison.variant.clone(),
                baseline: comparison.baseline.clone(),
                runs: comparison.runs,
                baseline_runs: comparison.baseline_runs,
                median: comparison.median,
                baseline_median: comparison.baseline_median,
                ratio: comparison.ratio.map(|ratio| ExperimentRatio {
                    ratio: ratio.ratio,
                    low: ratio.low,
                    high: ratio.high,
                }),
                p_value: comparison.p_value,
                differs: comparison.differs,
                verdict: comparison.verdict.clone(),
            })
            .collect(),
        error,
    }
}

/// What `mayfly deploy --evaluate` found: the verdicts of the new file
/// against the deployed version, the regressions among makespan and cost,
/// and the experiment as it will be recorded (its outcome set by the caller).
pub(crate) struct Evaluation {
    pub experiment: Experiment,
    pub summaries: Vec<String>,
    pub comparisons: Vec<Comparison>,
    /// "makespan is 1.52× the baseline's (95% CI 1.31–1.80; …)", one per regression.
    pub regressions: Vec<String>,
}

/// The variant names of an evaluation.
pub(crate) const DEPLOYED_VARIANT: &str = "deployed";
pub(crate) const NEW_VARIANT: &str = "new";

/// Replays `[evaluation]`'s workload on the deployed version (`deployed`,
/// the baseline) and on the new file (`new`), each in a scratch project with
/// the project's files, interleaved. On failure the experiment is recorded
/// as failed, with its error, and the error returned.
pub(crate) fn evaluate_against_deployed(
    project: &Project,
    evaluation: &EvaluationSpec,
    deployed: &Deployment,
    new_source: &str,
    output: Output,
) -> Result<Evaluation> {
    let deployed_architecture = mayfly_spec::parse(&format!("deployment {}", deployed.version), &deployed.source)
        .map_err(|diagnostics| anyhow!(diagnostics))
        .with_context(|| format!("the deployed version {} no longer parses", deployed.version))?;
    if !deployed_architecture.jobs.contains_key(&evaluation.workload.job) {
        bail!(crate::exit_code::Refused(format!(
            "the deployed version {} has no job `{}`, which `[evaluation]` replays, so there is nothing to compare with; deploy once without --evaluate",
            deployed.version, evaluation.workload.job
        )));
    }
    let variant = |name: &str, version: Option<u64>, location: String| VariantSpec {
        name: name.to_owned(),
        file: None,
        version,
        set: Vec::new(),
        unset: Vec::new(),
        setup: Vec::new(),
        location,
    };
    let spec = ExperimentSpec {
        workload: evaluation.workload.clone(),
        repetitions: evaluation.repetitions,
        seed: evaluation.seed,
        metrics: evaluation.metrics.clone(),
        baseline: DEPLOYED_VARIANT.to_owned(),
        variants: vec![
            // The deployed version, as an experiment's `version = N` variant is made.
            variant(DEPLOYED_VARIANT, Some(deployed.version), format!("deployment {}", deployed.version)),
            variant(NEW_VARIANT, None, project.spec_path().display().to_string()),
        ],
    };
    let started_at = mayfly_core::SystemClock.now();
    let base = VariantBase {
        project_spec: new_source,
        deployments: std::slice::from_ref(deployed),
        experiment_dir: &project.root,
    };
    let architectures: Vec<String> =
        spec.variants.iter().map(|variant| variant_architecture(&spec, variant, &base)).collect::<Result<_>>()?;
    if !output.json {
        eprintln!(
            "evaluating mayfly.toml against deployment {}: job `{}`, {} runs of each",
            deployed.version, evaluation.workload.job, evaluation.repetitions
        );
    }
    let (runs, measured) = measure_variants(&project.root, &spec, &architectures, &project.root, output);
    let mut experiment = Experiment {
        name: format!("evaluation of mayfly.toml against deployment {}", deployed.version),
        file_fingerprint: mayfly_spec::content_hash(new_source),
        trigger: "deploy --evaluate".to_owned(),
        outcome: ExperimentOutcome::Failed,
        deployment_version: None,
        started_at,
        baseline: DEPLOYED_VARIANT.to_owned(),
        variants: vec![DEPLOYED_VARIANT.to_owned(), NEW_VARIANT.to_owned()],
        details: ExperimentDetails::default(),
    };
    if let Err(error) = measured {
        let error = error.context("the evaluation failed, so nothing was deployed");
        experiment.details = experiment_details(&spec, &runs, &[], &[], Some(format!("{error:#}")));
        if let Err(record_error) = record_in_project(project, &experiment) {
            eprintln!("warning: the failed evaluation could not be recorded: {record_error:#}");
        }
        return Err(error);
    }
    let comparisons = compare(&runs, DEPLOYED_VARIANT, &spec.metrics, spec.seed);
    let summaries = summaries(&comparisons);
    let regressions: Vec<String> =
        mayfly_experiment::regressions(&comparisons, &[Metric::Makespan, Metric::Cost], evaluation.tolerance)
            .into_iter()
            .map(mayfly_experiment::describe_regression)
            .collect();
    experiment.details = experiment_details(&spec, &runs, &comparisons, &summaries, None);
    Ok(Evaluation { experiment, summaries, comparisons, regressions })
}

/// Records an evaluation with its outcome (and the version it was applied as).
pub(crate) fn record_evaluation(
    project: &Project,
    evaluation: &Evaluation,
    outcome: ExperimentOutcome,
    deployment_version: Option<u64>,
    error: Option<String>,
) -> Result<ExperimentRecord> {
    let mut experiment = evaluation.experiment.clone();
    experiment.outcome = outcome;
    experiment.deployment_version = deployment_version;
    experiment.details.error = error;
    record_in_project(project, &experiment)
}

/// One recorded experiment as `list` shows it.
#[derive(Serialize)]
struct ListedExperiment {
    id: u64,
    name: String,
    trigger: String,
    outcome: ExperimentOutcome,
    deployment_version: Option<u64>,
    started_at: String,
    finished_at: String,
    baseline: String,
    variants: Vec<String>,
    runs: usize,
    summaries: Vec<String>,
    error: Option<String>,
}

fn listed(record: &ExperimentRecord) -> ListedExperiment {
    let experiment = &record.experiment;
    ListedExperiment {
        id: record.id,
        name: experiment.name.clone(),
        trigger: experiment.trigger.clone(),
        outcome: experiment.outcome,
        deployment_version: experiment.deployment_version,
        started_at: crate::output::json_time(experiment.started_at),
        finished_at: crate::output::json_time(record.finished_at),
        baseline: experiment.baseline.clone(),
        variants: experiment.variants.clone(),
        runs: experiment.details.runs.len(),
        summaries: experiment.details.summaries.clone(),
        error: experiment.details.error.clone(),
    }
}

fn list_experiments(args: ListArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let records = opened.state.experiments(args.limit)?;
    let rows: Vec<ListedExperiment> = records.iter().map(listed).collect();
    output.emit(&rows, || {
        if rows.is_empty() {
            return "no experiments recorded yet; run `mayfly experiment run FILE` or `mayfly deploy --evaluate`"
                .to_owned();
        }
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let outcome = match row.deployment_version {
                    Some(version) => format!("{} as version {version}", row.outcome.as_str()),
                    None => row.outcome.as_str().to_owned(),
                };
                let verdict = match (&row.error, row.summaries.is_empty()) {
                    (Some(error), _) => first_line(error),
                    (None, false) => row.summaries.join(" | "),
                    (None, true) => String::new(),
                };
                vec![row.id.to_string(), row.finished_at.clone(), outcome, row.name.clone(), verdict]
            })
            .collect();
        crate::output::table(&["ID", "FINISHED", "OUTCOME", "EXPERIMENT", "VERDICT"], &table_rows)
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// One recorded experiment as `show` prints it.
#[derive(Serialize)]
struct ShownExperiment<'a> {
    #[serde(flatten)]
    listed: ListedExperiment,
    file_fingerprint: &'a str,
    repetitions: u32,
    seed: u64,
    metrics: &'a [String],
    comparisons: &'a [ExperimentComparison],
    runs: &'a [ExperimentRun],
    /// Where `--report` wrote the HTML report.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<String>,
}

fn show_experiment(args: ShowArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let record = opened.state.experiment(args.id).map_err(|error| match error {
        mayfly_state::StateError::NotFound { .. } => anyhow!(crate::exit_code::NotFound(format!(
            "there is no experiment {}; see `mayfly experiment list`",
            args.id
        ))),
        other => anyhow!(other),
    })?;
    let details = &record.experiment.details;
    let report_path = match &args.report {
        Some(path) => {
            std::fs::write(path, stored_report(&record))
                .with_context(|| format!("cannot write the report {}", path.display()))?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let shown = ShownExperiment {
        listed: listed(&record),
        file_fingerprint: &record.experiment.file_fingerprint,
        repetitions: details.repetitions,
        seed: details.seed,
        metrics: &details.metrics,
        comparisons: &details.comparisons,
        runs: &details.runs,
        report: report_path,
    };
    output.emit(&shown, || {
        let listed = &shown.listed;
        let mut text = format!(
            "experiment {}: {}\n{} ({}), {} to {}\nbaseline `{}`; variants {}; {} repetitions, seed {}\n",
            listed.id,
            listed.name,
            listed.outcome.as_str(),
            listed.trigger,
            listed.started_at,
            listed.finished_at,
            listed.baseline,
            listed.variants.join(", "),
            shown.repetitions,
            shown.seed
        );
        if let Some(version) = listed.deployment_version {
            text.push_str(&format!("applied as deployment version {version}\n"));
        }
        if let Some(error) = &listed.error {
            text.push_str(&format!("error: {error}\n"));
        }
        for summary in &listed.summaries {
            text.push_str(&format!("{summary}\n"));
        }
        if !shown.comparisons.is_empty() {
            let rows: Vec<Vec<String>> = shown
                .comparisons
                .iter()
                .map(|c| {
                    vec![
                        c.metric.clone(),
                        c.variant.clone(),
                        c.ratio.map_or("—".to_owned(), |r| format!("{:.3} ({:.3}–{:.3})", r.ratio, r.low, r.high)),
                        c.p_value.map_or("—".to_owned(), |p| format!("{p:.4}")),
                        c.verdict.clone(),
                    ]
                })
                .collect();
            text.push('\n');
            text.push_str(&crate::output::table(&["METRIC", "VARIANT", "RATIO (95% CI)", "P", "VERDICT"], &rows));
        }
        if !shown.runs.is_empty() {
            let rows: Vec<Vec<String>> = shown
                .runs
                .iter()
                .map(|run| {
                    vec![
                        run.order.to_string(),
                        run.variant.clone(),
                        run.repetition.to_string(),
                        run.status.clone(),
                        run.metrics.get("makespan").map_or("—".to_owned(), |m| Metric::Makespan.format(*m)),
                    ]
                })
                .collect();
            text.push('\n');
            text.push_str(&crate::output::table(&["#", "VARIANT", "REPETITION", "STATUS", "MAKESPAN"], &rows));
        }
        if let Some(report) = &shown.report {
            text.push_str(&format!("\nreport: {report}\n"));
        }
        text
    })
}

/// The HTML report of a recorded experiment, drawn from the evidence the
/// state store kept (the same page `experiment run` wrote when it ended).
fn stored_report(record: &ExperimentRecord) -> String {
    let experiment = &record.experiment;
    let details = &experiment.details;
    let metrics: Vec<Metric> = details.metrics.iter().filter_map(|name| Metric::from_name(name)).collect();
    let runs: Vec<RunMeasurement> = details
        .runs
        .iter()
        .map(|run| RunMeasurement {
            variant: run.variant.clone(),
            repetition: run.repetition,
            order: run.order,
            run_id: run.run_id.clone(),
            status: run.status.clone(),
            metrics: run.metrics.iter().filter_map(|(name, value)| Some((Metric::from_name(name)?, *value))).collect(),
            item_durations: run.item_durations.clone(),
        })
        .collect();
    let comparisons: Vec<Comparison> = details
        .comparisons
        .iter()
        .filter_map(|comparison| {
            Some(Comparison {
                metric: Metric::from_name(&comparison.metric)?,
                variant: comparison.variant.clone(),
                baseline: comparison.baseline.clone(),
                runs: comparison.runs,
                baseline_runs: comparison.baseline_runs,
                median: comparison.median,
                baseline_median: comparison.baseline_median,
                ratio: comparison.ratio.map(|ratio| mayfly_experiment::stats::RatioEstimate {
                    ratio: ratio.ratio,
                    low: ratio.low,
                    high: ratio.high,
                }),
                p_value: comparison.p_value,
                differs: comparison.differs,
                verdict: comparison.verdict.clone(),
            })
        })
        .collect();
    // No error text: it may quote a function's output, and the report is a plain file.
    let about = format!(
        "experiment {} ({}, {}), {} to {}; {} repetitions of {} variants, seed {}; baseline `{}`",
        record.id,
        experiment.trigger,
        experiment.outcome.as_str(),
        crate::output::json_time(experiment.started_at),
        crate::output::json_time(record.finished_at),
        details.repetitions,
        experiment.variants.len(),
        details.seed,
        experiment.baseline
    );
    let context = report::ReportContext {
        title: &format!("Experiment {}", experiment.name),
        baseline: &experiment.baseline,
        variants: &experiment.variants,
        metrics: &metrics,
        summaries: &details.summaries,
        details: &about,
    };
    report::html(&context, &runs, &comparisons)
}

/// What a variant's architecture may start from.
struct VariantBase<'a> {
    /// The project's `mayfly.toml`.
    project_spec: &'a str,
    /// The project's deployments (read only when a variant names a `version`).
    deployments: &'a [Deployment],
    /// Where the experiment file is: its variants' `file`s are relative to it.
    experiment_dir: &'a Path,
}

/// Every deployment the project's state store recorded, oldest first; none
/// for a project never deployed.
fn recorded_deployments(project: &Project) -> Result<Vec<Deployment>> {
    if !project.is_deployed()? {
        return Ok(Vec::new());
    }
    let opened = project.open(false)?;
    opened.state.deployments().context("cannot read the project's deployments")
}

/// The variant's `mayfly.toml`: its `file`, the architecture file recorded
/// for deployment `version` (so `deploy --evaluate` makes its `deployed`
/// variant), or the project's, with `unset` and then `set` applied, checked
/// as a whole architecture file.
fn variant_architecture(spec: &ExperimentSpec, variant: &VariantSpec, from: &VariantBase<'_>) -> Result<String> {
    let what = format!("variant `{}` ({})", variant.name, variant.location);
    let base = match (&variant.file, variant.version) {
        (Some(file), _) => {
            let path = from.experiment_dir.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("{what}: cannot read {}", path.display()))?
        }
        (None, Some(version)) => match from.deployments.iter().find(|deployment| deployment.version == version) {
            Some(deployment) => deployment.source.clone(),
            None => {
                let known = match (from.deployments.first(), from.deployments.last()) {
                    (Some(first), Some(last)) => format!(
                        "its deployments are versions {} to {} (`mayfly deployments`)",
                        first.version, last.version
                    ),
                    _ => "it has none yet (`mayfly deploy` records one)".to_owned(),
                };
                bail!(crate::exit_code::NotFound(format!(
                    "{what}: `version = {version}` names no deployment of this project; {known}"
                )));
            }
        },
        (None, None) => from.project_spec.to_owned(),
    };
    let text = if variant.set.is_empty() && variant.unset.is_empty() {
        base
    } else {
        let mut document: toml::Table =
            toml::from_str(&base).with_context(|| format!("{what}: its base file is not TOML"))?;
        for path in &variant.unset {
            unset_path(&mut document, path);
        }
        for (path, value) in &variant.set {
            set_path(&mut document, path, value.clone()).map_err(|reason| anyhow!("{what}: {reason}"))?;
        }
        toml::to_string(&document).with_context(|| format!("{what}: cannot write its mayfly.toml"))?
    };
    let architecture = mayfly_spec::parse(&format!("mayfly.toml of {what}"), &text)
        .map_err(|diagnostics| anyhow!(diagnostics))
        .with_context(|| format!("{what} makes an invalid architecture file"))?;
    if !architecture.jobs.contains_key(&spec.workload.job) {
        bail!("{what} has no job `{}`, which `[workload]` replays", spec.workload.job);
    }
    if let Some(missing) = variant.setup.iter().find(|job| !architecture.jobs.contains_key(*job)) {
        bail!("{what} has no job `{missing}`, which its `setup` runs");
    }
    Ok(text)
}

fn set_path(document: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("an empty path")?;
    let mut table = document;
    for (depth, part) in parents.iter().enumerate() {
        let entry = table.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a table in mayfly.toml, so `{}` cannot be set",
                path[..=depth].join("."),
                path.join(".")
            )
        })?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

fn unset_path(document: &mut toml::Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut table = document;
    for part in parents {
        match table.get_mut(part).and_then(toml::Value::as_table_mut) {
            Some(next) => table = next,
            None => return,
        }
    }
    table.remove(last);
}

/// A scratch project: the project's files (linked, not copied) beside the
/// variant's own `mayfly.toml`, and no `.mayfly` folder (a fresh state).
fn make_scratch_project(root: &Path, dir: &Path, architecture: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    for entry in std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_str(), Some("mayfly.toml" | ".mayfly" | ".git" | "target")) {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.join(&name))
            .with_context(|| format!("cannot link {} into the scratch project", entry.path().display()))?;
    }
    std::fs::write(dir.join("mayfly.toml"), architecture).context("cannot write a scratch mayfly.toml")
}

struct ScratchProject {
    dir: PathBuf,
    variant: String,
}

impl ScratchProject {
    /// Runs `mayfly --project DIR --json ARGS` and returns its JSON output.
    fn mayfly(&self, args: &[&str], stdin: Option<&Path>) -> Result<Value> {
        let exe = std::env::current_exe().context("cannot find the mayfly binary")?;
        let mut command = Command::new(exe);
        command.arg("--project").arg(&self.dir).arg("--json").args(args);
        for name in ISOLATED_ENV {
            command.env_remove(name);
        }
        command.stdin(match stdin {
            Some(path) => {
                Stdio::from(std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
            }
            None => Stdio::null(),
        });
        let output = command.output().context("cannot start mayfly for a scratch project")?;
        let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            let error = stdout["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&output.stderr).trim().to_owned());
            bail!("`mayfly {}` failed: {error}", args.join(" "));
        }
        Ok(stdout)
    }
}

fn put_objects(project: &ScratchProject, bucket: &str, prefix: &str, dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)
        .with_context(|| format!("cannot list the workload's objects in {}", dir.display()))?;
    files.sort();
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy().into_owned();
        let file_arg = file.display().to_string();
        project.mayfly(&["put", &format!("{bucket}/{prefix}{relative}"), &file_arg], None)?;
    }
    Ok(())
}

fn collect_files(dir: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { collect_files(&path, into)? } else { into.push(path) }
    }
    Ok(())
}

/// Runs a variant's setup job once on its scratch project; it must succeed.
fn run_setup_job(project: &ScratchProject, job: &str, output: Output) -> Result<()> {
    let outcome = project.mayfly(&["run", job], None)?;
    let status = outcome["status"].as_str().unwrap_or("unknown");
    if status != "succeeded" {
        bail!("setup job `{job}` ended `{status}`: {}", outcome["report"]["notes"]);
    }
    if !output.json {
        let makespan = outcome["report"]["makespan_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        eprintln!(
            "variant `{}`: setup job `{job}` succeeded in {}",
            project.variant,
            Metric::Makespan.format(makespan)
        );
    }
    Ok(())
}

/// One run of the workload on `project`: its input put in place, `mayfly
/// run JOB`, and what it measured.
fn measure_run(
    spec: &ExperimentSpec,
    project: &ScratchProject,
    experiment_dir: &Path,
    repetition: u32,
    order: u32,
) -> Result<RunMeasurement> {
    match &spec.workload.input {
        WorkloadInput::Manifest { bucket, key, file } => {
            let file = experiment_dir.join(file).display().to_string();
            project.mayfly(&["put", &format!("{bucket}/{key}"), &file], None)?;
        }
        WorkloadInput::Messages { queue, file } => {
            project.mayfly(&["send", queue, "--lines"], Some(&experiment_dir.join(file)))?;
        }
        WorkloadInput::Objects { .. } | WorkloadInput::Nothing => {}
    }
    let cpu_before = children_cpu_seconds();
    let outcome = project.mayfly(&["run", spec.workload.job.as_str()], None)?;
    let cpu_seconds = children_cpu_seconds() - cpu_before;
    let status = outcome["status"].as_str().unwrap_or("unknown").to_owned();
    let run_id = outcome["run"].as_str().unwrap_or_default().to_owned();
    if status != "succeeded" {
        bail!("run {run_id} ended `{status}`: {}", outcome["report"]["notes"]);
    }
    let report = &outcome["report"];
    let number = |field: &str| report[field].as_f64().unwrap_or(0.0);
    let item_durations = item_durations(&project.dir, &run_id)?;
    let mut metrics = BTreeMap::from([
        (Metric::Makespan, number("makespan_ms") / 1000.0),
        (Metric::Cost, number("estimated_cost")),
        (Metric::CpuSeconds, cpu_seconds),
        (Metric::Failures, number("items_failed_attempts") + number("items_dead_lettered")),
    ]);
    if let Some(p50) = mayfly_experiment::stats::quantile(&item_durations, 0.5) {
        metrics.insert(Metric::ItemP50, p50);
    }
    if let Some(p95) = mayfly_experiment::stats::quantile(&item_durations, 0.95) {
        metrics.insert(Metric::ItemP95, p95);
    }
    Ok(RunMeasurement { variant: project.variant.clone(), repetition, order, run_id, status, metrics, item_durations })
}

/// Every finished attempt's duration in the run, in seconds, from the scratch project's ledger.
fn item_durations(dir: &Path, run: &str) -> Result<Vec<f64>> {
    let project = Project::locate(Some(dir))?;
    let opened = project.open(false)?;
    let attempts = opened.state.run_item_attempts(run, usize::MAX >> 1)?;
    Ok(attempts
        .iter()
        .filter_map(|attempt| attempt.ended_at.map(|ended| ended.duration_since(attempt.started_at).as_secs_f64()))
        .collect())
}

/// User plus system CPU time of this process's waited-for children and
/// their waited-for descendants (a run's coordinator, its local workers and
/// their functions), in seconds.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage struct, which we own.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
