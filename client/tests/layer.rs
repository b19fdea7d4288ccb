//! The layer against a real Tessera (the server library on port 0 over a SQLite file): the
//! example axum service, and a tonic server wrapped by the same layer.

#[path = "../examples/orders_service.rs"]
mod orders_service;

use std::time::Duration;

use http_body_util::BodyExt as _;
use tessera::app::App;
use tessera::config::{Config, Settings};
use tessera::proto;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera_client::{Checker, TesseraLayer};
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;

/// A running Tessera and what a test needs of it.
struct Tessera {
    url: String,
    admin_key: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Tessera {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings {
            listen: "127.0.0.1:0".parse().expect("address"),
            metrics_listen: "127.0.0.1:0".parse().expect("address"),
            database_url: format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()).into(),
            admin_key_file: Some(dir.path().join("admin.key")),
            ..Settings::default()
        };
        let app = App::build(Config::parse(settings).expect("valid"))
            .await
            .expect("builds");
        let url = format!("http://{}", app.local_addr());
        let key_path = app.bootstrap_key_path().expect("bootstrap key").to_owned();
        let admin_key = std::fs::read_to_string(key_path)
            .expect("key")
            .trim()
            .to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            admin_key,
            _dir: dir,
            _stop: stop,
        }
    }

    fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone())
            .expect("url")
            .connect_lazy()
    }

    /// A token of `owner` in tenant `acme` with `permissions`; its secret.
    async fn token(&self, owner: &str, permissions: &[&str]) -> String {
        let mut admin = TokenAdminServiceClient::new(self.channel());
        let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
        admin
            .upsert_principal(self.admin(proto::UpsertPrincipalRequest {
                tenant: "acme".to_owned(),
                id: owner.to_owned(),
                permissions: permissions.clone(),
                ..Default::default()
            }))
            .await
            .expect("principal");
        admin
            .create_token(self.admin(proto::CreateTokenRequest {
                tenant: "acme".to_owned(),
                owner_id: owner.to_owned(),
                name: "layer test".to_owned(),
                permissions,
                ..Default::default()
            }))
            .await
            .expect("token")
            .into_inner()
            .secret
    }

    fn admin<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.admin_key).parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
        request
    }
}

async fn get(
    router: &axum::Router,
    path: &str,
    token: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut request = http::Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(axum::body::Body::empty()).expect("request"))
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_example_service_sees_the_callers_identity_and_denies_what_the_token_may_not_do() {
    let tessera = Tessera::start().await;
    let reader = tessera.token("alice", &["orders:read"]).await;
    let nobody = tessera.token("bob", &[]).await;
    let router = orders_service::app(Checker::new(tessera.channel()));

    let (status, _, body) = get(&router, "/orders", Some(&reader)).await;
    assert_eq!((status, body.as_str()), (200, "orders of alice\n"));

    let (status, _, body) = get(&router, "/orders", Some(&nobody)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission_denied"), "{body}");
    let (status, _, _) = get(&router, "/whoami", Some(&nobody)).await;
    assert_eq!(status, 200, "authentication only");

    let (status, headers, body) = get(&router, "/orders", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let (status, headers, _) = get(&router, "/orders", Some("tsk_not_a_real_token")).await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
}

#[tokio::test]
async fn an_unreachable_tessera_is_a_503_within_the_deadline_never_an_allow() {
    // Nothing listens here: every Check fails.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("address");
    let channel = Endpoint::from_shared(format!("http://{unused}"))
        .expect("url")
        .connect_lazy();
    let checker = Checker::new(channel).with_deadline(Duration::from_millis(200));
    let router = orders_service::app(checker);

    let started = std::time::Instant::now();
    let (status, _, body) = get(&router, "/orders", Some("tsk_anything")).await;

    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the deadline"
    );
}

#[tokio::test]
async fn a_tonic_server_behind_the_layer_answers_unauthenticated_without_a_token() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let tessera = Tessera::start().await;
    let secret = tessera.token("alice", &[]).await;
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = listener.local_addr().expect("address");
    let layer = TesseraLayer::new(Checker::new(tessera.channel())).tenant("acme");
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("url")
        .connect_lazy();
    let mut client = HealthClient::new(channel);

    let refused = client
        .check(HealthCheckRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("ascii"),
    );
    let answered = client.check(request).await.expect("allowed");
    assert_eq!(answered.into_inner().status, 1, "SERVING");
}
