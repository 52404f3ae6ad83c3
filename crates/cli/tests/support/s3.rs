//! A real S3 server for the CLI's tests (SeaweedFS, as
//! `crates/buckets/tests/support/s3.rs`): the one at
//! `MAYFLY_TEST_S3_ENDPOINT` (scripts/test.sh starts one for the suite),
//! else the one `scripts/seaweedfs.sh start` starts or finds, with that
//! script's identity and bucket. Each project gets a prefix of its own.

use std::process::Command;
use std::sync::OnceLock;

/// The bucket and identity `scripts/seaweedfs.sh` creates.
pub const BUCKET: &str = "mayfly-test";
pub const ACCESS_KEY: &str = "mayfly";
pub const SECRET_KEY: &str = "mayfly-test-secret";

/// The test server's S3 endpoint (`http://127.0.0.1:PORT`).
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("MAYFLY_TEST_S3_ENDPOINT") {
            return endpoint;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/seaweedfs.sh");
        let output = Command::new("bash").arg(script).arg("start").output().expect("run scripts/seaweedfs.sh start");
        assert!(
            output.status.success(),
            "scripts/seaweedfs.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the endpoint is UTF-8").trim().to_owned()
    })
}

/// The variables that put a project's objects under `s3://BUCKET/<prefix>`.
pub fn environment(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MAYFLY_STORAGE_URL", format!("s3://{BUCKET}/{prefix}")),
        ("AWS_ENDPOINT_URL", endpoint().to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
    ]
}

/// The variables a project's commands must not inherit from the test's own environment.
pub const VARIABLES: &[&str] = &[
    "MAYFLY_STORAGE_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
];
