//! The keyring: key-encryption keys (KEKs) that wrap each object's data key.
//! One key is current and wraps everything new; older keys stay to read what
//! they wrapped until `rewrap` moves it to the current one.
//!
//! On disk it is a JSON file with owner-only permissions:
//!
//! ```json
//! {"version": 1, "current": "k2-9c1f0a",
//!  "keys": [{"id": "k1-3e7b52", "created_at": 1767225600000, "key": "<base64 of 32 bytes>"}, …]}
//! ```
//!
//! Key ids are `k<n>-<fingerprint>`: a sequence number and the first six hex
//! digits of a SHA-256 of the key, so a keyring regenerated after a loss
//! never reuses the id of a key it does not hold (an object wrapped by the
//! lost key reports `UnknownKey`, not a confusing authentication failure).

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mayfly_core::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::KeyringError;

/// The environment variable that supplies a keyring instead of the file: the
/// file's JSON, or one base64-encoded 32-byte key.
pub const KEYRING_ENV_VAR: &str = "MAYFLY_KEYRING";

/// The longest key id: ids are stored in a fixed-size header field.
pub const MAX_KEY_ID_LENGTH: usize = 16;

const KEYRING_FILE_VERSION: u32 = 1;

/// A key-encryption key. Its material never leaves this crate and is wiped
/// from memory when dropped.
#[derive(Clone)]
pub struct Kek {
    id: String,
    created_at: Timestamp,
    key: Zeroizing<[u8; 32]>,
    /// The key schedule, set up once: wrapping a data key per object must not redo it.
    cipher: aes_gcm::Aes256Gcm,
}

impl Kek {
    fn new(id: String, created_at: Timestamp, key: Zeroizing<[u8; 32]>) -> Kek {
        use aes_gcm::KeyInit;
        let cipher = aes_gcm::Aes256Gcm::new(key.as_ref().into());
        Kek { id, created_at, key, cipher }
    }

    pub(crate) fn cipher(&self) -> &aes_gcm::Aes256Gcm {
        &self.cipher
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The key's identity without its material: the hex SHA-256 of the key
    /// (domain-separated from the key id's hash). The state store records it
    /// for every key that sealed data, so a keyring whose key of the same id
    /// holds other material is told apart.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"mayfly key fingerprint\0");
        hasher.update(self.key.as_ref());
        hex::encode(hasher.finalize())
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).field("created_at", &self.created_at).finish_non_exhaustive()
    }
}

/// Key-encryption keys, one of them current. Never empty.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Oldest first.
    keys: Vec<Kek>,
    current: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    version: u32,
    current: String,
    keys: Vec<KekFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekFile {
    id: String,
    created_at: Timestamp,
    key: String,
}

impl Keyring {
    /// A keyring with one fresh random key, current.
    pub fn generate(now: Timestamp) -> Keyring {
        let key = random_key();
        Keyring { keys: vec![Kek::new(key_id(1, &key), now, key)], current: 0 }
    }

    /// Add a fresh random key and make it current; the older keys stay, to
    /// read what they wrapped. Returns the new key.
    pub fn rotate(&mut self, now: Timestamp) -> &Kek {
        let next_number = self.keys.iter().filter_map(|kek| key_number(&kek.id)).max().unwrap_or(0) + 1;
        let key = random_key();
        self.keys.push(Kek::new(key_id(next_number, &key), now, key));
        self.current = self.keys.len() - 1;
        &self.keys[self.current]
    }

    /// The key that wraps every new data key.
    pub fn current(&self) -> &Kek {
        &self.keys[self.current]
    }

    pub fn get(&self, id: &str) -> Option<&Kek> {
        self.keys.iter().find(|kek| kek.id == id)
    }

