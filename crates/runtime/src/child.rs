//! One instance's process: spawned in its own process group (optionally
//! inside a memory cgroup or under `RLIMIT_AS`), watched for its exit through
//! a pidfd, killed as a whole group, and reaped with `wait4` so its exit
//! status and maximum resident set are known.
//!
//! Mayfly reaps its children itself instead of through `tokio::process`,
//! because only `wait4` reports the child's own `ru_maxrss`, and because the
//! group must be killed while the leader is still a zombie (its pid, and so
//! the group id, cannot be reused until it is reaped).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::error::SpawnError;

/// How to start an instance.
pub(crate) struct SpawnRequest<'a> {
    pub command: &'a [String],
    pub working_dir: &'a Path,
    pub environment: BTreeMap<String, String>,
    /// The child writes itself into this `cgroup.procs` before exec.
    pub cgroup_procs: Option<&'a CString>,
    /// `RLIMIT_AS` in bytes.
    pub address_space_limit: Option<u64>,
    pub with_stdin: bool,
    /// SIGKILL the child if the spawning thread dies (for long-lived
    /// instances, so that a killed Mayfly leaves none behind). Linux ties this
    /// to the *thread* that spawned: spawn from runtime worker threads, which
    /// live as long as the runtime, not from short-lived blocking threads.
    pub die_with_parent: bool,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildExit {
    pub status: ExitStatus,
    /// The process's maximum resident set, in bytes.
    pub max_resident_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit status {code}"),
            ExitStatus::Signal(signal) => write!(f, "killed by signal {signal} ({})", signal_name(*signal)),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGHUP => "SIGHUP",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

/// A running (or exited, not yet reaped) instance process.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    pid: libc::pid_t,
    exit_watch: AsyncFd<OwnedFd>,
    exit: Option<ChildExit>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl ChildProcess {
    pub(crate) fn spawn(request: SpawnRequest<'_>) -> Result<ChildProcess, SpawnError> {
        let (program, arguments) = request.command.split_first().ok_or(SpawnError::EmptyCommand)?;
        let program_path = resolve_program(program, request.working_dir);
        let mut command = std::process::Command::new(&program_path);
        command
            .args(arguments)
            .current_dir(request.working_dir)
            .env_clear()
            .envs(&request.environment)
            .stdin(if request.with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let cgroup_procs = request.cgroup_procs.cloned();
        let address_space_limit = request.address_space_limit;
        let die_with_parent = request.die_with_parent;
        if cgroup_procs.is_some() || address_space_limit.is_some() || die_with_parent {
            // SAFETY: the closure runs in the forked child before exec and only
            // makes async-signal-safe system calls (prctl, open, write, close,
            // setrlimit) on values prepared before the fork; it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if let Some(procs) = &cgroup_procs {
                        join_cgroup(procs)?;
                    }
                    if let Some(limit) = address_space_limit {
                        let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                        if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let spawn_error = |source| SpawnError::Spawn {
            program: program.clone(),
            working_dir: request.working_dir.to_owned(),
            source,
        };
        let mut child = command.spawn().map_err(spawn_error)?;
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
        let exit_watch = match open_exit_watch(pid) {
            Ok(watch) => watch,
            Err(source) => {
                // SAFETY: kill(2) of the group we just created; the leader is not reaped yet.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.wait();
                return Err(SpawnError::ExitWatch { pid, source });
            }
        };
        let stdin = child.stdin.take().map(|stdin| pipe::Sender::from_owned_fd(OwnedFd::from(stdin)));
        let stdout = child.stdout.take().map(|stdout| pipe::Receiver::from_owned_fd(OwnedFd::from(stdout)));
        let stderr = child.stderr.take().map(|stderr| pipe::Receiver::from_owned_fd(OwnedFd::from(stderr)));
        // From here on the process is reaped by `wait4` in this type, never by `child`.
        drop(child);
        let mut process = ChildProcess { pid, exit_watch, exit: None, stdin: None, stdout: None, stderr: None };
        let pipe_error = |source| SpawnError::Spawn {
            program: program.clone(),
            working_dir: request.working_dir.to_owned(),
            source,
        };
        process.stdin = stdin.transpose().map_err(pipe_error)?;
        process.stdout = stdout.transpose().map_err(pipe_error)?;
        process.stderr = stderr.transpose().map_err(pipe_error)?;
        Ok(process)
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves when the process has exited (it stays a zombie until [`reap`](Self::reap)).
    pub(crate) async fn exited(&self) {
        if self.exit.is_some() {
            return;
        }
        match self.exit_watch.readable().await {
            // A pidfd stays readable once the process exited; the readiness is kept.
            Ok(_guard) => {}
            Err(error) => {
                tracing::warn!(pid = self.pid, error = %error, "cannot poll the pidfd; polling the process");
                while process_is_running(self.pid) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// SIGKILLs the whole process group. Safe to call while the leader is
    /// running or a zombie; a no-op once it has been reaped.
    pub(crate) fn kill_group(&self) {
        if self.exit.is_none() {
            // SAFETY: kill(2) of our child's process group; the leader is not
            // reaped yet, so the group id still names that group.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        }
    }

    /// Waits for the exit, kills what is left of the group and reaps the leader.
    pub(crate) async fn kill_group_and_reap(&mut self) -> ChildExit {
        self.kill_group();
        self.exited().await;
        self.reap_exited()
    }

    /// Waits for the leader's exit, kills the rest of its group, reaps it.
    pub(crate) async fn wait(&mut self) -> ChildExit {
        self.exited().await;
        self.kill_group();
        self.reap_exited()
    }

    /// Reaps a process known to have exited.
    fn reap_exited(&mut self) -> ChildExit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let exit = wait4_blocking(self.pid);
        self.exit = Some(exit);
        exit
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        self.kill_group();
        // The group is dying; reap the leader off this thread so no zombie stays.
        let pid = self.pid;
        let reaper = std::thread::Builder::new().name("mayfly-reap".into()).spawn(move || wait4_blocking(pid));
        if let Err(error) = reaper {
            tracing::warn!(pid, error = %error, "cannot start a thread to reap a killed instance");
        }
    }
}

fn wait4_blocking(pid: libc::pid_t) -> ChildExit {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        if reaped == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // ECHILD: someone else reaped it; nothing more can be known.
        return ChildExit { status: ExitStatus::Signal(libc::SIGKILL), max_resident_bytes: 0 };
    }
    let status = if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    };
    let max_resident_bytes = u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024;
    ChildExit { status, max_resident_bytes }
}

fn process_is_running(pid: libc::pid_t) -> bool {
    // SAFETY: waitid with WNOWAIT only inspects the child's state.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, valid out-pointer; the child is not reaped.
    let result = unsafe {
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    };
    // SAFETY: si_pid is valid to read after a successful waitid.
    result == 0 && unsafe { info.si_pid() } == 0
}

fn open_exit_watch(pid: libc::pid_t) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned by pidfd_open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns `fd` (an OwnedFd, whose descriptor stays open
    // and unchanged until the AsyncFd drops it).
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|error| error.into_parts().1)
}

/// Writes `0` (the writing process) into a `cgroup.procs` file. Runs between
/// fork and exec: system calls only, no allocation.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor opened above.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let write_error = std::io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    if written != 1 {
        return Err(write_error);
    }
    Ok(())
}

/// A relative program path with a `/` is relative to the working directory.
fn resolve_program(program: &str, working_dir: &Path) -> PathBuf {
    let path = Path::new(program);
    if path.is_relative() && program.contains('/') { working_dir.join(path) } else { path.to_owned() }
}
