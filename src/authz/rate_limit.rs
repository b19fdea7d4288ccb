//! Per-token and per-owner rate limits: GCRA (governor), one limiter per token and one per
//! principal that carries a shared limit. The stricter of the two decides.
//!
//! Limiters live apart from the credential cache, so a cache refill (or an invalidation) does not
//! reset anyone's budget; a limiter whose limit changed is replaced at once. The limiter is
//! `fleet::local`'s, the one the shared state falls back to when Redis is unreachable.
//!
//! With the fleet's shared state (`TESSERA_REDIS_URL`), the same two limits are kept in Redis
//! for all replicas at once (`fleet::limits`), and these per-replica limiters are not used.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::RateLimitStatus;
use crate::domain::decision::Credential;
use crate::domain::fields::{PrincipalId, Tenant, TokenId};
use crate::fleet::local::{LocalLimiter, limiter, limiter_cache};
use crate::fleet::{Fleet, LimitKey, Verdict};

/// A limiter's answer as Check reports it: whole seconds, at least one when limited.
fn status(limit: NonZeroU32, verdict: Verdict) -> Result<RateLimitStatus, RateLimitStatus> {
    let limit = limit.get();
    match verdict {
        Verdict::Allowed { remaining, reset } => Ok(RateLimitStatus {
            limit,
            remaining,
            reset_seconds: ceil_seconds(reset),
        }),
        Verdict::Limited { reset } => Err(RateLimitStatus {
            limit,
            remaining: 0,
            reset_seconds: ceil_seconds(reset).max(1),
        }),
    }
}

fn ceil_seconds(duration: Duration) -> u32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

pub struct RateLimits {
    default_per_minute: NonZeroU32,
    tokens: moka::sync::Cache<TokenId, Arc<LocalLimiter>>,
    owners: moka::sync::Cache<(Tenant, PrincipalId), Arc<LocalLimiter>>,
    /// The fleet's limits, when Redis is configured: they replace the per-replica ones.
    fleet: Option<Fleet>,
}

impl RateLimits {
    pub fn new(default_per_minute: NonZeroU32) -> Self {
        Self {
            default_per_minute,
            tokens: limiter_cache(),
            owners: limiter_cache(),
            fleet: None,
        }
    }

    /// Keeps every limit for the whole fleet in Redis instead of per replica.
    pub fn with_fleet(mut self, fleet: Fleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Takes one request from the token's budget and, if its owner has a shared limit, from the
    /// owner's. Ok with the stricter status when both allow; Err with the exhausted one.
    pub async fn check(&self, credential: &Credential) -> Result<RateLimitStatus, RateLimitStatus> {
        let token_limit =
            NonZeroU32::new(credential.rate_limit_per_minute).unwrap_or(self.default_per_minute);
        let token_verdict = match &self.fleet {
            Some(fleet) => {
                fleet
                    .check(&LimitKey::token(&credential.token_id), token_limit)
                    .await
            }
            None => limiter(&self.tokens, &credential.token_id, token_limit).check(),
        };
        let token_status = status(token_limit, token_verdict)?;
        let Some(owner_limit) = credential
            .owner_rate_limit_per_minute
            .and_then(NonZeroU32::new)
        else {
            return Ok(token_status);
        };
        let owner_verdict = match &self.fleet {
            Some(fleet) => {
                let key = LimitKey::principal(&credential.tenant, &credential.owner_id);
                fleet.check(&key, owner_limit).await
            }
            None => {
                let owner_key = (credential.tenant.clone(), credential.owner_id.clone());
                limiter(&self.owners, &owner_key, owner_limit).check()
            }
        };
        let owner_status = status(owner_limit, owner_verdict)?;
        Ok(if owner_status.remaining < token_status.remaining {
            owner_status
        } else {
            token_status
        })
    }
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

    #[tokio::test]
    async fn a_token_gets_its_limit_per_minute_then_is_limited() {
        let limits = limits();
        let token = credential(3, None);
        let mut remaining = Vec::new();
        for _ in 0..3 {
            remaining.push(limits.check(&token).await.expect("allowed").remaining);
        }
        assert_eq!(remaining, vec![2, 1, 0]);
        let denied = limits.check(&token).await.expect_err("limited");
        assert_eq!((denied.limit, denied.remaining), (3, 0));
        assert!((1..=20).contains(&denied.reset_seconds), "{denied:?}");
    }

    #[tokio::test]
    async fn zero_means_the_server_default() {
        let status = limits().check(&credential(0, None)).await.expect("allowed");
        assert_eq!((status.limit, status.remaining), (60, 59));
    }

    #[tokio::test]
    async fn a_changed_limit_applies_at_once() {
        let limits = limits();
        let mut token = credential(1, None);
        limits.check(&token).await.expect("first allowed");
        limits.check(&token).await.expect_err("second limited");
        token.rate_limit_per_minute = 10;
        assert_eq!(limits.check(&token).await.expect("new limit").limit, 10);
    }

    #[tokio::test]
    async fn an_owner_limit_is_shared_by_all_its_tokens_and_the_stricter_decides() {
        let limits = limits();
        let first = credential(100, Some(2));
        let mut second = credential(100, Some(2));
        second.owner_id = first.owner_id.clone();
        assert_eq!(limits.check(&first).await.expect("allowed").remaining, 1);
        assert_eq!(limits.check(&second).await.expect("allowed").remaining, 0);
        let denied = limits.check(&first).await.expect_err("owner budget spent");
        assert_eq!(denied.limit, 2);
    }
}
