//! Shared helpers for the CLI tests: a project in a temporary directory and
//! ways to run the real `mayfly` binary in it. With
//! `MAYFLY_TEST_STATE=postgres` every project keeps its state in a fresh
//! database of its own on the test PostgreSQL server (`postgres.rs`), by
//! `MAYFLY_STATE_URL` in every command it runs, which the processes those
//! start (`up`, coordinators, workers) inherit. With
//! `MAYFLY_TEST_STORAGE=s3` every project keeps its objects under a prefix
//! of its own on the test S3 server (`s3.rs`), by `MAYFLY_STORAGE_URL` and
//! the AWS variables, inherited the same way.
#![allow(dead_code)] // each test file uses a different subset

pub mod postgres;
pub mod s3;
pub mod slurm;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// A name no other test of this run uses (project names must differ so that
/// `mayfly ps` and the audit see only their own test's processes).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

pub struct Project {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The project's PostgreSQL database under `MAYFLY_TEST_STATE=postgres`.
    pub database: Option<postgres::TestDatabase>,
    /// The project's prefix in the test S3 bucket under `MAYFLY_TEST_STORAGE=s3`.
    pub storage_prefix: Option<String>,
}

impl Drop for Project {
    fn drop(&mut self) {
        // A project on PostgreSQL must never have fallen back to the embedded store.
        if self.database.is_some() && !std::thread::panicking() {
            assert!(
                !self.root.join(".mayfly/state.db").exists(),
                "a project on PostgreSQL has an embedded state store: some process did not get MAYFLY_STATE_URL"
            );
        }
        // A project on S3 must never have fallen back to the local buckets directory.
        if self.storage_prefix.is_some() && !std::thread::panicking() {
            assert!(
                !self.root.join(".mayfly/buckets").exists(),
                "a project on S3 has a local buckets directory: some process did not get MAYFLY_STORAGE_URL"
            );
        }
    }
}

/// Whether this run keeps every test project's objects on S3 (SeaweedFS).
pub fn storage_on_s3() -> bool {
    std::env::var("MAYFLY_TEST_STORAGE").is_ok_and(|value| value == "s3")
}

/// Whether this run keeps every test project's state on PostgreSQL.
pub fn state_on_postgres() -> bool {
    std::env::var("MAYFLY_TEST_STATE").is_ok_and(|value| value == "postgres")
}

