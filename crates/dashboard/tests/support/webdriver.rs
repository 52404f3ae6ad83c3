//! Headless Chromium over WebDriver for the browser tests (Debian's
//! `chromium` and `chromium-driver`): start chromedriver, open a session,
//! save screenshots. Shared by `crates/dashboard/tests/browser.rs` and
//! `crates/cli/tests/dashboard_browser.rs` (included with `#[path]`).

#![allow(dead_code)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

/// A child process, leader of its own process group, killed with the whole
/// group (chromedriver and the Chromium it started) when the test ends,
/// however it ends.
pub struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free loopback port and waits up to `patience`
/// until it listens; returns its guard and its WebDriver URL.
pub fn start_chromedriver(patience: Duration) -> (KillOnDrop, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver: install Debian's chromium and chromium-driver (scripts/test.sh does)");
    let guard = KillOnDrop(child);
    let deadline = Instant::now() + patience;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on port {port} within {patience:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

/// A headless Chromium session at a fixed window size and language, with
/// `extra_args` added to Chromium's command line.
pub async fn open_browser(webdriver: &str, extra_args: &[String]) -> Client {
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend_from_slice(extra_args);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".to_owned(), serde_json::json!({ "args": args }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(webdriver)
        .await
        .expect("open a Chromium session through chromedriver")
}

/// `target/dashboard-screenshots/`, created on first use.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Saves what the browser shows as `target/dashboard-screenshots/<name>.png`.
pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("take a screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save the screenshot");
}
