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

/// A portal session of `principal` in `tenant` ("" for the default), back to
/// `https://app.example.com/settings`: its one-time URL, not entered yet.
pub async fn open_portal(
    app: &TestApp,
    tenant: &str,
    principal: &str,
) -> tessera::proto::CreatePortalSessionResponse {
    app.admin_client()
        .await
        .create_portal_session(app.admin(tessera::proto::CreatePortalSessionRequest {
            tenant: tenant.to_owned(),
            principal_id: principal.to_owned(),
            return_url: "https://app.example.com/settings".to_owned(),
            ..Default::default()
        }))
        .await
        .expect("portal session")
        .into_inner()
}

/// The HTTP listener's address.
pub fn http(app: &TestApp) -> SocketAddr {
    app.http_addr.expect("the http listener is on")
}
