//! CreateToken, GetToken, ListTokens, UpdateToken, RotateToken, RevokeToken and friends, through
//! the real server and the generated client.

use prost_types::{Duration, FieldMask, Timestamp};
use tessera::proto;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::requests::{assert_reason, violated_fields};
use crate::helpers::{
    Backend, TestApp, new_token, spawn_app, spawn_app_on, spawn_app_with, strings,
};

const TENANT: &str = "acme";

async fn app_with_owner(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*", "products:read"])
        .await;
    app
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn a_created_token_works_at_once_and_reads_back_without_its_secret(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.description = "deploys from CI".to_owned();
    let (token, secret) = app.token(request).await;

    assert!(secret.starts_with("tsk_"));
    assert_eq!(secret.len(), 40);
    assert!(token.id.starts_with("tok_"));
    assert_eq!(token.state(), proto::TokenState::Active);
    assert_eq!(token.secret_hint, format!("tsk_…{}", &secret[36..]));
    let expires_in = token.expires_at.as_ref().expect("expiry").seconds - now_seconds();
    assert!(
        (365 * 86_400 - 60..=365 * 86_400).contains(&expires_in),
        "default expiry is one year: {expires_in}"
    );

    let read = app
        .admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("get")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(read.name, "test token");
    assert_eq!(read.description, "deploys from CI");
    assert_eq!(read.permissions, vec!["orders:read"]);
    assert!(!format!("{read:?}").contains(&secret));

    let decision = app
        .check(proto::CheckRequest {
            token: secret,
            tenant: TENANT.to_owned(),
            permission: "orders:read".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(decision.allowed);
    assert_eq!(decision.token_id, token.id);
}

async fn the_owner_token_limit_holds_under_concurrent_creates(backend: Backend) {
    let app = spawn_app_with(backend, |settings| settings.max_tokens_per_owner = 3).await;
    app.principal(TENANT, "alice", &["orders:read"]).await;
    let mut attempts = Vec::new();
    for _ in 0..12 {
        let mut client = app.admin_client().await;
        let request = app.admin(new_token(TENANT, "alice", &["orders:read"]));
        attempts.push(tokio::spawn(
            async move { client.create_token(request).await },
        ));
    }
    let mut created = 0;
    let mut exhausted = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(_) => created += 1,
            Err(status) if status.code() == Code::ResourceExhausted => exhausted += 1,
            Err(status) => panic!("unexpected status: {status:?}"),
        }
    }
    assert_eq!((created, exhausted), (3, 9));
}

async fn rotation_keeps_the_id_and_retires_the_old_secret_at_once(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.ttl = Some(Duration {
        seconds: 30 * 86_400,
        nanos: 0,
    });
    let (token, old_secret) = app.token(request).await;

    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: None,
        }))
        .await
        .expect("rotate")
        .into_inner();
    let new_token_record = rotated.token.expect("token");
    assert_eq!(new_token_record.id, token.id);
    assert_ne!(rotated.secret, old_secret);
    assert!(new_token_record.rotated_at.is_some());
    let window = new_token_record.expires_at.expect("expiry").seconds - now_seconds();
    assert!(
        (30 * 86_400 - 60..=30 * 86_400).contains(&window),
        "window reset to 30 days: {window}"
    );

    let check = |secret: String| proto::CheckRequest {
        token: secret,
        tenant: TENANT.to_owned(),
        ..Default::default()
    };
    assert!(app.check(check(rotated.secret.clone())).await.allowed);
    let old = app.check(check(old_secret)).await;
    assert!(!old.allowed);
    assert_eq!(old.reason(), proto::DenyReason::TokenRevoked);
    assert_eq!(old.token_id, token.id);
}

