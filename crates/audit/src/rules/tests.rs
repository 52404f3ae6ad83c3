//! Table-driven cases for every rule: an inventory and a policy in, the
//! findings (rule, severity, resource) out, and the words a reader needs in
//! the message.

use std::time::Duration;

use mayfly_core::run::RunStatus;
use mayfly_core::{Name, Timestamp};
use mayfly_spec::{PolicySpec, Requirement};
use mayfly_state::{AuditSeverity, RunItemCounts};

use super::{AuditSettings, RULES, check};
use crate::inventory::*;

const NOW: Timestamp = Timestamp(1_800_000_000_000);
const DAY: Duration = Duration::from_secs(86_400);

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn tags(pairs: &[(&str, &str)]) -> TagMap {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn ago(duration: Duration) -> Timestamp {
    Timestamp(NOW.as_millis() - duration.as_millis() as i64)
}

fn inventory() -> Inventory {
    Inventory::empty(name("chart-coding"), NOW)
}

fn bucket(bucket: &str, bucket_tags: &[(&str, &str)]) -> BucketEntry {
    BucketEntry {
        name: name(bucket),
        tags: tags(bucket_tags),
        owner: None,
        declared_tags: Some(tags(bucket_tags)),
        encrypted: true,
        declared_encryption: Some(true),
        retention: None,
    }
}

fn queue(queue: &str, queue_tags: &[(&str, &str)], internal: bool) -> QueueEntry {
    QueueEntry { name: name(queue), tags: tags(queue_tags), owner: None, internal }
}

fn live(id: &str, role: &str, run: Option<&str>, address: Option<&str>) -> LiveEntry {
    let mut live_tags = tags(&[("owner", "clinical"), ("mayfly.role", role)]);
    if let Some(run) = run {
        live_tags.insert("mayfly.run".into(), run.into());
    }
    LiveEntry {
        provisioner: "local".into(),
        kind: if address.is_some() { "container" } else { "process" }.into(),
        id: id.into(),
        role: Some(role.into()),
        run: run.map(str::to_owned),
        worker: None,
        tags: live_tags,
        owner: Some("clinical".into()),
        owner_process_gone: false,
        address: address.map(str::to_owned),
        started_at: Some(ago(Duration::from_secs(60))),
    }
}

fn network(network: &str, subnet: &str, run: Option<&str>) -> NetworkEntry {
    NetworkEntry {
        provider: "docker".into(),
        id: format!("id-{network}"),
        name: network.into(),
        subnets: vec![subnet.parse().unwrap()],
        tags: tags(&[("owner", "clinical")]),
        owner: Some("clinical".into()),
        run: run.map(str::to_owned),
    }
}

fn job(job: &str, provisioner: &str, subnet: Option<&str>) -> JobEntry {
    JobEntry {
        name: name(job),
        tags: tags(&[("owner", "clinical")]),
        owner: Some("clinical".into()),
        provisioner: provisioner.into(),
        network: subnet.map(|_| "phi".to_owned()),
        subnet: subnet.map(|s| s.parse().unwrap()),
        logs: None,
    }
}

fn run(id: &str, status: RunStatus) -> RunEntry {
    RunEntry {
        id: id.into(),
        job: name("nightly"),
        status,
        trigger: "manual".into(),
        created_at: ago(Duration::from_secs(3600)),
        finished_at: status.is_finished().then(|| ago(Duration::from_secs(60))),
        deadline: NOW.saturating_add(Duration::from_secs(3600)),
        budget: None,
        estimated_cost: 0.0,
        items: RunItemCounts { total: 10, done: 10, ..RunItemCounts::default() },
    }
}

/// `entry`, and a live coordinator of it.
fn coordinated(inventory: &mut Inventory, entry: RunEntry) {
    inventory.live.push(live(&format!("pid:c-{}:1", entry.id), "coordinator", Some(&entry.id), None));
    inventory.runs.push(entry);
}

fn sealed_log(key: &str, age: Duration) -> SealedLogEntry {
    SealedLogEntry { bucket: name("logs"), key: key.into(), size: 100, stored_at: ago(age) }
}

fn policy(build: impl FnOnce(&mut PolicySpec)) -> PolicySpec {
    let mut policy = PolicySpec::default();
    build(&mut policy);
    policy
}

/// One case: what goes in, which findings come out (rule, severity, resource)
/// and words each message must hold.
struct Case {
    name: &'static str,
    policy: PolicySpec,
    inventory: Inventory,
    expected: Vec<(&'static str, AuditSeverity, &'static str)>,
    message_holds: Vec<&'static str>,
}

fn case(name: &'static str, policy: PolicySpec, build: impl FnOnce(&mut Inventory)) -> Case {
    let mut inventory = inventory();
    build(&mut inventory);
    Case { name, policy, inventory, expected: Vec::new(), message_holds: Vec::new() }
}

impl Case {
    fn finds(mut self, rule: &'static str, severity: AuditSeverity, resource: &'static str) -> Case {
        self.expected.push((rule, severity, resource));
        self
    }

    fn saying(mut self, words: &'static str) -> Case {
        self.message_holds.push(words);
        self
    }
}

fn run_cases(cases: Vec<Case>) {
    for case in cases {
        let findings = check(&case.inventory, &case.policy, &AuditSettings::default());
        let got: Vec<(&str, AuditSeverity, &str)> =
            findings.iter().map(|f| (f.rule.as_str(), f.severity, f.resource.as_str())).collect();
        assert_eq!(got, case.expected, "case `{}`: {findings:#?}", case.name);
        let text: String = findings.iter().map(|f| format!("{} {}\n", f.message, f.remedy)).collect();
        for words in case.message_holds {
            assert!(text.contains(words), "case `{}`: `{words}` not in\n{text}", case.name);
        }
        for finding in &findings {
            assert!(!finding.message.is_empty() && !finding.remedy.is_empty(), "case `{}`: {finding:?}", case.name);
        }
    }
}

#[test]
fn rule_names_are_unique_and_documented() {
    let mut names: Vec<&str> = RULES.iter().map(|rule| rule.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RULES.len());
    assert!(RULES.iter().all(|rule| !rule.summary.is_empty()));
    let docs = include_str!("../rules.rs");
    for rule in RULES {
        assert!(docs.contains(&format!("| `{}` |", rule.name)), "{} is not in the module's table", rule.name);
    }
}

#[test]
fn an_empty_project_under_the_default_policy_is_clean() {
    run_cases(vec![case("empty", PolicySpec::default(), |_| {})]);
}

#[test]
fn required_tags() {
    let require = |tags: &[&str]| policy(|p| p.require_tags = tags.iter().map(|t| t.to_string()).collect());
    run_cases(vec![
        case("no requirement, no tags", PolicySpec::default(), |i| i.buckets.push(bucket("charts", &[]))),
        case("every resource has them", require(&["owner"]), |i| {
            i.buckets.push(bucket("charts", &[("owner", "a")]));
            i.queues.push(queue("work", &[("owner", "a")], false));
            i.live.push(live("pid:1:1", "worker", Some("r1"), None));
            i.runs.push(run("r1", RunStatus::Requested));
        }),
        case("a bucket lacks one of two", require(&["owner", "data-class"]), |i| {
            i.buckets.push(bucket("charts", &[("owner", "a")]))
        })
        .finds("required-tags", AuditSeverity::Violation, "charts")
        .saying("lacks tag(s) `data-class`")
        .saying("`mayfly deploy`"),
        case("declared but the bucket was created without them", require(&["owner"]), |i| {
            let mut stale = bucket("charts", &[]);
            stale.declared_tags = Some(tags(&[("owner", "a")]));
            i.buckets.push(stale);
        })
        .finds("required-tags", AuditSeverity::Violation, "charts")
        .saying("keeps the tags it was created with"),
        case("internal queue and a live process", require(&["cost-center"]), |i| {
            i.queues.push(queue("mayfly-async-f", &[("owner", "a")], true));
            i.live.push(live("pid:7:1", "worker", Some("r1"), None));
            i.runs.push(run("r1", RunStatus::Requested));
        })
        .finds("required-tags", AuditSeverity::Violation, "mayfly-async-f")
        .finds("required-tags", AuditSeverity::Violation, "pid:7:1")
        .saying("internal queues carry the project tags only")
        .saying("start the run again"),
        case("functions, jobs and networks too", require(&["data-class"]), |i| {
            i.functions.push(FunctionEntry {
                name: name("code-chart"),
                runtime: "lambda".into(),
                isolation: "process".into(),
                tags: tags(&[("data-class", "phi")]),
                owner: None,
            });
            i.jobs.push(job("nightly", "local", None));
            i.networks.push(network("phi", "10.77.1.0/24", None));
        })
        .finds("required-tags", AuditSeverity::Violation, "nightly")
        .finds("required-tags", AuditSeverity::Violation, "phi"),
    ]);
}

#[test]
fn encryption() {
    let optional = policy(|p| p.encryption = Requirement::Optional);
    let unencrypted = |i: &mut Inventory| {
        let mut plain = bucket("plain", &[]);
        plain.encrypted = false;
        i.buckets.push(plain);
    };
    run_cases(vec![
        case("encrypted buckets and store", PolicySpec::default(), |i| i.buckets.push(bucket("charts", &[]))),
        case("unencrypted bucket, required", PolicySpec::default(), unencrypted)
            .finds("encryption", AuditSeverity::Violation, "plain")
            .saying("written unencrypted, but `[policy]` requires encryption"),
        case("unencrypted bucket, optional", optional.clone(), unencrypted).finds(
            "encryption",
            AuditSeverity::Notice,
            "plain",
        ),
        case("declares encryption off, required", PolicySpec::default(), |i| {
            let mut declared_off = bucket("plain", &[]);
            declared_off.declared_encryption = Some(false);
            i.buckets.push(declared_off);
        })
        .finds("encryption", AuditSeverity::Violation, "plain")
        .saying("declares `encryption = false`"),
        case("plaintext state store, required", PolicySpec::default(), |i| {
            i.state_store.payloads_encrypted = false;
            i.state_store.location = ".mayfly/state.db".into();
        })
        .finds("encryption", AuditSeverity::Violation, ".mayfly/state.db")
        .saying("in plaintext"),
        case("plaintext state store, optional", optional, |i| i.state_store.payloads_encrypted = false).finds(
            "encryption",
            AuditSeverity::Notice,
            "",
        ),
    ]);
}

#[test]
fn tls() {
    let optional = policy(|p| p.tls = Requirement::Optional);
    let api = |listen: &'static str, tls: bool| {
        move |i: &mut Inventory| i.api = Some(ApiEntry { listen: listen.parse().unwrap(), tls })
    };
    run_cases(vec![
        case("no api", PolicySpec::default(), |_| {}),
        case("loopback without tls", PolicySpec::default(), api("127.0.0.1:8443", false)),
        case("off loopback with tls", PolicySpec::default(), api("0.0.0.0:8443", true)),
        case("off loopback without tls, required", PolicySpec::default(), api("0.0.0.0:8443", false))
            .finds("tls", AuditSeverity::Violation, "0.0.0.0:8443")
            .saying("requires TLS"),
        case("ipv6 off loopback without tls, optional", optional, api("[::]:8443", false))
            .finds("tls", AuditSeverity::Warning, "[::]:8443")
            .saying("cannot check it"),
    ]);
}

