//! `mayfly experiment run` end to end: variants of a job deployed into
//! scratch projects, the same manifest replayed on each in a shuffled,
//! interleaved order, a verdict that finds the faster variant, a JSON view
//! and an offline HTML report; and bad input (an unknown key, a variant that
//! breaks the architecture file, a setup job that is not declared or fails,
//! a workload that fails), each a clear error that leaves no scratch project
//! behind.

mod support;

use std::path::Path;

use support::Project;

/// A function that sleeps `$SLEEP` seconds per item.
const SLEEPER: &str = "#!/bin/sh\ncat >/dev/null\nsleep \"${SLEEP:-0}\"\nprintf '{\"done\": true}'\n";

fn experiment_project() -> Project {
    let name = support::unique_name("experiment");
    let spec = format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
env = {{ SLEEP = "0.15" }}
[jobs.scan]
source = {{ manifest = {{ bucket = "scans", key = "list.txt" }} }}
function = "work"
workers = {{ max = 2 }}
logs = "logs"
"#
    );
    let project = Project::with_spec(&spec);
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    let items: String = (0..12).map(|i| format!("item-{i:03}\n")).collect();
    std::fs::write(project.path("list.txt"), items).unwrap();
    project
}

const EXPERIMENT: &str = r#"repetitions = 3
seed = 11
metrics = ["makespan", "item_p50", "failures", "cpu_seconds"]
baseline = "slow"

[workload]
job = "scan"
input = { manifest = { bucket = "scans", key = "list.txt", file = "list.txt" } }

[variants.slow]

[variants.quick]
set = { "functions.work.env.SLEEP" = "0.02" }
"#;

/// Scratch folders this test's experiments left in `tmp`.
fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("mayfly-experiment-"))
        .collect()
}

