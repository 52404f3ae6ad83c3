//! Shared test fixtures: a project folder with a real SQLite state store and
//! buckets on the local filesystem, a manual clock, and body generators and
//! sinks that hash what passes through them in constant memory.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub mod s3;

use mayfly_buckets::Buckets;
use mayfly_buckets::crypto::Keyring;
use mayfly_core::{ManualClock, Name, ObjectEvent, Timestamp};
use mayfly_state::StateStore;
use mayfly_state::prelude::*;
use mayfly_state_sqlite::SqliteStore;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// 2026-01-01T00:00:00Z, so event times are recognisable.
pub const START: Timestamp = Timestamp(1_767_225_600_000);

pub struct Project {
    pub folder: tempfile::TempDir,
    pub buckets: Buckets,
    pub state: Arc<SqliteStore>,
    pub clock: ManualClock,
    pub buckets_root: PathBuf,
    /// `Some` for an encrypted project.
    pub keyring: Option<Arc<Keyring>>,
}

impl Project {
    /// A fresh project with its buckets under `<project>/.mayfly/buckets`.
    pub fn new() -> Project {
        let folder = tempfile::tempdir().expect("create a temp folder");
        let buckets_root = folder.path().join(".mayfly/buckets");
        Project::with_buckets_root(folder, buckets_root)
    }

    /// A fresh project whose buckets live at `buckets_root` (e.g. on a tmpfs).
    pub fn with_buckets_root(folder: tempfile::TempDir, buckets_root: PathBuf) -> Project {
        Project::build(folder, buckets_root, None)
    }

    /// A fresh project whose buckets live at `buckets_root` and encrypt every
    /// object under a new keyring.
    pub fn encrypted_with_buckets_root(folder: tempfile::TempDir, buckets_root: PathBuf) -> Project {
        Project::build(folder, buckets_root, Some(Arc::new(Keyring::generate(START))))
    }

    /// A fresh project whose buckets encrypt every object under a new keyring.
    pub fn encrypted() -> Project {
        let folder = tempfile::tempdir().expect("create a temp folder");
        let buckets_root = folder.path().join(".mayfly/buckets");
        Project::build(folder, buckets_root, Some(Arc::new(Keyring::generate(START))))
    }

    /// An encrypted project with the buckets `names` already created.
    pub async fn encrypted_with_buckets(names: &[&str]) -> Project {
        let project = Project::encrypted();
        for bucket in names {
            project.buckets.create_bucket(&name(bucket), &[]).await.expect("create bucket");
        }
        project
    }

    /// The same project's buckets opened again, with `keyring` (or unencrypted).
    pub fn reopen(&self, keyring: Option<Arc<Keyring>>) -> Buckets {
        let state: Arc<dyn StateStore> = self.state.clone();
        let clock = Arc::new(self.clock.clone());
        match keyring {
            Some(keyring) => Buckets::open_encrypted(&self.buckets_root, state, clock, keyring),
            None => Buckets::open(&self.buckets_root, state, clock),
        }
        .expect("open the buckets")
    }

    fn build(folder: tempfile::TempDir, buckets_root: PathBuf, keyring: Option<Arc<Keyring>>) -> Project {
        let clock = ManualClock::starting_at(START);
        let state = Arc::new(
            SqliteStore::open(&folder.path().join(".mayfly/state.db"), Arc::new(clock.clone()))
                .expect("open the state store"),
        );
        let buckets = match &keyring {
            Some(keyring) => {
                Buckets::open_encrypted(&buckets_root, state.clone(), Arc::new(clock.clone()), keyring.clone())
            }
            None => Buckets::open(&buckets_root, state.clone(), Arc::new(clock.clone())),
        }
        .expect("open the buckets");
        Project { folder, buckets, state, clock, buckets_root, keyring }
    }

    /// A project with the buckets `names` already created.
    pub async fn with_buckets(names: &[&str]) -> Project {
        let project = Project::new();
        for bucket in names {
            project.buckets.create_bucket(&name(bucket), &[]).await.expect("create bucket");
        }
        project
    }

    /// Every event in the log, oldest first.
    pub fn events(&self) -> Vec<ObjectEvent> {
        self.state.object_events_after(0, usize::MAX / 2).expect("read the event log")
    }

    /// Every file under the bucket's folder, relative to it, sorted: what is
    /// really on disk, temp files included.
    pub fn files_on_disk(&self, bucket: &str) -> Vec<String> {
        let folder = self.buckets_root.join(bucket);
        let mut files = Vec::new();
        collect_files(&folder, &folder, &mut files);
        files.sort();
        files
    }

    pub fn bucket_folder(&self, bucket: &str) -> PathBuf {
        self.buckets_root.join(bucket)
    }

    /// The file holding an object on disk.
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.buckets_root.join(bucket).join(key)
    }

    /// Every file under the project folder (state store and buckets), with its bytes.
    pub fn every_file_with_bytes(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        collect_files(self.folder.path(), self.folder.path(), &mut files);
        files
            .into_iter()
            .map(|relative| {
                let path = self.folder.path().join(relative);
                let bytes = std::fs::read(&path).expect("read a file");
                (path, bytes)
            })
            .collect()
    }
}

