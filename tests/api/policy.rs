//! Tenant token policies (issue 16, point 5): SetTenantPolicy and GetTenantPolicy, creation,
//! updates and rotations held to the policy, tokens breaking a tightened policy listed and —
//! when enforced — denied at Check, on every replica.

use prost_types::{Duration, FieldMask, Timestamp};
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::helpers::requests::{
    all_audit_events, assert_reason, audit_events, check_request, violated_fields, wait_for_reason,
};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, strings};

const TENANT: &str = "acme";
const DAY: i64 = 86_400;

async fn app_with_alice(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*", "users:read"])
        .await;
    app
}

fn days(count: i64) -> Option<Duration> {
    Some(Duration {
        seconds: count * DAY,
        nanos: 0,
    })
}

async fn set_policy(
    app: &TestApp,
    policy: proto::TenantPolicy,
) -> Result<proto::TenantPolicy, Status> {
    app.admin_client()
        .await
        .set_tenant_policy(app.admin(proto::SetTenantPolicyRequest {
            policy: Some(proto::TenantPolicy {
                tenant: TENANT.to_owned(),
                ..policy
            }),
        }))
        .await
        .map(|response| response.into_inner().policy.expect("policy"))
}

async fn get_policy(app: &TestApp) -> proto::TenantPolicy {
    app.admin_client()
        .await
        .get_tenant_policy(app.admin(proto::GetTenantPolicyRequest {
            tenant: TENANT.to_owned(),
        }))
        .await
        .expect("policy read")
        .into_inner()
        .policy
        .expect("policy")
}

async fn create(app: &TestApp, request: proto::CreateTokenRequest) -> Result<proto::Token, Status> {
    app.admin_client()
        .await
        .create_token(app.admin(request))
        .await
        .map(|response| response.into_inner().token.expect("token"))
}

async fn list(app: &TestApp, violations_only: bool) -> Vec<proto::Token> {
    app.admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            policy_violations_only: violations_only,
            ..Default::default()
        }))
        .await
        .expect("tokens listed")
        .into_inner()
        .tokens
}

/// The refusal of a write by the policy: FAILED_PRECONDITION, ErrorInfo POLICY_VIOLATION with
/// the rule, a PreconditionFailure on the rule and a BadRequest on the field.
#[track_caller]
fn assert_policy_refusal(status: &Status, rule: &str, field: &str) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_reason(status, "POLICY_VIOLATION");
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(info.metadata.get("rule").map(String::as_str), Some(rule));
    let failure = status
        .get_details_precondition_failure()
        .expect("precondition failure");
    assert_eq!(failure.violations[0].subject, rule, "{status:?}");
    assert_eq!(violated_fields(status), vec![field.to_owned()]);
    assert!(status.message().contains(rule), "{status:?}");
}

fn expires_in_days(token: &proto::Token) -> i64 {
    let expires_at = token.expires_at.as_ref().expect("expiry").seconds;
    (expires_at - chrono::Utc::now().timestamp() + DAY / 2) / DAY
}

backend_tests!(
    a_tenant_without_a_policy_has_every_rule_off_and_a_set_policy_reads_back,
    a_policy_that_contradicts_itself_is_invalid_naming_the_field_and_nothing_is_written,
    creation_obeys_every_rule_of_the_policy_and_names_the_rule_it_breaks,
    updates_and_rotations_obey_the_policy,
    tokens_that_break_a_tightened_policy_are_listed_and_denied_at_check_only_when_enforced,
);

