//! The replay guard: every verified signature, remembered until its timestamp leaves the window.
//!
//! Bounded (a fixed number of entries) and per replica, like the rate limits. Each entry expires
//! exactly when its signature would be refused as out of window anyway, so memory holds only
//! signatures that could still be replayed. Eviction is least-recently-used rather than moka's
//! default TinyLFU admission, which may refuse to admit a new key when full: a refused insert
//! would let that very signature be replayed. When full, the oldest signatures go first; size the
//! capacity above (signed requests per second × 2 × window) to keep every one.

use std::time::{Duration, Instant};

use moka::Expiry;
use moka::policy::EvictionPolicy;

use crate::domain::signature::{DEFAULT_WINDOW, ReplayGuard, SignatureId};

/// Default number of remembered signatures: 1,000,000 (about 100 MB at most) holds every
/// signature of 1,600 signed requests per second over a ±300 s window.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;

struct RememberFor;

impl Expiry<SignatureId, Duration> for RememberFor {
    fn expire_after_create(
        &self,
        _key: &SignatureId,
        remember_for: &Duration,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(*remember_for)
    }
}

pub struct ReplayCache {
    /// The value is how long the entry lives, read by [`RememberFor`].
    seen: moka::sync::Cache<SignatureId, Duration>,
    window: Duration,
}

impl ReplayCache {
    pub fn new(window: Duration, capacity: u64) -> Self {
        let seen = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(RememberFor)
            .build();
        Self { seen, window }
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl ReplayGuard for ReplayCache {
    fn window(&self) -> Duration {
        self.window
    }

    fn first_use(&self, signature: SignatureId, remember_for: Duration) -> bool {
        // Coalesced per key by moka: of concurrent callers, exactly one inserts.
        self.seen
            .entry(signature)
            .or_insert_with(|| remember_for)
            .is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(byte: u8) -> SignatureId {
        SignatureId([byte; 32])
    }

    #[test]
    fn a_signature_is_new_once_and_a_replay_after() {
        let cache = ReplayCache::default();
        assert!(cache.first_use(id(1), Duration::from_secs(60)));
        assert!(!cache.first_use(id(1), Duration::from_secs(60)));
        assert!(cache.first_use(id(2), Duration::from_secs(60)));
    }

    #[test]
    fn a_signature_is_forgotten_once_it_could_no_longer_be_accepted() {
        let cache = ReplayCache::default();
        assert!(cache.first_use(id(1), Duration::from_millis(50)));
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.first_use(id(1), Duration::from_millis(50)));
    }

    #[test]
    fn of_many_concurrent_uses_of_one_signature_exactly_one_is_first() {
        let cache = Arc::new(ReplayCache::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.first_use(id(9), Duration::from_secs(60)))
            })
            .collect();
        let firsts = threads
            .into_iter()
            .map(|thread| thread.join().expect("thread"))
            .filter(|first| *first)
            .count();
        assert_eq!(firsts, 1);
    }

    #[test]
    fn a_full_cache_still_remembers_the_newest_signature() {
        let cache = ReplayCache::new(DEFAULT_WINDOW, 16);
        for byte in 0..64 {
            assert!(cache.first_use(id(byte), Duration::from_secs(60)));
            assert!(
                !cache.first_use(id(byte), Duration::from_secs(60)),
                "signature {byte} was not admitted"
            );
        }
    }
}
