//! The AWS-shaped event JSON that Mayfly hands to functions, built from
//! Mayfly's domain types: S3 notification records for bucket events, SQS
//! batch records for queue messages, EventBridge scheduled events, and API
//! Gateway HTTP API (payload format 2.0) requests; and the parsers for what a
//! function answers (an HTTP response, a partial batch failure report).
//!
//! Functions written for AWS (with `aws_lambda_events`, `aws-lambda-powertools`,
//! the Node and Python runtimes' typings) read these values unchanged. Where
//! AWS has something Mayfly does not (accounts, regions, versioned buckets),
//! the value is a fixed local stand-in: account `000000000000`, region
//! `local`. The tests deserialize every value into `aws_lambda_events`' types
//! and compare its shape against that crate's own JSON fixtures.
//!
//! This crate is the only one that knows these formats; it does no IO.

mod api_gateway;
mod error;
mod s3;
mod scheduled;
mod sqs;

pub use api_gateway::{HttpRequestParts, HttpResponseParts, api_gateway_v2_request, parse_api_gateway_v2_response};
pub use error::EventError;
pub use s3::{s3_event, s3_event_for_route, s3_event_name, s3_key_url_encoded, s3_sequencer};
pub use scheduled::scheduled_event;
pub use sqs::{BODY_ENCODING_ATTRIBUTE, parse_batch_item_failures, sqs_event};

/// The region every ARN and `awsRegion` field names.
pub const LOCAL_REGION: &str = "local";

/// The account every ARN and `accountId` field names.
pub const LOCAL_ACCOUNT_ID: &str = "000000000000";
