//! A job whose workers run a function that reaches Mayfly's buckets with
//! unmodified boto3 (tests/aws/copier.py): `mayfly run` starts the
//! coordinator, which mints the function's short-lived AWS credentials for
//! exactly its `permissions` (workers hold no key of the store) and hands
//! them to its local workers with the endpoint's certificate; every object
//! is copied byte for byte, a write outside the permissions is refused with
//! AccessDenied and recorded in the access log under the function's key,
//! and nothing lands there.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{Project, Served};

/// A port free now, for an AWS endpoint whose address the spec must name
/// (the coordinator tells workers the spec's `aws_listen`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The function as a `process` (event on stdin) or a warm `lambda` instance.
const PROCESS: &str = r#"command = ["python3", "functions/copier.py"]"#;
const LAMBDA: &str = r#"runtime = "lambda"
command = ["python3", "-m", "awslambdaric", "copier.handler"]
handler = "copier.handler"
env = { PYTHONPATH = "functions" }"#;

fn spec(name: &str, aws_port: u16, function: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[buckets.copies]
[buckets.other]
[buckets.logs]
[functions.copier]
{function}
timeout = "60s"
permissions = ["objects:read:scans", "objects:write:copies"]
[jobs.copy]
source = {{ bucket = "scans", prefix = "in/" }}
function = "copier"
workers = {{ max = 2 }}
max_attempts = 1
logs = "logs"
[api]
listen = "127.0.0.1:0"
aws_listen = "127.0.0.1:{aws_port}"
"#
    )
}

#[test]
fn job_workers_get_scoped_credentials_and_boto3_copies_every_object_and_is_refused_outside_them() {
    copies_every_object_with_scoped_credentials(PROCESS);
}

/// The same with the function as a `lambda` handler: a warm instance keeps
/// the credentials it started with.
#[test]
fn job_workers_give_a_lambda_instance_scoped_credentials() {
    support::ensure_awslambdaric();
    copies_every_object_with_scoped_credentials(LAMBDA);
}

fn copies_every_object_with_scoped_credentials(function: &str) {
    let found = std::process::Command::new("python3").args(["-c", "import boto3"]).status();
    assert!(found.is_ok_and(|status| status.success()), "boto3 is missing (scripts/test.sh installs it)");
    let aws_port = free_port();
    let project = Project::with_spec(&spec(&support::unique_name("aws-jobs"), aws_port, function));
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/copier.py"),
        project.path("functions/copier.py"),
    )
    .unwrap();
    project.ok(&["deploy"]);
    const OBJECTS: usize = 6;
    let mut originals = Vec::new();
    for index in 0..OBJECTS {
        let content: Vec<u8> = (0..(index * 50_021 + 5)).map(|byte| ((byte * 13 + index) % 256) as u8).collect();
        let file = project.path(&format!("scan-{index}.bin"));
        std::fs::write(&file, &content).unwrap();
        project.ok(&["put", &format!("scans/in/scan-{index}.bin"), file.to_str().unwrap()]);
        originals.push(content);
    }
    let mut served = Served::start_with_aws_listen(&project, &format!("127.0.0.1:{aws_port}"));
    assert_eq!(served.aws_address.port(), aws_port);

    let outcome = project.json(&["run", "copy"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let results = project.json(&["results", "copy", "--limit", "100"]);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), OBJECTS, "{results:?}");
    for row in results {
        let result = &row["result"];
        assert_eq!(result["trespass"], "AccessDenied", "{result}");
        assert_eq!(result["endpoint"], format!("https://127.0.0.1:{aws_port}"));
        let ca_bundle = result["ca_bundle"].as_str().unwrap();
        assert!(
            ca_bundle.starts_with(std::env::temp_dir().to_str().unwrap()) && ca_bundle.ends_with("-aws-ca.pem"),
            "the worker wrote the endpoint's certificate to a file of its own: {ca_bundle}"
        );
        assert!(!Path::new(ca_bundle).exists(), "and removed it when it stopped: {ca_bundle}");
    }
    assert_copied_and_nothing_else(&project, &originals);
    served.stop();

    assert_access_log_of_the_function(&project, OBJECTS);
}

/// Every object of `originals` copied byte for byte into `copies`, and nothing written to `other`.
fn assert_copied_and_nothing_else(project: &Project, originals: &[Vec<u8>]) {
    for (index, content) in originals.iter().enumerate() {
        let copied = project.command(&["get", &format!("copies/copied/in/scan-{index}.bin")]).output().unwrap();
        assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
        assert!(copied.stdout == *content, "object {index} differs after the copy");
    }
    assert_eq!(project.json(&["ls", "other"]), serde_json::json!([]), "nothing was written outside the permissions");
}

