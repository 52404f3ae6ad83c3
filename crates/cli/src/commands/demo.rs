//! `mayfly demo rename`: the pipeline from the design's first talk, end to end, in a
//! fresh project on embedded defaults. Objects land in bucket `inbox`; the
//! control plane routes their events to queue `work`; batches invoke the
//! `rename` function (examples/rename, process runtime), which moves each
//! object to bucket `archive` under a new name. The demo puts the objects,
//! waits until every one has moved, verifies each byte for byte, prints a
//! summary from the invocation ledger, and exits non-zero if any check fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_runtime::{Invoker, InvokerConfig};
use mayfly_state::StateStore;
use serde::Serialize;

use crate::commands::spec::DeployArgs;
use crate::output::Output;
use crate::project::Project;

const DEMO_SPEC: &str = include_str!("../../../../examples/rename/mayfly.toml");
const DEMO_FUNCTION: &str = include_str!("../../../../examples/rename/functions/rename.py");

/// The demos built into the binary. The main demo, the chart-coding pipeline of
/// examples/chart-coding, is Python around the binary: `./scripts/demo.sh`.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Files landing in a bucket, routed to a queue, renamed by a queue-triggered function.
    #[command(
        after_help = "Examples:\n  mayfly demo rename\n  mayfly demo rename --objects 200 --dir /tmp/mayfly-demo"
    )]
    Rename(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to create the demo project (default: a new directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How many objects land in the inbox.
    #[arg(long, default_value_t = 1000)]
    pub objects: u32,
    /// Give up if the pipeline has not moved everything after this long.
    #[arg(long, default_value = "10m", value_parser = |text: &str| mayfly_core::parse_duration(text).map_err(|e| e.to_string()))]
    pub timeout: Duration,
    /// Keep the project afterwards (it is always kept with --dir).
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct DemoSummary {
    pub project: PathBuf,
    pub objects_put: u32,
    pub objects_moved: usize,
    pub verified: usize,
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub dead_letters: u64,
    pub elapsed_ms: u64,
}

fn name(text: &str) -> Name {
    Name::new(text).expect("demo resource names are valid") // constants of examples/rename/mayfly.toml
}

fn say(output: Output, text: impl AsRef<str>) {
    if !output.json && !output.silent {
        // The demo's narration is best effort: a closed stdout must not stop it.
        let _ = crate::output::print_stdout(&format!("==> {}\n", text.as_ref()));
    }
}

fn chart(number: u32) -> String {
    format!("chart {number:05}: chest pain, troponin elevated, ECG ST elevation; coded by the rename demo\n")
}

pub async fn run(args: DemoArgs, output: Output) -> Result<()> {
    let started = Instant::now();
    let keep = args.keep || args.dir.is_some();
    let dir = match args.dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("mayfly-demo-{}", std::process::id())),
    };
    let result = run_in(&dir, &args, output).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut summary = result?;
    summary.elapsed_ms = crate::output::json_millis(started.elapsed());
    output.emit(&summary, || {
        let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
        format!(
            "demo passed in {:.1}s: {} objects put, {} moved and verified\n  invocations {}  errors {}  cold starts {}  p50 {}  p95 {}  dead letters {}{}",
            summary.elapsed_ms as f64 / 1000.0,
            summary.objects_put,
            summary.verified,
            summary.invocations,
            summary.errors,
            summary.cold_starts,
            ms(summary.p50_ms),
            ms(summary.p95_ms),
            summary.dead_letters,
            if keep { format!("\nproject kept in {}", dir.display()) } else { String::new() }
        )
    })
}

fn write_project(dir: &Path) -> Result<()> {
    if dir.join(crate::project::SPEC_FILE_NAME).exists() {
        bail!("{} already holds a project; the demo needs a fresh directory", dir.display());
    }
    std::fs::create_dir_all(dir.join("functions")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(crate::project::SPEC_FILE_NAME), DEMO_SPEC)?;
    std::fs::write(dir.join("functions/rename.py"), DEMO_FUNCTION)?;
    Ok(())
}

