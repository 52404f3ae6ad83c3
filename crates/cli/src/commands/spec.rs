//! Commands about the architecture file: `init`, `validate`, `schema`,
//! `deploy`, `diff` and `deployments`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use mayfly_core::Name;
use mayfly_spec::{Architecture, ArchitectureDiff};
use mayfly_state::{NewDeployment, StateStore};
use serde::Serialize;

use mayfly_host::deploy::{Step, apply, plan};

use crate::exit_code::Refused;
use crate::output::{Output, table};
use crate::project::{DATA_DIR_NAME, Project, SPEC_FILE_NAME};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create the project in (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Project name (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The architecture file (default: the project's mayfly.toml).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Apply changes that would delete data (removing a queue with messages or a bucket with objects).
    #[arg(long)]
    pub force: bool,
    /// Show what would change and check it could be applied, without changing anything.
    #[arg(long, conflicts_with = "evaluate")]
    pub dry_run: bool,
    /// Before applying, replay the workload `[evaluation]` names on the deployed version and on the
    /// new file (a two-variant experiment), print the verdict and record it with the deployment.
    #[arg(long)]
    pub evaluate: bool,
    /// With --evaluate: refuse to apply the new file (nothing is deployed, exit code 5) when its
    /// makespan or cost is worse than the deployed version's beyond the 95% interval.
    #[arg(long)]
    pub require_no_regression: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The new architecture file (default: the project's mayfly.toml).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeploymentsArgs {
    /// Print the architecture file of this version instead of the list.
    #[arg(long, value_name = "VERSION")]
    pub show: Option<u64>,
}

/// A project name from a directory name: lowercased, other characters replaced by `-`.
fn project_name_from_dir(dir: &Path) -> Result<Name> {
    let absolute = std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let raw = absolute.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let cleaned: String = raw
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let trimmed = cleaned.trim_start_matches(['-', '_']);
    let candidate: String = trimmed.chars().take(Name::MAX_LENGTH).collect();
    Name::new(if candidate.is_empty() { "mayfly-project".to_owned() } else { candidate })
        .context("cannot derive a project name from the directory; pass --name")
}

const EXAMPLE_FUNCTION: &str = r#"#!/usr/bin/env python3
"""Example `process`-runtime function: reads one event as JSON on stdin,
writes its result as JSON on stdout, and logs on stderr. A non-zero exit
code marks the invocation as failed."""
import json
import sys

event = json.load(sys.stdin)
records = event.get("Records", [])
print(f"received {len(records)} record(s)", file=sys.stderr)
json.dump({"records": len(records)}, sys.stdout)
"#;

pub fn init(args: InitArgs, output: Output) -> Result<()> {
    let name = match &args.name {
        Some(name) => Name::new(name.clone()).with_context(|| format!("bad project name `{name}`"))?,
        None => project_name_from_dir(&args.dir)?,
    };
    let spec_path = args.dir.join(SPEC_FILE_NAME);
    if spec_path.exists() {
        return Err(Refused(format!(
            "{} already exists; init never overwrites a project (edit it, or choose another directory)",
            spec_path.display()
        ))
        .into());
    }
    std::fs::create_dir_all(args.dir.join("functions"))
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    std::fs::write(&spec_path, mayfly_spec::scaffold(&name))
        .with_context(|| format!("cannot write {}", spec_path.display()))?;
    let function_path = args.dir.join("functions").join("rename.py");
    if !function_path.exists() {
        std::fs::write(&function_path, EXAMPLE_FUNCTION)
            .with_context(|| format!("cannot write {}", function_path.display()))?;
    }
    let gitignore = args.dir.join(".gitignore");
    if !gitignore.exists() {
        std::fs::write(&gitignore, format!("/{DATA_DIR_NAME}/\n"))
            .with_context(|| format!("cannot write {}", gitignore.display()))?;
    }
    // The HTTPS API's certificate for localhost (`[api].tls` may name the user's own instead).
    let (tls, _) = mayfly_api::tls::ensure_self_signed(&args.dir.join(DATA_DIR_NAME).join("tls"))
        .context("cannot create the API's self-signed certificate")?;
    #[derive(Serialize)]
    struct Initialised {
        name: String,
        spec: PathBuf,
        tls_cert: PathBuf,
    }
    output.emit(&Initialised { name: name.to_string(), spec: spec_path.clone(), tls_cert: tls.cert.clone() }, || {
        format!(
            "created project `{name}` in {}\n  {}\n  {}\n  {} (the API's self-signed certificate)\nnext: cd {} && mayfly deploy",
            args.dir.display(),
            spec_path.display(),
            function_path.display(),
            tls.cert.display(),
            args.dir.display()
        )
    })
}

fn resolve_spec_file(file: Option<PathBuf>, project: Option<&Path>) -> Result<PathBuf> {
    match file {
        Some(file) => Ok(file),
        None => Ok(Project::locate(project)?.spec_path()),
    }
}

pub fn validate(args: ValidateArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let path = resolve_spec_file(args.file, project)?;
    match mayfly_spec::load(&path) {
        Ok(loaded) => {
            #[derive(Serialize)]
            struct Valid<'a> {
                valid: bool,
                file: &'a Path,
                content_hash: &'a str,
            }
            let architecture = &loaded.architecture;
            output.emit(&Valid { valid: true, file: &path, content_hash: &loaded.content_hash }, || {
                format!(
                    "{} is valid: {} bucket(s), {} queue(s), {} function(s), {} job(s)",
                    path.display(),
                    architecture.buckets.len(),
                    architecture.queues.len(),
                    architecture.functions.len(),
                    architecture.jobs.len()
                )
            })
        }
        Err(mayfly_spec::LoadError::Invalid(diagnostics)) if output.json => {
            #[derive(Serialize)]
            struct Invalid<'a> {
                valid: bool,
                file: &'a Path,
                errors: &'a [mayfly_spec::Diagnostic],
            }
            output.emit(&Invalid { valid: false, file: &path, errors: &diagnostics.diagnostics }, String::new)?;
            Err(anyhow::Error::new(mayfly_spec::LoadError::Invalid(diagnostics)))
        }
        Err(error) => Err(error.into()),
    }
}

pub fn schema() -> Result<()> {
    crate::output::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&mayfly_spec::json_schema())?))?;
    Ok(())
}

