//! ImportTokens (issue 16, point 6): existing tokens imported by the SHA-256 of their secrets,
//! all or nothing; Check accepting the original secrets by hash only where the deployment says
//! so (`TESSERA_ACCEPT_IMPORTED_TOKENS`), Tessera's own format still refused without a lookup,
//! misses negatively cached; a rotation giving the token a Tessera secret.

use prost_types::{Duration, Timestamp};
use tessera::domain::token::SecretHash;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::{Code, Status};

use crate::backend_tests;
use crate::helpers::requests::{assert_reason, audit_events, check_request, violated_fields};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with, strings, unknown_secret};

const TENANT: &str = "acme";
const DAY: i64 = 86_400;

/// A server that accepts imported secrets, with `alice` in `acme`.
async fn app_accepting_imports(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |settings| settings.accept_imported_tokens = true).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

/// A secret in another system's format, different every call.
fn legacy_secret() -> String {
    format!("ghp_{}", ulid::Ulid::new())
}

fn imported(secret: &str, permissions: &[&str]) -> proto::ImportedToken {
    proto::ImportedToken {
        owner_id: "alice".to_owned(),
        name: "legacy".to_owned(),
        secret_sha256: SecretHash::of(secret).to_hex(),
        permissions: strings(permissions),
        ..Default::default()
    }
}

async fn import(
    app: &TestApp,
    tokens: Vec<proto::ImportedToken>,
) -> Result<Vec<proto::Token>, Status> {
    app.admin_client()
        .await
        .import_tokens(app.admin(proto::ImportTokensRequest {
            tenant: TENANT.to_owned(),
            tokens,
        }))
        .await
        .map(|response| response.into_inner().tokens)
}

async fn token_count(app: &TestApp) -> usize {
    app.admin_client()
        .await
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("listed")
        .into_inner()
        .tokens
        .len()
}

backend_tests!(
    an_imported_token_is_accepted_by_its_original_secret_and_a_rotation_gives_it_a_tessera_secret,
    an_import_is_all_or_nothing_and_names_the_bad_entry_by_its_index,
    a_secret_tessera_already_holds_or_the_batch_holds_twice_is_refused,
    an_import_obeys_the_tenant_policy_and_the_owner_limit,
    foreign_secrets_are_looked_up_only_where_imports_are_accepted_and_their_misses_are_cached,
);

async fn an_imported_token_is_accepted_by_its_original_secret_and_a_rotation_gives_it_a_tessera_secret(
    backend: Backend,
) {
    let app = app_accepting_imports(backend).await;
    let secret = legacy_secret();
    let created_at = chrono::Utc::now().timestamp() - 400 * DAY;
    let expires_at = chrono::Utc::now().timestamp() + 20 * DAY;
    let before = audit_events(&app).await;
    let tokens = import(
        &app,
        vec![proto::ImportedToken {
            description: "from the old gateway".to_owned(),
            metadata: [("plan".to_owned(), "pro".to_owned())].into(),
            allowed_ips: strings(&["127.0.0.1"]),
            rate_limit_per_minute: 120,
            created_at: Some(Timestamp {
                seconds: created_at,
                nanos: 0,
            }),
            expires_at: Some(Timestamp {
                seconds: expires_at,
                nanos: 0,
            }),
            ..imported(&secret, &["orders:read"])
        }],
    )
    .await
    .expect("imported");
    let token = &tokens[0];
    assert!(token.imported);
    assert_eq!(token.secret_hint, "(imported)");
    assert_eq!(
        token.created_at.as_ref().map(|t| t.seconds),
        Some(created_at)
    );
    assert_eq!(
        token.expires_at.as_ref().map(|t| t.seconds),
        Some(expires_at)
    );
    assert_eq!(token.rate_limit_per_minute, 120);
    assert_eq!(token.description, "from the old gateway");
    assert_eq!(token.metadata.get("plan").map(String::as_str), Some("pro"));
    assert_eq!(token.state(), proto::TokenState::Active);
    assert!(!format!("{token:?}").contains(&secret));
    assert_eq!(audit_events(&app).await, before + 1);

    let check_for = |secret: &str, permission: &str| proto::CheckRequest {
        client_ip: "127.0.0.1".to_owned(),
        ..check_request(TENANT, secret, permission)
    };
    let check = |secret: &str| check_for(secret, "orders:read");
    let allowed = app.check(check(&secret)).await;
    assert!(allowed.allowed, "{allowed:?}");
    assert_eq!(allowed.token_id, token.id);
    assert_eq!(
        allowed.metadata, token.metadata,
        "the imported metadata comes with Check"
    );
    assert_eq!(
        app.check(check_for(&secret, "orders:write")).await.reason(),
        DenyReason::PermissionDenied
    );
    assert_eq!(
        app.check(check_request(TENANT, &secret, "orders:read"))
            .await
            .reason(),
        DenyReason::IpNotAllowed,
        "the imported allowlist holds"
    );

    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: None,
        }))
        .await
        .expect("rotated")
        .into_inner();
    assert!(rotated.secret.starts_with("tsk_"));
    let rotated_token = rotated.token.expect("token");
    assert!(!rotated_token.imported);
    assert_ne!(rotated_token.secret_hint, "(imported)");
    assert!(app.check(check(&rotated.secret)).await.allowed);
    assert_eq!(
        app.check(check(&secret)).await.reason(),
        DenyReason::TokenRevoked,
        "the imported secret was rotated away"
    );
}

