//! A project whose state is on PostgreSQL, chosen by `MAYFLY_STATE_URL` or
//! `[state] url`, through the real binary against a real PostgreSQL 15
//! server (a database per test): objects and messages flow as on the
//! embedded store, nothing a user sent reaches the server unsealed, the
//! password never comes from the architecture file, and every bad setting
//! is a clear error that changes nothing.

mod support;

use std::os::unix::fs::PermissionsExt;

use support::Project;
use support::postgres::{TestDatabase, admin, database_url};

const MARKER: &str = "PATIENT-MRN-7771234-pgmarker";

const SPEC: &str = r#"version = 1
name = "pg"

[buckets.charts]

[queues.work]
"#;

/// A project whose commands all carry `MAYFLY_STATE_URL` of a fresh database.
fn project_on_postgres(spec: &str) -> Project {
    let mut project = Project::with_spec(spec);
    if project.database.is_none() {
        project.database = Some(TestDatabase::create());
    }
    project
}

#[test]
fn objects_and_messages_live_in_postgres_sealed() {
    let project = project_on_postgres(SPEC);
    project.ok(&["deploy"]);
    assert!(!project.path(".mayfly/state.db").exists(), "no embedded store beside PostgreSQL");

    std::fs::write(project.path("chart.txt"), format!("chart of {MARKER}\n")).unwrap();
    project.ok(&["put", "charts/in/1.txt", "chart.txt"]);
    assert_eq!(project.ok(&["get", "charts/in/1.txt"]), format!("chart of {MARKER}\n"));
    let events = project.json(&["events"]);
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");

    project.ok(&["send", "work", &format!("{{\"mrn\": \"{MARKER}\"}}"), "--attribute", &format!("mrn={MARKER}")]);
    let received = project.json(&["receive", "work"]);
    assert_eq!(received[0]["body"], format!("{{\"mrn\": \"{MARKER}\"}}"));
    let receipt = received[0]["receipt"].as_str().unwrap().to_owned();
    project.ok(&["ack", "work", &receipt]);

    let database = project.database.as_ref().unwrap();
    let mut client = database.client();
    let deployments: i64 = client.query_one("SELECT count(*) FROM deployments", &[]).unwrap().get(0);
    let buckets: i64 = client.query_one("SELECT count(*) FROM buckets", &[]).unwrap().get(0);
    assert_eq!((deployments, buckets), (1, 1), "the deployment and bucket are rows in PostgreSQL");
    let dump = database.dump();
    let hex: String = MARKER.bytes().map(|byte| format!("{byte:02x}")).collect();
    let text = String::from_utf8_lossy(&dump);
    assert!(text.contains("CREATE TABLE"), "the dump holds the schema");
    assert!(!text.contains(MARKER) && !text.contains(&hex), "the marker reached PostgreSQL unsealed");
}

#[test]
fn key_maintenance_is_refused_on_postgres_before_anything_changes() {
    let project = project_on_postgres(SPEC);
    project.ok(&["deploy"]);
    let stderr = project.fails(&["keys", "rewrap"], 5);
    assert!(stderr.contains("`mayfly keys rewrap` is not supported on a postgresql state store yet"), "{stderr}");
    let stderr = project.fails(&["keys", "retire", "k-nothing"], 5);
    assert!(stderr.contains("`mayfly keys retire` is not supported"), "{stderr}");
}

#[test]
fn a_keyring_lacking_a_recorded_key_is_refused_on_postgres_and_a_lost_one_is_replaced_only_when_asked() {
    let project = project_on_postgres(SPEC);
    project.ok(&["deploy"]);
    let path = project.path(".mayfly/keyring.json");
    let before_rotation = std::fs::read_to_string(&path).unwrap();
    let rotated = project.json(&["keys", "rotate"]);
    let second = rotated["current"].as_str().unwrap().to_owned();
    project.ok(&["send", "work", "sealed by the second key"]);

    // The backup from before the rotation holds the key that sealed the
    // store's first records, but not the second: refused, naming it.
    std::fs::write(&path, &before_rotation).unwrap();
    for args in [&["receive", "work"][..], &["send", "work", "not sent"], &["deploy"]] {
        let stderr = project.fails(args, 5);
        assert!(stderr.contains(&second), "{args:?}: {stderr}");
    }
    let database = project.database.as_ref().unwrap();
    let messages: i64 = database.client().query_one("SELECT count(*) FROM messages", &[]).unwrap().get(0);
    assert_eq!(messages, 1, "a refused command changed nothing");

    // Lost for good: only the explicit command records a new keyring.
    std::fs::remove_file(&path).unwrap();
    let created = project.json(&["keys", "init", "--replace-lost-keyring"]);
    assert_eq!(created["replaced_lost_keys"].as_array().unwrap().len(), 2, "{created}");
    project.ok(&["send", "work", "sealed by the new keyring"]);
    let recorded: i64 = database
        .client()
        .query_one("SELECT count(*) FROM mayfly_settings WHERE name LIKE 'kek:%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1, "only the new keyring's key is recorded");
}

#[test]
fn a_password_in_the_files_url_is_refused_with_its_location_and_nothing_is_created() {
    let project = Project::with_spec(&format!(
        "{SPEC}\n[state]\nurl = \"postgres://mayfly_password_test:hunter2@127.0.0.1:15432/postgres\"\n"
    ));
    let mut command = project.command(&["deploy"]);
    command.env_remove("MAYFLY_STATE_URL");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`url` of `[state]` holds a password"), "{stderr}");
    assert!(stderr.contains("mayfly.toml:9:7"), "located: {stderr}");
    assert!(!stderr.contains("hunter2"), "the password is not repeated: {stderr}");
    assert!(stderr.contains("MAYFLY_STATE_PASSWORD") && stderr.contains(".pgpass"), "{stderr}");
    assert!(!project.path(".mayfly").exists(), "nothing was created");
}

/// A database owned by the role that must give its password.
fn password_database() -> (TestDatabase, &'static str) {
    let password = "correct horse";
    let mut admin = admin();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE mayfly_password_test LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE mayfly_password_test PASSWORD '{password}'"
        ))
        .expect("create the password role");
    let database = TestDatabase::create();
    admin.batch_execute(&format!("ALTER DATABASE {} OWNER TO mayfly_password_test", database.name)).unwrap();
    (database, password)
}

