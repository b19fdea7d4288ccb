//! Concurrent writers on one token: whatever order the database serialises them in, the outcome
//! is one of the orders they could have run in, and Check agrees with it. (Concurrent creates
//! against the per-owner limit: token_lifecycle.rs and store_conformance/tokens.rs; two replicas summing
//! usage: usage.rs.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost_types::{Duration as ProtoDuration, FieldMask};
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use super::{TENANT, request};
use crate::backend_tests;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, strings};

/// Rounds per test: each is a fresh race, so a lucky interleaving cannot hide a lost update.
const ROUNDS: usize = 8;

backend_tests!(
    concurrent_rotations_and_a_revoke_of_one_token_leave_it_revoked_with_every_secret_denied,
    two_concurrent_rotations_leave_exactly_one_current_secret_and_retire_the_other,
    two_concurrent_updates_of_different_fields_both_survive,
);

async fn app_with_alice(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

async fn rotate(app: &TestApp, id: &str, grace_seconds: i64) -> Result<String, tonic::Status> {
    app.admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: id.to_owned(),
            grace_period: Some(ProtoDuration {
                seconds: grace_seconds,
                nanos: 0,
            }),
        }))
        .await
        .map(|rotated| rotated.into_inner().secret)
}

async fn audit_actions(app: &TestApp, token_id: &str) -> Vec<String> {
    let events = app
        .admin_client()
        .await
        .list_audit_events(app.admin(proto::ListAuditEventsRequest {
            tenant: TENANT.to_owned(),
            page_size: 1_000,
            ..Default::default()
        }))
        .await
        .expect("audit")
        .into_inner()
        .events;
    events
        .into_iter()
        .filter(|event| event.token_id == token_id)
        .map(|event| event.action)
        .collect()
}

async fn concurrent_rotations_and_a_revoke_of_one_token_leave_it_revoked_with_every_secret_denied(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    for round in 0..ROUNDS {
        let (token, original) = app
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
        assert!(app.check(request(&original, "orders:read")).await.allowed);

        // One rotation without grace, one with an hour of it, and a revoke, all at once.
        let mut revoker = app.admin_client().await;
        let (plain, graced, revoked) = tokio::join!(
            rotate(&app, &token.id, 0),
            rotate(&app, &token.id, 3_600),
            revoker.revoke_token(app.admin(proto::RevokeTokenRequest {
                id: token.id.clone()
            })),
        );
        let revoked = revoked.expect("a revoke always succeeds").into_inner();
        assert_eq!(
            revoked.token.expect("token").state(),
            proto::TokenState::Revoked
        );
        let mut secrets = vec![original];
        let mut rotations = 0;
        for rotation in [plain, graced] {
            match rotation {
                Ok(secret) => {
                    rotations += 1;
                    secrets.push(secret);
                }
                // Ran after the revoke: refused, not applied.
                Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
            }
        }

        // Every secret this token ever had is denied as revoked, here and on a replica that
        // never cached it — whatever grace a rotation gave.
        let replica = app.spawn_replica().await;
        for secret in &secrets {
            for server in [&app, &replica] {
                assert_eq!(
                    server.check(request(secret, "orders:read")).await.reason(),
                    DenyReason::TokenRevoked,
                    "round {round}: a secret of a revoked token"
                );
            }
        }
        let actions = audit_actions(&app, &token.id).await;
        let count = |action: &str| actions.iter().filter(|seen| *seen == action).count();
        assert_eq!(
            count("token.rotate"),
            rotations,
            "one event per applied rotation"
        );
        assert_eq!(count("token.revoke"), 1);
    }
}

async fn two_concurrent_rotations_leave_exactly_one_current_secret_and_retire_the_other(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    for round in 0..ROUNDS {
        let (token, original) = app
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
        let (first, second) = tokio::join!(rotate(&app, &token.id, 0), rotate(&app, &token.id, 0));
        let first = first.expect("rotations of a live token both apply, one after the other");
        let second = second.expect("rotations of a live token both apply, one after the other");
        assert_ne!(first, second);

        let replica = app.spawn_replica().await;
        for server in [&app, &replica] {
            let allowed: Vec<bool> = {
                let mut allowed = Vec::new();
                for secret in [&first, &second] {
                    allowed.push(server.check(request(secret, "orders:read")).await.allowed);
                }
                allowed
            };
            assert_eq!(
                allowed.iter().filter(|allowed| **allowed).count(),
                1,
                "round {round}: exactly one of the two new secrets is current"
            );
            for secret in [&original, &first, &second] {
                let reason = server.check(request(secret, "orders:read")).await.reason();
                assert!(
                    matches!(reason, DenyReason::Allowed | DenyReason::TokenRevoked),
                    "round {round}: a secret the token had is retired, never unknown ({reason:?})"
                );
            }
        }
        assert_eq!(
            audit_actions(&app, &token.id)
                .await
                .iter()
                .filter(|action| *action == "token.rotate")
                .count(),
            2
        );
    }
}