async fn a_tenant_without_a_policy_has_every_rule_off_and_a_set_policy_reads_back(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    let none = get_policy(&app).await;
    assert_eq!(
        none,
        proto::TenantPolicy {
            tenant: TENANT.to_owned(),
            // Shown as the action it is, not unspecified.
            leak_action: proto::LeakAction::Revoke.into(),
            ..Default::default()
        }
    );
    let before = audit_events(&app).await;
    let wanted = proto::TenantPolicy {
        max_lifetime: days(90),
        default_lifetime: days(30),
        max_tokens_per_owner: 5,
        // In canonical (sorted) order, as they read back.
        allowed_permissions: strings(&["fn:Report", "orders:*"]),
        require_ip_allowlist: true,
        enforce_on_existing: true,
        leak_action: proto::LeakAction::Notify.into(),
        ..Default::default()
    };
    let stored = set_policy(&app, wanted.clone()).await.expect("policy set");
    assert!(stored.updated_at.is_some());
    let read = get_policy(&app).await;
    assert_eq!(read, stored);
    assert_eq!(
        proto::TenantPolicy {
            updated_at: None,
            ..read
        },
        proto::TenantPolicy {
            tenant: TENANT.to_owned(),
            ..wanted
        }
    );
    let events = all_audit_events(&app).await;
    assert_eq!(events.len(), before + 1);
    let event = events.last().expect("event");
    assert_eq!(event.action, "tenant_policy.set");
    assert!(event.summary.contains("max_lifetime 90 days"), "{event:?}");
    assert!(event.summary.contains("leak_action notify"), "{event:?}");
}

async fn a_policy_that_contradicts_itself_is_invalid_naming_the_field_and_nothing_is_written(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    let cases = [
        (
            proto::TenantPolicy {
                max_lifetime: days(30),
                default_lifetime: days(60),
                ..Default::default()
            },
            "policy.default_lifetime",
        ),
        (
            proto::TenantPolicy {
                require_expiry: true,
                default_lifetime: days(10),
                ..Default::default()
            },
            "policy.default_lifetime",
        ),
        (
            proto::TenantPolicy {
                max_lifetime: days(6 * 365),
                ..Default::default()
            },
            "policy.max_lifetime",
        ),
        (
            proto::TenantPolicy {
                allowed_permissions: strings(&["orders"]),
                ..Default::default()
            },
            "policy.allowed_permissions[0]",
        ),
    ];
    let before = audit_events(&app).await;
    for (policy, field) in cases {
        let status = set_policy(&app, policy).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(violated_fields(&status), vec![field.to_owned()]);
    }
    assert_eq!(audit_events(&app).await, before);
    assert!(get_policy(&app).await.updated_at.is_none());
}

