//! A body of several parts written to the local filesystem by this crate
//! rather than by object_store's multipart upload, so that the disk works
//! while the body is still arriving, and without the page cache.
//!
//! The parts go into a hidden file beside the object (`<name>#<digits>`, the
//! name object_store gives its own temp files, which listings skip and which
//! no valid key can have). Each part is written with `O_DIRECT` from its own
//! buffer (the upload reads parts into memory aligned for it, see
//! [`DIRECT_WRITE_ALIGNMENT`]): the disk takes the bytes from there, where a
//! buffered write had the kernel copy every byte into the page cache first,
//! which was over half of a 256 MiB PUT's CPU time (BENCHMARKS.md). What
//! cannot go direct, the last part's unaligned tail, is written through a
//! second, buffered descriptor of the same file and its writeback started at
//! once (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which does not
//! wait). A filesystem that refuses `O_DIRECT` (`EINVAL`, e.g. ramfs) gets
//! every part that way, with a one-time note in the log.
//!
//! [`StagedFile::complete`] syncs the file *before* renaming it into place
//! (an `O_DIRECT` write leaves the disk's cache and the file's size and
//! extents to that sync), so the object that appears is complete even after
//! a power loss; the caller then syncs the folders and appends the event, as
//! for every put. A failure removes the hidden file; a kill leaves it
//! behind, never listed.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;

/// What an `O_DIRECT` write needs aligned to it: the address of the bytes,
/// the file offset and the length. A page: a multiple of the logical block
/// size of the disks in use (512 or 4096 bytes).
pub(crate) const DIRECT_WRITE_ALIGNMENT: usize = 4096;

/// Why writing a staged file failed, and which file.
#[derive(Debug)]
pub(crate) struct StagedFileFailure {
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

/// The hidden file a body is written to until it becomes the object.
pub(crate) struct StagedFile {
    descriptors: Arc<StagedDescriptors>,
    staged_path: PathBuf,
    destination: PathBuf,
    next_offset: u64,
    /// Renamed into place or removed: nothing is left to clean up on drop.
    finished: bool,
}

/// Two descriptors of one staged file, shared by the parts in flight.
struct StagedDescriptors {
    /// Opened without `O_DIRECT`: writes what cannot go direct, and syncs.
    buffered: std::fs::File,
    /// Opened with `O_DIRECT`; `None` where the filesystem refuses it.
    direct: Option<std::fs::File>,
    /// Cleared when a direct write is refused after all (`EINVAL`): the
    /// parts after it are written through `buffered`.
    direct_accepted: AtomicBool,
}

impl StagedFile {
    /// Create the hidden file for `destination`, and the folders it needs.
    pub(crate) async fn create(destination: PathBuf) -> Result<StagedFile, StagedFileFailure> {
        run_blocking(move || {
            let (buffered, staged_path) = create_hidden_beside(&destination)?;
            let direct = match open_direct(&staged_path) {
                Ok(direct) => Some(direct),
                Err(error) if refuses_direct(&error) => {
                    note_direct_writes_refused(&staged_path, &error);
                    None
                }
                Err(source) => {
                    drop(std::fs::remove_file(&staged_path));
                    return Err(StagedFileFailure { action: "open the object's temp file", path: staged_path, source });
                }
            };
            let descriptors =
                StagedDescriptors { buffered, direct_accepted: AtomicBool::new(direct.is_some()), direct };
            Ok(StagedFile {
                descriptors: Arc::new(descriptors),
                staged_path,
                destination,
                next_offset: 0,
                finished: false,
            })
        })
        .await
    }

    /// Write `part` after the parts before it: directly to the disk where its
    /// bytes, offset and length are aligned for it, the rest through the page
    /// cache with its writeback started. The returned future owns what it
    /// needs, so parts can be in flight together, and hands the part back
    /// once written, for its buffer to be reused.
    pub(crate) fn write_part(&mut self, part: Bytes) -> BoxFuture<'static, Result<Bytes, StagedFileFailure>> {
        let offset = self.next_offset;
        self.next_offset += part.len() as u64;
        let descriptors = Arc::clone(&self.descriptors);
        let staged_path = self.staged_path.clone();
        Box::pin(run_blocking(move || descriptors.write_part_at(&part, offset, &staged_path).map(|()| part)))
    }

