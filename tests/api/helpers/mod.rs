//! `spawn_app`: the real server on port 0, over a fresh database, with a real gRPC client.

pub mod browser;
pub mod database;
pub mod fault_proxy;
pub mod http;
pub mod keys;
pub mod ops;
pub mod pausing_store;
pub mod process;
pub mod proxies;
pub mod race;
/// Private `redis-server` processes, shared with the fleet's own tests.
#[path = "../../../src/fleet/tests/server.rs"]
#[expect(
    dead_code,
    reason = "src/fleet/tests uses the TLS server and the cluster; these tests do not"
)]
pub mod redis;
pub mod requests;
pub mod tls;

use std::sync::Arc;

use tessera::app::App;
use tessera::authz::Authorizer;
use tessera::config::{Config, Settings};
use tessera::proto;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera::store::Store;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Request;
use tonic::transport::Channel;

pub use database::TestDatabase;
use pausing_store::PausingStore;

/// Puts something around the real store before the server is built over it.
type WrapStore = Box<dyn FnOnce(Arc<dyn Store>) -> Arc<dyn Store> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    /// `http://127.0.0.1:PORT`, as the CLI's `--server` takes it.
    pub grpc_url: String,
    /// Where this server serves Prometheus `/metrics`.
    pub metrics_addr: std::net::SocketAddr,
    /// Where this server serves HTTP (forward-auth), when `http_listen` is set.
    pub http_addr: Option<std::net::SocketAddr>,
    /// The key the server's bootstrap wrote to its key file on first start.
    pub admin_key: String,
    pub store: Arc<dyn Store>,
    /// This server's Check path, for its counters and cache.
    pub authorizer: Arc<Authorizer>,
    /// Shared with replicas started by `spawn_replica`; dropped (and the database with it) last.
    pub database: Arc<TestDatabase>,
    pub settings: Settings,
    /// Holds the bootstrap key file.
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// A server over a fresh SQLite file.
pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite).await
}

/// A server over a fresh database of the given backend.
pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// A server over a fresh database, with settings adjusted by `customize`.
pub async fn spawn_app_with(backend: Backend, customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_over(backend, customize, None).await
}

/// A server whose store is the real one wrapped in a `PausingStore`, to hold a read mid-flight.
pub async fn spawn_app_pausing(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
) -> (TestApp, Arc<PausingStore>) {
    let slot = Arc::new(std::sync::OnceLock::new());
    let wrap: WrapStore = {
        let slot = slot.clone();
        Box::new(move |real| {
            let pausing = Arc::new(PausingStore::new(real));
            let _ = slot.set(pausing.clone());
            pausing
        })
    };
    let app = spawn_app_over(backend, customize, Some(wrap)).await;
    let pausing = slot.get().expect("the store was wrapped").clone();
    (app, pausing)
}

async fn spawn_app_over(
    backend: Backend,
    customize: impl FnOnce(&mut Settings),
    wrap: Option<WrapStore>,
) -> TestApp {
    init_test_logging();
    let database = match backend {
        Backend::Sqlite => TestDatabase::sqlite(),
        Backend::Postgres => TestDatabase::postgres().await,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: database.url().to_owned().into(),
        admin_key_file: Some(dir.path().join("tessera-admin.key")),
        ..Settings::default()
    };
    customize(&mut settings);
    start(settings, Arc::new(database), Arc::new(dir), None, wrap).await
}

