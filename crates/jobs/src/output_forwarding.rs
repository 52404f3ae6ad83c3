//! A worker's own output sent to its coordinator, for a worker whose
//! provisioner cannot capture it (Slurm and swarm nodes: a FIFO on the
//! coordinator's host never reaches them; see
//! [`mayfly_fleet::Provisioner::output_reaches_this_host`]).
//!
//! The coordinator starts such a worker with `--forward-output` and no
//! output file (its stdout and stderr are `/dev/null` on its node). The
//! worker then makes its fds 1 and 2 a pipe ([`OutputForwarding::install`]):
//! everything written there — its own tracing, a panic, and whatever a
//! function instance that inherits them writes — goes into a buffer in
//! memory, never to disk, and is sent over the worker's mutual-TLS channel
//! (`POST /v1/output`) in batches: every [`BATCH_INTERVAL`], as soon as
//! [`BATCH_BYTES`] are waiting, and once more when the worker ends (a worker
//! told to stop, or failing, sends what it holds before it exits). The
//! buffer holds at most [`BUFFER_LIMIT`] bytes; what comes beyond is
//! dropped and counted, and the next batch says so (`[mayfly: N bytes of log
//! dropped …]`), so a coordinator that cannot keep up never makes a worker
//! grow without bound. What a worker writes before it has enrolled waits in
//! the buffer; a worker that cannot enroll has no channel, and its output
//! is lost with it.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A batch goes as soon as this many bytes wait.
pub const BATCH_BYTES: usize = 64 * 1024;
/// A batch goes at least this often while there is output.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The most output held unsent; the rest is dropped and counted.
pub const BUFFER_LIMIT: usize = 1024 * 1024;
/// How long the worker's end waits for the pipe to empty (a child that
/// still holds it open, e.g. a stray grandchild, does not hold the worker up).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Output not yet sent: the first bytes up to a limit, and a count of what
/// was dropped beyond it.
#[derive(Debug)]
pub struct OutputBuffer {
    pending: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl OutputBuffer {
    pub fn new(limit: usize) -> OutputBuffer {
        OutputBuffer { pending: Vec::new(), dropped: 0, limit }
    }

    /// Keeps what fits under the limit, counts the rest as dropped.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.pending.len());
        let (kept, rest) = bytes.split_at(room.min(bytes.len()));
        self.pending.extend_from_slice(kept);
        self.dropped += rest.len() as u64;
    }

    /// Counts `bytes` as dropped (a batch that could not be sent).
    pub fn count_dropped(&mut self, bytes: u64) {
        self.dropped += bytes;
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing to send: no bytes and no drop to report.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.dropped == 0
    }

    /// The next batch: what waits, then a line saying how much was dropped
    /// since the last batch, if any; leaves the buffer empty. With it, the
    /// bytes of output it stands for (to count as dropped if it is not sent).
    pub fn take(&mut self) -> (Vec<u8>, u64) {
        let stands_for = self.pending.len() as u64 + self.dropped;
        let mut batch = std::mem::take(&mut self.pending);
        if self.dropped > 0 {
            if !batch.is_empty() && !batch.ends_with(b"\n") {
                batch.push(b'\n');
            }
            batch.extend_from_slice(
                format!(
                    "[mayfly: {} bytes of log dropped: more than {} bytes waited to be sent to the coordinator]\n",
                    self.dropped, self.limit
                )
                .as_bytes(),
            );
            self.dropped = 0;
        }
        (batch, stands_for)
    }
}

/// How much output is held and how it is batched.
#[derive(Debug, Clone, Copy)]
pub struct ForwardingLimits {
    /// The most output held unsent.
    pub buffer: usize,
    /// A batch goes as soon as this many bytes wait.
    pub batch_bytes: usize,
    /// A batch goes at least this often while there is output.
    pub batch_interval: Duration,
}

impl Default for ForwardingLimits {
    fn default() -> Self {
        ForwardingLimits { buffer: BUFFER_LIMIT, batch_bytes: BATCH_BYTES, batch_interval: BATCH_INTERVAL }
    }
}

