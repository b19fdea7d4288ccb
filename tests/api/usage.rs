//! Usage statistics: Check records write-behind, ListUsage and ReportUsage read and add, on both
//! stores; graceful shutdown flushes; rotation clears history; replicas sum.

use std::net::IpAddr;
use std::time::Duration;

use chrono::Utc;
use tessera::config::Settings;
use tessera::domain::fields::TokenId;
use tessera::domain::report_handle::ReportHandleKey;
use tessera::domain::usage::{
    CheckedCalls, LastUse, MinuteCount, UsageBatch, UsageQuery, UsageScope, day_of, minute_of,
};
use tessera::proto;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::requests::check_request;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with};

const TENANT: &str = "acme";
const CHROME_ON_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                                 (KHTML, like Gecko) Chrome/120.0.6099.130 Safari/537.36";
/// Long enough that only the shutdown flush writes anything in a test.
const NEVER: u64 = 3_600_000;
/// How long a test waits for a flush to show before it gives up and shows what it has.
const PATIENCE: Duration = Duration::from_secs(20);

/// A server whose recorder flushes every `flush_interval_ms`, with `alice` holding orders.
async fn app_with(backend: Backend, flush_interval_ms: u64) -> TestApp {
    let app = spawn_app_with(backend, |settings| {
        settings.usage_flush_interval_ms = flush_interval_ms;
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

/// A token of alice allowed to read and write orders: its id and secret.
async fn token(app: &TestApp) -> (String, String) {
    let mut request = new_token(TENANT, "alice", &["orders:read", "orders:write"]);
    request.rate_limit_per_minute = 100_000;
    let (token, secret) = app.token(request).await;
    (token.id, secret)
}

/// A Check of `endpoint` from a Chrome browser on Windows.
fn check_at(secret: &str, endpoint: &str, permission: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        client_ip: "192.0.2.10".to_owned(),
        user_agent: CHROME_ON_WINDOWS.to_owned(),
        endpoint: endpoint.to_owned(),
        ..check_request(TENANT, secret, permission)
    }
}

/// `count` Checks of `endpoint` asking for `permission`.
async fn checks(app: &TestApp, secret: &str, endpoint: &str, permission: &str, count: usize) {
    for _ in 0..count {
        app.check(check_at(secret, endpoint, permission)).await;
    }
}

fn for_token(id: &str) -> proto::ListUsageRequest {
    proto::ListUsageRequest {
        token_id: id.to_owned(),
        ..Default::default()
    }
}

async fn list_usage(
    app: &TestApp,
    request: proto::ListUsageRequest,
) -> Result<proto::ListUsageResponse, tonic::Status> {
    app.admin_client()
        .await
        .list_usage(app.admin(request))
        .await
        .map(tonic::Response::into_inner)
}

/// ListUsage once `done` holds of it (the flush is asynchronous), or the last answer when it
/// still does not after `PATIENCE`, for the test's assertions to show.
async fn usage_once(
    app: &TestApp,
    request: proto::ListUsageRequest,
    done: impl Fn(&proto::ListUsageResponse) -> bool,
) -> proto::ListUsageResponse {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let usage = list_usage(app, request.clone()).await.expect("usage");
        if done(&usage) || tokio::time::Instant::now() > give_up {
            return usage;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn usage_with_total(app: &TestApp, id: &str, total: i64) -> proto::ListUsageResponse {
    usage_once(app, for_token(id), |usage| usage.total_calls >= total).await
}

/// What the store holds for a token, read directly (after the app stopped, say).
async fn stored_usage(app: &TestApp, id: &str) -> tessera::domain::usage::UsageFigures {
    let now = Utc::now();
    app.store
        .read_usage(&UsageQuery {
            scope: UsageScope::Token(TokenId::parse(id).expect("id")),
            recent_since: now - chrono::Duration::hours(24),
            daily_since: day_of(now) - chrono::Duration::days(30),
        })
        .await
        .expect("usage read")
}

async fn rotate(app: &TestApp, id: &str) -> String {
    app.admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: id.to_owned(),
            grace_period: None,
        }))
        .await
        .expect("rotated")
        .into_inner()
        .secret
}

async fn get_token(app: &TestApp, id: &str) -> proto::Token {
    app.admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: id.to_owned() }))
        .await
        .expect("token")
        .into_inner()
        .token
        .expect("token")
}