#[test]
fn network_boundary() {
    let bounded = policy(|p| p.networks = vec!["10.77.0.0/16".parse().unwrap()]);
    run_cases(vec![
        case("no boundary: anything goes", PolicySpec::default(), |i| {
            i.live.push(live("c1", "worker", None, Some("192.168.1.4")));
            i.networks.push(network("wide", "10.0.0.0/8", None));
        }),
        case("inside", bounded.clone(), |i| {
            i.live.push(live("c1", "worker", None, Some("10.77.1.4")));
            i.live.push(live("c2", "worker", None, Some("10.77.2.9:7000")));
            i.networks.push(network("phi", "10.77.1.0/24", None));
            i.jobs.push(job("nightly", "docker", Some("10.77.1.0/24")));
        }),
        case("a worker outside", bounded.clone(), |i| i.live.push(live("c1", "worker", None, Some("10.78.1.4"))))
            .finds("network-boundary", AuditSeverity::Violation, "c1")
            .saying("worker at 10.78.1.4 is outside the networks `[policy]` allows (10.77.0.0/16)"),
        case("an address that is not IPv4", bounded.clone(), |i| {
            i.live.push(live("c1", "coordinator", None, Some("fe80::1")))
        })
        .finds("network-boundary", AuditSeverity::Violation, "c1")
        .saying("not an IPv4 address"),
        case("a local worker has no address", bounded.clone(), |i| {
            i.live.push(live("pid:1:1", "worker", None, None));
            i.live.push(live("pid:2:1", "coordinator", None, None));
        })
        .finds("network-boundary", AuditSeverity::Warning, "pid:1:1")
        .saying("host's own network"),
        case("a network too wide and a job outside", bounded, |i| {
            i.networks.push(network("wide", "10.0.0.0/8", None));
            i.jobs.push(job("outside", "docker", Some("10.78.0.0/24")));
            i.jobs.push(job("unbounded", "docker", None));
            i.jobs.push(job("local", "local", None));
        })
        .finds("network-boundary", AuditSeverity::Violation, "wide")
        .finds("network-boundary", AuditSeverity::Violation, "outside")
        .finds("network-boundary", AuditSeverity::Violation, "unbounded")
        .saying("subnet 10.0.0.0/8")
        .saying("no subnet"),
    ]);
}

