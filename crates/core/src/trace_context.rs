//! A trace context as it travels with a queue message and into a function:
//! the X-Ray trace header (`Root=1-…;Parent=…;Sampled=1`, what SQS keeps in
//! a message's `AWSTraceHeader` system attribute and what the Lambda
//! runtime client puts in `_X_AMZN_TRACE_ID`) and the W3C `traceparent`
//! (`00-TRACE-SPAN-01`). Both carry the same two ids: a 128-bit trace id
//! and the 64-bit id of the parent span.

use std::fmt;

/// The reserved message attribute that holds a message's trace header, as
/// SQS's `AWSTraceHeader` system attribute: it is never one of the message's
/// own (user) attributes.
pub const TRACE_HEADER_ATTRIBUTE: &str = "AWSTraceHeader";

/// A message's own (user) attributes: all but its trace header. Whatever
/// shows a message's attributes (`mayfly peek` and `receive`, the SQS
/// endpoint's `MessageAttributes`) shows these.
pub fn user_attributes(attributes: &[(String, String)]) -> Vec<(String, String)> {
    attributes.iter().filter(|(name, _)| name != TRACE_HEADER_ATTRIBUTE).cloned().collect()
}

/// The trace header among a message's attributes, if it has one.
pub fn trace_header(attributes: &[(String, String)]) -> Option<&str> {
    attributes.iter().find(|(name, _)| name == TRACE_HEADER_ATTRIBUTE).map(|(_, header)| header.as_str())
}

/// A sampled trace context: lower-case hex ids, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: String,
    parent_span_id: String,
}

impl TraceContext {
    /// From a 32-hex-digit trace id and a 16-hex-digit span id; `None` if
    /// either is malformed or all zeros (the W3C "invalid" ids).
    pub fn new(trace_id: &str, parent_span_id: &str) -> Option<TraceContext> {
        let valid = |text: &str, digits: usize| {
            text.len() == digits
                && text.bytes().all(|byte| byte.is_ascii_hexdigit())
                && text.bytes().any(|byte| byte != b'0')
        };
        (valid(trace_id, 32) && valid(parent_span_id, 16)).then(|| TraceContext {
            trace_id: trace_id.to_ascii_lowercase(),
            parent_span_id: parent_span_id.to_ascii_lowercase(),
        })
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    pub fn parent_span_id(&self) -> &str {
        &self.parent_span_id
    }

    /// The X-Ray trace header: `Root=1-EPOCH8-RANDOM24;Parent=SPAN16;Sampled=1`.
    pub fn xray_header(&self) -> String {
        let (epoch, random) = self.trace_id.split_at(8);
        format!("Root=1-{epoch}-{random};Parent={};Sampled=1", self.parent_span_id)
    }

    /// Read an X-Ray trace header; `None` unless it has a valid `Root` and
    /// `Parent` and is not marked unsampled (`Sampled=0`).
    pub fn from_xray_header(header: &str) -> Option<TraceContext> {
        let (mut root, mut parent, mut sampled) = (None, None, true);
        for field in header.split(';') {
            match field.trim().split_once('=') {
                Some(("Root", value)) => root = Some(value),
                Some(("Parent", value)) => parent = Some(value),
                Some(("Sampled", value)) => sampled = value != "0",
                _ => {}
            }
        }
        let mut parts = root?.split('-');
        let (version, epoch, random) = (parts.next()?, parts.next()?, parts.next()?);
        if version != "1" || parts.next().is_some() || epoch.len() != 8 || !sampled {
            return None;
        }
        TraceContext::new(&format!("{epoch}{random}"), parent?)
    }

    /// The W3C `traceparent`: `00-TRACE32-SPAN16-01` (sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.parent_span_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.traceparent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xray_header_round_trips_and_names_the_same_ids_as_the_traceparent() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let context = TraceContext::from_xray_header(header).unwrap();
        assert_eq!(context.trace_id(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(context.parent_span_id(), "53995c3f42cd8ad8");
        assert_eq!(context.xray_header(), header);
        assert_eq!(context.traceparent(), "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01");
    }

    #[test]
    fn user_attributes_leave_out_only_the_trace_header() {
        let attributes = vec![
            ("priority".to_owned(), "high".to_owned()),
            (
                TRACE_HEADER_ATTRIBUTE.to_owned(),
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8".to_owned(),
            ),
            ("AWSTraceHeaderX".to_owned(), "kept".to_owned()),
        ];
        assert_eq!(
            user_attributes(&attributes),
            vec![("priority".to_owned(), "high".to_owned()), ("AWSTraceHeaderX".to_owned(), "kept".to_owned())]
        );
        assert_eq!(trace_header(&attributes), Some(attributes[1].1.as_str()));
        assert_eq!(trace_header(&user_attributes(&attributes)), None);
    }

    #[test]
    fn malformed_unsampled_or_zero_contexts_are_none() {
        for header in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e98-8bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a99427279z;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
        ] {
            assert_eq!(TraceContext::from_xray_header(header), None, "{header}");
        }
    }
}