async fn a_revoked_token_cannot_be_rotated_or_updated_and_revoking_it_again_changes_nothing(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let mut client = app.admin_client().await;
    let revoked = client
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("revoke")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(revoked.state(), proto::TokenState::Revoked);
    assert!(revoked.revoked_at.is_some());

    let rotate = client
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: None,
        }))
        .await
        .expect_err("rotate revoked");
    assert_eq!(rotate.code(), Code::FailedPrecondition);
    let update = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            name: "renamed".to_owned(),
            update_mask: Some(FieldMask {
                paths: strings(&["name"]),
            }),
            ..Default::default()
        }))
        .await
        .expect_err("update revoked");
    assert_eq!(update.code(), Code::FailedPrecondition);
    // Revoking again is idempotent: OK, the token unchanged.
    let again = client
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("revoke twice")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(again, revoked);

    let decision = app
        .check(proto::CheckRequest {
            token: secret,
            tenant: TENANT.to_owned(),
            ..Default::default()
        })
        .await;
    assert_eq!(decision.reason(), proto::DenyReason::TokenRevoked);
    assert_eq!(decision.http_status, 401);
}

async fn list_tokens_pages_through_every_token_once(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.token(new_token(TENANT, "alice", &[])).await.0.id);
    }
    let mut client = app.admin_client().await;
    client
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: ids[4].clone() }))
        .await
        .expect("revoke");

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_tokens(app.admin(proto::ListTokensRequest {
                tenant: TENANT.to_owned(),
                page_size: 2,
                page_token: page_token.clone(),
                include_revoked: true,
                ..Default::default()
            }))
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        seen.extend(page.tokens.into_iter().map(|token| token.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let live = client
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            owner_id: "alice".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(live.tokens.len(), 4, "revoked tokens are hidden by default");
}

backend_tests!(
    a_created_token_works_at_once_and_reads_back_without_its_secret,
    the_owner_token_limit_holds_under_concurrent_creates,
    rotation_keeps_the_id_and_retires_the_old_secret_at_once,
    a_revoked_token_cannot_be_rotated_or_updated_and_revoking_it_again_changes_nothing,
    list_tokens_pages_through_every_token_once,
    a_stale_etag_is_aborted_and_changes_nothing,
    rotating_or_extending_an_expired_token_respects_the_owner_limit,
);

#[tokio::test]
async fn invalid_fields_are_all_named_in_one_invalid_argument() {
    let app = app_with_owner(Backend::Sqlite).await;
    let request = proto::CreateTokenRequest {
        tenant: TENANT.to_owned(),
        owner_id: "alice".to_owned(),
        name: "x".repeat(129),
        description: "d".repeat(1025),
        permissions: strings(&["orders:read", "orders"]),
        allowed_ips: strings(&["10.0.0.0/33"]),
        ..Default::default()
    };
    let status = app
        .admin_client()
        .await
        .create_token(app.admin(request))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        vec!["name", "description", "permissions[1]", "allowed_ips[0]"]
    );
    let listed = app
        .admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.tokens.is_empty(), "nothing was written");
}

#[tokio::test]
async fn an_empty_name_is_invalid() {
    let app = app_with_owner(Backend::Sqlite).await;
    let mut request = new_token(TENANT, "alice", &[]);
    request.name = "  ".to_owned();
    let status = app
        .admin_client()
        .await
        .create_token(app.admin(request))
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["name"]);
}

#[tokio::test]
async fn expiry_in_the_past_or_beyond_five_years_is_invalid() {
    let app = app_with_owner(Backend::Sqlite).await;
    let mut client = app.admin_client().await;
    let mut past = new_token(TENANT, "alice", &[]);
    past.expires_at = Some(Timestamp {
        seconds: now_seconds() - 10,
        nanos: 0,
    });
    let status = client
        .create_token(app.admin(past))
        .await
        .expect_err("past");
    assert_eq!(violated_fields(&status), vec!["expires_at"]);

    let mut far = new_token(TENANT, "alice", &[]);
    far.ttl = Some(Duration {
        seconds: 6 * 365 * 86_400,
        nanos: 0,
    });
    let status = client
        .create_token(app.admin(far))
        .await
        .expect_err("too far");
    assert_eq!(violated_fields(&status), vec!["ttl"]);

    let mut both = new_token(TENANT, "alice", &[]);
    both.ttl = Some(Duration {
        seconds: 60,
        nanos: 0,
    });
    both.expires_at = Some(Timestamp {
        seconds: now_seconds() + 600,
        nanos: 0,
    });
    let status = client
        .create_token(app.admin(both))
        .await
        .expect_err("both");
    assert_eq!(violated_fields(&status), vec!["ttl"]);
}