async fn update(app: &TestApp, request: proto::UpdateTokenRequest) -> proto::Token {
    app.admin_client()
        .await
        .update_token(app.admin(request))
        .await
        .expect("update applies")
        .into_inner()
        .token
        .expect("token")
}

fn masked(id: &str, path: &str) -> proto::UpdateTokenRequest {
    proto::UpdateTokenRequest {
        id: id.to_owned(),
        update_mask: Some(FieldMask {
            paths: strings(&[path]),
        }),
        ..Default::default()
    }
}

async fn two_concurrent_updates_of_different_fields_both_survive(backend: Backend) {
    let app = app_with_alice(backend).await;
    for round in 0..ROUNDS {
        let (token, _) = app
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
        let name = format!("renamed in round {round}");
        let rate_limit = 30 + u32::try_from(round).expect("few rounds");
        let rename = proto::UpdateTokenRequest {
            name: name.clone(),
            ..masked(&token.id, "name")
        };
        let limit = proto::UpdateTokenRequest {
            rate_limit_per_minute: rate_limit,
            ..masked(&token.id, "rate_limit_per_minute")
        };

        tokio::join!(update(&app, rename), update(&app, limit));

        let stored = app
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
        assert_eq!(stored.name, name, "round {round}: the rename survived");
        assert_eq!(
            stored.rate_limit_per_minute, rate_limit,
            "round {round}: the new rate limit survived"
        );
        assert_eq!(stored.permissions, token.permissions);
    }
}

/// Two replicas, each hit at once by many Checks with a rotated-out secret: each replica's own
/// once-a-window filter lets one report through, and the store keeps it to one a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_a_rotated_out_secret_on_two_replicas_are_audited_once_a_minute() {
    const CHECKS_PER_REPLICA: u64 = 16;
    let app = app_with_alice(Backend::Postgres).await;
    let replica = app.spawn_replica().await;
    let (token, old_secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    rotate(&app, &token.id, 0).await.expect("rotate");

    let mut checks = tokio::task::JoinSet::new();
    for server in [&app, &replica] {
        for _ in 0..CHECKS_PER_REPLICA {
            let mut client = server.authz_client().await;
            let check = request(&old_secret, "orders:read");
            checks.spawn(async move {
                client
                    .check(check)
                    .await
                    .expect("check answers")
                    .into_inner()
                    .reason()
            });
        }
    }
    while let Some(reason) = checks.join_next().await {
        assert_eq!(reason.expect("joined"), DenyReason::TokenRevoked);
    }
    for server in [&app, &replica] {
        let uses = server
            .authorizer
            .stats()
            .retired_secret_uses
            .load(Ordering::Relaxed);
        assert_eq!(uses, CHECKS_PER_REPLICA, "every use is counted");
    }

    // Reports are written off the hot path: wait for the first, then long enough for any other.
    let started = Instant::now();
    let leak_minutes = loop {
        let events = app
            .admin_client()
            .await
            .list_audit_events(app.admin(proto::ListAuditEventsRequest {
                tenant: TENANT.to_owned(),
                page_size: 1_000,
                ..Default::default()
            }))
            .await
            .expect("audit")
            .into_inner()
            .events;
        let minutes: Vec<i64> = events
            .iter()
            .filter(|event| event.action == "token.retired_secret_used")
            .map(|event| event.time.as_ref().expect("time").seconds.div_euclid(60))
            .collect();
        if !minutes.is_empty() && started.elapsed() > Duration::from_secs(1) {
            break minutes;
        }
        assert!(started.elapsed() < super::NOT_HUNG, "no leak report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut distinct = leak_minutes.clone();
    distinct.dedup();
    assert_eq!(
        leak_minutes, distinct,
        "one report per token and minute across replicas: {leak_minutes:?}"
    );
}