/// Builds and serves an app; `admin_key` is given for replicas, which find the key already stored.
async fn start(
    settings: Settings,
    database: Arc<TestDatabase>,
    dir: Arc<tempfile::TempDir>,
    admin_key: Option<String>,
    wrap: Option<WrapStore>,
) -> TestApp {
    let config = Config::parse(settings.clone()).expect("valid settings");
    let app = match wrap {
        None => App::build(config).await.expect("app builds"),
        Some(wrap) => {
            let real = config
                .database
                .connect(&config.pool)
                .await
                .expect("store connects");
            App::start(config)
                .await
                .expect("app starts")
                .connect_to(wrap(real))
                .await
                .expect("app builds")
        }
    };
    let address = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let http_addr = app.http_addr();
    let store = app.store();
    let authorizer = app.authorizer();
    let admin_key = match (admin_key, app.bootstrap_key_path()) {
        (Some(key), _) => key,
        (None, Some(path)) => std::fs::read_to_string(path)
            .expect("bootstrap key file")
            .trim()
            .to_owned(),
        (None, None) => String::new(),
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        grpc_url: format!("http://{address}"),
        metrics_addr,
        http_addr,
        admin_key,
        store,
        authorizer,
        database,
        settings,
        dir,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// A second server on the same database, as another replica would be.
    pub async fn spawn_replica(&self) -> TestApp {
        self.spawn_replica_with(|_| {}).await
    }

    /// A replica whose settings differ, e.g. one reaching the database through a fault proxy.
    pub async fn spawn_replica_with(&self, customize: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        customize(&mut settings);
        start(
            settings,
            self.database.clone(),
            self.dir.clone(),
            Some(self.admin_key.clone()),
            None,
        )
        .await
    }

    /// The id (`adk_…`) of the bootstrap key, which this server's `admin_key` is.
    pub async fn bootstrap_key_id(&self) -> String {
        self.admin_client()
            .await
            .list_admin_keys(self.admin(proto::ListAdminKeysRequest::default()))
            .await
            .expect("admin keys listed")
            .into_inner()
            .admin_keys
            .into_iter()
            .find(|key| key.created_by == "bootstrap")
            .expect("the bootstrap key")
            .id
    }

    /// How many times this server's Check path has read a credential from the store.
    pub fn store_lookups(&self) -> u64 {
        self.authorizer
            .stats()
            .store_lookups
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn admin_client(&self) -> TokenAdminServiceClient<Channel> {
        TokenAdminServiceClient::connect(self.grpc_url.clone())
            .await
            .expect("admin client connects")
    }

    pub async fn authz_client(&self) -> AuthorizationServiceClient<Channel> {
        AuthorizationServiceClient::connect(self.grpc_url.clone())
            .await
            .expect("authorization client connects")
    }

    /// Wraps a message with this server's admin key.
    pub fn admin<T>(&self, message: T) -> Request<T> {
        with_key(message, &self.admin_key)
    }

    /// Stops the server and waits for it, so a test can restart on the same database.
    pub async fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    /// Ends the server as a crash would: no drain, nothing given back or flushed.
    pub async fn crash(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.shutdown.take();
    }

    /// Creates (or replaces) a principal with the given permissions.
    pub async fn principal(
        &self,
        tenant: &str,
        id: &str,
        permissions: &[&str],
    ) -> proto::Principal {
        let request = proto::UpsertPrincipalRequest {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
            permissions: strings(permissions),
            ..Default::default()
        };
        self.admin_client()
            .await
            .upsert_principal(self.admin(request))
            .await
            .expect("principal upserted")
            .into_inner()
            .principal
            .expect("principal")
    }

    /// Creates a token of `owner` in `tenant` that requires signatures: the token, its secret
    /// and its signing key.
    pub async fn signing_token(
        &self,
        tenant: &str,
        owner: &str,
        permissions: &[&str],
    ) -> (proto::Token, String, String) {
        let mut request = new_token(tenant, owner, permissions);
        request.require_signature = true;
        let created = self
            .admin_client()
            .await
            .create_token(self.admin(request))
            .await
            .expect("signing token created")
            .into_inner();
        (
            created.token.expect("token"),
            created.secret,
            created.signing_key,
        )
    }

    /// Creates a token and returns it with its secret.
    pub async fn token(&self, request: proto::CreateTokenRequest) -> (proto::Token, String) {
        let created = self
            .admin_client()
            .await
            .create_token(self.admin(request))
            .await
            .expect("token created")
            .into_inner();
        (created.token.expect("token"), created.secret)
    }

    /// Switches `tenant`'s API off, with the message Check answers.
    pub async fn take_offline(&self, tenant: &str, message: &str) {
        self.admin_client()
            .await
            .set_api_status(self.admin(proto::SetApiStatusRequest {
                tenant: tenant.to_owned(),
                online: false,
                message: message.to_owned(),
            }))
            .await
            .expect("api status set");
    }

    pub async fn check(&self, request: proto::CheckRequest) -> proto::CheckResponse {
        self.authz_client()
            .await
            .check(request)
            .await
            .expect("check answers")
            .into_inner()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ascii key");
    request.metadata_mut().insert("authorization", value);
    request
}

/// A well-formed token that was never issued.
pub fn unknown_secret() -> String {
    use tessera::domain::token::{self, TokenPrefix};
    secrecy::ExposeSecret::expose_secret(&token::generate(&TokenPrefix::default()).secret)
        .to_owned()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A create request for `owner` in `tenant` with the given permissions; adjust the rest inline.
pub fn new_token(tenant: &str, owner: &str, permissions: &[&str]) -> proto::CreateTokenRequest {
    proto::CreateTokenRequest {
        tenant: tenant.to_owned(),
        owner_id: owner.to_owned(),
        name: "test token".to_owned(),
        permissions: strings(permissions),
        ..Default::default()
    }
}

/// Logs print only when TEST_LOG is set, as in zero-to-production.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        tessera::telemetry::init("debug", tessera::config::LogFormat::Text);
    }
}

/// Stamps out a test per backend: `backend_tests!(name, name2)` for `async fn name(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )+
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )+
        }
    };
}