async fn run_in(dir: &Path, args: &DemoArgs, output: Output) -> Result<DemoSummary> {
    let mut summary = DemoSummary { project: dir.to_path_buf(), ..DemoSummary::default() };
    say(output, format!("creating the rename pipeline in {}", dir.display()));
    write_project(dir)?;
    crate::commands::spec::deploy(
        DeployArgs { force: false, dry_run: false, evaluate: false, require_no_regression: false },
        Some(dir),
        Output::silent(),
    )
    .await?;

    let located = Project::locate(Some(dir))?;
    let opened = located.open(false)?;
    let (version, architecture) = mayfly_host::deployment::deployed_architecture(&opened)?;
    let (inbox, archive, dead_letter) = (name("inbox"), name("archive"), name("work-dlq"));

    say(output, "starting the control plane (router, queue trigger work -> rename)");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state: Arc<dyn StateStore> = opened.state.clone();
    let config = mayfly_control::ControlPlaneConfig {
        architecture: Arc::new(architecture),
        deployment_version: version,
        project_root: std::path::absolute(dir)?,
        mayfly_bin: std::env::current_exe().context("cannot find the mayfly executable")?,
        state,
        invoker: Invoker::new(InvokerConfig {
            idle_timeout: Duration::from_secs(60),
            ..InvokerConfig::with_clock(clock.clone())
        }),
        clock,
        poll_interval: Duration::from_millis(20),
        jobs: None,
        leader: mayfly_control::LeaderLease::for_this_process(),
    };
    let (trigger, shutdown) = mayfly_control::ShutdownTrigger::new();
    let control_plane = tokio::spawn(mayfly_control::run(config, shutdown));

    let pipeline = async {
        say(output, format!("putting {} charts into inbox/incoming/", args.objects));
        for number in 0..args.objects {
            let key = format!("incoming/chart-{number:05}.txt");
            opened.buckets.put_bytes(&inbox, &key, chart(number).into_bytes().into()).await?;
        }
        summary.objects_put = args.objects;

        say(output, "waiting for rename to move every chart to archive/coded/");
        let deadline = Instant::now() + args.timeout;
        let mut last_report = Instant::now();
        loop {
            let moved = opened.buckets.list(&archive, Some("coded/")).await?.len();
            let waiting = opened.buckets.list(&inbox, Some("incoming/")).await?.len();
            if moved == args.objects as usize && waiting == 0 {
                summary.objects_moved = moved;
                break;
            }
            if control_plane.is_finished() {
                bail!("the control plane stopped early");
            }
            ensure!(Instant::now() < deadline, "after {:?}, {moved} of {} charts moved", args.timeout, args.objects);
            if last_report.elapsed() > Duration::from_secs(1) && !output.json {
                let _ = crate::output::print_stdout(&format!("    {moved:>5} / {} moved\n", args.objects));
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    }
    .await;
    trigger.trigger();
    let stopped = control_plane.await.context("the control plane panicked")?;
    pipeline?;
    stopped?;

    say(output, "verifying every archived chart byte for byte");
    for number in 0..args.objects {
        let key = format!("coded/chart-{number:05}.coded.txt");
        let (_, body) =
            opened.buckets.get_bytes(&archive, &key).await.with_context(|| format!("archive/{key} is missing"))?;
        ensure!(body.as_ref() == chart(number).as_bytes(), "archive/{key} does not hold chart {number}");
        summary.verified += 1;
    }

    let stats = opened.state.function_stats(&name("rename"))?;
    summary.invocations = stats.invocations;
    summary.errors = stats.errors;
    summary.cold_starts = stats.cold_starts;
    summary.p50_ms = stats.p50_duration.map(crate::output::json_millis);
    summary.p95_ms = stats.p95_duration.map(crate::output::json_millis);
    let dlq = opened.state.queue_stats(&dead_letter)?;
    summary.dead_letters = dlq.visible + dlq.in_flight + dlq.delayed;
    ensure!(summary.dead_letters == 0, "{} message(s) ended in work-dlq", summary.dead_letters);
    Ok(summary)
}
