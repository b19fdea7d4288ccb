use tessera::proto::CheckRequest;

use crate::helpers::ops::{metric, scrape};
use crate::helpers::requests::assert_reason;
use crate::helpers::{new_token, spawn_app};

const CHECK: &[(&str, &str)] = &[
    ("service", "tessera.v1.AuthorizationService"),
    ("method", "Check"),
];

#[tokio::test]
async fn metrics_count_check_decisions_by_reason_and_time_each_check() {
    let app = spawn_app().await;
    let before = scrape(app.metrics_addr).await;

    for _ in 0..3 {
        app.check(CheckRequest {
            token: "tsk_malformed".to_owned(),
            ..Default::default()
        })
        .await;
    }

    let after = scrape(app.metrics_addr).await;
    let malformed = [("reason", "token_malformed")];
    assert!(
        metric(&after, "tessera_checks_total", &malformed)
            >= metric(&before, "tessera_checks_total", &malformed) + 3.0,
        "{after}"
    );
    let latency_count = "tessera_grpc_request_duration_seconds_count";
    assert!(
        metric(&after, latency_count, CHECK) >= metric(&before, latency_count, CHECK) + 3.0,
        "{after}"
    );
    assert!(
        after.contains("tessera_grpc_request_duration_seconds_bucket{"),
        "latency is a histogram: {after}"
    );
    let answered_ok = [CHECK[0], CHECK[1], ("code", "OK")];
    assert!(
        metric(&after, "tessera_grpc_requests_total", &answered_ok)
            >= metric(&before, "tessera_grpc_requests_total", &answered_ok) + 3.0,
        "{after}"
    );
}

#[tokio::test]
async fn metrics_count_admin_calls_cache_misses_and_report_the_cache_size() {
    let app = spawn_app().await;
    app.principal("acme", "alice", &["orders:read"]).await;
    let before = scrape(app.metrics_addr).await;

    let (_, secret) = app
        .token(new_token("acme", "alice", &["orders:read"]))
        .await;
    for _ in 0..2 {
        let decision = app
            .check(CheckRequest {
                token: secret.clone(),
                tenant: "acme".to_owned(),
                permission: "orders:read".to_owned(),
                ..Default::default()
            })
            .await;
        assert!(decision.allowed);
    }

    let after = scrape(app.metrics_addr).await;
    let created = [
        ("service", "tessera.v1.TokenAdminService"),
        ("method", "CreateToken"),
        ("code", "OK"),
    ];
    assert!(
        metric(&after, "tessera_grpc_requests_total", &created)
            >= metric(&before, "tessera_grpc_requests_total", &created) + 1.0,
        "{after}"
    );
    let misses = "tessera_store_credential_lookups_total";
    assert!(metric(&after, misses, &[]) >= metric(&before, misses, &[]) + 1.0);
    assert!(
        after
            .lines()
            .any(|line| line.starts_with("tessera_cache_entries ")),
        "the cache size is sampled at the scrape: {after}"
    );
    assert!(after.contains("# HELP tessera_checks_total"), "{after}");
}

#[tokio::test]
async fn metrics_count_cache_requests_so_hits_are_requests_minus_store_lookups() {
    let app = spawn_app().await;
    app.principal("acme", "alice", &["orders:read"]).await;
    let (_, secret) = app
        .token(new_token("acme", "alice", &["orders:read"]))
        .await;
    let before = scrape(app.metrics_addr).await;
    for _ in 0..3 {
        app.check(CheckRequest {
            token: secret.clone(),
            tenant: "acme".to_owned(),
            ..Default::default()
        })
        .await;
    }
    let after = scrape(app.metrics_addr).await;
    let requests = "tessera_cache_requests_total";
    assert!(metric(&after, requests, &[]) >= metric(&before, requests, &[]) + 3.0);
}

#[tokio::test]
async fn metrics_count_invalidations_received_from_another_replica() {
    let writer = crate::helpers::spawn_app_on(crate::helpers::Backend::Postgres).await;
    let reader = writer.spawn_replica().await;
    let counter = "tessera_invalidations_received_total";
    let before = metric(&scrape(reader.metrics_addr).await, counter, &[]);
    let received = crate::helpers::ops::eventually(std::time::Duration::from_secs(10), || async {
        // Each write notifies the other replicas once its feed listens.
        writer.principal("acme", "alice", &["orders:read"]).await;
        metric(&scrape(reader.metrics_addr).await, counter, &[]) > before
    })
    .await;
    assert!(received, "the replica counted an invalidation");
}

/// Calls `path` with an empty CheckRequest body, whatever method it names.
async fn call_path(grpc_url: &str, path: &'static str) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(grpc_url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<CheckRequest, tessera::proto::CheckResponse>::default();
    client
        .unary(
            tonic::Request::new(CheckRequest::default()),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
        .expect_err("no such method answers")
}

#[tokio::test]
async fn an_invented_method_refused_before_routing_is_labelled_unknown() {
    let dir = tempfile::tempdir().expect("dir");
    let database = crate::helpers::TestDatabase::sqlite();
    // Started, never connected: the gate refuses Tessera's services before any routing.
    let starting = tessera::app::App::start(
        tessera::config::Config::parse(crate::helpers::ops::settings_on(&database, dir.path()))
            .expect("valid settings"),
    )
    .await
    .expect("starts");
    let grpc_url = format!("http://{}", starting.local_addr());

    let refused = call_path(
        &grpc_url,
        "/tessera.v1.TokenAdminService/InventedByACaller7f3a",
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_reason(&refused, "SERVER_STARTING");

    let exposition = scrape(starting.metrics_addr()).await;
    assert!(
        !exposition.contains("InventedByACaller7f3a"),
        "an invented method became a label: {exposition}"
    );
    let unknown = [
        ("service", "tessera.v1.TokenAdminService"),
        ("method", "unknown"),
        ("code", "UNAVAILABLE"),
    ];
    assert!(
        metric(&exposition, "tessera_grpc_requests_total", &unknown) >= 1.0,
        "{exposition}"
    );
}

#[tokio::test]
async fn an_invented_method_answered_unimplemented_is_labelled_unknown() {
    let app = spawn_app().await;
    let refused = call_path(
        &app.grpc_url,
        "/tessera.v1.AuthorizationService/Invented9c1e",
    )
    .await;
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert_reason(&refused, "UNKNOWN_METHOD");
    // The same answer for a service nobody serves, and past the always-on services too.
    for path in [
        "/made.up.Service/Invented9c1e",
        "/grpc.health.v1.Health/Invented9c1e",
    ] {
        let refused = call_path(&app.grpc_url, path).await;
        assert_eq!(refused.code(), tonic::Code::Unimplemented, "{path}");
        assert_reason(&refused, "UNKNOWN_METHOD");
    }
    let exposition = scrape(app.metrics_addr).await;
    assert!(!exposition.contains("Invented9c1e"), "{exposition}");
}