fn file_url(database: &TestDatabase) -> String {
    database_url(&database.name).replace("postgres://postgres@", "postgres://mayfly_password_test@")
}

#[test]
fn the_password_comes_from_the_environment_a_password_file_or_pgpass_and_a_wrong_one_is_named() {
    let (database, password) = password_database();
    let url = file_url(&database);
    let project =
        Project::with_spec(&format!("{SPEC}\n[state]\nurl = \"{url}\"\npassword_file = \"state-password\"\n"));
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = project.command(args);
        command.env_remove("MAYFLY_STATE_URL").env_remove("PGPASSWORD").env_remove("MAYFLY_STATE_PASSWORD");
        command.env("PGPASSFILE", project.path("no-such-pgpass"));
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    // A wrong password in the file: refused, naming the server without any password.
    let password_file = project.path("state-password");
    std::fs::write(&password_file, "not the password\n").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = run(&["deploy"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&url), "names the server ({url}): {stderr}");
    assert!(stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains("not the password"), "the password leaked: {stderr}");
    assert!(!project.path(".mayfly/keyring.json").exists(), "no keyring was made for a store never reached");

    // The environment wins over the file.
    let output = run(&["deploy"], &[("MAYFLY_STATE_PASSWORD", password)]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // The right password in the file (owner-only) is used.
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let output = run(&["deployments"], &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // A file others can read is refused.
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = String::from_utf8_lossy(&run(&["deployments"], &[]).stderr).into_owned();
    assert!(stderr.contains("can be read by others (mode 644)"), "{stderr}");

    // Without password_file, a .pgpass line (owner-only) gives it.
    std::fs::write(project.path("mayfly.toml"), format!("{SPEC}\n[state]\nurl = \"{url}\"\n")).unwrap();
    let pgpass = project.path("pgpass");
    let server = url.split('@').nth(1).and_then(|rest| rest.split('/').next()).expect("host:port in the URL");
    std::fs::write(&pgpass, format!("{server}:{}:mayfly_password_test:{password}\n", database.name)).unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = run(&["deployments"], &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_unreachable_server_or_a_missing_database_is_named_and_nothing_is_created() {
    let project = Project::with_spec(SPEC);
    let mut command = project.command(&["deploy"]);
    command.env("MAYFLY_STATE_URL", "postgres://mayfly@127.0.0.1:1/state").env("MAYFLY_STATE_PASSWORD", "s3cret-pw");
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to the PostgreSQL state store at postgres://mayfly@127.0.0.1:1/state"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "the password leaked: {stderr}");
    assert!(!project.path(".mayfly").exists(), "nothing was created");

    let missing = database_url("mayfly_no_such_database");
    let output = project.command(&["deploy"]).env("MAYFLY_STATE_URL", &missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database \"mayfly_no_such_database\" does not exist"), "{stderr}");
    assert!(!project.path(".mayfly").exists(), "nothing was created");

    let output = project.command(&["deploy"]).env("MAYFLY_STATE_URL", "mysql://db/x").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no known scheme; use one of sqlite:, postgres:, postgresql:"), "{stderr}");
}

#[test]
fn a_schema_newer_than_this_binary_is_refused_and_left_as_it_is() {
    let project = project_on_postgres(SPEC);
    project.ok(&["deploy"]);
    let mut client = project.database.as_ref().unwrap().client();
    client.execute("UPDATE mayfly_schema SET version = version + 5", &[]).unwrap();
    let output = project.run(&["deployments"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("upgrade Mayfly"), "{stderr}");
    let deployments: i64 = client.query_one("SELECT count(*) FROM deployments", &[]).unwrap().get(0);
    assert_eq!(deployments, 1, "nothing changed");
}

#[test]
fn a_project_runs_over_tls_with_verify_full_and_a_host_the_certificate_does_not_name_is_refused() {
    use support::postgres::{tls_admin, tls_server_url};
    let server = tls_server_url();
    let (base, query) = server.split_once('?').expect("the TLS URL has a query");
    let ca = query.split("sslrootcert=").nth(1).expect("the TLS URL names its CA file");
    let port = base.split("localhost:").nth(1).and_then(|rest| rest.split('/').next()).expect("a port");
    let name = format!("mayfly_cli_tls_{}", std::process::id());
    tls_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    tls_admin(&format!("CREATE DATABASE {name}"));
    struct DropDatabase(String);
    impl Drop for DropDatabase {
        fn drop(&mut self) {
            tls_admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        }
    }
    let _dropped = DropDatabase(name.clone());

    // The CA file from `[state] ca_file`, relative to the project directory.
    let project = Project::with_spec(&format!(
        "{SPEC}\n[state]\nurl = \"postgres://postgres@localhost:{port}/{name}?sslmode=verify-full\"\nca_file = \"certs/ca.pem\"\n"
    ));
    std::fs::create_dir_all(project.path("certs")).unwrap();
    std::fs::copy(ca, project.path("certs/ca.pem")).unwrap();
    let run = |args: &[&str], url: Option<&str>| {
        let mut command = project.command(args);
        command.env_remove("MAYFLY_STATE_URL");
        if let Some(url) = url {
            command.env("MAYFLY_STATE_URL", url);
        }
        command.output().unwrap()
    };
    let output = run(&["deploy"], None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    std::fs::write(project.path("chart.txt"), format!("chart of {MARKER}\n")).unwrap();
    assert!(run(&["put", "charts/in/1.txt", "chart.txt"], None).status.success());
    let output = run(&["get", "charts/in/1.txt"], None);
    assert_eq!(String::from_utf8_lossy(&output.stdout), format!("chart of {MARKER}\n"));
    assert!(run(&["send", "work", "hello"], None).status.success());
    let output = run(&["receive", "work", "--json"], None);
    assert!(String::from_utf8_lossy(&output.stdout).contains("hello"), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!project.path(".mayfly/state.db").exists(), "the state is on the TLS server");

    // By 127.0.0.1, which the certificate does not name: refused under
    // verify-full (the CA from the URL's sslrootcert), naming the server.
    let by_address = format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=verify-full&sslrootcert={ca}");
    let output = run(&["deployments"], Some(&by_address));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("postgres://postgres@127.0.0.1:{port}/{name}")), "{stderr}");
    assert!(stderr.contains("the server's certificate does not name `127.0.0.1`"), "{stderr}");
    // verify-ca checks only the authority.
    let output = run(&["deployments"], Some(&by_address.replace("verify-full", "verify-ca")));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// On PostgreSQL a send wakes the control plane's queue triggers at once
/// (`LISTEN`/`NOTIFY`): with a poll interval of a minute, a message sent by
/// another process (`mayfly send`) is still handled within seconds.
#[test]
fn a_send_wakes_a_queue_trigger_on_postgres_without_waiting_for_its_poll() {
    let project = project_on_postgres(
        r#"version = 1
name = "pgwake"

[queues.work]

[functions.mark]
command = ["sh", "-c", "cat > \"$MAYFLY_PROJECT/handled.json\"; echo '{}'"]

[[triggers]]
queue = "work"
function = "mark"
"#,
    );
    project.ok(&["deploy"]);
    let log = project.root.parent().unwrap().join("up.log");
    let mut up = project
        .command(&["up", "--poll-interval", "60s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn mayfly up");
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = std::time::Instant::now();
    while !said().contains("leader (term") {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "mayfly up did not lead:\n{}", said());
        assert!(up.try_wait().unwrap().is_none(), "mayfly up exited:\n{}", said());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Past the triggers' first look at the queue, so only a wake-up can
    // bring the message before the next poll, a minute away.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let sent = std::time::Instant::now();
    project.ok(&["send", "work", "wake up"]);
    let handled = project.path("handled.json");
    while !handled.exists() {
        assert!(
            sent.elapsed() < std::time::Duration::from_secs(15),
            "the message waited for the poll: not handled {:?} after the send:\n{}",
            sent.elapsed(),
            said()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let waited = sent.elapsed();
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    assert!(up.wait().unwrap().success(), "{}", said());
    let event = std::fs::read_to_string(&handled).unwrap();
    assert!(event.contains("wake up"), "the function got the message: {event}");
    eprintln!("handled {waited:?} after the send, with a 60 s poll interval");
}
