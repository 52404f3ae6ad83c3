//! Group commit under a coordinator crash: completions from many workers
//! share commits, the coordinator process is SIGKILLed while they are in
//! flight, and the state store must hold every completion a worker was
//! acknowledged for — durable before its answer — and no item done twice.
//!
//! The coordinator runs in a process of its own (this test binary
//! re-executed, `GROUP_COMMIT_ROLE=coordinator`) on a real SQLite file, and
//! starts its workers through the real local provisioner: each is a shell
//! process that writes its arguments (addresses, name) and its enrollment
//! token and the run authority's certificate to files and sleeps. This
//! process plays those workers with the real protocol: each enrolls with its
//! token, then speaks over mutual TLS with the certificate it got, and this
//! process remembers every completion the coordinator acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mayfly_core::run::{ItemStatus, new_run_id};
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_jobs::coordinator::{CoordinatorConfig, CoordinatorTiming, CoordinatorTls, WorkerLaunch};
use mayfly_jobs::protocol::{
    AttemptOutcome, AttemptReport, COMPLETE_PATH, CompleteRequest, CompleteResponse, LEASE_PATH, LeaseRequest,
    LeaseResponse, LeasedItem, WorkerIdentity, encode,
};
use mayfly_state::{AttemptOutcome as LedgerOutcome, NewRun, NewRunItem, StateStore};
use mayfly_state_sqlite::SqliteStore;

const ROLE: &str = "GROUP_COMMIT_ROLE";
const ROOT: &str = "GROUP_COMMIT_ROOT";
const RUN: &str = "GROUP_COMMIT_RUN";
const TEST_NAME: &str =
    "the_coordinator_killed_during_grouped_commits_loses_no_acknowledged_result_and_duplicates_none";
const ITEMS: usize = 3_000;
/// Acknowledged completions before the kill: well into the run, far from its end.
const KILL_AFTER: usize = 600;

const SPEC: &str = r#"version = 1
name = "group-commit-crash"
[buckets.scans]
[functions.work]
command = ["true"]
[jobs.scan]
source = { bucket = "scans", prefix = "in/" }
function = "work"
workers = { max = 16 }
max_attempts = 3
"#;

/// Each worker process writes the run authority's certificate to `<dir>/<pid>.ca`, then its
/// arguments and its enrollment token, one a line, to `<dir>/<pid>.args`, then sleeps.
const WORKER_SCRIPT: &str = "printf '%s' \"$MAYFLY_RUN_AUTHORITY\" > \"$0/$$.ca\" && \
     printf '%s\\n' \"$@\" --token \"$MAYFLY_ENROLLMENT_TOKEN\" > \"$0/$$.args.tmp\" && \
     mv \"$0/$$.args.tmp\" \"$0/$$.args\"; exec sleep 600";

fn open_store(root: &Path) -> Arc<dyn StateStore> {
    Arc::new(SqliteStore::open(&root.join("state.db"), Arc::new(SystemClock)).expect("the state store"))
}

