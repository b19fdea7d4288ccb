//! One contract, two backends: every test here runs against Postgres and against SQLite.
//!
//! The bodies are plain async functions over `Arc<dyn Store>` (or, where a test must open the
//! database more than once or reach past the store, over the `TestDatabase`); `store_suite!`
//! stamps out one `#[tokio::test]` per body and backend, so the two can never drift apart.
//! The bodies live by subject (`tokens.rs`, `admin_keys.rs`, `usage.rs`, `database.rs`), the shared fixtures and
//! the few tests that only one backend can run here.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera::domain::fields::{Description, PrincipalId, RoleName, Tenant, TokenId, TokenName};
use tessera::domain::model::{AuditEvent, NewToken, Principal, Token};
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::Grant;
use tessera::domain::token::{SecretHash, TokenPrefix, generate};
use tessera::store::invalidation::{Invalidation, InvalidationSink};
use tessera::store::{PoolOptions, Store, StoreError, connect};
use tokio::sync::mpsc;

use crate::helpers::database::TestDatabase;

mod admin_keys;
mod database;
mod leaks;
mod policies_imports;
mod principals_roles;
mod tokens;
mod usage;
mod webhooks;

macro_rules! store_suite {
    ($backend:ident) => {
        mod $backend {
            store_suite!(@store_tests $backend;
                tokens::it_answers_a_ping,
                tokens::a_created_token_reads_back_exactly_as_written,
                tokens::a_token_cannot_be_created_for_an_unknown_owner,
                tokens::an_owner_cannot_exceed_the_live_token_limit_even_under_concurrent_creates,
                tokens::revoked_and_expired_tokens_do_not_count_toward_the_owner_limit,
                tokens::a_second_token_with_the_same_secret_hash_is_a_conflict,
                tokens::unknown_token_ids_are_not_found_by_any_operation,
                tokens::tokens_are_listed_in_id_order_one_page_at_a_time,
                tokens::listing_is_scoped_to_the_tenant_and_filters_by_owner,
                tokens::listing_hides_revoked_tokens_unless_asked_to_include_them,
                tokens::listing_expiring_before_returns_only_live_tokens_expiring_in_the_window,
                tokens::listing_unused_since_returns_tokens_never_used_or_last_used_before_the_instant,
                tokens::an_update_replaces_the_mutable_fields_and_keeps_the_rest,
                tokens::a_revoked_token_cannot_be_updated,
                tokens::revoking_twice_reports_the_token_as_already_revoked,
                tokens::an_update_of_the_metadata_replaces_it_and_check_reads_it,
                tokens::a_suspension_is_stored_read_back_and_lifted_with_its_own_versions,
                tokens::a_revoked_token_cannot_be_suspended,
                tokens::a_rotated_secret_is_found_as_retired_with_its_grace_period,
                tokens::a_second_rotation_retires_the_second_secret_and_keeps_the_first_retired,
                tokens::a_revoked_token_cannot_be_rotated,
                tokens::an_unknown_secret_hash_finds_no_credential,
                tokens::a_credential_carries_its_owner_and_only_the_roles_that_exist,
                tokens::a_principal_upsert_round_trips_and_keeps_its_creation_time,
                tokens::an_unknown_principal_is_not_found,
                tokens::roles_are_listed_by_name_per_tenant_and_fetched_only_when_they_exist,
                tokens::the_api_status_is_online_until_set_and_then_reads_back_per_scope,
                tokens::every_mutation_writes_its_audit_event_in_order,
                tokens::a_failed_mutation_writes_no_audit_event,
                tokens::audit_events_page_by_id_and_filter_by_tenant_principal_action_and_actor,
                admin_keys::admin_keys_are_counted_and_recognised_by_hash_only,
                admin_keys::the_bootstrap_key_is_stored_once_and_never_without_its_file,
                admin_keys::an_admin_key_reads_back_as_written_and_lists_in_id_order,
                admin_keys::revoking_an_admin_key_writes_its_audit_event_once,
                admin_keys::audit_events_filter_by_several_tenants,
                tokens::a_tokens_secret_hashes_are_its_current_and_retired_ones,
                database::upkeep_that_reads_before_it_writes_succeeds_beside_concurrent_admin_writes,
                tokens::an_audit_event_can_be_written_on_its_own,
                tokens::an_update_writes_only_the_fields_it_names,
                tokens::an_update_at_a_stale_version_is_a_mismatch_and_writes_nothing,
                tokens::every_admin_write_of_a_token_changes_its_version,
                tokens::extending_an_expired_token_respects_the_owner_limit,
                tokens::rotating_an_expired_token_respects_the_owner_limit,
                tokens::retired_secrets_are_forgotten_once_past_the_leak_window,
                tokens::concurrent_reports_of_a_retired_secret_write_one_audit_event_a_minute,
                tokens::spending_credits_applies_refills_exactly_as_the_domain_computes_them,
                tokens::leased_credits_go_back_only_within_their_refill_period_and_grant,
                usage::a_usage_flush_written_twice_is_counted_once,
                usage::a_tokens_distinct_endpoints_per_day_stop_at_the_bound_and_the_rest_count_as_other,
                usage::pruning_forgets_flush_ids_older_than_the_retention,
                usage::pruning_deletes_minutes_beyond_the_retention_window_in_small_batches,
                usage::the_tokens_needing_attention_are_the_live_ones_expiring_soon_or_unused,
                principals_roles::a_principal_update_writes_only_the_fields_it_names,
                principals_roles::updating_an_unknown_principal_is_not_found_and_audits_nothing,
                principals_roles::principals_are_listed_by_id_one_page_at_a_time_per_tenant,
                principals_roles::a_role_named_by_a_token_that_is_not_revoked_cannot_be_deleted,
                principals_roles::a_role_named_only_by_revoked_tokens_is_deleted,
                policies_imports::a_tenant_policy_round_trips_per_tenant_and_replacing_it_audits_each_write,
                policies_imports::a_credential_carries_its_tenants_policy_and_none_without_one,
                policies_imports::an_import_writes_every_token_and_its_audit_events_or_nothing,
                policies_imports::an_import_counts_the_batch_against_each_owners_live_token_limit,
                policies_imports::known_secret_hashes_are_the_current_and_retired_ones_and_a_rotation_clears_imported,
                leaks::a_leak_report_revokes_or_notifies_by_policy_once_and_a_dead_secret_changes_nothing,
                webhooks::a_claimed_delivery_is_not_claimed_again_until_its_lease_ends,
                webhooks::concurrent_claims_never_share_a_delivery,
                webhooks::a_last_failed_attempt_marks_the_webhook_failing_once_and_a_delivery_clears_it,
                webhooks::a_disabled_webhook_is_not_claimed_and_a_deleted_one_takes_its_deliveries,
                webhooks::a_tenant_cannot_have_more_webhooks_than_its_limit,
            );
            store_suite!(@database_tests $backend;
                database::connecting_twice_to_one_database_migrates_once_and_keeps_the_data,
                database::several_stores_can_connect_to_one_fresh_database_at_once,
                database::a_credential_whose_owner_no_longer_exists_has_no_owner,
                database::a_corrupt_row_is_an_internal_error,
                principals_roles::after_the_checkpoint_the_database_file_alone_holds_every_write,
            );

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn it_names_its_backend() {
                let database = super::$backend().await;
                let store = super::open(&database).await;
                assert_eq!(store.backend(), stringify!($backend));
            }
        }
    };
    (@store_tests $backend:ident; $($module:ident::$test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let database = super::$backend().await;
                let store = super::open(&database).await;
                super::$module::$test(store).await;
            }
        )+
    };
    (@database_tests $backend:ident; $($module:ident::$test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let database = super::$backend().await;
                super::$module::$test(&database).await;
            }
        )+
    };
}

