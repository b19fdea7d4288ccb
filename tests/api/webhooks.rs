//! Webhooks (issue 17): a real receiver on port 0 (loopback, so these servers run with
//! TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS=true unless a test is about refusing it), whose answers the
//! test controls, verifying each delivery's Standard Webhooks signature with its own HMAC.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use secrecy::SecretString;
use sha2::Sha256;
use tessera::config::Settings;
use tessera::proto;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt;

use crate::backend_tests;

use crate::helpers::requests::check_request;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with, strings};

const TENANT: &str = "acme";
const MASTER_KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
/// Long enough for any delivery on a loaded machine; the tests poll, they never time.
const DEADLINE: Duration = Duration::from_secs(60);

fn webhook_settings(settings: &mut Settings) {
    settings.master_key = Some(SecretString::from(MASTER_KEY));
    settings.webhook_allow_private_urls = true;
    settings.webhook_retry_delays = "100ms, 100ms, 100ms".to_owned();
}

/// A server with the webhook settings and the owner `alice`, whose principal.updated event is
/// written before any webhook exists, so a test's webhooks see only what the test does after.
async fn spawn(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, webhook_settings).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

/// How the receiver answers.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// 500 for the first `n` requests, then 200.
    FailFirst(usize),
    /// 302 to `/landed` on the same receiver.
    Redirect,
    /// Never answers.
    Hang,
    /// Never answers the first `n` requests, then 200.
    HangFirst(usize),
}

/// One request that reached the receiver.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    answered: u16,
}

struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn({
            let received = received.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let received = received.clone();
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let received = received.clone();
                            let answer = answer.clone();
                            async move {
                                Ok::<_, Infallible>(respond(&received, &answer, request).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            address,
            received,
            _server: server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for what was received, or panics at the deadline.
    async fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let started = std::time::Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: the receiver got {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn respond(
    received: &Mutex<Vec<Received>>,
    answer: &Answer,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes().to_vec())
        .unwrap_or_default();
    let earlier = received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    let status = match answer {
        Answer::Status(status) => *status,
        Answer::FailFirst(failures) if earlier < *failures => 500,
        Answer::FailFirst(_) => 200,
        Answer::Redirect => 302,
        Answer::Hang => 0,
        Answer::HangFirst(hangs) if earlier < *hangs => 0,
        Answer::HangFirst(_) => 200,
    };
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            path,
            headers,
            body,
            answered: status,
        });
    if status == 0 {
        std::future::pending::<()>().await;
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    if status == 302 {
        response.headers_mut().insert(
            "location",
            hyper::header::HeaderValue::from_static("/landed"),
        );
    }
    response
}

/// Standard Webhooks verification, written here independently of Tessera's code: HMAC-SHA256
/// keyed with the base64-decoded secret after `whsec_`, over "id.timestamp.body".
fn verify(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let id = &received.headers["webhook-id"];
    let timestamp = &received.headers["webhook-timestamp"];
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    received.headers["webhook-signature"]
        .split(' ')
        .any(|signature| signature == expected)
}

async fn create_webhook(
    app: &TestApp,
    url: &str,
    event_types: &[&str],
) -> Result<proto::CreateWebhookResponse, tonic::Status> {
    app.admin_client()
        .await
        .create_webhook(app.admin(proto::CreateWebhookRequest {
            tenant: TENANT.to_owned(),
            url: url.to_owned(),
            event_types: strings(event_types),
            description: "test receiver".to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

async fn webhook(app: &TestApp, url: &str, event_types: &[&str]) -> (proto::Webhook, String) {
    let created = create_webhook(app, url, event_types)
        .await
        .expect("webhook created");
    (created.webhook.expect("webhook"), created.secret)
}

async fn deliveries(app: &TestApp, webhook_id: &str) -> Vec<proto::WebhookDelivery> {
    app.admin_client()
        .await
        .list_webhook_deliveries(app.admin(proto::ListWebhookDeliveriesRequest {
            webhook_id: webhook_id.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("deliveries listed")
        .into_inner()
        .deliveries
}

/// Waits until the webhook's deliveries satisfy `done`.
async fn deliveries_until(
    app: &TestApp,
    webhook_id: &str,
    what: &str,
    done: impl Fn(&[proto::WebhookDelivery]) -> bool,
) -> Vec<proto::WebhookDelivery> {
    let started = std::time::Instant::now();
    loop {
        let listed = deliveries(app, webhook_id).await;
        if done(&listed) {
            return listed;
        }
        assert!(started.elapsed() < DEADLINE, "{what}: {listed:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(delivery: &proto::WebhookDelivery) -> proto::WebhookDeliveryState {
    proto::WebhookDeliveryState::try_from(delivery.state).expect("state")
}

async fn created_token(app: &TestApp) -> (proto::Token, String) {
    app.token(new_token(TENANT, "alice", &["orders:read"]))
        .await
}

fn event_id(received: &Received) -> String {
    received.headers["webhook-id"].clone()
}

backend_tests!(
    a_created_token_reaches_the_receiver_with_a_valid_standard_webhooks_signature,
    a_receiver_failing_twice_gets_the_event_on_the_third_attempt,
    a_receiver_always_failing_ends_failed_and_the_webhook_failing_with_an_event,
    a_webhook_receives_only_the_event_types_it_names,
    webhooks_are_created_listed_updated_and_deleted_within_their_rules,
);

async fn a_created_token_reaches_the_receiver_with_a_valid_standard_webhooks_signature(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let receiver = Receiver::start(Answer::Status(204)).await;
    let (hook, secret) = webhook(&app, &receiver.url("/hooks"), &[]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(secret.ends_with(&hook.secret_hint));

    let (token, token_secret) = created_token(&app).await;
    let received = receiver.until("one delivery", |got| !got.is_empty()).await;
    let delivery = &received[0];
    assert_eq!(delivery.path, "/hooks");
    assert!(verify(&secret, delivery), "signature: {delivery:#?}");
    assert!(!verify(
        &format!("whsec_{}", STANDARD.encode([9u8; 32])),
        delivery
    ));
    assert!(delivery.headers["webhook-id"].starts_with("evt_"));
    let timestamp: i64 = delivery.headers["webhook-timestamp"]
        .parse()
        .expect("unix seconds");
    assert!((timestamp - chrono::Utc::now().timestamp()).abs() < 600);
    assert_eq!(delivery.headers["content-type"], "application/json");

    let body: serde_json::Value = serde_json::from_slice(&delivery.body).expect("json");
    assert_eq!(body["type"], "token.created");
    assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(body["data"]["token"]["id"], token.id.as_str());
    let text = String::from_utf8_lossy(&delivery.body);
    assert!(!text.contains(&token_secret) && !text.contains(&secret));

    let listed = deliveries_until(&app, &hook.id, "delivered", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Delivered)
    })
    .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, event_id(delivery));
    assert_eq!(listed[0].event_type, "token.created");
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].last_status_code, 204);
    assert!(listed[0].delivered_at.is_some());
}

async fn a_receiver_failing_twice_gets_the_event_on_the_third_attempt(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start(Answer::FailFirst(2)).await;
    let (hook, secret) = webhook(&app, &receiver.url("/"), &["token.created"]).await;
    created_token(&app).await;

    let listed = deliveries_until(&app, &hook.id, "delivered on the third attempt", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Delivered)
    })
    .await;
    assert_eq!(listed[0].attempts, 3);
    assert_eq!(listed[0].last_status_code, 200);
    assert_eq!(listed[0].last_error, "");
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    // The same event each time (the receiver deduplicates by webhook-id), signed each time.
    assert!(received.iter().all(|r| event_id(r) == listed[0].event_id));
    assert!(received.iter().all(|r| verify(&secret, r)));
}

/// An attempt that gets no answer within TESSERA_WEBHOOK_TIMEOUT_MS is a failure like a 500,
/// and the next attempt delivers.
#[tokio::test]
async fn a_receiver_that_times_out_gets_the_event_on_the_next_attempt() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        webhook_settings(settings);
        settings.webhook_timeout_ms = 300;
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let receiver = Receiver::start(Answer::HangFirst(1)).await;
    let (hook, secret) = webhook(&app, &receiver.url("/"), &["token.created"]).await;
    created_token(&app).await;

    let listed = deliveries_until(&app, &hook.id, "delivered after a timeout", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Delivered)
    })
    .await;
    assert_eq!(listed[0].attempts, 2);
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [0, 200]
    );
    assert!(received.iter().all(|r| verify(&secret, r)));
}

async fn a_receiver_always_failing_ends_failed_and_the_webhook_failing_with_an_event(
    backend: Backend,
) {
    let app = spawn(backend).await;
    let failing = Receiver::start(Answer::Status(503)).await;
    let watcher = Receiver::start(Answer::Status(200)).await;
    let (hook, _) = webhook(&app, &failing.url("/"), &["token.created"]).await;
    let (_, watcher_secret) = webhook(&app, &watcher.url("/"), &["webhook.failing"]).await;
    created_token(&app).await;

    let listed = deliveries_until(&app, &hook.id, "failed after every retry", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Failed)
    })
    .await;
    // The first attempt and three retries.
    assert_eq!(listed[0].attempts, 4);
    assert_eq!(listed[0].last_status_code, 503);
    assert!(
        listed[0].last_error.contains("503"),
        "{}",
        listed[0].last_error
    );
    assert_eq!(failing.received().len(), 4);

    let webhooks = app
        .admin_client()
        .await
        .list_webhooks(app.admin(proto::ListWebhooksRequest {
            tenant: TENANT.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("listed")
        .into_inner()
        .webhooks;
    let listed_hook = webhooks.iter().find(|w| w.id == hook.id).expect("listed");
    assert!(listed_hook.failing_since.is_some());

    let got = watcher
        .until("the webhook.failing event", |got| !got.is_empty())
        .await;
    assert!(verify(&watcher_secret, &got[0]));
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(body["type"], "webhook.failing");
    assert_eq!(body["data"]["webhook"]["id"], hook.id.as_str());

    // Resuming clears failing_since.
    let resumed = app
        .admin_client()
        .await
        .update_webhook(app.admin(proto::UpdateWebhookRequest {
            id: hook.id.clone(),
            disabled: false,
            update_mask: Some(prost_types::FieldMask {
                paths: strings(&["disabled"]),
            }),
            ..Default::default()
        }))
        .await
        .expect("resumed")
        .into_inner()
        .webhook
        .expect("webhook");
    assert!(resumed.failing_since.is_none());
}

async fn a_webhook_receives_only_the_event_types_it_names(backend: Backend) {
    let app = spawn(backend).await;
    let creations = Receiver::start(Answer::Status(200)).await;
    let revocations = Receiver::start(Answer::Status(200)).await;
    let (created_hook, _) = webhook(&app, &creations.url("/"), &["token.created"]).await;
    let (revoked_hook, _) = webhook(&app, &revocations.url("/"), &["token.revoked"]).await;
    created_token(&app).await;

    creations
        .until("token.created", |got| !got.is_empty())
        .await;
    deliveries_until(&app, &created_hook.id, "delivered", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Delivered)
    })
    .await;
    // The deliveries were queued with the event, in its transaction: none for the other.
    assert!(deliveries(&app, &revoked_hook.id).await.is_empty());
    assert!(revocations.received().is_empty());
}

async fn webhooks_are_created_listed_updated_and_deleted_within_their_rules(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.admin_client().await;

    let refused = create_webhook(&app, "ftp://example.com/", &["token.nope"])
        .await
        .expect_err("invalid");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_details_bad_request()
        .expect("bad request")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["url", "event_types[0]"]);

    let (first, _) = webhook(&app, "http://127.0.0.1:9/a", &[]).await;
    // Disabled at once (and no event is written in this test): nothing is delivered.
    let disabled = client
        .update_webhook(app.admin(proto::UpdateWebhookRequest {
            id: first.id.clone(),
            url: "http://127.0.0.1:9/b".to_owned(),
            event_types: strings(&["token.revoked", "token.created"]),
            description: "renamed".to_owned(),
            disabled: true,
            update_mask: Some(prost_types::FieldMask {
                paths: strings(&["url", "event_types", "description", "disabled"]),
            }),
        }))
        .await
        .expect("updated")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(disabled.url, "http://127.0.0.1:9/b");
    assert_eq!(disabled.event_types, ["token.created", "token.revoked"]);
    assert_eq!(disabled.description, "renamed");
    assert!(disabled.disabled);

    for _ in 1..tessera::domain::webhook::MAX_WEBHOOKS_PER_TENANT {
        let (extra, _) = webhook(&app, "http://127.0.0.1:9/x", &["credits.low"]).await;
        client
            .update_webhook(app.admin(proto::UpdateWebhookRequest {
                id: extra.id,
                disabled: true,
                update_mask: Some(prost_types::FieldMask {
                    paths: strings(&["disabled"]),
                }),
                ..Default::default()
            }))
            .await
            .expect("disabled");
    }
    let beyond = create_webhook(&app, "http://127.0.0.1:9/y", &[])
        .await
        .expect_err("limit");
    assert_eq!(beyond.code(), Code::FailedPrecondition, "{beyond:?}");

    let page = client
        .list_webhooks(app.admin(proto::ListWebhooksRequest {
            tenant: TENANT.to_owned(),
            page_size: 10,
            ..Default::default()
        }))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(page.webhooks.len(), 10);
    assert_eq!(page.webhooks[0].id, first.id);
    let rest = client
        .list_webhooks(app.admin(proto::ListWebhooksRequest {
            tenant: TENANT.to_owned(),
            page_size: 10,
            page_token: page.next_page_token,
        }))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(rest.webhooks.len(), 6);
    assert!(rest.next_page_token.is_empty());

    let deleted = client
        .delete_webhook(app.admin(proto::DeleteWebhookRequest {
            id: first.id.clone(),
        }))
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.webhook.expect("webhook").id, first.id);
    let gone = client
        .delete_webhook(app.admin(proto::DeleteWebhookRequest { id: first.id }))
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let app = spawn(Backend::Sqlite).await;
    let receiver = Receiver::start(Answer::Redirect).await;
    // Every type: the webhook.failing event it causes goes to other webhooks, not to itself.
    let (hook, _) = webhook(&app, &receiver.url("/moved"), &[]).await;
    created_token(&app).await;

    let listed = deliveries_until(&app, &hook.id, "failed", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Failed)
    })
    .await;
    assert_eq!(listed[0].last_status_code, 302);
    assert!(
        listed[0].last_error.contains("redirect"),
        "{}",
        listed[0].last_error
    );
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|r| r.path == "/moved"), "{received:#?}");
}

