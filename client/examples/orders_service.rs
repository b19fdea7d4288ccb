//! An axum service behind Tessera: `GET /orders` needs `orders:read`, `GET /whoami` any valid
//! token of tenant `acme`; the handler reads who called from the request's [`Identity`].
//!
//! `TESSERA_URL=http://127.0.0.1:50051 LISTEN=127.0.0.1:3000 cargo run -p tessera-client
//! --example orders_service`, then `curl -H "Authorization: Bearer tsk_…" localhost:3000/orders`.
//! `client/tests/layer.rs` runs this router against a real Tessera.

use axum::routing::get;
use axum::{Extension, Router};
use tessera_client::{Checker, Identity, TesseraLayer};

/// The service's routes, each behind the layer with the permission it needs.
pub fn app(checker: Checker) -> Router {
    let layer = TesseraLayer::new(checker).tenant("acme");
    Router::new()
        .route(
            "/orders",
            get(|Extension(identity): Extension<Identity>| async move {
                format!("orders of {}\n", identity.owner_id)
            })
            .route_layer(
                layer
                    .clone()
                    .permission("orders:read")
                    .endpoint("orders.list"),
            ),
        )
        .route(
            "/whoami",
            get(|Extension(identity): Extension<Identity>| async move {
                format!("{} ({})\n", identity.owner_id, identity.token_id)
            })
            .route_layer(layer.endpoint("whoami")),
        )
}

#[cfg_attr(test, expect(dead_code, reason = "the tests serve `app` themselves"))]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tessera = std::env::var("TESSERA_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // One lazily connected channel shared by every request.
    let channel = tonic::transport::Endpoint::from_shared(tessera)?.connect_lazy();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app(Checker::new(channel))).await?;
    Ok(())
}
