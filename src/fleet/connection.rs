//! The connection to Redis (one server or a cluster), every call bounded and measured, the
//! degraded flag, and the background task: heartbeat, probe and giving back idle leases.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, Script, ScriptInvocation, TlsCertificates};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use super::{FleetError, FleetSettings, FleetStatus, RedisEndpoint, limits, local};

/// A replica's heartbeat lasts this many intervals: one lost heartbeat does not drop it.
const HEARTBEATS_PER_LIFETIME: u32 = 3;
/// The background task's shortest sleep.
const MIN_TICK: Duration = Duration::from_millis(10);
/// Consecutive calls past the Check bound that mark the fleet degraded. One slow answer (a GC
/// pause, a loaded node) costs only the Check that waited for it, decided locally; a Redis
/// that stays slow degrades at the third. An error (refused, reset) degrades at once.
const TIMEOUTS_TO_DEGRADE: u32 = 3;
/// The heartbeat is no Check's wait: while healthy it may take this many Check bounds before it
/// counts as a failure (recovering still needs one within the bound, see `beat`).
const HEARTBEAT_BOUNDS: u32 = 10;

/// Removes the expired heartbeats, renews (or, with ARGV[3] = 1, removes) this replica's, and
/// counts the live ones. KEYS[1]: the replicas' sorted set, scored by expiry in ms.
/// ARGV[1]: replica id. ARGV[2]: lifetime in ms.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lifetime = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + lifetime), ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], lifetime * 2)
return redis.call('ZCARD', KEYS[1])
",
    )
});

/// Why a call gave no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl CallError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Redis(_) => "error",
        }
    }
}

enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Lazy in both cases: nothing is reached here, so a Redis that is down at start only makes
    /// the fleet start degraded.
    fn open(settings: &FleetSettings) -> Result<Self, FleetError> {
        let invalid = |error: redis::RedisError| FleetError::InvalidEndpoint(error.to_string());
        match &settings.endpoint {
            RedisEndpoint::Server(url) => {
                let client = match tls_roots(settings) {
                    Some(roots) => redis::Client::build_with_tls(url.expose_secret(), roots),
                    None => redis::Client::open(url.expose_secret()),
                }
                .map_err(invalid)?;
                // Reconnects are driven by the calls and the probe; each is bounded by the
                // caller, so the manager itself only needs to try once per trigger.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(None)
                    .set_number_of_retries(1)
                    .set_max_delay(settings.probe_interval);
                ConnectionManager::new_lazy_with_config(client, config)
                    .map(Self::Server)
                    .map_err(invalid)
            }
            RedisEndpoint::Cluster(seeds) => {
                if seeds.is_empty() {
                    return Err(FleetError::InvalidEndpoint(
                        "a cluster needs at least one seed node".to_owned(),
                    ));
                }
                let mut builder = ClusterClientBuilder::new(
                    seeds.iter().map(|seed| seed.expose_secret().to_owned()),
                )
                .connection_timeout(settings.connect_timeout)
                .retries(1);
                if let Some(roots) = tls_roots(settings) {
                    builder = builder.certs(roots);
                }
                let client = builder.build().map_err(invalid)?;
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(ClusterConfig::new()),
                ))
            }
        }
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        match self {
            Self::Server(manager) => invocation.invoke_async(&mut manager.clone()).await,
            Self::Cluster(cluster) => invocation.invoke_async(&mut cluster.clone()).await,
        }
    }
}

fn tls_roots(settings: &FleetSettings) -> Option<TlsCertificates> {
    settings
        .tls_root_certificate
        .as_ref()
        .map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        })
}

/// Everything the handles share.
pub(super) struct Shared {
    pub(super) settings: FleetSettings,
    connection: Connection,
    degraded: AtomicBool,
    /// Calls past the bound since the last answer within it.
    timeouts: AtomicU32,
    /// Live replicas as the last heartbeat counted them; the fallback divides limits by it.
    live_replicas: AtomicU32,
    pub(super) limits: limits::Limits,
    pub(super) local: local::LocalLimits,
    replicas_key: String,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub(super) async fn start(settings: FleetSettings) -> Result<Arc<Self>, FleetError> {
        if settings.key_prefix.contains(['{', '}']) {
            return Err(FleetError::InvalidKeyPrefix);
        }
        let connection = Connection::open(&settings)?;
        let shared = Arc::new(Self {
            replicas_key: format!("{}:{{replicas}}", settings.key_prefix),
            limits: limits::Limits::new(),
            local: local::LocalLimits::new(),
            settings,
            connection,
            degraded: AtomicBool::new(false),
            timeouts: AtomicU32::new(0),
            live_replicas: AtomicU32::new(1),
            background: Mutex::new(None),
        });
        // The first heartbeat may have to connect: it gets the connection's bound.
        let started = Instant::now();
        let connect_timeout = shared.settings.connect_timeout;
        match shared.heartbeat_within(connect_timeout, false).await {
            Ok(()) => {
                metrics::gauge!("tessera_shared_state_degraded").set(0.0);
                tracing::info!(
                    replica_id = %shared.settings.replica_id,
                    live_replicas = shared.live_replicas.load(Ordering::Relaxed),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "shared state on redis"
                );
            }
            Err(error) => shared.degrade("heartbeat", &error),
        }
        let task = tokio::spawn(background(Arc::downgrade(&shared)));
        *shared.lock_background() = Some(task);
        Ok(shared)
    }

