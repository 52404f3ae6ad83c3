//! Streaming an `AsyncRead` body into the object store in constant memory.
//!
//! A body that fits in one part is read whole and stored with one `put`. A
//! longer one is written in parts of [`PART_SIZE`] bytes, at most
//! [`PARTS_IN_FLIGHT`] being written while the next is read, so memory stays
//! under `PART_SIZE * (PARTS_IN_FLIGHT + 1)` whatever the body's size. The
//! object appears only when the upload completes. On the local filesystem
//! the parts go to a hidden file this crate writes itself
//! ([`crate::staged_file`]: each part is read into memory aligned for a
//! direct write and written past the page cache, and the file is synced
//! before it is renamed into place); on any other store they go through
//! object_store's multipart upload.
//!
//! This drives `MultipartUpload` directly rather than through
//! `WriteMultipart`: when a part fails, `WriteMultipart::finish` returns
//! without aborting and leaves the temp file to a detached cleanup task, so a
//! full disk could be reported before the space is given back. Here every
//! failure waits for the parts in flight and then awaits `abort`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path as StorePath;
use object_store::{MultipartUpload, PutPayload};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use crate::backend::ObjectBackend;
use crate::staged_file::{DIRECT_WRITE_ALIGNMENT, StagedFile, StagedFileFailure};

/// Size of one multipart part, and the largest body stored with a single put.
/// S3 needs parts of at least 5 MiB (except the last).
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once while the next one is read.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;

/// Why a streamed upload failed.
#[derive(Debug)]
pub(crate) enum UploadFailure {
    ReadBody(std::io::Error),
    Store(object_store::Error),
    LocalFile(StagedFileFailure),
}

/// The bytes of a body read so far: the whole body if it ended within one part.
pub(crate) enum FirstPart {
    WholeBody(Bytes),
    MoreToCome(Bytes),
}

/// Read up to [`PART_SIZE`] bytes.
pub(crate) async fn read_first_part(body: &mut (impl AsyncRead + Unpin)) -> Result<FirstPart, std::io::Error> {
    let (part, reached_end) = read_part(body, aligned_part_buffer()).await?;
    Ok(if reached_end { FirstPart::WholeBody(part) } else { FirstPart::MoreToCome(part) })
}

/// Read into the empty `buffer` (from [`aligned_part_buffer`] or
/// [`reusable_part_buffer`]) until a part is full or the body ends; says
/// whether it ended.
async fn read_part(body: &mut (impl AsyncRead + Unpin), mut buffer: BytesMut) -> Result<(Bytes, bool), std::io::Error> {
    while buffer.len() < PART_SIZE {
        let room = PART_SIZE - buffer.len();
        if body.read_buf(&mut (&mut buffer).limit(room)).await? == 0 {
            return Ok((buffer.freeze(), true));
        }
    }
    Ok((buffer.freeze(), false))
}

/// An empty buffer with room for a part whose first byte lies at a multiple
/// of [`DIRECT_WRITE_ALIGNMENT`], so that the staged file can write it with
/// `O_DIRECT` from where it was read (the body is read, and sealed, straight
/// into it). One allocation of a part and a page: the bytes before the
/// aligned address are skipped, and stay part of the allocation (no copy).
fn aligned_part_buffer() -> BytesMut {
    let mut buffer = BytesMut::with_capacity(PART_SIZE + DIRECT_WRITE_ALIGNMENT);
    let skipped = buffer.as_ptr().align_offset(DIRECT_WRITE_ALIGNMENT);
    buffer.put_bytes(0, skipped);
    buffer.advance(skipped);
    buffer
}

/// The buffer of a part that has been written, emptied for the next part if
/// nothing else holds it and it is still aligned with room for a part; else
/// a new one. Reusing the parts' buffers spares a new allocation per part,
/// which the allocator gave back to the kernel and took again, each page
/// faulted in anew (about a tenth of a 256 MiB PUT's server CPU).
fn reusable_part_buffer(written: Option<Bytes>) -> BytesMut {
    match written.map(Bytes::try_into_mut) {
        Some(Ok(mut buffer))
            if buffer.as_ptr().align_offset(DIRECT_WRITE_ALIGNMENT) == 0 && buffer.capacity() >= PART_SIZE =>
        {
            buffer.clear();
            buffer
        }
        _ => aligned_part_buffer(),
    }
}

/// Where the parts of a body go.
enum PartsDestination {
    /// object_store's multipart upload (any store but the local filesystem).
    Store { upload: Box<dyn MultipartUpload>, location: StorePath },
    /// A hidden file on the local filesystem, written by this crate.
    LocalFile(StagedFile),
}

