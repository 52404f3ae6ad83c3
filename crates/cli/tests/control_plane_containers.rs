//! The control plane across hosts, for real: three hosts are three Docker
//! containers on a user-defined bridge network the test creates, each from
//! one image `mayfly image build` made (the `mayfly` binary and Debian's
//! Python for the function), each with its own copy of the project
//! directory (the same `mayfly.toml`, function and keyring file), each
//! running `mayfly up --lease-ttl 3s --lease-renew-every 1s` against one
//! PostgreSQL and one S3 server (SeaweedFS) that run outside them: the
//! suite's servers at `MAYFLY_TEST_POSTGRES_URL` and
//! `MAYFLY_TEST_S3_ENDPOINT`, reached through a TCP relay this test runs on
//! the network's gateway address (the servers listen on loopback only, and
//! a relay keeps them so; a container cut off from the network loses its
//! route to the relay as it would to the servers).
//!
//! 2,000 objects are put through Mayfly's S3-compatible endpoint (`mayfly
//! serve` on this machine, boto3 with eight threads, paced so the flow lasts
//! about 40 s) into a bucket routed to a queue whose trigger runs the
//! function on every host. Mid-flow the leader's container is killed with
//! `docker kill` and a standby must lead within two lease periods; then the
//! new leader is cut off with `docker network disconnect`, the last host
//! must lead within two lease periods, and the cut-off host, reconnected
//! with its address, must stand by. Every object is processed at least
//! once; duplicates are counted by cause — a message delivered again (the
//! batches the killed and the cut-off host held) or an event routed again
//! (a routing pass the lost leader had not committed) — and bounded by
//! what was in flight; invocations ran on more than one host; afterwards
//! no container and no network of the test is left.
//!
//! Needs a Docker engine this user may use. Without the suite's servers
//! named, it uses the ones `scripts/postgres.sh` and `scripts/seaweedfs.sh`
//! start or find, as the other tests do.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::postgres::TestDatabase;
use support::{Project, Served};

/// The hosts' image: `mayfly` and Debian's Python.
const IMAGE: &str = "mayfly-test-hosts-node:latest";
const OBJECTS: usize = 2_000;
/// How fast the objects are put: the flow lasts `OBJECTS / PUT_RATE` seconds.
const PUT_RATE: f64 = 50.0;
const BATCH_SIZE: usize = 10;
/// The function's concurrency: batches one host has in flight at most.
const PARALLEL_BATCHES: usize = 4;
const LEASE_TTL: Duration = Duration::from_secs(3);
/// How long the second host stays cut off.
const CUT_OFF_FOR: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(120);
/// The image's unprivileged user (`mayfly image build`), who owns each host's directory.
const IMAGE_USER: u32 = 10001;

fn spec(name: &str, python: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"

[buckets.inbox]

[queues.work]
visibility_timeout = "5s"

[functions.mark]
command = ["{python}", "functions/mark.py"]
concurrency = {PARALLEL_BATCHES}

[[routes]]
from = {{ bucket = "inbox" }}
to = {{ queue = "work" }}

[[triggers]]
queue = "work"
function = "mark"
batch_size = {BATCH_SIZE}
batch_window = "100ms"
"#
    )
}

/// Appends `KEY MESSAGE-ID HOST` for every object of its batch to its host's
/// `marks.log`, in one write (a host killed mid-batch leaves whole lines).
const MARK: &str = r#"import json, os, socket, sys
event = json.load(sys.stdin)
host = socket.gethostname()
lines = []
for record in event["Records"]:
    for s3 in json.loads(record["body"])["Records"]:
        lines.append("%s %s %s\n" % (s3["s3"]["object"]["key"], record["messageId"], host))
