//! Tenant policies and imported tokens (issue 16), on both backends: a policy round-trips and
//! reaches Check's credential read; an import is all or nothing under the owner's limit; known
//! secret hashes are found current or retired; a rotation clears `imported`.

use std::sync::Arc;

use chrono::Duration;
use tessera::domain::model::{NewToken, Token};
use tessera::domain::policy::TenantPolicy;
use tessera::domain::token::SecretHash;
use tessera::store::{Rotation, Store, StoreError};

use super::{all_audit_events, audit, create, grants, new_token, now, owner, tenant};

fn strict_policy(tenant_name: &str) -> TenantPolicy {
    TenantPolicy {
        max_lifetime: Some(Duration::days(30)),
        default_lifetime: Some(Duration::days(7)),
        require_expiry: false,
        max_tokens_per_owner: Some(3),
        allowed_permissions: grants(&["orders:*"]),
        require_ip_allowlist: true,
        enforce_on_existing: true,
        // Whole microseconds, as stored.
        updated_at: Some(now()),
        ..TenantPolicy::none(tenant(tenant_name))
    }
}

/// An imported token of `owner` in its tenant with a hash of a secret of another format.
fn imported(new: NewToken, secret: &str) -> NewToken {
    NewToken {
        token: Token {
            imported: true,
            secret_hint: "(imported)".to_owned(),
            ..new.token
        },
        secret_hash: SecretHash::of(secret),
        signing_key: None,
    }
}

pub async fn a_tenant_policy_round_trips_per_tenant_and_replacing_it_audits_each_write(
    store: Arc<dyn Store>,
) {
    assert_eq!(
        store
            .get_tenant_policy(&tenant("acme"))
            .await
            .expect("read"),
        TenantPolicy::none(tenant("acme"))
    );
    let policy = strict_policy("acme");
    let stored = store
        .set_tenant_policy(&policy, &audit("tenant_policy.set", "acme"))
        .await
        .expect("set");
    assert_eq!(stored, policy);
    assert_eq!(
        store
            .get_tenant_policy(&tenant("acme"))
            .await
            .expect("read"),
        policy
    );
    assert_eq!(
        store
            .get_tenant_policy(&tenant("globex"))
            .await
            .expect("read"),
        TenantPolicy::none(tenant("globex")),
        "per tenant"
    );
    let relaxed = TenantPolicy {
        updated_at: Some(now()),
        ..TenantPolicy::none(tenant("acme"))
    };
    store
        .set_tenant_policy(&relaxed, &audit("tenant_policy.set", "acme"))
        .await
        .expect("replaced");
    assert_eq!(
        store
            .get_tenant_policy(&tenant("acme"))
            .await
            .expect("read"),
        relaxed
    );
    let writes = all_audit_events(&store)
        .await
        .into_iter()
        .filter(|event| event.action == "tenant_policy.set")
        .count();
    assert_eq!(writes, 2);
}

pub async fn a_credential_carries_its_tenants_policy_and_none_without_one(store: Arc<dyn Store>) {
    let alice = owner(&store, "acme", "alice").await;
    let new = new_token(&alice, now());
    create(&store, &new).await;
    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.policy, None);
    let policy = strict_policy("acme");
    store
        .set_tenant_policy(&policy, &audit("tenant_policy.set", "acme"))
        .await
        .expect("set");
    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(record.policy, Some(policy));
}

pub async fn an_import_writes_every_token_and_its_audit_events_or_nothing(store: Arc<dyn Store>) {
    let alice = owner(&store, "acme", "alice").await;
    let bob = owner(&store, "acme", "bob").await;
    let batch = vec![
        imported(new_token(&alice, now()), "legacy-1"),
        imported(new_token(&bob, now()), "legacy-2"),
    ];
    let audits = vec![audit("token.import", "acme"), audit("token.import", "acme")];
    let stored = store
        .import_tokens(&batch, 64, &audits)
        .await
        .expect("imported");
    assert_eq!(stored.len(), 2);
    for (stored, new) in stored.iter().zip(&batch) {
        assert_eq!(stored, &new.token);
        assert!(stored.imported);
    }
    let found = store
        .find_credential(&SecretHash::of("legacy-2"))
        .await
        .expect("read")
        .expect("found by the imported hash");
    assert_eq!(found.token.id, batch[1].token.id);

    // A hash already stored fails the whole batch: the first entry is not written either.
    let before = all_audit_events(&store).await.len();
    let clashing = vec![
        imported(new_token(&alice, now()), "legacy-3"),
        imported(new_token(&alice, now()), "legacy-1"),
    ];
    let error = store
        .import_tokens(&clashing, 64, &audits)
        .await
        .expect_err("a stored hash");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");
    assert!(
        store
            .find_credential(&SecretHash::of("legacy-3"))
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(all_audit_events(&store).await.len(), before);

    // An owner that does not exist fails it too.
    let mut stranger = imported(new_token(&alice, now()), "legacy-4");
    stranger.token.owner_id = tessera::domain::fields::PrincipalId::parse("nobody").expect("id");
    let error = store
        .import_tokens(&[stranger], 64, &audits[..1])
        .await
        .expect_err("unknown owner");
    assert!(
        matches!(error, StoreError::NotFound("principal")),
        "{error:?}"
    );
}

pub async fn an_import_counts_the_batch_against_each_owners_live_token_limit(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    create(&store, &new_token(&alice, now())).await;
    let batch: Vec<_> = (0..3)
        .map(|index| imported(new_token(&alice, now()), &format!("legacy-{index}")))
        .collect();
    let audits: Vec<_> = (0..3).map(|_| audit("token.import", "acme")).collect();
    let error = store
        .import_tokens(&batch, 3, &audits)
        .await
        .expect_err("1 live + 3 > 3");
    assert!(
        matches!(error, StoreError::OwnerTokenLimit { limit: 3 }),
        "{error:?}"
    );
    store
        .import_tokens(&batch[..2], 3, &audits[..2])
        .await
        .expect("1 live + 2 = 3");
}

pub async fn known_secret_hashes_are_the_current_and_retired_ones_and_a_rotation_clears_imported(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    let new = imported(new_token(&alice, now()), "legacy-current");
    let token = store
        .import_tokens(
            std::slice::from_ref(&new),
            64,
            &[audit("token.import", "acme")],
        )
        .await
        .expect("imported")
        .remove(0);
    let unknown = SecretHash::of("never stored");
    assert_eq!(
        store
            .known_secret_hashes(&[unknown, new.secret_hash])
            .await
            .expect("read"),
        vec![new.secret_hash]
    );
    let at = now();
    let rotation = Rotation {
        id: token.id.clone(),
        new_secret_hash: SecretHash::of("tsk_new"),
        new_secret_hint: "tsk_…0000".to_owned(),
        rotated_at: at,
        new_expires_at: at + Duration::days(30),
        old_secret_grace_until: at,
        new_signing_key: None,
        max_live_per_owner: 64,
        forget_retired_before: at - Duration::days(30),
    };
    let rotated = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await
        .expect("rotated");
    assert!(!rotated.imported, "a Tessera secret now");
    assert_eq!(
        store
            .known_secret_hashes(&[new.secret_hash, unknown, rotation.new_secret_hash])
            .await
            .expect("read"),
        vec![new.secret_hash, rotation.new_secret_hash],
        "the retired imported secret is still known"
    );
}