#[tokio::test]
async fn permissions_beyond_the_owner_are_refused() {
    let app = app_with_owner(Backend::Sqlite).await;
    let status = app
        .admin_client()
        .await
        .create_token(app.admin(new_token(TENANT, "alice", &["orders:read", "billing:read"])))
        .await
        .expect_err("beyond owner");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("billing:read"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_unknown_owner_is_not_found_and_an_unknown_role_is_invalid() {
    let app = app_with_owner(Backend::Sqlite).await;
    let mut client = app.admin_client().await;
    let status = client
        .create_token(app.admin(new_token(TENANT, "bob", &[])))
        .await
        .expect_err("unknown owner");
    assert_eq!(status.code(), Code::NotFound);

    let mut with_role = new_token(TENANT, "alice", &[]);
    with_role.roles = strings(&["reporting"]);
    let status = client
        .create_token(app.admin(with_role))
        .await
        .expect_err("unknown role");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["roles"]);
}

#[tokio::test]
async fn unknown_and_malformed_token_ids_are_distinguished() {
    let app = spawn_app().await;
    let mut client = app.admin_client().await;
    let unknown = client
        .get_token(app.admin(proto::GetTokenRequest {
            id: format!("tok_{}", ulid::Ulid::new()),
        }))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = client
        .get_token(app.admin(proto::GetTokenRequest {
            id: "42".to_owned(),
        }))
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&malformed), vec!["id"]);
}

#[tokio::test]
async fn an_update_changes_only_the_masked_fields_and_keeps_the_secret() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let updated = app
        .admin_client()
        .await
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            name: "renamed".to_owned(),
            description: "ignored: not in the mask".to_owned(),
            permissions: strings(&["orders:write"]),
            update_mask: Some(FieldMask {
                paths: strings(&["name", "permissions"]),
            }),
            ..Default::default()
        }))
        .await
        .expect("update")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.description, "");
    assert_eq!(updated.permissions, vec!["orders:write"]);
    assert_eq!(updated.secret_hint, token.secret_hint);

    let decision = app
        .check(proto::CheckRequest {
            token: secret,
            tenant: TENANT.to_owned(),
            permission: "orders:write".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(decision.allowed, "{decision:?}");
}

#[tokio::test]
async fn an_update_with_an_unknown_or_empty_mask_is_invalid() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let mut client = app.admin_client().await;
    let unknown = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            update_mask: Some(FieldMask {
                paths: strings(&["owner_id"]),
            }),
            ..Default::default()
        }))
        .await
        .expect_err("unknown path");
    assert_eq!(violated_fields(&unknown), vec!["update_mask"]);
    let empty = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id,
            ..Default::default()
        }))
        .await
        .expect_err("empty mask");
    assert_eq!(violated_fields(&empty), vec!["update_mask"]);
}

#[tokio::test]
async fn during_a_grace_period_both_secrets_work() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, old_secret) = app.token(new_token(TENANT, "alice", &[])).await;
    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id,
            grace_period: Some(Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }))
        .await
        .expect("rotate")
        .into_inner();
    for secret in [old_secret, rotated.secret] {
        let decision = app
            .check(proto::CheckRequest {
                token: secret,
                tenant: TENANT.to_owned(),
                ..Default::default()
            })
            .await;
        assert!(decision.allowed, "{decision:?}");
    }
}

#[tokio::test]
async fn a_grace_period_over_a_day_is_invalid() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let status = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id,
            grace_period: Some(Duration {
                seconds: 25 * 3600,
                nanos: 0,
            }),
        }))
        .await
        .expect_err("too long");
    assert_eq!(violated_fields(&status), vec!["grace_period"]);
}

