//! Admin authentication and authorization: `authorization: Bearer <admin key>`, compared by
//! SHA-256, then the right the RPC needs (`admin::rights`).
//!
//! Admin keys and API tokens live in different tables and are checked by different code, so an
//! API token is never accepted as an admin key (and an admin key's `tsa` prefix fails Check's
//! parse). A key is either configured (`TESSERA_ADMIN_KEYS`: an owner of every tenant, compared
//! in constant time) or stored (CreateAdminKey or the bootstrap: looked up by hash, with its role
//! and tenants). A stored key that is revoked or expired is refused, and so is the bootstrap key
//! while keys are configured.
//!
//! Stored keys are held in memory once found, and forgotten on every replica when one is revoked
//! (`Invalidation::AdminKey`, the path a token's revocation takes); [`KEY_TTL`] bounds how long a
//! replica that missed the notification keeps one. A key the store does not know is remembered as
//! unknown (by hash, bounded, for [`UNKNOWN_KEY_TTL`]), so a caller repeating bad keys costs the
//! admin pool nothing after the first lookup of each; refusals are counted in
//! `tessera_admin_auth_failures_total{reason}` and logged at most once per [`WARN_EVERY`] with
//! the number left unlogged, never with the key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tonic::Request;
use tonic::metadata::MetadataMap;

use crate::admin::{Actor, rights};
use crate::domain::admin_key::{self, AdminKey, AdminKeyId, AdminRole, TenantScope};
use crate::domain::token::SecretHash;
use crate::grpc::status;
use crate::store::Store;
use crate::store::invalidation::{Invalidation, InvalidationSink};

const ACTOR_HEADER: &str = "x-tessera-actor";
const MAX_ACTOR_LEN: usize = 128;

/// How long a key the store did not know stays known as unknown. Short, so a key stored after a
/// refusal (the bootstrap of a replica that started beside this one) works within seconds; keys
/// are only ever added, so a stale entry can delay a new key but never admit a removed one.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);
/// Most unknown keys remembered: 32 bytes of hash each, so a flood of distinct bad keys costs at
/// most about 2 MiB with moka's overhead, and the oldest fall out.
const UNKNOWN_KEY_CAPACITY: u64 = 16_384;
/// How long a found key is kept without a lookup: the bound on a revocation whose notification
/// a replica missed (the feed's reconnect drops everything anyway), as the Check cache's TTL is.
pub const KEY_TTL: Duration = Duration::from_secs(60);
/// Most stored keys held in memory; each is small, and only keys that authenticated get in.
const KEY_CAPACITY: u64 = 10_000;
/// A key's `last_used_at` is written at most once per this interval per replica.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// At most one warning per this interval about refused admin keys.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The stored admin keys this replica has found, forgotten when any is revoked anywhere.
pub struct KeyCache {
    keys: moka::future::Cache<[u8; 32], Arc<AdminKey>>,
    /// Bumped by every invalidation, so a lookup that started before one is not cached after it
    /// (it may have read the key just before its revocation committed).
    generation: AtomicU64,
}

impl KeyCache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            keys: moka::future::Cache::builder()
                .max_capacity(KEY_CAPACITY)
                .time_to_live(KEY_TTL)
                .build(),
            generation: AtomicU64::new(0),
        })
    }
}

#[async_trait::async_trait]
impl InvalidationSink for KeyCache {
    async fn invalidate(&self, invalidation: &Invalidation) {
        if matches!(
            invalidation,
            Invalidation::AdminKey(_) | Invalidation::Everything
        ) {
            // Revocations are rare: forgetting every key costs one lookup per key after.
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.keys.invalidate_all();
        }
    }
}

pub struct AdminAuth {
    /// Hashes of the keys from settings; other keys are looked up in the store.
    configured: Vec<SecretHash>,
    store: Arc<dyn Store>,
    keys: Arc<KeyCache>,
    /// Hashes the store answered "no such key" for, recently: refused without a lookup.
    unknown_keys: moka::future::Cache<[u8; 32], ()>,
    /// Keys whose use this replica recorded in the last [`TOUCH_EVERY`].
    touched: moka::future::Cache<AdminKeyId, ()>,
    /// Rate limit of the refusal warning.
    warnings: Mutex<WarnLimit>,
}

