//! State shared by every replica, on Redis: rate limits that hold for the fleet as a whole,
//! replay protection that refuses a signature wherever it was first used, and the number of
//! live replicas.
//!
//! - [`Fleet::check`] takes one request from a limit (`limits`): GCRA with burst = limit and a
//!   steady rate of limit per minute, the fleet's admissions together conforming to one such
//!   limiter. A high limit is leased to each replica in slices and spent locally, so it costs no
//!   round trip per check; a low limit asks Redis every time. The guarantee and its worst cases
//!   are stated in `limits`.
//! - [`Fleet::first_use`] remembers a verified signature for the fleet (`replay`), bounded per
//!   token so that no token can push out another's signatures.
//! - Each replica keeps a heartbeat (its id with an expiry) in one sorted set, so every replica
//!   knows how many are live.
//!
//! Redis is never waited for beyond [`FleetSettings::command_timeout`]; a check whose call
//! misses it is decided locally. An error, three timeouts in a row, or a heartbeat slower than
//! ten bounds marks the fleet **degraded** (logged once per transition, `tessera_shared_state_degraded`):
//! limits are then decided by a local GCRA at limit ÷ live replicas (at least 1) and
//! [`Fleet::first_use`] answers [`ReplayVerdict::Unavailable`], so the caller uses its own
//! replay guard. A background probe (the heartbeat) clears the flag once Redis answers within
//! the bound again.
//!
//! Keys: `<prefix>:{t:<token id>}` (a token's limit), `<prefix>:{t:<token id>}:replay` (its
//! signatures), `<prefix>:{p:<tenant>/<principal>}` (a principal's shared limit),
//! `<prefix>:{replicas}` (the heartbeats). The braces are Redis Cluster hash tags: a token's keys
//! live in one slot, so each script touches one node.

mod connection;
mod limits;
pub(crate) mod local;
mod replay;
#[cfg(test)]
mod tests;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::fields::{PrincipalId, Tenant, TokenId};
use crate::domain::signature::SignatureId;

use connection::Shared;

/// Default bound on each Redis call made for a Check.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(5);
/// Default bound on establishing a connection (never waited for by a Check).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default interval between heartbeats while Redis is reachable; a replica is live for three.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default interval between probes while degraded.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Default time a lease may be spent for, from the moment it was asked for.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_millis(250);
/// Default share of local traffic one lease is sized to cover.
pub const DEFAULT_LEASE_TARGET: Duration = Duration::from_millis(50);
/// Default lowest limit that is leased; lower limits ask Redis on every check.
pub const DEFAULT_LEASE_MIN_PER_MINUTE: u32 = 600;
/// Default number of signatures remembered per token, as the local replay guard's default.
pub const DEFAULT_REPLAY_TOKEN_QUOTA: u64 = 4_096;
/// Default prefix of every key.
pub const DEFAULT_KEY_PREFIX: &str = "tessera";

/// Where Redis is. Credentials go in the URL (`redis://user:password@host:6379/0`); `rediss://`
/// is TLS (rustls; the system's roots unless [`FleetSettings::tls_root_certificate`]). A managed
/// Redis or a proxy in front of Sentinel is a [`RedisEndpoint::Server`].
#[derive(Debug, Clone)]
pub enum RedisEndpoint {
    Server(SecretString),
    /// Redis Cluster: seed nodes, each a URL as above; the rest are discovered.
    Cluster(Vec<SecretString>),
}

/// How the fleet talks to Redis. Built by the server's settings; `new` gives the defaults.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    pub endpoint: RedisEndpoint,
    /// Prefix of every key, so deployments can share one Redis. No `{` or `}`.
    pub key_prefix: String,
    /// This replica's name in the heartbeats and lease records; unique per process.
    pub replica_id: String,
    /// Longest a Check waits for Redis; past it the check is decided locally.
    pub command_timeout: Duration,
    /// Longest a background (re)connection may take.
    pub connect_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub probe_interval: Duration,
    /// How long after asking for it a replica may spend a lease (see `limits`).
    pub lease_ttl: Duration,
    /// A lease is sized to cover this much of the replica's observed rate.
    pub lease_target: Duration,
    /// Limits below this go to Redis on every check.
    pub lease_min_per_minute: u32,
    /// Most signatures remembered per token (its oldest are forgotten beyond).
    pub replay_token_quota: u64,
    /// PEM of the authority that signs Redis's certificate (`rediss://`), when it is not among
    /// the system's roots (a private or managed Redis's own CA).
    pub tls_root_certificate: Option<Vec<u8>>,
}