impl PartsDestination {
    /// Start writing the next part; the future owns what it needs, and
    /// hands the part back once written if it can be reused.
    fn write_part(&mut self, part: Bytes) -> BoxFuture<'static, Result<Option<Bytes>, UploadFailure>> {
        match self {
            PartsDestination::Store { upload, .. } => upload
                .put_part(PutPayload::from(part))
                .map(|written| written.map(|()| None).map_err(UploadFailure::Store))
                .boxed(),
            PartsDestination::LocalFile(file) => {
                file.write_part(part).map(|written| written.map(Some).map_err(UploadFailure::LocalFile)).boxed()
            }
        }
    }

    async fn abort(self) {
        match self {
            PartsDestination::Store { mut upload, location } => abort(upload.as_mut(), &location).await,
            PartsDestination::LocalFile(file) => file.abort().await,
        }
    }
}

/// A body whose parts are all stored, waiting for [`UploadedParts::complete`]
/// to make the object appear.
pub(crate) struct UploadedParts {
    destination: PartsDestination,
}

impl UploadedParts {
    /// Give the upload up: its parts are removed and the object stays as it was.
    pub(crate) async fn abort(self) {
        self.destination.abort().await;
    }

    /// Complete the upload: the commit point, where the object appears.
    pub(crate) async fn complete(self) -> Result<(), UploadFailure> {
        match self.destination {
            PartsDestination::Store { mut upload, location } => match upload.complete().await {
                Ok(_) => Ok(()),
                Err(error) => {
                    abort(upload.as_mut(), &location).await;
                    Err(UploadFailure::Store(error))
                }
            },
            PartsDestination::LocalFile(file) => file.complete().await.map_err(UploadFailure::LocalFile),
        }
    }
}

/// Upload `first_part` and the rest of `body` as the parts of the object at
/// `location`. Nothing is left behind on failure.
pub(crate) async fn upload_parts(
    backend: &ObjectBackend,
    location: &StorePath,
    first_part: Bytes,
    body: &mut (impl AsyncRead + Unpin),
) -> Result<UploadedParts, UploadFailure> {
    let mut destination = match backend.local_file_path(location) {
        Some(path) => PartsDestination::LocalFile(StagedFile::create(path).await.map_err(UploadFailure::LocalFile)?),
        None => PartsDestination::Store {
            upload: backend.store.put_multipart(location).await.map_err(UploadFailure::Store)?,
            location: location.clone(),
        },
    };
    let mut parts_in_flight = JoinSet::new();
    match send_parts(&mut destination, &mut parts_in_flight, first_part, body).await {
        Ok(()) => Ok(UploadedParts { destination }),
        Err(failure) => {
            // Let parts still writing finish, so the temp file is closed and
            // its space is freed by the time the caller sees the error.
            while parts_in_flight.join_next().await.is_some() {}
            destination.abort().await;
            Err(failure)
        }
    }
}

async fn abort(upload: &mut dyn MultipartUpload, location: &StorePath) {
    if let Err(error) = upload.abort().await {
        tracing::warn!(%location, error = %error, "could not abort a failed multipart upload; its temp file may remain (it is never listed)");
    }
}

async fn send_parts(
    destination: &mut PartsDestination,
    parts_in_flight: &mut JoinSet<Result<Option<Bytes>, UploadFailure>>,
    first_part: Bytes,
    body: &mut (impl AsyncRead + Unpin),
) -> Result<(), UploadFailure> {
    let mut next_part = first_part;
    // At most one written part waits here for the next read, so no more
    // than PARTS_IN_FLIGHT + 1 buffers are ever held.
    let mut written_part = None;
    loop {
        while parts_in_flight.len() >= PARTS_IN_FLIGHT {
            written_part = wait_for_one_part(parts_in_flight).await?;
        }
        if !next_part.is_empty() {
            parts_in_flight.spawn(destination.write_part(next_part));
        }
        let buffer = reusable_part_buffer(written_part.take());
        let (part, reached_end) = read_part(body, buffer).await.map_err(UploadFailure::ReadBody)?;
        next_part = part;
        if reached_end {
            break;
        }
    }
    if !next_part.is_empty() {
        parts_in_flight.spawn(destination.write_part(next_part));
    }
    while !parts_in_flight.is_empty() {
        wait_for_one_part(parts_in_flight).await?;
    }
    Ok(())
}

/// Wait for a part in flight to be written; returns it if it can be reused.
async fn wait_for_one_part(
    parts_in_flight: &mut JoinSet<Result<Option<Bytes>, UploadFailure>>,
) -> Result<Option<Bytes>, UploadFailure> {
    match parts_in_flight.join_next().await {
        None => Ok(None),
        Some(Ok(Ok(written))) => Ok(written),
        Some(Ok(Err(failure))) => Err(failure),
        Some(Err(join_error)) if join_error.is_panic() => std::panic::resume_unwind(join_error.into_panic()),
        Some(Err(join_error)) => Err(UploadFailure::Store(object_store::Error::JoinError { source: join_error })),
    }
}
