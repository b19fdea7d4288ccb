//! The credential cache: token records keyed by the secret's SHA-256, with everything Check needs
//! computed at fill time (parsed CIDRs, expanded role grants, the owner's ceiling). It holds
//! records, never decisions, so time, IP and permission are judged fresh on every Check.
//!
//! Unknown hashes are cached negatively for a shorter time, so a flood of made-up but well-formed
//! tokens costs one store query each, not one per request. Concurrent misses for one hash share
//! one load, and a load overtaken by an invalidation of its key is not cached (see `fill`).
//! Writes invalidate entries here and on every replica (see `store::invalidation`); the TTL
//! bounds staleness when everything else fails.
//!
//! API statuses are cached as one entry, the set of switched-off scopes, so that the tenant a
//! Check names (which the caller chooses) costs neither a store lookup nor an entry of its own.
//!
//! Memory is bounded in bytes: each credential weighs an estimate of what it holds
//! ([`credential_weight`]), and the cache keeps at most `max_bytes` of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::decision::Credential;
use crate::domain::fields::{ApiScope, RoleName};
use crate::domain::model::ApiStatus;
use crate::domain::permission::Grant;
use crate::domain::signature::Verifier;
use crate::domain::token::SecretHash;
use crate::store::StoreError;
use crate::store::invalidation::Invalidation;

use super::fill::Flights;

/// A cached lookup: Some(credential), or None for a hash the store does not know.
pub type Entry = Option<Arc<Credential>>;

/// What `capacity` is converted to when it bounds the cache in bytes: a realistic credential
/// (three grants, a role, two networks) weighs about this much (see `benches/cache_memory.rs`).
pub const NOMINAL_CREDENTIAL_BYTES: u64 = 1024;

/// moka's own bookkeeping per entry (node, deques, timer, hash map slot): 340 to 370 bytes
/// measured with empty values by `benches/cache_memory.rs` (BENCHMARKS.md), rounded up.
const ENTRY_OVERHEAD_BYTES: usize = 384;

/// What one unknown hash costs: moka's bookkeeping and the 32-byte key.
const UNKNOWN_ENTRY_BYTES: u64 = (ENTRY_OVERHEAD_BYTES + size_of::<SecretHash>()) as u64;

/// The APIs switched off, by scope (`*` or a tenant); any scope not here is online.
pub type OfflineApis = Arc<HashMap<ApiScope, ApiStatus>>;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most cached credentials, counted at [`NOMINAL_CREDENTIAL_BYTES`] each; 0 turns every
    /// cache off (every Check reads the store).
    pub capacity: u64,
    /// Most bytes the cached credentials may weigh ([`credential_weight`]); the bound in force is
    /// the smaller of this and `capacity` × [`NOMINAL_CREDENTIAL_BYTES`]. Unknown hashes have a
    /// quarter of it on top.
    pub max_bytes: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

impl CacheSettings {
    /// The byte bound of the credential cache.
    pub fn credential_bytes(&self) -> u64 {
        self.capacity
            .saturating_mul(NOMINAL_CREDENTIAL_BYTES)
            .min(self.max_bytes)
    }
}

