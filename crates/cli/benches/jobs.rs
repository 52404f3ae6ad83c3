//! Batch-job benchmarks (issue 4), each printing its figure beside the ideal
//! computed in the same run:
//!
//! ```sh
//! cargo bench -p mayfly --bench jobs            # all six
//! cargo bench -p mayfly --bench jobs -- a c     # some of them
//! ```
//!
//! - (a) 10,000 items of a 100 ms sleep on 64 workers (`lambda` runtime,
//!   warm `lambda-echo` instances): efficiency = ideal / makespan, ideal =
//!   items × 100 ms / 64.
//! - (b) 2,000 CPU-bound items (10 ms of CPU time each, `lambda-echo` in
//!   `spin` mode) on 2 workers: ideal = items × 10 ms / 2.
//! - (c) a coordinator serving 900 simulated workers that heartbeat every 5 s
//!   with the real protocol over mutual TLS (each simulated worker with a
//!   certificate and a connection of its own): its CPU (% of one core) and peak RSS.
//! - (d) the extra makespan of a run in which one worker is SIGKILLed, against
//!   the same run undisturbed; bound: worker timeout + one item.
//! - (e) throughput (issue 14): 20,000 no-op items (`lambda-echo` sleeping
//!   0 ms) with 2, 8 and 32 workers, fed from a manifest and, in the same
//!   run, from a queue: items/s against the 5,000 items/s target, the
//!   manifest-fed rate against a commit per completion
//!   (`MAYFLY_GROUP_COMMIT_MAX=1`), the queue-fed rate against the
//!   manifest-fed one, and Ray's rate on the same no-op tasks
//!   (`scripts/bench-ray.sh`) as the peer baseline.
//! - (f) the state store (issue 11): the same 20,000 no-op items through
//!   the same manifest-fed job on 8 workers with the project's state on
//!   PostgreSQL (`MAYFLY_STATE_URL`, a fresh database on the server
//!   `scripts/postgres.sh start-durable` runs, or the one at
//!   `MAYFLY_BENCH_POSTGRES_URL`) and on the embedded SQLite file, in
//!   interleaved rounds (`MAYFLY_BENCH_ROUNDS`, default 3): both medians and
//!   their ratio.
//!
//! (a), (b) and (d) run the real `mayfly` binary in a project in a temporary
//! directory: `deploy`, `put` a manifest of items, `run JOB --json`, then the
//! run's report and results. Their makespan is measured from the run's
//! `started_at` to the `recorded_at` of its last result (processing); the
//! report's own makespan also counts the teardown (sealing logs, stopping and
//! verifying workers), and is printed beside it.
//!
//! (c) runs the coordinator (`mayfly_jobs::coordinator::run`) in a process
//! of its own, this binary re-executed with `MAYFLY_BENCH_ROLE=coordinator`,
//! with a provisioner whose workers are tasks in a third process (the
//! simulator, `MAYFLY_BENCH_ROLE=simulator`), so the coordinator's CPU and
//! memory are measured alone, from `/proc/self`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const MAYFLY: &str = env!("CARGO_BIN_EXE_mayfly");
/// Selects what this binary is when re-executed: `coordinator` or `simulator` for (c).
const ROLE_VARIABLE: &str = "MAYFLY_BENCH_ROLE";
/// The project the (c) coordinator serves.
const PROJECT_VARIABLE: &str = "MAYFLY_BENCH_PROJECT";

