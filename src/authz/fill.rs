//! Cache fills that an invalidation can overtake.
//!
//! A miss loads from the store and then caches what it read. If the key is invalidated while
//! that read is running (a revoke committed meanwhile), the read may be older than the write,
//! and caching it would undo the invalidation for a whole TTL. So every load in flight is
//! registered here under its key, and:
//!
//! - an invalidation removes the flights it concerns (by key, or all of them) and drops the
//!   cached entries, both under the key's shard lock;
//! - a load that finishes caches its result, under the same lock, only if its flight is still
//!   registered, i.e. no invalidation overtook it.
//!
//! Invalidation therefore wins whatever the order: an invalidation that comes first removes the
//! flight and the load caches nothing; one that comes after the insert drops the entry.
//!
//! Concurrent misses for one key share one flight (one store read). An overtaken flight is no
//! longer found, so a lookup that starts after the invalidation begins a load of its own: only
//! lookups that joined before the invalidation receive the overtaken result, and they use it
//! once, uncached. That is linearizable: each of them began before the invalidation was
//! applied, so before the write that caused it was acknowledged to its writer. (Retrying
//! instead would cost a second store read for no stronger guarantee.)
//!
//! The locks are std mutexes held only for map operations and moka's synchronous insert and
//! invalidate calls, never across an await.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

const SHARDS: usize = 16;

/// One load in flight; waiters subscribe to its outcome.
struct Flight<V> {
    outcome: watch::Sender<Option<V>>,
}

type Shard<K, V> = Mutex<HashMap<K, Arc<Flight<V>>>>;

pub(crate) struct Flights<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: RandomState,
}

enum Turn<V> {
    /// Found in the cache after all (another fill landed meanwhile).
    Cached(V),
    /// Another lookup is loading this key: wait for its outcome.
    Wait(watch::Receiver<Option<V>>),
    /// This lookup loads the key.
    Lead(Arc<Flight<V>>),
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, Arc<Flight<V>>>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        // A poisoned lock only means a panic elsewhere mid-operation; the map is still a map.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`: `cached()` if the cache has it, else the outcome of `load` (shared
    /// with concurrent lookups of the key). `keep` caches an outcome; it runs under the key's
    /// lock, and only if no invalidation of the key overtook the load.
    pub(crate) async fn get_or_load<Fut>(
        &self,
        key: &K,
        cached: impl Fn() -> Option<V>,
        load: Fut,
        keep: impl FnOnce(&V),
    ) -> V
    where
        Fut: Future<Output = V>,
    {
        let flight = loop {
            match self.turn(key, &cached) {
                Turn::Cached(value) => return value,
                Turn::Wait(mut receiver) => {
                    if let Ok(outcome) = receiver.wait_for(Option::is_some).await
                        && let Some(value) = outcome.as_ref()
                    {
                        return value.clone();
                    }
                    // The loading lookup was cancelled before it finished: take its place.
                }
                Turn::Lead(flight) => break flight,
            }
        };
        let leading = Leading {
            flights: self,
            key,
            flight,
        };
        let outcome = load.await;
        leading.land(&outcome, keep);
        outcome
    }

    fn turn(&self, key: &K, cached: &impl Fn() -> Option<V>) -> Turn<V> {
        let mut shard = self.shard(key);
        if let Some(flight) = shard.get(key) {
            return Turn::Wait(flight.outcome.subscribe());
        }
        // A fill may have landed between the caller's cache lookup and this lock.
        if let Some(value) = cached() {
            return Turn::Cached(value);
        }
        let flight = Arc::new(Flight {
            outcome: watch::channel(None).0,
        });
        shard.insert(key.clone(), flight.clone());
        Turn::Lead(flight)
    }

    /// Invalidates `key`: a load of it in flight will not be cached, and `invalidate` (which
    /// drops the cached entries) runs under the same lock as the fills' inserts.
    pub(crate) fn overtake(&self, key: &K, invalidate: impl FnOnce()) {
        let mut shard = self.shard(key);
        if shard.remove(key).is_some() {
            metrics::counter!("tessera_cache_fills_overtaken_total").increment(1);
        }
        invalidate();
    }

    /// Invalidates every key (or keys the caller cannot name before they load, such as every
    /// token of an owner): no load in flight will be cached.
    pub(crate) fn overtake_all(&self, invalidate: impl FnOnce()) {
        // Always in index order, and a fill holds one shard at a time: no deadlock.
        let mut shards: Vec<_> = self
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let overtaken: usize = shards.iter().map(|shard| shard.len()).sum();
        for shard in &mut shards {
            shard.clear();
        }
        if overtaken > 0 {
            metrics::counter!("tessera_cache_fills_overtaken_total").increment(overtaken as u64);
        }
        invalidate();
    }

    /// Loads currently in flight (for tests).
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Lookups waiting for the load of `key` in flight (for tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self, key: &K) -> usize {
        self.shard(key)
            .get(key)
            .map_or(0, |flight| flight.outcome.receiver_count())
    }
}

