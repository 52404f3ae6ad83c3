//! The `mayfly` command end to end: each test runs the real binary in a fresh
//! project directory and checks stdout, stderr and the exit code, as a user
//! or a script would see them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SPEC: &str = r#"version = 1
name = "cli-test"
tags = { owner = "tests", data-class = "synthetic" }

[buckets.inbox]
[buckets.archive]

[queues.work]
visibility_timeout = "30s"
max_receives = 2
dead_letter = "work-dlq"
max_message_size = "1KiB"

[queues.work-dlq]
"#;

mod support;

use support::{Project, assert_success};

fn new_project() -> Project {
    Project::with_spec(SPEC)
}

fn deployed_project() -> Project {
    Project::deployed_with(SPEC)
}

fn queue_row<'a>(stats: &'a Value, queue: &str) -> &'a Value {
    stats
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["queue"] == queue)
        .unwrap_or_else(|| panic!("no {queue} in {stats}"))
}

#[test]
fn init_scaffolds_a_project_that_validates_and_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("chart-coding");
    let mayfly = env!("CARGO_BIN_EXE_mayfly");
    let status = Command::new(mayfly).arg("init").arg(&root).output().unwrap();
    assert_success(&status, &["init"]);
    assert!(root.join("mayfly.toml").is_file());
    assert!(root.join("functions/rename.py").is_file());

    let project = Project { _dir: dir, root: root.clone(), database: None, storage_prefix: None };
    assert!(project.ok(&["validate"]).contains("is valid"));
    let deployed = project.json(&["deploy"]);
    assert_eq!(deployed["version"], 1);
    assert!(project.path(".mayfly/state.db").is_file());

    // init never overwrites a project.
    let again = Command::new(mayfly).arg("init").arg(&root).output().unwrap();
    assert_eq!(again.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn validate_reports_every_error_with_its_location_and_exit_code_3() {
    let project = Project::with_spec(
        r#"version = 1
name = "broken"

[queues.work]
visibility_timeout = "thirty seconds"
dead_letter = "nowhere"
colour = "blue"
"#,
    );
    let stderr = project.fails(&["validate"], 3);
    assert!(stderr.contains("mayfly.toml:5:"), "{stderr}");
    assert!(stderr.contains("mayfly.toml:6:"), "{stderr}");
    assert!(stderr.contains("mayfly.toml:7:"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");

    let output = project.run(&["validate", "--json"]);
    assert_eq!(output.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(report["errors"].as_array().unwrap().len() >= 3, "{report}");

    // Nothing is deployed from an invalid file.
    project.fails(&["deploy"], 3);
    assert!(!project.path(".mayfly").exists());
}

#[test]
fn schema_is_json() {
    let project = new_project();
    let schema: Value = serde_json::from_str(&project.ok(&["schema"])).unwrap();
    assert!(schema["properties"]["queues"].is_object(), "{schema}");
}

#[test]
fn deploy_records_versions_and_diff_shows_changes() {
    let project = deployed_project();
    let unchanged = project.json(&["deploy"]);
    assert_eq!(unchanged["recorded"], false);
    assert_eq!(unchanged["version"], 1);

    let changed = SPEC.replace("visibility_timeout = \"30s\"", "visibility_timeout = \"2m\"") + "\n[queues.extra]\n";
    std::fs::write(project.path("mayfly.toml"), &changed).unwrap();
    let diff = project.ok(&["diff"]);
    assert!(diff.contains("extra"), "{diff}");
    assert!(diff.contains("visibility_timeout"), "{diff}");

    let dry = project.json(&["deploy", "--dry-run"]);
    assert_eq!(dry["recorded"], false);
    assert_eq!(project.json(&["queues"]).as_array().unwrap().len(), 2, "dry run changed nothing");

    let deployed = project.json(&["deploy"]);
    assert_eq!(deployed["version"], 2);
    let deployments = project.json(&["deployments"]);
    assert_eq!(deployments.as_array().unwrap().len(), 2);
    assert_eq!(project.ok(&["deployments", "--show", "2"]), changed);
    assert_eq!(project.json(&["queues"]).as_array().unwrap().len(), 3);
}

#[test]
fn deploy_refuses_to_lose_data_unless_forced() {
    let project = deployed_project();
    project.ok(&["send", "work", "keep me"]);
    project.ok(&["put", "archive/a.txt", "mayfly.toml"]);
    let without =
        "version = 1\nname = \"cli-test\"\ntags = { owner = \"tests\", data-class = \"synthetic\" }\n[buckets.inbox]\n";
    std::fs::write(project.path("mayfly.toml"), without).unwrap();

    let stderr = project.fails(&["deploy"], 5);
    assert!(stderr.contains("queue `work` holds 1 message"), "{stderr}");
    assert!(stderr.contains("bucket `archive` holds objects"), "{stderr}");
    assert_eq!(project.json(&["queues"]).as_array().unwrap().len(), 2, "refusal changed nothing");
    assert_eq!(project.json(&["deployments"]).as_array().unwrap().len(), 1);

    let forced = project.json(&["deploy", "--force"]);
    assert_eq!(forced["version"], 2);
    assert_eq!(project.json(&["queues"]).as_array().unwrap().len(), 0);
    assert_eq!(project.json(&["ls"]).as_array().unwrap().len(), 1);
    assert_eq!(project.json(&["deployments"])[1]["forced"], true);
}

#[test]
fn objects_put_get_list_copy_delete_and_events() {
    let project = deployed_project();
    std::fs::write(project.path("chart.txt"), "chest pain\n").unwrap();
    project.ok(&["put", "inbox/charts/1.txt", "chart.txt"]);
    let from_stdin = project.run_with_stdin(&["put", "inbox/charts/2.txt", "--json"], b"from stdin");
    assert_success(&from_stdin, &["put from stdin"]);
    let info: Value = serde_json::from_slice(&from_stdin.stdout).unwrap();
    assert_eq!(info["size"], 10);

    assert_eq!(project.ok(&["get", "inbox/charts/1.txt"]), "chest pain\n");
    project.ok(&["get", "inbox/charts/2.txt", "out.txt"]);
    assert_eq!(std::fs::read_to_string(project.path("out.txt")).unwrap(), "from stdin");

    let listing = project.json(&["ls", "inbox/charts/"]);
    let keys: Vec<&str> = listing.as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["charts/1.txt", "charts/2.txt"]);

    project.ok(&["cp", "inbox/charts/1.txt", "archive/coded/1.txt"]);
    assert_eq!(project.ok(&["get", "archive/coded/1.txt"]), "chest pain\n");
    project.ok(&["rm", "inbox/charts/1.txt"]);
    project.fails(&["get", "inbox/charts/1.txt"], 4);
    project.fails(&["rm", "inbox/charts/1.txt"], 4);
    project.fails(&["put", "nosuchbucket/x", "chart.txt"], 4);
    assert!(!project.path("nothing.txt").exists());
    project.fails(&["get", "inbox/missing", "nothing.txt"], 4);
    assert!(!project.path("nothing.txt").exists(), "a failed get leaves no file");

    let events = project.json(&["events"]);
    let summary: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                format!("{}/{}", e["bucket"].as_str().unwrap(), e["key"].as_str().unwrap()),
            )
        })
        .collect();
    let expected = [
        ("created", "inbox/charts/1.txt"),
        ("created", "inbox/charts/2.txt"),
        ("created", "archive/coded/1.txt"),
        ("deleted", "inbox/charts/1.txt"),
    ];
    assert_eq!(summary, expected.map(|(k, a)| (k.to_owned(), a.to_owned())));
    let sequences: Vec<u64> = events.as_array().unwrap().iter().map(|e| e["sequence"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
}

#[test]
fn queues_send_receive_ack_extend_and_stats() {
    let project = deployed_project();
    let sent = project.json(&["send", "work", "{\"chart\": 1}", "--attribute", "source=ehr"]);
    assert_eq!(sent["message_ids"].as_array().unwrap().len(), 1);
    let lines = project.run_with_stdin(&["send", "work", "--lines", "--json"], b"a\nb\n\nc\n");
    assert_success(&lines, &["send --lines"]);
    let sent: Value = serde_json::from_slice(&lines.stdout).unwrap();
    assert_eq!(sent["message_ids"].as_array().unwrap().len(), 3);
    project.ok(&["send", "work", "later", "--delay", "1h"]);

    let stats = project.json(&["queues"]);
    let work = queue_row(&stats, "work");
    assert_eq!(
        (work["visible"].as_u64(), work["delayed"].as_u64(), work["in_flight"].as_u64()),
        (Some(4), Some(1), Some(0))
    );

    let received = project.json(&["receive", "work", "--max", "2"]);
    let received = received.as_array().unwrap();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["body"], "{\"chart\": 1}");
    assert_eq!(received[0]["attributes"], serde_json::json!({"source": "ehr"}));
    let first = received[0]["receipt"].as_str().unwrap().to_owned();
    let second = received[1]["receipt"].as_str().unwrap().to_owned();
    assert_eq!(queue_row(&project.json(&["queues"]), "work")["in_flight"], 2);

    project.ok(&["ack", "work", &first]);
    project.ok(&["extend", "work", &second, "--timeout", "0s"]);
    let stderr = project.fails(&["ack", "work", &first], 5);
    assert!(stderr.contains("lease"), "{stderr}");
    let stats = project.json(&["queues", "work"]);
    assert_eq!((stats[0]["visible"].as_u64(), stats[0]["in_flight"].as_u64()), (Some(3), Some(0)));
}

#[test]
fn bad_queue_input_is_refused_and_changes_nothing() {
    let project = deployed_project();
    project.ok(&["send", "work", "one"]);
    // Counts and contents, not ages: ages move with the clock.
    let snapshot = || {
        let mut stats = project.json(&["queues"]);
        for row in stats.as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("oldest_age_ms");
        }
        (stats, project.json(&["peek", "work"]), project.json(&["deployments"]))
    };
    let before = snapshot();

    let oversized = "x".repeat(2000);
    let stderr = project.fails(&["send", "work", &oversized], 6);
    assert!(stderr.contains("larger than queue `work` accepts"), "{stderr}");
    let stderr = project.fails(&["send", "nosuch", "x"], 4);
    assert!(stderr.contains("nosuch"), "{stderr}");
    project.fails(&["receive", "nosuch"], 4);
    let usage = project.run(&["ack", "work", "not-a-receipt"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("receipt"));

    assert_eq!(snapshot(), before);
}

#[test]
fn poison_messages_go_to_the_dead_letter_queue_and_redrive_back() {
    let project = deployed_project();
    project.ok(&["send", "work", "poison"]);
    for _ in 0..2 {
        let received = project.json(&["receive", "work", "--visibility-timeout", "1ms"]);
        assert_eq!(received.as_array().unwrap().len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The third receive moves it to the dead-letter queue instead of delivering it.
    assert_eq!(project.json(&["receive", "work"]).as_array().unwrap().len(), 0);
    let dead = project.json(&["dlq", "list", "work"]);
    assert_eq!(dead[0]["body"], "poison");
    assert_eq!(dead[0]["dead_letter_source"], "work");
    assert!(dead[0]["dead_letter_reason"].as_str().unwrap().contains("received 2 times"), "{dead}");
    assert_eq!(queue_row(&project.json(&["queues"]), "work")["dead_letter_depth"], 1);
    // A message sent to the dead-letter queue directly is not `work`'s dead letter.
    project.ok(&["send", "work-dlq", "sent directly"]);
    assert_eq!(queue_row(&project.json(&["queues"]), "work")["dead_letter_depth"], 1, "work's own dead letters only");

    let redriven = project.json(&["dlq", "redrive", "work"]);
    assert_eq!(redriven["moved"], 1);
    let received = project.json(&["receive", "work"]);
    assert_eq!(received[0]["body"], "poison");
    assert_eq!(received[0]["receive_count"], 1);
}

#[test]
fn commands_outside_a_project_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .arg("queues")
        .current_dir(dir.path())
        .env_remove("MAYFLY_PROJECT")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("mayfly init"));

    let undeployed = new_project();
    let stderr = undeployed.fails(&["queues"], 1);
    assert!(stderr.contains("mayfly deploy"), "{stderr}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let project = new_project();
    let help = project.ok(&["--help"]);
    let commands: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A command's line starts at column 2; wrapped descriptions are indented further.
        .filter(|line| !line[2..].starts_with(' '))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(commands.len() >= 20, "{commands:?}");
    for command in commands {
        let text = project.ok(&[&command, "--help"]);
        // Groups (dlq, keys) list subcommands; the unit test checks each of those has an example.
        let is_group = text.contains("\nCommands:");
        let has_example = text.contains("Example") || command == "schema" || is_group;
        assert!(has_example, "`mayfly {command} --help` has no example:\n{text}");
    }
}

#[test]
fn demo_rename_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_mayfly"))
        .args(["demo", "rename", "--objects", "40", "--json", "--dir"])
        .arg(&demo_dir)
        .output()
        .unwrap();
    assert_success(&output, &["demo", "rename"]);
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["objects_put"], 40);
    assert_eq!(summary["verified"], 40);
    assert_eq!(summary["errors"], 0);
    assert_eq!(summary["dead_letters"], 0);
    let invocations = summary["invocations"].as_u64().unwrap();
    assert!((4..=40).contains(&invocations), "batches of up to 10: {invocations}");
    assert!(Path::new(&demo_dir).join("mayfly.toml").is_file(), "--dir keeps the project");
}