/// A lookup the store could not answer, shared by every caller that waited on it.
#[derive(Debug, Clone)]
pub struct LookupFailed(Arc<StoreError>);

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An estimate of the memory one cached credential holds: moka's bookkeeping, the key, the
/// value and what it owns on the heap (strings, grants, roles, networks, the signing key's
/// HMAC state). Grants and roles are what vary: a token with hundreds of them weighs hundreds
/// of times more than a plain one, and is evicted that much sooner.
pub fn credential_weight(credential: &Credential) -> u32 {
    let strings = credential.token_id.as_str().len()
        + credential.tenant.as_str().len()
        + credential.owner_id.as_str().len();
    let roles: usize = credential
        .roles
        .iter()
        .map(|role| size_of::<RoleName>() + role.as_str().len())
        .sum();
    let grants: usize = credential
        .effective
        .iter()
        .map(|grant| size_of::<Grant>() + grant.as_str().len())
        .sum();
    let networks = credential.allowed_ips.len() * size_of::<ipnet::IpNet>();
    // Keys and values, and a B-tree slot (two Strings) per entry; held once when shared, but
    // weighed per token, so a token is never weighed lighter than what it may hold alone.
    let metadata = credential.metadata.as_ref().map_or(0, |metadata| {
        metadata.bytes() + metadata.len() * 2 * size_of::<String>()
    });
    let verifier = if credential.verifier.is_some() {
        size_of::<Verifier>()
    } else {
        0
    };
    let policy = credential
        .policy_hold
        .as_ref()
        .map_or(0, |hold| hold.weight());
    let bytes = ENTRY_OVERHEAD_BYTES
        + size_of::<SecretHash>()
        + size_of::<Credential>()
        + strings
        + roles
        + grants
        + networks
        + metadata
        + verifier
        + policy;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The three caches; absent when caching is off.
struct Caches {
    credentials: moka::sync::Cache<SecretHash, Arc<Credential>>,
    /// Hashes the store does not know, kept apart with their own shorter TTL: one fixed TTL per
    /// cache is cheaper per entry than moka's per-entry expiry, and memory per token is budgeted.
    unknown: moka::sync::Cache<SecretHash, ()>,
    /// Loads of credentials and unknown hashes in flight (one flight per hash for both caches).
    credential_fills: Flights<SecretHash, Result<Entry, LookupFailed>>,
    /// One entry: what `offline_api_statuses` read.
    offline_apis: moka::sync::Cache<(), OfflineApis>,
    offline_api_fills: Flights<(), Result<OfflineApis, Arc<StoreError>>>,
}

impl Caches {
    fn cached_credential(&self, hash: &SecretHash) -> Option<Entry> {
        if let Some(credential) = self.credentials.get(hash) {
            return Some(Some(credential));
        }
        self.unknown.contains_key(hash).then_some(None)
    }
}

pub struct CredentialCache {
    caches: Option<Caches>,
}

impl CredentialCache {
    pub fn new(settings: &CacheSettings) -> Self {
        if settings.capacity == 0 {
            return Self { caches: None };
        }
        let credentials = moka::sync::Cache::builder()
            .max_capacity(settings.credential_bytes())
            .weigher(|_, credential: &Arc<Credential>| credential_weight(credential))
            .time_to_live(settings.ttl)
            // Owner and role changes find their entries by predicate; token writes go by hash.
            .support_invalidation_closures()
            .build();
        let unknown = moka::sync::Cache::builder()
            .max_capacity((settings.credential_bytes() / 4 / UNKNOWN_ENTRY_BYTES).max(1))
            .time_to_live(settings.negative_ttl)
            .build();
        let offline_apis = moka::sync::Cache::builder()
            .max_capacity(1)
            .time_to_live(settings.ttl)
            .build();
        Self {
            caches: Some(Caches {
                credentials,
                unknown,
                credential_fills: Flights::new(),
                offline_apis,
                offline_api_fills: Flights::new(),
            }),
        }
    }

    /// The cached entry for `hash`, or the result of `load` (shared by concurrent callers).
    /// Errors are not cached: the next call tries the store again. A load that an invalidation
    /// of `hash` overtook is returned to the callers that waited for it but not cached.
    pub async fn credential<F>(&self, hash: SecretHash, load: F) -> Result<Entry, LookupFailed>
    where
        F: Future<Output = Result<Entry, StoreError>>,
    {
        static REQUESTS: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        REQUESTS
            .get_or_init(|| metrics::counter!("tessera_cache_requests_total"))
            .increment(1);
        let Some(caches) = &self.caches else {
            return load.await.map_err(|error| LookupFailed(Arc::new(error)));
        };
        if let Some(entry) = caches.cached_credential(&hash) {
            return Ok(entry);
        }
        let load = async { load.await.map_err(|error| LookupFailed(Arc::new(error))) };
        let keep = |outcome: &Result<Entry, LookupFailed>| match outcome {
            Ok(Some(credential)) => caches.credentials.insert(hash, credential.clone()),
            Ok(None) => caches.unknown.insert(hash, ()),
            Err(_) => {}
        };
        caches
            .credential_fills
            .get_or_load(
                &hash,
                || caches.cached_credential(&hash).map(Ok),
                load,
                keep,
            )
            .await
    }

    /// The switched-off APIs, cached, or the result of `load` (shared by concurrent callers);
    /// errors are not cached.
    pub async fn offline_apis<F>(&self, load: F) -> Result<OfflineApis, Arc<StoreError>>
    where
        F: Future<Output = Result<OfflineApis, StoreError>>,
    {
        let Some(caches) = &self.caches else {
            return load.await.map_err(Arc::new);
        };
        if let Some(offline) = caches.offline_apis.get(&()) {
            return Ok(offline);
        }
        let load = async { load.await.map_err(Arc::new) };
        let keep = |outcome: &Result<OfflineApis, Arc<StoreError>>| {
            if let Ok(offline) = outcome {
                caches.offline_apis.insert((), offline.clone());
            }
        };
        caches
            .offline_api_fills
            .get_or_load(&(), || caches.offline_apis.get(&()).map(Ok), load, keep)
            .await
    }

    pub async fn invalidate(&self, invalidation: &Invalidation) {
        let Some(caches) = &self.caches else {
            return;
        };
        match invalidation {
            Invalidation::Secrets(hashes) | Invalidation::TokenSecrets { hashes, .. } => {
                for hash in hashes {
                    caches.credential_fills.overtake(hash, || {
                        caches.unknown.invalidate(hash);
                        caches.credentials.invalidate(hash);
                    });
                }
            }
            Invalidation::Token(token_id) => {
                let token_id = token_id.clone();
                // The token's new secret may be among the unknown hashes (or being looked up as
                // one); negative entries are cheap to refill.
                caches
                    .credential_fills
                    .overtake_all(|| caches.unknown.invalidate_all());
                self.invalidate_where(move |credential| credential.token_id == token_id);
            }
            Invalidation::Owner { tenant, owner_id } => {
                let (tenant, owner_id) = (tenant.clone(), owner_id.clone());
                self.invalidate_where(move |credential| {
                    credential.tenant == tenant && credential.owner_id == owner_id
                });
            }
            Invalidation::Role { tenant, name } => {
                let (tenant, name) = (tenant.clone(), name.clone());
                self.invalidate_where(move |credential| {
                    credential.tenant == tenant && credential.roles.contains(&name)
                });
            }
            Invalidation::TenantPolicy(tenant) => {
                let tenant = tenant.clone();
                self.invalidate_where(move |credential| credential.tenant == tenant);
            }
            Invalidation::ApiStatus(_) => caches
                .offline_api_fills
                .overtake(&(), || caches.offline_apis.invalidate(&())),
            // Admin keys are not Check's: `grpc::auth` holds them.
            Invalidation::AdminKey(_) => {}
            Invalidation::Everything => self.invalidate_all(),
        }
    }

    /// Drops the credentials `matches` selects. Which hashes a load in flight will turn out to
    /// belong to is unknown until it lands, so every credential load in flight is overtaken.
    fn invalidate_where(&self, matches: impl Fn(&Credential) -> bool + Send + Sync + 'static) {
        let Some(caches) = &self.caches else {
            return;
        };
        let predicate = move |_: &SecretHash, credential: &Arc<Credential>| matches(credential);
        caches.credential_fills.overtake_all(|| {
            if let Err(error) = caches.credentials.invalidate_entries_if(predicate) {
                // Only possible if closures were not enabled at build time; fail safe.
                tracing::error!(error = %error, "predicate invalidation failed; dropping the whole cache");
                caches.credentials.invalidate_all();
            }
        });
    }

    /// Drops everything, e.g. after the invalidation feed was interrupted and events may be lost.
    pub fn invalidate_all(&self) {
        let Some(caches) = &self.caches else {
            return;
        };
        caches.credential_fills.overtake_all(|| {
            caches.credentials.invalidate_all();
            caches.unknown.invalidate_all();
        });
        caches
            .offline_api_fills
            .overtake_all(|| caches.offline_apis.invalidate_all());
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub async fn entry_count(&self) -> u64 {
        match &self.caches {
            Some(caches) => {
                caches.credentials.run_pending_tasks();
                caches.credentials.entry_count()
            }
            None => 0,
        }
    }

    /// The estimated bytes the cached credentials weigh (after pending maintenance).
    pub fn weighted_size(&self) -> u64 {
        match &self.caches {
            Some(caches) => {
                caches.credentials.run_pending_tasks();
                caches.credentials.weighted_size()
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    fn credential(grants: usize) -> Credential {
        Credential {
            effective: (0..grants)
                .map(|index| Grant::parse(&format!("resource{index}:read")).expect("grant"))
                .collect(),
            ..fixtures::credential()
        }
    }

    async fn fill(cache: &CredentialCache, count: usize, grants: usize) {
        for index in 0..count {
            let entry = Some(Arc::new(credential(grants)));
            let hash = SecretHash::of(&format!("{grants}-{index}"));
            let loaded = cache
                .credential(hash, async move { Ok::<_, StoreError>(entry) })
                .await;
            assert!(loaded.is_ok());
        }
    }

    fn settings(max_bytes: u64) -> CacheSettings {
        CacheSettings {
            capacity: 1_000_000,
            max_bytes,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_credential_weighs_more_with_every_grant() {
        let plain = credential_weight(&credential(3));
        let fat = credential_weight(&credential(300));
        assert!(plain < 1024, "a plain credential weighs {plain} bytes");
        assert!(fat > 50 * plain / 4, "300 grants weigh only {fat} bytes");
    }

    #[tokio::test]
    async fn fat_credentials_are_evicted_sooner_and_the_bytes_stay_bounded() {
        let budget = 100 * u64::from(credential_weight(&credential(3)));

        let plain = CredentialCache::new(&settings(budget));
        fill(&plain, 100, 3).await;
        let plain_held = plain.entry_count().await;

        let fat = CredentialCache::new(&settings(budget));
        fill(&fat, 100, 300).await;
        let fat_held = fat.entry_count().await;

        assert!(plain_held >= 90, "only {plain_held} plain credentials kept");
        assert!(fat_held <= 10, "{fat_held} fat credentials kept");
        assert!(plain.weighted_size() <= budget);
        assert!(fat.weighted_size() <= budget);
    }

    #[test]
    fn the_entry_count_setting_still_bounds_the_cache_at_its_nominal_size() {
        let mut bounded = settings(u64::MAX);
        bounded.capacity = 1000;
        assert_eq!(bounded.credential_bytes(), 1000 * NOMINAL_CREDENTIAL_BYTES);
        bounded.max_bytes = 4096;
        assert_eq!(bounded.credential_bytes(), 4096);
    }
}