#[tokio::test]
async fn every_mutation_is_audited_with_its_actor() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let mut client = app.admin_client().await;
    let mut revoke = app.admin(proto::RevokeTokenRequest {
        id: token.id.clone(),
    });
    revoke
        .metadata_mut()
        .insert("x-tessera-actor", "carol@acme".parse().expect("ascii"));
    client.revoke_token(revoke).await.expect("revoke");

    let events = client
        .list_audit_events(app.admin(proto::ListAuditEventsRequest {
            tenant: TENANT.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    let actions: Vec<&str> = events.iter().map(|event| event.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["principal.upsert", "token.create", "token.revoke"]
    );
    let revoke_event = &events[2];
    assert_eq!(revoke_event.actor, "carol@acme");
    assert_eq!(revoke_event.token_id, token.id);
    assert!(events[0].actor.starts_with("adk_"), "no claim: the key id");
}

#[tokio::test]
async fn the_audit_log_filters_by_token_principal_action_and_actor_and_names_a_bad_filter() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (token, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let (other, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let mut client = app.admin_client().await;
    let mut revoke = app.admin(proto::RevokeTokenRequest {
        id: token.id.clone(),
    });
    revoke
        .metadata_mut()
        .insert("x-tessera-actor", "carol@acme".parse().expect("ascii"));
    client.revoke_token(revoke).await.expect("revoke");
    let mut listed = async |request: proto::ListAuditEventsRequest| {
        client
            .list_audit_events(app.admin(request))
            .await
            .map(|response| {
                response
                    .into_inner()
                    .events
                    .into_iter()
                    .map(|event| (event.action, event.token_id))
                    .collect::<Vec<_>>()
            })
    };
    let of_token = listed(proto::ListAuditEventsRequest {
        token_id: token.id.clone(),
        ..Default::default()
    })
    .await
    .expect("by token");
    assert_eq!(
        of_token,
        [
            ("token.create".to_owned(), token.id.clone()),
            ("token.revoke".to_owned(), token.id.clone())
        ]
    );
    let creates = listed(proto::ListAuditEventsRequest {
        action: "token.create".to_owned(),
        principal_id: "alice".to_owned(),
        ..Default::default()
    })
    .await
    .expect("by action");
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[1].1, other.id);
    let by_carol = listed(proto::ListAuditEventsRequest {
        actor: "carol@acme".to_owned(),
        ..Default::default()
    })
    .await
    .expect("by actor");
    assert_eq!(by_carol, [("token.revoke".to_owned(), token.id.clone())]);
    let bad = listed(proto::ListAuditEventsRequest {
        token_id: "not-a-token-id".to_owned(),
        action: "a".repeat(65),
        ..Default::default()
    })
    .await
    .expect_err("bad filters");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let shown = format!("{bad:?}");
    assert!(
        shown.contains("token_id") && shown.contains("action"),
        "{shown}"
    );
}

#[tokio::test]
async fn roles_principals_and_api_status_round_trip() {
    let app = app_with_owner(Backend::Sqlite).await;
    let mut client = app.admin_client().await;
    client
        .upsert_role(app.admin(proto::UpsertRoleRequest {
            tenant: TENANT.to_owned(),
            name: "reporting".to_owned(),
            permissions: strings(&["orders:read", "products:read"]),
        }))
        .await
        .expect("role");
    let roles = client
        .list_roles(app.admin(proto::ListRolesRequest {
            tenant: TENANT.to_owned(),
        }))
        .await
        .expect("roles")
        .into_inner()
        .roles;
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].permissions, vec!["orders:read", "products:read"]);

    let principal = client
        .get_principal(app.admin(proto::GetPrincipalRequest {
            tenant: TENANT.to_owned(),
            id: "alice".to_owned(),
        }))
        .await
        .expect("principal")
        .into_inner()
        .principal
        .expect("principal");
    assert_eq!(principal.permissions, vec!["orders:*", "products:read"]);

    let initial = client
        .get_api_status(app.admin(proto::GetApiStatusRequest {
            tenant: TENANT.to_owned(),
        }))
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    assert!(initial.online);
    let offline = client
        .set_api_status(app.admin(proto::SetApiStatusRequest {
            tenant: "*".to_owned(),
            online: false,
            message: "maintenance".to_owned(),
        }))
        .await
        .expect("set")
        .into_inner()
        .status
        .expect("status");
    assert!(!offline.online);
    assert_eq!(offline.tenant, "*");
}

