//! Principals and roles beyond upsert: field-mask updates, paged lists, deleting roles, and the
//! checkpoint at shutdown.

use std::sync::Arc;

use chrono::Duration;
use tessera::domain::fields::PrincipalId;
use tessera::domain::model::Role;
use tessera::store::{PrincipalChanges, Store, StoreError};

use super::{
    all_audit_events, audit, create, grants, new_token, now, open, owner, principal, role_names,
    tenant,
};
use crate::helpers::database::TestDatabase;

fn principal_id(raw: &str) -> PrincipalId {
    PrincipalId::parse(raw).expect("valid principal id")
}

async fn role(store: &Arc<dyn Store>, tenant_name: &str, name: &str) -> Role {
    let at = now();
    let role = Role {
        tenant: tenant(tenant_name),
        name: role_names(&[name]).remove(0),
        permissions: grants(&["orders:read"]),
        created_at: at,
        updated_at: at,
    };
    store
        .upsert_role(&role, &audit("role.upsert", tenant_name))
        .await
        .expect("role upserted")
}

pub(super) async fn a_principal_update_writes_only_the_fields_it_names(store: Arc<dyn Store>) {
    let created_at = now();
    let mut original = principal("acme", "dave", created_at);
    original.permissions = grants(&["orders:read", "orders:write"]);
    original.rate_limit_per_minute = Some(30);
    store
        .upsert_principal(&original, &audit("principal.upsert", "acme"))
        .await
        .expect("upserted");

    let later = created_at + Duration::minutes(1);
    let disable = PrincipalChanges {
        disabled: Some(true),
        ..PrincipalChanges::default()
    };
    let disabled = store
        .update_principal(
            &original.tenant,
            &original.id,
            &disable,
            later,
            &audit("principal.update", "acme"),
        )
        .await
        .expect("updated");
    assert!(disabled.disabled);
    assert_eq!(disabled.permissions, original.permissions, "kept");
    assert_eq!(disabled.rate_limit_per_minute, Some(30), "kept");
    assert_eq!(
        (disabled.created_at, disabled.updated_at),
        (created_at, later)
    );

    let unlimit = PrincipalChanges {
        rate_limit_per_minute: Some(None),
        permissions: Some(grants(&["orders:read"])),
        ..PrincipalChanges::default()
    };
    let unlimited = store
        .update_principal(
            &original.tenant,
            &original.id,
            &unlimit,
            later,
            &audit("principal.update", "acme"),
        )
        .await
        .expect("updated");
    assert_eq!(unlimited.rate_limit_per_minute, None);
    assert_eq!(unlimited.permissions, grants(&["orders:read"]));
    assert!(unlimited.disabled, "kept");
    let read = store
        .get_principal(&original.tenant, &original.id)
        .await
        .expect("read");
    assert_eq!(read, unlimited);
}

pub(super) async fn updating_an_unknown_principal_is_not_found_and_audits_nothing(
    store: Arc<dyn Store>,
) {
    owner(&store, "globex", "dave").await;
    let before = all_audit_events(&store).await.len();
    let changes = PrincipalChanges {
        disabled: Some(true),
        ..PrincipalChanges::default()
    };
    let result = store
        .update_principal(
            &tenant("acme"),
            &principal_id("dave"),
            &changes,
            now(),
            &audit("principal.update", "acme"),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::NotFound("principal"))),
        "{result:?}"
    );
    assert_eq!(all_audit_events(&store).await.len(), before);
}

pub(super) async fn principals_are_listed_by_id_one_page_at_a_time_per_tenant(
    store: Arc<dyn Store>,
) {
    for id in ["carol", "alice", "bob", "dave"] {
        owner(&store, "acme", id).await;
    }
    owner(&store, "globex", "aaron").await;
    let ids = |principals: Vec<tessera::domain::model::Principal>| -> Vec<String> {
        principals
            .into_iter()
            .map(|principal| principal.id.into_string())
            .collect()
    };

    let first = store
        .list_principals(&tenant("acme"), None, 3)
        .await
        .expect("first page");
    assert_eq!(ids(first), ["alice", "bob", "carol"]);
    let rest = store
        .list_principals(&tenant("acme"), Some(&principal_id("carol")), 3)
        .await
        .expect("second page");
    assert_eq!(ids(rest), ["dave"]);
    let other = store
        .list_principals(&tenant("globex"), None, 10)
        .await
        .expect("other tenant");
    assert_eq!(ids(other), ["aaron"]);
}