fn collect_files(root: &Path, folder: &Path, files: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for entry in entries {
        let path = entry.expect("read a folder entry").path();
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
        }
    }
}

pub fn name(name: &str) -> Name {
    Name::new(name).expect("a valid name")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A deterministic body of `length` bytes, generated as it is read, with the
/// SHA-256 of what it produced.
pub struct GeneratedBody {
    remaining: u64,
    counter: u64,
    hasher: Sha256,
}

impl GeneratedBody {
    pub fn new(length: u64) -> GeneratedBody {
        GeneratedBody { remaining: length, counter: 0, hasher: Sha256::new() }
    }

    /// The SHA-256 of a body of `length` bytes, computed without keeping it.
    pub fn expected_sha256_hex(length: u64) -> String {
        let mut body = GeneratedBody::new(length);
        let mut chunk = vec![0; 64 * 1024];
        while body.remaining > 0 {
            body.fill(&mut chunk);
        }
        hex::encode(body.hasher.finalize())
    }

    fn fill(&mut self, buffer: &mut [u8]) -> usize {
        let length = buffer.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        for byte in &mut buffer[..length] {
            // A cheap, non-repeating-per-part pattern (xorshift of a counter).
            self.counter = self.counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *byte = (self.counter >> 56) as u8 ^ (self.counter >> 17) as u8;
        }
        self.hasher.update(&buffer[..length]);
        self.remaining -= length as u64;
        length
    }
}

impl AsyncRead for GeneratedBody {
    fn poll_read(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let unfilled = buffer.initialize_unfilled();
        let limit = unfilled.len().min(64 * 1024);
        let written = this.fill(&mut unfilled[..limit]);
        buffer.advance(written);
        Poll::Ready(Ok(()))
    }
}

/// A body that yields `good_bytes` bytes and then fails, like a client that
/// disconnects mid-upload.
pub struct FailingBody {
    pub inner: GeneratedBody,
}

impl FailingBody {
    pub fn failing_after(good_bytes: u64) -> FailingBody {
        FailingBody { inner: GeneratedBody::new(good_bytes) }
    }
}

impl AsyncRead for FailingBody {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.inner.remaining == 0 {
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")));
        }
        Pin::new(&mut this.inner).poll_read(context, buffer)
    }
}

/// A sink that keeps only the count and SHA-256 of what it was given.
#[derive(Default)]
pub struct HashingSink {
    pub length: u64,
    hasher: Sha256,
}

impl HashingSink {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl AsyncWrite for HashingSink {
    fn poll_write(self: Pin<&mut Self>, _context: &mut Context<'_>, buffer: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.hasher.update(buffer);
        this.length += buffer.len() as u64;
        Poll::Ready(Ok(buffer.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The process's peak resident memory so far, from /proc (Linux).
pub fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("VmHWM in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmHWM in kB");
    kib * 1024
}

/// Stream a generated body of `length` bytes into `bucket/key` and back out,
/// checking the reported size, the object info and the content (SHA-256).
/// Returns how much the process's peak resident memory grew meanwhile.
pub async fn stream_in_and_out(project: &Project, bucket: &Name, key: &str, length: u64) -> u64 {
    let expected_sha256 = GeneratedBody::expected_sha256_hex(length);
    let peak_before = peak_resident_bytes();
    let stored = project.buckets.put(bucket, key, GeneratedBody::new(length)).await.unwrap();
    assert_eq!(stored.size, length);
    let mut sink = HashingSink::default();
    let read = project.buckets.get(bucket, key, &mut sink).await.unwrap();
    let peak_growth = peak_resident_bytes().saturating_sub(peak_before);
    assert_eq!(read, stored);
    assert_eq!(sink.length, length);
    assert_eq!(sink.sha256_hex(), expected_sha256);
    peak_growth
}

/// A filesystem mounted for a test's lifetime (`mount -t FSTYPE`), so the
/// buckets can live on a small or a different filesystem. Needs root (or
/// CAP_SYS_ADMIN); the test fails, saying so, rather than being skipped.
pub struct TestMount {
    pub mount_point: PathBuf,
}

impl TestMount {
    /// Mount a `filesystem` (e.g. `tmpfs`) at `mount_point`, with `options`
    /// (e.g. `size=1m`) if any; `why` says what the test needs it for.
    pub fn mount(filesystem: &str, options: Option<&str>, mount_point: &Path, why: &str) -> TestMount {
        std::fs::create_dir_all(mount_point).expect("create the mount point");
        let mut command = std::process::Command::new("mount");
        command.args(["-t", filesystem]);
        if let Some(options) = options {
            command.args(["-o", options]);
        }
        let output = command.arg(filesystem).arg(mount_point).output().expect("run `mount` (is it installed?)");
        assert!(
            output.status.success(),
            "this test needs to mount a {filesystem} {why}, and `{command:?}` failed ({}): {}. Run the tests as root \
             (or with CAP_SYS_ADMIN); the test is not skipped, because this must be tested.",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        TestMount { mount_point: mount_point.to_owned() }
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let status = std::process::Command::new("umount").arg(&self.mount_point).status();
        if !matches!(status, Ok(status) if status.success()) {
            eprintln!("could not unmount the test filesystem at {}: {status:?}", self.mount_point.display());
        }
    }
}
