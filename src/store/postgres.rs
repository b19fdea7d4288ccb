//! The Postgres backend: production and scale-out, shared by every replica.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::error::{map_error, migrate_error};
use super::invalidation::{CHANNEL, Invalidation, InvalidationSink, MAX_PAYLOAD_BYTES};
use super::{PoolOptions, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long the invalidation feed waits before reconnecting after the database went away.
const LISTEN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// A pooled connection idle this long is pinged before use.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

super::sql::impl_store! {
    store: PostgresStore,
    database: sqlx::Postgres,
    backend: "postgres",
    json_array_elements: "SELECT jsonb_array_elements_text($2::jsonb)",
    wait_for_audit_writers: "LOCK TABLE audit_events IN SHARE MODE",
    wait_for_event_writers: "LOCK TABLE events IN SHARE MODE",
    token_names_role: "tokens.roles::jsonb @> jsonb_build_array($2::text)",
    skip_locked: " FOR UPDATE OF d SKIP LOCKED",
    begin_write: "BEGIN",
}

pub struct PostgresStore {
    /// The admin/usage pool: everything but Check's reads.
    pool: PgPool,
    /// The Check pool (a bulkhead): only `find_credential` and `get_api_status`, so cache misses
    /// queue here, not in front of revocations and flushes.
    check_pool: PgPool,
    /// For the LISTEN connection, which lives outside the pool: it is held for good, and no
    /// statement timeout applies to waiting for notifications.
    listen_options: PgConnectOptions,
}

impl PostgresStore {
    /// Connects, migrates, and keeps a pool whose statements time out, so a stuck database
    /// surfaces as `Unavailable` instead of hanging requests.
    pub async fn connect(url: &str, options: &PoolOptions) -> Result<Self, StoreError> {
        let connect_options = PgConnectOptions::from_str(url)
            .map_err(|error| StoreError::Internal(format!("invalid postgres url: {error}")))?
            .application_name("tessera");
        migrate(&connect_options).await?;

        let pooled_options = connect_options.clone().options([(
            "statement_timeout",
            options.statement_timeout.as_millis().to_string(),
        )]);
        let pool = open_pool(&pooled_options, options.max_connections, options).await?;
        let check_pool = open_pool(&pooled_options, options.check_max_connections, options).await?;
        Ok(Self {
            pool,
            check_pool,
            listen_options: connect_options,
        })
    }

    async fn publish_invalidation(&self, invalidation: &Invalidation) -> Result<(), StoreError> {
        let (payload, fell_back_to) = invalidation.encode_within(MAX_PAYLOAD_BYTES);
        if let Some(coarser) = fell_back_to {
            metrics::counter!("tessera_invalidation_fallbacks_total", "to" => coarser.kind())
                .increment(1);
            tracing::info!(
                from = invalidation.kind(),
                to = coarser.kind(),
                "invalidation too large for one notification; publishing a coarser one"
            );
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    /// Postgres keeps its own write-ahead log; a copy is pg_dump's job.
    async fn checkpoint_on_close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn watch(&self, sink: Arc<dyn InvalidationSink>) -> Option<tokio::task::JoinHandle<()>> {
        // A pool of one only for its reconnecting, as `PgListener::connect` does internally.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.listen_options.clone());
        Some(tokio::spawn(feed_invalidations(listen_pool, sink)))
    }
}

/// A pool of at most `max_connections` over `connect_options`, with `options`' acquire timeout.
async fn open_pool(
    connect_options: &PgConnectOptions,
    max_connections: u32,
    options: &PoolOptions,
) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(options.acquire_timeout)
        // sqlx would ping every connection before handing it out: a round trip on every
        // cache miss. Only connections that sat idle are pinged instead: under load they are
        // in constant use (a dead one fails its query and is replaced), and after an outage
        // the idle ones that died with it are weeded out here rather than each failing a
        // request of its own.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(connect_options.clone())
        .await
        .map_err(map_error)
}

/// Runs until aborted. Whenever the feed (re)connects, notifications may have been missed while
/// it was down, so the whole cache is dropped before it is trusted again. While the feed is down
/// the cache is kept: the database is usually down too, and cached tokens must keep being
/// decided; the cache TTL bounds staleness meanwhile.
async fn feed_invalidations(listen_pool: PgPool, sink: Arc<dyn InvalidationSink>) {
    loop {
        if let Err(error) = listen(&listen_pool, sink.as_ref()).await {
            metrics::counter!("tessera_invalidation_feed_losses_total").increment(1);
            tracing::warn!(%error, "invalidation feed lost; reconnecting");
        }
        tokio::time::sleep(LISTEN_RETRY_DELAY).await;
    }
}

async fn listen(listen_pool: &PgPool, sink: &dyn InvalidationSink) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(listen_pool).await?;
    listener.listen(CHANNEL).await?;
    sink.invalidate_all().await;
    loop {
        match listener.try_recv().await? {
            Some(notification) => {
                metrics::counter!("tessera_invalidations_received_total").increment(1);
                sink.invalidate(&Invalidation::decode(notification.payload()))
                    .await;
            }
            // The connection dropped and was re-established (LISTEN included) before returning.
            None => sink.invalidate_all().await,
        }
    }
}

/// Runs the embedded migrations on a connection of their own.
///
/// sqlx's migrator holds `pg_advisory_lock` while it migrates (locking is on by default and
/// must stay on): that is why any number of replicas may start at once against one database;
/// the first migrates, the others wait and then find nothing to do. The connection is separate
/// from the pool so that neither the wait for that lock nor a long migration is cut short by
/// the pool's `statement_timeout`, and so that the session lock cannot outlive a failed run
/// in a pooled connection: closing the connection releases it.
async fn migrate(connect_options: &PgConnectOptions) -> Result<(), StoreError> {
    let mut connection = connect_options.connect().await.map_err(map_error)?;
    // `run_direct` is `run` without its `Acquire` bound, whose higher-ranked lifetime makes the
    // future not `Send` (sqlx's own workaround), and `connect` must be spawnable.
    MIGRATOR
        .run_direct(None, &mut connection, false)
        .await
        .map_err(migrate_error)?;
    connection.close().await.map_err(map_error)
}