/// Every request is in the access log under the function's key (`MFS…`),
/// the refusals too: one refusal outside the permissions and one PUT of a
/// copy per object, of `objects`.
fn assert_access_log_of_the_function(project: &Project, objects: usize) {
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    let by_function = |record: &&Value| record["token_id"].as_str().is_some_and(|id| id.starts_with("MFS"));
    let refusals: Vec<&Value> = log
        .iter()
        .filter(by_function)
        .filter(|record| record["status"] == 403 && record["resource"].as_str().is_some_and(|r| r.contains("other")))
        .collect();
    assert_eq!(refusals.len(), objects, "one refusal per item: {log:?}");
    let outcome = refusals[0]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("AccessDenied") && outcome.contains("function `copier`"), "{outcome}");
    let puts = log.iter().filter(by_function).filter(|record| {
        record["method"] == "PUT"
            && record["status"] == 200
            && record["resource"].as_str().is_some_and(|r| r.contains("copies"))
    });
    assert_eq!(puts.count(), objects, "one PUT per copied object: {log:?}");
}

/// Workers cannot be told where an endpoint on `aws_listen` port 0 is: such
/// a job is refused at deploy, saying why and where, and nothing is deployed
/// (so no triggered run could be created only for its coordinator to refuse it).
#[test]
fn a_job_function_with_permissions_and_no_fixed_aws_port_is_refused_at_deploy() {
    let project = Project::with_spec(&spec(&support::unique_name("aws-jobs-port"), 0, PROCESS));
    std::fs::create_dir_all(project.path("functions")).unwrap();
    let output = project.run(&["deploy"]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(3), "an invalid architecture file: {text}");
    assert!(text.contains("`[api].aws_listen` (127.0.0.1:0) has port 0"), "{text}");
    assert!(text.contains("mayfly.toml:"), "the error says where: {text}");
    let deployments = project.run(&["deployments", "--json"]);
    let text = String::from_utf8_lossy(&deployments.stderr);
    assert!(!deployments.status.success() && text.contains("has not been deployed"), "nothing was deployed: {text}");
}

/// The image of the Docker case: Debian's Python, boto3 and the copier.
const BOTO3_WORKER_IMAGE: &str = "mayfly-test-boto3-worker:latest";

/// The Docker case's job network: a subnet of its own, whose gateway (its
/// first address) is this host as the job's containers reach it.
const ADVERTISE_NETWORK: &str = "mayfly-test-aws-advertise";
const ADVERTISE_SUBNET: &str = "10.77.190.0/24";
const ADVERTISE_GATEWAY: &str = "10.77.190.1";

/// `tests/aws/copier.py` where an image can include it: the checkout's own
/// file, or a copy under /var/tmp when the checkout lies under /tmp (which
/// every container replaces with a private scratch folder), as the
/// handlers are ([`support::image_files_directory`]).
fn copier_for_images() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/copier.py");
    if !source.starts_with("/tmp") {
        return source;
    }
    // Copied beside and renamed into place, so a test building an image meanwhile never reads half a file.
    let copy = support::image_files_directory().join("copier.py");
    let partial = copy.with_extension(format!("py.{}", std::process::id()));
    std::fs::copy(&source, &partial).expect("copy copier.py where images can include it");
    std::fs::rename(&partial, &copy).expect("move copier.py into place");
    copy
}

fn docker_spec(name: &str, aws_port: u16, advertise: bool, interpreter: &str, packages: &str) -> String {
    let copier = copier_for_images();
    // Advertised, the endpoint off loopback with the generated certificate
    // meets the default `[policy] tls = "required"`; not advertised, it
    // would not, so that half (refused for the missing key) relaxes it.
    let (advertise, policy) = if advertise {
        (format!("aws_advertise = \"https://{ADVERTISE_GATEWAY}:{aws_port}\"\n"), "")
    } else {
        (String::new(), "[policy]\ntls = \"optional\"\n")
    };
    format!(
        r#"version = 1
name = "{name}"
{policy}[buckets.scans]
[buckets.copies]
[buckets.other]
[buckets.logs]
[functions.copier]
command = ["{interpreter}", "{copier}"]
env = {{ PYTHONPATH = "{packages}" }}
timeout = "60s"
permissions = ["objects:read:scans", "objects:write:copies"]
[jobs.copy]
source = {{ bucket = "scans", prefix = "in/" }}
function = "copier"
workers = {{ max = 2 }}
max_attempts = 1
logs = "logs"
provisioner = {{ kind = "docker", network = "{ADVERTISE_NETWORK}", subnet = "{ADVERTISE_SUBNET}", image = "{BOTO3_WORKER_IMAGE}", memory = "512MiB", cpus = 0.5 }}
[api]
listen = "127.0.0.1:0"
aws_listen = "0.0.0.0:{aws_port}"
{advertise}"#,
        copier = copier.display()
    )
}