pub(super) async fn a_role_named_by_a_token_that_is_not_revoked_cannot_be_deleted(
    store: Arc<dyn Store>,
) {
    let alice = owner(&store, "acme", "alice").await;
    role(&store, "acme", "reporting").await;
    // A name that is a prefix of the one tokens name: only exact names count.
    role(&store, "acme", "report").await;
    role(&store, "globex", "reporting").await;
    let mut live = new_token(&alice, now());
    live.token.roles = role_names(&["reporting"]);
    let live = create(&store, &live).await;
    let mut expired = new_token(&alice, now() - Duration::days(60));
    expired.token.roles = role_names(&["reporting"]);
    create(&store, &expired).await;
    let before = all_audit_events(&store).await.len();

    let refused = store
        .delete_role(
            &tenant("acme"),
            &role_names(&["reporting"])[0],
            &audit("role.delete", "acme"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::RoleInUse { tokens: 2 })),
        "{refused:?}"
    );
    assert_eq!(
        all_audit_events(&store).await.len(),
        before,
        "nothing audited"
    );
    assert_eq!(
        store
            .get_roles(&tenant("acme"), &role_names(&["reporting"]))
            .await
            .expect("read")
            .len(),
        1,
        "the role is still there"
    );

    // Another tenant's role of the same name, and a role no token names, go at once.
    for (tenant_name, name) in [("globex", "reporting"), ("acme", "report")] {
        let deleted = store
            .delete_role(
                &tenant(tenant_name),
                &role_names(&[name])[0],
                &audit("role.delete", tenant_name),
            )
            .await
            .expect("deleted");
        assert_eq!(deleted.name.as_str(), name);
    }
    assert_eq!(all_audit_events(&store).await.len(), before + 2);
    let live_revoked = store
        .revoke_token(&live.id, now(), &audit("token.revoke", "acme"))
        .await;
    live_revoked.expect("revoked");
    let still_expired = store
        .delete_role(
            &tenant("acme"),
            &role_names(&["reporting"])[0],
            &audit("role.delete", "acme"),
        )
        .await;
    assert!(
        matches!(still_expired, Err(StoreError::RoleInUse { tokens: 1 })),
        "an expired token can be revived: {still_expired:?}"
    );
}

pub(super) async fn a_role_named_only_by_revoked_tokens_is_deleted(store: Arc<dyn Store>) {
    let alice = owner(&store, "acme", "alice").await;
    role(&store, "acme", "reporting").await;
    let mut named = new_token(&alice, now());
    named.token.roles = role_names(&["reporting"]);
    let named = create(&store, &named).await;
    store
        .revoke_token(&named.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");

    let deleted = store
        .delete_role(
            &tenant("acme"),
            &role_names(&["reporting"])[0],
            &audit("role.delete", "acme"),
        )
        .await
        .expect("deleted");
    assert_eq!(deleted.name.as_str(), "reporting");
    assert!(
        store
            .get_roles(&tenant("acme"), &role_names(&["reporting"]))
            .await
            .expect("read")
            .is_empty()
    );
    let again = store
        .delete_role(
            &tenant("acme"),
            &role_names(&["reporting"])[0],
            &audit("role.delete", "acme"),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::NotFound("role"))),
        "{again:?}"
    );
}

/// After the checkpoint the database file alone holds every write: a copy of it without its
/// `-wal` file, opened elsewhere, has them (on Postgres the checkpoint is a no-op that succeeds).
pub(super) async fn after_the_checkpoint_the_database_file_alone_holds_every_write(
    database: &TestDatabase,
) {
    let store = open(database).await;
    owner(&store, "acme", "alice").await;
    store.checkpoint().await.expect("checkpointed");
    let Some(path) = database.url().strip_prefix("sqlite://") else {
        return;
    };
    let copy_dir = tempfile::tempdir().expect("dir");
    let copy = copy_dir.path().join("copy.db");
    std::fs::copy(path, &copy).expect("copied the database file alone");
    let copied = tessera::store::connect(
        &format!("sqlite://{}", copy.display()),
        &tessera::store::PoolOptions::default(),
    )
    .await
    .expect("the copy opens");
    copied
        .get_principal(&tenant("acme"), &principal_id("alice"))
        .await
        .expect("the copy has the principal");
}
