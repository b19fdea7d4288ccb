//! The cached Check path: one store query per token, negative caching, coalesced misses,
//! invalidation on every replica, rate limits, store outages and the leak signal.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost_types::FieldMask;
use tessera::domain::token::{self, SecretHash, TokenPrefix};
use tessera::proto;
use tessera::proto::DenyReason;
use tessera::store::invalidation::{Invalidation, InvalidationSink};

use crate::helpers::pausing_store::Read;
use crate::helpers::race::{Race, store_directly};
use crate::helpers::requests::{check_request, wait_for_reason};
use crate::helpers::{
    Backend, TestApp, new_token, spawn_app, spawn_app_on, spawn_app_pausing, spawn_app_with,
    strings, unknown_secret,
};

const TENANT: &str = "acme";

/// A Check in this file's tenant.
fn request(secret: &str, permission: &str) -> proto::CheckRequest {
    check_request(TENANT, secret, permission)
}

async fn app_with_alice(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

#[tokio::test]
async fn a_cached_token_is_decided_without_another_store_query() {
    let app = app_with_alice(Backend::Sqlite).await;
    let (_, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let before = app.store_lookups();
    for _ in 0..20 {
        assert!(app.check(request(&secret, "orders:read")).await.allowed);
    }
    assert!(!app.check(request(&secret, "orders:write")).await.allowed);
    assert_eq!(app.store_lookups() - before, 1);
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let app = app_with_alice(Backend::Sqlite).await;
    let before = app.store_lookups();
    for malformed in [
        "tsk_short",
        "tsk_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "abc",
        "tsk_",
    ] {
        let response = app.check(request(malformed, "")).await;
        assert_eq!(response.reason(), DenyReason::TokenMalformed);
    }
    let mut wrong_checksum = unknown_secret().into_bytes();
    wrong_checksum[4] = if wrong_checksum[4] == b'a' {
        b'b'
    } else {
        b'a'
    };
    let wrong_checksum = String::from_utf8(wrong_checksum).expect("ascii");
    assert_eq!(
        app.check(request(&wrong_checksum, "")).await.reason(),
        DenyReason::TokenMalformed
    );
    assert_eq!(app.store_lookups(), before);
}

#[tokio::test]
async fn an_unknown_token_costs_one_store_query_however_often_it_is_presented() {
    let app = app_with_alice(Backend::Sqlite).await;
    let unknown: Vec<String> = (0..50).map(|_| unknown_secret()).collect();
    let before = app.store_lookups();
    for _ in 0..3 {
        for secret in &unknown {
            assert_eq!(
                app.check(request(secret, "")).await.reason(),
                DenyReason::TokenUnknown
            );
        }
    }
    assert_eq!(app.store_lookups() - before, 50);
}

#[tokio::test]
async fn concurrent_misses_for_one_token_make_one_store_query() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut generous = new_token(TENANT, "alice", &[]);
    generous.rate_limit_per_minute = 1000;
    let (_, secret) = app.token(generous).await;
    let before = app.store_lookups();
    let mut checks = Vec::new();
    for _ in 0..64 {
        let authorizer = app.authorizer.clone();
        let secret = secret.clone();
        checks.push(tokio::spawn(async move {
            let input = tessera::domain::decision::CheckInput {
                tenant: tessera::domain::fields::Tenant::parse(TENANT).expect("tenant"),
                permissions: Default::default(),
                client_ip: None,
                signature: None,
                now: chrono::Utc::now(),
                endpoint: String::new(),
                user_agent: String::new(),
                cost: 1,
            };
            authorizer.check(&secret, &input).await.is_allowed()
        }));
    }
    for check in checks {
        assert!(check.await.expect("task"));
    }
    assert_eq!(app.store_lookups() - before, 1);
}

#[tokio::test]
async fn a_negative_entry_is_cleared_by_the_invalidation_that_creating_a_token_announces() {
    let app = app_with_alice(Backend::Sqlite).await;
    // The secret is known before the token exists: present it, so it is cached as unknown.
    let generated = token::generate(&TokenPrefix::default());
    let secret = secrecy::ExposeSecret::expose_secret(&generated.secret).to_owned();
    assert_eq!(
        app.check(request(&secret, "")).await.reason(),
        DenyReason::TokenUnknown
    );

    // Store it directly, bypassing the admin layer, so nothing invalidates yet.
    let (template, _) = app.token(new_token(TENANT, "alice", &[])).await;
    store_directly(app.store.as_ref(), &template, generated.hash).await;
    assert_eq!(
        app.check(request(&secret, "")).await.reason(),
        DenyReason::TokenUnknown,
        "still remembered as unknown"
    );

    app.authorizer
        .invalidate(&Invalidation::Secrets(vec![SecretHash::of(&secret)]))
        .await;
    assert!(app.check(request(&secret, "")).await.allowed);
}

#[tokio::test]
async fn writes_through_the_admin_api_apply_to_cached_tokens_at_once() {
    let app = app_with_alice(Backend::Sqlite).await;
    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    let mut client = app.admin_client().await;

    // Owner ceiling shrinks: the cached entry must not keep the old ceiling.
    app.principal(TENANT, "alice", &["products:read"]).await;
    assert_eq!(
        app.check(request(&secret, "orders:read")).await.reason(),
        DenyReason::PermissionDenied
    );
    app.principal(TENANT, "alice", &["orders:*"]).await;

    // A role's grants change.
    client
        .upsert_role(app.admin(proto::UpsertRoleRequest {
            tenant: TENANT.to_owned(),
            name: "writer".to_owned(),
            permissions: strings(&["orders:write"]),
        }))
        .await
        .expect("role");
    client
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            roles: strings(&["writer"]),
            update_mask: Some(FieldMask {
                paths: strings(&["roles"]),
            }),
            ..Default::default()
        }))
        .await
        .expect("update");
    assert!(app.check(request(&secret, "orders:write")).await.allowed);
    client
        .upsert_role(app.admin(proto::UpsertRoleRequest {
            tenant: TENANT.to_owned(),
            name: "writer".to_owned(),
            permissions: strings(&["orders:read"]),
        }))
        .await
        .expect("role narrowed");
    assert_eq!(
        app.check(request(&secret, "orders:write")).await.reason(),
        DenyReason::PermissionDenied
    );

    // The tenant goes offline and back.
    for online in [false, true] {
        client
            .set_api_status(app.admin(proto::SetApiStatusRequest {
                tenant: TENANT.to_owned(),
                online,
                message: String::new(),
            }))
            .await
            .expect("status");
        assert_eq!(
            app.check(request(&secret, "orders:read")).await.allowed,
            online
        );
    }

    // Revocation.
    client
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: token.id }))
        .await
        .expect("revoke");
    assert_eq!(
        app.check(request(&secret, "")).await.reason(),
        DenyReason::TokenRevoked
    );
}

