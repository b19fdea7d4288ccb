//! Admin keys and API tokens never stand in for each other: no API token, signing key or
//! retired secret is accepted by any admin method, and an admin key is never an API token, even
//! when the token prefix gives it a token's shape (docs/api.md, admin authentication).

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient as EnvoyClient;
use secrecy::SecretString;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::{Code, Status};

use crate::backend_tests;
use crate::helpers::keys::{random_key, random_master_key};
use crate::helpers::requests::{
    audit_events, check_request, envoy_http_status, envoy_request, signature,
};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with, with_key};

const TENANT: &str = "acme";

backend_tests!(
    api_tokens_signing_keys_and_retired_secrets_are_refused_by_every_admin_method,
    an_admin_key_is_never_an_api_token_even_when_it_has_the_token_shape,
);

/// Every admin method, called with `credential` in place of an admin key: each answer.
async fn every_admin_method_with(
    app: &TestApp,
    credential: &str,
    token_id: &str,
) -> Vec<(&'static str, Status)> {
    let mut client = app.admin_client().await;
    let id = || token_id.to_owned();
    let tenant = || TENANT.to_owned();
    let mut refused = Vec::new();
    macro_rules! call {
        ($name:literal, $method:ident, $message:expr) => {
            if let Err(status) = client.$method(with_key($message, credential)).await {
                refused.push(($name, status));
            } else {
                panic!("{} accepted {credential}", $name);
            }
        };
    }
    call!(
        "CreateToken",
        create_token,
        new_token(TENANT, "alice", &["orders:read"])
    );
    call!("GetToken", get_token, proto::GetTokenRequest { id: id() });
    call!(
        "ListTokens",
        list_tokens,
        proto::ListTokensRequest {
            tenant: tenant(),
            ..Default::default()
        }
    );
    call!(
        "UpdateToken",
        update_token,
        proto::UpdateTokenRequest {
            id: id(),
            name: "renamed".to_owned(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".to_owned()]
            }),
            ..Default::default()
        }
    );
    call!(
        "RotateToken",
        rotate_token,
        proto::RotateTokenRequest {
            id: id(),
            grace_period: None
        }
    );
    call!(
        "RevokeToken",
        revoke_token,
        proto::RevokeTokenRequest { id: id() }
    );
    call!(
        "ListUsage",
        list_usage,
        proto::ListUsageRequest {
            token_id: id(),
            ..Default::default()
        }
    );
    call!(
        "UpsertPrincipal",
        upsert_principal,
        proto::UpsertPrincipalRequest {
            tenant: tenant(),
            id: "mallory".to_owned(),
            permissions: vec!["*".to_owned()],
            ..Default::default()
        }
    );
    call!(
        "GetPrincipal",
        get_principal,
        proto::GetPrincipalRequest {
            tenant: tenant(),
            id: "alice".to_owned()
        }
    );
    call!(
        "UpsertRole",
        upsert_role,
        proto::UpsertRoleRequest {
            tenant: tenant(),
            name: "everything".to_owned(),
            permissions: vec!["*".to_owned()],
        }
    );
    call!(
        "ListRoles",
        list_roles,
        proto::ListRolesRequest { tenant: tenant() }
    );
    call!(
        "SetApiStatus",
        set_api_status,
        proto::SetApiStatusRequest {
            tenant: tenant(),
            online: false,
            message: "taken over".to_owned(),
        }
    );
    call!(
        "GetApiStatus",
        get_api_status,
        proto::GetApiStatusRequest { tenant: tenant() }
    );
    call!(
        "ListAuditEvents",
        list_audit_events,
        proto::ListAuditEventsRequest::default()
    );
    call!(
        "CreateAdminKey",
        create_admin_key,
        proto::CreateAdminKeyRequest {
            name: "escalation".to_owned(),
            role: proto::AdminRole::Owner.into(),
            ..Default::default()
        }
    );
    call!(
        "ListAdminKeys",
        list_admin_keys,
        proto::ListAdminKeysRequest::default()
    );
    let admin_key_id = app.bootstrap_key_id().await;
    call!(
        "GetAdminKey",
        get_admin_key,
        proto::GetAdminKeyRequest {
            id: admin_key_id.clone()
        }
    );
    call!(
        "RevokeAdminKey",
        revoke_admin_key,
        proto::RevokeAdminKeyRequest { id: admin_key_id }
    );
    call!(
        "UpdatePrincipal",
        update_principal,
        proto::UpdatePrincipalRequest {
            tenant: tenant(),
            id: "alice".to_owned(),
            permissions: vec!["*".to_owned()],
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["permissions".to_owned()]
            }),
            ..Default::default()
        }
    );
    call!(
        "ListPrincipals",
        list_principals,
        proto::ListPrincipalsRequest {
            tenant: tenant(),
            ..Default::default()
        }
    );
    call!(
        "GetRole",
        get_role,
        proto::GetRoleRequest {
            tenant: tenant(),
            name: "everything".to_owned()
        }
    );
    call!(
        "DeleteRole",
        delete_role,
        proto::DeleteRoleRequest {
            tenant: tenant(),
            name: "everything".to_owned()
        }
    );
    call!(
        "SetTenantPolicy",
        set_tenant_policy,
        proto::SetTenantPolicyRequest {
            policy: Some(proto::TenantPolicy {
                tenant: tenant(),
                ..Default::default()
            })
        }
    );
    call!(
        "GetTenantPolicy",
        get_tenant_policy,
        proto::GetTenantPolicyRequest { tenant: tenant() }
    );
    call!(
        "ImportTokens",
        import_tokens,
        proto::ImportTokensRequest {
            tenant: tenant(),
            tokens: vec![proto::ImportedToken {
                owner_id: "alice".to_owned(),
                name: "imported".to_owned(),
                secret_sha256: "00".repeat(32),
                ..Default::default()
            }]
        }
    );
    call!(
        "SuspendToken",
        suspend_token,
        proto::SuspendTokenRequest {
            id: id(),
            reason: "taken over".to_owned(),
        }
    );
    call!(
        "ResumeToken",
        resume_token,
        proto::ResumeTokenRequest { id: id() }
    );
    call!(
        "AddCredits",
        add_credits,
        proto::AddCreditsRequest {
            id: id(),
            amount: 1
        }
    );
    call!(
        "CreateWebhook",
        create_webhook,
        proto::CreateWebhookRequest {
            tenant: tenant(),
            url: "https://hooks.example.com/".to_owned(),
            ..Default::default()
        }
    );
    call!(
        "ListWebhooks",
        list_webhooks,
        proto::ListWebhooksRequest {
            tenant: tenant(),
            ..Default::default()
        }
    );
    call!(
        "UpdateWebhook",
        update_webhook,
        proto::UpdateWebhookRequest {
            id: "wh_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_owned(),
            ..Default::default()
        }
    );
    call!(
        "DeleteWebhook",
        delete_webhook,
        proto::DeleteWebhookRequest {
            id: "wh_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_owned(),
        }
    );
    call!(
        "ListWebhookDeliveries",
        list_webhook_deliveries,
        proto::ListWebhookDeliveriesRequest {
            webhook_id: "wh_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_owned(),
            ..Default::default()
        }
    );
    call!(
        "WatchEvents",
        watch_events,
        proto::WatchEventsRequest {
            tenant: tenant(),
            ..Default::default()
        }
    );
    call!(
        "CreatePortalSession",
        create_portal_session,
        proto::CreatePortalSessionRequest {
            tenant: tenant(),
            principal_id: "alice".to_owned(),
            ..Default::default()
        }
    );
    call!(
        "SetPortalBranding",
        set_portal_branding,
        proto::SetPortalBrandingRequest {
            branding: Some(proto::PortalBranding {
                tenant: tenant(),
                ..Default::default()
            })
        }
    );
    call!(
        "GetPortalBranding",
        get_portal_branding,
        proto::GetPortalBrandingRequest { tenant: tenant() }
    );
    refused
}

