//! Admin keys as managed, scoped credentials: every TokenAdminService RPC for every role, in and
//! out of the key's tenants; lists and the audit log filtered to them; revocation and expiry on
//! every replica; keys no wider than their creator; rotation without downtime; the audit of
//! who acted; configured keys and the bootstrap key.

use std::collections::BTreeSet;

use prost::Message;
use tessera::proto;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, spawn_app_with, with_key};

type Client = TokenAdminServiceClient<Channel>;

const TENANT: &str = "acme";
const OTHER_TENANT: &str = "globex";
const CONFIGURED_KEY: &str = "configured-admin-key-0123456789";

/// Every RPC of TokenAdminService, from the descriptor compiled from `proto/`: a new RPC shows up
/// here and fails the scope test until it has a case.
fn admin_rpcs() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(tessera::proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    set.file
        .iter()
        .flat_map(|file| file.service.iter())
        .filter(|service| service.name() == "TokenAdminService")
        .flat_map(|service| service.method.iter())
        .map(|method| method.name().to_owned())
        .collect()
}

/// How an RPC meets a tenant outside the key's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The request names the tenant: PERMISSION_DENIED.
    NamesTenant,
    /// The request names a resource by id: NOT_FOUND.
    ById,
    /// A list without a tenant: answers, without the other tenant's entries (checked below).
    Lists,
}

/// What the issue asks of each RPC: the least role allowed, the right a weaker role is told it
/// lacks, and how it reaches another tenant. Written out here, not read from the server's table,
/// so a wrong row there fails.
fn expectation(rpc: &str) -> (proto::AdminRole, &'static str, Reach) {
    use Reach::{ById, Lists, NamesTenant};
    use proto::AdminRole::{Owner, TokenManager, Viewer};
    match rpc {
        "CreateToken" => (TokenManager, "tokens.write", NamesTenant),
        "GetToken" => (Viewer, "read", ById),
        "ListTokens" => (Viewer, "read", NamesTenant),
        "UpdateToken" => (TokenManager, "tokens.write", ById),
        "RotateToken" => (TokenManager, "tokens.write", ById),
        "RevokeToken" => (TokenManager, "tokens.write", ById),
        "ListUsage" => (Viewer, "read", ById),
        "UpsertPrincipal" => (TokenManager, "principals.write", NamesTenant),
        "GetPrincipal" => (Viewer, "read", NamesTenant),
        "UpsertRole" => (TokenManager, "roles.write", NamesTenant),
        "ListRoles" => (Viewer, "read", NamesTenant),
        "SetApiStatus" => (Owner, "api_status.write", NamesTenant),
        "GetApiStatus" => (Viewer, "read", NamesTenant),
        "ListAuditEvents" => (Viewer, "read", NamesTenant),
        "CreateAdminKey" => (Owner, "admin_keys.write", NamesTenant),
        "ListAdminKeys" => (Owner, "admin_keys.read", Lists),
        "GetAdminKey" => (Owner, "admin_keys.read", ById),
        "RevokeAdminKey" => (Owner, "admin_keys.write", ById),
        "UpdatePrincipal" => (TokenManager, "principals.write", NamesTenant),
        "ListPrincipals" => (Viewer, "read", NamesTenant),
        "GetRole" => (Viewer, "read", NamesTenant),
        "DeleteRole" => (TokenManager, "roles.write", NamesTenant),
        "SetTenantPolicy" => (Owner, "tenant_policy.write", NamesTenant),
        "GetTenantPolicy" => (Viewer, "read", NamesTenant),
        "ImportTokens" => (TokenManager, "tokens.write", NamesTenant),
        "SuspendToken" => (TokenManager, "tokens.write", ById),
        "ResumeToken" => (TokenManager, "tokens.write", ById),
        "AddCredits" => (TokenManager, "tokens.write", ById),
        "CreateWebhook" => (Owner, "webhooks.write", NamesTenant),
        "ListWebhooks" => (Viewer, "read", NamesTenant),
        "UpdateWebhook" => (Owner, "webhooks.write", ById),
        "DeleteWebhook" => (Owner, "webhooks.write", ById),
        "ListWebhookDeliveries" => (Viewer, "read", ById),
        "WatchEvents" => (Viewer, "read", NamesTenant),
        "CreatePortalSession" => (TokenManager, "tokens.write", NamesTenant),
        "SetPortalBranding" => (Owner, "portal_branding.write", NamesTenant),
        "GetPortalBranding" => (Viewer, "read", NamesTenant),
        other => panic!("no expectation for TokenAdminService/{other}: add one"),
    }
}

