//! `mayfly keys`: the project's keyring of key-encryption keys — list them
//! (never their material), rotate to a new current key, rewrap every object
//! of every bucket and every encrypted payload of the state store under the
//! current key, retire a key nothing uses any more, and create a keyring
//! explicitly (for a project with data: only to replace a lost one).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mayfly_buckets::RewrapOutcome;
use mayfly_buckets::crypto::{KEYRING_ENV_VAR, Keyring};
use mayfly_core::{Clock, SystemClock};
use serde::Serialize;

use crate::exit_code::Refused;
use crate::output::{Output, table};
use crate::project::{KeyringSource, Project};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keyring's keys: id, whether current, when created (never the key material).
    #[command(after_help = "Examples:\n  mayfly keys list\n  mayfly keys list --json")]
    List,
    /// Add a new key and make it current: new writes use it, older data stays readable.
    #[command(
        after_help = "Example:\n  mayfly keys rotate && mayfly keys rewrap\n\nA running `mayfly up`, `mayfly serve` or coordinator takes up the rotated keyring file within a second."
    )]
    Rotate,
    /// Re-wrap every object's and state store payload's data key under the current key (bodies are not re-encrypted).
    #[command(
        after_help = "Examples:\n  mayfly keys rewrap\n  mayfly keys rewrap --encrypt-plaintext   # also encrypt objects stored before encryption was on\n\nRun it while `mayfly up` is stopped: a put from another process at the same instant could be overwritten."
    )]
    Rewrap(RewrapArgs),
    /// Remove a key from the keyring once no object or state store payload uses it.
    #[command(
        after_help = "Example:\n  mayfly keys rotate && mayfly keys rewrap && mayfly keys retire k1-3e7b52\n\nRefused while anything still uses the key (run `mayfly keys rewrap` first) and for the current key."
    )]
    Retire(RetireArgs),
    /// Create the project's keyring. `mayfly deploy` does this for a new project; for a project with data it is only for replacing a lost keyring.
    #[command(
        after_help = "Examples:\n  mayfly keys init                          # a project with no data yet\n  mayfly keys init --replace-lost-keyring   # the keyring is lost and no backup exists\n\nWith --replace-lost-keyring, everything sealed by the lost keys (objects, messages, run items, results, logs) stays unreadable for good."
    )]
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct RetireArgs {
    /// The id of the key to remove, as `mayfly keys list` shows it.
    pub key: String,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The project has data but its keyring is lost with no backup: create a new one and stop requiring the lost keys.
    #[arg(long)]
    pub replace_lost_keyring: bool,
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// Also encrypt objects that are stored unencrypted (from before encryption was on).
    #[arg(long)]
    pub encrypt_plaintext: bool,
}

pub async fn run(command: KeysCommand, project: Option<&Path>, output: Output) -> Result<()> {
    match command {
        KeysCommand::List => list(project, output),
        KeysCommand::Rotate => rotate(project, output),
        KeysCommand::Rewrap(args) => rewrap(args, project, output).await,
        KeysCommand::Retire(args) => retire(args, project, output).await,
        KeysCommand::Init(args) => init(args, project, output),
    }
}

#[derive(Serialize)]
struct KeyListing {
    id: String,
    current: bool,
    created_at: String,
}

fn listing(keyring: &Keyring) -> Vec<KeyListing> {
    keyring
        .keys()
        .map(|kek| KeyListing {
            id: kek.id().to_owned(),
            current: kek.id() == keyring.current().id(),
            created_at: kek.created_at().to_rfc3339(),
        })
        .collect()
}

fn list(project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let loaded = located.load_keyring(false)?;
    let keys = listing(&loaded.keyring);
    output.emit(&keys, || {
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|key| vec![key.id.clone(), if key.current { "yes" } else { "" }.to_owned(), key.created_at.clone()])
            .collect();
        let source = match loaded.source {
            KeyringSource::File => located.keyring_path().display().to_string(),
            KeyringSource::Environment => KEYRING_ENV_VAR.to_owned(),
        };
        format!("{}keyring: {source}", table(&["ID", "CURRENT", "CREATED"], &rows))
    })
}

