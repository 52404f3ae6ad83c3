//! `mayfly experiment run` end to end: variants of a job deployed into
//! scratch projects, the same manifest replayed on each in a shuffled,
//! interleaved order, a verdict that finds the faster variant, a JSON view
//! and an offline HTML report; and bad input (an unknown key, a variant that
//! breaks the architecture file, a setup job that is not declared or fails,
//! a workload that fails), each a clear error that leaves no scratch project
//! behind. Experiments are recorded in the project's own state store
//! (`experiment list` / `show`), failed ones with their error. And `mayfly
//! deploy --evaluate`: the new file against the deployed version, applied
//! when it is no worse and refused under `--require-no-regression` when its
//! function sleeps 300 ms per item instead of none. A variant may name a
//! recorded deployment version (`version = N`): an older, slower version is
//! found slower than the project's file, and a version that does not exist is
//! a located error.

mod support;

use std::path::Path;

use support::Project;

/// A function that sleeps `$SLEEP` seconds per item.
const SLEEPER: &str = "#!/bin/sh\ncat >/dev/null\nsleep \"${SLEEP:-0}\"\nprintf '{\"done\": true}'\n";

/// The architecture both halves of this test use: a job `scan` over the
/// manifest `scans/list.txt`, on up to `workers` workers, through a function
/// sleeping `sleep` seconds per item; `evaluation` is appended as is.
fn sleeper_spec(name: &str, sleep: &str, workers: u32, evaluation: &str) -> String {
    format!(
        r#"version = 1
name = "{name}"
[buckets.scans]
[buckets.logs]
[functions.work]
command = ["sh", "functions/sleeper.sh"]
env = {{ SLEEP = "{sleep}" }}
[jobs.scan]
source = {{ manifest = {{ bucket = "scans", key = "list.txt" }} }}
function = "work"
workers = {{ max = {workers} }}
logs = "logs"
{evaluation}"#
    )
}

