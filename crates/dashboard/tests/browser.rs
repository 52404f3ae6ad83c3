//! The dashboard in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`), against the real router
//! serving a real, encrypted SQLite state store on a loopback port, while a
//! background thread works through a run the way a coordinator's workers do
//! (leasing and completing items through the `StateStore` trait, appending
//! encrypted live logs through `mayfly_jobs::logs`).
//!
//! Screenshots are saved under `target/dashboard-screenshots/`.

#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use mayfly_core::queue::QueueConfig;
use mayfly_core::run::{RunReport, RunStatus};
use mayfly_core::{Clock, Name, SystemClock};
use mayfly_crypto::Keyring;
use mayfly_dashboard::{Authorize, DashboardState, Denied};
use mayfly_state::{
    InvocationRecord, ItemCompletion, NewDeployment, NewRun, NewRunItem, OutgoingMessage, StateStore, WorkerRecord,
};
use mayfly_state_sqlite::SqliteStore;
use subtle::ConstantTimeEq;
use webdriver::{open_browser, screenshot, start_chromedriver};

const TOKEN: &str = "mf_test_4f1c9a7e2b";
const PRINCIPAL: &str = "token:ops-oncall";
const ITEMS: usize = 40;
const ITEM_TIME: Duration = Duration::from_millis(500);

/// The test's token check: one fixed token, compared in constant time.
struct FixedToken;

impl Authorize for FixedToken {
    fn authorize(&self, token: &str, _path: &str) -> Result<String, Denied> {
        if bool::from(token.as_bytes().ct_eq(TOKEN.as_bytes())) {
            Ok(PRINCIPAL.to_owned())
        } else {
            Err(Denied::Unauthenticated("unknown token".to_owned()))
        }
    }
}

/// A raw HTTP/1.1 GET on loopback: the status code and the body.
fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect to the dashboard");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("send a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    (status, response)
}

/// Wait until `condition` holds, polling every 100 ms, or fail saying `what`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Click what `locator` finds and wait until the browser has arrived at
/// `path`: a click returns before the navigation it starts has ended.
async fn follow(browser: &Client, locator: Locator<'_>, path: &str) {
    browser.find(locator).await.expect("the link or button to follow").click().await.expect("click");
    eventually(&format!("the browser arrives at {path}"), Duration::from_secs(30), || async move {
        browser.current_url().await.is_ok_and(|url| url.path() == path)
    })
    .await;
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser.find(Locator::Css(css)).await.expect(css).text().await.expect("element text")
}

const ARCHITECTURE: &str = r#"version = 1
name = "chart-coding"
tags = { owner = "clinical-data", data-class = "phi" }

[queues.to-code]
max_receives = 3
dead_letter = "to-code-dlq"

[queues.to-code-dlq]

[functions.code-chart]
runtime = "process"
command = ["python3", "code_chart.py"]

[functions.extract-notes]
runtime = "lambda"
command = ["python3", "-m", "awslambdaric", "notes.handler"]
"#;

/// What the dashboard shows besides the live run: a deployment, queues with
/// messages, invocations in the ledger, and an earlier, finished run.
fn record_history(store: &dyn StateStore) {
    store
        .record_deployment(NewDeployment {
            content_hash: mayfly_spec::content_hash(ARCHITECTURE),
            source: ARCHITECTURE.to_owned(),
            forced: false,
        })
        .expect("record a deployment");
    let name = |text: &str| Name::new(text).expect("a valid name");
    let dlq = name("to-code-dlq");
    store.create_queue(&dlq, &QueueConfig::default(), &[]).expect("create the dead-letter queue");
    let config = QueueConfig { max_receives: Some(3), dead_letter: Some(dlq.clone()), ..QueueConfig::default() };
    store.create_queue(&name("to-code"), &config, &[]).expect("create a queue");
    let messages: Vec<OutgoingMessage> = (0..37).map(|n| OutgoingMessage::new(format!("chart {n}"))).collect();
    store.send_messages(&name("to-code"), &messages).expect("send messages");
    store.send_messages(&dlq, &messages[..2]).expect("send dead letters");
    for (index, function) in
        ["code-chart", "code-chart", "code-chart", "extract-notes", "code-chart"].iter().enumerate()
    {
        let record = InvocationRecord {
            request_id: format!("req-{index}"),
            function: name(function),
            deployment_version: Some(1),
            trigger: "queue:to-code".to_owned(),
            attempt: 1,
            started_at: SystemClock.now(),
            duration: Duration::from_millis(40 + 90 * index as u64),
            init_duration: (index == 0).then_some(Duration::from_millis(120)),
            outcome: if index == 2 { "timeout".to_owned() } else { InvocationRecord::SUCCESS.to_owned() },
            error_type: None,
            error_message: None,
            peak_memory: Some(48 << 20),
            bytes_in: 512,
            bytes_out: 128,
            estimated_cost: 0.000_002,
        };
        store.record_invocation(&record, b"").expect("record an invocation");
    }
    // An earlier run of the job, finished with its report.
    let started = SystemClock.now();
    store
        .create_run(NewRun {
            id: "run-20261201t020000-0a1b2c".to_owned(),
            job: name("nightly"),
            deployment_version: Some(1),
            trigger: "schedule:cron(0 2 * * *)".to_owned(),
            deadline: started.saturating_add(Duration::from_secs(7_200)),
            budget: Some(5.0),
        })
        .expect("create the earlier run");
    assert!(store.claim_run("run-20261201t020000-0a1b2c", "coordinator-0", Duration::from_secs(60)).expect("claim"));
    let report = RunReport {
        run_id: "run-20261201t020000-0a1b2c".to_owned(),
        job: name("nightly"),
        status: RunStatus::Succeeded,
        items_expected: 0,
        items_done: 0,
        items_failed_attempts: 0,
        items_dead_lettered: 0,
        retries: 0,
        workers: vec![],
        started_at: started,
        finished_at: started,
        makespan: Duration::from_secs(1_843),
        estimated_cost: 0.4172,
        notes: vec![],
    };
    let report = serde_json::to_string(&report).expect("report JSON");
    store
        .finish_run("run-20261201t020000-0a1b2c", "coordinator-0", RunStatus::Succeeded, None, Some(&report))
        .expect("finish the earlier run");
}

