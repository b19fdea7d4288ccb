//! The replay guard: every verified signature, remembered while its timestamp can still be
//! accepted, in a partition of its token's own.
//!
//! A signature is acceptable for at most `2 × window` (from `timestamp - window` to
//! `timestamp + window`). Each token's partition keeps two generations of tags: new tags go
//! into the current one, a tag in either is a replay, and every `span = 2 × window + 1 s` the
//! previous generation is dropped and the current one becomes previous. So every tag is kept for
//! at least one span, longer than it can be accepted, and at most two: memory holds only what
//! could still be replayed (plus at most one span more), with no timer per entry.
//!
//! Partitioned by token, so that no token can push another's tags out. A token's partition
//! holds at most `quota` tags: when its current generation holds half of them it rotates early,
//! forgetting that token's oldest tags. Only a holder of the token's signing key can make
//! signatures that verify and enter its partition, and such a holder can sign any request
//! anyway, so a flood only costs the flooder; but a token whose own clients sign more than
//! `quota / 2` requests per span (about 3.4 per second per replica at the defaults) forgets
//! tags that could still be replayed by someone who captured them: size the quota above
//! (2 × that token's signed requests per span).
//!
//! At most `capacity` tags are held per replica over all tokens, however many tokens sign: a
//! token's partition takes only the tags it holds, so a million tokens signing a few requests
//! each fit as well as 244 tokens at their quota. A partition whose newest tag is a span old
//! holds nothing acceptable any more and goes when room is needed. Only when `capacity` tags
//! are all still live (at least `capacity / quota` tokens, each at its quota, within one span)
//! is a further signature refused (fail closed, counted) rather than another token's tag
//! evicted.
//!
//! The check and the insert happen under one lock (held for a hash lookup and an insert): of
//! concurrent uses of one signature, exactly one is first. Per replica, like the rate limits.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::fields::TokenId;
use crate::domain::signature::{DEFAULT_WINDOW, ReplayGuard, SignatureId};

/// Default number of remembered signatures over all tokens: 1,000,000 (about 50 MB at most).
pub const DEFAULT_CAPACITY: u64 = 1_000_000;
/// Default number of remembered signatures per token: 4,096, which keeps every signature of a
/// token signing up to 2,048 requests per span (about 3.4 per second over the default ±300 s
/// window, above the default rate limit of one a second). A ceiling, not a reservation: with the
/// default capacity, 244 tokens at their quota, or any number signing less, fit at once.
pub const DEFAULT_TOKEN_QUOTA: u64 = 4_096;

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

/// One token's tags.
struct Generations {
    current: Tags,
    previous: Tags,
    current_started: Instant,
    /// When the newest tag went in: a span later, none of them can be accepted any more.
    last_insert: Instant,
}

impl Generations {
    fn new(now: Instant) -> Self {
        Self {
            current: Tags::default(),
            previous: Tags::default(),
            current_started: now,
            last_insert: now,
        }
    }
}

/// Every token's partition, and how many tags they hold together.
#[derive(Default)]
struct Partitions {
    tokens: HashMap<TokenId, Generations>,
    /// The sum of every partition's tags, kept with each insert and drop.
    held: usize,
}

pub struct ReplayCache {
    partitions: Mutex<Partitions>,
    window: Duration,
    /// How long a generation is current.
    span: Duration,
    /// Most tags in one token's current generation (half its quota).
    per_generation: usize,
    /// Most tags held over all tokens.
    capacity: usize,
}

impl ReplayCache {
    /// Remembers at most `token_quota` signatures per token and `capacity` in all.
    pub fn new(window: Duration, capacity: u64, token_quota: u64) -> Self {
        let token_quota = token_quota.clamp(2, capacity.max(2));
        let per_generation = usize::try_from(token_quota / 2).unwrap_or(usize::MAX);
        Self {
            partitions: Mutex::new(Partitions::default()),
            window,
            span: window * 2 + Duration::from_secs(1),
            per_generation,
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
        }
    }

    /// The guard of one token's signatures.
    pub fn of<'a>(&'a self, token: &'a TokenId) -> TokenReplays<'a> {
        TokenReplays { cache: self, token }
    }

