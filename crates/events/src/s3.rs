//! S3 event notifications for bucket events.

use mayfly_core::{ObjectEvent, ObjectEventKind};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::LOCAL_REGION;

/// The configuration id records carry when no route id is given.
const DEFAULT_CONFIGURATION_ID: &str = "mayfly";

/// The principal S3 would name; Mayfly has no users, so one fixed principal.
const PRINCIPAL_ID: &str = "mayfly";

/// Characters S3 leaves as they are in an event's object key: letters, digits,
/// `-`, `_`, `.`, `*` (as Java's `URLEncoder`) and `/`. A space becomes `+`.
const S3_KEY_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'*').remove(b'/');

/// An S3 notification (`{"Records": [...]}`) for these events, one record each,
/// in the order given, with `configurationId` `"mayfly"`. See [`s3_event_for_route`].
pub fn s3_event(events: &[ObjectEvent]) -> Value {
    s3_event_for_route(DEFAULT_CONFIGURATION_ID, events)
}

/// An S3 notification for these events whose records name the route (the
/// trigger) that matched them as `configurationId`, as S3 names the
/// notification configuration.
///
/// A `created` event is `ObjectCreated:Put` with the object's size and entity
/// tag; a `deleted` event is `ObjectRemoved:Delete` without them, as S3 sends
/// it, or `LifecycleExpiration:Delete` when Mayfly expired the object under
/// a retention rule. Keys are URL-encoded as S3 encodes them ([`s3_key_url_encoded`]); the
/// sequencer is Mayfly's event sequence number ([`s3_sequencer`]).
pub fn s3_event_for_route(configuration_id: &str, events: &[ObjectEvent]) -> Value {
    let records: Vec<Value> = events.iter().map(|event| s3_record(configuration_id, event)).collect();
    json!({ "Records": records })
}

fn s3_record(configuration_id: &str, event: &ObjectEvent) -> Value {
    let bucket = event.bucket.as_str();
    let sequencer = s3_sequencer(event.sequence);
    let mut object = serde_json::Map::new();
    object.insert("key".into(), Value::String(s3_key_url_encoded(&event.key)));
    if event.kind == ObjectEventKind::Created {
        object.insert("size".into(), json!(event.size));
        if let Some(etag) = &event.etag {
            // S3 writes the entity tag without the quotes HTTP puts around it.
            object.insert("eTag".into(), Value::String(etag.trim_matches('"').to_owned()));
        }
    }
    let event_name = s3_event_name(event);
    object.insert("sequencer".into(), Value::String(sequencer.clone()));
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": LOCAL_REGION,
        "eventTime": event.at.to_rfc3339(),
        "eventName": event_name,
        "userIdentity": { "principalId": PRINCIPAL_ID },
        "requestParameters": { "sourceIPAddress": "127.0.0.1" },
        "responseElements": {
            "x-amz-request-id": sequencer,
            "x-amz-id-2": format!("mayfly/{bucket}/{}", event.sequence),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": { "principalId": PRINCIPAL_ID },
                "arn": format!("arn:aws:s3:::{bucket}"),
            },
            "object": object,
        },
    })
}

/// An object key as S3 writes it into event records: URL-encoded, with a space
/// as `+` and `/` kept (`"photos/red flower (1).jpg"` →
/// `"photos/red+flower+%281%29.jpg"`). Handlers decode it with
/// `urllib.parse.unquote_plus` or `decodeURIComponent(key.replace(/\+/g, " "))`.
/// The S3 event name of `event`: `ObjectCreated:Put`, `ObjectRemoved:Delete`,
/// or `LifecycleExpiration:Delete` for an object Mayfly expired itself (as S3
/// names a lifecycle expiration).
pub fn s3_event_name(event: &ObjectEvent) -> &'static str {
    match event.kind {
        ObjectEventKind::Created => "ObjectCreated:Put",
        ObjectEventKind::Deleted if event.reason.is_some() => "LifecycleExpiration:Delete",
        ObjectEventKind::Deleted => "ObjectRemoved:Delete",
    }
}

pub fn s3_key_url_encoded(key: &str) -> String {
    utf8_percent_encode(key, S3_KEY_KEEP).to_string().replace("%20", "+")
}

/// The `sequencer` of an event: Mayfly's event sequence number as 16 uppercase
/// hexadecimal digits, so that sequencers sort as strings in event order (as
/// S3 promises for the events of one key).
pub fn s3_sequencer(sequence: u64) -> String {
    format!("{sequence:016X}")
}
