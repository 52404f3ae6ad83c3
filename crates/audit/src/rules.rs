//! The audit's rules: each a named, pure function from an [`Inventory`] and
//! the `[policy]` to findings. No IO and no clock: the instant is the
//! inventory's `taken_at`.
//!
//! | rule | what it checks |
//! |---|---|
//! | `required-tags` | every resource carries every tag of `require_tags` |
//! | `encryption` | buckets and the state store's payloads are encrypted when `encryption = "required"` |
//! | `tls` | the API off loopback has TLS |
//! | `network-boundary` | live resources' addresses, networks' subnets and docker jobs' subnets lie inside `networks` |
//! | `orphaned-resource` | no live resource or network of a finished or unknown run, nor one whose owner process is gone |
//! | `run-coordinator` | every running (or finishing) run has a live coordinator |
//! | `run-deadline` | no run goes on past its deadline |
//! | `run-budget` | no run costs more than its budget |
//! | `log-retention` | no sealed log is older than `log_retention` or its bucket's `retention` |
//! | `message-integrity` | no queue message was set aside because it failed its integrity check |
//!
//! FIXME: coordinator ↔ worker mutual TLS is not checked: run records do not
//! say how a coordinator serves its workers yet. Once they do, `tls` should
//! flag runs whose workers were served without it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mayfly_core::format_duration;
use mayfly_core::run::RunStatus;
use mayfly_fleet::ProvisionerKind;
use mayfly_spec::{Ipv4Cidr, PolicySpec, Requirement};
use mayfly_state::{AuditFinding, AuditSeverity};

use crate::inventory::{Inventory, JobEntry, RunEntry, TagMap};

/// Settings of the checks that are not policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Finished runs that overran their deadline or budget are reported
    /// (as warnings) while they finished at most this long before the audit;
    /// older ones are history, kept in the audits recorded at the time.
    pub finished_run_lookback: Duration,
}

impl AuditSettings {
    pub const DEFAULT_FINISHED_RUN_LOOKBACK: Duration = Duration::from_secs(7 * 86_400);
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { finished_run_lookback: Self::DEFAULT_FINISHED_RUN_LOOKBACK }
    }
}

/// What a rule reads.
pub struct RuleInput<'a> {
    pub inventory: &'a Inventory,
    pub policy: &'a PolicySpec,
    pub settings: &'a AuditSettings,
}

/// A named check.
pub struct Rule {
    /// Stable, kebab-case; the `rule` of its findings.
    pub name: &'static str,
    /// One line for documentation and `--help`.
    pub summary: &'static str,
    pub check: fn(&RuleInput<'_>) -> Vec<AuditFinding>,
}

/// Every rule, in the order they run.
pub const RULES: &[Rule] = &[
    Rule {
        name: "required-tags",
        summary: "every resource carries the tags `[policy].require_tags` lists",
        check: required_tags,
    },
    Rule {
        name: "encryption",
        summary: "buckets and the state store's payloads are encrypted at rest",
        check: encryption,
    },
    Rule { name: "tls", summary: "the API is served over TLS when it listens off loopback", check: tls },
    Rule {
        name: "network-boundary",
        summary: "workers, networks and docker subnets lie inside `[policy].networks`",
        check: network_boundary,
    },
    Rule {
        name: "orphaned-resource",
        summary: "no process, container or network of a finished or unknown run, or of a dead owner, is left",
        check: orphaned_resources,
    },
    Rule {
        name: "run-coordinator",
        summary: "every running or finishing run has a live coordinator",
        check: run_coordinator,
    },
    Rule { name: "run-deadline", summary: "no run goes on past its deadline", check: run_deadline },
    Rule { name: "run-budget", summary: "no run costs more than its budget", check: run_budget },
    Rule {
        name: "log-retention",
        summary: "no sealed log is older than `[policy].log_retention` or its bucket's `retention`",
        check: log_retention,
    },
    Rule {
        name: "message-integrity",
        summary: "no queue message was set aside because it failed its integrity check",
        check: message_integrity,
    },
];

/// Every rule over `inventory`: violations first, then warnings, then notices
/// (each group in rule order, then resource order).
pub fn check(inventory: &Inventory, policy: &PolicySpec, settings: &AuditSettings) -> Vec<AuditFinding> {
    let input = RuleInput { inventory, policy, settings };
    let mut findings: Vec<AuditFinding> = RULES.iter().flat_map(|rule| (rule.check)(&input)).collect();
    findings.sort_by_key(|finding| finding.severity);
    findings
}

fn finding(
    rule: &str,
    severity: AuditSeverity,
    resource_kind: &str,
    resource: impl Into<String>,
    message: String,
    remedy: String,
) -> AuditFinding {
    AuditFinding {
        rule: rule.to_owned(),
        severity,
        resource_kind: resource_kind.to_owned(),
        resource: resource.into(),
        message,
        remedy,
    }
}

/// A duration rounded down to its largest unit, for ages and overruns: `95d`, `3h`, `12m`, `5s`.
fn approximate(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        86_400.. => format!("{}d", seconds / 86_400),
        3_600.. => format!("{}h", seconds / 3_600),
        60.. => format!("{}m", seconds / 60),
        _ => format!("{seconds}s"),
    }
}

