//! Signed requests: signing keys shown once and stored only encrypted, signatures verified on
//! Tessera's own Check and through Envoy, stale and replayed signatures refused, and signing
//! refused outright without a master key. Signatures here are computed independently of the
//! server's code, with the hmac crate, as a client would.

use std::process::Command;

use chrono::Utc;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttributeRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use prost_types::{Duration, FieldMask};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tessera::config::{EnvoyUnmatched, Settings};
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::requests::{assert_reason, sign, signature};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with};

const TENANT: &str = "acme";
/// Base64 of 32 bytes, as `openssl rand -base64 32` prints one.
const MASTER_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

fn with_master_key(settings: &mut Settings) {
    settings.master_key = Some(SecretString::from(MASTER_KEY));
}

async fn app_on(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(backend, customize).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

/// A token that requires signatures: its id, secret and signing key.
async fn signing_token(app: &TestApp) -> (proto::Token, String, String) {
    app.signing_token(TENANT, "alice", &["orders:read"]).await
}

fn signed_check(secret: &str, signature: Option<proto::Signature>) -> proto::CheckRequest {
    proto::CheckRequest {
        token: secret.to_owned(),
        tenant: TENANT.to_owned(),
        permission: "orders:read".to_owned(),
        client_ip: "192.0.2.10".to_owned(),
        signature,
        ..Default::default()
    }
}

async fn assert_denied(app: &TestApp, request: proto::CheckRequest, reason: DenyReason) {
    let response = app.check(request).await;
    assert!(!response.allowed, "expected {reason:?}, got {response:?}");
    assert_eq!(response.reason(), reason);
    assert_eq!(response.http_status, 401);
}

async fn a_correctly_signed_fresh_request_is_allowed(backend: Backend) {
    let app = app_on(backend, with_master_key).await;
    let (token, secret, key) = signing_token(&app).await;

    let now = Utc::now().timestamp();
    let response = app
        .check(signed_check(
            &secret,
            Some(signature(&key, now, "GET /api/v1/orders")),
        ))
        .await;

    assert!(response.allowed, "{response:?}");
    assert_eq!(response.token_id, token.id);
}

async fn after_a_rotation_with_grace_the_old_secret_still_signs_with_the_old_key(backend: Backend) {
    let app = app_on(backend, with_master_key).await;
    let (token, old_secret, old_key) = signing_token(&app).await;

    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: Some(Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }))
        .await
        .expect("rotated")
        .into_inner();
    let now = Utc::now().timestamp();

    assert!(rotated.signing_key.starts_with("tss_"));
    assert_ne!(rotated.signing_key, old_key);
    let new_pair = signed_check(
        &rotated.secret,
        Some(signature(&rotated.signing_key, now, "new")),
    );
    assert!(app.check(new_pair).await.allowed);
    let old_pair = signed_check(&old_secret, Some(signature(&old_key, now, "old")));
    assert!(app.check(old_pair).await.allowed);
    let mixed = signed_check(&rotated.secret, Some(signature(&old_key, now, "mixed")));
    assert_denied(&app, mixed, DenyReason::SignatureInvalid).await;
}

backend_tests!(
    a_correctly_signed_fresh_request_is_allowed,
    after_a_rotation_with_grace_the_old_secret_still_signs_with_the_old_key,
);

#[tokio::test]
async fn each_signature_problem_is_denied_with_its_own_reason() {
    let app = app_on(Backend::Sqlite, with_master_key).await;
    let (_, secret, key) = signing_token(&app).await;
    let now = Utc::now().timestamp();

    assert_denied(
        &app,
        signed_check(&secret, None),
        DenyReason::SignatureRequired,
    )
    .await;

    let other_key = "tss_0000000000000000000000000000000000000000000";
    let wrong_key = signed_check(&secret, Some(signature(other_key, now, "GET /")));
    assert_denied(&app, wrong_key, DenyReason::SignatureInvalid).await;

    let mut tampered = signature(&key, now, "GET /orders");
    tampered.payload = b"GET /admin".to_vec();
    assert_denied(
        &app,
        signed_check(&secret, Some(tampered)),
        DenyReason::SignatureInvalid,
    )
    .await;

    let garbage = proto::Signature {
        timestamp: now,
        signature: "not base64 at all!".to_owned(),
        payload: Vec::new(),
    };
    assert_denied(
        &app,
        signed_check(&secret, Some(garbage)),
        DenyReason::SignatureInvalid,
    )
    .await;

    let stale = signed_check(&secret, Some(signature(&key, now - 360, "GET /orders")));
    assert_denied(&app, stale, DenyReason::TimestampOutOfWindow).await;
    let future = signed_check(&secret, Some(signature(&key, now + 360, "GET /orders")));
    assert_denied(&app, future, DenyReason::TimestampOutOfWindow).await;

    let once = signed_check(&secret, Some(signature(&key, now, "POST /orders/1/pay")));
    assert!(app.check(once.clone()).await.allowed);
    assert_denied(&app, once, DenyReason::Replayed).await;
}