/// What one tenant holds for the calls to act on.
struct Target {
    tenant: String,
    token_id: String,
    admin_key_id: String,
    webhook_id: String,
}

async fn create_key(
    app: &TestApp,
    name: &str,
    tenants: &[&str],
    role: proto::AdminRole,
) -> (proto::AdminKey, String) {
    let created = app
        .admin_client()
        .await
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: name.to_owned(),
            tenants: crate::helpers::strings(tenants),
            role: role.into(),
            ..Default::default()
        }))
        .await
        .expect("admin key created")
        .into_inner();
    (created.admin_key.expect("admin key"), created.secret)
}

async fn target(app: &TestApp, tenant: &str) -> Target {
    app.principal(tenant, "alice", &["*"]).await;
    // With credits, so that AddCredits has something to add to.
    let metered = proto::CreateTokenRequest {
        credits: Some(proto::TokenCredits {
            remaining: 10,
            ..Default::default()
        }),
        ..new_token(tenant, "alice", &["orders:read"])
    };
    let (token, _) = app.token(metered).await;
    let (key, _) = create_key(app, "target", &[tenant], proto::AdminRole::Viewer).await;
    Target {
        tenant: tenant.to_owned(),
        token_id: token.id,
        admin_key_id: key.id,
        webhook_id: fresh_webhook(app, tenant).await,
    }
}

/// Webhooks need the master key (their secrets are sealed with it); their URL is on loopback
/// (nothing listens there), so private URLs are allowed.
fn webhooks_possible(settings: &mut tessera::config::Settings) {
    settings.master_key = Some(secrecy::SecretString::from(
        "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
    ));
    settings.webhook_allow_private_urls = true;
    // CreatePortalSession makes URLs on the HTTP listener.
    settings.http_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
}

/// A new webhook in `tenant`, made with the bootstrap key, for an event type these tests never
/// cause: no delivery is queued for it. Its id.
async fn fresh_webhook(app: &TestApp, tenant: &str) -> String {
    app.admin_client()
        .await
        .create_webhook(app.admin(proto::CreateWebhookRequest {
            tenant: tenant.to_owned(),
            url: "http://127.0.0.1:9/hook".to_owned(),
            event_types: vec!["webhook.failing".to_owned()],
            description: String::new(),
        }))
        .await
        .expect("webhook created")
        .into_inner()
        .webhook
        .expect("webhook")
        .id
}

