//! `/forward-auth` called directly: exactly as Traefik's ForwardAuth calls it (no Traefik binary
//! can run here), and the listener's own limits and metrics.

use std::path::Path;

use serde_json::Value;

use super::{TENANT, http_addr, orders_token, tessera};
use crate::helpers::http::{get, send};
use crate::helpers::ops::{metric, scrape};
use crate::helpers::proxies::EXAMPLE_TESSERA;

/// The ForwardAuth middleware of `examples/traefik/dynamic.yml`: the auth URL's target and the
/// headers Traefik copies upstream.
fn traefik_example() -> (String, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/traefik/dynamic.yml");
    let text = std::fs::read_to_string(path).expect("example readable");
    let config: Value = serde_norway::from_str(&text).expect("yaml");
    let auth = &config["http"]["middlewares"]["tessera"]["forwardAuth"];
    let address = auth["address"].as_str().expect("address");
    let target = address
        .strip_prefix(&format!("http://{EXAMPLE_TESSERA}"))
        .expect("the example's Tessera address")
        .to_owned();
    assert_eq!(auth["trustForwardHeader"], false);
    let copied = auth["authResponseHeaders"]
        .as_array()
        .expect("authResponseHeaders")
        .iter()
        .map(|name| name.as_str().expect("name").to_ascii_lowercase())
        .collect();
    (target, copied)
}

/// What Traefik sends to the auth address for a client's `method uri` (its ForwardAuth docs:
/// the client's headers, plus X-Forwarded-Method, -Proto, -Host, -Uri and -For, always a GET).
fn traefik_headers<'a>(method: &'a str, uri: &'a str, bearer: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-uri", uri),
        ("x-forwarded-for", "203.0.113.9"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
    ];
    if !bearer.is_empty() {
        headers.push(("authorization", bearer));
    }
    headers
}

#[tokio::test]
async fn a_request_forwarded_as_traefik_documents_is_decided_by_its_original_method_and_uri() {
    let app = tessera().await;
    let address = http_addr(&app);
    let (target, copied) = traefik_example();
    let (token, secret) = orders_token(&app, "alice", 1000).await;
    let bearer = format!("Bearer {secret}");

    let allowed = send(
        address,
        "GET",
        &target,
        &traefik_headers("GET", "/api/v1/orders/7?x=1", &bearer),
    )
    .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    for name in &copied {
        assert!(
            allowed.header(name).is_some(),
            "{name} for Traefik to copy: {allowed:?}"
        );
    }
    assert_eq!(
        allowed.header("x-tessera-token-id"),
        Some(token.id.as_str())
    );
    assert_eq!(allowed.header("x-tessera-owner-id"), Some("alice"));
    assert_eq!(allowed.header("x-tessera-tenant"), Some(TENANT));
    assert_eq!(allowed.header("x-ratelimit-limit"), Some("1000"));
    // The forwarded metadata key, for Traefik's authResponseHeadersRegex; no other key.
    assert_eq!(allowed.header("x-tessera-meta-plan"), Some("pro"));
    assert_eq!(allowed.header("x-tessera-meta-internal"), None);

    // The original method decides, not the GET Traefik sends.
    let deleting = send(
        address,
        "GET",
        &target,
        &traefik_headers("DELETE", "/api/v1/orders/7", &bearer),
    )
    .await;
    assert_eq!(deleting.status, 403, "{deleting:?}");
    assert_eq!(deleting.header("content-type"), Some("application/json"));
    assert_eq!(deleting.json()["error"], "permission_denied");

    let missing = send(
        address,
        "GET",
        &target,
        &traefik_headers("GET", "/api/v1/orders/7", ""),
    )
    .await;
    assert_eq!(missing.status, 401, "{missing:?}");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert_eq!(missing.json()["error"], "token_missing");

    let tricked = send(
        address,
        "GET",
        &target,
        &traefik_headers("GET", "/api/v1/orders/%2e%2e/admin", &bearer),
    )
    .await;
    assert_eq!(tricked.status, 400, "{tricked:?}");
    assert_eq!(tricked.json()["error"], "path_invalid");

    let exposition = scrape(app.metrics_addr).await;
    let counted = |status| {
        metric(
            &exposition,
            "tessera_http_requests_total",
            &[("route", "forward_auth"), ("status", status)],
        )
    };
    assert!(
        counted("200") >= 1.0 && counted("403") >= 1.0,
        "{exposition}"
    );
}

