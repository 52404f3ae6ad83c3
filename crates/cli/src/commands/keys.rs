//! `mayfly keys`: the project's keyring of key-encryption keys — list them
//! (never their material), rotate to a new current key, and rewrap every
//! object of every bucket, and every encrypted payload of the state store,
//! under the current key.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mayfly_buckets::RewrapOutcome;
use mayfly_buckets::crypto::{KEYRING_ENV_VAR, Keyring};
use mayfly_core::{Clock, SystemClock};
use mayfly_state::StateStore;
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
        after_help = "Example:\n  mayfly keys rotate && mayfly keys rewrap\n\nRestart a running `mayfly up` afterwards: it reads the keyring when it starts."
    )]
    Rotate,
    /// Re-wrap every object's and state store payload's data key under the current key (bodies are not re-encrypted).
    #[command(
        after_help = "Examples:\n  mayfly keys rewrap\n  mayfly keys rewrap --encrypt-plaintext   # also encrypt objects stored before encryption was on\n\nRun it while `mayfly up` is stopped: a put from another process at the same instant could be overwritten."
    )]
    Rewrap(RewrapArgs),
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
next: mayfly keys rewrap   # move existing objects to {new_id}; restart a running `mayfly up` so it knows the new key"
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
    let state = opened.state.clone();
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
