//! The behaviours shared by the test handlers: one event shape selects what a
//! handler does (echo, sleep, allocate, exit, fail, crash, …), so the process
//! and lambda runtimes are exercised with the same cases.
//!
//! An event is a JSON object; its `mode` field picks the behaviour and the
//! other fields parametrise it. Anything without a known `mode` is echoed.
//! The same switch can come from the `MAYFLY_TEST_MODE` environment variable
//! (with the event's fields as parameters), for functions whose every
//! invocation should behave the same way. A numeric parameter the event does
//! not carry falls back to the variable `MAYFLY_TEST_<FIELD>` (`MAYFLY_TEST_MS`
//! for `ms`), so a function can be configured wholly by `env = {...}` in
//! `mayfly.toml` — a batch job's item event has no top-level `ms`.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

/// What the event (or `MAYFLY_TEST_MODE`) asks the handler to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Return the event unchanged.
    Echo,
    /// Sleep `ms` milliseconds, then return the event.
    Sleep { ms: u64 },
    /// Busy-loop until this thread has used `ms` milliseconds of CPU time
    /// (not wall time, so the work is the same however busy the machine is),
    /// then return the event.
    Spin { ms: u64 },
    /// Spawn a child `sleep 1000` in the same process group, log its pid as
    /// `child-pid=N`, then sleep `ms` milliseconds.
    SpawnChildAndSleep { ms: u64 },
    /// Allocate and touch `mb` MiB, then return `{"allocated_mb": mb}`.
    Allocate { mb: u64 },
    /// Exit the process with `code` in the middle of the invocation.
    Exit { code: i32 },
    /// Return a handled error with `message`.
    Error { message: String },
    /// Print something that is not JSON as the result (process runtime).
    InvalidJson,
    /// Kill the process with SIGABRT in the middle of the invocation.
    Crash,
    /// Return `{"pid": N, "env": {...}}`: the process id and the whole environment.
    Environment,
    /// Return a JSON string of `bytes` bytes.
    Large { bytes: u64 },
    /// Record this invocation in `dir` while it sleeps `ms` ms and return
    /// `{"concurrent": N}`, the most invocations seen in `dir` at once.
    Probe { dir: String, ms: u64 },
}

impl Mode {
    /// Reads the mode from the event, or from `MAYFLY_TEST_MODE` when the event names none.
    pub fn from_event(event: &Value) -> Mode {
        let mode = event
            .get("mode")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| std::env::var("MAYFLY_TEST_MODE").ok())
            .unwrap_or_default();
        let number = |field: &str, default: u64| {
            event
                .get(field)
                .and_then(Value::as_u64)
                .or_else(|| {
                    std::env::var(format!("MAYFLY_TEST_{}", field.to_ascii_uppercase())).ok()?.trim().parse().ok()
                })
                .unwrap_or(default)
        };
        match mode.as_str() {
            "sleep" => Mode::Sleep { ms: number("ms", 1000) },
            "spin" => Mode::Spin { ms: number("ms", 10) },
            "spawn_child_and_sleep" => Mode::SpawnChildAndSleep { ms: number("ms", 60_000) },
            "allocate" => Mode::Allocate { mb: number("mb", 64) },
            "exit" => Mode::Exit { code: i32::try_from(number("code", 3)).unwrap_or(3) },
            "error" => Mode::Error {
                message: event.get("message").and_then(Value::as_str).unwrap_or("requested failure").to_owned(),
            },
            "invalid_json" => Mode::InvalidJson,
            "crash" => Mode::Crash,
            "env" => Mode::Environment,
            "large" => Mode::Large { bytes: number("bytes", 1024) },
            "probe" => Mode::Probe {
                dir: event.get("dir").and_then(Value::as_str).unwrap_or("/tmp").to_owned(),
                ms: number("ms", 200),
            },
            _ => Mode::Echo,
        }
    }
}

/// Logs the event's `log` field, if any, as one line on `log`.
pub fn log_requested_line(event: &Value, log: &mut dyn Write) {
    if let Some(line) = event.get("log").and_then(Value::as_str) {
        let _ = writeln!(log, "{line}");
        let _ = log.flush();
    }
}