async fn an_import_is_all_or_nothing_and_names_the_bad_entry_by_its_index(backend: Backend) {
    let app = app_accepting_imports(backend).await;
    let before = audit_events(&app).await;
    let good = || imported(&legacy_secret(), &["orders:read"]);
    let cases: Vec<(Vec<proto::ImportedToken>, Code, &str)> = vec![
        (
            vec![
                good(),
                proto::ImportedToken {
                    secret_sha256: "not hex".to_owned(),
                    ..good()
                },
            ],
            Code::InvalidArgument,
            "tokens[1].secret_sha256",
        ),
        (
            vec![
                good(),
                good(),
                proto::ImportedToken {
                    owner_id: "mallory".to_owned(),
                    ..good()
                },
            ],
            Code::InvalidArgument,
            "tokens[2].owner_id",
        ),
        (
            vec![good(), imported(&legacy_secret(), &["users:read"])],
            Code::PermissionDenied,
            "tokens[1].permissions",
        ),
        (
            vec![proto::ImportedToken {
                roles: strings(&["nonexistent"]),
                ..good()
            }],
            Code::InvalidArgument,
            "tokens[0].roles",
        ),
        (
            vec![proto::ImportedToken {
                expires_at: Some(Timestamp {
                    seconds: chrono::Utc::now().timestamp() - 60,
                    nanos: 0,
                }),
                ..good()
            }],
            Code::InvalidArgument,
            "tokens[0].expires_at",
        ),
        (
            vec![proto::ImportedToken {
                created_at: Some(Timestamp {
                    seconds: chrono::Utc::now().timestamp() + DAY,
                    nanos: 0,
                }),
                ..good()
            }],
            Code::InvalidArgument,
            "tokens[0].created_at",
        ),
        (Vec::new(), Code::InvalidArgument, "tokens"),
        (
            (0..1001).map(|_| good()).collect(),
            Code::InvalidArgument,
            "tokens",
        ),
    ];
    for (tokens, code, field) in cases {
        let status = import(&app, tokens).await.expect_err(field);
        assert_eq!(status.code(), code, "{field}: {status:?}");
        assert!(
            violated_fields(&status).contains(&field.to_owned()),
            "{field}: {status:?}"
        );
    }
    assert_eq!(
        token_count(&app).await,
        0,
        "nothing of a refused batch is written"
    );
    assert_eq!(audit_events(&app).await, before);

    // A full batch, spread over owners so that it stays within the server's 64 per owner.
    for owner in 0..16 {
        app.principal(TENANT, &format!("owner-{owner}"), &["orders:*"])
            .await;
    }
    let batch: Vec<_> = (0..1000)
        .map(|index| proto::ImportedToken {
            owner_id: format!("owner-{}", index % 16),
            ..good()
        })
        .collect();
    let imported = import(&app, batch)
        .await
        .unwrap_or_else(|status| panic!("1000 at once: {status:?}"));
    assert_eq!(imported.len(), 1000);
}

