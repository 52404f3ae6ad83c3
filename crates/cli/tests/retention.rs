//! Retention through the real binary, with durations of seconds: `mayfly
//! prune` deletes objects past their bucket's `retention`, sealed logs past
//! `log_retention` and messages past their queue's `retention`, and nothing
//! else; each expired object leaves a `deleted` event with its reason, which
//! a route delivers as S3's `LifecycleExpiration:Delete`; and `mayfly up`
//! runs the same pass by itself.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Project, unique_name};

fn project() -> Project {
    let spec = format!(
        r#"version = 1
name = "{}"
[policy]
log_retention = "2s"
[buckets.scratch]
retention = "2s"
[buckets.inbox]
[buckets.logs]
[queues.work]
retention = "2s"
[queues.gone]
[[routes]]
from = {{ bucket = "scratch", events = ["deleted"] }}
to = {{ queue = "gone" }}
[functions.f]
command = ["true"]
[jobs.nightly]
source = {{ queue = "work" }}
function = "f"
logs = "logs"
"#,
        unique_name("retention")
    );
    Project::deployed_with(&spec)
}

fn put(project: &Project, address: &str) {
    support::assert_success(&project.run_with_stdin(&["put", address], b"chart"), &["put", address]);
}

fn keys(project: &Project, bucket: &str) -> Vec<String> {
    let listed = project.json(&["ls", bucket]);
    listed.as_array().unwrap().iter().map(|object| object["key"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn prune_deletes_what_outlived_its_retention_and_leaves_events_with_the_reason() {
    let project = project();
    for address in ["scratch/old.txt", "inbox/kept.txt", "logs/runs/run-1/w1.log.zst", "logs/notes.txt"] {
        put(&project, address);
    }
    project.ok(&["send", "work", "old message"]);
    std::thread::sleep(Duration::from_millis(2_500));
    put(&project, "scratch/young.txt");
    project.ok(&["send", "work", "young message"]);

    let report = project.json(&["prune"]);
    assert_eq!(
        (report["objects"].as_u64(), report["sealed_logs"].as_u64(), report["messages"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(keys(&project, "scratch"), ["young.txt"]);
    assert_eq!(keys(&project, "inbox"), ["kept.txt"], "no retention, nothing expires");
    assert_eq!(keys(&project, "logs"), ["notes.txt"], "log_retention is for sealed run logs");
    let left = project.json(&["peek", "work"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert!(left.to_string().contains("young message"), "{left}");

    let events = project.json(&["events"]);
    let reasons: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "deleted")
        .map(|event| {
            (
                format!("{}/{}", event["bucket"].as_str().unwrap(), event["key"].as_str().unwrap()),
                event["reason"].as_str().unwrap_or("none").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("scratch/old.txt".to_owned(), "retention".to_owned()),
            ("logs/runs/run-1/w1.log.zst".to_owned(), "log_retention".to_owned())
        ],
        "{events}"
    );
    let text = project.ok(&["events"]);
    assert!(text.contains("retention"), "the event log shows why: {text}");

    // `mayfly up` routes the expiry as a lifecycle expiration, and runs a pass of its own.
    std::thread::sleep(Duration::from_millis(2_500));
    let up = project.spawn_up();
    let gone = project
        .wait_for(&["peek", "gone"], Duration::from_secs(60), |messages| messages.as_array().unwrap().len() >= 2);
    up.stop();
    let bodies: Vec<Value> = gone
        .as_array()
        .unwrap()
        .iter()
        .map(|message| serde_json::from_str(message["body"].as_str().unwrap()).unwrap())
        .collect();
    let names: Vec<(&str, &str)> = bodies
        .iter()
        .flat_map(|body| body["Records"].as_array().unwrap().iter())
        .map(|record| (record["eventName"].as_str().unwrap(), record["s3"]["object"]["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [("LifecycleExpiration:Delete", "old.txt"), ("LifecycleExpiration:Delete", "young.txt")],
        "{gone}"
    );
    assert_eq!(
        keys(&project, "scratch"),
        Vec::<String>::new(),
        "up's own pass expired the young object once it was old"
    );
}