#[tokio::test]
async fn the_database_holds_only_the_hash_of_a_secret() {
    let app = app_with_owner(Backend::Sqlite).await;
    let (_, secret) = app.token(new_token(TENANT, "alice", &[])).await;
    let db_path = app
        .database
        .url()
        .trim_start_matches("sqlite://")
        .to_owned();
    let mut bytes = std::fs::read(&db_path).expect("database file");
    for suffix in ["-wal", "-shm"] {
        if let Ok(extra) = std::fs::read(format!("{db_path}{suffix}")) {
            bytes.extend(extra);
        }
    }
    let by_hash = app
        .store
        .find_credential(&tessera::domain::token::SecretHash::of(&secret))
        .await
        .expect("lookup");
    assert!(by_hash.is_some(), "the token is found by its hash");
    let needle = secret.as_bytes();
    assert!(!bytes.windows(needle.len()).any(|window| window == needle));
    let hash = <sha2::Sha256 as sha2::Digest>::digest(secret.as_bytes());
    assert!(
        bytes
            .windows(hash.len())
            .any(|window| window == hash.as_slice()),
        "the hash is stored"
    );
}

#[tokio::test]
async fn a_restart_on_the_same_database_keeps_tokens_and_the_admin_key() {
    let mut app = app_with_owner(Backend::Sqlite).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    app.stop().await;

    let config = tessera::config::Config::parse(app.settings.clone()).expect("valid settings");
    let restarted = tessera::app::App::build(config).await.expect("restart");
    assert!(
        restarted.bootstrap_key_path().is_none(),
        "no second bootstrap key"
    );
    let store = restarted.store();
    let id = tessera::domain::fields::TokenId::parse(&token.id).expect("id");
    assert_eq!(
        store.get_token(&id).await.expect("token").name.as_str(),
        "test token"
    );
    let hash = tessera::domain::token::SecretHash::of(&secret);
    assert!(
        store
            .find_credential(&hash)
            .await
            .expect("lookup")
            .is_some()
    );
    assert!(
        store
            .find_admin_key(&tessera::domain::token::SecretHash::of(&app.admin_key))
            .await
            .expect("lookup")
            .is_some()
    );
}

fn rename(id: &str, name: &str, etag: &str) -> proto::UpdateTokenRequest {
    proto::UpdateTokenRequest {
        id: id.to_owned(),
        name: name.to_owned(),
        etag: etag.to_owned(),
        update_mask: Some(FieldMask {
            paths: strings(&["name"]),
        }),
        ..Default::default()
    }
}

async fn read_token(app: &TestApp, id: &str) -> proto::Token {
    app.admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: id.to_owned() }))
        .await
        .expect("get")
        .into_inner()
        .token
        .expect("token")
}

async fn a_stale_etag_is_aborted_and_changes_nothing(backend: Backend) {
    let app = app_with_owner(backend).await;
    let (token, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let mut client = app.admin_client().await;
    assert!(!token.etag.is_empty(), "a token carries its etag");

    let renamed = client
        .update_token(app.admin(rename(&token.id, "first", &token.etag)))
        .await
        .expect("the current etag applies")
        .into_inner()
        .token
        .expect("token");
    let stale = client
        .update_token(app.admin(rename(&token.id, "second", &token.etag)))
        .await
        .expect_err("a stale etag");
    let read = read_token(&app, &token.id).await;
    let unchecked = client
        .update_token(app.admin(rename(&token.id, "third", "")))
        .await
        .expect("no etag, no check")
        .into_inner()
        .token
        .expect("token");
    let malformed = client
        .update_token(app.admin(rename(&token.id, "fourth", "W/\"1\"")))
        .await
        .expect_err("not an etag");

    assert_ne!(renamed.etag, token.etag, "every update changes the etag");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_reason(&stale, "ETAG_MISMATCH");
    assert_eq!(read.name, "first", "the stale update wrote nothing");
    assert_eq!(read.etag, renamed.etag);
    assert_eq!(unchecked.name, "third");
    let huge = client
        .update_token(app.admin(rename(&token.id, "fifth", &"9".repeat(100_000))))
        .await
        .expect_err("no version is that large");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&malformed), vec!["etag".to_owned()]);
    assert_eq!(huge.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&huge), vec!["etag".to_owned()]);
    assert!(huge.message().len() < 4096, "the etag is not quoted back");
    assert_eq!(read_token(&app, &token.id).await.name, "third");
}