backend_tests!(
    the_figures_count_exactly_the_calls_made,
    nothing_recorded_is_lost_on_graceful_shutdown,
    rotation_clears_the_usage_history,
    calls_checked_before_a_rotation_stay_cleared_when_flushed_after_it,
    a_revoked_tokens_history_stays_readable,
    reported_outcomes_give_the_real_success_rate_and_latency,
    the_last_24_hours_leave_out_older_calls_that_the_totals_keep,
    an_owners_usage_sums_all_of_its_tokens,
    only_tokens_unused_for_the_given_time_are_listed_as_dormant,
    a_handle_from_check_is_accepted_and_counted_once_at_the_checks_endpoint,
);

async fn the_figures_count_exactly_the_calls_made(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 3).await;
    checks(&app, &secret, "POST /orders", "orders:write", 2).await;
    checks(&app, &secret, "GET /billing", "billing:read", 1).await;
    // Not a token: no usage to record, for this token or any.
    checks(&app, "tsk_nope", "GET /orders", "orders:read", 2).await;

    let usage = usage_with_total(&app, &id, 6).await;

    assert_eq!(usage.total_calls, 6);
    assert_eq!(usage.calls_last_24h, 6);
    assert!((usage.success_rate - 5.0 / 6.0).abs() < 1e-9, "{usage:?}");
    assert_eq!(usage.average_latency, None, "nothing was reported");
    assert_eq!(usage.reported, None);
    let top: Vec<(&str, i64)> = usage
        .top_endpoints
        .iter()
        .map(|endpoint| (endpoint.endpoint.as_str(), endpoint.calls))
        .collect();
    assert_eq!(
        top,
        [("GET /orders", 3), ("POST /orders", 2), ("GET /billing", 1)]
    );
    assert_eq!(usage.recent_calls.len(), 6);
    let newest = &usage.recent_calls[0];
    assert_eq!(newest.endpoint, "GET /billing");
    assert_eq!(newest.permission, "billing:read");
    assert!(!newest.allowed);
    assert_eq!(newest.reason, proto::DenyReason::PermissionDenied as i32);
    assert_eq!(newest.client_ip, "192.0.2.10");
    assert_eq!(newest.token_id, id);
    let today = usage.daily.last().expect("a daily series");
    assert_eq!((today.calls, today.allowed, today.denied), (6, 5, 1));
    assert_eq!(usage.daily.len(), 30);
    assert_eq!(usage.last_used_ip, "192.0.2.10");
    assert_eq!(usage.last_used_browser, "Chrome 120");
    assert_eq!(usage.last_used_os, "Windows 10");
    assert_eq!(usage.last_used_location, "", "no GeoIP database configured");
    assert!(usage.last_used_at.is_some());
    assert!(get_token(&app, &id).await.last_used_at.is_some());

    // Another flush later adds nothing that was not called.
    checks(&app, &secret, "GET /orders", "orders:read", 1).await;
    let usage = usage_with_total(&app, &id, 7).await;
    assert_eq!(usage.total_calls, 7);
}

async fn nothing_recorded_is_lost_on_graceful_shutdown(backend: Backend) {
    let mut app = app_with(backend, NEVER).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 25).await;

    app.stop().await;

    let stored = stored_usage(&app, &id).await;
    assert_eq!(stored.totals.calls, 25);
    assert_eq!(stored.calls_since_recent, 25);
    assert_eq!(stored.top_endpoints, [("GET /orders".to_owned(), 25)]);
}

async fn rotation_clears_the_usage_history(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 3).await;
    assert_eq!(usage_with_total(&app, &id, 3).await.total_calls, 3);

    let new_secret = rotate(&app, &id).await;

    let cleared = list_usage(&app, for_token(&id)).await.expect("usage");
    assert_eq!(cleared.total_calls, 0);
    assert_eq!(cleared.calls_last_24h, 0);
    assert!(cleared.recent_calls.is_empty());
    assert!(cleared.top_endpoints.is_empty());
    assert_eq!(cleared.last_used_at, None);
    assert_eq!(get_token(&app, &id).await.last_used_at, None);

    checks(&app, &new_secret, "GET /orders", "orders:read", 2).await;
    let usage = usage_with_total(&app, &id, 2).await;
    assert_eq!(usage.total_calls, 2);
}