async fn a_secret_tessera_already_holds_or_the_batch_holds_twice_is_refused(backend: Backend) {
    let app = app_accepting_imports(backend).await;
    let (_, tessera_secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let twice = legacy_secret();
    let status = import(
        &app,
        vec![
            imported(&twice, &[]),
            imported(&legacy_secret(), &[]),
            imported(&twice, &[]),
        ],
    )
    .await
    .expect_err("the same secret twice");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["tokens[2].secret_sha256"]);
    assert!(status.message().contains("tokens[0]"), "{status:?}");

    let status = import(
        &app,
        vec![
            imported(&legacy_secret(), &[]),
            imported(&tessera_secret, &[]),
        ],
    )
    .await
    .expect_err("a secret Tessera holds");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_reason(&status, "SECRET_EXISTS");
    assert_eq!(violated_fields(&status), vec!["tokens[1].secret_sha256"]);

    let once = legacy_secret();
    import(&app, vec![imported(&once, &[])])
        .await
        .expect("once");
    let status = import(&app, vec![imported(&once, &[])])
        .await
        .expect_err("imported before");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(token_count(&app).await, 2);
}

async fn an_import_obeys_the_tenant_policy_and_the_owner_limit(backend: Backend) {
    let app = app_accepting_imports(backend).await;
    app.admin_client()
        .await
        .set_tenant_policy(app.admin(proto::SetTenantPolicyRequest {
            policy: Some(proto::TenantPolicy {
                tenant: TENANT.to_owned(),
                max_lifetime: Some(Duration {
                    seconds: 30 * DAY,
                    nanos: 0,
                }),
                max_tokens_per_owner: 2,
                ..Default::default()
            }),
        }))
        .await
        .expect("policy set");
    let status = import(
        &app,
        vec![
            imported(&legacy_secret(), &[]),
            proto::ImportedToken {
                expires_at: Some(Timestamp {
                    seconds: chrono::Utc::now().timestamp() + 60 * DAY,
                    nanos: 0,
                }),
                ..imported(&legacy_secret(), &[])
            },
        ],
    )
    .await
    .expect_err("beyond max_lifetime");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_reason(&status, "POLICY_VIOLATION");
    assert_eq!(violated_fields(&status), vec!["tokens[1].expires_at"]);

    let three = (0..3).map(|_| imported(&legacy_secret(), &[])).collect();
    let status = import(&app, three)
        .await
        .expect_err("three for a limit of two");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(token_count(&app).await, 0);

    let two: Vec<_> = (0..2).map(|_| imported(&legacy_secret(), &[])).collect();
    let tokens = import(&app, two).await.expect("two");
    let expires_in =
        tokens[0].expires_at.as_ref().expect("expiry").seconds - chrono::Utc::now().timestamp();
    assert!(
        (30 * DAY - 60..=30 * DAY).contains(&expires_in),
        "the default lifetime, capped by the policy: {expires_in}"
    );
}

async fn foreign_secrets_are_looked_up_only_where_imports_are_accepted_and_their_misses_are_cached(
    backend: Backend,
) {
    let app = app_accepting_imports(backend).await;
    let unknown = legacy_secret();
    let lookups = app.store_lookups();
    for _ in 0..3 {
        assert_eq!(
            app.check(check_request(TENANT, &unknown, ""))
                .await
                .reason(),
            DenyReason::TokenUnknown
        );
    }
    assert_eq!(
        app.store_lookups(),
        lookups + 1,
        "a miss is negatively cached"
    );

    // Imported while cached as unknown: accepted at once, the import invalidated the miss.
    import(&app, vec![imported(&unknown, &["orders:read"])])
        .await
        .expect("imported");
    assert!(app.check(check_request(TENANT, &unknown, "")).await.allowed);

    // Tessera's format with a bad checksum, and a foreign secret beyond the bound: no lookup.
    let well_formed = unknown_secret();
    let mut bad_checksum = well_formed.clone();
    let last = bad_checksum.pop().expect("a character");
    bad_checksum.push(if last == 'a' { 'b' } else { 'a' });
    let too_long = "x".repeat(513);
    let lookups = app.store_lookups();
    for secret in [&bad_checksum, &too_long] {
        assert_eq!(
            app.check(check_request(TENANT, secret, "")).await.reason(),
            DenyReason::TokenMalformed
        );
    }
    assert_eq!(app.store_lookups(), lookups, "refused without a lookup");

    // A deployment that imported nothing: foreign secrets are malformed, with no lookup.
    let plain = spawn_app_with(backend, |_| {}).await;
    let lookups = plain.store_lookups();
    assert_eq!(
        plain
            .check(check_request(TENANT, &unknown, ""))
            .await
            .reason(),
        DenyReason::TokenMalformed
    );
    assert_eq!(plain.store_lookups(), lookups);
}