#[test]
fn orphaned_resources() {
    run_cases(vec![
        case("a live run's fleet", PolicySpec::default(), |i| {
            i.runs.push(run("r1", RunStatus::Running));
            i.runs.push(run("r0", RunStatus::Requested));
            i.live.push(live("pid:1:1", "coordinator", Some("r1"), None));
            i.live.push(live("pid:2:1", "worker", Some("r0"), None));
            i.live.push(live("pid:3:1", "function", None, None));
            i.networks.push(network("phi", "10.77.1.0/24", Some("r1")));
        }),
        case("unknown and finished runs", PolicySpec::default(), |i| {
            i.runs.push(run("r-done", RunStatus::Succeeded));
            i.live.push(live("pid:1:1", "worker", Some("r-unknown"), None));
            i.live.push(live("pid:2:1", "coordinator", Some("r-done"), None));
            i.networks.push(network("phi", "10.77.1.0/24", Some("r-done")));
        })
        .finds("orphaned-resource", AuditSeverity::Violation, "pid:1:1")
        .finds("orphaned-resource", AuditSeverity::Violation, "pid:2:1")
        .finds("orphaned-resource", AuditSeverity::Violation, "phi")
        .saying("no record of")
        .saying("which ended succeeded at")
        .saying("mayfly audit --reap")
        .saying("docker network rm phi"),
        case("a function container whose Mayfly is gone", PolicySpec::default(), |i| {
            let mut alive = live("container:a1", "function", None, Some("172.20.0.2"));
            alive.tags.insert("mayfly.owner".into(), "pid:10:1".into());
            let mut orphan = live("container:b2", "function", None, Some("172.20.0.3"));
            orphan.owner_process_gone = true;
            i.live.extend([alive, orphan]);
        })
        .finds("orphaned-resource", AuditSeverity::Violation, "container:b2")
        .saying("the Mayfly process that started it is gone"),
    ]);
}

