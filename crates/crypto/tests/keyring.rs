//! The keyring file: saved owner-only, loaded back, refused when others can
//! read it, supplied through `MAYFLY_KEYRING`, and never printing its keys.

use std::os::unix::fs::PermissionsExt;

use mayfly_core::Timestamp;
use mayfly_crypto::{Keyring, KeyringError, decrypt_bytes, encrypt_bytes};

const NOW: Timestamp = Timestamp(1_767_225_600_000);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn saved_owner_only_and_loaded_back() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("data/keyring.json");
    let mut keyring = Keyring::generate(NOW);
    keyring.rotate(Timestamp(NOW.0 + 1000));
    keyring.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&folder.path().join("data")), 0o700, "a folder created for the keyring is owner-only");

    let loaded = Keyring::load(&path).unwrap();
    assert_eq!(loaded.current().id(), keyring.current().id());
    let ids = |keyring: &Keyring| keyring.keys().map(|kek| (kek.id().to_owned(), kek.created_at())).collect::<Vec<_>>();
    assert_eq!(ids(&loaded), ids(&keyring));
    let envelope = encrypt_bytes(&keyring, "b/k", b"chart");
    assert_eq!(decrypt_bytes(&loaded, "b/k", &envelope).unwrap(), b"chart");

    // Saving again replaces the file atomically and keeps it owner-only.
    keyring.rotate(NOW);
    keyring.save(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(Keyring::load(&path).unwrap().keys().count(), 3);
    let leftovers: Vec<_> = std::fs::read_dir(folder.path().join("data")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp file is left behind");
}

#[test]
fn a_keyring_others_can_read_is_refused_with_the_fix() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("keyring.json");
    Keyring::generate(NOW).save(&path).unwrap();
    for shared_mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(shared_mode)).unwrap();
        let error = Keyring::load(&path).unwrap_err();
        assert!(matches!(error, KeyringError::InsecurePermissions { mode, .. } if mode == shared_mode));
        let message = error.to_string();
        assert!(message.contains(&format!("chmod 600 {}", path.display())), "{message}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    Keyring::load(&path).expect("read-only for the owner is fine");
}

#[test]
fn a_missing_keyring_says_how_to_get_one() {
    let folder = tempfile::tempdir().unwrap();
    let error = Keyring::load(&folder.path().join("keyring.json")).unwrap_err();
    assert!(matches!(error, KeyringError::Missing { .. }));
    assert!(error.to_string().contains("MAYFLY_KEYRING"), "{error}");
}

#[test]
fn the_environment_supplies_a_keyring_as_json_or_one_base64_key() {
    let keyring = Keyring::generate(NOW);
    let from_json = Keyring::from_env_value(&keyring.to_json()).unwrap();
    assert_eq!(from_json.current().id(), keyring.current().id());

    let key = base64_of_current_key(&keyring);
    let from_key = Keyring::from_env_value(&format!("  {key}\n")).unwrap();
    assert_eq!(from_key.current().id(), keyring.current().id(), "a bare key gets the id its keyring gave it");
    let envelope = encrypt_bytes(&keyring, "b/k", b"chart");
    assert_eq!(decrypt_bytes(&from_key, "b/k", &envelope).unwrap(), b"chart");

    for bad in ["not base64!", "c2hvcnQ=", "{\"version\": 1}"] {
        let error = Keyring::from_env_value(bad).unwrap_err();
        assert!(error.to_string().contains("MAYFLY_KEYRING"), "{error}");
    }
}

#[test]
fn invalid_keyring_files_are_refused_with_a_reason() {
    let key = base64_of_current_key(&Keyring::generate(NOW));
    let cases = [
        ("{", "EOF"),
        (r#"{"version": 2, "current": "k1", "keys": []}"#, "version 2"),
        (r#"{"version": 1, "current": "k9", "keys": []}"#, "`k9` is not among"),
        (
            &*format!(
                r#"{{"version": 1, "current": "k1", "keys": [{{"id": "k1", "created_at": 0, "key": "{key}"}}, {{"id": "k1", "created_at": 0, "key": "{key}"}}]}}"#
            ),
            "twice",
        ),
        (
            &*format!(
                r#"{{"version": 1, "current": "a/b", "keys": [{{"id": "a/b", "created_at": 0, "key": "{key}"}}]}}"#
            ),
            "may hold only",
        ),
        (r#"{"version": 1, "current": "k1", "keys": [{"id": "k1", "created_at": 0, "key": "c2hvcnQ="}]}"#, "32 bytes"),
    ];
    for (json, reason) in cases {
        let error = Keyring::from_json(json, "keyring.json").unwrap_err();
        assert!(error.to_string().contains(reason), "{json}: {error}");
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let keyring = Keyring::generate(NOW);
    let key = base64_of_current_key(&keyring);
    let debug = format!("{keyring:?}");
    assert!(debug.contains(keyring.current().id()));
    assert!(!debug.contains(&key) && !debug.contains("key: ["), "{debug}");
}

fn base64_of_current_key(keyring: &Keyring) -> String {
    let json: serde_json::Value = serde_json::from_str(&keyring.to_json()).unwrap();
    json["keys"][0]["key"].as_str().unwrap().to_owned()
}
