//! The SQS-compatible endpoint through the real binary and an unmodified AWS
//! client: `mayfly serve` on free loopback ports over TLS, AWS credentials
//! from `mayfly tokens create --aws`, and boto3 configured only through the
//! standard `AWS_*` variables (tests/aws/sqs_client.py) sending, receiving
//! with long polling, deleting and changing visibility (one at a time and in
//! batches), reading queue attributes, seeing a message dead-lettered, and
//! being refused where it must be — on the same endpoint URL as S3, which
//! the script also calls. What it sends are real Mayfly messages, and every
//! request is in the access log under its token.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Project, Served, aws_python, aws_token};

const SPEC: &str = r#"version = 1
name = "NAME"
[buckets.inbox]
[queues.work]
visibility_timeout = "30s"
[queues.poll]
[queues.left]
[queues.retry]
max_receives = 2
dead_letter = "retry-dlq"
[queues.retry-dlq]
[queues.purged]
[api]
"#;

#[test]
fn boto3_unmodified_sends_receives_deletes_and_dead_letters_messages_and_is_refused_where_it_must_be() {
    let project = Project::with_spec(&SPEC.replace("NAME", &support::unique_name("sqs")));
    project.ok(&["deploy"]);
    let server = Served::start(&project);
    let (token, key, secret) = aws_token(
        &project,
        "consumer",
        &["--scope", "queues:read", "--scope", "messages:write", "--scope", "objects:read"],
    );
    let (sender_token, sender_key, sender_secret) = aws_token(&project, "sender", &["--scope", "messages:write"]);

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws/sqs_client.py");
    let mut child = aws_python(&project, &server, &key, &secret)
        .arg(&script)
        .args([&sender_key, &sender_secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While boto3 long-polls `poll`, a message sent by `mayfly send` reaches it.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    if first_line.trim() != "waiting" {
        let output = child.wait_with_output().unwrap();
        panic!("the script did not start its long poll:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    std::thread::sleep(Duration::from_millis(1500));
    project.ok(&["send", "poll", "sent while waiting", "--attribute", "origin=cli"]);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "boto3 script failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_str(&rest).unwrap_or_else(|error| panic!("{error}: {rest}"));

    assert_eq!(
        seen["long_poll"],
        json!([["sent while waiting", {"origin": {"DataType": "String", "StringValue": "cli"}}]])
    );
    let waited = seen["long_poll_waited"].as_f64().unwrap();
    assert!((1.0..9.0).contains(&waited), "received {waited}s into a 10s wait");
    let empty_wait = seen["empty_poll"][1].as_f64().unwrap();
    assert_eq!(seen["empty_poll"][0], 0);
    assert!((0.9..5.0).contains(&empty_wait), "an empty 1s long poll took {empty_wait}s");

    let port = server.aws_address.port();
    assert_eq!(seen["work_url"], format!("https://localhost:{port}/000000000000/work"));
    assert_eq!(seen["listed"], json!(["left", "poll", "purged", "retry", "retry-dlq", "work"]));
    assert_eq!(seen["listed_prefix"], json!(["retry", "retry-dlq"]));
    assert!(seen["sent_id"].as_str().unwrap().parse::<u64>().is_ok(), "{seen}");
    assert_eq!(seen["counts_after_send"], json!(["1", "0", "1"]));
    assert_eq!(seen["work_visibility"], "30");
    assert_eq!(seen["received"], json!(["hello"]), "the delayed message stays hidden");
    assert_eq!(seen["received_attribute"], "blue");
    assert_eq!(seen["received_count"], "1");
    assert_eq!(
        seen["sent_md5s"],
        json!([true, true]),
        "MD5OfMessageBody and MD5OfMessageAttributes as SQS computes them"
    );
    assert_eq!(seen["received_md5s"], json!([true, true]), "MD5OfBody and MD5OfMessageAttributes as SQS computes them");
    assert_eq!(seen["sent_timestamp_is_millis"], true);
    assert_eq!(seen["counts_in_flight"], json!(["0", "1", "1"]));
    assert_eq!(seen["redelivered_counts"], json!(["2", "3"]));
    assert_eq!(seen["stale_receipt_visibility"], "AWS.SimpleQueueService.MessageNotInflight");
    assert_eq!(seen["stale_receipt_delete"], "ReceiptHandleIsInvalid");
    assert_eq!(seen["bad_receipt"], "ReceiptHandleIsInvalid");

    assert_eq!(seen["batch_sent"], json!(["a", "b", "c"]));
    assert_eq!(seen["batch_failed"], json!([["bad", "InvalidParameterValue", true]]));
    assert_eq!(seen["duplicate_ids"], "AWS.SimpleQueueService.BatchEntryIdsNotDistinct");
    assert_eq!(seen["too_many"], "AWS.SimpleQueueService.TooManyEntriesInBatchRequest");
    assert_eq!(seen["batch_received"], json!(["batch a", "batch b", "batch c", "later"]));
    assert_eq!(seen["visibility_batch"], json!([["keep"], [["bad", "ReceiptHandleIsInvalid"]]]));
    assert_eq!(seen["delete_batch"], json!([4, [["bad", "ReceiptHandleIsInvalid"]]]));
    assert_eq!(seen["counts_at_end"], json!(["0", "0"]));

    assert_eq!(
        seen["redrive_policy"],
        json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:retry-dlq", "maxReceiveCount": 2})
    );
    assert_eq!(
        seen["retry_receives"],
        json!([["1"], ["2"], []]),
        "the third receive moves it to the dead-letter queue"
    );
    assert_eq!(seen["dead_lettered"], json!(["poison"]));

    assert_eq!(seen["unknown_queue"], "AWS.SimpleQueueService.NonExistentQueue");
    assert_eq!(seen["unknown_queue_modeled"], true, "boto3 raises its modeled QueueDoesNotExist");
    assert_eq!(seen["bad_max"], "InvalidParameterValue");
    assert_eq!(seen["before_purge"], json!(["1", "1", "1"]));
    assert_eq!(seen["after_purge"], json!(["0", "0", "0"]), "visible, in-flight and delayed messages are purged");
    assert_eq!(seen["purged_receipt"], "ReceiptHandleIsInvalid", "a purged message's receipt is void");
    assert_eq!(seen["purged_receive"], 0);
    assert_eq!(seen["purge_unknown"], "AWS.SimpleQueueService.NonExistentQueue");
    assert_eq!(seen["sender_purge"], "AccessDenied", "a send-only token cannot purge");
    assert_eq!(seen["create"], "AWS.SimpleQueueService.UnsupportedOperation");
    assert_eq!(seen["sender_receive"], "AccessDenied", "a send-only token cannot consume");
    assert_eq!(seen["wrong_secret"], "SignatureDoesNotMatch");
    assert_eq!(seen["raw_signed"], json!([200, null]), "botocore's signer, used by hand, is accepted");
    assert_eq!(seen["tampered_body"], json!([403, "SignatureDoesNotMatch;Sender"]), "the body is signed");
    assert_eq!(seen["s3_scope"], json!([403, "SignatureDoesNotMatch;Sender"]), "SQS requests are signed for `sqs`");
    assert_eq!(seen["unsigned"], json!([403, "AccessDenied;Sender"]));
    assert_eq!(
        seen["after_refusals"], "2",
        "refused requests changed nothing (one from the sender, one signed by hand)"
    );
    assert_eq!(seen["s3_buckets"], json!(["inbox"]), "S3 answers on the same endpoint URL");

    // What boto3 sent is a real Mayfly message.
    let queues = project.json(&["queues"]);
    let row = |name: &str| queues.as_array().unwrap().iter().find(|row| row["queue"] == name).cloned().unwrap();
    assert_eq!((row("work")["visible"].as_u64(), row("left")["visible"].as_u64()), (Some(2), Some(1)));
    assert_eq!(row("retry")["dead_letter_depth"], 1);
    assert_eq!(row("purged")["visible"], 1, "the queue takes messages after its purge");
    let received = project.json(&["receive", "left"]);
    assert_eq!(received[0]["body"], "{\"for\": \"rust\"}");
    assert_eq!(received[0]["attributes"], json!({"source": "boto3"}));

    // Every request is in the access log under its token, refusals with their SQS code.
    let log = project.json(&["access-log", "--limit", "1000"]);
    let log = log.as_array().unwrap();
    let logged = |check: &dyn Fn(&Value) -> bool| log.iter().any(check);
    assert!(logged(&|record| record["token_id"] == token.as_str() && record["resource"] == "sqs/work"), "{log:?}");
    assert!(
        logged(&|record| record["resource"] == "sqs/nope"
            && record["status"] == 400
            && record["outcome"].as_str().unwrap().starts_with("QueueDoesNotExist")),
        "{log:?}"
    );
    assert!(
        logged(&|record| record["token_id"] == sender_token.as_str()
            && record["status"] == 403
            && record["outcome"].as_str().unwrap().starts_with("AccessDenied")),
        "{log:?}"
    );
    assert!(logged(&|record| record["outcome"].as_str().unwrap().starts_with("SignatureDoesNotMatch")), "{log:?}");
    assert!(
        logged(&|record| record["token_id"] == token.as_str()
            && record["resource"] == "sqs/purged"
            && record["status"] == 200),
        "the purge is logged: {log:?}"
    );
    assert!(
        logged(&|record| record["token_id"] == sender_token.as_str()
            && record["resource"] == "sqs/purged"
            && record["status"] == 403),
        "the refused purge is logged: {log:?}"
    );
    assert!(logged(&|record| record["resource"] == "s3/"), "the S3 call is logged as S3's: {log:?}");

    // A revoked token's key stops working at once.
    project.ok(&["tokens", "revoke", &sender_token]);
    let revoked = aws_python(&project, &server, &sender_key, &sender_secret)
        .args(["-c", "import boto3\ntry:\n    boto3.client('sqs').send_message(QueueUrl='work', MessageBody='late')\n    print('allowed')\nexcept Exception as error:\n    print(error.response['Error']['Code'])"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout).trim(),
        "InvalidClientTokenId",
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert_eq!(project.json(&["queues", "work"])[0]["visible"], 2, "the revoked key sent nothing");
}