fn quoted_list(items: &[&str]) -> String {
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}

fn cidr_list(networks: &[Ipv4Cidr]) -> String {
    networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

// --- required-tags ----------------------------------------------------------------

fn required_tags(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let required = &input.policy.require_tags;
    if required.is_empty() {
        return Vec::new();
    }
    let inventory = input.inventory;
    let declared = "add them to the project `tags` in mayfly.toml (every resource carries those) or to this resource's `tags`, then `mayfly deploy`";
    let project_only = |what: &str| {
        format!(
            "{what} carry the project tags only: add them to the project `tags` in mayfly.toml, then `mayfly deploy`"
        )
    };
    let mut resources: Vec<(&str, String, &TagMap, String)> = Vec::new();
    for bucket in &inventory.buckets {
        let remedy = match &bucket.declared_tags {
            Some(declared_tags) if required.iter().all(|tag| declared_tags.contains_key(tag)) => {
                // FIXME: deploy creates a bucket with its tags and never updates them.
                "mayfly.toml declares them, but a bucket keeps the tags it was created with (deploy does not update them yet): re-create the bucket to carry them".to_owned()
            }
            Some(_) => declared.to_owned(),
            None => "the bucket is not in the deployed mayfly.toml: declare it with its tags, or remove it".to_owned(),
        };
        resources.push(("bucket", bucket.name.to_string(), &bucket.tags, remedy));
    }
    for queue in &inventory.queues {
        let remedy = if queue.internal { project_only("Mayfly's internal queues") } else { declared.to_owned() };
        resources.push(("queue", queue.name.to_string(), &queue.tags, remedy));
    }
    for function in &inventory.functions {
        resources.push(("function", function.name.to_string(), &function.tags, declared.to_owned()));
    }
    for job in &inventory.jobs {
        resources.push(("job", job.name.to_string(), &job.tags, declared.to_owned()));
    }
    for live in &inventory.live {
        let remedy = format!("{} and start the run again", project_only("coordinators and workers"));
        resources.push((live.kind.as_str(), live.id.clone(), &live.tags, remedy));
    }
    for network in &inventory.networks {
        resources.push(("network", network.name.clone(), &network.tags, project_only("networks")));
    }
    resources
        .into_iter()
        .filter_map(|(kind, name, tags, remedy)| {
            let missing: Vec<&str> =
                required.iter().filter(|tag| !tags.contains_key(tag.as_str())).map(String::as_str).collect();
            (!missing.is_empty()).then(|| {
                finding(
                    "required-tags",
                    AuditSeverity::Violation,
                    kind,
                    name,
                    format!("lacks tag(s) {} that `[policy].require_tags` requires", quoted_list(&missing)),
                    remedy,
                )
            })
        })
        .collect()
}

// --- encryption -------------------------------------------------------------------

fn encryption(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let required = input.policy.encryption == Requirement::Required;
    let (severity, because) = if required {
        (AuditSeverity::Violation, ", but `[policy]` requires encryption")
    } else {
        (AuditSeverity::Notice, " (`[policy]` allows it: `encryption = \"optional\"`)")
    };
    let mut findings = Vec::new();
    for bucket in &input.inventory.buckets {
        if !bucket.encrypted {
            findings.push(finding(
                "encryption",
                severity,
                "bucket",
                bucket.name.to_string(),
                format!("objects of bucket `{}` are written unencrypted{because}", bucket.name),
                "open the project's buckets with its keyring (the `mayfly` command always does), then encrypt what is stored with `mayfly keys rewrap --encrypt-plaintext`".to_owned(),
            ));
        } else if bucket.declared_encryption == Some(false) {
            // FIXME: the per-bucket setting is not honoured: every bucket is opened with the keyring.
            let remedy = if required {
                "remove `encryption = false` from the bucket in mayfly.toml"
            } else {
                "nothing to do: its objects are encrypted regardless (the per-bucket setting is not honoured yet)"
            };
            findings.push(finding(
                "encryption",
                severity,
                "bucket",
                bucket.name.to_string(),
                format!("bucket `{}` declares `encryption = false`{because}", bucket.name),
                remedy.to_owned(),
            ));
        }
    }
    let store = &input.inventory.state_store;
    if !store.payloads_encrypted {
        findings.push(finding(
            "encryption",
            severity,
            "state-store",
            store.location.clone(),
            format!("the {} state store keeps message bodies, item payloads, results and logs in plaintext{because}", store.backend),
            "open the state store with the project's keyring (the `mayfly` command always does): the first encrypted open encrypts what it holds".to_owned(),
        ));
    }
    findings
}

// --- tls ----------------------------------------------------------------------------

fn tls(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let Some(api) = &input.inventory.api else { return Vec::new() };
    if api.tls || api.listen.ip().is_loopback() {
        return Vec::new();
    }
    let severity = match input.policy.tls {
        Requirement::Required => AuditSeverity::Violation,
        Requirement::Optional => AuditSeverity::Warning,
    };
    let because = match input.policy.tls {
        Requirement::Required => ", but `[policy]` requires TLS",
        Requirement::Optional => "; clients on other hosts cannot check it",
    };
    vec![finding(
        "tls",
        severity,
        "api",
        api.listen.to_string(),
        format!("the API listens on {} with only Mayfly's self-signed certificate for localhost{because}", api.listen),
        "add `tls = { cert = \"…\", key = \"…\" }` to `[api]`, or listen on loopback (`127.0.0.1:…`), then `mayfly deploy`"
            .to_owned(),
    )]
}

// --- network-boundary ------------------------------------------------------------

/// The IPv4 address in `address` (`10.77.1.5`, `10.77.1.5:8080`, `10.77.1.5/24`).
fn parse_ipv4(address: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
    }
    if let Ok(SocketAddr::V4(socket)) = address.parse::<SocketAddr>() {
        return Some(*socket.ip());
    }
    address.split_once('/').and_then(|(ip, _)| ip.parse().ok())
}