#[test]
fn run_coordinator() {
    run_cases(vec![
        case("running and finishing runs with their coordinator or broker", PolicySpec::default(), |i| {
            coordinated(i, run("r1", RunStatus::Running));
            i.runs.push(run("r2", RunStatus::Finishing));
            i.live.push(live("pid:9:1", "broker", Some("r2"), None));
        }),
        case("requested and finished runs need none", PolicySpec::default(), |i| {
            i.runs.push(run("r0", RunStatus::Requested));
            i.runs.push(run("r-done", RunStatus::CompletedWithFailures));
        }),
        case("a running run whose coordinator is gone", PolicySpec::default(), |i| {
            let mut stranded = run("r1", RunStatus::Running);
            stranded.items = RunItemCounts { total: 300, done: 219, ..RunItemCounts::default() };
            i.runs.push(stranded);
            i.live.push(live("pid:2:1", "worker", Some("r1"), None));
            i.live.push(live("pid:3:1", "coordinator", Some("r-other"), None));
            i.runs.push(run("r2", RunStatus::Finishing));
        })
        .finds("orphaned-resource", AuditSeverity::Violation, "pid:3:1")
        .finds("run-coordinator", AuditSeverity::Violation, "r1")
        .finds("run-coordinator", AuditSeverity::Violation, "r2")
        .saying("is running but no coordinator of it is alive (1 other process(es) of the run are)")
        .saying("81 of 300 item(s) are unprocessed")
        .saying("`mayfly up` resumes it"),
    ]);
}