fn main() {
    match std::env::var(ROLE_VARIABLE).as_deref() {
        Ok("coordinator") => return heartbeats::coordinator_main(),
        Ok("simulator") => return heartbeats::simulator_main(),
        _ => {}
    }
    const ALL: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
    // `cargo bench` appends `--bench`; flags are not scenarios.
    let requested: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    if let Some(unknown) = requested.iter().find(|arg| !ALL.contains(&arg.as_str())) {
        eprintln!("unknown scenario `{unknown}`; choose from a, b, c, d, e, f (none: all)");
        std::process::exit(2);
    }
    let scenarios: Vec<&str> = if requested.is_empty() {
        ALL.to_vec()
    } else {
        ALL.into_iter().filter(|s| requested.iter().any(|r| r == s)).collect()
    };
    let began = Instant::now();
    handler_directory();
    for scenario in scenarios {
        let line = match scenario {
            "a" => sleep_items(),
            "b" => cpu_items(),
            "c" => heartbeats::run(),
            "d" => killed_worker(),
            "e" => throughput(),
            _ => state_backends(),
        };
        println!("{line}");
        std::io::stdout().flush().ok();
    }
    eprintln!("batch-job benchmarks done in {:.0} s", began.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// The scenarios

const TARGET_A: f64 = 0.95;
const TARGET_B: f64 = 0.90;
/// (b) against `multiprocessing.Pool(2)` doing the same work (issue 14).
const TARGET_B_POOL: f64 = 0.95;

/// (a) 10,000 items × 100 ms sleep on 64 workers.
fn sleep_items() -> String {
    const ITEMS: usize = 10_000;
    const WORKERS: u32 = 64;
    const MS: u64 = 100;
    let project = Project::job("a", ITEMS, WORKERS, "sleep", MS);
    let run = project.run_job();
    efficiency_line("(a)", &run, ITEMS, MS, "ms sleep", WORKERS, TARGET_A)
}

/// (b) 2,000 items of 10 ms CPU time on 2 workers (2 cores), beside a
/// baseline measured in the same run (issue 14): Python's
/// `multiprocessing.Pool(2)` doing the same work (`scripts/bench/spin_pool.py`:
/// 2,000 maps of 10 ms of CPU), before and after the job, which also shows
/// what the machine's other load leaves of the ideal.
fn cpu_items() -> String {
    const ITEMS: usize = 2_000;
    const WORKERS: u32 = 2;
    const MS: u64 = 10;
    let project = Project::job("b", ITEMS, WORKERS, "spin", MS);
    let baseline_before = pool_baseline(ITEMS, WORKERS, MS);
    let run = project.run_job();
    let baseline_after = pool_baseline(ITEMS, WORKERS, MS);
    let line = efficiency_line("(b)", &run, ITEMS, MS, "ms CPU", WORKERS, TARGET_B);
    if run.problem(ITEMS).is_some() {
        return line;
    }
    match (baseline_before, baseline_after) {
        (Ok(before), Ok(after)) => {
            let baseline = (before + after) / 2.0;
            let against_pool = baseline / run.processing;
            format!(
                "{line}; multiprocessing.Pool({WORKERS}) doing the same work (before and after): {baseline:.2} s \
                 ({before:.2} s, {after:.2} s), so Mayfly's efficiency against it is {:.1}% (target >= {:.0}%) {}",
                against_pool * 100.0,
                TARGET_B_POOL * 100.0,
                verdict(against_pool >= TARGET_B_POOL)
            )
        }
        (Err(problem), _) | (_, Err(problem)) => format!("{line}; the Pool baseline was not measured: {problem}"),
    }
}

/// (e) 20,000 no-op items through a job with 2, 8 and 32 workers, fed from
/// a manifest and from a queue in the same run, beside the manifest-fed run
/// with a commit per completion (`MAYFLY_GROUP_COMMIT_MAX=1`, as before group
/// commit) as the baseline.
fn throughput() -> String {
    const ITEMS: usize = 20_000;
    const TARGET: f64 = 5_000.0;
    let mut lines = Vec::new();
    let mut grouped_rates = Vec::new();
    for workers in [2, 8, 32] {
        let alone = Project::job("e", ITEMS, workers, "sleep", 0).run_job_with(&[("MAYFLY_GROUP_COMMIT_MAX", "1")]);
        let manifest = Project::job("e", ITEMS, workers, "sleep", 0).run_job();
        let queue = Project::queue_job("e", ITEMS, workers).run_job();
        let rate = |run: &Measured| ITEMS as f64 / run.processing;
        let problem = alone.problem(ITEMS).or_else(|| manifest.problem(ITEMS)).or_else(|| queue.problem(ITEMS));
        grouped_rates.push((workers, rate(&manifest)));
        lines.push(match problem {
            Some(problem) => format!("(e) {workers} workers: FAILED: {problem}"),
            None => format!(
                "(e) {ITEMS} no-op items on {workers} workers: manifest-fed {:.0} items/s ({:.2} s) = {:.2}x the \
                 baseline of a commit per completion, {:.0} items/s ({:.2} s) (target >= 1.00x) {}; queue-fed {:.0} \
                 items/s ({:.2} s) = {:.2}x the manifest-fed rate (target >= 0.80x) {}; target {TARGET:.0} items/s {}",
                rate(&manifest),
                manifest.processing,
                rate(&manifest) / rate(&alone),
                rate(&alone),
                alone.processing,
                verdict(rate(&manifest) >= rate(&alone)),
                rate(&queue),
                queue.processing,
                rate(&queue) / rate(&manifest),
                verdict(rate(&queue) >= 0.8 * rate(&manifest)),
                verdict(rate(&manifest) >= TARGET && rate(&queue) >= TARGET),
            ),
        });
    }
    // Ray's warm pool on the same workload, in the same run: the peer baseline.
    let ray = ray_rate();
    lines.push(match ray {
        Ok((rate, line)) => {
            let best = grouped_rates.iter().map(|(_, rate)| *rate).fold(0.0, f64::max);
            format!(
                "(e) {line}; Mayfly manifest-fed at its best = {:.2}x Ray (target >= 2.50x) {}",
                best / rate,
                verdict(best >= 2.5 * rate)
            )
        }
        Err(problem) => format!("(e) Ray baseline not measured: {problem}"),
    });
    let rate_on = |count: u32| grouped_rates.iter().find(|(workers, _)| *workers == count).map(|(_, rate)| *rate);
    if let (Some(eight), Some(thirty_two)) = (rate_on(8), rate_on(32)) {
        lines.push(format!(
            "(e) 32 workers manifest-fed = {:.2}x 8 workers (target >= 1.00x) {}",
            thirty_two / eight,
            verdict(thirty_two >= eight)
        ));
    }
    lines.join("\n")
}

/// (f) 20,000 no-op items through one manifest-fed job on 8 workers, the
/// project's state on PostgreSQL against the same on SQLite, in interleaved
/// rounds (SQLite, then PostgreSQL, each round), so both see the same
/// machine; the medians and their ratio.
fn state_backends() -> String {
    const ITEMS: usize = 20_000;
    const WORKERS: u32 = 8;
    let rounds: usize = std::env::var("MAYFLY_BENCH_ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(3);
    let mut sqlite_rates = Vec::new();
    let mut postgres_rates = Vec::new();
    for round in 1..=rounds {
        for on_postgres in [false, true] {
            let state = on_postgres.then(BenchDatabase::create);
            let run = Project::job_on("f", ITEMS, WORKERS, "sleep", 0, state).run_job();
            let store = if on_postgres { "PostgreSQL" } else { "SQLite" };
            if let Some(problem) = run.problem(ITEMS) {
                return format!("(f) round {round} on {store}: FAILED: {problem}");
            }
            let rate = ITEMS as f64 / run.processing;
            eprintln!("  (f) round {round}, state on {store}: {rate:.0} items/s ({:.2} s)", run.processing);
            if on_postgres { postgres_rates.push(rate) } else { sqlite_rates.push(rate) }
        }
    }
    let (sqlite, postgres) = (median(&mut sqlite_rates), median(&mut postgres_rates));
    format!(
        "(f) {ITEMS} no-op items on {WORKERS} workers, median of {rounds} interleaved rounds: state on PostgreSQL \
         {postgres:.0} items/s, on SQLite {sqlite:.0} items/s (same run) = {:.2}x (rounds: PostgreSQL {}; SQLite {})",
        postgres / sqlite,
        rates_list(&postgres_rates),
        rates_list(&sqlite_rates),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => values[len / 2],
        len => (values[len / 2 - 1] + values[len / 2]) / 2.0,
    }
}

fn rates_list(rates: &[f64]) -> String {
    rates.iter().map(|rate| format!("{rate:.0}")).collect::<Vec<_>>().join(", ")
}

/// A fresh database for one (f) project on the bench's PostgreSQL server,
/// dropped (with any connection still open to it) when this is dropped.
struct BenchDatabase {
    name: String,
    url: String,
}

impl BenchDatabase {
    fn create() -> BenchDatabase {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name =
            format!("mayfly_bench_{}_{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut admin = postgres_admin();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a bench database");
        let (server, _) = postgres_server().rsplit_once('/').expect("the server URL names a database");
        BenchDatabase { url: format!("{server}/{name}"), name }
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        if let Err(error) =
            postgres_admin().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
        {
            eprintln!("could not drop bench database {}: {error}", self.name);
        }
    }
}

/// The bench's PostgreSQL server: `MAYFLY_BENCH_POSTGRES_URL`, else the one
/// `scripts/postgres.sh start-durable` starts or finds (PostgreSQL's durable
/// defaults, as a user's server would run; not the tests' `fsync=off`).
fn postgres_server() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("MAYFLY_BENCH_POSTGRES_URL") {
            return url;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg("start-durable")
            .output()
            .expect("run scripts/postgres.sh start-durable");
        assert!(
            output.status.success(),
            "scripts/postgres.sh start-durable: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
    })
}

fn postgres_admin() -> postgres::Client {
    postgres::Client::connect(postgres_server(), postgres::NoTls).expect("connect to the bench's PostgreSQL server")
}

/// Ray's rate on 20,000 no-op tasks (`scripts/bench-ray.sh`, which makes its own venv under target/).
fn ray_rate() -> Result<(f64, String), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench-ray.sh");
    script_figure(Command::new("bash").arg(&script), &script, "ray: ")
}

/// Wall time of Python's `multiprocessing.Pool(workers)` mapping `items`
/// spins of `ms` of CPU each (`scripts/bench/spin_pool.py`).
fn pool_baseline(items: usize, workers: u32, ms: u64) -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench/spin_pool.py");
    let mut command = Command::new("python3");
    command.arg(&script).args([items.to_string(), workers.to_string(), ms.to_string()]);
    script_figure(&mut command, &script, "pool: ").map(|(seconds, _)| seconds)
}