#[tokio::test]
async fn a_rate_limited_forward_auth_answer_says_when_to_retry() {
    let app = tessera().await;
    let (_, secret) = orders_token(&app, "carol", 1).await;
    let target = "/forward-auth?tenant=acme";
    let headers = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/api/v1/orders/7"),
    ];

    assert_eq!(
        get(http_addr(&app), target, &secret, &headers).await.status,
        200
    );
    let over = get(http_addr(&app), target, &secret, &headers).await;

    assert_eq!(over.status, 429, "{over:?}");
    let retry_after: u32 = over
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(over.json()["error"], "rate_limited");
}

#[tokio::test]
async fn a_gateway_may_append_the_original_path_to_the_forward_auth_url() {
    let app = tessera().await;
    // No route values in this form (the query is the original target's): the default tenant.
    let (_, secret) = super::orders_token_in(&app, "", "alice", 1000).await;
    let address = http_addr(&app);

    let orders = get(
        address,
        "/forward-auth/api/v1/orders/7?tenant=acme",
        &secret,
        &[],
    )
    .await;
    let admin = get(address, "/forward-auth/api/v1/admin/users", &secret, &[]).await;

    assert_eq!(orders.status, 200, "{orders:?}");
    assert_eq!(admin.status, 403, "{admin:?}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_and_the_listener_keeps_serving() {
    let app = tessera().await;
    let (_, secret) = orders_token(&app, "alice", 1000).await;
    let address = http_addr(&app);
    let huge = "x".repeat(64 * 1024);
    let headers = [
        ("x-forwarded-uri", "/api/v1/orders/7"),
        ("x-padding", huge.as_str()),
    ];

    let refused = get(address, "/forward-auth?tenant=acme", &secret, &headers).await;

    assert_eq!(refused.status, 431, "{refused:?}");
    let next = get(address, "/forward-auth?tenant=acme", &secret, &headers[..1]).await;
    assert_eq!(next.status, 200, "{next:?}");
    let elsewhere = get(address, "/no-such-path/", &secret, &[]).await;
    assert_eq!(elsewhere.status, 404);
}

#[tokio::test]
async fn a_forward_auth_request_in_flight_at_shutdown_is_answered_and_new_connections_are_refused()
{
    use crate::helpers::pausing_store::Read;

    let (mut app, store) =
        crate::helpers::spawn_app_pausing(crate::helpers::Backend::Sqlite, |settings| {
            settings.http_listen = Some("127.0.0.1:0".parse().expect("address"));
            settings.envoy_unmatched = tessera::config::EnvoyUnmatched::Authenticate;
            settings.drain_timeout_ms = 10_000;
        })
        .await;
    let address = http_addr(&app);
    let (_, secret) = orders_token(&app, "alice", 1000).await;
    let mut held = store.hold_next(Read::Credential);
    let in_flight = tokio::spawn(async move {
        get(
            address,
            "/forward-auth?tenant=acme",
            &secret,
            &[("x-forwarded-uri", "/x")],
        )
        .await
    });
    held.answered().await;

    let stopping = tokio::spawn(async move {
        app.stop().await;
    });
    let refused = crate::helpers::ops::eventually(std::time::Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(address).await.is_err()
    })
    .await;
    assert!(refused, "the listener still accepts after shutdown began");
    held.release();

    let answer = in_flight.await.expect("request task");
    assert_eq!(answer.status, 200, "{answer:?}");
    stopping.await.expect("stopped");
}
