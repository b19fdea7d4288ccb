//! Concurrent writers on one token: whatever order the database serialises them in, the outcome
//! is one of the orders they could have run in, and Check agrees with it. (Concurrent creates
//! against the per-owner limit: token_lifecycle.rs and store_conformance.rs; two replicas summing
//! usage: usage.rs.)

use prost_types::Duration as ProtoDuration;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use super::{TENANT, request};
use crate::backend_tests;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on};

/// Rounds per test: each is a fresh race, so a lucky interleaving cannot hide a lost update.
const ROUNDS: usize = 8;

backend_tests!(
    concurrent_rotations_and_a_revoke_of_one_token_leave_it_revoked_with_every_secret_denied,
    two_concurrent_rotations_leave_exactly_one_current_secret_and_retire_the_other,
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
