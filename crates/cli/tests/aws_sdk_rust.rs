//! The AWS SDK for Rust (`aws-sdk-s3`, `aws-sdk-sqs`), unmodified, against a
//! running `mayfly serve`: S3 in virtual-hosted style (`<bucket>.mayfly.test`,
//! the SDK's default addressing, under `[api].aws_domain` with the user's own
//! certificate) and in path style, presigned URLs, multipart uploads, and
//! SQS in the AWS JSON protocol; refusals with the codes the SDK expects.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use support::{Project, Served, aws_token};

const DOMAIN: &str = "mayfly.test";

/// Every name under the test domain is this machine (no DNS server needed).
#[derive(Debug, Clone)]
struct Loopback;

impl ResolveDns for Loopback {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        assert!(name == DOMAIN || name.ends_with(".mayfly.test") || name == "127.0.0.1", "resolving {name}");
        DnsFuture::ready(Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
    }
}

/// The project's `[api]` with the user's own certificate for the domain, its
/// wildcard (virtual-hosted buckets) and 127.0.0.1.
fn project() -> (Project, Vec<u8>) {
    let name = support::unique_name("sdk");
    let project = Project::with_spec(&format!(
        r#"version = 1
name = "{name}"
[buckets.inbox]
[buckets.archive]
[queues.work]
[api]
aws_domain = "{DOMAIN}"
tls = {{ cert = "tls/cert.pem", key = "tls/key.pem" }}
"#
    ));
    let certified =
        rcgen::generate_simple_self_signed(vec![DOMAIN.to_owned(), format!("*.{DOMAIN}"), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::create_dir_all(project.path("tls")).unwrap();
    let pem = certified.cert.pem().into_bytes();
    std::fs::write(project.path("tls/cert.pem"), &pem).unwrap();
    std::fs::write(project.path("tls/key.pem"), certified.signing_key.serialize_pem()).unwrap();
    project.ok(&["deploy"]);
    (project, pem)
}

fn http_client(ca: &[u8]) -> SharedHttpClient {
    let trust = TrustStore::empty().with_native_roots(false).with_pem_certificate(ca.to_vec());
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .tls_context(TlsContext::builder().with_trust_store(trust).build().unwrap())
        .build_with_resolver(Loopback)
}

async fn sdk_config(endpoint: &str, ca: &[u8], key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .http_client(http_client(ca))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(key, secret, None, None, "test"))
        .load()
        .await
}

fn service_code<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match error {
        aws_sdk_s3::error::SdkError::ServiceError(service) => {
            service.err().code().map_or_else(|| "no code".to_owned(), str::to_owned)
        }
        other => format!("not a service error: {other:?}"),
    }
}

fn status<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> u16 {
    error.raw_response().map_or(0, |response| response.status().as_u16())
}

