//! Function commands: `up` (the control plane), `invoke`, `invocations`,
//! `logs` and `functions` (statistics from the ledger).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use mayfly_core::Name;
use mayfly_runtime::Invoker;
use mayfly_state::{InvocationFilter, StateStore, StoredInvocation};
use serde::Serialize;

use mayfly_host::deployment::deployed_architecture;

use crate::exit_code::{FunctionFailed, NotFound, UsageError};
use crate::output::{Output, human_bytes, json_millis, json_time, table};
use crate::project::{OpenProject, Project};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How often idle loops look for new work, e.g. 20ms.
    #[arg(long, default_value = "20ms", value_parser = parse_duration_arg)]
    pub poll_interval: Duration,
    /// Reap warm function instances idle this long (scale to zero).
    #[arg(long, default_value = "5m", value_parser = parse_duration_arg)]
    pub idle_timeout: Duration,
    /// How long the control plane lease lasts unless renewed: a standby on
    /// another host takes the singleton duties over this long after the
    /// leader is lost (at most, plus one renewal interval).
    #[arg(long, default_value = "15s", value_parser = parse_duration_arg)]
    pub lease_ttl: Duration,
    /// How often the leader renews the lease and a standby asks for it;
    /// less than a third of --lease-ttl.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    pub lease_renew_every: Duration,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function.
    pub function: Name,
    /// A file holding the event JSON (`-`: stdin).
    #[arg(long, conflicts_with = "payload")]
    pub event: Option<PathBuf>,
    /// The event JSON inline (default: `{}`).
    #[arg(long)]
    pub payload: Option<String>,
}

#[derive(Debug, Args)]
pub struct InvocationsArgs {
    /// Only this function's invocations.
    #[arg(long)]
    pub function: Option<Name>,
    /// Only this outcome: success, error, timeout, out_of_memory, crashed, invalid_response, payload_too_large.
    #[arg(long)]
    pub outcome: Option<String>,
    /// The most recent N.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A batch run: its workers' logs (live while it runs, from the sealed archive after).
    pub run: Option<String>,
    /// With RUN: only this worker's log.
    #[arg(long, requires = "run")]
    pub worker: Option<String>,
    /// With RUN: what one of its processes (`coordinator`, `broker` or a
    /// worker) wrote to its own stdout and stderr, kept sealed in the run's
    /// directory while it exists.
    #[arg(long, requires = "run", conflicts_with_all = ["worker", "follow"])]
    pub process: Option<String>,
    /// Only this function's logs.
    #[arg(long, conflicts_with = "run")]
    pub function: Option<Name>,
    /// The logs of one request id (all its attempts).
    #[arg(long, conflicts_with_all = ["function", "follow"])]
    pub request: Option<String>,
    /// Keep printing new invocations' logs as they are recorded.
    #[arg(long, short)]
    pub follow: bool,
    /// Start with the most recent N invocations.
    #[arg(long, default_value_t = 10)]
    pub tail: usize,
}

#[derive(Debug, Args)]
pub struct FunctionsArgs {}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    mayfly_core::parse_duration(text).map_err(|error| error.to_string())
}

fn mayfly_bin() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the mayfly executable's path")
}