fn inside(networks: &[Ipv4Cidr], address: Ipv4Addr) -> bool {
    let host: Option<Ipv4Cidr> = format!("{address}/32").parse().ok();
    host.is_some_and(|host| networks.iter().any(|network| network.contains(host)))
}

fn network_boundary(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let allowed = &input.policy.networks;
    if allowed.is_empty() {
        return Vec::new();
    }
    let allowed_list = cidr_list(allowed);
    let mut findings = Vec::new();
    for live in &input.inventory.live {
        let what = live.role.as_deref().unwrap_or("resource");
        match live.address.as_deref() {
            Some(address) => match parse_ipv4(address) {
                Some(ip) if inside(allowed, ip) => {}
                Some(ip) => findings.push(finding(
                    "network-boundary",
                    AuditSeverity::Violation,
                    &live.kind,
                    live.id.clone(),
                    format!("{what} at {ip} is outside the networks `[policy]` allows ({allowed_list})"),
                    format!("stop it (`mayfly audit --reap` if its run is over) and give its job a `subnet` inside {allowed_list}"),
                )),
                None => findings.push(finding(
                    "network-boundary",
                    AuditSeverity::Violation,
                    &live.kind,
                    live.id.clone(),
                    format!("{what} has address `{address}`, which is not an IPv4 address inside {allowed_list}"),
                    format!("run it on a network with a subnet inside {allowed_list}"),
                )),
            },
            None if live.role.as_deref() == Some("worker") => findings.push(finding(
                "network-boundary",
                AuditSeverity::Warning,
                &live.kind,
                live.id.clone(),
                format!(
                    "worker runs as a {} on the host's own network, outside the boundaries `[policy].networks` draws ({allowed_list})",
                    live.kind
                ),
                format!("run the job with `provisioner = {{ kind = \"docker\", subnet = \"…\" }}` inside {allowed_list}"),
            )),
            None => {}
        }
    }
    for network in &input.inventory.networks {
        for subnet in network.subnets.iter().filter(|subnet| !allowed.iter().any(|network| network.contains(**subnet)))
        {
            findings.push(finding(
                "network-boundary",
                AuditSeverity::Violation,
                "network",
                network.name.clone(),
                format!(
                    "network `{}` has subnet {subnet}, outside the networks `[policy]` allows ({allowed_list})",
                    network.name
                ),
                format!("remove the network and give the jobs using it a `subnet` inside {allowed_list}"),
            ));
        }
    }
    // Jobs whose provisioner kind puts workers in the job's subnet, as the registry says.
    let in_subnet =
        |job: &&JobEntry| ProvisionerKind::named(&job.provisioner).is_some_and(|kind| kind.workers_in_subnet());
    for job in input.inventory.jobs.iter().filter(in_subnet) {
        let outside = match job.subnet {
            Some(subnet) => {
                (!allowed.iter().any(|network| network.contains(subnet))).then(|| format!("subnet {subnet}"))
            }
            None => Some("no subnet".to_owned()),
        };
        if let Some(outside) = outside {
            findings.push(finding(
                "network-boundary",
                AuditSeverity::Violation,
                "job",
                job.name.to_string(),
                format!(
                    "job `{}` runs {} workers on {outside}, not inside the networks `[policy]` allows ({allowed_list})",
                    job.name, job.provisioner
                ),
                format!("set the job's `provisioner.subnet` inside {allowed_list}, then `mayfly deploy`"),
            ));
        }
    }
    findings
}