async fn calls_checked_before_a_rotation_stay_cleared_when_flushed_after_it(backend: Backend) {
    let mut app = app_with(backend, NEVER).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 3).await;
    let new_secret = rotate(&app, &id).await;
    checks(&app, &new_secret, "GET /orders", "orders:read", 2).await;

    app.stop().await;

    assert_eq!(stored_usage(&app, &id).await.totals.calls, 2);
}

async fn a_revoked_tokens_history_stays_readable(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 2).await;
    usage_with_total(&app, &id, 2).await;
    app.admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: id.clone() }))
        .await
        .expect("revoked");
    checks(&app, &secret, "GET /orders", "orders:read", 1).await;

    let usage = usage_with_total(&app, &id, 3).await;

    assert_eq!(usage.total_calls, 3);
    assert_eq!(
        usage.recent_calls[0].reason,
        proto::DenyReason::TokenRevoked as i32
    );
    assert_eq!(usage.recent_calls.len(), 3);
}

/// A report of an outcome, bound to its Check by the handle Check returned.
fn report(handle: &[u8], status: u32, millis: u64) -> proto::ReportUsageRequest {
    proto::ReportUsageRequest {
        http_status: status,
        duration: Some(prost_types::Duration {
            seconds: 0,
            nanos: i32::try_from(millis * 1_000_000).expect("nanos"),
        }),
        report_handle: handle.to_vec(),
        ..Default::default()
    }
}

/// The report handle of an allowed Check.
async fn handle_of(app: &TestApp, secret: &str, endpoint: &str) -> Vec<u8> {
    let answer = app.check(check_at(secret, endpoint, "orders:read")).await;
    assert!(answer.allowed, "{answer:?}");
    assert!(
        !answer.report_handle.is_empty(),
        "an allowed Check has a handle"
    );
    answer.report_handle
}

async fn reported_outcomes_give_the_real_success_rate_and_latency(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 1).await;
    let mut client = app.authz_client().await;
    for (status, millis) in [(200, 100), (204, 300), (502, 200)] {
        let handle = handle_of(&app, &secret, "GET /orders").await;
        client
            .report_usage(report(&handle, status, millis))
            .await
            .expect("report accepted");
    }

    let usage = usage_once(&app, for_token(&id), |usage| {
        usage.total_calls >= 4 && usage.reported.as_ref().is_some_and(|r| r.reports >= 3)
    })
    .await;

    let reported = usage.reported.expect("reported figures");
    assert_eq!(reported.reports, 3);
    assert!(
        (reported.success_rate - 2.0 / 3.0).abs() < 1e-9,
        "{reported:?}"
    );
    let average = prost_types::Duration {
        seconds: 0,
        nanos: 200_000_000,
    };
    assert_eq!(reported.average_latency, Some(average));
    assert_eq!(usage.average_latency, Some(average));
    assert!(
        (usage.success_rate - 2.0 / 3.0).abs() < 1e-9,
        "all 4 checks were allowed"
    );
    assert_eq!(usage.total_calls, 4, "reports are not calls checked");
}

async fn the_last_24_hours_leave_out_older_calls_that_the_totals_keep(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (id, secret) = token(&app).await;
    let two_days_ago = Utc::now() - chrono::Duration::hours(49);
    app.store
        .write_usage(&old_calls(&id, two_days_ago, 5))
        .await
        .expect("old usage written");
    checks(&app, &secret, "GET /orders", "orders:read", 2).await;

    let usage = usage_with_total(&app, &id, 7).await;

    assert_eq!(usage.total_calls, 7);
    assert_eq!(usage.calls_last_24h, 2);
    let then = two_days_ago.date_naive().format("%Y-%m-%d").to_string();
    let that_day = usage
        .daily
        .iter()
        .find(|day| day.date == then)
        .expect("the day of the old calls in the series");
    assert_eq!(that_day.calls, 5);
    // The newest use stays the newest, whatever order flushes come in.
    assert_eq!(usage.last_used_ip, "192.0.2.10");
}

