//! Tessera behind real gateways: HTTP forward-auth on `TESSERA_HTTP_LISTEN`, called by nginx and
//! Caddy (the real binaries, `examples/` configurations) in front of an upstream the test
//! controls, and as Traefik's ForwardAuth calls it.

mod caddy;
mod forward_auth;
mod nginx;

use std::net::SocketAddr;

use tessera::config::{EnvoyRule, EnvoyUnmatched, Settings};
use tessera::proto;

use crate::helpers::http::{HttpAnswer, Upstream, get};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with};

/// The tenant the examples name in their forward-auth URL (`?tenant=acme`).
const TENANT: &str = "acme";

/// Tessera with the HTTP listener, orders and admin rules, one trusted hop (the gateway's).
async fn tessera() -> TestApp {
    spawn_app_with(Backend::Sqlite, |settings: &mut Settings| {
        settings.http_listen = Some("127.0.0.1:0".parse().expect("address"));
        settings.envoy_trusted_hops = 1;
        settings.envoy_unmatched = EnvoyUnmatched::Deny;
        let rule = |prefix: &str, permission: &str| EnvoyRule {
            method: "GET".to_owned(),
            path: None,
            prefix: Some(prefix.to_owned()),
            permission: permission.to_owned(),
            ..Default::default()
        };
        settings.gateway_metadata_headers = vec!["plan".to_owned()];
        settings.envoy_rules = vec![
            rule("/api/v1/orders/", "orders:read"),
            rule("/api/v1/admin/", "admin:read"),
        ];
    })
    .await
}

fn http_addr(app: &TestApp) -> SocketAddr {
    app.http_addr.expect("the HTTP listener is on")
}

async fn orders_token(app: &TestApp, owner: &str, per_minute: u32) -> (proto::Token, String) {
    orders_token_in(app, TENANT, owner, per_minute).await
}

async fn orders_token_in(
    app: &TestApp,
    tenant: &str,
    owner: &str,
    per_minute: u32,
) -> (proto::Token, String) {
    app.principal(tenant, owner, &["orders:read"]).await;
    let mut request = new_token(tenant, owner, &["orders:read"]);
    request.rate_limit_per_minute = per_minute;
    // The one metadata key `tessera()` forwards, and one it does not.
    if owner == "alice" {
        request.metadata = [("plan", "pro"), ("internal", "x")]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
    }
    app.token(request).await
}

/// Whether the upstream's last request carried `name` at all.
fn upstream_saw(upstream: &Upstream, name: &str) -> bool {
    let seen = upstream.seen();
    let last = seen.last().expect("the upstream was reached");
    last.headers.contains_key(name)
}

/// The one value the upstream saw of `name` on its last request.
fn only_value(upstream: &Upstream, name: &str) -> String {
    let seen = upstream.seen();
    let last = seen.last().expect("the upstream was reached");
    let values = last.headers.get(name).cloned().unwrap_or_default();
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].clone()
}

fn expect_status(answer: &HttpAnswer, status: u16, case: &str) {
    assert_eq!(answer.status, status, "{case}: {answer:?}");
}