#[tokio::test]
async fn a_private_url_is_invalid_argument_without_the_setting() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        webhook_settings(settings);
        settings.webhook_allow_private_urls = false;
    })
    .await;
    for url in [
        "http://127.0.0.1:8080/",
        "http://localhost/",
        "http://10.0.0.8/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:192.168.0.1]/",
        "http://100.64.1.1/",
    ] {
        let refused = create_webhook(&app, url, &[]).await.expect_err(url);
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
        let violations = refused.get_details_bad_request().expect("bad request");
        assert_eq!(violations.field_violations[0].field, "url");
        assert!(
            violations.field_violations[0]
                .description
                .contains("TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS"),
            "{url}: {violations:?}"
        );
    }
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_delivery_once_private_urls_are_off() {
    let mut app = spawn(Backend::Sqlite).await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let url = format!("http://localhost:{}/", receiver.address.port());
    let (hook, _) = webhook(&app, &url, &[]).await;
    app.stop().await;

    let restarted = app
        .spawn_replica_with(|settings| settings.webhook_allow_private_urls = false)
        .await;
    created_token(&restarted).await;
    let listed = deliveries_until(&restarted, &hook.id, "blocked", |listed| {
        listed
            .first()
            .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Failed)
    })
    .await;
    assert!(
        listed[0].last_error.contains("refused"),
        "{}",
        listed[0].last_error
    );
    assert_eq!(listed[0].last_status_code, 0);
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn a_webhook_without_a_master_key_is_refused() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        webhook_settings(settings);
        settings.master_key = None;
    })
    .await;
    let refused = create_webhook(&app, "https://hooks.example.com/", &[])
        .await
        .expect_err("no master key");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("TESSERA_MASTER_KEY"));
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_slow_check_or_admin_calls() {
    let app = spawn(Backend::Sqlite).await;
    let receiver = Receiver::start(Answer::Hang).await;
    let (hook, _) = webhook(&app, &receiver.url("/"), &[]).await;
    let (_, secret) = created_token(&app).await;
    for _ in 0..8 {
        app.token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
    }
    // Deliveries are in flight and hang.
    receiver
        .until("a hanging delivery", |got| !got.is_empty())
        .await;

    for _ in 0..50 {
        let decision = app
            .check(check_request(TENANT, &secret, "orders:read"))
            .await;
        assert!(decision.allowed, "{decision:?}");
    }
    let listed = deliveries(&app, &hook.id).await;
    assert_eq!(listed.len(), 9);
    assert!(
        listed
            .iter()
            .all(|d| state(d) == proto::WebhookDeliveryState::Pending)
    );
}