/// The lookup that loads a key. Dropped before landing (the Check was cancelled), it removes
/// its flight, so that its waiters and later lookups load again instead of waiting forever.
struct Leading<'a, K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    flights: &'a Flights<K, V>,
    key: &'a K,
    flight: Arc<Flight<V>>,
}

impl<K, V> Leading<'_, K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// Caches `outcome` with `keep` unless the flight was overtaken, then hands it to the
    /// waiters.
    fn land(self, outcome: &V, keep: impl FnOnce(&V)) {
        {
            let mut shard = self.flights.shard(self.key);
            if self.is_registered(&shard) {
                keep(outcome);
                shard.remove(self.key);
            }
        }
        self.flight.outcome.send_replace(Some(outcome.clone()));
    }

    fn is_registered(&self, shard: &HashMap<K, Arc<Flight<V>>>) -> bool {
        shard
            .get(self.key)
            .is_some_and(|registered| Arc::ptr_eq(registered, &self.flight))
    }
}

impl<K, V> Drop for Leading<'_, K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    fn drop(&mut self) {
        if self.flight.outcome.borrow().is_some() {
            return;
        }
        let mut shard = self.flights.shard(self.key);
        if self.is_registered(&shard) {
            shard.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    type Cache = Mutex<HashMap<u32, u32>>;

    fn cached(cache: &Cache, key: u32) -> Option<u32> {
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied()
    }

    fn keep(cache: &Cache, key: u32, value: u32) {
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
    }

    /// A lookup of key 7 whose load is in flight, answering 1 once `release` is sent.
    async fn held_load_of_seven(
        flights: &Arc<Flights<u32, u32>>,
        cache: &Arc<Cache>,
    ) -> (oneshot::Sender<()>, tokio::task::JoinHandle<u32>) {
        let (release, released) = oneshot::channel::<()>();
        let fill = {
            let (flights, cache) = (flights.clone(), cache.clone());
            tokio::spawn(async move {
                let load = async {
                    let _ = released.await;
                    1
                };
                flights
                    .get_or_load(
                        &7,
                        || cached(&cache, 7),
                        load,
                        |value| keep(&cache, 7, *value),
                    )
                    .await
            })
        };
        while flights.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        (release, fill)
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_of_its_key_is_not_cached() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let cache = Arc::new(Cache::default());
        let (release, fill) = held_load_of_seven(&flights, &cache).await;
        flights.overtake(&7, || {
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&7);
        });
        let _ = release.send(());
        assert_eq!(
            fill.await.expect("fill"),
            1,
            "the caller still gets its read"
        );
        assert_eq!(cached(&cache, 7), None);
    }

    #[tokio::test]
    async fn a_load_overtaken_by_an_invalidation_of_everything_is_not_cached() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let cache = Arc::new(Cache::default());
        let (release, fill) = held_load_of_seven(&flights, &cache).await;
        flights.overtake_all(|| {});
        let _ = release.send(());
        fill.await.expect("fill");
        assert_eq!(cached(&cache, 7), None);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_lookup_after_the_invalidation_loads_again_instead_of_joining_the_stale_load() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let cache = Arc::new(Cache::default());
        let (release, stale) = held_load_of_seven(&flights, &cache).await;
        flights.overtake(&7, || {});
        let fresh = flights
            .get_or_load(
                &7,
                || cached(&cache, 7),
                async { 2 },
                |value| keep(&cache, 7, *value),
            )
            .await;
        assert_eq!(fresh, 2);
        let _ = release.send(());
        assert_eq!(stale.await.expect("stale"), 1);
        assert_eq!(
            cached(&cache, 7),
            Some(2),
            "the stale load did not replace it"
        );
    }

    #[tokio::test]
    async fn concurrent_lookups_share_one_load() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let cache = Arc::new(Cache::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let lookups: Vec<_> = (0..32)
            .map(|_| {
                let (flights, cache, loads) = (flights.clone(), cache.clone(), loads.clone());
                tokio::spawn(async move {
                    let load = async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        5
                    };
                    flights
                        .get_or_load(
                            &1,
                            || cached(&cache, 1),
                            load,
                            |value| keep(&cache, 1, *value),
                        )
                        .await
                })
            })
            .collect();
        for lookup in lookups {
            assert_eq!(lookup.await.expect("lookup"), 5);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn when_the_loading_lookup_is_cancelled_a_waiter_loads_instead() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let cache = Arc::new(Cache::default());
        let abandoned = {
            let (flights, cache) = (flights.clone(), cache.clone());
            tokio::spawn(async move {
                flights
                    .get_or_load(
                        &3,
                        || cached(&cache, 3),
                        std::future::pending(),
                        |value| keep(&cache, 3, *value),
                    )
                    .await
            })
        };
        while flights.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let (flights, cache) = (flights.clone(), cache.clone());
            tokio::spawn(async move {
                flights
                    .get_or_load(
                        &3,
                        || cached(&cache, 3),
                        async { 4 },
                        |value| keep(&cache, 3, *value),
                    )
                    .await
            })
        };
        while flights.waiting(&3) == 0 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        assert_eq!(waiter.await.expect("waiter"), 4);
        assert_eq!(cached(&cache, 3), Some(4));
    }
}
