//! `mayfly audit` through the real binary: a clean project, an orphan started
//! by hand and reaped, policy violations refused at deploy, runs stopped at
//! their deadline or budget, a run left past its deadline when its coordinator
//! died, sealed logs past their retention, and the audits
//! recorded after every deploy and every run.

mod support;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::Project;

const VIOLATIONS_FOUND: i32 = 10;
const INVALID_ARCHITECTURE: i32 = 3;

/// A project name of its own per test, so inventories by project tag see only this test's processes.
fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// Every policy rule switched on, and a project that keeps them all.
fn clean_spec(name: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
tags = {{ owner = "clinical-data", data-class = "phi" }}

[policy]
require_tags = ["owner", "data-class"]
encryption = "required"
tls = "required"
networks = ["10.77.0.0/16"]
max_run_cost = 5.0
log_retention = "90d"

[buckets.charts]
[buckets.logs]
retention = "30d"

[queues.to-code]
tags = {{ stage = "intake" }}

[functions.code-chart]
command = ["sh", "-c", "cat"]

[api]
listen = "127.0.0.1:8443"
"#
    )
}

fn findings(document: &Value) -> Vec<(String, String, String)> {
    document["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array: {document}"))
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                f["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `mayfly audit ARGS --json`, requiring exit `code`; the document it printed.
fn audit_json(project: &Project, args: &[&str], code: i32) -> Value {
    let mut with_json = vec!["audit"];
    with_json.extend_from_slice(args);
    with_json.push("--json");
    let output = project.run(&with_json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "mayfly {with_json:?}\nstdout: {stdout}\nstderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not one JSON document ({error}): {stdout}"))
}

