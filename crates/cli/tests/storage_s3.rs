//! Objects on S3 through the real binary: `[storage] url` in `mayfly.toml`
//! puts a project's objects on the test SeaweedFS server (`support::s3`),
//! sealed; a store that cannot be used is refused before anything is
//! created; a bad `[storage]` table is a located error (exit code 3).

mod support;

use std::process::Command;

use support::{Project, assert_success, unique_name};

const MARKER: &str = "S3-PLAINTEXT-MARKER-2c9a";

fn spec(storage: &str) -> String {
    format!(
        "version = 1\nname = \"{}\"\ntags = {{ owner = \"test\" }}\n\n[storage]\n{storage}\n\n[buckets.inbox]\n",
        unique_name("s3")
    )
}

/// `mayfly ARGS` in `project` with the test server's AWS variables (and no
/// `MAYFLY_STORAGE_URL`: the file chooses).
fn with_aws(project: &Project, args: &[&str], endpoint: &str) -> Command {
    let mut command = project.command(args);
    for (name, value) in support::s3::environment("unused") {
        if name != "MAYFLY_STORAGE_URL" {
            command.env(name, value);
        }
    }
    command.env("AWS_ENDPOINT_URL", endpoint);
    command
}

/// Every object under `prefix` of the test bucket, with its bytes.
fn stored_objects(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(support::s3::endpoint())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                support::s3::ACCESS_KEY,
                support::s3::SECRET_KEY,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
        let listed = s3.list_objects_v2().bucket(support::s3::BUCKET).prefix(prefix).send().await.unwrap();
        let mut objects = Vec::new();
        for object in listed.contents() {
            let key = object.key().unwrap().to_owned();
            let got = s3.get_object().bucket(support::s3::BUCKET).key(&key).send().await.unwrap();
            objects.push((key, got.body.collect().await.unwrap().into_bytes().to_vec()));
        }
        objects
    })
}

#[test]
fn a_project_with_storage_on_s3_keeps_its_objects_there_sealed() {
    let prefix = format!("cli-storage/{}", unique_name("sealed"));
    let project = Project::with_spec(&spec(&format!("url = \"s3://{}/{prefix}\"", support::s3::BUCKET)));
    let endpoint = support::s3::endpoint();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut command = with_aws(&project, args, endpoint);
        let output = match stdin {
            None => command.output().unwrap(),
            Some(bytes) => {
                use std::io::Write;
                let mut child = command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(bytes).unwrap();
                child.wait_with_output().unwrap()
            }
        };
        assert_success(&output, args);
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["deploy"], None);
    let body = format!("{MARKER} chest pain\n").repeat(100);
    run(&["put", "inbox/charts/1.txt"], Some(body.as_bytes()));
    assert_eq!(run(&["get", "inbox/charts/1.txt"], None), body);

    let stored = stored_objects(&format!("{prefix}/"));
    let keys: Vec<&str> = stored.iter().map(|(key, _)| key.as_str()).collect();
    assert!(keys.contains(&format!("{prefix}/inbox/charts/1.txt").as_str()), "{keys:?}");
    for (key, bytes) in &stored {
        assert!(!bytes.windows(MARKER.len()).any(|window| window == MARKER.as_bytes()), "{key} holds plaintext");
    }
    assert!(!project.path(".mayfly/buckets").exists(), "nothing went to the local buckets directory");
}

#[test]
fn a_store_that_cannot_be_used_is_refused_before_anything_is_created() {
    let prefix = format!("cli-storage/{}", unique_name("refused"));
    let project = Project::with_spec(&spec(&format!("url = \"s3://{}/{prefix}\"", support::s3::BUCKET)));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("http://127.0.0.1:{port}");
    let output = with_aws(&project, &["deploy"], &unreachable).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("s3://mayfly-test/{prefix} at {unreachable}")), "{stderr}");
    assert!(stderr.contains("cannot be reached; check AWS_ENDPOINT_URL"), "{stderr}");
    assert!(!project.path(".mayfly/state.db").exists(), "no state store was created");
    assert!(!project.path(".mayfly/keyring.json").exists(), "no keyring was created");

    // Wrong credentials, against the real server: refused as well, nothing stored.
    let mut command = with_aws(&project, &["deploy"], support::s3::endpoint());
    let output = command.env("AWS_SECRET_ACCESS_KEY", "not-the-secret").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!project.path(".mayfly/state.db").exists());
    assert_eq!(stored_objects(&format!("{prefix}/")), Vec::new());

    // A profile object_store cannot read: refused, saying what to do instead.
    let mut command = with_aws(&project, &["deploy"], support::s3::endpoint());
    let output = command.env_remove("AWS_ACCESS_KEY_ID").env("AWS_PROFILE", "clinic").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("AWS_PROFILE=clinic is set, but Mayfly's S3 client (object_store) cannot read AWS profiles"),
        "{stderr}"
    );
    assert!(stderr.contains("aws configure export-credentials --profile clinic"), "{stderr}");
    assert!(!project.path(".mayfly/state.db").exists());
}

#[test]
fn a_bad_storage_table_is_a_located_error() {
    for (storage, expected) in [
        ("url = \"gs://bucket/x\"", "`url` of `[storage]` is neither `file:` nor `s3://`"),
        ("url = \"s3://KEY:SECRET@bucket/x\"", "holds credentials or parameters"),
        ("url = \"file:/elsewhere\"", "names a directory"),
        ("bucket = \"x\"", "bucket"),
    ] {
        let project = Project::with_spec(&spec(storage));
        let output = project.run(&["validate"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{storage}: {stderr}");
        assert!(stderr.contains(expected), "{storage}: {stderr}");
        assert!(stderr.contains("mayfly.toml:6"), "located at the line: {stderr}");
        assert!(!stderr.contains("KEY:SECRET@"), "a secret in the URL is not repeated: {stderr}");
    }
}
