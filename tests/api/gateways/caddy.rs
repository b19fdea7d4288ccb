//! Caddy (`forward_auth`, `examples/caddy/Caddyfile`) in front of an upstream, with Tessera.

use super::{http_addr, tessera, the_gateway_decides_as_tessera_does};
use crate::helpers::http::Upstream;
use crate::helpers::proxies::Proxy;

#[tokio::test]
async fn caddy_with_the_example_config_lets_through_only_what_each_token_may_do() {
    let app = tessera().await;
    let upstream = Upstream::start().await;
    let caddy = Proxy::caddy(http_addr(&app), upstream.address).await;
    the_gateway_decides_as_tessera_does(&app, caddy.address, &upstream).await;
    drop(caddy);
}