async fn creation_obeys_every_rule_of_the_policy_and_names_the_rule_it_breaks(backend: Backend) {
    let app = app_with_alice(backend).await;
    set_policy(
        &app,
        proto::TenantPolicy {
            max_lifetime: days(30),
            max_tokens_per_owner: 2,
            allowed_permissions: strings(&["orders:*"]),
            require_ip_allowlist: true,
            ..Default::default()
        },
    )
    .await
    .expect("policy set");
    let with_allowlist = |permissions: &[&str]| proto::CreateTokenRequest {
        allowed_ips: strings(&["10.0.0.0/8"]),
        ..new_token(TENANT, "alice", permissions)
    };

    // Without an expiry: the default lifetime, capped at the policy's maximum.
    let capped = create(&app, with_allowlist(&["orders:read"]))
        .await
        .expect("created within the policy");
    assert_eq!(expires_in_days(&capped), 30);
    assert!(capped.policy_violations.is_empty(), "{capped:?}");

    let too_long = proto::CreateTokenRequest {
        ttl: days(31),
        ..with_allowlist(&["orders:read"])
    };
    let status = create(&app, too_long)
        .await
        .expect_err("beyond max_lifetime");
    assert_policy_refusal(&status, "max_lifetime", "ttl");
    let far = chrono::Utc::now().timestamp() + 40 * DAY;
    let too_far = proto::CreateTokenRequest {
        expires_at: Some(Timestamp {
            seconds: far,
            nanos: 0,
        }),
        ..with_allowlist(&["orders:read"])
    };
    let status = create(&app, too_far)
        .await
        .expect_err("beyond max_lifetime");
    assert_policy_refusal(&status, "max_lifetime", "expires_at");

    // Within the owner's permissions, but not the tenant's allowed ones.
    let status = create(&app, with_allowlist(&["orders:read", "users:read"]))
        .await
        .expect_err("beyond allowed_permissions");
    assert_policy_refusal(&status, "allowed_permissions", "permissions");
    assert!(status.message().contains("users:read"), "{status:?}");

    let status = create(&app, new_token(TENANT, "alice", &["orders:read"]))
        .await
        .expect_err("no allowlist");
    assert_policy_refusal(&status, "require_ip_allowlist", "allowed_ips");

    create(&app, with_allowlist(&["orders:write"]))
        .await
        .expect("the second live token");
    let status = create(&app, with_allowlist(&["orders:read"]))
        .await
        .expect_err("the policy's owner limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("2 live tokens"), "{status:?}");
    assert_eq!(
        list(&app, false).await.len(),
        2,
        "nothing refused was written"
    );

    set_policy(
        &app,
        proto::TenantPolicy {
            require_expiry: true,
            ..Default::default()
        },
    )
    .await
    .expect("policy replaced");
    let status = create(&app, new_token(TENANT, "alice", &["orders:read"]))
        .await
        .expect_err("no expiry given");
    assert_policy_refusal(&status, "require_expiry", "expires_at");
    let given = proto::CreateTokenRequest {
        ttl: days(7),
        ..new_token(TENANT, "alice", &["orders:read"])
    };
    assert_eq!(
        expires_in_days(&create(&app, given).await.expect("given")),
        7
    );
}

async fn updates_and_rotations_obey_the_policy(backend: Backend) {
    let app = app_with_alice(backend).await;
    let long = proto::CreateTokenRequest {
        ttl: days(90),
        ..new_token(TENANT, "alice", &["orders:read"])
    };
    let (token, _) = app.token(long).await;
    let (wide, _) = app.token(new_token(TENANT, "alice", &["users:read"])).await;
    set_policy(
        &app,
        proto::TenantPolicy {
            max_lifetime: days(30),
            allowed_permissions: strings(&["orders:*"]),
            ..Default::default()
        },
    )
    .await
    .expect("policy set");
    let mut client = app.admin_client().await;
    let update = |id: &str, paths: &[&str]| proto::UpdateTokenRequest {
        id: id.to_owned(),
        update_mask: Some(FieldMask {
            paths: strings(paths),
        }),
        ..Default::default()
    };

    let status = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            permissions: strings(&["users:read"]),
            ..update(&token.id, &["permissions"])
        }))
        .await
        .expect_err("beyond allowed_permissions");
    assert_policy_refusal(&status, "allowed_permissions", "permissions");
    let status = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            expires_at: Some(Timestamp {
                seconds: chrono::Utc::now().timestamp() + 60 * DAY,
                nanos: 0,
            }),
            ..update(&token.id, &["expires_at"])
        }))
        .await
        .expect_err("beyond max_lifetime");
    assert_policy_refusal(&status, "max_lifetime", "expires_at");
    // A field the policy does not judge can still be changed on a token that breaks it.
    client
        .update_token(app.admin(proto::UpdateTokenRequest {
            name: "renamed".to_owned(),
            ..update(&token.id, &["name"])
        }))
        .await
        .expect("rename");

    // Rotating shortens the 90-day window to the policy's 30 days.
    let rotated = client
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: None,
        }))
        .await
        .expect("rotated")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(expires_in_days(&rotated), 30);
    assert!(rotated.policy_violations.is_empty(), "{rotated:?}");

    // A token whose grants the policy no longer allows gets no new secret until they are fixed.
    let status = client
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: wide.id.clone(),
            grace_period: None,
        }))
        .await
        .expect_err("beyond allowed_permissions");
    assert_policy_refusal(&status, "allowed_permissions", "permissions");
    client
        .update_token(app.admin(proto::UpdateTokenRequest {
            permissions: strings(&["orders:read"]),
            ..update(&wide.id, &["permissions"])
        }))
        .await
        .expect("brought within the policy");
    client
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: wide.id,
            grace_period: None,
        }))
        .await
        .expect("rotated once within the policy");
}