#[tokio::test]
async fn one_token_flooding_the_replay_guard_cannot_make_room_to_replay_another_tokens_request() {
    // Room for 20 signatures in all, at most 10 per token (so two tokens at once).
    let app = app_on(Backend::Sqlite, |settings| {
        with_master_key(settings);
        settings.replay_cache_capacity = 20;
        settings.replay_token_quota = 10;
    })
    .await;
    let (_, victim_secret, victim_key) = signing_token(&app).await;
    let (_, flooder_secret, flooder_key) = signing_token(&app).await;
    let now = Utc::now().timestamp();

    let captured = signed_check(
        &victim_secret,
        Some(signature(&victim_key, now, "POST /orders/1/pay")),
    );
    assert!(app.check(captured.clone()).await.allowed);

    // Five times what the whole guard holds, each a fresh signature of the flooder's own.
    for number in 0..100 {
        let flood = signed_check(
            &flooder_secret,
            Some(signature(
                &flooder_key,
                now,
                &format!("GET /orders/{number}"),
            )),
        );
        let response = app.check(flood).await;
        assert_ne!(response.reason(), DenyReason::Replayed, "flood {number}");
    }

    assert_denied(&app, captured, DenyReason::Replayed).await;
}

#[tokio::test]
async fn the_signature_window_is_a_setting() {
    let app = app_on(Backend::Sqlite, |settings| {
        with_master_key(settings);
        settings.signature_window_seconds = 30;
    })
    .await;
    let (_, secret, key) = signing_token(&app).await;
    let now = Utc::now().timestamp();

    let inside = signed_check(&secret, Some(signature(&key, now - 20, "a")));
    assert!(app.check(inside).await.allowed);
    let outside = signed_check(&secret, Some(signature(&key, now - 40, "b")));
    assert_denied(&app, outside, DenyReason::TimestampOutOfWindow).await;
}