impl FleetSettings {
    pub fn new(endpoint: RedisEndpoint) -> Self {
        Self {
            endpoint,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            replica_id: ulid::Ulid::new().to_string(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            lease_ttl: DEFAULT_LEASE_TTL,
            lease_target: DEFAULT_LEASE_TARGET,
            lease_min_per_minute: DEFAULT_LEASE_MIN_PER_MINUTE,
            replay_token_quota: DEFAULT_REPLAY_TOKEN_QUOTA,
            tls_root_certificate: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The URL or seed list does not describe a Redis (the URL itself is not repeated: it may
    /// hold a password).
    #[error("invalid redis endpoint: {0}")]
    InvalidEndpoint(String),
    #[error("invalid key prefix: must not contain '{{' or '}}'")]
    InvalidKeyPrefix,
}

/// What a limit is kept for: a token, or a principal's limit shared by its tokens. Cheap to
/// clone; build it once per credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey(Arc<str>);

impl LimitKey {
    pub fn token(token: &TokenId) -> Self {
        Self(format!("t:{token}").into())
    }

    /// Tenants and principal ids never contain `/` (`domain::fields`), so the pair is
    /// unambiguous.
    pub fn principal(tenant: &Tenant, principal: &PrincipalId) -> Self {
        Self(format!("p:{tenant}/{principal}").into())
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer of [`Fleet::check`], as `authz::rate_limit` answers today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `remaining` more requests fit now; the whole burst is back after `reset`.
    Allowed { remaining: u32, reset: Duration },
    /// The next request fits after `reset`.
    Limited { reset: Duration },
}

/// The answer of [`Fleet::first_use`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// No replica has seen this signature within its window; it is remembered now.
    First,
    /// Some replica saw it first.
    Replayed,
    /// Redis did not answer within the bound (or the fleet is degraded): the caller decides
    /// with its local replay guard (or refuses, if it prefers to fail closed).
    Unavailable,
}

/// For health details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetStatus {
    pub degraded: bool,
    /// Replicas with a live heartbeat, as last seen (at least 1: this one).
    pub live_replicas: u32,
}

/// The handle to the shared state: one per process, cheap to clone. Its background task (the
/// heartbeat, the probe, returning idle leases) stops when the last clone is dropped.
#[derive(Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
}

impl Fleet {
    /// Starts the shared state. Redis need not be up: the fleet then starts degraded and
    /// recovers when it answers. Only a malformed endpoint or prefix is an error.
    pub async fn connect(settings: FleetSettings) -> Result<Self, FleetError> {
        let shared = Shared::start(settings).await?;
        Ok(Self { shared })
    }

    /// Takes one request from `key`'s budget of `per_minute` (burst `per_minute`).
    pub async fn check(&self, key: &LimitKey, per_minute: NonZeroU32) -> Verdict {
        limits::check(&self.shared, key, per_minute).await
    }

    /// Whether `signature` of `token` is used here for the first time in the fleet; remembered
    /// for `remember_for` (the signature window's span).
    pub async fn first_use(
        &self,
        token: &TokenId,
        signature: &SignatureId,
        remember_for: Duration,
    ) -> ReplayVerdict {
        replay::first_use(&self.shared, token, signature, remember_for).await
    }

    pub fn status(&self) -> FleetStatus {
        self.shared.status()
    }

    pub fn replica_id(&self) -> &str {
        &self.shared.settings.replica_id
    }

    /// For shutdown: gives back the unspent part of every lease and leaves the heartbeats, so
    /// other replicas get the budget and the count at once. Bounded like every call.
    pub async fn close(&self) {
        limits::give_back_all(&self.shared).await;
        self.shared.leave().await;
    }
}
