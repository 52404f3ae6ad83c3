//! SQS long polling (`WaitTimeSeconds`) on the PostgreSQL state store,
//! through the endpoint's router with SigV4-signed requests: a receive that
//! is waiting returns as soon as another connection's send commits (the
//! store's `LISTEN`/`NOTIFY` wakes it), well under the 100 ms the endpoint
//! used to sleep between looks; and a long poll with nothing to receive
//! still waits its full `WaitTimeSeconds`.

#[path = "../../state-postgres/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use mayfly_core::queue::QueueConfig;
use mayfly_core::{Name, SystemClock};
use mayfly_state::{AccessStore, NewApiToken, OutgoingMessage, QueueStore, StateStore};
use mayfly_state_postgres::PostgresStore;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN_ID: &str = "00ff12ab34cd56ef";
const SECRET: &str = "0123456789abcdef0123456789abcdef01234567";

/// A ReceiveMessage (or other `operation`) request signed as an SDK signs it.
fn signed(operation: &str, body: &Value) -> Request<Body> {
    let body = body.to_string().into_bytes();
    let mut request = Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "localhost:8444")
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{operation}"))
        .body(())
        .unwrap();
    let identity =
        aws_credential_types::Credentials::new(mayfly_aws::access_key_id(TOKEN_ID), SECRET, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(mayfly_aws::REGION)
        .name("sqs")
        .time(SystemTime::now())
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(&str, &str)> =
        request.headers().iter().map(|(name, value)| (name.as_str(), value.to_str().unwrap())).collect();
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        "https://localhost:8444/",
        headers.into_iter(),
        aws_sigv4::http_request::SignableBody::Bytes(&body),
    )
    .unwrap();
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request.map(|()| Body::from(body))
}

async fn call(router: &Router, operation: &str, body: Value) -> Value {
    let response = router.clone().oneshot(signed(operation, &body)).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(status.is_success(), "{operation} answered {status}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap()
}

fn long_poll(router: &Router, seconds: u64) -> tokio::task::JoinHandle<(Value, Instant)> {
    let router = router.clone();
    tokio::spawn(async move {
        let answer = call(&router, "ReceiveMessage", json!({ "QueueUrl": "work", "WaitTimeSeconds": seconds })).await;
        (answer, Instant::now())
    })
}

/// The synchronous PostgreSQL client (the test database's) runs outside the
/// runtime; the endpoint inside it.
#[test]
fn a_long_poll_on_postgres_wakes_at_once_on_another_connections_send_and_otherwise_waits_it_out() {
    let database = support::TestDatabase::create();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(long_polls(&database.url));
    drop(runtime);
}

async fn long_polls(url: &str) {
    let open = || Arc::new(PostgresStore::open(url, Arc::new(SystemClock)).expect("open the store"));
    // The endpoint's store, and another (its own connections) that sends.
    let (state, sender) = (open(), open());
    let work = Name::new("work").unwrap();
    state.create_queue(&work, &QueueConfig::default(), &[]).unwrap();
    state
        .create_api_token(NewApiToken {
            id: TOKEN_ID.to_owned(),
            name: "consumer".to_owned(),
            secret_sha256: "0".repeat(64),
            scopes: vec!["queues:read".to_owned(), "messages:write".to_owned()],
            jobs: Vec::new(),
            buckets: Vec::new(),
            expires_at: None,
            aws_secret: Some(SECRET.to_owned()),
        })
        .unwrap();
    let objects = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = state.clone();
    let router = mayfly_aws::router(mayfly_aws::AwsConfig {
        state: store.clone(),
        buckets: mayfly_buckets::Buckets::open(objects.path(), store.clone(), Arc::new(SystemClock)).unwrap(),
        clock: Arc::new(SystemClock),
        access_log: mayfly_api::access_log::AccessLog::start(store.clone()),
        domain: "localhost".to_owned(),
    });

    // The store's listener connects in the background when first watched:
    // hold a watch of our own until a send is heard, so the rounds below
    // measure wake-ups, not the listener's start.
    let (told, heard) = std::sync::mpsc::channel::<()>();
    let _listening = state
        .watch_messages(Arc::new(move |_: &str| {
            let _ = told.send(());
        }))
        .unwrap()
        .expect("PostgreSQL wakes receivers");
    let ready = Name::new("ready").unwrap();
    sender.create_queue(&ready, &QueueConfig::default(), &[]).unwrap();
    let started = Instant::now();
    while heard.recv_timeout(Duration::from_millis(200)).is_err() {
        sender.send_messages(&ready, &[OutgoingMessage::new("listening?")]).unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "the listener never heard a send");
    }

    let mut latencies = Vec::new();
    for round in 0..7 {
        let waiting = long_poll(&router, 10);
        // Long enough for the receive to have looked once and be waiting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "round {round}: the long poll returned before anything was sent");
        let body = format!("round {round}");
        let sent_by = sender.clone();
        let queue = work.clone();
        let sent = tokio::task::spawn_blocking(move || {
            sent_by.send_messages(&queue, &[OutgoingMessage::new(body.as_str())]).unwrap();
            Instant::now()
        })
        .await
        .unwrap();
        let (answer, returned) = waiting.await.unwrap();
        let messages = answer["Messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(messages.len(), 1, "round {round}: {answer}");
        assert_eq!(messages[0]["Body"], format!("round {round}"));
        call(&router, "DeleteMessage", json!({ "QueueUrl": "work", "ReceiptHandle": messages[0]["ReceiptHandle"] }))
            .await;
        latencies.push(returned.saturating_duration_since(sent));
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "long poll on PostgreSQL, from the send's commit to the receive's answer: median {median:?}, all {latencies:?}"
    );
    // The old loop looked every 100 ms: half that on average, plus the receive.
    assert!(median < Duration::from_millis(30), "median wake-up {median:?} (all {latencies:?})");

    // Nothing to receive: the full wait, then an empty answer.
    let started = Instant::now();
    let (answer, returned) = long_poll(&router, 2).await.unwrap();
    let waited = returned - started;
    println!("an empty 2 s long poll answered after {waited:?}");
    assert!(answer["Messages"].as_array().is_none_or(Vec::is_empty), "{answer}");
    assert!(waited >= Duration::from_secs(2), "an empty 2 s long poll answered after {waited:?}");
    assert!(waited < Duration::from_secs(4), "an empty 2 s long poll answered after {waited:?}");
}
