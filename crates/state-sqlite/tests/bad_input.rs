//! Bad input and a hostile environment: each case gets a clear error and
//! leaves the store exactly as it was (compared through a snapshot of every
//! queue, its stats and its messages). Covers oversized messages, unknown and
//! duplicate queues, a full disk (a real, small tmpfs), a file that is not a
//! SQLite database, and a file from a newer schema.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use mayfly_core::queue::{QueueConfig, QueueRuleError, QueueStats};
use mayfly_core::{ByteSize, ManualClock, Name, Timestamp};
use mayfly_state::prelude::*;
use mayfly_state::{OutgoingMessage, QueueRecord, StateError, StoredMessage};
use mayfly_state_sqlite::SqliteStore;

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

fn open(path: &Path) -> SqliteStore {
    let clock = ManualClock::starting_at(Timestamp::from_millis(1_795_588_702_000));
    SqliteStore::open(path, Arc::new(clock)).expect("open the store")
}

/// Everything a queue user can observe.
#[derive(Debug, PartialEq)]
struct Snapshot {
    queues: Vec<QueueRecord>,
    contents: Vec<(QueueStats, Vec<StoredMessage>)>,
}

fn snapshot(store: &SqliteStore) -> Snapshot {
    let queues = store.queues().expect("list queues");
    let contents = queues
        .iter()
        .map(|queue| {
            (
                store.queue_stats(&queue.name).expect("stats"),
                store.peek_messages(&queue.name, usize::MAX).expect("peek"),
            )
        })
        .collect();
    Snapshot { queues, contents }
}

/// A store with two queues and a few messages in them.
fn populated_store(directory: &Path) -> SqliteStore {
    let store = open(&directory.join("state.db"));
    let small = QueueConfig { max_message_size: ByteSize(64), ..QueueConfig::default() };
    store.create_queue(&name("small"), &small, &[("owner".into(), "tests".into())]).expect("create");
    store.create_queue(&name("other"), &QueueConfig::default(), &[]).expect("create");
    let messages: Vec<_> = (0..5).map(|index| OutgoingMessage::new(format!("message {index}"))).collect();
    store.send_messages(&name("small"), &messages).expect("send");
    store.send_messages(&name("other"), &messages[..2]).expect("send");
    store
}

#[test]
fn oversized_message_is_refused_and_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let store = populated_store(directory.path());
    let before = snapshot(&store);
    let batch = [OutgoingMessage::new("fits"), OutgoingMessage::new(vec![b'x'; 65])];
    let error = store.send_messages(&name("small"), &batch).unwrap_err();
    assert!(matches!(error, StateError::Rule(QueueRuleError::MessageTooLarge { size: 65, .. })), "{error:?}");
    assert_eq!(
        error.to_string(),
        "message of 65 bytes is larger than queue `small` accepts (64B); raise `max_message_size` or store the \
         payload in a bucket and send its key"
    );
    assert_eq!(snapshot(&store), before);
}

#[test]
fn unknown_queue_is_refused_and_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let store = populated_store(directory.path());
    let before = snapshot(&store);
    let error = store.send_messages(&name("nowhere"), &[OutgoingMessage::new("x")]).unwrap_err();
    assert_eq!(error.to_string(), "queue `nowhere` does not exist");
    assert!(matches!(store.delete_queue(&name("nowhere")), Err(StateError::NotFound { .. })));
    assert_eq!(snapshot(&store), before);
}

#[test]
fn duplicate_queue_is_refused_and_changes_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let store = populated_store(directory.path());
    let before = snapshot(&store);
    let error = store.create_queue(&name("small"), &QueueConfig::default(), &[]).unwrap_err();
    assert_eq!(error.to_string(), "queue `small` already exists");
    assert_eq!(snapshot(&store), before);
}

#[test]
fn a_file_that_is_not_a_database_gets_an_error_naming_the_path() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    std::fs::write(&path, "this is a text file, not a SQLite database\n".repeat(200)).unwrap();
    let error = SqliteStore::open(&path, Arc::new(ManualClock::default())).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StateError::Backend(_)), "{error:?}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("not a SQLite database"), "{message}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "this is a text file, not a SQLite database\n".repeat(200),
        "the file is left alone"
    );
}

