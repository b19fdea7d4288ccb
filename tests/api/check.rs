//! AuthorizationService/Check: every allow and deny path of docs/api.md, through the real server.

use prost_types::{Duration, FieldMask};
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::requests::{check_request, violated_fields};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, strings};

const TENANT: &str = "acme";

fn request(secret: &str, permission: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        client_ip: "192.0.2.10".to_owned(),
        ..check_request(TENANT, secret, permission)
    }
}

async fn app_with_alice(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(
        TENANT,
        "alice",
        &["orders:*", "products:read", "fn:OrderList_Load_Query"],
    )
    .await;
    app
}

async fn assert_denied(
    app: &TestApp,
    check: proto::CheckRequest,
    reason: DenyReason,
    http_status: u32,
) -> proto::CheckResponse {
    let response = app.check(check).await;
    assert!(!response.allowed, "expected {reason:?}, got {response:?}");
    assert_eq!(response.reason(), reason);
    assert_eq!(response.http_status, http_status);
    assert!(!response.message.is_empty());
    response
}

/// The fields an INVALID_ARGUMENT answer to `check` names.
async fn refused_fields(app: &TestApp, check: proto::CheckRequest) -> Vec<String> {
    let status = app
        .authz_client()
        .await
        .check(check)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    violated_fields(&status)
}

async fn an_allowed_check_reports_identity_and_effective_permissions(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (token, secret) = app.token(new_token(TENANT, "alice", &["orders:*"])).await;
    let response = app.check(request(&secret, "orders:write")).await;
    assert!(response.allowed);
    assert_eq!(response.reason(), DenyReason::Allowed);
    assert_eq!(response.http_status, 200);
    assert_eq!(response.token_id, token.id);
    assert_eq!(response.owner_id, "alice");
    assert_eq!(response.tenant, TENANT);
    assert_eq!(response.permissions, vec!["orders:*"]);
    assert_eq!(response.expires_at, token.expires_at);
}

async fn each_token_problem_is_denied_with_its_own_reason(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (_, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;

    assert_denied(
        &app,
        request("", "orders:read"),
        DenyReason::TokenMissing,
        401,
    )
    .await;
    let mut tampered = secret.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    assert_denied(
        &app,
        request(&tampered, "orders:read"),
        DenyReason::TokenMalformed,
        401,
    )
    .await;
    assert_denied(
        &app,
        request("Bearer abc", "orders:read"),
        DenyReason::TokenMalformed,
        401,
    )
    .await;

    let stranger =
        tessera::domain::token::generate(&tessera::domain::token::TokenPrefix::default());
    let unknown = secrecy::ExposeSecret::expose_secret(&stranger.secret).to_owned();
    let response = assert_denied(
        &app,
        request(&unknown, "orders:read"),
        DenyReason::TokenUnknown,
        401,
    )
    .await;
    assert!(response.token_id.is_empty());

    let mut other_tenant = request(&secret, "orders:read");
    other_tenant.tenant = "globex".to_owned();
    assert_denied(&app, other_tenant, DenyReason::TenantMismatch, 401).await;

    assert_denied(
        &app,
        request(&secret, "orders:write"),
        DenyReason::PermissionDenied,
        403,
    )
    .await;
}

async fn an_expired_token_is_denied(backend: Backend) {
    let app = app_with_alice(backend).await;
    let mut short = new_token(TENANT, "alice", &[]);
    short.ttl = Some(Duration {
        seconds: 1,
        nanos: 0,
    });
    let (token, secret) = app.token(short).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = assert_denied(&app, request(&secret, ""), DenyReason::TokenExpired, 401).await;
    assert_eq!(response.token_id, token.id);
}

async fn disabling_the_owner_stops_all_its_tokens(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (_, first) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let (_, second) = app
        .token(new_token(TENANT, "alice", &["products:read"]))
        .await;
    app.admin_client()
        .await
        .upsert_principal(app.admin(proto::UpsertPrincipalRequest {
            tenant: TENANT.to_owned(),
            id: "alice".to_owned(),
            permissions: strings(&["orders:*", "products:read"]),
            disabled: true,
            rate_limit_per_minute: None,
        }))
        .await
        .expect("disable");
    assert_denied(
        &app,
        request(&first, "orders:read"),
        DenyReason::OwnerDisabled,
        401,
    )
    .await;
    assert_denied(
        &app,
        request(&second, "products:read"),
        DenyReason::OwnerDisabled,
        401,
    )
    .await;
}

async fn the_owner_ceiling_is_applied_at_check_time(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (_, secret) = app.token(new_token(TENANT, "alice", &["orders:*"])).await;
    assert!(app.check(request(&secret, "orders:write")).await.allowed);
    app.principal(TENANT, "alice", &["orders:read"]).await;
    assert_denied(
        &app,
        request(&secret, "orders:write"),
        DenyReason::PermissionDenied,
        403,
    )
    .await;
    let still = app.check(request(&secret, "orders:read")).await;
    assert!(still.allowed);
    assert_eq!(still.permissions, vec!["orders:read"]);
}

async fn an_offline_api_answers_503_before_looking_at_the_token(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (_, secret) = app.token(new_token(TENANT, "alice", &[])).await;
    let mut client = app.admin_client().await;
    let set = |tenant: &str, online: bool| proto::SetApiStatusRequest {
        tenant: tenant.to_owned(),
        online,
        message: "back at noon".to_owned(),
    };
    client
        .set_api_status(app.admin(set(TENANT, false)))
        .await
        .expect("offline");
    let response = assert_denied(&app, request("", ""), DenyReason::ApiOffline, 503).await;
    assert_eq!(response.message, "back at noon");
    client
        .set_api_status(app.admin(set(TENANT, true)))
        .await
        .expect("online");
    assert!(app.check(request(&secret, "")).await.allowed);

    client
        .set_api_status(app.admin(set("*", false)))
        .await
        .expect("global offline");
    assert_denied(&app, request(&secret, ""), DenyReason::ApiOffline, 503).await;
}

backend_tests!(
    an_allowed_check_reports_identity_and_effective_permissions,
    each_token_problem_is_denied_with_its_own_reason,
    an_expired_token_is_denied,
    disabling_the_owner_stops_all_its_tokens,
    the_owner_ceiling_is_applied_at_check_time,
    an_offline_api_answers_503_before_looking_at_the_token,
);

#[tokio::test]
async fn the_ip_allowlist_accepts_listed_addresses_and_networks_in_v4_and_v6() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut fenced = new_token(TENANT, "alice", &["orders:read"]);
    fenced.allowed_ips = strings(&["192.0.2.10", "10.0.0.0/8", "2001:db8::/32"]);
    let (token, secret) = app.token(fenced).await;
    assert_eq!(
        token.allowed_ips,
        vec!["10.0.0.0/8", "192.0.2.10", "2001:db8::/32"]
    );

    for allowed_ip in [
        "192.0.2.10",
        "10.200.3.4",
        "2001:db8:1::7",
        "::ffff:10.1.1.1",
    ] {
        let mut check = request(&secret, "orders:read");
        check.client_ip = allowed_ip.to_owned();
        assert!(app.check(check).await.allowed, "{allowed_ip} is allowed");
    }
    for denied_ip in ["192.0.2.11", "11.0.0.1", "2001:db9::1", ""] {
        let mut check = request(&secret, "orders:read");
        check.client_ip = denied_ip.to_owned();
        assert_denied(&app, check, DenyReason::IpNotAllowed, 403).await;
    }
    // The IP check comes before the permission check.
    let mut outside = request(&secret, "billing:read");
    outside.client_ip = "11.0.0.1".to_owned();
    assert_denied(&app, outside, DenyReason::IpNotAllowed, 403).await;
}

