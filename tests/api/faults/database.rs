//! Database faults: the replica's link to Postgres goes through a proxy the test cuts, slows,
//! blackholes and restores, while the database itself stays up for the other replica and for
//! the test's own inspection.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tessera::proto;
use tessera::proto::DenyReason;
use tokio::task::JoinHandle;
use tonic::Code;

use super::{
    NOT_HUNG, TENANT, alices_token, app_behind, bounded_check, postgres_proxy, request,
    wait_for_reason,
};
use crate::helpers::ops::{TableLock, eventually, metric, scrape};
use crate::helpers::{TestApp, new_token, unknown_secret};

/// Settings that keep the outage short to wait out: Check gives up on the store after 300 ms;
/// an admin call waits 1 s for a connection and gives up after 1 + 2 + 1 s
/// (`PoolOptions::call_deadline`).
fn quick_to_give_up(settings: &mut tessera::config::Settings) {
    settings.check_store_timeout_ms = 300;
    settings.database_acquire_timeout_ms = 1_000;
    settings.database_statement_timeout_ms = 2_000;
}

async fn database(app: &TestApp) -> PgConnection {
    PgConnection::connect(app.database.url())
        .await
        .expect("direct connection to the test database")
}

async fn count(connection: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(connection)
        .await
        .expect("count")
}

async fn create_alices_token(app: &TestApp) -> Result<proto::CreateTokenResponse, tonic::Status> {
    let created = tokio::time::timeout(
        NOT_HUNG,
        app.admin_client().await.create_token(app.admin(new_token(
            TENANT,
            "alice",
            &["orders:read"],
        ))),
    )
    .await
    .expect("CreateToken answered rather than hung");
    created.map(tonic::Response::into_inner)
}

type CreateCall = JoinHandle<Result<tonic::Response<proto::CreateTokenResponse>, tonic::Status>>;

/// A CreateToken of alice's on a task of its own, returned once one of its statements waits in
/// the database for `table`, which the returned lock holds.
async fn create_waiting_for(app: &TestApp, table: &'static str) -> (TableLock, CreateCall) {
    let lock = TableLock::hold(app.database.url(), table).await;
    let create = {
        let mut client = app.admin_client().await;
        let request = app.admin(new_token(TENANT, "alice", &["orders:read"]));
        tokio::spawn(async move { client.create_token(request).await })
    };
    let waiting = eventually(NOT_HUNG, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE NOT l.granted AND a.datname = current_database() \
             AND a.application_name = 'tessera'",
        )
        .fetch_one(&mut database(app).await)
        .await
        .expect("locks");
        waiting > 0
    })
    .await;
    assert!(waiting, "the create never reached {table}");
    (lock, create)
}

/// How `create` was refused (`why` it must be), failing the test if it hung or succeeded.
async fn refusal(create: CreateCall, why: &str) -> tonic::Status {
    tokio::time::timeout(NOT_HUNG, create)
        .await
        .expect("CreateToken answered rather than hung")
        .expect("task")
        .expect_err(why)
}

/// Retries `call` while it answers UNAVAILABLE (after a cut, each pooled connection that died
/// with it may fail one call before it is replaced), failing after `NOT_HUNG`.
async fn once_back<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Ok(answer) => return answer,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    started.elapsed() < NOT_HUNG,
                    "the admin API never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Cut,
    Blackhole,
}

/// One outage of `fault` on a replica with a cached token, an uncached one and a never-issued
/// one; then the link is restored.
async fn through_an_outage(fault: Fault) {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, quick_to_give_up).await;
    let (_, cached) = alices_token(&app).await;
    let (_, uncached) = alices_token(&app).await;
    let stranger = unknown_secret();
    assert!(app.check(request(&cached, "orders:read")).await.allowed);

    match fault {
        Fault::Cut => proxy.cut(),
        Fault::Blackhole => proxy.blackhole(),
    }
    let (allowed, _) = bounded_check(&app, request(&cached, "orders:read")).await;
    assert!(
        allowed.allowed,
        "{fault:?}: a cached token is still decided"
    );
    let (denied, _) = bounded_check(&app, request(&cached, "orders:write")).await;
    assert_eq!(
        denied.reason(),
        DenyReason::PermissionDenied,
        "{fault:?}: and still denied what it lacks"
    );
    let (unavailable, took) = bounded_check(&app, request(&uncached, "orders:read")).await;
    assert_eq!(
        unavailable.reason(),
        DenyReason::StoreUnavailable,
        "{fault:?}: an uncached token fails closed"
    );
    assert_eq!(unavailable.http_status, 503);
    eprintln!("{fault:?}: STORE_UNAVAILABLE for an uncached token after {took:?}");
    let (unknown, _) = bounded_check(&app, request(&stranger, "orders:read")).await;
    assert_eq!(
        unknown.reason(),
        DenyReason::StoreUnavailable,
        "{fault:?}: an outage is never reported as an unknown token"
    );
    let started = std::time::Instant::now();
    let status = create_alices_token(&app)
        .await
        .expect_err("no token can be created without the database");
    assert_eq!(status.code(), Code::Unavailable, "{fault:?}: {status:?}");
    eprintln!(
        "{fault:?}: CreateToken UNAVAILABLE after {:?}",
        started.elapsed()
    );

    proxy.restore();
    // After a cut the pool may hand out a connection that died with it: that answer is
    // STORE_UNAVAILABLE, then the token is allowed, and never anything else.
    wait_for_reason(
        &app,
        request(&uncached, "orders:read"),
        DenyReason::Allowed,
        &[DenyReason::StoreUnavailable],
    )
    .await;
    // The outage was cached neither as "unknown" for the issued token nor at all for the
    // stranger, who is now told the truth.
    wait_for_reason(
        &app,
        request(&stranger, "orders:read"),
        DenyReason::TokenUnknown,
        &[DenyReason::StoreUnavailable],
    )
    .await;
    once_back(|| create_alices_token(&app)).await;
}

