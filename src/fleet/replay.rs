//! The fleet's replay guard: every verified signature of a token in one sorted set of its own
//! (`<prefix>:{t:<id>}:replay`, the token's slot), scored by when it may be forgotten.
//!
//! One script, atomic on the token's master: drop the tags whose time is up, answer `Replayed`
//! if the tag is there, else add it and, beyond the token's quota, drop that token's tags that
//! would be forgotten soonest — its oldest. So, as the local guard (`authz::replay`), one
//! token's flood of signatures (which needs its signing key) forgets only its own tags and can
//! never push out another token's, and Redis holds at most `quota` tags per token that signed
//! within a span. Of concurrent uses of one signature on any replicas, exactly one is first.
//!
//! Redis's memory is the operator's to size (about 100 bytes a tag); run it with
//! `maxmemory-policy noeviction`, so that a full Redis refuses writes — this answers
//! `Unavailable` and the caller uses its local guard — rather than evicting a token's set.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::connection::Shared;
use super::{LimitKey, ReplayVerdict};
use crate::domain::fields::TokenId;
use crate::domain::signature::SignatureId;

/// KEYS[1]: the token's set. ARGV[1]: the tag. ARGV[2]: how long to remember it, in ms.
/// ARGV[3]: the token's quota. Returns 1 when the tag is new, 0 when it is a replay.
static FIRST_USE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local key = KEYS[1]
local remember = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now))
if redis.call('ZSCORE', key, ARGV[1]) then
  return 0
end
redis.call('ZADD', key, string.format('%.0f', now + remember), ARGV[1])
local held = redis.call('ZCARD', key)
if held > quota then
  redis.call('ZPOPMIN', key, held - quota)
end
if redis.call('PTTL', key) < remember then
  redis.call('PEXPIRE', key, remember)
end
return 1
",
    )
});

pub(super) async fn first_use(
    shared: &Shared,
    token: &TokenId,
    signature: &SignatureId,
    remember_for: Duration,
) -> ReplayVerdict {
    if shared.is_degraded() {
        metrics::counter!("tessera_shared_state_local_decisions_total", "kind" => "replay")
            .increment(1);
        return ReplayVerdict::Unavailable;
    }
    let key = shared.key(LimitKey::token(token).as_str(), ":replay");
    let remember_ms = u64::try_from(remember_for.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut invocation = FIRST_USE.prepare_invoke();
    invocation
        .key(key)
        .arg(&signature.0[..])
        .arg(remember_ms)
        .arg(shared.settings.replay_token_quota.max(1));
    match shared.call::<u8>("replay", &invocation).await {
        Ok(1) => ReplayVerdict::First,
        Ok(_) => ReplayVerdict::Replayed,
        Err(_) => {
            metrics::counter!("tessera_shared_state_local_decisions_total", "kind" => "replay")
                .increment(1);
            ReplayVerdict::Unavailable
        }
    }
}