pub async fn up(args: UpArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let telemetry_settings = located.telemetry_settings()?;
    let opened = located.open(false)?;
    if args.lease_renew_every.is_zero() || args.lease_renew_every * 3 > args.lease_ttl {
        return Err(crate::exit_code::UsageError(format!(
            "--lease-renew-every ({}) must be more than zero and at most a third of --lease-ttl ({}), \
so that a leader renews at least twice before its lease could lapse",
            mayfly_core::format_duration(args.lease_renew_every),
            mayfly_core::format_duration(args.lease_ttl)
        ))
        .into());
    }
    let settings = mayfly_host::control_plane::ControlPlaneSettings {
        poll_interval: args.poll_interval,
        idle_timeout: args.idle_timeout,
        lease_ttl: args.lease_ttl,
        lease_renew_every: args.lease_renew_every,
        mayfly_bin: mayfly_bin()?,
    };
    let composed = mayfly_host::control_plane::compose_control_plane(&located, &opened, &settings).await?;
    for made in &composed.certificates_made {
        crate::output::announce_certificate(made);
    }
    let config = &composed.config;
    let version = config.deployment_version;
    let name = config.architecture.name.clone();
    let telemetry = mayfly_host::telemetry::start_telemetry(&telemetry_settings, &opened, name.as_str())?;
    if let Some(telemetry) = &telemetry
        && !output.silent
    {
        eprintln!("mayfly: exporting traces to {} (OTLP/HTTP)", telemetry.endpoint());
    }
    if !output.silent {
        eprintln!(
            "mayfly: control plane for `{name}` (deployment {}) running; {} function(s), {} trigger(s), {} route(s). Ctrl-C stops it gracefully.",
            version.map_or("-".into(), |v| v.to_string()),
            config.architecture.functions.len(),
            config.architecture.triggers.len(),
            config.architecture.routes.len()
        );
    }
    // A project that declares `[api]` gets its HTTPS API served by the control plane too.
    let api = composed.bind_declared_api(&located, &opened).await?;
    if let Some(server) = &api {
        crate::output::announce_certificate(&server.certificate_made);
    }
    if let Some(server) = &api
        && !output.silent
    {
        server.announce();
    }
    // The control plane follows new deployments; say which one is in force, from which event on.
    let silent = output.silent;
    let announce = move |announcement: mayfly_control::Announcement| {
        if silent {
            return;
        }
        match announcement {
            mayfly_control::Announcement::Deployment(in_force) => eprintln!(
                "mayfly: deployment {} in force from event {}; {} function(s), {} trigger(s), {} route(s)",
                in_force.version.map_or("-".into(), |v| v.to_string()),
                in_force.from_event,
                in_force.architecture.functions.len(),
                in_force.architecture.triggers.len(),
                in_force.architecture.routes.len()
            ),
            mayfly_control::Announcement::Role(mayfly_control::Role::Leader { term }) => eprintln!(
                "mayfly: leader (term {term}): routing bucket events, firing schedules and supervising jobs here"
            ),
            mayfly_control::Announcement::LostLease { led_under, taken_under, taken_by } => eprintln!(
                "mayfly: lost the control-plane lease to term {taken_under} ({}); standing by: the singleton duties \
stopped here and wrote nothing under term {led_under} after the takeover",
                taken_by.map_or_else(|| "held by nobody".to_owned(), |holder| format!("held by {holder}"))
            ),
            mayfly_control::Announcement::Role(mayfly_control::Role::Standby { leader }) => match leader {
                Some(lease) => eprintln!(
                    "mayfly: standby: {} leads (term {}); queue triggers and async invocations run here too",
                    lease.holder, lease.term
                ),
                None => eprintln!(
                    "mayfly: standby: the control plane lease is not held here; queue triggers and async invocations run here too"
                ),
            },
        }
    };
    let running = composed.start(&opened, api, announce);
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    running
        .run_until(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("mayfly: stopping; in-flight invocations finish first");
        })
        .await?;
    if let Some(telemetry) = telemetry {
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.context("flushing traces panicked")?;
    }
    eprintln!("mayfly: control plane stopped");
    Ok(())
}

fn read_event(args: &InvokeArgs) -> Result<Vec<u8>> {
    let bytes = match (&args.event, &args.payload) {
        (Some(path), _) if path == Path::new("-") => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("cannot read stdin")?;
            bytes
        }
        (Some(path), _) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        (None, Some(payload)) => payload.clone().into_bytes(),
        (None, None) => b"{}".to_vec(),
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).context("the event is not valid JSON")?;
    Ok(bytes)
}

#[derive(Serialize)]
struct InvokeReport {
    request_id: String,
    outcome: String,
    error_type: Option<String>,
    error_message: Option<String>,
    response: Option<serde_json::Value>,
    /// The invocation's captured logs; `null` for none.
    logs: Option<String>,
    duration_ms: u64,
    init_duration_ms: Option<u64>,
    peak_memory: Option<u64>,
}

