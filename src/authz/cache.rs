//! The credential cache: token records keyed by the secret's SHA-256, with everything Check needs
//! computed at fill time (parsed CIDRs, expanded role grants, the owner's ceiling). It holds
//! records, never decisions, so time, IP and permission are judged fresh on every Check.
//!
//! Unknown hashes are cached negatively for a shorter time, so a flood of made-up but well-formed
//! tokens costs one store query each, not one per request. Concurrent misses for one hash share
//! one load (moka's `try_get_with`). Writes invalidate entries here and on every replica (see
//! `store::invalidation`); the TTL bounds staleness when everything else fails.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::decision::Credential;
use crate::domain::fields::ApiScope;
use crate::domain::model::ApiStatus;
use crate::domain::token::SecretHash;
use crate::store::StoreError;
use crate::store::invalidation::Invalidation;

/// A cached lookup: Some(credential), or None for a hash the store does not know.
pub type Entry = Option<Arc<Credential>>;

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most cached credentials; 0 turns every cache off (every Check reads the store).
    pub capacity: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
}

/// Why a coalesced load produced no credential: shared by every caller waiting on that load.
#[derive(Debug)]
enum Miss {
    Unknown,
    Store(StoreError),
}

/// A lookup the store could not answer, shared by every caller that waited on it.
#[derive(Debug, Clone)]
pub struct LookupFailed(Arc<Miss>);

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Miss::Store(error) => error.fmt(f),
            Miss::Unknown => f.write_str("unknown token"),
        }
    }
}

pub struct CredentialCache {
    credentials: Option<moka::future::Cache<SecretHash, Arc<Credential>>>,
    /// Hashes the store does not know, kept apart with their own shorter TTL: one fixed TTL per
    /// cache is cheaper per entry than moka's per-entry expiry, and memory per token is budgeted.
    unknown: Option<moka::future::Cache<SecretHash, ()>>,
    api_statuses: Option<moka::future::Cache<ApiScope, Arc<ApiStatus>>>,
}

impl CredentialCache {
    pub fn new(settings: &CacheSettings) -> Self {
        if settings.capacity == 0 {
            return Self {
                credentials: None,
                unknown: None,
                api_statuses: None,
            };
        }
        let credentials = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.ttl)
            // Owner and role changes find their entries by predicate; token writes go by hash.
            .support_invalidation_closures()
            .build();
        let unknown = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.negative_ttl)
            .build();
        let api_statuses = moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(settings.ttl)
            .build();
        Self {
            credentials: Some(credentials),
            unknown: Some(unknown),
            api_statuses: Some(api_statuses),
        }
    }

    /// The cached entry for `hash`, or the result of `load` (shared by concurrent callers).
    /// Errors are not cached: the next call tries the store again.
    pub async fn credential<F>(&self, hash: SecretHash, load: F) -> Result<Entry, LookupFailed>
    where
        F: Future<Output = Result<Entry, StoreError>>,
    {
        metrics::counter!("tessera_cache_requests_total").increment(1);
        let (Some(credentials), Some(unknown)) = (&self.credentials, &self.unknown) else {
            return load
                .await
                .map_err(|error| LookupFailed(Arc::new(Miss::Store(error))));
        };
        if unknown.contains_key(&hash) {
            return Ok(None);
        }
        let load = async {
            match load.await {
                Ok(Some(credential)) => Ok(credential),
                Ok(None) => Err(Miss::Unknown),
                Err(error) => Err(Miss::Store(error)),
            }
        };
        match credentials.try_get_with(hash, load).await {
            Ok(credential) => Ok(Some(credential)),
            Err(miss) => match *miss {
                Miss::Unknown => {
                    unknown.insert(hash, ()).await;
                    Ok(None)
                }
                Miss::Store(_) => Err(LookupFailed(miss)),
            },
        }
    }

    pub async fn api_status<F>(
        &self,
        scope: &ApiScope,
        load: F,
    ) -> Result<Arc<ApiStatus>, Arc<StoreError>>
    where
        F: Future<Output = Result<Arc<ApiStatus>, StoreError>>,
    {
        match &self.api_statuses {
            Some(cache) => cache.try_get_with_by_ref(scope, load).await,
            None => load.await.map_err(Arc::new),
        }
    }

    pub async fn invalidate(&self, invalidation: &Invalidation) {
        let (Some(credentials), Some(api_statuses)) = (&self.credentials, &self.api_statuses)
        else {
            return;
        };
        match invalidation {
            Invalidation::Secrets(hashes) | Invalidation::TokenSecrets { hashes, .. } => {
                for hash in hashes {
                    if let Some(unknown) = &self.unknown {
                        unknown.invalidate(hash).await;
                    }
                    credentials.invalidate(hash).await;
                }
            }
            Invalidation::Token(token_id) => {
                let token_id = token_id.clone();
                self.invalidate_where(move |credential| credential.token_id == token_id);
                // The token's new secret may be among them; negative entries are cheap to refill.
                if let Some(unknown) = &self.unknown {
                    unknown.invalidate_all();
                }
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
            Invalidation::ApiStatus(scope) => api_statuses.invalidate(scope).await,
            Invalidation::Everything => self.invalidate_all(),
        }
    }

    fn invalidate_where(&self, matches: impl Fn(&Credential) -> bool + Send + Sync + 'static) {
        let Some(credentials) = &self.credentials else {
            return;
        };
        let predicate = move |_: &SecretHash, credential: &Arc<Credential>| matches(credential);
        if let Err(error) = credentials.invalidate_entries_if(predicate) {
            // Only possible if closures were not enabled at build time; fail safe.
            tracing::error!(error = %error, "predicate invalidation failed; dropping the whole cache");
            credentials.invalidate_all();
        }
    }

    /// Drops everything, e.g. after the invalidation feed was interrupted and events may be lost.
    pub fn invalidate_all(&self) {
        if let Some(credentials) = &self.credentials {
            credentials.invalidate_all();
        }
        if let Some(unknown) = &self.unknown {
            unknown.invalidate_all();
        }
        if let Some(api_statuses) = &self.api_statuses {
            api_statuses.invalidate_all();
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.credentials.is_some()
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub async fn entry_count(&self) -> u64 {
        match &self.credentials {
            Some(cache) => {
                cache.run_pending_tasks().await;
                cache.entry_count()
            }
            None => 0,
        }
    }
}
