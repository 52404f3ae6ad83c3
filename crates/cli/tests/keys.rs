//! Encryption at rest through the real `mayfly` binary: deploy creates an
//! owner-only keyring, objects on disk never hold their plaintext, `keys
//! rotate` and `keys rewrap` keep every object readable (rewrap down to a
//! keyring holding only the new key, reached by `keys retire`),
//! `MAYFLY_KEYRING` overrides the file and reaches a job's coordinator, a
//! running `mayfly up` takes up a rotated keyring, and a missing, exposed or
//! wrong keyring — one lacking a key the data needs — is refused (exit 5)
//! with a clear error before anything is written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

mod support;

use support::Project;

const SPEC: &str = r#"version = 1
name = "keys-test"

[buckets.inbox]
[buckets.archive]
"#;

const MARKER: &str = "PATIENT-MARKER-c41d-keys";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn keyring_path(project: &Project) -> PathBuf {
    project.root.join(".mayfly/keyring.json")
}

fn every_file(folder: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { every_file(&path, files) } else { files.push(path) }
    }
}

fn assert_marker_nowhere_on_disk(project: &Project) {
    let mut files = Vec::new();
    every_file(&project.root.join(".mayfly"), &mut files);
    assert!(files.iter().any(|file| file.starts_with(project.root.join(".mayfly/buckets"))));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(MARKER.len()).any(|window| window == MARKER.as_bytes()),
            "the marker appears in plaintext in {}",
            file.display()
        );
    }
}

/// Put a small and a multipart-sized object holding the marker; returns their bodies.
fn put_marked_objects(project: &Project) -> (String, String) {
    let small = format!("{MARKER} chart 17\n");
    let large = format!("{MARKER} line\n").repeat(9 * 1024 * 1024 / 30);
    std::fs::write(project.path("small.txt"), &small).unwrap();
    std::fs::write(project.path("large.txt"), &large).unwrap();
    project.ok(&["put", "inbox/charts/17.txt", "small.txt"]);
    project.ok(&["put", "inbox/charts/large.txt", "large.txt"]);
    project.ok(&["cp", "inbox/charts/17.txt", "archive/2026/17.txt"]);
    std::fs::remove_file(project.path("small.txt")).unwrap();
    std::fs::remove_file(project.path("large.txt")).unwrap();
    (small, large)
}