#[test]
fn a_directory_at_the_path_gets_an_error_naming_the_path() {
    let directory = tempfile::tempdir().unwrap();
    let error = SqliteStore::open(directory.path(), Arc::new(ManualClock::default())).unwrap_err();
    assert!(error.to_string().contains(&directory.path().display().to_string()), "{error}");
}

#[test]
fn a_file_from_a_newer_schema_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("state.db");
    drop(open(&path));
    let newer = mayfly_state_sqlite::current_schema_version() + 1;
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", newer).unwrap();
    match SqliteStore::open(&path, Arc::new(ManualClock::default())) {
        Err(StateError::SchemaTooNew { path: reported, found, known }) => {
            assert_eq!(reported, path.display().to_string());
            assert_eq!((found, known), (newer, newer - 1));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn reopening_keeps_everything_and_migrates_nothing_twice() {
    let directory = tempfile::tempdir().unwrap();
    let before = snapshot(&populated_store(directory.path()));
    let reopened = open(&directory.path().join("state.db"));
    assert_eq!(snapshot(&reopened), before);
}

/// A tmpfs of a few MiB mounted on a temporary directory, unmounted on drop.
struct SmallTmpfs {
    mount_point: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let mount_point = tempfile::tempdir().expect("create a mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "mayfly-disk-full-test"])
            .arg(mount_point.path())
            .output()
            .expect("run mount(8)");
        assert!(
            output.status.success(),
            "the disk-full test needs to mount a small tmpfs (run as root, or with CAP_SYS_ADMIN): \
             `mount -t tmpfs` on {} failed: {}",
            mount_point.path().display(),
            String::from_utf8_lossy(&output.stderr)
        );
        SmallTmpfs { mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.mount_point.path()).status();
    }
}

/// Write to `path` until the file system refuses; returns how many bytes fit.
fn fill_disk(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create the filler file");
    let mut written = 0;
    for chunk_size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0xA5u8; chunk_size];
        while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {
            written += chunk_size as u64;
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn a_full_disk_is_disk_full_and_keeps_acknowledged_data() {
    let disk = SmallTmpfs::mount("4m");
    let path: PathBuf = disk.path().join(".mayfly/state.db");
    let store = open(&path);
    let queue = name("work");
    store.create_queue(&queue, &QueueConfig::default(), &[]).unwrap();
    let acknowledged: Vec<OutgoingMessage> =
        (0..100).map(|index| OutgoingMessage::new(format!("acknowledged {index}"))).collect();
    let acknowledged_ids = store.send_messages(&queue, &acknowledged).unwrap();
    let before = snapshot(&store);

    let filler = disk.path().join("filler");
    assert!(fill_disk(&filler) > 0);
    let big_batch: Vec<OutgoingMessage> = (0..200).map(|_| OutgoingMessage::new(vec![7u8; 16 * 1024])).collect();
    let error = store.send_messages(&queue, &big_batch).unwrap_err();
    assert!(matches!(error, StateError::DiskFull), "expected DiskFull, got {error:?}");
    assert_eq!(
        error.to_string(),
        "the disk holding the state store is full; nothing was written. Free space and retry"
    );
    assert_eq!(snapshot(&store), before, "the refused batch left nothing behind, and reads still work");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(snapshot(&store), before);
    let retried = store.send_messages(&queue, &big_batch[..10]).expect("send after freeing space");
    assert_eq!(retried.len(), 10);
    drop(store);
    let reopened = open(&path);
    let stored = reopened.peek_messages(&queue, usize::MAX).unwrap();
    assert_eq!(stored.len(), 110);
    let stored_ids: Vec<u64> = stored.iter().take(100).map(|message| message.message_id).collect();
    assert_eq!(stored_ids, acknowledged_ids);
    assert_eq!(stored[0].body, b"acknowledged 0");
}
