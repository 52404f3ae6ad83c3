//! Every value Mayfly emits deserializes into `aws_lambda_events`' types with
//! its fields intact, and has every key (at every depth, with a compatible
//! type) of that crate's JSON fixtures, except the few listed with a reason.

mod support;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::cloudwatch_events::CloudWatchEvent;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::s3::S3Event;
use aws_lambda_events::sqs::SqsEvent;
use mayfly_core::queue::ReceiptHandle;
use mayfly_core::{Name, ObjectEvent, ObjectEventKind, Timestamp};
use mayfly_events::{
    BODY_ENCODING_ATTRIBUTE, HttpRequestParts, api_gateway_v2_request, s3_event, s3_event_for_route, scheduled_event,
    sqs_event,
};
use mayfly_state::ReceivedMessage;
use serde_json::Value;
use support::{ShapeComparison, fixture};

/// 2026-11-25T06:38:22.123Z
const AT: Timestamp = Timestamp(1_795_588_702_123);

fn name(text: &str) -> Name {
    Name::new(text).expect("test names are valid")
}

fn created(sequence: u64, key: &str) -> ObjectEvent {
    ObjectEvent {
        sequence,
        bucket: name("inbox"),
        key: key.to_owned(),
        kind: ObjectEventKind::Created,
        size: 1024,
        etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\"".to_owned()),
        at: AT,
        reason: None,
    }
}

fn received(message_id: u64, body: &[u8], attributes: &[(&str, &str)]) -> ReceivedMessage {
    ReceivedMessage {
        message_id,
        receipt: ReceiptHandle { message_id, receive_count: 2 },
        body: body.to_vec(),
        attributes: attributes.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        sent_at: Timestamp(1_520_621_625_029),
        receive_count: 2,
        lease_until: Timestamp(1_520_621_655_029),
    }
}

fn http_request() -> HttpRequestParts {
    HttpRequestParts {
        method: "POST".to_owned(),
        raw_path: "/items/42".to_owned(),
        raw_query_string: "tag=a&tag=b&q=red%20shoes".to_owned(),
        headers: vec![
            ("Host".to_owned(), "localhost:8080".to_owned()),
            ("User-Agent".to_owned(), "curl/8.5.0".to_owned()),
            ("X-Multi".to_owned(), "one".to_owned()),
            ("x-multi".to_owned(), "two".to_owned()),
            ("Cookie".to_owned(), "session=abc; theme=dark".to_owned()),
        ],
        body: br#"{"name":"shoe"}"#.to_vec(),
        route_key: Some("POST /items/{id}".to_owned()),
        path_parameters: vec![("id".to_owned(), "42".to_owned())],
        protocol: "HTTP/1.1".to_owned(),
        source_ip: "127.0.0.1".to_owned(),
        request_id: "req-1".to_owned(),
        received_at: Timestamp(1_587_481_701_067),
    }
}

// --- S3 ---------------------------------------------------------------------------

