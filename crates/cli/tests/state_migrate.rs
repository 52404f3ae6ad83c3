//! `mayfly state migrate --to URL` through the real binary, against a real
//! PostgreSQL 15 server (a database of its own per test): a project with
//! objects, messages (leased, dead-lettered), an invocation with logs, a
//! finished run with results, an API token and access-log entries is copied
//! from its embedded store into PostgreSQL, used there, and copied back into
//! a new embedded file; every listing reads the same on each store, nothing
//! sent reaches PostgreSQL unsealed, and the source never changes. A target
//! that holds a store, an unreachable one, a bad URL and a copy that fails
//! half-way are each a clear error that leaves the target as it was.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::postgres::{TestDatabase, database_url};
use support::{Project, Served, assert_success, unique_name};

const MARKER: &str = "PATIENT-MRN-5550199-migrate";

/// Logs its event on stderr (an invocation's logs), fails on `fail`, otherwise answers with it.
const FUNCTION: &str = r#"#!/bin/sh
event=$(cat)
echo "handling $event" >&2
case "$event" in
  *fail*) echo "cannot read chart: $event" >&2; exit 3;;
esac
printf '{"seen": %s}' "$event"
"#;

fn spec(name: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"

[buckets.scans]

[queues.work]
visibility_timeout = "10m"

[queues.flaky]
max_receives = 1
dead_letter = "flaky-dlq"

[queues.flaky-dlq]

[queues.scratch]

[functions.work]
command = ["sh", "functions/work.sh"]

[jobs.chart-coding]
source = {{ manifest = {{ bucket = "scans", key = "manifest.txt" }} }}
function = "work"
max_attempts = 1
"#
    )
}

/// A project on its embedded store, whatever `MAYFLY_TEST_STATE` says.
fn embedded_project() -> Project {
    let mut project = Project::with_spec(&spec(&unique_name("migrate")));
    project.database = None;
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/work.sh"), FUNCTION).unwrap();
    project
}

/// `mayfly ARGS` with the state at `url` (`None`: the embedded store).
fn run_on(project: &Project, url: Option<&str>, args: &[&str]) -> Output {
    let mut command = project.command(args);
    match url {
        Some(url) => command.env("MAYFLY_STATE_URL", url),
        None => command.env_remove("MAYFLY_STATE_URL"),
    };
    command.output().expect("run mayfly")
}

fn ok_on(project: &Project, url: Option<&str>, args: &[&str]) -> String {
    let output = run_on(project, url, args);
    assert_success(&output, args);
    String::from_utf8(output.stdout).unwrap()
}

fn json_on(project: &Project, url: Option<&str>, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let stdout = ok_on(project, url, &with_json);
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: not JSON ({error}): {stdout}"))
}