#[tokio::test]
async fn roles_add_their_grants_within_the_owner_ceiling() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut client = app.admin_client().await;
    client
        .upsert_role(app.admin(proto::UpsertRoleRequest {
            tenant: TENANT.to_owned(),
            name: "full_access".to_owned(),
            permissions: strings(&["*"]),
        }))
        .await
        .expect("role");
    let mut with_role = new_token(TENANT, "alice", &[]);
    with_role.roles = strings(&["full_access"]);
    let (_, secret) = app.token(with_role).await;

    let response = app.check(request(&secret, "fn:OrderList_Load_Query")).await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(
        response.permissions,
        vec!["fn:OrderList_Load_Query", "orders:*", "products:read"]
    );
    assert_denied(
        &app,
        request(&secret, "billing:read"),
        DenyReason::PermissionDenied,
        403,
    )
    .await;
}

#[tokio::test]
async fn a_rate_limit_update_through_the_mask_is_stored() {
    let app = app_with_alice(Backend::Sqlite).await;
    let (token, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let updated = app
        .admin_client()
        .await
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id,
            rate_limit_per_minute: 5,
            update_mask: Some(FieldMask {
                paths: strings(&["rate_limit_per_minute"]),
            }),
            ..Default::default()
        }))
        .await
        .expect("update")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(updated.rate_limit_per_minute, 5);
}

#[tokio::test]
async fn a_malformed_check_call_is_invalid_argument_naming_the_field() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut check = request("tsk_whatever", "orders:*");
    check.client_ip = "not-an-ip".to_owned();
    assert_eq!(
        refused_fields(&app, check).await,
        vec!["permission", "client_ip"]
    );
}

#[tokio::test]
async fn a_check_naming_several_permissions_needs_every_required_one_and_one_of_the_rest() {
    let app = app_with_alice(Backend::Sqlite).await;
    let (_, secret) = app
        .token(new_token(
            TENANT,
            "alice",
            &["orders:read", "products:read"],
        ))
        .await;
    let query = |all: &[&str], any: &[&str]| proto::CheckRequest {
        all_permissions: strings(all),
        any_permissions: strings(any),
        ..request(&secret, "orders:read")
    };
    assert!(app.check(query(&["products:read"], &[])).await.allowed);
    assert!(
        app.check(query(&[], &["billing:read", "products:read"]))
            .await
            .allowed
    );

    let denied = assert_denied(
        &app,
        query(
            &["orders:write", "products:read"],
            &["billing:read", "admin:read"],
        ),
        DenyReason::PermissionDenied,
        403,
    )
    .await;
    assert_eq!(
        denied.missing_permissions,
        vec!["orders:write", "billing:read", "admin:read"]
    );
    assert!(
        denied
            .message
            .ends_with("missing orders:write; needs one of billing:read, admin:read"),
        "{}",
        denied.message
    );
    assert!(
        denied.permissions.is_empty(),
        "no permissions shown on a deny"
    );
}

#[tokio::test]
async fn a_bad_or_oversized_permission_list_is_invalid_argument_naming_the_entry() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut check = request("tsk_whatever", "orders:read");
    check.all_permissions = strings(&["orders:write", "orders:*"]);
    check.any_permissions = (0..17).map(|n| format!("r{n}:read")).collect();
    assert_eq!(
        refused_fields(&app, check).await,
        vec!["all_permissions[1]", "any_permissions"]
    );
}
