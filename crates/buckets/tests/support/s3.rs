//! The real S3 server of the tests: SeaweedFS at `MAYFLY_TEST_S3_ENDPOINT`
//! (scripts/test.sh starts one for the suite), else the one
//! `scripts/seaweedfs.sh start` starts or finds, with that script's
//! identity and bucket. Each test gets a prefix of its own in the bucket.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use mayfly_buckets::s3::S3Config;

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

/// A fresh prefix of the test bucket, reached with the test identity.
pub fn fresh_config(what: &str) -> S3Config {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "{what}/{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        hex::encode(rand::random::<[u8; 4]>())
    );
    S3Config {
        bucket: BUCKET.to_owned(),
        prefix,
        endpoint: Some(endpoint().to_owned()),
        region: "us-east-1".to_owned(),
        access_key_id: Some(ACCESS_KEY.to_owned()),
        secret_access_key: Some(SECRET_KEY.to_owned()),
        session_token: None,
    }
}