/// The architecture as last deployed, parsed again from its recorded source.
fn last_deployed(state: &dyn StateStore) -> Result<Option<(u64, Architecture)>> {
    let Some(deployment) = state.latest_deployment()? else { return Ok(None) };
    let file_name = format!("deployment {}", deployment.version);
    let architecture = mayfly_spec::parse(&file_name, &deployment.source)
        .with_context(|| format!("the recorded deployment {} no longer parses", deployment.version))?;
    Ok(Some((deployment.version, architecture)))
}

/// An architecture with nothing in it, to diff a first deployment against.
fn empty_like(architecture: &Architecture) -> Architecture {
    let mut empty = architecture.clone();
    empty.buckets.clear();
    empty.queues.clear();
    empty.functions.clear();
    empty.routes.clear();
    empty.triggers.clear();
    empty.alarms.clear();
    empty.jobs.clear();
    empty.api = None;
    empty
}

fn render_diff(diff: &ArchitectureDiff) -> String {
    if diff.changes.is_empty() { "no changes".to_owned() } else { diff.to_string() }
}

pub async fn diff(args: DiffArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let path = args.file.unwrap_or_else(|| located.spec_path());
    let new = mayfly_spec::load(&path)?.architecture;
    let old = if located.is_deployed()? {
        let opened = located.open(false)?;
        last_deployed(opened.state.as_ref())?
    } else {
        None
    };
    let (from, base) = match old {
        Some((version, architecture)) => (Some(version), architecture),
        None => (None, empty_like(&new)),
    };
    let diff = mayfly_spec::diff(&base, &new);
    #[derive(Serialize)]
    struct DiffReport<'a> {
        from_version: Option<u64>,
        file: &'a Path,
        diff: &'a ArchitectureDiff,
    }
    output.emit(&DiffReport { from_version: from, file: &path, diff: &diff }, || {
        let heading = match from {
            Some(version) => format!("changes from deployment {version} to {}:", path.display()),
            None => format!("nothing deployed yet; {} would create:", path.display()),
        };
        format!("{heading}\n{}", render_diff(&diff))
    })
}