#[test]
fn run_deadline() {
    run_cases(vec![
        case("running within its deadline", PolicySpec::default(), |i| coordinated(i, run("r1", RunStatus::Running))),
        case("running past its deadline", PolicySpec::default(), |i| {
            let mut late = run("r1", RunStatus::Running);
            late.deadline = ago(Duration::from_secs(2 * 3600 + 5));
            coordinated(i, late);
        })
        .finds("run-deadline", AuditSeverity::Violation, "r1")
        .saying("still running 2h after its deadline"),
        case("stopped at its deadline, recently and long ago", PolicySpec::default(), |i| {
            let mut stopped = run("r1", RunStatus::DeadlineExceeded);
            stopped.items = RunItemCounts { total: 10, done: 4, dead_lettered: 1, ..RunItemCounts::default() };
            i.runs.push(stopped);
            let mut old = run("r0", RunStatus::DeadlineExceeded);
            old.finished_at = Some(ago(30 * DAY));
            i.runs.push(old);
        })
        .finds("run-deadline", AuditSeverity::Warning, "r1")
        .saying("stopped at its deadline")
        .saying("5 of 10 item(s) unprocessed"),
        case("stopped at its deadline with its unfinished messages back in their queue", PolicySpec::default(), |i| {
            let mut stopped = run("r1", RunStatus::DeadlineExceeded);
            stopped.items = RunItemCounts { total: 10, done: 4, returned: 6, ..RunItemCounts::default() };
            i.runs.push(stopped);
        })
        .finds("run-deadline", AuditSeverity::Warning, "r1")
        .saying("6 of 10 item(s) unprocessed (6 back in their queue for a later run)"),
    ]);
}

#[test]
fn run_budget() {
    let with_cost = |status: RunStatus, cost: f64| {
        let mut entry = run("r1", status);
        entry.budget = Some(0.5);
        entry.estimated_cost = cost;
        entry
    };
    run_cases(vec![
        case("no budget", PolicySpec::default(), |i| {
            let mut unbounded = run("r1", RunStatus::Running);
            unbounded.estimated_cost = 1e9;
            coordinated(i, unbounded);
        }),
        case("within budget", PolicySpec::default(), |i| coordinated(i, with_cost(RunStatus::Running, 0.4))),
        case("running over budget", PolicySpec::default(), |i| coordinated(i, with_cost(RunStatus::Running, 0.75)))
            .finds("run-budget", AuditSeverity::Violation, "r1")
            .saying("estimated cost of 0.7500, over its budget of 0.5000"),
        case("stopped at its budget", PolicySpec::default(), |i| {
            i.runs.push(with_cost(RunStatus::BudgetExceeded, 0.5001))
        })
        .finds("run-budget", AuditSeverity::Warning, "r1")
        .saying("ended budget_exceeded"),
        case("finished long ago over budget", PolicySpec::default(), |i| {
            let mut old = with_cost(RunStatus::Succeeded, 9.0);
            old.finished_at = Some(ago(8 * DAY));
            i.runs.push(old);
        }),
    ]);
}