// --- orphaned-resource ------------------------------------------------------------

/// Why a resource tagged with `run` should not exist any more, if it should not.
fn orphaned_because(inventory: &Inventory, run: &str) -> Option<String> {
    match inventory.run(run) {
        None => Some(format!("belongs to run `{run}`, which this project has no record of")),
        Some(record) if record.status.is_finished() => Some(format!(
            "belongs to run `{run}`, which ended {}{}",
            record.status.as_str(),
            record.finished_at.map(|at| format!(" at {}", at.to_rfc3339())).unwrap_or_default()
        )),
        Some(_) => None,
    }
}

fn orphaned_resources(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let inventory = input.inventory;
    let mut findings = Vec::new();
    for live in &inventory.live {
        if live.run.is_none() && live.owner_process_gone {
            let what = live.role.as_deref().unwrap_or(&live.kind);
            findings.push(finding(
                "orphaned-resource",
                AuditSeverity::Violation,
                &live.kind,
                live.id.clone(),
                format!("{what} {} is still there but the Mayfly process that started it is gone", live.kind),
                "`mayfly ps --reap` removes it (so does `mayfly up` every 30 s)".to_owned(),
            ));
        }
        let Some(run) = &live.run else { continue };
        if let Some(because) = orphaned_because(inventory, run) {
            let what = live.role.as_deref().unwrap_or(&live.kind);
            findings.push(finding(
                "orphaned-resource",
                AuditSeverity::Violation,
                &live.kind,
                live.id.clone(),
                format!("{what} {} is still running but {because}", live.kind),
                "`mayfly audit --reap` stops it (so does `mayfly ps --reap`, and `mayfly up` every 30 s)".to_owned(),
            ));
        }
    }
    for network in &inventory.networks {
        let Some(run) = &network.run else { continue };
        if let Some(because) = orphaned_because(inventory, run) {
            findings.push(finding(
                "orphaned-resource",
                AuditSeverity::Violation,
                "network",
                network.name.clone(),
                format!("network `{}` still exists but {because}", network.name),
                format!("remove it (`docker network rm {}`) once no container uses it", network.name),
            ));
        }
    }
    findings
}