/// `calls` allowed calls of `GET /old` at `at`, as a flush would write them.
fn old_calls(id: &str, at: chrono::DateTime<Utc>, calls: u64) -> UsageBatch {
    UsageBatch {
        checked: vec![CheckedCalls {
            token_id: TokenId::parse(id).expect("id"),
            rotated_at: None,
            minutes: vec![MinuteCount {
                minute: minute_of(at),
                endpoint: "GET /old".to_owned(),
                calls,
                allowed: calls,
            }],
            recent: Vec::new(),
            last_use: LastUse {
                time: at,
                client_ip: Some(IpAddr::from([198, 51, 100, 1])),
                user_agent: String::new(),
            },
        }],
        ..UsageBatch::default()
    }
}

async fn an_owners_usage_sums_all_of_its_tokens(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (first, first_secret) = token(&app).await;
    let (second, second_secret) = token(&app).await;
    checks(&app, &first_secret, "GET /orders", "orders:read", 2).await;
    checks(&app, &second_secret, "GET /orders", "orders:read", 3).await;
    usage_with_total(&app, &first, 2).await;
    usage_with_total(&app, &second, 3).await;

    let owner = proto::ListUsageRequest {
        tenant: TENANT.to_owned(),
        owner_id: "alice".to_owned(),
        ..Default::default()
    };
    let usage = list_usage(&app, owner).await.expect("usage");

    assert_eq!(usage.total_calls, 5);
    let tokens: std::collections::BTreeSet<&str> = usage
        .recent_calls
        .iter()
        .map(|call| call.token_id.as_str())
        .collect();
    assert_eq!(tokens, [first.as_str(), second.as_str()].into());
}

async fn only_tokens_unused_for_the_given_time_are_listed_as_dormant(backend: Backend) {
    let app = app_with(backend, 50).await;
    let (used, secret) = token(&app).await;
    let mut short = new_token(TENANT, "alice", &["orders:read"]);
    short.ttl = Some(prost_types::Duration {
        seconds: 3 * 24 * 3600,
        nanos: 0,
    });
    let (expiring, _) = app.token(short).await;
    checks(&app, &secret, "GET /orders", "orders:read", 1).await;
    usage_with_total(&app, &used, 1).await;

    let unused_for = proto::ListTokensRequest {
        tenant: TENANT.to_owned(),
        unused_for: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        ..Default::default()
    };
    let dormant = app
        .admin_client()
        .await
        .list_tokens(app.admin(unused_for))
        .await
        .expect("listed")
        .into_inner()
        .tokens;
    let dormant: Vec<&str> = dormant.iter().map(|token| token.id.as_str()).collect();
    assert_eq!(dormant, [expiring.id.as_str()]);
}

#[tokio::test]
async fn two_replicas_flushing_into_one_token_sum_correctly() {
    let mut first = app_with(Backend::Postgres, NEVER).await;
    let mut second = first.spawn_replica().await;
    let (id, secret) = token(&first).await;
    // Same token, endpoint and minute on both: the same rows, added to by both flushes.
    checks(&first, &secret, "GET /orders", "orders:read", 5).await;
    checks(&second, &secret, "GET /orders", "orders:read", 7).await;

    tokio::join!(first.stop(), second.stop());

    let stored = stored_usage(&first, &id).await;
    assert_eq!(stored.totals.calls, 12);
    assert_eq!(stored.calls_since_recent, 12);
    assert_eq!(stored.top_endpoints, [("GET /orders".to_owned(), 12)]);
}

#[tokio::test]
async fn the_last_use_is_located_with_the_configured_geoip_database() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("city.mmdb");
    write_city_database(&database);
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = 50;
        settings.geoip_database = Some(database.clone());
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (id, secret) = token(&app).await;
    let mut request = check_at(&secret, "GET /orders", "orders:read");
    request.client_ip = "81.2.69.160".to_owned();
    app.check(request).await;

    let usage = usage_with_total(&app, &id, 1).await;

    assert_eq!(usage.last_used_ip, "81.2.69.160");
    assert_eq!(usage.last_used_location, "London, United Kingdom");
}