#[test]
fn the_coordinator_killed_during_grouped_commits_loses_no_acknowledged_result_and_duplicates_none() {
    if std::env::var(ROLE).as_deref() == Ok("coordinator") {
        return coordinator_main();
    }
    let project = tempfile::tempdir().unwrap();
    let root = project.path().to_owned();
    std::fs::create_dir_all(root.join("workers")).unwrap();
    let run_id = {
        let state = open_store(&root);
        let now = SystemClock.now();
        let run = state
            .create_run(NewRun {
                id: new_run_id(now, rand::random()),
                job: "scan".parse().unwrap(),
                deployment_version: None,
                trigger: "test".into(),
                deadline: now.saturating_add(Duration::from_secs(600)),
                budget: None,
            })
            .unwrap();
        let items: Vec<NewRunItem> =
            (0..ITEMS).map(|i| NewRunItem { item: format!("item-{i:05}"), payload: b"{}".to_vec() }).collect();
        state.add_run_items(&run.id, &items).unwrap();
        run.id
    };

    let mut coordinator = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(ROLE, "coordinator")
        .env(ROOT, &root)
        .env(RUN, &run_id)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let acknowledged: Arc<Mutex<Vec<(String, u32, String)>>> = Arc::default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let mut playing = BTreeSet::new();
    let mut tasks = Vec::new();
    loop {
        // Play every worker the coordinator started.
        for (pid, arguments) in started_workers(&root.join("workers")) {
            if playing.insert(pid) {
                tasks.push(runtime.spawn(play_worker(arguments, acknowledged.clone())));
            }
        }
        if acknowledged.lock().unwrap().len() >= KILL_AFTER {
            break;
        }
        if let Ok(Some(status)) = coordinator.try_wait() {
            panic!("the coordinator exited ({status}) before the kill");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "too few completions were acknowledged in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL while completions stream in from every worker.
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for task in tasks {
        task.abort();
    }
    drop(runtime);
    for pid in &playing {
        // SAFETY: kill(2) on the process group of a worker process this test's coordinator started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    let state = open_store(&root);
    let job: Name = "scan".parse().unwrap();
    let workers_seen: BTreeSet<&str> = acknowledged.iter().map(|(_, _, worker)| worker.as_str()).collect();
    assert!(workers_seen.len() > 1, "completions came from several workers at once: {workers_seen:?}");
    for (item, attempt, worker) in &acknowledged {
        let result = state.result(&job, item).unwrap_or_else(|error| panic!("acknowledged {item} is lost: {error}"));
        assert_eq!((result.attempt, result.worker.as_str()), (*attempt, worker.as_str()), "{item}");
    }
    let done = state.run_items(&run_id, Some(ItemStatus::Done), None, 100_000).unwrap();
    let results = state.results(&job, Some(&run_id), None, 100_000).unwrap();
    assert_eq!(results.len(), done.len(), "one result per done item");
    let mut done_attempts: BTreeMap<String, u32> = BTreeMap::new();
    for attempt in state.run_item_attempts(&run_id, 100_000).unwrap() {
        if attempt.outcome == LedgerOutcome::Done {
            *done_attempts.entry(attempt.item).or_default() += 1;
        }
    }
    assert!(done_attempts.values().all(|&n| n == 1), "no item done twice: {done_attempts:?}");
    assert_eq!(done_attempts.len(), done.len());
    assert!(done.len() >= acknowledged.len() && done.len() < ITEMS, "killed mid-run: {} done", done.len());
    eprintln!(
        "group commit crash: {} acknowledged by {} workers before the SIGKILL, {} done in the store",
        acknowledged.len(),
        workers_seen.len(),
        done.len()
    );
}

/// `(pid, arguments)` of each worker process that wrote its arguments.
fn started_workers(dir: &Path) -> Vec<(i32, BTreeMap<String, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid: i32 = name.strip_suffix(".args")?.parse().ok()?;
            let text = std::fs::read_to_string(entry.path()).ok()?;
            let lines: Vec<&str> = text.lines().collect();
            let mut arguments: BTreeMap<String, String> = lines
                .windows(2)
                .filter(|pair| pair[0].starts_with("--"))
                .map(|pair| (pair[0].trim_start_matches("--").to_owned(), pair[1].to_owned()))
                .collect();
            arguments.insert("authority".to_owned(), std::fs::read_to_string(dir.join(format!("{pid}.ca"))).ok()?);
            Some((pid, arguments))
        })
        .collect()
}

/// A worker that completes each item at once and asks for the next in the
/// same call, as `mayfly worker` does; remembers what was acknowledged.
async fn play_worker(arguments: BTreeMap<String, String>, acknowledged: Arc<Mutex<Vec<(String, u32, String)>>>) {
    let url = arguments["coordinator"].clone();
    let identity = WorkerIdentity { run: arguments["run"].clone(), worker: arguments["worker"].clone() };
    let ticket = mayfly_jobs::enrollment::EnrollmentTicket {
        url: arguments["enroll"].clone(),
        token: arguments["token"].clone(),
        authority_pem: arguments["authority"].clone(),
    };
    let credentials = mayfly_jobs::enrollment::enroll(&ticket, &identity, Duration::from_secs(30)).await.unwrap();
    let http = mayfly_jobs::worker::coordinator_client(&credentials).unwrap();
    let lease = LeaseRequest { identity: identity.clone(), max: 2 };
    let Ok(response) = http.post(format!("{url}{LEASE_PATH}")).json(&lease).send().await else { return };
    let Ok(leased) = response.json::<LeaseResponse>().await else { return };
    let mut queue: Vec<LeasedItem> = leased.items;
    while let Some(item) = queue.pop() {
        let completion = CompleteRequest {
            identity: identity.clone(),
            attempts: vec![AttemptReport {
                item: item.item.clone(),
                attempt: item.attempt,
                outcome: AttemptOutcome::Done,
                result: Some(encode(format!("result of {}", item.item).as_bytes())),
                error: None,
                duration_ms: 0,
                log: None,
            }],
            lease_next: 1,
        };
        let Ok(response) = http.post(format!("{url}{COMPLETE_PATH}")).json(&completion).send().await else { return };
        let Ok(answer) = response.json::<CompleteResponse>().await else { return };
        if answer.accepted == [true] {
            acknowledged.lock().unwrap().push((item.item, item.attempt, identity.worker.clone()));
        }
        queue.extend(answer.items);
    }
}

/// The coordinator process: serve the run until killed.
fn coordinator_main() {
    let root = PathBuf::from(std::env::var_os(ROOT).unwrap());
    let run_id = std::env::var(RUN).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = open_store(&root);
    let runtime = mayfly_jobs::coordinator::runtime().unwrap();
    let buckets = mayfly_buckets::Buckets::open(&root.join("buckets"), state.clone(), clock.clone()).unwrap();
    let architecture = mayfly_spec::parse("mayfly.toml", SPEC).unwrap();
    let scans: Name = "scans".parse().unwrap();
    runtime.block_on(buckets.create_bucket(&scans, &[])).unwrap();
    let job: Name = "scan".parse().unwrap();
    let function = &architecture.jobs[&job].function;
    let worker_function = mayfly_control::function_definition(
        &architecture,
        function,
        &architecture.functions[function],
        None,
        &root,
        Path::new("/bin/true"),
    );
    let config = CoordinatorConfig {
        run_id: run_id.clone(),
        job,
        tags: mayfly_control::jobs::project_tags(&architecture),
        architecture: Arc::new(architecture),
        state,
        buckets,
        provisioner: Arc::new(mayfly_fleet::LocalProvisioner::new()),
        clock,
        launch: WorkerLaunch {
            program: PathBuf::from("sh"),
            args: vec!["-c".into(), WORKER_SCRIPT.into(), root.join("workers").display().to_string()],
            env: BTreeMap::new(),
            working_dir: root.clone(),
            read_only_mounts: Vec::new(),
        },
        listen: std::net::Ipv4Addr::LOCALHOST.into(),
        advertise: None,
        worker_function,
        run_dir: root.join("runs").join(&run_id),
        owner: format!("coordinator-{}", std::process::id()),
        keyring: None,
        timing: CoordinatorTiming::default(),
        tls: CoordinatorTls::default(),
        aws: None,
    };
    let outcome = runtime.block_on(mayfly_jobs::coordinator::run(config));
    panic!("the coordinator ended before it was killed: {outcome:?}");
}
