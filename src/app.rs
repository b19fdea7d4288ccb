//! `App::build` creates everything from `Settings`; `run_until_stopped` serves. Tests start the
//! real server on port 0 through the same two calls the binary makes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::admin::Admin;
use crate::authz::Authorizer;
use crate::config::{ConfigError, Settings};
use crate::domain::token::{self, SecretHash};
use crate::grpc::admin::TokenAdminApi;
use crate::grpc::auth::AdminAuth;
use crate::grpc::authorization::AuthorizationApi;
use crate::grpc::envoy::{self, EnvoySettings};
use crate::proto::authorization_service_server::AuthorizationServiceServer;
use crate::proto::token_admin_service_server::TokenAdminServiceServer;
use crate::store::{self, Store, StoreError};

/// Prefix of admin keys: never the API token prefix, so neither can pass for the other.
const ADMIN_KEY_PREFIX: &str = "tsa";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the bootstrap admin key to {path}: {source}")]
    BootstrapKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Arc<dyn Store>,
    authorizer: Arc<Authorizer>,
    admin: Arc<Admin>,
    /// How Envoy ext_authz requests map onto Check (issue 5).
    envoy: EnvoySettings,
    configured_admin_keys: Vec<SecretHash>,
    bootstrap_key_path: Option<PathBuf>,
    /// The task that applies other replicas' invalidations; stopped with the app.
    _invalidation_feed: Option<AbortOnDrop>,
}

/// Stops a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl App {
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        settings.validate()?;
        let prefix = settings.token_prefix()?;
        let store = store::connect(
            settings.database_url.expose_secret(),
            &settings.pool_options(),
        )
        .await?;
        tracing::info!(backend = store.backend(), "store ready, migrations applied");

        let configured_admin_keys: Vec<SecretHash> = settings
            .admin_keys
            .iter()
            .map(|key| SecretHash::of(key.expose_secret()))
            .collect();
        let bootstrap_key_path = if configured_admin_keys.is_empty() {
            bootstrap_admin_key(store.as_ref(), &settings.bootstrap_key_path()).await?
        } else {
            None
        };

        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| AppError::Bind {
                    address: settings.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| AppError::Bind {
            address: settings.listen,
            source,
        })?;

        let authorizer = Arc::new(Authorizer::new(store.clone(), settings.authz_settings()?));
        let admin = Arc::new(
            Admin::new(
                store.clone(),
                prefix,
                settings.max_tokens_per_owner,
                authorizer.clone(),
            )
            .with_master_key(settings.master_key()?),
        );
        // Other replicas' writes reach this cache through the store's feed (Postgres LISTEN).
        let invalidation_feed = store
            .watch_invalidations(authorizer.clone())
            .map(AbortOnDrop);
        Ok(Self {
            listener,
            local_addr,
            store,
            authorizer,
            admin,
            envoy: settings.envoy_settings()?,
            configured_admin_keys,
            bootstrap_key_path,
            _invalidation_feed: invalidation_feed,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where this start wrote a new bootstrap admin key, if it created one.
    pub fn bootstrap_key_path(&self) -> Option<&Path> {
        self.bootstrap_key_path.as_deref()
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn authorizer(&self) -> Arc<Authorizer> {
        self.authorizer.clone()
    }

    /// Serves every gRPC service until `shutdown` resolves, then lets in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AppError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<AuthorizationServiceServer<AuthorizationApi>>()
            .await;
        health_reporter
            .set_serving::<TokenAdminServiceServer<TokenAdminApi>>()
            .await;

        let authorization =
            AuthorizationServiceServer::new(AuthorizationApi::new(self.authorizer.clone()));
        let auth = AdminAuth::new(self.configured_admin_keys.clone(), self.store.clone());
        let admin = TokenAdminServiceServer::new(TokenAdminApi::new(self.admin.clone(), auth));

        tracing::info!(address = %self.local_addr, "serving grpc");
        Server::builder()
            .add_service(health_service)
            .add_service(authorization)
            .add_service(admin)
            .add_service(envoy::service(self.authorizer.clone(), self.envoy))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await?;
        tracing::info!("server stopped");
        Ok(())
    }
}

/// On the very first start without configured keys, creates one admin key so a newcomer can use
/// the CLI at once. Only its hash is stored; the key itself goes to a 0600 file, whose path
/// (never the key) is logged. The file is written first: a key in a file whose hash failed to
/// store is harmless, a stored hash whose key was lost would lock the operator out.
async fn bootstrap_admin_key(store: &dyn Store, path: &Path) -> Result<Option<PathBuf>, AppError> {
    if store.count_admin_keys().await? > 0 {
        return Ok(None);
    }
    let generated = token::generate_key(ADMIN_KEY_PREFIX);
    write_private_file(path, generated.secret.expose_secret())
        .await
        .map_err(|source| AppError::BootstrapKey {
            path: path.to_owned(),
            source,
        })?;
    if let Err(error) = store
        .insert_admin_key(&generated.hash, "bootstrap", Utc::now())
        .await
    {
        let _ = tokio::fs::remove_file(path).await;
        return Err(error.into());
    }
    tracing::warn!(path = %path.display(), "created the bootstrap admin key; keep this file safe");
    Ok(Some(path.to_owned()))
}

async fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;

    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await?;
    file.write_all(contents.as_bytes()).await?;
    file.write_all(b"\n").await?;
    file.sync_all().await
}
