//! The database under the store, on both backends: connecting and migrating, rows the store
//! did not write.

use std::sync::Arc;

use chrono::Duration;
use tessera::store::{PoolOptions, Store, StoreError, connect};
use tokio::task::JoinSet;

use crate::helpers::database::TestDatabase;

use super::{all_audit_events, audit, create, create_for, new_token, now, open, owner, principal};

pub(super) async fn connecting_twice_to_one_database_migrates_once_and_keeps_the_data(
    database: &TestDatabase,
) {
    let first = open(database).await;
    let alice = owner(&first, "acme", "alice").await;
    drop(first);

    let second = open(database).await;
    let third = open(database).await;

    assert_eq!(
        second
            .get_principal(&alice.tenant, &alice.id)
            .await
            .expect("read"),
        alice
    );
    owner(&third, "acme", "bob").await;
    assert_eq!(all_audit_events(&second).await.len(), 2);
}

pub(super) async fn several_stores_can_connect_to_one_fresh_database_at_once(
    database: &TestDatabase,
) {
    let mut connects = JoinSet::new();
    for _ in 0..6 {
        let url = database.url().to_owned();
        connects.spawn(async move { connect(&url, &PoolOptions::default()).await });
    }

    let mut stores = Vec::new();
    while let Some(joined) = connects.join_next().await {
        let connected = joined.expect("connect task");
        stores
            .push(connected.unwrap_or_else(|error| panic!("a concurrent connect failed: {error}")));
    }

    for (index, store) in stores.iter().enumerate() {
        owner(store, "acme", &format!("user-{index}")).await;
    }
    assert_eq!(all_audit_events(&stores[0]).await.len(), 6);
}

pub(super) async fn a_credential_whose_owner_no_longer_exists_has_no_owner(
    database: &TestDatabase,
) {
    let store = open(database).await;
    let alice = owner(&store, "acme", "alice").await;
    let new = new_token(&alice, now());
    create(&store, &new).await;
    database.execute("DELETE FROM principals").await;

    let record = store
        .find_credential(&new.secret_hash)
        .await
        .expect("lookup")
        .expect("the token is still found");

    assert_eq!(record.token, new.token);
    assert_eq!(record.owner, None);
}

pub(super) async fn a_corrupt_row_is_an_internal_error(database: &TestDatabase) {
    let store = open(database).await;
    let alice = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &alice).await;

    database
        .execute("UPDATE tokens SET permissions = 'not json'")
        .await;
    let unparsable = store.get_token(&token.id).await;
    database
        .execute("UPDATE tokens SET permissions = '[\"not a grant\"]'")
        .await;
    let invalid = store.get_token(&token.id).await;

    assert!(
        matches!(unparsable, Err(StoreError::Internal(_))),
        "{unparsable:?}"
    );
    assert!(
        matches!(invalid, Err(StoreError::Internal(_))),
        "{invalid:?}"
    );
}

/// The upkeep's transactions read before they write (which events are past their retention).
/// On SQLite a transaction that starts as a reader cannot become the writer once another
/// connection has committed since its read: it fails at once with SQLITE_BUSY instead of
/// waiting, and the hourly upkeep would skip its hour. Beside admin writes, every call succeeds.
pub(super) async fn upkeep_that_reads_before_it_writes_succeeds_beside_concurrent_admin_writes(
    store: Arc<dyn Store>,
) {
    let mut calls = JoinSet::new();
    for writer in 0..2 {
        let store = Arc::clone(&store);
        calls.spawn(async move {
            for n in 0..40 {
                let principal = principal("acme", &format!("writer-{writer}-{n}"), now());
                store
                    .upsert_principal(&principal, &audit("principal.upsert", "acme"))
                    .await?;
            }
            Ok::<_, StoreError>("upsert_principal")
        });
    }
    for _ in 0..2 {
        let store = Arc::clone(&store);
        calls.spawn(async move {
            for _ in 0..40 {
                store.prune_events(now() - Duration::days(1), 100).await?;
            }
            Ok("prune_events")
        });
    }
    while let Some(joined) = calls.join_next().await {
        let done = joined.expect("task");
        assert!(done.is_ok(), "every call succeeds: {done:?}");
    }
}