marks = os.open(os.path.join(os.environ["MAYFLY_PROJECT"], "marks.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(marks, "".join(lines).encode())
os.close(marks)
json.dump({}, sys.stdout)
"#;

/// Puts `COUNT` objects at `RATE` per second with eight threads, through the
/// standard AWS variables, and no retries (a retried put could make a
/// second event, which would be counted as the router's duplicate).
const PUT_OBJECTS: &str = r#"import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config
count, rate = int(sys.argv[1]), float(sys.argv[2])
s3 = boto3.client("s3", config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=8))
started = time.time()
def put(number):
    delay = started + number / rate - time.time()
    if delay > 0:
        time.sleep(delay)
    s3.put_object(Bucket="inbox", Key="charts/%04d.txt" % number, Body=b"chart %d\n" % number)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(put, range(count)))
print(json.dumps({"seconds": time.time() - started}))
"#;

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker command runs (install docker.io)")
}

fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The test's bridge network; removed when dropped.
struct Network {
    name: String,
    gateway: Ipv4Addr,
}

impl Network {
    /// A network with a subnet of its own under 10.239.0.0/16 (a fixed
    /// subnet, so a host can be reconnected with its address).
    fn create(name: &str) -> Network {
        let first = std::process::id() % 250;
        for offset in 0..250 {
            let third = (first + offset) % 250;
            let output = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("10.239.{third}.0/24"),
                "--gateway",
                &format!("10.239.{third}.1"),
                "--label",
                "mayfly-test-hosts=1",
                name,
            ]);
            if output.status.success() {
                return Network { name: name.to_owned(), gateway: Ipv4Addr::new(10, 239, third as u8, 1) };
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("overlap"), "docker network create {name}: {stderr}");
        }
        panic!("no free /24 under 10.239.0.0/16 for the test's network");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// A host: a container running `mayfly up`; removed (killed first) when dropped.
struct Host {
    container: String,
    directory: PathBuf,
}

impl Host {
    fn logs(&self) -> String {
        let output = docker(&["logs", &self.container]);
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    }

    fn address(&self, network: &Network) -> String {
        docker_ok(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", network.name),
            &self.container,
        ])
    }

    /// The lines `mark.py` appended on this host: (key, message id, host name).
    fn marks(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.directory.join("marks.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                match (fields.next(), fields.next(), fields.next(), fields.next()) {
                    (Some(key), Some(message), Some(host), None) => {
                        Some((key.to_owned(), message.to_owned(), host.to_owned()))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", "--volumes", &self.container]);
    }
}

/// Wait until one of `hosts` said `text` (after the first `skip[i]` bytes of
/// host i's logs); returns its index and how long that took.
fn wait_for_line(hosts: &[&Host], skip: &[usize], text: &str, timeout: Duration) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        for (index, host) in hosts.iter().enumerate() {
            let logs = host.logs();
            if logs.get(skip[index]..).is_some_and(|rest| rest.contains(text)) {
                return (index, started.elapsed());
            }
        }
        if started.elapsed() > timeout {
            let logs: Vec<String> = hosts.iter().map(|host| format!("{}:\n{}", host.container, host.logs())).collect();
            panic!("no host said {text:?} within {timeout:?}:\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP relay from `listen` (the network's gateway) to a server on
/// loopback, so the containers reach the suite's servers while those listen
/// on loopback only. Dropping it closes every connection it carries.
struct Relay {
    address: SocketAddr,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    stopping: Arc<AtomicBool>,
}

impl Relay {
    fn start(listen: Ipv4Addr, upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind((listen, 0))
            .unwrap_or_else(|error| panic!("listen on the network's gateway {listen}: {error}"));
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (kept, stop) = (connections.clone(), stopping.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                for stream in [&client, &server] {
                    // PostgreSQL's protocol is many small messages: no Nagle delays.
                    let _ = stream.set_nodelay(true);
                }
                let mut kept = kept.lock().unwrap();
                kept.push(client.try_clone().unwrap());
                kept.push(server.try_clone().unwrap());
                let (client_reader, server_writer) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client_reader, server_writer));
                std::thread::spawn(move || pipe(server, client));
            }
        });
        Relay { address, connections, stopping }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The `host:port` a URL names (`scheme://[user@]host:port[/...]`).
fn socket_address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap();
    authority.parse().unwrap_or_else(|error| panic!("{url}: no IP:port ({error})"))
}