impl Project {
    pub fn with_spec(spec: &str) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("project");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("mayfly.toml"), spec).unwrap();
        let database = state_on_postgres().then(postgres::TestDatabase::create);
        let storage_prefix = storage_on_s3().then(|| format!("cli/{}", unique_name("project")));
        Project { _dir: dir, root, database, storage_prefix }
    }

    pub fn deployed_with(spec: &str) -> Project {
        let project = Project::with_spec(spec);
        project.ok(&["deploy"]);
        project
    }

    /// Start `mayfly up` in the background; it is killed if the test ends without stopping it.
    pub fn spawn_up(&self) -> ControlPlane {
        let child = self
            .command(&["up", "--poll-interval", "10ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mayfly up");
        ControlPlane { child }
    }

    /// Poll `mayfly ARGS --json` until `done` holds, or panic after `timeout`.
    pub fn wait_for(&self, args: &[&str], timeout: std::time::Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let value = self.json(args);
            if done(&value) {
                return value;
            }
            assert!(started.elapsed() < timeout, "gave up waiting on {args:?} after {timeout:?}; last: {value}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mayfly"));
        command.args(args).current_dir(&self.root).env_remove("MAYFLY_PROJECT");
        match &self.database {
            Some(database) => command.env("MAYFLY_STATE_URL", &database.url),
            None => command.env_remove("MAYFLY_STATE_URL"),
        };
        for variable in s3::VARIABLES {
            command.env_remove(variable);
        }
        if let Some(prefix) = &self.storage_prefix {
            command.envs(s3::environment(prefix));
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mayfly")
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mayfly");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run, require exit 0, return stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_success(&output, args);
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let stdout = self.ok(&with_json);
        serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: not JSON ({error}): {stdout}"))
    }

    /// Run, require exit `code`, return stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "mayfly {args:?}: stdout {} stderr {stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(stderr.contains("error"), "errors go to stderr: {stderr}");
        stderr
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

pub fn assert_success(output: &Output, args: &[&str]) {
    assert!(
        output.status.success(),
        "mayfly {args:?} exited {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The directory holding the test handler binaries (`lambda-echo`,
/// `process-echo`), built on first use with `cargo build -p
/// mayfly-test-handlers` into this test binary's own target directory and
/// profile (derived from its path, `<target>/<profile>/deps/<test>`).
pub fn handler_directory() -> &'static std::path::Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_binaries(&["-p", "mayfly-test-handlers"]))
}

/// The path of a binary of a workspace package that is not a dependency of
/// these tests (an example's handler). Built on first use with `cargo build
/// --workspace --bins`, not `-p PACKAGE`: a package built alone gets its
/// dependencies' features unified differently and rebuilds them (minutes for
/// the AWS SDK), while the whole workspace's binaries are what
/// `scripts/test.sh` built before the tests, so this is a no-op there.
pub fn package_binary(binary: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| build_binaries(&["--workspace"])).join(binary)
}

/// `cargo build SELECTION --bins` into this test binary's own target
/// directory and profile; returns the profile's directory.
fn build_binaries(selection: &[&str]) -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_binary.parent().and_then(std::path::Path::parent).expect("<target>/<profile>/deps/<test>");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet"]).args(selection).args(["--bins", "--target-dir"]).arg(target_dir);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build runs");
    assert!(status.success(), "cargo build {selection:?} --bins failed: {status}");
    profile_dir.to_owned()
}

/// The path of a test handler binary.
pub fn handler(name: &str) -> String {
    handler_directory().join(name).display().to_string()
}

/// Where the Docker tests keep what they put into images: the handlers'
/// folder, unless it lies under /tmp (a clone there), which containers
/// replace with a private scratch folder (`mayfly image build` refuses
/// it); then a folder of this target's own under /var/tmp.
pub fn image_files_directory() -> PathBuf {
    let handlers = handler_directory();
    if !handlers.starts_with("/tmp") {
        return handlers.to_owned();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(handlers, &mut hasher);
    let directory = PathBuf::from(format!("/var/tmp/mayfly-tests-{:016x}", std::hash::Hasher::finish(&hasher)));
    std::fs::create_dir_all(&directory).expect("create the image files folder under /var/tmp");
    directory
}

/// A test handler binary where images can include it (see [`image_files_directory`]):
/// copied there when the handlers' folder is not.
pub fn image_handler(name: &str) -> String {
    let source = handler_directory().join(name);
    let target = image_files_directory().join(name);
    let modified = |path: &std::path::Path| std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok();
    // Copied once per build of the handler (so the image's fingerprint stays put), and
    // renamed into place, so a concurrent test never reads half a file.
    if target != source && modified(&target) < modified(&source) {
        let partial = target.with_extension(format!("partial-{}", std::process::id()));
        std::fs::copy(&source, &partial)
            .unwrap_or_else(|error| panic!("copy {} for the image: {error}", source.display()));
        std::fs::rename(&partial, &target).expect("move the copy into place");
    }
    target.display().to_string()
}

/// Make sure Python's `awslambdaric` (the AWS Lambda runtime interface client) is importable.
pub fn ensure_awslambdaric() {
    let importable =
        || Command::new("python3").args(["-c", "import awslambdaric"]).status().is_ok_and(|status| status.success());
    if importable() {
        return;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "awslambdaric"])
        .status()
        .expect("python3 -m pip runs");
    assert!(status.success(), "pip install awslambdaric failed: {status}");
    assert!(importable(), "awslambdaric is installed but cannot be imported");
}

