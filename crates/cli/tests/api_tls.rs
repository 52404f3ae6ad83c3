//! `[api].tls` with the user's own certificate: `mayfly serve` presents that
//! certificate (not the project's generated one) to a real TLS client that
//! trusts only it, announces its fingerprint, and refuses to start, naming
//! the file, when the key is missing.

mod support;

use std::process::Stdio;
use std::time::Duration;

use reqwest::blocking::Client;
use sha2::{Digest, Sha256};
use support::{Project, Served};

/// A self-signed certificate for a hospital's own host name and loopback:
/// its PEM, its key's PEM and the SHA-256 fingerprint of its DER bytes.
fn users_own_certificate() -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["charts.hospital.test".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "charts.hospital.test");
    let cert = params.self_signed(&key).unwrap();
    let fingerprint = Sha256::digest(cert.der()).iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":");
    (cert.pem(), key.serialize_pem(), fingerprint)
}

fn client_trusting(pem: &str) -> Client {
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn project_with_tls(name: &str) -> Project {
    let spec = format!(
        "version = 1\nname = \"{name}-{}\"\n[api]\ntls = {{ cert = \"certs/api.pem\", key = \"certs/api.key\" }}\n",
        std::process::id()
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("certs")).unwrap();
    project
}

#[test]
fn serve_presents_the_users_own_certificate_from_api_tls() {
    let project = project_with_tls("own-cert");
    let (cert, key, fingerprint) = users_own_certificate();
    std::fs::write(project.path("certs/api.pem"), &cert).unwrap();
    std::fs::write(project.path("certs/api.key"), &key).unwrap();
    project.ok(&["deploy"]);

    let server = Served::start(&project);
    let port = server.address.port();
    assert!(
        server.announcement.iter().any(|line| line.contains("certs/api.pem") && line.contains(&fingerprint)),
        "the announced certificate is the user's, with its fingerprint: {:?}",
        server.announcement
    );

    let url = format!("https://127.0.0.1:{port}/v1/openapi.json");
    let response = client_trusting(&cert).get(&url).send().expect("a client trusting only the user's certificate");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    if let Ok(generated) = std::fs::read_to_string(project.path(".mayfly/tls/cert.pem")) {
        let refused = client_trusting(&generated).get(&url).send();
        assert!(refused.is_err(), "the project's generated certificate is not the one served");
    }
    drop(server);
}

#[test]
fn serve_refuses_to_start_when_the_api_tls_key_is_missing_and_names_it() {
    let project = project_with_tls("missing-key");
    let (cert, _, _) = users_own_certificate();
    std::fs::write(project.path("certs/api.pem"), cert).unwrap();
    project.ok(&["deploy"]);
    let output = project
        .command(&["serve", "--listen", "127.0.0.1:0", "--aws-listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started without its key: {stderr}");
    assert!(stderr.contains("api.key"), "the error names the missing key file: {stderr}");
}
