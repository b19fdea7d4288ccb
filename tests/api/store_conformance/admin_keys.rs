//! The admin-key half of the store contract, on both backends: managed keys by id and by hash,
//! revocation, last use, the bootstrap's one key per database, and the audit log's tenant filter.

use std::sync::Arc;

use chrono::Duration;
use tessera::domain::admin_key::{AdminKey, AdminKeyId, AdminRole, TenantScope};
use tessera::domain::fields::TokenName;
use tessera::domain::token::SecretHash;
use tessera::store::{Bootstrapped, NewAdminKey, Store, StoreError};

use super::{all_audit_events, audit, now, tenant};

/// A key of `role` in `tenants` (none: every tenant) whose secret is `secret`.
fn new_key(secret: &str, role: AdminRole, tenants: &[&str]) -> NewAdminKey {
    let names: Vec<String> = tenants.iter().map(|name| (*name).to_owned()).collect();
    NewAdminKey {
        key: AdminKey {
            id: AdminKeyId::generate(),
            name: TokenName::parse("ci key").expect("valid name"),
            tenants: TenantScope::parse(&names).expect("valid tenants"),
            role,
            secret_hint: "tsa_…abcd".to_owned(),
            created_at: now(),
            created_by: "admin-key:0123abcd".to_owned(),
            expires_at: Some(now() + Duration::days(30)),
            last_used_at: None,
            revoked_at: None,
            bootstrap: false,
        },
        secret_hash: SecretHash::of(secret),
    }
}

pub(super) async fn admin_keys_are_counted_and_recognised_by_hash_only(store: Arc<dyn Store>) {
    let key = new_key("tsa_first_key", AdminRole::Owner, &[]);
    assert_eq!(store.count_admin_keys().await.expect("count"), 0);

    store
        .create_admin_key(&key, &audit("admin_key.create", ""))
        .await
        .expect("inserted");
    let mut same_secret = new_key("tsa_first_key", AdminRole::Viewer, &["acme"]);
    same_secret.key.name = TokenName::parse("again").expect("valid name");
    let duplicate = store
        .create_admin_key(&same_secret, &audit("admin_key.create", ""))
        .await;

    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    assert_eq!(store.count_admin_keys().await.expect("count"), 1);
    let found = store
        .find_admin_key(&SecretHash::of("tsa_first_key"))
        .await
        .expect("lookup");
    assert_eq!(found, Some(key.key));
    assert_eq!(
        store
            .find_admin_key(&SecretHash::of("tsa_other_key"))
            .await
            .expect("lookup"),
        None
    );
}

pub(super) async fn the_bootstrap_key_is_stored_once_and_never_without_its_file(
    store: Arc<dyn Store>,
) {
    let mut first = new_key("tsa_first_bootstrap", AdminRole::Owner, &[]);
    first.key.bootstrap = true;
    first.key.expires_at = None;
    let event = audit("admin_key.create", "");
    let failed = store
        .bootstrap_admin_key(
            &first,
            &event,
            Box::pin(async { Err(std::io::Error::other("disk full")) }),
        )
        .await
        .expect("store answers");
    assert!(
        matches!(failed, Bootstrapped::NotPersisted(_)),
        "{failed:?}"
    );
    assert_eq!(
        store.count_admin_keys().await.expect("count"),
        0,
        "nothing stored"
    );
    assert!(all_audit_events(&store).await.is_empty(), "nothing audited");

    let created = store
        .bootstrap_admin_key(&first, &event, Box::pin(async { Ok(()) }))
        .await
        .expect("store answers");
    assert!(matches!(created, Bootstrapped::Created), "{created:?}");
    let persisted_again = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = persisted_again.clone();
    let second = store
        .bootstrap_admin_key(
            &new_key("tsa_second_bootstrap", AdminRole::Owner, &[]),
            &event,
            Box::pin(async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }),
        )
        .await
        .expect("store answers");
    assert!(matches!(second, Bootstrapped::AlreadyDone), "{second:?}");
    assert!(
        !persisted_again.load(std::sync::atomic::Ordering::SeqCst),
        "no second file"
    );
    assert_eq!(store.count_admin_keys().await.expect("count"), 1);
    let stored = store
        .find_admin_key(&first.secret_hash)
        .await
        .expect("lookup")
        .expect("the first key");
    assert!(stored.bootstrap);
    assert_eq!(
        all_audit_events(&store).await.len(),
        1,
        "one creation event"
    );
}

