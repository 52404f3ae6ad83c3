//! The S3-compatible endpoint through the real binary and an unmodified AWS
//! client: `mayfly serve` on free loopback ports over TLS, AWS credentials
//! from `mayfly tokens create --aws`, and boto3 configured only through the
//! standard `AWS_*` variables (tests/aws/s3_client.py) doing reads, writes,
//! listings, copies, deletes and presigned URLs, and being refused where it
//! must be. Every write fires its bucket event; every request is in the
//! access log under its token.

mod support;

use serde_json::Value;
use support::{Project, Served, aws_python, aws_token};

const SPEC: &str = r#"version = 1
name = "NAME"
[buckets.inbox]
[buckets.archive]
[buckets.other]
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
        .args([&limited_key, &limited_secret])
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
