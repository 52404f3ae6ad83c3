//! Conformance cases of [`crate::AccessStore`].

#[allow(unused_imports)]
use super::*;

// --- API tokens and the access log ---------------------------------------------------

fn new_token(id: &str, name: &str) -> NewApiToken {
    NewApiToken {
        id: id.to_owned(),
        name: name.to_owned(),
        secret_sha256: format!("{:0>64}", id.len()),
        scopes: vec!["results:read".to_owned(), "runs:read".to_owned()],
        jobs: vec!["nightly".to_owned()],
        buckets: Vec::new(),
        expires_at: None,
        aws_secret: None,
    }
}

pub fn api_tokens_are_stored_listed_and_revoked<S: AccessStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let created_at = subject.clock.now();
    let expires_at = created_at.saturating_add(Duration::from_secs(86_400));
    let first =
        store.create_api_token(NewApiToken { expires_at: Some(expires_at), ..new_token("tok-1", "ci") }).unwrap();
    assert_eq!(
        first,
        ApiTokenRecord {
            id: "tok-1".to_owned(),
            name: "ci".to_owned(),
            secret_sha256: format!("{:0>64}", 5),
            scopes: vec!["results:read".to_owned(), "runs:read".to_owned()],
            jobs: vec!["nightly".to_owned()],
            buckets: Vec::new(),
            created_at,
            expires_at: Some(expires_at),
            revoked_at: None,
        }
    );
    subject.clock.advance(Duration::from_secs(1));
    let second = store
        .create_api_token(NewApiToken {
            buckets: vec!["inbox".to_owned()],
            jobs: Vec::new(),
            ..new_token("tok-2", "dashboard")
        })
        .unwrap();
    assert_eq!(store.api_token("tok-1").unwrap(), first);
    assert_eq!(store.api_tokens().unwrap(), vec![first.clone(), second.clone()], "oldest first");
    assert!(matches!(
        store.create_api_token(new_token("tok-1", "other")),
        Err(StateError::AlreadyExists { kind: "token", .. })
    ));

    subject.clock.advance(Duration::from_secs(1));
    let revoked_at = subject.clock.now();
    let revoked = store.revoke_api_token("tok-1").unwrap();
    assert_eq!(revoked, ApiTokenRecord { revoked_at: Some(revoked_at), ..first.clone() });
    subject.clock.advance(Duration::from_secs(1));
    assert_eq!(store.revoke_api_token("tok-1").unwrap().revoked_at, Some(revoked_at), "the first revocation stands");
    assert_eq!(store.api_token("tok-2").unwrap(), second, "revoking one token leaves the others");
    assert_not_found(store.api_token("tok-9"), "token", "tok-9");
    assert_not_found(store.revoke_api_token("tok-9"), "token", "tok-9");
}

pub fn a_tokens_aws_secret_is_kept_and_read_back<S: AccessStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    let secret = "0123456789abcdef0123456789abcdef01234567";
    store.create_api_token(NewApiToken { aws_secret: Some(secret.to_owned()), ..new_token("tok-1", "s3") }).unwrap();
    store.create_api_token(new_token("tok-2", "bearer only")).unwrap();
    assert_eq!(store.api_token_aws_secret("tok-1").unwrap().as_deref(), Some(secret));
    assert_eq!(store.api_token_aws_secret("tok-2").unwrap(), None);
    store.revoke_api_token("tok-1").unwrap();
    assert_eq!(store.api_token_aws_secret("tok-1").unwrap().as_deref(), Some(secret), "revocation is the token's");
    assert_not_found(store.api_token_aws_secret("tok-9"), "token", "tok-9");
}

pub fn api_token_names_are_unique_among_live_tokens<S: AccessStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    store.create_api_token(new_token("tok-1", "ci")).unwrap();
    match store.create_api_token(new_token("tok-2", "ci")) {
        Err(StateError::AlreadyExists { kind: "token", name }) => assert_eq!(name, "ci"),
        other => panic!("expected AlreadyExists for the name, got {other:?}"),
    }
    assert_not_found(store.api_token("tok-2"), "token", "tok-2");
    store.revoke_api_token("tok-1").unwrap();
    let again = store.create_api_token(new_token("tok-2", "ci")).unwrap();
    assert_eq!((again.name.as_str(), again.revoked_at), ("ci", None), "a revoked token's name may be reused");
    assert_eq!(store.api_tokens().unwrap().len(), 2);
}

pub fn access_records_are_appended_in_order_and_read_newest_first<S: AccessStore + ?Sized>(subject: Subject<S>) {
    let store = &subject.store;
    assert!(store.access_records(None, 10).unwrap().is_empty());
    let now = subject.clock.now();
    let batch: Vec<AccessRecord> =
        (1..=5).map(|n| access(&format!("/v1/x/{n}"), if n == 3 { 401 } else { 200 }, now)).collect();
    store.append_access_records(&batch[..2]).unwrap();
    store.append_access_records(&[]).unwrap();
    store.append_access_records(&batch[2..]).unwrap();
    let newest: Vec<StoredAccessRecord> = store.access_records(None, 3).unwrap();
    assert_eq!(
        newest.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
        vec![batch[4].clone(), batch[3].clone(), batch[2].clone()]
    );
    assert!(newest.windows(2).all(|pair| pair[0].id > pair[1].id), "ids increase in append order");
    let older = store.access_records(Some(newest[2].id), 10).unwrap();
    assert_eq!(older.iter().map(|r| r.record.clone()).collect::<Vec<_>>(), vec![batch[1].clone(), batch[0].clone()]);
    assert_eq!(store.access_records(Some(older[1].id), 10).unwrap(), Vec::new());
    assert_eq!(older[1].record.token_id.as_deref(), Some("tok-1"));
    assert_eq!(newest[2].record.token_id, None, "a refused access without a known token names none");
}
