//! The token half of the store contract, on both backends: tokens, principals, roles, API
//! statuses, audit events, versions and retired secrets (admin keys: `admin_keys.rs`).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera::domain::credits::{CreditGrant, MAX_CREDITS, Refill};
use tessera::domain::fields::{ApiScope, Description, PrincipalId, RoleName, TokenId, TokenName};
use tessera::domain::metadata::Metadata;
use tessera::domain::model::{
    ApiStatus, AuditEvent, NewToken, Principal, Role, SecretMatch, Suspension, Token, TokenState,
};
use tessera::domain::token::{SecretHash, TokenPrefix, generate};
use tessera::store::{
    CreditLease, CreditSpend, Rotation, SigningKeyUpdate, Store, StoreError, TokenChanges,
    TokenQuery, TokenUpdate,
};
use tokio::task::JoinSet;

use super::{
    all_audit_events, allowlist, audit, create, create_for, grants, new_token, now, owner,
    principal, role_names, tenant,
};

// ---- fixtures ----

fn query(tenant_name: &str) -> TokenQuery {
    TokenQuery {
        tenant: tenant(tenant_name),
        owner_id: None,
        include_revoked: false,
        expiring_before: None,
        unused_since: None,
        after: None,
        limit: 100,
        now: now(),
    }
}

async fn listed_ids(store: &Arc<dyn Store>, query: &TokenQuery) -> Vec<TokenId> {
    let tokens = store.list_tokens(query).await.expect("tokens listed");
    tokens.into_iter().map(|token| token.id).collect()
}

fn sorted(mut ids: Vec<TokenId>) -> Vec<TokenId> {
    ids.sort();
    ids
}

fn rotation_of(token: &Token, at: DateTime<Utc>, grace: Duration) -> (Rotation, SecretHash) {
    let secret = generate(&TokenPrefix::default());
    let rotation = Rotation {
        id: token.id.clone(),
        new_secret_hash: secret.hash,
        new_secret_hint: secret.hint,
        rotated_at: at,
        new_expires_at: at + Duration::days(90),
        old_secret_grace_until: at + grace,
        new_signing_key: None,
        max_live_per_owner: 64,
        forget_retired_before: at - Duration::days(30),
    };
    (rotation, secret.hash)
}

/// An update that writes every mutable field of `token` as it is given.
fn every_field_of(token: &Token) -> TokenUpdate<'static> {
    TokenUpdate {
        id: token.id.clone(),
        changes: TokenChanges {
            name: Some(token.name.clone()),
            description: Some(token.description.clone()),
            permissions: Some(token.permissions.clone()),
            roles: Some(token.roles.clone()),
            allowed_ips: Some(token.allowed_ips.clone()),
            rate_limit_per_minute: Some(token.rate_limit_per_minute),
            expires_at: Some(token.expires_at),
            require_signature: Some(token.require_signature),
            metadata: Some(token.metadata.clone()),
            metadata_entries: Vec::new(),
            credits: Some(None),
        },
        signing_key: SigningKeyUpdate::Keep,
        updated_at: token.updated_at,
        expected_version: None,
        max_live_per_owner: 64,
    }
}

// ---- tokens ----

pub(super) async fn it_answers_a_ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping answered");
}

pub(super) async fn a_created_token_reads_back_exactly_as_written(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let mut new = new_token(&owner, now());
    new.token.description = Description::parse("deploys from ci\nsecond line").expect("valid");
    new.token.permissions = grants(&["fn:OrderList_Load_Query", "orders:*"]);
    new.token.roles = role_names(&["reader", "writer"]);
    new.token.allowed_ips = allowlist(&["10.0.0.0/8", "2001:db8::1"]);
    new.token.rate_limit_per_minute = 120;
    new.token.require_signature = true;
    new.token.metadata = metadata(&[
        ("plan", "pro"),
        ("region", "eu-west-1"),
        ("note", "ünïcode"),
    ]);

    let created = store
        .create_token(&new, 5, &audit("token.create", "acme"))
        .await
        .expect("token created");

    assert_eq!(created, new.token);
    assert_eq!(
        store.get_token(&new.token.id).await.expect("token read"),
        new.token
    );
}

pub(super) async fn a_token_cannot_be_created_for_an_unknown_owner(store: Arc<dyn Store>) {
    let stranger = principal("acme", "nobody", now());
    let new = new_token(&stranger, now());

    let result = store
        .create_token(&new, 5, &audit("token.create", "acme"))
        .await;

    assert!(
        matches!(result, Err(StoreError::NotFound("principal"))),
        "{result:?}"
    );
    assert!(matches!(
        store.get_token(&new.token.id).await,
        Err(StoreError::NotFound("token"))
    ));
}

pub(super) async fn an_owner_cannot_exceed_the_live_token_limit_even_under_concurrent_creates(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let mut creates = JoinSet::new();
    for _ in 0..20 {
        let store = Arc::clone(&store);
        let new = new_token(&owner, now());
        creates.spawn(async move {
            store
                .create_token(&new, 5, &audit("token.create", "acme"))
                .await
        });
    }

    let mut created = 0;
    while let Some(joined) = creates.join_next().await {
        match joined.expect("create task") {
            Ok(_) => created += 1,
            Err(StoreError::OwnerTokenLimit { limit: 5 }) => {}
            Err(other) => panic!("unexpected error under contention: {other:?}"),
        }
    }

    assert_eq!(created, 5);
    let mut by_owner = query("acme");
    by_owner.owner_id = Some(owner.id.clone());
    assert_eq!(listed_ids(&store, &by_owner).await.len(), 5);
}