#[tokio::test]
async fn a_token_revoked_through_one_replica_is_denied_by_the_other() {
    let replica_a = app_with_alice(Backend::Postgres).await;
    let replica_b = replica_a.spawn_replica().await;
    let (token, secret) = replica_a
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(
        replica_b
            .check(request(&secret, "orders:read"))
            .await
            .allowed,
        "cached on b"
    );
    let lookups_on_b = replica_b.store_lookups();
    assert!(
        replica_b
            .check(request(&secret, "orders:read"))
            .await
            .allowed
    );
    assert_eq!(
        replica_b.store_lookups(),
        lookups_on_b,
        "b decides from its cache"
    );

    replica_a
        .admin_client()
        .await
        .revoke_token(replica_a.admin(proto::RevokeTokenRequest { id: token.id }))
        .await
        .expect("revoke through a");
    wait_for_reason(
        &replica_b,
        request(&secret, "orders:read"),
        DenyReason::TokenRevoked,
    )
    .await;
}

#[tokio::test]
async fn principal_role_and_api_status_changes_on_one_replica_reach_the_other() {
    let replica_a = app_with_alice(Backend::Postgres).await;
    let replica_b = replica_a.spawn_replica().await;
    let (_, secret) = replica_a
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(
        replica_b
            .check(request(&secret, "orders:read"))
            .await
            .allowed
    );

    replica_a
        .admin_client()
        .await
        .set_api_status(replica_a.admin(proto::SetApiStatusRequest {
            tenant: "*".to_owned(),
            online: false,
            message: String::new(),
        }))
        .await
        .expect("offline");
    wait_for_reason(
        &replica_b,
        request(&secret, "orders:read"),
        DenyReason::ApiOffline,
    )
    .await;
    replica_a
        .admin_client()
        .await
        .set_api_status(replica_a.admin(proto::SetApiStatusRequest {
            tenant: "*".to_owned(),
            online: true,
            message: String::new(),
        }))
        .await
        .expect("online");
    wait_for_reason(
        &replica_b,
        request(&secret, "orders:read"),
        DenyReason::Allowed,
    )
    .await;

    replica_a
        .principal(TENANT, "alice", &["products:read"])
        .await;
    wait_for_reason(
        &replica_b,
        request(&secret, "orders:read"),
        DenyReason::PermissionDenied,
    )
    .await;
}

