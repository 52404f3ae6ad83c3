//! `mayfly audit` on a container started by hand with Mayfly's labels and a
//! run nobody knows: the audit finds it through the real Docker engine's
//! label filter, reports it as an orphan (exit 10), and `--reap` stops it.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::Project;

const VIOLATIONS_FOUND: i32 = 10;
const IMAGE: &str = "mayfly-test-sleep:1";

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("the docker command runs (install docker.io)")
}

fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Removes the hand-started container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.0]);
    }
}

#[test]
fn a_labelled_container_started_by_hand_for_an_unknown_run_is_an_orphan_and_reap_stops_it() {
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version.status.success(),
        "this test needs a running Docker engine: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    let name = format!("audit-container-{}", std::process::id());
    let project = Project::deployed_with(&format!(
        "version = 1\nname = \"{name}\"\ntags = {{ owner = \"clinical-data\", data-class = \"phi\" }}\n[policy]\nrequire_tags = [\"owner\", \"data-class\"]\n"
    ));
    project.ok(&["image", "build", "--tag", IMAGE, "--include", "/usr/bin/sleep"]);
    let run = "run-20261201T000000-unknown";
    let id = docker_ok(&[
        "run",
        "--detach",
        "--network",
        "none",
        "--label",
        "mayfly.managed=true",
        "--label",
        &format!("mayfly.project={name}"),
        "--label",
        &format!("mayfly.run={run}"),
        "--label",
        "mayfly.role=worker",
        "--label",
        "mayfly.tag.owner=clinical-data",
        "--label",
        "mayfly.tag.data-class=phi",
        "--entrypoint",
        "/usr/bin/sleep",
        IMAGE,
        "300",
    ]);
    let _container = Container(id.clone());

    let output = project.run(&["audit", "--json"]);
    assert_eq!(output.status.code(), Some(VIOLATIONS_FOUND), "{}", String::from_utf8_lossy(&output.stderr));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    let resource = format!("container:{id}");
    let orphan = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|finding| finding["resource"].as_str().is_some_and(|found| found.starts_with(&resource[..22])))
        .unwrap_or_else(|| panic!("no finding names {resource}: {document}"));
    assert_eq!(
        (orphan["rule"].as_str(), orphan["severity"].as_str()),
        (Some("orphaned-resource"), Some("violation")),
        "{orphan}"
    );
    let live: Vec<&Value> =
        document["inventory"]["live"].as_array().unwrap().iter().filter(|live| live["run"] == run).collect();
    assert_eq!(live.len(), 1, "the inventory lists the container with its run: {document}");
    assert_eq!(live[0]["role"], "worker");

    let output = project.run(&["audit", "--reap", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let reaped: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        reaped["reaped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|gone| gone["id"].as_str().is_some_and(|found| found.starts_with(&resource[..22]))),
        "{reaped}"
    );
    let running = docker(&["inspect", "--format", "{{.State.Running}}", &id]);
    assert!(
        !running.status.success() || String::from_utf8_lossy(&running.stdout).trim() == "false",
        "the orphan container is stopped or removed"
    );
}