// --- run-coordinator -----------------------------------------------------------------

/// The roles of the process that drives a run: its coordinator, or for a
/// Docker job the host broker whose container is the coordinator.
const COORDINATOR_ROLES: [&str; 2] = ["coordinator", "broker"];

/// A run that is `running` or `finishing` with no live coordinator stays so
/// for ever unless something resumes it: nothing renews its lease, nothing
/// ends it. (A `requested` run is not checked: its first coordinator may still
/// be starting, and the control plane starts one after a grace period.)
fn run_coordinator(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let inventory = input.inventory;
    let mut findings = Vec::new();
    for run in &inventory.runs {
        if !matches!(run.status, RunStatus::Running | RunStatus::Finishing) {
            continue;
        }
        let coordinated = inventory.live.iter().any(|live| {
            live.run.as_deref() == Some(run.id.as_str())
                && live.role.as_deref().is_some_and(|role| COORDINATOR_ROLES.contains(&role))
        });
        if coordinated {
            continue;
        }
        let workers = inventory.live.iter().filter(|live| live.run.as_deref() == Some(run.id.as_str())).count();
        findings.push(finding(
            "run-coordinator",
            AuditSeverity::Violation,
            "run",
            run.id.clone(),
            format!(
                "run of job `{}` is {} but no coordinator of it is alive ({workers} other process(es) of the run are); {} of {} item(s) are unprocessed and nothing will finish them",
                run.job,
                run.status.as_str(),
                unprocessed(run),
                run.items.total
            ),
            "`mayfly up` resumes it within a lease period (tears down what is left of its fleet and starts a new coordinator), as a foreground `mayfly run` of it does; or cancel it (`POST /v1/runs/RUN/cancel`)".to_owned(),
        ));
    }
    findings
}

// --- run-deadline and run-budget -------------------------------------------------

/// Whether a finished run is recent enough to report.
fn recently_finished(input: &RuleInput<'_>, run: &RunEntry) -> bool {
    run.finished_at.is_some_and(|finished| {
        input.inventory.taken_at.duration_since(finished) <= input.settings.finished_run_lookback
    })
}

fn unprocessed(run: &RunEntry) -> u64 {
    run.items.total.saturating_sub(run.items.done + run.items.dead_lettered)
}

/// How many of a stopped run's unprocessed items went back to their queue, if any.
fn returned_to_queue(run: &RunEntry) -> String {
    match run.items.returned {
        0 => String::new(),
        returned => format!(" ({returned} back in their queue for a later run)"),
    }
}

fn run_deadline(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let now = input.inventory.taken_at;
    let mut findings = Vec::new();
    for run in &input.inventory.runs {
        if !run.status.is_finished() && now > run.deadline {
            findings.push(finding(
                "run-deadline",
                AuditSeverity::Violation,
                "run",
                run.id.clone(),
                format!(
                    "run of job `{}` is still {} {} after its deadline {}",
                    run.job,
                    run.status.as_str(),
                    approximate(now.duration_since(run.deadline)),
                    run.deadline.to_rfc3339()
                ),
                "its coordinator should have ended it: check `mayfly ps`; if none is running, `mayfly up` starts one that ends the run".to_owned(),
            ));
        } else if run.status == RunStatus::DeadlineExceeded && recently_finished(input, run) {
            findings.push(finding(
                "run-deadline",
                AuditSeverity::Warning,
                "run",
                run.id.clone(),
                format!(
                    "run of job `{}` was stopped at its deadline {} with {} of {} item(s) unprocessed{}",
                    run.job,
                    run.deadline.to_rfc3339(),
                    unprocessed(run),
                    run.items.total,
                    returned_to_queue(run)
                ),
                "raise the job's `deadline`, or process the rest in a new run (`mayfly reconcile JOB` for a bucket source)".to_owned(),
            ));
        }
    }
    findings
}