const RUN: &str = "run-20261201t210000-c0ffee";
const WORKERS: [&str; 2] = ["w1-001", "w1-002"];

fn start_live_run(store: &dyn StateStore) {
    let now = SystemClock.now();
    store
        .create_run(NewRun {
            id: RUN.to_owned(),
            job: Name::new("nightly").expect("name"),
            deployment_version: Some(1),
            trigger: "manual".to_owned(),
            deadline: now.saturating_add(Duration::from_secs(3_600)),
            budget: None,
        })
        .expect("create the live run");
    assert!(store.claim_run(RUN, "coordinator-1", Duration::from_secs(600)).expect("claim the live run"));
    let items: Vec<NewRunItem> = (0..ITEMS)
        .map(|n| NewRunItem { item: format!("charts/2026/12/{n:04}.json"), payload: format!("chart {n}").into_bytes() })
        .collect();
    store.add_run_items(RUN, &items).expect("add items");
    for worker in WORKERS {
        store.upsert_worker(&worker_record(worker, 0, 0, Duration::ZERO)).expect("record a worker");
    }
}

fn worker_record(worker: &str, done: u64, failed: u64, busy: Duration) -> WorkerRecord {
    WorkerRecord {
        run_id: RUN.to_owned(),
        worker: worker.to_owned(),
        resource: format!("pid:{}:1234", 4000 + worker.len()),
        started_at: SystemClock.now(),
        stopped_at: None,
        end: None,
        items_done: done,
        items_failed: failed,
        busy,
        log_object: None,
        log_sha256: None,
    }
}