/// A running `mayfly up`. A failing test must not leave it behind: dropping
/// it kills it.
pub struct ControlPlane {
    child: Child,
}

impl ControlPlane {
    /// SIGKILL it, as a crash would.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL mayfly up");
        self.child.wait().expect("reap mayfly up");
    }

    /// SIGTERM it and require a clean, graceful exit; returns what it printed on stderr.
    pub fn stop(mut self) -> String {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for mayfly up");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr).ok();
        }
        assert!(status.success(), "mayfly up exited {status:?} after SIGTERM; stderr:\n{stderr}");
        assert!(stderr.contains("stopped"), "{stderr}");
        stderr
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `mayfly serve` on free loopback ports (the API and the
/// AWS-compatible endpoint); killed when dropped.
pub struct Served {
    pub child: Child,
    /// The API's (and dashboard's) address.
    pub address: std::net::SocketAddr,
    /// The AWS-compatible endpoint's (S3 and SQS) address.
    pub aws_address: std::net::SocketAddr,
    /// What it printed at start, up to and including the AWS endpoint's line.
    pub announcement: Vec<String>,
}

impl Served {
    pub fn start(project: &Project) -> Served {
        Served::start_with_aws_listen(project, "127.0.0.1:0")
    }

    /// As [`Served::start`], with the AWS endpoint on `aws_listen`.
    pub fn start_with_aws_listen(project: &Project, aws_listen: &str) -> Served {
        use std::io::BufRead;
        let mut child = project
            .command(&["serve", "--listen", "127.0.0.1:0", "--aws-listen", aws_listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mayfly serve");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut announcement = Vec::new();
        let address_in = |line: &str| -> std::net::SocketAddr {
            let rest = line.split("(address ").nth(1).unwrap_or_else(|| panic!("no address in {line:?}"));
            rest.split(')').next().unwrap().parse().unwrap()
        };
        let mut address = None;
        let aws_address = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("mayfly serve ended before listening:\n{}", announcement.join("\n")))
                .unwrap();
            announcement.push(line.clone());
            if line.contains("API listening on") {
                address = Some(address_in(&line));
            }
            if line.contains("AWS-compatible endpoint (S3 and SQS) at") {
                break address_in(&line);
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe, into
        // the test's own stderr: a failing test shows what the server said.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("mayfly serve: {line}")));
        let address = address.unwrap_or_else(|| panic!("no API address announced: {announcement:?}"));
        Served { child, address, aws_address, announcement }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tokens create --aws --name NAME` with `extra` arguments: (token id,
/// access key id, secret access key).
pub fn aws_token(project: &Project, name: &str, extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["tokens", "create", "--aws", "--name", name];
    args.extend_from_slice(extra);
    let created = project.json(&args);
    let field = |name: &str| created[name].as_str().unwrap_or_else(|| panic!("{name} in {created}")).to_owned();
    (field("id"), field("aws_access_key_id"), field("aws_secret_access_key"))
}

/// `python3` with nothing but the standard `AWS_*` variables pointing an
/// unmodified AWS SDK at `served`'s AWS-compatible endpoint with this key.
pub fn aws_python(project: &Project, served: &Served, key: &str, secret: &str) -> Command {
    let found = Command::new("python3").args(["-c", "import boto3"]).status().map(|status| status.success());
    assert!(found.unwrap_or(false), "boto3 is missing: `python3 -m pip install boto3` (scripts/test.sh installs it)");
    let mut command = Command::new("python3");
    command
        .env("AWS_ENDPOINT_URL", format!("https://localhost:{}", served.aws_address.port()))
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        // Lambda sets both; botocore reads only this one, and SQS (unlike S3)
        // has no region-less default.
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CA_BUNDLE", project.path(".mayfly/tls/cert.pem"))
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    command
}

/// The AWS CLI (`aws`, from PyPI) with nothing but the standard `AWS_*`
/// variables pointing it at `served`'s AWS-compatible endpoint with this key.
pub fn aws_cli(project: &Project, served: &Served, key: &str, secret: &str) -> Command {
    let found = Command::new("aws").arg("--version").output().map(|output| output.status.success());
    assert!(
        found.unwrap_or(false),
        "the AWS CLI is missing: `python3 -m pip install awscli` (scripts/test.sh installs it)"
    );
    let python = aws_python(project, served, key, secret);
    let mut command = Command::new("aws");
    for (name, value) in python.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.current_dir(&project.root);
    command
}

/// The files under `folder` (recursively) whose bytes hold `marker`, and how
/// many files were looked at.
pub fn files_holding(folder: &std::path::Path, marker: &[u8]) -> (Vec<String>, usize) {
    fn every_file(folder: &std::path::Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { every_file(&path, files) } else { files.push(path) }
        }
    }
    let mut files = Vec::new();
    every_file(folder, &mut files);
    let found = files
        .iter()
        .filter(|file| {
            // A FIFO or socket left by a live process has no bytes at rest.
            std::fs::metadata(file).is_ok_and(|metadata| metadata.is_file())
                && std::fs::read(file).is_ok_and(|bytes| bytes.windows(marker.len()).any(|window| window == marker))
        })
        .map(|file| file.display().to_string())
        .collect();
    (found, files.len())
}

/// Builds the image `tag` with `mayfly image build` (one test process at a
/// time): Debian's Python and standard library, a folder with
/// `awslambdaric` and boto3 (with their dependencies) copied from the Python
/// that has them, and `extra` files at their paths. Returns the image's
/// interpreter and its packages folder.
pub fn ensure_boto3_image(project: &Project, tag: &str, extra: &[&str]) -> (String, String) {
    ensure_awslambdaric();
    let found = Command::new("python3").args(["-c", "import boto3"]).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "boto3 is missing: `python3 -m pip install boto3` (scripts/test.sh installs it)"
    );
    let run = |command: &mut Command| -> String {
        let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let interpreter = std::fs::canonicalize("/usr/bin/python3").expect("Debian's python3").display().to_string();
    let ask = |python: &str, code: &str| run(Command::new(python).args(["-c", code]));
    let standard_library = ask(&interpreter, "import sysconfig; print(sysconfig.get_paths()['stdlib'])");
    let versions = [&interpreter, "python3"].map(|python| ask(python, "import sys; print(sys.version_info[:2])"));
    assert_eq!(versions[0], versions[1], "awslambdaric's compiled part must match Debian's Python version");
    // One lock for every such image: they share the packages folder.
    let lock = std::fs::File::create(handler_directory().join("mayfly-test-boto3-image.lock")).unwrap();
    // SAFETY: flock(2) on a file descriptor this function owns; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    let packages = image_files_directory().join("container-python-boto3");
    if !packages.join("boto3").exists() {
        let site = ask("python3", "import boto3, os; print(os.path.dirname(os.path.dirname(boto3.__file__)))");
        let partial = packages.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).unwrap();
        let wanted = |name: &str| {
            ["awslambdaric", "simplejson", "snapshot_restore_py.py", "boto3", "botocore", "s3transfer", "jmespath"]
                .contains(&name)
                || ["dateutil", "six.py", "urllib3", "runtime_client"].iter().any(|prefix| name.starts_with(prefix))
        };
        let mut copy = Command::new("cp");
        copy.arg("-a");
        for entry in std::fs::read_dir(&site).unwrap() {
            let path = entry.unwrap().path();
            if wanted(&path.file_name().unwrap().to_string_lossy()) {
                copy.arg(&path);
            }
        }
        run(copy.arg(&partial));
        std::fs::rename(&partial, &packages).unwrap();
    }
    let packages = packages.display().to_string();
    let mut args = vec!["image", "build", "--tag", tag, "--include", interpreter.as_str()];
    args.extend(["--include", standard_library.as_str(), "--include", packages.as_str()]);
    for file in extra {
        args.extend(["--include", file]);
    }
    project.ok(&args);
    drop(lock);
    (interpreter, packages)
}
