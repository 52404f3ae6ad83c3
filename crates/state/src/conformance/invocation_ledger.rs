//! Conformance cases of [`crate::InvocationLedger`].

#[allow(unused_imports)]
use super::*;

pub fn invocations_are_recorded_with_every_field_in_ascending_id_order<S: InvocationLedger + ?Sized>(
    subject: Subject<S>,
) {
    let store = &subject.store;
    assert_eq!(every_invocation(&subject), vec![]);
    let full = InvocationRecord {
        request_id: "req-full".to_owned(),
        function: name("rename"),
        deployment_version: Some(3),
        trigger: "bucket:inbox".to_owned(),
        attempt: 2,
        started_at: subject.clock.now(),
        duration: Duration::from_micros(1_234_567),
        init_duration: Some(Duration::from_micros(89_012)),
        outcome: "timeout".to_owned(),
        error_type: Some("TimedOut".to_owned()),
        error_message: Some("timed out after 1.2 s; ünïcode ok".to_owned()),
        peak_memory: Some(64 * 1024 * 1024),
        bytes_in: 1_500,
        bytes_out: 2_048,
        estimated_cost: 0.000_016_667,
    };
    let bare = invocation("thumbnail", "req-bare", Timestamp(0), 0);
    let first = store.record_invocation(&full, b"log line\n").unwrap();
    let second = store.record_invocation(&bare, b"").unwrap();
    subject.clock.advance(Duration::from_secs(1));
    let third = store.record_invocation(&invocation("rename", "req-3", subject.clock.now(), 5), b"").unwrap();
    assert!(first < second && second < third, "ids {first}, {second}, {third} increase");
    assert_eq!(
        every_invocation(&subject),
        vec![
            StoredInvocation { id: first, record: full },
            StoredInvocation { id: second, record: bare },
            StoredInvocation { id: third, record: invocation("rename", "req-3", subject.clock.now(), 5) },
        ],
        "every field round-trips, durations to the microsecond"
    );
}

pub fn invocations_filter_by_function_and_outcome<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let at = subject.clock.now();
    store.record_invocation(&invocation("rename", "a", at, 1), b"").unwrap();
    store.record_invocation(&failed(invocation("rename", "b", at, 1), "timeout"), b"").unwrap();
    store.record_invocation(&failed(invocation("resize", "c", at, 1), "timeout"), b"").unwrap();
    store.record_invocation(&failed(invocation("rename", "d", at, 1), "crashed"), b"").unwrap();
    store.record_invocation(&invocation("resize", "e", at, 1), b"").unwrap();
    let list = |function: Option<&str>, outcome: Option<&str>| {
        let filter = InvocationFilter {
            function: function.map(name),
            outcome: outcome.map(str::to_owned),
            limit: 100,
            after_id: 0,
        };
        request_ids(&store.invocations(&filter).unwrap()).into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(list(None, None), ["a", "b", "c", "d", "e"]);
    assert_eq!(list(Some("rename"), None), ["a", "b", "d"]);
    assert_eq!(list(None, Some("timeout")), ["b", "c"]);
    assert_eq!(list(Some("rename"), Some("timeout")), ["b"]);
    assert_eq!(list(Some("resize"), Some("crashed")), Vec::<String>::new());
    assert_eq!(list(Some("never-invoked"), None), Vec::<String>::new());
}

pub fn invocations_page_by_after_id<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let at = subject.clock.now();
    for index in 0..7 {
        store.record_invocation(&invocation("rename", &format!("req-{index}"), at, 1), b"").unwrap();
        store.record_invocation(&invocation("other", &format!("other-{index}"), at, 1), b"").unwrap();
    }
    let mut seen = Vec::new();
    let mut after_id = 0;
    loop {
        let filter = InvocationFilter { function: Some(name("rename")), after_id, limit: 3, outcome: None };
        let page = store.invocations(&filter).unwrap();
        assert!(page.len() <= 3, "a page of {}", page.len());
        let Some(last) = page.last() else { break };
        assert!(page.windows(2).all(|pair| pair[0].id < pair[1].id), "ascending within a page");
        assert!(page[0].id > after_id);
        after_id = last.id;
        seen.extend(page.into_iter().map(|invocation| invocation.record.request_id));
    }
    let expected: Vec<String> = (0..7).map(|index| format!("req-{index}")).collect();
    assert_eq!(seen, expected);
    let none = InvocationFilter { limit: 0, ..InvocationFilter::default() };
    assert_eq!(store.invocations(&none).unwrap(), vec![], "a limit of 0 lists nothing");
}

