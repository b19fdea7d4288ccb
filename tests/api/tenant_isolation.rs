//! A tenant's token is never accepted for another tenant: not by Check under any other tenant
//! name, not when the other tenant has a principal and a role of the same names, not through
//! Envoy by route or by header, and not in the other tenant's admin reads.

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient as EnvoyClient;
use tessera::proto;
use tessera::proto::DenyReason;

use crate::backend_tests;
use crate::helpers::requests::{check_request, envoy_http_status, envoy_request};
use crate::helpers::{Backend, new_token, spawn_app_with};

const TENANT: &str = "acme";
const OTHER_TENANT: &str = "globex";

backend_tests!(a_tenants_token_is_never_accepted_for_another_tenant);

async fn a_tenants_token_is_never_accepted_for_another_tenant(backend: Backend) {
    let app = spawn_app_with(backend, |settings| {
        settings.envoy_unmatched = tessera::config::EnvoyUnmatched::Authenticate;
        settings.envoy_tenant_header = Some("x-tenant".to_owned());
    })
    .await;
    // The same principal id and role name in the other tenant, with more permissions there.
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app.principal(OTHER_TENANT, "alice", &["*"]).await;
    for (tenant, grants) in [(TENANT, "orders:read"), (OTHER_TENANT, "*")] {
        app.admin_client()
            .await
            .upsert_role(app.admin(proto::UpsertRoleRequest {
                tenant: tenant.to_owned(),
                name: "reporting".to_owned(),
                permissions: vec![grants.to_owned()],
            }))
            .await
            .expect("role");
    }
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.roles = vec!["reporting".to_owned()];
    let (token, secret) = app.token(request).await;
    let (_, other_secret) = app.token(new_token(OTHER_TENANT, "alice", &["*"])).await;

    // Accepted in its own tenant (and now cached), so every refusal below is the tenant's doing.
    assert!(
        app.check(check_request(TENANT, &secret, "orders:read"))
            .await
            .allowed
    );
    assert!(
        app.check(check_request(OTHER_TENANT, &other_secret, "billing:read"))
            .await
            .allowed
    );
    for tenant in [OTHER_TENANT, "", "default", "ACME", "acme2", "acm"] {
        for permission in ["", "orders:read", "billing:read"] {
            let response = app.check(check_request(tenant, &secret, permission)).await;
            assert!(!response.allowed, "{tenant:?} {permission:?}: {response:?}");
            assert_eq!(response.reason(), DenyReason::TenantMismatch, "{tenant:?}");
            assert_eq!(response.http_status, 401);
            assert!(response.permissions.is_empty(), "{response:?}");
        }
    }
    let response = app
        .check(check_request(TENANT, &other_secret, "orders:read"))
        .await;
    assert_eq!(response.reason(), DenyReason::TenantMismatch);

    // The other tenant's principal of the same id being disabled changes nothing here.
    app.admin_client()
        .await
        .upsert_principal(app.admin(proto::UpsertPrincipalRequest {
            tenant: OTHER_TENANT.to_owned(),
            id: "alice".to_owned(),
            disabled: true,
            ..Default::default()
        }))
        .await
        .expect("disabled");
    assert!(
        app.check(check_request(TENANT, &secret, "orders:read"))
            .await
            .allowed
    );

    // Through Envoy: the route's tenant, and the client's tenant header when the route sets none.
    let mut envoy = EnvoyClient::connect(app.grpc_url.clone())
        .await
        .expect("connects");
    let bearer = format!("Bearer {secret}");
    let on_route = |tenant: &str| {
        envoy_request(
            tenant,
            "/api/v1/orders",
            [("authorization", bearer.as_str())],
        )
    };
    let by_header = |tenant: &str| {
        let mut request = envoy_request(
            TENANT,
            "/api/v1/orders",
            [("authorization", bearer.as_str()), ("x-tenant", tenant)],
        );
        if let Some(attributes) = request.attributes.as_mut() {
            attributes.context_extensions.clear();
        }
        request
    };
    let route_beats_header = {
        let mut request = on_route(OTHER_TENANT);
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|attributes| attributes.request.as_mut())
            .and_then(|request| request.http.as_mut())
        {
            http.headers
                .insert("x-tenant".to_owned(), TENANT.to_owned());
        }
        request
    };
    for (label, request, expected) in [
        ("own route", on_route(TENANT), 200),
        ("own tenant header", by_header(TENANT), 200),
        ("other route", on_route(OTHER_TENANT), 401),
        ("other tenant header", by_header(OTHER_TENANT), 401),
        ("other route, own header", route_beats_header, 401),
    ] {
        let answer = envoy
            .check(request)
            .await
            .expect("envoy answers")
            .into_inner();
        assert_eq!(envoy_http_status(&answer), expected, "{label}: {answer:?}");
    }

    // Admin reads of the other tenant do not show the token either.
    let listed = app
        .admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: OTHER_TENANT.to_owned(),
            include_revoked: true,
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tokens.len(), 1, "only the other tenant's own token");
    assert!(listed.tokens.iter().all(|listed| listed.id != token.id));
}