pub async fn invoke(args: InvokeArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    let (version, architecture) = deployed_architecture(&opened)?;
    let payload = read_event(&args)?;
    // The endpoint the credentials name is the one a running `mayfly up` or `mayfly serve` serves.
    let (credentials, made) = mayfly_host::api_server::function_credentials(&located, &opened, &architecture)?;
    crate::output::announce_certificate(&made);
    let invoker = Invoker::new(mayfly_host::api_server::invoker_config(Duration::from_secs(1), credentials.as_ref()));
    let root = std::path::absolute(&located.root)?;
    let bin = mayfly_bin()?;
    let invoked = mayfly_control::invoke_and_record(
        opened.state.as_ref(),
        &invoker,
        mayfly_control::jobs::Deployed { architecture: &architecture, version },
        mayfly_control::InvokeContext { project_root: &root, mayfly_bin: &bin },
        &args.function,
        "invoke",
        payload,
    )
    .await;
    invoker.shutdown().await;
    let result = match invoked {
        Ok(result) => result,
        Err(error @ mayfly_control::InvokeError::UnknownFunction { .. }) => {
            return Err(NotFound(error.to_string()).into());
        }
        Err(error) => return Err(error.into()),
    };

    let (error_type, error_message) = mayfly_control::describe_failure(&result.outcome);
    let report = InvokeReport {
        request_id: result.request_id.clone(),
        outcome: result.outcome.kind().to_owned(),
        error_type,
        error_message,
        response: result.response.as_deref().and_then(|r| serde_json::from_slice(r).ok()),
        logs: (!result.logs.is_empty()).then(|| String::from_utf8_lossy(&result.logs).into_owned()),
        duration_ms: json_millis(result.duration),
        init_duration_ms: result.init_duration.map(json_millis),
        peak_memory: result.peak_memory,
    };
    output.emit(&report, || {
        let mut text = String::new();
        if let Some(response) = &report.response {
            text.push_str(&format!("{response}\n"));
        }
        if let Some(logs) = &report.logs {
            text.push_str("--- logs ---\n");
            text.push_str(logs);
            if !logs.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str(&report_line(
            &report.request_id,
            &report.outcome,
            result.duration,
            result.init_duration,
            result.peak_memory,
        ));
        text
    })?;
    // The function's error goes to stderr once, here (the report on stdout has it under `--json` only).
    if !result.outcome.is_success() {
        let reason = match (&report.error_type, &report.error_message) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            _ => report.outcome.clone(),
        };
        return Err(FunctionFailed(format!("function `{}` failed: {reason}", args.function)).into());
    }
    Ok(())
}

/// The Lambda-style REPORT line.
fn report_line(
    request_id: &str,
    outcome: &str,
    duration: Duration,
    init: Option<Duration>,
    memory: Option<u64>,
) -> String {
    let mut line = format!("REPORT RequestId: {request_id}\tDuration: {:.2} ms", duration.as_secs_f64() * 1000.0);
    if let Some(init) = init {
        line.push_str(&format!("\tInit Duration: {:.2} ms", init.as_secs_f64() * 1000.0));
    }
    if let Some(memory) = memory {
        line.push_str(&format!("\tMax Memory Used: {}", human_bytes(memory)));
    }
    line.push_str(&format!("\tOutcome: {outcome}"));
    line
}

