//! The router over real HTTP on loopback, without a browser: what a request
//! without a token, with a token whose scopes do not cover the path, or with
//! bad input gets — and that none of them returns data.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use mayfly_core::{Clock, Name, SystemClock};
use mayfly_dashboard::{Authorize, DashboardState, Denied};
use mayfly_state::{NewRun, NewRunItem, StateStore};
use mayfly_state_sqlite::SqliteStore;
use subtle::ConstantTimeEq;

const OPERATOR: &str = "mf_operator_token";
/// May read runs but not queues.
const RUNS_ONLY: &str = "mf_runs_only_token";
/// A token whose check cannot be recorded (as when the state store fails).
const STORE_DOWN: &str = "mf_store_down_token";

struct TwoTokens;

impl Authorize for TwoTokens {
    fn authorize(&self, token: &str, path: &str) -> Result<String, Denied> {
        let is = |expected: &str| bool::from(token.as_bytes().ct_eq(expected.as_bytes()));
        if is(OPERATOR) {
            Ok("operator".to_owned())
        } else if is(RUNS_ONLY) {
            if path.starts_with("/queues") {
                Err(Denied::Forbidden("scope runs:read".to_owned()))
            } else {
                Ok("runs-only".to_owned())
            }
        } else if is(STORE_DOWN) {
            Err(Denied::Unavailable("the access cannot be recorded: database is locked".to_owned()))
        } else {
            Err(Denied::Unauthenticated("unknown token".to_owned()))
        }
    }
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn request(address: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let mut stream = TcpStream::connect(address).expect("connect");
    let cookie = token.map(|token| format!("Cookie: mayfly_dashboard={token}\r\n")).unwrap_or_default();
    let form =
        if body.is_empty() { String::new() } else { "Content-Type: application/x-www-form-urlencoded\r\n".to_owned() };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{cookie}{form}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    Answer { status, head: head.to_ascii_lowercase(), body: body.to_owned() }
}

async fn serve() -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn StateStore> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db"), Arc::new(SystemClock)).expect("open the store"));
    store
        .create_run(NewRun {
            id: "run-1".to_owned(),
            job: Name::new("nightly").expect("name"),
            deployment_version: None,
            trigger: "manual".to_owned(),
            deadline: SystemClock.now().saturating_add(Duration::from_secs(60)),
            budget: None,
        })
        .expect("create a run");
    store
        .add_run_items("run-1", &[NewRunItem { item: "patient-0042.json".to_owned(), payload: b"secret".to_vec() }])
        .expect("add an item");
    store.record_experiment(&recorded_experiment()).expect("record an experiment");
    let state = DashboardState {
        store,
        authorize: Arc::new(TwoTokens),
        clock: Arc::new(SystemClock),
        project: "chart-coding".to_owned(),
        data_dir: dir.path().to_owned(),
        keyring: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, mayfly_dashboard::router(state)).await });
    (address, dir)
}

/// An evaluation on deploy that was refused: the new version is 3× slower.
fn recorded_experiment() -> mayfly_state::Experiment {
    use mayfly_state::{ExperimentComparison, ExperimentDetails, ExperimentOutcome, ExperimentRatio, ExperimentRun};
    let run = |variant: &str, order: u32, makespan: f64| ExperimentRun {
        variant: variant.to_owned(),
        repetition: order.div_ceil(2),
        order,
        run_id: format!("run-{variant}-{order}"),
        status: "succeeded".to_owned(),
        metrics: [("makespan".to_owned(), makespan)].into(),
        item_durations: vec![makespan / 4.0],
    };
    mayfly_state::Experiment {
        name: "evaluation of mayfly.toml against deployment 1".to_owned(),
        file_fingerprint: "ab".repeat(32),
        trigger: "deploy --evaluate".to_owned(),
        outcome: ExperimentOutcome::Refused,
        deployment_version: None,
        started_at: SystemClock.now(),
        baseline: "deployed".to_owned(),
        variants: vec!["deployed".to_owned(), "new".to_owned()],
        details: ExperimentDetails {
            repetitions: 2,
            seed: 1,
            metrics: vec!["makespan".to_owned()],
            summaries: vec!["variant `new` against `deployed`: 3.00× slower (95% CI 2.80–3.20); 2 runs each".into()],
            runs: vec![run("deployed", 1, 1.0), run("new", 2, 3.0), run("new", 3, 3.1), run("deployed", 4, 1.05)],
            comparisons: vec![ExperimentComparison {
                metric: "makespan".to_owned(),
                variant: "new".to_owned(),
                baseline: "deployed".to_owned(),
                runs: 2,
                baseline_runs: 2,
                median: 3.05,
                baseline_median: 1.025,
                ratio: Some(ExperimentRatio { ratio: 2.976, low: 2.857, high: 3.1 }),
                p_value: Some(0.333),
                differs: true,
                verdict: "2.98× slower (95% CI 2.86–3.10, p = 0.333)".to_owned(),
            }],
            error: Some("refused: makespan is 2.98× the baseline's <script>alert(1)</script>".to_owned()),
        },
    }
}

