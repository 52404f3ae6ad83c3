//! Reading what functions answer: HTTP responses (payload format 2.0) and
//! partial batch failure reports, including those `aws_lambda_events` writes.

mod support;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use mayfly_events::{EventError, HttpResponseParts, parse_api_gateway_v2_response, parse_batch_item_failures};
use support::{ShapeComparison, fixture};

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

// --- partial batch failures ------------------------------------------------------------

#[test]
fn batch_item_failures_of_the_fixture_are_its_ids() {
    let bytes = serde_json::to_vec(&fixture("example-sqs-batch-response.json")).unwrap();
    assert_eq!(parse_batch_item_failures(&bytes).unwrap(), Some(vec!["id2".to_owned(), "id4".to_owned()]));
}

#[test]
fn batch_item_failures_written_by_aws_lambda_events_are_read() {
    let response =
        SqsBatchResponse { batch_item_failures: vec![BatchItemFailure { item_identifier: "17".to_owned() }] };
    let bytes = serde_json::to_vec(&response).unwrap();
    assert_eq!(parse_batch_item_failures(&bytes).unwrap(), Some(vec!["17".to_owned()]));
}

#[test]
fn responses_without_batch_item_failures_mean_the_whole_batch_succeeded() {
    for response in
        ["", "  \n", "null", "{}", r#"{"ok":true}"#, r#""done""#, "42", "[1,2]", r#"{"batchItemFailures":null}"#]
    {
        assert_eq!(parse_batch_item_failures(response.as_bytes()), Ok(None), "{response:?}");
    }
    assert_eq!(parse_batch_item_failures(br#"{"batchItemFailures":[]}"#), Ok(Some(vec![])), "none failed");
}

#[test]
fn malformed_batch_item_failures_name_what_is_wrong() {
    for (response, expected) in [
        ("{not json", "the batch response is not valid JSON"),
        (r#"{"batchItemFailures":"7"}"#, "`batchItemFailures` must be an array of objects, not a string"),
        (r#"{"batchItemFailures":[{"itemIdentifier":"1"},{}]}"#, "`batchItemFailures[1]` has no `itemIdentifier`"),
        (r#"{"batchItemFailures":["1"]}"#, "`batchItemFailures[0]` has no `itemIdentifier`"),
        (r#"{"batchItemFailures":[{"itemIdentifier":7}]}"#, "`batchItemFailures[0].itemIdentifier` must be a string"),
        (r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#, "`batchItemFailures[0].itemIdentifier` is empty"),
        (r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#, "must be a string (the message id), not null"),
    ] {
        let error = parse_batch_item_failures(response.as_bytes()).expect_err(response).to_string();
        assert!(error.contains(expected), "{response}: {error}");
    }
}

// --- HTTP responses --------------------------------------------------------------------

#[test]
fn structured_responses_give_status_headers_cookies_and_body() {
    let response = br#"{
        "statusCode": 201,
        "headers": {"content-type": "text/plain", "x-count": 3},
        "multiValueHeaders": {"x-many": ["a", "b"]},
        "cookies": ["session=abc; HttpOnly"],
        "body": "created",
        "isBase64Encoded": false
    }"#;
    assert_eq!(
        parse_api_gateway_v2_response(response).unwrap(),
        HttpResponseParts {
            status: 201,
            headers: pairs(&[("content-type", "text/plain"), ("x-count", "3"), ("x-many", "a"), ("x-many", "b")]),
            cookies: vec!["session=abc; HttpOnly".to_owned()],
            body: b"created".to_vec(),
        }
    );
}

#[test]
fn base64_bodies_are_decoded() {
    let parsed = parse_api_gateway_v2_response(br#"{"statusCode":200,"body":"/wCA","isBase64Encoded":true}"#).unwrap();
    assert_eq!(parsed.body, vec![0xff, 0x00, 0x80]);
}

#[test]
fn responses_written_by_aws_lambda_events_are_read() {
    let mut response = ApiGatewayV2httpResponse {
        status_code: 404,
        body: Some(Body::Text("no such item".to_owned())),
        cookies: vec!["a=1".to_owned()],
        ..ApiGatewayV2httpResponse::default()
    };
    response.headers.insert("content-type", "text/plain".parse().unwrap());
    let parsed = parse_api_gateway_v2_response(&serde_json::to_vec(&response).unwrap()).unwrap();
    assert_eq!(parsed.status, 404);
    assert_eq!(parsed.body, b"no such item");
    assert_eq!(parsed.cookies, vec!["a=1".to_owned()]);
    assert!(parsed.headers.contains(&("content-type".to_owned(), "text/plain".to_owned())), "{:?}", parsed.headers);
}

#[test]
fn any_other_json_value_is_the_body_of_a_200() {
    for response in [r#"{"items":[1,2]}"#, r#""hello""#, "42", "[]", "null", r#"{"status":"ok"}"#] {
        assert_eq!(
            parse_api_gateway_v2_response(format!(" {response}\n").as_bytes()).unwrap(),
            HttpResponseParts {
                status: 200,
                headers: pairs(&[("content-type", "application/json")]),
                cookies: vec![],
                body: response.as_bytes().to_vec(),
            },
            "{response}"
        );
    }
}

#[test]
fn malformed_responses_name_the_field() {
    for (response, expected) in [
        ("not json", "the HTTP response is not valid JSON"),
        ("", "the HTTP response is not valid JSON"),
        (r#"{"statusCode":"abc"}"#, "`statusCode` must be an integer from 100 to 599"),
        (r#"{"statusCode":700}"#, "`statusCode` must be an integer from 100 to 599, not 700"),
        (r#"{"statusCode":200,"headers":[]}"#, "`headers` must be an object, not an array"),
        (r#"{"statusCode":200,"headers":{"a":{}}}"#, "`headers.a` must be a string, not an object"),
        (r#"{"statusCode":200,"multiValueHeaders":{"a":"b"}}"#, "`multiValueHeaders.a` must be an array of strings"),
        (r#"{"statusCode":200,"cookies":"a=1"}"#, "`cookies` must be an array of strings, not a string"),
        (r#"{"statusCode":200,"body":{"a":1}}"#, "`body` must be a string (serialize JSON bodies yourself)"),
        (r#"{"statusCode":200,"isBase64Encoded":"yes"}"#, "`isBase64Encoded` must be true or false"),
        (r#"{"statusCode":200,"body":"***","isBase64Encoded":true}"#, "`body` is not valid base64"),
    ] {
        let error = parse_api_gateway_v2_response(response.as_bytes()).expect_err(response);
        assert!(matches!(error, EventError::InvalidJson { .. } | EventError::Malformed { .. }));
        assert!(error.to_string().contains(expected), "{response}: {error}");
    }
}

#[test]
fn a_string_status_code_is_accepted_as_api_gateway_does() {
    assert_eq!(parse_api_gateway_v2_response(br#"{"statusCode":"204"}"#).unwrap().status, 204);
}

// --- the shape comparison itself ---------------------------------------------------------

#[test]
fn shape_comparison_lists_every_mismatch_at_once() {
    let fixture = serde_json::json!({"a": 1, "b": {"c": "x", "d": [ {"e": true} ]}, "f": "s", "g": null});
    let ours = serde_json::json!({"a": "1", "b": {"d": [ {"e": 1} ]}, "g": 5, "extra": 0});
    let comparison = ShapeComparison { maps_keyed_by_data: &[], deliberately_absent: &[("f", "not here")] };
    let panic = std::panic::catch_unwind(|| comparison.assert_fixture_keys_are_in(&fixture, &ours)).unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(message.starts_with("3 shape mismatches"), "{message}");
    assert!(message.contains("a: the fixture has a number, Mayfly has a string"), "{message}");
    assert!(message.contains("b.c: missing (the fixture has a string)"), "{message}");
    assert!(message.contains("b.d[].e: the fixture has a boolean, Mayfly has a number"), "{message}");
}
