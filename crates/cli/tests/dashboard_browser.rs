//! The dashboard in a real browser against the real `mayfly serve`, following
//! a real run: a project with a bucket-prefix job of 20 items, its function a
//! shell script that takes 0.4 s an item, started with `mayfly run --detach`
//! (a coordinator process and two worker processes of the real binary). A
//! person in headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver) signs in with a token from `mayfly tokens create`,
//! watches the run's progress advance on the runs list and on its page, sees
//! its timeline and workers, tails a live log line written by a real worker,
//! and sees the final status and the report when the run ends.
//!
//! TLS: `mayfly serve` speaks only HTTPS, with the certificate it generated
//! for the project. Chromium is told to accept exactly that certificate's key
//! (`--ignore-certificate-errors-spki-list` with the base64 SHA-256 of its
//! SubjectPublicKeyInfo), not `--ignore-certificate-errors`, which would
//! accept any certificate and so would not notice `serve` presenting another.
//! The pin is computed from the key pair `serve` generated next to the
//! certificate (`.mayfly/tls/key.pem`), the same SubjectPublicKeyInfo.
//!
//! Pace: the function waits for a ticket (a file the test moves into
//! `gate/open/`) before its 0.4 s of work, so the test releases items in steps
//! and each "the progress advances" is observed while the page is open, on a
//! loaded machine as on an idle one, with no race against the run ending
//! early. Leaving the test opens the gate so that no run is left waiting.
//!
//! Screenshots are saved under `target/dashboard-screenshots/serve-*.png`.

mod support;
#[path = "../../dashboard/tests/support/webdriver.rs"]
mod webdriver;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use fantoccini::{Client, Locator};
use rcgen::PublicKeyData;
use sha2::{Digest, Sha256};
use support::{Project, Served};
use webdriver::start_chromedriver;