/// One worker of the live run: lease, log, complete, until nothing is left.
/// The first attempt at every seventh item fails and is retried.
fn work(
    store: Arc<dyn StateStore>,
    run_dir: PathBuf,
    keyring: Arc<Keyring>,
    worker: &'static str,
    stop: Arc<AtomicBool>,
) {
    let (mut done, mut failed, mut busy) = (0, 0, Duration::ZERO);
    let mut started = SystemClock.now();
    while !stop.load(Ordering::Relaxed) {
        let Some(item) = store.lease_run_items(RUN, worker, 1).expect("lease").pop() else {
            if store.run_item_counts(RUN).expect("counts").leased == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let began = Instant::now();
        let line = format!("coding {} (attempt {})\n", item.item, item.attempts);
        mayfly_jobs::logs::append(&run_dir, RUN, worker, line.as_bytes(), Some(&keyring)).expect("append a log line");
        std::thread::sleep(ITEM_TIME);
        let number: usize = item.item[15..19].parse().expect("item number");
        let completion = if number % 7 == 3 && item.attempts == 1 {
            failed += 1;
            let line = format!("error: {} timed out, will retry\n", item.item);
            mayfly_jobs::logs::append(&run_dir, RUN, worker, line.as_bytes(), Some(&keyring)).expect("append");
            ItemCompletion::Failed { error: "timeout after 30s".to_owned(), retry_at: Some(SystemClock.now()) }
        } else {
            done += 1;
            let line = format!("coded {}: ICD-10 I21.4\n", item.item);
            mayfly_jobs::logs::append(&run_dir, RUN, worker, line.as_bytes(), Some(&keyring)).expect("append");
            ItemCompletion::Done { result: b"{\"codes\":[\"I21.4\"]}".to_vec() }
        };
        store.complete_run_item(RUN, &item.item, worker, item.attempts, completion).expect("complete");
        busy += began.elapsed();
        let mut record = worker_record(worker, done, failed, busy);
        record.started_at = started;
        store.upsert_worker(&record).expect("update the worker");
        started = record.started_at;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_follows_a_running_job_and_tails_its_logs() {
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join(".mayfly");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let keyring = Arc::new(Keyring::generate(SystemClock.now()));
    let store: Arc<dyn StateStore> = Arc::new(
        SqliteStore::open_encrypted(&data_dir.join("state.db"), Arc::new(SystemClock), keyring.clone())
            .expect("open the state store"),
    );
    record_history(store.as_ref());
    start_live_run(store.as_ref());

    let state = DashboardState {
        store: store.clone(),
        authorize: Arc::new(FixedToken),
        clock: Arc::new(SystemClock),
        project: "chart-coding".to_owned(),
        data_dir: data_dir.clone(),
        keyring: Some(keyring.clone()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move { axum::serve(listener, mayfly_dashboard::router(state)).await });
    let base = format!("http://{address}");

    // Without a token: data endpoints answer 401 with no data, pages redirect to sign-in.
    let (status, body) = http_get(address, &format!("/runs/{RUN}/progress.json"));
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("summary") && !body.contains("charts/"), "no data without a token: {body}");
    let (status, body) = http_get(address, "/queues");
    assert_eq!(status, 303, "{body}");
    assert!(body.contains("location: /sign-in?next=%2Fqueues"), "{body}");

    let (_chromedriver, webdriver) = start_chromedriver(Duration::from_secs(20));
    let browser = open_browser(&webdriver, &[]).await;

    browser.goto(&format!("{base}/runs/{RUN}")).await.expect("open the run page");
    let url = browser.current_url().await.expect("url");
    assert_eq!(url.path(), "/sign-in", "without a token a page sends you to sign in");
    screenshot(&browser, "01-sign-in").await;

    // A wrong token is refused and says so.
    browser.find(Locator::Id("token")).await.expect("token field").send_keys("mf_wrong").await.expect("type");
    browser.find(Locator::Css("button[type=submit]")).await.expect("submit").click().await.expect("click");
    // The refusal is a new page: wait for it rather than read the old one.
    eventually("a wrong token is refused and the page says so", Duration::from_secs(30), || {
        let browser = &browser;
        async move {
            match browser.find(Locator::Css(".alert")).await {
                Ok(alert) => alert.text().await.is_ok_and(|text| text.contains("not accepted")),
                Err(_) => false,
            }
        }
    })
    .await;

    // The right token signs in and goes on to the page asked for.
    browser.find(Locator::Id("token")).await.expect("token field").send_keys(TOKEN).await.expect("type");
    browser.find(Locator::Css("button[type=submit]")).await.expect("submit").click().await.expect("click");
    // The click returns before the form's navigation ends; on a loaded machine, wait for it.
    let asked_for = format!("/runs/{RUN}");
    eventually("signing in leads to the page first asked for", Duration::from_secs(30), || {
        let (browser, asked_for) = (&browser, &asked_for);
        async move { browser.current_url().await.is_ok_and(|url| url.path() == asked_for) }
    })
    .await;
    let cookies = browser.get_all_cookies().await.expect("cookies");
    let cookie = cookies.iter().find(|c| c.name() == "mayfly_dashboard").expect("the token cookie is set");
    assert_eq!((cookie.http_only(), cookie.secure()), (Some(true), Some(true)));
    assert!(!browser.source().await.expect("source").contains(TOKEN), "the token is never in a page");

    // The runs list shows the running job; follow it to its detail page.
    follow(&browser, Locator::Css("nav a[href='/']"), "/").await;
    let row = browser.find(Locator::Css(&format!("tr[data-run-id='{RUN}']"))).await.expect("the live run's row");
    assert!(row.text().await.expect("row text").contains("running"));
    assert!(text_of(&browser, "tbody").await.contains("succeeded"), "the earlier run is listed too");

    // Start the workers now, so the page sees the run advance.
    let stop = Arc::new(AtomicBool::new(false));
    let run_dir = mayfly_control::jobs::run_dir(&data_dir, RUN);
    let workers: Vec<_> = WORKERS
        .into_iter()
        .map(|worker| {
            let (store, run_dir, keyring, stop) = (store.clone(), run_dir.clone(), keyring.clone(), stop.clone());
            std::thread::spawn(move || work(store, run_dir, keyring, worker, stop))
        })
        .collect();
    let percent_in_list = |browser: Client| async move {
        text_of(&browser, &format!("tr[data-run-id='{RUN}'] [data-field=percent]")).await
    };
    eventually("the runs list shows progress", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { percent_in_list(browser).await != "0%" }
    })
    .await;
    screenshot(&browser, "02-runs").await;

    follow(&browser, Locator::Css(&format!("a[href='/runs/{RUN}']")), &format!("/runs/{RUN}")).await;
    let first = text_of(&browser, "#progress-summary").await;
    eventually("the run page's progress advances", Duration::from_secs(10), || {
        let (browser, first) = (browser.clone(), first.clone());
        async move { text_of(&browser, "#progress-summary").await != first }
    })
    .await;
    let done_of = |summary: &str| summary.split(' ').next().and_then(|n| n.parse::<u64>().ok()).expect("N of M items");
    assert!(done_of(&text_of(&browser, "#progress-summary").await) > done_of(&first), "progress went up");
    eventually("the timeline draws attempts", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { browser.find_all(Locator::Css("svg.timeline rect.bar")).await.map_or(0, |bars| bars.len()) >= 4 }
    })
    .await;
    assert!(text_of(&browser, "#ledger").await.contains("charts/2026/12/0000.json"), "the ledger lists items");
    screenshot(&browser, "03-run-detail").await;

    // The live log tail shows lines as they are written.
    follow(&browser, Locator::LinkText("Live log tail →"), &format!("/runs/{RUN}/logs")).await;
    let lines =
        |browser: Client| async move { browser.find_all(Locator::Css("pre.log .line")).await.map_or(0, |l| l.len()) };
    let shown = lines(browser.clone()).await;
    eventually("new log lines appear", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { lines(browser).await > shown + 2 }
    })
    .await;
    let log = text_of(&browser, "pre.log").await;
    assert!(log.contains("w1-001") && log.contains("coded charts/2026/12/"), "{log}");
    screenshot(&browser, "04-log-tail").await;

    // Queues, functions and audit.
    browser.goto(&format!("{base}/queues")).await.expect("queues");
    let queues = text_of(&browser, "main").await;
    assert!(queues.contains("to-code") && queues.contains("37"), "{queues}");
    screenshot(&browser, "05-queues").await;
    browser.goto(&format!("{base}/functions")).await.expect("functions");
    let functions = text_of(&browser, "main").await;
    assert!(functions.contains("code-chart") && functions.contains("extract-notes"), "{functions}");
    assert!(browser.find(Locator::Css("svg.latency")).await.is_ok(), "a latency chart");
    screenshot(&browser, "06-functions").await;
    browser.goto(&format!("{base}/audit")).await.expect("audit");
    assert!(text_of(&browser, "main").await.contains("No audit has run"));

    // The run finishes: the open page turns its badge to succeeded by itself.
    browser.goto(&format!("{base}/runs/{RUN}")).await.expect("the run page again");
    for worker in workers {
        worker.join().expect("a worker thread");
    }
    let counts = store.run_item_counts(RUN).expect("counts");
    assert_eq!((counts.done, counts.total), (ITEMS as u64, ITEMS as u64));
    store.finish_run(RUN, "coordinator-1", RunStatus::Succeeded, None, None).expect("finish the run");
    eventually("the page shows the run succeeded", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { text_of(&browser, ".run-head [data-badge]").await == "succeeded" }
    })
    .await;
    assert_eq!(text_of(&browser, "#progress-percent").await, "100%");
    screenshot(&browser, "07-run-finished").await;
    browser.set_window_size(400, 900).await.expect("a narrow window");
    screenshot(&browser, "08-run-finished-narrow").await;
    browser.set_window_size(1360, 1000).await.expect("a wide window");

    // Signing out forgets the token: pages send you back to sign in.
    browser.find(Locator::Css("form.who button")).await.expect("sign out").click().await.expect("click");
    // The click submits a form: the next page arrives a moment later.
    eventually("signing out lands on the sign-in page", Duration::from_secs(10), || {
        let browser = browser.clone();
        async move { browser.current_url().await.is_ok_and(|url| url.path() == "/sign-in") }
    })
    .await;
    browser.goto(&format!("{base}/runs/{RUN}/logs")).await.expect("the log page");
    let url = browser.current_url().await.expect("url");
    assert_eq!((url.path(), url.query()), ("/sign-in", Some("next=%2Fruns%2Frun-20261201t210000-c0ffee%2Flogs")));

    stop.store(true, Ordering::Relaxed);
    browser.close().await.expect("close the browser");
    server.abort();
    eprintln!("browser test took {:?}", began.elapsed());
}
