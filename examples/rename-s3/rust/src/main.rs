//! The rename-s3 example's handler in Rust, written as it would be for AWS
//! Lambda: for each object named in an S3 event it copies the object to
//! `TARGET_BUCKET` (default `archive`) under `renamed/<key>` and deletes the
//! original. Endpoint, region and credentials come from the standard AWS_*
//! variables, which Mayfly sets for each invocation as Lambda does.
//!
//! One difference from boto3 and the AWS CLI: the Rust SDK does not read
//! `AWS_CA_BUNDLE` by itself, so the handler trusts the bundle it names
//! (the certificate of Mayfly's endpoint) when the variable is set, and the
//! platform's roots otherwise — the same code runs on AWS.

use aws_lambda_events::event::s3::S3Event;
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// `incoming/scan 1.pdf` becomes `renamed/incoming/scan 1.pdf`.
fn new_name(key: &str) -> String {
    format!("renamed/{key}")
}

async fn client() -> Result<Client, Error> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE") {
        let pem = std::fs::read(&bundle)
            .map_err(|error| format!("cannot read AWS_CA_BUNDLE {}: {error}", bundle.to_string_lossy()))?;
        let trust = TrustStore::empty().with_native_roots(false).with_pem_certificate(pem.as_slice());
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .tls_context(TlsContext::builder().with_trust_store(trust).build()?)
            .build_https();
        loader = loader.http_client(http);
    }
    let config = loader.load().await;
    // Path-style addressing works against any endpoint, AWS's included.
    let s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build();
    Ok(Client::from_conf(s3))
}

async fn handle(client: &Client, target_bucket: &str, event: LambdaEvent<S3Event>) -> Result<Value, Error> {
    let mut moved = Vec::new();
    for record in event.payload.records {
        let bucket = record.s3.bucket.name.ok_or("an S3 event record without a bucket name")?;
        let raw_key = record.s3.object.key.ok_or("an S3 event record without an object key")?;
        // Keys arrive URL-encoded with `+` for spaces, as S3 sends them.
        let key = percent_encoding::percent_decode_str(&raw_key.replace('+', " ")).decode_utf8()?.into_owned();
        let target = new_name(&key);
        let source = format!("{bucket}/{}", percent_encoding::utf8_percent_encode(&key, COPY_SOURCE));
        client.copy_object().bucket(target_bucket).key(&target).copy_source(source).send().await?;
        client.delete_object().bucket(&bucket).key(&key).send().await?;
        moved.push(json!({ "from": format!("{bucket}/{key}"), "to": format!("{target_bucket}/{target}") }));
    }
    Ok(json!({ "moved": moved }))
}

/// What `x-amz-copy-source` escapes: everything but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let client = client().await?;
    let target_bucket = std::env::var("TARGET_BUCKET").unwrap_or_else(|_| "archive".to_owned());
    let client = &client;
    let target_bucket = target_bucket.as_str();
    lambda_runtime::run(service_fn(move |event| handle(client, target_bucket, event))).await
}