#[tokio::test]
async fn every_answer_past_the_checks_carries_the_rate_limit_and_the_limit_then_denies() {
    let app = app_with_alice(Backend::Sqlite).await;
    let mut limited = new_token(TENANT, "alice", &["orders:read"]);
    limited.rate_limit_per_minute = 3;
    let (token, secret) = app.token(limited).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app.check(request(&secret, "orders:read")).await;
        assert!(response.allowed);
        let status = response
            .rate_limit
            .expect("rate limit on an allowed answer");
        assert_eq!(status.limit, 3);
        remaining.push(status.remaining);
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let denied = app.check(request(&secret, "orders:read")).await;
    assert_eq!(denied.reason(), DenyReason::RateLimited);
    assert_eq!(denied.http_status, 429);
    let status = denied.rate_limit.expect("rate limit on a 429");
    assert_eq!((status.limit, status.remaining), (3, 0));
    assert!(status.reset_seconds >= 1);

    // Raising the limit applies at once.
    app.admin_client()
        .await
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id,
            rate_limit_per_minute: 100,
            update_mask: Some(FieldMask {
                paths: strings(&["rate_limit_per_minute"]),
            }),
            ..Default::default()
        }))
        .await
        .expect("update");
    let response = app.check(request(&secret, "orders:read")).await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.rate_limit.expect("status").limit, 100);
}

#[tokio::test]
async fn the_default_limit_applies_when_a_token_has_none() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.default_rate_limit_per_minute = 2
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (_, secret) = app.token(new_token(TENANT, "alice", &[])).await;
    assert!(app.check(request(&secret, "")).await.allowed);
    assert!(app.check(request(&secret, "")).await.allowed);
    assert_eq!(
        app.check(request(&secret, "")).await.reason(),
        DenyReason::RateLimited
    );
}

#[tokio::test]
async fn a_principal_limit_is_shared_by_all_its_tokens() {
    let app = spawn_app().await;
    app.admin_client()
        .await
        .upsert_principal(app.admin(proto::UpsertPrincipalRequest {
            tenant: TENANT.to_owned(),
            id: "alice".to_owned(),
            permissions: strings(&["orders:*"]),
            disabled: false,
            rate_limit_per_minute: Some(3),
        }))
        .await
        .expect("principal");
    let (_, first) = app.token(new_token(TENANT, "alice", &[])).await;
    let (_, second) = app.token(new_token(TENANT, "alice", &[])).await;
    assert!(app.check(request(&first, "")).await.allowed);
    assert!(app.check(request(&second, "")).await.allowed);
    assert!(app.check(request(&first, "")).await.allowed);
    let denied = app.check(request(&second, "")).await;
    assert_eq!(denied.reason(), DenyReason::RateLimited);
    assert_eq!(denied.rate_limit.expect("status").limit, 3);
}

#[tokio::test]
async fn a_rotated_out_secret_is_denied_audited_and_counted() {
    let app = app_with_alice(Backend::Sqlite).await;
    let (token, old_secret) = app.token(new_token(TENANT, "alice", &[])).await;
    app.admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: None,
        }))
        .await
        .expect("rotate");
    for _ in 0..3 {
        assert_eq!(
            app.check(request(&old_secret, "")).await.reason(),
            DenyReason::TokenRevoked
        );
    }
    assert_eq!(
        app.authorizer
            .stats()
            .retired_secret_uses
            .load(Ordering::Relaxed),
        3
    );

    let started = Instant::now();
    loop {
        let events = app
            .admin_client()
            .await
            .list_audit_events(app.admin(proto::ListAuditEventsRequest {
                tenant: TENANT.to_owned(),
                ..Default::default()
            }))
            .await
            .expect("audit")
            .into_inner()
            .events;
        let leaks: Vec<_> = events
            .iter()
            .filter(|event| event.action == "token.retired_secret_used")
            .collect();
        if !leaks.is_empty() {
            assert_eq!(leaks.len(), 1, "audited once per window, not per request");
            assert_eq!(leaks[0].token_id, token.id);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no audit event for the retired secret"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes the test database refuse connections and drops the open ones, as a database outage does.
async fn cut_database(app: &TestApp, allow: bool) {
    let name = app.database.name().expect("postgres database");
    let server = app.database.server_url().expect("postgres server");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(server)
        .await
        .expect("server");
    let flag = if allow { "true" } else { "false" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS {flag}"
    )))
    .execute(&mut admin)
    .await
    .expect("alter database");
    if !allow {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .execute(&mut admin)
            .await
            .expect("terminate");
    }
}

