//! Token metadata and suspension (issue 16, points 1 and 2), through the real server and the
//! generated clients, on both backends; suspension across two replicas on one Postgres.

use std::collections::HashMap;
use std::time::Duration;

use prost_types::FieldMask;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::requests::{
    all_audit_events, assert_reason, audit_events, check_request, violated_fields, wait_for_reason,
};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on};

const TENANT: &str = "acme";

async fn app_with_owner(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn masked(
    id: &str,
    paths: &[&str],
    metadata: HashMap<String, String>,
) -> proto::UpdateTokenRequest {
    proto::UpdateTokenRequest {
        id: id.to_owned(),
        metadata,
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        }),
        ..Default::default()
    }
}

async fn update(app: &TestApp, request: proto::UpdateTokenRequest) -> proto::Token {
    app.admin_client()
        .await
        .update_token(app.admin(request))
        .await
        .expect("updated")
        .into_inner()
        .token
        .expect("token")
}

async fn metadata_is_stored_on_create_returned_by_an_allowed_check_and_never_by_a_denied_one(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.metadata = map(&[("plan", "pro"), ("customer.id", "c-42")]);
    let (token, secret) = app.token(request).await;

    let allowed = app
        .check(check_request(TENANT, &secret, "orders:read"))
        .await;
    let denied = app
        .check(check_request(TENANT, &secret, "billing:read"))
        .await;

    assert_eq!(
        token.metadata,
        map(&[("plan", "pro"), ("customer.id", "c-42")])
    );
    assert!(allowed.allowed);
    assert_eq!(allowed.metadata, token.metadata);
    assert_eq!(denied.reason(), DenyReason::PermissionDenied);
    assert!(denied.metadata.is_empty());
}

async fn a_metadata_path_replaces_the_map_and_a_key_path_sets_or_deletes_one_entry(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.metadata = map(&[("plan", "free"), ("region", "eu"), ("team", "7")]);
    let (token, secret) = app.token(request).await;
    // Cached before the updates, so each must reach the cache too.
    assert!(
        app.check(check_request(TENANT, &secret, "orders:read"))
            .await
            .allowed
    );

    let entries = update(
        &app,
        masked(
            &token.id,
            &["metadata.plan", "metadata.region"],
            map(&[("plan", "pro")]),
        ),
    )
    .await;
    let after_entries = app
        .check(check_request(TENANT, &secret, "orders:read"))
        .await;
    let replaced = update(
        &app,
        masked(&token.id, &["metadata"], map(&[("tier", "gold")])),
    )
    .await;
    let after_replace = app
        .check(check_request(TENANT, &secret, "orders:read"))
        .await;

    assert_eq!(entries.metadata, map(&[("plan", "pro"), ("team", "7")]));
    assert_eq!(after_entries.metadata, entries.metadata);
    assert_eq!(replaced.metadata, map(&[("tier", "gold")]));
    assert_eq!(after_replace.metadata, replaced.metadata);
    assert_eq!(replaced.name, token.name);
}