fn rotate(project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    let loaded = located.load_keyring(false)?;
    if loaded.source == KeyringSource::Environment {
        return Err(Refused(format!(
            "the keyring comes from {KEYRING_ENV_VAR}, which Mayfly cannot change; add a key where that value is kept, or unset it to rotate the project's keyring file"
        ))
        .into());
    }
    let mut keyring = Keyring::clone(&loaded.keyring);
    let previous = keyring.current().id().to_owned();
    let new_id = keyring.rotate(SystemClock.now()).id().to_owned();
    let path = located.keyring_path();
    keyring.save(&path).with_context(|| format!("cannot save the rotated keyring {}", path.display()))?;
    #[derive(Serialize)]
    struct Rotated {
        previous: String,
        current: String,
        keys: Vec<KeyListing>,
    }
    let rotated = Rotated { previous: previous.clone(), current: new_id.clone(), keys: listing(&keyring) };
    output.emit(&rotated, || {
        format!(
            "new current key {new_id} (was {previous}); new writes use it and older objects stay readable\n\
next: mayfly keys rewrap   # move existing data to {new_id}; then `mayfly keys retire {previous}`"
        )
    })
}

#[derive(Serialize, Default)]
struct RewrapCounts {
    objects: u64,
    rewrapped: u64,
    already_current: u64,
    encrypted: u64,
    left_unencrypted: u64,
    replaced_meanwhile: u64,
    failed: u64,
    /// Envelopes in the state store (messages, run items, results, logs) rewrapped.
    state_rewrapped: u64,
}

async fn rewrap(args: RewrapArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let opened = Project::locate(project)?.open(false)?;
    let maintenance = opened.key_maintenance("mayfly keys rewrap")?;
    let current = opened.keyring.keyring.current().id().to_owned();
    let mut counts = RewrapCounts::default();
    let mut failures = Vec::new();
    for bucket in opened.state.buckets().context("cannot list the buckets")? {
        let objects = opened
            .buckets
            .list(&bucket.name, None)
            .await
            .with_context(|| format!("cannot list bucket `{}`", bucket.name))?;
        for object in objects {
            counts.objects += 1;
            match opened.buckets.rewrap(&bucket.name, &object.key, args.encrypt_plaintext).await {
                Ok(RewrapOutcome::Rewrapped) => counts.rewrapped += 1,
                Ok(RewrapOutcome::AlreadyCurrent) => counts.already_current += 1,
                Ok(RewrapOutcome::Encrypted) => counts.encrypted += 1,
                Ok(RewrapOutcome::LeftUnencrypted) => counts.left_unencrypted += 1,
                Ok(RewrapOutcome::ReplacedMeanwhile) => counts.replaced_meanwhile += 1,
                // Deleted since the listing: nothing to rewrap.
                Err(mayfly_buckets::BucketError::NoSuchKey { .. }) => counts.objects -= 1,
                Err(error) => {
                    counts.failed += 1;
                    failures.push(error.to_string());
                }
            }
        }
    }
    // The state store's payloads: only their envelope headers change.
    let state = maintenance;
    match tokio::task::spawn_blocking(move || state.rewrap_all()).await.context("the state store rewrap panicked")? {
        Ok(rewrapped) => counts.state_rewrapped = rewrapped,
        Err(error) => {
            counts.failed += 1;
            failures.push(format!("state store: {error}"));
        }
    }
    let summary = || {
        let mut text = format!(
            "rewrapped {} object(s) to key {current}; {} already used it; rewrapped {} state store record(s)",
            counts.rewrapped, counts.already_current, counts.state_rewrapped
        );
        if counts.encrypted > 0 {
            text.push_str(&format!("; encrypted {} unencrypted object(s)", counts.encrypted));
        }
        if counts.left_unencrypted > 0 {
            text.push_str(&format!(
                "; {} object(s) are stored unencrypted (run `mayfly keys rewrap --encrypt-plaintext` to encrypt them)",
                counts.left_unencrypted
            ));
        }
        if counts.replaced_meanwhile > 0 {
            text.push_str(&format!("; {} object(s) were replaced meanwhile and kept", counts.replaced_meanwhile));
        }
        text
    };
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("error: {failure}");
        }
        bail!(
            "{} of {} object(s) could not be rewrapped (above); {}. Older keys stay in the keyring until every object is moved",
            counts.failed,
            counts.objects,
            summary()
        );
    }
    output.emit(&counts, summary)
}

/// Refuse to change a keyring that comes from `MAYFLY_KEYRING`.
fn refuse_environment_keyring(what: &str) -> Result<()> {
    if std::env::var_os(KEYRING_ENV_VAR).is_some() {
        return Err(Refused(format!(
            "{KEYRING_ENV_VAR} is set, and Mayfly cannot change a keyring it comes from; {what} where that value is kept, or unset it to work on the project's keyring file"
        ))
        .into());
    }
    Ok(())
}