#[tokio::test]
async fn two_replicas_on_one_postgres_deliver_each_event_exactly_once() {
    let app = spawn(Backend::Postgres).await;
    let replica = app.spawn_replica().await;
    let receiver = Receiver::start(Answer::Status(200)).await;
    let (hook, _) = webhook(&app, &receiver.url("/"), &["token.created"]).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    const EVENTS: usize = 20;
    for index in 0..EVENTS {
        let server = if index % 2 == 0 { &app } else { &replica };
        server
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
    }

    deliveries_until(&app, &hook.id, "every event delivered", |listed| {
        listed.len() == EVENTS
            && listed
                .iter()
                .all(|d| state(d) == proto::WebhookDeliveryState::Delivered)
    })
    .await;
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for received in receiver.received() {
        *per_event.entry(event_id(&received)).or_default() += 1;
    }
    assert_eq!(per_event.len(), EVENTS);
    assert!(per_event.values().all(|count| *count == 1), "{per_event:?}");
}

#[tokio::test]
async fn a_pending_delivery_survives_a_crash_and_is_delivered_after_the_restart() {
    let mut app = spawn_app_with(Backend::Sqlite, |settings| {
        webhook_settings(settings);
        // Long enough that the crashed server cannot retry before it is gone.
        settings.webhook_retry_delays = "2s".to_owned();
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let receiver = Receiver::start(Answer::FailFirst(1)).await;
    let (hook, secret) = webhook(&app, &receiver.url("/"), &["token.created"]).await;
    created_token(&app).await;
    deliveries_until(&app, &hook.id, "the first attempt failed", |listed| {
        listed.first().is_some_and(|d| d.attempts == 1)
    })
    .await;
    app.crash().await;

    let restarted = app.spawn_replica().await;
    let listed = deliveries_until(
        &restarted,
        &hook.id,
        "delivered after the restart",
        |listed| {
            listed
                .first()
                .is_some_and(|d| state(d) == proto::WebhookDeliveryState::Delivered)
        },
    )
    .await;
    assert_eq!(listed[0].attempts, 2);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| verify(&secret, r)));
}