store_suite!(postgres);
store_suite!(sqlite);

async fn postgres() -> TestDatabase {
    TestDatabase::postgres().await
}

async fn sqlite() -> TestDatabase {
    TestDatabase::sqlite()
}

#[tokio::test]
async fn an_unreachable_postgres_server_is_unavailable() {
    let options = PoolOptions {
        acquire_timeout: std::time::Duration::from_millis(500),
        ..PoolOptions::default()
    };
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let result = connect("postgres://postgres@127.0.0.1:1/tessera", &options).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_invalidation_reaches_another_postgres_replica() {
    let database = TestDatabase::postgres().await;
    let publisher = open(&database).await;
    let watcher = open(&database).await;
    let (sink, mut received) = RecordingSink::new();

    let feed = watcher
        .watch_invalidations(sink)
        .expect("postgres replicas have an invalidation feed");
    // The feed drops everything once it listens: from then on, nothing is missed.
    assert_eq!(
        next_invalidation(&mut received).await,
        Invalidation::Everything
    );
    let published = Invalidation::Secrets(vec![SecretHash::of("tsk_rotated")]);
    publisher.publish(&published).await.expect("published");

    assert_eq!(next_invalidation(&mut received).await, published);
    feed.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_too_large_for_one_notification_reaches_another_replica_coarser() {
    let database = TestDatabase::postgres().await;
    let publisher = open(&database).await;
    let watcher = open(&database).await;
    let (sink, mut received) = RecordingSink::new();
    let feed = watcher.watch_invalidations(sink).expect("feed");
    assert_eq!(
        next_invalidation(&mut received).await,
        Invalidation::Everything
    );
    // 200 hashes: about 13 KB as JSON, beyond NOTIFY's 8000 bytes.
    let token_id = TokenId::generate();
    let hashes = (0..200)
        .map(|n| SecretHash::of(&format!("tsk_{n}")))
        .collect();

    publisher
        .publish(&Invalidation::TokenSecrets {
            token_id: token_id.clone(),
            hashes,
        })
        .await
        .expect("published");

    assert_eq!(
        next_invalidation(&mut received).await,
        Invalidation::Token(token_id)
    );
    feed.abort();
}

/// While a transaction that inserted an audit event is still open, a later event commits; a
/// page read then must not step past the first event, or paging on from its cursor skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_the_audit_log_never_skips_an_event_that_commits_late() {
    let database = TestDatabase::postgres().await;
    let store = open(&database).await;
    let mut held = <sqlx::PgConnection as sqlx::Connection>::connect(database.url())
        .await
        .expect("connection");
    sqlx::query("BEGIN")
        .execute(&mut held)
        .await
        .expect("begin");
    let held_id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (time, actor, action, tenant, summary) \
         VALUES (0, 'admin:test', 'token.create', 'acme', 'held') RETURNING id",
    )
    .fetch_one(&mut held)
    .await
    .expect("held insert");
    store
        .insert_audit_event(&audit("token.revoke", "acme"))
        .await
        .expect("a later event commits");

    let reader = Arc::clone(&store);
    let first_page = tokio::spawn(async move {
        reader
            .list_audit_events(None, &tessera::store::AuditFilter::default(), 0, 100)
            .await
    });
    // The reader must still be waiting, for as long as the held transaction stays open.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = !first_page.is_finished();
    sqlx::query("COMMIT")
        .execute(&mut held)
        .await
        .expect("commit");
    let first_page = first_page.await.expect("joined").expect("page");
    let cursor = first_page.last().map_or(0, |event| event.id);
    let second_page = store
        .list_audit_events(None, &tessera::store::AuditFilter::default(), cursor, 100)
        .await
        .expect("page");

    let seen: Vec<i64> = first_page
        .iter()
        .chain(&second_page)
        .map(|event| event.id)
        .collect();
    assert!(
        seen.contains(&held_id),
        "the late event {held_id} was skipped: pages saw {seen:?}"
    );
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(waiting, "the page was read past an open audit insert");
}