    /// Remove a key that nothing uses any more (`mayfly keys retire` checks
    /// that first). The current key cannot be removed: rotate first.
    pub fn remove(&mut self, id: &str) -> Result<Kek, KeyRemovalError> {
        let position = self.keys.iter().position(|kek| kek.id == id).ok_or(KeyRemovalError::Unknown)?;
        if position == self.current {
            return Err(KeyRemovalError::Current);
        }
        let removed = self.keys.remove(position);
        if position < self.current {
            self.current -= 1;
        }
        Ok(removed)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &Kek> {
        self.keys.iter()
    }

    /// Load a keyring file. Refuses one that group or others can read or
    /// write: it holds the keys to every encrypted object.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::Missing { path: path.to_owned() });
            }
            Err(source) => return Err(KeyringError::Io { action: "read the keyring", path: path.to_owned(), source }),
        };
        refuse_shared_permissions(path, &metadata)?;
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Io {
            action: "read the keyring",
            path: path.to_owned(),
            source,
        })?;
        Keyring::from_json(&text, &path.display().to_string())
    }

    /// The keyring in `MAYFLY_KEYRING`, if the variable is set.
    pub fn from_env() -> Result<Option<Keyring>, KeyringError> {
        match std::env::var(KEYRING_ENV_VAR) {
            Ok(value) => Keyring::from_env_value(&value).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyringError::Invalid {
                origin: KEYRING_ENV_VAR.to_owned(),
                detail: "it is not valid UTF-8; set it to the keyring file's JSON or one base64 key".to_owned(),
            }),
        }
    }

    /// Parse the value of `MAYFLY_KEYRING`: the keyring file's JSON, or one
    /// base64-encoded 32-byte key (which gets the id `k1-<fingerprint>`, the
    /// id a generated keyring gives its first key).
    pub fn from_env_value(value: &str) -> Result<Keyring, KeyringError> {
        let value = value.trim();
        if value.starts_with('{') {
            return Keyring::from_json(value, KEYRING_ENV_VAR);
        }
        let key = decode_key(value).map_err(|detail| KeyringError::Invalid {
            origin: KEYRING_ENV_VAR.to_owned(),
            detail: format!("{detail}; set it to the keyring file's JSON or one base64 key"),
        })?;
        Ok(Keyring { keys: vec![Kek::new(key_id(1, &key), Timestamp::EPOCH, key)], current: 0 })
    }

    /// Parse a keyring file's JSON; `origin` names where it came from in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Keyring, KeyringError> {
        let invalid = |detail: String| KeyringError::Invalid { origin: origin.to_owned(), detail };
        let file: KeyringFile = serde_json::from_str(text).map_err(|error| invalid(error.to_string()))?;
        if file.version != KEYRING_FILE_VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this Mayfly reads version {KEYRING_FILE_VERSION})",
                file.version
            )));
        }
        let mut keys: Vec<Kek> = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            validate_key_id(&entry.id).map_err(|detail| invalid(format!("key id `{}`: {detail}", entry.id)))?;
            if keys.iter().any(|kek| kek.id == entry.id) {
                return Err(invalid(format!("key id `{}` appears twice", entry.id)));
            }
            let key = decode_key(&entry.key).map_err(|detail| invalid(format!("key `{}`: {detail}", entry.id)))?;
            keys.push(Kek::new(entry.id, entry.created_at, key));
        }
        let current = keys
            .iter()
            .position(|kek| kek.id == file.current)
            .ok_or_else(|| invalid(format!("the current key `{}` is not among its keys", file.current)))?;
        Ok(Keyring { keys, current })
    }

    /// The keyring file's JSON, key material included.
    pub fn to_json(&self) -> Zeroizing<String> {
        let file = KeyringFile {
            version: KEYRING_FILE_VERSION,
            current: self.current().id.clone(),
            keys: self
                .keys
                .iter()
                .map(|kek| KekFile { id: kek.id.clone(), created_at: kek.created_at, key: BASE64.encode(*kek.key) })
                .collect(),
        };
        // Serialising plain strings and numbers cannot fail.
        Zeroizing::new(serde_json::to_string_pretty(&file).expect("a keyring serialises") + "\n")
    }

    /// Write the keyring to `path` atomically (temp file, fsync, rename),
    /// readable and writable by the owner only (0600). Missing parent folders
    /// are created owner-only (0700); existing ones are left as they are.
    pub fn save(&self, path: &Path) -> Result<(), KeyringError> {
        let io_error = |action, source| KeyringError::Io { action, path: path.to_owned(), source };
        let folder = match path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        create_private_folder(folder).map_err(|source| io_error("create the keyring's folder for", source))?;
        let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let temp_path = folder.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = private_file_options().open(&temp_path)?;
            file.write_all(self.to_json().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp_path, path)?;
            std::fs::File::open(folder)?.sync_all()
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temp_path);
            return Err(io_error("write the keyring", source));
        }
        Ok(())
    }
}

/// Why [`Keyring::remove`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRemovalError {
    #[error("the keyring holds no such key")]
    Unknown,
    #[error("it is the current key, which wraps every new data key; rotate to a new key first")]
    Current,
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    key
}

fn key_id(number: u64, key: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"mayfly key id\0");
    hasher.update(key);
    let fingerprint = hex::encode(&hasher.finalize()[..3]);
    format!("k{number}-{fingerprint}")
}

/// The `n` of an id `k<n>-…`.
fn key_number(id: &str) -> Option<u64> {
    id.strip_prefix('k')?.split('-').next()?.parse().ok()
}

fn validate_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LENGTH {
        return Err(format!("must be 1 to {MAX_KEY_ID_LENGTH} characters"));
    }
    if !id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_') {
        return Err("may hold only ASCII letters, digits, `-` and `_`".to_owned());
    }
    Ok(())
}

fn decode_key(text: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let bytes = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| "it is not valid base64".to_owned())?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(format!("a key must be 32 bytes, this one is {} bytes", bytes.len()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[cfg(unix)]
fn refuse_shared_permissions(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::InsecurePermissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_shared_permissions(_path: &Path, _metadata: &std::fs::Metadata) -> Result<(), KeyringError> {
    Ok(())
}

#[cfg(unix)]
fn private_file_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    options
}

#[cfg(unix)]
fn create_private_folder(folder: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(folder)
}

#[cfg(not(unix))]
fn create_private_folder(folder: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)
}
