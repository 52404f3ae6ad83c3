//! The walk from the spanned TOML tree to the typed [`Architecture`], one
//! section at a time, followed by the checks that span sections (references,
//! dead-letter cycles, required tags). Every problem is collected; the model
//! is returned only when there are none.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use mayfly_core::{Name, ObjectEventKind, Permission, parse_duration};
use mayfly_fleet::ProvisionerKind;
use toml::de::DeValue;

use crate::model::*;
use crate::reader::{Located, Reader, ResourceKind, Table, closest, describe};

const TOP_LEVEL_KEYS: &[&str] = &[
    "version",
    "name",
    "tags",
    "policy",
    "pricing",
    "buckets",
    "queues",
    "functions",
    "routes",
    "triggers",
    "alarms",
    "jobs",
    "api",
    "state",
    "storage",
    "telemetry",
    "evaluation",
];
const EVALUATION_KEYS: &[&str] = &["job", "input", "repetitions", "seed", "metrics", "tolerance"];
const STORAGE_KEYS: &[&str] = &["url"];
const TELEMETRY_KEYS: &[&str] = &["otlp", "object_keys"];
const OBJECT_KEYS_IN_SPANS: &[(&str, ObjectKeysInSpans)] =
    &[("hash", ObjectKeysInSpans::Hash), ("plain", ObjectKeysInSpans::Plain), ("omit", ObjectKeysInSpans::Omit)];
const STATE_KEYS: &[&str] = &["url", "password_file", "ca_file"];
const POLICY_KEYS: &[&str] = &["require_tags", "encryption", "tls", "networks", "max_run_cost", "log_retention"];
const PRICING_KEYS: &[&str] = &["cpu_second", "gb_second", "invocation", "worker_hour", "currency"];
const BUCKET_KEYS: &[&str] = &["tags", "retention", "encryption"];
const QUEUE_KEYS: &[&str] =
    &["visibility_timeout", "delay", "max_message_size", "retention", "max_receives", "dead_letter", "tags"];
const FUNCTION_KEYS: &[&str] = &[
    "runtime",
    "command",
    "handler",
    "env",
    "timeout",
    "memory",
    "concurrency",
    "retries",
    "on_failure",
    "isolation",
    "image",
    "permissions",
    "tags",
];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff"];
const ROUTE_KEYS: &[&str] = &["from", "to"];
const ROUTE_FROM_KEYS: &[&str] = &["bucket", "events", "prefix", "suffix"];
const ROUTE_TO_KEYS: &[&str] = &["queue", "function"];
const TRIGGER_KEYS: &[&str] = &["queue", "schedule", "function", "batch_size", "batch_window"];
const ALARM_KEYS: &[&str] = &["metric", "when"];
const JOB_KEYS: &[&str] = &[
    "source",
    "function",
    "workers",
    "item_timeout",
    "max_attempts",
    "deadline",
    "budget",
    "logs",
    "provisioner",
    "triggers",
    "tags",
];
const JOB_SOURCE_KEYS: &[&str] = &["queue", "batch", "bucket", "prefix", "manifest"];
const MANIFEST_KEYS: &[&str] = &["bucket", "key"];
const WORKERS_KEYS: &[&str] = &["max", "items_per_worker"];
const PROVISIONER_KEYS: &[&str] = &[
    "kind",
    "network",
    "subnet",
    "image",
    "memory",
    "cpus",
    "partition",
    "account",
    "qos",
    "time_limit",
    "extra_args",
    "spool",
    "constraints",
];
/// `sbatch` options the Slurm provisioner sets itself: its tags, the job's
/// environment, output, array and requeue policy depend on them.
const SLURM_RESERVED_OPTIONS: &[&str] = &[
    "--array",
    "-a",
    "--comment",
    "--job-name",
    "-J",
    "--export",
    "--export-file",
    "--output",
    "-o",
    "--error",
    "-e",
    "--input",
    "-i",
    "--chdir",
    "-D",
    "--parsable",
    "--requeue",
    "--no-requeue",
    "--wrap",
    "--ntasks",
    "-n",
];
const JOB_TRIGGER_KEYS: &[&str] = &["alarm", "schedule"];
const API_KEYS: &[&str] = &["listen", "aws_listen", "aws_domain", "aws_advertise", "tls", "routes"];
const API_TLS_KEYS: &[&str] = &["cert", "key"];
const API_ROUTE_KEYS: &[&str] = &["method", "path", "function"];

const REQUIREMENTS: &[(&str, Requirement)] =
    &[("required", Requirement::Required), ("optional", Requirement::Optional)];
const RUNTIMES: &[(&str, Runtime)] = &[("process", Runtime::Process), ("lambda", Runtime::Lambda)];
const ISOLATIONS: &[(&str, Isolation)] = &[("process", Isolation::Process), ("container", Isolation::Container)];
const EVENTS: &[(&str, ObjectEventKind)] =
    &[("created", ObjectEventKind::Created), ("deleted", ObjectEventKind::Deleted)];

/// One `[KIND.NAME]` entry.
struct NamedTable<'t, 'i> {
    raw_name: String,
    name: Option<Name>,
    table: Table<'t, 'i>,
}

/// Facts gathered while lowering, for the checks that span sections.
#[derive(Default)]
struct CrossChecks {
    /// (what, tags) of every tagged resource, for `policy.require_tags`.
    tagged_resources: Vec<(String, BTreeMap<String, String>)>,
    /// queue → (dead-letter queue, span of the `dead_letter` value).
    dead_letters: BTreeMap<Name, (Name, Range<usize>)>,
    /// Spans of the `require_tags` entries.
    required_tag_spans: Vec<Located<String>>,
    /// (what, span of `permissions`) of every function that declares some.
    functions_with_permissions: Vec<(String, Range<usize>)>,
    /// job → (what, span of `provisioner`, span of `function`), for the
    /// checks of what its workers' function can reach.
    job_spans: BTreeMap<Name, (String, Range<usize>, Range<usize>)>,
}