fn experiment_project() -> Project {
    let project = Project::with_spec(&sleeper_spec(&support::unique_name("experiment"), "0.15", 2, ""));
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

    // Recorded in the project's own store, with the same evidence.
    let id = view["experiment_id"].as_u64().expect("an experiment id");
    let shown = project.json(&["experiment", "show", &id.to_string()]);
    assert_eq!(shown["outcome"], "completed");
    assert_eq!(shown["name"], "experiment.toml");
    assert_eq!(shown["trigger"], "experiment run");
    assert_eq!(shown["summaries"], view["summaries"]);
    assert_eq!(shown["runs"].as_array().unwrap().len(), 6);
    let stored_p50 = shown["comparisons"].as_array().unwrap().iter().find(|c| c["metric"] == "item_p50").unwrap();
    // The same figures, to the last digit or two: the stored evidence is
    // JSON parsed and written again, and serde_json's default float parsing
    // may differ from the shortest round-trip text in the last place.
    let close = |stored: &serde_json::Value, printed: &serde_json::Value| {
        let (stored, printed) = (stored.as_f64().unwrap(), printed.as_f64().unwrap());
        (stored - printed).abs() <= 1e-12 * printed.abs().max(1e-300)
    };
    for bound in ["ratio", "low", "high"] {
        assert!(
            close(&stored_p50["ratio"][bound], &item_p50["ratio"][bound]),
            "the same interval: {stored_p50} / {item_p50}"
        );
    }
    assert!(close(&stored_p50["p_value"], &item_p50["p_value"]), "{stored_p50} / {item_p50}");
    assert_eq!(shown["file_fingerprint"].as_str().unwrap().len(), 64, "a SHA-256 of the file");

    // Its HTML report drawn again from the stored evidence: the same verdicts, tables and plots.
    let again_path = project.path("again.html");
    let again_arg = again_path.to_str().unwrap();
    let shown = project.json(&["experiment", "show", &id.to_string(), "--report", again_arg]);
    assert_eq!(shown["report"], again_arg, "{shown}");
    let again = std::fs::read_to_string(&again_path).unwrap();
    let from_verdict = |page: &str| page[page.find("<h2>Verdict</h2>").expect("a verdict section")..].to_owned();
    assert_eq!(from_verdict(&again), from_verdict(&report), "the report drawn again from the store");
    assert!(again.contains(&format!("experiment {id} (experiment run, completed)")), "{again}");

    // The text form says the same in words.
    let text = project.command(&["experiment", "run", "experiment.toml"]).env("TMPDIR", tmp.path()).output().unwrap();
    support::assert_success(&text, &["experiment", "run"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("variant `quick` against `slow`") && stdout.contains("VERDICT"), "{stdout}");
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("[6/6] variant"), "progress on stderr: {stderr}");
    assert!(stdout.contains("recorded as experiment 2 (`mayfly experiment show 2`)"), "{stdout}");

    let listed = project.json(&["experiment", "list"]);
    let ids: Vec<u64> = listed.as_array().unwrap().iter().map(|row| row["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 1], "newest first: {listed}");
    let table = project.ok(&["experiment", "list"]);
    assert!(table.contains("completed") && table.contains("variant `quick` against `slow`"), "{table}");
    let shown = project.ok(&["experiment", "show", "1"]);
    assert!(shown.contains("RATIO (95% CI)") && shown.contains("item_p50") && shown.contains("MAKESPAN"), "{shown}");
    let stderr = project.fails(&["experiment", "show", "9"], 4);
    assert!(stderr.contains("there is no experiment 9; see `mayfly experiment list`"), "{stderr}");
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

    // Files refused before anything ran are not recorded; the two that failed while running are, with their error.
    let listed = project.json(&["experiment", "list"]);
    let rows = listed.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert!(rows.iter().all(|row| row["outcome"] == "failed"), "{listed}");
    assert_eq!(rows[0]["name"], "missing.toml");
    assert!(rows[0]["error"].as_str().unwrap().contains("no-such-list.txt"), "{listed}");
    assert_eq!(rows[1]["name"], "failing-setup.toml");
    assert!(rows[1]["error"].as_str().unwrap().contains("`mayfly run warm` failed"), "{listed}");
}

#[test]
fn a_variant_may_be_an_older_deployment_version() {
    let project = experiment_project();
    let slow = std::fs::read_to_string(project.path("mayfly.toml")).unwrap();
    project.ok(&["deploy"]);
    // Version 2, and the project's file now: 20 ms an item instead of 150 ms.
    let quick = slow.replace(r#"SLEEP = "0.15""#, r#"SLEEP = "0.02""#);
    assert_ne!(quick, slow);
    std::fs::write(project.path("mayfly.toml"), &quick).unwrap();
    project.ok(&["deploy"]);

    let experiment = r#"repetitions = 3
seed = 5
metrics = ["makespan", "item_p50"]
baseline = "now"

[workload]
job = "scan"
input = { manifest = { bucket = "scans", key = "list.txt", file = "list.txt" } }

[variants.now]

[variants.first]
version = 1

[variants.first-on-one-worker]
version = 1
set = { "jobs.scan.workers.max" = 1 }
"#;
    std::fs::write(project.path("versions.toml"), experiment).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let output =
        project.command(&["experiment", "run", "versions.toml", "--json"]).env("TMPDIR", tmp.path()).output().unwrap();
    support::assert_success(&output, &["experiment", "run", "versions.toml"]);
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(view["runs"].as_array().unwrap().len(), 9, "3 repetitions of 3 variants: {view}");
    let p50 = |variant: &str| {
        view["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["metric"] == "item_p50" && c["variant"] == variant)
            .unwrap_or_else(|| panic!("no item_p50 of `{variant}`: {view}"))
            .clone()
    };
    // Deployment 1 as recorded: 150 ms items against the file's 20 ms.
    let first = p50("first");
    assert_eq!(first["differs"], true, "{first}");
    assert!(first["ratio"]["low"].as_f64().unwrap() > 2.0, "version 1's items are slower: {first}");
    assert!(first["median"].as_f64().unwrap() >= 0.15, "{first}");
    // `set` applies on top of the recorded version: one worker, so the run takes about twice as long.
    let makespan = |variant: &str| {
        view["comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["metric"] == "makespan" && c["variant"] == variant)
            .unwrap()["median"]
            .as_f64()
            .unwrap()
    };
    assert!(makespan("first-on-one-worker") > makespan("first") * 1.3, "{view}");
    assert!(p50("first-on-one-worker")["median"].as_f64().unwrap() >= 0.15, "still version 1's function");
    assert!(leftovers(tmp.path()).is_empty(), "no scratch project left: {:?}", leftovers(tmp.path()));
    assert_eq!(project.json(&["deployments"]).as_array().unwrap().len(), 2, "the experiment deployed nothing here");

    // A version the project never deployed: named, located, nothing run or recorded.
    std::fs::write(project.path("missing.toml"), experiment.replace("version = 1\n\n", "version = 9\n\n")).unwrap();
    let output = project.command(&["experiment", "run", "missing.toml"]).env("TMPDIR", tmp.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(
            "variant `first` (missing.toml:12:11): `version = 9` names no deployment of this project; its deployments are versions 1 to 2 (`mayfly deployments`)"
        ),
        "{stderr}"
    );
    // A version and a file together: the experiment file is refused, located.
    let both = experiment.replace("version = 1\n\n", "version = 1\nfile = \"other.toml\"\n\n");
    std::fs::write(project.path("both.toml"), both).unwrap();
    let output = project.command(&["experiment", "run", "both.toml"]).env("TMPDIR", tmp.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("variant `first` names both `file` and `version`") && stderr.contains("both.toml:13:1"),
        "{stderr}"
    );
    assert!(leftovers(tmp.path()).is_empty(), "no scratch project left: {:?}", leftovers(tmp.path()));
    assert_eq!(project.json(&["experiment", "list"]).as_array().unwrap().len(), 1, "only the first was recorded");
}

/// A project whose job `scan` runs 3 items one at a time through a function
/// sleeping `sleep` seconds each, with `[evaluation]` replaying it 3 times.
fn evaluated_spec(name: &str, sleep: &str) -> String {
    let evaluation = r#"
[evaluation]
job = "scan"
input = { manifest = { bucket = "scans", key = "list.txt", file = "evaluation/list.txt" } }
repetitions = 3
"#;
    sleeper_spec(name, sleep, 1, evaluation)
}

#[test]
fn deploy_evaluate_applies_a_version_that_is_no_worse_and_refuses_a_slower_one() {
    let name = support::unique_name("evaluate");
    let project = Project::with_spec(&evaluated_spec(&name, "0.3"));
    std::fs::create_dir_all(project.path("functions")).unwrap();
    std::fs::write(project.path("functions/sleeper.sh"), SLEEPER).unwrap();
    std::fs::create_dir_all(project.path("evaluation")).unwrap();
    std::fs::write(project.path("evaluation/list.txt"), "a\nb\nc\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let deploy = |args: &[&str]| project.command(args).env("TMPDIR", tmp.path()).output().unwrap();
    let version = |project: &Project| project.json(&["deployments"]).as_array().unwrap().len();

    // Nothing deployed yet: nothing to evaluate against.
    let output = deploy(&["deploy", "--evaluate"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing is deployed yet"));
    project.ok(&["deploy"]);

    // A version whose function no longer sleeps: faster, applied as version 2, the verdict recorded with it.
    std::fs::write(project.path("mayfly.toml"), evaluated_spec(&name, "0")).unwrap();
    let output = deploy(&["deploy", "--evaluate", "--require-no-regression", "--json"]);
    support::assert_success(&output, &["deploy", "--evaluate"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["version"], 2, "{report}");
    assert!(report["evaluation"]["regressions"].as_array().unwrap().is_empty(), "{report}");
    let makespan = report["evaluation"]["comparisons"].as_array().unwrap().iter().find(|c| c["metric"] == "makespan");
    let makespan = makespan.expect("makespan compared");
    assert_eq!(makespan["variant"], "new");
    assert!(makespan["ratio"]["high"].as_f64().unwrap() < 1.0, "clearly faster: {makespan}");
    let summary = report["evaluation"]["summaries"][0].as_str().unwrap();
    assert!(summary.starts_with("variant `new` against `deployed`:") && summary.contains("× faster"), "{summary}");
    let applied = project.json(&["experiment", "show", &report["evaluation"]["experiment_id"].to_string()]);
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(applied["deployment_version"], 2, "linked to the deployment: {applied}");
    assert_eq!(applied["trigger"], "deploy --evaluate");
    assert_eq!(applied["runs"].as_array().unwrap().len(), 6);
    assert!(leftovers(tmp.path()).is_empty(), "no scratch project left: {:?}", leftovers(tmp.path()));

    // Back to 300 ms per item: a regression beyond the interval, refused, nothing deployed.
    std::fs::write(project.path("mayfly.toml"), evaluated_spec(&name, "0.3")).unwrap();
    let output = deploy(&["deploy", "--evaluate", "--require-no-regression"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "refused: {stderr}");
    assert!(
        stderr.contains(
            "refused: the new mayfly.toml regresses against deployed version 2 by more than the 5% tolerance"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("makespan is ") && stderr.contains("× the baseline's (95% CI "),
        "metric, ratio and CI: {stderr}"
    );
    assert!(stderr.contains("nothing was deployed"), "{stderr}");
    assert_eq!(version(&project), 2, "the deployment version did not change");
    let listed = project.json(&["experiment", "list"]);
    assert_eq!(listed[0]["outcome"], "refused", "{listed}");
    assert_eq!(listed[0]["deployment_version"], serde_json::Value::Null);
    assert!(listed[0]["error"].as_str().unwrap().contains("makespan is "), "{listed}");
    assert!(leftovers(tmp.path()).is_empty(), "no scratch project left: {:?}", leftovers(tmp.path()));
}

#[test]
fn deploy_evaluate_refuses_bad_input_clearly_and_changes_nothing() {
    let name = support::unique_name("evaluate-bad");
    let project = Project::deployed_with(&evaluated_spec(&name, "0"));

    let stderr = project.fails(&["deploy", "--require-no-regression"], 2);
    assert!(
        stderr.contains("`--require-no-regression` judges the verdict of an evaluation; add `--evaluate`"),
        "{stderr}"
    );

    let without = evaluated_spec(&name, "0.1");
    let without = &without[..without.find("[evaluation]").unwrap()];
    std::fs::write(project.path("mayfly.toml"), without).unwrap();
    let stderr = project.fails(&["deploy", "--evaluate"], 2);
    assert!(
        stderr.contains("`--evaluate` replays the workload `[evaluation]` names") && stderr.contains("has none"),
        "{stderr}"
    );

    let unknown = evaluated_spec(&name, "0.1").replace("repetitions = 3", "repetitons = 3");
    std::fs::write(project.path("mayfly.toml"), unknown).unwrap();
    let stderr = project.fails(&["deploy", "--evaluate"], 3);
    assert!(stderr.contains("unknown key `repetitons` in `[evaluation]`"), "{stderr}");
    assert!(stderr.contains("mayfly.toml:17:1") && stderr.contains("did you mean `repetitions`?"), "located: {stderr}");

    let undeclared = evaluated_spec(&name, "0.1").replace("job = \"scan\"\ninput", "job = \"sacn\"\ninput");
    std::fs::write(project.path("mayfly.toml"), undeclared).unwrap();
    let stderr = project.fails(&["deploy", "--evaluate"], 3);
    assert!(stderr.contains("`job` of `[evaluation]` names job `sacn`, which the file does not declare"), "{stderr}");

    assert_eq!(project.json(&["deployments"]).as_array().unwrap().len(), 1, "nothing was deployed");
    assert!(project.json(&["experiment", "list"]).as_array().unwrap().is_empty(), "nothing was recorded");
}
