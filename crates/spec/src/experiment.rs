//! The experiment file of `mayfly experiment run FILE`: which job to replay
//! on what input, the variants of `mayfly.toml` to compare (each a set of
//! changes, to the project's file, a whole other architecture file or a
//! recorded deployment version), how often, and on which metrics. Read with the same located diagnostics as `mayfly.toml`.
//!
//! ```toml
//! repetitions = 5
//! seed = 7
//! metrics = ["makespan", "cost", "item_p95"]
//! baseline = "plain"
//!
//! [workload]
//! job = "scan"
//! input = { manifest = { bucket = "scans", key = "manifest.txt", file = "manifest.txt" } }
//!
//! [variants.plain]
//!
//! [variants.indexed]
//! set = { "functions.scan.command" = ["python3", "scan_indexed.py"], "jobs.scan.workers.max" = 4 }
//! setup = ["build-index"]   # jobs run once after deploying, before the measured runs
//!
//! [variants.last-week]
//! version = 3               # the architecture file deployment 3 recorded
//! ```

use std::ops::Range;

use mayfly_core::Name;
use mayfly_experiment::Metric;
use toml::de::DeValue;

use crate::diagnostic::Diagnostics;
use crate::reader::{Reader, Table, describe};

const TOP_KEYS: &[&str] = &["workload", "variants", "repetitions", "seed", "metrics", "baseline"];
const WORKLOAD_KEYS: &[&str] = &["job", "input"];
const INPUT_FORMS: &[&str] = &["manifest", "objects", "messages"];
const MANIFEST_KEYS: &[&str] = &["bucket", "key", "file"];
const OBJECTS_KEYS: &[&str] = &["bucket", "prefix", "dir"];
const MESSAGES_KEYS: &[&str] = &["queue", "file"];
const VARIANT_KEYS: &[&str] = &["set", "unset", "file", "version", "setup"];

/// Runs of each variant when the file does not say.
pub const DEFAULT_REPETITIONS: u32 = 5;

/// A parsed experiment file. Paths are as written: relative ones are
/// relative to the experiment file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub workload: WorkloadSpec,
    pub repetitions: u32,
    /// Seeds the order of runs and the bootstrap, so an experiment is repeatable.
    pub seed: u64,
    pub metrics: Vec<Metric>,
    /// The variant every other one is compared with (default: the first).
    pub baseline: String,
    /// In the file's order.
    pub variants: Vec<VariantSpec>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadSpec {
    pub job: Name,
    pub input: WorkloadInput,
}

/// What is put into each variant's scratch project before its runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadInput {
    /// The job's source is a manifest: the local `file` is stored as `bucket/key` before every run.
    Manifest { bucket: String, key: String, file: String },
    /// Every file under the local `dir` is stored under `bucket/prefix` once per variant.
    Objects { bucket: String, prefix: String, dir: String },
    /// Each line of the local `file` is sent to `queue` before every run.
    Messages { queue: String, file: String },
    /// The job needs no input (or makes its own).
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    /// Another architecture file to start from instead of the project's `mayfly.toml`.
    pub file: Option<String>,
    /// A deployment version of the project whose recorded architecture file
    /// to start from instead (never together with `file`); whether it
    /// exists is for the project's state store to say.
    pub version: Option<u64>,
    /// Dotted paths (`jobs.scan.workers.max`) and the values to set there.
    pub set: Vec<(Vec<String>, toml::Value)>,
    /// Dotted paths to remove.
    pub unset: Vec<Vec<String>>,
    /// Jobs of the variant's architecture run once, in order, after it is
    /// deployed and the workload's objects are stored, before its measured
    /// runs (e.g. building an index the measured job reads); not measured.
    pub setup: Vec<Name>,
    /// `file:line:col` of its table, for errors about what it produces.
    pub location: String,
}

/// Parse and validate an experiment file; diagnostics name `file_name`.
pub fn parse_experiment(file_name: &str, source: &str) -> Result<ExperimentSpec, Diagnostics> {
    crate::parse_document(file_name, source, "the experiment file", lower_experiment)
}

