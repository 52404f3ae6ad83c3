//! SQS batch records for queue messages, and the partial batch failure report
//! a function may answer with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mayfly_core::{Name, TRACE_HEADER_ATTRIBUTE};
use mayfly_state::ReceivedMessage;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use crate::{EventError, LOCAL_ACCOUNT_ID, LOCAL_REGION};

/// The record attribute (in `attributes`, beside `ApproximateReceiveCount`)
/// that says how `body` is encoded. Present, with the value `"base64"`, only
/// when the message body is not valid UTF-8.
///
/// SQS only carries text, so AWS never sends such a body; Mayfly queues carry
/// arbitrary bytes. Such a body is delivered as standard base64 (with padding)
/// so the record stays valid JSON and the bytes survive; a handler that only
/// ever sends text never sees this attribute.
pub const BODY_ENCODING_ATTRIBUTE: &str = "MayflyBodyEncoding";

/// The `SenderId` of every record: Mayfly has no IAM principals.
const SENDER_ID: &str = "mayfly";

/// An SQS event (`{"Records": [...]}`) for messages received from `queue`, one
/// record each, in the order given.
///
/// `messageId` is Mayfly's message id and `receiptHandle` its receipt
/// (`<id>.<receive count>`), the string the control plane uses to delete the
/// message. `md5OfBody` is the MD5 of `body` as delivered (for a UTF-8 body,
/// the body's bytes; see [`BODY_ENCODING_ATTRIBUTE`] for other bodies), so a
/// handler's integrity check holds. Attributes become `String` message
/// attributes, and `md5OfMessageAttributes` is computed as SQS computes it
/// (`null` without attributes, as Lambda sends it). A message's trace header
/// ([`TRACE_HEADER_ATTRIBUTE`]) is not one of its message attributes: it is
/// the record's `attributes.AWSTraceHeader`, as Lambda hands it on.
///
/// FIXME: `ApproximateFirstReceiveTimestamp` is the send time: the state store
/// does not record when a message was first received.
pub fn sqs_event(queue: &Name, messages: &[ReceivedMessage]) -> Value {
    let event_source_arn = format!("arn:aws:sqs:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{queue}");
    let records: Vec<Value> = messages.iter().map(|message| sqs_record(&event_source_arn, message)).collect();
    json!({ "Records": records })
}

fn sqs_record(event_source_arn: &str, message: &ReceivedMessage) -> Value {
    let sent_at = message.sent_at.as_millis().to_string();
    let mut attributes = Map::new();
    attributes.insert("ApproximateReceiveCount".into(), Value::String(message.receive_count.to_string()));
    attributes.insert("SentTimestamp".into(), Value::String(sent_at.clone()));
    attributes.insert("SenderId".into(), Value::String(SENDER_ID.into()));
    attributes.insert("ApproximateFirstReceiveTimestamp".into(), Value::String(sent_at));
    let body = match std::str::from_utf8(&message.body) {
        Ok(text) => text.to_owned(),
        Err(_) => {
            attributes.insert(BODY_ENCODING_ATTRIBUTE.into(), Value::String("base64".into()));
            BASE64.encode(&message.body)
        }
    };
    // The trace header is a system attribute, as Lambda hands SQS's `AWSTraceHeader` on.
    let (trace_header, user_attributes): (Vec<_>, Vec<_>) =
        message.attributes.iter().cloned().partition(|(name, _)| name == TRACE_HEADER_ATTRIBUTE);
    if let Some((_, header)) = trace_header.into_iter().next() {
        attributes.insert(TRACE_HEADER_ATTRIBUTE.into(), Value::String(header));
    }
    let message_attributes: Map<String, Value> = user_attributes
        .iter()
        .map(|(name, value)| {
            let attribute = json!({
                "stringValue": value,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            });
            (name.clone(), attribute)
        })
        .collect();
    json!({
        "messageId": message.message_id.to_string(),
        "receiptHandle": message.receipt.to_string(),
        "body": body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": hex_md5(body.as_bytes()),
        "md5OfMessageAttributes": md5_of_message_attributes(&user_attributes),
        "eventSource": "aws:sqs",
        "eventSourceARN": event_source_arn,
        "awsRegion": LOCAL_REGION,
    })
}