#[tokio::test]
async fn sqlite_has_no_invalidation_feed_and_publishing_is_a_no_op() {
    let database = TestDatabase::sqlite();
    let store = open(&database).await;
    let (sink, _received) = RecordingSink::new();

    assert!(store.watch_invalidations(sink).is_none());
    store
        .publish(&Invalidation::Everything)
        .await
        .expect("publishing succeeds");
}

/// Hands every invalidation it is told of to the test.
struct RecordingSink(mpsc::UnboundedSender<Invalidation>);

impl RecordingSink {
    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Invalidation>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Arc::new(Self(sender)), receiver)
    }
}

#[async_trait::async_trait]
impl InvalidationSink for RecordingSink {
    async fn invalidate(&self, invalidation: &Invalidation) {
        let _ = self.0.send(invalidation.clone());
    }
}

async fn next_invalidation(received: &mut mpsc::UnboundedReceiver<Invalidation>) -> Invalidation {
    tokio::time::timeout(std::time::Duration::from_secs(5), received.recv())
        .await
        .expect("an invalidation arrives within 5 s")
        .expect("the feed is running")
}

// ---- fixtures ----

async fn open(database: &TestDatabase) -> Arc<dyn Store> {
    connect(database.url(), &PoolOptions::default())
        .await
        .unwrap_or_else(|error| panic!("store connects to {}: {error}", database.url()))
}

