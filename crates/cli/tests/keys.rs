//! Encryption at rest through the real `mayfly` binary: deploy creates an
//! owner-only keyring, objects on disk never hold their plaintext, `keys
//! rotate` and `keys rewrap` keep every object readable (rewrap down to a
//! keyring holding only the new key), `MAYFLY_KEYRING` overrides the file,
//! and a missing, exposed or wrong keyring fails with a clear error.

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

    // Drop the old key: everything is readable with the new key alone.
    let path = keyring_path(&project);
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["keys"].as_array_mut().unwrap().retain(|key| key["id"] == current.as_str());
    std::fs::write(&path, file.to_string()).unwrap();
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

    // A different keyring in the environment names the key it lacks: the state
    // store's sealed item lookup key, read when the project opens, is the first.
    let stranger = r#"{"version": 1, "current": "k1-000000", "keys": [{"id": "k1-000000", "created_at": 0, "key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}"#;
    let output = project.command(&["get", "inbox/charts/17.txt"]).env("MAYFLY_KEYRING", stranger).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("item lookup key") && stderr.contains("which the keyring does not hold"), "{stderr}");
    assert!(output.stdout.is_empty());
    drop(large);
}

#[test]
fn a_missing_keyring_is_a_clear_error() {
    let project = Project::deployed_with(SPEC);
    put_marked_objects(&project);
    std::fs::remove_file(keyring_path(&project)).unwrap();
    for args in [&["get", "inbox/charts/17.txt"][..], &["ls", "inbox"], &["keys", "list"], &["keys", "rewrap"]] {
        let stderr = project.fails(args, 1);
        assert!(
            stderr.contains("keyring.json") && stderr.contains("MAYFLY_KEYRING") && stderr.contains("restore"),
            "{args:?}: {stderr}"
        );
    }
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