pub(super) async fn revoked_and_expired_tokens_do_not_count_toward_the_owner_limit(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let start = now();
    let revoked = create(&store, &new_token(&owner, start)).await;
    store
        .revoke_token(&revoked.id, start, &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let mut short_lived = new_token(&owner, start);
    short_lived.token.expires_at = start + Duration::minutes(1);
    store
        .create_token(&short_lived, 1, &audit("token.create", "acme"))
        .await
        .expect("the revoked token does not count");

    // Created after the short-lived token expired: it no longer counts either.
    let later = new_token(&owner, start + Duration::minutes(2));
    store
        .create_token(&later, 1, &audit("token.create", "acme"))
        .await
        .expect("the expired token does not count");

    let one_too_many = new_token(&owner, start + Duration::minutes(3));
    let result = store
        .create_token(&one_too_many, 1, &audit("token.create", "acme"))
        .await;
    assert!(
        matches!(result, Err(StoreError::OwnerTokenLimit { limit: 1 })),
        "{result:?}"
    );
}

pub(super) async fn a_second_token_with_the_same_secret_hash_is_a_conflict(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let first = new_token(&owner, now());
    create(&store, &first).await;
    let mut second = new_token(&owner, now());
    second.secret_hash = first.secret_hash;

    let result = store
        .create_token(&second, 64, &audit("token.create", "acme"))
        .await;

    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
}

pub(super) async fn unknown_token_ids_are_not_found_by_any_operation(store: Arc<dyn Store>) {
    let owner = principal("acme", "alice", now());
    let ghost = new_token(&owner, now()).token;
    let (rotation, _) = rotation_of(&ghost, now(), Duration::zero());

    let got = store.get_token(&ghost.id).await;
    let updated = store
        .update_token(&every_field_of(&ghost), &audit("token.update", "acme"))
        .await;
    let rotated = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await;
    let revoked = store
        .revoke_token(&ghost.id, now(), &audit("token.revoke", "acme"))
        .await;

    assert!(matches!(got, Err(StoreError::NotFound("token"))), "{got:?}");
    assert!(
        matches!(updated, Err(StoreError::NotFound("token"))),
        "{updated:?}"
    );
    assert!(
        matches!(rotated, Err(StoreError::NotFound("token"))),
        "{rotated:?}"
    );
    assert!(
        matches!(revoked, Err(StoreError::NotFound("token"))),
        "{revoked:?}"
    );
}

pub(super) async fn tokens_are_listed_in_id_order_one_page_at_a_time(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(create_for(&store, &owner).await.id);
    }

    let mut pages = Vec::new();
    let mut page_query = query("acme");
    page_query.limit = 3;
    loop {
        let page = listed_ids(&store, &page_query).await;
        let Some(last) = page.last().cloned() else {
            break;
        };
        pages.push(page);
        page_query.after = Some(last);
    }

    let page_sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(page_sizes, vec![3, 3, 1]);
    assert_eq!(pages.concat(), sorted(created));
}

pub(super) async fn listing_is_scoped_to_the_tenant_and_filters_by_owner(store: Arc<dyn Store>) {
    let alice = owner(&store, "acme", "alice").await;
    let bob = owner(&store, "acme", "bob").await;
    let other_alice = owner(&store, "globex", "alice").await;
    let alices = vec![
        create_for(&store, &alice).await.id,
        create_for(&store, &alice).await.id,
    ];
    let bobs = vec![create_for(&store, &bob).await.id];
    create_for(&store, &other_alice).await;

    let mut by_alice = query("acme");
    by_alice.owner_id = Some(alice.id.clone());

    assert_eq!(listed_ids(&store, &by_alice).await, sorted(alices.clone()));
    assert_eq!(
        listed_ids(&store, &query("acme")).await,
        sorted([alices, bobs].concat())
    );
}

