//! The `mayfly` command: parse the command line, run one command, print its
//! result on stdout (text or `--json`) and any error on stderr, and exit with
//! a code that says what kind of failure it was (see [`exit_code`]).

mod commands;
mod exit_code;
mod output;
mod project;
mod signals;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{
    access_log, audit, broker, demo, experiment, functions, image, jobs, keys, objects, prune, queues, serve, spec,
    state, tokens,
};
use crate::output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "mayfly",
    version,
    about = "Serverless batch pipelines on machines you own",
    long_about = "Mayfly runs serverless batch pipelines on machines you own: buckets, durable queues, \
functions and batch jobs declared in one architecture file, mayfly.toml.",
    after_help = "Examples:\n  mayfly init chart-coding && cd chart-coding\n  mayfly deploy\n  mayfly put inbox/notes/001.txt notes.txt\n  mayfly send work '{\"chart\": 17}'\n  mayfly queues\n\nExit codes: 0 ok, 1 failure, 2 usage error, 3 invalid architecture file, \
4 not found, 5 refused (conflict or would lose data), 6 limit exceeded, 7 disk full, 8 the invoked function failed, 9 stored data failed its integrity check, 10 the audit found policy violations."
)]
struct Cli {
    /// The project directory (default: the nearest directory upwards holding mayfly.toml).
    #[arg(long, global = true, env = "MAYFLY_PROJECT", value_name = "DIR")]
    project: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new project: a commented mayfly.toml and an example function.
    #[command(after_help = "Example:\n  mayfly init chart-coding")]
    Init(spec::InitArgs),
    /// Check an architecture file and report every error in it.
    #[command(after_help = "Examples:\n  mayfly validate\n  mayfly validate staging.toml --json")]
    Validate(spec::ValidateArgs),
    /// Print the JSON Schema of mayfly.toml, for editors.
    #[command(after_help = "Example:\n  mayfly schema > mayfly.schema.json")]
    Schema,
    /// Apply mayfly.toml: create its buckets and queues and record the version.
    #[command(
        after_help = "Examples:\n  mayfly deploy\n  mayfly deploy --dry-run\n  mayfly deploy --force   # allow removing queues and buckets that hold data"
    )]
    Deploy(spec::DeployArgs),
    /// Show what applying an architecture file would change.
    #[command(after_help = "Examples:\n  mayfly diff\n  mayfly diff next.toml")]
    Diff(spec::DiffArgs),
    /// List the applied versions of the architecture file.
    #[command(after_help = "Examples:\n  mayfly deployments\n  mayfly deployments --show 3")]
    Deployments(spec::DeploymentsArgs),

    /// Store an object from a file or stdin.
    #[command(
        after_help = "Examples:\n  mayfly put inbox/charts/17.txt chart.txt\n  cat big.vcf | mayfly put inbox/genomes/a.vcf"
    )]
    Put(objects::PutArgs),
    /// Write an object to a file or stdout.
    #[command(
        after_help = "Examples:\n  mayfly get archive/charts/17.txt out.txt\n  mayfly get archive/charts/17.txt | less"
    )]
    Get(objects::GetArgs),
    /// List buckets, or the objects of a bucket under a prefix.
    #[command(after_help = "Examples:\n  mayfly ls\n  mayfly ls inbox\n  mayfly ls inbox/charts/")]
    Ls(objects::LsArgs),
    /// Delete an object.
    #[command(after_help = "Example:\n  mayfly rm inbox/charts/17.txt")]
    Rm(objects::RmArgs),
    /// Copy an object, within a bucket or across buckets.
    #[command(after_help = "Example:\n  mayfly cp inbox/charts/17.txt archive/2026/17.txt")]
    Cp(objects::CpArgs),
    /// Move an object: copy, then delete the original.
    #[command(after_help = "Example:\n  mayfly mv inbox/charts/17.txt archive/2026/17.txt")]
    Mv(objects::CpArgs),
    /// Show the bucket event log (created/deleted, in commit order).
    #[command(after_help = "Examples:\n  mayfly events\n  mayfly events --after 120 --limit 10")]
    Events(objects::EventsArgs),

    /// Send messages to a queue.
    #[command(
        after_help = "Examples:\n  mayfly send work '{\"chart\": 17}'\n  mayfly send work --file message.json --attribute source=ehr --delay 30s\n  mayfly send work --lines < messages.ndjson"
    )]
    Send(queues::SendArgs),
    /// Receive (lease) messages from a queue.
    #[command(
        after_help = "Examples:\n  mayfly receive work\n  mayfly receive work --max 10 --visibility-timeout 5m --json"
    )]
    Receive(queues::ReceiveArgs),
    /// Delete received messages by their receipts (acknowledge them).
    #[command(after_help = "Example:\n  mayfly ack work 41.1 42.1")]
    Ack(queues::AckArgs),
    /// Change how long a received message stays leased (0s returns it at once).
    #[command(
        after_help = "Examples:\n  mayfly extend work 41.1 --timeout 10m\n  mayfly extend work 41.1 --timeout 0s"
    )]
    Extend(queues::ExtendArgs),
    /// Show queue statistics: visible, in flight, delayed, oldest age.
    #[command(after_help = "Examples:\n  mayfly queues\n  mayfly queues work --json")]
    Queues(queues::QueuesArgs),
    /// Look at messages without leasing them.
    #[command(after_help = "Example:\n  mayfly peek work-dlq --limit 5")]
    Peek(queues::PeekArgs),
    /// Dead-letter queues: list and redrive.
    #[command(subcommand)]
    Dlq(queues::DlqCommand),

    /// Run the control plane: routes, queue triggers, schedules, asynchronous invocations.
    #[command(after_help = "Examples:\n  mayfly up\n  MAYFLY_LOG=info mayfly up --idle-timeout 1m")]
    Up(functions::UpArgs),
    /// Invoke a deployed function synchronously and print its result, logs and report.
    #[command(
        after_help = "Examples:\n  mayfly invoke rename --event event.json\n  mayfly invoke rename --payload '{\"Records\": []}' --json"
    )]
    Invoke(functions::InvokeArgs),
    /// List recorded invocations from the ledger.
    #[command(
        after_help = "Examples:\n  mayfly invocations\n  mayfly invocations --function rename --outcome timeout --limit 50"
    )]
    Invocations(functions::InvocationsArgs),
    /// Print functions' captured logs, per invocation.
    #[command(
        after_help = "Examples:\n  mayfly logs --function rename --follow\n  mayfly logs --request 6f1c2a9e-0b1d-4c57-9a1e-3c2b7d4e5f60"
    )]
    Logs(functions::LogsArgs),
    /// Per-function statistics: invocations, errors, cold starts, p50/p95 duration.
    #[command(after_help = "Examples:\n  mayfly functions\n  mayfly functions --json")]
    Functions(functions::FunctionsArgs),

    /// Start a run of a batch job and watch its progress until it ends.
    #[command(after_help = "Examples:\n  mayfly run nightly\n  mayfly run nightly --detach")]
    Run(jobs::RunArgs),
    /// List runs of batch jobs.
    #[command(after_help = "Examples:\n  mayfly runs\n  mayfly runs --job nightly --json")]
    Runs(jobs::RunsArgs),
    /// Print the report of a finished run: items, retries, workers, makespan, cost.
    #[command(name = "run-report", after_help = "Example:\n  mayfly run-report run-20261125T073000-a1b2c3")]
    RunReport(jobs::RunReportArgs),
    /// List a job's results, one per item (a re-execution replaces, never duplicates).
    #[command(
        after_help = "Examples:\n  mayfly results nightly\n  mayfly results nightly --run run-20261125T073000-a1b2c3 --json"
    )]
    Results(jobs::ResultsArgs),
    /// Compare a bucket-prefix job's objects with its results and run what is missing.
    #[command(after_help = "Example:\n  mayfly reconcile nightly")]
    Reconcile(jobs::ReconcileArgs),
    /// List this project's live Mayfly processes, found by their tags.
    #[command(after_help = "Examples:\n  mayfly ps\n  mayfly ps --reap")]
    Ps(jobs::PsArgs),
    /// Inventory every resource and check it against [policy]: tags, encryption, TLS, networks, orphans, budgets, retention.
    #[command(
        after_help = "Examples:\n  mayfly audit\n  mayfly audit --json\n  mayfly audit --reap      # stop orphans first\n  mayfly audit --latest    # the audit recorded after the last deploy or run\n\nExit code 10 when there are violations; warnings and notices do not fail it."
    )]
    Audit(audit::AuditArgs),
    /// Delete now what has outlived its retention (as `mayfly up` does every minute): objects, sealed logs, messages, ledgers.
    #[command(
        after_help = "Examples:\n  mayfly prune\n  mayfly prune --json\n\nKept: objects by their bucket's `retention`, sealed run logs by `[policy].log_retention`,\nmessages by their queue's `retention`; invocations and finished runs 90 days, bucket events\n30 days once every consumer read them, the API's access log 6 years. Results are kept."
    )]
    Prune(prune::PruneArgs),
    /// (internal) The coordinator of one run; started by Mayfly.
    #[command(hide = true)]
    Coordinator(jobs::CoordinatorArgs),
    /// (internal) The host side of a Docker job's run: starts its coordinator's container and its workers for it.
    #[command(hide = true)]
    Broker(broker::BrokerArgs),
    /// (internal) One worker of a run; started by its coordinator.
    #[command(hide = true)]
    Worker(jobs::WorkerArgs),

    /// The keyring that encrypts data at rest: list, rotate, rewrap, retire, init.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The state store itself: copy it into another backend (`migrate`).
    #[command(subcommand)]
    State(state::StateCommand),
    /// Worker images for Docker jobs: build one from files on this machine.
    #[command(subcommand)]
    Image(image::ImageCommand),

    /// Serve the project's HTTPS API under /v1 and its web dashboard at / (TLS only) until Ctrl-C.
    #[command(after_help = "Examples:\n  mayfly serve\n  mayfly serve --listen 0.0.0.0:8443")]
    Serve(serve::ServeArgs),
    /// The HTTPS API's bearer tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Show the HTTPS API's access log: who read or changed what, when, and the outcome.
    #[command(
        name = "access-log",
        after_help = "Examples:\n  mayfly access-log\n  mayfly access-log --limit 500 --json"
    )]
    AccessLog(access_log::AccessLogArgs),

    /// Compare variants of the architecture by measurement: deploy each in a scratch copy, replay a workload, report.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),

    /// Run a demo pipeline end to end in a fresh project (the main demo, chart coding, is ./scripts/demo.sh).
    #[command(subcommand)]
    Demo(demo::DemoCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAYFLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(terminal::escapes_allowed(terminal::Stream::Stderr))
        .init();

    let matches = Cli::command().color(terminal::clap_colours()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let output = Output::new(cli.json);
    // Workers and coordinators leave the cores to the functions (see their
    // `runtime`); every other command may serve many requests at once.
    let runtime = match cli.command {
        Command::Worker(_) => mayfly_jobs::worker::runtime(),
        Command::Coordinator(_) | Command::Broker(_) => mayfly_jobs::coordinator::runtime(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit_code::FAILURE);
        }
    };
    let result = runtime.block_on(run(cli.command, cli.project, output));
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`mayfly runs | head -1`): nothing to report.
        Err(error) if error.chain().any(|cause| cause.is::<output::StdoutClosed>()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code::for_error(&error);
            exit_code::print_error(&error);
            ExitCode::from(code)
        }
    };
    // A coordinator or broker seals its own output: its last lines (and the error above) are written now.
    mayfly_jobs::output::finish_own_output();
    code
}

