//! Where objects live: an `Arc<dyn ObjectStore>` with every bucket under the
//! prefix `<bucket>/`, plus the chores only a local filesystem needs.
//!
//! This is the one place that constructs a `LocalFileSystem`. Everything else
//! in the crate talks to the `ObjectStore` trait, so S3 (`crate::s3`) comes in
//! through [`ObjectBackend::other`] without touching the bucket logic.
//!
//! The local chores, none of which object_store does:
//! - make a put durable: object_store renames its temp file into place but
//!   does not fsync, so the file and the folders it lies in are synced before
//!   the put's event is appended (a body of several parts is written by
//!   `crate::staged_file` instead, which syncs the file before the rename);
//! - remove folders a delete left empty, so `a` can be put after `a/b` is
//!   deleted (a folder `a` would otherwise stay in the way);
//! - create and remove the bucket's folder;
//! - read a local file in large pieces ([`stored_stream`]): object_store's
//!   own stream of a local file hands each 8 KiB to the blocking pool on its
//!   own, which bounded a 256 MiB GET far below the disk (BENCHMARKS.md).

use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use mayfly_core::Name;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{GetResult, GetResultPayload, ObjectStore};

use crate::error::BucketError;
use crate::key::{InvalidKeyReason, ObjectKey};

#[derive(Debug, Clone)]
pub(crate) struct ObjectBackend {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// For the local filesystem: the folder holding one subfolder per bucket.
    local_root: Option<PathBuf>,
}

impl ObjectBackend {
    /// The local filesystem backend rooted at `root` (created if missing).
    pub(crate) fn local(root: &FsPath) -> Result<ObjectBackend, BucketError> {
        std::fs::create_dir_all(root).map_err(|source| BucketError::Io {
            action: "create the buckets folder",
            path: root.to_owned(),
            source,
        })?;
        // object_store canonicalizes its root; do the same so the paths this
        // module builds match the ones it reports.
        let root = std::fs::canonicalize(root).map_err(|source| BucketError::Io {
            action: "resolve the buckets folder",
            path: root.to_owned(),
            source,
        })?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|source| BucketError::Io {
            action: "open the buckets folder",
            path: root.clone(),
            source: io::Error::other(source),
        })?;
        Ok(ObjectBackend { store: Arc::new(store), local_root: Some(root) })
    }

    /// Any other object store: nothing beyond the trait is done.
    pub(crate) fn other(store: Arc<dyn ObjectStore>) -> ObjectBackend {
        ObjectBackend { store, local_root: None }
    }

    /// The folder of the multipart uploads in progress (see `multipart`).
    pub(crate) fn uploads_folder(&self) -> &'static str {
        if self.local_root.is_some() {
            crate::multipart::LOCAL_UPLOADS_FOLDER
        } else {
            crate::multipart::STORE_UPLOADS_FOLDER
        }
    }

    /// The store path of an object.
    pub(crate) fn object_location(&self, bucket: &Name, key: &ObjectKey) -> Result<StorePath, BucketError> {
        StorePath::parse(format!("{bucket}/{key}")).map_err(|error| {
            BucketError::invalid_key(
                key.as_str(),
                InvalidKeyReason::RefusedByObjectStore { message: error.to_string() },
            )
        })
    }

    /// The store path of a bucket, or of a folder in it (`folder` is a valid key).
    pub(crate) fn folder_location(&self, bucket: &Name, folder: Option<&ObjectKey>) -> StorePath {
        let mut location = StorePath::from_iter([bucket.as_str()]);
        if let Some(folder) = folder {
            for segment in folder.as_str().split('/') {
                location = location.child(segment);
            }
        }
        location
    }

    /// The key of a listed location, if it lies in `bucket`.
    pub(crate) fn key_of<'a>(&self, bucket: &Name, location: &'a StorePath) -> Option<&'a str> {
        location.as_ref().strip_prefix(bucket.as_str())?.strip_prefix('/')
    }

    /// The file a store path names on the local filesystem (`None` for other stores).
    pub(crate) fn local_file_path(&self, location: &StorePath) -> Option<PathBuf> {
        let root = self.local_root.clone()?;
        Some(location.parts().fold(root, |path, part| path.join(part.as_ref())))
    }

    fn local_bucket_folder(&self, bucket: &Name) -> Option<PathBuf> {
        self.local_root.as_ref().map(|root| root.join(bucket.as_str()))
    }

    /// Create the bucket's folder (local filesystem only) and sync it.
    pub(crate) async fn create_bucket_folder(&self, bucket: &Name) -> Result<(), BucketError> {
        let (Some(root), Some(folder)) = (self.local_root.clone(), self.local_bucket_folder(bucket)) else {
            return Ok(());
        };
        run_blocking(move || {
            std::fs::create_dir_all(&folder).map_err(|source| BucketError::Io {
                action: "create the bucket folder",
                path: folder.clone(),
                source,
            })?;
            sync_folder(&root)
        })
        .await
    }

    /// Remove the bucket's folder with whatever is left in it: empty folders
    /// and the temp files of abandoned uploads (local filesystem only).
    pub(crate) async fn remove_bucket_folder(&self, bucket: &Name) -> Result<(), BucketError> {
        let (Some(root), Some(folder)) = (self.local_root.clone(), self.local_bucket_folder(bucket)) else {
            return Ok(());
        };
        run_blocking(move || {
            match std::fs::remove_dir_all(&folder) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(BucketError::Io { action: "remove the bucket folder", path: folder, source });
                }
            }
            sync_folder(&root)
        })
        .await
    }

    /// Sync a just-written object's file and the folders it lies in, up to the
    /// bucket folder, so the object survives a power loss (local filesystem only).
    pub(crate) async fn sync_written_object(&self, bucket: &Name, key: &ObjectKey) -> Result<(), BucketError> {
        let Some(bucket_folder) = self.local_bucket_folder(bucket) else {
            return Ok(());
        };
        let file = bucket_folder.join(key.as_str());
        run_blocking(move || {
            std::fs::File::open(&file).and_then(|opened| opened.sync_all()).map_err(|source| BucketError::Io {
                action: "sync the object file",
                path: file.clone(),
                source,
            })?;
            for folder in file.ancestors().skip(1) {
                sync_folder(folder)?;
                if folder == bucket_folder {
                    break;
                }
            }
            Ok(())
        })
        .await
    }

    /// Sync a just-written file that is not an object (a metadata record, an
    /// upload's part) and its folder (local filesystem only).
    pub(crate) async fn sync_location(&self, location: &StorePath) -> Result<(), BucketError> {
        let Some(file) = self.local_file_path(location) else {
            return Ok(());
        };
        run_blocking(move || {
            std::fs::File::open(&file).and_then(|opened| opened.sync_all()).map_err(|source| BucketError::Io {
                action: "sync the file",
                path: file.clone(),
                source,
            })?;
            match file.parent() {
                Some(folder) => sync_folder(folder),
                None => Ok(()),
            }
        })
        .await
    }

    /// Remove a folder that its files were deleted from, if it is empty now
    /// (local filesystem only; other stores have no folders).
    pub(crate) async fn remove_empty_folder(&self, folder: &StorePath) {
        let Some(root) = self.local_root.clone() else {
            return;
        };
        let path = folder.parts().fold(root, |path, part| path.join(part.as_ref()));
        let _ = run_blocking(move || {
            let _ = std::fs::remove_dir(&path);
            Ok(())
        })
        .await;
    }

    /// After a delete: remove the folders of `key` that are now empty, deepest
    /// first, and sync the folder that records the removal (local filesystem only).
    pub(crate) async fn tidy_after_delete(&self, bucket: &Name, key: &ObjectKey) -> Result<(), BucketError> {
        let Some(bucket_folder) = self.local_bucket_folder(bucket) else {
            return Ok(());
        };
        let file = bucket_folder.join(key.as_str());
        run_blocking(move || {
            for folder in file.ancestors().skip(1) {
                // Removing a folder that is not empty fails; that is the stop
                // signal. A concurrent put into a removed folder recreates it
                // (object_store retries the create after making the parents).
                if folder == bucket_folder || std::fs::remove_dir(folder).is_err() {
                    return sync_folder(folder);
                }
            }
            Ok(())
        })
        .await
    }
}