fn last_invocations(
    state: &dyn StateStore,
    function: Option<&Name>,
    outcome: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredInvocation>> {
    // The ledger pages forward by id; walk it and keep the newest `limit`.
    let mut newest = std::collections::VecDeque::with_capacity(limit + 1);
    let mut after_id = 0;
    loop {
        let page = state.invocations(&InvocationFilter {
            function: function.cloned(),
            after_id,
            limit: 1_000,
            outcome: outcome.map(str::to_owned),
        })?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        for invocation in page {
            newest.push_back(invocation);
            if newest.len() > limit {
                newest.pop_front();
            }
        }
    }
    Ok(newest.into_iter().collect())
}

/// One ledger entry as `--json` prints it: flat, times in RFC 3339 and milliseconds.
#[derive(Serialize)]
struct InvocationView {
    id: u64,
    request_id: String,
    function: Name,
    deployment_version: Option<u64>,
    trigger: String,
    attempt: u32,
    started_at: String,
    duration_ms: u64,
    init_duration_ms: Option<u64>,
    outcome: String,
    error_type: Option<String>,
    error_message: Option<String>,
    peak_memory: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    estimated_cost: f64,
}

impl From<&StoredInvocation> for InvocationView {
    fn from(stored: &StoredInvocation) -> Self {
        let r = &stored.record;
        InvocationView {
            id: stored.id,
            request_id: r.request_id.clone(),
            function: r.function.clone(),
            deployment_version: r.deployment_version,
            trigger: r.trigger.clone(),
            attempt: r.attempt,
            started_at: json_time(r.started_at),
            duration_ms: json_millis(r.duration),
            init_duration_ms: r.init_duration.map(json_millis),
            outcome: r.outcome.clone(),
            error_type: r.error_type.clone(),
            error_message: r.error_message.clone(),
            peak_memory: r.peak_memory,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            estimated_cost: r.estimated_cost,
        }
    }
}

pub fn invocations(args: InvocationsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let rows = last_invocations(opened.state.as_ref(), args.function.as_ref(), args.outcome.as_deref(), args.limit)?;
    let views: Vec<InvocationView> = rows.iter().map(InvocationView::from).collect();
    output.emit(&views, || {
        if rows.is_empty() {
            return "no invocations recorded".to_owned();
        }
        table(
            &["STARTED", "FUNCTION", "TRIGGER", "ATTEMPT", "OUTCOME", "DURATION", "INIT", "MEMORY", "REQUEST", "ERROR"],
            &rows
                .iter()
                .map(|row| {
                    let r = &row.record;
                    vec![
                        r.started_at.to_rfc3339(),
                        r.function.to_string(),
                        r.trigger.clone(),
                        r.attempt.to_string(),
                        r.outcome.clone(),
                        format!("{:.1} ms", r.duration.as_secs_f64() * 1000.0),
                        r.init_duration.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0)).unwrap_or_default(),
                        r.peak_memory.map(human_bytes).unwrap_or_default(),
                        r.request_id.clone(),
                        r.error_message.clone().unwrap_or_default().chars().take(60).collect(),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

fn print_invocation_logs(state: &dyn StateStore, invocation: &StoredInvocation) -> Result<()> {
    let r = &invocation.record;
    let logs = state.invocation_logs(&r.request_id).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    (|| {
        writeln!(
            stdout,
            "--- {} {} {} attempt {} ({}) ---",
            r.started_at, r.function, r.request_id, r.attempt, r.outcome
        )?;
        stdout.write_all(&logs)?;
        if !logs.is_empty() && !logs.ends_with(b"\n") {
            writeln!(stdout)?;
        }
        stdout.flush()
    })()
    .map_err(crate::output::stdout_error)
}

/// Captured text as `--json` prints it: lossy UTF-8, `null` for nothing.
fn logs_text(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned())
}

pub async fn logs(args: LogsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    if output.json && args.follow {
        return Err(UsageError(
            "--follow prints logs as text while they come, and --json one document of the logs so far: give one of them"
                .into(),
        )
        .into());
    }
    let located = Project::locate(project)?;
    let opened = located.open(false)?;
    let state = opened.state.as_ref();
    if let (Some(run), Some(process)) = (&args.run, &args.process) {
        let plain = process_output(&located, &opened, run, process)?;
        if output.json {
            #[derive(Serialize)]
            struct ProcessOutput<'a> {
                run: &'a str,
                process: &'a str,
                output: Option<String>,
            }
            return output.emit(&ProcessOutput { run, process, output: logs_text(&plain) }, String::new);
        }
        std::io::stdout().write_all(&plain).map_err(crate::output::stdout_error)?;
        return Ok(());
    }
    if let Some(run) = &args.run {
        if output.json {
            return run_logs_json(&located, &opened, run, args.worker.as_deref(), output).await;
        }
        return run_logs(&located, &opened, run, args.worker.as_deref(), args.follow).await;
    }
    if let Some(request) = &args.request {
        let logs = state.invocation_logs(request).with_context(|| format!("no logs for request {request}"))?;
        if output.json {
            #[derive(Serialize)]
            struct RequestLogs<'a> {
                request_id: &'a str,
                logs: Option<String>,
            }
            return output.emit(&RequestLogs { request_id: request, logs: logs_text(&logs) }, String::new);
        }
        std::io::stdout().write_all(&logs).map_err(crate::output::stdout_error)?;
        return Ok(());
    }
    let recent = last_invocations(state, args.function.as_ref(), None, args.tail)?;
    if output.json {
        #[derive(Serialize)]
        struct InvocationLogs {
            request_id: String,
            function: Name,
            attempt: u32,
            outcome: String,
            started_at: String,
            logs: Option<String>,
        }
        let rows: Vec<InvocationLogs> = recent
            .iter()
            .map(|invocation| {
                let r = &invocation.record;
                InvocationLogs {
                    request_id: r.request_id.clone(),
                    function: r.function.clone(),
                    attempt: r.attempt,
                    outcome: r.outcome.clone(),
                    started_at: json_time(r.started_at),
                    logs: logs_text(&state.invocation_logs(&r.request_id).unwrap_or_default()),
                }
            })
            .collect();
        return output.emit(&rows, String::new);
    }
    // With nothing recorded yet, following from id 0 prints every invocation as it comes.
    let mut after_id = recent.last().map_or(0, |i| i.id);
    for invocation in &recent {
        print_invocation_logs(state, invocation)?;
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        let page = state.invocations(&InvocationFilter {
            function: args.function.clone(),
            after_id,
            limit: 100,
            outcome: None,
        })?;
        for invocation in &page {
            print_invocation_logs(state, invocation)?;
            after_id = invocation.id;
        }
        if page.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

pub fn functions(_args: FunctionsArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let (_, architecture) = deployed_architecture(&opened)?;
    #[derive(Serialize)]
    struct Row {
        function: Name,
        runtime: String,
        invocations: u64,
        errors: u64,
        cold_starts: u64,
        p50_ms: Option<u64>,
        p95_ms: Option<u64>,
        last_invoked: Option<String>,
        #[serde(skip)]
        stats: mayfly_state::FunctionStats,
    }
    let mut rows = Vec::new();
    for (name, spec) in &architecture.functions {
        let stats = opened.state.function_stats(name)?;
        rows.push(Row {
            function: name.clone(),
            runtime: format!("{:?}", spec.runtime).to_lowercase(),
            invocations: stats.invocations,
            errors: stats.errors,
            cold_starts: stats.cold_starts,
            p50_ms: stats.p50_duration.map(json_millis),
            p95_ms: stats.p95_duration.map(json_millis),
            last_invoked: stats.last_invoked.map(json_time),
            stats,
        });
    }
    output.emit(&rows, || {
        if rows.is_empty() {
            return "no functions deployed".to_owned();
        }
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into())
        };
        table(
            &["FUNCTION", "RUNTIME", "INVOCATIONS", "ERRORS", "COLD STARTS", "P50", "P95", "LAST"],
            &rows
                .iter()
                .map(|row| {
                    vec![
                        row.function.to_string(),
                        row.runtime.clone(),
                        row.stats.invocations.to_string(),
                        row.stats.errors.to_string(),
                        row.stats.cold_starts.to_string(),
                        ms(row.stats.p50_duration),
                        ms(row.stats.p95_duration),
                        row.stats.last_invoked.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect::<Vec<_>>(),
        )
    })
}

/// `mayfly logs RUN --process NAME`: a process's own output, opened.
fn process_output(located: &Project, opened: &OpenProject, run: &str, process: &str) -> Result<Vec<u8>> {
    opened.state.run(run)?;
    let run_dir = mayfly_control::jobs::run_dir(&located.data_dir(), run);
    let path = match process {
        "coordinator" | "broker" => run_dir.join(format!("{process}.log")),
        worker => mayfly_jobs::output::worker_output_path(&run_dir, worker),
    };
    if !path.exists() {
        return Err(NotFound(format!(
            "run {run} has no output of `{process}` (looked for {}); a run's directory is removed once its logs are sealed in the logs bucket",
            path.display()
        ))
        .into());
    }
    let stream = mayfly_jobs::output::output_stream(run, process);
    mayfly_jobs::output::read_output(&path, &stream, Some(opened.keyring.keyring.as_ref()))
        .with_context(|| format!("cannot read {}", path.display()))
}

/// The workers with a live log file in `run_dir`, by name (only `worker` if given).
fn live_workers(run_dir: &Path, worker: Option<&str>) -> Vec<String> {
    let mut workers: Vec<String> = std::fs::read_dir(run_dir.join("workers"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".log")).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    workers.retain(|name| worker.is_none_or(|w| w == name));
    workers.sort();
    workers
}

/// One worker's sealed log of a finished run, opened and checked.
struct SealedWorkerLog {
    worker: String,
    /// `BUCKET/KEY` of the sealed object.
    object: String,
    plain: Vec<u8>,
}

/// The sealed logs of a finished run's workers (only `worker` if given); not found if there are none.
async fn sealed_worker_logs(opened: &OpenProject, run: &str, worker: Option<&str>) -> Result<Vec<SealedWorkerLog>> {
    let workers = opened.state.run_workers(run)?;
    let mut logs = Vec::new();
    for record in workers.iter().filter(|w| worker.is_none_or(|name| w.worker == name)) {
        let Some(key) = &record.log_object else { continue };
        let (_, architecture) = deployed_architecture(opened)?;
        let bucket = architecture
            .jobs
            .get(&opened.state.run(run)?.job)
            .and_then(|job| job.logs.clone())
            .context("the run's job names no logs bucket")?;
        let (_, compressed) = opened.buckets.get_bytes(&bucket, key).await?;
        let plain = mayfly_jobs::logs::unseal(&compressed, record.log_sha256.as_deref())
            .map_err(|error| anyhow::anyhow!("the sealed log {bucket}/{key} is damaged: {error}"))?;
        logs.push(SealedWorkerLog { worker: record.worker.clone(), object: format!("{bucket}/{key}"), plain });
    }
    if logs.is_empty() {
        return Err(NotFound(format!(
            "run {run} has no sealed logs{}",
            worker.map(|w| format!(" for worker {w}")).unwrap_or_default()
        ))
        .into());
    }
    Ok(logs)
}

/// `mayfly logs RUN --json`: each worker's log so far, live or sealed.
async fn run_logs_json(
    located: &Project,
    opened: &OpenProject,
    run: &str,
    worker: Option<&str>,
    output: Output,
) -> Result<()> {
    #[derive(Serialize)]
    struct WorkerLogs {
        worker: String,
        /// Where the sealed log is (`BUCKET/KEY`); `null` while the run goes.
        sealed_object: Option<String>,
        logs: Option<String>,
    }
    let record = opened.state.run(run)?;
    let mut rows = Vec::new();
    if !record.status.is_finished() {
        let run_dir = mayfly_control::jobs::run_dir(&located.data_dir(), run);
        let keyring = Some(opened.keyring.keyring.as_ref());
        for name in live_workers(&run_dir, worker) {
            // The run may end (and its files go) between listing and reading.
            let Ok(plain) = mayfly_jobs::logs::read_live(&run_dir, run, &name, keyring) else { continue };
            rows.push(WorkerLogs { worker: name, sealed_object: None, logs: logs_text(&plain) });
        }
    }
    // Ended meanwhile, or already: the sealed logs.
    if rows.is_empty() && opened.state.run(run)?.status.is_finished() {
        for sealed in sealed_worker_logs(opened, run, worker).await? {
            rows.push(WorkerLogs {
                worker: sealed.worker,
                sealed_object: Some(sealed.object),
                logs: logs_text(&sealed.plain),
            });
        }
    }
    output.emit(&rows, String::new)
}

/// A run's worker logs: the live files while the run is going (with
/// `--follow`, until it ends), the sealed archive (checked against its
/// checksum) once it has ended.
async fn run_logs(
    located: &Project,
    opened: &OpenProject,
    run: &str,
    worker: Option<&str>,
    follow: bool,
) -> Result<()> {
    let record = opened.state.run(run)?;
    let run_dir = mayfly_control::jobs::run_dir(&located.data_dir(), run);
    let keyring = Some(opened.keyring.keyring.as_ref());
    // Plaintext bytes already printed, per worker.
    let mut printed: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let mut stdout = std::io::stdout();
    if !record.status.is_finished() {
        loop {
            for name in live_workers(&run_dir, worker) {
                // The run may end (and its files go) between listing and reading.
                let Ok(plain) = mayfly_jobs::logs::read_live(&run_dir, run, &name, keyring) else { continue };
                let done = printed.entry(name.clone()).or_insert(0);
                if plain.len() > *done {
                    for line in String::from_utf8_lossy(&plain[*done..]).lines() {
                        writeln!(stdout, "[{name}] {line}").map_err(crate::output::stdout_error)?;
                    }
                    *done = plain.len();
                }
            }
            stdout.flush().map_err(crate::output::stdout_error)?;
            if !follow || opened.state.run(run)?.status.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if !opened.state.run(run)?.status.is_finished() {
            return Ok(());
        }
        if follow {
            writeln!(stdout, "--- run {run} ended; its logs are sealed in the logs bucket ---")
                .map_err(crate::output::stdout_error)?;
            return Ok(());
        }
    }
    for sealed in sealed_worker_logs(opened, run, worker).await? {
        writeln!(stdout, "--- worker {} ({}) ---", sealed.worker, sealed.object)
            .map_err(crate::output::stdout_error)?;
        stdout.write_all(&sealed.plain).map_err(crate::output::stdout_error)?;
    }
    Ok(())
}