async fn retire(args: RetireArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    refuse_environment_keyring("remove the key")?;
    // Opening checks the keyring holds every key the data needs.
    let opened = located.open(false)?;
    let maintenance = opened.key_maintenance("mayfly keys retire")?;
    let mut keyring = Keyring::clone(&opened.keyring.keyring);
    let path = located.keyring_path();
    if keyring.get(&args.key).is_none() {
        let known: Vec<&str> = keyring.keys().map(|kek| kek.id()).collect();
        return Err(crate::exit_code::NotFound(format!(
            "the keyring {} holds no key `{}`; its keys: {}",
            path.display(),
            args.key,
            known.join(", ")
        ))
        .into());
    }
    if keyring.current().id() == args.key {
        return Err(Refused(format!(
            "key {} is the current key, which wraps every new data key; run `mayfly keys rotate` and `mayfly keys rewrap` first",
            args.key
        ))
        .into());
    }
    let mut objects = 0u64;
    for bucket in opened.state.buckets().context("cannot list the buckets")? {
        let listed = opened
            .buckets
            .list(&bucket.name, None)
            .await
            .with_context(|| format!("cannot list bucket `{}`", bucket.name))?;
        for object in listed {
            match opened.buckets.object_key_id(&bucket.name, &object.key).await {
                Ok(Some(id)) if id == args.key => objects += 1,
                Ok(_) | Err(mayfly_buckets::BucketError::NoSuchKey { .. }) => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("cannot tell which key wraps `{}/{}`; nothing was retired", bucket.name, object.key)
                    });
                }
            }
        }
    }
    let state = maintenance.clone();
    let key = args.key.clone();
    let records = tokio::task::spawn_blocking(move || state.count_envelopes_sealed_by(&key))
        .await
        .context("counting the state store's payloads panicked")?
        .context("cannot count the state store payloads sealed by the key; nothing was retired")?;
    if objects + records > 0 {
        return Err(Refused(format!(
            "key {} still wraps {objects} object(s) and {records} state store record(s); run `mayfly keys rewrap` to move them to the current key {}, then retire it",
            args.key,
            keyring.current().id()
        ))
        .into());
    }
    // Forget it in the store first: if saving the keyring then fails, the
    // key merely stays in the file, and the project still opens.
    maintenance.forget_retired_key(&args.key).context("cannot forget the retired key in the state store")?;
    keyring.remove(&args.key).with_context(|| format!("cannot remove key {}", args.key))?;
    keyring.save(&path).with_context(|| format!("cannot save the keyring {}", path.display()))?;
    #[derive(Serialize)]
    struct Retired {
        retired: String,
        keys: Vec<KeyListing>,
    }
    let retired = Retired { retired: args.key.clone(), keys: listing(&keyring) };
    output.emit(&retired, || format!("retired key {}: nothing used it; it is gone from {}", args.key, path.display()))
}

fn init(args: InitArgs, project: Option<&Path>, output: Output) -> Result<()> {
    let located = Project::locate(project)?;
    refuse_environment_keyring("create the keyring")?;
    let path = located.keyring_path();
    if path.exists() {
        return Err(Refused(format!(
            "the project already has a keyring at {}; `mayfly keys rotate` adds a new key to it",
            path.display()
        ))
        .into());
    }
    let has_data = located.is_deployed()?;
    if has_data && !args.replace_lost_keyring {
        return Err(Refused(format!(
            "project {} has data (its state store {}) sealed by keys of its keyring: restore the keyring file to {} from your backup. \
If it is lost for good, `mayfly keys init --replace-lost-keyring` creates a new one; the data sealed by the lost keys stays unreadable",
            located.root.display(),
            located.state_target()?.describe(),
            path.display()
        ))
        .into());
    }
    let keyring = Arc::new(located.create_keyring()?);
    let mut forgotten = Vec::new();
    if has_data {
        let lost = located.record_replacement_keyring(keyring.clone())?;
        tracing::warn!(lost = ?lost, "replaced a lost keyring; data sealed by the lost keys stays unreadable");
        forgotten = lost;
    }
    #[derive(Serialize)]
    struct Created {
        keyring: String,
        current: String,
        replaced_lost_keys: Vec<String>,
    }
    let created = Created {
        keyring: path.display().to_string(),
        current: keyring.current().id().to_owned(),
        replaced_lost_keys: forgotten,
    };
    output.emit(&created, || {
        let mut text = format!("created the keyring {} with key {}", created.keyring, created.current);
        if !created.replaced_lost_keys.is_empty() {
            text.push_str(&format!(
                "; it replaces the lost key(s) {}, and what they sealed stays unreadable",
                created.replaced_lost_keys.join(", ")
            ));
        }
        text.push_str("\nback it up now: without it the project's encrypted data cannot be read");
        text
    })
}