pub(super) async fn listing_hides_revoked_tokens_unless_asked_to_include_them(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let live = create_for(&store, &owner).await.id;
    let revoked = create_for(&store, &owner).await.id;
    store
        .revoke_token(&revoked, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");

    let mut with_revoked = query("acme");
    with_revoked.include_revoked = true;

    assert_eq!(listed_ids(&store, &query("acme")).await, vec![live.clone()]);
    assert_eq!(
        listed_ids(&store, &with_revoked).await,
        sorted(vec![live, revoked])
    );
}

pub(super) async fn listing_expiring_before_returns_only_live_tokens_expiring_in_the_window(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let at = now();
    let mut expiring_soon = new_token(&owner, at);
    expiring_soon.token.expires_at = at + Duration::days(1);
    let mut expiring_later = new_token(&owner, at);
    expiring_later.token.expires_at = at + Duration::days(10);
    let mut already_expired = new_token(&owner, at - Duration::days(10));
    already_expired.token.expires_at = at - Duration::days(1);
    for new in [&expiring_soon, &expiring_later, &already_expired] {
        create(&store, new).await;
    }

    let mut expiring = query("acme");
    expiring.now = at;
    expiring.expiring_before = Some(at + Duration::days(5));

    assert_eq!(
        listed_ids(&store, &expiring).await,
        vec![expiring_soon.token.id]
    );
}

pub(super) async fn listing_unused_since_returns_tokens_never_used_or_last_used_before_the_instant(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let at = now();
    let never_used = new_token(&owner, at);
    let mut used_long_ago = new_token(&owner, at);
    used_long_ago.token.last_used_at = Some(at - Duration::days(10));
    let mut used_recently = new_token(&owner, at);
    used_recently.token.last_used_at = Some(at - Duration::hours(1));
    for new in [&never_used, &used_long_ago, &used_recently] {
        create(&store, new).await;
    }

    let mut unused = query("acme");
    unused.unused_since = Some(at - Duration::days(1));

    assert_eq!(
        listed_ids(&store, &unused).await,
        sorted(vec![never_used.token.id, used_long_ago.token.id])
    );
}

pub(super) async fn an_update_replaces_the_mutable_fields_and_keeps_the_rest(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let mut changed = created.clone();
    changed.name = TokenName::parse("renamed").expect("valid");
    changed.description = Description::parse("now with a description").expect("valid");
    changed.permissions = grants(&["orders:write", "products:read"]);
    changed.roles = role_names(&["auditor"]);
    changed.allowed_ips = allowlist(&["192.0.2.0/24"]);
    changed.rate_limit_per_minute = 30;
    changed.require_signature = true;
    changed.expires_at = created.expires_at + Duration::days(7);
    changed.updated_at = created.updated_at + Duration::seconds(5);
    changed.version = created.version + 1;
    // Not mutable through an update: these must come back as stored.
    let mut attempted = changed.clone();
    attempted.secret_hint = "tsk_…fake".to_owned();
    attempted.created_at = created.created_at - Duration::days(1);

    let updated = store
        .update_token(&every_field_of(&attempted), &audit("token.update", "acme"))
        .await
        .expect("updated");

    assert_eq!(updated, changed);
    assert_eq!(
        store.get_token(&created.id).await.expect("token read"),
        changed
    );
}

pub(super) async fn a_revoked_token_cannot_be_updated(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let revoked = store
        .revoke_token(&created.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let mut changed = revoked.clone();
    changed.name = TokenName::parse("renamed").expect("valid");

    let result = store
        .update_token(&every_field_of(&changed), &audit("token.update", "acme"))
        .await;

    assert!(
        matches!(result, Err(StoreError::TokenRevoked)),
        "{result:?}"
    );
    assert_eq!(
        store.get_token(&created.id).await.expect("token read"),
        revoked
    );
}

pub(super) async fn revoking_twice_reports_the_token_as_already_revoked(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let at = now();

    let revoked = store
        .revoke_token(&created.id, at, &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let again = store
        .revoke_token(
            &created.id,
            at + Duration::seconds(1),
            &audit("token.revoke", "acme"),
        )
        .await;

    assert_eq!(revoked.revoked_at, Some(at));
    assert!(matches!(again, Err(StoreError::TokenRevoked)), "{again:?}");
    assert_eq!(
        store
            .get_token(&created.id)
            .await
            .expect("token read")
            .revoked_at,
        Some(at)
    );
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::parse(pairs.iter().copied()).expect("valid metadata")
}

pub(super) async fn an_update_of_the_metadata_replaces_it_and_check_reads_it(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let mut new = new_token(&owner, now());
    new.token.metadata = metadata(&[("plan", "free"), ("region", "eu")]);
    let created = store
        .create_token(&new, 5, &audit("token.create", "acme"))
        .await
        .expect("token created");

    let replaced = metadata(&[("plan", "pro")]);
    let update = update_of(
        &created,
        TokenChanges {
            metadata: Some(replaced.clone()),
            ..TokenChanges::default()
        },
    );
    let updated = store
        .update_token(&update, &audit("token.update", "acme"))
        .await
        .expect("updated");

    assert_eq!(updated.metadata, replaced);
    assert_eq!(updated.name, created.name);
    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(record.token.metadata, replaced);
}

pub(super) async fn a_suspension_is_stored_read_back_and_lifted_with_its_own_versions(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    let created = store
        .create_token(&new, 5, &audit("token.create", "acme"))
        .await
        .expect("token created");
    let at = now();
    let suspension = Suspension {
        at,
        reason: Description::parse("chargeback pending").expect("reason"),
    };

    let suspended = store
        .set_suspension(
            &created.id,
            Some(&suspension),
            at,
            &audit("token.suspend", "acme"),
        )
        .await
        .expect("suspended");
    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup")
        .expect("found");
    let resumed = store
        .set_suspension(
            &created.id,
            None,
            at + Duration::seconds(1),
            &audit("token.resume", "acme"),
        )
        .await
        .expect("resumed");

    assert_eq!(suspended.suspension, Some(suspension.clone()));
    assert_eq!(suspended.state(at), TokenState::Suspended);
    assert_eq!(suspended.version, created.version + 1);
    assert_eq!(record.token.suspension, Some(suspension));
    assert_eq!(resumed.suspension, None);
    assert_eq!(resumed.state(at), TokenState::Active);
    assert_eq!(resumed.version, created.version + 2);
    assert_eq!(
        store.get_token(&created.id).await.expect("token read"),
        resumed
    );
}

pub(super) async fn a_revoked_token_cannot_be_suspended(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let revoked = store
        .revoke_token(&created.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let suspension = Suspension {
        at: now(),
        reason: Description::parse("").expect("reason"),
    };

    let result = store
        .set_suspension(
            &created.id,
            Some(&suspension),
            now(),
            &audit("token.suspend", "acme"),
        )
        .await;
    let unknown = store
        .set_suspension(
            &TokenId::generate(),
            None,
            now(),
            &audit("token.resume", "acme"),
        )
        .await;

    assert!(
        matches!(result, Err(StoreError::TokenRevoked)),
        "{result:?}"
    );
    assert!(
        matches!(unknown, Err(StoreError::NotFound("token"))),
        "{unknown:?}"
    );
    assert_eq!(
        store.get_token(&created.id).await.expect("token read"),
        revoked
    );
}

pub(super) async fn a_rotated_secret_is_found_as_retired_with_its_grace_period(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    create(&store, &new).await;
    let rotated_at = now() + Duration::hours(1);
    let (rotation, new_hash) = rotation_of(&new.token, rotated_at, Duration::minutes(10));

    let rotated = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await
        .expect("rotated");
    let by_old = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup");
    let by_new = store.find_credential(&new_hash).await.expect("lookup");

    assert_eq!(rotated.secret_hint, rotation.new_secret_hint);
    assert_eq!(rotated.rotated_at, Some(rotated_at));
    assert_eq!(rotated.updated_at, rotated_at);
    assert_eq!(rotated.expires_at, rotation.new_expires_at);
    let by_old = by_old.expect("the old secret is still recognised");
    assert_eq!(
        by_old.secret_match,
        SecretMatch::Retired {
            grace_until: rotated_at + Duration::minutes(10)
        }
    );
    assert_eq!(by_old.token, rotated);
    let by_new = by_new.expect("the new secret is found");
    assert_eq!(by_new.secret_match, SecretMatch::Current);
    assert_eq!(by_new.token, rotated);
}

pub(super) async fn a_second_rotation_retires_the_second_secret_and_keeps_the_first_retired(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    create(&store, &new).await;
    let first_at = now() + Duration::hours(1);
    let (first, second_hash) = rotation_of(&new.token, first_at, Duration::zero());
    store
        .rotate_token(&first, &audit("token.rotate", "acme"))
        .await
        .expect("first rotation");
    let second_at = first_at + Duration::hours(1);
    let (second, third_hash) = rotation_of(&new.token, second_at, Duration::minutes(5));
    store
        .rotate_token(&second, &audit("token.rotate", "acme"))
        .await
        .expect("second rotation");

    let matched = |hash: SecretHash| {
        let store = Arc::clone(&store);
        async move {
            let record = store.find_credential(&hash).await.expect("lookup");
            record.expect("the secret is recognised").secret_match
        }
    };
    assert_eq!(
        matched(new.secret_hash).await,
        SecretMatch::Retired {
            grace_until: first_at
        }
    );
    assert_eq!(
        matched(second_hash).await,
        SecretMatch::Retired {
            grace_until: second_at + Duration::minutes(5)
        }
    );
    assert_eq!(matched(third_hash).await, SecretMatch::Current);
}

pub(super) async fn a_revoked_token_cannot_be_rotated(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    create(&store, &new).await;
    store
        .revoke_token(&new.token.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let (rotation, new_hash) = rotation_of(&new.token, now(), Duration::minutes(10));

    let result = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await;

    assert!(
        matches!(result, Err(StoreError::TokenRevoked)),
        "{result:?}"
    );
    let by_old = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup");
    assert_eq!(
        by_old.expect("still the current secret").secret_match,
        SecretMatch::Current
    );
    assert!(
        store
            .find_credential(&new_hash)
            .await
            .expect("lookup")
            .is_none()
    );
}

pub(super) async fn an_unknown_secret_hash_finds_no_credential(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    create_for(&store, &owner).await;

    let found = store
        .find_credential(&SecretHash::of("tsk_never_issued"))
        .await;

    assert!(matches!(found, Ok(None)), "{found:?}");
}

pub(super) async fn a_credential_carries_its_owner_and_only_the_roles_that_exist(
    store: Arc<dyn Store>,
) {
    let mut alice = principal("acme", "alice", now());
    alice.permissions = grants(&["orders:*", "products:read"]);
    alice.rate_limit_per_minute = Some(600);
    let alice = store
        .upsert_principal(&alice, &audit("principal.upsert", "acme"))
        .await
        .expect("owner upserted");
    let reader = Role {
        tenant: tenant("acme"),
        name: RoleName::parse("reader").expect("valid"),
        permissions: grants(&["*:read"]),
        created_at: now(),
        updated_at: now(),
    };
    let reader = store
        .upsert_role(&reader, &audit("role.upsert", "acme"))
        .await
        .expect("role upserted");
    let mut same_name_elsewhere = reader.clone();
    same_name_elsewhere.tenant = tenant("globex");
    same_name_elsewhere.permissions = grants(&["*"]);
    store
        .upsert_role(&same_name_elsewhere, &audit("role.upsert", "globex"))
        .await
        .expect("role upserted");
    let mut new = new_token(&alice, now());
    new.token.roles = role_names(&["ghost", "reader"]);
    create(&store, &new).await;

    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup")
        .expect("credential found");

    assert_eq!(record.token, new.token);
    assert_eq!(record.secret_match, SecretMatch::Current);
    assert_eq!(record.owner, Some(alice));
    assert_eq!(record.roles, vec![reader]);
}

// ---- principals, roles, API status ----

pub(super) async fn a_principal_upsert_round_trips_and_keeps_its_creation_time(
    store: Arc<dyn Store>,
) {
    let first_at = now();
    let original = principal("acme", "alice", first_at);
    let stored = store
        .upsert_principal(&original, &audit("principal.upsert", "acme"))
        .await
        .expect("inserted");
    assert_eq!(stored, original);

    let later = first_at + Duration::hours(1);
    let mut replacement = principal("acme", "alice", later);
    replacement.permissions = grants(&["orders:read"]);
    replacement.disabled = true;
    replacement.rate_limit_per_minute = Some(30);
    let replaced = store
        .upsert_principal(&replacement, &audit("principal.upsert", "acme"))
        .await
        .expect("replaced");

    let expected = Principal {
        created_at: first_at,
        ..replacement
    };
    assert_eq!(replaced, expected);
    let read = store
        .get_principal(&expected.tenant, &expected.id)
        .await
        .expect("read");
    assert_eq!(read, expected);
}

pub(super) async fn an_unknown_principal_is_not_found(store: Arc<dyn Store>) {
    owner(&store, "globex", "alice").await;

    let result = store
        .get_principal(
            &tenant("acme"),
            &PrincipalId::parse("alice").expect("valid"),
        )
        .await;

    assert!(
        matches!(result, Err(StoreError::NotFound("principal"))),
        "{result:?}"
    );
}

pub(super) async fn roles_are_listed_by_name_per_tenant_and_fetched_only_when_they_exist(
    store: Arc<dyn Store>,
) {
    let first_at = now();
    let mut upserted = Vec::new();
    for (tenant_name, name) in [
        ("acme", "writer"),
        ("acme", "admin"),
        ("acme", "reader"),
        ("globex", "reader"),
    ] {
        let role = Role {
            tenant: tenant(tenant_name),
            name: RoleName::parse(name).expect("valid"),
            permissions: grants(&["orders:read"]),
            created_at: first_at,
            updated_at: first_at,
        };
        upserted.push(
            store
                .upsert_role(&role, &audit("role.upsert", tenant_name))
                .await
                .expect("upserted"),
        );
    }
    let mut replaced = upserted[1].clone();
    replaced.permissions = grants(&["*"]);
    replaced.created_at = first_at + Duration::hours(1);
    replaced.updated_at = first_at + Duration::hours(1);
    let replaced = store
        .upsert_role(&replaced, &audit("role.upsert", "acme"))
        .await
        .expect("replaced");

    let names = |roles: Vec<Role>| -> Vec<String> {
        roles
            .into_iter()
            .map(|role| role.name.into_string())
            .collect()
    };
    let listed = store.list_roles(&tenant("acme")).await.expect("listed");
    let fetched = store
        .get_roles(&tenant("acme"), &role_names(&["reader", "ghost", "admin"]))
        .await
        .expect("fetched");
    let none = store
        .get_roles(&tenant("acme"), &[])
        .await
        .expect("fetched");

    assert_eq!(replaced.created_at, first_at);
    assert_eq!(replaced.permissions, grants(&["*"]));
    assert_eq!(names(listed.clone()), vec!["admin", "reader", "writer"]);
    assert_eq!(listed[0], replaced);
    assert_eq!(fetched, vec![replaced, upserted[2].clone()]);
    assert!(none.is_empty());
}

pub(super) async fn the_api_status_is_online_until_set_and_then_reads_back_per_scope(
    store: Arc<dyn Store>,
) {
    let acme = ApiScope::parse("acme").expect("valid");
    assert_eq!(
        store.get_api_status(&acme).await.expect("read"),
        ApiStatus::never_set(acme.clone())
    );

    let offline = ApiStatus {
        scope: acme.clone(),
        online: false,
        message: "maintenance until 14:00".to_owned(),
        updated_at: Some(now()),
    };
    let stored = store
        .set_api_status(&offline, &audit("api.offline", "acme"))
        .await
        .expect("set");
    let back_online = ApiStatus {
        online: true,
        message: String::new(),
        updated_at: Some(now() + Duration::minutes(1)),
        ..offline.clone()
    };
    let all = ApiScope::all();

    assert_eq!(stored, offline);
    assert_eq!(store.get_api_status(&acme).await.expect("read"), offline);
    assert_eq!(
        store.offline_api_statuses().await.expect("read"),
        vec![offline.clone()]
    );
    assert_eq!(
        store.get_api_status(&all).await.expect("read"),
        ApiStatus::never_set(all)
    );
    store
        .set_api_status(&back_online, &audit("api.online", "acme"))
        .await
        .expect("set");
    assert_eq!(
        store.get_api_status(&acme).await.expect("read"),
        back_online
    );
    assert!(
        store.offline_api_statuses().await.expect("read").is_empty(),
        "a status set back online is not listed as offline"
    );
}

// ---- audit ----

pub(super) async fn every_mutation_writes_its_audit_event_in_order(store: Arc<dyn Store>) {
    let at = now();
    let alice = principal("acme", "alice", at);
    let mut principal_event = audit("principal.upsert", "acme");
    principal_event.principal_id = Some(alice.id.clone());
    store
        .upsert_principal(&alice, &principal_event)
        .await
        .expect("principal");
    let role = Role {
        tenant: tenant("acme"),
        name: RoleName::parse("reader").expect("valid"),
        permissions: grants(&["*:read"]),
        created_at: at,
        updated_at: at,
    };
    let role_event = audit("role.upsert", "acme");
    store.upsert_role(&role, &role_event).await.expect("role");
    let new = new_token(&alice, at);
    let token_event = |action: &str| AuditEvent {
        token_id: Some(new.token.id.clone()),
        principal_id: Some(alice.id.clone()),
        ..audit(action, "acme")
    };
    let create_event = token_event("token.create");
    let token = store
        .create_token(&new, 5, &create_event)
        .await
        .expect("create");
    let update_event = token_event("token.update");
    store
        .update_token(&every_field_of(&token), &update_event)
        .await
        .expect("update");
    let rotate_event = token_event("token.rotate");
    let (rotation, _) = rotation_of(&token, at, Duration::zero());
    store
        .rotate_token(&rotation, &rotate_event)
        .await
        .expect("rotate");
    let revoke_event = token_event("token.revoke");
    store
        .revoke_token(&token.id, at, &revoke_event)
        .await
        .expect("revoke");
    let status_event = audit("api.offline", "*");
    let status = ApiStatus {
        scope: ApiScope::all(),
        online: false,
        message: String::new(),
        updated_at: Some(at),
    };
    store
        .set_api_status(&status, &status_event)
        .await
        .expect("status");

    let events = all_audit_events(&store).await;

    let ids: Vec<i64> = events.iter().map(|event| event.id).collect();
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids increase: {ids:?}"
    );
    assert!(ids.iter().all(|id| *id > 0), "ids are assigned: {ids:?}");
    let without_ids: Vec<AuditEvent> = events
        .into_iter()
        .map(|event| AuditEvent { id: 0, ..event })
        .collect();
    assert_eq!(
        without_ids,
        vec![
            principal_event,
            role_event,
            create_event,
            update_event,
            rotate_event,
            revoke_event,
            status_event
        ]
    );
}

pub(super) async fn a_failed_mutation_writes_no_audit_event(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &owner).await;
    store
        .revoke_token(&token.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let before = all_audit_events(&store).await;

    let failures = [
        store
            .revoke_token(&token.id, now(), &audit("token.revoke", "acme"))
            .await
            .err(),
        store
            .update_token(&every_field_of(&token), &audit("token.update", "acme"))
            .await
            .err(),
        store
            .rotate_token(
                &rotation_of(&token, now(), Duration::zero()).0,
                &audit("token.rotate", "acme"),
            )
            .await
            .err(),
        store
            .create_token(&new_token(&owner, now()), 0, &audit("token.create", "acme"))
            .await
            .err(),
        store
            .create_token(
                &new_token(&principal("acme", "nobody", now()), now()),
                5,
                &audit("token.create", "acme"),
            )
            .await
            .err(),
    ];

    assert!(
        failures.iter().all(Option::is_some),
        "every mutation failed: {failures:?}"
    );
    assert_eq!(all_audit_events(&store).await, before);
}

pub(super) async fn audit_events_page_by_id_and_filter_by_tenant_principal_action_and_actor(
    store: Arc<dyn Store>,
) {
    for tenant_name in ["acme", "globex", "acme", "acme", "globex", "acme"] {
        owner(&store, tenant_name, "alice").await;
    }
    let everything = all_audit_events(&store).await;

    let mut paged = Vec::new();
    let mut after_id = 0;
    loop {
        let page = store
            .list_audit_events(None, &tessera::store::AuditFilter::default(), after_id, 4)
            .await
            .expect("page");
        assert!(page.len() <= 4);
        let Some(last) = page.last() else {
            break;
        };
        after_id = last.id;
        paged.extend(page);
    }
    let acme_only = store
        .list_audit_events(
            Some(&[tenant("acme")][..]),
            &tessera::store::AuditFilter::default(),
            0,
            100,
        )
        .await
        .expect("filtered");
    let acme_after_second = store
        .list_audit_events(
            Some(&[tenant("acme")][..]),
            &tessera::store::AuditFilter::default(),
            acme_only[1].id,
            100,
        )
        .await
        .expect("filtered");

    assert_eq!(everything.len(), 6);
    assert_eq!(paged, everything);
    let expected_acme: Vec<AuditEvent> = everything
        .into_iter()
        .filter(|event| event.tenant == "acme")
        .collect();
    assert_eq!(acme_only, expected_acme);
    assert_eq!(acme_after_second, expected_acme[2..].to_vec());

    // Each filter matches exactly, alone and with the others.
    let alice = tessera::domain::fields::PrincipalId::parse("alice").expect("id");
    let bob = tessera::domain::fields::PrincipalId::parse("bob").expect("id");
    let token = TokenId::generate();
    let entries = [
        ("token.create", "console:carol", Some(&alice), Some(&token)),
        ("token.revoke", "console:carol", Some(&alice), Some(&token)),
        ("principal.upsert", "adk_x", Some(&bob), None),
    ];
    for (action, actor, principal, token) in entries {
        let mut event = audit(action, "acme");
        event.actor = actor.to_owned();
        event.principal_id = principal.cloned();
        event.token_id = token.cloned();
        store.insert_audit_event(&event).await.expect("audited");
    }
    let actions = async |filter: tessera::store::AuditFilter| -> Vec<String> {
        store
            .list_audit_events(None, &filter, 0, 100)
            .await
            .expect("filtered")
            .into_iter()
            .map(|event| event.action)
            .collect()
    };
    let of_bob = actions(tessera::store::AuditFilter {
        principal_id: Some(bob),
        ..Default::default()
    })
    .await;
    assert_eq!(of_bob, ["principal.upsert"]);
    let of_token = actions(tessera::store::AuditFilter {
        token_id: Some(token.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(of_token, ["token.create", "token.revoke"]);
    let carols_revokes = actions(tessera::store::AuditFilter {
        actor: Some("console:carol".to_owned()),
        action: Some("token.revoke".to_owned()),
        principal_id: Some(alice),
        token_id: Some(token),
    })
    .await;
    assert_eq!(carols_revokes, ["token.revoke"]);
    let nobody = actions(tessera::store::AuditFilter {
        actor: Some("console:dave".to_owned()),
        ..Default::default()
    })
    .await;
    assert!(nobody.is_empty());
}

pub(super) async fn a_tokens_secret_hashes_are_its_current_and_retired_ones(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    let other = create_for(&store, &owner).await;
    create(&store, &new).await;
    let (first, second_hash) = rotation_of(&new.token, now(), Duration::zero());
    store
        .rotate_token(&first, &audit("token.rotate", "acme"))
        .await
        .expect("first rotation");
    let (second, third_hash) = rotation_of(&new.token, now(), Duration::zero());
    store
        .rotate_token(&second, &audit("token.rotate", "acme"))
        .await
        .expect("second rotation");

    let mut hashes = store.secret_hashes(&new.token.id).await.expect("hashes");
    let unknown = store.secret_hashes(&TokenId::generate()).await;

    hashes.sort_by_key(|hash| hash.0);
    let mut expected = vec![new.secret_hash, second_hash, third_hash];
    expected.sort_by_key(|hash| hash.0);
    assert_eq!(hashes, expected);
    assert_eq!(
        store.secret_hashes(&other.id).await.expect("hashes").len(),
        1
    );
    assert!(
        matches!(unknown, Err(StoreError::NotFound("token"))),
        "{unknown:?}"
    );
}

pub(super) async fn an_audit_event_can_be_written_on_its_own(store: Arc<dyn Store>) {
    let event = AuditEvent {
        token_id: Some(TokenId::generate()),
        principal_id: Some(PrincipalId::parse("alice").expect("valid")),
        ..audit("token.retired_secret_used", "acme")
    };

    store.insert_audit_event(&event).await.expect("written");

    let events = all_audit_events(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        AuditEvent {
            id: 0,
            ..events[0].clone()
        },
        event
    );
}

// ---- optimistic concurrency, the owner limit on revival, retired secrets ----

/// An update that writes only `changes`.
fn update_of(token: &Token, changes: TokenChanges) -> TokenUpdate<'static> {
    TokenUpdate {
        changes,
        updated_at: now(),
        ..every_field_of(token)
    }
}

pub(super) async fn an_update_writes_only_the_fields_it_names(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    // Both updates are built from the same read, as two concurrent admins would.
    let rename = update_of(
        &created,
        TokenChanges {
            name: Some(TokenName::parse("renamed").expect("valid")),
            ..TokenChanges::default()
        },
    );
    let limit = update_of(
        &created,
        TokenChanges {
            rate_limit_per_minute: Some(30),
            ..TokenChanges::default()
        },
    );

    store
        .update_token(&rename, &audit("token.update", "acme"))
        .await
        .expect("renamed");
    let updated = store
        .update_token(&limit, &audit("token.update", "acme"))
        .await
        .expect("limited");

    assert_eq!(updated.name.as_str(), "renamed");
    assert_eq!(updated.rate_limit_per_minute, 30);
    assert_eq!(updated.permissions, created.permissions);
    assert_eq!(updated.expires_at, created.expires_at);
    assert_eq!(store.get_token(&created.id).await.expect("read"), updated);
}

pub(super) async fn an_update_at_a_stale_version_is_a_mismatch_and_writes_nothing(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let rename = |name: &str, version: u64| TokenUpdate {
        expected_version: Some(version),
        ..update_of(
            &created,
            TokenChanges {
                name: Some(TokenName::parse(name).expect("valid")),
                ..TokenChanges::default()
            },
        )
    };
    let first = store
        .update_token(
            &rename("first", created.version),
            &audit("token.update", "acme"),
        )
        .await
        .expect("the current version applies");
    let before = all_audit_events(&store).await;

    let stale = store
        .update_token(
            &rename("second", created.version),
            &audit("token.update", "acme"),
        )
        .await;

    assert!(
        matches!(stale, Err(StoreError::VersionMismatch { .. })),
        "{stale:?}"
    );
    assert_eq!(store.get_token(&created.id).await.expect("read"), first);
    assert_eq!(all_audit_events(&store).await, before);
}

pub(super) async fn every_admin_write_of_a_token_changes_its_version(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let created = create_for(&store, &owner).await;
    let updated = store
        .update_token(&every_field_of(&created), &audit("token.update", "acme"))
        .await
        .expect("updated");
    let (rotation, _) = rotation_of(&updated, now(), Duration::zero());
    let rotated = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await
        .expect("rotated");
    let revoked = store
        .revoke_token(&created.id, now(), &audit("token.revoke", "acme"))
        .await
        .expect("revoked");

    let versions = [
        created.version,
        updated.version,
        rotated.version,
        revoked.version,
    ];
    assert_eq!(versions, [1, 2, 3, 4]);
}

/// `owner` with `live` live tokens and one that expired an hour ago, which is returned.
async fn expired_token_beside(store: &Arc<dyn Store>, owner: &Principal, live: usize) -> NewToken {
    for _ in 0..live {
        create_for(store, owner).await;
    }
    let mut expired = new_token(owner, now() - Duration::days(2));
    expired.token.expires_at = now() - Duration::hours(1);
    create(store, &expired).await;
    expired
}

pub(super) async fn extending_an_expired_token_respects_the_owner_limit(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let expired = expired_token_beside(&store, &owner, 2).await.token;
    let extend = |limit: u32| TokenUpdate {
        max_live_per_owner: limit,
        ..update_of(
            &expired,
            TokenChanges {
                expires_at: Some(now() + Duration::days(30)),
                ..TokenChanges::default()
            },
        )
    };
    let rename = TokenUpdate {
        max_live_per_owner: 2,
        ..update_of(
            &expired,
            TokenChanges {
                name: Some(TokenName::parse("still expired").expect("valid")),
                ..TokenChanges::default()
            },
        )
    };

    let at_the_limit = store
        .update_token(&extend(2), &audit("token.update", "acme"))
        .await;
    let renamed = store
        .update_token(&rename, &audit("token.update", "acme"))
        .await;
    let below_the_limit = store
        .update_token(&extend(3), &audit("token.update", "acme"))
        .await;

    assert!(
        matches!(at_the_limit, Err(StoreError::OwnerTokenLimit { limit: 2 })),
        "{at_the_limit:?}"
    );
    assert!(
        renamed.is_ok(),
        "an expired token that stays expired: {renamed:?}"
    );
    assert!(below_the_limit.is_ok(), "{below_the_limit:?}");
}

pub(super) async fn rotating_an_expired_token_respects_the_owner_limit(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let expired = expired_token_beside(&store, &owner, 2).await;
    let (mut rotation, new_hash) = rotation_of(&expired.token, now(), Duration::zero());
    rotation.max_live_per_owner = 2;

    let at_the_limit = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await;
    let old_secret = store
        .find_credential(&expired.secret_hash)
        .await
        .expect("lookup")
        .expect("still recognised")
        .secret_match;
    rotation.max_live_per_owner = 3;
    let below_the_limit = store
        .rotate_token(&rotation, &audit("token.rotate", "acme"))
        .await;

    assert!(
        matches!(at_the_limit, Err(StoreError::OwnerTokenLimit { limit: 2 })),
        "{at_the_limit:?}"
    );
    assert_eq!(
        old_secret,
        SecretMatch::Current,
        "the refused rotation wrote nothing"
    );
    assert!(below_the_limit.is_ok(), "{below_the_limit:?}");
    assert!(
        store
            .find_credential(&new_hash)
            .await
            .expect("lookup")
            .is_some()
    );
}

pub(super) async fn retired_secrets_are_forgotten_once_past_the_leak_window(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let new = new_token(&owner, now());
    create(&store, &new).await;
    let first_at = now();
    let (first, second_hash) = rotation_of(&new.token, first_at, Duration::zero());
    store
        .rotate_token(&first, &audit("token.rotate", "acme"))
        .await
        .expect("first rotation");
    // The first secret's grace ended at `first_at`; the second rotation forgets what ended
    // before a second later, and keeps the secret it retires itself.
    let second_at = first_at + Duration::seconds(2);
    let (mut second, _) = rotation_of(&new.token, second_at, Duration::minutes(5));
    second.forget_retired_before = first_at + Duration::seconds(1);
    store
        .rotate_token(&second, &audit("token.rotate", "acme"))
        .await
        .expect("second rotation");

    assert!(
        store
            .find_credential(&new.secret_hash)
            .await
            .expect("lookup")
            .is_none(),
        "the first secret is forgotten"
    );
    assert_eq!(
        store
            .find_credential(&second_hash)
            .await
            .expect("lookup")
            .expect("the second secret is still recognised")
            .secret_match,
        SecretMatch::Retired {
            grace_until: second_at + Duration::minutes(5)
        }
    );
    assert_eq!(
        store
            .secret_hashes(&new.token.id)
            .await
            .expect("hashes")
            .len(),
        2
    );
}

pub(super) async fn concurrent_reports_of_a_retired_secret_write_one_audit_event_a_minute(
    store: Arc<dyn Store>,
) {
    let token_id = TokenId::generate();
    let at = now();
    let report = |time: DateTime<Utc>| AuditEvent {
        time,
        token_id: Some(token_id.clone()),
        principal_id: Some(PrincipalId::parse("alice").expect("valid")),
        ..audit("token.retired_secret_used", "acme")
    };
    let mut reports = JoinSet::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        let event = report(at);
        reports.spawn(async move { store.report_retired_secret_use(&event).await });
    }
    let mut written = 0;
    while let Some(result) = reports.join_next().await {
        if result.expect("joined").expect("reported") {
            written += 1;
        }
    }
    let next_minute = store
        .report_retired_secret_use(&report(at + Duration::seconds(60)))
        .await
        .expect("reported");

    assert_eq!(written, 1);
    assert!(next_minute, "a new minute is reported again");
    assert_eq!(all_audit_events(&store).await.len(), 2);
}

pub(super) async fn spending_credits_applies_refills_exactly_as_the_domain_computes_them(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let start = DateTime::from_timestamp_micros(now().timestamp_micros()).expect("instant");
    let refill = Refill {
        amount: 5,
        interval: Duration::seconds(10),
    };
    let mut new = new_token(&owner, start);
    let credits = CreditGrant::parse(2, Some(refill))
        .expect("credits")
        .starting(start);
    new.token.credits = Some(credits);
    let created = create(&store, &new).await;
    assert_eq!(created.credits, Some(credits));

    // Every step against the domain's arithmetic, to the microsecond.
    let mut expected = credits;
    for (offset_ms, cost) in [(0, 1), (25_000, 1), (29_999, 5), (30_000, 5), (30_001, 0)] {
        let at = start + Duration::milliseconds(offset_ms);
        let spent = store
            .spend_credits(&created.id, cost, at)
            .await
            .expect("spent");
        match expected.spend(cost, at) {
            Ok(after) => {
                assert_eq!(
                    spent,
                    CreditSpend::Spent {
                        remaining: after.remaining
                    },
                    "at +{offset_ms} ms"
                );
                expected = after;
            }
            Err(left) => assert_eq!(
                spent,
                CreditSpend::Exhausted {
                    remaining: left.remaining
                },
                "at +{offset_ms} ms"
            ),
        }
        let stored = store.get_token(&created.id).await.expect("read");
        assert_eq!(stored.credits, Some(expected), "at +{offset_ms} ms");
    }
    assert_eq!(expected.remaining, 0);
    assert_eq!(expected.refilled_at, start + Duration::seconds(30));

    // An addition saturates, and a token without credits spends nothing.
    let added = store
        .add_credits(
            &created.id,
            MAX_CREDITS,
            start,
            &audit("token.add_credits", "acme"),
        )
        .await
        .expect("added");
    assert_eq!(added.credits.map(|c| c.remaining), Some(MAX_CREDITS));
    let plain = create(&store, &new_token(&owner, start)).await;
    assert_eq!(
        store
            .spend_credits(&plain.id, 1, start)
            .await
            .expect("spent"),
        CreditSpend::Unmetered
    );
    assert!(matches!(
        store
            .add_credits(&plain.id, 1, start, &audit("token.add_credits", "acme"))
            .await,
        Err(StoreError::NoCredits)
    ));
}

pub(super) async fn leased_credits_go_back_only_within_their_refill_period_and_grant(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let start = DateTime::from_timestamp_micros(now().timestamp_micros()).expect("instant");
    let refill = Refill {
        amount: 100,
        interval: Duration::seconds(10),
    };
    let mut new = new_token(&owner, start);
    new.token.credits = Some(
        CreditGrant::parse(100, Some(refill))
            .expect("credits")
            .starting(start),
    );
    let token = create(&store, &new).await;
    let remaining = |store: Arc<dyn Store>, id: TokenId| async move {
        let token = store.get_token(&id).await.expect("read");
        token.credits.map(|credits| credits.remaining)
    };

    // A lease is taken only while the balance is at least the bound asked for.
    let lease = |amount, min_balance, at| {
        let (store, id) = (store.clone(), token.id.clone());
        async move {
            store
                .lease_credits(&id, amount, min_balance, at)
                .await
                .expect("leased")
        }
    };
    assert_eq!(lease(7, 101, start).await, None, "100 < 101: nothing taken");
    assert_eq!(
        lease(7, 100, start).await,
        Some(CreditLease {
            remaining: 93,
            period: start
        })
    );
    // Given back within the period: all of it.
    let back = |amount, period, at| {
        let (store, id) = (store.clone(), token.id.clone());
        async move {
            store
                .return_credits(&id, amount, period, at)
                .await
                .expect("returned")
        }
    };
    assert!(back(7, start, start + Duration::seconds(9)).await);
    assert_eq!(remaining(store.clone(), token.id.clone()).await, Some(100));

    // Leased before a refill and given back after it: dropped, the refill topped up already.
    let taken = lease(40, 40, start + Duration::seconds(9))
        .await
        .expect("taken");
    assert_eq!(taken.remaining, 60);
    assert!(
        !back(40, taken.period, start + Duration::seconds(10)).await,
        "a refill was due"
    );
    let refilled = lease(1, 1, start + Duration::seconds(10))
        .await
        .expect("taken");
    assert_eq!(refilled.remaining, 99, "topped up to 100, not 140");
    assert_eq!(refilled.period, start + Duration::seconds(10));
    assert!(
        !back(40, taken.period, start + Duration::seconds(11)).await,
        "refilled since"
    );
    assert!(back(1, refilled.period, start + Duration::seconds(11)).await);
    assert_eq!(remaining(store.clone(), token.id.clone()).await, Some(100));

    // Credits replaced by an update: a lease of the old ones is dropped on return.
    let old = lease(30, 30, start + Duration::seconds(11))
        .await
        .expect("taken");
    let replace = TokenChanges {
        credits: Some(Some(CreditGrant::parse(5, None).expect("credits"))),
        ..Default::default()
    };
    let current = store.get_token(&token.id).await.expect("read");
    store
        .update_token(
            &update_of(&current, replace),
            &audit("token.update", "acme"),
        )
        .await
        .expect("updated");
    assert!(!back(30, old.period, start + Duration::seconds(12)).await);
    assert_eq!(remaining(store.clone(), token.id.clone()).await, Some(5));
}