pub async fn deploy(args: DeployArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    if args.require_no_regression && !args.evaluate {
        bail!(crate::exit_code::UsageError(
            "`--require-no-regression` judges the verdict of an evaluation; add `--evaluate` (which replays `[evaluation]` of mayfly.toml)".to_owned()
        ));
    }
    let loaded = mayfly_spec::load(&located.spec_path())?;
    if let Some(api) = &loaded.architecture.api
        && let (Some(advertised), Some(_)) = (&api.aws_advertise, &api.tls)
    {
        // The self-signed certificate is made to name it when the API starts.
        let (paths, made) = mayfly_host::api_server::certificate_paths(&located, Some(api))?;
        crate::output::announce_certificate(&made);
        mayfly_host::api_server::check_own_certificate_names(&paths, advertised)?;
    }
    let evaluation = if args.evaluate {
        evaluate_before_deploy(&located, &loaded, args.require_no_regression, output)?
    } else {
        None
    };
    // A dry run on a project never deployed must not even create its data directory.
    let opened = if args.dry_run && !located.is_deployed()? { None } else { Some(located.open(true)?) };
    let steps = plan(opened.as_ref(), &loaded.architecture, args.force).await?;
    let latest = match &opened {
        Some(opened) => opened.state.latest_deployment()?,
        None => None,
    };
    let unchanged_source = latest.as_ref().is_some_and(|d| d.content_hash == loaded.content_hash);

    #[derive(Serialize)]
    struct DeployReport {
        dry_run: bool,
        version: Option<u64>,
        content_hash: String,
        steps: Vec<Step>,
        recorded: bool,
        /// The audit run after the deploy; `None` for a dry run or if it could not run.
        audit: Option<mayfly_host::audit::AuditSummary>,
        /// With `--evaluate`: the verdict of the new file against the deployed version.
        evaluation: Option<EvaluationReport>,
    }
    let mut report = DeployReport {
        dry_run: args.dry_run,
        version: latest.as_ref().map(|d| d.version),
        content_hash: loaded.content_hash.clone(),
        steps: steps.clone(),
        recorded: false,
        audit: None,
        evaluation: None,
    };
    if let (false, Some(opened)) = (args.dry_run, &opened) {
        apply(opened, &loaded.architecture, &steps).await?;
        if !unchanged_source {
            let deployment = opened.state.record_deployment(NewDeployment {
                content_hash: loaded.content_hash.clone(),
                source: loaded.source.clone(),
                forced: args.force,
            })?;
            report.version = Some(deployment.version);
            report.recorded = true;
        }
        if let Some(evaluation) = &evaluation {
            let version = report.version.filter(|_| report.recorded);
            let recorded = crate::commands::experiment::record_evaluation(
                &located,
                evaluation,
                mayfly_state::ExperimentOutcome::Applied,
                version,
                None,
            )?;
            report.evaluation = Some(EvaluationReport::of(evaluation, recorded.id));
        }
        report.audit = mayfly_host::audit::after_deploy(&located, opened, &loaded.architecture).await;
    }
    output.emit(&report, || {
        let mut text = String::new();
        for step in &report.steps {
            text.push_str(&format!("{step}\n"));
        }
        let short_hash = &report.content_hash[..12.min(report.content_hash.len())];
        match (report.dry_run, report.recorded, report.version) {
            (true, _, _) => {
                text.push_str(&format!("dry run: {} step(s) would be applied; nothing changed", report.steps.len()))
            }
            (false, true, Some(version)) => {
                text.push_str(&format!("deployed version {version} ({short_hash}) of `{}`", loaded.architecture.name))
            }
            (false, _, Some(version)) => text.push_str(&format!(
                "mayfly.toml unchanged since version {version}; resources checked, {} step(s) applied",
                report.steps.len()
            )),
            (false, _, None) => {}
        }
        if let Some(evaluation) = &report.evaluation {
            text.push_str(&format!("\n{}", evaluation.text()));
        }
        if let Some(audit) = &report.audit {
            let next = if audit.violations > 0 { "; the deployment stands, see `mayfly audit`" } else { "" };
            text.push_str(&format!("\naudit: {}{next}", audit.counts()));
        }
        text
    })
}

/// The verdict of `deploy --evaluate`, as the deploy prints it.
#[derive(Serialize)]
struct EvaluationReport {
    /// Its id in the experiment store (`mayfly experiment show ID`).
    experiment_id: u64,
    summaries: Vec<String>,
    comparisons: Vec<mayfly_experiment::Comparison>,
    /// Metrics among makespan and cost worse beyond their 95% interval, in words.
    regressions: Vec<String>,
}

impl EvaluationReport {
    fn of(evaluation: &crate::commands::experiment::Evaluation, experiment_id: u64) -> EvaluationReport {
        EvaluationReport {
            experiment_id,
            summaries: evaluation.summaries.clone(),
            comparisons: evaluation.comparisons.clone(),
            regressions: evaluation.regressions.clone(),
        }
    }

    fn text(&self) -> String {
        let mut text = format!("evaluation (experiment {}):", self.experiment_id);
        for summary in &self.summaries {
            text.push_str(&format!("\n  {summary}"));
        }
        for regression in &self.regressions {
            text.push_str(&format!("\n  regression: {regression}"));
        }
        text
    }
}