/// The outcome of the modes that every runtime handles the same way.
pub enum Behaviour {
    /// Respond with this value.
    Respond(Value),
    /// Fail with this message.
    Fail(String),
    /// Print invalid JSON (the caller decides how).
    PrintInvalidJson,
}

/// Runs `mode` synchronously (the handlers are one invocation at a time).
/// Exits, crashes and allocations happen here; `log` receives diagnostics.
pub fn run_mode(mode: &Mode, event: &Value, log: &mut dyn Write) -> Behaviour {
    match mode {
        Mode::Echo => Behaviour::Respond(event.clone()),
        Mode::Sleep { ms } => {
            std::thread::sleep(Duration::from_millis(*ms));
            Behaviour::Respond(event.clone())
        }
        Mode::Spin { ms } => {
            spin(Duration::from_millis(*ms));
            Behaviour::Respond(event.clone())
        }
        Mode::SpawnChildAndSleep { ms } => {
            match std::process::Command::new("sleep").arg("1000").spawn() {
                Ok(child) => {
                    let _ = writeln!(log, "child-pid={}", child.id());
                    let _ = log.flush();
                }
                Err(error) => return Behaviour::Fail(format!("cannot spawn the child sleeper: {error}")),
            }
            std::thread::sleep(Duration::from_millis(*ms));
            Behaviour::Respond(event.clone())
        }
        Mode::Allocate { mb } => {
            let bytes = usize::try_from(*mb).unwrap_or(usize::MAX / 2 / (1 << 20)) << 20;
            let mut block = Vec::<u8>::with_capacity(bytes);
            // Touch every page so the memory is really charged.
            for _ in 0..bytes / 4096 {
                block.extend(std::iter::repeat_n(1u8, 4096));
            }
            let _ = writeln!(log, "allocated {mb} MiB");
            let touched = block.iter().step_by(4096).map(|byte| u64::from(*byte)).sum::<u64>();
            Behaviour::Respond(serde_json::json!({ "allocated_mb": mb, "pages": touched }))
        }
        Mode::Exit { code } => {
            let _ = writeln!(log, "exiting with {code}");
            let _ = log.flush();
            std::process::exit(*code)
        }
        Mode::Error { message } => Behaviour::Fail(message.clone()),
        Mode::InvalidJson => Behaviour::PrintInvalidJson,
        Mode::Crash => {
            let _ = writeln!(log, "crashing");
            let _ = log.flush();
            std::process::abort()
        }
        Mode::Environment => {
            let environment: serde_json::Map<String, Value> =
                std::env::vars().map(|(name, value)| (name, Value::String(value))).collect();
            Behaviour::Respond(serde_json::json!({ "pid": std::process::id(), "env": environment }))
        }
        Mode::Large { bytes } => Behaviour::Respond(Value::String("x".repeat(usize::try_from(*bytes).unwrap_or(1024)))),
        Mode::Probe { dir, ms } => Behaviour::Respond(serde_json::json!({ "concurrent": probe(dir, *ms) })),
    }
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// Burns `cpu` of this thread's CPU time in a loop of integer work.
fn spin(cpu: Duration) {
    let until = thread_cpu_time() + cpu;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while thread_cpu_time() < until {
        for _ in 0..1_000 {
            // xorshift: work the optimiser cannot remove (the result is observed below).
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
        }
        std::hint::black_box(state);
    }
}

/// Marks this process in `dir` for `ms` milliseconds and returns how many
/// marks it saw at once (its own included). Of several invocations running
/// together, the last to mark itself sees them all.
fn probe(dir: &str, ms: u64) -> usize {
    let mark = std::path::Path::new(dir).join(format!("running-{}", std::process::id()));
    let _ = std::fs::write(&mark, b"");
    let count = || std::fs::read_dir(dir).map(|entries| entries.count()).unwrap_or(0);
    let mut most = count();
    let deadline = std::time::Instant::now() + Duration::from_millis(ms);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        most = most.max(count());
    }
    let _ = std::fs::remove_file(&mark);
    most
}
