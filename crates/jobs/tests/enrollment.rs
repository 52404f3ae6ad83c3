//! Enrollment as the coordinator serves it, over real loopback connections:
//! the coordinator's enrollment desk on its TLS port (no client
//! certificate), and the worker's own `enroll` making its key in memory.
//! A worker with its token gets a certificate the mutual-TLS server accepts
//! and identifies; a reused token, an expired one, another run's, and a
//! request naming another worker are refused.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::routing::get;
use mayfly_core::{Clock, ManualClock, SystemClock};
use mayfly_jobs::enrollment::{EnrollRequest, EnrollmentDesk, EnrollmentTicket, Enrollments, enroll};
use mayfly_jobs::protocol::WorkerIdentity;
use mayfly_jobs::tls::{self, CertificateFingerprint, CertificatePolicy, RunAuthority, WorkerKey};
use mayfly_jobs::worker::coordinator_client;

const RUN: &str = "r-enroll";

struct Coordinator {
    desk: Arc<EnrollmentDesk>,
    clock: ManualClock,
    enroll_url: String,
    url: String,
    _servers: Vec<tokio::task::JoinHandle<()>>,
}

/// A run's enrollment port and its mutual-TLS port (one route answering
/// with the caller's certificate fingerprint), tokens lasting `lifetime`.
async fn coordinator(lifetime: Duration) -> Coordinator {
    let clock = ManualClock::starting_at(SystemClock.now());
    let now = clock.now();
    let deadline = now.saturating_add(Duration::from_secs(3600));
    let policy = CertificatePolicy { enrollment_token_lifetime: lifetime, ..CertificatePolicy::default() };
    let validity = policy.authority_validity(now, deadline);
    let authority = RunAuthority::create(RUN, validity).unwrap();
    let names = ["127.0.0.1".to_owned()];
    let mutual = authority.server_config(&names, validity).unwrap();
    let enrollment = authority.enrollment_server_config(&names, validity).unwrap();
    let desk = Arc::new(EnrollmentDesk::new(RUN, authority, policy, deadline, Arc::new(clock.clone())));

    let enroll_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let enroll_url = format!("https://{}", enroll_listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/who", get(|Extension(peer): Extension<CertificateFingerprint>| async move { hex::encode(peer.0) }));
    let servers = vec![
        tokio::spawn(tls::serve_enrollment(enroll_listener, enrollment, desk.clone().router())),
        tokio::spawn(tls::serve(listener, mutual, router)),
    ];
    Coordinator { desk, clock, enroll_url, url, _servers: servers }
}

fn identity(worker: &str) -> WorkerIdentity {
    WorkerIdentity { run: RUN.to_owned(), worker: worker.to_owned() }
}

impl Coordinator {
    fn ticket(&self, token: &str) -> EnrollmentTicket {
        EnrollmentTicket {
            url: self.enroll_url.clone(),
            token: token.to_owned(),
            authority_pem: self.desk.authority_pem().to_owned(),
        }
    }
}

async fn refusal(ticket: &EnrollmentTicket, worker: &str) -> String {
    enroll(ticket, &identity(worker), Duration::from_secs(10)).await.expect_err("refused").to_string()
}

#[tokio::test]
async fn a_worker_enrolls_once_with_its_token_and_is_served_under_the_certificate_it_got() {
    let coordinator = coordinator(Duration::from_secs(600)).await;
    let token = coordinator.desk.issue_token("w1-001");
    let credentials = enroll(&coordinator.ticket(&token), &identity("w1-001"), Duration::from_secs(10)).await.unwrap();
    assert_eq!(coordinator.desk.certificate_of("w1-001"), Some(credentials.fingerprint()));
    let answer = coordinator_client(&credentials)
        .unwrap()
        .get(format!("{}/who", coordinator.url))
        .send()
        .await
        .expect("served")
        .text()
        .await
        .unwrap();
    assert_eq!(answer, hex::encode(credentials.fingerprint().0));

    let reused = refusal(&coordinator.ticket(&token), "w1-001").await;
    assert!(reused.contains("403") && reused.contains("already used"), "{reused}");
    assert_eq!(coordinator.desk.certificate_of("w1-001"), Some(credentials.fingerprint()), "the first one stands");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let coordinator = coordinator(Duration::from_secs(60)).await;
    let token = coordinator.desk.issue_token("w1-001");
    coordinator.clock.advance(Duration::from_secs(61));
    let expired = refusal(&coordinator.ticket(&token), "w1-001").await;
    assert!(expired.contains("403") && expired.contains("expired"), "{expired}");
    assert_eq!(coordinator.desk.certificate_of("w1-001"), None);
}

#[tokio::test]
async fn another_runs_token_and_another_workers_token_are_refused() {
    let coordinator = coordinator(Duration::from_secs(600)).await;
    let own = coordinator.desk.issue_token("w1-001");
    let neighbour = coordinator.desk.issue_token("w1-002");
    let foreign = Enrollments::new("r-other", Duration::from_secs(600)).issue("w1-001", SystemClock.now());
    let refused = refusal(&coordinator.ticket(&foreign), "w1-001").await;
    assert!(refused.contains("403") && refused.contains("not issued to worker w1-001"), "{refused}");
    let refused = refusal(&coordinator.ticket(&neighbour), "w1-001").await;
    assert!(refused.contains("403") && refused.contains("not issued to worker w1-001"), "{refused}");
    // A worker of another run presenting itself here.
    let other_run = enroll(
        &coordinator.ticket(&own),
        &WorkerIdentity { run: "r-other".into(), worker: "w1-001".into() },
        Duration::from_secs(10),
    )
    .await
    .expect_err("another run's worker is refused")
    .to_string();
    assert!(other_run.contains("serves run r-enroll, not r-other"), "{other_run}");
    // None of that spent the right tokens.
    enroll(&coordinator.ticket(&own), &identity("w1-001"), Duration::from_secs(10)).await.unwrap();
    enroll(&coordinator.ticket(&neighbour), &identity("w1-002"), Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn a_certificate_request_for_another_workers_name_is_refused_and_spends_the_token() {
    let coordinator = coordinator(Duration::from_secs(600)).await;
    let token = coordinator.desk.issue_token("w1-001");
    coordinator.desk.issue_token("w1-002");
    let impostor = WorkerKey::generate(RUN, "w1-002").unwrap();
    let request = EnrollRequest {
        identity: identity("w1-001"),
        token: token.clone(),
        certificate_request: impostor.certificate_request().unwrap(),
    };
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls::enrollment_client_config(coordinator.desk.authority_pem()).unwrap())
        .build()
        .unwrap();
    let response = http
        .post(format!("{}{}", coordinator.enroll_url, mayfly_jobs::enrollment::ENROLL_PATH))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let text = response.text().await.unwrap();
    assert!(text.contains("w1-002, not worker w1-001"), "{text}");
    assert_eq!(coordinator.desk.certificate_of("w1-001"), None);
    assert_eq!(coordinator.desk.certificate_of("w1-002"), None);
    let reused = refusal(&coordinator.ticket(&token), "w1-001").await;
    assert!(reused.contains("already used"), "{reused}");
}

#[tokio::test]
async fn a_worker_refuses_an_enrollment_port_certified_by_another_authority() {
    let coordinator = coordinator(Duration::from_secs(600)).await;
    let impostor = self::coordinator(Duration::from_secs(600)).await;
    let token = coordinator.desk.issue_token("w1-001");
    // The worker trusts its run's authority; the impostor's port presents another.
    let ticket = EnrollmentTicket { url: impostor.enroll_url.clone(), ..coordinator.ticket(&token) };
    let error = enroll(&ticket, &identity("w1-001"), Duration::from_secs(1)).await.expect_err("not trusted");
    assert!(error.to_string().contains("cannot reach"), "{error}");
}