async fn rotating_or_extending_an_expired_token_respects_the_owner_limit(backend: Backend) {
    let app = spawn_app_with(backend, |settings| settings.max_tokens_per_owner = 2).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let mut short_lived = new_token(TENANT, "alice", &[]);
    short_lived.ttl = Some(Duration {
        seconds: 1,
        nanos: 0,
    });
    let (expiring, _) = app.token(short_lived).await;
    let started = std::time::Instant::now();
    while read_token(&app, &expiring.id).await.state() != proto::TokenState::Expired {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The expired token does not count: two live ones fit beside it.
    let (live, _) = app.token(new_token(TENANT, "alice", &[])).await;
    app.token(new_token(TENANT, "alice", &[])).await;
    let mut client = app.admin_client().await;
    let rotate = proto::RotateTokenRequest {
        id: expiring.id.clone(),
        grace_period: None,
    };
    let extend = proto::UpdateTokenRequest {
        id: expiring.id.clone(),
        expires_at: Some(Timestamp {
            seconds: now_seconds() + 86_400,
            nanos: 0,
        }),
        update_mask: Some(FieldMask {
            paths: strings(&["expires_at"]),
        }),
        ..Default::default()
    };

    let rotated = client
        .rotate_token(app.admin(rotate.clone()))
        .await
        .expect_err("rotating would make a third live token");
    let extended = client
        .update_token(app.admin(extend.clone()))
        .await
        .expect_err("extending would make a third live token");
    let still = read_token(&app, &expiring.id).await;
    client
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: live.id }))
        .await
        .expect("revoke");
    let revived = client
        .update_token(app.admin(extend))
        .await
        .expect("room again once one is revoked")
        .into_inner()
        .token
        .expect("token");

    assert_eq!(rotated.code(), Code::ResourceExhausted, "{rotated:?}");
    assert_eq!(extended.code(), Code::ResourceExhausted, "{extended:?}");
    assert_eq!(still.state(), proto::TokenState::Expired);
    assert_eq!(
        still.secret_hint, expiring.secret_hint,
        "nothing was written"
    );
    assert_eq!(revived.state(), proto::TokenState::Active);
    assert_eq!(
        client
            .rotate_token(app.admin(rotate))
            .await
            .expect("a live token rotates")
            .into_inner()
            .token
            .expect("token")
            .state(),
        proto::TokenState::Active
    );
}

/// A token with more secrets than fit in one Postgres notification (their hashes alone pass
/// 8000 bytes) is revoked on one replica; the other drops its cached entries of it all the same,
/// old secret and current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_replica_even_when_the_tokens_secrets_do_not_fit_one_notification()
 {
    let app = app_with_owner(Backend::Postgres).await;
    let replica = app.spawn_replica().await;
    let (token, oldest) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let mut client = app.admin_client().await;
    // 130 retired secrets, all within their grace: about 8,800 bytes of hex hashes.
    let mut current = oldest.clone();
    for _ in 0..130 {
        current = client
            .rotate_token(app.admin(proto::RotateTokenRequest {
                id: token.id.clone(),
                grace_period: Some(Duration {
                    seconds: 3_600,
                    nanos: 0,
                }),
            }))
            .await
            .expect("rotate")
            .into_inner()
            .secret;
    }
    let check = |secret: &str| proto::CheckRequest {
        token: secret.to_owned(),
        tenant: TENANT.to_owned(),
        permission: "orders:read".to_owned(),
        ..Default::default()
    };
    // Both now sit in the replica's cache.
    assert!(replica.check(check(&oldest)).await.allowed);
    assert!(replica.check(check(&current)).await.allowed);
    let lookups_before = replica.store_lookups();

    client
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("revoke");

    // Well under the 60 s cache TTL, the only other way the replica would learn of it.
    let bound = std::time::Duration::from_secs(10);
    let started = std::time::Instant::now();
    for secret in [&oldest, &current] {
        loop {
            let answer = replica.check(check(secret)).await;
            if answer.reason() == proto::DenyReason::TokenRevoked {
                break;
            }
            assert!(
                answer.allowed,
                "{:?} before the revocation arrived",
                answer.reason()
            );
            assert!(
                started.elapsed() < bound,
                "the replica still allows a revoked token"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(
        replica.store_lookups() > lookups_before,
        "the replica refilled its entries from the store"
    );
}