/// The behaviour every gateway in front of Tessera must show, through `front`: the allowed
/// request reaches the upstream with the identity and no forged copy; missing, unknown and
/// revoked tokens are 401; a wrong permission 403; path tricks never reach a route the token
/// lacks; an exhausted limit 429 with Retry-After; an offline API 503 (last: it stays offline).
async fn the_gateway_decides_as_tessera_does(
    app: &TestApp,
    front: SocketAddr,
    upstream: &Upstream,
) {
    let (token, secret) = orders_token(app, "alice", 1000).await;

    let forged = [
        ("x-tessera-token-id", "tok_forged"),
        ("x-tessera-owner-id", "mallory"),
        ("x-tessera-tenant", "globex"),
        ("x-tessera-meta-plan", "enterprise"),
        ("x-tessera-signature", "c2ln"),
    ];
    let allowed = get(front, "/api/v1/orders/7?page=2", &secret, &forged).await;
    expect_status(&allowed, 200, "an allowed request");
    assert_eq!(allowed.json()["target"], "/api/v1/orders/7?page=2");
    assert_eq!(only_value(upstream, "x-tessera-token-id"), token.id);
    assert_eq!(only_value(upstream, "x-tessera-owner-id"), "alice");
    assert_eq!(only_value(upstream, "x-tessera-tenant"), TENANT);
    // The forwarded key, as Tessera holds it; the key it does not forward, not at all.
    assert_eq!(only_value(upstream, "x-tessera-meta-plan"), "pro");
    assert!(!upstream_saw(upstream, "x-tessera-meta-internal"));
    assert!(!upstream_saw(upstream, "x-tessera-signature"));

    let missing = get(front, "/api/v1/orders/7", "", &[]).await;
    expect_status(&missing, 401, "no token");
    assert!(missing.header("www-authenticate").is_some(), "{missing:?}");
    let unknown = get(
        front,
        "/api/v1/orders/7",
        &crate::helpers::unknown_secret(),
        &[],
    )
    .await;
    expect_status(&unknown, 401, "an unknown token");

    let wrong = get(front, "/api/v1/admin/users", &secret, &[]).await;
    expect_status(&wrong, 403, "a permission the token lacks");

    let tricks = [
        "/api/v1/orders/../admin/users",
        "/api/v1/orders/%2e%2e/admin/users",
        "/api/v1/orders/..%2Fadmin/users",
        "/api/v1/orders%2F..%2Fadmin/users",
        "/api/v1/orders/%2E%2E%2Fadmin/users",
        "//api/v1/admin/users",
        "/api/v1//admin/users",
        "/api/v1/orders/./../admin/users",
    ];
    for trick in tricks {
        let answer = get(front, trick, &secret, &[]).await;
        assert!(
            answer.status >= 400,
            "{trick} must not be allowed: {answer:?}"
        );
    }
    // A client's own X-Forwarded-Uri / X-Original-URI names a path it may use; the gateway's
    // own, for the path it routes, is the one checked.
    let lying = [
        ("x-forwarded-uri", "/api/v1/orders/1"),
        ("x-forwarded-method", "GET"),
        ("x-original-uri", "/api/v1/orders/1"),
    ];
    let lied = get(front, "/api/v1/admin/users", &secret, &lying).await;
    expect_status(&lied, 403, "a client's forged original URI");
    assert!(
        !upstream.reached("admin"),
        "a path trick reached the upstream: {:?}",
        upstream.seen()
    );

    let (revoked, revoked_secret) = orders_token(app, "bob", 1000).await;
    // A token without the forwarded key: the client's copy is removed, not passed on.
    let forged_plan = [("x-tessera-meta-plan", "enterprise")];
    expect_status(
        &get(front, "/api/v1/orders/7", &revoked_secret, &forged_plan).await,
        200,
        "the token before its revocation",
    );
    let last = upstream.seen().last().cloned().expect("reached");
    let plan = last.headers.get("x-tessera-meta-plan");
    assert!(
        plan.is_none_or(|values| values.iter().all(String::is_empty)),
        "a client's metadata header reached the upstream: {last:?}"
    );
    app.admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest { id: revoked.id }))
        .await
        .expect("revoked");
    let after = get(front, "/api/v1/orders/7", &revoked_secret, &[]).await;
    expect_status(&after, 401, "a revoked token");

    let (_, limited) = orders_token(app, "carol", 1).await;
    expect_status(
        &get(front, "/api/v1/orders/7", &limited, &[]).await,
        200,
        "the first request of a one-per-minute token",
    );
    let over = get(front, "/api/v1/orders/7", &limited, &[]).await;
    expect_status(&over, 429, "over the limit");
    let retry_after: u32 = over
        .header("retry-after")
        .unwrap_or_else(|| panic!("retry-after: {over:?}"))
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");

    app.take_offline(TENANT, "back at noon").await;
    let offline = get(front, "/api/v1/orders/7", &secret, &[]).await;
    expect_status(&offline, 503, "an offline API");
}