/// The real binary, SIGKILLed after a change committed but before its delivery succeeded (the
/// first attempt failed), delivers it after a restart on the same database: the delivery was
/// queued in the change's own transaction.
#[tokio::test]
async fn a_sigkill_between_a_change_and_its_delivery_still_delivers_after_the_restart() {
    use crate::helpers::ops::{ServingStatus, eventually, health_of};
    use crate::helpers::process::ServeProcess;
    use crate::helpers::with_key;
    use tessera::proto::token_admin_service_client::TokenAdminServiceClient;

    const ADMIN_KEY: &str = "webhook-crash-admin-key-0123456789";
    let database = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}/tessera.db", database.path().display());
    let variables = [
        ("TESSERA_DATABASE_URL", url.as_str()),
        ("TESSERA_ADMIN_KEYS", ADMIN_KEY),
        ("TESSERA_MASTER_KEY", MASTER_KEY),
        ("TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS", "true"),
        // Long enough that the killed server cannot retry before it is gone.
        ("TESSERA_WEBHOOK_RETRY_DELAYS", "2s"),
    ];
    let serve = || async {
        let server = ServeProcess::start(&variables).await;
        let ready = eventually(DEADLINE, || async {
            health_of(&server.grpc_url, "").await == ServingStatus::Serving
        })
        .await;
        assert!(ready, "the server never became ready");
        server
    };
    let receiver = Receiver::start(Answer::FailFirst(1)).await;
    let server = serve().await;
    let mut admin = TokenAdminServiceClient::connect(server.grpc_url.clone())
        .await
        .expect("admin client");
    admin
        .upsert_principal(with_key(
            proto::UpsertPrincipalRequest {
                tenant: TENANT.to_owned(),
                id: "alice".to_owned(),
                permissions: vec!["orders:*".to_owned()],
                ..Default::default()
            },
            ADMIN_KEY,
        ))
        .await
        .expect("principal");
    let secret = admin
        .create_webhook(with_key(
            proto::CreateWebhookRequest {
                tenant: TENANT.to_owned(),
                url: receiver.url("/"),
                event_types: strings(&["token.created"]),
                ..Default::default()
            },
            ADMIN_KEY,
        ))
        .await
        .expect("webhook")
        .into_inner()
        .secret;
    let token = admin
        .create_token(with_key(
            new_token(TENANT, "alice", &["orders:read"]),
            ADMIN_KEY,
        ))
        .await
        .expect("token")
        .into_inner()
        .token
        .expect("token");
    receiver
        .until("the first, failed attempt", |got| got.len() == 1)
        .await;
    server.kill().await;

    let _restarted = serve().await;
    let received = receiver
        .until("the delivery after the restart", |got| got.len() == 2)
        .await;
    assert_eq!(
        received.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 200]
    );
    assert!(received.iter().all(|r| verify(&secret, r)));
    let body: serde_json::Value = serde_json::from_slice(&received[1].body).expect("json");
    assert_eq!(body["data"]["token"]["id"], token.id.as_str());
}