#[tokio::test]
async fn cut_off_from_postgres_a_replica_decides_cached_tokens_and_refuses_the_rest_promptly() {
    through_an_outage(Fault::Cut).await;
}

#[tokio::test]
async fn partitioned_from_postgres_a_replica_decides_cached_tokens_and_refuses_the_rest_promptly() {
    through_an_outage(Fault::Blackhole).await;
}

#[tokio::test]
async fn a_slow_database_delays_only_cache_misses_until_they_pass_the_check_timeout() {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, |settings| {
        settings.check_store_timeout_ms = 2_000;
    })
    .await;
    let (_, cached) = alices_token(&app).await;
    assert!(app.check(request(&cached, "orders:read")).await.allowed);
    let mut secrets = Vec::new();
    for _ in 0..2 {
        secrets.push(alices_token(&app).await.1);
    }

    // A link adding 20 ms to every packet: misses are slower but answered.
    proxy.delay(Duration::from_millis(20));
    let lookups_before = app.store_lookups();
    let (hit, _) = bounded_check(&app, request(&cached, "orders:read")).await;
    assert!(hit.allowed);
    assert_eq!(
        app.store_lookups(),
        lookups_before,
        "a hit never touches the link"
    );
    let (miss, took) = bounded_check(&app, request(&secrets[0], "orders:read")).await;
    assert!(miss.allowed, "{:?}", miss.reason());
    eprintln!("delay 20 ms per packet: a cache miss answered after {took:?}");

    // A link slower than the Check's patience: the miss fails closed at the timeout.
    proxy.delay(Duration::from_secs(3));
    let (miss, took) = bounded_check(&app, request(&secrets[1], "orders:read")).await;
    assert_eq!(miss.reason(), DenyReason::StoreUnavailable);
    eprintln!("delay 3 s per packet: STORE_UNAVAILABLE after {took:?} (timeout 2 s)");
    let lookups_before = app.store_lookups();
    let (hit, _) = bounded_check(&app, request(&cached, "orders:read")).await;
    assert!(hit.allowed);
    assert_eq!(
        app.store_lookups(),
        lookups_before,
        "cached tokens do not wait for the slow link"
    );

    proxy.restore();
    wait_for_reason(
        &app,
        request(&secrets[1], "orders:read"),
        DenyReason::Allowed,
        &[DenyReason::StoreUnavailable],
    )
    .await;
}

#[tokio::test]
async fn an_admin_write_cut_off_mid_transaction_fails_unavailable_and_leaves_nothing_behind() {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, quick_to_give_up).await;
    let mut inspector = database(&app).await;
    let tokens_before = count(&mut inspector, "tokens").await;
    let audit_before = count(&mut inspector, "audit_events").await;

    // Every mutation writes its audit event in the same transaction as the token row; holding
    // the audit table stops the create after it has written the token and before it commits.
    let (lock, create) = create_waiting_for(&app, "audit_events").await;

    proxy.cut();
    let status = refusal(create, "the create lost its connection before committing").await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    lock.release().await;
    // The backend that ran the create notices its client is gone and rolls back.
    let settled = eventually(NOT_HUNG, || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'tessera' \
             AND xact_start IS NOT NULL",
        )
        .fetch_one(&mut database(&app).await)
        .await
        .expect("activity");
        open == 0
    })
    .await;
    assert!(settled, "the cut-off transaction never ended");
    assert_eq!(count(&mut inspector, "tokens").await, tokens_before);
    assert_eq!(count(&mut inspector, "audit_events").await, audit_before);

    proxy.restore();
    let listed = list_alices_tokens(&app).await;
    assert!(listed.is_empty(), "no half-made token: {listed:?}");
}

