//! The server's lifecycle, in three steps the binary and the tests share:
//!
//! 1. [`App::start`] binds every listener (gRPC, metrics, the optional plaintext health one) and
//!    answers at once: health says NOT_SERVING, reflection works, and the other services answer
//!    UNAVAILABLE. So an orchestrator sees a live process that is not ready yet.
//! 2. [`Starting::connect`] connects to the store (retrying while it is unreachable), runs the
//!    migrations, and opens the services. [`App::build`] is steps 1 and 2 in one call.
//! 3. [`App::run_until_stopped`] reports SERVING until the shutdown future resolves; then health
//!    says NOT_SERVING, calls are still served for `shutdown_delay` (so load balancers notice),
//!    the listeners close, in-flight calls get until `drain_timeout` to finish, and buffered usage
//!    is written.
//!
//! Once serving, health stays SERVING through store outages: Check answers cached tokens and
//! `STORE_UNAVAILABLE` for the rest, which beats every replica leaving the load balancer at once.

mod atomic_file;
mod gate;
mod port_file;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::Admin;
use crate::authz::Authorizer;
use crate::config::{Config, ServingSettings};
use crate::events::Events;
use crate::fleet::Fleet;
use crate::grpc::admin::TokenAdminApi;
use crate::grpc::auth::{AdminAuth, KeyCache};
use crate::grpc::authorization::AuthorizationApi;
use crate::grpc::check_answer::AuthorizationServer;
use crate::grpc::envoy;
use crate::http::forward_auth::ForwardAuth;
use crate::proto::authorization_service_server::AuthorizationServiceServer;
use crate::proto::token_admin_service_server::TokenAdminServiceServer;
use crate::store::invalidation::{InvalidationSink, Sinks};
use crate::store::{self, Store, StoreError};
use crate::tls::{Tls, TlsError};
use crate::usage::Usage;
use gate::{Gate, GatePolicy, KnownMethods};
pub use port_file::PortFile;

const AUTHORIZATION_SERVICE: &str =
    <AuthorizationServiceServer<AuthorizationApi> as NamedService>::NAME;
const ADMIN_SERVICE: &str = <TokenAdminServiceServer<TokenAdminApi> as NamedService>::NAME;
/// Envoy's external authorization service, served on the same listener.
const ENVOY_AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The services behind the gate: health reports each, metrics label each.
const GATED_SERVICES: &[&str] = &[
    AUTHORIZATION_SERVICE,
    ADMIN_SERVICE,
    ENVOY_AUTHORIZATION_SERVICE,
];

