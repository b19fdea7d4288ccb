//! The console (`/console/`) and the portal (`/portal/`) over real HTTP on the real server
//! (issue 18): sessions and their security here and in `sessions`, the operator's pages in
//! `operator`, the portal's in `portal`, and a real browser in `browser`.

mod browser;
mod operator;
mod portal;
mod sessions;

use std::net::SocketAddr;

use tessera::config::Settings;

use crate::helpers::{Backend, TestApp, spawn_app_with};

/// The server with its HTTP listener on port 0 (and the master key, so webhooks and signing
/// work), on `backend`.
pub async fn spawn_console(backend: Backend) -> TestApp {
    spawn_console_with(backend, |_| {}).await
}

pub async fn spawn_console_with(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_with(backend, |settings| {
        settings.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        settings.master_key = Some(secrecy::SecretString::from(
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
        ));
        settings.webhook_allow_private_urls = true;
        customize(settings);
    })
    .await
}

/// The HTTP listener's address.
pub fn http(app: &TestApp) -> SocketAddr {
    app.http_addr.expect("the http listener is on")
}