/// Run a baseline script and read its figure: the first word after `prefix`
/// on the line of its output that starts with it, and that whole line.
fn script_figure(command: &mut Command, script: &Path, prefix: &str) -> Result<(f64, String), String> {
    let output = command.output().map_err(|error| format!("{}: {error}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|line| line.starts_with(prefix)).map(str::to_owned);
    match line {
        Some(line) if output.status.success() => {
            let figure = line[prefix.len()..]
                .split_whitespace()
                .next()
                .and_then(|figure| figure.parse::<f64>().ok())
                .ok_or_else(|| format!("unreadable line from {}: {line}", script.display()))?;
            Ok((figure, line))
        }
        _ => Err(format!(
            "{} exited {:?}: {}",
            script.display(),
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        )),
    }
}

fn efficiency_line(tag: &str, run: &Measured, items: usize, ms: u64, what: &str, workers: u32, target: f64) -> String {
    let ideal = items as f64 * ms as f64 / 1000.0 / f64::from(workers);
    if let Some(problem) = run.problem(items) {
        return format!("{tag} FAILED: {problem}");
    }
    let efficiency = ideal / run.processing;
    format!(
        "{tag} {items} items x {ms} {what} on {workers} workers: makespan {:.2} s (run start -> last item done; \
         report makespan with teardown {:.2} s), ideal {ideal:.2} s, efficiency {:.1}% (target >= {:.0}%) {} \
         [Mayfly used {:.2} cores, other processes {:.2}]",
        run.processing,
        run.report_makespan,
        efficiency * 100.0,
        target * 100.0,
        verdict(efficiency >= target),
        run.load.mayfly_cores,
        run.load.other_cores,
    )
}

/// (d) 400 items × 100 ms on 8 workers, undisturbed and with one worker SIGKILLed mid-run.
fn killed_worker() -> String {
    const ITEMS: usize = 400;
    const WORKERS: u32 = 8;
    const MS: u64 = 100;
    /// `CoordinatorTiming::default().worker_timeout`, what `mayfly coordinator` runs with.
    const WORKER_TIMEOUT: Duration = Duration::from_secs(5);
    let project = Project::job("d", ITEMS, WORKERS, "sleep", MS);
    let clean = project.run_job();
    if let Some(problem) = clean.problem(ITEMS) {
        return format!("(d) FAILED (undisturbed run): {problem}");
    }

    let probe = LoadProbe::start();
    let started = Instant::now();
    let child = project
        .command(&["run", "batch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mayfly run");
    // Mid-run: once about a third of the items are done.
    let victim = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the second run of (d) did not get going");
        std::thread::sleep(Duration::from_millis(100));
        let runs = project.json(&["runs"]);
        let Some(current) = runs.as_array().and_then(|runs| runs.first()) else { continue };
        if current["run"].as_str() == Some(clean.run.as_str())
            || current["done"].as_u64().unwrap_or(0) < ITEMS as u64 / 3
        {
            continue;
        }
        let live = project.json(&["ps"]);
        if let Some(worker) = live.as_array().into_iter().flatten().find(|p| p["role"] == "worker") {
            let id = worker["id"].as_str().expect("a resource id").to_owned();
            kill_group(&id);
            break (id, current["done"].as_u64().unwrap_or(0));
        }
    };
    let output = child.wait_with_output().expect("mayfly run finishes");
    let killed = project.measure(&output, started.elapsed(), probe.finish());
    if let Some(problem) = killed.problem(ITEMS) {
        return format!("(d) FAILED (run with a killed worker): {problem}");
    }
    let bound = WORKER_TIMEOUT.as_secs_f64() + MS as f64 / 1000.0;
    let extra = killed.processing - clean.processing;
    format!(
        "(d) {ITEMS} items x {MS} ms on {WORKERS} workers, worker {} SIGKILLed after {} items: makespan {:.2} s vs \
         {:.2} s undisturbed (ideal {:.2} s), extra {extra:.2} s, bound {bound:.2} s (worker timeout 5 s + one item); \
         {} retried (target extra <= bound) {}",
        victim.0,
        victim.1,
        killed.processing,
        clean.processing,
        ITEMS as f64 * MS as f64 / 1000.0 / f64::from(WORKERS),
        killed.retries,
        verdict(extra <= bound)
    )
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

fn kill_group(resource_id: &str) {
    let pgid: i32 = resource_id.split(':').nth(1).and_then(|pid| pid.parse().ok()).expect("pid:<pid>:<ticks>");
    // SAFETY: kill(2) with a negative pid signals that process group: a worker of this bench's own run.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

// ---------------------------------------------------------------------------
// A project run through the real binary

/// The test handlers (`lambda-echo`), built into this bench's own target
/// directory and profile (`<target>/<profile>/deps/<bench>`), like the
/// runtime tests do.
fn handler_directory() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let binary = std::env::current_exe().expect("the bench binary's path");
        let profile_dir = binary.parent().and_then(Path::parent).expect("<target>/<profile>/deps/<bench>");
        let target_dir = profile_dir.parent().expect("<target>/<profile>");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "mayfly-test-handlers", "--bins", "--target-dir"]).arg(target_dir);
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build of the test handlers runs");
        assert!(status.success(), "cargo build -p mayfly-test-handlers failed: {status}");
        profile_dir.to_owned()
    })
}

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The project's state on PostgreSQL, or `None` for the embedded file.
    state: Option<BenchDatabase>,
}

