//! Functions that reach Mayfly's data with an unmodified AWS SDK: the
//! `examples/rename-s3` Lambda handler (Python, boto3, no endpoint or
//! credentials in its code) run by `mayfly up` on bucket events, with the
//! short-lived credentials its `permissions` give each invocation; and a
//! handler that writes outside its permissions, refused with AccessDenied,
//! nothing changed, the refusal in the access log under its function key;
//! and the same handlers in containers (`isolation = "container"`), reaching
//! the endpoint through the relay on their function network's gateway.

mod support;

use std::path::Path;
use std::time::Duration;

use support::Project;

/// The example's mayfly.toml with the API on free ports and, beside it, a
/// trespassing function.
fn spec_with_trespass(name: &str) -> String {
    let example = std::fs::read_to_string(example_dir().join("mayfly.toml")).unwrap();
    let example = example.replace("name = \"rename-s3\"", &format!("name = \"{name}\""));
    let example = example.replace("[api]\n", "[api]\nlisten = \"127.0.0.1:0\"\naws_listen = \"127.0.0.1:0\"\n");
    format!(
        "{example}
[buckets.drop]
[buckets.other]

[[routes]]
from = {{ bucket = \"drop\", events = [\"created\"], prefix = \"in/\" }}
to = {{ function = \"trespass\" }}

[functions.trespass]
runtime = \"lambda\"
command = [\"python3\", \"-m\", \"awslambdaric\", \"trespass.handler\"]
handler = \"trespass.handler\"
env = {{ PYTHONPATH = \"functions\" }}
permissions = [\"objects:write:drop\"]
"
    )
}

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rename-s3")
}

fn require_python_packages() {
    support::ensure_awslambdaric();
    let found = std::process::Command::new("python3").args(["-c", "import boto3"]).status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "boto3 is missing: `python3 -m pip install boto3` (scripts/test.sh installs it)"
    );
}

#[test]
fn the_rename_s3_example_moves_every_object_with_boto3_and_a_trespass_is_refused_and_logged() {
    require_python_packages();
    let project = Project::with_spec(&spec_with_trespass(&support::unique_name("rename-s3")));
    let functions = project.path("functions");
    std::fs::create_dir_all(&functions).unwrap();
    std::fs::copy(example_dir().join("functions/rename.py"), functions.join("rename.py")).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/trespass.py"), functions.join("trespass.py"))
        .unwrap();
    project.ok(&["deploy"]);
    let up = project.spawn_up();

    // N objects of different sizes and contents, each put into `inbox`.
    const OBJECTS: usize = 12;
    let mut originals = Vec::new();
    for index in 0..OBJECTS {
        let content: Vec<u8> = (0..(index * 7919 + 1)).map(|byte| ((byte * 31 + index) % 251) as u8).collect();
        let file = project.path(&format!("chart-{index}.bin"));
        std::fs::write(&file, &content).unwrap();
        project.ok(&["put", &format!("inbox/incoming/chart-{index}.bin"), file.to_str().unwrap()]);
        originals.push(content);
    }
    let listing = project.wait_for(&["ls", "archive/renamed/"], Duration::from_secs(90), |listing| {
        listing.as_array().is_some_and(|objects| objects.len() == OBJECTS)
    });
    assert_eq!(listing.as_array().unwrap().len(), OBJECTS, "{listing}");
    for (index, content) in originals.iter().enumerate() {
        let moved = project.command(&["get", &format!("archive/renamed/incoming/chart-{index}.bin")]).output().unwrap();
        assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
        assert!(moved.stdout == *content, "object {index} differs after the move");
    }
    let inbox = project
        .wait_for(&["ls", "inbox"], Duration::from_secs(30), |listing| listing.as_array().is_some_and(Vec::is_empty));
    assert_eq!(inbox, serde_json::json!([]), "every original is deleted");

    // The trespass: refused with S3's AccessDenied, nothing in `other`.
    let marker = project.path("marker.txt");
    std::fs::write(&marker, "go").unwrap();
    project.ok(&["put", "drop/in/attempt.txt", marker.to_str().unwrap()]);
    project.wait_for(&["ls", "drop/out/"], Duration::from_secs(60), |listing| {
        listing.as_array().is_some_and(|objects| !objects.is_empty())
    });
    assert_eq!(project.ok(&["get", "drop/out/attempt.txt"]), "AccessDenied");
    assert_eq!(project.json(&["ls", "other"]), serde_json::json!([]), "nothing was written outside the permissions");
    up.stop();

    // Every request is in the access log under a function key (`MFS…`), the refusal too.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    let by_function = |record: &&serde_json::Value| record["token_id"].as_str().is_some_and(|id| id.starts_with("MFS"));
    let refusal = log
        .iter()
        .filter(by_function)
        .find(|record| record["status"] == 403 && record["resource"].as_str().is_some_and(|r| r.contains("other")))
        .unwrap_or_else(|| panic!("no refusal of the trespass in the access log: {log:?}"));
    let outcome = refusal["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("AccessDenied"), "{outcome}");
    assert!(outcome.contains("function `trespass`"), "the refusal names the function: {outcome}");
    let deletes =
        log.iter().filter(by_function).filter(|record| record["method"] == "DELETE" && record["status"] == 204);
    assert_eq!(deletes.count(), OBJECTS, "one DELETE per moved object: {log:?}");
}

/// The same example with its Rust handler (`examples/rename-s3/rust`:
/// `lambda_runtime` + `aws-sdk-s3`, configured only by the AWS_* variables),
/// run as a local process by `mayfly up` on bucket events.
#[test]
fn the_rename_s3_example_in_rust_moves_every_object_with_the_rust_sdk() {
    let handler = support::package_binary("rename-s3");
    let example = std::fs::read_to_string(example_dir().join("mayfly.toml")).unwrap();
    let spec = example
        .replace("name = \"rename-s3\"", &format!("name = \"{}\"", support::unique_name("rename-rs")))
        .replace("[api]\n", "[api]\nlisten = \"127.0.0.1:0\"\naws_listen = \"127.0.0.1:0\"\n")
        .replace(
            "command = [\"python3\", \"-m\", \"awslambdaric\", \"rename.handler\"]",
            &format!("command = [{:?}]", handler.display().to_string()),
        );
    assert!(spec.contains("rename-s3\"]"), "the example's command was replaced: {spec}");
    let project = Project::with_spec(&spec);
    project.ok(&["deploy"]);
    let up = project.spawn_up();

    // Keys with a space, `+`, `#`, `?` and non-ASCII: the handler decodes S3's event encoding.
    let keys = ["incoming/scan 1.pdf", "incoming/a+b.txt", "incoming/hash#1?.txt", "incoming/Zoë.txt", "plain.bin"];
    let mut originals = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let content: Vec<u8> = (0..(index * 104_729 + 3)).map(|byte| ((byte * 17 + index) % 253) as u8).collect();
        let file = project.path(&format!("object-{index}.bin"));
        std::fs::write(&file, &content).unwrap();
        project.ok(&["put", &format!("inbox/{key}"), file.to_str().unwrap()]);
        originals.push(content);
    }
    let listing = project.wait_for(&["ls", "archive/renamed/"], Duration::from_secs(90), |listing| {
        listing.as_array().is_some_and(|objects| objects.len() == keys.len())
    });
    assert_eq!(listing.as_array().unwrap().len(), keys.len(), "{listing}");
    for (key, content) in keys.iter().zip(&originals) {
        let moved = project.command(&["get", &format!("archive/renamed/{key}")]).output().unwrap();
        assert!(moved.status.success(), "{key}: {}", String::from_utf8_lossy(&moved.stderr));
        assert!(moved.stdout == *content, "{key} differs after the move");
    }
    let inbox = project
        .wait_for(&["ls", "inbox"], Duration::from_secs(30), |listing| listing.as_array().is_some_and(Vec::is_empty));
    assert_eq!(inbox, serde_json::json!([]), "every original is deleted");
    up.stop();
    let ledger = project.json(&["invocations", "--function", "rename", "--limit", "100"]);
    let ledger = ledger.as_array().unwrap();
    assert_eq!(ledger.len(), keys.len(), "one invocation per object: {ledger:?}");
    assert!(
        ledger.iter().all(|invocation| invocation["outcome"] == "success"),
        "every invocation of the Rust handler succeeded: {ledger:?}"
    );
}

/// The image of the container variant: Debian's Python and standard
/// library, and a folder with `awslambdaric` and boto3 (with their
/// dependencies) copied from the Python that has them.
const BOTO3_IMAGE: &str = "mayfly-test-boto3:latest";

fn run(command: &mut std::process::Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Builds [`BOTO3_IMAGE`] (see [`support::ensure_boto3_image`]); returns
/// the image's interpreter and its packages folder.
fn ensure_boto3_image(project: &Project) -> (String, String) {
    support::ensure_boto3_image(project, BOTO3_IMAGE, &[])
}

/// A loopback port free at this instant.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The same unmodified boto3 handler, in a container (`isolation =
/// "container"`, an image `mayfly image build` made): its invocations reach
/// the AWS endpoint through a relay on the function network's gateway, and
/// nothing else: the gateway answers its Runtime API and that relay, not
/// Mayfly's own loopback ports, and nothing beyond the gateway answers.
#[test]
fn the_rename_s3_example_in_a_container_moves_every_object_and_reaches_only_its_endpoint() {
    let name = support::unique_name("rename-ctr");
    let placeholder = Project::with_spec("version = 1\nname = \"placeholder\"\n");
    let (interpreter, packages) = ensure_boto3_image(&placeholder);
    let (api_port, aws_port) = (free_port(), free_port());
    let container = format!(
        "isolation = \"container\"\nimage = \"{BOTO3_IMAGE}\"\nenv = {{ PYTHONPATH = \"functions:{packages}\", TARGET_BUCKET = \"archive\" }}\n"
    );
    let spec = std::fs::read_to_string(example_dir().join("mayfly.toml"))
        .unwrap()
        .replace("name = \"rename-s3\"", &format!("name = \"{name}\""))
        .replace(
            "[api]\n",
            &format!("[api]\nlisten = \"127.0.0.1:{api_port}\"\naws_listen = \"127.0.0.1:{aws_port}\"\n"),
        )
        .replace("[\"python3\", \"-m\"", &format!("[{interpreter:?}, \"-m\""))
        .replace("env = { PYTHONPATH = \"functions\", TARGET_BUCKET = \"archive\" }\n", &container);
    assert!(spec.contains("isolation = \"container\""), "the example's function was not put in a container: {spec}");
    let spec = format!(
        "{spec}
[buckets.drop]
[buckets.other]

[[routes]]
from = {{ bucket = \"drop\", events = [\"created\"], prefix = \"in/\" }}
to = {{ function = \"trespass\" }}

[[routes]]
from = {{ bucket = \"drop\", events = [\"created\"], prefix = \"probe/\" }}
to = {{ function = \"probe\" }}

[functions.trespass]
runtime = \"lambda\"
command = [{interpreter:?}, \"-m\", \"awslambdaric\", \"trespass.handler\"]
handler = \"trespass.handler\"
{container}permissions = [\"objects:write:drop\"]

[functions.probe]
runtime = \"lambda\"
command = [{interpreter:?}, \"-m\", \"awslambdaric\", \"gateway_probe.handler\"]
handler = \"gateway_probe.handler\"
{container}permissions = [\"objects:read:drop\", \"objects:write:drop\"]

[[routes]]
from = {{ bucket = \"drop\", events = [\"created\"], prefix = \"process/\" }}
to = {{ function = \"process\" }}

[functions.process]
runtime = \"process\"
command = [{interpreter:?}, \"functions/process_put.py\"]
{container}permissions = [\"objects:write:drop\"]
"
    );
    let project = Project::with_spec(&spec);
    let functions = project.path("functions");
    std::fs::create_dir_all(&functions).unwrap();
    std::fs::copy(example_dir().join("functions/rename.py"), functions.join("rename.py")).unwrap();
    for handler in ["trespass.py", "gateway_probe.py", "process_put.py"] {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws").join(handler);
        std::fs::copy(source, functions.join(handler)).unwrap();
    }
    project.ok(&["deploy"]);
    let up = project.spawn_up();

    const OBJECTS: usize = 8;
    let mut originals = Vec::new();
    for index in 0..OBJECTS {
        let content: Vec<u8> = (0..(index * 104_729 + 1)).map(|byte| ((byte * 29 + index) % 251) as u8).collect();
        let file = project.path(&format!("scan-{index}.bin"));
        std::fs::write(&file, &content).unwrap();
        project.ok(&["put", &format!("inbox/incoming/scan {index}.bin"), file.to_str().unwrap()]);
        originals.push(content);
    }
    let listing = project.wait_for(&["ls", "archive/renamed/"], Duration::from_secs(180), |listing| {
        listing.as_array().is_some_and(|objects| objects.len() == OBJECTS)
    });
    assert_eq!(listing.as_array().unwrap().len(), OBJECTS, "{listing}");
    for (index, content) in originals.iter().enumerate() {
        let moved = project.command(&["get", &format!("archive/renamed/incoming/scan {index}.bin")]).output().unwrap();
        assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
        assert!(moved.stdout == *content, "object {index} differs after the move");
    }
    let inbox = project
        .wait_for(&["ls", "inbox"], Duration::from_secs(30), |listing| listing.as_array().is_some_and(Vec::is_empty));
    assert_eq!(inbox, serde_json::json!([]), "every original is deleted");

    // The trespass, from a container too: AccessDenied, nothing in `other`.
    let marker = project.path("marker.txt");
    std::fs::write(&marker, "go").unwrap();
    project.ok(&["put", "drop/in/attempt.txt", marker.to_str().unwrap()]);
    project.wait_for(&["ls", "drop/out/"], Duration::from_secs(120), |listing| {
        listing.as_array().is_some_and(|objects| !objects.is_empty())
    });
    assert_eq!(project.ok(&["get", "drop/out/attempt.txt"]), "AccessDenied");
    assert_eq!(project.json(&["ls", "other"]), serde_json::json!([]), "nothing was written outside the permissions");

    // What the gateway answers: the Runtime API and the relay, not Mayfly's loopback API and AWS ports.
    let ports = project.path("ports.json");
    std::fs::write(&ports, format!("[{api_port}, {aws_port}]")).unwrap();
    project.ok(&["put", "drop/probe/ports.json", ports.to_str().unwrap()]);
    project.wait_for(&["ls", "drop/out/"], Duration::from_secs(120), |listing| {
        listing.as_array().is_some_and(|objects| objects.len() == 2)
    });
    let seen: serde_json::Value = serde_json::from_str(&project.ok(&["get", "drop/out/probe.json"])).unwrap();
    assert_eq!(seen["runtime_api"], true, "{seen}");
    assert_eq!(seen["aws_endpoint"], true, "the endpoint is a port on the gateway: {seen}");
    assert!(seen["endpoint"].as_str().unwrap().starts_with("http://"), "{seen}");
    assert_eq!(seen["ca_bundle"], serde_json::Value::Null, "no host path is handed to the container: {seen}");
    assert_eq!(seen["other_ports"][api_port.to_string()], false, "{seen}");
    assert_eq!(seen["other_ports"][aws_port.to_string()], false, "{seen}");
    assert_eq!(seen["outside"], false, "nothing beyond the gateway: {seen}");

    // A `process`-runtime container with permissions joins the function network and writes too.
    project.ok(&["put", "drop/process/go.txt", marker.to_str().unwrap()]);
    project.wait_for(&["ls", "drop/out/"], Duration::from_secs(120), |listing| {
        listing.as_array().is_some_and(|objects| objects.len() == 3)
    });
    assert_eq!(project.ok(&["get", "drop/out/process.txt"]), "written for process/go.txt");
    up.stop();

    // Every request is in the access log under a function key, the refusal too.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    let by_function = |record: &&serde_json::Value| record["token_id"].as_str().is_some_and(|id| id.starts_with("MFS"));
    let refusal = log
        .iter()
        .filter(by_function)
        .find(|record| record["status"] == 403 && record["resource"].as_str().is_some_and(|r| r.contains("other")))
        .unwrap_or_else(|| panic!("no refusal of the trespass in the access log: {log:?}"));
    assert!(refusal["outcome"].as_str().unwrap().contains("function `trespass`"), "{refusal}");
    let deletes =
        log.iter().filter(by_function).filter(|record| record["method"] == "DELETE" && record["status"] == 204);
    assert_eq!(deletes.count(), OBJECTS, "one DELETE per moved object: {log:?}");
    let containers = run(std::process::Command::new("docker").args([
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=mayfly.project={name}"),
    ]));
    assert!(containers.is_empty(), "containers of {name} are left: {containers}");
}