fn hex_md5(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SQS's digest of string message attributes: for each attribute in name
/// order, the name, the data type (`String`), the transport type byte 1 and
/// the value, each string preceded by its length as a 4-byte big-endian
/// integer. `None` without attributes. With duplicate names the last value
/// counts, as in the record's `messageAttributes` object.
fn md5_of_message_attributes(attributes: &[(String, String)]) -> Option<String> {
    let by_name: std::collections::BTreeMap<&str, &str> =
        attributes.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    if by_name.is_empty() {
        return None;
    }
    let mut encoded = Vec::new();
    let push_length_prefixed = |encoded: &mut Vec<u8>, bytes: &[u8]| {
        encoded.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        encoded.extend_from_slice(bytes);
    };
    for (name, value) in by_name {
        push_length_prefixed(&mut encoded, name.as_bytes());
        push_length_prefixed(&mut encoded, b"String");
        encoded.push(1); // transport type: string
        push_length_prefixed(&mut encoded, value.as_bytes());
    }
    Some(hex_md5(&encoded))
}

/// Read a queue-triggered function's response for a partial batch failure
/// report, `{"batchItemFailures": [{"itemIdentifier": "<messageId>"}, ...]}`.
///
/// `Some(ids)` lists the message ids to retry (empty: none failed). `None`
/// means the whole batch succeeded: an empty response, `null`, any JSON value
/// that is not an object, an object without `batchItemFailures`, or with it
/// `null` (as Lambda reads them). Invalid JSON, a `batchItemFailures` that is
/// not an array, or an entry without a non-empty string `itemIdentifier` is an
/// [`EventError`] naming the entry; Lambda then fails the whole batch. Whether
/// every id belongs to the batch is the caller's check: only it knows the batch.
pub fn parse_batch_item_failures(response: &[u8]) -> Result<Option<Vec<String>>, EventError> {
    const WHAT: &str = "batch response";
    if response.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(response)
        .map_err(|error| EventError::InvalidJson { what: WHAT, detail: error.to_string() })?;
    let Some(failures) = value.as_object().and_then(|object| object.get("batchItemFailures")) else {
        return Ok(None);
    };
    let failures = match failures {
        Value::Null => return Ok(None),
        Value::Array(failures) => failures,
        other => {
            return Err(EventError::Malformed {
                what: WHAT,
                detail: format!("`batchItemFailures` must be an array of objects, not {}", json_type(other)),
            });
        }
    };
    failures
        .iter()
        .enumerate()
        .map(|(index, failure)| match failure.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
            Some(Value::String(_)) => Err(EventError::Malformed {
                what: WHAT,
                detail: format!("`batchItemFailures[{index}].itemIdentifier` is empty; it must be a message id"),
            }),
            Some(other) => Err(EventError::Malformed {
                what: WHAT,
                detail: format!(
                    "`batchItemFailures[{index}].itemIdentifier` must be a string (the message id), not {}",
                    json_type(other)
                ),
            }),
            None => Err(EventError::Malformed {
                what: WHAT,
                detail: format!(
                    "`batchItemFailures[{index}]` has no `itemIdentifier`; write {{\"itemIdentifier\": \"<messageId>\"}}"
                ),
            }),
        })
        .collect::<Result<Vec<String>, EventError>>()
        .map(Some)
}

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_message_attributes_is_none_without_attributes() {
        assert_eq!(md5_of_message_attributes(&[]), None);
    }

    #[test]
    fn md5_of_message_attributes_ignores_the_order_given() {
        let forwards = [("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let backwards = [forwards[1].clone(), forwards[0].clone()];
        assert_eq!(md5_of_message_attributes(&forwards), md5_of_message_attributes(&backwards));
    }
}