#[test]
fn an_image_include_under_tmp_is_refused_before_anything_is_built() {
    let project = new_project();
    let hidden = tempfile::tempdir_in("/tmp").unwrap();
    let stderr = project.fails(&["image", "build", "--include", &hidden.path().display().to_string()], 1);
    assert!(stderr.contains("under /tmp") && stderr.contains("private, empty scratch folder"), "{stderr}");
}

/// Run `mayfly ARGS` with its stdout a pipe whose reader is already gone, as
/// `mayfly runs | head -1` leaves it once `head` has its line.
fn run_with_stdout_closed(project: &Project, args: &[&str]) -> std::process::Output {
    let mut child = project
        .command(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn no_command_panics_when_its_stdout_is_closed_early() {
    let project = deployed_project();
    project.ok(&["put", "inbox/a.txt", "mayfly.toml"]);
    project.ok(&["send", "work", "hello"]);
    for args in [
        &["ls"][..],
        &["ls", "inbox/"],
        &["ls", "inbox/", "--json"],
        &["get", "inbox/a.txt"],
        &["queues"],
        &["queues", "--json"],
        &["peek", "work"],
        &["events"],
        &["runs"],
        &["runs", "--json"],
        &["invocations"],
        &["deployments"],
        &["keys", "list"],
        &["functions"],
        &["logs"],
    ] {
        let output = run_with_stdout_closed(&project, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked on a closed stdout: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?} exits quietly: {stderr}");
        assert!(stderr.is_empty(), "{args:?} printed to stderr: {stderr}");
    }
}

#[test]
fn zero_and_out_of_range_flags_are_refused_and_change_nothing() {
    let project = deployed_project();
    // The queue keeps messages 4 days by default: a longer delay would drop the message unseen.
    let stderr = project.fails(&["send", "work", "hello", "--delay", "100d"], 1);
    assert!(stderr.contains("--delay 100d") && stderr.contains("retention") && stderr.contains("4d"), "{stderr}");
    assert_eq!(queue_row(&project.json(&["queues"]), "work")["delayed"], 0, "nothing was sent");
    project.ok(&["send", "work", "hello", "--delay", "1h"]);

    let stderr = project.fails(&["tokens", "create", "--name", "instant", "--scope", "admin", "--expires", "0s"], 2);
    assert!(stderr.contains("--expires") && stderr.contains("expiring at once"), "{stderr}");
    assert_eq!(project.json(&["tokens", "list"]).as_array().unwrap().len(), 0, "no token was made");
}

#[test]
fn a_binary_architecture_file_is_an_invalid_architecture() {
    let project = new_project();
    std::fs::write(project.path("mayfly.toml"), b"version = 1\nname = \"x\"\n\xff\xfe\x00\x01binary").unwrap();
    let stderr = project.fails(&["deploy"], 3);
    assert!(stderr.contains("not UTF-8") && stderr.contains("mayfly.toml:3:1"), "{stderr}");
    project.fails(&["validate"], 3);
}
