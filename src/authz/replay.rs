//! The replay guard: every verified signature, remembered while its timestamp can still be
//! accepted.
//!
//! A signature is acceptable for at most `2 × window` (from `timestamp - window` to
//! `timestamp + window`). Each shard keeps two generations of tags: new tags go into the current
//! one, a tag in either is a replay, and every `span = 2 × window + 1 s` the previous generation
//! is dropped and the current one becomes previous. So every tag is kept for at least one span,
//! longer than it can be accepted, and at most two: memory holds only what could still be
//! replayed (plus at most one span more), with no timer per entry.
//!
//! Tags are HMAC outputs, uniformly random, so their first bytes are the hash and the shard.
//! The check and the insert happen under the shard's lock: of concurrent uses of one signature,
//! exactly one is first. Bounded: a shard whose current generation is full rotates early,
//! forgetting its oldest generation first; size the capacity above (signed requests per second ×
//! 2 × span) to keep every signature. Per replica, like the rate limits.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::signature::{DEFAULT_WINDOW, ReplayGuard, SignatureId};

/// Default number of remembered signatures: 1,000,000 (about 50 MB at most) holds every
/// signature of about 800 signed requests per second over the default ±300 s window.
pub const DEFAULT_CAPACITY: u64 = 1_000_000;
const SHARDS: usize = 16;

/// Hashes a tag by its first eight bytes: HMAC output is already uniformly random.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (index, byte) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*byte) << (8 * index);
        }
    }
}

type Tags = HashSet<[u8; 32], BuildHasherDefault<TagHasher>>;

struct Generations {
    current: Tags,
    previous: Tags,
    current_started: Instant,
}

pub struct ReplayCache {
    shards: Vec<Mutex<Generations>>,
    window: Duration,
    /// How long a generation is current.
    span: Duration,
    /// Most tags in one shard's current generation.
    per_shard: usize,
}

impl ReplayCache {
    pub fn new(window: Duration, capacity: u64) -> Self {
        let now = Instant::now();
        // Two generations per shard share the capacity.
        let per_shard = usize::try_from(capacity / (2 * SHARDS as u64))
            .unwrap_or(usize::MAX)
            .max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Generations {
                    current: Tags::default(),
                    previous: Tags::default(),
                    current_started: now,
                })
            })
            .collect();
        Self {
            shards,
            window,
            span: window * 2 + Duration::from_secs(1),
            per_shard,
        }
    }

    fn first_use_at(&self, signature: SignatureId, now: Instant) -> bool {
        let tag = signature.0;
        let shard = &self.shards[usize::from(tag[8]) % SHARDS];
        // A poisoned lock only means another Check panicked mid-insert; the sets are still sets.
        let mut generations = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(generations.current_started) >= self.span {
            let expired =
                now.saturating_duration_since(generations.current_started) >= self.span * 2;
            let current = std::mem::take(&mut generations.current);
            // After two spans without a signature, the current generation is old enough to go too.
            generations.previous = if expired { Tags::default() } else { current };
            generations.current_started = now;
        }
        if generations.current.contains(&tag) || generations.previous.contains(&tag) {
            return false;
        }
        if generations.current.len() >= self.per_shard {
            generations.previous = std::mem::take(&mut generations.current);
            generations.current_started = now;
        }
        generations.current.insert(tag);
        true
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

    /// `remember_for` is at most `2 × window + 1 s`, which every tag outlives (see the module).
    fn first_use(&self, signature: SignatureId, remember_for: Duration) -> bool {
        debug_assert!(remember_for <= self.span);
        self.first_use_at(signature, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(byte: u8) -> SignatureId {
        SignatureId([byte; 32])
    }

    fn later(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn a_signature_is_new_once_and_a_replay_after() {
        let cache = ReplayCache::default();
        assert!(cache.first_use(id(1), Duration::from_secs(60)));
        assert!(!cache.first_use(id(1), Duration::from_secs(60)));
        assert!(cache.first_use(id(2), Duration::from_secs(60)));
    }

    #[test]
    fn a_signature_is_remembered_for_as_long_as_it_could_be_accepted() {
        let cache = ReplayCache::new(Duration::from_secs(300), DEFAULT_CAPACITY);
        let start = Instant::now();
        assert!(cache.first_use_at(id(1), start));
        // Accepted at most 2 × 300 s after its first use; a rotation in between keeps it.
        for seconds in [1, 300, 600, 601] {
            assert!(
                !cache.first_use_at(id(1), later(start, seconds)),
                "forgotten after {seconds} s"
            );
        }
    }

    #[test]
    fn a_signature_is_forgotten_two_spans_later() {
        let cache = ReplayCache::new(Duration::from_secs(300), DEFAULT_CAPACITY);
        let start = Instant::now();
        assert!(cache.first_use_at(id(1), start));
        assert!(cache.first_use_at(id(1), later(start, 2 * 601)));
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
    fn a_full_cache_still_remembers_the_newest_signatures() {
        let cache = ReplayCache::new(DEFAULT_WINDOW, 16);
        for byte in 0..=255 {
            assert!(cache.first_use(id(byte), Duration::from_secs(60)));
            assert!(
                !cache.first_use(id(byte), Duration::from_secs(60)),
                "signature {byte} was not kept"
            );
        }
    }
}
