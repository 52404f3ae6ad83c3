//! A job whose workers run a function that reaches Mayfly's buckets with
//! unmodified boto3 (tests/aws/copier.py): `mayfly run` starts the
//! coordinator, which mints the function's short-lived AWS credentials for
//! exactly its `permissions` (workers hold no key of the store) and hands
//! them to its local workers with the endpoint's certificate; every object
//! is copied byte for byte, a write outside the permissions is refused with
//! AccessDenied and recorded in the access log under the function's key,
//! and nothing lands there.

mod support;

use std::path::Path;

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
    for (index, content) in originals.iter().enumerate() {
        let copied = project.command(&["get", &format!("copies/copied/in/scan-{index}.bin")]).output().unwrap();
        assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
        assert!(copied.stdout == *content, "object {index} differs after the copy");
    }
    assert_eq!(project.json(&["ls", "other"]), serde_json::json!([]), "nothing was written outside the permissions");
    served.stop();

    // Every request is in the access log under the function's key (`MFS…`), the refusals too.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    let by_function = |record: &&Value| record["token_id"].as_str().is_some_and(|id| id.starts_with("MFS"));
    let refusals: Vec<&Value> = log
        .iter()
        .filter(by_function)
        .filter(|record| record["status"] == 403 && record["resource"].as_str().is_some_and(|r| r.contains("other")))
        .collect();
    assert_eq!(refusals.len(), OBJECTS, "one refusal per item: {log:?}");
    let outcome = refusals[0]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("AccessDenied") && outcome.contains("function `copier`"), "{outcome}");
    let puts = log.iter().filter(by_function).filter(|record| {
        record["method"] == "PUT"
            && record["status"] == 200
            && record["resource"].as_str().is_some_and(|r| r.contains("copies"))
    });
    assert_eq!(puts.count(), OBJECTS, "one PUT per copied object: {log:?}");
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
