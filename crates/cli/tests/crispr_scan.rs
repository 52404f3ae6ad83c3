//! The CRISPR guide scan (examples/crispr-scan) end to end through the real
//! binary, on the lambda phage genome that Debian's `bowtie2-examples`
//! ships (`scripts/test.sh` installs it): `mayfly experiment run` on the
//! example's own experiment.toml finds by itself that the seed-index
//! architecture (an index built once by a setup job into bucket `indexes`)
//! scans at least twice as fast as scanning the genome per batch, with a 95%
//! interval that excludes 1; and the off-target counts both architectures
//! store as results are those of the example's independent brute force
//! (brute.py). Needs python3 (standard library only).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::Project;

const LAMBDA: &str = "/usr/share/doc/bowtie2/examples/reference/lambda_virus.fa.gz";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/crispr-scan")
}

fn python(args: &[&str]) -> String {
    let output = Command::new("python3").args(args).current_dir(example()).output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 {args:?} exited {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The example as a project (its mayfly.toml under a name of this test's
/// own, experiment.toml and crispr/), with prepare.py's lambda workload in
/// data/lambda (its default: 4 batches of 400 candidates, or `batches`).
fn example_project(batches: &[&str]) -> Project {
    assert!(
        Path::new(LAMBDA).exists(),
        "{LAMBDA} is missing: `apt-get install bowtie2-examples` (scripts/test.sh installs it)"
    );
    let spec = std::fs::read_to_string(example().join("mayfly.toml")).unwrap();
    let spec = spec.replace("name = \"crispr-scan\"", &format!("name = \"{}\"", support::unique_name("crispr")));
    let project = Project::with_spec(&spec);
    std::fs::copy(example().join("experiment.toml"), project.path("experiment.toml")).unwrap();
    std::fs::create_dir_all(project.path("crispr")).unwrap();
    for entry in std::fs::read_dir(example().join("crispr")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "py") {
            std::fs::copy(&path, project.path("crispr").join(path.file_name().unwrap())).unwrap();
        }
    }
    let out = project.path("data/lambda").display().to_string();
    python(&[&["prepare.py", "--out", out.as_str()], batches].concat());
    project
}

#[test]
fn the_experiment_finds_that_the_seed_index_scans_at_least_twice_as_fast() {
    // Exactly the example's documented command: `prepare.py --out data/lambda`
    // with its defaults (4 batches of 400 candidates), then
    // `mayfly experiment run experiment.toml`.
    let project = example_project(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let output = project
        .command(&["experiment", "run", "experiment.toml", "--json"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    support::assert_success(&output, &["experiment", "run", "experiment.toml"]);
    let view: Value = serde_json::from_slice(&output.stdout).unwrap();

    let runs = view["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 15, "5 repetitions of 3 variants: {view}");
    for run in runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["item_durations"].as_array().unwrap().len(), 4, "one attempt per batch: {run}");
    }

    // Found by itself: the variant with the lowest median makespan is the indexed one…
    let makespans: Vec<&Value> =
        view["comparisons"].as_array().unwrap().iter().filter(|c| c["metric"] == "makespan").collect();
    let fastest = makespans
        .iter()
        .min_by(|a, b| a["median"].as_f64().unwrap().total_cmp(&b["median"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(fastest["variant"], "indexed", "{makespans:?}");
    assert!(fastest["median"].as_f64().unwrap() < fastest["baseline_median"].as_f64().unwrap());
    // …at least 2× faster than scanning per batch, with the interval excluding 1.
    assert_eq!(fastest["differs"], true, "{fastest}");
    let ratio = &fastest["ratio"];
    assert!(ratio["ratio"].as_f64().unwrap() <= 0.5, "at least 2× faster: {fastest}");
    assert!(ratio["high"].as_f64().unwrap() < 1.0, "the 95% interval excludes 1: {fastest}");
    let verdict = fastest["verdict"].as_str().unwrap();
    assert!(verdict.contains("× faster"), "{verdict}");
    let summary =
        view["summaries"].as_array().unwrap().iter().find(|s| s.as_str().unwrap().starts_with("variant `indexed`"));
    assert!(summary.is_some_and(|s| s.as_str().unwrap().contains("× faster")), "{view}");
    let failures = view["comparisons"].as_array().unwrap().iter().filter(|c| c["metric"] == "failures");
    for comparison in failures {
        assert_eq!(comparison["median"].as_f64(), Some(0.0), "no failed attempt: {comparison}");
    }
    // The project's own state holds only the experiment's record (the runs were in scratch projects).
    let recorded = project.json(&["experiment", "show", &view["experiment_id"].to_string()]);
    assert_eq!(recorded["outcome"], "completed", "{recorded}");
    assert!(project.json(&["deployments"]).as_array().unwrap().is_empty(), "never deployed");
}

/// The counts of a run's results, by candidate site: `site -> (protospacer, [n0, n1, n2, n3])`.
fn counts_of(project: &Project, run: &str) -> std::collections::BTreeMap<String, (String, Vec<u64>)> {
    let results = project.json(&["results", "scan", "--run", run, "--limit", "1000"]);
    let mut counts = std::collections::BTreeMap::new();
    for record in results.as_array().unwrap() {
        for candidate in record["result"]["candidates"].as_array().unwrap() {
            let sequence = candidate["sequence"].as_str().unwrap();
            let mismatches = candidate["mismatches"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
            counts.insert(candidate["site"].as_str().unwrap().to_owned(), (sequence[..20].to_owned(), mismatches));
        }
    }
    counts
}

#[test]
fn both_architectures_store_the_brute_force_off_target_counts() {
    let project = example_project(&["--batches", "3", "--batch-size", "20"]);
    project.ok(&["deploy"]);
    for object in ["genome/lambda.fa", "batches/b000.txt", "batches/b001.txt", "batches/b002.txt"] {
        let file = project.path(&format!("data/lambda/{object}"));
        project.ok(&["put", &format!("crispr/{object}"), file.to_str().unwrap()]);
    }
    let plain = project.json(&["run", "scan"]);
    assert_eq!(plain["status"], "succeeded", "{plain}");
    let plain_counts = counts_of(&project, plain["run"].as_str().unwrap());
    assert_eq!(plain_counts.len(), 60, "3 batches of 20 candidates: {plain_counts:?}");

    // The indexed architecture: its index built once, then the same batches.
    let spec = std::fs::read_to_string(project.path("mayfly.toml")).unwrap();
    let indexed_spec = spec.replace("function = \"scan-plain\"", "function = \"scan-indexed\"");
    assert_ne!(spec, indexed_spec);
    std::fs::write(project.path("mayfly.toml"), indexed_spec).unwrap();
    project.ok(&["deploy"]);
    assert_eq!(project.json(&["run", "build-index"])["status"], "succeeded");
    let listed = project.ok(&["ls", "indexes"]);
    assert!(listed.contains("genome/lambda.fa.seeds"), "the index is stored in bucket `indexes`: {listed}");
    let indexed = project.json(&["run", "scan"]);
    assert_eq!(indexed["status"], "succeeded", "{indexed}");
    let indexed_counts = counts_of(&project, indexed["run"].as_str().unwrap());
    assert_eq!(indexed_counts, plain_counts, "both architectures count the same off-targets");

    // The independent brute force, on every candidate of the three batches.
    let mut args = vec!["brute.py".to_owned(), project.path("data/lambda/genome/lambda.fa").display().to_string()];
    args.extend(plain_counts.values().map(|(protospacer, _)| protospacer.clone()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let brute = python(&args);
    let mut checked = 0;
    for line in brute.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let expected: Vec<u64> = fields[1..].iter().map(|n| n.parse().unwrap()).collect();
        let (site, (_, counted)) = plain_counts.iter().find(|(_, (protospacer, _))| protospacer == fields[0]).unwrap();
        assert_eq!(counted, &expected, "candidate {site} {}", fields[0]);
        assert!(expected[0] >= 1, "a candidate is a site, so it finds itself: {line}");
        checked += 1;
    }
    assert_eq!(checked, 60, "{brute}");
}
