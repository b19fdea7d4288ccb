//! Races between a Check's store read and a write. A store read that began before a write and
//! answers after the write's invalidation must not be cached, or the invalidation is undone for
//! a whole TTL (docs/architecture.md, the fill rule). The store underneath is the real one, held
//! after the database answered (`pausing_store.rs`); the tenant is `acme`, with `alice` and
//! `bob` holding `orders:*`.

use std::sync::Arc;

use tessera::domain::fields::TokenId;
use tessera::domain::model::{AuditEvent, NewToken};
use tessera::domain::token::SecretHash;
use tessera::proto;
use tessera::proto::DenyReason;
use tessera::store::Store;
use tokio::task::JoinHandle;

use super::pausing_store::{HeldRead, PausingStore, Read};
use super::requests::{check_request, wait_for_reason};
use super::{Backend, TestApp, new_token, spawn_app_pausing};

const TENANT: &str = "acme";

/// A server whose reads can be held, and where the racing write goes: SQLite is one node, so
/// the same server; on Postgres another replica, so that the server under test hears of the
/// write only by NOTIFY, as it does in production (and not by its own, synchronous, announce).
pub struct Race {
    pub app: TestApp,
    pub store: Arc<PausingStore>,
    pub replica: Option<TestApp>,
    /// A token of bob's, cached on `app`: revoked after the write, so that `app` denying it
    /// shows `app` has applied the write's invalidation too (NOTIFYs arrive in commit order).
    marker: (String, String),
}

impl Race {
    pub async fn new(backend: Backend) -> Self {
        // The store's own deadline bounds the real read beneath the pause, not the hold: a
        // Check waits for a held read, however long, instead of answering STORE_UNAVAILABLE.
        let (app, store) = spawn_app_pausing(backend, |_| {}).await;
        app.principal(TENANT, "alice", &["orders:*"]).await;
        app.principal(TENANT, "bob", &["orders:*"]).await;
        let replica = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(app.spawn_replica().await),
        };
        let (marker, marker_secret) = app.token(new_token(TENANT, "bob", &[])).await;
        assert!(
            app.check(check_request(TENANT, &marker_secret, ""))
                .await
                .allowed
        );
        Self {
            app,
            store,
            replica,
            marker: (marker.id, marker_secret),
        }
    }

    /// Where writes go.
    pub fn writer(&self) -> &TestApp {
        self.replica.as_ref().unwrap_or(&self.app)
    }

    /// The opening of every race: `check` runs on its own task on `app`, and this returns once
    /// the store has answered its next `read`, which is held until released.
    pub async fn check_held(
        &self,
        read: Read,
        check: proto::CheckRequest,
    ) -> (HeldRead, JoinHandle<proto::CheckResponse>) {
        let mut held = self.store.hold_next(read);
        let in_flight = check_in_background(&self.app, check).await;
        held.answered().await;
        (held, in_flight)
    }

    /// Returns once `app` has applied every invalidation announced before.
    pub async fn heard(&self) {
        if self.replica.is_none() {
            return;
        }
        let (id, secret) = &self.marker;
        self.writer()
            .admin_client()
            .await
            .revoke_token(
                self.writer()
                    .admin(proto::RevokeTokenRequest { id: id.clone() }),
            )
            .await
            .expect("marker revoked");
        wait_for_reason(
            &self.app,
            check_request(TENANT, secret, ""),
            DenyReason::TokenRevoked,
        )
        .await;
    }
}

/// Starts a Check on its own task, so the test can write while the Check's read is held.
async fn check_in_background(
    app: &TestApp,
    check: proto::CheckRequest,
) -> JoinHandle<proto::CheckResponse> {
    let mut client = app.authz_client().await;
    tokio::spawn(async move { client.check(check).await.expect("check").into_inner() })
}

/// Stores a copy of `template` (a new id) under a secret hash the test chose, straight into the
/// store: bypassing the admin layer, so nothing is invalidated or announced.
pub async fn store_directly(store: &dyn Store, template: &proto::Token, secret_hash: SecretHash) {
    let id = TokenId::parse(&template.id).expect("id");
    let mut record = store.get_token(&id).await.expect("token");
    record.id = TokenId::generate();
    let new = NewToken {
        token: record,
        secret_hash,
        signing_key: None,
    };
    let audit = AuditEvent {
        id: 0,
        time: chrono::Utc::now(),
        actor: "test".to_owned(),
        action: "token.create".to_owned(),
        tenant: template.tenant.clone(),
        token_id: None,
        principal_id: None,
        summary: String::new(),
        admin_key: String::new(),
    };
    store.create_token(&new, 64, &audit).await.expect("stored");
}