async fn tokens_that_break_a_tightened_policy_are_listed_and_denied_at_check_only_when_enforced(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    let (kept, kept_secret) = app
        .token(proto::CreateTokenRequest {
            ttl: days(10),
            allowed_ips: strings(&["127.0.0.1"]),
            ..new_token(TENANT, "alice", &["orders:read"])
        })
        .await;
    let (broken, broken_secret) = app
        .token(proto::CreateTokenRequest {
            ttl: days(90),
            ..new_token(TENANT, "alice", &["users:read"])
        })
        .await;
    let check = |secret: &str| proto::CheckRequest {
        client_ip: "127.0.0.1".to_owned(),
        ..check_request(TENANT, secret, "")
    };
    assert!(app.check(check(&broken_secret)).await.allowed, "cached");
    assert!(app.check(check(&kept_secret)).await.allowed, "cached");

    let strict = proto::TenantPolicy {
        max_lifetime: days(30),
        allowed_permissions: strings(&["orders:*"]),
        require_ip_allowlist: true,
        ..Default::default()
    };
    set_policy(&app, strict.clone()).await.expect("listed only");
    let listed = list(&app, true).await;
    assert_eq!(
        listed
            .iter()
            .map(|token| token.id.as_str())
            .collect::<Vec<_>>(),
        vec![broken.id.as_str()]
    );
    assert_eq!(
        listed[0].policy_violations,
        strings(&[
            "max_lifetime",
            "allowed_permissions",
            "require_ip_allowlist"
        ])
    );
    let all = list(&app, false).await;
    assert_eq!(all.len(), 2);
    let kept_listed = all.iter().find(|token| token.id == kept.id).expect("kept");
    assert!(kept_listed.policy_violations.is_empty());
    assert!(
        app.check(check(&broken_secret)).await.allowed,
        "not enforced: listed only"
    );

    set_policy(
        &app,
        proto::TenantPolicy {
            enforce_on_existing: true,
            ..strict.clone()
        },
    )
    .await
    .expect("enforced");
    let denied = app.check(check(&broken_secret)).await;
    assert_eq!(denied.reason(), DenyReason::PolicyViolation);
    assert!(!denied.allowed);
    assert_eq!(denied.http_status, 403);
    assert_eq!(
        denied.message,
        "the API token breaks its tenant's token policy: max_lifetime, allowed_permissions, \
         require_ip_allowlist"
    );
    assert!(
        app.check(check(&kept_secret)).await.allowed,
        "keeps the policy"
    );

    // Relaxed again: the same cached token passes at once.
    set_policy(&app, proto::TenantPolicy::default())
        .await
        .expect("relaxed");
    assert!(app.check(check(&broken_secret)).await.allowed);
    assert!(list(&app, true).await.is_empty());
}

#[tokio::test]
async fn an_enforced_policy_set_through_one_replica_denies_on_the_other_and_lifting_it_reaches_it_too()
 {
    let replica_a = app_with_alice(Backend::Postgres).await;
    let replica_b = replica_a.spawn_replica().await;
    let (_, secret) = replica_a
        .token(new_token(TENANT, "alice", &["users:read"]))
        .await;
    let check = check_request(TENANT, &secret, "users:read");
    assert!(replica_b.check(check.clone()).await.allowed, "cached on b");
    let lookups = replica_b.store_lookups();
    assert!(replica_b.check(check.clone()).await.allowed);
    assert_eq!(
        replica_b.store_lookups(),
        lookups,
        "b decides from its cache"
    );

    set_policy(
        &replica_a,
        proto::TenantPolicy {
            allowed_permissions: strings(&["orders:*"]),
            enforce_on_existing: true,
            ..Default::default()
        },
    )
    .await
    .expect("policy set through a");
    let took = wait_for_reason(&replica_b, check.clone(), DenyReason::PolicyViolation).await;
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");

    set_policy(&replica_a, proto::TenantPolicy::default())
        .await
        .expect("lifted through a");
    let started = std::time::Instant::now();
    while !replica_b.check(check.clone()).await.allowed {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "still denied on b"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
