//! Admin authentication: `authorization: Bearer <admin key>`, compared by SHA-256.
//!
//! Admin keys and API tokens live in different tables and are checked by different code, so an
//! API token is never accepted as an admin key (and an admin key's `tsa` prefix fails Check's
//! parse).
//!
//! A key the store does not know is remembered as unknown (by hash, bounded, for
//! [`UNKNOWN_KEY_TTL`]), so a caller repeating bad keys costs the admin pool nothing after the
//! first lookup of each; refusals are counted in `tessera_admin_auth_failures_total{reason}` and
//! logged at most once per [`WARN_EVERY`] with the number left unlogged, never with the key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tonic::Request;
use tonic::metadata::MetadataMap;

use crate::admin::Actor;
use crate::domain::token::SecretHash;
use crate::grpc::status;
use crate::store::Store;

const ACTOR_HEADER: &str = "x-tessera-actor";
const MAX_ACTOR_LEN: usize = 128;

/// How long a key the store did not know stays known as unknown. Short, so a key stored after a
/// refusal (the bootstrap of a replica that started beside this one) works within seconds; keys
/// are only ever added, so a stale entry can delay a new key but never admit a removed one.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);
/// Most unknown keys remembered: 32 bytes of hash each, so a flood of distinct bad keys costs at
/// most about 2 MiB with moka's overhead, and the oldest fall out.
const UNKNOWN_KEY_CAPACITY: u64 = 16_384;
/// At most one warning per this interval about refused admin keys.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct AdminAuth {
    /// Hashes of the keys from settings; bootstrap keys are looked up in the store.
    configured: Vec<SecretHash>,
    store: Arc<dyn Store>,
    /// Hashes the store answered "no such key" for, recently: refused without a lookup.
    unknown_keys: moka::future::Cache<[u8; 32], ()>,
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
    pub fn new(configured: Vec<SecretHash>, store: Arc<dyn Store>) -> Self {
        Self {
            configured,
            store,
            unknown_keys: moka::future::Cache::builder()
                .max_capacity(UNKNOWN_KEY_CAPACITY)
                .time_to_live(UNKNOWN_KEY_TTL)
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

    /// Whether the store holds `hash` as an admin key, remembering a "no" for a while.
    async fn stored_key(&self, hash: &SecretHash) -> Result<bool, tonic::Status> {
        if self.unknown_keys.contains_key(&hash.0) {
            return Ok(false);
        }
        metrics::counter!("tessera_admin_key_lookups_total").increment(1);
        // The store bounds the lookup by its call deadline, so a partition refuses the call
        // (UNAVAILABLE) rather than hanging it.
        let known = self.store.is_admin_key(hash).await.map_err(|error| {
            self.refused("lookup_failed");
            status::unavailable("admin key lookup", &error)
        })?;
        if !known {
            self.unknown_keys.insert(hash.0, ()).await;
        }
        Ok(known)
    }

    /// The actor of an authenticated call, or UNAUTHENTICATED.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Actor, tonic::Status> {
        let metadata = request.metadata();
        let key = bearer(metadata).ok_or_else(|| {
            self.refused("missing_key");
            status::unauthenticated(
                "missing admin key: send metadata `authorization: Bearer <admin key>`",
            )
        })?;
        let hash = SecretHash::of(key);
        // Compare every configured hash in constant time, so timing tells nothing about keys.
        let configured = self
            .configured
            .iter()
            .fold(subtle::Choice::from(0), |found, known| {
                found | known.0.ct_eq(&hash.0)
            });
        let known = bool::from(configured) || self.stored_key(&hash).await?;
        if !known {
            self.refused("unknown_key");
            return Err(status::unauthenticated("the admin key was rejected"));
        }
        actor(metadata, &hash)
    }
}

fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// The human named by `x-tessera-actor` (else the key's fingerprint), and the key's fingerprint:
/// the audit log keeps both, so a claimed name never hides which key acted.
fn actor(metadata: &MetadataMap, key_hash: &SecretHash) -> Result<Actor, tonic::Status> {
    let admin_key = format!("admin-key:{}", &key_hash.to_hex()[..8]);
    let Some(raw) = metadata.get(ACTOR_HEADER) else {
        return Ok(Actor {
            name: admin_key.clone(),
            admin_key,
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