    fn lock_background(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        // Only ever holds a join handle: a poisoned lock holds a valid one.
        self.background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn status(&self) -> FleetStatus {
        FleetStatus {
            degraded: self.is_degraded(),
            live_replicas: self.live_replicas(),
        }
    }

    pub(super) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub(super) fn live_replicas(&self) -> u32 {
        self.live_replicas.load(Ordering::Relaxed).max(1)
    }

    pub(super) fn key(&self, hash_tag: &str, suffix: &str) -> String {
        format!("{}:{{{hash_tag}}}{suffix}", self.settings.key_prefix)
    }

    /// One script call, bounded by the Check bound, timed and counted. An error marks the
    /// fleet degraded; so does the [`TIMEOUTS_TO_DEGRADE`]th timeout in a row.
    pub(super) async fn call<T: FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, CallError> {
        let result = self
            .call_within(operation, invocation, self.settings.command_timeout)
            .await;
        match &result {
            Ok(_) => self.timeouts.store(0, Ordering::Relaxed),
            Err(error @ CallError::Timeout(_)) => {
                if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_DEGRADE {
                    self.degrade(operation, error);
                }
            }
            Err(error) => self.degrade(operation, error),
        }
        result
    }

    async fn call_within<T: FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: &ScriptInvocation<'_>,
        bound: Duration,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(bound, self.connection.invoke(invocation)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(CallError::Redis(error)),
            Err(_) => Err(CallError::Timeout(bound)),
        };
        metrics::histogram!("tessera_redis_request_duration_seconds", "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            metrics::counter!("tessera_redis_errors_total", "operation" => operation, "kind" => error.kind())
                .increment(1);
        }
        result
    }

    /// Logged and counted once per transition; the probe clears it.
    fn degrade(&self, operation: &'static str, error: &CallError) {
        if self.degraded.swap(true, Ordering::SeqCst) {
            return;
        }
        metrics::gauge!("tessera_shared_state_degraded").set(1.0);
        metrics::counter!("tessera_shared_state_degradations_total").increment(1);
        tracing::warn!(
            operation,
            error = %error,
            live_replicas = self.live_replicas(),
            "shared state unreachable; rate limits fall back to this replica's share and replay checks to its own guard"
        );
    }

    fn recover(&self) {
        if !self.degraded.swap(false, Ordering::SeqCst) {
            return;
        }
        metrics::gauge!("tessera_shared_state_degraded").set(0.0);
        tracing::info!(
            live_replicas = self.live_replicas(),
            "shared state reachable again; rate limits and replay checks are shared again"
        );
    }

    async fn heartbeat_within(&self, bound: Duration, leave: bool) -> Result<(), CallError> {
        let lifetime = self.settings.heartbeat_interval * HEARTBEATS_PER_LIFETIME;
        let mut invocation = HEARTBEAT.prepare_invoke();
        invocation
            .key(&self.replicas_key)
            .arg(&self.settings.replica_id)
            .arg(
                u64::try_from(lifetime.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(if leave { "1" } else { "0" });
        let live: u32 = self.call_within("heartbeat", &invocation, bound).await?;
        if !leave {
            self.live_replicas.store(live.max(1), Ordering::Relaxed);
            metrics::gauge!("tessera_shared_state_live_replicas").set(f64::from(live.max(1)));
        }
        Ok(())
    }

    /// While healthy: a heartbeat under the Check bound (a slow Redis degrades). While
    /// degraded: a probe that may take the connection's bound (it may have to reconnect) but
    /// recovers only if it answered within the Check bound, so a Redis slower than the bound
    /// stays degraded instead of flapping.
    async fn beat(&self) {
        if !self.is_degraded() {
            let bound = self.settings.command_timeout * HEARTBEAT_BOUNDS;
            if let Err(error) = self.heartbeat_within(bound, false).await {
                self.degrade("heartbeat", &error);
            }
            return;
        }
        let started = Instant::now();
        let answered = self
            .heartbeat_within(self.settings.connect_timeout, false)
            .await;
        if answered.is_ok() && started.elapsed() <= self.settings.command_timeout {
            self.timeouts.store(0, Ordering::Relaxed);
            self.recover();
        }
    }

    /// Removes this replica's heartbeat.
    pub(super) async fn leave(&self) {
        if let Err(error) = self
            .heartbeat_within(self.settings.command_timeout, true)
            .await
        {
            tracing::debug!(error = %error, "cannot remove this replica's heartbeat");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.lock_background().take() {
            task.abort();
        }
    }
}

/// Heartbeats (or probes) and gives back leases left idle, until the handles are gone.
async fn background(shared: Weak<Shared>) {
    let Some(tick) = shared.upgrade().map(|shared| {
        let settings = &shared.settings;
        (settings.lease_ttl / 2)
            .min(settings.heartbeat_interval)
            .min(settings.probe_interval)
            .max(MIN_TICK)
    }) else {
        return;
    };
    let mut last_beat = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let due = if shared.is_degraded() {
            shared.settings.probe_interval
        } else {
            shared.settings.heartbeat_interval
        };
        if last_beat.elapsed() >= due {
            last_beat = Instant::now();
            shared.beat().await;
        }
        if !shared.is_degraded() {
            limits::give_back_idle(&shared).await;
        }
    }
}