/// `url` with its `host:port` replaced by `address`.
fn with_address(url: &str, address: SocketAddr) -> String {
    url.replacen(&socket_address_of(url).to_string(), &address.to_string(), 1)
}

/// Debian's Python interpreter and standard library (small, unlike a pyenv tree).
fn system_python() -> (String, String) {
    let interpreter = std::fs::canonicalize("/usr/bin/python3").expect("Debian's python3 (apt-get install python3)");
    let interpreter = interpreter.display().to_string();
    let output = Command::new(&interpreter)
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (interpreter, String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn chown_tree(path: &Path, user: u32) {
    std::os::unix::fs::chown(path, Some(user), Some(user)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), user);
        }
    }
}

/// How many messages a host said were delivered again because their batch
/// outran its lease (`leases lapsed before the batch finished … lost=N`).
fn messages_whose_lease_lapsed(logs: &str) -> usize {
    logs.lines()
        .filter(|line| line.contains("leases lapsed before the batch finished"))
        .filter_map(|line| {
            line.split("lost=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok()
        })
        .sum()
}

fn containers_of(label: &str) -> Vec<String> {
    docker_ok(&["ps", "-a", "-q", "--filter", &format!("label={label}")])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_host_containers_lose_nothing_when_the_leader_is_killed_and_another_host_is_cut_off() {
    // The suite's servers (scripts/test.sh starts them), else the ones the scripts start or find.
    let postgres_url = support::postgres::server_url().to_owned();
    let s3_endpoint = support::s3::endpoint().to_owned();
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "this test needs a running Docker engine that this user may use: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let test_started = Instant::now();
    let run_label = support::unique_name("mayfly-test-hosts");
    let (python, standard_library) = system_python();
    let spec = spec(&support::unique_name("containers"), &python);

    // The operator's directory on this machine: deploys, builds the image, serves the S3 endpoint.
    let mut operator = Project::with_spec(&spec);
    operator.database = Some(TestDatabase::create());
    let prefix = format!("hosts/{}", support::unique_name("project"));
    operator.storage_prefix = Some(prefix.clone());
    operator.ok(&["deploy"]);
    let built = operator.ok(&["image", "build", "--tag", IMAGE, "--include", &python, "--include", &standard_library]);
    eprintln!("{}", built.trim());

    let network = Network::create(&run_label);
    let database_url = &operator.database.as_ref().unwrap().url;
    assert_eq!(socket_address_of(database_url), socket_address_of(&postgres_url), "the test database's server");
    let postgres_relay = Relay::start(network.gateway, socket_address_of(database_url));
    let s3_relay = Relay::start(network.gateway, socket_address_of(&s3_endpoint));
    let environment = [
        ("MAYFLY_STATE_URL".to_owned(), with_address(database_url, postgres_relay.address)),
        ("MAYFLY_STORAGE_URL".to_owned(), format!("s3://{}/{prefix}", support::s3::BUCKET)),
        ("AWS_ENDPOINT_URL".to_owned(), with_address(&s3_endpoint, s3_relay.address)),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), support::s3::ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), support::s3::SECRET_KEY.to_owned()),
    ];

    // Three hosts, each with its own copy of the project: spec, function, keyring.
    let directories: Vec<Project> = (0..3)
        .map(|_| {
            let mut directory = Project::with_spec(&spec);
            directory.database = None;
            directory
        })
        .collect();
    let start_host = |number: usize| -> Host {
        let project = &directories[number - 1];
        std::fs::create_dir_all(project.path("functions")).unwrap();
        std::fs::write(project.path("functions/mark.py"), MARK).unwrap();
        std::fs::create_dir_all(project.path(".mayfly")).unwrap();
        std::fs::copy(operator.path(".mayfly/keyring.json"), project.path(".mayfly/keyring.json")).unwrap();
        chown_tree(&project.root, IMAGE_USER);
        let container = format!("{run_label}-host-{number}");
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--init".into(),
            format!("--name={container}"),
            format!("--hostname=host-{number}"),
            format!("--network={}", network.name),
            format!("--label={run_label}=1"),
            format!("--volume={}:/project", project.root.display()),
            "--workdir=/project".into(),
        ];
        for (name, value) in &environment {
            args.push(format!("--env={name}={value}"));
        }
        args.push(IMAGE.into());
        for arg in
            ["/usr/local/bin/mayfly", "up", "--poll-interval", "20ms", "--lease-ttl", "3s", "--lease-renew-every", "1s"]
        {
            args.push(arg.into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        Host { container, directory: project.root.clone() }
    };
    let first = start_host(1);
    wait_for_line(&[&first], &[0], "leader (term 1)", WAIT);
    let others = [start_host(2), start_host(3)];
    for host in &others {
        wait_for_line(&[host], &[0], "leads (term 1)", WAIT);
    }
    let hosts = [&first, &others[0], &others[1]];
    eprintln!("three hosts up after {:?}", test_started.elapsed());

    // The objects flow in through Mayfly's S3-compatible endpoint on this machine.
    let served = Served::start(&operator);
    let (_, key, secret) = support::aws_token(&operator, "loader", &["--scope", "objects:write"]);
    let putting = support::aws_python(&operator, &served, &key, &secret)
        .args(["-c", PUT_OBJECTS, &OBJECTS.to_string(), &PUT_RATE.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let flow_started = Instant::now();
    let processed = || -> BTreeSet<String> { hosts.iter().flat_map(|host| host.marks()).map(|mark| mark.0).collect() };
    let wait_for_processed = |count: usize| {
        while processed().len() < count {
            assert!(flow_started.elapsed() < WAIT, "only {} objects processed", processed().len());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // The leader's container is killed mid-flow; a standby leads within two lease periods.
    wait_for_processed(OBJECTS / 5);
    docker_ok(&["kill", &first.container]);
    eprintln!("host-1 killed {:?} into the flow", flow_started.elapsed());
    let (taker, takeover) = wait_for_line(&[&others[0], &others[1]], &[0, 0], "leader (term 2)", WAIT);
    eprintln!(
        "{} processed when host-1 (the leader) was killed; {} led after {takeover:?} (lease TTL {LEASE_TTL:?})",
        OBJECTS / 5,
        others[taker].container
    );
    assert!(takeover <= LEASE_TTL * 2, "the takeover took {takeover:?}, more than two lease periods");

    // Then the new leader is cut off from the network; the last host leads within two lease periods.
    wait_for_processed(OBJECTS / 2);
    let (cut, last) = (&others[taker], &others[1 - taker]);
    let cut_address = cut.address(&network);
    let logged_before_cut = [cut.logs().len(), last.logs().len()];
    docker_ok(&["network", "disconnect", &network.name, &cut.container]);
    let cut_at = Instant::now();
    eprintln!("{} cut off {:?} into the flow", cut.container, flow_started.elapsed());
    let (_, second_takeover) = wait_for_line(&[last], &logged_before_cut[1..], "leader (term 3)", WAIT);
    eprintln!("{} cut off; {} led after {second_takeover:?}", cut.container, last.container);
    assert!(second_takeover <= LEASE_TTL * 2, "the takeover took {second_takeover:?}, more than two lease periods");
    // The cut-off leader gave its duties up on its own, before its lease could lapse.
    wait_for_line(&[cut], &logged_before_cut[..1], "could not be renewed in time; standing by", LEASE_TTL * 2);

    // Reconnected with its address, it stands by under the last host.
    std::thread::sleep(CUT_OFF_FOR.saturating_sub(cut_at.elapsed()));
    let logged_before_reconnect = cut.logs().len();
    docker_ok(&["network", "connect", "--ip", &cut_address, &network.name, &cut.container]);
    eprintln!("{} reconnected {:?} into the flow", cut.container, flow_started.elapsed());
    let (_, back) = wait_for_line(&[cut], &[logged_before_reconnect], "leads (term 3)", WAIT);
    eprintln!("{} reconnected after {CUT_OFF_FOR:?}; it stood by under term 3 after {back:?}", cut.container);

    let put = putting.wait_with_output().unwrap();
    assert!(put.status.success(), "putting the objects failed: {}", String::from_utf8_lossy(&put.stderr));
    eprintln!("{OBJECTS} objects put: {}", String::from_utf8_lossy(&put.stdout).trim());
    wait_for_processed(OBJECTS);
    let flow = flow_started.elapsed();

    // Every object processed at least once; duplicates counted by cause and bounded.
    let marks: Vec<(String, String, String)> = hosts.iter().flat_map(|host| host.marks()).collect();
    let expected: BTreeSet<String> = (0..OBJECTS).map(|number| format!("charts/{number:04}.txt")).collect();
    assert_eq!(marks.iter().map(|mark| mark.0.clone()).collect::<BTreeSet<_>>(), expected);
    let mut deliveries: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut messages_of_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut by_host: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, message, host) in &marks {
        *deliveries.entry((key, message)).or_default() += 1;
        messages_of_key.entry(key).or_default().insert(message);
        *by_host.entry(host).or_default() += 1;
    }
    let redelivered: usize = deliveries.values().map(|count| count - 1).sum();
    let routed_again: usize = messages_of_key.values().map(|messages| messages.len() - 1).sum();
    eprintln!(
        "{OBJECTS} objects processed in {flow:?}: {} invocations of a key, {redelivered} message(s) delivered again, {routed_again} event(s) routed again; by host {by_host:?}",
        marks.len()
    );
    let numbers = |keys: Vec<&str>| -> Vec<usize> {
        keys.iter().map(|key| key["charts/".len()..key.len() - ".txt".len()].parse().unwrap()).collect()
    };
    let routed_again_keys =
        numbers(messages_of_key.iter().filter(|(_, messages)| messages.len() > 1).map(|(key, _)| *key).collect());
    let redelivered_keys =
        numbers(deliveries.iter().filter(|(_, count)| **count > 1).map(|((key, _), _)| *key).collect());
    eprintln!("objects routed again: {routed_again_keys:?}");
    eprintln!("objects delivered again: {redelivered_keys:?}");
    assert_eq!(marks.len(), OBJECTS + redelivered + routed_again);
    // Delivered again: the batches the killed host was running; the batches
    // the cut-off host was running and those it was receiving when cut off
    // (their answer arrives when it is back, after their leases lapsed); and
    // batches that outran their lease on a busy host (each says so).
    // (The cut-off host's own warnings after the cut are its held batches, counted above.)
    let lapsed = messages_whose_lease_lapsed(&first.logs())
        + messages_whose_lease_lapsed(&last.logs())
        + messages_whose_lease_lapsed(&cut.logs()[..logged_before_cut[0]]);
    let in_flight = (1 + 2) * PARALLEL_BATCHES * BATCH_SIZE + lapsed;
    assert!(redelivered <= in_flight, "{redelivered} messages delivered again, more than the {in_flight} in flight");
    // Routed again: the routing pass each lost leader had not committed; a
    // leader routes every 20 ms, so its last pass read at most the events put
    // within one lease period.
    let routed_in_flight = 2 * (LEASE_TTL.as_secs_f64() * PUT_RATE) as usize;
    assert!(
        routed_again <= routed_in_flight,
        "{routed_again} events routed again, more than the {routed_in_flight} two routing passes could hold"
    );
    assert!(by_host.len() >= 2, "invocations ran on one host only: {by_host:?}");

    // The hosts left stop cleanly; nothing of the test is left running.
    for host in [cut, last] {
        docker_ok(&["stop", "--time", "30", &host.container]);
        let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &host.container]);
        assert_eq!(exit, "0", "{} exited {exit}:\n{}", host.container, host.logs());
        assert!(host.logs().contains("control plane stopped"), "{}", host.logs());
    }
    drop(served);
    drop(others);
    drop(first);
    drop(network);
    assert_eq!(containers_of(&run_label), Vec::<String>::new(), "containers left behind");
    let networks = docker_ok(&["network", "ls", "-q", "--filter", &format!("name={run_label}")]);
    assert!(networks.is_empty(), "networks left behind: {networks}");
    drop((postgres_relay, s3_relay));
    eprintln!("the whole test took {:?}", test_started.elapsed());
}
