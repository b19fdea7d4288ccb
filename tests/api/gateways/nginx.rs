//! nginx (`auth_request`, `examples/nginx/tessera.conf`) in front of an upstream, with Tessera.

use super::{http_addr, tessera, the_gateway_decides_as_tessera_does};
use crate::helpers::http::{Upstream, get};
use crate::helpers::proxies::Proxy;

#[tokio::test]
async fn nginx_with_the_example_config_lets_through_only_what_each_token_may_do() {
    let app = tessera().await;
    let upstream = Upstream::start().await;
    let nginx = Proxy::nginx(http_addr(&app), upstream.address).await;
    the_gateway_decides_as_tessera_does(&app, nginx.address, &upstream).await;
    drop(nginx);
}

#[tokio::test]
async fn nginx_answers_503_when_tessera_cannot_be_reached_and_never_lets_the_request_through() {
    let app = tessera().await;
    let upstream = Upstream::start().await;
    let (_, secret) = super::orders_token(&app, "alice", 1000).await;
    // An address where nothing listens stands for Tessera down.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("address");
    let nginx = Proxy::nginx(nowhere, upstream.address).await;

    let answer = get(nginx.address, "/api/v1/orders/7", &secret, &[]).await;

    assert_eq!(answer.status, 503, "{answer:?}\n{}", nginx.log());
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn nginx_passes_the_rate_limit_headers_of_an_allowed_request_to_the_client() {
    let app = tessera().await;
    let upstream = Upstream::start().await;
    let (_, secret) = super::orders_token(&app, "alice", 1000).await;
    let nginx = Proxy::nginx(http_addr(&app), upstream.address).await;

    let answer = get(nginx.address, "/api/v1/orders/7", &secret, &[]).await;

    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-ratelimit-limit"), Some("1000"));
    assert!(
        answer.header("x-ratelimit-remaining").is_some(),
        "{answer:?}"
    );
}