#[tokio::test]
async fn an_address_the_geoip_database_does_not_know_has_no_location() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("city.mmdb");
    write_city_database(&database);
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = 50;
        settings.geoip_database = Some(database.clone());
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (id, secret) = token(&app).await;
    app.check(check_at(&secret, "GET /orders", "orders:read"))
        .await;

    let usage = usage_with_total(&app, &id, 1).await;

    assert_eq!(usage.last_used_ip, "192.0.2.10");
    assert_eq!(usage.last_used_location, "");
}

/// A MaxMind-format City database that knows one network: 81.2.69.0/24 in London.
fn write_city_database(path: &std::path::Path) {
    use maxminddb_writer::Database;
    use maxminddb_writer::paths::IpAddrWithMask;
    use serde_json::json;

    let mut database = Database::default();
    database.metadata.database_type = "Tessera-Test-City".to_owned();
    database.metadata.binary_format_major_version = 2;
    database.metadata.languages = vec!["en".to_owned()];
    let london = database
        .insert_value(json!({
            "city": {"names": {"en": "London"}},
            "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        }))
        .expect("record");
    let network: IpAddrWithMask = "81.2.69.0/24".parse().expect("network");
    database.insert_node(network, london);
    let file = std::fs::File::create(path).expect("database file");
    database.write_to(file).expect("database written");
}

#[tokio::test]
async fn an_unreadable_geoip_database_stops_the_start_naming_the_setting() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("not-a-database.mmdb");
    std::fs::write(&database, b"hello").expect("file");
    let settings = tessera::config::Settings {
        geoip_database: Some(database),
        ..Default::default()
    };
    let error = tessera::config::Config::parse(settings)
        .map(drop)
        .expect_err("not a MaxMind DB");
    assert!(
        error.to_string().contains("TESSERA_GEOIP_DATABASE"),
        "{error}"
    );
}

#[tokio::test]
async fn list_usage_wants_one_token_or_one_owner_and_knows_neither_unknown_one() {
    let app = app_with(Backend::Sqlite, NEVER).await;
    let both = proto::ListUsageRequest {
        token_id: "tok_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_owned(),
        owner_id: "alice".to_owned(),
        ..Default::default()
    };
    let neither = proto::ListUsageRequest::default();
    let too_many_days = proto::ListUsageRequest {
        days: 367,
        ..for_token("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV")
    };
    for request in [both, neither, too_many_days] {
        let status = list_usage(&app, request).await.expect_err("invalid");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let unknown = list_usage(&app, for_token("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        .await
        .expect_err("unknown token");
    assert_eq!(unknown.code(), Code::NotFound);
    let nobody = proto::ListUsageRequest {
        tenant: TENANT.to_owned(),
        owner_id: "nobody".to_owned(),
        ..Default::default()
    };
    let nobody = list_usage(&app, nobody).await.expect_err("unknown owner");
    assert_eq!(nobody.code(), Code::NotFound);
}

#[tokio::test]
async fn a_malformed_report_is_invalid_argument_naming_each_field() {
    let app = app_with(Backend::Sqlite, NEVER).await;
    let malformed = proto::ReportUsageRequest {
        token_id: "not-a-token".to_owned(),
        http_status: 42,
        duration: None,
        ..Default::default()
    };
    let status = app
        .authz_client()
        .await
        .report_usage(malformed)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    for field in ["token_id", "http_status", "duration"] {
        assert!(status.message().contains(field), "{field} in {status:?}");
    }
}

#[tokio::test]
async fn with_recording_off_checks_leave_no_usage() {
    let mut app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.usage_enabled = false;
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (id, secret) = token(&app).await;
    checks(&app, &secret, "GET /orders", "orders:read", 3).await;

    app.stop().await;

    assert_eq!(stored_usage(&app, &id).await.totals.calls, 0);
}

// ---- ReportUsage: bound to a real Check ----

/// Base64 of 32 bytes: the report handle key of the servers that share it.
const HANDLE_KEY: &str = "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=";

/// A server with a configured report handle key, flushing only at shutdown.
async fn app_with_handle_key(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(backend, |settings| {
        settings.usage_flush_interval_ms = NEVER;
        settings.report_handle_key = Some(HANDLE_KEY.to_owned().into());
        customize(settings);
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

async fn report_usage(
    app: &TestApp,
    request: proto::ReportUsageRequest,
) -> Result<(), tonic::Status> {
    app.authz_client()
        .await
        .report_usage(request)
        .await
        .map(drop)
}

fn names(status: &tonic::Status, field: &str) -> bool {
    status.message().contains(field)
}

fn at(time: chrono::DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: 0,
    })
}

async fn a_handle_from_check_is_accepted_and_counted_once_at_the_checks_endpoint(backend: Backend) {
    let mut app = app_with_handle_key(backend, |_| {}).await;
    let (id, secret) = token(&app).await;
    let handle = handle_of(&app, &secret, "GET /orders").await;

    report_usage(&app, report(&handle, 200, 40))
        .await
        .expect("accepted");
    // Naming the handle's own token and endpoint is allowed too.
    let mut explicit = report(&handle, 500, 60);
    explicit.token_id = id.clone();
    explicit.endpoint = "GET /orders".to_owned();
    report_usage(&app, explicit).await.expect("accepted");
    app.stop().await;

    let stored = stored_usage(&app, &id).await;
    assert_eq!(stored.totals.reports, 2);
    assert_eq!(stored.totals.report_successes, 1);
    assert_eq!(stored.totals.report_micros, 100_000);
    assert_eq!(stored.top_endpoints, [("GET /orders".to_owned(), 1)]);
}

#[tokio::test]
async fn a_replica_sharing_the_key_accepts_anothers_handle() {
    let first = app_with_handle_key(Backend::Postgres, |_| {}).await;
    let mut second = first.spawn_replica().await;
    let (id, secret) = token(&first).await;
    let handle = handle_of(&first, &secret, "GET /orders").await;

    report_usage(&second, report(&handle, 200, 5))
        .await
        .expect("accepted by the other replica");
    second.stop().await;

    assert_eq!(stored_usage(&first, &id).await.totals.reports, 1);
}

#[tokio::test]
async fn a_report_dated_in_the_far_future_or_before_the_retention_is_refused_naming_time() {
    let mut app = app_with_handle_key(Backend::Sqlite, |_| {}).await;
    let (id, secret) = token(&app).await;
    let handle = handle_of(&app, &secret, "GET /orders").await;
    let year_9999 = chrono::DateTime::parse_from_rfc3339("9999-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let too_old = Utc::now() - chrono::Duration::days(8);
    let slightly_ahead = Utc::now() + chrono::Duration::minutes(10);

    for time in [year_9999, slightly_ahead, too_old] {
        let mut dated = report(&handle, 200, 5);
        dated.time = at(time);
        let status = report_usage(&app, dated).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{time}: {status:?}");
        assert!(names(&status, "time"), "{status:?}");
    }
    app.stop().await;

    assert_eq!(stored_usage(&app, &id).await.totals.reports, 0);
}

#[tokio::test]
async fn a_forged_altered_foreign_or_expired_handle_is_refused_and_nothing_is_stored() {
    let mut app = app_with_handle_key(Backend::Sqlite, |_| {}).await;
    let (id, secret) = token(&app).await;
    let handle = handle_of(&app, &secret, "GET /orders").await;
    let token_id = TokenId::parse(&id).expect("id");
    let forged_with_another_key = ReportHandleKey::random().mint(&token_id, "GET /x", Utc::now());
    let mut altered = handle.clone();
    // The last byte of the endpoint: `GET /orders` becomes `GET /orderr`.
    let endpoint_end = altered.len() - 33;
    altered[endpoint_end] = b'r';
    let key = ReportHandleKey::parse(&HANDLE_KEY.to_owned().into()).expect("key");
    let expired = key.mint(
        &token_id,
        "GET /orders",
        Utc::now() - chrono::Duration::hours(2),
    );

    for (what, forged) in [
        ("another key", forged_with_another_key),
        ("altered", altered),
    ] {
        let status = report_usage(&app, report(&forged, 200, 5))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
        assert!(names(&status, "report_handle"), "{what}: {status:?}");
    }
    for (what, bad) in [("expired", expired), ("truncated", handle[..20].to_vec())] {
        let status = report_usage(&app, report(&bad, 200, 5))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(names(&status, "report_handle"), "{what}: {status:?}");
    }
    // A real handle cannot be pointed at another endpoint or token.
    let mut elsewhere = report(&handle, 200, 5);
    elsewhere.endpoint = "DELETE /everything".to_owned();
    let status = report_usage(&app, elsewhere).await.expect_err("refused");
    assert!(names(&status, "endpoint"), "{status:?}");
    app.stop().await;

    let stored = stored_usage(&app, &id).await;
    assert_eq!(stored.totals.reports, 0);
    // Only the Check's own endpoint: no row for what a forged or altered handle named.
    assert_eq!(stored.top_endpoints, [("GET /orders".to_owned(), 1)]);
}

#[tokio::test]
async fn a_bare_token_id_is_refused_by_default_and_accepted_with_the_setting() {
    let mut strict = app_with_handle_key(Backend::Sqlite, |_| {}).await;
    let (id, _) = token(&strict).await;
    let bare = proto::ReportUsageRequest {
        token_id: id.clone(),
        endpoint: "GET /orders".to_owned(),
        ..report(&[], 200, 5)
    };
    let status = report_usage(&strict, bare.clone())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(names(&status, "report_handle"), "{status:?}");
    strict.stop().await;
    assert_eq!(stored_usage(&strict, &id).await.totals.reports, 0);

    let mut lenient = strict
        .spawn_replica_with(|settings| settings.usage_accept_bare_token_ids = true)
        .await;
    report_usage(&lenient, bare).await.expect("accepted");
    lenient.stop().await;
    assert_eq!(stored_usage(&lenient, &id).await.totals.reports, 1);
}

#[tokio::test]
async fn a_flood_of_reports_for_unknown_tokens_or_forged_handles_costs_the_flush_nothing() {
    let mut app = app_with_handle_key(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = 20;
    })
    .await;
    let mut client = app.authz_client().await;
    for _ in 0..200 {
        let unknown = TokenId::generate();
        let bare = proto::ReportUsageRequest {
            token_id: unknown.to_string(),
            endpoint: format!("GET /{unknown}"),
            ..report(&[], 200, 5)
        };
        client.report_usage(bare).await.expect_err("refused");
        let forged = ReportHandleKey::random().mint(&unknown, "GET /x", Utc::now());
        client
            .report_usage(report(&forged, 200, 5))
            .await
            .expect_err("refused");
    }
    // Several flush intervals, then the last flush at shutdown.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.stop().await;

    // Every flush that writes anything records its id; none did.
    let flushes = app
        .database
        .scalar("SELECT COUNT(*) FROM usage_flushes")
        .await;
    assert_eq!(flushes, 0, "the flush never opened a transaction");
    let rows = app.database.scalar("SELECT COUNT(*) FROM usage_days").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_tokens_endpoints_beyond_the_daily_bound_are_counted_as_other() {
    let mut app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.usage_flush_interval_ms = NEVER;
        settings.usage_endpoints_per_token_per_day = 3;
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let (id, secret) = token(&app).await;
    for n in 0..10 {
        checks(&app, &secret, &format!("GET /orders/{n}"), "orders:read", 1).await;
    }
    app.stop().await;

    let stored = stored_usage(&app, &id).await;
    assert_eq!(stored.totals.calls, 10);
    let mut top = stored.top_endpoints.clone();
    top.sort();
    let other: Vec<(String, u64)> = top
        .iter()
        .filter(|(endpoint, _)| endpoint == "other")
        .cloned()
        .collect();
    assert_eq!(other, [("other".to_owned(), 7)], "{top:?}");
    assert_eq!(
        top.len(),
        4,
        "three endpoints of their own and `other`: {top:?}"
    );
}