/// What one run measured.
struct Measured {
    run: String,
    status: String,
    items_done: u64,
    retries: u64,
    results: usize,
    /// Seconds from the run's `started_at` to its last result.
    processing: f64,
    /// The report's makespan (to the end of the teardown), seconds.
    report_makespan: f64,
    /// What the machine did meanwhile.
    load: Load,
}

/// CPU over the wall time of one `mayfly run`: the cores Mayfly's processes
/// used (the run's whole process tree, from `getrusage(RUSAGE_CHILDREN)`:
/// each process is reaped by its parent) and the cores the whole machine
/// used (`/proc/stat`), so the load of anything else on the machine shows.
#[derive(Debug, Clone, Copy)]
struct Load {
    mayfly_cores: f64,
    other_cores: f64,
}

struct LoadProbe {
    started: Instant,
    children: f64,
    machine: f64,
}

impl LoadProbe {
    fn start() -> LoadProbe {
        LoadProbe { started: Instant::now(), children: children_cpu_seconds(), machine: machine_busy_seconds() }
    }

    fn finish(self) -> Load {
        let wall = self.started.elapsed().as_secs_f64();
        let mayfly = children_cpu_seconds() - self.children;
        let machine = machine_busy_seconds() - self.machine;
        Load { mayfly_cores: mayfly / wall, other_cores: ((machine - mayfly) / wall).max(0.0) }
    }
}

/// User + system CPU of this process's waited-for descendants, seconds.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Busy CPU time of the whole machine (all but idle and iowait), seconds.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let busy: f64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

impl Measured {
    fn problem(&self, items: usize) -> Option<String> {
        (self.status != "succeeded" || self.items_done != items as u64 || self.results != items).then(|| {
            format!(
                "run {} ended {} with {} of {items} items done and {} results",
                self.run, self.status, self.items_done, self.results
            )
        })
    }
}

impl Project {
    /// A deployed project whose job `batch` runs `lambda-echo` in `mode` for
    /// `ms` on each of `items` manifest lines, with up to `workers` workers.
    fn job(scenario: &str, items: usize, workers: u32, mode: &str, ms: u64) -> Project {
        Project::job_on(scenario, items, workers, mode, ms, None)
    }