pub fn invocation_logs_join_every_attempt_of_a_request_in_order<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let at = subject.clock.now();
    let attempt =
        |number: u32| InvocationRecord { attempt: number, ..failed(invocation("rename", "req-1", at, 5), "error") };
    store.record_invocation(&attempt(1), b"first attempt\n").unwrap();
    store.record_invocation(&invocation("rename", "req-2", at, 5), b"another request\n").unwrap();
    store.record_invocation(&attempt(2), b"").unwrap();
    store
        .record_invocation(&InvocationRecord { attempt: 3, ..invocation("rename", "req-1", at, 5) }, b"third\xff\x00\n")
        .unwrap();
    assert_eq!(store.invocation_logs("req-1").unwrap(), b"first attempt\nthird\xff\x00\n".to_vec());
    assert_eq!(store.invocation_logs("req-2").unwrap(), b"another request\n".to_vec());
    store.record_invocation(&invocation("rename", "silent", at, 5), b"").unwrap();
    assert_eq!(store.invocation_logs("silent").unwrap(), Vec::<u8>::new(), "an invocation that wrote nothing");
}

pub fn invocation_logs_of_an_unknown_request_are_not_found<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    assert_not_found(subject.store.invocation_logs("no-such-request"), "invocation", "no-such-request");
    subject.store.record_invocation(&invocation("rename", "req-1", subject.clock.now(), 5), b"x").unwrap();
    assert_not_found(subject.store.invocation_logs("req-"), "invocation", "req-");
}

pub fn function_stats_are_exact<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let start = subject.clock.now();
    // Durations 1..=20 ms, recorded out of order; started_at out of order too.
    for (index, duration_ms) in
        [7_u64, 3, 20, 1, 15, 9, 12, 2, 18, 5, 11, 4, 16, 8, 19, 6, 14, 10, 17, 13].iter().enumerate()
    {
        let started_at = start.saturating_add(Duration::from_secs(((index as u64) * 7) % 20));
        let mut record = invocation("rename", &format!("req-{index}"), started_at, *duration_ms);
        if index % 5 == 0 {
            record.init_duration = Some(Duration::from_millis(30));
        }
        if index % 4 == 1 {
            record = failed(record, if index == 1 { "timeout" } else { "error" });
        }
        store.record_invocation(&record, b"").unwrap();
    }
    store
        .record_invocation(&invocation("other", "x", start.saturating_add(Duration::from_secs(99)), 999), b"")
        .unwrap();
    assert_eq!(
        store.function_stats(&name("rename")).unwrap(),
        FunctionStats {
            invocations: 20,
            errors: 5,
            cold_starts: 4,
            p50_duration: Some(Duration::from_millis(10)),
            p95_duration: Some(Duration::from_millis(19)),
            last_invoked: Some(start.saturating_add(Duration::from_secs(19))),
            duration_sum: Duration::from_millis(210),
            // At most 1, 5, 10 ms: 1, 5, 10 of them; 25 ms and every larger bound: all 20.
            durations_at_most: [1, 5, 10, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20],
        }
    );
    let other = store.function_stats(&name("other")).unwrap();
    assert_eq!(
        (other.invocations, other.p50_duration, other.p95_duration),
        (1, Some(Duration::from_millis(999)), Some(Duration::from_millis(999)))
    );
    // 999 ms is above the 500 ms bound and at most the 1 s one.
    assert_eq!(other.durations_at_most[..9], [0, 0, 0, 0, 0, 0, 0, 0, 1]);
}

pub fn function_stats_of_a_function_never_invoked_are_empty<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    subject.store.record_invocation(&invocation("rename", "req-1", subject.clock.now(), 5), b"").unwrap();
    assert_eq!(subject.store.function_stats(&name("never-invoked")).unwrap(), FunctionStats::default());
}

pub fn an_invocation_with_a_cost_that_is_not_finite_records_nothing<S: InvocationLedger + ?Sized>(subject: Subject<S>) {
    for cost in [f64::NAN, f64::INFINITY] {
        let record = InvocationRecord { estimated_cost: cost, ..invocation("rename", "req-1", subject.clock.now(), 5) };
        let result = subject.store.record_invocation(&record, b"logs");
        assert!(matches!(result, Err(StateError::Backend(_))), "{cost}: {result:?}");
    }
    assert_eq!(every_invocation(&subject), vec![]);
    assert_not_found(subject.store.invocation_logs("req-1"), "invocation", "req-1");
}
