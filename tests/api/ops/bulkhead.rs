//! The bulkhead: Check's cache misses and the admin/usage work use separate database pools, so
//! a flood of misses cannot starve a revocation of connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera::proto;

use crate::helpers::ops::{TableLock, eventually};
use crate::helpers::{Backend, new_token, spawn_app_with, unknown_secret};

const TENANT: &str = "acme";
const FLOODERS: usize = 24;

#[tokio::test]
async fn a_revocation_completes_while_a_flood_of_cache_misses_holds_every_check_connection() {
    let app = spawn_app_with(Backend::Postgres, |settings| {
        settings.database_check_max_connections = 2;
        settings.database_max_connections = 2;
        settings.database_acquire_timeout_ms = 1_000;
        // Misses keep their connection for as long as the database keeps them waiting.
        settings.check_store_timeout_ms = 10_000;
    })
    .await;
    app.principal(TENANT, "alice", &["orders:read"]).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let check = |token: String| proto::CheckRequest {
        token,
        tenant: TENANT.to_owned(),
        permission: "orders:read".to_owned(),
        ..Default::default()
    };

    // Every miss joins `principals`: locked, each one waits in the database holding a Check
    // connection until its statement times out, and the next miss takes it straight away.
    let lock = TableLock::hold(app.database.url(), "principals").await;
    let stop = Arc::new(AtomicBool::new(false));
    let lookups_before = app.store_lookups();
    let mut flood = Vec::new();
    for _ in 0..FLOODERS {
        let mut client = app.authz_client().await;
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let _ = client.check(check(unknown_secret())).await;
            }
        }));
    }
    let saturated = eventually(Duration::from_secs(10), || async {
        app.store_lookups() >= lookups_before + 4
    })
    .await;
    assert!(saturated, "the flood reaches the store");

    // The revocation's reads and writes (admin key, token, audit) never touch `principals`:
    // with one shared pool they would still wait for a connection the flood holds, and give up
    // after the acquire timeout as UNAVAILABLE.
    let revoked = app
        .admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await;
    let flood_still_waiting = app.store_lookups() >= lookups_before + 4;

    stop.store(true, Ordering::SeqCst);
    lock.release().await;
    for flooder in flood {
        flooder.await.expect("flooder");
    }
    let revoked = revoked.expect("the revocation completes during the flood");
    assert_eq!(
        revoked.into_inner().token.expect("token").state(),
        proto::TokenState::Revoked
    );
    assert!(flood_still_waiting);

    let decision = app.check(check(secret)).await;
    assert!(!decision.allowed);
    assert_eq!(decision.reason(), proto::DenyReason::TokenRevoked);
}