#[test]
fn an_experiment_finds_the_faster_variant_and_writes_an_offline_report() {
    let project = experiment_project();
    std::fs::write(project.path("experiment.toml"), EXPERIMENT).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output = project
        .command(&["experiment", "run", "experiment.toml", "--json"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    support::assert_success(&output, &["experiment", "run"]);
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let runs = view["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "3 repetitions of 2 variants: {view}");
    let mut orders: Vec<u64> = runs.iter().map(|run| run["order"].as_u64().unwrap()).collect();
    orders.sort();
    assert_eq!(orders, [1, 2, 3, 4, 5, 6]);
    for block in [1..=2, 3..=4, 5..=6] {
        let variants: Vec<&str> = runs
            .iter()
            .filter(|run| block.contains(&run["order"].as_u64().unwrap()))
            .map(|run| run["variant"].as_str().unwrap())
            .collect();
        assert!(
            variants.contains(&"slow") && variants.contains(&"quick"),
            "interleaved: each repetition runs both: {view}"
        );
    }
    for run in runs {
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["item_durations"].as_array().unwrap().len(), 12, "one attempt per item: {run}");
        assert!(run["metrics"]["cpu_seconds"].as_f64().unwrap() > 0.0, "the run's processes used CPU: {run}");
    }

    let comparisons = view["comparisons"].as_array().unwrap();
    let item_p50 = comparisons.iter().find(|c| c["metric"] == "item_p50").unwrap();
    assert_eq!(item_p50["variant"], "quick");
    assert_eq!(item_p50["differs"], true, "{item_p50}");
    let ratio = item_p50["ratio"]["ratio"].as_f64().unwrap();
    assert!(ratio < 0.5, "20 ms items against 150 ms items: {item_p50}");
    assert!(item_p50["verdict"].as_str().unwrap().contains("× quicker per item"), "{item_p50}");
    let failures = comparisons.iter().find(|c| c["metric"] == "failures").unwrap();
    assert_eq!(failures["differs"], false, "{failures}");
    let summary = view["summaries"][0].as_str().unwrap();
    assert!(summary.starts_with("variant `quick` against `slow`:") && summary.ends_with("3 runs each"), "{summary}");

    let report = std::fs::read_to_string(project.path("experiment.report.html")).unwrap();
    assert!(report.starts_with("<!doctype html>") && report.contains("<svg"), "an HTML report with plots");
    assert!(!report.contains("<script") && !report.contains("src="), "nothing fetched or run");
    assert!(leftovers(tmp.path()).is_empty(), "the scratch projects are gone: {:?}", leftovers(tmp.path()));
    assert!(!project.path(".mayfly").exists(), "the project's own state was never touched");

    // The text form says the same in words.
    let text = project.command(&["experiment", "run", "experiment.toml"]).env("TMPDIR", tmp.path()).output().unwrap();
    support::assert_success(&text, &["experiment", "run"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("variant `quick` against `slow`") && stdout.contains("VERDICT"), "{stdout}");
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("[6/6] variant"), "progress on stderr: {stderr}");
}

#[test]
fn bad_experiments_are_refused_clearly_and_leave_no_scratch_project() {
    let project = experiment_project();
    let tmp = tempfile::tempdir().unwrap();
    let fails = |file: &str, text: &str, code: i32| -> String {
        std::fs::write(project.path(file), text).unwrap();
        let output = project.command(&["experiment", "run", file]).env("TMPDIR", tmp.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(code), "{file}: {stderr}");
        assert!(leftovers(tmp.path()).is_empty(), "{file}: no scratch project left: {:?}", leftovers(tmp.path()));
        stderr
    };

    // An unknown key, located.
    let stderr = fails("unknown.toml", &EXPERIMENT.replace("seed = 11", "seeds = 11"), 3);
    assert!(
        stderr.contains("unknown key `seeds` in the experiment file") && stderr.contains("unknown.toml:2:1"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `seed`?"), "{stderr}");

    // A variant whose changes break the architecture file: named, with where it is declared.
    let broken = EXPERIMENT.replace(r#""functions.work.env.SLEEP" = "0.02""#, r#""jobs.scan.workers.max" = 0"#);
    let stderr = fails("broken.toml", &broken, 3);
    assert!(stderr.contains("mayfly.toml of variant `quick` (broken.toml:12:11) has 1 error"), "{stderr}");
    assert!(stderr.contains("`max` of `workers` of job `scan` is 0, out of range"), "{stderr}");

    // A setup job the variant's architecture does not declare: refused before anything is deployed.
    let quick = r#"set = { "functions.work.env.SLEEP" = "0.02" }"#;
    let unknown_setup = EXPERIMENT.replace(quick, &format!("{quick}\nsetup = [\"warm\"]"));
    let stderr = fails("unknown-setup.toml", &unknown_setup, 1);
    assert!(
        stderr.contains("variant `quick` (unknown-setup.toml:12:11) has no job `warm`, which its `setup` runs"),
        "{stderr}"
    );

    // A setup job that fails (its function exits 3 on the workload's one object): the experiment stops.
    std::fs::create_dir_all(project.path("inputs")).unwrap();
    std::fs::write(project.path("inputs/a.txt"), "a").unwrap();
    let failing_setup = EXPERIMENT
        .replace(
            r#"{ manifest = { bucket = "scans", key = "list.txt", file = "list.txt" } }"#,
            r#"{ objects = { bucket = "scans", prefix = "in/", dir = "inputs" } }"#,
        )
        .replace(
            quick,
            r#"set = { "functions.broken.command" = ["sh", "-c", "exit 3"], "jobs.warm" = { source = { bucket = "scans", prefix = "in/" }, function = "broken", max_attempts = 1 } }
setup = ["warm"]"#,
        );
    let stderr = fails("failing-setup.toml", &failing_setup, 1);
    assert!(stderr.contains("the setup of variant `quick` (failing-setup.toml:12:11) failed"), "{stderr}");
    assert!(stderr.contains("`mayfly run warm` failed"), "{stderr}");

    // A workload that fails: its manifest file is missing.
    let missing = EXPERIMENT.replace(r#"file = "list.txt""#, r#"file = "no-such-list.txt""#);
    let stderr = fails("missing.toml", &missing, 1);
    assert!(stderr.contains("run 1 of 6 (variant"), "{stderr}");
    assert!(stderr.contains("no-such-list.txt"), "{stderr}");
    assert!(!project.path(".mayfly").exists(), "the project's own state was never touched");
}