#[test]
fn a_clean_project_audits_with_no_violations_after_deploy_and_by_hand() {
    let project = Project::with_spec(&clean_spec(&unique_name("audit-clean")));
    let deployed = project.ok(&["deploy"]);
    assert!(deployed.contains("audit: 0 violation(s), 0 warning(s), 0 notice(s)"), "{deployed}");

    let after_deploy = audit_json(&project, &["--latest"], 0);
    assert_eq!(after_deploy["trigger"], "deploy", "{after_deploy}");
    assert_eq!(after_deploy["findings"], serde_json::json!([]));

    let document = audit_json(&project, &[], 0);
    assert_eq!(document["trigger"], "manual");
    assert!(document["audit"].as_u64() > after_deploy["audit"].as_u64(), "a new audit is recorded");
    assert_eq!(findings(&document), vec![]);
    let inventory = &document["inventory"];
    let buckets: Vec<&str> =
        inventory["buckets"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(buckets, ["charts", "logs"]);
    assert!(
        inventory["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["encrypted"] == true && b["owner"] == "clinical-data")
    );
    assert_eq!(inventory["state_store"]["payloads_encrypted"], true);
    let queues: Vec<&str> =
        inventory["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert!(queues.contains(&"to-code") && queues.iter().any(|q| q.starts_with("mayfly-async-")), "{queues:?}");
    assert_eq!(inventory["functions"][0]["tags"]["data-class"], "phi");
    assert_eq!(inventory["api"]["listen"], "127.0.0.1:8443");
    assert_eq!(inventory["live"], serde_json::json!([]));
    assert_eq!(document["summary"]["violations"], 0);
    assert!(document["summary"]["resources_checked"].as_u64().unwrap() >= 8, "{document}");

    let text = project.ok(&["audit"]);
    assert!(text.contains("no findings: every rule passed"), "{text}");
}

#[test]
fn a_process_started_by_hand_with_an_unknown_run_is_an_orphan_and_reap_kills_it() {
    let name = unique_name("audit-orphan");
    let project = Project::deployed_with(&clean_spec(&name));
    // Tagged as LocalProvisioner tags its processes, in a process group of its own.
    let tags = serde_json::json!({
        "mayfly.project": name,
        "mayfly.run": "run-20261201T000000-unknown",
        "mayfly.role": "worker",
        "owner": "clinical-data",
        "data-class": "phi",
    });
    let mut orphan = Command::new("sleep")
        .arg("300")
        .env("MAYFLY_TAGS", tags.to_string())
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .expect("start a sleeping process");
    let orphan_id = format!("pid:{}:", orphan.id());

    let document = audit_json(&project, &[], VIOLATIONS_FOUND);
    let found = findings(&document);
    let violations: Vec<_> = found.iter().filter(|(_, severity, _)| severity == "violation").collect();
    assert_eq!(violations.len(), 1, "{document}");
    let (rule, _, resource) = violations[0];
    assert_eq!(rule, "orphaned-resource");
    assert!(resource.starts_with(&orphan_id), "{resource} is not {orphan_id}…");
    // `[policy].networks` is set and a local process has no address inside it.
    assert!(found.contains(&("network-boundary".into(), "warning".into(), resource.clone())), "{document}");
    assert!(document["findings"][0]["message"].as_str().unwrap().contains("no record of"), "{document}");
    let live = &document["inventory"]["live"][0];
    assert_eq!((live["role"].as_str(), live["run"].as_str()), (Some("worker"), Some("run-20261201T000000-unknown")));

    let output = project.run(&["audit"]);
    assert_eq!(output.status.code(), Some(VIOLATIONS_FOUND));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("VIOLATIONS (1)") && text.contains("orphaned-resource  process pid:"), "{text}");
    assert!(text.contains("→ `mayfly audit --reap` stops it"), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 policy violation(s)"));

    let reaped = audit_json(&project, &["--reap"], 0);
    assert_eq!(reaped["reaped"][0]["id"].as_str(), Some(resource.as_str()), "{reaped}");
    assert_eq!(findings(&reaped), vec![], "re-checked after reaping");
    assert_eq!(reaped["trigger"], "manual --reap");
    // It is gone: it already exited (reaping verified it), so waiting returns at once.
    let status = orphan.wait().expect("wait for the orphan");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    assert_eq!(project.json(&["ps"]), serde_json::json!([]));
}

#[test]
fn policy_violations_in_the_file_are_refused_at_deploy_and_change_nothing() {
    let cases = [
        (
            "a resource missing a required tag",
            "[policy]\nrequire_tags = [\"owner\", \"cost-center\"]\n[buckets.charts]\ntags = { cost-center = \"42\" }\n[queues.to-code]\n",
            "`[policy]` requires tag `cost-center` on every resource; it is missing from the project tags and from queue `to-code`",
        ),
        (
            "an unencrypted bucket under encryption = required",
            "[policy]\nencryption = \"required\"\n[buckets.plain]\nencryption = false\n",
            "bucket `plain` turns encryption off, but `[policy]` requires encryption",
        ),
        (
            "a docker subnet outside the allowed networks",
            "[policy]\nnetworks = [\"10.77.0.0/16\"]\n[queues.work]\n[functions.f]\ncommand = [\"true\"]\n[jobs.outside]\nsource = { queue = \"work\" }\nfunction = \"f\"\nprovisioner = { kind = \"docker\", network = \"phi\", subnet = \"10.78.1.0/24\" }\n",
            "`subnet` 10.78.1.0/24 of `provisioner` of job `outside` is outside the networks `[policy]` allows",
        ),
        (
            "an API off loopback without TLS",
            "[policy]\ntls = \"required\"\n[api]\nlisten = \"0.0.0.0:8443\"\n",
            "`[api]` listens on 0.0.0.0:8443 with only Mayfly's self-signed certificate for localhost, but `[policy]` requires TLS",
        ),
    ];
    for (case, body, error) in cases {
        let header = format!("version = 1\nname = \"{}\"\ntags = {{ owner = \"o\" }}\n", unique_name("audit-refused"));
        // On a project never deployed: nothing is created.
        let fresh = Project::with_spec(&format!("{header}{body}"));
        let stderr = fresh.fails(&["deploy"], INVALID_ARCHITECTURE);
        assert!(stderr.contains(error), "{case}: {stderr}");
        assert!(stderr.contains("mayfly.toml:"), "{case}: the error says where: {stderr}");
        assert!(!fresh.path(".mayfly").exists(), "{case}: a refused first deploy creates nothing");

        // On a deployed project: the deployment and its resources stay as they were.
        let deployed = Project::deployed_with(&format!("{header}[buckets.kept]\n"));
        std::fs::write(deployed.path("mayfly.toml"), format!("{header}{body}")).unwrap();
        let stderr = deployed.fails(&["deploy"], INVALID_ARCHITECTURE);
        assert!(stderr.contains(error), "{case}: {stderr}");
        assert_eq!(deployed.json(&["deployments"]).as_array().unwrap().len(), 1, "{case}");
        let buckets = deployed.json(&["ls"]);
        assert_eq!(buckets.as_array().unwrap().len(), 1, "{case}: {buckets}");
    }
}

/// A function that sleeps `$SLEEP` seconds per item.
const SLEEPER: &str = "#!/bin/sh\ncat >/dev/null\nsleep \"${SLEEP:-0}\"\nprintf '{\"done\": true}'\n";

/// A project with one bucket-prefix job per `(name, extra job keys)`, `items` objects under `in/`.
fn job_project(items: usize, policy: &str, pricing: &str, jobs: &[(&str, &str)]) -> Project {
    let mut spec = format!(
        "version = 1\nname = \"{}\"\ntags = {{ owner = \"tests\" }}\n[policy]\n{policy}\n[pricing]\n{pricing}\n\
         [buckets.scans]\n[buckets.logs]\n[functions.work]\ncommand = [\"sh\", \"functions/sleeper.sh\"]\nenv = {{ SLEEP = \"3\" }}\n",
        unique_name("audit-runs")
    );
    for (job, extra) in jobs {
        spec.push_str(&format!(
            "[jobs.{job}]\nsource = {{ bucket = \"scans\", prefix = \"in/\" }}\nfunction = \"work\"\nlogs = \"logs\"\n{extra}\n"
        ));
    }
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    project.ok(&["deploy"]);
    for item in 0..items {
        let output = project.run_with_stdin(&["put", &format!("scans/in/{item:03}")], b"x");
        support::assert_success(&output, &["put"]);
    }
    project
}

/// `mayfly run JOB --json`, which fails (exit 5) for a run that did not succeed; the run's id and status.
fn run_job(project: &Project, job: &str) -> (String, String) {
    let output = project.run(&["run", job, "--json"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    (outcome["run"].as_str().unwrap().to_owned(), outcome["status"].as_str().unwrap().to_owned())
}

#[test]
fn runs_stopped_at_their_deadline_or_budget_show_in_the_audit_after_the_run() {
    // worker_hour = 3600: a worker costs 1 per second, so a 0.5 budget lapses within a second.
    let project = job_project(
        2,
        "max_run_cost = 5.0",
        "worker_hour = 3600",
        &[("late", "deadline = \"1s\""), ("costly", "budget = 0.5")],
    );

    let (late_run, status) = run_job(&project, "late");
    assert_eq!(status, "deadline_exceeded");
    let after_run = audit_json(&project, &["--latest"], 0);
    assert_eq!(after_run["trigger"], format!("run:{late_run}"), "{after_run}");
    assert!(findings(&after_run).contains(&("run-deadline".into(), "warning".into(), late_run.clone())), "{after_run}");
    // The late run's own budget (the policy's 5.0) was not reached in its one second.
    assert!(
        !findings(&after_run).iter().any(|(rule, _, _)| rule == "orphaned-resource"),
        "the coordinator is not its own orphan: {after_run}"
    );

    let (costly_run, status) = run_job(&project, "costly");
    assert_eq!(status, "budget_exceeded");
    let after_run = audit_json(&project, &["--latest"], 0);
    assert_eq!(after_run["trigger"], format!("run:{costly_run}"));
    let found = findings(&after_run);
    assert!(found.contains(&("run-budget".into(), "warning".into(), costly_run.clone())), "{after_run}");
    assert!(found.contains(&("run-deadline".into(), "warning".into(), late_run.clone())), "{after_run}");

    // By hand: the same warnings, which do not fail the audit.
    let document = audit_json(&project, &[], 0);
    let message = document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["resource"] == costly_run.as_str())
        .map(|f| f["message"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(message.contains("ended budget_exceeded") && message.contains("against its budget of 0.5000"), "{message}");
    let run =
        document["inventory"]["runs"].as_array().unwrap().iter().find(|r| r["id"] == costly_run.as_str()).unwrap();
    assert!(run["estimated_cost"].as_f64().unwrap() > 0.5, "{run}");
    assert_eq!(document["inventory"]["live"], serde_json::json!([]), "nothing of either run is left");
}

#[test]
fn sealed_logs_older_than_log_retention_are_violations_until_deleted() {
    let project = job_project(1, "", "", &[("quick", "")]);
    let (run, status) = run_job(&project, "quick");
    assert_eq!(status, "succeeded");
    let clean = audit_json(&project, &[], 0);
    let logs: Vec<String> = clean["inventory"]["sealed_logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|log| format!("logs/{}", log["key"].as_str().unwrap()))
        .collect();
    assert!(!logs.is_empty() && logs.iter().all(|log| log.starts_with(&format!("logs/runs/{run}/"))), "{logs:?}");

    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap();
    std::fs::write(project.path("mayfly.toml"), spec.replace("[policy]\n", "[policy]\nlog_retention = \"1s\"\n"))
        .unwrap();
    project.ok(&["deploy"]);
    std::thread::sleep(Duration::from_millis(1_500));
    let document = audit_json(&project, &[], VIOLATIONS_FOUND);
    let expired: Vec<String> = findings(&document)
        .into_iter()
        .filter(|(rule, severity, _)| rule == "log-retention" && severity == "violation")
        .map(|(_, _, resource)| resource)
        .collect();
    assert_eq!(expired, logs, "{document}");

    for log in &logs {
        project.ok(&["rm", log]);
    }
    let document = audit_json(&project, &[], 0);
    assert_eq!(findings(&document), vec![]);
}

/// SIGKILL a live resource's process group (`pid:<pgid>:<start>`).
fn kill_group(resource_id: &str) {
    let pgid: i32 = resource_id.split(':').nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a negative pid signals that process group; it belongs to this test's run.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

#[test]
fn a_run_whose_coordinator_died_is_a_violation_once_past_its_deadline() {
    let project = job_project(2, "", "", &[("stranded", "deadline = \"2s\"")]);
    let started = project.json(&["run", "stranded", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    // No `mayfly up` runs, so nothing restarts the coordinator once it is killed.
    let coordinator = project.wait_for(&["ps"], Duration::from_secs(20), |live| {
        live.as_array().unwrap().iter().any(|p| p["role"] == "coordinator")
    });
    let coordinator = coordinator.as_array().unwrap().iter().find(|p| p["role"] == "coordinator").unwrap();
    kill_group(coordinator["id"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(2_500));

    let document = audit_json(&project, &[], VIOLATIONS_FOUND);
    let found = findings(&document);
    assert!(found.contains(&("run-deadline".into(), "violation".into(), run.clone())), "{document}");
    let message =
        document["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "run-deadline").unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(message.contains("after its deadline"), "{message}");
    // Its workers outlive it (they belong to a run that is not over): not orphans, and left to stop here.
    assert!(!found.iter().any(|(rule, _, _)| rule == "orphaned-resource"), "{document}");
    for live in project.json(&["ps"]).as_array().unwrap() {
        kill_group(live["id"].as_str().unwrap());
    }
}

#[test]
fn a_running_run_whose_coordinator_is_gone_is_a_violation_within_its_deadline() {
    let project = job_project(3, "", "", &[("stranded", "deadline = \"1h\"\nworkers = { max = 1 }")]);
    let started = project.json(&["run", "stranded", "--detach"]);
    let run = started["run"].as_str().unwrap().to_owned();
    let live = project.wait_for(&["ps"], Duration::from_secs(20), |live| {
        let live = live.as_array().unwrap();
        live.iter().any(|p| p["role"] == "coordinator") && live.iter().any(|p| p["role"] == "worker")
    });
    let clean = audit_json(&project, &[], 0);
    assert!(!findings(&clean).iter().any(|(rule, _, _)| rule == "run-coordinator"), "{clean}");

    let coordinator = live.as_array().unwrap().iter().find(|p| p["role"] == "coordinator").unwrap();
    kill_group(coordinator["id"].as_str().unwrap());
    // No `mayfly up` runs: the run stays `running` with nothing to finish it.
    let document = audit_json(&project, &[], VIOLATIONS_FOUND);
    let found = findings(&document);
    assert_eq!(
        found.iter().filter(|(_, severity, _)| severity == "violation").collect::<Vec<_>>(),
        [&("run-coordinator".to_owned(), "violation".to_owned(), run.clone())],
        "{document}"
    );
    let finding = document["findings"].as_array().unwrap().iter().find(|f| f["rule"] == "run-coordinator").unwrap();
    assert!(finding["message"].as_str().unwrap().contains("no coordinator of it is alive"), "{finding}");
    assert!(finding["remedy"].as_str().unwrap().contains("mayfly up"), "{finding}");
    for live in project.json(&["ps"]).as_array().unwrap() {
        kill_group(live["id"].as_str().unwrap());
    }
}
