//! The reliability proof: database faults through a proxy the test controls, process faults on
//! the real binary, and concurrent writers, each counted rather than assumed.

mod concurrency;
mod database;
mod process;

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use tessera::config::Settings;
use tessera::proto;
use tessera::proto::DenyReason;

use crate::helpers::database::postgres_server_url;
use crate::helpers::fault_proxy::{FaultProxy, server_address};
use crate::helpers::requests::check_request;
use crate::helpers::{Backend, TestApp, spawn_app_with};

const TENANT: &str = "acme";

/// Longer than any answer that is not hung, shorter than a test runner's patience: the bound
/// that tells "slow" from "stuck" (speed itself is measured in the benchmarks).
const NOT_HUNG: Duration = Duration::from_secs(10);

/// A Check in this file's tenant.
fn request(secret: &str, permission: &str) -> proto::CheckRequest {
    check_request(TENANT, secret, permission)
}

/// A proxy in front of the test Postgres server.
async fn postgres_proxy() -> FaultProxy {
    FaultProxy::start(server_address(&postgres_server_url())).await
}

/// Points `settings` at the database through `proxy`.
fn through(proxy: &FaultProxy) -> impl FnOnce(&mut Settings) + '_ {
    |settings| {
        settings.database_url = proxy.url_for(settings.database_url.expose_secret()).into();
    }
}

/// A Postgres-backed server that reaches its database only through `proxy`, with alice allowed
/// `orders:*` in `TENANT`.
async fn app_behind(proxy: &FaultProxy, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(Backend::Postgres, |settings| {
        customize(settings);
        through(proxy)(settings);
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

/// A token of alice's allowed `orders:read`, with its secret.
async fn alices_token(app: &TestApp) -> (proto::Token, String) {
    app.token(crate::helpers::new_token(TENANT, "alice", &["orders:read"]))
        .await
}

/// Checks, failing the test if the answer takes longer than `NOT_HUNG`; returns the answer and
/// how long it took.
async fn bounded_check(
    app: &TestApp,
    request: proto::CheckRequest,
) -> (proto::CheckResponse, Duration) {
    let started = Instant::now();
    let response = tokio::time::timeout(NOT_HUNG, app.check(request))
        .await
        .expect("Check answered rather than hung");
    (response, started.elapsed())
}

/// Polls until `check` gives `reason` (failing after `NOT_HUNG`); every answer before it must be
/// one of `meanwhile`, so a wrong answer on the way fails the test rather than being waited out.
async fn wait_for_reason(
    app: &TestApp,
    check: proto::CheckRequest,
    reason: DenyReason,
    meanwhile: &[DenyReason],
) {
    let started = Instant::now();
    loop {
        let answer = app.check(check.clone()).await.reason();
        if answer == reason {
            return;
        }
        assert!(
            meanwhile.contains(&answer),
            "{answer:?} while waiting for {reason:?} (only {meanwhile:?} may come first)"
        );
        assert!(
            started.elapsed() < NOT_HUNG,
            "still {answer:?} instead of {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