    /// Sync the file and rename it into place: the object appears, whole.
    /// Every part's future must have finished. On failure the file is removed.
    pub(crate) async fn complete(mut self) -> Result<(), StagedFileFailure> {
        let (descriptors, staged_path, destination) =
            (Arc::clone(&self.descriptors), self.staged_path.clone(), self.destination.clone());
        let outcome = run_blocking(move || {
            // One sync covers what either descriptor wrote: they share the file.
            descriptors.buffered.sync_all().map_err(|source| StagedFileFailure {
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

impl StagedDescriptors {
    /// Write `part` at `offset`: its aligned front with `O_DIRECT`, unless
    /// the filesystem refuses it, and the rest buffered.
    fn write_part_at(&self, part: &[u8], offset: u64, staged_path: &Path) -> Result<(), StagedFileFailure> {
        let failed = |action, source| StagedFileFailure { action, path: staged_path.to_owned(), source };
        let mut written_direct = 0;
        if let Some(direct) = self.direct.as_ref().filter(|_| self.direct_accepted.load(Ordering::Relaxed)) {
            let aligned = direct_write_len(part, offset);
            if aligned > 0 {
                match direct.write_all_at(&part[..aligned], offset) {
                    Ok(()) => written_direct = aligned,
                    Err(error) if refuses_direct(&error) => {
                        self.direct_accepted.store(false, Ordering::Relaxed);
                        note_direct_writes_refused(staged_path, &error);
                    }
                    Err(source) => return Err(failed("write the object's temp file", source)),
                }
            }
        }
        let (rest, rest_offset) = (&part[written_direct..], offset + written_direct as u64);
        if rest.is_empty() {
            return Ok(());
        }
        self.buffered
            .write_all_at(rest, rest_offset)
            .map_err(|source| failed("write the object's temp file", source))?;
        start_writeback(&self.buffered, rest_offset, rest.len() as u64)
            .map_err(|source| failed("start writing the object to disk", source))
    }
}

/// How many bytes at the front of `part` can be written with `O_DIRECT` at
/// `offset`: the whole blocks, if the bytes and the offset are aligned.
fn direct_write_len(part: &[u8], offset: u64) -> usize {
    let aligned_memory = part.as_ptr().align_offset(DIRECT_WRITE_ALIGNMENT) == 0;
    let aligned_offset = offset.is_multiple_of(DIRECT_WRITE_ALIGNMENT as u64);
    if aligned_memory && aligned_offset { part.len() - part.len() % DIRECT_WRITE_ALIGNMENT } else { 0 }
}

/// A second descriptor of the just-created `staged_path`, with `O_DIRECT`
/// (Linux; elsewhere everything is written buffered). Opened after the
/// create, not with it: a filesystem that refuses `O_DIRECT` would create
/// the file and then fail the open.
#[cfg(target_os = "linux")]
fn open_direct(staged_path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(staged_path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_staged_path: &Path) -> io::Result<std::fs::File> {
    Err(io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether `error` is a filesystem refusing `O_DIRECT` (rather than a
/// failure to write): Linux says `EINVAL`, at the open or at the write.
fn refuses_direct(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::EINVAL)
}

/// Said once per process: the first filesystem found refusing `O_DIRECT`.
static DIRECT_WRITES_REFUSED_NOTED: AtomicBool = AtomicBool::new(false);

fn note_direct_writes_refused(staged_path: &Path, error: &io::Error) {
    if !DIRECT_WRITES_REFUSED_NOTED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            path = %staged_path.display(),
            error = %error,
            "the filesystem refuses direct writes (O_DIRECT); objects over 8 MiB are written through the page cache there"
        );
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