    fn first_use_at(&self, token: &TokenId, signature: SignatureId, now: Instant) -> bool {
        let tag = signature.0;
        // A poisoned lock only means another Check panicked mid-insert; the sets are still sets.
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Partitions { tokens, held } = &mut *partitions;
        if let Some(generations) = tokens.get_mut(token) {
            if now.saturating_duration_since(generations.current_started) >= self.span {
                let expired =
                    now.saturating_duration_since(generations.current_started) >= self.span * 2;
                let current = std::mem::take(&mut generations.current);
                *held -= generations.previous.len();
                // After two spans without a signature, the current generation is old enough to
                // go too.
                generations.previous = if expired {
                    *held -= current.len();
                    Tags::default()
                } else {
                    current
                };
                generations.current_started = now;
            }
            if generations.current.contains(&tag) || generations.previous.contains(&tag) {
                return false;
            }
            if generations.current.len() >= self.per_generation {
                // This token's own oldest tags go, never another token's.
                *held -= generations.previous.len();
                generations.previous = std::mem::take(&mut generations.current);
                generations.current_started = now;
            }
        }
        if *held >= self.capacity {
            self.drop_idle(tokens, held, now);
        }
        if *held >= self.capacity {
            metrics::counter!("tessera_replay_guard_refusals_total").increment(1);
            tracing::debug!(token_id = %token, "replay guard full of live signatures; signature refused");
            return false;
        }
        let generations = tokens
            .entry(token.clone())
            .or_insert_with(|| Generations::new(now));
        generations.current.insert(tag);
        generations.last_insert = now;
        *held += 1;
        true
    }

    /// Drops the partitions of tokens whose newest tag is a span old: none of their tags can be
    /// accepted any more.
    fn drop_idle(
        &self,
        tokens: &mut HashMap<TokenId, Generations>,
        held: &mut usize,
        now: Instant,
    ) {
        tokens.retain(|_, generations| {
            let live = now.saturating_duration_since(generations.last_insert) < self.span;
            if !live {
                *held -= generations.current.len() + generations.previous.len();
            }
            live
        });
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY, DEFAULT_TOKEN_QUOTA)
    }
}

/// The replay guard as one token's Check sees it: its own partition.
pub struct TokenReplays<'a> {
    cache: &'a ReplayCache,
    token: &'a TokenId,
}

