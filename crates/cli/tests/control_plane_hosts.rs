//! The control plane on several hosts, through the real binary: two `mayfly
//! up` processes share one project's state on PostgreSQL and its objects on
//! S3 (two project directories with the same `mayfly.toml` and the same
//! keyring file, as two hosts would have). One leads — routing bucket
//! events, firing schedules — and both run queue triggers; the leader is
//! SIGKILLed while objects flow, the standby takes over within the lease's
//! TTL and a few seconds, every object is processed, and the schedule never
//! fires one period twice. A leader paused (SIGSTOP) in the middle of its
//! writes, past its lease, writes nothing when it resumes (SIGCONT) after
//! the standby took over: its writes are fenced by its term, it says it lost
//! the lease and stands by. On the embedded store, one project directory
//! still has one control plane (its lock refuses a second), and a control
//! plane restarted after a crash leads at once. A host whose keyring is not
//! the project's refuses to start and changes nothing.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Project;
use support::postgres::TestDatabase;

const WAIT: Duration = Duration::from_secs(90);
/// The lease the tests run under: short, so a takeover is quick.
const LEASE_TTL: Duration = Duration::from_secs(3);
const LEASE_ARGS: &[&str] = &["--lease-ttl", "3s", "--lease-renew-every", "1s"];
/// The schedule's period.
const TICK_EVERY: Duration = Duration::from_secs(2);

fn spec(name: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"

[buckets.inbox]

[queues.work]
visibility_timeout = "5s"

[functions.mark]
command = ["python3", "functions/mark.py"]

[functions.tick]
command = ["python3", "functions/tick.py"]

[[routes]]
from = {{ bucket = "inbox" }}
to = {{ queue = "work" }}

[[triggers]]
queue = "work"
function = "mark"
batch_size = 5
batch_window = "100ms"

[[triggers]]
schedule = "rate(2 seconds)"
function = "tick"
"#
    )
}

/// Each function appends what it saw to a file in its host's project directory.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "mark.py",
        r#"import json, os, sys
event = json.load(sys.stdin)
with open(os.path.join(os.environ["MAYFLY_PROJECT"], "marks.log"), "a") as marks:
    for record in event["Records"]:
        for s3 in json.loads(record["body"])["Records"]:
            marks.write(s3["s3"]["object"]["key"] + "\n")
json.dump({}, sys.stdout)
"#,
    ),
    (
        "tick.py",
        r#"import json, os, sys, time
event = json.load(sys.stdin)
with open(os.path.join(os.environ["MAYFLY_PROJECT"], "ticks.log"), "a") as ticks:
    ticks.write("%s %f\n" % (event["id"], time.time()))
json.dump({}, sys.stdout)
"#,
    ),
];