/// Run, require exit `code`; stderr.
fn fails_on(project: &Project, url: Option<&str>, args: &[&str], code: i32) -> String {
    let output = run_on(project, url, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "mayfly {args:?}: stdout {} stderr {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains("error"), "{stderr}");
    stderr
}

/// Fill the project: objects, messages (visible, leased, dead-lettered), a
/// failed invocation with logs, a finished run with results and a
/// dead-lettered item, an API token and access-log entries. Returns the run
/// id and the id of the last message sent (deleted since, so it is the
/// largest number handed out but no row holds it).
fn fill(project: &Project) -> (String, u64) {
    project.ok(&["deploy"]);
    let put = |address: &str, body: &str| {
        let output = project.run_with_stdin(&["put", address, "-"], body.as_bytes());
        assert_success(&output, &["put", address]);
    };
    put("scans/charts/1.txt", &format!("chart of {MARKER}\n"));
    put("scans/manifest.txt", &format!("a-{MARKER}-ok\nb-{MARKER}-ok\nc-{MARKER}-fail\n"));
    for index in 0..3 {
        project.ok(&["send", "work", &format!("{MARKER}-message-{index}"), "--attribute", &format!("mrn={MARKER}")]);
    }
    // The oldest message stays leased (for 10 minutes) across the migration.
    let leased = project.json(&["receive", "work"]);
    assert_eq!(leased[0]["body"], format!("{MARKER}-message-0"), "{leased}");
    // One message dead-lettered after its only receive.
    project.ok(&["send", "flaky", &format!("{MARKER}-poison")]);
    project.json(&["receive", "flaky", "--visibility-timeout", "1ms"]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(project.json(&["receive", "flaky"]), serde_json::json!([]));
    assert_eq!(project.json(&["dlq", "list", "flaky"])[0]["body"], format!("{MARKER}-poison"));
    let last = project.json(&["send", "scratch", "gone"])["message_ids"][0].as_u64().unwrap();
    let receipt = project.json(&["receive", "scratch"])[0]["receipt"].as_str().unwrap().to_owned();
    project.ok(&["ack", "scratch", &receipt]);
    // A failed invocation: its error message and logs hold the marker.
    let failed = project.run(&["invoke", "work", "--payload", &format!(r#"{{"chart": "{MARKER}-fail"}}"#)]);
    assert_eq!(failed.status.code(), Some(8), "{}", String::from_utf8_lossy(&failed.stderr));
    // A finished run: two results, one item dead-lettered.
    let output = project.run(&["run", "chart-coding", "--json"]);
    let outcome: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("mayfly run: {error}; {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(outcome["report"]["items_done"], 2, "{outcome}");
    assert_eq!(outcome["report"]["items_dead_lettered"], 1, "{outcome}");
    // A token, and the access log of its requests.
    let created = project.json(&["tokens", "create", "--name", "ops", "--scope", "admin"]);
    let token = created["token"].as_str().unwrap().to_owned();
    let mut served = Served::start(project);
    let cert = std::fs::read(project.path(".mayfly/tls/cert.pem")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for path in ["/v1/queues/work", "/v1/runs"] {
        let url = format!("https://127.0.0.1:{}{path}", served.address.port());
        let response = client.get(url).bearer_auth(&token).send().unwrap();
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
    }
    assert!(served.stop().success());
    assert!(project.json(&["access-log"]).as_array().is_some_and(|log| log.len() >= 2));
    (outcome["run"].as_str().unwrap().to_owned(), last)
}

/// What the project's listings say, which a migration must not change.
fn views(project: &Project, url: Option<&str>, run: &str) -> Vec<(String, Value)> {
    let commands: &[&[&str]] = &[
        &["deployments"],
        &["events"],
        &["peek", "work"],
        &["dlq", "list", "flaky"],
        &["invocations"],
        &["runs"],
        &["run-report", run],
        &["results", "chart-coding"],
        &["tokens", "list"],
        &["access-log"],
    ];
    commands.iter().map(|args| (args.join(" "), json_on(project, url, args))).collect()
}

fn assert_same_views(before: &[(String, Value)], after: &[(String, Value)], what: &str) {
    for ((command, expected), (_, found)) in before.iter().zip(after) {
        assert_eq!(found, expected, "`mayfly {command}` reads differently {what}");
    }
}

/// `pg_dump` as text, without its `\restrict KEY` lines (a random key per dump).
fn dump_without_session_keys(database: &TestDatabase) -> String {
    let dump = database.dump();
    let text = String::from_utf8(dump).unwrap();
    text.lines().filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict")).collect()
}

fn hex(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

/// A receive of the project's oldest visible message on `work`: its body.
fn receive_one(project: &Project, url: Option<&str>) -> (String, String) {
    let received = json_on(project, url, &["receive", "work"]);
    assert_eq!(received.as_array().map(Vec::len), Some(1), "{received}");
    (received[0]["body"].as_str().unwrap().to_owned(), received[0]["receipt"].as_str().unwrap().to_owned())
}

fn rows_of(migration: &Value, table: &str) -> u64 {
    migration["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|copied| copied["table"] == table)
        .unwrap_or_else(|| panic!("no {table} in {migration}"))["rows"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_project_moves_to_postgres_works_there_sealed_and_moves_back() {
    let project = embedded_project();
    let (run, last_message) = fill(&project);
    let before = views(&project, None, &run);
    let state_file = project.path(".mayfly/state.db");
    let source_bytes = std::fs::read(&state_file).unwrap();

    let database = TestDatabase::create();
    let url = database.url.clone();
    let output = run_on(&project, None, &["state", "migrate", "--to", &url, "--json"]);
    assert_success(&output, &["state", "migrate"]);
    let migration: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(migration["backend"], "postgresql", "{migration}");
    assert_eq!(migration["set"]["env"], url.as_str(), "what to set: {migration}");
    assert_eq!(rows_of(&migration, "messages"), 4, "three on work, one dead letter: {migration}");
    assert_eq!(rows_of(&migration, "results"), 2);
    assert!(rows_of(&migration, "invocation_logs") >= 1, "{migration}");
    assert!(rows_of(&migration, "access_log") >= 2);
    assert_eq!(rows_of(&migration, "api_tokens"), 1);
    assert!(migration["tables"].as_array().unwrap().iter().all(|t| t["checksum"].as_str().unwrap().len() == 64));
    assert_eq!(std::fs::read(&state_file).unwrap(), source_bytes, "the source file was not changed");

    // The project on PostgreSQL reads exactly as before, then works there.
    assert_same_views(&before, &views(&project, Some(&url), &run), "on PostgreSQL");
    let (body, receipt) = receive_one(&project, Some(&url));
    assert_eq!(body, format!("{MARKER}-message-1"), "the leased message stays leased; the next one is received");
    ok_on(&project, Some(&url), &["ack", "work", &receipt]);
    let results = json_on(&project, Some(&url), &["results", "chart-coding"]);
    assert!(results[0]["result"].to_string().contains(MARKER), "a result opens: {results}");
    let invocations = json_on(&project, Some(&url), &["invocations", "--function", "work"]);
    let failed = invocations.as_array().unwrap().iter().find(|i| i["outcome"] != "success").unwrap();
    assert!(failed["error_message"].as_str().unwrap_or_default().contains(MARKER), "{failed}");
    let logs = ok_on(&project, Some(&url), &["logs", "--request", failed["request_id"].as_str().unwrap()]);
    assert!(logs.contains(&format!("handling {{\"chart\": \"{MARKER}-fail\"}}")), "the logs open: {logs}");
    let sent = json_on(&project, Some(&url), &["send", "work", &format!("{MARKER}-after")]);
    let new_id = sent["message_ids"][0].as_u64().unwrap();
    assert_eq!(new_id, last_message + 1, "message ids go on after the last one handed out: {sent}");
    let audit = run_on(&project, Some(&url), &["audit", "--json"]);
    assert_eq!(audit.status.code(), Some(0), "{}", String::from_utf8_lossy(&audit.stderr));
    let audit: Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(audit["summary"]["violations"], 0, "{audit}");
    assert_eq!(audit["inventory"]["state_store"]["payloads_encrypted"], true, "{audit}");
    let report = json_on(&project, Some(&url), &["run-report", &run]);
    assert_eq!(report["items_dead_lettered"], 1, "{report}");

    // Nothing sent reached PostgreSQL unsealed.
    let dump = database.dump();
    let dump = String::from_utf8_lossy(&dump);
    assert!(dump.contains("CREATE TABLE") && dump.contains("COPY public.messages"), "a real dump");
    assert!(!dump.contains(MARKER) && !dump.contains(&hex(MARKER)), "the marker reached PostgreSQL unsealed");

    // Back into a new embedded file: the old one moves aside first.
    let after_postgres = views(&project, Some(&url), &run);
    std::fs::rename(&state_file, project.path("state.db.before")).unwrap();
    let back = json_on(&project, Some(&url), &["state", "migrate", "--to", "sqlite:"]);
    assert_eq!(back["backend"], "sqlite", "{back}");
    assert_eq!(back["set"]["env"], Value::Null, "{back}");
    assert_eq!(back["to"], state_file.display().to_string());
    assert!(state_file.is_file());
    for suffix in ["-wal", ".migrating"] {
        let mut name = state_file.clone().into_os_string();
        name.push(suffix);
        assert!(!std::path::Path::new(&name).exists(), "{suffix} left beside the new file");
    }
    assert_same_views(&after_postgres, &views(&project, None, &run), "back on SQLite");
    let (body, _) = receive_one(&project, None);
    assert_eq!(body, format!("{MARKER}-message-2"));
    let sent = project.json(&["send", "work", "later"]);
    assert_eq!(sent["message_ids"][0].as_u64().unwrap(), new_id + 1, "ids go on after PostgreSQL's: {sent}");
    let stored = std::fs::read(&state_file).unwrap();
    let found = stored.windows(MARKER.len()).any(|window| window == MARKER.as_bytes());
    assert!(!found, "the marker is in the new state file unsealed");
}

#[test]
fn a_target_holding_a_store_is_refused_and_left_as_it_was() {
    let project = embedded_project();
    project.ok(&["deploy"]);
    project.ok(&["send", "work", "first"]);
    let database = TestDatabase::create();
    let text = ok_on(&project, None, &["state", "migrate", "--to", &database.url]);
    assert!(text.contains("every table checked") && text.contains("The source was not changed"), "{text}");
    assert!(text.contains(&format!("set MAYFLY_STATE_URL={}", database.url)), "says what to set: {text}");
    let dump = dump_without_session_keys(&database);
    project.ok(&["send", "work", "second"]);
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", &database.url], 5);
    assert!(stderr.contains("already holds a Mayfly state store"), "{stderr}");
    assert!(stderr.contains(&database.name) && stderr.contains("nothing was changed"), "{stderr}");
    assert!(dump_without_session_keys(&database) == dump, "the target was not changed");

    // `sqlite:` names the project's own file, which holds its store.
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", "sqlite:"], 5);
    assert!(stderr.contains("already holds a Mayfly state store"), "{stderr}");
    assert!(stderr.contains(".mayfly/state.db (move it aside first)"), "{stderr}");
}

#[test]
fn a_project_whose_control_plane_runs_is_refused_until_it_stops() {
    let project = embedded_project();
    project.ok(&["deploy"]);
    let up = project.spawn_up();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !project.ok(&["ps"]).contains("control plane leader: ") || project.ok(&["ps"]).contains("leader: none") {
        assert!(std::time::Instant::now() < deadline, "mayfly up never led: {}", project.ok(&["ps"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let database = TestDatabase::create();
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", &database.url], 5);
    assert!(stderr.contains("`mayfly up`") && stderr.contains("stop every `mayfly up`"), "{stderr}");
    assert!(stderr.contains("left without a store and the source as it was"), "{stderr}");
    up.stop();
    // Stopped, it released its lease: the copy goes ahead.
    let text = ok_on(&project, None, &["state", "migrate", "--to", &database.url]);
    assert!(text.contains("every table checked"), "{text}");
}

#[test]
fn a_long_table_shows_its_progress_on_stderr() {
    let project = embedded_project();
    project.ok(&["deploy"]);
    let lines: String = (0..2_500).map(|index| format!("{MARKER}-{index}\n")).collect();
    let sent = project.run_with_stdin(&["send", "work", "--lines"], lines.as_bytes());
    assert_success(&sent, &["send", "--lines"]);
    let database = TestDatabase::create();
    let output = run_on(&project, None, &["state", "migrate", "--to", &database.url, "--json"]);
    assert_success(&output, &["state", "migrate"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("messages: copied 2500 of 2500 rows"), "{stderr}");
    assert!(stderr.contains("messages: checked 2500 of 2500 rows"), "{stderr}");
    assert!(!stderr.contains("queues:"), "short tables stay quiet: {stderr}");
    let migration: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rows_of(&migration, "messages"), 2_500);
    let on_postgres = json_on(&project, Some(&database.url), &["queues", "work"]);
    assert_eq!(on_postgres[0]["visible"], 2_500, "{on_postgres}");
}

#[test]
fn an_unreachable_target_or_a_bad_url_is_a_clear_error_that_creates_nothing() {
    let project = embedded_project();
    project.ok(&["deploy"]);
    // Nothing listens on port 1.
    let unreachable = "postgres://postgres:hunter2@127.0.0.1:1/mayfly";
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", unreachable], 1);
    assert!(
        stderr.contains("cannot connect to the PostgreSQL state store at postgres://postgres@127.0.0.1:1/mayfly"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password is repeated: {stderr}");

    // A database that does not exist.
    let missing = database_url(&unique_name("no_such_db").replace('-', "_"));
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", &missing], 1);
    assert!(stderr.contains("does not exist"), "{stderr}");

    for (url, expected) in [
        ("mysql://admin:hunter2@db/x", "`mysql://admin:***@db/x` has no known scheme"),
        ("postgres://admin:hunter2@127.0.0.1:99999/x", "is not a PostgreSQL URL"),
        ("postgres://admin@127.0.0.1:99999/x?password=hunter2", "`postgres://admin@127.0.0.1:99999/x?password=***`"),
        ("sqlite:/tmp/elsewhere.db", "names a file"),
    ] {
        let stderr = fails_on(&project, None, &["state", "migrate", "--to", url], 2);
        assert!(stderr.contains("--to") && stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "the password is repeated: {stderr}");
    }
    assert!(!std::path::Path::new("/tmp/elsewhere.db").exists());

    // The same unknown scheme in MAYFLY_STATE_URL: named, its password masked.
    let stderr = fails_on(&project, Some("mysql://admin:hunter2@db/x"), &["deployments"], 1);
    assert!(stderr.contains("`mysql://admin:***@db/x` has no known scheme") && !stderr.contains("hunter2"), "{stderr}");

    // A project never deployed has nothing to migrate.
    let fresh = embedded_project();
    let database = TestDatabase::create();
    let stderr = fails_on(&fresh, None, &["state", "migrate", "--to", &database.url], 1);
    assert!(stderr.contains("has not been deployed yet"), "{stderr}");
    let tables: i64 =
        database.client().query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[]).unwrap().get(0);
    assert_eq!(tables, 0, "nothing was created");
}

#[test]
fn a_copy_that_fails_half_way_leaves_the_target_without_a_store() {
    let project = embedded_project();
    project.ok(&["deploy"]);
    project.ok(&["send", "work", MARKER]);
    // A database holding another application's `messages` table: not a
    // Mayfly store, but the schema cannot be created in it.
    let database = TestDatabase::create();
    database
        .client()
        .batch_execute("CREATE TABLE messages (note TEXT); INSERT INTO messages VALUES ('theirs')")
        .unwrap();
    let stderr = fails_on(&project, None, &["state", "migrate", "--to", &database.url], 1);
    assert!(stderr.contains("the target was left without a store"), "{stderr}");
    assert!(stderr.contains("messages") && stderr.contains("already exists"), "says what failed: {stderr}");
    let mut client = database.client();
    let tables: Vec<String> = client
        .query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tables, ["messages"], "everything the copy created was rolled back");
    let note: String = client.query_one("SELECT note FROM messages", &[]).unwrap().get(0);
    assert_eq!(note, "theirs");
    // The project is still whole on its embedded store.
    assert_eq!(project.json(&["receive", "work"])[0]["body"], MARKER);
}