/// The methods TokenAdminService declares, from the descriptor the server serves: a method
/// added to the service but not to [`every_admin_method_with`] fails the comparison.
fn admin_service_methods() -> Vec<String> {
    use prost::Message;
    let descriptors = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    descriptors
        .file
        .iter()
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "TokenAdminService")
        .expect("TokenAdminService is declared")
        .method
        .iter()
        .map(|method| method.name().to_owned())
        .collect()
}

async fn api_tokens_signing_keys_and_retired_secrets_are_refused_by_every_admin_method(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |settings| {
        settings.master_key = Some(SecretString::from(random_master_key().0));
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let mut signing = new_token(TENANT, "alice", &["orders:read"]);
    signing.require_signature = true;
    let created = app
        .admin_client()
        .await
        .create_token(app.admin(signing))
        .await
        .expect("created")
        .into_inner();
    let token_id = created.token.expect("token").id;
    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token_id.clone(),
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }))
        .await
        .expect("rotated")
        .into_inner();
    let events_before = audit_events(&app).await;

    for credential in [
        &rotated.secret,
        &rotated.signing_key,
        &created.secret,
        &created.signing_key,
    ] {
        let refused = every_admin_method_with(&app, credential, &token_id).await;
        let called: Vec<&str> = refused.iter().map(|(method, _)| *method).collect();
        assert_eq!(
            called,
            admin_service_methods(),
            "every method of the service was called, in order"
        );
        for (method, status) in refused {
            assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        }
    }
    // Still usable as what they are, so the refusals were about their kind, not their state.
    let allowed = app
        .check(proto::CheckRequest {
            signature: Some(signature(
                &created.signing_key,
                chrono::Utc::now().timestamp(),
                "POST /api/v1/orders",
            )),
            ..check_request(TENANT, &created.secret, "orders:read")
        })
        .await;
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(
        audit_events(&app).await,
        events_before,
        "nothing was written"
    );
    let api = app
        .admin_client()
        .await
        .get_api_status(app.admin(proto::GetApiStatusRequest {
            tenant: TENANT.to_owned(),
        }))
        .await
        .expect("status")
        .into_inner();
    assert!(api.status.expect("status").online);
}

