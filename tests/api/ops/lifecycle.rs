use std::time::Duration;

use tessera::proto::UpsertPrincipalRequest;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;

use crate::helpers::ops::{Served, ServingStatus, TableLock, eventually, health_of, settings_on};
use crate::helpers::process::{ServeProcess, serve_output};
use crate::helpers::requests::assert_reason;
use crate::helpers::{TestDatabase, with_key};

fn upsert(id: &str) -> UpsertPrincipalRequest {
    UpsertPrincipalRequest {
        tenant: "acme".to_owned(),
        id: id.to_owned(),
        permissions: vec!["orders:read".to_owned()],
        ..Default::default()
    }
}

#[tokio::test]
async fn an_in_flight_call_finishes_during_the_drain_before_the_server_stops() {
    let database = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut served = Served::start(settings_on(&database, dir.path())).await;
    let mut admin = TokenAdminServiceClient::connect(served.grpc_url.clone())
        .await
        .expect("connects");

    // Every admin mutation writes an audit event: with the table locked, the call waits.
    let lock = TableLock::hold(database.url(), "audit_events").await;
    let request = with_key(upsert("alice"), &served.admin_key);
    let call = tokio::spawn(async move { admin.upsert_principal(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!call.is_finished(), "the call is in flight");

    served.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !served.server.is_finished(),
        "the server waits for the call in flight"
    );
    lock.release().await;

    let answered = call.await.expect("task");
    assert!(
        answered.is_ok(),
        "the in-flight call succeeded: {answered:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), served.server)
        .await
        .expect("stops once drained")
        .expect("task")
        .expect("clean stop");
}

#[tokio::test]
async fn calls_still_running_at_the_drain_deadline_are_cut_off_and_the_server_stops() {
    let database = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = settings_on(&database, dir.path());
    settings.drain_timeout_ms = 300;
    let mut served = Served::start(settings).await;
    let mut admin = TokenAdminServiceClient::connect(served.grpc_url.clone())
        .await
        .expect("connects");

    let lock = TableLock::hold(database.url(), "audit_events").await;
    let request = with_key(upsert("bob"), &served.admin_key);
    let call = tokio::spawn(async move { admin.upsert_principal(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    served.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(3), &mut served.server)
        .await
        .expect("stops at the drain deadline, not when the call would end")
        .expect("task")
        .expect("stop");
    let cut_off = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("the client hears of it")
        .expect("task");
    let cut_off = cut_off.expect_err("the call was cut off");
    assert_eq!(cut_off.code(), tonic::Code::Unavailable, "{cut_off:?}");
    assert_reason(&cut_off, "SERVER_SHUTTING_DOWN");
    lock.release().await;
}

#[tokio::test]
async fn the_binary_drains_and_exits_0_on_sigterm() {
    let server = ServeProcess::start(&[]).await;
    let url = server.grpc_url.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            health_of(&url, "").await == ServingStatus::Serving
        })
        .await
    );
    let (status, log) = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");
    let said = |message: &str| log.iter().any(|line| line.contains(message));
    assert!(
        said("shutting down: health reports not serving"),
        "{log:#?}"
    );
    assert!(said("server stopped"), "{log:#?}");
}

#[tokio::test]
async fn the_binary_exits_0_on_sigterm_while_still_waiting_for_its_database() {
    let server = ServeProcess::start(&[(
        "TESSERA_DATABASE_URL",
        "postgres://tessera:hunter2-secret@127.0.0.1:1/tessera",
    )])
    .await;
    assert_eq!(
        health_of(&server.grpc_url, "").await,
        ServingStatus::NotServing
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, log) = server.terminate().await;
    assert_eq!(status.code(), Some(0), "{log:#?}");
    assert!(
        log.iter().any(|line| line.contains("database unreachable")),
        "the wait is logged: {log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains("hunter2-secret")),
        "the database password never reaches the log: {log:#?}"
    );
}

#[tokio::test]
async fn an_invalid_setting_stops_the_binary_with_a_message_naming_it() {
    for (variable, value) in [
        ("TESSERA_MAX_CONCURRENT_REQUESTS", "0"),
        ("TESSERA_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("TESSERA_OTLP_ENDPOINT", "collector:4317"),
        ("TESSERA_LOG", "tessera=loudest"),
    ] {
        let (code, stderr) = serve_output(&[(variable, value)]).await;
        assert_eq!(code, Some(1), "{variable}: {stderr}");
        let named = if variable == "TESSERA_TLS_CERT_FILE" {
            "TESSERA_TLS_KEY_FILE"
        } else {
            variable
        };
        assert!(stderr.contains(named), "{variable}: {stderr}");
    }
}

#[tokio::test]
async fn an_unreadable_certificate_stops_the_start_naming_the_setting_and_file() {
    let (code, stderr) = serve_output(&[
        ("TESSERA_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("TESSERA_TLS_KEY_FILE", "/nonexistent/key.pem"),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TESSERA_TLS_CERT_FILE"), "{stderr}");
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}

#[tokio::test]
async fn an_unreadable_geoip_database_stops_the_binary_before_it_listens() {
    let dir = tempfile::tempdir().expect("dir");
    let database = dir.path().join("not-a-database.mmdb");
    std::fs::write(&database, b"hello").expect("file");
    let path = database.display().to_string();
    let (code, stderr) = serve_output(&[
        ("TESSERA_GEOIP_DATABASE", path.as_str()),
        ("TESSERA_LOG", "info"),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TESSERA_GEOIP_DATABASE"), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
    assert!(
        !stderr.contains("serving grpc"),
        "no port is bound before the settings are whole: {stderr}"
    );
}

#[tokio::test]
async fn a_failed_start_prints_its_cause_once_and_no_colour_codes_into_a_pipe() {
    // Fails after logging started: the error is one log line.
    let (code, stderr) =
        serve_output(&[("TESSERA_PORT_FILE", "/nonexistent-directory/ports.json")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("cannot write the port file").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escapes in a pipe: {stderr:?}"
    );

    // Fails before logging started: one plain line, its cause once.
    let (code, stderr) = serve_output(&[("TESSERA_LISTEN", "not-an-address")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot read settings"),
        "{stderr}"
    );
    let cause = stderr
        .trim_end()
        .rsplit(": ")
        .next()
        .expect("a cause")
        .to_owned();
    assert_eq!(stderr.matches(&cause).count(), 1, "{stderr}");
}
