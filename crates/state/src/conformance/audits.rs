//! Conformance cases of [`crate::AuditStore`].

#[allow(unused_imports)]
use super::*;

// --- audits ------------------------------------------------------------------------

fn finding(rule: &str, severity: AuditSeverity, resource: &str) -> AuditFinding {
    AuditFinding {
        rule: rule.to_owned(),
        severity,
        resource_kind: "bucket".to_owned(),
        resource: resource.to_owned(),
        message: format!("`{resource}` breaks {rule} — with ünïcode and 'quotes'"),
        remedy: "fix it".to_owned(),
    }
}

pub fn audits_are_recorded_with_their_findings_in_order_and_the_latest_is_read_back<S: AuditStore + ?Sized>(
    subject: Subject<S>,
) {
    let store = &subject.store;
    assert_eq!(store.latest_audit().unwrap(), None, "no audit yet");
    let first =
        store.record_audit(&NewAudit { trigger: "deploy".into(), resources_checked: 0, findings: vec![] }).unwrap();
    assert_eq!((first.trigger.as_str(), first.at, first.findings.len()), ("deploy", subject.clock.now(), 0));
    assert_eq!(store.latest_audit().unwrap(), Some(first.clone()));

    subject.clock.advance(Duration::from_secs(60));
    // Deliberately not sorted by severity or name: the order given is kept.
    let findings = vec![
        finding("required-tags", AuditSeverity::Warning, "zeta"),
        finding("encryption", AuditSeverity::Violation, "alpha"),
        finding("encryption", AuditSeverity::Notice, "alpha"),
        finding("orphaned-resource", AuditSeverity::Violation, "pid:1:2"),
    ];
    let second = store
        .record_audit(&NewAudit { trigger: "run:run-1".into(), resources_checked: 17, findings: findings.clone() })
        .unwrap();
    assert!(second.id > first.id, "ids increase");
    assert_eq!(second.at, subject.clock.now());
    assert_eq!(second.resources_checked, 17);
    assert_eq!(second.findings, findings);
    assert_eq!(second.count(AuditSeverity::Violation), 2);
    assert_eq!(store.latest_audit().unwrap(), Some(second));
}

pub fn only_the_newest_audits_are_kept<S: AuditStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let mut last = None;
    for index in 0..AUDITS_KEPT + 5 {
        let findings = vec![finding("log-retention", AuditSeverity::Violation, &format!("log-{index}"))];
        let audit = store
            .record_audit(&NewAudit { trigger: format!("manual-{index}"), resources_checked: 1, findings })
            .unwrap();
        if let Some(previous) = last {
            assert!(audit.id > previous, "ids keep increasing past pruning");
        }
        last = Some(audit.id);
    }
    let latest = store.latest_audit().unwrap().expect("an audit");
    assert_eq!(latest.trigger, format!("manual-{}", AUDITS_KEPT + 4));
    assert_eq!(latest.findings[0].resource, format!("log-{}", AUDITS_KEPT + 4));
}
