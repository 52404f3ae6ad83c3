//! Docker-provisioner benchmarks (issue 6), each beside its local-process
//! baseline measured in the same run:
//!
//! ```sh
//! cargo bench -p mayfly --bench docker                 # both
//! cargo bench -p mayfly --bench docker -- first-item   # one of them
//! ```
//!
//! - `first-item`: the time from `mayfly run JOB` to the first item
//!   processed, with one cold worker container against one cold local worker
//!   process, alternating, 5 runs each (median, min, max). "Processed" is the
//!   `recorded_at` of the run's first result; the clock starts just before
//!   the `mayfly run` process is spawned, so it includes the CLI, the
//!   coordinator's start, creating and starting the worker, its hello,
//!   its first lease and the warm-up of the `lambda-echo` instance.
//! - `start-rate`: worker resources started per second through the
//!   provisioners themselves: 24 containers started one after another (as a
//!   coordinator starts its fleet) and 24 started 4 at a time, against 24
//!   local processes one after another; each resource is removed afterwards
//!   (not timed).
//!
//! Both need a running Docker engine; the image is built (if out of date)
//! with `mayfly image build` from this build's `mayfly` and `lambda-echo`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mayfly_fleet::{
    ContainerPlacement, DockerProvisioner, LocalProvisioner, NetworkRequest, ProcessSpec, Provisioner, ResourceId, Tags,
};
use serde_json::Value;

const MAYFLY: &str = env!("CARGO_BIN_EXE_mayfly");
const IMAGE: &str = "mayfly-bench-worker:latest";
const NETWORK: &str = "mayfly-bench";
const SUBNET_PREFIX: &str = "10.77.250.";
const RUNS: usize = 5;
const STARTS: usize = 24;

fn main() {
    const ALL: [&str; 2] = ["first-item", "start-rate"];
    let requested: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    if let Some(unknown) = requested.iter().find(|arg| !ALL.contains(&arg.as_str())) {
        eprintln!("unknown scenario `{unknown}`; choose from first-item, start-rate (none: both)");
        std::process::exit(2);
    }
    let echo = handler("lambda-echo");
    let built = mayfly(&std::env::temp_dir(), &["image", "build", "--tag", IMAGE, "--include", &echo]);
    assert!(built.status.success(), "mayfly image build failed: {}", String::from_utf8_lossy(&built.stderr));
    println!("load before: {}", load());
    for scenario in ALL.into_iter().filter(|s| requested.is_empty() || requested.iter().any(|r| r == s)) {
        let line = match scenario {
            "first-item" => first_item(&echo),
            _ => start_rate(),
        };
        println!("{line}");
        std::io::stdout().flush().ok();
    }
    println!("load after: {}", load());
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned()
}

fn mayfly(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(MAYFLY).args(args).current_dir(dir).env_remove("MAYFLY_PROJECT").output().expect("run mayfly")
}

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let output = mayfly(dir, args);
    assert!(output.status.success(), "mayfly {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A project with job `scan` over 4 items on one worker, local or in Docker.
fn project(docker: bool, echo: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let provisioner = if docker {
        format!(
            r#"provisioner = {{ kind = "docker", network = "{NETWORK}", subnet = "{SUBNET_PREFIX}0/24", image = "{IMAGE}" }}"#
        )
    } else {
        String::new()
    };
    let spec = format!(
        r#"version = 1
name = "bench-{kind}-{pid}"
[buckets.scans]
[functions.work]
runtime = "lambda"
command = ["{echo}"]
[jobs.scan]
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
function = "work"
workers = {{ max = 1 }}
{provisioner}
"#,
        kind = if docker { "docker" } else { "local" },
        pid = std::process::id()
    );
    std::fs::write(root.join("mayfly.toml"), spec).unwrap();
    ok(&root, &["deploy"]);
    let mut put = Command::new(MAYFLY)
        .args(["put", "scans/manifest.txt", "-"])
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("mayfly put");
    put.stdin.take().unwrap().write_all(b"a\nb\nc\nd\n").unwrap();
    assert!(put.wait().unwrap().success());
    (dir, root)
}

fn unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds from spawning `mayfly run` to the run's first recorded result.
fn time_to_first_item(root: &std::path::Path) -> f64 {
    let began = unix_millis();
    let outcome: Value = serde_json::from_str(&ok(root, &["run", "scan", "--json"])).unwrap();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let run = outcome["run"].as_str().unwrap();
    let results: Value = serde_json::from_str(&ok(root, &["results", "scan", "--run", run, "--json"])).unwrap();
    let first = results
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| chrono_millis(r["recorded_at"].as_str()?))
        .min()
        .expect("results have times");
    (first - began) as f64
}