/// This process's output, collected for sending: [`install`](Self::install)
/// for a worker process, [`in_memory`](Self::in_memory) for what is pushed only.
pub struct OutputForwarding {
    limits: ForwardingLimits,
    buffer: Mutex<OutputBuffer>,
    /// Woken when a batch's worth waits.
    full: tokio::sync::Notify,
    /// The thread reading the pipe, when fds 1 and 2 are one.
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for OutputForwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputForwarding").field("limits", &self.limits).finish_non_exhaustive()
    }
}

fn check(result: libc::c_int, what: &str) -> std::io::Result<libc::c_int> {
    if result < 0 {
        return Err(std::io::Error::other(format!("{what}: {}", std::io::Error::last_os_error())));
    }
    Ok(result)
}

impl OutputForwarding {
    /// Collects only what [`push`](Self::push) is given.
    pub fn in_memory(limits: ForwardingLimits) -> Arc<OutputForwarding> {
        Arc::new(OutputForwarding {
            limits,
            buffer: Mutex::new(OutputBuffer::new(limits.buffer)),
            full: tokio::sync::Notify::new(),
            reader: Mutex::new(None),
        })
    }

    /// From now on, everything this process writes to stdout or stderr
    /// goes into the buffer (up to [`BUFFER_LIMIT`]), not to what fds 1 and 2 were.
    pub fn install() -> std::io::Result<Arc<OutputForwarding>> {
        let forwarding = OutputForwarding::in_memory(ForwardingLimits::default());
        let mut fds = [0; 2];
        // SAFETY: pipe2, dup2 and close take plain descriptors; each result is checked, and the
        // read end wrapped in `OwnedFd` is ours alone (fresh from pipe2).
        let reader = unsafe {
            check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), "create the output pipe")?;
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            check(libc::dup2(fds[1], 1), "redirect stdout")?;
            check(libc::dup2(fds[1], 2), "redirect stderr")?;
            libc::close(fds[1]);
            OwnedFd::from_raw_fd(fds[0])
        };
        let mut reader = std::fs::File::from(reader);
        let collecting = forwarding.clone();
        let thread = std::thread::Builder::new().name("forwarded-output".into()).spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut reader, &mut chunk) {
                    Ok(0) => return,
                    Ok(read) => collecting.push(&chunk[..read]),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })?;
        *forwarding.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
        Ok(forwarding)
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, OutputBuffer> {
        self.buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds output; wakes the sender once a batch's worth waits.
    pub fn push(&self, bytes: &[u8]) {
        let waiting = {
            let mut buffer = self.buffer();
            buffer.push(bytes);
            buffer.len()
        };
        if waiting >= self.limits.batch_bytes {
            self.full.notify_one();
        }
    }

    fn take(&self) -> (Vec<u8>, u64) {
        self.buffer().take()
    }

    /// Sends batches with `send` until `stop` fires (or its sender is
    /// dropped), then everything left (after closing the pipe, when
    /// installed, and reading it to its end). A batch `send` fails to
    /// deliver is counted as dropped.
    pub async fn forward<SendBatch, Delivery>(&self, mut send: SendBatch, mut stop: tokio::sync::oneshot::Receiver<()>)
    where
        SendBatch: FnMut(Vec<u8>) -> Delivery,
        Delivery: Future<Output = Result<(), String>>,
    {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(self.limits.batch_interval) => false,
                _ = self.full.notified() => false,
                _ = &mut stop => true,
            };
            if stopping {
                self.close_pipe().await;
            }
            let (batch, stands_for) = self.take();
            if !batch.is_empty() && send(batch).await.is_err() {
                self.buffer().count_dropped(stands_for);
            }
            if stopping {
                return;
            }
        }
    }

    /// Points fds 1 and 2 at `/dev/null` and waits (briefly) for the reader
    /// to take what the pipe still holds; a no-op when not installed.
    async fn close_pipe(&self) {
        let Some(thread) = self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
            return;
        };
        {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 onto fds 1 and 2 replaces this process's write ends of the pipe with /dev/null.
            unsafe {
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
        }
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while !thread.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_keeps_up_to_its_limit_and_says_how_much_it_dropped() {
        let mut buffer = OutputBuffer::new(10);
        assert!(buffer.is_empty());
        buffer.push(b"patient 1");
        buffer.push(b"7 and more");
        assert_eq!(buffer.len(), 10);
        let (batch, stands_for) = buffer.take();
        assert_eq!(stands_for, 19, "the bytes kept and dropped");
        let batch = String::from_utf8(batch).unwrap();
        assert_eq!(
            batch,
            "patient 17\n[mayfly: 9 bytes of log dropped: more than 10 bytes waited to be sent to the coordinator]\n"
        );
        assert!(buffer.is_empty(), "taking empties it, the count included");
        buffer.count_dropped(4);
        assert!(!buffer.is_empty());
        assert!(String::from_utf8(buffer.take().0).unwrap().starts_with("[mayfly: 4 bytes of log dropped"));
        assert!(buffer.take().0.is_empty());
    }

    /// What a test's sender received, batch by batch.
    type Batches = Arc<Mutex<Vec<Vec<u8>>>>;

    /// Runs `forward` into a list of batches; returns the list and the stop switch.
    fn collect_batches(
        forwarding: &Arc<OutputForwarding>,
        fail_first: bool,
    ) -> (Batches, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let batches: Batches = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (sent, forwarding) = (batches.clone(), forwarding.clone());
        let task = tokio::spawn(async move {
            let mut calls = 0;
            forwarding
                .forward(
                    |batch| {
                        calls += 1;
                        let failing = fail_first && calls == 1;
                        let sent = sent.clone();
                        async move {
                            if failing {
                                return Err("the coordinator is not answering".to_owned());
                            }
                            sent.lock().unwrap().push(batch);
                            Ok(())
                        }
                    },
                    stopped,
                )
                .await
        });
        (batches, stop, task)
    }

    #[tokio::test]
    async fn output_goes_in_batches_by_time_and_by_size_and_the_rest_on_stop() {
        let limits =
            ForwardingLimits { buffer: BUFFER_LIMIT, batch_bytes: 1000, batch_interval: Duration::from_secs(1) };
        let forwarding = OutputForwarding::in_memory(limits);
        let (batches, stop, task) = collect_batches(&forwarding, false);
        tokio::task::yield_now().await;

        // A line waits for the interval, then goes alone.
        forwarding.push(b"worker w1-001 started\n");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(batches.lock().unwrap().is_empty(), "not before the interval");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(*batches.lock().unwrap(), vec![b"worker w1-001 started\n".to_vec()]);

        // A batch's worth goes at once, without waiting for the interval (due in 700 ms).
        forwarding.push(&[b'a'; 1000]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(batches.lock().unwrap().len(), 2, "sent as soon as 1000 bytes waited");
        assert_eq!(batches.lock().unwrap()[1].len(), 1000);

        // Told to stop, it sends what is left at once and ends.
        forwarding.push(b"worker w1-001 stopping\n");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_millis(100), task).await.expect("ends at once").unwrap();
        assert_eq!(batches.lock().unwrap().last().unwrap(), b"worker w1-001 stopping\n");
    }

    #[tokio::test]
    async fn a_flood_is_bounded_and_an_unsent_batch_is_counted_as_dropped() {
        let limits =
            ForwardingLimits { buffer: 1000, batch_bytes: BATCH_BYTES, batch_interval: Duration::from_millis(200) };
        let forwarding = OutputForwarding::in_memory(limits);
        let (batches, stop, task) = collect_batches(&forwarding, true);
        tokio::task::yield_now().await;
        // More than the limit before anything is sent: the limit is kept.
        for _ in 0..10 {
            forwarding.push(&[b'x'; 300]);
        }
        // The first batch cannot be sent: it is counted, not retried nor held.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(batches.lock().unwrap().is_empty());
        forwarding.push(b"after\n");
        stop.send(()).unwrap();
        task.await.unwrap();
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 1, "{batches:?}");
        let text = String::from_utf8_lossy(&batches[0]);
        assert!(
            text.starts_with("after\n[mayfly: 3000 bytes of log dropped"),
            "2000 over the limit, 1000 unsent: {text}"
        );
    }
}
