//! Per-token and per-owner rate limits: GCRA (governor), one limiter per token and one per
//! principal that carries a shared limit. The stricter of the two decides.
//!
//! Limiters live apart from the credential cache, so a cache refill (or an invalidation) does not
//! reset anyone's budget; a limiter whose limit changed is replaced at once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::authz::RateLimitStatus;
use crate::domain::decision::Credential;
use crate::domain::fields::{PrincipalId, Tenant, TokenId};

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Limiter {
    per_minute: NonZeroU32,
    gcra: Gcra,
}

impl Limiter {
    fn new(per_minute: NonZeroU32) -> Self {
        Self {
            per_minute,
            gcra: RateLimiter::direct(Quota::per_minute(per_minute))
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self) -> Result<RateLimitStatus, RateLimitStatus> {
        let limit = self.per_minute.get();
        let interval = Quota::per_minute(self.per_minute).replenish_interval();
        match self.gcra.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // Seconds until the whole burst is available again.
                let refill = interval.saturating_mul(limit.saturating_sub(remaining));
                Ok(RateLimitStatus {
                    limit,
                    remaining,
                    reset_seconds: ceil_seconds(refill),
                })
            }
            Err(not_until) => Err(RateLimitStatus {
                limit,
                remaining: 0,
                reset_seconds: ceil_seconds(
                    // The limiter's own clock: building a new one calibrates it, which costs microseconds.
                    not_until.wait_time_from(self.gcra.clock().now()),
                )
                .max(1),
            }),
        }
    }
}

fn ceil_seconds(duration: Duration) -> u32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

pub struct RateLimits {
    default_per_minute: NonZeroU32,
    tokens: moka::sync::Cache<TokenId, Arc<Limiter>>,
    owners: moka::sync::Cache<(Tenant, PrincipalId), Arc<Limiter>>,
}

/// Idle limiters are dropped after this long: by then a new one starts full, as the old one would be.
const LIMITER_IDLE: Duration = Duration::from_secs(120);
const MAX_LIMITERS: u64 = 1_000_000;

impl RateLimits {
    pub fn new(default_per_minute: NonZeroU32) -> Self {
        Self {
            default_per_minute,
            tokens: limiter_cache(),
            owners: limiter_cache(),
        }
    }

    /// Takes one request from the token's budget and, if its owner has a shared limit, from the
    /// owner's. Ok with the stricter status when both allow; Err with the exhausted one.
    pub fn check(&self, credential: &Credential) -> Result<RateLimitStatus, RateLimitStatus> {
        let token_limit =
            NonZeroU32::new(credential.rate_limit_per_minute).unwrap_or(self.default_per_minute);
        let token_status = limiter(&self.tokens, &credential.token_id, token_limit).check()?;
        let Some(owner_limit) = credential
            .owner_rate_limit_per_minute
            .and_then(NonZeroU32::new)
        else {
            return Ok(token_status);
        };
        let owner_key = (credential.tenant.clone(), credential.owner_id.clone());
        let owner_status = limiter(&self.owners, &owner_key, owner_limit).check()?;
        Ok(if owner_status.remaining < token_status.remaining {
            owner_status
        } else {
            token_status
        })
    }
}

fn limiter_cache<K>() -> moka::sync::Cache<K, Arc<Limiter>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(MAX_LIMITERS)
        .time_to_idle(LIMITER_IDLE)
        .build()
}

fn limiter<K>(
    cache: &moka::sync::Cache<K, Arc<Limiter>>,
    key: &K,
    per_minute: NonZeroU32,
) -> Arc<Limiter>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let current = cache.get_with_by_ref(key, || Arc::new(Limiter::new(per_minute)));
    if current.per_minute == per_minute {
        return current;
    }
    // The limit changed (UpdateToken, UpsertPrincipal): it applies from this request on.
    let replacement = Arc::new(Limiter::new(per_minute));
    cache.insert(key.clone(), replacement.clone());
    replacement
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    fn credential(token_limit: u32, owner_limit: Option<u32>) -> Credential {
        Credential {
            rate_limit_per_minute: token_limit,
            owner_rate_limit_per_minute: owner_limit,
            ..fixtures::credential()
        }
    }

    fn limits() -> RateLimits {
        RateLimits::new(NonZeroU32::new(60).expect("non-zero"))
    }

    #[test]
    fn a_token_gets_its_limit_per_minute_then_is_limited() {
        let limits = limits();
        let token = credential(3, None);
        let remaining: Vec<u32> = (0..3)
            .map(|_| limits.check(&token).expect("allowed").remaining)
            .collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let denied = limits.check(&token).expect_err("limited");
        assert_eq!((denied.limit, denied.remaining), (3, 0));
        assert!((1..=20).contains(&denied.reset_seconds), "{denied:?}");
    }

    #[test]
    fn zero_means_the_server_default() {
        let status = limits().check(&credential(0, None)).expect("allowed");
        assert_eq!((status.limit, status.remaining), (60, 59));
    }

    #[test]
    fn a_changed_limit_applies_at_once() {
        let limits = limits();
        let mut token = credential(1, None);
        limits.check(&token).expect("first allowed");
        limits.check(&token).expect_err("second limited");
        token.rate_limit_per_minute = 10;
        assert_eq!(limits.check(&token).expect("new limit").limit, 10);
    }

    #[test]
    fn an_owner_limit_is_shared_by_all_its_tokens_and_the_stricter_decides() {
        let limits = limits();
        let first = credential(100, Some(2));
        let mut second = credential(100, Some(2));
        second.owner_id = first.owner_id.clone();
        assert_eq!(limits.check(&first).expect("allowed").remaining, 1);
        assert_eq!(limits.check(&second).expect("allowed").remaining, 0);
        let denied = limits.check(&first).expect_err("owner budget spent");
        assert_eq!(denied.limit, 2);
    }
}