#[test]
fn s3_event_deserializes_into_aws_lambda_events_with_its_fields() {
    let deleted = ObjectEvent { kind: ObjectEventKind::Deleted, size: 0, etag: None, ..created(300, "gone.txt") };
    let value = s3_event_for_route("to-archive", &[created(7, "photos/red flower (1).jpg"), deleted]);
    let event: S3Event = serde_json::from_value(value).expect("an S3Event");
    assert_eq!(event.records.len(), 2);
    let put = &event.records[0];
    assert_eq!(put.event_version.as_deref(), Some("2.1"));
    assert_eq!(put.event_source.as_deref(), Some("aws:s3"));
    assert_eq!(put.aws_region.as_deref(), Some("local"));
    assert_eq!(put.event_time.timestamp_millis(), AT.as_millis());
    assert_eq!(put.event_name.as_deref(), Some("ObjectCreated:Put"));
    assert_eq!(put.s3.schema_version.as_deref(), Some("1.0"));
    assert_eq!(put.s3.configuration_id.as_deref(), Some("to-archive"));
    assert_eq!(put.s3.bucket.name.as_deref(), Some("inbox"));
    assert_eq!(put.s3.bucket.arn.as_deref(), Some("arn:aws:s3:::inbox"));
    assert_eq!(put.s3.object.key.as_deref(), Some("photos/red+flower+%281%29.jpg"));
    assert_eq!(put.s3.object.size, Some(1024));
    assert_eq!(put.s3.object.e_tag.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"), "without quotes");
    assert_eq!(put.s3.object.sequencer.as_deref(), Some("0000000000000007"));
    let delete = &event.records[1];
    assert_eq!(delete.event_name.as_deref(), Some("ObjectRemoved:Delete"));
    assert_eq!(delete.s3.object.key.as_deref(), Some("gone.txt"));
    assert_eq!((delete.s3.object.size, delete.s3.object.e_tag.as_deref()), (None, None), "as S3 sends a delete");
    assert_eq!(delete.s3.object.sequencer.as_deref(), Some("000000000000012C"));
}

#[test]
fn s3_sequencers_sort_as_strings_in_event_order() {
    let sequences = [1_u64, 9, 10, 255, 256, 4_096, u64::MAX];
    let sequencers: Vec<String> = sequences.iter().map(|sequence| mayfly_events::s3_sequencer(*sequence)).collect();
    let mut sorted = sequencers.clone();
    sorted.sort();
    assert_eq!(sorted, sequencers);
    assert!(sequencers.iter().all(|sequencer| sequencer.len() == 16));
}

#[test]
fn s3_keys_are_url_encoded_as_s3_encodes_them() {
    for (key, encoded) in [
        ("plain.txt", "plain.txt"),
        ("a b", "a+b"),
        ("a+b", "a%2Bb"),
        ("dir/sub/file.csv", "dir/sub/file.csv"),
        ("ünï çode.txt", "%C3%BCn%C3%AF+%C3%A7ode.txt"),
        ("q?x=1&y=2#f", "q%3Fx%3D1%26y%3D2%23f"),
        ("star*-_.", "star*-_."),
    ] {
        assert_eq!(mayfly_events::s3_key_url_encoded(key), encoded, "{key}");
    }
}

#[test]
fn s3_event_has_every_key_of_the_fixture() {
    ShapeComparison {
        maps_keyed_by_data: &["Records[].responseElements"],
        deliberately_absent: &[(
            "Records[].s3.object.versionId",
            "Mayfly buckets are not versioned; S3 leaves it out for unversioned buckets too",
        )],
    }
    .assert_fixture_keys_are_in(&fixture("example-s3-event.json"), &s3_event(&[created(1, "Happy Face.jpg")]));
}

// --- SQS --------------------------------------------------------------------------

#[test]
fn sqs_event_deserializes_into_aws_lambda_events_with_its_fields() {
    let messages = [received(41, b"Test message.", &[("trace", "abc"), ("kind", "order")]), received(42, b"{}", &[])];
    let event: SqsEvent = serde_json::from_value(sqs_event(&name("work"), &messages)).expect("an SqsEvent");
    assert_eq!(event.records.len(), 2);
    let record = &event.records[0];
    assert_eq!(record.message_id.as_deref(), Some("41"));
    assert_eq!(record.receipt_handle.as_deref(), Some("41.2"));
    assert_eq!(record.receipt_handle.as_deref().unwrap().parse::<ReceiptHandle>().unwrap(), messages[0].receipt);
    assert_eq!(record.body.as_deref(), Some("Test message."));
    // The MD5 AWS's own documentation shows for this body (the SQS event example in
    // the Lambda developer guide); the crate fixture's md5OfBody is not a real MD5.
    assert_eq!(record.md5_of_body.as_deref(), Some("e4e68fb7bd0e697a0ae8f1bb342846b3"));
    assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
    assert_eq!(record.event_source_arn.as_deref(), Some("arn:aws:sqs:local:000000000000:work"));
    assert_eq!(record.aws_region.as_deref(), Some("local"));
    assert_eq!(record.attributes["ApproximateReceiveCount"], "2");
    assert_eq!(record.attributes["SentTimestamp"], "1520621625029");
    assert_eq!(record.attributes["ApproximateFirstReceiveTimestamp"], "1520621625029");
    assert_eq!(record.attributes["SenderId"], "mayfly");
    assert!(!record.attributes.contains_key(BODY_ENCODING_ATTRIBUTE));
    let trace = &record.message_attributes["trace"];
    assert_eq!(trace.string_value.as_deref(), Some("abc"));
    assert_eq!(trace.data_type.as_deref(), Some("String"));
    assert_eq!((trace.string_list_values.len(), trace.binary_list_values.len()), (0, 0));
    assert_eq!(record.message_attributes["kind"].string_value.as_deref(), Some("order"));
    assert!(record.md5_of_message_attributes.as_deref().is_some_and(|md5| md5.len() == 32));
    assert_eq!(event.records[1].md5_of_message_attributes, None, "null without attributes, as Lambda sends it");
    assert!(event.records[1].message_attributes.is_empty());
}

#[test]
fn sqs_bodies_that_are_not_utf8_are_base64_and_marked() {
    let bytes = [0xff, 0xfe, 0x00, 0xc3, 0x28];
    let value = sqs_event(&name("work"), &[received(1, &bytes, &[])]);
    let event: SqsEvent = serde_json::from_value(value).expect("an SqsEvent");
    let record = &event.records[0];
    assert_eq!(record.body.as_deref(), Some("//4Awyg="));
    assert_eq!(record.attributes[BODY_ENCODING_ATTRIBUTE], "base64");
    use md5::Digest as _;
    let md5_of_delivered_body: String = md5::Md5::digest(b"//4Awyg=").iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(record.md5_of_body.as_deref(), Some(md5_of_delivered_body.as_str()));
}

#[test]
fn sqs_md5_of_message_attributes_matches_sqs() {
    // The algorithm as the SQS developer guide documents it ("Calculating the MD5
    // message digest for message attributes"), spelled out independently here.
    let value = sqs_event(&name("work"), &[received(1, b"x", &[("attr", "value")])]);
    let event: SqsEvent = serde_json::from_value(value).expect("an SqsEvent");
    let mut expected = Vec::new();
    for (bytes, transport) in [(&b"attr"[..], None), (b"String", Some(1_u8)), (b"value", None)] {
        expected.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        expected.extend_from_slice(bytes);
        expected.extend(transport);
    }
    use md5::Digest as _;
    let expected: String = md5::Md5::digest(&expected).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(event.records[0].md5_of_message_attributes.as_deref(), Some(expected.as_str()));
}

#[test]
fn sqs_event_has_every_key_of_the_fixture() {
    ShapeComparison {
        maps_keyed_by_data: &["Records[].messageAttributes", "Records[].attributes"],
        deliberately_absent: &[(
            "Records[].messageAttributes.*.binaryValue",
            "Mayfly message attributes are strings; SQS also leaves it out of String attributes",
        )],
    }
    .assert_fixture_keys_are_in(
        &fixture("example-sqs-event.json"),
        &sqs_event(&name("work"), &[received(1, b"Message Body", &[("Attribute1", "AttributeValue1")])]),
    );
}

#[test]
fn sqs_event_has_the_system_attributes_of_the_fixture() {
    let ours = sqs_event(&name("work"), &[received(1, b"body", &[])]);
    let fixture = fixture("example-sqs-event.json");
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value["Records"][0]["attributes"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&ours), keys(&fixture));
}