/// When the last refusal warning was logged, and how many refusals since went unlogged.
#[derive(Debug, Default)]
struct WarnLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimit {
    /// Some(refusals not logged since the last warning) when a warning is due now.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl AdminAuth {
    pub fn new(configured: Vec<SecretHash>, store: Arc<dyn Store>, keys: Arc<KeyCache>) -> Self {
        Self {
            configured,
            store,
            keys,
            unknown_keys: moka::future::Cache::builder()
                .max_capacity(UNKNOWN_KEY_CAPACITY)
                .time_to_live(UNKNOWN_KEY_TTL)
                .build(),
            touched: moka::future::Cache::builder()
                .max_capacity(KEY_CAPACITY)
                .time_to_live(TOUCH_EVERY)
                .build(),
            warnings: Mutex::new(WarnLimit::default()),
        }
    }

    /// Counts a refusal and warns about it, at most once per [`WARN_EVERY`].
    fn refused(&self, reason: &'static str) {
        metrics::counter!("tessera_admin_auth_failures_total", "reason" => reason).increment(1);
        let due = self
            .warnings
            .lock()
            .map(|mut limit| limit.due(Instant::now()))
            .unwrap_or(None);
        if let Some(suppressed) = due {
            tracing::warn!(reason, suppressed, "admin call refused: {reason}");
        }
    }

    /// The stored key whose hash is `hash`, remembering a "no" for a while and a "yes" until a
    /// revocation anywhere.
    async fn stored_key(&self, hash: &SecretHash) -> Result<Option<Arc<AdminKey>>, tonic::Status> {
        if let Some(key) = self.keys.keys.get(&hash.0).await {
            return Ok(Some(key));
        }
        if self.unknown_keys.contains_key(&hash.0) {
            return Ok(None);
        }
        let generation = self.keys.generation.load(Ordering::SeqCst);
        metrics::counter!("tessera_admin_key_lookups_total").increment(1);
        // The store bounds the lookup by its call deadline, so a partition refuses the call
        // (UNAVAILABLE) rather than hanging it.
        let found = self.store.find_admin_key(hash).await.map_err(|error| {
            self.refused("lookup_failed");
            status::unavailable("admin key lookup", &error)
        })?;
        match found {
            None => {
                self.unknown_keys.insert(hash.0, ()).await;
                Ok(None)
            }
            Some(key) => {
                let key = Arc::new(key);
                // Only a live key is kept, and only if no revocation arrived meanwhile.
                if key.revoked_at.is_none()
                    && self.keys.generation.load(Ordering::SeqCst) == generation
                {
                    self.keys.keys.insert(hash.0, key.clone()).await;
                }
                Ok(Some(key))
            }
        }
    }