#[tokio::test]
async fn partitioned_mid_call_create_token_answers_unavailable_at_the_store_deadline() {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, |settings| {
        quick_to_give_up(settings);
        // Past the store's deadline (1 + 2 + 1 s) and short of the test's patience: a call the
        // store does not bound ends here, at the gate, as DEADLINE_EXCEEDED.
        settings.request_timeout_ms = 8_000;
    })
    .await;

    // CreateToken's first read of its own (the owner) waits on the locked table, so the
    // partition starts with the statement in flight: its answer, or its statement_timeout
    // error, never comes back, and neither the pool's acquire timeout nor the database's
    // statement timeout can end the call.
    let started = std::time::Instant::now();
    let (lock, create) = create_waiting_for(&app, "principals").await;
    proxy.blackhole();

    let status = refusal(create, "no token can be created across a partition").await;
    let took = started.elapsed();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{status:?} after {took:?}"
    );
    assert!(
        took < Duration::from_millis(app.settings.request_timeout_ms),
        "answered at the store's deadline, not the gate's: {took:?}"
    );
    eprintln!("partitioned mid-call: CreateToken UNAVAILABLE after {took:?}");

    lock.release().await;
    proxy.restore();
    once_back(|| create_alices_token(&app)).await;
}

/// Alice's tokens, once the admin API answers again.
async fn list_alices_tokens(app: &TestApp) -> Vec<proto::Token> {
    once_back(|| async {
        app.admin_client()
            .await
            .list_tokens(app.admin(proto::ListTokensRequest {
                tenant: TENANT.to_owned(),
                owner_id: "alice".to_owned(),
                include_revoked: true,
                ..Default::default()
            }))
            .await
            .map(|listed| listed.into_inner().tokens)
    })
    .await
}

/// Two replicas of one database: the first reaches it through `proxy`, the second directly.
async fn partitioned_and_direct(
    proxy: &crate::helpers::fault_proxy::FaultProxy,
    customize: impl FnOnce(&mut tessera::config::Settings),
) -> (TestApp, TestApp) {
    let partitioned = app_behind(proxy, customize).await;
    let direct = partitioned
        .spawn_replica_with(|settings| {
            settings.database_url = partitioned.database.url().to_owned().into();
        })
        .await;
    (partitioned, direct)
}

/// Alice's token checked once on `replica`, so it is cached there; returns (id, secret).
async fn cached_on(first: &TestApp, replica: &TestApp) -> (String, String) {
    let (token, secret) = alices_token(first).await;
    assert!(replica.check(request(&secret, "orders:read")).await.allowed);
    (token.id, secret)
}

async fn revoke(app: &TestApp, id: &str) {
    app.admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: id.to_owned() }))
        .await
        .expect("revoked");
}

#[tokio::test]
async fn a_revocation_made_while_a_replica_was_cut_off_is_enforced_once_it_reconnects() {
    let proxy = postgres_proxy().await;
    let (partitioned, direct) = partitioned_and_direct(&proxy, |_| {}).await;
    let (id, secret) = cached_on(&direct, &partitioned).await;
    let listens_before = proxy.connections();
    let lookups_before = partitioned.store_lookups();

    proxy.cut();
    revoke(&direct, &id).await;
    // While cut off, the replica keeps deciding from its cache: the price of availability,
    // bounded by the reconnection below or, at the latest, by the cache TTL.
    assert!(
        partitioned
            .check(request(&secret, "orders:read"))
            .await
            .allowed
    );
    proxy.restore();

    wait_for_reason(
        &partitioned,
        request(&secret, "orders:read"),
        DenyReason::TokenRevoked,
        &[DenyReason::Allowed, DenyReason::StoreUnavailable],
    )
    .await;
    assert!(
        proxy.connections() > listens_before,
        "the replica reconnected"
    );
    assert!(
        partitioned.store_lookups() > lookups_before,
        "the cache was dropped and refilled from the store"
    );
}

#[tokio::test]
async fn a_revocation_held_up_by_a_partition_arrives_when_the_partition_heals() {
    let proxy = postgres_proxy().await;
    let (partitioned, direct) = partitioned_and_direct(&proxy, |_| {}).await;
    let (id, secret) = cached_on(&direct, &partitioned).await;

    // A blackhole keeps the LISTEN connection open: the notification waits in the network.
    proxy.blackhole();
    revoke(&direct, &id).await;
    assert!(
        partitioned
            .check(request(&secret, "orders:read"))
            .await
            .allowed,
        "nothing has reached the partitioned replica yet"
    );
    proxy.restore();
    wait_for_reason(
        &partitioned,
        request(&secret, "orders:read"),
        DenyReason::TokenRevoked,
        &[DenyReason::Allowed, DenyReason::StoreUnavailable],
    )
    .await;
}