// --- EventBridge ------------------------------------------------------------------

#[test]
fn scheduled_event_deserializes_into_eventbridge_and_cloudwatch_events() {
    let value = scheduled_event("nightly", AT, "firing-1");
    let event: EventBridgeEvent = serde_json::from_value(value.clone()).expect("an EventBridgeEvent");
    assert_eq!(event.version.as_deref(), Some("0"));
    assert_eq!(event.id.as_deref(), Some("firing-1"));
    assert_eq!(event.detail_type, "Scheduled Event");
    assert_eq!(event.source, "aws.events");
    assert_eq!(event.account.as_deref(), Some("000000000000"));
    assert_eq!(event.time.map(|time| time.timestamp()), Some(AT.as_millis() / 1000));
    assert_eq!(event.region.as_deref(), Some("local"));
    assert_eq!(event.resources, Some(vec!["arn:aws:events:local:000000000000:rule/nightly".to_owned()]));
    assert_eq!(event.detail, serde_json::json!({}));
    assert_eq!(value["time"], "2026-11-25T06:38:22Z");
    let event: CloudWatchEvent = serde_json::from_value(value).expect("a CloudWatchEvent");
    assert_eq!(event.detail_type.as_deref(), Some("Scheduled Event"));
    assert_eq!(event.source.as_deref(), Some("aws.events"));
}

#[test]
fn scheduled_event_has_every_key_of_the_fixture() {
    ShapeComparison { maps_keyed_by_data: &[], deliberately_absent: &[] }
        .assert_fixture_keys_are_in(&fixture("example-eventbridge-schedule.json"), &scheduled_event("r", AT, "id"));
}

// --- API Gateway HTTP API -----------------------------------------------------------