#[tokio::test]
async fn with_the_store_down_cached_tokens_are_decided_and_uncached_ones_are_unavailable() {
    let app = app_with_alice(Backend::Postgres).await;
    let (_, cached) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let (_, uncached) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(app.check(request(&cached, "orders:read")).await.allowed);

    cut_database(&app, false).await;
    assert!(
        app.check(request(&cached, "orders:read")).await.allowed,
        "decided from cache"
    );
    assert_eq!(
        app.check(request(&cached, "orders:write")).await.reason(),
        DenyReason::PermissionDenied
    );
    let unavailable = app.check(request(&uncached, "orders:read")).await;
    assert_eq!(unavailable.reason(), DenyReason::StoreUnavailable);
    assert_eq!(unavailable.http_status, 503);
    let stranger = unknown_secret();
    assert_eq!(
        app.check(request(&stranger, "")).await.reason(),
        DenyReason::StoreUnavailable,
        "an outage is never reported as an unknown token"
    );

    cut_database(&app, true).await;
    wait_for_reason(&app, request(&uncached, "orders:read"), DenyReason::Allowed).await;
}

#[tokio::test]
async fn when_the_invalidation_feed_comes_back_the_cache_is_dropped_before_it_is_trusted() {
    let app = app_with_alice(Backend::Postgres).await;
    let (_, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    let cached_lookups = app.store_lookups();
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    assert_eq!(app.store_lookups(), cached_lookups, "served from cache");

    // The outage also cuts the LISTEN connection; events sent meanwhile would be lost.
    cut_database(&app, false).await;
    assert!(
        app.check(request(&secret, "orders:read")).await.allowed,
        "still decided from cache"
    );
    cut_database(&app, true).await;

    let started = Instant::now();
    while app.store_lookups() == cached_lookups {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cache was never dropped after the feed reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Once the cache is dropped, the reload may meet a pooled connection that died with the
        // outage: that one answer is STORE_UNAVAILABLE, never a wrong allow or deny.
        let reason = app.check(request(&secret, "orders:read")).await.reason();
        assert!(
            matches!(reason, DenyReason::Allowed | DenyReason::StoreUnavailable),
            "{reason:?}"
        );
    }
    wait_for_reason(&app, request(&secret, "orders:read"), DenyReason::Allowed).await;
}

#[tokio::test]
async fn checks_naming_made_up_tenants_cost_no_status_lookups_or_entries_of_their_own() {
    let (app, store) = spawn_app_pausing(Backend::Sqlite, |_| {}).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (_, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    let reads = store.api_status_reads();
    for number in 0..200 {
        let mut made_up = request(&secret, "orders:read");
        made_up.tenant = format!("made-up-{number}");
        assert_eq!(
            app.check(made_up).await.reason(),
            DenyReason::TenantMismatch
        );
    }
    assert_eq!(store.api_status_reads(), reads);

    // A real tenant switched off is still seen at once.
    app.take_offline(TENANT, "maintenance").await;
    let offline = app.check(request(&secret, "orders:read")).await;
    assert_eq!(offline.reason(), DenyReason::ApiOffline);
    assert_eq!(offline.message, "maintenance");
    let mut elsewhere = request(&secret, "orders:read");
    elsewhere.tenant = "made-up-0".to_owned();
    assert_eq!(
        app.check(elsewhere).await.reason(),
        DenyReason::TenantMismatch
    );
    assert_eq!(store.api_status_reads(), reads + 1);
}

// A store read that began before a write and answers after the write's invalidation must not
// be cached: otherwise the invalidation is undone for a whole TTL. The races are opened by
// `helpers::race::Race` over the real store, held after the database answered.

async fn a_revocation_during_a_cache_fill_is_not_undone(backend: Backend) {
    let race = Race::new(backend).await;
    let (token, secret) = race
        .app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let (held, in_flight) = race
        .check_held(Read::Credential, request(&secret, "orders:read"))
        .await;

    race.writer()
        .admin_client()
        .await
        .revoke_token(
            race.writer()
                .admin(proto::RevokeTokenRequest { id: token.id }),
        )
        .await
        .expect("revoke");
    race.heard().await;
    held.release();

    // That Check began before the revoke was acknowledged: answering from its read is
    // linearizable, and it is what it does (the read is used once, not cached).
    assert!(in_flight.await.expect("check").allowed);
    for _ in 0..3 {
        assert_eq!(
            race.app
                .check(request(&secret, "orders:read"))
                .await
                .reason(),
            DenyReason::TokenRevoked
        );
    }
}

async fn an_owner_disabled_during_a_cache_fill_stays_disabled(backend: Backend) {
    let race = Race::new(backend).await;
    let (_, secret) = race
        .app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let (held, in_flight) = race
        .check_held(Read::Credential, request(&secret, "orders:read"))
        .await;

    race.writer()
        .admin_client()
        .await
        .upsert_principal(race.writer().admin(proto::UpsertPrincipalRequest {
            tenant: TENANT.to_owned(),
            id: "alice".to_owned(),
            permissions: strings(&["orders:*"]),
            disabled: true,
            ..Default::default()
        }))
        .await
        .expect("owner disabled");
    race.heard().await;
    held.release();

    assert!(in_flight.await.expect("check").allowed);
    assert_eq!(
        race.app
            .check(request(&secret, "orders:read"))
            .await
            .reason(),
        DenyReason::OwnerDisabled
    );
}

async fn a_token_stored_during_its_unknown_lookup_is_not_left_unknown(backend: Backend) {
    let race = Race::new(backend).await;
    // The server's secrets are random, so no Check can present one before it exists; to race
    // a lookup against a creation, the test stores a token with a secret it chose and
    // announces it as the admin layer announces writes (invalidate locally, publish).
    let generated = token::generate(&TokenPrefix::default());
    let secret = secrecy::ExposeSecret::expose_secret(&generated.secret).to_owned();
    let (template, _) = race.app.token(new_token(TENANT, "alice", &[])).await;
    let (held, in_flight) = race
        .check_held(Read::Credential, request(&secret, ""))
        .await;

    let writer = race.writer();
    store_directly(writer.store.as_ref(), &template, generated.hash).await;
    let announced = Invalidation::Secrets(vec![SecretHash::of(&secret)]);
    writer.authorizer.invalidate(&announced).await;
    writer.store.publish(&announced).await.expect("published");
    race.heard().await;
    held.release();

    assert_eq!(
        in_flight.await.expect("check").reason(),
        DenyReason::TokenUnknown
    );
    assert!(race.app.check(request(&secret, "")).await.allowed);
}

async fn an_api_switched_off_during_a_status_fill_stays_off(backend: Backend) {
    let race = Race::new(backend).await;
    let (_, secret) = race
        .app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    // Statuses are cached by then (the marker's Check read them): drop them, so that the next
    // Check reads them again.
    race.app
        .authorizer
        .invalidate(&Invalidation::Everything)
        .await;
    let (held, in_flight) = race
        .check_held(Read::ApiStatus, request(&secret, "orders:read"))
        .await;

    race.writer()
        .admin_client()
        .await
        .set_api_status(race.writer().admin(proto::SetApiStatusRequest {
            tenant: "*".to_owned(),
            online: false,
            message: String::new(),
        }))
        .await
        .expect("status");
    // Every Check reads the statuses first, so the marker cannot tell when `app` heard of the
    // switch; a Check does: until then it joins the held read (and is given up on), after it
    // it reads the statuses afresh.
    if race.replica.is_some() {
        let started = Instant::now();
        loop {
            let check = race.app.check(request(&secret, "orders:read"));
            if let Ok(response) = tokio::time::timeout(Duration::from_millis(200), check).await
                && response.reason() == DenyReason::ApiOffline
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never heard");
        }
    }
    held.release();

    assert!(in_flight.await.expect("check").allowed);
    assert_eq!(
        race.app
            .check(request(&secret, "orders:read"))
            .await
            .reason(),
        DenyReason::ApiOffline
    );
}

crate::backend_tests!(
    a_revocation_during_a_cache_fill_is_not_undone,
    an_owner_disabled_during_a_cache_fill_stays_disabled,
    a_token_stored_during_its_unknown_lookup_is_not_left_unknown,
    an_api_switched_off_during_a_status_fill_stays_off,
);