#[tokio::test]
async fn a_replica_that_stays_partitioned_stops_allowing_once_its_cache_ttl_passes() {
    let proxy = postgres_proxy().await;
    let (partitioned, direct) = partitioned_and_direct(&proxy, |settings| {
        settings.cache_ttl_ms = 1_000;
        settings.check_store_timeout_ms = 300;
    })
    .await;
    let (id, secret) = cached_on(&direct, &partitioned).await;

    proxy.blackhole();
    revoke(&direct, &id).await;
    // Once the entry outlives its TTL the replica must ask the store, which it cannot reach:
    // it fails closed instead of trusting what it last knew.
    wait_for_reason(
        &partitioned,
        request(&secret, "orders:read"),
        DenyReason::StoreUnavailable,
        &[DenyReason::Allowed],
    )
    .await;
    proxy.restore();
    wait_for_reason(
        &partitioned,
        request(&secret, "orders:read"),
        DenyReason::TokenRevoked,
        &[DenyReason::StoreUnavailable],
    )
    .await;
}

#[tokio::test]
async fn usage_recorded_while_postgres_was_unreachable_is_flushed_once_it_returns() {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, |settings| {
        settings.usage_flush_interval_ms = 100;
    })
    .await;
    let (token, secret) = alices_token(&app).await;
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    let failures_before = metric(
        &scrape(app.metrics_addr).await,
        "tessera_usage_flush_failures_total",
        &[],
    );

    proxy.cut();
    const DURING_OUTAGE: usize = 25;
    for _ in 0..DURING_OUTAGE {
        assert!(app.check(request(&secret, "orders:read")).await.allowed);
    }
    let flushes_failed = eventually(NOT_HUNG, || async {
        metric(
            &scrape(app.metrics_addr).await,
            "tessera_usage_flush_failures_total",
            &[],
        ) > failures_before
    })
    .await;
    assert!(flushes_failed, "no flush was tried during the outage");
    proxy.restore();

    let expected = 1 + DURING_OUTAGE as i64;
    let flushed = eventually(NOT_HUNG, || async {
        let usage = app
            .admin_client()
            .await
            .list_usage(app.admin(proto::ListUsageRequest {
                token_id: token.id.clone(),
                ..Default::default()
            }))
            .await;
        usage.is_ok_and(|usage| usage.into_inner().total_calls >= expected)
    })
    .await;
    assert!(flushed, "the buffered calls never reached the database");
    let total = app
        .admin_client()
        .await
        .list_usage(app.admin(proto::ListUsageRequest {
            token_id: token.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("usage")
        .into_inner()
        .total_calls;
    assert_eq!(total, expected, "every call counted once, none twice");
}

#[tokio::test]
async fn a_usage_flush_whose_commit_reply_was_lost_is_retried_and_counted_once() {
    let proxy = postgres_proxy().await;
    let app = app_behind(&proxy, |settings| {
        settings.usage_flush_interval_ms = 100;
    })
    .await;
    let (token, secret) = alices_token(&app).await;
    let failures_before = metric(
        &scrape(app.metrics_addr).await,
        "tessera_usage_flush_failures_total",
        &[],
    );

    // The flush of these calls commits, but Tessera never hears so and retries the batch.
    proxy.lose_the_reply_to_the_next_commit();
    const CALLS: i64 = 7;
    for _ in 0..CALLS {
        assert!(app.check(request(&secret, "orders:read")).await.allowed);
    }
    let flush_failed = eventually(NOT_HUNG, || async {
        metric(
            &scrape(app.metrics_addr).await,
            "tessera_usage_flush_failures_total",
            &[],
        ) > failures_before
    })
    .await;
    assert!(flush_failed, "the flush never saw its reply lost");
    let total_calls = || async {
        app.admin_client()
            .await
            .list_usage(app.admin(proto::ListUsageRequest {
                token_id: token.id.clone(),
                ..Default::default()
            }))
            .await
            .map(|usage| usage.into_inner().total_calls)
    };
    assert!(
        eventually(NOT_HUNG, || async {
            total_calls().await.is_ok_and(|total| total >= CALLS)
        })
        .await,
        "the calls never reached the database"
    );
    // One more call: once it shows, a later flush succeeded, and the retry queue writes the
    // lost batch (again, were it not idempotent) before anything newer.
    assert!(app.check(request(&secret, "orders:read")).await.allowed);
    assert!(
        eventually(NOT_HUNG, || async {
            total_calls().await.is_ok_and(|total| total > CALLS)
        })
        .await,
        "no flush succeeded after the lost one"
    );

    assert_eq!(
        total_calls().await.expect("usage"),
        CALLS + 1,
        "the committed flush counted once"
    );
}
