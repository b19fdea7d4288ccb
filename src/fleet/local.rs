//! The per-replica GCRA (governor): `authz::rate_limit` keeps one per token and principal when
//! there is no fleet, and the fleet keeps one per key while degraded, at this replica's share of
//! the limit (limit ÷ live replicas, at least 1 per minute).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::{LimitKey, Verdict};

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Idle limiters go after this long: by then a new one starts full, as the old one would be.
const LIMITER_IDLE: Duration = Duration::from_secs(120);
const MAX_LIMITERS: u64 = 1_000_000;

pub(crate) struct LocalLimiter {
    per_minute: NonZeroU32,
    gcra: Gcra,
}

impl LocalLimiter {
    fn new(per_minute: NonZeroU32) -> Self {
        Self {
            per_minute,
            gcra: RateLimiter::direct(Quota::per_minute(per_minute))
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    pub(crate) fn check(&self) -> Verdict {
        let interval = Quota::per_minute(self.per_minute).replenish_interval();
        match self.gcra.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Verdict::Allowed {
                    remaining,
                    // Until the whole burst is available again.
                    reset: interval.saturating_mul(self.per_minute.get().saturating_sub(remaining)),
                }
            }
            Err(not_until) => Verdict::Limited {
                // The limiter's own clock: building a new one calibrates it, which costs
                // microseconds.
                reset: not_until.wait_time_from(self.gcra.clock().now()),
            },
        }
    }
}

/// Limiters apart from the credential cache, so a cache refill or an invalidation does not
/// reset anyone's budget.
pub(crate) fn limiter_cache<K>() -> moka::sync::Cache<K, Arc<LocalLimiter>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(MAX_LIMITERS)
        .time_to_idle(LIMITER_IDLE)
        .build()
}

/// `key`'s limiter of `per_minute`; one of another limit is replaced, so a changed limit (or
/// share) applies from this request on.
pub(crate) fn limiter<K>(
    cache: &moka::sync::Cache<K, Arc<LocalLimiter>>,
    key: &K,
    per_minute: NonZeroU32,
) -> Arc<LocalLimiter>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let current = cache.get_with_by_ref(key, || Arc::new(LocalLimiter::new(per_minute)));
    if current.per_minute == per_minute {
        return current;
    }
    let replacement = Arc::new(LocalLimiter::new(per_minute));
    cache.insert(key.clone(), replacement.clone());
    replacement
}

/// The degraded fleet's limiters.
pub(super) struct LocalLimits {
    limiters: moka::sync::Cache<LimitKey, Arc<LocalLimiter>>,
}

impl LocalLimits {
    pub(super) fn new() -> Self {
        Self {
            limiters: limiter_cache(),
        }
    }

    /// Decides `key` locally at `per_minute ÷ live_replicas`.
    pub(super) fn check(
        &self,
        key: &LimitKey,
        per_minute: NonZeroU32,
        live_replicas: u32,
    ) -> Verdict {
        metrics::counter!("tessera_shared_state_local_decisions_total", "kind" => "rate_limit")
            .increment(1);
        self.share(key, per_minute, live_replicas).check()
    }

    /// Spends what the fleet admitted on this replica from its local share too, so that when
    /// Redis is lost (or one call misses its bound) the fallback starts from this replica's
    /// recent traffic, not from a full burst: a replica that has used its share admits nothing
    /// more until it drains. The answer is ignored; the fleet's decided.
    pub(super) fn observe(&self, key: &LimitKey, per_minute: NonZeroU32, live_replicas: u32) {
        let _ = self.share(key, per_minute, live_replicas).check();
    }

    fn share(
        &self,
        key: &LimitKey,
        per_minute: NonZeroU32,
        live_replicas: u32,
    ) -> Arc<LocalLimiter> {
        let share =
            NonZeroU32::new(per_minute.get() / live_replicas.max(1)).unwrap_or(NonZeroU32::MIN);
        limiter(&self.limiters, key, share)
    }
}
