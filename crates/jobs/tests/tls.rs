//! Mutual TLS as the coordinator serves it, over real loopback connections:
//! a client with a certificate from the run's authority is served and its
//! certificate identified; a certificate from another authority, no
//! certificate, plain HTTP, and a server from another authority all fail.
//! Worker credentials are made as enrollment makes them: the worker's key
//! in memory, its certificate request signed by the authority.

use std::time::Duration;

use axum::Extension;
use axum::routing::get;
use mayfly_core::{Clock, SystemClock};
use mayfly_jobs::tls::{self, CertificateFingerprint, CertificatePolicy, RunAuthority, WorkerCredentials, WorkerKey};
use mayfly_jobs::worker::coordinator_client;

/// An authority for `run` and a TLS server of it on loopback whose one route
/// answers with the fingerprint of the caller's certificate.
async fn serve(run: &str) -> (RunAuthority, String, tokio::task::JoinHandle<()>) {
    let now = SystemClock.now();
    let validity = CertificatePolicy::default().authority_validity(now, now.saturating_add(Duration::from_secs(60)));
    let authority = RunAuthority::create(run, validity).expect("an authority");
    let config = authority.server_config(&["127.0.0.1".to_owned(), "localhost".to_owned()], validity).unwrap();
    let router = axum::Router::new()
        .route("/who", get(|Extension(peer): Extension<CertificateFingerprint>| async move { hex_of(&peer.0) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(tls::serve(listener, config, router));
    (authority, format!("https://{address}"), server)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Credentials for `worker` of `run` signed by `signer` (the authority of `run`), trusting `trusted`'s certificate.
fn credentials(signer: &RunAuthority, run: &str, trusted: &RunAuthority, worker: &str) -> WorkerCredentials {
    let now = SystemClock.now();
    let validity = CertificatePolicy::default().worker_validity(now, now.saturating_add(Duration::from_secs(60)));
    let key = WorkerKey::generate(run, worker).unwrap();
    let (certificate, _) =
        signer.sign_worker_request(worker, &key.certificate_request().unwrap(), validity).expect("signed");
    key.with_certificate(trusted.certificate_pem(), &certificate).expect("credentials")
}

#[tokio::test]
async fn a_worker_of_the_run_is_served_and_identified_by_its_certificate() {
    let (authority, url, _server) = serve("r-own").await;
    let credentials = credentials(&authority, "r-own", &authority, "w1-001");
    let fingerprint = credentials.fingerprint();
    let client = coordinator_client(&credentials).unwrap();
    for host in [url.clone(), url.replace("127.0.0.1", "localhost")] {
        let answer = client.get(format!("{host}/who")).send().await.expect("served").text().await.unwrap();
        assert_eq!(answer, hex_of(&fingerprint.0), "{host}");
    }
}

#[tokio::test]
async fn a_certificate_from_another_runs_authority_is_refused_in_the_handshake() {
    let (authority, url, _server) = serve("r-own").await;
    let (other, _, _other_server) = serve("r-other").await;
    // The forger trusts the real authority, so only its own certificate can fail.
    let client = coordinator_client(&credentials(&other, "r-other", &authority, "w1-001")).unwrap();
    let error = client.get(format!("{url}/who")).send().await.expect_err("refused");
    assert!(error.is_connect() || error.is_request(), "{error:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let (authority, url, _server) = serve("r-own").await;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(authority.certificate_pem().as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let client = reqwest::Client::builder().use_preconfigured_tls(config).build().unwrap();
    let outcome = client.get(format!("{url}/who")).send().await;
    assert!(outcome.is_err(), "a client without a certificate was answered: {outcome:?}");
}

#[tokio::test]
async fn plain_http_to_the_port_gets_no_answer() {
    let (_authority, url, _server) = serve("r-own").await;
    let plain = url.replace("https://", "http://");
    let outcome = reqwest::Client::new().get(format!("{plain}/who")).send().await;
    assert!(outcome.is_err(), "plain HTTP was answered: {outcome:?}");
}

#[tokio::test]
async fn a_worker_refuses_a_coordinator_certified_by_another_authority() {
    let (authority, _url, _server) = serve("r-own").await;
    let (_impostor_authority, impostor_url, _impostor) = serve("r-impostor").await;
    let client = coordinator_client(&credentials(&authority, "r-own", &authority, "w1-001")).unwrap();
    let error = client.get(format!("{impostor_url}/who")).send().await.expect_err("the worker must not trust it");
    assert!(error.is_connect() || error.is_request(), "{error:?}");
}

#[tokio::test]
async fn a_worker_will_not_speak_plain_http_even_when_told_to() {
    let (authority, url, _server) = serve("r-own").await;
    let client = coordinator_client(&credentials(&authority, "r-own", &authority, "w1-001")).unwrap();
    let outcome = client.get(format!("{}/who", url.replace("https://", "http://"))).send().await;
    assert!(outcome.is_err(), "{outcome:?}");
}