async fn run(command: Command, project: Option<PathBuf>, output: Output) -> anyhow::Result<()> {
    let project = project.as_deref();
    match command {
        Command::Init(args) => spec::init(args, output),
        Command::Validate(args) => spec::validate(args, project, output),
        Command::Schema => spec::schema(),
        Command::Deploy(args) => spec::deploy(args, project, output).await,
        Command::Diff(args) => spec::diff(args, project, output).await,
        Command::Deployments(args) => spec::deployments(args, project, output),
        Command::Put(args) => objects::put(args, project, output).await,
        Command::Get(args) => objects::get(args, project, output).await,
        Command::Ls(args) => objects::ls(args, project, output).await,
        Command::Rm(args) => objects::rm(args, project, output).await,
        Command::Cp(args) => objects::cp(args, project, output).await,
        Command::Mv(args) => objects::mv(args, project, output).await,
        Command::Events(args) => objects::events(args, project, output),
        Command::Send(args) => queues::send(args, project, output),
        Command::Receive(args) => queues::receive(args, project, output),
        Command::Ack(args) => queues::ack(args, project, output),
        Command::Extend(args) => queues::extend(args, project, output),
        Command::Queues(args) => queues::stats(args, project, output),
        Command::Peek(args) => queues::peek(args, project, output),
        Command::Dlq(command) => queues::dlq(command, project, output),
        Command::Up(args) => functions::up(args, project, output).await,
        Command::Invoke(args) => functions::invoke(args, project, output).await,
        Command::Invocations(args) => functions::invocations(args, project, output),
        Command::Logs(args) => functions::logs(args, project, output).await,
        Command::Functions(args) => functions::functions(args, project, output),
        Command::Run(args) => jobs::run(args, project, output).await,
        Command::Runs(args) => jobs::runs(args, project, output),
        Command::RunReport(args) => jobs::run_report(args, project, output),
        Command::Results(args) => jobs::results(args, project, output),
        Command::Reconcile(args) => jobs::reconcile(args, project, output).await,
        Command::Ps(args) => jobs::ps(args, project, output).await,
        Command::Audit(args) => audit::audit(args, project, output).await,
        Command::Prune(args) => prune::run(args, project, output).await,
        Command::Coordinator(args) => jobs::coordinator(args, project).await,
        Command::Broker(args) => broker::broker(args, project).await,
        Command::Worker(args) => jobs::worker(args).await,
        Command::Keys(command) => keys::run(command, project, output).await,
        Command::State(command) => state::run(command, project, output),
        Command::Image(command) => image::run(command, output).await,
        Command::Serve(args) => serve::serve(args, project, output).await,
        Command::Tokens(command) => tokens::run(command, project, output),
        Command::AccessLog(args) => access_log::run(args, project, output),
        Command::Experiment(command) => experiment::run(command, project, output).await,
        Command::Demo(demo::DemoCommand::Rename(args)) => demo::run(args, output).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        for command in Cli::command().get_subcommands() {
            let has_example =
                command.get_after_help().map(|help| help.to_string().contains("mayfly ")).unwrap_or(false)
                    || command.get_subcommands().all(|sub| {
                        sub.get_after_help().map(|help| help.to_string().contains("mayfly ")).unwrap_or(false)
                    }) && command.has_subcommands();
            assert!(
                has_example || command.is_hide_set() || command.get_name() == "schema" || command.get_name() == "help",
                "`mayfly {}` has no example in its help",
                command.get_name()
            );
        }
    }
}