/// Lower the document `root` into an architecture; `None` when anything was reported.
pub(crate) fn lower_document(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Option<Architecture> {
    reader.check_keys(root, TOP_LEVEL_KEYS);
    let mut checks = CrossChecks::default();

    let version = lower_version(reader, root);
    let name = match reader.string(root, "name") {
        Some(text) => reader.name(&text.value, text.span, "project"),
        None => {
            if !root.has("name") {
                reader.error(
                    0..0,
                    "the architecture file has no project `name`",
                    Some(
                        "add `name = \"my-project\"` after `version`; it prefixes every resource Mayfly creates"
                            .to_owned(),
                    ),
                );
            }
            None
        }
    };
    let tags = reader.string_map(root, "tags");
    let policy = lower_policy(reader, root, &mut checks);
    let pricing = lower_pricing(reader, root);

    // Declare every resource first, so reference checks see them all.
    let bucket_tables = named_tables(reader, root, NamedKind::Resource(ResourceKind::Bucket));
    let queue_tables = named_tables(reader, root, NamedKind::Resource(ResourceKind::Queue));
    let function_tables = named_tables(reader, root, NamedKind::Resource(ResourceKind::Function));
    let alarm_tables = named_tables(reader, root, NamedKind::Resource(ResourceKind::Alarm));
    let job_tables = named_tables(reader, root, NamedKind::Job);

    let mut buckets = BTreeMap::new();
    for entry in &bucket_tables {
        let bucket = lower_bucket(reader, entry, &policy, &mut checks);
        if let Some(name) = &entry.name {
            buckets.insert(name.clone(), bucket);
        }
    }
    let mut queues = BTreeMap::new();
    for entry in &queue_tables {
        let queue = lower_queue(reader, entry, &mut checks);
        if let (Some(name), Some(queue)) = (&entry.name, queue) {
            queues.insert(name.clone(), queue);
        }
    }
    let mut functions = BTreeMap::new();
    for entry in &function_tables {
        let function = lower_function(reader, entry, &mut checks);
        if let (Some(name), Some(function)) = (&entry.name, function) {
            functions.insert(name.clone(), function);
        }
    }
    let routes = lower_routes(reader, root);
    let triggers = lower_triggers(reader, root);
    let mut alarms = BTreeMap::new();
    for entry in &alarm_tables {
        if let (Some(name), Some(alarm)) = (&entry.name, lower_alarm(reader, entry, &queues)) {
            alarms.insert(name.clone(), alarm);
        }
    }
    let mut jobs = BTreeMap::new();
    for entry in &job_tables {
        if let (Some(name), Some(job)) = (&entry.name, lower_job(reader, entry, &policy, &mut checks)) {
            jobs.insert(name.clone(), job);
        }
    }
    let api = lower_api(reader, root, &policy);
    let evaluation = lower_evaluation(reader, root, &jobs, &job_tables);
    lower_state(reader, root);
    lower_storage(reader, root);
    lower_telemetry(reader, root);
    if api.is_none() && !root.has("api") {
        check_permissions_need_api(reader, &checks);
    }
    if let Some(api) = &api {
        check_job_workers_reach_the_aws_endpoint(reader, &checks, api, &jobs, &functions);
    }

    reader.check_references();
    check_dead_letter_cycles(reader, &checks);
    check_required_tags(reader, &tags, &checks);

    if !reader.diagnostics.is_empty() {
        return None;
    }
    Some(Architecture {
        version: version?,
        name: name?,
        tags,
        policy,
        pricing,
        buckets,
        queues,
        functions,
        routes,
        triggers,
        alarms,
        jobs,
        api,
        evaluation,
    })
}

/// `[evaluation]`: an experiment file's `[workload]` fields (`job`,
/// `input`) plus `repetitions`, `seed` and `metrics`; its job must be declared.
fn lower_evaluation(
    reader: &mut Reader<'_>,
    root: &Table<'_, '_>,
    jobs: &BTreeMap<Name, JobSpec>,
    job_tables: &[NamedTable<'_, '_>],
) -> Option<EvaluationSpec> {
    let table = reader.table(root, "evaluation", "`[evaluation]`".to_owned())?;
    reader.check_keys(&table, EVALUATION_KEYS);
    let repetitions =
        reader.integer(&table, "repetitions", 1, 100).map_or(EvaluationSpec::DEFAULT_REPETITIONS, |r| r.value);
    let seed = reader.integer(&table, "seed", 0, u32::MAX).map_or(1, |seed| u64::from(seed.value));
    let metrics = if table.has("metrics") {
        crate::experiment::lower_metrics(reader, &table)
    } else {
        EvaluationSpec::DEFAULT_METRICS.to_vec()
    };
    let tolerance = lower_tolerance(reader, &table);
    let workload = crate::experiment::lower_workload_fields(reader, &table)?;
    let declared = job_tables.iter().any(|entry| entry.name.as_ref() == Some(&workload.job));
    if !jobs.contains_key(&workload.job) && !declared {
        let span = table.get("job").map_or(table.span.clone(), |(_, value)| value.span());
        let names: Vec<&str> = job_tables.iter().filter_map(|entry| entry.name.as_ref().map(Name::as_str)).collect();
        reader.error(
            span,
            format!("`job` of `[evaluation]` names job `{}`, which the file does not declare", workload.job),
            Some(if names.is_empty() {
                "declare the job under `[jobs.NAME]`".to_owned()
            } else {
                format!("the jobs are: {}", names.join(", "))
            }),
        );
        return None;
    }
    Some(EvaluationSpec { workload, repetitions, seed, metrics, tolerance: tolerance? })
}

/// `tolerance` of `[evaluation]`: a percentage as a string, `"5%"`, from 0
/// up to (not including) 100; the default when absent.
fn lower_tolerance(reader: &mut Reader<'_>, table: &Table<'_, '_>) -> Option<f64> {
    if !table.has("tolerance") {
        return Some(EvaluationSpec::DEFAULT_TOLERANCE);
    }
    const HINT: &str = "write e.g. `tolerance = \"5%\"`: how much worse a metric must be before --require-no-regression refuses (\"0%\" refuses any regression the interval shows)";
    let (_, value) = table.get("tolerance")?;
    let DeValue::String(text) = value.get_ref() else {
        reader.error(
            value.span(),
            format!(
                "`tolerance` of `[evaluation]` must be a percentage as a string, not {}",
                describe(value.get_ref())
            ),
            Some(HINT.to_owned()),
        );
        return None;
    };
    let percent = text.trim().strip_suffix('%').and_then(|number| number.trim().parse::<f64>().ok());
    match percent.filter(|percent| percent.is_finite() && (0.0..100.0).contains(percent)) {
        Some(percent) => Some(percent / 100.0),
        None => {
            reader.error(
                value.span(),
                format!("`tolerance` of `[evaluation]` is \"{text}\", not a percentage from 0% to under 100%"),
                Some(HINT.to_owned()),
            );
            None
        }
    }
}

fn lower_version(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Option<u32> {
    let Some((_, value)) = root.get("version") else {
        reader.error(
            0..0,
            "the architecture file does not say which schema version it is written in",
            Some(format!("add `version = {SCHEMA_VERSION}` as the first line")),
        );
        return None;
    };
    let version = match value.get_ref() {
        DeValue::Integer(integer) => i64::from_str_radix(integer.as_str(), integer.radix()).ok(),
        other => {
            reader.error(
                value.span(),
                format!("`version` must be the integer {SCHEMA_VERSION}, not {}", describe(other)),
                Some(format!("write `version = {SCHEMA_VERSION}`")),
            );
            return None;
        }
    };
    if version == Some(i64::from(SCHEMA_VERSION)) {
        return Some(SCHEMA_VERSION);
    }
    let shown = version.map_or_else(|| "out of range".to_owned(), |version| version.to_string());
    reader.error(
        value.span(),
        format!("schema version {shown} is not supported; this Mayfly reads version {SCHEMA_VERSION}"),
        Some(format!("write `version = {SCHEMA_VERSION}`, or use the Mayfly release that wrote this file")),
    );
    None
}

/// Every `[KIND.NAME]` table under `key`, each name validated and declared.
fn named_tables<'t, 'i>(reader: &mut Reader<'_>, root: &Table<'t, 'i>, kind: NamedKind) -> Vec<NamedTable<'t, 'i>> {
    let (key, noun) = kind.key_and_noun();
    let Some(section) = reader.table(root, key, format!("`[{key}]`")) else {
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (name_key, value) in section.entries.iter() {
        let raw_name = name_key.get_ref().to_string();
        let mut name = reader.name(&raw_name, name_key.span(), noun);
        if name.as_ref().is_some_and(Name::is_reserved) {
            reader.error(
                name_key.span(),
                format!(
                    "`{raw_name}` is a reserved {noun} name: names starting with `{}` belong to Mayfly's own resources",
                    Name::RESERVED_PREFIX
                ),
                Some(format!("choose a name that does not start with `{}`", Name::RESERVED_PREFIX)),
            );
            name = None;
        }
        if let NamedKind::Resource(resource) = kind {
            reader.declare(resource, &raw_name);
        }
        let what = format!("{noun} `{raw_name}`");
        let DeValue::Table(entries) = value.get_ref() else {
            reader.error(
                value.span(),
                format!("{what} must be a table, not {}", describe(value.get_ref())),
                Some(format!("declare it as a `[{key}.{raw_name}]` section")),
            );
            continue;
        };
        tables.push(NamedTable { raw_name, name, table: Table { entries, span: value.span(), what } });
    }
    tables
}

#[derive(Clone, Copy)]
enum NamedKind {
    Resource(ResourceKind),
    Job,
}

impl NamedKind {
    fn key_and_noun(self) -> (&'static str, &'static str) {
        match self {
            NamedKind::Resource(kind) => (kind.table_key(), kind.noun()),
            NamedKind::Job => ("jobs", "job"),
        }
    }
}

/// Items of an array of tables (`[[routes]]`), each a table named `noun #N`.
fn array_of_tables<'t, 'i>(
    reader: &mut Reader<'_>,
    parent: &Table<'t, 'i>,
    key: &str,
    noun: &str,
) -> Vec<Table<'t, 'i>> {
    let Some(items) = reader.array(parent, key, "an array of tables") else {
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let what = format!("{noun} #{}", index + 1);
        match item.get_ref() {
            DeValue::Table(entries) => tables.push(Table { entries, span: item.span(), what }),
            other => reader.error(
                item.span(),
                format!("{what} must be a table, not {}", describe(other)),
                Some(format!("write each entry as a `[[{key}]]` section or an inline table {{ ... }}")),
            ),
        }
    }
    tables
}

fn lower_policy(reader: &mut Reader<'_>, root: &Table<'_, '_>, checks: &mut CrossChecks) -> PolicySpec {
    let mut policy = PolicySpec::default();
    let Some(table) = reader.table(root, "policy", "`[policy]`".to_owned()) else {
        return policy;
    };
    reader.check_keys(&table, POLICY_KEYS);
    if let Some(required) = reader.string_list(&table, "require_tags") {
        let mut seen = BTreeSet::new();
        for tag in required {
            if tag.value.trim().is_empty() {
                reader.error(
                    tag.span.clone(),
                    "`require_tags` of `[policy]` holds an empty tag name",
                    Some("remove the empty entry".to_owned()),
                );
            } else if !seen.insert(tag.value.clone()) {
                reader.error(
                    tag.span.clone(),
                    format!("`require_tags` of `[policy]` lists `{}` twice", tag.value),
                    Some("remove the repeated entry".to_owned()),
                );
            } else {
                policy.require_tags.push(tag.value.clone());
                checks.required_tag_spans.push(tag);
            }
        }
    }
    policy.encryption = reader.choice(&table, "encryption", REQUIREMENTS).unwrap_or_default();
    policy.tls = reader.choice(&table, "tls", REQUIREMENTS).unwrap_or_default();
    if let Some(networks) = reader.string_list(&table, "networks") {
        for network in networks {
            if let Some(cidr) = reader.cidr(&network, "`networks` of `[policy]`") {
                policy.networks.push(cidr);
            }
        }
    }
    policy.max_run_cost = reader.non_negative_number(&table, "max_run_cost").map(|cost| cost.value);
    policy.log_retention = reader.duration(&table, "log_retention");
    policy
}

fn lower_pricing(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> PricingSpec {
    let mut pricing = PricingSpec::default();
    let Some(table) = reader.table(root, "pricing", "`[pricing]`".to_owned()) else {
        return pricing;
    };
    reader.check_keys(&table, PRICING_KEYS);
    let mut price = |key: &str| reader.non_negative_number(&table, key).map_or(0.0, |price| price.value);
    pricing.cpu_second = price("cpu_second");
    pricing.gb_second = price("gb_second");
    pricing.invocation = price("invocation");
    pricing.worker_hour = price("worker_hour");
    if let Some(currency) = reader.string(&table, "currency") {
        if currency.value.len() == 3 && currency.value.bytes().all(|byte| byte.is_ascii_uppercase()) {
            pricing.currency = currency.value;
        } else {
            reader.error(
                currency.span,
                format!("`currency` of `[pricing]` is not a currency code: \"{}\"", currency.value),
                Some("write a three-letter ISO 4217 code such as \"USD\", \"EUR\" or \"CHF\"".to_owned()),
            );
        }
    }
    pricing
}

fn lower_bucket(
    reader: &mut Reader<'_>,
    entry: &NamedTable<'_, '_>,
    policy: &PolicySpec,
    checks: &mut CrossChecks,
) -> BucketSpec {
    let table = &entry.table;
    reader.check_keys(table, BUCKET_KEYS);
    let tags = reader.string_map(table, "tags");
    checks.tagged_resources.push((table.what.clone(), tags.clone()));
    let retention = reader.duration(table, "retention");
    let encryption = reader.bool(table, "encryption").unwrap_or(true);
    if !encryption && policy.encryption == Requirement::Required {
        let span = table.get("encryption").map_or(table.span.clone(), |(_, value)| value.span());
        reader.error(
            span,
            format!("{} turns encryption off, but `[policy]` requires encryption", table.what),
            Some("remove `encryption = false`, or set `encryption = \"optional\"` in `[policy]`".to_owned()),
        );
    }
    BucketSpec { tags, retention, encryption }
}

fn lower_queue(reader: &mut Reader<'_>, entry: &NamedTable<'_, '_>, checks: &mut CrossChecks) -> Option<QueueSpec> {
    let table = &entry.table;
    reader.check_keys(table, QUEUE_KEYS);
    let visibility_timeout = reader.duration(table, "visibility_timeout");
    if let Some(timeout) = visibility_timeout
        && timeout > mayfly_core::queue::QueueConfig::MAX_VISIBILITY_TIMEOUT
    {
        let span = table.get("visibility_timeout").map_or(table.span.clone(), |(_, value)| value.span());
        reader.error(
            span,
            format!("`visibility_timeout` of {} is longer than the 12h limit", table.what),
            Some("use 12h or less; workers extend the lease of long items while they run".to_owned()),
        );
    }
    let delay = reader.duration(table, "delay");
    let max_message_size = reader.size(table, "max_message_size");
    let retention = reader.positive_duration(table, "retention");
    let kept_for = retention.unwrap_or(mayfly_core::queue::QueueConfig::DEFAULT_RETENTION);
    if let Some(delay) = delay
        && delay >= kept_for
    {
        // A message would expire before it ever became visible.
        let span = table.get("delay").map_or(table.span.clone(), |(_, value)| value.span());
        reader.error(
            span,
            format!(
                "`delay` of {} is {}, not shorter than the queue's retention of {}",
                table.what,
                mayfly_core::format_duration(delay),
                mayfly_core::format_duration(kept_for)
            ),
            Some(
                "a message would be dropped before it became visible; shorten `delay` or raise `retention`".to_owned(),
            ),
        );
    }
    let max_receives = reader.integer(table, "max_receives", 1, u32::MAX);
    let dead_letter = reader.reference(table, "dead_letter", ResourceKind::Queue, "dead-letter queue");
    let tags = reader.string_map(table, "tags");
    checks.tagged_resources.push((table.what.clone(), tags.clone()));

    let dead_letter_span = table.get("dead_letter").map(|(_, value)| value.span());
    if let (Some(queue), Some(target), Some(span)) = (&entry.name, &dead_letter, &dead_letter_span) {
        checks.dead_letters.insert(queue.clone(), (target.clone(), span.clone()));
    }
    if let Some(max_receives) = &max_receives
        && !table.has("dead_letter")
    {
        reader.error(
            max_receives.span.clone(),
            format!("{} sets `max_receives` but no `dead_letter` queue", table.what),
            Some(format!(
                "add `dead_letter = \"{}-dlq\"` and a `[queues.{}-dlq]` table; without one, a message that keeps failing is received forever",
                entry.raw_name, entry.raw_name
            )),
        );
    }
    if max_receives.is_none() && !table.has("max_receives") && dead_letter.is_some() {
        let span = dead_letter_span.unwrap_or(table.span.clone());
        reader.error(
            span,
            format!("{} names a `dead_letter` queue but no `max_receives`", table.what),
            Some("add `max_receives = 3` (receives before a message is moved to the dead-letter queue)".to_owned()),
        );
    }
    Some(QueueSpec {
        visibility_timeout,
        delay,
        max_message_size,
        retention,
        max_receives: max_receives.map(|max| max.value),
        dead_letter,
        tags,
    })
}

fn lower_function(
    reader: &mut Reader<'_>,
    entry: &NamedTable<'_, '_>,
    checks: &mut CrossChecks,
) -> Option<FunctionSpec> {
    let table = &entry.table;
    reader.check_keys(table, FUNCTION_KEYS);
    let runtime = reader.choice(table, "runtime", RUNTIMES).unwrap_or_default();
    let command = match reader.string_list(table, "command") {
        Some(command) if command.is_empty() => {
            let span = table.get("command").map_or(table.span.clone(), |(_, value)| value.span());
            reader.error(
                span,
                format!("`command` of {} is empty", table.what),
                Some("name the program and its arguments, e.g. [\"python3\", \"functions/handler.py\"]".to_owned()),
            );
            None
        }
        Some(command) => {
            if let Some(blank) = command.iter().find(|part| part.value.is_empty()) {
                reader.error(
                    blank.span.clone(),
                    format!("`command` of {} holds an empty string", table.what),
                    Some("remove the empty argument".to_owned()),
                );
            }
            Some(command.into_iter().map(|part| part.value).collect())
        }
        None => {
            if !table.has("command") {
                reader.missing(
                    table,
                    "command",
                    "add the program to run, e.g. `command = [\"python3\", \"functions/handler.py\"]`".to_owned(),
                );
            }
            None
        }
    };
    let handler = reader.non_empty_string(table, "handler");
    if let Some(handler) = &handler
        && runtime != Runtime::Lambda
    {
        reader.error(
            handler.span.clone(),
            format!("`handler` of {} is used only by the lambda runtime", table.what),
            Some("set `runtime = \"lambda\"`, or remove `handler`".to_owned()),
        );
    }
    let env = reader.string_map(table, "env");
    if let Some((_, env_value)) = table.get("env")
        && let DeValue::Table(env_table) = env_value.get_ref()
    {
        for env_key in env_table.keys() {
            let variable = env_key.get_ref();
            let valid = variable.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
                && variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid && !variable.trim().is_empty() {
                reader.error(
                    env_key.span(),
                    format!("`{variable}` in `env` of {} is not an environment variable name", table.what),
                    Some("use letters, digits and `_`, not starting with a digit, e.g. MODEL_PATH".to_owned()),
                );
            }
        }
    }
    let timeout = reader.positive_duration(table, "timeout");
    let memory = reader.positive_size(table, "memory");
    let concurrency = reader.integer(table, "concurrency", 1, u32::MAX).map(|value| value.value);
    let retries = match reader.table(table, "retries", format!("`retries` of {}", table.what)) {
        Some(retries_table) => {
            reader.check_keys(&retries_table, RETRY_KEYS);
            RetrySpec {
                max_attempts: reader
                    .integer(&retries_table, "max_attempts", 1, 100)
                    .map_or(RetrySpec::DEFAULT_MAX_ATTEMPTS, |value| value.value),
                backoff: reader.duration(&retries_table, "backoff").unwrap_or(RetrySpec::DEFAULT_BACKOFF),
            }
        }
        None => RetrySpec::default(),
    };
    let on_failure = reader.reference(table, "on_failure", ResourceKind::Queue, "on-failure queue");
    let isolation = reader.choice(table, "isolation", ISOLATIONS).unwrap_or_default();
    let image = reader.non_empty_string(table, "image");
    match (&image, isolation) {
        (None, Isolation::Container) if !table.has("image") => {
            let span = table.get("isolation").map_or(table.span.clone(), |(_, value)| value.span());
            reader.error(
                span,
                format!("{} runs in a container but names no `image`", table.what),
                Some("add `image = \"python:3.12-slim\"` (or the image your code needs)".to_owned()),
            );
        }
        (Some(image), Isolation::Process) => reader.error(
            image.span.clone(),
            format!("`image` of {} is used only with `isolation = \"container\"`", table.what),
            Some("add `isolation = \"container\"`, or remove `image`".to_owned()),
        ),
        _ => {}
    }
    let permissions = lower_permissions(reader, table, checks);
    let tags = reader.string_map(table, "tags");
    checks.tagged_resources.push((table.what.clone(), tags.clone()));
    Some(FunctionSpec {
        runtime,
        command: command?,
        handler: handler.map(|handler| handler.value),
        env,
        timeout,
        memory,
        concurrency,
        retries,
        on_failure,
        isolation,
        image: image.map(|image| image.value),
        permissions,
        tags,
    })
}

/// `permissions` of a function: each `<verb>:<name>` parsed, its bucket or
/// queue checked against the declarations with the others.
fn lower_permissions(reader: &mut Reader<'_>, table: &Table<'_, '_>, checks: &mut CrossChecks) -> Vec<Permission> {
    let Some(entries) = reader.string_list(table, "permissions") else {
        return Vec::new();
    };
    let mut permissions = Vec::new();
    for entry in entries {
        match entry.value.parse::<Permission>() {
            Ok(permission) => {
                let kind = match permission.access.resource_kind() {
                    mayfly_core::permission::ResourceKind::Bucket => ResourceKind::Bucket,
                    mayfly_core::permission::ResourceKind::Queue => ResourceKind::Queue,
                };
                reader.reference_from(
                    Located { value: permission.resource.to_string(), span: entry.span.clone() },
                    kind,
                    &format!("`{}` in `permissions` of {}", entry.value, table.what),
                    kind.noun(),
                );
                if !permissions.contains(&permission) {
                    permissions.push(permission);
                }
            }
            Err(error) => reader.error(
                entry.span.clone(),
                format!("`permissions` of {}: {error}", table.what),
                Some(
                    "write `<verb>:<bucket or queue>`, e.g. \"objects:read:inbox\", \"objects:write:archive\", \"messages:write:work\""
                        .to_owned(),
                ),
            ),
        }
    }
    if !permissions.is_empty() {
        checks.functions_with_permissions.push((table.what.clone(), table.key_span("permissions")));
    }
    permissions
}

/// Function credentials are checked by the AWS endpoint, which only `[api]` serves.
fn check_permissions_need_api(reader: &mut Reader<'_>, checks: &CrossChecks) {
    for (what, span) in &checks.functions_with_permissions {
        reader.error(
            span.clone(),
            format!("{what} declares `permissions`, but the project has no `[api]` to serve its AWS credentials"),
            Some("add an `[api]` table (its AWS endpoint on `aws_listen` checks function credentials), or remove `permissions`".to_owned()),
        );
    }
}

/// A job's workers get AWS credentials for their function's `permissions`
/// from their coordinator, with the endpoint's URL: workers on this host
/// dial `[api].aws_listen` (whose port must be fixed: a coordinator, a
/// process of its own, cannot learn a port `mayfly up` picked); workers off
/// this host (containers, Slurm nodes, swarm tasks) dial `[api].aws_advertise`,
/// and without one cannot reach the endpoint. Refused here, at deploy, so
/// that no triggered run is created only for its coordinator to refuse it
/// (and `mayfly up` to restart that coordinator again and again).
fn check_job_workers_reach_the_aws_endpoint(
    reader: &mut Reader<'_>,
    checks: &CrossChecks,
    api: &ApiSpec,
    jobs: &BTreeMap<Name, JobSpec>,
    functions: &BTreeMap<Name, FunctionSpec>,
) {
    for (name, job) in jobs {
        let Some((what, provisioner_span, function_span)) = checks.job_spans.get(name) else { continue };
        if functions.get(&job.function).is_none_or(|function| function.permissions.is_empty()) {
            continue;
        }
        let function = &job.function;
        if job.provisioner.kind != ProvisionerKind::LOCAL {
            if api.aws_advertise.is_none() {
                reader.error(
                    provisioner_span.clone(),
                    format!(
                        "function `{function}` of {what} declares `permissions`, but the job's workers run off this host ({} provisioner), where the AWS endpoint on `[api].aws_listen` cannot be reached",
                        job.provisioner.kind.name()
                    ),
                    Some("set `[api].aws_advertise` to the endpoint's URL as the workers reach it (e.g. `aws_advertise = \"https://mayfly.example.org:8444\"`), or run the job with local workers (`provisioner = { kind = \"local\" }`), or remove `permissions` from the function".to_owned()),
                );
            }
        } else if api.aws_listen.port() == 0 {
            reader.error(
                function_span.clone(),
                format!(
                    "function `{function}` of {what} declares `permissions`, but `[api].aws_listen` ({}) has port 0, so the job's workers cannot be told where the AWS endpoint is",
                    api.aws_listen
                ),
                Some("give `aws_listen` a fixed port, e.g. `aws_listen = \"127.0.0.1:8444\"`".to_owned()),
            );
        }
    }
}

fn lower_routes(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Vec<RouteSpec> {
    let mut routes: Vec<(RouteSpec, String)> = Vec::new();
    for table in array_of_tables(reader, root, "routes", "route") {
        reader.check_keys(&table, ROUTE_KEYS);
        let from = reader.table(&table, "from", format!("`from` of {}", table.what));
        let to = reader.table(&table, "to", format!("`to` of {}", table.what));
        if !table.has("from") {
            reader.missing(&table, "from", "add `from = { bucket = \"inbox\", events = [\"created\"] }`".to_owned());
        }
        if !table.has("to") {
            reader.missing(
                &table,
                "to",
                "add `to = { queue = \"work\" }` or `to = { function = \"handler\" }`".to_owned(),
            );
        }
        let source = from.and_then(|from| lower_route_source(reader, &from, &table.what));
        let target = to.and_then(|to| lower_route_target(reader, &to, &table.what));
        let (Some((bucket, events, prefix, suffix)), Some(target)) = (source, target) else {
            continue;
        };
        let route = RouteSpec { bucket, events, prefix, suffix, to: target };
        let duplicate_of = routes.iter().find(|(earlier, _)| {
            earlier.bucket == route.bucket
                && earlier.to == route.to
                && earlier.prefix == route.prefix
                && earlier.suffix == route.suffix
                && earlier.events.iter().any(|event| route.events.contains(event))
        });
        if let Some((_, earlier_what)) = duplicate_of {
            reader.error(
                table.span.clone(),
                format!(
                    "{} duplicates {earlier_what}: same bucket, filters and target, overlapping events",
                    table.what
                ),
                Some("remove one of them; as written every matching event would be delivered twice".to_owned()),
            );
        }
        routes.push((route, table.what.clone()));
    }
    routes.into_iter().map(|(route, _)| route).collect()
}

type RouteSource = (Name, Vec<ObjectEventKind>, Option<String>, Option<String>);

fn lower_route_source(reader: &mut Reader<'_>, from: &Table<'_, '_>, route_what: &str) -> Option<RouteSource> {
    reader.check_keys(from, ROUTE_FROM_KEYS);
    if !from.has("bucket") {
        reader.missing(from, "bucket", "name the bucket whose events to route, e.g. `bucket = \"inbox\"`".to_owned());
    }
    let bucket = reader.reference(from, "bucket", ResourceKind::Bucket, "bucket");
    let mut events = vec![ObjectEventKind::Created];
    if let Some(listed) = reader.string_list(from, "events") {
        events.clear();
        for event in &listed {
            match EVENTS.iter().find(|(text, _)| *text == event.value) {
                Some((_, kind)) if events.contains(kind) => reader.error(
                    event.span.clone(),
                    format!("`events` of {route_what} lists \"{}\" twice", event.value),
                    Some("remove the repeated entry".to_owned()),
                ),
                Some((_, kind)) => events.push(*kind),
                None => reader.error(
                    event.span.clone(),
                    format!("`events` of {route_what} holds an unknown event \"{}\"", event.value),
                    Some("bucket events are \"created\" and \"deleted\"".to_owned()),
                ),
            }
        }
        if listed.is_empty() {
            let span = from.get("events").map_or(from.span.clone(), |(_, value)| value.span());
            reader.error(
                span,
                format!("`events` of {route_what} is empty, so the route would never fire"),
                Some("list \"created\", \"deleted\" or both, or remove `events` for [\"created\"]".to_owned()),
            );
        }
    }
    let prefix = reader.string(from, "prefix").map(|prefix| prefix.value).filter(|prefix| !prefix.is_empty());
    let suffix = reader.string(from, "suffix").map(|suffix| suffix.value).filter(|suffix| !suffix.is_empty());
    Some((bucket?, events, prefix, suffix))
}

fn lower_route_target(reader: &mut Reader<'_>, to: &Table<'_, '_>, route_what: &str) -> Option<RouteTarget> {
    reader.check_keys(to, ROUTE_TO_KEYS);
    match (to.has("queue"), to.has("function")) {
        (true, false) => reader.reference(to, "queue", ResourceKind::Queue, "queue").map(RouteTarget::Queue),
        (false, true) => {
            reader.reference(to, "function", ResourceKind::Function, "function").map(RouteTarget::Function)
        }
        (true, true) => {
            reader.error(
                to.span.clone(),
                format!("`to` of {route_what} names both a queue and a function"),
                Some("a route has one target; add a second `[[routes]]` entry for the other".to_owned()),
            );
            None
        }
        (false, false) => {
            if to.entries.is_empty() {
                reader.error(
                    to.span.clone(),
                    format!("`to` of {route_what} names no target"),
                    Some("write `to = { queue = \"work\" }` or `to = { function = \"handler\" }`".to_owned()),
                );
            }
            None
        }
    }
}

fn lower_triggers(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> Vec<TriggerSpec> {
    let mut triggers: Vec<(TriggerSpec, String)> = Vec::new();
    for table in array_of_tables(reader, root, "triggers", "trigger") {
        reader.check_keys(&table, TRIGGER_KEYS);
        if !table.has("function") {
            reader.missing(&table, "function", "name the function to invoke, e.g. `function = \"rename\"`".to_owned());
        }
        let function = reader.reference(&table, "function", ResourceKind::Function, "function");
        let trigger = match (table.has("queue"), table.has("schedule")) {
            (true, false) => {
                let queue = reader.reference(&table, "queue", ResourceKind::Queue, "queue");
                let batch_size = reader
                    .integer(&table, "batch_size", 1, TriggerSpec::MAX_BATCH_SIZE)
                    .map_or(TriggerSpec::DEFAULT_BATCH_SIZE, |size| size.value);
                let batch_window = reader.duration(&table, "batch_window");
                match (queue, function) {
                    (Some(queue), Some(function)) => {
                        Some(TriggerSpec::Queue { queue, function, batch_size, batch_window })
                    }
                    _ => None,
                }
            }
            (false, true) => {
                let schedule = reader.schedule(&table, "schedule");
                for queue_only in ["batch_size", "batch_window"] {
                    if table.has(queue_only) {
                        reader.error(
                            table.key_span(queue_only),
                            format!("`{queue_only}` of {} applies only to queue triggers", table.what),
                            Some(format!("remove `{queue_only}`; a schedule invokes the function with one event")),
                        );
                    }
                }
                match (schedule, function) {
                    (Some(schedule), Some(function)) => Some(TriggerSpec::Schedule { schedule, function }),
                    _ => None,
                }
            }
            (true, true) => {
                reader.error(
                    table.span.clone(),
                    format!("{} has both `queue` and `schedule`", table.what),
                    Some("a trigger has one source; split it into two `[[triggers]]` entries".to_owned()),
                );
                None
            }
            (false, false) => {
                reader.error(
                    table.span.clone(),
                    format!("{} has neither `queue` nor `schedule`", table.what),
                    Some("add `queue = \"work\"` to invoke the function with queue messages, or `schedule = \"rate(5 minutes)\"`".to_owned()),
                );
                None
            }
        };
        let Some(trigger) = trigger else { continue };
        if let Some((_, earlier_what)) = triggers.iter().find(|(earlier, _)| *earlier == trigger) {
            reader.error(
                table.span.clone(),
                format!("{} duplicates {earlier_what}", table.what),
                Some("remove one of them; as written the function would be invoked twice".to_owned()),
            );
        }
        triggers.push((trigger, table.what.clone()));
    }
    triggers.into_iter().map(|(trigger, _)| trigger).collect()
}

fn lower_alarm(
    reader: &mut Reader<'_>,
    entry: &NamedTable<'_, '_>,
    queues: &BTreeMap<Name, QueueSpec>,
) -> Option<AlarmSpec> {
    let table = &entry.table;
    reader.check_keys(table, ALARM_KEYS);
    if !table.has("metric") {
        reader.missing(table, "metric", "add e.g. `metric = \"queue.work.visible\"`".to_owned());
    }
    if !table.has("when") {
        reader.missing(table, "when", "add e.g. `when = \">= 500 for 1m\"`".to_owned());
    }
    let metric = reader.string(table, "metric").and_then(|text| lower_metric(reader, text, &table.what, queues));
    let when = reader.string(table, "when").and_then(|text| {
        match parse_condition(&text.value) {
            Ok(condition) => Some((condition, text)),
            Err(reason) => {
                reader.error(
                    text.span,
                    format!("`when` of {} is not a condition: {reason}", table.what),
                    Some("write `<comparator> <threshold> for <period>`, e.g. \">= 500 for 1m\"; comparators are >, >=, <, <=".to_owned()),
                );
                None
            }
        }
    });
    let (metric, (condition, when_text)) = (metric?, when?);
    let ParsedCondition { comparator, threshold, threshold_unit, period } = condition;
    let unit_problem = match (&metric, threshold_unit) {
        (Metric::Function { measure: FunctionMeasure::ErrorRate, .. }, _) if threshold > 1.0 => {
            Some("an error rate is a fraction from 0 to 1; write 0.05 or 5%")
        }
        (
            Metric::Function { measure: FunctionMeasure::ErrorRate, .. },
            ThresholdUnit::Number | ThresholdUnit::Percent,
        ) => None,
        (_, ThresholdUnit::Percent) => Some("only `error_rate` takes a percentage; write a plain number"),
        (Metric::Queue { measure: QueueMeasure::OldestAge, .. }, _) => None,
        (_, ThresholdUnit::Duration) => Some("only `oldest_age` takes a duration; write a plain number"),
        _ => None,
    };
    if let Some(problem) = unit_problem {
        reader.error(
            when_text.span,
            format!("the threshold in `when` of {} does not fit metric `{metric}`", table.what),
            Some(problem.to_owned()),
        );
        return None;
    }
    Some(AlarmSpec { metric, when: AlarmCondition { comparator, threshold, period } })
}

fn lower_metric(
    reader: &mut Reader<'_>,
    text: Located<String>,
    alarm_what: &str,
    queues: &BTreeMap<Name, QueueSpec>,
) -> Option<Metric> {
    let parts: Vec<&str> = text.value.split('.').collect();
    let queue_measures: Vec<&str> = QUEUE_MEASURES.iter().map(|(measure, _)| *measure).collect();
    let function_measures: Vec<&str> = FUNCTION_MEASURES.iter().map(|(measure, _)| *measure).collect();
    let form_hint = format!(
        "write `queue.NAME.MEASURE` ({}) or `function.NAME.MEASURE` ({})",
        queue_measures.join(", "),
        function_measures.join(", ")
    );
    let [subject, resource, measure] = parts.as_slice() else {
        reader.error(
            text.span,
            format!("`metric` of {alarm_what} is not a metric: \"{}\"", text.value),
            Some(form_hint),
        );
        return None;
    };
    // Point at the part inside the string when it is written plainly as "…";
    // with escapes or other quoting, point at the whole string.
    let written_plainly = reader.source.text.get(text.span.clone()) == Some(format!("\"{}\"", text.value).as_str());
    let part_span = |offset: usize, length: usize| {
        if written_plainly {
            text.span.start + 1 + offset..text.span.start + 1 + offset + length
        } else {
            text.span.clone()
        }
    };
    let resource_text = Located { value: (*resource).to_owned(), span: part_span(subject.len() + 1, resource.len()) };
    let measure_span = part_span(subject.len() + 1 + resource.len() + 1, measure.len());
    let unknown_measure = |reader: &mut Reader<'_>, known: &[&str]| {
        let hint = match closest(measure, known.iter().copied()) {
            Some(suggestion) => format!("did you mean `{suggestion}`? {subject} metrics are: {}", known.join(", ")),
            None => format!("{subject} metrics are: {}", known.join(", ")),
        };
        reader.error(
            measure_span.clone(),
            format!("`metric` of {alarm_what} has an unknown {subject} measure `{measure}`"),
            Some(hint),
        );
    };
    match *subject {
        "queue" => {
            let found = QUEUE_MEASURES.iter().find(|(text, _)| text == measure).map(|(_, measure)| *measure);
            if found.is_none() {
                unknown_measure(reader, &queue_measures);
            }
            let queue = reader.reference_from(resource_text, ResourceKind::Queue, alarm_what, "queue")?;
            let found = found?;
            if found == QueueMeasure::DlqDepth
                && let Some(spec) = queues.get(&queue)
                && spec.dead_letter.is_none()
            {
                reader.error(
                    text.span.clone(),
                    format!("{alarm_what} watches the dead-letter queue of queue `{queue}`, which has none"),
                    Some(format!("give queue `{queue}` a `dead_letter` queue, or watch `queue.{queue}.visible`")),
                );
                return None;
            }
            Some(Metric::Queue { queue, measure: found })
        }
        "function" => {
            let found = FUNCTION_MEASURES.iter().find(|(text, _)| text == measure).map(|(_, measure)| *measure);
            if found.is_none() {
                unknown_measure(reader, &function_measures);
            }
            let function = reader.reference_from(resource_text, ResourceKind::Function, alarm_what, "function")?;
            Some(Metric::Function { function, measure: found? })
        }
        _ => {
            let hint = match closest(subject, ["queue", "function"]) {
                Some(suggestion) => format!("did you mean `{suggestion}`? {form_hint}"),
                None => form_hint,
            };
            reader.error(
                part_span(0, subject.len()),
                format!("`metric` of {alarm_what} measures `{subject}`, which is neither a queue nor a function"),
                Some(hint),
            );
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ThresholdUnit {
    Number,
    Percent,
    Duration,
}

#[derive(Debug, Clone, PartialEq)]
struct ParsedCondition {
    comparator: Comparator,
    threshold: f64,
    threshold_unit: ThresholdUnit,
    period: Duration,
}

/// Parse `">= 500 for 1m"`; the error says which part is wrong.
fn parse_condition(input: &str) -> Result<ParsedCondition, String> {
    let trimmed = input.trim();
    let comparators = [
        (">=", Comparator::GreaterOrEqual),
        ("<=", Comparator::LessOrEqual),
        (">", Comparator::Greater),
        ("<", Comparator::Less),
    ];
    let Some((rest, comparator)) =
        comparators.iter().find_map(|(text, comparator)| trimmed.strip_prefix(text).map(|rest| (rest, *comparator)))
    else {
        return Err(format!("\"{input}\" does not start with a comparator"));
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [threshold_text, for_word, period_text] = words.as_slice() else {
        return Err(format!("\"{input}\" is not of the form `<comparator> <threshold> for <period>`"));
    };
    if *for_word != "for" {
        return Err(format!("expected `for` after the threshold, found `{for_word}`"));
    }
    let (threshold, threshold_unit) = if let Some(percent) = threshold_text.strip_suffix('%') {
        (percent.parse::<f64>().map(|value| value / 100.0).ok(), ThresholdUnit::Percent)
    } else if let Ok(number) = threshold_text.parse::<f64>() {
        (Some(number), ThresholdUnit::Number)
    } else {
        (parse_duration(threshold_text).ok().map(|duration| duration.as_secs_f64()), ThresholdUnit::Duration)
    };
    let threshold = threshold.filter(|value| value.is_finite() && *value >= 0.0).ok_or_else(|| {
        format!("the threshold `{threshold_text}` is not a number of 0 or more, a percentage or a duration")
    })?;
    let period = parse_duration(period_text)
        .ok()
        .filter(|period| !period.is_zero())
        .ok_or_else(|| format!("the period `{period_text}` is not a duration such as 1m or 30s"))?;
    Ok(ParsedCondition { comparator, threshold, threshold_unit, period })
}

fn lower_job(
    reader: &mut Reader<'_>,
    entry: &NamedTable<'_, '_>,
    policy: &PolicySpec,
    checks: &mut CrossChecks,
) -> Option<JobSpec> {
    let table = &entry.table;
    reader.check_keys(table, JOB_KEYS);
    if !table.has("source") {
        reader.missing(table, "source", "add e.g. `source = { queue = \"work\", batch = 10 }`".to_owned());
    }
    if !table.has("function") {
        reader.missing(
            table,
            "function",
            "name the function that processes each item, e.g. `function = \"rename\"`".to_owned(),
        );
    }
    let source = reader
        .table(table, "source", format!("`source` of {}", table.what))
        .and_then(|source| lower_job_source(reader, &source, &table.what));
    let function = reader.reference(table, "function", ResourceKind::Function, "function");
    let workers = match reader.table(table, "workers", format!("`workers` of {}", table.what)) {
        Some(workers) => {
            reader.check_keys(&workers, WORKERS_KEYS);
            WorkersSpec {
                max: reader.integer(&workers, "max", 1, 10_000).map_or(1, |max| max.value),
                items_per_worker: reader.integer(&workers, "items_per_worker", 1, u32::MAX).map(|items| items.value),
            }
        }
        None => WorkersSpec::default(),
    };
    let item_timeout = reader.positive_duration(table, "item_timeout");
    let max_attempts =
        reader.integer(table, "max_attempts", 1, 100).map_or(JobSpec::DEFAULT_MAX_ATTEMPTS, |value| value.value);
    let deadline = reader.positive_duration(table, "deadline").unwrap_or(JobSpec::DEFAULT_DEADLINE);
    let budget = reader.non_negative_number(table, "budget");
    if let (Some(budget), Some(max_run_cost)) = (&budget, policy.max_run_cost)
        && budget.value > max_run_cost
    {
        reader.error(
            budget.span.clone(),
            format!(
                "`budget` of {} is {}, above the policy's `max_run_cost` of {max_run_cost}",
                table.what, budget.value
            ),
            Some("lower the budget, or raise `max_run_cost` in `[policy]`".to_owned()),
        );
    }
    let logs = reader.reference(table, "logs", ResourceKind::Bucket, "logs bucket");
    let provisioner = match reader.table(table, "provisioner", format!("`provisioner` of {}", table.what)) {
        Some(provisioner) => lower_provisioner(reader, &provisioner, policy),
        None => ProvisionerSpec::default(),
    };
    let triggers = lower_job_triggers(reader, table);
    let tags = reader.string_map(table, "tags");
    checks.tagged_resources.push((table.what.clone(), tags.clone()));
    if let Some(name) = &entry.name {
        let spans = (table.what.clone(), table.key_span("provisioner"), table.key_span("function"));
        checks.job_spans.insert(name.clone(), spans);
    }
    Some(JobSpec {
        source: source?,
        function: function?,
        workers,
        item_timeout,
        max_attempts,
        deadline,
        budget: budget.map(|budget| budget.value),
        logs,
        provisioner,
        triggers,
        tags,
    })
}

fn lower_job_source(reader: &mut Reader<'_>, source: &Table<'_, '_>, job_what: &str) -> Option<JobSource> {
    reader.check_keys(source, JOB_SOURCE_KEYS);
    let forms: Vec<&str> = ["queue", "bucket", "manifest"].into_iter().filter(|form| source.has(form)).collect();
    let subject = job_what.to_owned();
    let only_for = |reader: &mut Reader<'_>, key: &str, form: &str| {
        if source.has(key) {
            reader.error(
                source.key_span(key),
                format!("`{key}` in `source` of {job_what} applies only to a {form} source"),
                Some(format!("remove `{key}`")),
            );
        }
    };
    match forms.as_slice() {
        ["queue"] => {
            only_for(reader, "prefix", "bucket");
            let queue = reader.reference(source, "queue", ResourceKind::Queue, "source queue");
            let batch =
                reader.integer(source, "batch", 1, 10_000).map_or(JobSpec::DEFAULT_QUEUE_BATCH, |batch| batch.value);
            Some(JobSource::Queue { queue: queue?, batch })
        }
        ["bucket"] => {
            only_for(reader, "batch", "queue");
            let bucket = reader.reference(source, "bucket", ResourceKind::Bucket, "source bucket");
            let prefix = reader.string(source, "prefix").map(|prefix| prefix.value).filter(|prefix| !prefix.is_empty());
            Some(JobSource::Bucket { bucket: bucket?, prefix })
        }
        ["manifest"] => {
            only_for(reader, "batch", "queue");
            only_for(reader, "prefix", "bucket");
            let manifest = reader.table(source, "manifest", format!("`source.manifest` of {subject}"))?;
            reader.check_keys(&manifest, MANIFEST_KEYS);
            if !manifest.has("bucket") {
                reader.missing(
                    &manifest,
                    "bucket",
                    "name the bucket holding the manifest, e.g. `bucket = \"inbox\"`".to_owned(),
                );
            }
            if !manifest.has("key") {
                reader.missing(
                    &manifest,
                    "key",
                    "name the manifest object, e.g. `key = \"manifests/tonight.txt\"`".to_owned(),
                );
            }
            let bucket = reader.reference(&manifest, "bucket", ResourceKind::Bucket, "manifest bucket");
            let key = reader.non_empty_string(&manifest, "key");
            Some(JobSource::Manifest { bucket: bucket?, key: key?.value })
        }
        [] => {
            reader.error(
                source.span.clone(),
                format!("`source` of {job_what} names no queue, bucket or manifest"),
                Some("write `{ queue = \"work\" }`, `{ bucket = \"inbox\", prefix = \"in/\" }` or `{ manifest = { bucket = \"inbox\", key = \"list.txt\" } }`".to_owned()),
            );
            None
        }
        several => {
            reader.error(
                source.span.clone(),
                format!("`source` of {job_what} names several sources: {}", several.join(", ")),
                Some("a job reads one source; keep one of them".to_owned()),
            );
            None
        }
    }
}

fn lower_provisioner(reader: &mut Reader<'_>, provisioner: &Table<'_, '_>, policy: &PolicySpec) -> ProvisionerSpec {
    reader.check_keys(provisioner, PROVISIONER_KEYS);
    let kinds: Vec<(&str, ProvisionerKind)> = ProvisionerKind::all().map(|kind| (kind.name(), kind)).collect();
    let kind = reader.choice(provisioner, "kind", &kinds).unwrap_or_default();
    let network = reader.non_empty_string(provisioner, "network").map(|network| network.value);
    let subnet_text = reader.string(provisioner, "subnet");
    let subnet = subnet_text.as_ref().and_then(|text| reader.cidr(text, &format!("`subnet` of {}", provisioner.what)));
    let image = reader.non_empty_string(provisioner, "image").map(|image| image.value);
    let memory = reader.positive_size(provisioner, "memory");
    let cpus = reader.non_negative_number(provisioner, "cpus");
    if let Some(cpus) = &cpus
        && cpus.value == 0.0
    {
        reader.error(
            cpus.span.clone(),
            format!("`cpus` of {} is 0", provisioner.what),
            Some("give each worker more than 0 CPUs, e.g. `cpus = 0.5`".to_owned()),
        );
    }
    for option in ProvisionerKind::all_options() {
        if provisioner.has(option) && !kind.takes_option(option) {
            let takers: Vec<ProvisionerKind> =
                ProvisionerKind::all().filter(|kind| kind.takes_option(option)).collect();
            let names: Vec<String> = takers.iter().map(|kind| kind.name().to_owned()).collect();
            let kinds: Vec<String> = takers.iter().map(|kind| format!("`kind = \"{kind}\"`")).collect();
            reader.error(
                provisioner.key_span(option),
                format!("`{option}` of {} applies only to the {} provisioner", provisioner.what, names.join(" or ")),
                Some(format!("add {}, or remove `{option}`", kinds.join(" or "))),
            );
        }
    }
    let partition = reader.non_empty_string(provisioner, "partition").map(|partition| partition.value);
    let account = reader.non_empty_string(provisioner, "account").map(|account| account.value);
    let qos = reader.non_empty_string(provisioner, "qos").map(|qos| qos.value);
    let time_limit = reader.positive_duration(provisioner, "time_limit");
    let mut extra_args = Vec::new();
    for argument in reader.string_list(provisioner, "extra_args").unwrap_or_default() {
        let option = argument.value.split('=').next().unwrap_or_default();
        if !argument.value.starts_with('-') {
            reader.error(
                argument.span.clone(),
                format!("`extra_args` of {} holds `{}`, which is not an option", provisioner.what, argument.value),
                Some("write each option with its value in one string, e.g. \"--constraint=avx2\"".to_owned()),
            );
        } else if SLURM_RESERVED_OPTIONS.contains(&option)
            || SLURM_RESERVED_OPTIONS
                .iter()
                .any(|reserved| reserved.len() == 2 && option.starts_with(reserved) && !option.starts_with("--"))
        {
            reader.error(
                argument.span.clone(),
                format!("`extra_args` of {} sets `{option}`, which Mayfly sets itself", provisioner.what),
                Some("Mayfly names, tags, logs and requeues worker jobs itself; remove this option".to_owned()),
            );
        } else {
            extra_args.push(argument.value);
        }
    }
    let spool = reader.non_empty_string(provisioner, "spool").and_then(|spool| {
        let path = std::path::PathBuf::from(&spool.value);
        if path.is_absolute() && !spool.value.contains('\0') {
            return Some(path);
        }
        reader.error(
            spool.span.clone(),
            format!("`spool` of {} is `{}`, which is not an absolute path", provisioner.what, spool.value),
            Some("give a directory every Slurm node sees at the same path, e.g. \"/shared/mayfly/spool\"".to_owned()),
        );
        None
    });
    let mut constraints = Vec::new();
    for constraint in reader.string_list(provisioner, "constraints").unwrap_or_default() {
        let value = constraint.value.trim();
        let operator = ["==", "!="].into_iter().find(|operator| value.contains(operator));
        let well_formed = operator.is_some_and(|operator| {
            let (left, right) = value.split_once(operator).unwrap_or_default();
            !left.trim().is_empty() && !right.trim().is_empty()
        });
        if well_formed {
            constraints.push(value.to_owned());
        } else {
            reader.error(
                constraint.span.clone(),
                format!("`constraints` of {} holds `{}`, which is not a swarm placement constraint", provisioner.what, constraint.value),
                Some("write ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. \"node.labels.gpu==true\" or \"node.role==worker\"".to_owned()),
            );
        }
    }
    if kind.workers_in_subnet() && !policy.networks.is_empty() {
        let allowed: Vec<String> = policy.networks.iter().map(ToString::to_string).collect();
        match (&subnet, &subnet_text) {
            (Some(subnet), Some(text)) if !policy.networks.iter().any(|network| network.contains(*subnet)) => reader
                .error(
                    text.span.clone(),
                    format!("`subnet` {subnet} of {} is outside the networks `[policy]` allows", provisioner.what),
                    Some(format!("choose a subnet inside {}", allowed.join(" or "))),
                ),
            (None, None) => reader.error(
                provisioner.span.clone(),
                format!(
                    "{} names no `subnet`, but `[policy]` restricts workers to {}",
                    provisioner.what,
                    allowed.join(", ")
                ),
                Some(format!("add `subnet = \"...\"` inside {}", allowed.join(" or "))),
            ),
            _ => {}
        }
    }
    ProvisionerSpec {
        kind,
        network,
        subnet,
        image,
        memory,
        cpus: cpus.map(|cpus| cpus.value),
        partition,
        account,
        qos,
        time_limit,
        extra_args,
        spool,
        constraints,
    }
}

fn lower_job_triggers(reader: &mut Reader<'_>, job: &Table<'_, '_>) -> Vec<JobTrigger> {
    let mut triggers = Vec::new();
    let Some(items) = reader.array(job, "triggers", "an array of tables") else {
        return triggers;
    };
    for (index, item) in items.iter().enumerate() {
        let what = format!("trigger #{} of {}", index + 1, job.what);
        let DeValue::Table(entries) = item.get_ref() else {
            reader.error(
                item.span(),
                format!("{what} must be a table, not {}", describe(item.get_ref())),
                Some("write `{ alarm = \"backlog\" }` or `{ schedule = \"cron(0 2 * * *)\" }`".to_owned()),
            );
            continue;
        };
        let table = Table { entries, span: item.span(), what };
        reader.check_keys(&table, JOB_TRIGGER_KEYS);
        let trigger = match (table.has("alarm"), table.has("schedule")) {
            (true, false) => reader.reference(&table, "alarm", ResourceKind::Alarm, "alarm").map(JobTrigger::Alarm),
            (false, true) => reader.schedule(&table, "schedule").map(JobTrigger::Schedule),
            (true, true) => {
                reader.error(
                    item.span(),
                    format!("{} has both `alarm` and `schedule`", table.what),
                    Some("split it into two entries".to_owned()),
                );
                None
            }
            (false, false) => {
                if entries.is_empty() {
                    reader.error(
                        item.span(),
                        format!("{} is empty", table.what),
                        Some("write `{ alarm = \"backlog\" }` or `{ schedule = \"cron(0 2 * * *)\" }`".to_owned()),
                    );
                }
                None
            }
        };
        if let Some(trigger) = trigger {
            if triggers.contains(&trigger) {
                reader.error(
                    item.span(),
                    format!("{} repeats an earlier trigger", table.what),
                    Some("remove the repeated entry".to_owned()),
                );
            } else {
                triggers.push(trigger);
            }
        }
    }
    triggers
}

/// The socket address under `key` of `[api]` (or `default`), and its text for errors.
fn socket_address(
    reader: &mut Reader<'_>,
    table: &Table<'_, '_>,
    key: &str,
    default: std::net::SocketAddr,
) -> (std::net::SocketAddr, Option<Located<String>>) {
    let text = reader.string(table, key);
    let address = match &text {
        Some(text) => match text.value.parse::<std::net::SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                reader.error(
                    text.span.clone(),
                    format!("`{key}` of `[api]` is not a socket address: \"{}\"", text.value),
                    Some(format!(
                        "write an IP address and a port, e.g. \"127.0.0.1:{0}\" or \"0.0.0.0:{0}\"",
                        default.port()
                    )),
                );
                default
            }
        },
        None => default,
    };
    (address, text)
}

/// `[state]`: the state store's URL, password file and CA file. A password in the
/// URL is refused: the file is shared and versioned, a password is not.
pub(crate) fn lower_state(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> StateSpec {
    let Some(table) = reader.table(root, "state", "`[state]`".to_owned()) else {
        return StateSpec::default();
    };
    reader.check_keys(&table, STATE_KEYS);
    let where_instead = "set PGPASSWORD or MAYFLY_STATE_PASSWORD, put it in a .pgpass file (PGPASSFILE or ~/.pgpass, owner-only), \
or name an owner-only file holding it with `password_file = \"...\"` in `[state]`";
    let url = reader.non_empty_string(&table, "url").and_then(|url| {
        let text = url.value.trim();
        let Some((scheme, rest)) = text.split_once(':') else {
            reader.error(
                url.span,
                format!("`url` of `[state]` has no scheme: \"{text}\""),
                Some("write \"sqlite:\" for the embedded store, or \"postgres://USER@HOST:PORT/DATABASE\"".to_owned()),
            );
            return None;
        };
        if url_has_password(scheme, rest) {
            // The span is kept, the text is not shown: it holds a secret.
            reader.secret_error(
                url.span,
                "`url` of `[state]` holds a password, which the architecture file must never hold",
                Some(format!("remove the password from the URL and {where_instead}")),
            );
            return None;
        }
        Some(text.to_owned())
    });
    let password_file = reader.non_empty_string(&table, "password_file").map(|file| file.value);
    let ca_file = reader.non_empty_string(&table, "ca_file").map(|file| file.value);
    StateSpec { url, password_file, ca_file }
}

/// `[storage]`: where the objects of the buckets are. `file:` (or no
/// table) is the project's data directory; `s3://BUCKET/PREFIX` an
/// S3-compatible store, reached with the standard AWS variables. Credentials
/// in the URL are refused: the file is shared and versioned, a secret is not.
pub(crate) fn lower_storage(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> StorageSpec {
    let Some(table) = reader.table(root, "storage", "`[storage]`".to_owned()) else {
        return StorageSpec::default();
    };
    reader.check_keys(&table, STORAGE_KEYS);
    let how = "write \"file:\" for the project's data directory, or \"s3://BUCKET/PREFIX\"";
    let url = reader.non_empty_string(&table, "url").and_then(|url| {
        let text = url.value.trim();
        let scheme = text.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("file") if text.len() == "file:".len() => Some(text.to_owned()),
            Some("file") => {
                reader.error(
                    url.span,
                    format!("`url` of `[storage]` names a directory: \"{text}\""),
                    Some("the local store is always the project's `.mayfly/buckets`, so write just \"file:\"".to_owned()),
                );
                None
            }
            Some("s3") => {
                let rest = text[3..].strip_prefix("//").unwrap_or_default();
                let bucket = rest.split('/').next().unwrap_or_default();
                if bucket.contains('@') || rest.contains('?') {
                    // The span is kept, the text is not shown: it may hold a secret.
                    reader.secret_error(
                        url.span,
                        "`url` of `[storage]` holds credentials or parameters, which the architecture file must never hold",
                        Some("write just \"s3://BUCKET/PREFIX\" and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL, AWS_REGION) in the environment".to_owned()),
                    );
                    None
                } else if bucket.is_empty() {
                    reader.error(url.span, format!("`url` of `[storage]` names no bucket: \"{text}\""), Some(how.to_owned()));
                    None
                } else {
                    Some(text.to_owned())
                }
            }
            _ => {
                reader.error(
                    url.span,
                    format!("`url` of `[storage]` is neither `file:` nor `s3://`: \"{text}\""),
                    Some(how.to_owned()),
                );
                None
            }
        }
    });
    StorageSpec { url }
}

/// `[telemetry]`: where traces are exported (`otlp`, an OTLP/HTTP
/// collector's base URL: `http://HOST:PORT` or `https://…`, no credentials)
/// and how spans show object keys and item ids (`object_keys`).
pub(crate) fn lower_telemetry(reader: &mut Reader<'_>, root: &Table<'_, '_>) -> TelemetrySpec {
    let Some(table) = reader.table(root, "telemetry", "`[telemetry]`".to_owned()) else {
        return TelemetrySpec::default();
    };
    reader.check_keys(&table, TELEMETRY_KEYS);
    let otlp = reader.non_empty_string(&table, "otlp").and_then(|otlp| match check_otlp_endpoint(&otlp.value) {
        Ok(url) => Some(url),
        Err(OtlpEndpointError::Credentials) => {
            // The span is kept, the text is not shown: it may hold a secret.
            reader.secret_error(
                otlp.span,
                "`otlp` of `[telemetry]` holds credentials, which the architecture file must never hold",
                Some("write just \"http://HOST:PORT\" (a collector that needs credentials: put an agent beside Mayfly)".to_owned()),
            );
            None
        }
        Err(problem) => {
            reader.error(
                otlp.span,
                format!("`otlp` of `[telemetry]` {problem}: \"{}\"", otlp.value.trim()),
                Some("write the OTLP/HTTP collector's base URL, e.g. \"http://localhost:4318\"; traces go to its /v1/traces".to_owned()),
            );
            None
        }
    });
    let object_keys = reader.choice(&table, "object_keys", OBJECT_KEYS_IN_SPANS).unwrap_or_default();
    TelemetrySpec { otlp, object_keys }
}

/// Why an OTLP endpoint is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OtlpEndpointError {
    #[error("is neither an http:// nor an https:// URL")]
    Scheme,
    #[error("names no host")]
    NoHost,
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    #[error("holds credentials")]
    Credentials,
    #[error("has a query or a fragment")]
    Query,
}

/// Check an OTLP/HTTP endpoint (`[telemetry] otlp`, or `MAYFLY_OTLP_ENDPOINT`
/// which the host checks the same way); returns it trimmed, without a
/// trailing `/`.
pub fn check_otlp_endpoint(text: &str) -> Result<String, OtlpEndpointError> {
    let text = text.trim();
    let lowered = text.to_ascii_lowercase();
    let rest = if lowered.starts_with("http://") {
        &text["http://".len()..]
    } else if lowered.starts_with("https://") {
        &text["https://".len()..]
    } else {
        return Err(OtlpEndpointError::Scheme);
    };
    if rest.contains(['?', '#']) {
        return Err(OtlpEndpointError::Query);
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(OtlpEndpointError::Credentials);
    }
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal without a port: `[::1]`.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty() || host == "[]" || host.contains(char::is_whitespace) {
        return Err(OtlpEndpointError::NoHost);
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Err(OtlpEndpointError::Port);
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// Whether the part of a URL after `scheme:` carries a password: in its
/// user info (`user:password@`) or as a `password=` parameter.
fn url_has_password(scheme: &str, rest: &str) -> bool {
    let lowered = rest.to_ascii_lowercase();
    let parameter = lowered.split(['?', '&', ' ']).any(|part| part.trim_start().starts_with("password="));
    let user_info = rest
        .strip_prefix("//")
        .and_then(|authority| authority.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .is_some_and(|(user_info, _)| user_info.contains(':'));
    parameter || user_info || (scheme.contains('=') && lowered.contains("password"))
}

fn lower_api(reader: &mut Reader<'_>, root: &Table<'_, '_>, policy: &PolicySpec) -> Option<ApiSpec> {
    let table = reader.table(root, "api", "`[api]`".to_owned())?;
    reader.check_keys(&table, API_KEYS);
    let (listen, listen_text) = socket_address(reader, &table, "listen", ApiSpec::DEFAULT_LISTEN);
    let (aws_listen, aws_listen_text) = socket_address(reader, &table, "aws_listen", ApiSpec::DEFAULT_AWS_LISTEN);
    let aws_domain = reader.string(&table, "aws_domain").map_or(Some(ApiSpec::DEFAULT_AWS_DOMAIN.to_owned()), |domain| {
        if is_domain_name(&domain.value) {
            Some(domain.value.to_ascii_lowercase())
        } else {
            reader.error(
                domain.span.clone(),
                format!("`aws_domain` of `[api]` is not a DNS name: \"{}\"", domain.value),
                Some("write the name clients use for the endpoint, without scheme or port, e.g. \"s3.example.org\"; buckets are then reached as `<bucket>.s3.example.org`".to_owned()),
            );
            None
        }
    });
    let aws_advertise = reader.string(&table, "aws_advertise").and_then(|text| {
        match parse_advertised_endpoint(&text.value) {
            Ok(endpoint) => Some(endpoint),
            Err(problem) => {
                reader.error(
                    text.span.clone(),
                    format!("`aws_advertise` of `[api]` {problem}: \"{}\"", text.value),
                    Some("write the URL job workers on other hosts dial, e.g. \"https://mayfly.example.org:8444\" or \"https://10.77.0.1:8444\"; the API's certificate must name its host".to_owned()),
                );
                None
            }
        }
    });
    let tls = reader.table(&table, "tls", "`[api.tls]`".to_owned()).and_then(|tls| {
        reader.check_keys(&tls, API_TLS_KEYS);
        for key in API_TLS_KEYS {
            if !tls.has(key) {
                reader.missing(&tls, key, format!("add `{key} = \"path/to/{key}.pem\"`"));
            }
        }
        let cert = reader.non_empty_string(&tls, "cert");
        let key = reader.non_empty_string(&tls, "key");
        Some(TlsFiles { cert: cert?.value, key: key?.value })
    });
    // Both endpoints are always TLS; what `tls = "required"` asks off
    // loopback is a certificate that clients on other hosts can check.
    // Mayfly's own names only localhost, except that it is made to name the
    // advertised host, whose clients (job workers) are handed it to check
    // against: so an advertised AWS endpoint passes with it.
    let aws_checkable = aws_advertise.is_some();
    for (address, text, checkable) in
        [(listen, listen_text, false), (aws_listen, aws_listen_text.clone(), aws_checkable)]
    {
        if policy.tls == Requirement::Required && !table.has("tls") && !checkable && !address.ip().is_loopback() {
            let span = text.map_or(table.span.clone(), |text| text.span);
            reader.error(
                span,
                format!(
                    "`[api]` listens on {address} with only Mayfly's self-signed certificate for localhost, \
                     but `[policy]` requires TLS"
                ),
                Some("add `tls = { cert = \"...\", key = \"...\" }` to `[api]` (a certificate naming the host clients dial), or listen on 127.0.0.1".to_owned()),
            );
        }
    }
    if listen == aws_listen && listen.port() != 0 {
        reader.error(
            aws_listen_text.map_or(table.span.clone(), |text| text.span),
            format!("`aws_listen` of `[api]` is {aws_listen}, the address `listen` already uses"),
            Some("give the S3-compatible endpoint a port of its own, e.g. \"127.0.0.1:8444\"".to_owned()),
        );
    }
    let mut routes: Vec<ApiRouteSpec> = Vec::new();
    for route in array_of_tables(reader, &table, "routes", "API route") {
        reader.check_keys(&route, API_ROUTE_KEYS);
        for key in API_ROUTE_KEYS {
            if !route.has(key) {
                reader.missing(
                    &route,
                    key,
                    "write e.g. `{ method = \"POST\", path = \"/charts\", function = \"code-chart\" }`".to_owned(),
                );
            }
        }
        let method = reader.choice(&route, "method", HTTP_METHODS);
        let path = reader.string(&route, "path").and_then(|path| {
            if path.value.starts_with('/') && !path.value.contains(char::is_whitespace) {
                Some(path)
            } else {
                reader.error(
                    path.span.clone(),
                    format!("`path` of {} must start with `/` and hold no spaces: \"{}\"", route.what, path.value),
                    Some("write e.g. \"/charts/{id}\"".to_owned()),
                );
                None
            }
        });
        let function = reader.reference(&route, "function", ResourceKind::Function, "function");
        let (Some(method), Some(path), Some(function)) = (method, path, function) else { continue };
        if routes.iter().any(|earlier| earlier.method == method && earlier.path == path.value) {
            reader.error(
                route.span.clone(),
                format!("{} repeats the method and path of an earlier API route", route.what),
                Some("each method and path may be routed once; remove or change one of them".to_owned()),
            );
        }
        routes.push(ApiRouteSpec { method, path: path.value, function });
    }
    Some(ApiSpec { listen, aws_listen, aws_domain: aws_domain?, aws_advertise, tls, routes })
}

/// `https://HOST:PORT` with an optional trailing `/`: a DNS name, an IPv4
/// address or a bracketed IPv6 address, and a port from 1 to 65535. The
/// error says what is wrong, to follow "`aws_advertise` of `[api]` ".
fn parse_advertised_endpoint(text: &str) -> Result<AdvertisedEndpoint, String> {
    let Some(rest) = text.strip_prefix("https://") else {
        return Err(match text.split_once("://") {
            Some((scheme, _)) => format!("must be an https URL, not {scheme}"),
            None => "must be an https URL".to_owned(),
        });
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("must be just a scheme, a host and a port, without a path or query".to_owned());
    }
    if authority.contains('@') {
        return Err("must not hold a user name or password".to_owned());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or("has an IPv6 address without its closing `]`")?;
        let port = after.strip_prefix(':').ok_or("names no port")?;
        let ip =
            inside.parse::<std::net::Ipv6Addr>().map_err(|_| format!("has no IPv6 address in brackets: `{inside}`"))?;
        (AdvertisedHost::Ip(std::net::IpAddr::V6(ip)), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or("names no port")?;
        let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            AdvertisedHost::Ip(std::net::IpAddr::V4(ip))
        } else if is_domain_name(host) && host.contains(|c: char| c.is_ascii_alphabetic()) {
            AdvertisedHost::Dns(host.to_ascii_lowercase())
        } else if host.is_empty() {
            return Err("names no host".to_owned());
        } else {
            return Err(format!("has a host that is neither a DNS name nor an IP address: `{host}`"));
        };
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(0) => return Err("has port 0; workers must be told a fixed port".to_owned()),
        Ok(port) => port,
        Err(_) if port.is_empty() => return Err("names no port".to_owned()),
        Err(_) => return Err(format!("has a port that is not a number from 1 to 65535: `{port}`")),
    };
    Ok(AdvertisedEndpoint { host, port })
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens,
/// not all-numeric (an IP address is not a domain).
pub(crate) fn is_domain_name(name: &str) -> bool {
    let label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253
        && name.split('.').all(label)
        && !name.split('.').all(|label| label.bytes().all(|b| b.is_ascii_digit()))
}

fn check_dead_letter_cycles(reader: &mut Reader<'_>, checks: &CrossChecks) {
    let mut reported: BTreeSet<Name> = BTreeSet::new();
    for (start, (target, span)) in &checks.dead_letters {
        if start == target {
            reader.error(
                span.clone(),
                format!("queue `{start}` is its own dead-letter queue"),
                Some(format!(
                    "name another queue, e.g. `dead_letter = \"{start}-dlq\"` with a `[queues.{start}-dlq]` table"
                )),
            );
            reported.insert(start.clone());
            continue;
        }
        if reported.contains(start) {
            continue;
        }
        let mut path = vec![start.clone()];
        let mut current = target.clone();
        while let Some((next, _)) = checks.dead_letters.get(&current) {
            if current == *start {
                break;
            }
            if path.contains(&current) || reported.contains(&current) {
                // A cycle not through `start`, reported from one of its own members.
                path.clear();
                break;
            }
            path.push(current.clone());
            current = next.clone();
        }
        if current != *start || path.is_empty() {
            continue;
        }
        let cycle: Vec<String> = path.iter().chain(std::iter::once(start)).map(ToString::to_string).collect();
        reader.error(
            span.clone(),
            format!("dead-letter queues form a cycle: {}", cycle.join(" → ")),
            Some(
                "a dead-letter queue must not pass messages on in a loop; remove `dead_letter` from one of them"
                    .to_owned(),
            ),
        );
        reported.extend(path);
    }
}

fn check_required_tags(reader: &mut Reader<'_>, project_tags: &BTreeMap<String, String>, checks: &CrossChecks) {
    for required in &checks.required_tag_spans {
        if project_tags.contains_key(&required.value) {
            continue;
        }
        let lacking: Vec<&str> = checks
            .tagged_resources
            .iter()
            .filter(|(_, tags)| !tags.contains_key(&required.value))
            .map(|(what, _)| what.as_str())
            .collect();
        if lacking.is_empty() {
            continue;
        }
        reader.error(
            required.span.clone(),
            format!(
                "`[policy]` requires tag `{}` on every resource; it is missing from the project tags and from {}",
                required.value,
                lacking.join(", ")
            ),
            Some(format!(
                "add `{} = \"...\"` to the project `tags` to give it to every resource, or to each resource's `tags`",
                required.value
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_a_provisioner_kind_takes_is_a_provisioner_key_the_spec_reads() {
        for option in ProvisionerKind::all_options() {
            assert!(PROVISIONER_KEYS.contains(&option), "`{option}` is taken by a provisioner kind but not read");
        }
    }

    #[test]
    fn conditions() {
        let parsed = parse_condition(">= 500 for 1m").unwrap();
        assert_eq!(parsed.comparator, Comparator::GreaterOrEqual);
        assert_eq!(parsed.threshold, 500.0);
        assert_eq!(parsed.period, Duration::from_secs(60));
        assert_eq!(parse_condition("> 5% for 10m").unwrap().threshold, 0.05);
        let age = parse_condition("> 15m for 1m").unwrap();
        assert_eq!((age.threshold, age.threshold_unit), (900.0, ThresholdUnit::Duration));
        assert_eq!(parse_condition("<0.5 for 30s").unwrap().comparator, Comparator::Less);
        for bad in [
            "500 for 1m",
            ">= lots for 1m",
            ">= 500",
            ">= 500 during 1m",
            ">= 500 for 0s",
            ">= -1 for 1m",
            ">= 5 for 1 minute",
        ] {
            assert!(parse_condition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_advertised_host_is_a_dns_name_or_an_ip_address() {
        assert_eq!(
            AdvertisedHost::parse("Node-7.Cluster.org"),
            Ok(AdvertisedHost::Dns("node-7.cluster.org".to_owned()))
        );
        assert_eq!(AdvertisedHost::parse("10.252.0.1").unwrap().url(9), "https://10.252.0.1:9");
        assert_eq!(AdvertisedHost::parse("[fd00::1]").unwrap().url(9), "https://[fd00::1]:9");
        assert_eq!(AdvertisedHost::parse("fd00::1").unwrap().url(9), "https://[fd00::1]:9");
        for bad in ["", "https://node-7", "node 7", "node-7:8443", "10.0.0.1/24", "1.2.3"] {
            assert!(AdvertisedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn advertised_endpoints_are_a_host_and_a_port_over_https() {
        let parsed = |text: &str| parse_advertised_endpoint(text).map(|endpoint| endpoint.url());
        assert_eq!(parsed("https://Mayfly.Example.org:8444/"), Ok("https://mayfly.example.org:8444".to_owned()));
        assert_eq!(parsed("https://10.77.0.1:8444"), Ok("https://10.77.0.1:8444".to_owned()));
        assert_eq!(parsed("https://[fd00::1]:8444"), Ok("https://[fd00::1]:8444".to_owned()));
        let host = parse_advertised_endpoint("https://[fd00::1]:8444").unwrap().host;
        assert_eq!(host, AdvertisedHost::Ip("fd00::1".parse().unwrap()));
        for bad in [
            "mayfly.example.org:8444",
            "http://mayfly.example.org:8444",
            "https://mayfly.example.org",
            "https://mayfly.example.org:",
            "https://:8444",
            "https://mayfly.example.org:0",
            "https://mayfly.example.org:70000",
            "https://mayfly.example.org:8444/path",
            "https://user:secret@mayfly.example.org:8444",
            "https://fd00::1:8444",
            "https://[fd00::1:8444",
            "https://10.77.0:8444",
        ] {
            assert!(parse_advertised_endpoint(bad).is_err(), "{bad}");
        }
    }
}
