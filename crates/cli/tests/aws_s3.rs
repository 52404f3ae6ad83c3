//! The S3-compatible endpoint through the real binary and an unmodified AWS
//! client: `mayfly serve` on free loopback ports over TLS, AWS credentials
//! from `mayfly tokens create --aws`, and boto3 configured only through the
//! standard `AWS_*` variables (tests/aws/s3_client.py) doing reads, writes,
//! listings, copies, deletes and presigned URLs, and being refused where it
//! must be. Every write fires its bucket event; every request is in the
//! access log under its token.

mod support;

use serde_json::Value;
use support::{Project, Served, aws_cli, aws_python, aws_token, files_holding};

/// Carried by multipart parts and metadata; must never reach the disk in plaintext.
const MARKER: &str = "MULTIPART-PHI-MARKER-7731";

const SPEC: &str = r#"version = 1
name = "NAME"
[buckets.inbox]
[buckets.archive]
[buckets.other]
[queues.work]
[api]
"#;

#[test]
fn boto3_unmodified_reads_writes_lists_copies_and_deletes_objects_and_is_refused_where_it_must_be() {
    let project = Project::with_spec(&SPEC.replace("NAME", &support::unique_name("s3")));
    project.ok(&["deploy"]);
    let server = Served::start(&project);
    let (token, key, secret) = aws_token(&project, "handler", &["--scope", "objects:read", "--scope", "objects:write"]);
    assert!(key.starts_with("MF") && key.len() == 18, "{key}");
    let (_, limited_key, limited_secret) =
        aws_token(&project, "limited", &["--scope", "objects:read", "--bucket", "other"]);

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/s3_client.py");
    let output = aws_python(&project, &server, &key, &secret)
        .arg(&script)
        .args([&limited_key, &limited_secret, MARKER])
        .output()
        .unwrap();
    assert!(output.status.success(), "boto3 script failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["buckets"], serde_json::json!(["archive", "inbox", "other"]), "{seen}");
    assert_eq!(seen["head_size"], 2200);
    assert_eq!(seen["get_matches"], true);
    assert_eq!(seen["range"], "of patient");
    assert_eq!(seen["content_range"], "bytes 6-15/2200");
    assert_eq!(seen["missing"], "NoSuchKey");
    assert_eq!(seen["no_bucket"], "404", "HeadBucket has no body, so boto3 sees the status: {seen}");
    assert_eq!(
        seen["listed"],
        serde_json::json!(["batch/0.txt", "batch/1.txt", "batch/2.txt", "batch/3.txt", "batch/4.txt"])
    );
    assert_eq!(seen["prefixes"], serde_json::json!(["batch/deeper/"]));
    assert_eq!(
        seen["paged"],
        serde_json::json!([
            ["batch/0.txt", "batch/1.txt"],
            ["batch/2.txt", "batch/3.txt"],
            ["batch/4.txt", "batch/deeper/x.txt"]
        ])
    );
    assert_eq!(seen["after"], serde_json::json!(["batch/4.txt", "batch/deeper/x.txt", "charts/sp ace #1?.txt"]));
    assert_eq!(seen["moved"], true);
    assert_eq!(seen["original_gone"], "404");
    assert_eq!(seen["deleted"], serde_json::json!(["batch/0.txt", "batch/1.txt"]));
    assert_eq!(seen["presigned"], "item 4");
    assert_eq!(seen["presigned_put"], "uploaded");
    assert_eq!(seen["tampered"], 403, "an altered presigned URL is refused");
    assert_eq!(seen["unsigned"], 403, "an unsigned request is refused");
    assert_eq!(seen["wrong_secret"], "SignatureDoesNotMatch");
    assert_eq!(seen["unknown_key"], "InvalidAccessKeyId");
    assert_eq!(seen["limited_buckets"], serde_json::json!(["other"]));
    assert_eq!(seen["limited_other_bucket"], "AccessDenied");
    assert_eq!(seen["limited_write"], "AccessDenied");

    // Multipart uploads, by S3's rules.
    assert_eq!(seen["upload_file_matches"], true, "{seen}");
    assert_eq!(seen["upload_file_head"], serde_json::json!([12 * 1024 * 1024 + 123, "application/x-chart", true]));
    assert_eq!(seen["uploads_listed"], serde_json::json!(["big/direct.bin"]));
    assert_eq!(seen["parts_listed"], serde_json::json!([[1, 5 * 1024 * 1024, true], [2, 4, false]]));
    assert_eq!(seen["invalid_part"], "InvalidPart");
    assert_eq!(seen["part_order"], "InvalidPartOrder");
    assert_eq!(seen["bad_part_number"], "InvalidArgument");
    assert_eq!(seen["no_such_upload"], "NoSuchUpload");
    assert_eq!(seen["direct_matches"], true);
    assert_eq!(seen["direct_metadata"], serde_json::json!(["text/plain", {"ward": "7"}]));
    assert_eq!(seen["completed_twice"], "NoSuchUpload");
    assert_eq!(seen["too_small"], "EntityTooSmall");
    assert_eq!(seen["aborted"], "NoSuchUpload");
    assert_eq!(seen["aborted_object"], "404");
    assert_eq!(seen["part_copy_matches"], true);
    // Metadata and content type, stored with the object and following it.
    assert_eq!(seen["metadata_head"], serde_json::json!(["application/json", true]));
    assert_eq!(seen["metadata_get"], serde_json::json!(["application/json", true]));
    assert_eq!(seen["metadata_copied"], true);
    assert_eq!(seen["metadata_replaced"], serde_json::json!(["text/plain", {"ward": "9"}]));
    assert_eq!(seen["metadata_overwritten"], serde_json::json!(["application/octet-stream", {}]));
    // Conditional GET and HEAD.
    assert_eq!(seen["if_none_match"], "304");
    assert_eq!(seen["if_none_match_other"], "[]");
    assert_eq!(seen["if_match"], "[]");
    assert_eq!(seen["if_match_other"], "PreconditionFailed");
    assert_eq!(seen["head_if_match_other"], "412");
    assert_eq!(seen["if_modified_since"], "304");
    assert_eq!(seen["if_modified_since_earlier"], "[]");
    assert_eq!(seen["if_unmodified_since"], "PreconditionFailed");
    assert_eq!(seen["if_unmodified_since_later"], "[]");

    // Parts (of the upload left in progress too) and metadata are sealed at rest.
    let (found, looked_at) = files_holding(&project.root.join(".mayfly"), MARKER.as_bytes());
    assert_eq!(found, Vec::<String>::new(), "the marker is in plaintext in these files");
    let (_, staged) = files_holding(&project.root.join(".mayfly/buckets/.uploads"), MARKER.as_bytes());
    assert!(staged >= 2, "the upload in progress has its record and part staged; {looked_at} files looked at");

    // Writes through the endpoint fire bucket events exactly as `mayfly put` does.
    let events = project.json(&["events", "--limit", "1000"]);
    let events = events.as_array().unwrap();
    let has = |kind: &str, bucket: &str, key: &str| {
        events.iter().any(|event| event["kind"] == kind && event["bucket"] == bucket && event["key"] == key)
    };
    assert!(has("created", "inbox", "charts/sp ace #1?.txt"), "{events:?}");
    assert!(has("created", "archive", "renamed/chart.txt"), "{events:?}");
    assert!(has("deleted", "inbox", "charts/sp ace #1?.txt"), "{events:?}");
    assert!(has("deleted", "inbox", "batch/0.txt"), "{events:?}");
    assert!(has("created", "inbox", "presigned/up.txt"), "{events:?}");
    let created = |key: &str| {
        events
            .iter()
            .filter(|event| event["kind"] == "created" && event["bucket"] == "inbox" && event["key"] == key)
            .count()
    };
    assert_eq!(created("big/upload.bin"), 1, "one event per completed upload: {events:?}");
    assert_eq!(created("big/direct.bin"), 1, "{events:?}");
    assert_eq!(created("big/small.bin"), 0, "an aborted upload writes nothing: {events:?}");
    assert_eq!(created("big/pending.bin"), 0, "an upload in progress writes nothing: {events:?}");
    assert_eq!(project.ok(&["get", "archive/renamed/chart.txt"]), "chart of patient 0042\n".repeat(100));

    // Every request is in the access log, refusals too, under its token.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    assert!(log.iter().any(|record| record["token_id"] == token.as_str() && record["method"] == "PUT"), "{log:?}");
    assert!(
        log.iter()
            .any(|record| record["status"] == 403 && record["outcome"].as_str().unwrap().contains("AccessDenied")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|record| record["outcome"].as_str().unwrap().starts_with("SignatureDoesNotMatch")),
        "{log:?}"
    );

    // A revoked token's key stops working at once.
    project.ok(&["tokens", "revoke", &token]);
    let revoked = aws_python(&project, &server, &key, &secret)
        .args(["-c", "import boto3\ntry:\n    boto3.client('s3', config=__import__('botocore').config.Config(s3={'addressing_style': 'path'})).list_objects_v2(Bucket='inbox')\n    print('allowed')\nexcept Exception as error:\n    print(error.response['Error']['Code'])"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout).trim(),
        "InvalidAccessKeyId",
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
}

/// Run the AWS CLI; its stdout, after checking it succeeded.
fn aws(project: &Project, server: &Served, key: &str, secret: &str, args: &[&str]) -> String {
    let output = aws_cli(project, server, key, secret).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "aws {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_aws_cli_unmodified_copies_a_large_file_up_and_down_in_parts_lists_removes_and_sends_messages() {
    let project = Project::with_spec(&SPEC.replace("NAME", &support::unique_name("awscli")));
    project.ok(&["deploy"]);
    let server = Served::start(&project);
    let (_, key, secret) = aws_token(
        &project,
        "cli",
        &["--scope", "objects:read", "--scope", "objects:write", "--scope", "messages:write", "--scope", "queues:read"],
    );
    let aws = |args: &[&str]| aws(&project, &server, &key, &secret, args);

    // 20 MiB: above the CLI's 8 MiB multipart threshold, so it goes up and down in parts.
    let size = 20 * 1024 * 1024 + 17;
    let body: Vec<u8> = MARKER.bytes().cycle().take(size).collect();
    let local = project.path("scan.bin");
    std::fs::write(&local, &body).unwrap();
    aws(&["s3", "cp", local.to_str().unwrap(), "s3://inbox/scans/scan.bin"]);
    let back = project.path("back.bin");
    aws(&["s3", "cp", "s3://inbox/scans/scan.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == body, "the 20 MiB file came back changed");
    let listed = aws(&["s3", "ls", "s3://inbox/scans/"]);
    assert!(listed.contains(&format!("{size} scan.bin")), "{listed}");
    let head: Value =
        serde_json::from_str(&aws(&["s3api", "head-object", "--bucket", "inbox", "--key", "scans/scan.bin"])).unwrap();
    assert_eq!(head["ContentLength"], size as u64, "{head}");
    aws(&["s3", "rm", "s3://inbox/scans/scan.bin"]);
    // `aws s3 ls` exits 1 when it lists nothing.
    let after = aws_cli(&project, &server, &key, &secret).args(["s3", "ls", "s3://inbox/scans/"]).output().unwrap();
    assert_eq!((after.status.code(), String::from_utf8_lossy(&after.stdout).trim()), (Some(1), ""), "{after:?}");

    // The upload was multipart: exactly one created event, then the deletion.
    let events = project.json(&["events", "--limit", "1000"]);
    let events = events.as_array().unwrap();
    let count =
        |kind: &str| events.iter().filter(|event| event["kind"] == kind && event["key"] == "scans/scan.bin").count();
    assert_eq!((count("created"), count("deleted")), (1, 1), "{events:?}");
    // Nothing the multipart upload wrote reaches the disk unsealed.
    std::fs::remove_file(&local).unwrap();
    std::fs::remove_file(&back).unwrap();
    let (found, _) = files_holding(&project.root.join(".mayfly"), MARKER.as_bytes());
    assert_eq!(found, Vec::<String>::new(), "the marker is in plaintext in these files");

    // SQS on the same endpoint URL. AWS CLI v1 ignores AWS_ENDPOINT_URL for
    // SQS (it goes to queue.amazonaws.com), so the URL is given explicitly.
    let endpoint = format!("https://localhost:{}", server.aws_address.port());
    let sqs = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--endpoint-url", endpoint.as_str()]);
        aws(&args)
    };
    let url = sqs(&["sqs", "get-queue-url", "--queue-name", "work", "--query", "QueueUrl", "--output", "text"]);
    let url = url.trim();
    let sent: Value =
        serde_json::from_str(&sqs(&["sqs", "send-message", "--queue-url", url, "--message-body", "scan ready"]))
            .unwrap();
    assert!(sent["MessageId"].is_string(), "{sent}");
    let received: Value =
        serde_json::from_str(&sqs(&["sqs", "receive-message", "--queue-url", url, "--wait-time-seconds", "5"]))
            .unwrap();
    let message = &received["Messages"][0];
    assert_eq!(message["Body"], "scan ready", "{received}");
    sqs(&["sqs", "delete-message", "--queue-url", url, "--receipt-handle", message["ReceiptHandle"].as_str().unwrap()]);
    let again = sqs(&["sqs", "receive-message", "--queue-url", url, "--wait-time-seconds", "1"]);
    assert!(again.trim().is_empty() || !again.contains("scan ready"), "the message was deleted: {again}");
}
