//! How commands print: human text by default, one JSON document with `--json`.
//! Errors never come through here; they go to stderr from `main`.
//!
//! `--json` documents follow one rule (README, "JSON output"): listings are
//! arrays of objects, anything else one object; times RFC 3339 strings
//! ([`json_time`]), durations integer `_ms` fields ([`json_millis`]), absent
//! values `null`, tags and attributes JSON objects ([`json_pairs`]).
//!
//! Everything bound for stdout goes through [`print_stdout`] (or maps its
//! write errors with [`stdout_error`]), never `println!`, which panics when
//! the reader has gone (`mayfly runs | head -1`): a closed stdout becomes
//! [`StdoutClosed`], which `main` turns into a quiet exit 0.

use std::io::Write;

use serde::Serialize;

/// The reader of stdout closed it before everything was written (a pipe to
/// `head`): the command stops quietly, as it would have printed nothing more
/// anyone reads.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed before all output was written")]
pub struct StdoutClosed;

/// Write `text` to stdout and flush it.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(stdout_error)
}

/// An error writing to stdout: `StdoutClosed` for a reader that went away.
pub fn stdout_error(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(error).context("cannot write to stdout")
    }
}

/// Whether an error's causes include a closed pipe (for writers that wrap
/// the io error, like an object streamed to stdout).
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if current.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
            return true;
        }
        cause = current.source();
    }
    false
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    /// Print nothing: a command run by another command (the demo) for its effect.
    pub silent: bool,
}

/// Tell the user on stderr what getting the API's certificate made, if anything.
pub fn announce_certificate(made: &mayfly_host::api_server::CertificateMade) {
    if let Some(notice) = made.notice() {
        eprintln!("{notice}");
    }
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json, silent: false }
    }

    pub fn silent() -> Output {
        Output { json: false, silent: true }
    }

    /// Print `value` as JSON when `--json` was given, or `text()` otherwise.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
        if self.silent {
            return Ok(());
        }
        if self.json {
            print_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?))?;
        } else {
            let text = text();
            if !text.is_empty() {
                print_stdout(&format!("{}\n", text.trim_end_matches('\n')))?;
            }
        }
        Ok(())
    }
}

/// A time as `--json` prints it: RFC 3339 in UTC, to the millisecond.
pub fn json_time(at: mayfly_core::Timestamp) -> String {
    at.to_rfc3339()
}

/// A duration as `--json` prints it: whole milliseconds (in a field named `…_ms`).
pub fn json_millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Name/value pairs (tags, message attributes) as `--json` prints them: one JSON object.
pub fn json_pairs(pairs: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

/// Render rows as an aligned text table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(column) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (column, cell) in cells.iter().enumerate() {
            if column + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let pad = widths[column] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        line.trim_end().to_owned()
    };
    let mut out = render(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&render(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `1.5 KiB`-style rendering for listings.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(&["NAME", "SIZE"], &[vec!["a".into(), "1".into()], vec!["longer".into(), "22".into()]]);
        assert_eq!(text, "NAME    SIZE\na       1\nlonger  22\n");
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