    /// [`Project::job`] with its state in `state` (PostgreSQL), or in the embedded file for `None`.
    fn job_on(
        scenario: &str,
        items: usize,
        workers: u32,
        mode: &str,
        ms: u64,
        state: Option<BenchDatabase>,
    ) -> Project {
        let handler = handler_directory().join("lambda-echo");
        let spec = format!(
            r#"version = 1
name = "bench-{scenario}-{pid}"
[buckets.items]
[buckets.logs]
[functions.work]
runtime = "lambda"
command = ["{handler}"]
env = {{ MAYFLY_TEST_MODE = "{mode}", MAYFLY_TEST_MS = "{ms}" }}
[jobs.batch]
source = {{ manifest = {{ bucket = "items", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = {workers} }}
logs = "logs"
"#,
            pid = std::process::id(),
            handler = handler.display(),
        );
        Project::deployed_with_items(&spec, items, &["put", "items/manifest.txt", "-"], state)
    }

    /// Like [`Project::job`] with 0 ms sleeps, its items `items` messages of a queue.
    fn queue_job(scenario: &str, items: usize, workers: u32) -> Project {
        let handler = handler_directory().join("lambda-echo");
        let spec = format!(
            r#"version = 1
name = "bench-{scenario}q-{pid}"
[buckets.logs]
[queues.items]
[functions.work]
runtime = "lambda"
command = ["{handler}"]
env = {{ MAYFLY_TEST_MODE = "sleep", MAYFLY_TEST_MS = "0" }}
[jobs.batch]
source = {{ queue = "items", batch = 1 }}
function = "work"
workers = {{ max = {workers} }}
logs = "logs"
"#,
            pid = std::process::id(),
            handler = handler.display(),
        );
        Project::deployed_with_items(&spec, items, &["send", "items", "--lines"], None)
    }

    fn with_items(spec: &str, items: usize) -> Project {
        Project::deployed_with_items(spec, items, &["put", "items/manifest.txt", "-"], None)
    }

    /// A deployed project of `spec` whose `items` lines (`item-00000` …)
    /// are piped into `mayfly ARGS`: a manifest put, or messages sent; its
    /// state in `state` (PostgreSQL), or the embedded file for `None`.
    fn deployed_with_items(spec: &str, items: usize, args: &[&str], state: Option<BenchDatabase>) -> Project {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).expect("the project directory");
        std::fs::write(root.join("mayfly.toml"), spec).expect("mayfly.toml");
        let project = Project { _dir: dir, root, state };
        project.ok(&["deploy"]);
        let lines: String = (0..items).map(|i| format!("item-{i:05}\n")).collect();
        let mut child = project
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn mayfly {args:?}: {error}"));
        child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write the items");
        assert!(child.wait().expect("mayfly exits").success(), "mayfly {args:?} failed");
        project
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(MAYFLY);
        command.args(args).current_dir(&self.root).env_remove("MAYFLY_PROJECT");
        match &self.state {
            Some(database) => command.env("MAYFLY_STATE_URL", &database.url),
            None => command.env_remove("MAYFLY_STATE_URL"),
        };
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run mayfly");
        assert!(
            output.status.success(),
            "mayfly {args:?} exited {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let stdout = self.ok(&with_json);
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("mayfly {args:?}: not JSON ({error}): {stdout}"))
    }

    /// `mayfly run batch --json`, then its report and results.
    fn run_job(&self) -> Measured {
        self.run_job_with(&[])
    }

    /// [`Project::run_job`] with `env` set for `mayfly run` (and so for its coordinator).
    fn run_job_with(&self, env: &[(&str, &str)]) -> Measured {
        let probe = LoadProbe::start();
        let started = Instant::now();
        let output =
            self.command(&["run", "batch", "--json"]).envs(env.iter().copied()).output().expect("run mayfly run");
        let wall = started.elapsed();
        self.measure(&output, wall, probe.finish())
    }

    fn measure(&self, output: &Output, wall: Duration, load: Load) -> Measured {
        let outcome: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "mayfly run printed no JSON ({error}); exit {:?}, stderr: {}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        let run = outcome["run"].as_str().expect("the run's id").to_owned();
        let status = outcome["status"].as_str().unwrap_or("unknown").to_owned();
        let report = self.json(&["run-report", &run]);
        let results = self.json(&["results", "batch", "--run", &run, "--limit", "1000000"]);
        let results = results.as_array().cloned().unwrap_or_default();
        let started_at =
            report["started_at"].as_str().and_then(rfc3339_millis).expect("started_at as an RFC 3339 time");
        let last_done = results
            .iter()
            .filter_map(|row| row["recorded_at"].as_str().and_then(rfc3339_millis))
            .max()
            .unwrap_or(started_at);
        // Where the time went: how soon results came, and how busy the workers were.
        let first_done = results
            .iter()
            .filter_map(|row| row["recorded_at"].as_str().and_then(rfc3339_millis))
            .min()
            .unwrap_or(started_at);
        let workers = report["workers"].as_array().cloned().unwrap_or_default();
        let busy: f64 = workers.iter().map(|w| seconds(&w["busy_ms"])).sum();
        let processing = (last_done - started_at) as f64 / 1000.0;
        let items = results.len().max(1) as f64;
        eprintln!(
            "  run {run}: {status}, {} items done, {} retries, {} workers; first result {:.2} s after the start; \
             function time {:.1} ms per item; {:.2} ms per item outside the function (workers x makespan - busy); \
             `mayfly run` took {:.2} s, using {:.2} cores while other processes used {:.2} of the machine's {}",
            report["items_done"],
            report["retries"],
            workers.len(),
            (first_done - started_at) as f64 / 1000.0,
            busy / items * 1000.0,
            (processing * workers.len() as f64 - busy) / items * 1000.0,
            wall.as_secs_f64(),
            load.mayfly_cores,
            load.other_cores,
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        Measured {
            run,
            status,
            items_done: report["items_done"].as_u64().unwrap_or(0),
            retries: report["retries"].as_u64().unwrap_or(0),
            results: results.len(),
            processing,
            report_makespan: seconds(&report["makespan_ms"]),
            load,
        }
    }
}

/// An integer `_ms` field of `--json` output, in seconds.
fn seconds(value: &Value) -> f64 {
    value.as_u64().map_or(f64::NAN, |millis| millis as f64 / 1000.0)
}

/// `2026-11-25T06:38:22.123Z` as milliseconds since the epoch.
fn rfc3339_millis(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, millis) = (number(11..13)?, number(14..16)?, number(17..19)?, number(20..23)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hour) * 60 + minute) * 60 + second) * 1000 + millis)
}

// ---------------------------------------------------------------------------
// (c) 900 workers heartbeating every 5 s