async fn body(output: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

#[test]
fn the_rust_sdk_unmodified_uses_s3_in_both_addressing_styles_and_sqs() {
    let (project, ca) = project();
    let server = Served::start(&project);
    let (_, key, secret) = aws_token(
        &project,
        "rust-sdk",
        &["--scope", "objects:read", "--scope", "objects:write", "--scope", "queues:read", "--scope", "messages:write"],
    );
    let (_, archive_key, archive_secret) =
        aws_token(&project, "archive-only", &["--scope", "objects:read", "--bucket", "archive"]);
    let port = server.aws_address.port();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let endpoint = format!("https://{DOMAIN}:{port}");
        let config = sdk_config(&endpoint, &ca, &key, &secret).await;
        // The SDK's default: virtual-hosted style, `inbox.mayfly.test`.
        let s3 = aws_sdk_s3::Client::new(&config);
        let path_style = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(
                &sdk_config(&format!("https://127.0.0.1:{port}"), &ca, &key, &secret).await,
            )
            .force_path_style(true)
            .build(),
        );

        let buckets = s3.list_buckets().send().await.unwrap();
        let names: Vec<_> = buckets.buckets().iter().filter_map(|bucket| bucket.name()).collect();
        assert_eq!(names, ["archive", "inbox"]);
        s3.head_bucket().bucket("inbox").send().await.unwrap();
        let missing = s3.head_bucket().bucket("nowhere").send().await.unwrap_err();
        assert_eq!(status(&missing), 404);

        // Put with content type and metadata; head; get whole and by range; conditional get.
        let chart = b"patient 17: no fever; follow-up in two weeks".to_vec();
        let put = s3
            .put_object()
            .bucket("inbox")
            .key("charts/ward 7/chart#1.txt")
            .content_type("text/plain")
            .metadata("ward", "7")
            .body(ByteStream::from(chart.clone()))
            .send()
            .await
            .unwrap();
        let etag = put.e_tag().unwrap().to_owned();
        let head = s3.head_object().bucket("inbox").key("charts/ward 7/chart#1.txt").send().await.unwrap();
        assert_eq!(head.content_length(), Some(chart.len() as i64));
        assert_eq!(head.content_type(), Some("text/plain"));
        assert_eq!(head.metadata().and_then(|metadata| metadata.get("ward")).map(String::as_str), Some("7"));
        let whole = s3.get_object().bucket("inbox").key("charts/ward 7/chart#1.txt").send().await.unwrap();
        assert_eq!(body(whole).await, chart);
        let ranged =
            s3.get_object().bucket("inbox").key("charts/ward 7/chart#1.txt").range("bytes=8-9").send().await.unwrap();
        assert_eq!(ranged.content_range(), Some(format!("bytes 8-9/{}", chart.len()).as_str()));
        assert_eq!(body(ranged).await, b"17");
        let unchanged = s3
            .get_object()
            .bucket("inbox")
            .key("charts/ward 7/chart#1.txt")
            .if_none_match(&etag)
            .send()
            .await
            .unwrap_err();
        assert_eq!(status(&unchanged), 304);
        let absent = s3.get_object().bucket("inbox").key("charts/none.txt").send().await.unwrap_err();
        assert_eq!(service_code(&absent), "NoSuchKey");
        // The same object through path-style addressing on the IP address.
        let by_path = path_style.get_object().bucket("inbox").key("charts/ward 7/chart#1.txt").send().await.unwrap();
        assert_eq!(body(by_path).await, chart);

        // Listings: prefix and delimiter, pages by continuation, start-after.
        for index in 0..5 {
            s3.put_object()
                .bucket("inbox")
                .key(format!("batch/{index}.txt"))
                .body(ByteStream::from(format!("item {index}").into_bytes()))
                .send()
                .await
                .unwrap();
        }
        s3.put_object()
            .bucket("inbox")
            .key("batch/deeper/x.txt")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        let listed = s3.list_objects_v2().bucket("inbox").prefix("batch/").delimiter("/").send().await.unwrap();
        let keys: Vec<_> = listed.contents().iter().filter_map(|object| object.key()).collect();
        assert_eq!(keys, ["batch/0.txt", "batch/1.txt", "batch/2.txt", "batch/3.txt", "batch/4.txt"]);
        let prefixes: Vec<_> = listed.common_prefixes().iter().filter_map(|prefix| prefix.prefix()).collect();
        assert_eq!(prefixes, ["batch/deeper/"]);
        let mut pages = s3.list_objects_v2().bucket("inbox").prefix("batch/").max_keys(2).into_paginator().send();
        let mut paged = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.unwrap();
            paged.push(page.contents().iter().filter_map(|object| object.key().map(str::to_owned)).collect::<Vec<_>>());
        }
        assert_eq!(paged.len(), 3, "{paged:?}");
        assert_eq!(paged.concat().len(), 6);
        let after =
            s3.list_objects_v2().bucket("inbox").prefix("batch/").start_after("batch/3.txt").send().await.unwrap();
        let keys: Vec<_> = after.contents().iter().filter_map(|object| object.key()).collect();
        assert_eq!(keys, ["batch/4.txt", "batch/deeper/x.txt"]);

        // Copy (metadata follows), delete one, delete several.
        s3.copy_object()
            .bucket("archive")
            .key("copied/chart.txt")
            .copy_source("inbox/charts/ward%207/chart%231.txt")
            .send()
            .await
            .unwrap();
        let copied = s3.head_object().bucket("archive").key("copied/chart.txt").send().await.unwrap();
        assert_eq!(copied.metadata().and_then(|metadata| metadata.get("ward")).map(String::as_str), Some("7"));
        s3.delete_object().bucket("inbox").key("batch/deeper/x.txt").send().await.unwrap();
        let objects = ["batch/0.txt", "batch/1.txt"]
            .iter()
            .map(|key| ObjectIdentifier::builder().key(*key).build().unwrap())
            .collect::<Vec<_>>();
        let deleted = s3
            .delete_objects()
            .bucket("inbox")
            .delete(Delete::builder().set_objects(Some(objects)).build().unwrap())
            .send()
            .await
            .unwrap();
        let mut gone: Vec<_> = deleted.deleted().iter().filter_map(|object| object.key()).collect();
        gone.sort_unstable();
        assert_eq!(gone, ["batch/0.txt", "batch/1.txt"]);

        // Multipart: two parts, listed, completed, read back; another aborted.
        let first_part: Vec<u8> = (0..5 * 1024 * 1024).map(|index: usize| (index % 251) as u8).collect();
        let upload = s3.create_multipart_upload().bucket("archive").key("big/scan.bin").send().await.unwrap();
        let upload_id = upload.upload_id().unwrap();
        let mut parts = Vec::new();
        for (number, bytes) in [(1, first_part.clone()), (2, b"tail".to_vec())] {
            let part = s3
                .upload_part()
                .bucket("archive")
                .key("big/scan.bin")
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .unwrap();
            parts.push(CompletedPart::builder().part_number(number).e_tag(part.e_tag().unwrap()).build());
        }
        let listed_parts =
            s3.list_parts().bucket("archive").key("big/scan.bin").upload_id(upload_id).send().await.unwrap();
        let sizes: Vec<_> = listed_parts.parts().iter().map(|part| (part.part_number(), part.size())).collect();
        assert_eq!(sizes, [(Some(1), Some(5 * 1024 * 1024)), (Some(2), Some(4))]);
        s3.complete_multipart_upload()
            .bucket("archive")
            .key("big/scan.bin")
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .unwrap();
        let mut expected = first_part;
        expected.extend_from_slice(b"tail");
        let assembled = s3.get_object().bucket("archive").key("big/scan.bin").send().await.unwrap();
        assert!(body(assembled).await == expected, "the assembled object differs");
        let abandoned = s3.create_multipart_upload().bucket("archive").key("big/other.bin").send().await.unwrap();
        let abandoned_id = abandoned.upload_id().unwrap();
        s3.abort_multipart_upload()
            .bucket("archive")
            .key("big/other.bin")
            .upload_id(abandoned_id)
            .send()
            .await
            .unwrap();
        let after_abort =
            s3.list_parts().bucket("archive").key("big/other.bin").upload_id(abandoned_id).send().await.unwrap_err();
        assert_eq!(service_code(&after_abort), "NoSuchUpload");

        // Presigned GET and PUT, sent by a plain HTTPS client; altered and expired URLs refused.
        let plain = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .resolve(&format!("inbox.{DOMAIN}"), std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .build()
            .unwrap();
        let presigned = s3
            .get_object()
            .bucket("inbox")
            .key("batch/4.txt")
            .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
            .await
            .unwrap();
        let fetched = plain.get(presigned.uri()).send().await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.text().await.unwrap(), "item 4");
        let tampered = presigned.uri().replace("batch%2F4.txt", "batch%2F3.txt").replace("batch/4.txt", "batch/3.txt");
        assert_ne!(tampered, presigned.uri());
        assert_eq!(plain.get(&tampered).send().await.unwrap().status(), 403, "an altered presigned URL is refused");
        let put_url = s3
            .put_object()
            .bucket("inbox")
            .key("uploads/presigned.txt")
            .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
            .await
            .unwrap();
        assert_eq!(plain.put(put_url.uri()).body("uploaded").send().await.unwrap().status(), 200);
        let uploaded = s3.get_object().bucket("inbox").key("uploads/presigned.txt").send().await.unwrap();
        assert_eq!(body(uploaded).await, b"uploaded");
        let short = s3
            .get_object()
            .bucket("inbox")
            .key("batch/4.txt")
            .presigned(PresigningConfig::expires_in(Duration::from_secs(1)).unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(plain.get(short.uri()).send().await.unwrap().status(), 403, "an expired presigned URL is refused");

        // Refusals: a wrong secret, and a key outside its bucket.
        let wrong = aws_sdk_s3::Client::new(&sdk_config(&endpoint, &ca, &key, "not-the-secret").await);
        let refused = wrong.list_buckets().send().await.unwrap_err();
        assert_eq!(service_code(&refused), "SignatureDoesNotMatch");
        let limited = aws_sdk_s3::Client::new(&sdk_config(&endpoint, &ca, &archive_key, &archive_secret).await);
        let outside = limited.get_object().bucket("inbox").key("batch/4.txt").send().await.unwrap_err();
        assert_eq!(service_code(&outside), "AccessDenied");
        let inside = limited.get_object().bucket("archive").key("copied/chart.txt").send().await.unwrap();
        assert_eq!(body(inside).await, chart);

        // SQS in the AWS JSON protocol.
        let sqs = aws_sdk_sqs::Client::new(&config);
        let url = sqs.get_queue_url().queue_name("work").send().await.unwrap().queue_url().unwrap().to_owned();
        let queues = sqs.list_queues().send().await.unwrap();
        assert_eq!(queues.queue_urls(), std::slice::from_ref(&url));
        let unknown = sqs.get_queue_url().queue_name("nowhere").send().await.unwrap_err();
        assert_eq!(
            unknown.as_service_error().and_then(|error| error.meta().code()),
            Some("AWS.SimpleQueueService.NonExistentQueue")
        );
        sqs.send_message()
            .queue_url(&url)
            .message_body("chart 1")
            .message_attributes(
                "ward",
                MessageAttributeValue::builder().data_type("String").string_value("7").build().unwrap(),
            )
            .send()
            .await
            .unwrap();
        let batch = (2..=3)
            .map(|index| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{index}"))
                    .message_body(format!("chart {index}"))
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        let sent = sqs.send_message_batch().queue_url(&url).set_entries(Some(batch)).send().await.unwrap();
        assert_eq!(sent.successful().len(), 2);
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .visibility_timeout(1)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let mut bodies: Vec<_> = received.messages().iter().filter_map(|message| message.body()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["chart 1", "chart 2", "chart 3"]);
        let first = received.messages().iter().find(|message| message.body() == Some("chart 1")).unwrap();
        let ward = first.message_attributes().and_then(|attributes| attributes.get("ward"));
        assert_eq!(ward.and_then(|value| value.string_value()), Some("7"));
        // Delete chart 1; hold chart 2 longer; chart 3 comes back after its 1 s visibility, received twice.
        sqs.delete_message().queue_url(&url).receipt_handle(first.receipt_handle().unwrap()).send().await.unwrap();
        let second = received.messages().iter().find(|message| message.body() == Some("chart 2")).unwrap();
        sqs.change_message_visibility()
            .queue_url(&url)
            .receipt_handle(second.receipt_handle().unwrap())
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        let again = sqs
            .receive_message()
            .queue_url(&url)
            .wait_time_seconds(5)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap();
        let third = again.messages().first().expect("chart 3 is visible again");
        assert_eq!(third.body(), Some("chart 3"));
        let count = third.attributes().and_then(|attributes| {
            attributes.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        });
        assert_eq!(count.map(String::as_str), Some("2"));
        sqs.delete_message().queue_url(&url).receipt_handle(third.receipt_handle().unwrap()).send().await.unwrap();
        let attributes =
            sqs.get_queue_attributes().queue_url(&url).attribute_names(QueueAttributeName::All).send().await.unwrap();
        let in_flight = attributes
            .attributes()
            .and_then(|attributes| attributes.get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible));
        assert_eq!(in_flight.map(String::as_str), Some("1"), "chart 2 is still held: {attributes:?}");
    });
    drop(server);

    // Writes through the SDK fired bucket events as `mayfly put` does.
    let events = project.json(&["events", "--limit", "1000"]);
    let created = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "created" && event["bucket"] == "inbox")
        .count();
    assert!(created >= 8, "every put through the SDK appended its event: {events}");
}
