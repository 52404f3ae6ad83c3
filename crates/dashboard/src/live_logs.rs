//! The live log tail: reads workers' live logs the way `mayfly logs RUN
//! --follow` does (through [`mayfly_jobs::logs::read_live`], which decrypts
//! each chunk), and hands out only complete lines not shown yet, tracked by a
//! [`Cursor`] of plaintext byte offsets per worker that the page sends back.

use std::collections::BTreeMap;
use std::path::Path;

use mayfly_crypto::Keyring;

use crate::views::LogLine;

/// How many lines the tail page starts with.
pub const TAIL_LINES: usize = 500;

/// Plaintext bytes of each worker's log already shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<String, u64>);

/// A cursor that is not `worker=offset` pairs separated by commas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log cursor `{cursor}` is not a list of worker=offset pairs separated by commas: {reason}")]
pub struct BadCursor {
    pub cursor: String,
    pub reason: String,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, BadCursor> {
        let bad = |reason: String| BadCursor { cursor: text.to_owned(), reason };
        let mut offsets = BTreeMap::new();
        for pair in text.split(',').filter(|pair| !pair.is_empty()) {
            let (worker, offset) = pair.split_once('=').ok_or_else(|| bad(format!("`{pair}` has no `=`")))?;
            if !is_worker_name(worker) {
                return Err(bad(format!("`{worker}` is not a worker name")));
            }
            let offset = offset.parse::<u64>().map_err(|_| bad(format!("`{offset}` is not a byte offset")))?;
            offsets.insert(worker.to_owned(), offset);
        }
        Ok(Cursor(offsets))
    }

    pub fn render(&self) -> String {
        self.0.iter().map(|(worker, offset)| format!("{worker}={offset}")).collect::<Vec<_>>().join(",")
    }
}

/// Worker names as the coordinator makes them: letters, digits, `-`, `_`, `.`.
fn is_worker_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The complete lines of `plain` from byte `offset` on, and the offset after
/// the last one; with `include_partial`, a last line without its newline too.
pub fn new_lines(worker: &str, plain: &[u8], offset: u64, include_partial: bool) -> (Vec<LogLine>, u64) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(plain.len());
    let rest = &plain[start..];
    let complete = if include_partial {
        rest.len()
    } else {
        rest.iter().rposition(|byte| *byte == b'\n').map_or(0, |last| last + 1)
    };
    let lines = String::from_utf8_lossy(&rest[..complete])
        .lines()
        .map(|text| LogLine { worker: worker.to_owned(), text: text.to_owned() })
        .collect();
    (lines, (start + complete) as u64)
}

/// The workers that have a live log under the run's directory, by name.
pub fn live_workers(run_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(run_dir.join("workers")) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut workers = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(worker) = name.to_str().and_then(|name| name.strip_suffix(".log")).filter(|w| is_worker_name(w)) {
            workers.push(worker.to_owned());
        }
    }
    workers.sort();
    Ok(workers)
}

/// Every worker's lines after `cursor`, and the cursor after them.
pub fn read_since(
    run_dir: &Path,
    run: &str,
    keyring: Option<&Keyring>,
    cursor: &Cursor,
    include_partial: bool,
) -> std::io::Result<(Vec<LogLine>, Cursor)> {
    let mut lines = Vec::new();
    let mut next = cursor.clone();
    for worker in live_workers(run_dir)? {
        let plain = match mayfly_jobs::logs::read_live(run_dir, run, &worker, keyring) {
            Ok(plain) => plain,
            // The run may end (and its files go) between listing and reading.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let offset = cursor.0.get(&worker).copied().unwrap_or(0);
        let (new, end) = new_lines(&worker, &plain, offset, include_partial);
        lines.extend(new);
        next.0.insert(worker, end);
    }
    Ok((lines, next))
}

/// The last `keep` lines of `lines` and how many were left out.
pub fn tail(mut lines: Vec<LogLine>, keep: usize) -> (Vec<LogLine>, usize) {
    let skipped = lines.len().saturating_sub(keep);
    lines.drain(..skipped);
    (lines, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_say_why() {
        let cursor = Cursor::parse("w1-001=12,w1-002=0").unwrap();
        assert_eq!(cursor.render(), "w1-001=12,w1-002=0");
        assert_eq!(Cursor::parse("").unwrap(), Cursor::default());
        let error = Cursor::parse("w1=x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "log cursor `w1=x` is not a list of worker=offset pairs separated by commas: `x` is not a byte offset"
        );
        assert!(Cursor::parse("../etc=1").is_err(), "a worker name cannot leave the run's directory");
        assert!(Cursor::parse("w1").is_err());
    }

    #[test]
    fn only_complete_lines_are_new_unless_the_log_is_final() {
        let plain = b"one\ntwo\nthr";
        let (lines, end) = new_lines("w", plain, 0, false);
        assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(end, 8);
        let (lines, end) = new_lines("w", plain, end, false);
        assert!(lines.is_empty());
        assert_eq!(end, 8, "a partial line waits for its newline");
        let (lines, end) = new_lines("w", plain, end, true);
        assert_eq!((lines[0].text.as_str(), end), ("thr", 11));
        assert!(new_lines("w", plain, 99, false).0.is_empty(), "an offset past the end reads nothing");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let lines: Vec<LogLine> = (0..5).map(|n| LogLine { worker: "w".to_owned(), text: n.to_string() }).collect();
        let (kept, skipped) = tail(lines, 2);
        assert_eq!((kept[0].text.as_str(), kept[1].text.as_str(), skipped), ("3", "4", 3));
    }

    #[test]
    fn reads_encrypted_live_logs_through_the_jobs_reader() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::generate(mayfly_core::Timestamp::from_millis(1));
        mayfly_jobs::logs::append(dir.path(), "run-1", "w1-001", b"patient 17 coded\npartial", Some(&keyring)).unwrap();
        mayfly_jobs::logs::append(dir.path(), "run-1", "w1-002", b"hello\n", Some(&keyring)).unwrap();
        let (lines, cursor) = read_since(dir.path(), "run-1", Some(&keyring), &Cursor::default(), false).unwrap();
        assert_eq!(
            lines,
            [
                LogLine { worker: "w1-001".to_owned(), text: "patient 17 coded".to_owned() },
                LogLine { worker: "w1-002".to_owned(), text: "hello".to_owned() },
            ]
        );
        assert_eq!(cursor.render(), "w1-001=17,w1-002=6");
        mayfly_jobs::logs::append(dir.path(), "run-1", "w1-001", b" line\n", Some(&keyring)).unwrap();
        let (lines, _) = read_since(dir.path(), "run-1", Some(&keyring), &cursor, false).unwrap();
        assert_eq!(lines, [LogLine { worker: "w1-001".to_owned(), text: "partial line".to_owned() }]);
    }
}