async fn metadata_beyond_its_bounds_is_invalid_argument_naming_the_field_and_writes_nothing(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let thirty_three: Vec<(String, String)> =
        (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let long_value = "x".repeat(513);
    let big_value = "x".repeat(500);
    let seventeen_big: Vec<(String, String)> = (0..17)
        .map(|i| (format!("k{i:02}"), big_value.clone()))
        .collect();
    let cases: Vec<(&str, HashMap<String, String>)> = vec![
        ("33 entries", thirty_three.into_iter().collect()),
        ("an upper-case key", map(&[("Plan", "pro")])),
        ("a 65-character key", map(&[(&"k".repeat(65), "v")])),
        ("a 513-byte value", map(&[("plan", &long_value)])),
        (
            "a header injection",
            map(&[("plan", "pro\r\nx-tessera-owner: root")]),
        ),
        ("more than 8 KiB", seventeen_big.into_iter().collect()),
    ];
    let mut client = app.admin_client().await;
    let before = audit_events(&app).await;
    for (case, metadata) in cases {
        let mut request = new_token(TENANT, "alice", &["orders:read"]);
        request.metadata = metadata;
        let status = client
            .create_token(app.admin(request))
            .await
            .expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}");
        assert_eq!(violated_fields(&status), ["metadata"], "{case}");
    }
    assert_eq!(audit_events(&app).await, before, "nothing was written");

    // An update that would push a full map past 32 entries is refused, and changes nothing.
    let full: HashMap<String, String> =
        (0..32).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.metadata = full.clone();
    let (token, _) = app.token(request).await;
    let status = client
        .update_token(app.admin(masked(
            &token.id,
            &["metadata.extra"],
            map(&[("extra", "v")]),
        )))
        .await
        .expect_err("33 entries");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["metadata"]);
    let bad_key = client
        .update_token(app.admin(masked(&token.id, &["metadata.Bad Key"], HashMap::new())))
        .await
        .expect_err("bad key path");
    assert_eq!(violated_fields(&bad_key), ["update_mask"]);
    let read = client
        .get_token(app.admin(proto::GetTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("read")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(read.metadata, full);
    assert_eq!(read.etag, token.etag);
}

async fn a_suspended_token_is_denied_until_resumed_and_both_are_audited(backend: Backend) {
    let app = app_with_owner(backend).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let check = check_request(TENANT, &secret, "orders:read");
    assert!(
        app.check(check.clone()).await.allowed,
        "cached while active"
    );
    let mut client = app.admin_client().await;

    let suspended = client
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: "chargeback".to_owned(),
        }))
        .await
        .expect("suspended")
        .into_inner()
        .token
        .expect("token");
    let denied = app.check(check.clone()).await;
    let again = client
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: "a second reason".to_owned(),
        }))
        .await
        .expect("suspending twice is fine")
        .into_inner()
        .token
        .expect("token");
    let resumed = client
        .resume_token(app.admin(proto::ResumeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("resumed")
        .into_inner()
        .token
        .expect("token");
    let allowed = app.check(check.clone()).await;
    let resumed_again = client
        .resume_token(app.admin(proto::ResumeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("resuming an active token is fine")
        .into_inner()
        .token
        .expect("token");

    assert_eq!(suspended.state(), proto::TokenState::Suspended);
    assert_eq!(suspended.suspend_reason, "chargeback");
    assert!(suspended.suspended_at.is_some());
    assert!(!denied.allowed);
    assert_eq!(denied.reason(), DenyReason::TokenSuspended);
    assert_eq!(denied.http_status, 401);
    assert_eq!(denied.token_id, token.id);
    assert_eq!(again, suspended, "the second suspension changed nothing");
    assert_eq!(resumed.state(), proto::TokenState::Active);
    assert!(resumed.suspended_at.is_none());
    assert_eq!(resumed.suspend_reason, "");
    assert!(allowed.allowed);
    assert_eq!(resumed_again, resumed, "the second resume changed nothing");
    let actions: Vec<String> = all_audit_events(&app)
        .await
        .into_iter()
        .filter(|event| event.token_id == token.id)
        .map(|event| event.action)
        .collect();
    assert_eq!(actions, ["token.create", "token.suspend", "token.resume"]);
}

async fn suspending_a_revoked_token_is_failed_precondition(backend: Backend) {
    let app = app_with_owner(backend).await;
    let (token, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let mut client = app.admin_client().await;
    client
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("revoked");

    let status = client
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: String::new(),
        }))
        .await
        .expect_err("revoked");
    let long_reason = client
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: "r".repeat(1025),
        }))
        .await
        .expect_err("too long");

    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_reason(&status, "TOKEN_REVOKED");
    assert_eq!(long_reason.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&long_reason), ["reason"]);
}

backend_tests!(
    metadata_is_stored_on_create_returned_by_an_allowed_check_and_never_by_a_denied_one,
    a_metadata_path_replaces_the_map_and_a_key_path_sets_or_deletes_one_entry,
    metadata_beyond_its_bounds_is_invalid_argument_naming_the_field_and_writes_nothing,
    a_suspended_token_is_denied_until_resumed_and_both_are_audited,
    suspending_a_revoked_token_is_failed_precondition,
);

/// A suspension and a resume reach a replica that holds the token in its cache, through the
/// invalidation path revocation uses, well within the bound.
#[tokio::test]
async fn a_suspension_and_a_resume_reach_every_replica() {
    let app = app_with_owner(Backend::Postgres).await;
    let replica = app.spawn_replica().await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let check = check_request(TENANT, &secret, "orders:read");
    // The replica now holds the credential in its cache.
    assert!(replica.check(check.clone()).await.allowed);
    assert!(replica.check(check.clone()).await.allowed);
    let lookups = replica.store_lookups();
    assert!(lookups >= 1);

    app.admin_client()
        .await
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: "fraud review".to_owned(),
        }))
        .await
        .expect("suspended");
    let suspended_after =
        wait_for_reason(&replica, check.clone(), DenyReason::TokenSuspended).await;

    app.admin_client()
        .await
        .resume_token(app.admin(proto::ResumeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("resumed");
    let resumed_after = wait_for_reason(&replica, check.clone(), DenyReason::Allowed).await;

    // The cache TTL is far longer: only an invalidation explains a change this fast.
    let bound = Duration::from_secs(2);
    assert!(
        suspended_after < bound,
        "suspension took {suspended_after:?}"
    );
    assert!(resumed_after < bound, "resume took {resumed_after:?}");
    assert!(
        replica.store_lookups() > lookups,
        "the replica read the token again"
    );
}