fn run_budget(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let mut findings = Vec::new();
    for run in &input.inventory.runs {
        let Some(budget) = run.budget else { continue };
        let over = run.estimated_cost > budget;
        if !run.status.is_finished() && over {
            findings.push(finding(
                "run-budget",
                AuditSeverity::Violation,
                "run",
                run.id.clone(),
                format!(
                    "run of job `{}` is still {} at an estimated cost of {:.4}, over its budget of {budget:.4}",
                    run.job,
                    run.status.as_str(),
                    run.estimated_cost
                ),
                "its coordinator should have stopped it: check `mayfly ps`; raise the job's `budget` if the cost is expected".to_owned(),
            ));
        } else if run.status.is_finished()
            && (over || run.status == RunStatus::BudgetExceeded)
            && recently_finished(input, run)
        {
            findings.push(finding(
                "run-budget",
                AuditSeverity::Warning,
                "run",
                run.id.clone(),
                format!(
                    "run of job `{}` ended {} at an estimated cost of {:.4} against its budget of {budget:.4}, with {} of {} item(s) unprocessed{}",
                    run.job,
                    run.status.as_str(),
                    run.estimated_cost,
                    unprocessed(run),
                    run.items.total,
                    returned_to_queue(run)
                ),
                "raise the job's `budget` (within `[policy].max_run_cost`) or make items cheaper; process the rest in a new run".to_owned(),
            ));
        }
    }
    findings
}

// --- log-retention ------------------------------------------------------------------

fn log_retention(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    let inventory = input.inventory;
    let mut findings = Vec::new();
    for log in &inventory.sealed_logs {
        let bucket_retention =
            inventory.buckets.iter().find(|bucket| bucket.name == log.bucket).and_then(|b| b.retention);
        let limit = match (input.policy.log_retention, bucket_retention) {
            (Some(policy), Some(bucket)) if bucket < policy => {
                (bucket, format!("bucket `{}`'s `retention`", log.bucket))
            }
            (Some(policy), _) => (policy, "`[policy].log_retention`".to_owned()),
            (None, Some(bucket)) => (bucket, format!("bucket `{}`'s `retention`", log.bucket)),
            (None, None) => continue,
        };
        let age = inventory.taken_at.duration_since(log.stored_at);
        if age > limit.0 {
            findings.push(finding(
                "log-retention",
                AuditSeverity::Violation,
                "object",
                format!("{}/{}", log.bucket, log.key),
                format!(
                    "sealed log `{}/{}` is {} old, older than the {} of {}",
                    log.bucket,
                    log.key,
                    approximate(age),
                    format_duration(limit.0),
                    limit.1
                ),
                format!(
                    "`mayfly prune` (or a running `mayfly up`, every minute) deletes it; or now: `mayfly rm {}/{}`",
                    log.bucket, log.key
                ),
            ));
        }
    }
    findings
}

#[cfg(test)]
mod tests;

// --- message-integrity ----------------------------------------------------------------

fn message_integrity(input: &RuleInput<'_>) -> Vec<AuditFinding> {
    input
        .inventory
        .damaged_messages
        .iter()
        .map(|message| {
            let place = if message.queue.as_str() == message.source_queue {
                format!("set aside in queue `{}` (it has no dead-letter queue)", message.queue)
            } else {
                format!("received from queue `{}` and moved to its dead-letter queue `{}`", message.source_queue, message.queue)
            };
            finding(
                "message-integrity",
                AuditSeverity::Warning,
                "message",
                format!("{}/{}", message.queue, message.message_id),
                format!("message {} failed its integrity check and was {place}: {}", message.message_id, message.reason),
                "restore the message from a backup of the state store or resend it, then delete it from the queue; look for what changed the state file".to_owned(),
            )
        })
        .collect()
}
