//! Sealed process output: what a run's coordinator, broker and workers write
//! to their own stdout and stderr, kept in the run directory only as
//! envelopes (tracing lines may quote a function's stderr, an item id or an
//! error that holds customer data).
//!
//! A file of process output is a sequence of frames, each `\0MFo`, an
//! 8-byte session id, an 8-byte sequence number and a 4-byte length (both
//! big-endian), then one envelope bound to `process-output/<stream>/<session
//! hex>/<sequence>` — so a frame moved, reordered or copied into another
//! process's file fails to open. Bytes between frames are plaintext: what a
//! process printed before it could read the keyring (paths and names only:
//! it has opened nothing else yet).
//!
//! Two ways in:
//! - a process that holds the keyring (the coordinator, the broker) seals its
//!   own output with [`seal_own_output`]: fds 1 and 2 become a pipe that a
//!   thread reads and seals into what fd 2 was (the provisioner's file, or a
//!   container's log stream);
//! - a worker holds no keyring, so its coordinator captures it: the worker's
//!   stdout and stderr are a FIFO ([`capture_output`]) that a task of the
//!   coordinator reads and seals into the worker's `.stderr` file;
//! - a worker on another host (a Slurm or swarm node, whose provisioner
//!   says its output does not reach this host) cannot write to a FIFO here:
//!   its stdout and stderr are `/dev/null` on its node, it sends what it
//!   writes to its coordinator itself ([`crate::output_forwarding`]), and the
//!   coordinator seals that into the same file, in the same frames
//!   ([`ForwardedOutput`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mayfly_buckets::crypto::{Keyring, decrypt_bytes, encrypt_bytes};

const FRAME_MAGIC: &[u8; 4] = b"\0MFo";
const FRAME_HEADER_LEN: usize = 4 + 8 + 8 + 4;

fn frame_context(stream: &str, session: &[u8; 8], sequence: u64) -> String {
    format!("process-output/{stream}/{}/{sequence}", hex::encode(session))
}

/// The stream name of a run's coordinator, broker or worker output.
pub fn output_stream(run: &str, process: &str) -> String {
    format!("{run}/{process}")
}

/// Where a worker's captured output is kept while the run lives.
pub fn worker_output_path(run_dir: &Path, worker: &str) -> PathBuf {
    run_dir.join("workers").join(format!("{worker}.stderr"))
}

/// Seals chunks of one process's output into frames.
pub struct FrameSealer {
    keyring: Arc<Keyring>,
    stream: String,
    session: [u8; 8],
    next: u64,
}

impl FrameSealer {
    pub fn new(keyring: Arc<Keyring>, stream: String) -> FrameSealer {
        FrameSealer { keyring, stream, session: rand::random(), next: 0 }
    }

    /// One frame holding `chunk`.
    pub fn frame(&mut self, chunk: &[u8]) -> Vec<u8> {
        let envelope = encrypt_bytes(&self.keyring, &frame_context(&self.stream, &self.session, self.next), chunk);
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + envelope.len());
        frame.extend_from_slice(FRAME_MAGIC);
        frame.extend_from_slice(&self.session);
        frame.extend_from_slice(&self.next.to_be_bytes());
        // An envelope of one read (at most 64 KiB of plaintext) is far below 4 GiB.
        frame.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
        frame.extend_from_slice(&envelope);
        self.next += 1;
        frame
    }
}

/// The plaintext of a file of process output of `stream`.
pub fn open_output(stored: &[u8], stream: &str, keyring: &Keyring) -> std::io::Result<Vec<u8>> {
    let mut plain = Vec::with_capacity(stored.len());
    let mut at = 0;
    while at < stored.len() {
        let rest = &stored[at..];
        if !rest.starts_with(FRAME_MAGIC) {
            // Plaintext up to the next frame.
            let next = rest.windows(FRAME_MAGIC.len()).position(|window| window == FRAME_MAGIC).unwrap_or(rest.len());
            plain.extend_from_slice(&rest[..next]);
            at += next;
            continue;
        }
        let damaged = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the output of {stream} is damaged at byte {at}: {what}"),
            )
        };
        let header = rest.get(..FRAME_HEADER_LEN).ok_or_else(|| damaged("a cut frame header"))?;
        let session: [u8; 8] = header[4..12].try_into().expect("8 bytes");
        let sequence = u64::from_be_bytes(header[12..20].try_into().expect("8 bytes"));
        let length = u32::from_be_bytes(header[20..24].try_into().expect("4 bytes")) as usize;
        let envelope = rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + length).ok_or_else(|| damaged("a cut frame"))?;
        let chunk = decrypt_bytes(keyring, &frame_context(stream, &session, sequence), envelope)
            .map_err(|error| damaged(&error.to_string()))?;
        plain.extend_from_slice(&chunk);
        at += FRAME_HEADER_LEN + length;
    }
    Ok(plain)
}