/// Every service this server serves, by name: reflection lists exactly these.
const ALL_SERVICES: &[&str] = &[
    AUTHORIZATION_SERVICE,
    ADMIN_SERVICE,
    ENVOY_AUTHORIZATION_SERVICE,
    HEALTH_SERVICE,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A health service name that answers SERVING for as long as the process runs (draining
/// included): the liveness probe's, so a pod waiting for its database is not restarted.
pub const LIVENESS_SERVICE: &str = "liveness";

/// A health service name that answers SERVING while the fleet's shared state (Redis) answers
/// within its bound and NOT_SERVING while limits and replays are decided per replica; unknown
/// (NOT_FOUND) without `TESSERA_REDIS_URL`. Never part of the overall status: losing Redis
/// degrades limits, not availability.
pub const SHARED_STATE_SERVICE: &str = "tessera.shared_state";

/// How often the shared state's health is brought up to date.
const SHARED_STATE_HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// Envoy's `external_auth.proto` and its imports, cut from envoy-types' descriptor set by build.rs.
const ENVOY_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// The descriptor sets of every service in `ALL_SERVICES`: their methods are the only ones
/// metrics label by name.
const SERVED_DESCRIPTOR_SETS: &[&[u8]] = &[
    crate::proto::FILE_DESCRIPTOR_SET,
    ENVOY_FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// First and longest wait between attempts to reach the store at start.
const CONNECT_RETRY_FIRST: Duration = Duration::from_millis(200);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(5);

/// After the drain deadline, how long cut-off calls get to send their answer.
const CUT_OFF_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot read the served services' descriptor sets: {0}")]
    Descriptors(#[from] prost::DecodeError),
    #[error("cannot write the bootstrap admin key to {path}: {source}")]
    BootstrapKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the shared state: {0}")]
    SharedState(#[from] crate::fleet::FleetError),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the gRPC server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Listeners bound and answering; the store not yet connected.
pub struct Starting {
    /// What `connect` still needs: the database, the pools, the services' parts.
    config: Config,
    addresses: Addresses,
    health: HealthReporter,
    /// The gate's routes to the services, set by `connect`.
    routes: Arc<OnceLock<Routes>>,
    /// The Check path, once connected: the metrics sampler reads its cache size.
    authorizer_slot: Arc<OnceLock<Arc<Authorizer>>>,
    /// The admin side for the HTTP listener's leak reports, once connected.
    admin_slot: Arc<OnceLock<Arc<Admin>>>,
    /// What the console and portal call, once connected.
    console_slot: Arc<OnceLock<crate::console::Backend>>,
    running: Running,
}

#[derive(Debug, Clone, Copy)]
struct Addresses {
    grpc: SocketAddr,
    health: Option<SocketAddr>,
    metrics: SocketAddr,
    http: Option<SocketAddr>,
}

/// The background tasks of a started server; dropping it stops them all.
struct Running {
    /// Tells the gRPC servers to stop accepting and drain.
    stop: watch::Sender<bool>,
    /// Tells the gate to end the calls still running at the drain deadline.
    cut_off: watch::Sender<bool>,
    grpc: Task<Result<(), tonic::transport::Error>>,
    health_only: Option<Task<Result<(), tonic::transport::Error>>>,
    /// The HTTP listener (`TESSERA_HTTP_LISTEN`); it drains on `stop` by itself.
    http: Option<Task<()>>,
    _metrics: Task<()>,
    _tls_watch: Option<Task<()>>,
}

/// A spawned task, aborted when dropped unless it was awaited to the end.
struct Task<T>(Option<JoinHandle<T>>);

impl<T> Task<T> {
    fn new(handle: JoinHandle<T>) -> Self {
        Self(Some(handle))
    }

    /// Waits for the task until `deadline`; None if it is still running then.
    async fn join_within(
        &mut self,
        deadline: Duration,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let handle = self.0.as_mut()?;
        let joined = tokio::time::timeout(deadline, handle).await.ok()?;
        self.0 = None;
        Some(joined)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

pub struct App {
    serving: ServingSettings,
    addresses: Addresses,
    health: HealthReporter,
    store: Arc<dyn Store>,
    authorizer: Arc<Authorizer>,
    admin: Arc<Admin>,
    /// Usage statistics: recorded by the authorizer, flushed on shutdown.
    usage: Arc<Usage>,
    bootstrap_key_path: Option<PathBuf>,
    /// The gRPC services routed by the gate (health reports each).
    served: Vec<&'static str>,
    running: Running,
    /// The task that applies other replicas' invalidations; stopped with the app.
    _invalidation_feed: Option<Task<()>>,
    /// Redis, when configured: closed (leases given back, heartbeat removed) at shutdown.
    fleet: Option<Fleet>,
    /// Reports the shared state's health under [`SHARED_STATE_SERVICE`].
    _shared_state_health: Option<Task<()>>,
    /// Gives back credit leases left idle (`authz::leases`); stopped with the app.
    _credit_returns: Task<()>,
    /// Lifecycle events: WatchEvents' streams, closed at shutdown.
    events: Arc<Events>,
    /// Expiry notices and event retention.
    _event_upkeep: Task<()>,
    /// The webhook delivery worker (src/events/delivery.rs), stopped with the app.
    _webhook_deliveries: Task<()>,
}

impl App {
    /// Starts and connects: [`App::start`] then [`Starting::connect`].
    pub async fn build(config: Config) -> Result<Self, AppError> {
        Self::start(config).await?.connect().await
    }

    /// Binds every listener and starts answering (health NOT_SERVING) before the store is
    /// reached. Unreadable TLS files and busy ports fail here (bad settings already failed in
    /// [`Config::parse`]).
    pub async fn start(config: Config) -> Result<Starting, AppError> {
        crate::metrics::install_recorder();
        let serving = &config.serving;
        let tls = match &config.tls {
            Some(tls_settings) => Some(Tls::load(tls_settings.clone()).await?),
            None => None,
        };
        let grpc_listener = bind("TESSERA_LISTEN", config.listeners.grpc).await?;
        let metrics_listener = bind("TESSERA_METRICS_LISTEN", config.listeners.metrics).await?;
        let health_listener = match config.listeners.health {
            Some(address) => Some(bind("TESSERA_HEALTH_LISTEN", address).await?),
            None => None,
        };
        let http_listener = match config.listeners.http {
            Some(address) => Some(bind("TESSERA_HTTP_LISTEN", address).await?),
            None => None,
        };
        let addresses = Addresses {
            grpc: local_addr("TESSERA_LISTEN", &grpc_listener)?,
            health: match &health_listener {
                Some(listener) => Some(local_addr("TESSERA_HEALTH_LISTEN", listener)?),
                None => None,
            },
            metrics: local_addr("TESSERA_METRICS_LISTEN", &metrics_listener)?,
            http: match &http_listener {
                Some(listener) => Some(local_addr("TESSERA_HTTP_LISTEN", listener)?),
                None => None,
            },
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, GATED_SERVICES, ServingStatus::NotServing).await;
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        let reflection = || {
            ALL_SERVICES.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(ENVOY_FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |builder, name| builder.with_service_name(*name),
            )
        };
        let always_on = Routes::new(health_service.clone())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .prepare();

        let routes = Arc::new(OnceLock::new());
        let (cut_off, cut_off_signal) = watch::channel(false);
        let gate = Gate::new(
            always_on,
            routes.clone(),
            cut_off_signal,
            GatePolicy {
                max_concurrent_requests: serving.max_concurrent_requests,
                request_timeout: serving.request_timeout,
                admin_requires_client_cert: tls
                    .as_ref()
                    .is_some_and(|tls| tls.settings().admin_requires_client_cert()),
                admin_service: ADMIN_SERVICE,
                known_methods: KnownMethods::from_descriptor_sets(
                    SERVED_DESCRIPTOR_SETS,
                    ALL_SERVICES,
                )?,
                export_spans: config.telemetry.exports_spans(),
            },
        );

        let (stop, stopped) = watch::channel(false);
        let grpc = match &tls {
            Some(tls) => {
                let incoming = tls.clone().incoming(grpc_listener);
                tokio::spawn(Server::builder().serve_with_incoming_shutdown(
                    gate,
                    incoming,
                    stop_signal(stopped.clone()),
                ))
            }
            None => {
                let incoming = TcpListenerStream::new(grpc_listener).map(|accepted| {
                    // Small unary calls: Nagle's delay would add milliseconds to each.
                    if let Ok(stream) = &accepted {
                        let _ = stream.set_nodelay(true);
                    }
                    accepted
                });
                tokio::spawn(Server::builder().serve_with_incoming_shutdown(
                    gate,
                    incoming,
                    stop_signal(stopped.clone()),
                ))
            }
        };
        let health_only = health_listener.map(|listener| {
            Task::new(tokio::spawn(
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        stop_signal(stopped.clone()),
                    ),
            ))
        });
        let authorizer_slot: Arc<OnceLock<Arc<Authorizer>>> = Arc::new(OnceLock::new());
        let admin_slot: Arc<OnceLock<Arc<Admin>>> = Arc::new(OnceLock::new());
        let console_slot: Arc<OnceLock<crate::console::Backend>> = Arc::new(OnceLock::new());
        // Answers 503 until `connect` fills the slots, like the gated gRPC services.
        let http = http_listener.map(|listener| {
            let forward_auth = ForwardAuth::new(authorizer_slot.clone(), config.envoy.clone());
            let leaks = crate::http::leaks::Leaks::new(admin_slot.clone(), &config.http.leaks);
            let console =
                crate::console::Console::new(console_slot.clone(), config.http.console.clone());
            let router = crate::http::router(forward_auth, leaks, console, &config.http);
            Task::new(crate::http::serve(
                listener,
                tls.clone(),
                router,
                &config.http,
                stopped.clone(),
            ))
        });
        let metrics = crate::metrics::serve(
            metrics_listener,
            cache_size_sampler(authorizer_slot.clone()),
        );

        tracing::info!(
            address = %addresses.grpc,
            tls = tls.is_some(),
            metrics = %addresses.metrics,
            health = ?addresses.health,
            http = ?addresses.http,
            "serving grpc"
        );
        Ok(Starting {
            config,
            addresses,
            health,
            routes,
            authorizer_slot,
            admin_slot,
            console_slot,
            running: Running {
                stop,
                cut_off,
                grpc: Task::new(grpc),
                health_only,
                http,
                _metrics: Task::new(metrics),
                _tls_watch: tls.map(|tls| Task::new(tls.watch())),
            },
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    /// The bound `/metrics` address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addresses.metrics
    }

    /// The bound plaintext health address, when configured.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.addresses.health
    }

    /// The bound HTTP (forward-auth) address, when configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.addresses.http
    }

    /// Where this start wrote a new bootstrap admin key, if it created one.
    pub fn bootstrap_key_path(&self) -> Option<&Path> {
        self.bootstrap_key_path.as_deref()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn admin(&self) -> Arc<Admin> {
        self.admin.clone()
    }

    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer.clone()
    }

    pub fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    /// Serves until `shutdown` resolves, then drains: health NOT_SERVING, `shutdown_delay` of
    /// normal service, listeners closed, in-flight calls given `drain_timeout`, usage flushed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        set_health(&self.health, &self.served, ServingStatus::Serving).await;
        metrics::gauge!("tessera_health_serving").set(1.0);
        tracing::info!(services = ?self.served, "ready: health reports serving");

        shutdown.await;
        // Open WatchEvents streams end now: they would hold the drain to its deadline, and
        // their clients resume from their last event on a replica that stays.
        self.events.close();
        set_health(&self.health, &self.served, ServingStatus::NotServing).await;
        metrics::gauge!("tessera_health_serving").set(0.0);
        tracing::info!(
            delay_ms = self.serving.shutdown_delay.as_millis(),
            drain_timeout_ms = self.serving.drain_timeout.as_millis(),
            "shutting down: health reports not serving"
        );
        tokio::time::sleep(self.serving.shutdown_delay).await;

        let Running {
            stop,
            cut_off,
            grpc,
            health_only,
            http,
            _metrics,
            _tls_watch,
        } = self.running;
        let _ = stop.send(true);
        let mut grpc = grpc;
        let drained = grpc.join_within(self.serving.drain_timeout).await;
        if drained.is_none() {
            // Calls still running are answered UNAVAILABLE, so their connections can close.
            let _ = cut_off.send(true);
            grpc.join_within(CUT_OFF_GRACE).await;
        }
        if let Some(mut health_only) = health_only {
            health_only.join_within(CUT_OFF_GRACE).await;
        }
        // It drains from `stop` on by the same deadline, and ends by itself then.
        if let Some(mut http) = http {
            http.join_within(self.serving.drain_timeout + CUT_OFF_GRACE)
                .await;
        }
        // No Check can spend any more: unspent credit leases go back to the store.
        self.authorizer.return_credit_leases().await;
        // No Check can record any more: write what is buffered, once.
        self.usage.shutdown().await;
        if let Some(fleet) = &self.fleet {
            // Unspent leases go back to the other replicas now rather than at their expiry.
            fleet.close().await;
        }
        // The last write is done: on SQLite, fold the write-ahead log into the database file.
        if let Err(error) = self.store.checkpoint().await {
            tracing::warn!(%error, "cannot checkpoint the database at shutdown");
        }
        match drained {
            Some(Ok(Ok(()))) => tracing::info!("server stopped"),
            Some(Ok(Err(error))) => return Err(error.into()),
            Some(Err(error)) => return Err(error.into()),
            None => tracing::warn!(
                drain_timeout_ms = self.serving.drain_timeout.as_millis(),
                "calls still running at the drain deadline were cut off"
            ),
        }
        Ok(())
    }
}

impl Starting {
    /// The bound gRPC address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    /// The bound `/metrics` address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addresses.metrics
    }

    /// Every bound address, as `tessera serve --port-file` writes them.
    pub fn port_file(&self) -> PortFile {
        PortFile {
            grpc: self.addresses.grpc,
            metrics: self.addresses.metrics,
            health: self.addresses.health,
            http: self.addresses.http,
        }
    }

    /// Connects to the store, retrying for as long as it is unreachable (health says
    /// NOT_SERVING meanwhile), then opens the services. Any other store error, such as a failed
    /// migration or rejected credentials, ends the start.
    pub async fn connect(self) -> Result<App, AppError> {
        let store = connect_store(&self.config).await?;
        self.connect_to(store).await
    }

    /// Opens the services over `store`, already connected and migrated: the seam for a test
    /// that wraps the real store (e.g. to hold a read mid-flight).
    pub async fn connect_to(self, store: Arc<dyn Store>) -> Result<App, AppError> {
        let Config {
            default_tenant,
            serving,
            authz,
            admin,
            envoy,
            usage,
            shared_state,
            events,
            webhooks,
            http,
            ..
        } = self.config;
        tracing::info!(backend = store.backend(), "store ready, migrations applied");

        let bootstrap_key_path = if admin.configured_keys.is_empty() {
            bootstrap_admin_key(store.as_ref(), &admin.bootstrap_key_path).await?
        } else {
            tracing::info!(
                "TESSERA_ADMIN_KEYS is set: its keys are owners of every tenant, and a stored bootstrap admin key is refused"
            );
            None
        };

        let prefix = authz.prefix.clone();
        let master_key = authz.signing.master_key.clone();
        let usage = Arc::new(Usage::start(store.clone(), usage));
        let default_rate_limit = authz.default_rate_limit_per_minute.get();
        let mut authorizer = Authorizer::new(store.clone(), authz)
            .with_usage(usage.hook())
            .with_default_tenant(default_tenant.clone());
        let fleet = match shared_state {
            Some(shared_state) => {
                let fleet = Fleet::connect(shared_state.fleet).await?;
                tracing::info!(
                    replica_id = fleet.replica_id(),
                    replay_fail_closed = shared_state.replay_fail_closed,
                    "shared state on redis: rate limits and replays hold for the fleet"
                );
                authorizer = authorizer.with_fleet(fleet.clone(), shared_state.replay_fail_closed);
                Some(fleet)
            }
            None => None,
        };
        let shared_state_health = fleet.clone().map(|fleet| {
            Task::new(tokio::spawn(report_shared_state(
                self.health.clone(),
                fleet,
            )))
        });
        let authorizer = Arc::new(authorizer);
        let admin_keys = KeyCache::new();
        // What this replica holds in memory: Check's cache and the admin keys it found.
        let local_caches: Arc<dyn InvalidationSink> =
            Arc::new(Sinks(vec![authorizer.clone(), admin_keys.clone()]));
        let admin_api = Arc::new(
            Admin::new(
                store.clone(),
                prefix,
                admin.max_tokens_per_owner,
                local_caches.clone(),
            )
            .with_master_key(master_key.clone())
            .with_default_tenant(default_tenant)
            .with_webhook_rule(webhooks.rule),
        );
        // Other replicas' writes reach these caches through the store's feed (Postgres LISTEN).
        let invalidation_feed = store.watch_invalidations(local_caches).map(Task::new);

        let limit = serving.max_request_bytes;
        let auth = AdminAuth::new(admin.configured_keys, store.clone(), admin_keys);
        let authorization = AuthorizationApi::new(authorizer.clone(), usage.clone());
        let events = Events::new(store.clone(), events);
        let event_upkeep = Task::new(events.start_upkeep());
        let portal_base = http.console.public_url.clone().or_else(|| {
            let address = self.addresses.http?;
            let scheme = if http.console.tls { "https" } else { "http" };
            url::Url::parse(&format!("{scheme}://{address}/")).ok()
        });
        let token_admin = Arc::new(
            TokenAdminApi::new(
                admin_api.clone(),
                auth,
                usage.clone(),
                events.clone(),
                default_rate_limit,
            )
            .with_portal_base(portal_base),
        );
        let envoy_authorization = envoy::service(authorizer.clone(), envoy);
        // A service added here is also reported by health; name it in GATED_SERVICES too.
        let mut services = Services::default();
        services.add(AuthorizationServer::new(authorization, limit));
        services.add(
            TokenAdminServiceServer::from_arc(token_admin.clone()).max_decoding_message_size(limit),
        );
        services.add(envoy_authorization.max_decoding_message_size(limit));
        let Services { routes, served } = services;
        debug_assert!(served.iter().all(|name| GATED_SERVICES.contains(name)));
        let _ = self.routes.set(routes.prepare());
        let _ = self.authorizer_slot.set(authorizer.clone());
        let _ = self.admin_slot.set(admin_api.clone());
        let _ = self.console_slot.set(crate::console::Backend {
            api: token_admin,
            admin: admin_api.clone(),
            store: store.clone(),
        });

        let credit_returns = Task::new(authorizer.start_credit_returns());
        // Webhook deliveries (issue 17): their own tasks and the admin pool, never Check's.
        let webhook_deliveries = Task::new(crate::events::delivery::start(
            store.clone(),
            master_key,
            webhooks,
        ));
        Ok(App {
            serving,
            addresses: self.addresses,
            health: self.health,
            store,
            authorizer,
            admin: admin_api,
            usage,
            bootstrap_key_path,
            served,
            running: self.running,
            _invalidation_feed: invalidation_feed,
            fleet,
            _shared_state_health: shared_state_health,
            _credit_returns: credit_returns,
            events,
            _event_upkeep: event_upkeep,
            _webhook_deliveries: webhook_deliveries,
        })
    }
}

/// The gated services' routes, and their names for health.
#[derive(Default)]
struct Services {
    routes: Routes,
    served: Vec<&'static str>,
}

impl Services {
    fn add<S>(&mut self, service: S)
    where
        S: tonic::codegen::Service<
                tonic::codegen::http::Request<tonic::body::Body>,
                Response = tonic::codegen::http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.served.push(S::NAME);
        self.routes = std::mem::take(&mut self.routes).add_service(service);
    }
}

async fn set_health(health: &HealthReporter, services: &[&str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in services {
        health.set_service_status(*service, status).await;
    }
}

async fn connect_store(config: &Config) -> Result<Arc<dyn Store>, AppError> {
    let mut wait = CONNECT_RETRY_FIRST;
    loop {
        match config.database.connect(&config.pool).await {
            Ok(store) => return Ok(store),
            Err(error @ (StoreError::Unavailable(_) | StoreError::Timeout)) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis(), "database unreachable; health stays not serving");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CONNECT_RETRY_MAX);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

async fn bind(setting: &'static str, address: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| AppError::Bind {
            setting,
            address,
            source,
        })
}

fn local_addr(setting: &'static str, listener: &TcpListener) -> Result<SocketAddr, AppError> {
    listener.local_addr().map_err(|source| AppError::Bind {
        setting,
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stop_signal(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Keeps [`SHARED_STATE_SERVICE`]'s health in step with the fleet's degraded flag.
async fn report_shared_state(health: HealthReporter, fleet: Fleet) {
    let mut reported = None;
    loop {
        let status = if fleet.status().degraded {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        if reported != Some(status) {
            health
                .set_service_status(SHARED_STATE_SERVICE, status)
                .await;
            reported = Some(status);
        }
        tokio::time::sleep(SHARED_STATE_HEALTH_INTERVAL).await;
    }
}

/// Samples the cache size at each scrape, once the Check path exists.
fn cache_size_sampler(authorizer: Arc<OnceLock<Arc<Authorizer>>>) -> crate::metrics::Sampler {
    Arc::new(move || {
        let authorizer = authorizer.get().cloned();
        Box::pin(async move {
            if let Some(authorizer) = authorizer {
                let entries = authorizer.cache().entry_count().await;
                metrics::gauge!("tessera_cache_entries").set(entries as f64);
            }
        })
    })
}

/// On the very first start without configured keys, creates one admin key so a newcomer can use
/// the CLI at once. Only its hash is stored; the key itself goes to a 0600 file, whose path
/// (never the key) is logged. The store writes the hash and runs the file write in one
/// transaction, so of replicas starting together on a fresh database exactly one creates a key
/// and a file, and a key whose file could not be written is never stored (a stored hash whose
/// key was lost would lock the operator out).
async fn bootstrap_admin_key(store: &dyn Store, path: &Path) -> Result<Option<PathBuf>, AppError> {
    if store.count_admin_keys().await? > 0 {
        return Ok(None);
    }
    let (new, audit, secret) = crate::admin::keys::bootstrap_key(Utc::now());
    let contents = format!("{}\n", secret.expose_secret());
    let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let persist = {
        let path = path.to_owned();
        let written = written.clone();
        Box::pin(async move {
            write_private_file(&path, contents).await?;
            written.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    };
    let outcome = store.bootstrap_admin_key(&new, &audit, persist).await;
    match outcome {
        Ok(store::Bootstrapped::Created) => {
            tracing::warn!(path = %path.display(), admin_key_id = %new.key.id, "created the bootstrap admin key; keep this file safe");
            Ok(Some(path.to_owned()))
        }
        Ok(store::Bootstrapped::AlreadyDone) => {
            tracing::info!(
                "bootstrap admin key created by another replica; see its key file (that replica's TESSERA_ADMIN_KEY_FILE)"
            );
            Ok(None)
        }
        Ok(store::Bootstrapped::NotPersisted(source)) => Err(AppError::BootstrapKey {
            path: path.to_owned(),
            source,
        }),
        Err(error) => {
            // The commit failed after the file was written: that key was never stored.
            if written.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tokio::fs::remove_file(path).await;
            }
            Err(error.into())
        }
    }
}

/// Writes `contents` to a new 0600 file and renames it over `path` (`atomic_file::replace`):
/// what was at `path`, a file of any mode or a symlink, is replaced, never written through.
async fn write_private_file(path: &Path, contents: String) -> std::io::Result<()> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let replaced = std::fs::symlink_metadata(&path).is_ok();
        atomic_file::replace(&path, contents.as_bytes(), 0o600)?;
        if replaced {
            tracing::warn!(path = %path.display(), "replaced what was at the bootstrap key path");
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_service_has_its_real_methods_as_metric_labels() {
        let known = KnownMethods::from_descriptor_sets(SERVED_DESCRIPTOR_SETS, ALL_SERVICES)
            .expect("descriptor sets decode");
        let samples = [
            (AUTHORIZATION_SERVICE, "Check"),
            (ADMIN_SERVICE, "RevokeToken"),
            (ENVOY_AUTHORIZATION_SERVICE, "Check"),
            (HEALTH_SERVICE, "Watch"),
            (
                "grpc.reflection.v1.ServerReflection",
                "ServerReflectionInfo",
            ),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo",
            ),
        ];
        for (service, method) in samples {
            assert!(known.has(service, method), "{service}/{method}");
        }
    }
}
