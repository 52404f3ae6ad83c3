//! A body of several parts written to the local filesystem by this crate
//! rather than by object_store's multipart upload, so that the disk works
//! while the body is still arriving.
//!
//! The parts go into a hidden file beside the object (`<name>#<digits>`, the
//! name object_store gives its own temp files, which listings skip and which
//! no valid key can have). As each part lands, its writeback to the disk is
//! started (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which does not
//! wait), so the `fsync` at the end finds little left to write: with
//! object_store's upload, the whole object was written back only by that
//! `fsync`, after the last byte had arrived, and a 256 MiB PUT waited for
//! both one after the other (BENCHMARKS.md).
//!
//! [`StagedFile::complete`] syncs the file *before* renaming it into place,
//! so the object that appears is complete even after a power loss; the
//! caller then syncs the folders and appends the event, as for every put. A
//! failure removes the hidden file; a kill leaves it behind, never listed.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

/// Why writing a staged file failed, and which file.
#[derive(Debug)]
pub(crate) struct StagedFileFailure {
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

/// The hidden file a body is written to until it becomes the object.
pub(crate) struct StagedFile {
    file: Arc<std::fs::File>,
    staged_path: PathBuf,
    destination: PathBuf,
    next_offset: u64,
    /// Renamed into place or removed: nothing is left to clean up on drop.
    finished: bool,
}

impl StagedFile {
    /// Create the hidden file for `destination`, and the folders it needs.
    pub(crate) async fn create(destination: PathBuf) -> Result<StagedFile, StagedFileFailure> {
        run_blocking(move || {
            let (file, staged_path) = create_hidden_beside(&destination)?;
            Ok(StagedFile { file: Arc::new(file), staged_path, destination, next_offset: 0, finished: false })
        })
        .await
    }

    /// Write `part` after the parts before it and start its writeback. The
    /// returned future owns what it needs, so parts can be in flight together.
    pub(crate) fn write_part(&mut self, part: Bytes) -> BoxFuture<'static, Result<(), StagedFileFailure>> {
        let offset = self.next_offset;
        self.next_offset += part.len() as u64;
        let file = Arc::clone(&self.file);
        let staged_path = self.staged_path.clone();
        Box::pin(run_blocking(move || {
            let failed = |action, source| StagedFileFailure { action, path: staged_path.clone(), source };
            file.write_all_at(&part, offset).map_err(|source| failed("write the object's temp file", source))?;
            start_writeback(&file, offset, part.len() as u64)
                .map_err(|source| failed("start writing the object to disk", source))
        }))
    }

    /// Sync the file and rename it into place: the object appears, whole.
    /// Every part's future must have finished. On failure the file is removed.
    pub(crate) async fn complete(mut self) -> Result<(), StagedFileFailure> {
        let (file, staged_path, destination) =
            (Arc::clone(&self.file), self.staged_path.clone(), self.destination.clone());
        let outcome = run_blocking(move || {
            file.sync_all().map_err(|source| StagedFileFailure {
                action: "sync the object's temp file",
                path: staged_path.clone(),
                source,
            })?;
            std::fs::rename(&staged_path, &destination).map_err(|source| StagedFileFailure {
                action: "move the object's temp file into place",
                path: destination,
                source,
            })
        })
        .await;
        match outcome {
            Ok(()) => self.finished = true,
            Err(failure) => {
                self.remove().await;
                return Err(failure);
            }
        }
        Ok(())
    }

    /// Give the body up: the file is removed and the object stays as it was.
    /// Every part's future must have finished.
    pub(crate) async fn abort(mut self) {
        self.remove().await;
    }

    async fn remove(&mut self) {
        let staged_path = self.staged_path.clone();
        self.finished = true;
        let removed = run_blocking(move || {
            std::fs::remove_file(&staged_path).map_err(|source| StagedFileFailure {
                action: "remove the object's temp file",
                path: staged_path,
                source,
            })
        })
        .await;
        if let Err(failure) = removed {
            tracing::warn!(path = %failure.path.display(), error = %failure.source, "could not remove a failed upload's temp file (it is never listed)");
        }
    }
}

impl Drop for StagedFile {
    /// A caller that went away mid-body (a dropped request) leaves no file.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let staged_path = std::mem::take(&mut self.staged_path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || std::fs::remove_file(staged_path))),
            Err(_) => drop(std::fs::remove_file(staged_path)),
        }
    }
}

/// Create `<destination>#<random digits>` (object_store's temp file name),
/// making the folders first if they are missing.
fn create_hidden_beside(destination: &Path) -> Result<(std::fs::File, PathBuf), StagedFileFailure> {
    let mut made_folders = false;
    loop {
        let mut name = destination.as_os_str().to_owned();
        name.push(format!("#{}", rand::random::<u32>()));
        let staged_path = PathBuf::from(name);
        let created = std::fs::OpenOptions::new().write(true).create_new(true).open(&staged_path);
        match created {
            Ok(file) => return Ok((file, staged_path)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) if error.kind() == io::ErrorKind::NotFound && !made_folders => {
                made_folders = true;
                let Some(folder) = destination.parent() else {
                    return Err(StagedFileFailure {
                        action: "create the object's temp file",
                        path: staged_path,
                        source: error,
                    });
                };
                std::fs::create_dir_all(folder).map_err(|source| StagedFileFailure {
                    action: "create the object's folder",
                    path: folder.to_owned(),
                    source,
                })?;
            }
            Err(source) => {
                return Err(StagedFileFailure { action: "create the object's temp file", path: staged_path, source });
            }
        }
    }
}

/// Start writing bytes `offset..offset + length` of `file` to the disk without
/// waiting for them (Linux; elsewhere the final sync writes everything).
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, offset: u64, length: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
        return Ok(());
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and
    // sync_file_range reads no memory of ours.
    let started = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, length, libc::SYNC_FILE_RANGE_WRITE) };
    if started == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _offset: u64, _length: u64) -> io::Result<()> {
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StagedFileFailure> + Send + 'static,
) -> Result<T, StagedFileFailure> {
    crate::backend::on_blocking_pool(work, |source| StagedFileFailure {
        action: "finish writing the object (the runtime is shutting down)",
        path: PathBuf::new(),
        source,
    })
    .await
}