/// One call of `rpc` with `key` at `target`; resources a call destroys are made fresh for it.
async fn call(
    app: &TestApp,
    client: &mut Client,
    key: &str,
    rpc: &str,
    target: &Target,
) -> Result<(), Status> {
    let tenant = target.tenant.clone();
    match rpc {
        "CreateToken" => client
            .create_token(with_key(new_token(&tenant, "alice", &["orders:read"]), key))
            .await
            .map(drop),
        "GetToken" => client
            .get_token(with_key(
                proto::GetTokenRequest {
                    id: target.token_id.clone(),
                },
                key,
            ))
            .await
            .map(drop),
        "ListTokens" => client
            .list_tokens(with_key(
                proto::ListTokensRequest {
                    tenant,
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "UpdateToken" => client
            .update_token(with_key(
                proto::UpdateTokenRequest {
                    id: target.token_id.clone(),
                    name: "renamed".to_owned(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["name".to_owned()],
                    }),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "RotateToken" => client
            .rotate_token(with_key(
                proto::RotateTokenRequest {
                    id: target.token_id.clone(),
                    grace_period: None,
                },
                key,
            ))
            .await
            .map(drop),
        "RevokeToken" => {
            let (fresh, _) = app
                .token(new_token(&tenant, "alice", &["orders:read"]))
                .await;
            client
                .revoke_token(with_key(proto::RevokeTokenRequest { id: fresh.id }, key))
                .await
                .map(drop)
        }
        "ListUsage" => client
            .list_usage(with_key(
                proto::ListUsageRequest {
                    token_id: target.token_id.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "UpsertPrincipal" => client
            .upsert_principal(with_key(
                proto::UpsertPrincipalRequest {
                    tenant,
                    id: "bob".to_owned(),
                    permissions: vec!["orders:read".to_owned()],
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "GetPrincipal" => client
            .get_principal(with_key(
                proto::GetPrincipalRequest {
                    tenant,
                    id: "alice".to_owned(),
                },
                key,
            ))
            .await
            .map(drop),
        "UpsertRole" => client
            .upsert_role(with_key(
                proto::UpsertRoleRequest {
                    tenant,
                    name: "reporting".to_owned(),
                    permissions: vec!["orders:read".to_owned()],
                },
                key,
            ))
            .await
            .map(drop),
        "ListRoles" => client
            .list_roles(with_key(proto::ListRolesRequest { tenant }, key))
            .await
            .map(drop),
        "SetApiStatus" => client
            .set_api_status(with_key(
                proto::SetApiStatusRequest {
                    tenant,
                    online: true,
                    message: String::new(),
                },
                key,
            ))
            .await
            .map(drop),
        "GetApiStatus" => client
            .get_api_status(with_key(proto::GetApiStatusRequest { tenant }, key))
            .await
            .map(drop),
        "ListAuditEvents" => client
            .list_audit_events(with_key(
                proto::ListAuditEventsRequest {
                    tenant,
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "CreateAdminKey" => client
            .create_admin_key(with_key(
                proto::CreateAdminKeyRequest {
                    name: "made by a scoped key".to_owned(),
                    tenants: vec![tenant],
                    role: proto::AdminRole::Viewer.into(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "ListAdminKeys" => {
            let listed = client
                .list_admin_keys(with_key(
                    proto::ListAdminKeysRequest {
                        page_size: 1000,
                        ..Default::default()
                    },
                    key,
                ))
                .await?
                .into_inner();
            // Reach::Lists: the other tenant's key is never among them.
            let other = listed
                .admin_keys
                .iter()
                .find(|listed| listed.tenants.iter().any(|name| name == OTHER_TENANT));
            assert!(other.is_none(), "another tenant's key listed: {other:?}");
            Ok(())
        }
        "GetAdminKey" => client
            .get_admin_key(with_key(
                proto::GetAdminKeyRequest {
                    id: target.admin_key_id.clone(),
                },
                key,
            ))
            .await
            .map(drop),
        "RevokeAdminKey" => {
            let (fresh, _) =
                create_key(app, "to revoke", &[&tenant], proto::AdminRole::Viewer).await;
            client
                .revoke_admin_key(with_key(proto::RevokeAdminKeyRequest { id: fresh.id }, key))
                .await
                .map(drop)
        }
        "UpdatePrincipal" => client
            .update_principal(with_key(
                proto::UpdatePrincipalRequest {
                    tenant,
                    id: "alice".to_owned(),
                    disabled: false,
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["disabled".to_owned()],
                    }),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "ListPrincipals" => client
            .list_principals(with_key(
                proto::ListPrincipalsRequest {
                    tenant,
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "GetRole" => {
            let name = fresh_role(app, &tenant).await;
            client
                .get_role(with_key(proto::GetRoleRequest { tenant, name }, key))
                .await
                .map(drop)
        }
        "DeleteRole" => {
            let name = fresh_role(app, &tenant).await;
            client
                .delete_role(with_key(proto::DeleteRoleRequest { tenant, name }, key))
                .await
                .map(drop)
        }
        // A policy without rules, so the calls after it are unaffected.
        "SetTenantPolicy" => client
            .set_tenant_policy(with_key(
                proto::SetTenantPolicyRequest {
                    policy: Some(proto::TenantPolicy {
                        tenant,
                        ..Default::default()
                    }),
                },
                key,
            ))
            .await
            .map(drop),
        "SuspendToken" => client
            .suspend_token(with_key(
                proto::SuspendTokenRequest {
                    id: target.token_id.clone(),
                    reason: "audit".to_owned(),
                },
                key,
            ))
            .await
            .map(drop),
        "GetTenantPolicy" => client
            .get_tenant_policy(with_key(proto::GetTenantPolicyRequest { tenant }, key))
            .await
            .map(drop),
        "ImportTokens" => {
            let secret = format!("legacy-{}", ulid::Ulid::new());
            client
                .import_tokens(with_key(
                    proto::ImportTokensRequest {
                        tenant,
                        tokens: vec![proto::ImportedToken {
                            owner_id: "alice".to_owned(),
                            name: "imported".to_owned(),
                            secret_sha256: tessera::domain::token::SecretHash::of(&secret).to_hex(),
                            ..Default::default()
                        }],
                    },
                    key,
                ))
                .await
                .map(drop)
        }
        "ResumeToken" => client
            .resume_token(with_key(
                proto::ResumeTokenRequest {
                    id: target.token_id.clone(),
                },
                key,
            ))
            .await
            .map(drop),
        "AddCredits" => client
            .add_credits(with_key(
                proto::AddCreditsRequest {
                    id: target.token_id.clone(),
                    amount: 1,
                },
                key,
            ))
            .await
            .map(drop),
        "CreateWebhook" => client
            .create_webhook(with_key(
                proto::CreateWebhookRequest {
                    tenant,
                    url: "http://127.0.0.1:9/made".to_owned(),
                    event_types: vec!["webhook.failing".to_owned()],
                    description: String::new(),
                },
                key,
            ))
            .await
            .map(drop),
        "ListWebhooks" => client
            .list_webhooks(with_key(
                proto::ListWebhooksRequest {
                    tenant,
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "UpdateWebhook" => client
            .update_webhook(with_key(
                proto::UpdateWebhookRequest {
                    id: target.webhook_id.clone(),
                    description: "changed".to_owned(),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["description".to_owned()],
                    }),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "DeleteWebhook" => {
            let fresh = fresh_webhook(app, &tenant).await;
            client
                .delete_webhook(with_key(proto::DeleteWebhookRequest { id: fresh }, key))
                .await
                .map(drop)
        }
        "ListWebhookDeliveries" => client
            .list_webhook_deliveries(with_key(
                proto::ListWebhookDeliveriesRequest {
                    webhook_id: target.webhook_id.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "WatchEvents" => client
            .watch_events(with_key(
                proto::WatchEventsRequest {
                    tenant: target.tenant.clone(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "CreatePortalSession" => client
            .create_portal_session(with_key(
                proto::CreatePortalSessionRequest {
                    tenant,
                    principal_id: "alice".to_owned(),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(drop),
        "SetPortalBranding" => client
            .set_portal_branding(with_key(
                proto::SetPortalBrandingRequest {
                    branding: Some(proto::PortalBranding {
                        tenant,
                        product_name: "Acme".to_owned(),
                        ..Default::default()
                    }),
                },
                key,
            ))
            .await
            .map(drop),
        "GetPortalBranding" => client
            .get_portal_branding(with_key(proto::GetPortalBrandingRequest { tenant }, key))
            .await
            .map(drop),
        other => panic!("no call for TokenAdminService/{other}: add one"),
    }
}

/// A new role in `tenant`, made with the bootstrap key; its name.
async fn fresh_role(app: &TestApp, tenant: &str) -> String {
    let name = format!("role-{}", ulid::Ulid::new()).to_lowercase();
    app.admin_client()
        .await
        .upsert_role(app.admin(proto::UpsertRoleRequest {
            tenant: tenant.to_owned(),
            name: name.clone(),
            permissions: vec!["orders:read".to_owned()],
        }))
        .await
        .expect("role upserted");
    name
}

/// The ErrorInfo reason and metadata a status carries.
fn error_info(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

backend_tests!(
    every_rpc_is_enforced_for_every_role_in_and_out_of_the_keys_tenants,
    a_scoped_keys_lists_and_audit_log_show_only_its_tenants,
    an_admin_key_is_never_wider_than_the_key_that_creates_it,
    a_revoked_or_expired_admin_key_is_unauthenticated,
    an_admin_key_is_rotated_without_downtime_and_both_steps_are_audited,
);

async fn every_rpc_is_enforced_for_every_role_in_and_out_of_the_keys_tenants(backend: Backend) {
    let app = spawn_app_with(backend, webhooks_possible).await;
    let inside = target(&app, TENANT).await;
    let outside = target(&app, OTHER_TENANT).await;
    let roles = [
        proto::AdminRole::Viewer,
        proto::AdminRole::TokenManager,
        proto::AdminRole::Owner,
    ];
    let mut keys = Vec::new();
    for role in roles {
        let (_, secret) = create_key(&app, role.as_str_name(), &[TENANT], role).await;
        keys.push((role, secret));
    }
    let rpcs = admin_rpcs();
    assert!(rpcs.len() >= 18, "{rpcs:?}");
    let mut client = app.admin_client().await;
    let mut checked = 0;
    for rpc in &rpcs {
        let (least, right, reach) = expectation(rpc);
        for (role, key) in &keys {
            for (target, in_scope) in [(&inside, true), (&outside, false)] {
                let case = format!("{rpc} as {} in {}", role.as_str_name(), target.tenant);
                let answer = call(&app, &mut client, key, rpc, target).await;
                if (*role as i32) < (least as i32) {
                    let status = answer.expect_err(&case);
                    assert_eq!(status.code(), Code::PermissionDenied, "{case}: {status:?}");
                    let (reason, metadata) = error_info(&status);
                    assert_eq!(reason, "MISSING_RIGHT", "{case}");
                    assert_eq!(
                        metadata.get("right").map(String::as_str),
                        Some(right),
                        "{case}"
                    );
                } else if in_scope || reach == Reach::Lists {
                    answer.unwrap_or_else(|status| panic!("{case}: {status:?}"));
                } else if reach == Reach::ById {
                    let status = answer.expect_err(&case);
                    assert_eq!(status.code(), Code::NotFound, "{case}: {status:?}");
                } else {
                    let status = answer.expect_err(&case);
                    assert_eq!(status.code(), Code::PermissionDenied, "{case}: {status:?}");
                    let (reason, metadata) = error_info(&status);
                    assert_eq!(reason, "TENANT_NOT_IN_SCOPE", "{case}");
                    assert_eq!(
                        metadata.get("tenant").map(String::as_str),
                        Some(OTHER_TENANT),
                        "{case}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, rpcs.len() * 6);
}

async fn a_scoped_keys_lists_and_audit_log_show_only_its_tenants(backend: Backend) {
    let app = spawn_app_with(backend, webhooks_possible).await;
    let inside = target(&app, TENANT).await;
    let outside = target(&app, OTHER_TENANT).await;
    let (_, owner) = create_key(&app, "acme owner", &[TENANT], proto::AdminRole::Owner).await;
    let mut client = app.admin_client().await;

    let events = client
        .list_audit_events(with_key(proto::ListAuditEventsRequest::default(), &owner))
        .await
        .expect("audit")
        .into_inner()
        .events;
    assert!(
        events.iter().any(|event| event.token_id == inside.token_id),
        "its own tenant's events: {events:?}"
    );
    assert!(
        events.iter().all(|event| event.tenant == TENANT),
        "only its tenant: {events:?}"
    );
    let everything = crate::helpers::requests::all_audit_events(&app).await;
    assert!(
        everything
            .iter()
            .any(|event| event.token_id == outside.token_id),
        "an all-tenant key sees every tenant"
    );

    let keys = client
        .list_admin_keys(with_key(proto::ListAdminKeysRequest::default(), &owner))
        .await
        .expect("keys")
        .into_inner()
        .admin_keys;
    let ids: Vec<&str> = keys.iter().map(|key| key.id.as_str()).collect();
    assert!(ids.contains(&inside.admin_key_id.as_str()), "{ids:?}");
    assert!(!ids.contains(&outside.admin_key_id.as_str()), "{ids:?}");
    assert!(
        keys.iter().all(|key| key.tenants == [TENANT]),
        "neither the other tenant's keys nor all-tenant ones: {keys:?}"
    );

    // Paging through the filtered list one key at a time finds the same keys.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_admin_keys(with_key(
                proto::ListAdminKeysRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                &owner,
            ))
            .await
            .expect("page")
            .into_inner();
        paged.extend(page.admin_keys.into_iter().map(|key| key.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(paged, ids);
}

async fn an_admin_key_is_never_wider_than_the_key_that_creates_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (_, owner) = create_key(&app, "acme owner", &[TENANT], proto::AdminRole::Owner).await;
    let mut client = app.admin_client().await;
    let request = |tenants: &[&str]| proto::CreateAdminKeyRequest {
        name: "wider".to_owned(),
        tenants: crate::helpers::strings(tenants),
        role: proto::AdminRole::Owner.into(),
        ..Default::default()
    };

    let every_tenant = client
        .create_admin_key(with_key(request(&[]), &owner))
        .await
        .expect_err("an all-tenant key from a scoped one");
    assert_eq!(every_tenant.code(), Code::PermissionDenied);
    assert_eq!(error_info(&every_tenant).0, "ALL_TENANTS_REQUIRED");
    let more_tenants = client
        .create_admin_key(with_key(request(&[TENANT, OTHER_TENANT]), &owner))
        .await
        .expect_err("a tenant beyond its own");
    assert_eq!(error_info(&more_tenants).0, "TENANT_NOT_IN_SCOPE");
    let global_switch = client
        .set_api_status(with_key(
            proto::SetApiStatusRequest {
                tenant: "*".to_owned(),
                online: false,
                message: String::new(),
            },
            &owner,
        ))
        .await
        .expect_err("the global switch from a scoped key");
    assert_eq!(global_switch.code(), Code::PermissionDenied);
    assert_eq!(error_info(&global_switch).0, "ALL_TENANTS_REQUIRED");

    // Within its tenants it may hand out keys, and an all-tenant owner may do anything.
    let (narrow, _) = {
        let created = client
            .create_admin_key(with_key(request(&[TENANT]), &owner))
            .await
            .expect("a key as wide as its own")
            .into_inner();
        (created.admin_key.expect("key"), created.secret)
    };
    assert_eq!(narrow.tenants, [TENANT]);
    client
        .set_api_status(app.admin(proto::SetApiStatusRequest {
            tenant: "*".to_owned(),
            online: true,
            message: String::new(),
        }))
        .await
        .expect("the bootstrap key is an all-tenant owner");

    // Bad input is refused naming the field, and nothing is stored.
    for (bad, field) in [
        (
            proto::CreateAdminKeyRequest {
                name: "no role".to_owned(),
                ..Default::default()
            },
            "role",
        ),
        (
            proto::CreateAdminKeyRequest {
                name: "wildcard".to_owned(),
                tenants: vec!["*".to_owned()],
                role: proto::AdminRole::Viewer.into(),
                ..Default::default()
            },
            "tenants",
        ),
        (
            proto::CreateAdminKeyRequest {
                role: proto::AdminRole::Viewer.into(),
                ..Default::default()
            },
            "name",
        ),
    ] {
        let status = client
            .create_admin_key(app.admin(bad))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        let violations = status.get_details_bad_request().expect("field violations");
        assert!(
            violations
                .field_violations
                .iter()
                .any(|violation| violation.field == field),
            "{field}: {violations:?}"
        );
    }
}

async fn a_revoked_or_expired_admin_key_is_unauthenticated(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let (key, secret) = create_key(&app, "short lived", &[], proto::AdminRole::Viewer).await;
    let mut client = app.admin_client().await;
    let list_roles = || with_key(proto::ListRolesRequest::default(), &secret);
    client
        .list_roles(list_roles())
        .await
        .expect("works at first");

    let revoked = client
        .revoke_admin_key(app.admin(proto::RevokeAdminKeyRequest { id: key.id.clone() }))
        .await
        .expect("revoked")
        .into_inner()
        .admin_key
        .expect("key");
    assert!(revoked.revoked_at.is_some());
    let status = client
        .list_roles(list_roles())
        .await
        .expect_err("revoked key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let again = client
        .revoke_admin_key(app.admin(proto::RevokeAdminKeyRequest { id: key.id }))
        .await
        .expect("revoking twice is no error")
        .into_inner()
        .admin_key
        .expect("key");
    assert_eq!(again.revoked_at, revoked.revoked_at, "unchanged");

    let expiring = client
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: "one second".to_owned(),
            role: proto::AdminRole::Viewer.into(),
            ttl: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .expect("created")
        .into_inner();
    client
        .list_roles(with_key(
            proto::ListRolesRequest::default(),
            &expiring.secret,
        ))
        .await
        .expect("works before its expiry");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let status = client
        .list_roles(with_key(
            proto::ListRolesRequest::default(),
            &expiring.secret,
        ))
        .await
        .expect_err("expired key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

async fn an_admin_key_is_rotated_without_downtime_and_both_steps_are_audited(backend: Backend) {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["*"]).await;
    let (old, old_secret) =
        create_key(&app, "acme backend", &[TENANT], proto::AdminRole::Owner).await;
    let mut client = app.admin_client().await;
    let list_tokens = |key: &str| {
        with_key(
            proto::ListTokensRequest {
                tenant: TENANT.to_owned(),
                ..Default::default()
            },
            key,
        )
    };
    client
        .list_tokens(list_tokens(&old_secret))
        .await
        .expect("old key");

    // The backend makes its own successor, switches to it, then revokes the old one.
    let mut create = with_key(
        proto::CreateAdminKeyRequest {
            name: "acme backend 2".to_owned(),
            tenants: vec![TENANT.to_owned()],
            role: proto::AdminRole::Owner.into(),
            ..Default::default()
        },
        &old_secret,
    );
    create
        .metadata_mut()
        .insert("x-tessera-actor", "deploy-bot".parse().expect("ascii"));
    let created = client
        .create_admin_key(create)
        .await
        .expect("successor")
        .into_inner();
    let new = created.admin_key.expect("key");
    assert!(created.secret.starts_with("tsa_"));
    assert_eq!(new.created_by, old.id);
    assert!(
        new.secret_hint
            .ends_with(&created.secret[created.secret.len() - 4..])
    );
    client
        .list_tokens(list_tokens(&old_secret))
        .await
        .expect("old key still works");
    client
        .list_tokens(list_tokens(&created.secret))
        .await
        .expect("new key works");
    let mut revoke = with_key(
        proto::RevokeAdminKeyRequest { id: old.id.clone() },
        &created.secret,
    );
    revoke
        .metadata_mut()
        .insert("x-tessera-actor", "deploy-bot".parse().expect("ascii"));
    client.revoke_admin_key(revoke).await.expect("old revoked");
    assert_eq!(
        client
            .list_tokens(list_tokens(&old_secret))
            .await
            .expect_err("old key")
            .code(),
        Code::Unauthenticated
    );
    client
        .list_tokens(list_tokens(&created.secret))
        .await
        .expect("new key still works");

    let events = client
        .list_audit_events(with_key(
            proto::ListAuditEventsRequest {
                tenant: TENANT.to_owned(),
                ..Default::default()
            },
            &created.secret,
        ))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let created_event = events
        .iter()
        .find(|event| event.action == "admin_key.create" && event.summary.contains(&new.id))
        .expect("the creation is audited");
    assert_eq!(created_event.admin_key, old.id, "the key that acted");
    assert_eq!(created_event.actor, "deploy-bot", "the actor it claimed");
    let revoked_event = events
        .iter()
        .find(|event| event.action == "admin_key.revoke")
        .expect("the revocation is audited");
    assert_eq!(revoked_event.admin_key, new.id);
    assert_eq!(revoked_event.actor, "deploy-bot");
    for event in &events {
        assert!(!event.summary.contains(&created.secret), "{event:?}");
        assert!(!event.summary.contains(&old_secret), "{event:?}");
    }
    let listed = client
        .get_admin_key(app.admin(proto::GetAdminKeyRequest { id: new.id }))
        .await
        .expect("read")
        .into_inner()
        .admin_key
        .expect("key");
    assert!(listed.last_used_at.is_some(), "its use is recorded");
}

/// A key revoked on one replica is refused by another that had it in memory, through the same
/// invalidation path as a token's revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_key_is_refused_on_every_replica() {
    let app = spawn_app_on(Backend::Postgres).await;
    let replica = app.spawn_replica().await;
    let (key, secret) = create_key(&app, "ci", &[TENANT], proto::AdminRole::Viewer).await;
    let mut on_replica = replica.admin_client().await;
    let list_roles = || {
        with_key(
            proto::ListRolesRequest {
                tenant: TENANT.to_owned(),
            },
            &secret,
        )
    };
    // The replica now holds the key in memory.
    on_replica.list_roles(list_roles()).await.expect("works");
    on_replica.list_roles(list_roles()).await.expect("works");

    app.admin_client()
        .await
        .revoke_admin_key(app.admin(proto::RevokeAdminKeyRequest { id: key.id }))
        .await
        .expect("revoked");

    // Well under the 60 s the replica keeps a key, the only other way it would learn of it.
    let bound = std::time::Duration::from_secs(10);
    let started = std::time::Instant::now();
    loop {
        match on_replica.list_roles(list_roles()).await {
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                break;
            }
            Ok(_) => assert!(
                started.elapsed() < bound,
                "the replica still accepts a revoked admin key"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Keys of `TESSERA_ADMIN_KEYS` are all-tenant owners, and while they are set the stored
/// bootstrap key stops working; other stored keys keep theirs.
#[tokio::test]
async fn configured_keys_work_everywhere_and_turn_the_bootstrap_key_off() {
    let app = spawn_app_on(Backend::Postgres).await;
    let (_, scoped) = create_key(&app, "ci", &[TENANT], proto::AdminRole::Viewer).await;
    let replica = app
        .spawn_replica_with(|settings| {
            settings.admin_keys = vec![CONFIGURED_KEY.to_owned().into()];
        })
        .await;
    let mut client = replica.admin_client().await;

    let status = client
        .list_roles(replica.admin(proto::ListRolesRequest::default()))
        .await
        .expect_err("the bootstrap key");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("TESSERA_ADMIN_KEYS"),
        "{status:?}"
    );
    client
        .list_roles(with_key(
            proto::ListRolesRequest {
                tenant: TENANT.to_owned(),
            },
            &scoped,
        ))
        .await
        .expect("a created key keeps working");
    client
        .set_api_status(with_key(
            proto::SetApiStatusRequest {
                tenant: "*".to_owned(),
                online: true,
                message: String::new(),
            },
            CONFIGURED_KEY,
        ))
        .await
        .expect("a configured key is an owner of every tenant");
    let created = client
        .create_admin_key(with_key(
            proto::CreateAdminKeyRequest {
                name: "made by an operator".to_owned(),
                role: proto::AdminRole::Owner.into(),
                ..Default::default()
            },
            CONFIGURED_KEY,
        ))
        .await
        .expect("a configured key creates all-tenant keys")
        .into_inner();
    let fingerprint = format!(
        "admin-key:{}",
        &tessera::domain::token::SecretHash::of(CONFIGURED_KEY).to_hex()[..8]
    );
    assert_eq!(created.admin_key.expect("key").created_by, fingerprint);
}

#[tokio::test]
async fn the_bootstrap_key_is_a_listed_all_tenant_owner_that_can_be_revoked() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let keys = app
        .admin_client()
        .await
        .list_admin_keys(app.admin(proto::ListAdminKeysRequest::default()))
        .await
        .expect("listed")
        .into_inner()
        .admin_keys;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let bootstrap = &keys[0];
    assert_eq!(bootstrap.created_by, "bootstrap");
    assert_eq!(bootstrap.role(), proto::AdminRole::Owner);
    assert!(bootstrap.tenants.is_empty(), "every tenant");
    assert!(bootstrap.expires_at.is_none());
    assert!(
        bootstrap
            .secret_hint
            .ends_with(&app.admin_key[app.admin_key.len() - 4..])
    );
}