#[test]
fn api_gateway_request_deserializes_into_aws_lambda_events_with_its_fields() {
    let value = api_gateway_v2_request(http_request());
    let request: ApiGatewayV2httpRequest = serde_json::from_value(value.clone()).expect("an ApiGatewayV2httpRequest");
    assert_eq!(request.version.as_deref(), Some("2.0"));
    assert_eq!(request.route_key.as_deref(), Some("POST /items/{id}"));
    assert_eq!(request.raw_path.as_deref(), Some("/items/42"));
    assert_eq!(request.raw_query_string.as_deref(), Some("tag=a&tag=b&q=red%20shoes"));
    assert_eq!(request.headers["host"], "localhost:8080");
    assert_eq!(request.headers["x-multi"], "one,two", "repeated headers are comma-joined");
    assert!(request.headers.get("cookie").is_none(), "cookies move to `cookies`");
    assert_eq!(request.cookies, Some(vec!["session=abc".to_owned(), "theme=dark".to_owned()]));
    assert_eq!(request.query_string_parameters.first("q"), Some("red shoes"));
    assert_eq!(value["queryStringParameters"]["tag"], "a,b", "repeated parameters are comma-joined");
    assert_eq!(request.path_parameters["id"], "42");
    assert_eq!(request.body.as_deref(), Some(r#"{"name":"shoe"}"#));
    assert!(!request.is_base64_encoded);
    let context = &request.request_context;
    assert_eq!(context.http.method, "POST");
    assert_eq!(context.http.path.as_deref(), Some("/items/42"));
    assert_eq!(context.http.protocol.as_deref(), Some("HTTP/1.1"));
    assert_eq!(context.http.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(context.http.user_agent.as_deref(), Some("curl/8.5.0"));
    assert_eq!(context.request_id.as_deref(), Some("req-1"));
    assert_eq!(context.route_key.as_deref(), Some("POST /items/{id}"));
    assert_eq!(context.stage.as_deref(), Some("$default"));
    assert_eq!(context.time.as_deref(), Some("21/Apr/2020:15:08:21 +0000"));
    assert_eq!(context.time_epoch, 1_587_481_701_067);
    assert_eq!(context.account_id.as_deref(), Some("000000000000"));
    assert_eq!(context.apiid.as_deref(), Some("mayfly"));
    assert_eq!(context.domain_name.as_deref(), Some("localhost:8080"));
    assert_eq!(context.domain_prefix.as_deref(), Some("localhost"));
}

#[test]
fn api_gateway_route_key_defaults_to_method_and_path_and_binary_bodies_are_base64() {
    let request = HttpRequestParts {
        route_key: None,
        body: vec![0xff, 0x00, 0x80],
        headers: vec![],
        raw_query_string: String::new(),
        path_parameters: vec![],
        ..http_request()
    };
    let value = api_gateway_v2_request(request);
    assert_eq!(value["routeKey"], "POST /items/42");
    assert_eq!(value["requestContext"]["routeKey"], "POST /items/42");
    assert_eq!(value["body"], "/wCA");
    assert_eq!(value["isBase64Encoded"], true);
    for absent in ["cookies", "queryStringParameters", "pathParameters"] {
        assert!(value.get(absent).is_none(), "{absent} is left out when empty");
    }
    assert_eq!(value["requestContext"]["domainName"], "localhost");
    let request: ApiGatewayV2httpRequest = serde_json::from_value(value).expect("an ApiGatewayV2httpRequest");
    assert!(request.is_base64_encoded);
}

#[test]
fn api_gateway_request_has_every_key_of_the_fixture_without_an_authorizer() {
    ShapeComparison {
        maps_keyed_by_data: &["headers"],
        deliberately_absent: &[("requestContext.authentication", "Mayfly's API does not do mutual TLS")],
    }
    .assert_fixture_keys_are_in(
        &fixture("example-apigw-v2-request-no-authorizer.json"),
        &api_gateway_v2_request(http_request()),
    );
}

#[test]
fn api_gateway_request_has_every_key_of_the_fixture_with_cookies_query_and_path_parameters() {
    ShapeComparison {
        maps_keyed_by_data: &["headers", "queryStringParameters", "pathParameters", "stageVariables"],
        deliberately_absent: &[
            ("requestContext.authentication", "Mayfly's API does not do mutual TLS"),
            ("requestContext.authorizer", "Mayfly's API has no authorizers"),
            ("stageVariables", "Mayfly's API has one stage, `$default`, without variables"),
        ],
    }
    .assert_fixture_keys_are_in(
        &fixture("example-apigw-v2-request-multi-value-parameters.json"),
        &api_gateway_v2_request(http_request()),
    );
}