/// Read a file of process output; a missing file is empty output.
pub fn read_output(path: &Path, stream: &str, keyring: Option<&Keyring>) -> std::io::Result<Vec<u8>> {
    let stored = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    match keyring {
        Some(keyring) => open_output(&stored, stream, keyring),
        None => Ok(stored),
    }
}

/// This process's own output sealing, finished by [`finish_own_output`].
static OWN_OUTPUT: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);

fn check(result: libc::c_int, what: &str) -> std::io::Result<libc::c_int> {
    if result < 0 {
        return Err(std::io::Error::other(format!("{what}: {}", std::io::Error::last_os_error())));
    }
    Ok(result)
}

/// From now on, everything this process writes to stdout or stderr (its
/// tracing, a panic, a library's message) reaches the file or stream fd 2
/// was only as sealed frames of `stream`. Call [`finish_own_output`] before
/// exiting so the last lines are written.
pub fn seal_own_output(keyring: Arc<Keyring>, stream: String) -> std::io::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: dup, pipe2, dup2 and close take plain descriptors; each result is checked, and the
    // descriptors wrapped in `OwnedFd` below are ours alone (fresh from dup and pipe2).
    let (sink, reader) = unsafe {
        let sink = check(libc::dup(2), "duplicate stderr")?;
        check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), "create the output pipe")?;
        let _ = std::io::stdout().flush();
        check(libc::dup2(fds[1], 1), "redirect stdout")?;
        check(libc::dup2(fds[1], 2), "redirect stderr")?;
        libc::close(fds[1]);
        (OwnedFd::from_raw_fd(sink), OwnedFd::from_raw_fd(fds[0]))
    };
    let mut sink = std::fs::File::from(sink);
    let mut reader = std::fs::File::from(reader);
    let mut sealer = FrameSealer::new(keyring, stream);
    let thread = std::thread::Builder::new().name("sealed-output".into()).spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match std::io::Read::read(&mut reader, &mut buffer) {
                Ok(0) => return,
                Ok(read) => {
                    // Nowhere to report a failed write: the output is the report.
                    let _ = sink.write_all(&sealer.frame(&buffer[..read]));
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })?;
    *OWN_OUTPUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
    Ok(())
}

/// Close this process's stdout and stderr and wait until the sealing thread
/// has written everything; a no-op without [`seal_own_output`].
pub fn finish_own_output() {
    let Some(thread) = OWN_OUTPUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else { return };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fds 1 and 2 replaces the pipe's last write ends with /dev/null.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
        let _ = thread.join();
    }
}