mod heartbeats {
    use std::collections::{BTreeMap, HashMap};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{ChildStdin, Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use mayfly_buckets::crypto::Keyring;
    use mayfly_core::run::new_run_id;
    use mayfly_core::{Clock, SystemClock};
    use mayfly_fleet::{
        BoxFuture, FleetError, LiveResource, LocalProvisioner, ProcessSpec, Provisioner, ResourceId, ResourceState,
        TagFilter, Tags,
    };
    use mayfly_jobs::coordinator::{CoordinatorConfig, CoordinatorTiming, CoordinatorTls, WorkerLaunch};
    use mayfly_jobs::protocol::{
        HEARTBEAT_PATH, HeartbeatRequest, HeartbeatResponse, LEASE_PATH, LOGS_PATH, LeaseRequest, LeaseResponse,
        LogsRequest, WorkerIdentity, encode,
    };
    use mayfly_state::{NewRun, StateStore};

    use super::{PROJECT_VARIABLE, Project, ROLE_VARIABLE};

    const WORKERS: u32 = 900;
    const ITEMS: usize = 10_000;
    const HEARTBEAT: Duration = Duration::from_secs(5);
    /// Three missed heartbeats.
    const WORKER_TIMEOUT: Duration = Duration::from_secs(15);
    const WINDOW: Duration = Duration::from_secs(30);
    const TARGET_CPU_PERCENT: f64 = 5.0;
    const TARGET_RSS_MB: f64 = 150.0;

    /// The bench's side: a project with a backlog, then the coordinator process.
    pub fn run() -> String {
        // The job's function is never invoked: simulated workers only lease and hold.
        let spec = format!(
            r#"version = 1
name = "bench-c-{pid}"
[buckets.items]
[buckets.logs]
[functions.work]
command = ["true"]
[jobs.batch]
source = {{ manifest = {{ bucket = "items", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = {WORKERS} }}
logs = "logs"
"#,
            pid = std::process::id()
        );
        let project = Project::with_items(&spec, ITEMS);
        let output = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(ROLE_VARIABLE, "coordinator")
            .env(PROJECT_VARIABLE, &project.root)
            .stderr(Stdio::inherit())
            .output()
            .expect("run the coordinator process");
        let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || line.is_empty() {
            return format!("(c) FAILED: the coordinator process exited {:?}: {line}", output.status.code());
        }
        line
    }

    /// Utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
    fn cpu_ticks(pid: &str) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command name (field 2) may hold spaces; fields after it follow the last ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        field(14) + field(15)
    }

    fn start_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        after.split_whitespace().nth(22 - 3).and_then(|f| f.parse().ok()).expect("/proc/PID/stat field 22")
    }

    fn status_kib(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A provisioner whose workers are tasks in the simulator process. A
    /// worker's state is read from `/proc` for the simulator's process group
    /// through the real [`LocalProvisioner`], so each check costs what it
    /// costs for a local worker process.
    struct SimulatedFleet {
        local: LocalProvisioner,
        simulator: ResourceId,
        commands: Mutex<ChildStdin>,
        /// Started workers by resource id, with their tags; removed when stopped.
        workers: Mutex<BTreeMap<ResourceId, (String, Tags)>>,
    }

    impl SimulatedFleet {
        fn command(&self, line: &str) -> Result<(), FleetError> {
            let mut commands = self.commands.lock().expect("not poisoned");
            writeln!(commands, "{line}").and_then(|()| commands.flush()).map_err(|error| FleetError::CannotStart {
                program: PathBuf::from("simulator"),
                reason: error.to_string(),
            })
        }

        fn stop_worker(&self, id: &ResourceId) -> Result<(), FleetError> {
            let removed = self.workers.lock().expect("not poisoned").remove(id);
            if let Some((worker, _)) = removed {
                self.command(&format!("stop {worker}"))?;
            }
            Ok(())
        }
    }

    impl Provisioner for SimulatedFleet {
        fn kind(&self) -> &'static str {
            "simulated"
        }

        /// As before the capability existed: each simulated worker gets its FIFO (which nothing writes).
        fn output_reaches_this_host(&self) -> bool {
            true
        }

        fn start(&self, spec: ProcessSpec) -> BoxFuture<'_, Result<ResourceId, FleetError>> {
            Box::pin(async move {
                let argument = |name: &str| {
                    spec.args.windows(2).find(|pair| pair[0] == name).map(|pair| pair[1].clone()).unwrap_or_default()
                };
                let worker = argument("--worker");
                let environment = |name: &str| spec.env.get(name).cloned().unwrap_or_default();
                // One line per command: the authority's PEM travels hex-encoded.
                self.command(&format!(
                    "start {worker} {} {} {} {} {} {}",
                    argument("--coordinator"),
                    argument("--run"),
                    argument("--heartbeat-interval"),
                    argument("--enroll"),
                    environment(mayfly_jobs::enrollment::TOKEN_ENV),
                    hex::encode(environment(mayfly_jobs::enrollment::AUTHORITY_ENV)),
                ))?;
                let id = ResourceId(format!("sim:{worker}"));
                self.workers.lock().expect("not poisoned").insert(id.clone(), (worker, spec.tags));
                Ok(id)
            })
        }

        fn state<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
            Box::pin(async move {
                if !self.workers.lock().expect("not poisoned").contains_key(id) {
                    return Ok(ResourceState::Exited { code: Some(0), signal: None });
                }
                self.local.state(&self.simulator).await
            })
        }

        fn wait<'a>(&'a self, id: &'a ResourceId, _: Duration) -> BoxFuture<'a, Result<ResourceState, FleetError>> {
            self.state(id)
        }

        fn stop<'a>(&'a self, id: &'a ResourceId, _: Duration) -> BoxFuture<'a, Result<(), FleetError>> {
            Box::pin(async move { self.stop_worker(id) })
        }

        fn kill<'a>(&'a self, id: &'a ResourceId) -> BoxFuture<'a, Result<(), FleetError>> {
            Box::pin(async move { self.stop_worker(id) })
        }