async fn an_admin_key_is_never_an_api_token_even_when_it_has_the_token_shape(backend: Backend) {
    // The admin key's own prefix as the token prefix: the bootstrap key is a well-formed token.
    let shaped = random_key("tsa");
    let mut app = spawn_app_with(backend, |settings| {
        settings.token_prefix = "tsa".to_owned();
        settings.admin_keys = vec![SecretString::from(shaped.clone())];
        settings.envoy_unmatched = tessera::config::EnvoyUnmatched::Authenticate;
    })
    .await;
    app.admin_key.clone_from(&shaped);
    app.principal(TENANT, "alice", &["*"]).await;
    let (_, secret) = app.token(new_token(TENANT, "alice", &["*"])).await;
    assert!(
        secret.starts_with("tsa_"),
        "tokens share the admin key's shape"
    );
    // The token is accepted, so the same Check on the admin key fails only for what it is.
    assert!(app.check(check_request(TENANT, &secret, "")).await.allowed);
    let response = app.check(check_request(TENANT, &shaped, "")).await;
    assert!(!response.allowed);
    assert_eq!(response.reason(), DenyReason::TokenUnknown, "{response:?}");

    let mut envoy = EnvoyClient::connect(app.grpc_url.clone())
        .await
        .expect("connects");
    for (credential, expected) in [(&secret, 200), (&shaped, 401)] {
        let bearer = format!("Bearer {credential}");
        let answer = envoy
            .check(envoy_request(
                TENANT,
                "/api/v1/orders",
                [("authorization", bearer.as_str())],
            ))
            .await
            .expect("envoy answers")
            .into_inner();
        assert_eq!(envoy_http_status(&answer), expected, "{answer:?}");
    }
    // And the token, for all its admin-key shape, is no admin key.
    let refused = app
        .admin_client()
        .await
        .list_roles(with_key(proto::ListRolesRequest::default(), &secret))
        .await
        .expect_err("a token as admin key");
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.admin_client()
        .await
        .list_roles(with_key(proto::ListRolesRequest::default(), &shaped))
        .await
        .expect("the admin key works as one");
}