#[tokio::test]
async fn the_signing_key_is_shown_at_creation_rotation_and_when_turned_on_and_never_otherwise() {
    let app = app_on(Backend::Sqlite, with_master_key).await;
    let mut client = app.admin_client().await;
    let (token, _, key) = signing_token(&app).await;
    assert!(key.starts_with("tss_"), "{key}");
    assert_eq!(key.len(), 47);

    let renamed = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            name: "renamed".to_owned(),
            update_mask: Some(FieldMask {
                paths: vec!["name".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect("renamed")
        .into_inner();
    assert_eq!(renamed.signing_key, "");

    let (plain, plain_secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let created_plain = plain.require_signature;
    assert!(!created_plain);
    let turned_on = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: plain.id.clone(),
            require_signature: true,
            update_mask: Some(FieldMask {
                paths: vec!["require_signature".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect("signing on")
        .into_inner();
    assert!(turned_on.signing_key.starts_with("tss_"));
    assert!(turned_on.token.expect("token").require_signature);
    let now = Utc::now().timestamp();
    let request = signed_check(
        &plain_secret,
        Some(signature(&turned_on.signing_key, now, "x")),
    );
    assert!(app.check(request).await.allowed);

    let again = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: plain.id.clone(),
            require_signature: true,
            update_mask: Some(FieldMask {
                paths: vec!["require_signature".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect("still on")
        .into_inner();
    assert_eq!(
        again.signing_key, "",
        "a key already issued is not shown again"
    );
}

#[tokio::test]
async fn turning_signing_off_admits_unsigned_requests_and_drops_the_key() {
    let app = app_on(Backend::Sqlite, with_master_key).await;
    let mut client = app.admin_client().await;
    let (token, secret, old_key) = signing_token(&app).await;
    let toggle = |on: bool| proto::UpdateTokenRequest {
        id: token.id.clone(),
        require_signature: on,
        update_mask: Some(FieldMask {
            paths: vec!["require_signature".to_owned()],
        }),
        ..Default::default()
    };

    client
        .update_token(app.admin(toggle(false)))
        .await
        .expect("signing off");
    assert!(app.check(signed_check(&secret, None)).await.allowed);

    let back_on = client
        .update_token(app.admin(toggle(true)))
        .await
        .expect("signing on")
        .into_inner();
    assert_ne!(back_on.signing_key, old_key);
    let now = Utc::now().timestamp();
    let with_old_key = signed_check(&secret, Some(signature(&old_key, now, "x")));
    assert_denied(&app, with_old_key, DenyReason::SignatureInvalid).await;
}

#[tokio::test]
async fn signing_is_refused_without_a_master_key_naming_the_setting() {
    let app = app_on(Backend::Sqlite, |_| {}).await;
    let mut client = app.admin_client().await;

    let mut request = new_token(TENANT, "alice", &[]);
    request.require_signature = true;
    let status = client
        .create_token(app.admin(request))
        .await
        .expect_err("no master key");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("TESSERA_MASTER_KEY"),
        "{}",
        status.message()
    );
    assert_reason(&status, "MASTER_KEY_MISSING");

    let (plain, _) = app.token(new_token(TENANT, "alice", &[])).await;
    let status = client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: plain.id.clone(),
            require_signature: true,
            update_mask: Some(FieldMask {
                paths: vec!["require_signature".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect_err("no master key");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let unchanged = client
        .get_token(app.admin(proto::GetTokenRequest { id: plain.id }))
        .await
        .expect("read")
        .into_inner()
        .token
        .expect("token");
    assert!(!unchanged.require_signature);
}

#[tokio::test]
async fn the_database_never_holds_a_signing_key_in_the_clear() {
    let app = app_on(Backend::Sqlite, with_master_key).await;
    let (token, _, key) = signing_token(&app).await;
    let rotated = app
        .admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id,
            grace_period: None,
        }))
        .await
        .expect("rotated")
        .into_inner();

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
    for shown in [&key, &rotated.signing_key] {
        let random_part = &shown.as_bytes()[4..];
        assert!(
            !bytes
                .windows(random_part.len())
                .any(|window| window == random_part),
            "a signing key is stored in the clear"
        );
    }
    // The sealed form is there, so the key is stored at all (and the test can fail).
    let sealed: Option<Vec<u8>> = sqlx::query_scalar("SELECT signing_key FROM tokens")
        .fetch_one(&sqlite_pool(&db_path).await)
        .await
        .expect("read");
    assert!(sealed.is_some_and(|sealed| sealed.len() > 47));
}

async fn sqlite_pool(path: &str) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
        .await
        .expect("sqlite")
}

#[tokio::test]
async fn through_envoy_the_signature_covers_method_path_and_body() {
    let app = app_on(Backend::Sqlite, |settings| {
        with_master_key(settings);
        settings.envoy_unmatched = EnvoyUnmatched::Authenticate;
        settings.envoy_sign_body = true;
    })
    .await;
    let (_, secret, key) = signing_token(&app).await;
    let now = Utc::now().timestamp();
    let body = br#"{"amount":100}"#;
    let canonical = format!(
        "POST\n/api/v1/payments?dry=1\n{}",
        hex::encode(Sha256::digest(body))
    );
    let good = sign(&key, now, canonical.as_bytes());

    let envoy_check = |signature: &str, timestamp: i64, sent_body: &[u8]| CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: "POST".to_owned(),
                    path: "/api/v1/payments?dry=1".to_owned(),
                    headers: [
                        ("authorization".to_owned(), format!("Bearer {secret}")),
                        ("x-tessera-signature".to_owned(), signature.to_owned()),
                        ("x-tessera-timestamp".to_owned(), timestamp.to_string()),
                    ]
                    .into(),
                    raw_body: sent_body.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("tenant".to_owned(), TENANT.to_owned())].into(),
            ..Default::default()
        }),
    };
    let mut client = AuthorizationClient::connect(app.grpc_url.clone())
        .await
        .expect("envoy client");
    let mut status_of = async |request: CheckRequest| {
        let response = client.check(request).await.expect("answers").into_inner();
        match response.http_response {
            Some(HttpResponse::OkResponse(_)) => 200,
            Some(HttpResponse::DeniedResponse(denied)) => {
                let body: serde_json::Value = serde_json::from_str(&denied.body).expect("json");
                assert_eq!(body["error"], "signature_invalid", "{body}");
                denied.status.map_or(0, |status| status.code)
            }
            _ => 0,
        }
    };

    assert_eq!(
        status_of(envoy_check(&good, now, b"{\"amount\":999}")).await,
        401
    );
    assert_eq!(status_of(envoy_check(&good, now + 1, body)).await, 401);
    assert_eq!(status_of(envoy_check(&good, now, body)).await, 200);
}

#[tokio::test]
async fn the_cli_checks_a_signed_request() {
    let app = app_on(Backend::Sqlite, with_master_key).await;
    let (_, secret, key) = signing_token(&app).await;
    let now = Utc::now().timestamp();
    let payload = "GET /api/v1/orders";
    let run = |signature: &str| {
        let url = app.grpc_url.clone();
        let args = vec![
            "--server".to_owned(),
            url,
            "check".to_owned(),
            secret.clone(),
            "--tenant".to_owned(),
            TENANT.to_owned(),
            "--permission".to_owned(),
            "orders:read".to_owned(),
            "--signature".to_owned(),
            signature.to_owned(),
            "--timestamp".to_owned(),
            now.to_string(),
            "--payload".to_owned(),
            payload.to_owned(),
        ];
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(&args)
                .env_remove("TESSERA_SERVER")
                .output()
                .expect("tessera runs")
        })
    };

    let allowed = run(&sign(&key, now, payload.as_bytes()))
        .await
        .expect("thread");
    assert_eq!(allowed.status.code(), Some(0), "{allowed:?}");
    let replayed = run(&sign(&key, now, payload.as_bytes()))
        .await
        .expect("thread");
    assert_eq!(replayed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&replayed.stdout).starts_with("denied: replayed"));
}