fn lower_experiment(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Option<ExperimentSpec> {
    reader.check_keys(root, TOP_KEYS);
    let repetitions = reader.integer(root, "repetitions", 1, 1_000).map_or(DEFAULT_REPETITIONS, |r| r.value);
    let seed = reader.integer(root, "seed", 0, u32::MAX).map_or(1, |seed| u64::from(seed.value));
    let metrics = lower_metrics(reader, root);
    let workload = match reader.table(root, "workload", "`[workload]`".to_owned()) {
        Some(table) => lower_workload(reader, &table),
        None => {
            if !root.has("workload") {
                reader.error(
                    0..0,
                    "the experiment file has no `[workload]`",
                    Some("add `[workload]` with `job = \"...\"` and its `input`".to_owned()),
                );
            }
            None
        }
    };
    let variants = lower_variants(reader, root);
    let baseline = match reader.string(root, "baseline") {
        Some(text) if variants.iter().any(|variant| variant.name == text.value) => Some(text.value),
        Some(text) => {
            let names: Vec<&str> = variants.iter().map(|variant| variant.name.as_str()).collect();
            reader.error(
                text.span,
                format!("`baseline` names variant `{}`, which the file does not declare", text.value),
                Some(format!("the variants are: {}", names.join(", "))),
            );
            None
        }
        None => variants.first().map(|variant| variant.name.clone()),
    };
    Some(ExperimentSpec { workload: workload?, repetitions, seed, metrics, baseline: baseline?, variants })
}

/// `metrics` of `root`: every metric when it is absent.
pub(crate) fn lower_metrics(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Vec<Metric> {
    let Some(names) = reader.string_list(root, "metrics") else {
        return Metric::ALL.to_vec();
    };
    let known: Vec<&str> = Metric::ALL.iter().map(|metric| metric.name()).collect();
    let mut metrics = Vec::new();
    for name in names {
        match Metric::from_name(&name.value) {
            Some(metric) if !metrics.contains(&metric) => metrics.push(metric),
            Some(_) => {}
            None => reader.error(
                name.span,
                format!("`{}` in `metrics` is not a metric Mayfly measures", name.value),
                Some(format!("the metrics are: {}", known.join(", "))),
            ),
        }
    }
    if metrics.is_empty() && reader.diagnostics.is_empty() {
        reader.error(
            root.key_span("metrics"),
            "`metrics` is empty",
            Some(format!("name some of: {}", known.join(", "))),
        );
    }
    metrics
}

fn lower_workload(reader: &mut Reader<'_>, table: &Table<'_, '_>) -> Option<WorkloadSpec> {
    reader.check_keys(table, WORKLOAD_KEYS);
    lower_workload_fields(reader, table)
}

/// `job` and `input` of `table` (an experiment's `[workload]`, or
/// `[evaluation]` of `mayfly.toml`); the caller checks for unknown keys.
pub(crate) fn lower_workload_fields(reader: &mut Reader<'_>, table: &Table<'_, '_>) -> Option<WorkloadSpec> {
    let job = match reader.non_empty_string(table, "job") {
        Some(text) => reader.name(&text.value, text.span, "job"),
        None => {
            if !table.has("job") {
                reader.missing(table, "job", "name the job each run replays, e.g. `job = \"scan\"`".to_owned());
            }
            None
        }
    };
    let input = match reader.table(table, "input", format!("`input` of {}", table.what)) {
        None => WorkloadInput::Nothing,
        Some(input) => {
            reader.check_keys(&input, INPUT_FORMS);
            let forms: Vec<&str> = INPUT_FORMS.iter().copied().filter(|form| input.has(form)).collect();
            if forms.len() != 1 {
                reader.error(
                    input.span.clone(),
                    format!("`input` of {} must be exactly one of {}", table.what, INPUT_FORMS.join(", ")),
                    Some(
                        "e.g. `input = { manifest = { bucket = \"scans\", key = \"list.txt\", file = \"list.txt\" } }`"
                            .to_owned(),
                    ),
                );
                return None;
            }
            let form = reader.table(&input, forms[0], format!("`input.{}` of {}", forms[0], table.what))?;
            let mut field = |key: &str, hint: &str| -> Option<String> {
                match reader.non_empty_string(&form, key) {
                    Some(text) => Some(text.value),
                    None => {
                        if !form.has(key) {
                            reader.missing(&form, key, hint.to_owned());
                        }
                        None
                    }
                }
            };
            match forms[0] {
                "manifest" => {
                    let bucket = field("bucket", "the bucket the job's manifest is in");
                    let key = field("key", "the manifest's key, as the job's source names it");
                    let file = field("file", "a local file holding the manifest, relative to the experiment file");
                    reader.check_keys(&form, MANIFEST_KEYS);
                    WorkloadInput::Manifest { bucket: bucket?, key: key?, file: file? }
                }
                "objects" => {
                    let bucket = field("bucket", "the bucket the job reads");
                    let dir = field("dir", "a local folder whose files become the objects");
                    let prefix = reader.string(&form, "prefix").map(|text| text.value).unwrap_or_default();
                    reader.check_keys(&form, OBJECTS_KEYS);
                    WorkloadInput::Objects { bucket: bucket?, prefix, dir: dir? }
                }
                _ => {
                    let queue = field("queue", "the queue the job drains");
                    let file = field("file", "a local file, one message per line");
                    reader.check_keys(&form, MESSAGES_KEYS);
                    WorkloadInput::Messages { queue: queue?, file: file? }
                }
            }
        }
    };
    Some(WorkloadSpec { job: job?, input })
}

fn lower_variants(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Vec<VariantSpec> {
    let Some(section) = reader.table(root, "variants", "`[variants]`".to_owned()) else {
        if !root.has("variants") {
            reader.error(
                0..0,
                "the experiment file declares no variants",
                Some("add at least two, e.g. `[variants.plain]` (the project as it is) and `[variants.faster]` with `set = { ... }`".to_owned()),
            );
        }
        return Vec::new();
    };
    let mut variants = Vec::new();
    for (key, value) in section.entries.iter() {
        let raw_name = key.get_ref().to_string();
        let valid_name = reader.name(&raw_name, key.span(), "variant").is_some();
        let what = format!("variant `{raw_name}`");
        let DeValue::Table(entries) = value.get_ref() else {
            reader.error(
                value.span(),
                format!("{what} must be a table, not {}", describe(value.get_ref())),
                Some(format!("declare it as a `[variants.{raw_name}]` section")),
            );
            continue;
        };
        let table = Table { entries, span: value.span(), what };
        reader.check_keys(&table, VARIANT_KEYS);
        let file = reader.non_empty_string(&table, "file").map(|text| text.value);
        let version = reader.integer(&table, "version", 1, u32::MAX).map(|version| u64::from(version.value));
        if file.is_some() && version.is_some() {
            reader.error(
                table.key_span("version"),
                format!("{} names both `file` and `version`; it starts from one architecture file", table.what),
                Some(format!(
                    "keep `file` (another file) or `version` (deployment {} as recorded), and write changes in `set`",
                    version.unwrap_or_default()
                )),
            );
        }
        let mut set = Vec::new();
        if let Some(changes) = reader.table(&table, "set", format!("`set` of {}", table.what)) {
            flatten_changes(reader, &changes, &[], &mut set);
        }
        let unset = reader
            .string_list(&table, "unset")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|path| dotted_path(reader, &path.value, path.span, &table.what))
            .collect();
        let setup = reader
            .string_list(&table, "setup")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|job| reader.name(&job.value, job.span, "setup job"))
            .collect();
        let location = location(reader, key.span());
        if valid_name {
            variants.push(VariantSpec { name: raw_name, file, version, set, unset, setup, location });
        }
    }
    if variants.len() < 2 && reader.diagnostics.is_empty() {
        reader.error(
            section.span.clone(),
            format!("an experiment compares at least two variants; this file declares {}", variants.len()),
            Some("add another `[variants.NAME]`: an empty one runs the project as it is".to_owned()),
        );
    }
    variants
}

/// The leaves of `set`, each with its dotted path (quoted dotted keys and
/// nested tables both name a path; a leaf is any value that is not a table).
fn flatten_changes(
    reader: &mut Reader<'_>,
    table: &Table<'_, '_>,
    prefix: &[String],
    into: &mut Vec<(Vec<String>, toml::Value)>,
) {
    for (key, value) in table.entries.iter() {
        let Some(mut path) = dotted_path(reader, key.get_ref(), key.span(), &table.what) else { continue };
        let mut full = prefix.to_vec();
        full.append(&mut path);
        match value.get_ref() {
            DeValue::Table(entries) => {
                let nested = Table { entries, span: value.span(), what: table.what.clone() };
                flatten_changes(reader, &nested, &full, into);
            }
            other => match owned_value(other) {
                Some(owned) => into.push((full, owned)),
                None => reader.error(value.span(), format!("cannot read this value in {}", table.what), None),
            },
        }
    }
}

fn dotted_path(reader: &mut Reader<'_>, text: &str, span: Range<usize>, what: &str) -> Option<Vec<String>> {
    let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    if parts.iter().any(|part| part.trim().is_empty()) {
        reader.error(
            span,
            format!("`{text}` in {what} is not a dotted path of `mayfly.toml`"),
            Some("write a path such as \"jobs.scan.workers.max\"".to_owned()),
        );
        return None;
    }
    Some(parts)
}

fn owned_value(value: &DeValue<'_>) -> Option<toml::Value> {
    Some(match value {
        DeValue::String(text) => toml::Value::String(text.to_string()),
        DeValue::Integer(integer) => toml::Value::Integer(i64::from_str_radix(integer.as_str(), integer.radix()).ok()?),
        DeValue::Float(float) => toml::Value::Float(float.as_str().replace('_', "").parse().ok()?),
        DeValue::Boolean(boolean) => toml::Value::Boolean(*boolean),
        DeValue::Datetime(datetime) => toml::Value::Datetime(*datetime),
        DeValue::Array(items) => {
            toml::Value::Array(items.iter().map(|item| owned_value(item.get_ref())).collect::<Option<_>>()?)
        }
        DeValue::Table(entries) => toml::Value::Table(
            entries
                .iter()
                .map(|(key, value)| Some((key.get_ref().to_string(), owned_value(value.get_ref())?)))
                .collect::<Option<_>>()?,
        ),
    })
}

fn location(reader: &Reader<'_>, span: Range<usize>) -> String {
    let diagnostic = reader.source.diagnostic(span, String::new(), None);
    format!("{}:{}:{}", diagnostic.file, diagnostic.line, diagnostic.column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_experiment_file_is_read() {
        let source = r#"
repetitions = 3
seed = 9
metrics = ["makespan", "cost"]
baseline = "plain"

[workload]
job = "scan"
input = { manifest = { bucket = "scans", key = "list.txt", file = "inputs/list.txt" } }

[variants.plain]

[variants.wide]
set = { "jobs.scan.workers" = { max = 8 }, functions.work.memory = "1GiB", "functions.work.command" = ["./fast", "--x"] }
unset = ["jobs.scan.provisioner"]
setup = ["build-index", "warm"]
"#;
        let spec = parse_experiment("experiment.toml", source).unwrap();
        assert_eq!(spec.repetitions, 3);
        assert_eq!(spec.seed, 9);
        assert_eq!(spec.metrics, vec![Metric::Makespan, Metric::Cost]);
        assert_eq!(spec.baseline, "plain");
        assert_eq!(spec.workload.job.as_str(), "scan");
        assert_eq!(
            spec.workload.input,
            WorkloadInput::Manifest { bucket: "scans".into(), key: "list.txt".into(), file: "inputs/list.txt".into() }
        );
        let wide = &spec.variants[1];
        let mut set: Vec<(String, toml::Value)> =
            wide.set.iter().map(|(path, value)| (path.join("."), value.clone())).collect();
        set.sort_by(|a, b| a.0.cmp(&b.0));
        let paths: Vec<&str> = set.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["functions.work.command", "functions.work.memory", "jobs.scan.workers.max"]);
        assert_eq!(set[2].1, toml::Value::Integer(8));
        assert_eq!(wide.unset, vec![vec!["jobs".to_owned(), "scan".to_owned(), "provisioner".to_owned()]]);
        let setup: Vec<&str> = wide.setup.iter().map(Name::as_str).collect();
        assert_eq!(setup, ["build-index", "warm"]);
        assert!(spec.variants[0].setup.is_empty());
        assert_eq!(wide.location, "experiment.toml:13:11");
    }

    #[test]
    fn mistakes_are_located_and_all_reported() {
        let source = r#"
repetitions = 0
metrics = ["makespan", "speed"]
baseline = "nope"
colour = "red"

[workload]
input = { manifest = { bucket = "scans" }, messages = { queue = "q", file = "f" } }

[variants.only]
sett = { a = 1 }
setup = ["Build Index"]
"#;
        let error = parse_experiment("experiment.toml", source).unwrap_err().to_string();
        for expected in [
            "`repetitions` of the experiment file is 0, out of range",
            "`speed` in `metrics` is not a metric Mayfly measures",
            "unknown key `colour` in the experiment file",
            "`[workload]` has no `job`",
            "`input` of `[workload]` must be exactly one of manifest, objects, messages",
            "unknown key `sett` in variant `only`",
            "`Build Index` is not a valid setup job name",
            "`baseline` names variant `nope`",
            "experiment.toml:2:15",
        ] {
            assert!(error.contains(expected), "missing {expected:?} in:\n{error}");
        }
    }
}