/// Bytes of a local file read per hop to the blocking pool.
const FILE_READ_PIECE: u64 = 1024 * 1024;
/// Pieces of a local file read ahead of the one being consumed.
const FILE_PIECES_AHEAD: usize = 2;

/// The bytes a get returned, as a stream. A local file is read in pieces of
/// [`FILE_READ_PIECE`] bytes, [`FILE_PIECES_AHEAD`] of them in flight on the
/// blocking pool, rather than through object_store's own stream, which reads
/// 8 KiB per hop; other stores' streams are passed on as they are. A file
/// that ends before the range the get reported is an error, never a short
/// body.
pub(crate) fn stored_stream(result: GetResult) -> BoxStream<'static, object_store::Result<Bytes>> {
    let (file, path) = match result.payload {
        GetResultPayload::File(file, path) => (Arc::new(file), Arc::new(path)),
        GetResultPayload::Stream(stream) => return stream,
    };
    let Range { start, end } = result.range;
    let pieces =
        (start..end).step_by(FILE_READ_PIECE as usize).map(move |offset| offset..end.min(offset + FILE_READ_PIECE));
    futures::stream::iter(pieces)
        .map(move |piece| {
            let (file, path) = (Arc::clone(&file), Arc::clone(&path));
            async move {
                match tokio::task::spawn_blocking(move || read_piece(&file, &path, piece)).await {
                    Ok(read) => read,
                    Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Err(source) => Err(object_store::Error::JoinError { source }),
                }
            }
        })
        .buffered(FILE_PIECES_AHEAD)
        .boxed()
}

/// Bytes `piece` of a local file, all of them.
fn read_piece(file: &std::fs::File, path: &FsPath, piece: Range<u64>) -> object_store::Result<Bytes> {
    let mut buffer = vec![0u8; (piece.end - piece.start) as usize];
    file.read_exact_at(&mut buffer, piece.start).map_err(|source| {
        let source = if source.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended before byte {} (it shrank while being read)", path.display(), piece.end),
            )
        } else {
            source
        };
        object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(source) }
    })?;
    Ok(Bytes::from(buffer))
}

fn sync_folder(folder: &FsPath) -> Result<(), BucketError> {
    std::fs::File::open(folder).and_then(|opened| opened.sync_all()).map_err(|source| BucketError::Io {
        action: "sync the folder",
        path: folder.to_owned(),
        source,
    })
}

/// Run filesystem work on tokio's blocking pool.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BucketError> + Send + 'static,
) -> Result<T, BucketError> {
    on_blocking_pool(work, |source| BucketError::Io {
        action: "finish filesystem work (the runtime is shutting down)",
        path: PathBuf::new(),
        source,
    })
    .await
}

/// Run `work` on tokio's blocking pool: its panic goes on unwinding here,
/// and a runtime shutting down before it ran is `shutting_down`'s error.
pub(crate) async fn on_blocking_pool<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    shutting_down: impl FnOnce(io::Error) -> E,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(shutting_down(io::Error::other(error))),
    }
}