    /// Writes a key's `last_used_at`, at most once per [`TOUCH_EVERY`], off the call's path.
    async fn touch(&self, id: &AdminKeyId) {
        if self.touched.contains_key(id) {
            return;
        }
        self.touched.insert(id.clone(), ()).await;
        let store = self.store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            if let Err(error) = store.touch_admin_key(&id, chrono::Utc::now()).await {
                tracing::warn!(%error, admin_key_id = %id, "cannot record an admin key's last use");
            }
        });
    }

    /// The actor of a call to TokenAdminService's `method`: authenticated (else UNAUTHENTICATED)
    /// and holding the right the method needs (else PERMISSION_DENIED naming it).
    pub async fn authorize<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
    ) -> Result<Actor, tonic::Status> {
        // The console's calls (src/console/) carry the actor its session authenticated; a
        // remote caller cannot set a request extension, only metadata.
        let actor = match request.extensions().get::<InProcessActor>() {
            Some(InProcessActor(actor)) => actor.clone(),
            None => self.authenticate(request).await?,
        };
        let right = rights::of(method)
            .ok_or_else(|| status::internal("a TokenAdminService method without a right"))?;
        actor.require(right)?;
        Ok(actor)
    }

    /// The actor of an authenticated call, or UNAUTHENTICATED.
    async fn authenticate<T>(&self, request: &Request<T>) -> Result<Actor, tonic::Status> {
        let metadata = request.metadata();
        let key = bearer(metadata).ok_or_else(|| {
            self.refused("missing_key");
            status::unauthenticated(
                "missing admin key: send metadata `authorization: Bearer <admin key>`",
            )
        })?;
        let (admin_key, role, tenants) = self.key(key).await?;
        actor(metadata, admin_key, role, tenants)
    }

    /// The holder of the admin key `key` (the console's sign-in), or UNAUTHENTICATED.
    pub async fn key_holder(&self, key: &str) -> Result<KeyHolder, tonic::Status> {
        let (admin_key, role, tenants) = self.key(key).await?;
        Ok(KeyHolder {
            hash: SecretHash::of(key),
            admin_key,
            role,
            tenants,
        })
    }

    /// The holder of the admin key whose SHA-256 is `hash`, checked again as on every call (a
    /// console session's key, which may have been revoked or may have expired since sign-in).
    pub async fn key_holder_by_hash(&self, hash: &SecretHash) -> Result<KeyHolder, tonic::Status> {
        let (admin_key, role, tenants) = self.key_by_hash(hash, true).await?;
        Ok(KeyHolder {
            hash: *hash,
            admin_key,
            role,
            tenants,
        })
    }

    /// A key's id (or fingerprint), role and tenants, or UNAUTHENTICATED.
    async fn key(&self, key: &str) -> Result<(String, AdminRole, TenantScope), tonic::Status> {
        self.key_by_hash(&SecretHash::of(key), admin_key::is_well_formed(key))
            .await
    }

    async fn key_by_hash(
        &self,
        hash: &SecretHash,
        well_formed: bool,
    ) -> Result<(String, AdminRole, TenantScope), tonic::Status> {
        // Compare every configured hash in constant time, so timing tells nothing about keys.
        let configured = self
            .configured
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.0.ct_eq(&hash.0)
            });
        if bool::from(configured) {
            let fingerprint = format!("admin-key:{}", &hash.to_hex()[..8]);
            return Ok((fingerprint, AdminRole::Owner, TenantScope::All));
        }
        // Only the shape of a stored key is looked up: anything else costs no store call.
        if !well_formed {
            self.refused("malformed_key");
            return Err(status::unauthenticated("the admin key was rejected"));
        }
        let Some(stored) = self.stored_key(hash).await? else {
            self.refused("unknown_key");
            return Err(status::unauthenticated("the admin key was rejected"));
        };
        if stored.revoked_at.is_some() {
            self.refused("revoked_key");
            return Err(status::unauthenticated("the admin key was revoked"));
        }
        if !stored.is_live(chrono::Utc::now()) {
            self.refused("expired_key");
            return Err(status::unauthenticated("the admin key has expired"));
        }
        if stored.bootstrap && !self.configured.is_empty() {
            self.refused("bootstrap_key_disabled");
            return Err(status::unauthenticated(
                "the bootstrap admin key is disabled while TESSERA_ADMIN_KEYS is set",
            ));
        }
        self.touch(&stored.id).await;
        Ok((stored.id.to_string(), stored.role, stored.tenants.clone()))
    }
}

/// An actor authenticated in this process (a console or portal session), set as a request
/// extension on calls the console makes to TokenAdminService; `authorize` still applies the
/// method's right to it.
#[derive(Debug, Clone)]
pub struct InProcessActor(pub Actor);

/// Who holds an admin key: its hash (what a console session keeps), its id or fingerprint, its
/// role and tenants.
#[derive(Debug, Clone)]
pub struct KeyHolder {
    pub hash: SecretHash,
    pub admin_key: String,
    pub role: AdminRole,
    pub tenants: TenantScope,
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The human named by `x-tessera-actor` (else the key's id), and the key's id: the audit log
/// keeps both, so a claimed name never hides which key acted.
fn actor(
    metadata: &MetadataMap,
    admin_key: String,
    role: AdminRole,
    tenants: TenantScope,
) -> Result<Actor, tonic::Status> {
    let Some(raw) = metadata.get(ACTOR_HEADER) else {
        return Ok(Actor {
            name: admin_key.clone(),
            admin_key,
            role,
            tenants,
        });
    };
    // Metadata is visible ASCII or tab; a tab is refused too, so the name prints as it reads.
    let valid = raw.to_str().ok().map(str::trim).filter(|name| {
        !name.is_empty()
            && name.chars().count() <= MAX_ACTOR_LEN
            && !name.chars().any(char::is_control)
    });
    match valid {
        Some(name) => Ok(Actor {
            name: name.to_owned(),
            admin_key,
            role,
            tenants,
        }),
        None => Err(status::invalid_argument(vec![
            tonic_types::FieldViolation::new(
                ACTOR_HEADER,
                format!("must be 1 to {MAX_ACTOR_LEN} printable characters"),
            ),
        ])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_warnings_are_rate_limited_and_report_what_they_left_out() {
        let mut limit = WarnLimit::default();
        let start = Instant::now();
        assert_eq!(limit.due(start), Some(0));
        assert_eq!(limit.due(start + Duration::from_secs(1)), None);
        assert_eq!(limit.due(start + Duration::from_secs(2)), None);
        assert_eq!(
            limit.due(start + WARN_EVERY + Duration::from_secs(1)),
            Some(2)
        );
        assert_eq!(limit.due(start + WARN_EVERY + Duration::from_secs(2)), None);
    }
}