/// A worker's output being captured through a FIFO into its sealed file.
pub struct CapturedOutput {
    fifo: PathBuf,
    drain: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl CapturedOutput {
    /// The path to give the process as its stdout and stderr.
    pub fn fifo(&self) -> &Path {
        &self.fifo
    }

    /// Once the process is gone: seal what is left in the FIFO, then remove it.
    pub async fn finish(self) {
        let _ = self.drain.send(());
        let _ = self.task.await;
        std::fs::remove_file(&self.fifo).ok();
    }
}

/// Make a FIFO beside `sealed` for a process's output, and a task that
/// seals whatever comes through it into `sealed` (plainly, without a keyring).
pub fn capture_output(
    sealed: PathBuf,
    stream: String,
    keyring: Option<Arc<Keyring>>,
) -> std::io::Result<CapturedOutput> {
    // Every worker has an output file, if empty: `mayfly logs RUN --process W` finds it.
    std::fs::OpenOptions::new().create(true).append(true).open(&sealed)?;
    let fifo = sealed.with_extension("pipe");
    std::fs::remove_file(&fifo).ok();
    let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::other(format!("{} holds a NUL byte", fifo.display())))?;
    // SAFETY: `path` is a NUL-terminated C string that outlives the call.
    check(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, &format!("create the FIFO {}", fifo.display()))?;
    // Read and write: a writer that comes and goes is never an end of file,
    // and the process's own open for writing never waits for a reader.
    let receiver = tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_receiver(&fifo)?;
    let mut sealer = keyring.map(|keyring| FrameSealer::new(keyring, stream));
    let (drain, mut drained) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut write = |chunk: &[u8]| -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&sealed)?;
            match &mut sealer {
                Some(sealer) => file.write_all(&sealer.frame(chunk)),
                None => file.write_all(chunk),
            }
        };
        let mut draining = false;
        loop {
            if !draining {
                tokio::select! {
                    ready = receiver.readable() => if ready.is_err() { return },
                    _ = &mut drained => draining = true,
                }
            }
            // Everything readable now; when draining, until the FIFO is empty
            // (read directly: tokio's `try_read` does not try without a readiness event).
            loop {
                let read = if draining { read_now(&receiver, &mut buffer) } else { receiver.try_read(&mut buffer) };
                match read {
                    Ok(0) => return,
                    Ok(read) => {
                        if let Err(error) = write(&buffer[..read]) {
                            tracing::warn!(path = %sealed.display(), error = %error, "cannot keep a process's output");
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            if draining {
                return;
            }
        }
    });
    Ok(CapturedOutput { fifo, drain, task })
}

/// Process output that workers send over their channel, sealed into each
/// worker's output file in the frames a capture writes (one session per
/// worker and coordinator, so the file opens with [`read_output`]).
pub struct ForwardedOutput {
    keyring: Option<Arc<Keyring>>,
    sealers: Mutex<BTreeMap<String, FrameSealer>>,
}

impl ForwardedOutput {
    /// Plainly without a keyring, as [`capture_output`].
    pub fn new(keyring: Option<Arc<Keyring>>) -> ForwardedOutput {
        ForwardedOutput { keyring, sealers: Mutex::new(BTreeMap::new()) }
    }

    /// Append `chunk` of `stream` to `sealed`, in frames of at most 64 KiB of plaintext.
    pub fn append(&self, sealed: &Path, stream: &str, chunk: &[u8]) -> std::io::Result<()> {
        // Held while writing, so a stream's frames are in the file in sequence.
        let mut sealers = self.sealers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(sealed)?;
        let Some(keyring) = &self.keyring else { return file.write_all(chunk) };
        let sealer =
            sealers.entry(stream.to_owned()).or_insert_with(|| FrameSealer::new(keyring.clone(), stream.to_owned()));
        let mut framed = Vec::with_capacity(chunk.len() + 128);
        for piece in chunk.chunks(64 * 1024) {
            framed.extend_from_slice(&sealer.frame(piece));
        }
        file.write_all(&framed)
    }
}

/// One non-blocking read(2) of what the FIFO holds now.
fn read_now(receiver: &tokio::net::unix::pipe::Receiver, buffer: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buffer` is valid for `buffer.len()` bytes and the descriptor is the receiver's,
    // open (and non-blocking) for as long as `receiver` lives.
    let read = unsafe { libc::read(receiver.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
    if read < 0 { Err(std::io::Error::last_os_error()) } else { Ok(read as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mayfly_core::Timestamp;

    #[test]
    fn frames_open_in_order_with_plaintext_between_them_and_fail_when_moved() {
        let keyring = Arc::new(Keyring::generate(Timestamp::from_millis(1)));
        let mut sealer = FrameSealer::new(keyring.clone(), "run-1/coordinator".into());
        let mut stored = b"before the keyring\n".to_vec();
        stored.extend(sealer.frame(b"patient 17\n"));
        stored.extend(sealer.frame(b"patient 18\n"));
        assert!(!stored.windows(7).any(|window| window == b"patient"));
        let plain = open_output(&stored, "run-1/coordinator", &keyring).unwrap();
        assert_eq!(plain, b"before the keyring\npatient 17\npatient 18\n");
        assert!(open_output(&stored, "run-1/w1-001", &keyring).is_err(), "bound to its stream");
        let cut = &stored[..stored.len() - 3];
        assert!(open_output(cut, "run-1/coordinator", &keyring).unwrap_err().to_string().contains("cut frame"));
    }

    #[tokio::test]
    async fn a_capture_seals_what_a_writer_puts_into_its_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::generate(Timestamp::from_millis(1)));
        let sealed = dir.path().join("w1-001.stderr");
        let capture = capture_output(sealed.clone(), "run-1/w1-001".into(), Some(keyring.clone())).unwrap();
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(capture.fifo()).unwrap();
        writer.write_all(b"patient 17: chart\n").unwrap();
        drop(writer);
        capture.finish().await;
        let stored = std::fs::read(&sealed).unwrap();
        assert!(!stored.windows(7).any(|window| window == b"patient"));
        assert_eq!(read_output(&sealed, "run-1/w1-001", Some(&keyring)).unwrap(), b"patient 17: chart\n");
        assert!(!dir.path().join("w1-001.pipe").exists());
    }

    #[test]
    fn forwarded_output_is_sealed_in_the_frames_of_a_capture() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::generate(Timestamp::from_millis(1)));
        let sealed = dir.path().join("w1-001.stderr");
        let forwarded = ForwardedOutput::new(Some(keyring.clone()));
        forwarded.append(&sealed, "run-1/w1-001", b"patient 17: chart\n").unwrap();
        let long = vec![b'x'; 100 * 1024];
        forwarded.append(&sealed, "run-1/w1-001", &long).unwrap();
        let stored = std::fs::read(&sealed).unwrap();
        assert!(!stored.windows(7).any(|window| window == b"patient"));
        let mut expected = b"patient 17: chart\n".to_vec();
        expected.extend_from_slice(&long);
        assert_eq!(read_output(&sealed, "run-1/w1-001", Some(&keyring)).unwrap(), expected);
        assert!(read_output(&sealed, "run-1/w1-002", Some(&keyring)).is_err(), "bound to its stream");
    }
}