fn assert_objects_read_back(project: &Project, small: &str, large: &str) {
    for (address, body) in
        [("inbox/charts/17.txt", small), ("archive/2026/17.txt", small), ("inbox/charts/large.txt", large)]
    {
        assert_eq!(project.ok(&["get", address]), body, "{address}");
    }
    let listed = project.json(&["ls", "inbox/charts/"]);
    let sizes: Vec<(String, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|object| (object["key"].as_str().unwrap().to_owned(), object["size"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        sizes,
        [("charts/17.txt".to_owned(), small.len() as u64), ("charts/large.txt".to_owned(), large.len() as u64)]
    );
}

#[test]
fn deploy_creates_an_owner_only_keyring_and_objects_are_encrypted_on_disk() {
    let project = Project::deployed_with(SPEC);
    let keyring = keyring_path(&project);
    assert_eq!(mode(&keyring), 0o600);
    assert_eq!(mode(&project.root.join(".mayfly")), 0o700);

    let keys = project.json(&["keys", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["current"], true);
    assert!(keys[0]["id"].as_str().unwrap().starts_with("k1-"));
    let material = key_material(&keyring);
    let text = project.ok(&["keys", "list"]);
    assert!(text.contains(keys[0]["id"].as_str().unwrap()) && text.contains("keyring.json"), "{text}");
    assert!(!text.contains(&material[0]) && !keys.to_string().contains(&material[0]), "key material is never printed");

    let (small, large) = put_marked_objects(&project);
    assert_marker_nowhere_on_disk(&project);
    assert_objects_read_back(&project, &small, &large);
}

/// The base64 key material in a keyring file.
fn key_material(keyring: &Path) -> Vec<String> {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(keyring).unwrap()).unwrap();
    file["keys"].as_array().unwrap().iter().map(|key| key["key"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn rotate_then_rewrap_keeps_every_object_readable_down_to_the_new_key_alone() {
    let project = Project::deployed_with(SPEC);
    let (small, large) = put_marked_objects(&project);
    let first = project.json(&["keys", "list"])[0]["id"].as_str().unwrap().to_owned();

    let rotated = project.json(&["keys", "rotate"]);
    assert_eq!(rotated["previous"], first.as_str());
    let current = rotated["current"].as_str().unwrap().to_owned();
    assert!(current.starts_with("k2-"), "{current}");
    assert_eq!(mode(&keyring_path(&project)), 0o600, "the rotated keyring stays owner-only");
    let keys = project.json(&["keys", "list"]);
    let ids: Vec<(&str, bool)> =
        keys.as_array().unwrap().iter().map(|key| (key["id"].as_str().unwrap(), key["current"] == true)).collect();
    assert_eq!(ids, [(first.as_str(), false), (current.as_str(), true)]);
    assert_objects_read_back(&project, &small, &large);

    project.ok(&["put", "inbox/new.txt", "-"]); // an empty object from stdin, under the new key
    let events_before = project.json(&["events"]).as_array().unwrap().len();
    let rewrapped = project.json(&["keys", "rewrap"]);
    assert_eq!((rewrapped["objects"].as_u64(), rewrapped["rewrapped"].as_u64()), (Some(4), Some(3)), "{rewrapped}");
    assert_eq!(rewrapped["already_current"], 1);
    assert_eq!(project.json(&["events"]).as_array().unwrap().len(), events_before, "rewrap appends no event");
    let again = project.ok(&["keys", "rewrap"]);
    assert!(again.contains("rewrapped 0 object(s)") && again.contains("4 already used it"), "{again}");

    // Retire the old key: everything is readable with the new key alone.
    let retired = project.json(&["keys", "retire", &first]);
    assert_eq!(retired["retired"], first.as_str());
    let path = keyring_path(&project);
    assert_eq!(key_material(&path).len(), 1);
    assert_eq!(mode(&path), 0o600);
    assert_objects_read_back(&project, &small, &large);
    assert_marker_nowhere_on_disk(&project);
}

#[test]
fn the_environment_keyring_overrides_the_file() {
    let project = Project::deployed_with(SPEC);
    let (small, large) = put_marked_objects(&project);
    let path = keyring_path(&project);
    let json = std::fs::read_to_string(&path).unwrap();
    std::fs::rename(&path, project.root.join("keyring-backup.json")).unwrap();

    let output = project.command(&["get", "inbox/charts/17.txt"]).env("MAYFLY_KEYRING", &json).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), small);
    let listed = project.command(&["keys", "list"]).env("MAYFLY_KEYRING", &json).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains("keyring: MAYFLY_KEYRING"));

    let refused = project.command(&["keys", "rotate"]).env("MAYFLY_KEYRING", &json).output().unwrap();
    assert_eq!(refused.status.code(), Some(5), "rotating a keyring Mayfly cannot write is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("MAYFLY_KEYRING"));

    // A different keyring in the environment is refused, naming where it came from and the key it lacks.
    let stranger = r#"{"version": 1, "current": "k1-000000", "keys": [{"id": "k1-000000", "created_at": 0, "key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}"#;
    let first = serde_json::from_str::<Value>(&json).unwrap()["keys"][0]["id"].as_str().unwrap().to_owned();
    let output = project.command(&["get", "inbox/charts/17.txt"]).env("MAYFLY_KEYRING", stranger).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("MAYFLY_KEYRING") && stderr.contains(&first) && stderr.contains("restore"), "{stderr}");
    assert!(output.stdout.is_empty());
    drop(large);
}

#[test]
fn a_missing_keyring_is_a_clear_error() {
    let project = Project::deployed_with(SPEC);
    put_marked_objects(&project);
    std::fs::remove_file(keyring_path(&project)).unwrap();
    for args in [&["get", "inbox/charts/17.txt"][..], &["ls", "inbox"], &["keys", "list"], &["keys", "rewrap"]] {
        let stderr = project.fails(args, 5);
        assert!(
            stderr.contains("keyring.json") && stderr.contains("MAYFLY_KEYRING") && stderr.contains("restore"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn deploy_never_creates_a_keyring_over_existing_data_and_replacing_a_lost_one_is_explicit() {
    let project = Project::deployed_with(SPEC);
    let (small, _) = put_marked_objects(&project);
    let path = keyring_path(&project);
    std::fs::rename(&path, project.root.join("keyring-backup.json")).unwrap();

    // Deploy and `keys init` refuse: a new keyring would strand the data sealed by the old one.
    for args in [&["deploy"][..], &["keys", "init"]] {
        let stderr = project.fails(args, 5);
        assert!(
            stderr.contains(&path.display().to_string())
                && stderr.contains("restore")
                && stderr.contains("--replace-lost-keyring"),
            "{args:?}: {stderr}"
        );
        assert!(!path.exists(), "{args:?} created a keyring");
    }

    // Restoring the backup is the fix.
    std::fs::rename(project.root.join("keyring-backup.json"), &path).unwrap();
    assert_eq!(project.ok(&["get", "inbox/charts/17.txt"]), small);
    project.fails(&["keys", "init"], 5); // a keyring exists

    // Lost for good: the explicit command creates one, and old data stays unreadable.
    std::fs::remove_file(&path).unwrap();
    let created = project.json(&["keys", "init", "--replace-lost-keyring"]);
    assert_eq!(created["replaced_lost_keys"].as_array().unwrap().len(), 1, "{created}");
    assert_eq!(mode(&path), 0o600);
    project.fails(&["get", "inbox/charts/17.txt"], 9);
    project.ok(&["put", "inbox/new.txt", "mayfly.toml"]);
    assert_eq!(project.ok(&["get", "inbox/new.txt"]), SPEC);
}

#[test]
fn a_keyring_lacking_a_key_the_data_needs_is_refused_before_anything_is_written() {
    let project = Project::deployed_with(SPEC);
    let path = keyring_path(&project);
    let before_rotation = std::fs::read_to_string(&path).unwrap();
    let rotated = project.json(&["keys", "rotate"]);
    let second = rotated["current"].as_str().unwrap().to_owned();
    let first = rotated["previous"].as_str().unwrap().to_owned();
    let after_rotation = std::fs::read_to_string(&path).unwrap();
    put_marked_objects(&project); // sealed by the second key, which the store now records

    // The backup from before the rotation lacks the second key: refused, naming it and the file.
    std::fs::write(&path, &before_rotation).unwrap();
    std::fs::write(project.path("note.txt"), "not written").unwrap();
    for args in [&["put", "inbox/note.txt", "note.txt"][..], &["ls", "inbox"], &["deploy"], &["keys", "rewrap"]] {
        let stderr = project.fails(args, 5);
        assert!(
            stderr.contains(&second) && stderr.contains(&path.display().to_string()) && stderr.contains("restore"),
            "{args:?}: {stderr}"
        );
    }

    // A key with the recorded id but other material is refused too (the fingerprint differs).
    let mut forged: Value = serde_json::from_str(&before_rotation).unwrap();
    forged["keys"].as_array_mut().unwrap().push(serde_json::json!({
        "id": second, "created_at": 0, "key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    }));
    std::fs::write(&path, forged.to_string()).unwrap();
    let stderr = project.fails(&["ls", "inbox"], 5);
    assert!(stderr.contains(&second), "{stderr}");

    // Dropping the first key by hand is refused as well (`keys retire` checks nothing uses it).
    let mut dropped: Value = serde_json::from_str(&after_rotation).unwrap();
    dropped["keys"].as_array_mut().unwrap().retain(|key| key["id"] == second.as_str());
    std::fs::write(&path, dropped.to_string()).unwrap();
    let stderr = project.fails(&["ls", "inbox"], 5);
    assert!(stderr.contains(&first) && stderr.contains("mayfly keys retire"), "{stderr}");

    // With the right keyring back, nothing of the refused commands was written.
    std::fs::write(&path, &after_rotation).unwrap();
    let listed = project.json(&["ls", "inbox/"]);
    assert!(!listed.to_string().contains("note.txt"), "{listed}");
}

const QUEUE_SPEC: &str = r#"version = 1
name = "keys-retire"

[buckets.inbox]
[queues.work]
"#;

#[test]
fn retire_refuses_while_anything_uses_the_key_and_removes_it_afterwards() {
    let project = Project::deployed_with(QUEUE_SPEC);
    let first = project.json(&["keys", "list"])[0]["id"].as_str().unwrap().to_owned();
    project.ok(&["put", "inbox/a.txt", "mayfly.toml"]);
    project.ok(&["send", "work", &format!("{MARKER} message")]);
    let second = project.json(&["keys", "rotate"])["current"].as_str().unwrap().to_owned();

    let stderr = project.fails(&["keys", "retire", &second], 5);
    assert!(stderr.contains("current key") && stderr.contains("rotate"), "{stderr}");
    let stderr = project.fails(&["keys", "retire", "k9-ffffff"], 4);
    assert!(stderr.contains(&first) && stderr.contains(&second), "the keyring's keys are listed: {stderr}");
    let stderr = project.fails(&["keys", "retire", &first], 5);
    assert!(
        stderr.contains("1 object(s)")
            && stderr.contains("state store record(s)")
            && stderr.contains("mayfly keys rewrap"),
        "{stderr}"
    );
    assert_eq!(key_material(&keyring_path(&project)).len(), 2, "a refused retire changes nothing");

    project.ok(&["keys", "rewrap"]);
    project.ok(&["keys", "retire", &first]);
    let keys = project.json(&["keys", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["id"], second.as_str());
    assert_eq!(project.ok(&["get", "inbox/a.txt"]), std::fs::read_to_string(project.path("mayfly.toml")).unwrap());
    let received = project.json(&["receive", "work"]);
    assert!(received.to_string().contains(MARKER), "{received}");
}

/// A function that logs, so each invocation seals logs in the state store.
const LOGGING_FUNCTION: &str = "#!/bin/sh\ncat >/dev/null\necho 'handled one message' >&2\necho '{}'\n";

#[test]
fn a_running_up_takes_up_a_rotated_keyring_for_new_writes_and_keeps_reading() {
    let spec = r#"version = 1
name = "keys-up"
[queues.work]
[functions.handle]
command = ["sh", "functions/handle.sh"]
[[triggers]]
queue = "work"
function = "handle"
"#;
    let project = Project::with_spec(spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/handle.sh"), LOGGING_FUNCTION).unwrap();
    project.ok(&["deploy"]);
    let first = project.json(&["keys", "list"])[0]["id"].as_str().unwrap().to_owned();
    let up = project.spawn_up();
    let handled = |count: usize| {
        project.wait_for(&["invocations", "--function", "handle", "--limit", "1000"], WAIT, |value| {
            value.as_array().unwrap().len() >= count
        });
    };
    project.ok(&["send", "work", "before the rotation"]);
    handled(1);

    project.ok(&["keys", "rotate"]);
    // Once `up` uses the new key, data it writes after a rewrap leaves the
    // first key unused and retire succeeds; an `up` still sealing with the
    // first key would make every retire refuse.
    let started = std::time::Instant::now();
    let mut sent = 1;
    loop {
        project.ok(&["keys", "rewrap"]);
        project.ok(&["send", "work", "after the rotation"]);
        sent += 1;
        handled(sent);
        if project.run(&["keys", "retire", &first]).status.success() {
            break;
        }
        assert!(started.elapsed() < WAIT, "mayfly up kept sealing with the rotated-out key {first}");
    }
    // `up` takes up the keyring without the retired key too, and keeps working.
    project.ok(&["send", "work", "after the retirement"]);
    handled(sent + 1);
    let ledger = project.json(&["invocations", "--function", "handle", "--limit", "1000"]);
    assert!(ledger.as_array().unwrap().iter().all(|i| i["outcome"] == "success"), "{ledger}");
    let logs = project.ok(&["logs", "--function", "handle"]);
    assert!(logs.contains("handled one message"), "every invocation's sealed logs still read: {logs}");
    up.stop();
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[test]
fn a_job_runs_with_the_keyring_only_in_the_environment_and_workers_never_see_it() {
    let spec = r#"version = 1
name = "keys-job"
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["sh", "functions/work.sh"]
[jobs.scan]
source = { bucket = "scans", prefix = "in/" }
function = "work"
logs = "logs"
"#;
    let project = Project::with_spec(spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(
        project.path("functions/work.sh"),
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"saw_keyring\": \"%s\"}' \"${MAYFLY_KEYRING:+yes}\"\n",
    )
    .unwrap();
    project.ok(&["deploy"]);
    for item in ["a", "b"] {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{item}")], item.as_bytes());
        support::assert_success(&output, &["put"]);
    }
    let path = keyring_path(&project);
    let json = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let output = project.command(&["run", "scan", "--json"]).env("MAYFLY_KEYRING", &json).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let outcome: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let output = project.command(&["results", "scan", "--json"]).env("MAYFLY_KEYRING", &json).output().unwrap();
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 2, "{results}");
    for result in results.as_array().unwrap() {
        assert_eq!(result["result"]["saw_keyring"], "", "a worker's function never gets the keyring: {result}");
    }
    assert!(!path.exists(), "no keyring file was created");
}

#[test]
fn a_keyring_others_can_read_is_refused_with_the_fix() {
    let project = Project::deployed_with(SPEC);
    let path = keyring_path(&project);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = project.fails(&["ls"], 1);
    assert!(stderr.contains(&format!("chmod 600 {}", path.display())), "{stderr}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    project.ok(&["ls"]);
}

#[test]
fn a_tampered_object_fails_to_read_naming_it() {
    let project = Project::deployed_with(SPEC);
    let (small, _) = put_marked_objects(&project);
    let file = project.root.join(".mayfly/buckets/inbox/charts/17.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let output = project.run(&["get", "inbox/charts/17.txt"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("inbox/charts/17.txt") && stderr.contains("failed authentication"), "{stderr}");
    assert!(output.stdout.is_empty(), "no byte of a tampered object is written");
    let stderr = project.fails(&["get", "inbox/charts/17.txt", "out.txt"], 9);
    assert!(stderr.contains("failed authentication"), "{stderr}");
    assert!(!project.path("out.txt").exists(), "no partial file is left");
    // The untouched copy in the archive still reads.
    assert_eq!(project.ok(&["get", "archive/2026/17.txt"]), small);
}