        fn inventory<'a>(&'a self, filter: &'a TagFilter) -> BoxFuture<'a, Result<Vec<LiveResource>, FleetError>> {
            Box::pin(async move {
                Ok(self
                    .workers
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .filter(|(_, (_, tags))| tags.matches(filter))
                    .map(|(id, (_, tags))| LiveResource {
                        id: id.clone(),
                        kind: "simulated",
                        tags: tags.clone(),
                        started_at: None,
                        address: None,
                    })
                    .collect())
            })
        }
    }

    /// The coordinator process: serve 900 simulated workers, measure this process.
    pub fn coordinator_main() {
        let root = PathBuf::from(std::env::var_os(PROJECT_VARIABLE).expect("MAYFLY_BENCH_PROJECT"));
        let mut simulator = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(ROLE_VARIABLE, "simulator")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("spawn the simulator");
        let simulator_pid = simulator.id();
        let alive = Arc::new(AtomicU64::new(0));
        let beats = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        {
            let stdout = simulator.stdout.take().expect("the simulator's stdout");
            let (alive, beats, failures) = (alive.clone(), beats.clone(), failures.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut words = line.split_whitespace();
                    let (Some(what), Some(count)) = (words.next(), words.next().and_then(|n| n.parse().ok())) else {
                        continue;
                    };
                    match what {
                        "alive" => alive.store(count, Ordering::SeqCst),
                        "beats" => beats.store(count, Ordering::SeqCst),
                        "failures" => failures.store(count, Ordering::SeqCst),
                        _ => {}
                    }
                }
            });
        }
        let fleet = Arc::new(SimulatedFleet {
            local: LocalProvisioner::new(),
            simulator: ResourceId(format!("pid:{simulator_pid}:{}", start_ticks(simulator_pid))),
            commands: Mutex::new(simulator.stdin.take().expect("the simulator's stdin")),
            workers: Mutex::default(),
        });

        // The runtime `mayfly coordinator` runs on.
        let runtime = mayfly_jobs::coordinator::runtime().expect("a tokio runtime");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let data = root.join(".mayfly");
        // Opened as the CLI opens a project: state store and buckets sealed under its keyring.
        let keyring = Arc::new(match Keyring::from_env() {
            Ok(Some(keyring)) => keyring,
            _ => Keyring::load(&data.join("keyring.json")).expect("the project's keyring"),
        });
        let sqlite = Arc::new(
            mayfly_state_sqlite::SqliteStore::open_encrypted(&data.join("state.db"), clock.clone(), keyring.clone())
                .expect("the state store"),
        );
        let state: Arc<dyn StateStore> = sqlite;
        let buckets = mayfly_buckets::Buckets::open_encrypted(
            &data.join("buckets"),
            state.clone(),
            clock.clone(),
            keyring.clone(),
        )
        .expect("the buckets");
        let source = std::fs::read_to_string(root.join("mayfly.toml")).expect("mayfly.toml");
        let architecture = mayfly_spec::parse("mayfly.toml", &source).expect("the architecture parses");
        let job = architecture.jobs.keys().next().expect("one job").clone();
        let now = clock.now();
        let run = state
            .create_run(NewRun {
                id: new_run_id(now, rand::random()),
                job: job.clone(),
                deployment_version: state.latest_deployment().expect("deployments").map(|d| d.version),
                trigger: "bench".into(),
                deadline: now.saturating_add(Duration::from_secs(3600)),
                budget: None,
            })
            .expect("a run");
        // Simulated workers never say hello; the definition is only handed over, never run.
        let function = &architecture.jobs[&job].function;
        let worker_function = mayfly_control::function_definition(
            &architecture,
            function,
            &architecture.functions[function],
            None,
            &root,
            std::path::Path::new(super::MAYFLY),
        );
        let config = CoordinatorConfig {
            run_id: run.id.clone(),
            listen: std::net::Ipv4Addr::LOCALHOST.into(),
            advertise: None,
            worker_function,
            job,
            tags: mayfly_control::jobs::project_tags(&architecture),
            architecture: Arc::new(architecture),
            state,
            buckets,
            provisioner: fleet.clone(),
            clock,
            launch: WorkerLaunch {
                program: PathBuf::from("simulated-worker"),
                args: Vec::new(),
                env: BTreeMap::new(),
                working_dir: root.clone(),
                read_only_mounts: Vec::new(),
            },
            run_dir: data.join("runs").join(&run.id),
            owner: format!("coordinator-{}", std::process::id()),
            keyring: Some(keyring.clone()),
            timing: CoordinatorTiming {
                heartbeat_interval: HEARTBEAT,
                worker_timeout: WORKER_TIMEOUT,
                ..CoordinatorTiming::default()
            },
            tls: CoordinatorTls::default(),
            aws: None,
        };
        let began = Instant::now();
        let coordinator = runtime.spawn(mayfly_jobs::coordinator::run(config));

        while alive.load(Ordering::SeqCst) < u64::from(WORKERS) {
            if coordinator.is_finished() || began.elapsed() > Duration::from_secs(180) {
                let outcome = if coordinator.is_finished() {
                    format!("{:?}", runtime.block_on(coordinator))
                } else {
                    "still running".to_owned()
                };
                println!(
                    "(c) FAILED: {} of {WORKERS} workers called in after {:.0} s; coordinator: {outcome}",
                    alive.load(Ordering::SeqCst),
                    began.elapsed().as_secs_f64()
                );
                let _ = simulator.kill();
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let fleet_up = began.elapsed();
        // One whole heartbeat period so every worker is in its steady rhythm.
        std::thread::sleep(HEARTBEAT + Duration::from_secs(1));

        let me = std::process::id().to_string();
        let simulator_name = simulator_pid.to_string();
        let (cpu_before, simulator_before, beats_before) =
            (cpu_ticks(&me), cpu_ticks(&simulator_name), beats.load(Ordering::SeqCst));
        let window_start = Instant::now();
        std::thread::sleep(WINDOW);
        let (cpu_after, simulator_after, beats_after) =
            (cpu_ticks(&me), cpu_ticks(&simulator_name), beats.load(Ordering::SeqCst));
        let window = window_start.elapsed().as_secs_f64();
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let percent = |ticks: u64| ticks as f64 / ticks_per_second / window * 100.0;
        let cpu = percent(cpu_after - cpu_before);
        let simulator_cpu = percent(simulator_after - simulator_before);
        let peak_mb = status_kib("VmHWM:") as f64 / 1024.0;
        let rss_mb = status_kib("VmRSS:") as f64 / 1024.0;
        let coordinator_alive = !coordinator.is_finished();
        println!(
            "(c) coordinator serving {WORKERS} workers heartbeating every {} s (backlog {ITEMS} items, each worker holding one; {:.0} heartbeats/s measured, ideal \
             {:.0}/s; {} failed calls; fleet up in {:.1} s{}): CPU {cpu:.2}% of one core over {window:.0} s (target < \
             {TARGET_CPU_PERCENT:.0}%) {}, peak RSS {peak_mb:.1} MB (now {rss_mb:.1} MB; target < {TARGET_RSS_MB:.0} MB) \
             {}; the simulated workers' process used {simulator_cpu:.1}% of a core",
            HEARTBEAT.as_secs(),
            (beats_after - beats_before) as f64 / window,
            f64::from(WORKERS) / HEARTBEAT.as_secs_f64(),
            failures.load(Ordering::SeqCst),
            fleet_up.as_secs_f64(),
            if coordinator_alive { "" } else { "; THE COORDINATOR ENDED EARLY" },
            super::verdict(cpu < TARGET_CPU_PERCENT && coordinator_alive),
            super::verdict(peak_mb < TARGET_RSS_MB),
        );
        std::io::stdout().flush().ok();
        // The run is abandoned with its temporary project; stop the simulator's whole group.
        // SAFETY: kill(2) on the process group of the simulator this process started.
        unsafe { libc::kill(-(simulator_pid as i32), libc::SIGKILL) };
        let _ = simulator.wait();
        std::process::exit(0);
    }

    /// The simulator process: one task per simulated worker, started and
    /// stopped by lines on stdin; counts on stdout.
    pub fn simulator_main() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
        runtime.block_on(async {
            let alive = Arc::new(AtomicU64::new(0));
            let beats = Arc::new(AtomicU64::new(0));
            let failures = Arc::new(AtomicU64::new(0));
            {
                let (alive, beats, failures) = (alive.clone(), beats.clone(), failures.clone());
                tokio::spawn(async move {
                    let mut last = (u64::MAX, u64::MAX, u64::MAX);
                    loop {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let now = (
                            alive.load(Ordering::SeqCst),
                            beats.load(Ordering::SeqCst),
                            failures.load(Ordering::SeqCst),
                        );
                        if now != last {
                            let mut stdout = std::io::stdout().lock();
                            let _ = writeln!(stdout, "alive {}\nbeats {}\nfailures {}", now.0, now.1, now.2);
                            let _ = stdout.flush();
                            last = now;
                        }
                    }
                });
            }
            let mut stops: HashMap<String, Arc<AtomicBool>> = HashMap::new();
            let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
            while let Ok(Some(line)) = lines.next_line().await {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["start", worker, url, run, interval, enroll, token, authority] => {
                        let stop = Arc::new(AtomicBool::new(false));
                        stops.insert((*worker).to_owned(), stop.clone());
                        let interval = mayfly_core::parse_duration(interval).unwrap_or(HEARTBEAT);
                        tokio::spawn(simulated_worker(
                            (*url).to_owned(),
                            mayfly_jobs::enrollment::EnrollmentTicket {
                                url: (*enroll).to_owned(),
                                token: (*token).to_owned(),
                                authority_pem: String::from_utf8(hex::decode(authority).unwrap_or_default())
                                    .unwrap_or_default(),
                            },
                            WorkerIdentity { run: (*run).to_owned(), worker: (*worker).to_owned() },
                            interval,
                            stop,
                            (alive.clone(), beats.clone(), failures.clone()),
                        ));
                    }
                    ["stop", worker] => {
                        if let Some(stop) = stops.remove(*worker) {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    _ => eprintln!("simulator: unknown command {line:?}"),
                }
            }
        });
    }

    type Counters = (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>);

    /// A worker that calls in like `mayfly worker` does (its first log line,
    /// a lease of one item), then holds that item — a long item — and
    /// heartbeats every `interval`, as the real worker's heartbeat loop does.
    async fn simulated_worker(
        url: String,
        ticket: mayfly_jobs::enrollment::EnrollmentTicket,
        identity: WorkerIdentity,
        interval: Duration,
        stop: Arc<AtomicBool>,
        (alive, beats, failures): Counters,
    ) {
        // Like the real worker: it enrolls, then a client of its own with its own certificate, so a TLS connection of its own.
        let credentials = match mayfly_jobs::enrollment::enroll(&ticket, &identity, Duration::from_secs(30)).await {
            Ok(credentials) => credentials,
            Err(error) => {
                eprintln!("simulator: worker {}: {error}", identity.worker);
                failures.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let http = match mayfly_jobs::worker::coordinator_client(&credentials) {
            Ok(http) => http,
            Err(error) => {
                eprintln!("simulator: worker {}: {error}", identity.worker);
                failures.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let post = |path: &'static str, body: serde_json::Value| {
            let request = http.post(format!("{url}{path}")).json(&body);
            async move {
                let response = request.send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                response.json::<serde_json::Value>().await.ok()
            }
        };
        let log = LogsRequest {
            identity: identity.clone(),
            chunk: encode(format!("worker {} of run {} started\n", identity.worker, identity.run).as_bytes()),
        };
        let lease = LeaseRequest { identity: identity.clone(), max: 1 };
        let leased = match post(LOGS_PATH, serde_json::to_value(log).expect("JSON")).await {
            Some(_) => post(LEASE_PATH, serde_json::to_value(lease).expect("JSON")).await,
            None => None,
        };
        let Some(leased) = leased.and_then(|value| serde_json::from_value::<LeaseResponse>(value).ok()) else {
            failures.fetch_add(1, Ordering::SeqCst);
            return;
        };
        alive.fetch_add(1, Ordering::SeqCst);
        let holding: Vec<String> = leased.items.into_iter().map(|item| item.item).collect();
        let heartbeat = serde_json::to_value(HeartbeatRequest { identity, holding }).expect("JSON");
        loop {
            tokio::time::sleep(interval).await;
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match post(HEARTBEAT_PATH, heartbeat.clone()).await {
                Some(answer) => {
                    beats.fetch_add(1, Ordering::SeqCst);
                    if serde_json::from_value::<HeartbeatResponse>(answer).is_ok_and(|answer| answer.stop) {
                        return;
                    }
                }
                None => {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}