impl ReplayGuard for TokenReplays<'_> {
    fn window(&self) -> Duration {
        self.cache.window
    }

    /// `remember_for` is at most `2 × window + 1 s`, which every tag outlives (see the module).
    fn first_use(&self, signature: SignatureId, remember_for: Duration) -> bool {
        debug_assert!(remember_for <= self.cache.span);
        self.cache
            .first_use_at(self.token, signature, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn id(byte: u8) -> SignatureId {
        SignatureId([byte; 32])
    }

    /// A signature told apart by a counter, for more than 256 of them.
    fn numbered(number: u64) -> SignatureId {
        let mut tag = [0u8; 32];
        tag[..8].copy_from_slice(&number.to_le_bytes());
        SignatureId(tag)
    }

    fn later(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn a_signature_is_new_once_and_a_replay_after() {
        let cache = ReplayCache::default();
        let alice = TokenId::generate();
        let guard = cache.of(&alice);
        assert!(guard.first_use(id(1), Duration::from_secs(60)));
        assert!(!guard.first_use(id(1), Duration::from_secs(60)));
        assert!(guard.first_use(id(2), Duration::from_secs(60)));
    }

    #[test]
    fn a_signature_is_remembered_for_as_long_as_it_could_be_accepted() {
        let cache = ReplayCache::new(Duration::from_secs(300), DEFAULT_CAPACITY, 4096);
        let alice = TokenId::generate();
        let start = Instant::now();
        assert!(cache.first_use_at(&alice, id(1), start));
        // Accepted at most 2 × 300 s after its first use; a rotation in between keeps it.
        for seconds in [1, 300, 600, 601] {
            assert!(
                !cache.first_use_at(&alice, id(1), later(start, seconds)),
                "forgotten after {seconds} s"
            );
        }
    }

    #[test]
    fn a_signature_is_forgotten_two_spans_later() {
        let cache = ReplayCache::new(Duration::from_secs(300), DEFAULT_CAPACITY, 4096);
        let alice = TokenId::generate();
        let start = Instant::now();
        assert!(cache.first_use_at(&alice, id(1), start));
        assert!(cache.first_use_at(&alice, id(1), later(start, 2 * 601)));
    }

    #[test]
    fn of_many_concurrent_uses_of_one_signature_exactly_one_is_first() {
        let cache = Arc::new(ReplayCache::default());
        let alice = Arc::new(TokenId::generate());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, alice) = (cache.clone(), alice.clone());
                std::thread::spawn(move || {
                    cache.of(&alice).first_use(id(9), Duration::from_secs(60))
                })
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
    fn a_token_over_its_quota_still_remembers_its_newest_signatures() {
        let cache = ReplayCache::new(DEFAULT_WINDOW, 1000, 16);
        let alice = TokenId::generate();
        let guard = cache.of(&alice);
        for byte in 0..=255 {
            assert!(guard.first_use(id(byte), Duration::from_secs(60)));
            assert!(
                !guard.first_use(id(byte), Duration::from_secs(60)),
                "signature {byte} was not kept"
            );
        }
    }

    #[test]
    fn one_token_flooding_the_guard_does_not_push_out_another_tokens_signatures() {
        let cache = ReplayCache::new(DEFAULT_WINDOW, 1000, 100);
        let (alice, mallory) = (TokenId::generate(), TokenId::generate());
        assert!(cache.of(&alice).first_use(id(1), Duration::from_secs(60)));
        for number in 0..100_000 {
            assert!(
                cache
                    .of(&mallory)
                    .first_use(numbered(number), Duration::from_secs(60))
            );
        }
        assert!(
            !cache.of(&alice).first_use(id(1), Duration::from_secs(60)),
            "alice's signature was pushed out"
        );
        let held: usize = {
            let partitions = cache.partitions.lock().expect("lock");
            partitions
                .tokens
                .values()
                .map(|generations| generations.current.len() + generations.previous.len())
                .sum()
        };
        assert!(held <= 100 + 1, "{held} tags held");
    }

    #[test]
    fn the_same_signature_is_new_for_each_token() {
        // Tags are keyed HMACs, so two tokens never share one in practice; the partitions
        // simply do not mix.
        let cache = ReplayCache::default();
        let (alice, bob) = (TokenId::generate(), TokenId::generate());
        assert!(cache.of(&alice).first_use(id(3), Duration::from_secs(60)));
        assert!(cache.of(&bob).first_use(id(3), Duration::from_secs(60)));
    }

    #[test]
    fn a_signature_beyond_a_guard_full_of_live_ones_is_refused_until_a_token_falls_idle() {
        // Room for 20 signatures, 10 per token.
        let cache = ReplayCache::new(Duration::from_secs(300), 20, 10);
        let start = Instant::now();
        let tokens: Vec<TokenId> = (0..3).map(|_| TokenId::generate()).collect();
        for number in 0..5 {
            assert!(cache.first_use_at(&tokens[0], numbered(number), start));
            assert!(cache.first_use_at(&tokens[0], numbered(number + 100), start));
            assert!(cache.first_use_at(&tokens[1], numbered(number), start));
            assert!(cache.first_use_at(&tokens[1], numbered(number + 100), start));
        }
        assert!(
            !cache.first_use_at(&tokens[2], id(1), later(start, 1)),
            "a third token must not evict a live partition"
        );
        // A span after its newest signature, a partition holds nothing acceptable.
        assert!(cache.first_use_at(&tokens[1], id(2), later(start, 300)));
        assert!(cache.first_use_at(&tokens[2], id(1), later(start, 601)));
        assert!(
            !cache.first_use_at(&tokens[1], id(2), later(start, 602)),
            "the token still in use kept its signatures"
        );
    }

    #[test]
    fn many_tokens_signing_a_little_are_all_remembered() {
        // A quota is a ceiling, not a reservation: 500 tokens fit in room for 1000 signatures
        // even though 10 tokens at their quota of 100 would fill it.
        let cache = ReplayCache::new(DEFAULT_WINDOW, 1000, 100);
        let tokens: Vec<TokenId> = (0..500).map(|_| TokenId::generate()).collect();
        for token in &tokens {
            assert!(cache.of(token).first_use(id(1), Duration::from_secs(60)));
        }
        for token in &tokens {
            assert!(
                !cache.of(token).first_use(id(1), Duration::from_secs(60)),
                "a token's signature was forgotten or refused"
            );
        }
    }

    #[test]
    fn the_count_of_held_signatures_follows_every_rotation_and_drop() {
        let cache = ReplayCache::new(Duration::from_secs(300), 1000, 10);
        let start = Instant::now();
        let alice = TokenId::generate();
        for number in 0..25 {
            assert!(cache.first_use_at(&alice, numbered(number), start));
        }
        assert!(cache.first_use_at(&alice, numbered(99), later(start, 2 * 601)));
        let partitions = cache.partitions.lock().expect("lock");
        let counted: usize = partitions
            .tokens
            .values()
            .map(|generations| generations.current.len() + generations.previous.len())
            .sum();
        assert_eq!(partitions.held, counted);
    }
}
