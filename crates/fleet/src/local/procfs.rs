//! Reading the process table from `/proc`: each process's state, group, start
//! time and exit status (`/proc/PID/stat`) and initial environment
//! (`/proc/PID/environ`, readable as root or as the process's user).

use std::io::ErrorKind;

/// The fields of `/proc/PID/stat` the local provisioner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessStat {
    pub pid: i32,
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: u8,
    /// Field 5.
    pub pgid: i32,
    /// Field 22: clock ticks after boot.
    pub start_ticks: u64,
    /// Field 52: the status `waitpid` would report, once the process has
    /// exited (only meaningful for a zombie).
    pub exit_status: Option<i32>,
}

impl ProcessStat {
    /// Exited (a zombie not yet reaped, or being torn down).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(pid: i32, text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 of the file.
    let field = |number: usize| fields.get(number - 3).copied();
    Some(ProcessStat {
        pid,
        state: *field(3)?.as_bytes().first()?,
        pgid: field(5)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        exit_status: field(52).and_then(|status| status.parse().ok()),
    })
}

/// The stat of `pid`, or `None` if no such process exists (any more).
pub(crate) fn read_stat(pid: i32) -> Option<ProcessStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// The stat of every process; processes that exit while being read are skipped.
pub(crate) fn all_stats() -> std::io::Result<Vec<ProcessStat>> {
    Ok(all_pids()?.into_iter().filter_map(read_stat).collect())
}

fn all_pids() -> std::io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        if let Some(pid) = entry?.file_name().to_str().and_then(|name| name.parse().ok()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The value of `variable` in the environment `pid` was started with, if the
/// process exists, is readable and has it.
pub(crate) fn read_environment_variable(pid: i32, variable: &str) -> Option<String> {
    let environ = match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => environ,
        Err(error) if error.kind() == ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::trace!(pid, %error, "cannot read the environment of a process");
            return None;
        }
    };
    let prefix = format!("{variable}=");
    environ
        .split(|byte| *byte == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// The wall-clock time of a start time in clock ticks after boot.
pub(crate) fn start_time_millis(start_ticks: u64) -> Option<i64> {
    let boot_seconds: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    let millis_after_boot = i64::try_from(start_ticks).ok()?.checked_mul(1000)? / ticks_per_second;
    boot_seconds.checked_mul(1000)?.checked_add(millis_after_boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 256\n";
        let stat = parse_stat(4242, text).unwrap();
        assert_eq!(
            stat,
            ProcessStat { pid: 4242, state: b'S', pgid: 4242, start_ticks: 987_654, exit_status: Some(256) }
        );
    }

    #[test]
    fn this_process_is_found_with_its_own_start_time() {
        let pid = std::process::id() as i32;
        let stat = read_stat(pid).unwrap();
        assert!(!stat.is_dead());
        assert!(stat.start_ticks > 0);
        // The state letter (running, sleeping) may change between two reads; the identity may not.
        assert!(
            all_stats().unwrap().iter().any(|other| other.pid == stat.pid && other.start_ticks == stat.start_ticks)
        );
    }
}