pub(super) async fn an_admin_key_reads_back_as_written_and_lists_in_id_order(
    store: Arc<dyn Store>,
) {
    let mut written = Vec::new();
    for (n, tenants) in [&["acme"][..], &["acme", "globex"][..], &[][..]]
        .into_iter()
        .enumerate()
    {
        let key = new_key(&format!("tsa_key_{n}"), AdminRole::TokenManager, tenants);
        let stored = store
            .create_admin_key(&key, &audit("admin_key.create", ""))
            .await
            .expect("created");
        assert_eq!(stored, key.key);
        written.push(key.key);
    }
    // Listed in id order; ids made within one millisecond need not follow creation.
    written.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        store.get_admin_key(&written[1].id).await.expect("read"),
        written[1]
    );
    assert!(matches!(
        store.get_admin_key(&AdminKeyId::generate()).await,
        Err(StoreError::NotFound("admin key"))
    ));

    let first_two = store.list_admin_keys(false, None, 2).await.expect("listed");
    assert_eq!(first_two, written[..2].to_vec());
    let rest = store
        .list_admin_keys(false, Some(&written[1].id), 2)
        .await
        .expect("listed");
    assert_eq!(rest, written[2..].to_vec());

    let used_at = now();
    store
        .touch_admin_key(&written[0].id, used_at)
        .await
        .expect("touched");
    assert_eq!(
        store
            .get_admin_key(&written[0].id)
            .await
            .expect("read")
            .last_used_at,
        Some(used_at)
    );
}

pub(super) async fn revoking_an_admin_key_writes_its_audit_event_once(store: Arc<dyn Store>) {
    let key = new_key("tsa_to_revoke", AdminRole::Viewer, &["acme"]);
    store
        .create_admin_key(&key, &audit("admin_key.create", "acme"))
        .await
        .expect("created");
    let at = now();

    let revoked = store
        .revoke_admin_key(&key.key.id, at, &audit("admin_key.revoke", "acme"))
        .await
        .expect("revoked");
    let again = store
        .revoke_admin_key(&key.key.id, now(), &audit("admin_key.revoke", "acme"))
        .await
        .expect("revoked again");

    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(again, revoked, "unchanged");
    let actions: Vec<String> = all_audit_events(&store)
        .await
        .into_iter()
        .map(|event| event.action)
        .collect();
    assert_eq!(actions, ["admin_key.create", "admin_key.revoke"]);
    assert!(
        store
            .list_admin_keys(false, None, 10)
            .await
            .expect("listed")
            .is_empty(),
        "revoked keys are listed only when asked for"
    );
    assert_eq!(
        store.list_admin_keys(true, None, 10).await.expect("listed"),
        vec![revoked]
    );
    assert!(matches!(
        store
            .revoke_admin_key(
                &AdminKeyId::generate(),
                now(),
                &audit("admin_key.revoke", "")
            )
            .await,
        Err(StoreError::NotFound("admin key"))
    ));
}

pub(super) async fn audit_events_filter_by_several_tenants(store: Arc<dyn Store>) {
    for tenant_name in ["acme", "globex", "initech", "", "*"] {
        store
            .insert_audit_event(&audit("role.upsert", tenant_name))
            .await
            .expect("written");
    }
    let tenants = [tenant("acme"), tenant("initech")];
    let events = store
        .list_audit_events(
            Some(&tenants[..]),
            &tessera::store::AuditFilter::default(),
            0,
            100,
        )
        .await
        .expect("listed");
    let seen: Vec<&str> = events.iter().map(|event| event.tenant.as_str()).collect();
    assert_eq!(seen, ["acme", "initech"]);
    assert!(
        store
            .list_audit_events(Some(&[]), &tessera::store::AuditFilter::default(), 0, 100)
            .await
            .expect("listed")
            .is_empty(),
        "no tenant, no event"
    );
}