/// `2026-12-01T21:08:52.695Z` → Unix milliseconds (the CLI's own rendering).
fn chrono_millis(text: &str) -> Option<i64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, millis) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis.parse::<i64>().ok()?)
}

fn summary(mut samples: Vec<f64>) -> String {
    samples.sort_by(f64::total_cmp);
    format!(
        "median {:.0} ms (min {:.0}, max {:.0})",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    )
}

fn first_item(echo: &str) -> String {
    let (_local_dir, local) = project(false, echo);
    let (_docker_dir, docker) = project(true, echo);
    let (mut local_ms, mut docker_ms) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        local_ms.push(time_to_first_item(&local));
        docker_ms.push(time_to_first_item(&docker));
    }
    let ratio = median(&docker_ms) / median(&local_ms);
    format!(
        "first-item: mayfly run → first item processed, cold worker, {RUNS} runs each: container {}; local process {}; container/local {ratio:.2}×",
        summary(docker_ms),
        summary(local_ms)
    )
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn worker_spec(index: usize, program: &str, run: &str) -> ProcessSpec {
    let mut spec = ProcessSpec::new(
        program,
        [
            "worker",
            "--coordinator",
            &format!("http://{SUBNET_PREFIX}1:9"),
            "--run",
            run,
            "--worker",
            &format!("w1-{index:03}"),
        ],
    );
    spec.tags =
        Tags::new().with("mayfly.project", "bench-start-rate").with("mayfly.run", run).with("mayfly.role", "worker");
    spec.working_dir = PathBuf::from("/tmp");
    spec.env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    spec
}

/// Starts `STARTS` resources `concurrency` at a time; returns resources per second and their ids.
async fn start_many(provisioner: &dyn Provisioner, program: &str, concurrency: usize) -> (f64, Vec<ResourceId>) {
    let run = format!("run-bench-{}-{concurrency}", std::process::id());
    let began = Instant::now();
    let mut ids = Vec::new();
    for chunk in (0..STARTS).collect::<Vec<_>>().chunks(concurrency) {
        let started =
            futures::future::join_all(chunk.iter().map(|&i| provisioner.start(worker_spec(i, program, &run)))).await;
        for id in started {
            ids.push(id.expect("the resource starts"));
        }
    }
    (STARTS as f64 / began.elapsed().as_secs_f64(), ids)
}

fn start_rate() -> String {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let request = NetworkRequest {
            name: NETWORK.to_owned(),
            subnet: Some(format!("{SUBNET_PREFIX}0/24")),
            gateway: Some(format!("{SUBNET_PREFIX}1").parse().unwrap()),
            tags: Tags::new().with("mayfly.project", "bench-start-rate"),
        };
        let docker = DockerProvisioner::connect().await.expect("the Docker engine answers");
        docker.ensure_network(&request).await.expect("the bench network");
        let docker = docker.with_placement(ContainerPlacement { image: IMAGE.to_owned(), network: request });
        let local = LocalProvisioner::new();
        let (sequential, ids) = start_many(&docker, "/usr/local/bin/mayfly", 1).await;
        for id in &ids {
            docker.kill(id).await.expect("remove a container");
        }
        let (four_at_a_time, ids) = start_many(&docker, "/usr/local/bin/mayfly", 4).await;
        for id in &ids {
            docker.kill(id).await.expect("remove a container");
        }
        let (local_rate, ids) = start_many(&local, MAYFLY, 1).await;
        for id in &ids {
            local.kill(id).await.expect("kill a process");
        }
        docker.remove_network_if_unused(NETWORK).await.ok();
        format!(
            "start-rate: {STARTS} worker containers started one after another {sequential:.1}/s, 4 at a time {four_at_a_time:.1}/s; local worker processes one after another {local_rate:.1}/s (container/local {:.3}×)",
            sequential / local_rate
        )
    })
}

/// The test handlers, built into this bench's target directory and profile.
fn handler(name: &str) -> String {
    let bench = std::env::current_exe().expect("the bench binary's path");
    let profile_dir = bench.parent().and_then(std::path::Path::parent).expect("<target>/<profile>/deps/<bench>");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "mayfly-test-handlers", "--bins", "--target-dir"]).arg(target_dir);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    assert!(build.status().expect("cargo build runs").success(), "cargo build -p mayfly-test-handlers failed");
    profile_dir.join(name).display().to_string()
}