const PAGES: [&str; 8] =
    ["/", "/runs/run-1", "/runs/run-1/logs", "/queues", "/functions", "/experiments", "/experiments/1", "/audit"];
const DATA: [&str; 5] = [
    "/runs.json",
    "/runs/run-1/progress.json",
    "/runs/run-1/timeline.svg",
    "/runs/run-1/workers.html",
    "/runs/run-1/logs.json",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_pages_redirect_and_data_is_refused() {
    let (address, _dir) = serve().await;
    for token in [None, Some("mf_wrong")] {
        for page in PAGES {
            let answer = tokio::task::spawn_blocking(move || request(address, "GET", page, token, "")).await.unwrap();
            assert_eq!(answer.status, 303, "{page} with {token:?}");
            assert!(answer.head.contains("location: /sign-in?next="), "{page}: {}", answer.head);
            assert!(!answer.body.contains("patient-0042"), "no data");
        }
        for data in DATA {
            let answer = tokio::task::spawn_blocking(move || request(address, "GET", data, token, "")).await.unwrap();
            assert_eq!(answer.status, 401, "{data} with {token:?}");
            assert!(answer.body.contains("\"error\"") && !answer.body.contains("patient-0042"), "{}", answer.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_are_listed_and_shown_with_verdicts_intervals_and_a_strip_plot() {
    let (address, _dir) = serve().await;
    let get = |path: &'static str| async move {
        tokio::task::spawn_blocking(move || request(address, "GET", path, Some(RUNS_ONLY), "")).await.unwrap()
    };
    let list = get("/experiments").await;
    assert_eq!(list.status, 200, "a runs:read token sees experiments: {}", list.body);
    assert!(list.body.contains(r#"href="/experiments/1""#), "{}", list.body);
    assert!(list.body.contains("evaluation of mayfly.toml against deployment 1") && list.body.contains("refused"));

    let page = get("/experiments/1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("variant `new` against `deployed`: 3.00× slower"), "the verdict: {}", page.body);
    assert!(
        page.body.contains("2.976 (2.857–3.100)") && page.body.contains("0.3330"),
        "ratio, CI and p: {}",
        page.body
    );
    assert!(page.body.contains("<svg") && page.body.contains("makespan per run"), "a strip plot: {}", page.body);
    assert_eq!(page.body.matches("<circle").count(), 4, "one dot per run: {}", page.body);
    assert!(
        !page.body.contains("<script>alert") && page.body.contains("&lt;script&gt;alert(1)"),
        "stored text is escaped: {}",
        page.body
    );
    assert!(page.body.contains("run-new-2"), "the runs in order");

    let missing = get("/experiments/99").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(missing.body.contains("experiment `99` does not exist"), "{}", missing.body);
    let bad = get("/experiments/latest").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("experiment `latest` is not an experiment id (a number)"), "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_scopes_do_not_cover_a_path_gets_403_and_no_data() {
    let (address, _dir) = serve().await;
    let answer =
        tokio::task::spawn_blocking(move || request(address, "GET", "/queues", Some(RUNS_ONLY), "")).await.unwrap();
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("may not read this: scope runs:read"), "{}", answer.body);
    assert!(!answer.body.contains("<table"), "no data");
    let answer =
        tokio::task::spawn_blocking(move || request(address, "GET", "/runs/run-1", Some(RUNS_ONLY), "")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.body.contains("patient-0042.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_that_cannot_be_recorded_gets_503_and_no_data_and_keeps_the_session() {
    let (address, _dir) = serve().await;
    for page in PAGES {
        let answer =
            tokio::task::spawn_blocking(move || request(address, "GET", page, Some(STORE_DOWN), "")).await.unwrap();
        assert_eq!(answer.status, 503, "{page}: {}", answer.body);
        assert!(answer.head.contains("retry-after: 1"), "{page}: {}", answer.head);
        assert!(
            answer.body.contains("could not be checked or recorded: the access cannot be recorded"),
            "{}",
            answer.body
        );
        assert!(answer.body.contains("Reload the page"), "{}", answer.body);
        assert!(!answer.body.contains("patient-0042") && !answer.body.contains("<table"), "no data: {}", answer.body);
        assert!(!answer.head.contains("set-cookie"), "the session is kept: {}", answer.head);
    }
    for data in DATA {
        let answer =
            tokio::task::spawn_blocking(move || request(address, "GET", data, Some(STORE_DOWN), "")).await.unwrap();
        // Not 401: the page's script signs out on a 401, but retries anything else.
        assert_eq!(answer.status, 503, "{data}: {}", answer.body);
        assert!(answer.body.contains("\"error\"") && !answer.body.contains("patient-0042"), "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_cookie_and_bad_input_says_what_is_wrong() {
    let (address, _dir) = serve().await;
    let answer = tokio::task::spawn_blocking(move || {
        request(address, "POST", "/sign-in", None, &format!("token={OPERATOR}&next=%2Fruns%2Frun-1"))
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 303);
    assert!(answer.head.contains("location: /runs/run-1"), "{}", answer.head);
    assert!(
        answer
            .head
            .contains(&format!("set-cookie: mayfly_dashboard={OPERATOR}; path=/; httponly; secure; samesite=strict")),
        "{}",
        answer.head
    );
    let answer = tokio::task::spawn_blocking(move || {
        request(address, "POST", "/sign-in", None, "token=mf_wrong&next=https%3A%2F%2Fevil.example%2F")
    })
    .await
    .unwrap();
    assert_eq!(answer.status, 401);
    assert!(!answer.head.contains("set-cookie") && answer.body.contains("not accepted"));
    assert!(answer.body.contains(r#"name="next" value="/""#), "a foreign next is dropped");

    let cases = [
        ("/runs/no-such-run", 404, "run `no-such-run` does not exist"),
        ("/runs/no-such-run/progress.json", 404, "run `no-such-run` does not exist"),
        ("/runs/run-1?status=finished", 400, "status `finished` is not an item status"),
        ("/runs/run-1/logs.json?cursor=w1%3Dx", 400, "`x` is not a byte offset"),
    ];
    for (path, status, message) in cases {
        let answer =
            tokio::task::spawn_blocking(move || request(address, "GET", path, Some(OPERATOR), "")).await.unwrap();
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.body.contains(message), "{path}: {}", answer.body);
    }

    let answer = tokio::task::spawn_blocking(move || request(address, "GET", "/", Some(OPERATOR), "")).await.unwrap();
    assert!(answer.head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{}", answer.head);
    assert!(answer.head.contains("cache-control: no-store") && answer.head.contains("x-content-type-options: nosniff"));
    let answer =
        tokio::task::spawn_blocking(move || request(address, "POST", "/sign-out", Some(OPERATOR), "")).await.unwrap();
    assert!(
        answer.head.contains("set-cookie: mayfly_dashboard=; path=/; httponly; secure; samesite=strict; max-age=0")
    );
}