const ITEMS: usize = 20;
/// The rows of a run page's workers table (the item ledger is the other table).
const WORKER_ROWS: &str = "section.card:not(#ledger) > .table-wrap tbody tr";
/// How long any one thing a person waits for may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Code one chart: take a ticket from `gate/open/` (or pass when `gate/all`
/// exists), work 0.4 s, log to stderr (the worker's log) and answer.
const CODE_CHART: &str = r#"#!/bin/sh
event=$(cat)
item=$(printf '%s' "$event" | sed 's/.*"item":"\([^"]*\)".*/\1/')
echo "coding $item" >&2
until [ -e gate/all ]; do
  for ticket in gate/open/*; do
    if mv "$ticket" gate/used/ 2>/dev/null; then break 2; fi
  done
  sleep 0.05
done
sleep 0.4
echo "coded $item: ICD-10 I21.4" >&2
printf '{"item": "%s", "codes": ["I21.4"]}' "$item"
"#;

fn chart_project() -> Project {
    let name = format!("browser-{}", std::process::id());
    let spec = format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "tests" }}
[buckets.charts]
[buckets.logs]
[functions.code-chart]
command = ["sh", "functions/code-chart.sh"]
timeout = "2m"
[jobs.nightly]
source = {{ bucket = "charts", prefix = "in/" }}
function = "code-chart"
workers = {{ max = 2 }}
logs = "logs"
[api]
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/code-chart.sh"), CODE_CHART).unwrap();
    for folder in ["gate/open", "gate/used"] {
        std::fs::create_dir_all(project.path(folder)).unwrap();
    }
    project.ok(&["deploy"]);
    std::fs::write(project.path("chart.json"), r#"{"patient": "synthetic", "note": "chest pain"}"#).unwrap();
    for n in 0..ITEMS {
        project.ok(&["put", &format!("charts/in/{n:04}.json"), "chart.json"]);
    }
    project
}

/// The function's tickets: each lets one item through.
struct Gate {
    dir: PathBuf,
    released: usize,
}

impl Gate {
    fn new(project: &Project) -> Gate {
        Gate { dir: project.path("gate"), released: 0 }
    }

    /// Let items through until `total` have been let through in all.
    fn release_up_to(&mut self, total: usize) {
        for ticket in self.released..total {
            std::fs::write(self.dir.join("open").join(ticket.to_string()), b"").expect("write a ticket");
        }
        self.released = self.released.max(total);
    }
}

impl Drop for Gate {
    /// However the test ends, no item is left waiting for a ticket.
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("all"), b"");
    }
}

/// A running `mayfly serve`.
struct Server {
    served: Served,
    port: u16,
}

impl Server {
    fn start(project: &Project) -> Server {
        let served = Served::start(project);
        Server { port: served.address.port(), served }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        let status = self.served.stop();
        assert!(status.success(), "mayfly serve exited {status:?} after SIGTERM");
    }
}

/// The base64 SHA-256 of the SubjectPublicKeyInfo of the certificate `serve`
/// generated, as `--ignore-certificate-errors-spki-list` takes it.
fn certificate_pin(project: &Project) -> String {
    let key = std::fs::read_to_string(project.path(".mayfly/tls/key.pem")).expect("serve generated a key");
    let key = rcgen::KeyPair::from_pem(&key).expect("the generated key parses");
    BASE64.encode(Sha256::digest(key.subject_public_key_info()))
}

/// The text of the first element matching `css`, or `None` when there is
/// none (yet) or it was replaced while being read (live fragments are).
async fn text_of(browser: &Client, css: &str) -> Option<String> {
    browser.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// The start of the page's visible text, to say what a page showed instead.
async fn page_text(browser: &Client) -> String {
    text_of(browser, "body").await.unwrap_or_default().chars().take(600).collect()
}

/// The texts of every element matching `css`.
async fn texts_of(browser: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser.find_all(Locator::Css(css)).await.unwrap_or_default() {
        texts.push(element.text().await.unwrap_or_default());
    }
    texts
}

/// Poll `probe` every 100 ms until it answers `Ok`, or fail after
/// [`PATIENCE`] saying `what` and what it last saw.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {PATIENCE:?} waiting until {what}; last saw: {seen}"
                )
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the text of `css` is `expected`.
async fn shows(browser: &Client, css: &str, expected: &str) {
    eventually(&format!("`{css}` shows {expected:?}"), || async move {
        match text_of(browser, css).await {
            Some(text) if text == expected => Ok(()),
            Some(text) => Err(format!("{text:?}")),
            None => Err(format!(
                "no such element; the page at {} reads {:?}",
                path_of(browser).await,
                page_text(browser).await
            )),
        }
    })
    .await
}

async fn click(browser: &Client, locator: Locator<'_>) {
    browser.find(locator).await.expect("the element to click").click().await.expect("click");
}

async fn path_of(browser: &Client) -> String {
    browser.current_url().await.expect("the current URL").path().to_owned()
}

/// Wait until the browser is at `path` (a click's navigation lands a moment later).
async fn at(browser: &Client, path: &str) {
    eventually(&format!("the browser is at {path}"), || async move {
        let now = path_of(browser).await;
        if now == path { Ok(()) } else { Err(now) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_follows_a_real_run_on_mayfly_serve_from_sign_in_to_its_report() {
    let began = Instant::now();
    let project = chart_project();
    let token = project.json(&["tokens", "create", "--name", "ops-oncall", "--scope", "admin"])["token"]
        .as_str()
        .expect("the new token")
        .to_owned();
    let server = Server::start(&project);
    let pin = certificate_pin(&project);
    let (_chromedriver, webdriver) = start_chromedriver(PATIENCE);
    let browser = webdriver::open_browser(&webdriver, &[format!("--ignore-certificate-errors-spki-list={pin}")]).await;
    let browser = &browser;
    let mut gate = Gate::new(&project);

    // Signed out, the runs list sends the person to sign in; pasting the token signs in.
    browser.goto(&server.url("/")).await.expect("open the dashboard");
    assert_eq!(
        path_of(browser).await,
        "/sign-in",
        "without a token the dashboard asks to sign in (Chromium stays at `/` on a certificate error)"
    );
    webdriver::screenshot(browser, "serve-01-sign-in").await;
    browser.find(Locator::Id("token")).await.expect("the token field").send_keys(&token).await.expect("paste");
    click(browser, Locator::Css("button[type=submit]")).await;
    at(browser, "/").await;
    assert!(text_of(browser, "main").await.unwrap_or_default().contains("No runs yet"));

    // A real run: `mayfly run --detach` starts its coordinator, which starts two workers.
    gate.release_up_to(4);
    let run = project.json(&["run", "nightly", "--detach"])["run"].as_str().expect("the run's id").to_owned();
    click(browser, Locator::Css("nav a[href='/']")).await;
    let row = format!("tr[data-run-id='{run}']");
    shows(browser, &format!("{row} [data-field=summary]"), "4 of 20 items").await;
    let status = text_of(browser, &format!("{row} [data-badge]")).await;
    assert_eq!(status.as_deref(), Some("running"), "the run is listed as running");
    // More tickets: the open list's progress moves on by itself.
    gate.release_up_to(9);
    shows(browser, &format!("{row} [data-field=summary]"), "9 of 20 items").await;
    shows(browser, &format!("{row} [data-field=percent]"), "45%").await;
    webdriver::screenshot(browser, "serve-02-runs").await;

    // The run's page: its progress advances, the timeline draws attempts, both workers are live.
    click(browser, Locator::Css(&format!("{row} a[href='/runs/{run}']"))).await;
    at(browser, &format!("/runs/{run}")).await;
    shows(browser, "#progress-summary", "9 of 20 items").await;
    gate.release_up_to(14);
    shows(browser, "#progress-summary", "14 of 20 items").await;
    shows(browser, "#progress-percent", "70%").await;
    eventually("the timeline draws a bar for each finished item", || async move {
        let bars = browser.find_all(Locator::Css("svg.timeline rect.bar")).await.map_or(0, |bars| bars.len());
        if bars >= 14 { Ok(()) } else { Err(format!("{bars} bars")) }
    })
    .await;
    let workers = eventually("the workers table lists both live workers", || async move {
        let rows = texts_of(browser, WORKER_ROWS).await;
        if rows.len() == 2 && rows.iter().all(|row| row.contains("live")) { Ok(rows) } else { Err(format!("{rows:?}")) }
    })
    .await;
    assert!(workers.iter().all(|row| row.starts_with("w1-")), "workers named by the coordinator: {workers:?}");
    // A live worker's counts come from the attempts ledger, so they grow while the run goes on.
    eventually("the live workers' done counts add up to the 14 items done", || async move {
        let done = texts_of(browser, &format!("{WORKER_ROWS} td:nth-child(5)")).await;
        let total: u64 = done.iter().filter_map(|count| count.replace(',', "").parse::<u64>().ok()).sum();
        if total == 14 { Ok(()) } else { Err(format!("{done:?}")) }
    })
    .await;
    assert!(text_of(browser, "#ledger").await.unwrap_or_default().contains("in/0000.json"), "the ledger lists items");
    webdriver::screenshot(browser, "serve-03-run-detail").await;

    // The live log tail: a line the function wrote, relayed by a real worker, arrives while the page is open.
    click(browser, Locator::LinkText("Live log tail →")).await;
    at(browser, &format!("/runs/{run}/logs")).await;
    let log = text_of(browser, "pre.log").await.unwrap_or_default();
    assert!(log.contains("coded in/"), "the lines so far are shown: {log}");
    gate.release_up_to(16);
    let fresh = eventually("a new log line of a worker appears", || async move {
        let fresh = texts_of(browser, "pre.log .line.fresh").await;
        match fresh.iter().find(|line| line.contains("coded in/")) {
            Some(line) => Ok(line.clone()),
            None => Err(format!("{fresh:?}")),
        }
    })
    .await;
    assert!(fresh.starts_with("w1-") && fresh.contains(": ICD-10 I21.4"), "a worker's line: {fresh}");
    assert_eq!(text_of(browser, "[data-log-status]").await.as_deref(), Some("following"));
    webdriver::screenshot(browser, "serve-04-log-tail").await;

    // The rest of the items: the open run page turns to succeeded by itself, then shows the report.
    click(browser, Locator::Css(&format!("nav.crumbs a[href='/runs/{run}']"))).await;
    at(browser, &format!("/runs/{run}")).await;
    shows(browser, "#progress-summary", "16 of 20 items").await;
    gate.release_up_to(ITEMS);
    shows(browser, ".run-head [data-badge]", "succeeded").await;
    shows(browser, "#progress-percent", "100%").await;
    shows(browser, "#progress-summary", "20 of 20 items").await;
    browser.refresh().await.expect("reload the run page");
    let report: Vec<(String, String)> =
        texts_of(browser, "dl.facts dt").await.into_iter().zip(texts_of(browser, "dl.facts dd").await).collect();
    for (fact, value) in [("Items expected", "20"), ("Done", "20"), ("Dead-lettered", "0"), ("Retries", "0")] {
        assert!(report.contains(&(fact.to_owned(), value.to_owned())), "the report says {fact} {value}: {report:?}");
    }
    let workers = texts_of(browser, WORKER_ROWS).await;
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(workers.iter().all(|row| !row.contains("live")), "the workers have ended: {workers:?}");
    let done: Vec<u64> =
        texts_of(browser, &format!("{WORKER_ROWS} td:nth-child(5)")).await.iter().map(|n| n.parse().unwrap()).collect();
    assert_eq!(done.iter().sum::<u64>(), ITEMS as u64, "the workers' items add up: {workers:?}");
    let sealed = texts_of(browser, &format!("{WORKER_ROWS} td:nth-child(8)")).await;
    assert!(
        sealed.iter().all(|key| key.starts_with(&format!("runs/{run}/"))),
        "each worker's log is sealed: {sealed:?}"
    );
    webdriver::screenshot(browser, "serve-05-run-finished").await;

    // The log page of the ended run points to the sealed logs.
    click(browser, Locator::LinkText("Live log tail →")).await;
    at(browser, &format!("/runs/{run}/logs")).await;
    assert!(text_of(browser, "main").await.unwrap_or_default().contains("The run has ended"));

    browser.clone().close().await.expect("close the browser");
    server.stop();
    // The coordinator exits once it has written the report; wait for it, so nothing outlives the project.
    eventually("no process of the run is left", || {
        let processes = project.json(&["ps"]);
        async move { if processes.as_array().is_some_and(Vec::is_empty) { Ok(()) } else { Err(processes.to_string()) } }
    })
    .await;
    eprintln!("browser test against mayfly serve took {:?}", began.elapsed());
}