/// Now, at the microsecond precision both backends store, so values round-trip exactly.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now is in range")
}

fn tenant(raw: &str) -> Tenant {
    Tenant::parse(raw).expect("valid tenant")
}

fn grants(raw: &[&str]) -> Vec<Grant> {
    raw.iter()
        .map(|grant| Grant::parse(grant).expect("valid grant"))
        .collect()
}

fn role_names(raw: &[&str]) -> Vec<RoleName> {
    raw.iter()
        .map(|name| RoleName::parse(name).expect("valid role name"))
        .collect()
}

fn allowlist(raw: &[&str]) -> IpAllowlist {
    let entries: Vec<String> = raw.iter().map(|entry| (*entry).to_owned()).collect();
    IpAllowlist::parse(&entries).expect("valid allowlist")
}

fn audit(action: &str, tenant: &str) -> AuditEvent {
    AuditEvent {
        id: 0,
        time: now(),
        actor: "admin:test".to_owned(),
        action: action.to_owned(),
        tenant: tenant.to_owned(),
        token_id: None,
        principal_id: None,
        summary: format!("{action} in {tenant}"),
        admin_key: "admin-key:0123abcd".to_owned(),
    }
}

fn principal(tenant_name: &str, id: &str, at: DateTime<Utc>) -> Principal {
    Principal {
        tenant: tenant(tenant_name),
        id: PrincipalId::parse(id).expect("valid principal id"),
        permissions: grants(&["*"]),
        disabled: false,
        rate_limit_per_minute: None,
        created_at: at,
        updated_at: at,
    }
}

async fn owner(store: &Arc<dyn Store>, tenant_name: &str, id: &str) -> Principal {
    let owner = principal(tenant_name, id, now());
    store
        .upsert_principal(&owner, &audit("principal.upsert", tenant_name))
        .await
        .expect("owner upserted")
}

/// A token for `owner`, created at `at`, expiring in 30 days, with a fresh secret.
fn new_token(owner: &Principal, at: DateTime<Utc>) -> NewToken {
    let secret = generate(&TokenPrefix::default());
    NewToken {
        token: Token {
            id: TokenId::generate(),
            tenant: owner.tenant.clone(),
            owner_id: owner.id.clone(),
            name: TokenName::parse("ci deploy").expect("valid name"),
            description: Description::parse("").expect("valid description"),
            permissions: grants(&["orders:read"]),
            roles: Vec::new(),
            allowed_ips: IpAllowlist::default(),
            rate_limit_per_minute: 0,
            require_signature: false,
            secret_hint: secret.hint,
            created_at: at,
            updated_at: at,
            expires_at: at + Duration::days(30),
            rotated_at: None,
            revoked_at: None,
            last_used_at: None,
            version: 1,
            imported: false,
            metadata: Default::default(),
            suspension: None,
            credits: None,
        },
        secret_hash: secret.hash,
        signing_key: None,
    }
}

async fn create(store: &Arc<dyn Store>, new: &NewToken) -> Token {
    store
        .create_token(new, 64, &audit("token.create", new.token.tenant.as_str()))
        .await
        .expect("token created")
}

async fn create_for(store: &Arc<dyn Store>, owner: &Principal) -> Token {
    create(store, &new_token(owner, now())).await
}

async fn all_audit_events(store: &Arc<dyn Store>) -> Vec<AuditEvent> {
    store
        .list_audit_events(None, &tessera::store::AuditFilter::default(), 0, 1000)
        .await
        .expect("audit events listed")
}