/// One host's copy of the project: the same spec, functions and keyring.
fn host_directory(spec: &str) -> Project {
    let project = Project::with_spec(spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    for (file, source) in FUNCTIONS {
        std::fs::write(project.path("functions").join(file), source).unwrap();
    }
    project
}

/// A running `mayfly up` whose stderr goes to a file; killed if dropped running.
struct Host {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Host {
    fn start(mut command: Command, stderr: std::path::PathBuf) -> Host {
        let file = File::create(&stderr).unwrap();
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file).spawn().expect("spawn mayfly up");
        Host { child, stderr }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait until it printed `text`; returns how long that took.
    fn wait_for_line(&mut self, text: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.said().contains(text) {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mayfly up exited {status:?} before saying {text:?}:\n{}", self.said());
            }
            assert!(started.elapsed() < timeout, "mayfly up did not say {text:?} in {timeout:?}:\n{}", self.said());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0, "kill({signal})");
    }

    fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL mayfly up");
        self.child.wait().expect("reap mayfly up");
    }

    /// SIGTERM it and require a clean exit.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for mayfly up");
        let said = self.said();
        assert!(status.success(), "mayfly up exited {status:?} after SIGTERM:\n{said}");
        assert!(said.contains("control plane stopped"), "{said}");
        said
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Two hosts' project directories sharing one PostgreSQL database and one S3 prefix, deployed.
struct TwoHosts {
    database: TestDatabase,
    first: Project,
    second: Project,
}

impl TwoHosts {
    fn deployed(name: &str) -> TwoHosts {
        let database = TestDatabase::create();
        let prefix = format!("hosts/{}", support::unique_name("project"));
        let spec = spec(&support::unique_name(name));
        let mut first = host_directory(&spec);
        let mut second = host_directory(&spec);
        for project in [&mut first, &mut second] {
            project.database = None;
            project.storage_prefix = Some(prefix.clone());
        }
        let hosts = TwoHosts { database, first, second };
        hosts.run(&hosts.first, &["deploy"]);
        // The second host gets the same keyring file (as an operator copies it).
        std::fs::create_dir_all(hosts.second.path(".mayfly")).unwrap();
        std::fs::copy(hosts.first.path(".mayfly/keyring.json"), hosts.second.path(".mayfly/keyring.json")).unwrap();
        std::fs::write(hosts.second.path("chart.txt"), "a chart\n").unwrap();
        hosts
    }

    fn command(&self, project: &Project, args: &[&str]) -> Command {
        let mut command = project.command(args);
        command.env("MAYFLY_STATE_URL", &self.database.url);
        command
    }

    fn run(&self, project: &Project, args: &[&str]) {
        let output = self.command(project, args).output().expect("run mayfly");
        support::assert_success(&output, args);
    }

    /// `mayfly up` on `project`'s host, its stderr in `name` beside the project.
    fn up(&self, project: &Project, name: &str) -> Host {
        let mut args = vec!["up", "--poll-interval", "20ms"];
        args.extend_from_slice(LEASE_ARGS);
        Host::start(self.command(project, &args), project.root.parent().unwrap().join(name))
    }

    /// Put `key` into the inbox bucket (from the second host's directory).
    fn put(&self, key: &str) {
        self.run(&self.second, &["put", &format!("inbox/{key}"), "chart.txt"]);
    }

    /// Wait until every one of `keys` was processed on one host or the other; returns every mark.
    fn wait_for_marks(&self, keys: &[String]) -> Vec<String> {
        let started = Instant::now();
        loop {
            let mut marks = lines_of(&self.first.path("marks.log"));
            marks.extend(lines_of(&self.second.path("marks.log")));
            let distinct: BTreeSet<&String> = marks.iter().collect();
            if distinct.len() == keys.len() {
                assert_eq!(distinct, keys.iter().collect::<BTreeSet<_>>());
                return marks;
            }
            assert!(started.elapsed() < WAIT, "{} of {} objects processed: {marks:?}", distinct.len(), keys.len());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every schedule firing (its id) with the runs of it, as (host, wall-clock seconds).
    fn ticks(&self) -> BTreeMap<String, Vec<(&'static str, f64)>> {
        let mut ticks: BTreeMap<String, Vec<(&str, f64)>> = BTreeMap::new();
        // The async invokers of both hosts run the firings, so either may have.
        for (host, project) in [("first", &self.first), ("second", &self.second)] {
            for line in lines_of(&project.path("ticks.log")) {
                let (id, at) = line.split_once(' ').expect("`id time` lines");
                ticks.entry(id.to_owned()).or_default().push((host, at.parse().unwrap()));
            }
        }
        ticks
    }
}

/// The due time (ms since the epoch) of a firing, from its id `FUNCTION-MILLIS`.
fn due_of(id: &str) -> i64 {
    id.rsplit_once('-').expect("id FUNCTION-MILLIS").1.parse().unwrap()
}

fn wall_clock_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn the_standby_takes_over_when_the_leader_is_killed_and_nothing_is_lost_or_fired_twice() {
    let hosts = TwoHosts::deployed("hosts");
    let (first, second) = (&hosts.first, &hosts.second);
    let mut leader = hosts.up(first, "first-up.log");
    leader.wait_for_line("leader (term 1)", WAIT);
    let mut standby = hosts.up(second, "second-up.log");
    standby.wait_for_line("standby:", WAIT);
    assert!(standby.said().contains("leads (term 1)"), "{}", standby.said());

    // Objects flow while both run; then the leader is killed mid-flow.
    let keys: Vec<String> = (0..40).map(|number| format!("charts/{number:03}.txt")).collect();
    for key in &keys[..20] {
        hosts.put(key);
    }
    // Killed once it has fired the schedule (20 puts may take less than a period).
    let started = Instant::now();
    while hosts.ticks().is_empty() {
        assert!(started.elapsed() < WAIT, "the first leader never fired the schedule");
        std::thread::sleep(Duration::from_millis(100));
    }
    leader.sigkill();
    let killed_at = Instant::now();
    let killed_at_wall = wall_clock_seconds();
    // The rest are put while the standby takes over (timed from the kill).
    let takeover = std::thread::scope(|scope| {
        scope.spawn(|| {
            for key in &keys[20..] {
                hosts.put(key);
            }
        });
        standby.wait_for_line("leader (term 2)", WAIT);
        killed_at.elapsed()
    });
    eprintln!("takeover {takeover:?} after the leader was killed (lease TTL {LEASE_TTL:?}, renewed every 1s)");
    assert!(takeover < LEASE_TTL + Duration::from_secs(6), "the standby took {takeover:?} to take over");

    // Every object is processed at least once, on one host or the other.
    let marks = hosts.wait_for_marks(&keys);
    let duplicates = marks.len() - keys.len();
    eprintln!("{} objects processed, {duplicates} duplicate(s)", keys.len());
    assert!(duplicates <= 20, "duplicates are bounded by what was in flight when the leader died: {duplicates}");

    // The new leader keeps the schedule going for a few periods, then stops and gives the lease up.
    std::thread::sleep(TICK_EVERY * 3);
    let said = standby.stop();
    assert!(said.contains("leader (term 2)"), "{said}");
    let row = hosts.database.client().query_one("SELECT holder, term, expires_at FROM leases", &[]).unwrap();
    let (term, expires_at): (i64, i64) = (row.get(1), row.get(2));
    assert_eq!((term, expires_at), (2, 0), "a graceful stop releases the lease (holder {})", row.get::<_, String>(0));
    let ps = hosts.command(second, &["ps"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains("control plane leader: none"), "{ps}");

    // No period fired twice: each firing (one scheduled message, one id) ran
    // once, except one the killed leader was running when it died, which is
    // delivered again.
    let ticks = hosts.ticks();
    eprintln!("schedule firings (id: runs by host and time): {ticks:?}");
    for (id, runs) in &ticks {
        let redelivered =
            runs.len() == 2 && runs.iter().any(|(host, at)| *host == "first" && (killed_at_wall - at).abs() < 2.0);
        assert!(runs.len() == 1 || redelivered, "firing {id} ran more than once: {runs:?}");
    }
    let dues: Vec<i64> = ticks.keys().map(|id| due_of(id)).collect();
    let killed_at_millis = (killed_at_wall * 1000.0) as i64;
    assert!(dues.iter().any(|due| *due < killed_at_millis), "the first leader fired the schedule: {dues:?}");
    assert!(
        dues.iter().filter(|due| **due > killed_at_millis).count() >= 2,
        "the new leader fired the schedule: {dues:?}"
    );
    for pair in dues.windows(2) {
        assert!(
            pair[1] - pair[0] >= TICK_EVERY.as_millis() as i64,
            "two firings less than a period apart: {pair:?} of {dues:?}"
        );
    }
    for project in [first, second] {
        assert!(!project.path(".mayfly/state.db").exists(), "no host fell back to an embedded state store");
    }
}

/// The SQL of a send of messages (the router's and the scheduler's writes begin with it).
const SEND_SQL: &str = "INSERT INTO messages (message_id";

/// How many connections to `database` wait for a lock in a send of messages.
fn sends_waiting_for_a_lock(database: &TestDatabase) -> i64 {
    let row = database
        .client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' AND starts_with(query, $1)",
            &[&SEND_SQL],
        )
        .unwrap();
    row.get(0)
}

/// What every other connection to `database` is doing, for a failure message.
fn activity(database: &TestDatabase) -> Vec<String> {
    database
        .client()
        .query(
            "SELECT coalesce(wait_event_type, '-') || ' ' || state || ': ' || left(query, 120) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[test]
fn a_leader_paused_in_the_middle_of_its_writes_past_its_lease_writes_nothing_when_it_resumes() {
    let hosts = TwoHosts::deployed("fence");
    let (first, second) = (&hosts.first, &hosts.second);
    let mut leader = hosts.up(first, "first-up.log");
    leader.wait_for_line("leader (term 1)", WAIT);
    let mut standby = hosts.up(second, "second-up.log");
    standby.wait_for_line("standby:", WAIT);
    let keys: Vec<String> = (0..30).map(|number| format!("charts/{number:03}.txt")).collect();
    for key in &keys[..10] {
        hosts.put(key);
    }

    // Catch the leader in the middle of its writes: while every queue's row
    // is locked `FOR UPDATE`, its router (routing the next object) and its
    // scheduler (at the next period) wait in their sends — a new message's
    // foreign key takes `FOR KEY SHARE` on its queue's row. (Not the messages
    // table itself: a receive's lease is an `UPDATE` of it, so every queue
    // poller would wait too and take the pool's connections.) Stopped there, past its lease,
    // it resumes later with a page routed and a period fired in hand — which
    // the new leader has routed and fired meanwhile. (A pause that lands
    // between two passes would show nothing: the next pass reads afresh.)
    let mut lock = hosts.database.client();
    let mut locked = lock.transaction().unwrap();
    locked.batch_execute("SELECT queue_id FROM queues FOR UPDATE").unwrap();
    let locked_at_millis = (wall_clock_seconds() * 1000.0) as i64;
    hosts.put(&keys[10]);
    let started = Instant::now();
    while sends_waiting_for_a_lock(&hosts.database) < 2 {
        assert!(
            started.elapsed() < WAIT,
            "the leader's router and scheduler never reached their sends: {:#?}",
            activity(&hosts.database)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    leader.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    locked.commit().unwrap();

    // The standby takes over, routes what comes and fires the schedule.
    standby.wait_for_line("leader (term 2)", WAIT);
    eprintln!("takeover {:?} after the leader was stopped", stopped_at.elapsed());
    for key in &keys[11..25] {
        hosts.put(key);
    }
    std::thread::sleep(TICK_EVERY * 2);

    // Resumed, the old leader's writes under term 1 are refused: it says so and stands by.
    leader.signal(libc::SIGCONT);
    let resumed_at_millis = (wall_clock_seconds() * 1000.0) as i64;
    leader.wait_for_line("standby:", WAIT);
    for key in &keys[25..] {
        hosts.put(key);
    }
    let marks = hosts.wait_for_marks(&keys);
    std::thread::sleep(TICK_EVERY * 2);
    // The old leader first: a standby now, it would take the lease the new leader's graceful stop releases.
    let old_leader_said = leader.stop();
    let new_leader_said = standby.stop();

    // No period fired twice. A firing made before the lock may run twice (a
    // host stopped while receiving it hands it over late); one made after
    // it by both leaders is what fencing prevents.
    let ticks = hosts.ticks();
    eprintln!("schedule firings (id: runs by host and time): {ticks:?}");
    for (id, runs) in &ticks {
        assert!(
            runs.len() == 1 || (runs.len() == 2 && due_of(id) < locked_at_millis),
            "firing {id} ran more than once: {runs:?}"
        );
    }
    let dues: Vec<i64> = ticks.keys().map(|id| due_of(id)).collect();
    for pair in dues.windows(2) {
        assert!(
            pair[1] - pair[0] >= TICK_EVERY.as_millis() as i64,
            "two firings less than a period apart: {pair:?} of {dues:?}"
        );
    }
    assert!(
        dues.iter().filter(|due| (locked_at_millis..resumed_at_millis).contains(due)).count() >= 2,
        "the new leader fired the schedule while the old one was stopped: {dues:?}"
    );

    // Every object processed; a duplicate only where a host was stopped
    // while receiving or deleting a batch (at most one batch of 5 each).
    let duplicates = marks.len() - keys.len();
    eprintln!("{} objects processed, {duplicates} duplicate(s)", keys.len());
    assert!(duplicates <= 10, "{duplicates} duplicates: {marks:?}");

    assert!(
        old_leader_said.contains("lost the control-plane lease to term 2"),
        "the old leader did not say it lost the lease:\n{old_leader_said}"
    );
    assert!(!new_leader_said.contains("lost the control-plane lease"), "{new_leader_said}");
}

#[test]
fn on_the_embedded_store_one_directory_has_one_control_plane_and_a_restart_after_a_crash_leads_at_once() {
    let project = host_directory(&spec(&support::unique_name("embedded")));
    project.ok(&["deploy"]);
    let up = || Host::start(project.command(&["up", "--poll-interval", "20ms"]), project.root.join("../up.log"));
    let mut running = up();
    running.wait_for_line("leader (term 1)", WAIT);
    let ps = project.ok(&["ps"]);
    assert!(ps.starts_with("control plane leader: ") && ps.contains(" (term 1, lease until "), "{ps}");
    let stderr = project.fails(&["up"], 5);
    assert!(stderr.contains("a control plane is already running for"), "{stderr}");
    assert!(stderr.contains(&format!("(pid {})", running.child.id())), "{stderr}");

    // The crashed control plane's lease (15 s by default) is released by its
    // successor in the same directory, which holds the lock it held.
    running.sigkill();
    let mut restarted = up();
    let took = restarted.wait_for_line("leader (term 2)", WAIT);
    assert!(took < Duration::from_secs(10), "the restarted control plane waited {took:?} to lead");
    restarted.stop();
}

#[test]
fn a_renewal_interval_that_does_not_fit_the_lease_is_a_usage_error() {
    let project = host_directory(&spec(&support::unique_name("usage")));
    project.ok(&["deploy"]);
    let stderr = project.fails(&["up", "--lease-ttl", "3s", "--lease-renew-every", "2s"], 2);
    assert!(
        stderr.contains("--lease-renew-every (2s) must be more than zero and at most a third of --lease-ttl (3s)"),
        "{stderr}"
    );
}

/// The key ids of a keyring file.
fn key_ids(keyring: &Path) -> Vec<String> {
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(keyring).unwrap()).unwrap();
    file["keys"].as_array().unwrap().iter().map(|key| key["id"].as_str().unwrap().to_owned()).collect()
}

/// Every table of the shared database with its rows, in a stable order: what
/// a refused host must not change.
fn database_contents(database: &TestDatabase) -> BTreeMap<String, Vec<String>> {
    let mut client = postgres::Client::connect(&database.url, postgres::NoTls).unwrap();
    let tables: Vec<String> = client
        .query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename", &[])
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    tables
        .into_iter()
        .map(|table| {
            let rows = client
                .query(&format!("SELECT row_to_json(t)::TEXT FROM {table} AS t ORDER BY 1"), &[])
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            (table, rows)
        })
        .collect()
}

/// A host whose keyring is not the project's (the one whose key sealed the
/// shared state) refuses to start: `mayfly up` exits with an error naming
/// the key it lacks and the keys it holds, and writes nothing to the shared
/// database.
#[test]
fn a_host_whose_keyring_is_not_the_projects_refuses_to_start_and_changes_nothing() {
    let hosts = TwoHosts::deployed("keyrings");
    // Another project's keyring in the second host's place.
    let other = Project::with_spec(&spec(&support::unique_name("other")));
    other.ok(&["deploy"]);
    std::fs::copy(other.path(".mayfly/keyring.json"), hosts.second.path(".mayfly/keyring.json")).unwrap();
    let project_keys = key_ids(&hosts.first.path(".mayfly/keyring.json"));
    let host_keys = key_ids(&hosts.second.path(".mayfly/keyring.json"));
    assert!(project_keys.iter().all(|key| !host_keys.contains(key)), "{project_keys:?} {host_keys:?}");

    let before = database_contents(&hosts.database);
    let mut command = hosts.command(&hosts.second, &["up", "--poll-interval", "20ms"]);
    command.args(LEASE_ARGS);
    let output = command.stdin(Stdio::null()).output().expect("run mayfly up");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "mayfly up started with another keyring:\n{said}");
    for key in project_keys.iter().chain(&host_keys) {
        assert!(said.contains(key.as_str()), "the refusal does not name key {key}:\n{said}");
    }
    assert!(said.contains("refusing to use the keyring"), "{said}");
    assert!(!said.contains("control plane"), "it started something:\n{said}");
    assert_eq!(database_contents(&hosts.database), before, "a refused host changed the shared database");

    // The project's own keyring still opens it.
    let mut first = hosts.up(&hosts.first, "first-up.log");
    first.wait_for_line("leader (term 1)", WAIT);
    first.stop();
}
