//! Stores Mayfly must refuse before using them, each for real against
//! SeaweedFS (`support::s3`): one that ignores conditional creates (as Garage
//! does), an unreachable endpoint, refused credentials and a missing bucket.
//! Each is a clear error naming the store and bucket, and nothing is left
//! written.
//!
//! SeaweedFS honours `If-None-Match`, so the store that ignores it is
//! SeaweedFS behind a proxy that strips the header. object_store signs every
//! header with SigV4, so a stripped header breaks the signature: the proxy
//! strips the signature too and sends the request unsigned, to the bucket
//! `scripts/seaweedfs.sh` opens to unsigned requests (`<bucket>-unsigned`).
//! The same probe straight to that bucket passes, so the proxy is the only
//! difference.

mod support;

use std::sync::Arc;

use futures::TryStreamExt;
use mayfly_buckets::BucketError;
use mayfly_buckets::s3::{S3Config, check_store};
use object_store::ObjectStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of `upstream` (`host:port`) that drops the
/// `Authorization` and `If-None-Match` headers of every request; returns
/// its address. Each request is sent with `Connection: close`, so every
/// connection carries one request and only its head needs rewriting.
async fn header_stripping_proxy(upstream: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 8192];
                let end = loop {
                    let read = client.read(&mut buffer).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..read]);
                    if let Some(end) = head.windows(4).position(|window| window == b"\r\n\r\n") {
                        break end;
                    }
                };
                let text = String::from_utf8_lossy(&head[..end]).into_owned();
                let mut rewritten = String::new();
                for line in text.split("\r\n") {
                    let lowered = line.to_ascii_lowercase();
                    if ["authorization:", "if-none-match:", "connection:"].iter().any(|drop| lowered.starts_with(drop))
                    {
                        continue;
                    }
                    rewritten.push_str(line);
                    rewritten.push_str("\r\n");
                }
                rewritten.push_str("Connection: close\r\n\r\n");
                let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                if server.write_all(rewritten.as_bytes()).await.is_err()
                    || server.write_all(&head[end + 4..]).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    address
}

fn unsigned_bucket_config(endpoint: String) -> S3Config {
    let mut config = support::s3::fresh_config("refusals");
    config.bucket = format!("{}-unsigned", support::s3::BUCKET);
    config.endpoint = Some(endpoint);
    config
}

async fn objects_under(config: &S3Config) -> Vec<String> {
    let mut direct = config.clone();
    direct.endpoint = Some(support::s3::endpoint().to_owned());
    let store: Arc<dyn ObjectStore> = direct.build(false).unwrap();
    store.list(None).map_ok(|meta| meta.location.to_string()).try_collect().await.unwrap()
}

fn refusal(result: Result<(), BucketError>) -> String {
    match result {
        Err(error @ BucketError::UnusableStore { .. }) => error.to_string(),
        other => panic!("expected the store to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_store_that_ignores_conditional_creates_is_refused() {
    // Straight to SeaweedFS, the unsigned bucket honours the condition.
    let direct = unsigned_bucket_config(support::s3::endpoint().to_owned());
    check_store(direct.build(true).unwrap().as_ref(), &direct.describe()).await.unwrap();

    let upstream = support::s3::endpoint().trim_start_matches("http://").to_owned();
    let proxy = header_stripping_proxy(upstream).await;
    let config = unsigned_bucket_config(format!("http://{proxy}"));
    let message = refusal(check_store(config.build(true).unwrap().as_ref(), &config.describe()).await);
    assert!(message.contains("ignores conditional writes"), "{message}");
    assert!(message.contains(&format!("s3://mayfly-test-unsigned/{} at http://{proxy}", config.prefix)), "{message}");
    assert_eq!(objects_under(&config).await, Vec::<String>::new(), "the probe object is removed");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_refused_quickly() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = support::s3::fresh_config("refusals");
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let message = refusal(check_store(config.build(true).unwrap().as_ref(), &config.describe()).await);
    assert!(message.contains("cannot be reached; check AWS_ENDPOINT_URL"), "{message}");
    assert!(message.contains(&format!("at http://127.0.0.1:{port}")), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let mut config = support::s3::fresh_config("refusals");
    config.secret_access_key = Some("not-the-secret".to_owned());
    let message = refusal(check_store(config.build(true).unwrap().as_ref(), &config.describe()).await);
    assert!(message.contains("refused the credentials; check AWS_ACCESS_KEY_ID"), "{message}");
    assert!(message.contains("s3://mayfly-test/refusals/"), "{message}");
    assert_eq!(objects_under(&support::s3::fresh_config("refusals")).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_bucket_is_refused_and_not_created() {
    let mut config = support::s3::fresh_config("refusals");
    config.bucket = "mayfly-no-such-bucket".to_owned();
    let message = refusal(check_store(config.build(true).unwrap().as_ref(), &config.describe()).await);
    assert!(message.contains("its bucket does not exist"), "{message}");
    assert!(message.contains("s3://mayfly-no-such-bucket/"), "{message}");
    let store = config.build(true).unwrap();
    let listed: Result<Vec<_>, _> = store.list(None).try_collect().await;
    assert!(listed.is_err(), "the bucket was not created: {listed:?}");
}