#[test]
fn log_retention() {
    let ninety_days = policy(|p| p.log_retention = Some(90 * DAY));
    let logs_bucket = |retention: Option<Duration>| {
        let mut logs = bucket("logs", &[]);
        logs.retention = retention;
        logs
    };
    run_cases(vec![
        case("no retention anywhere", PolicySpec::default(), |i| {
            i.buckets.push(logs_bucket(None));
            i.sealed_logs.push(sealed_log("runs/r1/w1-001.log.zst", 400 * DAY));
        }),
        case("within the policy", ninety_days.clone(), |i| {
            i.buckets.push(logs_bucket(None));
            i.sealed_logs.push(sealed_log("runs/r1/w1-001.log.zst", 89 * DAY));
        }),
        case("older than the policy", ninety_days.clone(), |i| {
            i.buckets.push(logs_bucket(None));
            i.sealed_logs.push(sealed_log("runs/r1/w1-001.log.zst", 95 * DAY));
        })
        .finds("log-retention", AuditSeverity::Violation, "logs/runs/r1/w1-001.log.zst")
        .saying("is 95d old, older than the 90d of `[policy].log_retention`")
        .saying("mayfly rm logs/runs/r1/w1-001.log.zst"),
        case("the bucket's shorter retention wins", ninety_days, |i| {
            i.buckets.push(logs_bucket(Some(30 * DAY)));
            i.sealed_logs.push(sealed_log("runs/r1/w1-001.log.zst", 31 * DAY));
        })
        .finds("log-retention", AuditSeverity::Violation, "logs/runs/r1/w1-001.log.zst")
        .saying("30d of bucket `logs`'s `retention`"),
        case("only the bucket's retention", PolicySpec::default(), |i| {
            i.buckets.push(logs_bucket(Some(DAY)));
            i.sealed_logs.push(sealed_log("runs/r1/a.log.zst", 2 * DAY));
            i.sealed_logs.push(sealed_log("runs/r2/b.log.zst", Duration::from_secs(3600)));
        })
        .finds("log-retention", AuditSeverity::Violation, "logs/runs/r1/a.log.zst"),
    ]);
}

#[test]
fn findings_come_violations_first() {
    let mut inventory = inventory();
    let mut plain = bucket("plain", &[]);
    plain.encrypted = false;
    inventory.buckets.push(plain);
    inventory.live.push(live("pid:9:9", "worker", Some("gone"), None));
    inventory.api = Some(ApiEntry { listen: "0.0.0.0:80".parse().unwrap(), tls: false });
    let policy = policy(|p| {
        p.encryption = Requirement::Optional;
        p.tls = Requirement::Optional;
    });
    let severities: Vec<AuditSeverity> =
        check(&inventory, &policy, &AuditSettings::default()).iter().map(|f| f.severity).collect();
    assert_eq!(severities, [AuditSeverity::Violation, AuditSeverity::Warning, AuditSeverity::Notice]);
}

/// Defect 12 of issue 10: a message dead-lettered for integrity is a finding.
#[test]
fn a_message_set_aside_for_integrity_is_a_warning_naming_it_and_where_it_went() {
    let mut inventory = inventory();
    inventory.damaged_messages.push(mayfly_state::DamagedMessage {
        queue: name("work-dlq"),
        message_id: 12,
        source_queue: "work".to_owned(),
        reason: "integrity: the state store's body of message 12 cannot be read".to_owned(),
        set_aside_at: ago(Duration::from_secs(60)),
    });
    let findings = check(&inventory, &PolicySpec::default(), &AuditSettings::default());
    let found: Vec<_> = findings.iter().filter(|f| f.rule == "message-integrity").collect();
    assert_eq!(found.len(), 1, "{findings:?}");
    assert_eq!(found[0].severity, AuditSeverity::Warning);
    assert_eq!(found[0].resource, "work-dlq/12");
    assert!(found[0].message.contains("moved to its dead-letter queue `work-dlq`"), "{}", found[0].message);
    assert!(found[0].message.contains("integrity: "), "{}", found[0].message);
}