/// Workers in Docker containers (the coordinator in one too) reach the AWS
/// endpoint at `[api].aws_advertise`, the job network's gateway (the
/// endpoint listens on every address, with the generated certificate, which
/// names the advertised host and so meets `[policy] tls = "required"`): without it
/// the job is refused at deploy, naming the key; with it `mayfly serve`
/// makes its self-signed certificate name the gateway's address, the
/// coordinator hands that certificate to the workers as `AWS_CA_BUNDLE`,
/// and unmodified boto3 in each container verifies the endpoint against it,
/// copies every object byte for byte and is refused outside its
/// permissions, each refusal in the access log.
#[test]
fn job_workers_in_docker_containers_reach_the_advertised_endpoint_with_scoped_credentials() {
    let placeholder = Project::with_spec("version = 1\nname = \"placeholder\"\n");
    let copier = copier_for_images();
    let (interpreter, packages) =
        support::ensure_boto3_image(&placeholder, BOTO3_WORKER_IMAGE, &[copier.to_str().unwrap()]);
    let aws_port = free_port();
    let name = support::unique_name("aws-jobs-docker");
    let project = Project::with_spec(&docker_spec(&name, aws_port, false, &interpreter, &packages));
    let refused = project.fails(&["deploy"], 3);
    assert!(refused.contains("docker provisioner") && refused.contains("`[api].aws_advertise`"), "{refused}");

    std::fs::write(project.path("mayfly.toml"), docker_spec(&name, aws_port, true, &interpreter, &packages)).unwrap();
    project.ok(&["deploy"]);
    const OBJECTS: usize = 6;
    let mut originals = Vec::new();
    for index in 0..OBJECTS {
        let content: Vec<u8> = (0..(index * 70_001 + 3)).map(|byte| ((byte * 7 + index) % 253) as u8).collect();
        let file = project.path(&format!("scan-{index}.bin"));
        std::fs::write(&file, &content).unwrap();
        project.ok(&["put", &format!("scans/in/scan-{index}.bin"), file.to_str().unwrap()]);
        originals.push(content);
    }
    let mut served = Served::start_with_aws_listen(&project, &format!("0.0.0.0:{aws_port}"));
    let announced = served.announcement.join("\n");
    assert!(announced.contains(&format!("localhost and {ADVERTISE_GATEWAY}")), "{announced}");

    let outcome = project.json(&["run", "copy"]);
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    let results = project.json(&["results", "copy", "--limit", "100"]);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), OBJECTS, "{results:?}");
    for row in results {
        let result = &row["result"];
        assert_eq!(result["trespass"], "AccessDenied", "{result}");
        assert_eq!(result["endpoint"], format!("https://{ADVERTISE_GATEWAY}:{aws_port}"), "{result}");
        let ca_bundle = result["ca_bundle"].as_str().unwrap();
        assert!(
            ca_bundle.starts_with("/tmp/") && ca_bundle.ends_with("-aws-ca.pem"),
            "the worker wrote the endpoint's certificate in its container: {ca_bundle}"
        );
    }
    assert_copied_and_nothing_else(&project, &originals);
    served.stop();

    assert_access_log_of_the_function(&project, OBJECTS);
    let live = project.json(&["ps"]);
    let containers: Vec<&Value> = live.as_array().unwrap().iter().filter(|r| r["kind"] == "container").collect();
    assert!(containers.is_empty(), "no container of the run is left: {containers:?}");
}

/// The user's own `[api].tls` certificate must name the advertised host
/// (workers check it): `mayfly deploy` refuses one that does not, naming the
/// host and the file, and deploys nothing; `mayfly serve` refuses it too,
/// should the file change after the deploy; one that names it is accepted.
#[test]
fn an_own_certificate_that_does_not_name_the_advertised_host_is_refused() {
    let name = support::unique_name("aws-advertise-cert");
    let project = Project::with_spec(&format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[functions.reader]
command = ["true"]
permissions = ["objects:read:scans"]
[api]
listen = "127.0.0.1:0"
aws_listen = "127.0.0.1:0"
aws_advertise = "https://mayfly.hospital.test:8444"
tls = {{ cert = "cert.pem", key = "key.pem" }}
"#
    ));
    let write_certificate = |names: &[&str]| {
        let certified =
            rcgen::generate_simple_self_signed(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())
                .unwrap();
        std::fs::write(project.path("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(project.path("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    };
    write_certificate(&["charts.hospital.test", "127.0.0.1"]);
    let refused = project.fails(&["deploy"], 5);
    assert!(
        refused.contains("`[api].aws_advertise` is https://mayfly.hospital.test:8444")
            && refused.contains("does not name `mayfly.hospital.test`")
            && refused.contains("cert.pem"),
        "{refused}"
    );
    let deployments = project.run(&["deployments", "--json"]);
    let text = String::from_utf8_lossy(&deployments.stderr);
    assert!(!deployments.status.success() && text.contains("has not been deployed"), "nothing was deployed: {text}");

    write_certificate(&["mayfly.hospital.test", "127.0.0.1"]);
    project.ok(&["deploy"]);
    write_certificate(&["charts.hospital.test"]);
    let refused = project.fails(&["serve"], 5);
    assert!(refused.contains("does not name `mayfly.hospital.test`"), "{refused}");
}
