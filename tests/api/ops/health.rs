use std::net::SocketAddr;
use std::time::Duration;

use tessera::app::{App, LIVENESS_SERVICE};
use tessera::config::{Config, Settings};
use tessera::proto::CheckRequest;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tokio::sync::oneshot;

use crate::helpers::ops::{Gateway, ServingStatus, eventually, health_of};
use crate::helpers::requests::assert_reason;
use crate::helpers::{TestDatabase, spawn_app};

const AUTHORIZATION: &str = "tessera.v1.AuthorizationService";
const ADMIN: &str = "tessera.v1.TokenAdminService";

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service_once_started() {
    let app = spawn_app().await;
    for service in ["", AUTHORIZATION, ADMIN, LIVENESS_SERVICE] {
        let reported = eventually(Duration::from_secs(5), || async {
            health_of(&app.grpc_url, service).await == ServingStatus::Serving
        })
        .await;
        assert!(reported, "{service:?} is not reported serving");
    }
}

#[tokio::test]
async fn health_is_not_serving_while_the_database_is_unreachable_at_start_and_serving_once_it_answers()
 {
    let database = TestDatabase::postgres().await;
    let mut url = url::Url::parse(database.url()).expect("database url");
    let real: SocketAddr = format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    )
    .parse()
    .expect("postgres address");
    let gateway = Gateway::closed(real).await;
    url.set_port(Some(gateway.address.port())).expect("port");
    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: url.to_string().into(),
        database_acquire_timeout_ms: 300,
        admin_key_file: Some(dir.path().join("tessera-admin.key")),
        ..Settings::default()
    };

    let starting = App::start(Config::parse(settings).expect("valid settings"))
        .await
        .expect("starts without its database");
    let grpc_url = format!("http://{}", starting.local_addr());
    let connecting = tokio::spawn(starting.connect());

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health_of(&grpc_url, "").await, ServingStatus::NotServing);
    assert_eq!(
        health_of(&grpc_url, AUTHORIZATION).await,
        ServingStatus::NotServing
    );
    assert_eq!(
        health_of(&grpc_url, LIVENESS_SERVICE).await,
        ServingStatus::Serving,
        "a pod waiting for its database must not be restarted"
    );
    let early_check = AuthorizationServiceClient::connect(grpc_url.clone())
        .await
        .expect("connects")
        .check(CheckRequest::default())
        .await
        .expect_err("no service before the store");
    assert_eq!(early_check.code(), tonic::Code::Unavailable);
    assert_reason(&early_check, "SERVER_STARTING");
    assert!(!connecting.is_finished(), "still waiting for the database");

    gateway.open();
    let app = tokio::time::timeout(Duration::from_secs(20), connecting)
        .await
        .expect("connects once the database answers")
        .expect("task")
        .expect("app");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let serving = eventually(Duration::from_secs(5), || async {
        health_of(&grpc_url, "").await == ServingStatus::Serving
    })
    .await;
    assert!(serving, "serving once the database answered");
    let _ = stop.send(());
    server.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn health_turns_not_serving_as_shutdown_begins_while_calls_are_still_answered() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: database.url().to_owned().into(),
        admin_key_file: Some(dir.path().join("tessera-admin.key")),
        shutdown_delay_ms: 1_500,
        ..Settings::default()
    };
    let app = App::build(Config::parse(settings).expect("valid settings"))
        .await
        .expect("app");
    let grpc_url = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    assert!(
        eventually(Duration::from_secs(5), || async {
            health_of(&grpc_url, "").await == ServingStatus::Serving
        })
        .await
    );

    let _ = stop.send(());
    let draining = eventually(Duration::from_secs(1), || async {
        health_of(&grpc_url, "").await == ServingStatus::NotServing
    })
    .await;
    assert!(
        draining,
        "health reports not serving during the shutdown delay"
    );
    assert_eq!(
        health_of(&grpc_url, AUTHORIZATION).await,
        ServingStatus::NotServing
    );
    let answered = AuthorizationServiceClient::connect(grpc_url.clone())
        .await
        .expect("still accepting during the delay")
        .check(CheckRequest {
            token: "tsk_malformed".to_owned(),
            ..Default::default()
        })
        .await
        .expect("calls are still answered during the delay")
        .into_inner();
    assert!(!answered.allowed);

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops after the delay")
        .expect("task")
        .expect("clean stop");
}
