//! Per-request log capture: a capped buffer that keeps the head of what a
//! request printed plus a short tail (for error messages), and the readers
//! that move an instance's stdout/stderr into it.
//!
//! A warm instance's pipes are read continuously by a task per pipe, and
//! drained once more under the same lock when a request completes, so every
//! byte written before the handler answered is attributed to that request.

use std::io::ErrorKind;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;

/// Most bytes of logs kept per request; the rest is counted and noted.
pub const LOG_CAPTURE_LIMIT: usize = 1024 * 1024;

/// Bytes of the end of the logs kept even when the head is truncated.
const TAIL_LIMIT: usize = 4096;

/// One request's logs.
#[derive(Debug, Default)]
pub(crate) struct LogBuffer {
    head: Vec<u8>,
    /// The last bytes written after `head` filled up.
    tail: Vec<u8>,
    dropped: u64,
}

impl LogBuffer {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let room = LOG_CAPTURE_LIMIT.saturating_sub(self.head.len());
        let (kept, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(kept);
        if !rest.is_empty() {
            self.dropped += rest.len() as u64;
            self.tail.extend_from_slice(rest);
            if self.tail.len() > TAIL_LIMIT {
                let excess = self.tail.len() - TAIL_LIMIT;
                self.tail.drain(..excess);
            }
        }
    }

    /// The last `lines` lines, lossily decoded, for an error message.
    pub(crate) fn last_lines(&self, lines: usize) -> String {
        let end = if self.tail.is_empty() { &self.head[..] } else { &self.tail[..] };
        let text = String::from_utf8_lossy(end);
        let text = text.trim_end();
        let mut start = text.len();
        for _ in 0..lines {
            match text[..start].rfind('\n') {
                Some(newline) => start = newline,
                None => {
                    start = 0;
                    break;
                }
            }
        }
        text[start..].trim_start_matches('\n').to_owned()
    }

    /// The captured logs, with a note of how much was dropped; leaves the buffer empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let mut logs = std::mem::take(&mut self.head);
        if self.dropped > 0 {
            if !logs.ends_with(b"\n") {
                logs.push(b'\n');
            }
            logs.extend_from_slice(
                format!("[mayfly: {} more bytes of logs truncated at {LOG_CAPTURE_LIMIT} bytes]\n", self.dropped)
                    .as_bytes(),
            );
        }
        self.tail.clear();
        self.dropped = 0;
        logs
    }
}

/// The log pipes of a warm instance and the buffer of the request in flight.
#[derive(Debug)]
pub(crate) struct LogCapture {
    buffer: Mutex<LogBuffer>,
    pipes: Vec<pipe::Receiver>,
    /// Chunks [`push`](Self::push)ed so far.
    pushed: std::sync::atomic::AtomicU64,
}

impl LogCapture {
    pub(crate) fn new(pipes: Vec<pipe::Receiver>) -> Arc<LogCapture> {
        Arc::new(LogCapture { buffer: Mutex::new(LogBuffer::default()), pipes, pushed: Default::default() })
    }

    /// Starts one reader task per pipe; they end at end of file.
    pub(crate) fn spawn_readers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.pipes.len())
            .map(|index| {
                let capture = Arc::clone(self);
                tokio::spawn(async move { capture.read_pipe_until_closed(index).await })
            })
            .collect()
    }

    async fn read_pipe_until_closed(&self, index: usize) {
        let pipe = &self.pipes[index];
        loop {
            if pipe.readable().await.is_err() {
                return;
            }
            let mut buffer = lock(&self.buffer);
            if drain_pipe(pipe, &mut buffer) == PipeState::Closed {
                return;
            }
        }
    }

    /// Adds what an instance wrote through another channel than its pipes (a container's attached output).
    pub(crate) fn push(&self, bytes: &[u8]) {
        lock(&self.buffer).push(bytes);
        self.pushed.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Waits until nothing was [`push`](Self::push)ed for `quiet`, at most
    /// `longest`: a container's output reaches Mayfly through the engine, a
    /// little after the handler answered, unlike a pipe's, which is drained
    /// in the same step.
    pub(crate) async fn settle(&self, quiet: std::time::Duration, longest: std::time::Duration) {
        let started = std::time::Instant::now();
        let mut seen = self.pushed.load(std::sync::atomic::Ordering::Acquire);
        while started.elapsed() < longest {
            tokio::time::sleep(quiet).await;
            let now = self.pushed.load(std::sync::atomic::Ordering::Acquire);
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// Everything written so far, this request's logs; resets for the next request.
    pub(crate) fn take_request_logs(&self) -> Vec<u8> {
        let mut buffer = lock(&self.buffer);
        for pipe in &self.pipes {
            drain_pipe(pipe, &mut buffer);
        }
        buffer.take()
    }
}

fn lock(buffer: &Mutex<LogBuffer>) -> std::sync::MutexGuard<'_, LogBuffer> {
    // A poisoned buffer only means a reader panicked mid-push; the bytes are still usable.
    buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PipeState {
    Open,
    Closed,
}

/// Reads what the pipe holds now, without waiting.
pub(crate) fn drain_pipe(pipe: &pipe::Receiver, buffer: &mut LogBuffer) -> PipeState {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match pipe.try_read(&mut chunk) {
            Ok(0) => return PipeState::Closed,
            Ok(read) => buffer.push(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return PipeState::Open,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return PipeState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_and_notes_the_rest() {
        let mut buffer = LogBuffer::default();
        buffer.push(&vec![b'a'; LOG_CAPTURE_LIMIT - 1]);
        buffer.push(b"bcd\nlast line\n");
        assert_eq!(buffer.last_lines(1), "last line");
        let logs = buffer.take();
        assert!(logs.starts_with(b"aaaa"));
        let note = String::from_utf8_lossy(&logs[LOG_CAPTURE_LIMIT..]).into_owned();
        assert_eq!(note, "\n[mayfly: 13 more bytes of logs truncated at 1048576 bytes]\n");
        assert!(buffer.take().is_empty());
    }

    #[test]
    fn last_lines_of_short_logs() {
        let mut buffer = LogBuffer::default();
        buffer.push(b"one\ntwo\nthree\n");
        assert_eq!(buffer.last_lines(2), "two\nthree");
        assert_eq!(buffer.last_lines(10), "one\ntwo\nthree");
    }
}
