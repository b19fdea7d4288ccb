use std::time::Duration;

use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera::proto::{CheckRequest, UpsertPrincipalRequest};
use tonic::Code;

use crate::helpers::ops::{Served, TableLock, settings_on};
use crate::helpers::requests::assert_reason;
use crate::helpers::{Backend, TestDatabase, spawn_app_with, with_key};

fn upsert(id: &str) -> UpsertPrincipalRequest {
    UpsertPrincipalRequest {
        tenant: "acme".to_owned(),
        id: id.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_call_beyond_the_concurrency_limit_is_refused_with_resource_exhausted() {
    let database = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = settings_on(&database, dir.path());
    settings.max_concurrent_requests = 1;
    let served = Served::start(settings).await;
    let mut admin = TokenAdminServiceClient::connect(served.grpc_url.clone())
        .await
        .expect("connects");

    let lock = TableLock::hold(database.url(), "audit_events").await;
    let mut blocked = admin.clone();
    let request = with_key(upsert("alice"), &served.admin_key);
    let first = tokio::spawn(async move { blocked.upsert_principal(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = admin
        .upsert_principal(with_key(upsert("bob"), &served.admin_key))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_reason(&refused, "CONCURRENCY_LIMIT");

    lock.release().await;
    first
        .await
        .expect("task")
        .expect("the first call completes");
    admin
        .upsert_principal(with_key(upsert("bob"), &served.admin_key))
        .await
        .expect("a slot is free again");
}

#[tokio::test]
async fn a_call_running_past_the_request_timeout_is_answered_deadline_exceeded() {
    let database = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = settings_on(&database, dir.path());
    settings.request_timeout_ms = 300;
    let served = Served::start(settings).await;
    let mut admin = TokenAdminServiceClient::connect(served.grpc_url.clone())
        .await
        .expect("connects");

    let lock = TableLock::hold(database.url(), "audit_events").await;
    let started = std::time::Instant::now();
    let timed_out = admin
        .upsert_principal(with_key(upsert("alice"), &served.admin_key))
        .await
        .expect_err("times out");
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    assert_reason(&timed_out, "REQUEST_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(3));
    lock.release().await;
}

#[tokio::test]
async fn a_request_larger_than_the_limit_is_refused_as_out_of_range() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.max_request_bytes = 1024;
    })
    .await;
    let mut client = AuthorizationServiceClient::connect(app.grpc_url.clone())
        .await
        .expect("connects");
    let small = client
        .check(CheckRequest {
            token: "tsk_short".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(small.is_ok(), "{small:?}");
    let large = client
        .check(CheckRequest {
            token: "x".repeat(4096),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    // tonic's code for a message over the decoding limit.
    assert_eq!(large.code(), Code::OutOfRange, "{large:?}");
}