/// `deploy --evaluate`, before anything is applied: the new file against the
/// deployed version. `None` when the file is the deployed one (nothing to
/// compare). With `require_no_regression`, a regression is recorded as
/// refused and returned as a `Refused` error, so nothing is deployed.
fn evaluate_before_deploy(
    located: &Project,
    loaded: &mayfly_spec::Loaded,
    require_no_regression: bool,
    output: Output,
) -> Result<Option<crate::commands::experiment::Evaluation>> {
    let Some(evaluation_spec) = &loaded.architecture.evaluation else {
        bail!(crate::exit_code::UsageError(format!(
            "`--evaluate` replays the workload `[evaluation]` names, and {} has none; add e.g.\n[evaluation]\njob = \"JOB\"\ninput = {{ manifest = {{ bucket = \"BUCKET\", key = \"list.txt\", file = \"list.txt\" }} }}\n(see README, \"Evaluation on deploy\")",
            located.spec_path().display()
        )));
    };
    if !located.is_deployed()? {
        bail!(Refused(
            "nothing is deployed yet, so there is no version to evaluate against; run `mayfly deploy` once without --evaluate".to_owned()
        ));
    }
    let opened = located.open(false)?;
    let deployed = opened.state.latest_deployment()?.ok_or_else(|| {
        Refused("nothing is deployed yet, so there is no version to evaluate against; run `mayfly deploy` once without --evaluate".to_owned())
    })?;
    drop(opened);
    if deployed.content_hash == loaded.content_hash {
        if !output.json {
            eprintln!("mayfly.toml is deployed version {} already; nothing to evaluate", deployed.version);
        }
        return Ok(None);
    }
    let evaluation = crate::commands::experiment::evaluate_against_deployed(
        located,
        evaluation_spec,
        &deployed,
        &loaded.source,
        output,
    )?;
    if require_no_regression && !evaluation.regressions.is_empty() {
        let message = format!(
            "refused: the new mayfly.toml regresses against deployed version {} by more than the {}% tolerance: {}; nothing was deployed (without --require-no-regression it would be)",
            deployed.version,
            (evaluation_spec.tolerance * 100_000.0).round() / 1000.0,
            evaluation.regressions.join("; and ")
        );
        let recorded = crate::commands::experiment::record_evaluation(
            located,
            &evaluation,
            mayfly_state::ExperimentOutcome::Refused,
            None,
            Some(message.clone()),
        )?;
        if !output.json {
            for summary in &evaluation.summaries {
                eprintln!("{summary}");
            }
        }
        bail!(Refused(format!(
            "{message}; recorded as experiment {} (`mayfly experiment show {}`)",
            recorded.id, recorded.id
        )));
    }
    Ok(Some(evaluation))
}

pub fn deployments(args: DeploymentsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let deployments = opened.state.deployments()?;
    if let Some(version) = args.show {
        let deployment = deployments.into_iter().find(|d| d.version == version).ok_or_else(|| {
            crate::exit_code::NotFound(format!("there is no deployment version {version}; see `mayfly deployments`"))
        })?;
        if output.json {
            #[derive(Serialize)]
            struct Shown {
                version: u64,
                applied_at: String,
                content_hash: String,
                forced: bool,
                /// The architecture file exactly as applied.
                source: String,
                event_log_head: u64,
            }
            let shown = Shown {
                version: deployment.version,
                applied_at: crate::output::json_time(deployment.applied_at),
                content_hash: deployment.content_hash,
                forced: deployment.forced,
                source: deployment.source,
                event_log_head: deployment.event_log_head,
            };
            return output.emit(&shown, String::new);
        }
        // The file exactly as applied, byte for byte, so it can be redirected and re-deployed.
        crate::output::print_stdout(&deployment.source)?;
        return Ok(());
    }
    #[derive(Serialize)]
    struct Row {
        version: u64,
        applied_at: String,
        content_hash: String,
        forced: bool,
    }
    let rows: Vec<Row> = deployments
        .iter()
        .map(|d| Row {
            version: d.version,
            applied_at: d.applied_at.to_rfc3339(),
            content_hash: d.content_hash.clone(),
            forced: d.forced,
        })
        .collect();
    output.emit(&rows, || {
        if rows.is_empty() {
            return "no deployments yet; run `mayfly deploy`".to_owned();
        }
        table(
            &["VERSION", "APPLIED", "HASH", "FORCED"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.version.to_string(),
                        r.applied_at.clone(),
                        r.content_hash[..12.min(r.content_hash.len())].to_owned(),
                        if r.forced { "yes".into() } else { String::new() },
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}
